/* Tests of csrc/core/inbox.c: served async waiters in order, one wake-up per burst, removal. */
#include <string.h>

#include "core_util.h"
#include "driver.h"
#include "endpoint.h"
#include "inbox.h"

static void
async_waiter_init(sp_waiter *w, sp_inbox *ib)
{
    tp_waiter_init(w);
    w->notify_fd = ib->notify_fd;
    w->inbox = ib;
}

static void
test_inbox_order_and_wakeups(void)
{
    sp_inbox ib;
    sp_waiter w[3];
    CHECK_EQ(sp_inbox_init(&ib, 99), 0);
    for (int i = 0; i < 3; i++) {
        async_waiter_init(&w[i], &ib);
    }
    CHECK(sp_inbox_pop(&ib) == NULL);
    CHECK_EQ(sp_inbox_push(&ib, &w[0]), 1);   /* the first asks for a wake-up */
    CHECK_EQ(sp_inbox_push(&ib, &w[1]), 0);   /* the rest of the burst does not */
    CHECK_EQ(sp_inbox_push(&ib, &w[2]), 0);
    CHECK_EQ(sp_inbox_remove(&ib, &w[1]), 1);
    CHECK_EQ(sp_inbox_remove(&ib, &w[1]), 0);
    CHECK(sp_inbox_pop(&ib) == &w[0]);
    CHECK_EQ(sp_inbox_push(&ib, &w[1]), 0);   /* not emptied yet: still no new wake-up */
    CHECK(sp_inbox_pop(&ib) == &w[2]);
    CHECK(sp_inbox_pop(&ib) == &w[1]);
    CHECK(!w[0].in_inbox && !w[1].in_inbox && !w[2].in_inbox);
    CHECK(sp_inbox_pop(&ib) == NULL);        /* empty: re-armed */
    CHECK_EQ(sp_inbox_push(&ib, &w[0]), 1);
    CHECK_EQ(sp_inbox_remove(&ib, &w[0]), 1);
    CHECK(ib.head == NULL && ib.tail == NULL);
    sp_inbox_destroy(&ib);
}

/* Two loops' waiters on one endpoint: each is served into its own inbox,
 * and each loop gets one wake-up however many of its waiters were served. */
static void
test_inbox_served_by_endpoint(void)
{
    int pool = 0;
    sp_inbox a, b;
    sp_waiter wa[2], wb;
    sp_deferred after = {0};
    sp_conn *got = NULL;
    sp_endpoint *ep = sp_endpoint_new("tcp://127.0.0.1:1/0", "redis://127.0.0.1:1/0", 3);
    CHECK_EQ(sp_inbox_init(&a, 101), 0);
    CHECK_EQ(sp_inbox_init(&b, 102), 0);
    tp_payload *held[3];
    for (int i = 0; i < 3; i++) {
        held[i] = tp_connect(ep, &pool, 1, -1);
        CHECK(held[i] != NULL);
    }
    async_waiter_init(&wa[0], &a);
    async_waiter_init(&wa[1], &a);
    async_waiter_init(&wb, &b);
    CHECK_EQ(sp_endpoint_acquire(ep, &pool, 1, -1.0, &wa[0], &got, &after), SP_ACQ_QUEUED);
    CHECK_EQ(sp_endpoint_acquire(ep, &pool, 1, -1.0, &wb, &got, &after), SP_ACQ_QUEUED);
    CHECK_EQ(sp_endpoint_acquire(ep, &pool, 1, -1.0, &wa[1], &got, &after), SP_ACQ_QUEUED);
    CHECK_EQ(after.n_notify, 0);

    /* Release all three in one `after`: served in FIFO order, one byte per loop. */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(sp_endpoint_release(ep, &pool, held[i], -1, 1, &after), SP_REL_OK);
    }
    CHECK_EQ(after.n_notify, 2);
    CHECK(sp_inbox_pop(&a) == &wa[0] && sp_inbox_pop(&a) == &wa[1] && sp_inbox_pop(&a) == NULL);
    CHECK(sp_inbox_pop(&b) == &wb && sp_inbox_pop(&b) == NULL);
    CHECK(wa[0].result == SP_WAIT_CONN && wa[1].result == SP_WAIT_CONN &&
          wb.result == SP_WAIT_CONN);
    after.n_notify = 0;
    sp_conn *served[3] = {wa[0].conn, wb.conn, wa[1].conn};
    for (int i = 0; i < 3; i++) {
        CHECK(sp_endpoint_release(ep, &pool, served[i]->payload, -1, 0, &after) == SP_REL_OK);
    }
    tp_after_done(&after);
    tp_check_counts(ep, 0);
    sp_inbox_destroy(&a);
    sp_inbox_destroy(&b);
    sp_endpoint_free(ep);
}

static const sp_test tests[] = {
    {"inbox/order_and_wakeups", test_inbox_order_and_wakeups},
    {"inbox/served_by_endpoint", test_inbox_served_by_endpoint},
    {NULL, NULL},
};

SP_SUITE(inbox, tests)
