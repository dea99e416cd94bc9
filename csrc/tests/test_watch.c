/* Tests of csrc/core/watch.c: which hangups wake the checker, on real loopback and unix sockets. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checker.h"
#include "driver.h"
#include "watch.h"

/* A connected loopback TCP pair: *ours is the client end, *theirs the
 * accepted one. Returns 0, or -1 (CHECKed). */
static int
tcp_pair(int *ours, int *theirs)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);

    *ours = *theirs = -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) != 0) {
        CHECK(0);
        if (lfd >= 0) {
            close(lfd);
        }
        return -1;
    }
    *ours = socket(AF_INET, SOCK_STREAM, 0);
    if (*ours >= 0 && connect(*ours, (struct sockaddr *)&a, sizeof(a)) == 0) {
        *theirs = accept(lfd, NULL, NULL);
    }
    close(lfd);
    CHECK(*ours >= 0 && *theirs >= 0);
    return *ours >= 0 && *theirs >= 0 ? 0 : -1;
}

/* The checker thread waits on the same set and would take the events:
 * these tests need it stopped, and nothing left over from earlier ones. */
static void
own_watch(void)
{
    sp_watch_hit got[16];

    sp_checker_stop();
    CHECK_EQ(sp_watch_open(), 0);
    while (sp_watch_wait(0, got, 16) > 0) {
    }
}

/* Waits (bounded) for the next report; returns how many endpoints came. */
static int
wait_for(sp_watch_hit *hits, int max, double timeout)
{
    int n = sp_watch_wait(timeout, hits, max);

    CHECKF(n >= 0, "no watch on this system");
    return n;
}

static void
test_watch_peer_close(void)
{
    sp_watch_hit got[4];
    uint64_t added0, hangups0, added, hangups;
    int ours, theirs;

    own_watch();
    sp_watch_counts(&added0, &hangups0);
    if (tcp_pair(&ours, &theirs) != 0) {
        return;
    }
    sp_watch_add(ours, 7);
    sp_watch_counts(&added, &hangups);
    CHECK_EQ(added, added0 + 1);
    /* Traffic is not a hangup. */
    CHECK(write(theirs, "+PONG\r\n", 7) == 7);
    CHECK_EQ(wait_for(got, 4, 0.05), 0);
    /* The server closes: reported once, with the endpoint's serial. */
    close(theirs);
    CHECK(wait_for(got, 4, 10.0) == 1 && got[0].serial == 7 && got[0].sockets == 1);
    sp_watch_counts(&added, &hangups);
    CHECK_EQ(hangups, hangups0 + 1);
    /* Edge-triggered: the same hangup is not reported again. */
    CHECK_EQ(wait_for(got, 4, 0.05), 0);
    close(ours);
}

static void
test_watch_peer_reset(void)
{
    struct linger hard = {1, 0};
    sp_watch_hit got[4];
    int ours, theirs;

    own_watch();
    if (tcp_pair(&ours, &theirs) != 0) {
        return;
    }
    sp_watch_add(ours, 9);
    CHECK_EQ(setsockopt(theirs, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
    close(theirs);  /* RST */
    CHECK(wait_for(got, 4, 10.0) == 1 && got[0].serial == 9);
    close(ours);
}

static void
test_watch_own_shutdown_ignored(void)
{
    sp_watch_hit got[4];
    uint64_t added, hangups0, hangups;
    int ours, theirs;

    own_watch();
    if (tcp_pair(&ours, &theirs) != 0) {
        return;
    }
    sp_watch_add(ours, 11);
    sp_watch_counts(&added, &hangups0);
    /* What redis-py's disconnect() does before close(). */
    CHECK_EQ(shutdown(ours, SHUT_RDWR), 0);
    CHECK_EQ(wait_for(got, 4, 0.05), 0);
    sp_watch_counts(&added, &hangups);
    CHECK_EQ(hangups, hangups0);
    close(ours);
    close(theirs);
}

static void
test_watch_unix_peer_close(void)
{
    sp_watch_hit got[4];
    int sv[2];

    own_watch();
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sp_watch_add(sv[0], 13);
    close(sv[1]);
    CHECK(wait_for(got, 4, 10.0) == 1 && got[0].serial == 13);
    close(sv[0]);
}

static void
test_watch_burst_counted_per_endpoint(void)
{
    sp_watch_hit got[8];
    int ours[6], theirs[6], i, n = 0, ok = 1, sockets21 = 0, sockets22 = 0;

    own_watch();
    for (i = 0; i < 6; i++) {
        ok &= tcp_pair(&ours[i], &theirs[i]) == 0;
        sp_watch_add(ours[i], i < 3 ? 21 : 22);  /* two endpoints, three sockets each */
    }
    for (i = 0; i < 6; i++) {
        close(theirs[i]);
    }
    /* Each wait names an endpoint once, with how many of its sockets hung
     * up since the last wait; a few waits (bounded) see all six. */
    for (int waits = 0; ok && waits < 50 && sockets21 + sockets22 < 6; waits++) {
        n = wait_for(got, 8, 10.0);
        CHECKF(n >= 1 && n <= 2, "n=%d", n);
        for (i = 0; i < n; i++) {
            CHECK(got[i].serial == 21 || got[i].serial == 22);
            CHECK(i == 0 || got[i].serial != got[0].serial);
            sockets21 += got[i].serial == 21 ? got[i].sockets : 0;
            sockets22 += got[i].serial == 22 ? got[i].sockets : 0;
        }
    }
    CHECKF(!ok || (sockets21 == 3 && sockets22 == 3), "21: %d, 22: %d", sockets21, sockets22);
    for (i = 0; i < 6; i++) {
        close(ours[i]);
    }
}

static void
test_watch_ignores_non_sockets(void)
{
    uint64_t added0, added, hangups;
    int p[2];

    own_watch();
    CHECK_EQ(pipe(p), 0);
    sp_watch_counts(&added0, &hangups);
    sp_watch_add(p[0], 5);
    sp_watch_add(-1, 5);
    sp_watch_add(3, 0);  /* serial 0 is nobody's */
    sp_watch_counts(&added, &hangups);
    CHECK_EQ(added, added0);
    close(p[0]);
    close(p[1]);
}

static void
test_watch_wake(void)
{
    sp_watch_hit got[4];
    double t0;

    own_watch();
    sp_watch_wake();
    sp_watch_wake();  /* wake-ups pile up into one */
    t0 = sp_now();
    CHECK_EQ(wait_for(got, 4, 30.0), 0);
    CHECKF(sp_now() - t0 < 30.0, "the wake-up was lost");
    CHECK_EQ(wait_for(got, 4, 0.02), 0);
}

static const sp_test tests[] = {
    {"watch/peer_close", test_watch_peer_close},
    {"watch/peer_reset", test_watch_peer_reset},
    {"watch/own_shutdown_ignored", test_watch_own_shutdown_ignored},
    {"watch/unix_peer_close", test_watch_unix_peer_close},
    {"watch/burst_counted_per_endpoint", test_watch_burst_counted_per_endpoint},
    {"watch/ignores_non_sockets", test_watch_ignores_non_sockets},
    {"watch/wake", test_watch_wake},
    {NULL, NULL},
};

SP_SUITE(watch, tests)
