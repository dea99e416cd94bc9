/* Tests of csrc/core/host_health.c with forked processes: shared pause, one probe per host, the lease, max_connecting. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checker.h"
#include "core_util.h"
#include "driver.h"
#include "host_budget.h"
#include "redis_proc.h"
#include "registry.h"

static int pool_hh;
#define POOL_HH ((void *)&pool_hh)

static char seg_name[64];

static const char *
fresh_name(void)
{
    static int n;
    snprintf(seg_name, sizeof(seg_name), "/sp-health-%ld-%d", (long)getpid(), ++n);
    shm_unlink(seg_name);
    return seg_name;
}

/* Puts `ep` on the host budget `name`. */
static int
attach(sp_endpoint *ep, const char *name, int max)
{
    char err[200] = "";
    int created = 0;
    sp_host *h = sp_host_attach(name, max, &created, err, sizeof(err));
    CHECKF(h != NULL, "attach: %s", err);
    if (h == NULL) {
        return -1;
    }
    CHECK(sp_endpoint_set_host(ep, h) == 0);
    return 0;
}

static sp_endpoint *
host_ep(const char *name, int max)
{
    sp_endpoint *ep = sp_endpoint_new("hh", "hh", max);
    attach(ep, name, max);
    return ep;
}

static sp_acquire_status
try_acquire(sp_endpoint *ep)
{
    sp_waiter w;
    sp_deferred after = {0};
    sp_conn *got = NULL;
    tp_waiter_init(&w);
    sp_acquire_status st = sp_endpoint_acquire(ep, POOL_HH, 1, 0, &w, &got, &after);
    tp_after_done(&after);
    return st;
}

/* ---- a pause learnt by one process fails callers in every other ---------- */

static int go_pipe[2] = {-1, -1};

static int
pause_child(const char *name, int fd)
{
    sp_endpoint *ep = host_ep(name, 4);
    char c = 'r';
    close(go_pipe[1]);
    /* Ready here: a caller gets a slot. */
    CHECK(try_acquire(ep) == SP_ACQ_SLOT);
    sp_deferred after = {0};
    sp_endpoint_cancel_slot(ep, &after);
    tp_after_done(&after);
    if (write(fd, &c, 1) != 1 || read(go_pipe[0], &c, 1) != 1) {
        return 1;
    }
    /* Another process saw the server refuse: this caller fails at once,
     * with no probe and no connect of its own. */
    sp_acquire_status st = try_acquire(ep);
    CHECKF(st == SP_ACQ_PAUSED, "acquire said %d", (int)st);
    CHECKF(ep->state == SP_STATE_PAUSED, "state %s", sp_state_name(ep->state));
    CHECKF(strstr(ep->state_reason, "refused") && strstr(ep->state_reason, "another process"),
           "%s", ep->state_reason);
    CHECKF(ep->probes == 0 && ep->connect_failures == 0, "probes %llu",
           (unsigned long long)ep->probes);
    sp_endpoint_free(ep);
    return 0;
}

static void
test_pause_fails_every_process(void)
{
    const char *name = fresh_name();
    enum { N = 3 };
    pid_t pids[N];
    int fds[N];
    CHECK(pipe(go_pipe) == 0);
    sp_endpoint *mine = host_ep(name, 4);
    for (int i = 0; i < N; i++) {
        pids[i] = tp_spawn(pause_child, name, &fds[i]);
    }
    close(go_pipe[0]);
    for (int i = 0; i < N; i++) {
        char c = 0;
        CHECK(read(fds[i], &c, 1) == 1);
    }
    sp_checker_report(mine, SP_FAIL_REFUSED, "Connection refused");
    CHECK(mine->state == SP_STATE_PAUSED);
    char go[N];
    memset(go, 'g', sizeof(go));
    CHECK(write(go_pipe[1], go, sizeof(go)) == (ssize_t)sizeof(go));
    close(go_pipe[1]);
    for (int i = 0; i < N; i++) {
        CHECKF(tp_exited_ok(pids[i]), "child %d failed", i);
        close(fds[i]);
    }
    sp_endpoint_free(mine);
    shm_unlink(name);
}

/* ---- one probe per host while down ------------------------------------- */

/* A server that is down in a way a probe sees (it accepts, then closes at
 * once: "server down", no knocks) and counts every connection it gets. */
typedef struct {
    int lfd;
    int port;
    volatile int stop;
    long accepted;            /* guarded by lock */
    double last_at;           /* sp_now() of the last accept */
    double gap_max;           /* the longest pause between accepts after mark_at */
    double mark_at;
    pthread_mutex_t lock;
    pthread_t thread;
} counter_server;

static void *
counter_main(void *arg)
{
    counter_server *cs = arg;
    while (!cs->stop) {
        if (sp_wait_io(cs->lfd, POLLIN, sp_now() + 0.05) <= 0) {
            continue;
        }
        int c = accept(cs->lfd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        close(c);
        double now = sp_now();
        pthread_mutex_lock(&cs->lock);
        cs->accepted++;
        if (cs->mark_at > 0 && cs->last_at >= cs->mark_at && now - cs->last_at > cs->gap_max) {
            cs->gap_max = now - cs->last_at;
        }
        cs->last_at = now;
        pthread_mutex_unlock(&cs->lock);
    }
    return NULL;
}

static int
counter_start(counter_server *cs)
{
    memset(cs, 0, sizeof(*cs));
    pthread_mutex_init(&cs->lock, NULL);
    cs->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (cs->lfd < 0 || bind(cs->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(cs->lfd, 128) < 0 || getsockname(cs->lfd, (struct sockaddr *)&a, &len) < 0) {
        return -1;
    }
    cs->port = ntohs(a.sin_port);
    return pthread_create(&cs->thread, NULL, counter_main, cs);
}

static long
counter_read(counter_server *cs)
{
    pthread_mutex_lock(&cs->lock);
    long n = cs->accepted;
    pthread_mutex_unlock(&cs->lock);
    return n;
}

static void
counter_stop(counter_server *cs)
{
    cs->stop = 1;
    pthread_join(cs->thread, NULL);
    close(cs->lfd);
    pthread_mutex_destroy(&cs->lock);
}

#define PROBERS 4
#define PROBE_BACKOFF 0.05    /* jittered to 25-50 ms between one process's probes */

/* What each prober child publishes for the parent (a shared page). */
typedef struct {
    volatile pid_t pid[PROBERS];
    volatile long probes[PROBERS];
    volatile int leased[PROBERS];
} prober_board;

static prober_board *board;
static int prober_port;
static int prober_index;

static int
prober_child(const char *name, int fd)
{
    sp_checker_config cfg = {PROBE_BACKOFF, 0.02, PROBE_BACKOFF, PROBE_BACKOFF, 0.5, 1, 0.0, 0};
    sp_checker_set_config(&cfg);
    char key[64];
    snprintf(key, sizeof(key), "hh-probe-%d", prober_index);
    sp_address addr = {"127.0.0.1", prober_port, NULL, NULL, NULL, 0};
    int created = 0;
    sp_endpoint *ep = sp_registry_bind(key, key, 4, &addr, &created);
    if (ep == NULL || attach(ep, name, 4) < 0) {
        return 1;
    }
    sp_endpoint_pool_added(ep, 1);
    /* Down already, as another process found it: probes decide from here. */
    pthread_mutex_lock(&ep->lock);
    sp_deferred after = {0};
    sp_endpoint_set_state_locked(ep, SP_STATE_PAUSED, "server down: reset", &after);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);
    board->pid[prober_index] = getpid();
    CHECK(sp_checker_ensure_running() == 0);
    char c = 'r';
    if (write(fd, &c, 1) != 1) {
        return 1;
    }
    /* Until the parent says stop (or kills us): publish the probe count. */
    for (;;) {
        pthread_mutex_lock(&ep->lock);
        board->probes[prober_index] = (long)ep->probes;
        board->leased[prober_index] = sp_host_probe_lease_held(ep->host_budget);
        pthread_mutex_unlock(&ep->lock);
        struct pollfd p = {go_pipe[0], POLLIN, 0};
        if (poll(&p, 1, 10) > 0) {
            break;
        }
    }
    sp_checker_stop();
    return 0;
}

static pid_t prober_pids[PROBERS];
static int prober_fds[PROBERS];

static int
probers_start(const char *name, counter_server *cs)
{
    if (counter_start(cs) != 0 || pipe(go_pipe) != 0) {
        CHECK(0);
        return -1;
    }
    board = mmap(NULL, sizeof(*board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                 0);
    CHECK(board != MAP_FAILED);
    memset(board, 0, sizeof(*board));
    prober_port = cs->port;
    for (int i = 0; i < PROBERS; i++) {
        prober_index = i;
        prober_pids[i] = tp_spawn(prober_child, name, &prober_fds[i]);
    }
    for (int i = 0; i < PROBERS; i++) {
        char c = 0;
        CHECK(read(prober_fds[i], &c, 1) == 1);
    }
    return 0;
}

static void
probers_end(const char *name, counter_server *cs, pid_t killed)
{
    char stop[PROBERS];
    memset(stop, 's', sizeof(stop));
    CHECK(write(go_pipe[1], stop, sizeof(stop)) == (ssize_t)sizeof(stop));
    for (int i = 0; i < PROBERS; i++) {
        if (prober_pids[i] == killed) {
            waitpid(killed, NULL, 0);
        }
        else {
            CHECKF(tp_exited_ok(prober_pids[i]), "prober %d failed", i);
        }
        close(prober_fds[i]);
    }
    close(go_pipe[0]);
    close(go_pipe[1]);
    munmap(board, sizeof(*board));
    counter_stop(cs);
    shm_unlink(name);
}

/* Four processes, each with its own checker, paused on one server: the
 * server sees the probes of one process, not of four. One process alone
 * probes at most once per 25 ms (the jittered backoff of 50 ms), so four
 * that each probed would send about four times that. */
static void
test_one_probe_per_host(void)
{
    const char *name = fresh_name();
    counter_server cs;
    if (probers_start(name, &cs) < 0) {
        return;
    }
    tp_sleep_ms(100);  /* the first claims settle */
    long before = counter_read(&cs);
    long probes_before = 0;
    for (int i = 0; i < PROBERS; i++) {
        probes_before += board->probes[i];
    }
    double t0 = sp_now();
    tp_sleep_ms(1000);
    double window = sp_now() - t0;
    long got = counter_read(&cs) - before;
    long probes = 0;
    int leaders = 0;
    for (int i = 0; i < PROBERS; i++) {
        probes += board->probes[i];
        leaders += board->leased[i];
    }
    probes -= probes_before;
    double one_process_max = window / (PROBE_BACKOFF / 2) + 2;
    sp_note("%d processes paused for %.2f s: the server saw %ld probes (one process "
            "alone: at most %.0f)", PROBERS, window, got, one_process_max);
    CHECKF(got >= 3, "only %ld probes reached the server", got);
    CHECKF(got <= one_process_max, "%ld probes in %.2f s: more than one process probes", got,
           window);
    CHECKF(probes <= got + PROBERS, "the processes counted %ld probes, the server %ld", probes,
           got);
    CHECKF(leaders <= 1, "%d processes hold the lease", leaders);
    probers_end(name, &cs, 0);
}

/* The process holding the lease is killed: another takes over within
 * about one lease (its next probe time and a quarter more) plus one
 * reclaim scan, and the host keeps probing. */
static void
test_lease_holder_killed(void)
{
    const char *name = fresh_name();
    counter_server cs;
    if (probers_start(name, &cs) < 0) {
        return;
    }
    tp_sleep_ms(200);
    int holder = -1;
    for (int i = 0; i < PROBERS; i++) {
        if (board->leased[i]) {
            holder = i;
        }
    }
    CHECKF(holder >= 0, "nobody holds the probe lease");
    if (holder < 0) {
        probers_end(name, &cs, 0);
        return;
    }
    pthread_mutex_lock(&cs.lock);
    cs.mark_at = sp_now();
    cs.gap_max = 0;
    pthread_mutex_unlock(&cs.lock);
    kill(board->pid[holder], SIGKILL);
    long at_kill = counter_read(&cs);
    tp_sleep_ms(600);
    long after = counter_read(&cs) - at_kill;
    pthread_mutex_lock(&cs.lock);
    double gap = cs.gap_max;
    pthread_mutex_unlock(&cs.lock);
    int new_holder = -1;
    for (int i = 0; i < PROBERS; i++) {
        if (i != holder && board->leased[i]) {
            new_holder = i;
        }
    }
    sp_note("lease holder killed: %ld probes in the next 0.6 s, longest gap %.0f ms", after,
            gap * 1e3);
    CHECKF(new_holder >= 0, "nobody took the lease over");
    CHECKF(after >= 3, "only %ld probes after the holder died", after);
    /* One lease (at most 1.25 x 50 ms + 5 ms), a reclaim scan (100 ms)
     * and a loaded machine's scheduling: well under half a second. */
    CHECKF(gap < 0.5, "no probe for %.0f ms after the holder died", gap * 1e3);
    probers_end(name, &cs, board->pid[holder]);
}

/* ---- one max_connecting for the host while recovering ------------------ */

static int go2_pipe[2] = {-1, -1};

static int
connect_child(const char *name, int fd)
{
    sp_endpoint *ep = host_ep(name, 16);
    char c = 'r';
    close(go_pipe[1]);
    close(go2_pipe[1]);
    /* The host's state is paused (the parent published it). */
    CHECK(try_acquire(ep) == SP_ACQ_PAUSED);
    if (write(fd, &c, 1) != 1 || read(go_pipe[0], &c, 1) != 1) {
        return 1;
    }
    /* Now recovering, as the parent's probe found: two connects at once
     * for the whole host. */
    long slots = 0;
    for (int i = 0; i < 4; i++) {
        slots += try_acquire(ep) == SP_ACQ_SLOT;
    }
    CHECKF(ep->state == SP_STATE_RECOVERING, "state %s", sp_state_name(ep->state));
    if (write(fd, &slots, sizeof(slots)) != sizeof(slots) || read(go2_pipe[0], &c, 1) != 1) {
        return 1;
    }
    /* The connects are done (failed): their units go back. */
    sp_deferred after = {0};
    for (long i = 0; i < slots; i++) {
        sp_endpoint_slot_failed(ep, &after);
    }
    tp_after_done(&after);
    CHECK(sp_host_connect_units(ep->host_budget) == 0);
    sp_endpoint_free(ep);
    return 0;
}

static void
send_go(int wfd, int n)
{
    char go[16];
    memset(go, 'g', sizeof(go));
    CHECK(write(wfd, go, (size_t)n) == (ssize_t)n);
    close(wfd);
}

static void
test_max_connecting_shared(void)
{
    const char *name = fresh_name();
    enum { N = 3 };
    pid_t pids[N];
    int fds[N];
    CHECK(pipe(go_pipe) == 0 && pipe(go2_pipe) == 0);
    sp_endpoint *mine = host_ep(name, 16);
    sp_deferred after = {0};
    pthread_mutex_lock(&mine->lock);
    sp_endpoint_set_state_locked(mine, SP_STATE_PAUSED, "server down: connection refused",
                                 &after);
    pthread_mutex_unlock(&mine->lock);
    tp_after_done(&after);
    for (int i = 0; i < N; i++) {
        pids[i] = tp_spawn(connect_child, name, &fds[i]);
    }
    close(go_pipe[0]);
    close(go2_pipe[0]);
    for (int i = 0; i < N; i++) {
        char c = 0;
        CHECK(read(fds[i], &c, 1) == 1);
    }
    /* The server is back: this process's probe said so. */
    pthread_mutex_lock(&mine->lock);
    sp_endpoint_set_state_locked(mine, SP_STATE_RECOVERING, "probe succeeded", &after);
    pthread_mutex_unlock(&mine->lock);
    tp_after_done(&after);
    send_go(go_pipe[1], N);
    long total = 0;
    for (int i = 0; i < N; i++) {
        long slots = -1;
        CHECK(read(fds[i], &slots, sizeof(slots)) == sizeof(slots));
        total += slots;
    }
    sp_stats st;
    sp_endpoint_stats(mine, &st);
    sp_note("%d processes recovering: %ld connects started at once (host max_connecting %d)",
            N, total, st.host.max_connecting);
    CHECKF(total == 2, "%ld connects at once on the host", total);
    CHECKF(st.host.connecting == 2, "host counts %d connects", st.host.connecting);
    /* A process that dies while connecting: its units come back with its
     * entry (reclaim), and the host may connect again. */
    kill(pids[0], SIGKILL);
    waitpid(pids[0], NULL, 0);
    send_go(go2_pipe[1], N);
    for (int i = 1; i < N; i++) {
        CHECKF(tp_exited_ok(pids[i]), "child %d failed", i);
    }
    for (int i = 0; i < N; i++) {
        close(fds[i]);
    }
    sp_host_reclaim(mine->host_budget, 1);
    sp_endpoint_stats(mine, &st);
    CHECKF(st.host.connecting == 0, "host still counts %d connects", st.host.connecting);
    CHECK(try_acquire(mine) == SP_ACQ_SLOT);
    CHECK(try_acquire(mine) == SP_ACQ_SLOT);
    CHECK(try_acquire(mine) == SP_ACQ_TIMEOUT);
    sp_endpoint_cancel_slot(mine, &after);
    sp_endpoint_cancel_slot(mine, &after);
    tp_after_done(&after);
    CHECK(sp_host_connect_units(mine->host_budget) == 0);
    sp_endpoint_free(mine);
    shm_unlink(name);
}


/* ---- asyncio waiters and slots freed in another process ----------------- */

#define ASYNC_ROUNDS 9
#define ASYNC_SLOW_ALLOWED 2   /* rounds a loaded machine may delay */

/* The parent's release times, for the child to measure from (CLOCK_MONOTONIC
 * is the same clock in every process). */
static volatile double *released_at;

static int
async_child(const char *name, int fd)
{
    sp_checker_config cfg = {30.0, 30.0, 30.0, 30.0, 0.5, 1, 0.0, 0};
    sp_checker_set_config(&cfg);
    int created = 0;
    sp_endpoint *ep = sp_registry_bind("hh-async", "hh-async", 1, NULL, &created);
    if (ep == NULL || attach(ep, name, 1) < 0) {
        return 1;
    }
    close(go_pipe[1]);
    sp_endpoint_pool_added(ep, 1);
    CHECK(sp_checker_ensure_running() == 0);
    double lags[ASYNC_ROUNDS];
    for (int round = 0; round < ASYNC_ROUNDS; round++) {
        char c = 0;
        if (read(go_pipe[0], &c, 1) != 1) {  /* the parent holds the only slot */
            return 1;
        }
        int p[2];
        CHECK(pipe(p) == 0);
        sp_waiter w;
        sp_deferred after = {0};
        sp_conn *got = NULL;
        tp_waiter_init(&w);
        w.notify_fd = p[1];
        sp_acquire_status st = sp_endpoint_acquire(ep, POOL_HH, 1, sp_now() + 10, &w, &got,
                                                   &after);
        tp_after_done(&after);
        sp_deferred_notify(&after);  /* as the binding does: wakes the checker */
        CHECKF(st == SP_ACQ_QUEUED, "acquire said %d", (int)st);
        c = 'q';
        if (write(fd, &c, 1) != 1) {
            return 1;
        }
        struct pollfd pfd = {p[0], POLLIN, 0};
        CHECK(poll(&pfd, 1, 5000) == 1);
        lags[round] = sp_now() - released_at[round];
        CHECK(__atomic_load_n(&w.result, __ATOMIC_SEQ_CST) == SP_WAIT_SLOT);
        sp_endpoint_wait_done(ep, &w);
        sp_endpoint_cancel_slot(ep, &after);  /* given back: the parent takes it again */
        tp_after_done(&after);
        close(p[0]);
        close(p[1]);
    }
    sp_checker_stop();
    return write(fd, lags, sizeof(lags)) != sizeof(lags);
}

static int
by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A slot given back in one process serves an asyncio waiter of another
 * process through that process's checker, which looks every 10 ms while
 * one heads the queue (its usual tick is up to 250 ms apart). */
static void
test_async_waiter_served_from_another_process(void)
{
    const char *name = fresh_name();
    sp_endpoint *mine = host_ep(name, 1);
    released_at = mmap(NULL, sizeof(double) * ASYNC_ROUNDS, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(released_at != MAP_FAILED);
    CHECK(pipe(go_pipe) == 0);
    int fd = -1;
    pid_t pid = tp_spawn(async_child, name, &fd);
    close(go_pipe[0]);
    for (int round = 0; round < ASYNC_ROUNDS; round++) {
        int held = 0;
        for (int i = 0; i < 5000 && !held; i++) {  /* the child gives it back when served */
            held = try_acquire(mine) == SP_ACQ_SLOT;
            if (!held) {
                tp_sleep_ms(1);
            }
        }
        CHECK(held);
        char c = 'h';
        CHECK(write(go_pipe[1], &c, 1) == 1);
        CHECK(read(fd, &c, 1) == 1 && c == 'q');  /* its waiter is queued */
        sp_deferred after = {0};
        released_at[round] = sp_now();
        sp_endpoint_cancel_slot(mine, &after);
        tp_after_done(&after);
    }
    close(go_pipe[1]);
    double lags[ASYNC_ROUNDS];
    CHECK(read(fd, lags, sizeof(lags)) == sizeof(lags));
    CHECKF(tp_exited_ok(pid), "child failed");
    close(fd);
    qsort(lags, ASYNC_ROUNDS, sizeof(double), by_value);
    double bound = lags[ASYNC_ROUNDS - 1 - ASYNC_SLOW_ALLOWED];
    sp_note("asyncio waiter in another process served %.1f ms (median of %d), %.1f ms at worst, "
            "after a slot was given back", lags[ASYNC_ROUNDS / 2] * 1e3, ASYNC_ROUNDS,
            lags[ASYNC_ROUNDS - 1] * 1e3);
    /* The tick it would wait for otherwise is up to 250 ms away, uniformly:
     * 7 of 9 rounds under 120 ms fail without the 10 ms look (they pass by
     * chance about once in 20), and 2 rounds may be late on a loaded host. */
    CHECKF(bound < 0.12, "7 of %d rounds served only within %.0f ms of the slot freeing",
           ASYNC_ROUNDS, bound * 1e3);
    munmap((void *)released_at, sizeof(double) * ASYNC_ROUNDS);
    sp_endpoint_free(mine);
    shm_unlink(name);
}


/* ---- a state from a process that is gone is history ---------------------- */

static int
stale_child(const char *name, int fd)
{
    (void)fd;
    sp_endpoint *ep = host_ep(name, 4);
    /* The pause was published by a process that has left: not news. */
    sp_acquire_status st = try_acquire(ep);
    CHECKF(st == SP_ACQ_SLOT, "acquire said %d (state %s)", (int)st, sp_state_name(ep->state));
    if (st == SP_ACQ_SLOT) {
        sp_deferred after = {0};
        sp_endpoint_cancel_slot(ep, &after);
        tp_after_done(&after);
    }
    sp_endpoint_free(ep);
    return 0;
}

static void
test_state_of_a_gone_process_is_history(void)
{
    const char *name = fresh_name();
    sp_endpoint *gone = host_ep(name, 4);
    sp_deferred after = {0};
    pthread_mutex_lock(&gone->lock);
    sp_endpoint_set_state_locked(gone, SP_STATE_PAUSED, "server down: connection refused",
                                 &after);
    pthread_mutex_unlock(&gone->lock);
    tp_after_done(&after);
    sp_endpoint_free(gone);  /* detached: its entry is free */
    int fd = -1;
    pid_t pid = tp_spawn(stale_child, name, &fd);
    CHECKF(tp_exited_ok(pid), "child failed");
    close(fd);
    shm_unlink(name);
}

static const sp_test tests[] = {
    {"host_health_pause_fails_every_process", test_pause_fails_every_process},
    {"host_health_one_probe_per_host", test_one_probe_per_host},
    {"host_health_lease_holder_killed", test_lease_holder_killed},
    {"host_health_max_connecting_shared", test_max_connecting_shared},
    {"host_health_state_of_a_gone_process_is_history", test_state_of_a_gone_process_is_history},
    {"host_health_async_waiter_served_from_another_process",
     test_async_waiter_served_from_another_process},
    {NULL, NULL},
};

SP_SUITE(host_health, tests)
