/* Tests of csrc/core/view_loan.c and of the endpoint's loans: INFO through a lent connection, given back as it was. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "allowance.h"
#include "core_util.h"
#include "driver.h"
#include "endpoint.h"
#include "view_loan.h"

static int pool_a;
#define POOL_A ((void *)&pool_a)

static const char CLIENTS[] =
    "$48\r\n# Clients\r\nconnected_clients:61\r\nmaxclients:64\r\n\r\n";
static const char STATS[] = "$24\r\nrejected_connections:3\r\n\r\n";

static void
pair(int sv[2])
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
}

/* The server writes `n` bytes of `text` (all of it when n is 0). */
static void
say(int fd, const char *text, size_t n)
{
    n = n ? n : strlen(text);
    CHECK(write(fd, text, n) == (ssize_t)n);
}

/* Reads the request the loan sent: exactly the two INFO commands. */
static void
expect_request(int fd)
{
    char got[128];
    ssize_t n = read(fd, got, sizeof(got));
    static const char want[] = "*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n"
                               "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n";
    CHECK(n == (ssize_t)sizeof(want) - 1 && memcmp(got, want, sizeof(want) - 1) == 0);
}

/* A lent connection (sv[0]) and its server (sv[1]), the request sent and read. */
static void
begin_exchange(int sv[2], sp_server_view *v, size_t *len)
{
    pair(sv);
    sp_server_view_init(v);
    *len = 0;
    CHECK(sp_loan_send_info(sv[0]) == 0);
    expect_request(sv[1]);
}

static void
test_read_view(void)
{
    int sv[2];
    char buf[512], why[96] = "";
    size_t len;
    sp_server_view v;

    begin_exchange(sv, &v, &len);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == 0);
    /* the replies in pieces: done only once both are complete */
    say(sv[1], CLIENTS, 20);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == 0);
    say(sv[1], CLIENTS + 20, 0);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == 0);
    say(sv[1], STATS, 0);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == 1);
    CHECK(v.connected_clients == 61 && v.maxclients == 64 && v.rejected_connections == 3);
    CHECK(why[0] == '\0');
    close(sv[0]);
    close(sv[1]);
}

static void
test_read_view_refusals(void)
{
    int sv[2];
    char buf[512], why[96] = "";
    size_t len;
    sp_server_view v;

    /* INFO not allowed: an error reply, named by its code only */
    begin_exchange(sv, &v, &len);
    static const char noperm[] = "-NOPERM this user has no permissions to run 'info'\r\n";
    say(sv[1], noperm, 0);
    say(sv[1], noperm, 0);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == 1);
    CHECK(strcmp(why, "INFO clients: -NOPERM (the user may not run INFO)") == 0);
    CHECK(!sp_server_view_usable(&v));
    close(sv[0]);
    close(sv[1]);

    /* bytes nobody asked for, before the request: not sent */
    pair(sv);
    say(sv[1], "+PONG\r\n", 0);
    CHECK(sp_loan_send_info(sv[0]) == -1);
    close(sv[0]);
    close(sv[1]);

    /* more than the two replies (a push, an echo): not a quiet connection */
    begin_exchange(sv, &v, &len);
    say(sv[1], CLIENTS, 0);
    say(sv[1], STATS, 0);
    say(sv[1], "+x\r\n", 0);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == -1);
    close(sv[0]);
    close(sv[1]);

    /* RESP3: verbatim strings are read; a push among the replies is not ours to take */
    begin_exchange(sv, &v, &len);
    say(sv[1], "=25\r\ntxt:connected_clients:9\r\n\r\n", 0);
    say(sv[1], "=19\r\ntxt:maxclients:64\r\n\r\n", 0);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == 1);
    CHECK(v.connected_clients == 9 && v.maxclients == 64);
    close(sv[0]);
    close(sv[1]);
    begin_exchange(sv, &v, &len);
    say(sv[1], ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", 0);
    say(sv[1], CLIENTS, 0);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == -1);
    close(sv[0]);
    close(sv[1]);

    /* the server closed it */
    begin_exchange(sv, &v, &len);
    close(sv[1]);
    CHECK(sp_loan_read_view(sv[0], buf, sizeof(buf), &len, &v, why, sizeof(why)) == -1);
    close(sv[0]);
}

/* The books of a loan: the lent connection leaves them (its slot held as
 * the probe's), the next release is lent when none is idle, and given
 * back it serves a waiter or goes idle; a view read in a slot of ours
 * counts that slot as held. */
static void
test_endpoint_loan(void)
{
    sp_endpoint *ep = sp_endpoint_new("tcp://127.0.0.1:1/0", "redis://127.0.0.1:1/0", 2);
    sp_deferred after = {0};
    int a[2], b[2];
    pair(a);
    pair(b);
    tp_payload *p1 = tp_connect(ep, POOL_A, 1, a[0]);
    tp_payload *p2 = tp_connect(ep, POOL_A, 1, b[0]);
    CHECK(ep->total == 2 && ep->in_use == 2);

    /* nothing idle: the next one released is lent, not pooled */
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_view_locked(ep) == 0 && ep->view_loan_wanted);
    pthread_mutex_unlock(&ep->lock);
    CHECK(sp_endpoint_release(ep, POOL_A, p1, a[0], 1, &after) == SP_REL_OK);
    CHECK(tp_after_done(&after) == 0);
    CHECK(ep->view_loan != NULL && ep->view_loan->payload == p1 && ep->loan_ready);
    CHECK(ep->total == 2 && ep->idle == 0 && ep->in_use == 1 && ep->probe_slots == 1);
    CHECK(sp_ptrmap_get(&ep->conns, p1) == NULL);  /* off the books: no thread reaches it */
    /* the allowance counts the loan's slot as held: 2 of the view's 50 are ours */
    sp_server_view v = {50, 64, 0};
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_server_view_locked(ep, &v, 7, 1, 0.0, &after);
    CHECK(ep->allow.held_at_view == 2);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);

    /* given back: pooled again, as a release would */
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_return_loan_locked(ep, 1, &after);
    pthread_mutex_unlock(&ep->lock);
    CHECK(tp_after_done(&after) == 0);
    CHECK(ep->view_loan == NULL && ep->idle == 1 && ep->probe_slots == 0);
    tp_check_counts(ep, 0);

    /* an idle one is lent at once; closed when its state is unknown */
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_view_locked(ep) == 1 && ep->idle == 0);
    sp_endpoint_return_loan_locked(ep, 0, &after);
    pthread_mutex_unlock(&ep->lock);
    CHECK(tp_after_done(&after) == 1);  /* disposed of, its slot free */
    CHECK(ep->total == 1 && ep->closing == 0);
    tp_check_counts(ep, 0);

    CHECK(sp_endpoint_release(ep, POOL_A, p2, b[0], 1, &after) == SP_REL_OK);
    tp_after_done(&after);
    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    close(a[1]);
    close(b[1]);
    sp_endpoint_free(ep);
}

/* A first look never takes what a caller could be served with: no idle
 * connection and no connection coming back while nobody waits; with a
 * caller waiting, the next one released is lent, and the caller is
 * served when it comes back. */
static void
test_first_view_loan(void)
{
    sp_endpoint *ep = sp_endpoint_new("tcp://127.0.0.1:1/0", "redis://127.0.0.1:1/0", 1);
    sp_deferred after = {0};
    int a[2];
    pair(a);
    tp_payload *p1 = tp_connect(ep, POOL_A, 1, a[0]);
    CHECK(sp_endpoint_release(ep, POOL_A, p1, a[0], 1, &after) == SP_REL_OK);
    tp_after_done(&after);

    /* the only idle connection: a caller with timeout=0 would be refused */
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_first_view_locked(ep) == 0);
    CHECK_EQ(ep->view_loan_wanted, SP_LOAN_NONE);
    CHECK(ep->idle == 1 && ep->view_loan == NULL);
    pthread_mutex_unlock(&ep->lock);

    /* in use, nobody waiting: nothing wanted, the release goes idle */
    CHECK(sp_endpoint_take_idle(ep, POOL_A, 1)->payload == p1);
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_first_view_locked(ep) == 0);
    CHECK_EQ(ep->view_loan_wanted, SP_LOAN_NONE);
    pthread_mutex_unlock(&ep->lock);
    CHECK(sp_endpoint_release(ep, POOL_A, p1, a[0], 1, &after) == SP_REL_OK);
    tp_after_done(&after);
    CHECK(ep->view_loan == NULL && ep->idle == 1);

    /* a caller waits, then gives up: the release goes idle, not to the checker */
    sp_waiter w;
    sp_conn *none = NULL;
    CHECK(sp_endpoint_take_idle(ep, POOL_A, 1)->payload == p1);
    tp_waiter_init(&w);
    CHECK_EQ(sp_endpoint_acquire(ep, POOL_A, 1, -1, &w, &none, &after), SP_ACQ_QUEUED);
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_first_view_locked(ep) == 0);
    CHECK_EQ(ep->view_loan_wanted, SP_LOAN_IF_WAITED);
    pthread_mutex_unlock(&ep->lock);
    sp_endpoint_cancel(ep, &w, &after);
    tp_after_done(&after);
    CHECK(sp_endpoint_release(ep, POOL_A, p1, a[0], 1, &after) == SP_REL_OK);
    tp_after_done(&after);
    CHECK(ep->view_loan == NULL && ep->idle == 1);

    /* a caller waits: lent on release, the caller served when it is back */
    CHECK(sp_endpoint_take_idle(ep, POOL_A, 1)->payload == p1);
    tp_waiter_init(&w);
    CHECK_EQ(sp_endpoint_acquire(ep, POOL_A, 1, -1, &w, &none, &after), SP_ACQ_QUEUED);
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_first_view_locked(ep) == 0);
    pthread_mutex_unlock(&ep->lock);
    CHECK(sp_endpoint_release(ep, POOL_A, p1, a[0], 1, &after) == SP_REL_OK);
    tp_after_done(&after);
    CHECK(ep->view_loan != NULL && w.result == SP_WAIT_PENDING);
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_return_loan_locked(ep, 1, &after);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);
    CHECK(w.result == SP_WAIT_CONN && ep->in_use == 1);
    CHECK(sp_endpoint_release(ep, POOL_A, p1, a[0], 1, &after) == SP_REL_OK);
    tp_after_done(&after);
    tp_check_counts(ep, 0);
    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    close(a[1]);
    sp_endpoint_free(ep);
}

/* asyncio connections belong to their transport: never lent. */
static void
test_not_lent(void)
{
    sp_endpoint *ep = sp_endpoint_new("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0", 2);
    sp_deferred after = {0};
    tp_payload *p = tp_connect(ep, POOL_A, 1, SP_FD_UNPOLLABLE);
    CHECK(sp_endpoint_release(ep, POOL_A, p, SP_FD_UNPOLLABLE, 1, &after) == SP_REL_OK);
    pthread_mutex_lock(&ep->lock);
    CHECK(sp_endpoint_lend_for_view_locked(ep) == 0 && !ep->view_loan_wanted);
    pthread_mutex_unlock(&ep->lock);
    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    sp_endpoint_free(ep);
}

/* A fleet that starts together, or comes back from a pause, reads an empty
 * server at once: no jump to the budget until it is back at the line. */
static void
test_regrowing(void)
{
    sp_allowance a;
    sp_server_view v = {10, 10000, 0};
    sp_allowance_init(&a);
    sp_allowance_on_view(&a, &v, 1000, 2, 50, 0.0);
    CHECK(a.allowance == 3);                          /* a step, not the budget */
    sp_allowance_on_view(&a, &v, 1000, 3, 50, 0.999);
    CHECK(a.allowance == 50 && !a.regrowing);         /* the step reached the budget */
    sp_allowance_on_view(&a, &v, 1000, 3, 50, 0.0);
    CHECK(a.allowance == 50);                         /* regrown: a lone process is not held back */
    sp_allowance_regrow(&a);                          /* a pause */
    sp_allowance_on_view(&a, &v, 1000, 0, 50, 0.0);
    CHECK(a.allowance == 1 && a.regrowing);
    v.connected_clients = 9000;                       /* back near the line */
    sp_allowance_on_view(&a, &v, 1000, 20, 50, 0.0);
    CHECK(!a.regrowing);

    /* one above the line is slack for processes that read one headroom at once */
    sp_server_view line = {56, 64, 0};                /* headroom 8, reserve 7: spare 1 */
    sp_allowance_on_view(&a, &line, 7, 5, 16, 0.0);
    CHECK(a.allowance == 5);
    line.connected_clients = 55;                      /* spare 2: one more, at the odds */
    sp_allowance_on_view(&a, &line, 7, 5, 16, 0.0);
    CHECK(a.allowance == 6);
    sp_allowance_on_view(&a, &line, 7, 5, 16, 0.2);
    CHECK(a.allowance == 5);                          /* 0.2 * 14 >= 1 */
}

static const sp_test tests[] = {
    {"view_loan/read_view", test_read_view},
    {"view_loan/read_view_refusals", test_read_view_refusals},
    {"view_loan/endpoint_loan", test_endpoint_loan},
    {"view_loan/first_view_loan", test_first_view_loan},
    {"view_loan/not_lent", test_not_lent},
    {"view_loan/regrowing", test_regrowing},
    {NULL, NULL},
};
SP_SUITE(view_loan, tests)
