/* Tests of csrc/core/allowance.c and csrc/core/server_view.c, and of a saturated endpoint's books. */
#include <string.h>

#include "allowance.h"
#include "core_util.h"
#include "driver.h"
#include "endpoint.h"
#include "server_view.h"

static int pool_a;
#define POOL_A ((void *)&pool_a)

static sp_server_view
view(long long connected, long long maxclients, long long rejected)
{
    sp_server_view v = {connected, maxclients, rejected};
    return v;
}

static void
test_reserve_defaults(void)
{
    CHECK_EQ(sp_server_reserve(64, 0.1, 4), 7);       /* 6.4 rounded up */
    CHECK_EQ(sp_server_reserve(1000, 0.1, 4), 100);
    CHECK_EQ(sp_server_reserve(10, 0.1, 4), 4);       /* the floor */
    CHECK_EQ(sp_server_reserve(4, 0.1, 4), 2);        /* at most half: a tiny server stays usable */
    CHECK_EQ(sp_server_reserve(1, 0.1, 4), 0);
    CHECK_EQ(sp_server_reserve(64, 0.0, 0), 0);       /* off */
    CHECK_EQ(sp_server_reserve(-1, 0.1, 4), 0);       /* unknown maxclients */
    CHECK_EQ(sp_server_reserve(100, 0.0, 5), 5);
}

static void
test_view_parse_hostile(void)
{
    static const char good[] =
        "# Clients\r\nconnected_clients:61\r\ncluster_connections:0\r\nmaxclients:64\r\n"
        "client_recent_max_input_buffer:20480\r\n";
    sp_server_view v;

    sp_server_view_init(&v);
    CHECK_EQ(sp_server_view_parse(&v, good, sizeof(good) - 1), 2);
    CHECK(v.connected_clients == 61 && v.maxclients == 64 && v.rejected_connections == -1);
    CHECK(sp_server_view_usable(&v));

    /* a huge number, a sign, a fraction, garbage, a truncated line: all ignored */
    static const char *const bad[] = {
        "connected_clients:99999999999999999999999999\r\nmaxclients:64\r\n",
        "connected_clients:-5\r\nmaxclients:64\r\n",
        "connected_clients:5.5\r\nmaxclients:64\r\n",
        "connected_clients:12abc\r\nmaxclients:64\r\n",
        "connected_clients:\r\nmaxclients:64\r\n",
        "connected_clients",
        "*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n",       /* an echo of our request */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sp_server_view_init(&v);
        sp_server_view_parse(&v, bad[i], strlen(bad[i]));
        CHECKF(v.connected_clients == -1, "case %zu", i);
        CHECKF(!sp_server_view_usable(&v), "case %zu", i);
    }
    /* maxclients 0 is no server's: unusable */
    sp_server_view_init(&v);
    sp_server_view_parse(&v, "connected_clients:1\nmaxclients:0\n", 33);
    CHECK(!sp_server_view_usable(&v));
    /* a field named like ours but longer is another field */
    sp_server_view_init(&v);
    sp_server_view_parse(&v, "maxclients_x:5\r\n", 16);
    CHECK_EQ(v.maxclients, -1);
    sp_server_view_init(&v);
    CHECK(sp_server_view_parse(&v, NULL, 5) == 0);
}

static void
test_allowance_rules(void)
{
    sp_allowance a;
    sp_server_view v;

    sp_allowance_init(&a);
    CHECK_EQ(sp_allowance_cap(&a, 16), 16);             /* no view: the budget only */

    /* additive increase over what it holds: near the line one at a time */
    v = view(20, 64, 0);                               /* spare 37 > 4 * 7 */
    CHECK_EQ(sp_allowance_on_view(&a, &v, 7, 10, 16, 0.0), 0);
    CHECK_EQ(a.allowance, 11);
    v = view(50, 64, 0);                               /* spare 7, odds 7 / 14 */
    sp_allowance_on_view(&a, &v, 7, 10, 16, 0.4);
    CHECK_EQ(a.allowance, 11);
    sp_allowance_on_view(&a, &v, 7, 10, 16, 0.6);
    CHECK_EQ(a.allowance, 10);                          /* the closer, the rarer */
    /* further from it, with jitter in [1, 1 + (spare - 4 * reserve) / 16] */
    v = view(4, 100, 0);                               /* spare 89, 4 * 7 = 28 */
    sp_allowance_on_view(&a, &v, 7, 10, 64, 0.0);
    CHECK_EQ(a.allowance, 11);
    sp_allowance_on_view(&a, &v, 7, 10, 64, 0.999);
    CHECK_EQ(a.allowance, 14);                          /* 1 + 61/16 */
    CHECK_EQ(sp_allowance_cap(&a, 16), 14);
    /* room beyond that for the whole budget: the budget */
    sp_allowance_on_view(&a, &v, 7, 10, 61, 0.0);
    CHECK_EQ(a.allowance, 61);

    /* a lone process on a large server reaches its budget at once */
    v = view(10, 10000, 0);
    sp_allowance_on_view(&a, &v, 1000, 2, 50, 0.5);
    CHECK_EQ(a.allowance, 50);

    /* no spare above the reserve: it keeps what it holds, grows nothing */
    v = view(57, 64, 0);
    CHECK_EQ(sp_allowance_on_view(&a, &v, 7, 5, 16, 0.9), 0);
    CHECK_EQ(a.allowance, 5);

    /* headroom below the reserve: saturated, its share of the excess goes */
    v = view(60, 64, 0);
    CHECK_EQ(sp_allowance_on_view(&a, &v, 7, 5, 16, 0.9), 1);
    CHECK(a.saturated && a.allowance == 4 && a.headroom == 4);  /* 5 - ceil(3 * 5 / 60) */
    v = view(57, 64, 0);
    CHECK_EQ(sp_allowance_on_view(&a, &v, 7, 4, 16, 0.9), 0);   /* at the line: holds */
    CHECK(!a.saturated && a.allowance == 4);

    /* deep below (maxclients lowered under the fleet): its share of the excess goes */
    v = view(70, 64, 0);
    CHECK_EQ(sp_allowance_on_view(&a, &v, 7, 10, 16, 0.9), 1);
    CHECK_EQ(a.allowance, 8);                           /* 10 - ceil(13 * 10 / 70) */

    /* rejected_connections rose: multiplicative decrease, even with headroom */
    v = view(20, 64, 3);
    sp_allowance_on_view(&a, &v, 7, 10, 16, 0.0);
    CHECK(a.decreases == 1 && a.allowance == 4);       /* half of min(allowance 8, held 10) */
    /* a restarted server counts from 0 again: no decrease */
    v = view(20, 64, 0);
    sp_allowance_on_view(&a, &v, 7, 5, 16, 0.0);
    CHECK(a.decreases == 1 && a.allowance == 6);

    /* a rejection we saw ourselves: halved at once, never below one */
    sp_allowance_on_rejection(&a, 6);
    CHECK_EQ(a.allowance, 3);
    sp_allowance_on_rejection(&a, 1);
    sp_allowance_on_rejection(&a, 1);
    CHECK_EQ(a.allowance, 1);
    v = view(70, 64, 50);
    sp_allowance_on_view(&a, &v, 7, 1, 16, 0.0);
    CHECK_EQ(a.allowance, 1);                           /* a process may keep one */

    /* near the line: within 4 reserves above the reserve */
    v = view(20, 64, 0);
    sp_allowance_on_view(&a, &v, 7, 10, 16, 0.0);
    CHECK(!sp_allowance_near_line(&a));              /* spare 37 > 28 */
    v = view(30, 64, 0);
    sp_allowance_on_view(&a, &v, 7, 10, 16, 0.0);
    CHECK(sp_allowance_near_line(&a));               /* spare 27 */
    v = view(10, 64, 0);
    sp_allowance_on_view(&a, &v, 7, 10, 16, 0.0);
    CHECK(!sp_allowance_near_line(&a));              /* spare 47 */
    CHECK(sp_allowance_within_reach(&a, 20, 10) && !sp_allowance_within_reach(&a, 18, 10));
    CHECK(sp_allowance_within_reach(&a, 18, 12));    /* 2 made since: 2 less spare */

    /* a view without maxclients (INFO denied) or a reserve of 0: no limit */
    v = view(20, -1, -1);
    CHECK_EQ(sp_allowance_on_view(&a, &v, 7, 5, 16, 0.0), 0);
    CHECK_EQ(sp_allowance_cap(&a, 16), 16);
    v = view(63, 64, 0);
    CHECK_EQ(sp_allowance_on_view(&a, &v, 0, 5, 16, 0.0), 0);
    CHECK_EQ(sp_allowance_cap(&a, 16), 16);
    CHECK(!sp_allowance_near_line(&a));

    /* no view ever: a rejection leaves the overloaded state to handle it */
    sp_allowance_init(&a);
    sp_allowance_on_rejection(&a, 4);
    CHECK_EQ(sp_allowance_cap(&a, 16), 16);
}

static sp_acquire_status
acq(sp_endpoint *ep, double deadline, sp_waiter *w, sp_conn **c)
{
    sp_deferred after = {0};
    tp_waiter_init(w);
    sp_acquire_status st = sp_endpoint_acquire(ep, POOL_A, 1, deadline, w, c, &after);
    tp_after_done(&after);
    return st;
}

/* The endpoint's books follow the allowance: no slot over it, a waiter
 * (not a refusal) while saturated with nothing held, release over it
 * closes, and a view with headroom serves the queue. */
static void
test_endpoint_saturated(void)
{
    sp_endpoint *ep = sp_endpoint_new("tcp://127.0.0.1:1/0", "redis://127.0.0.1:1/0", 64);
    sp_deferred after = {0};
    sp_waiter w;
    sp_conn *c = NULL;
    sp_server_view v;

    /* saturated with nothing held: the caller queues, it is not refused */
    pthread_mutex_lock(&ep->lock);
    v = view(60, 64, 0);
    CHECK_EQ(sp_endpoint_server_view_locked(ep, &v, 7, 0.0, &after), 1);
    sp_endpoint_set_state_locked(ep, SP_STATE_SATURATED, "test", &after);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);
    CHECK_EQ(acq(ep, -1, &w, &c), SP_ACQ_QUEUED);
    CHECK(ep->refused_by_state == 0);

    /* headroom back: the waiter gets a slot, the allowance one more than held */
    pthread_mutex_lock(&ep->lock);
    v = view(40, 64, 0);
    CHECK_EQ(sp_endpoint_server_view_locked(ep, &v, 7, 0.0, &after), 0);
    CHECK_EQ(sp_endpoint_cap_locked(ep), 1);
    sp_endpoint_set_state_locked(ep, SP_STATE_READY, "test", &after);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);
    CHECK_EQ(w.result, SP_WAIT_SLOT);
    sp_endpoint_cancel(ep, &w, &after);
    tp_after_done(&after);

    tp_payload *p1 = tp_connect(ep, POOL_A, 1, -1);
    /* the allowance (1) is in use: the next caller waits although the budget is 64 */
    CHECK_EQ(acq(ep, 0, &w, &c), SP_ACQ_TIMEOUT);
    CHECK(ep->allowance_blocked == 1);

    /* grow (far from the line), make two more */
    pthread_mutex_lock(&ep->lock);
    v = view(4, 100, 0);
    sp_endpoint_server_view_locked(ep, &v, 7, 0.99, &after);  /* 1 + 1 + 61/16 */
    CHECK_EQ(sp_endpoint_cap_locked(ep), 5);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);
    tp_payload *p2 = tp_connect(ep, POOL_A, 1, -1);
    tp_payload *p3 = tp_connect(ep, POOL_A, 1, -1);
    CHECK(ep->total == 3);

    /* a rejection halves it: released connections over it are closed */
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_rejected_locked(ep, &after);
    CHECK_EQ(sp_endpoint_cap_locked(ep), 1);
    pthread_mutex_unlock(&ep->lock);
    tp_after_done(&after);
    CHECK_EQ(sp_endpoint_release(ep, POOL_A, p1, -1, 1, &after), SP_REL_OK);
    CHECK_EQ(tp_after_done(&after), 1);
    CHECK_EQ(sp_endpoint_release(ep, POOL_A, p2, -1, 1, &after), SP_REL_OK);
    CHECK_EQ(tp_after_done(&after), 1);
    /* the last one is kept: a process may always keep one */
    CHECK_EQ(sp_endpoint_release(ep, POOL_A, p3, -1, 1, &after), SP_REL_OK);
    CHECK_EQ(tp_after_done(&after), 0);
    CHECK(ep->idle == 1 && ep->total == 1);
    tp_check_counts(ep, 0);

    /* an unavailable view (INFO denied) lifts the allowance: the budget only */
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_server_view_unavailable_locked(ep, "INFO clients: -NOPERM");
    CHECK_EQ(sp_endpoint_cap_locked(ep), 64);
    pthread_mutex_unlock(&ep->lock);

    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    sp_endpoint_free(ep);
}

static const sp_test tests[] = {
    {"allowance/reserve_defaults", test_reserve_defaults},
    {"allowance/view_parse_hostile", test_view_parse_hostile},
    {"allowance/rules", test_allowance_rules},
    {"allowance/endpoint_saturated", test_endpoint_saturated},
    {NULL, NULL},
};

SP_SUITE(allowance, tests)
