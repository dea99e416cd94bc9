/* Tests of csrc/core/forksafe.c: fork() with the checker running, records out and a waiter queued. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checker.h"
#include "core_util.h"
#include "driver.h"
#include "fake_server.h"
#include "forksafe.h"
#include "net.h"
#include "probe.h"
#include "registry.h"

static int pool_f, pool_g;
#define POOL_F ((void *)&pool_f)
#define POOL_G ((void *)&pool_g)

typedef struct {
    sp_endpoint *ep;
    sp_wait_result res;
    tp_payload *got;
    int done;
} fw_arg;

static void *
fork_waiter(void *p)
{
    fw_arg *a = p;
    sp_waiter w;
    sp_deferred after = {0};
    sp_conn *c = NULL;
    double deadline = sp_now() + 30.0;

    tp_waiter_init(&w);
    if (sp_endpoint_acquire(a->ep, POOL_G, 1, deadline, &w, &c, &after) == SP_ACQ_QUEUED) {
        do {
            a->res = tp_wait(a->ep, &w, deadline, 0.05);
        } while (a->res == SP_WAIT_PENDING);
        if (a->res == SP_WAIT_CONN) {
            a->got = w.conn->payload;
        }
    }
    tp_after_done(&after);
    __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int
one_waiter(sp_endpoint *ep, void *arg)
{
    (void)arg;
    return ep->waiters == 1;
}

/* Runs in the child: returns the number of failed checks. */
static int
child_checks(sp_endpoint *ep, sp_endpoint *full, uint64_t epoch0, tp_payload *const *p,
             tp_payload *held)
{
    int before = sp_test_failures;
    sp_deferred after = {0};
    sp_waiter w;
    sp_conn *got = NULL, *rec;
    tp_payload *q;
    int i, n;


    CHECK(sp_fork_epoch() != epoch0);
    CHECK(!sp_checker_running());
    /* Locks are usable (re-initialised, whoever held them in the parent). */
    CHECK(pthread_mutex_trylock(&ep->lock) == 0);
    pthread_mutex_unlock(&ep->lock);
    CHECK(pthread_mutex_trylock(&full->lock) == 0);
    pthread_mutex_unlock(&full->lock);

    /* The books start empty; the parent's records are orphans. */
    CHECK(ep->total == 0 && ep->idle == 0 && ep->in_use == 0 && ep->connecting == 0 &&
          ep->closing == 0 && ep->idle_top == NULL && ep->conns.len == 0);
    CHECK(full->total == 0 && full->waiters == 0 && full->wait_head == NULL &&
          full->wait_tail == NULL);
    n = tp_list_len(ep->graveyard);
    CHECKF(n == 3, "graveyard has %d records", n);
    for (rec = ep->graveyard; rec != NULL; rec = rec->next) {
        CHECK(rec->state == SP_CONN_DEAD && !rec->counted);
        /* In use at fork: disposed of quietly (no disconnect). */
        CHECK(rec->quiet == (rec->payload == p[0]));
    }
    for (i = 0; i < 3; i++) {
        CHECK(tp_list_has(ep->graveyard, p[i]));
    }
    CHECK(tp_list_len(full->graveyard) == 1 && tp_list_has(full->graveyard, held));
    /* Released in the child: unknown, dropped silently by the binding; and
       release/acquire hand the orphans to the caller for disposal. */
    CHECK_EQ(sp_endpoint_release(ep, POOL_F, p[0], -1, 1, &after), SP_REL_UNKNOWN);
    CHECK(tp_list_len(after.graveyard) == 3 && ep->graveyard == NULL);
    CHECK_EQ(tp_after_done(&after), 3);

    /* The checker can be started again, and the budget works. */
    CHECK(sp_checker_ensure_running() == 0 && sp_checker_running());
    tp_waiter_init(&w);
    CHECK_EQ(sp_endpoint_acquire(full, POOL_G, 1, 0, &w, &got, &after), SP_ACQ_SLOT);
    CHECK(tp_list_len(after.graveyard) == 1 && full->graveyard == NULL);
    sp_endpoint_slot_failed(full, &after);
    CHECK_EQ(tp_after_done(&after), 1);
    q = tp_connect(ep, POOL_F, 1, -1);
    CHECK(q != NULL && ep->total == 1);
    sp_endpoint_bury_pool_records(ep, POOL_F, &after);
    CHECK(tp_after_done(&after) == (q != NULL));
    CHECK(ep->total == 0 && full->total == 0);
    CHECK(tp_collect(ep) == 0 && tp_collect(full) == 0);
    sp_checker_stop();
    CHECK(!sp_checker_running());
    return sp_test_failures - before;
}

static void
test_fork_child_clean(void)
{
    sp_deferred after = {0};
    sp_endpoint *ep, *full;
    tp_payload *p[3], *held;
    sp_checker_config cfg = {0.02, 0.02, 0.01, 0.05, 0.5, 1, 0.0, 0};
    fw_arg warg;
    pthread_t th;
    uint64_t epoch0;
    pid_t pid;
    int created, i, status = 0, th_ok, base = sp_registry_count();

    CHECK_EQ(sp_forksafe_install(), 0);
    CHECK_EQ(sp_forksafe_install(), 0);
    sp_checker_set_config(&cfg);
    ep = sp_registry_bind("fork-a", "redis://fork-a", 4, NULL, &created);
    full = sp_registry_bind("fork-b", "redis://fork-b", 1, NULL, &created);
    if (ep == NULL || full == NULL) {
        CHECK(ep != NULL && full != NULL);
        return;
    }
    for (i = 0; i < 3; i++) {
        p[i] = tp_connect(ep, POOL_F, 1, -1);
    }
    held = tp_connect(full, POOL_F, 1, -1);
    if (p[0] == NULL || p[1] == NULL || p[2] == NULL || held == NULL) {
        goto done;
    }
    sp_endpoint_release(ep, POOL_F, p[1], -1, 1, &after);
    sp_endpoint_release(ep, POOL_F, p[2], -1, 1, &after);
    tp_after_done(&after);
    CHECK(ep->idle == 2 && ep->in_use == 1);

    /* A thread queued on the full endpoint while forking. */
    memset(&warg, 0, sizeof(warg));
    warg.ep = full;
    th_ok = pthread_create(&th, NULL, fork_waiter, &warg) == 0;
    CHECK(th_ok);
    CHECK(tp_wait_locked(full, one_waiter, NULL, 10.0));
    CHECK_EQ(sp_checker_ensure_running(), 0);
    tp_sleep_ms(30);  /* let the checker tick over the endpoints */

    epoch0 = sp_fork_epoch();
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        int bad = child_checks(ep, full, epoch0, p, held);
        fflush(stdout);
        fflush(stderr);
        _exit(bad == 0 ? 0 : 3);
    }
    CHECK(pid > 0);
    if (pid > 0) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "child: status 0x%x (exit %d)", status, WEXITSTATUS(status));
    }

    /* The parent is untouched. */
    CHECK_EQ(sp_fork_epoch(), epoch0);
    CHECK(sp_checker_running());
    CHECK(ep->total == 3 && ep->idle == 2 && ep->in_use == 1 && ep->graveyard == NULL);
    CHECK(full->waiters == 1 && warg.done == 0);
    tp_check_counts(ep, 0);
    /* The parent's waiter is still served. */
    CHECK_EQ(sp_endpoint_release(full, POOL_F, held, -1, 1, &after), SP_REL_OK);
    tp_after_done(&after);
    if (th_ok) {
        pthread_join(th, NULL);
        CHECK(warg.res == SP_WAIT_CONN && warg.got == held);
    }
    sp_checker_stop();

done:
    sp_endpoint_bury_pool_records(ep, POOL_F, &after);
    sp_endpoint_bury_pool_records(full, POOL_F, &after);
    sp_endpoint_bury_pool_records(full, POOL_G, &after);
    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    tp_collect(ep);
    tp_collect(full);
    CHECK(ep->total == 0 && full->total == 0);
    sp_registry_unbind(ep);
    sp_registry_unbind(full);
    CHECK_EQ(sp_registry_count(), base);
}

/* A probe's socket open across fork(): the child closes its copy (kept, it
 * would hold the connection open on the server after the parent closed
 * it), and the parent's socket goes on. */
static void
test_fork_closes_probe_sockets_in_child(void)
{
    fake_server f = {.mode = FAKE_NOACCEPT, .timeout = 2.0};
    sp_probe_op op;
    int status = 0;
    size_t base = sp_net_open_count();

    CHECK_EQ(sp_forksafe_install(), 0);
    if (fake_start(&f) != 0) {
        CHECK(!"fake server");
        return;
    }
    sp_probe_target t = {"127.0.0.1", f.port, NULL, NULL, NULL, 1.0};
    CHECK_EQ(sp_probe_begin(&op, &t, SP_PROBE_MODE_RESP), 1);
    CHECK(op.fd >= 0);
    CHECK_EQ(sp_net_open_count(), base + 1);

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int bad = fcntl(op.fd, F_GETFD) != -1 || errno != EBADF || sp_net_open_count() != 0;
        _exit(bad ? 3 : 0);
    }
    CHECK(pid > 0);
    if (pid > 0) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "child: status 0x%x (its copy of the probe socket was left open)", status);
    }
    CHECK(fcntl(op.fd, F_GETFD) != -1);
    CHECK_EQ(sp_net_open_count(), base + 1);
    sp_probe_abort(&op);
    CHECK_EQ(op.fd, -1);
    CHECK_EQ(sp_net_open_count(), base);
    fake_stop(&f);
}

static const sp_test tests[] = {
    {"fork/child_clean", test_fork_child_clean},
    {"fork/closes_probe_sockets_in_child", test_fork_closes_probe_sockets_in_child},
    {NULL, NULL},
};

SP_SUITE(fork, tests)
