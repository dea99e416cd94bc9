/* Tests of csrc/core/host_budget.c with forked processes: the bound, fairness, dead holders, fork, bad segments. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core_util.h"
#include "driver.h"
#include "host_budget.h"

static int pool_h;
#define POOL_H ((void *)&pool_h)

static char seg_name[64];

/* A fresh segment name for each test (removed at the end). */
static const char *
fresh_name(void)
{
    static int n;
    snprintf(seg_name, sizeof(seg_name), "/sp-driver-%ld-%d", (long)getpid(), ++n);
    shm_unlink(seg_name);
    return seg_name;
}

/* An endpoint on the host budget `name` (budget `max`). */
static sp_endpoint *
host_ep(const char *name, int max)
{
    sp_endpoint *ep = sp_endpoint_new("hb", "hb", max);
    char err[200] = "";
    int created = 0;
    sp_host *h = sp_host_attach(name, max, &created, err, sizeof(err));
    CHECKF(h != NULL, "attach: %s", err);
    if (h != NULL) {
        CHECK_EQ(sp_endpoint_set_host(ep, h), 0);
    }
    return ep;
}

/* Drops every idle record and frees the endpoint (its host slots go back). */
static void
host_ep_free(sp_endpoint *ep)
{
    sp_deferred after = {0};
    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    tp_collect(ep);
    sp_endpoint_free(ep);
}

static int
host_total(sp_endpoint *ep)
{
    sp_stats s;
    sp_endpoint_stats(ep, &s);
    return s.host.total;
}

/* One checkout: an idle connection or a new one (a record made for the
 * slot). Returns the payload, or NULL (timed out / refused). */
static tp_payload *
checkout(sp_endpoint *ep, double wait_s)
{
    sp_waiter w;
    sp_deferred after = {0};
    sp_conn *got = NULL;
    double deadline = sp_now() + wait_s;
    tp_waiter_init(&w);
    sp_acquire_status st = sp_endpoint_acquire(ep, POOL_H, 1, wait_s == 0 ? 0 : deadline, &w,
                                               &got, &after);
    tp_after_done(&after);
    if (st == SP_ACQ_QUEUED) {
        sp_wait_result r;
        do {
            r = sp_endpoint_wait(ep, &w, deadline, 0.05);  /* slices: signals would run */
        } while (r == SP_WAIT_PENDING);
        sp_endpoint_wait_done(ep, &w);
        if (r == SP_WAIT_CONN) {
            return w.conn->payload;
        }
        st = r == SP_WAIT_SLOT ? SP_ACQ_SLOT : SP_ACQ_TIMEOUT;
    }
    if (st == SP_ACQ_CONN) {
        return got->payload;
    }
    if (st != SP_ACQ_SLOT) {
        return NULL;
    }
    sp_conn *rec = malloc(sizeof(*rec));
    tp_payload *p = tp_payload_new(-1);
    if (rec == NULL || p == NULL || sp_endpoint_add(ep, rec, p, POOL_H, 1, -1) != 0) {
        free(rec);
        free(p);
        sp_endpoint_slot_failed(ep, &after);
        tp_after_done(&after);
        return NULL;
    }
    return p;
}

static void
checkin(sp_endpoint *ep, tp_payload *p)
{
    sp_deferred after = {0};
    CHECK_EQ(sp_endpoint_release(ep, POOL_H, p, -1, 1, &after), SP_REL_OK);
    tp_after_done(&after);
}

/* ---- the bound and fairness -------------------------------------------- */

#define FAIR_PROCS 8
#define FAIR_SLOTS 4

/* Every child of the fairness test starts on one signal (a byte each on
 * this pipe), so that all of them compete over the same second. */
static int go_pipe[2] = {-1, -1};
/* Checkouts of all the children together (a shared page): they run for
 * FAIR_MIN_S and on until FAIR_TOTAL_OPS (at most FAIR_MAX_S), so a slow
 * run (valgrind, whose first second goes on translating code) still
 * compares enough checkouts. */
static long *fair_total;
#define FAIR_TOTAL_OPS 2000
#define FAIR_MIN_S 1.0
#define FAIR_MAX_S 20.0

static int
fair_child(const char *name, int fd)
{
    sp_endpoint *ep = host_ep(name, FAIR_SLOTS);
    long ops = 0;
    int over = 0, lost = 0;
    char ready = 'r', go = 0;
    close(go_pipe[1]);
    if (write(fd, &ready, 1) != 1 || read(go_pipe[0], &go, 1) != 1) {
        return 1;
    }
    double t0 = sp_now();
    for (;;) {
        double now = sp_now();
        if (now >= t0 + FAIR_MAX_S ||
            (now >= t0 + FAIR_MIN_S &&
             __atomic_load_n(fair_total, __ATOMIC_RELAXED) >= FAIR_TOTAL_OPS)) {
            break;
        }
        tp_payload *p = checkout(ep, 5.0);
        if (p == NULL) {
            lost++;
            continue;
        }
        if (host_total(ep) > FAIR_SLOTS) {
            over++;
        }
        checkin(ep, p);
        ops++;
        __atomic_add_fetch(fair_total, 1, __ATOMIC_RELAXED);
    }
    CHECKF(over == 0, "%d checkouts saw more than %d host slots taken", over, FAIR_SLOTS);
    CHECKF(lost == 0, "%d checkouts timed out", lost);
    host_ep_free(ep);
    return write(fd, &ops, sizeof(ops)) != sizeof(ops);
}

static void
test_bound_and_fairness(void)
{
    const char *name = fresh_name();
    sp_endpoint *mine = host_ep(name, FAIR_SLOTS);  /* makes the segment */
    pid_t pids[FAIR_PROCS];
    int fds[FAIR_PROCS];
    CHECK_EQ(pipe(go_pipe), 0);
    fair_total = mmap(NULL, sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
    CHECK(fair_total != MAP_FAILED);
    *fair_total = 0;
    for (int i = 0; i < FAIR_PROCS; i++) {
        pids[i] = tp_spawn(fair_child, name, &fds[i]);
        CHECK(pids[i] > 0);
    }
    close(go_pipe[0]);
    for (int i = 0; i < FAIR_PROCS; i++) {
        char ready = 0;
        CHECK(read(fds[i], &ready, 1) == 1 && ready == 'r');
    }
    char go[FAIR_PROCS];
    memset(go, 'g', sizeof(go));
    CHECK_EQ(write(go_pipe[1], go, sizeof(go)), (ssize_t)sizeof(go));
    close(go_pipe[1]);
    double sum = 0, sum_sq = 0;
    for (int i = 0; i < FAIR_PROCS; i++) {
        long ops = 0;
        CHECK_EQ(read(fds[i], &ops, sizeof(ops)), sizeof(ops));
        close(fds[i]);
        CHECKF(tp_exited_ok(pids[i]), "child %d failed", i);
        CHECKF(ops > 0, "child %d completed nothing", i);
        sum += (double)ops;
        sum_sq += (double)ops * (double)ops;
    }
    double jain = sum_sq > 0 ? sum * sum / (FAIR_PROCS * sum_sq) : 0;
    sp_note("%d processes on %d host slots: %.0f checkouts, Jain's index %.3f", FAIR_PROCS,
            FAIR_SLOTS, sum, jain);
    CHECKF(jain >= 0.9, "Jain's index %.3f", jain);
    CHECK_EQ(host_total(mine), 0);
    munmap(fair_total, sizeof(long));
    host_ep_free(mine);
    shm_unlink(name);
}

/* Several threads per process: only the head of each queue watches the
 * host; the others are served or handed the watch, none is forgotten. */
#define THREADED_PROCS 3
#define THREADS_EACH 4

typedef struct {
    sp_endpoint *ep;
    long ops;
    int over, lost;
} thread_arg;

static void *
threaded_worker(void *p)
{
    thread_arg *a = p;
    double until = sp_now() + 0.5;
    while (sp_now() < until) {
        tp_payload *got = checkout(a->ep, 5.0);
        if (got == NULL) {
            a->lost++;
            continue;
        }
        if (host_total(a->ep) > 2) {
            a->over++;
        }
        checkin(a->ep, got);
        a->ops++;
    }
    return NULL;
}

static int
threaded_child(const char *name, int fd)
{
    sp_endpoint *ep = host_ep(name, 2);
    pthread_t threads[THREADS_EACH];
    thread_arg args[THREADS_EACH];
    long ops = 0;
    for (int i = 0; i < THREADS_EACH; i++) {
        args[i] = (thread_arg){ep, 0, 0, 0};
        pthread_create(&threads[i], NULL, threaded_worker, &args[i]);
    }
    for (int i = 0; i < THREADS_EACH; i++) {
        pthread_join(threads[i], NULL);
        CHECKF(args[i].over == 0, "thread %d saw the host over its budget", i);
        CHECKF(args[i].lost == 0, "thread %d timed out %d times", i, args[i].lost);
        CHECKF(args[i].ops > 0, "thread %d completed nothing", i);
        ops += args[i].ops;
    }
    CHECK(ep->waiters == 0);
    host_ep_free(ep);
    return write(fd, &ops, sizeof(ops)) != sizeof(ops);
}

static void
test_threads_in_line(void)
{
    const char *name = fresh_name();
    sp_endpoint *mine = host_ep(name, 2);
    pid_t pids[THREADED_PROCS];
    int fds[THREADED_PROCS];
    for (int i = 0; i < THREADED_PROCS; i++) {
        pids[i] = tp_spawn(threaded_child, name, &fds[i]);
    }
    long total = 0;
    for (int i = 0; i < THREADED_PROCS; i++) {
        long ops = 0;
        CHECK_EQ(read(fds[i], &ops, sizeof(ops)), sizeof(ops));
        close(fds[i]);
        CHECKF(tp_exited_ok(pids[i]), "child %d failed", i);
        total += ops;
    }
    sp_note("%d processes x %d threads on 2 host slots: %ld checkouts", THREADED_PROCS,
            THREADS_EACH, total);
    host_ep_free(mine);
    shm_unlink(name);
}

/* ---- dead holders ------------------------------------------------------ */

/* Takes every slot, says so, and waits to be killed. */
static int
hold_all_child(const char *name, int fd)
{
    sp_endpoint *ep = host_ep(name, 3);
    tp_payload *held[3];
    for (int i = 0; i < 3; i++) {
        held[i] = checkout(ep, 1.0);
        CHECK(held[i] != NULL);
    }
    char ok = sp_test_failures ? 'n' : 'y';
    if (write(fd, &ok, 1) != 1) {
        return 1;
    }
    pause();
    return 0;
}

static void
check_reclaimed(const char *name, int reap_first)
{
    int fd;
    pid_t pid = tp_spawn(hold_all_child, name, &fd);
    char ok = 0;
    CHECK(read(fd, &ok, 1) == 1 && ok == 'y');
    close(fd);
    sp_endpoint *ep = host_ep(name, 3);
    CHECK_EQ(host_total(ep), 3);
    CHECK(checkout(ep, 0) == NULL);  /* full: the child holds all three */
    kill(pid, SIGKILL);
    int status;
    if (reap_first) {
        CHECK_EQ(waitpid(pid, &status, 0), pid);
    }
    /* Killed: its slots come back, to whoever waits, within 1 s. */
    double t0 = sp_now();
    tp_payload *got[3];
    for (int i = 0; i < 3; i++) {
        got[i] = checkout(ep, 1.0);
        CHECKF(got[i] != NULL, "slot %d not back after %.3f s", i, sp_now() - t0);
    }
    sp_note("a killed holder's 3 slots came back after %.3f s (%s)", sp_now() - t0,
            reap_first ? "reaped" : "a zombie");
    CHECK_EQ(host_total(ep), 3);
    for (int i = 0; i < 3; i++) {
        if (got[i]) {
            checkin(ep, got[i]);
        }
    }
    if (!reap_first) {
        CHECK_EQ(waitpid(pid, &status, 0), pid);
    }
    host_ep_free(ep);
}

static void
test_killed_holder(void)
{
    const char *name = fresh_name();
    check_reclaimed(name, 1);
    check_reclaimed(name, 0);
    shm_unlink(name);
}

/* Takes a place in line (the budget is full) and waits there to be killed. */
static int
in_line_child(const char *name, int fd)
{
    sp_endpoint *ep = host_ep(name, 1);
    char ok = 'y';
    if (write(fd, &ok, 1) != 1) {
        return 1;
    }
    checkout(ep, 30.0);
    return 0;
}

static int
host_waiting(sp_endpoint *ep)
{
    sp_stats s;
    sp_endpoint_stats(ep, &s);
    return s.host.waiting;
}

/* A process killed while first in line holds no one else up. */
static void
test_killed_in_line(void)
{
    const char *name = fresh_name();
    sp_endpoint *ep = host_ep(name, 1);
    tp_payload *p = checkout(ep, 0);
    CHECK(p != NULL);
    int fd;
    pid_t pid = tp_spawn(in_line_child, name, &fd);
    char ok = 0;
    CHECK(read(fd, &ok, 1) == 1 && ok == 'y');
    close(fd);
    double until = sp_now() + 5.0;
    while (host_waiting(ep) == 0 && sp_now() < until) {
        tp_sleep_ms(2);
    }
    CHECK_EQ(host_waiting(ep), 1);
    kill(pid, SIGKILL);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    /* Given back: closed, not kept (someone is in line); the dead one had
     * the oldest ticket, and the next in line gets the slot all the same. */
    checkin(ep, p);
    sp_endpoint *other = host_ep(name, 1);  /* the same segment, as another process would */
    tp_payload *q = checkout(other, 1.0);
    CHECKF(q != NULL, "a dead process's place in line held up the next");
    if (q != NULL) {
        checkin(other, q);
    }
    host_ep_free(other);
    host_ep_free(ep);
    shm_unlink(name);
}

/* ---- the maker killed half-way --------------------------------------- */

static void
test_half_made(void)
{
    const char *name = fresh_name();
    /* Created and never sized: its maker died right after shm_open(). */
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    close(fd);
    double t0 = sp_now();
    sp_endpoint *ep = host_ep(name, 2);
    CHECK(ep->host_budget != NULL);
    sp_note("an unsized segment was made anew after %.3f s", sp_now() - t0);
    host_ep_free(ep);
    shm_unlink(name);

    /* Sized, never published (zero pages: no maker, no magic). */
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)sp_host_segment_size()) == 0);
    close(fd);
    ep = host_ep(name, 2);
    CHECK(ep->host_budget != NULL);
    host_ep_free(ep);
    shm_unlink(name);
}

/* ---- bad segments ------------------------------------------------------ */

static void
expect_refused(const char *name, const char *why_part)
{
    char err[200] = "";
    int created = 0;
    sp_host *h = sp_host_attach(name, 4, &created, err, sizeof(err));
    CHECKF(h == NULL, "attached to a bad segment (%s)", why_part);
    CHECKF(strstr(err, why_part) != NULL, "error %s lacks %s", err, why_part);
    sp_host_detach(h);
}

static void
test_bad_segments(void)
{
    const char *name = fresh_name();
    size_t size = sp_host_segment_size();

    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)size + 8) == 0);
    close(fd);
    expect_refused(name, "another layout version");
    shm_unlink(name);

    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
    unsigned char junk[4096];
    memset(junk, 0xa5, sizeof(junk));
    CHECK_EQ(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    expect_refused(name, "corrupt");
    shm_unlink(name);

    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && fchmod(fd, 0644) == 0);
    close(fd);
    expect_refused(name, "mode");
    shm_unlink(name);

    if (geteuid() == 0) {
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        CHECK(fd >= 0 && fchown(fd, 65534, 65534) == 0);
        close(fd);
        expect_refused(name, "another user");
        shm_unlink(name);
    }
    expect_refused("no-slash", "name");
}

/* ---- fork -------------------------------------------------------------- */

static void
test_fork_child_holds_none(void)
{
    const char *name = fresh_name();
    sp_endpoint *ep = host_ep(name, 4);
    tp_payload *a = checkout(ep, 0), *b = checkout(ep, 0);
    CHECK(a && b && host_total(ep) == 2);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        sp_test_failures = 0;
        sp_endpoint_after_fork_child(ep);
        CHECK(sp_host_held(ep->host_budget) == 0);
        CHECK_EQ(host_total(ep), 2);  /* the parent's, still the parent's */
        tp_payload *c = checkout(ep, 0), *d = checkout(ep, 0);
        CHECK(c && d);
        CHECK(checkout(ep, 0) == NULL);  /* two are the parent's */
        _exit(sp_test_failures ? 1 : 0);
    }
    CHECK(tp_exited_ok(pid));
    /* The child's two came back when it exited (reclaimed: it never released). */
    double until = sp_now() + 2.0;
    while (host_total(ep) != 2 && sp_now() < until) {
        sp_host_reclaim(ep->host_budget, 1);
        tp_sleep_ms(5);
    }
    CHECK_EQ(host_total(ep), 2);
    CHECK(sp_host_held(ep->host_budget) == 2);
    checkin(ep, a);
    checkin(ep, b);
    host_ep_free(ep);
    shm_unlink(name);
}

/* ---- waiting ----------------------------------------------------------- */

static void
test_wait_slices_and_deadline(void)
{
    const char *name = fresh_name();
    sp_endpoint *ep = host_ep(name, 1);
    sp_endpoint *other = host_ep(name, 1);  /* the same segment, as another process would */
    tp_payload *p = checkout(ep, 0);
    CHECK(p != NULL);
    sp_waiter w;
    sp_deferred after = {0};
    sp_conn *got = NULL;
    tp_waiter_init(&w);
    double t0 = sp_now(), deadline = t0 + 0.3;
    CHECK_EQ(sp_endpoint_acquire(other, POOL_H, 1, deadline, &w, &got, &after), SP_ACQ_QUEUED);
    int slices = 0;
    sp_wait_result r;
    while ((r = sp_endpoint_wait(other, &w, deadline, 0.05)) == SP_WAIT_PENDING) {
        slices++;
    }
    sp_endpoint_wait_done(other, &w);
    CHECK_EQ(r, SP_WAIT_TIMEOUT);
    CHECK(sp_now() >= deadline);
    CHECKF(slices >= 3, "only %d slices before the deadline", slices);
    CHECK(other->waiters == 0);
    checkin(ep, p);
    host_ep_free(other);
    host_ep_free(ep);
    shm_unlink(name);
}

static const sp_test tests[] = {
    {"host_budget_bound_and_fairness", test_bound_and_fairness},
    {"host_budget_threads_in_line", test_threads_in_line},
    {"host_budget_killed_holder", test_killed_holder},
    {"host_budget_killed_in_line", test_killed_in_line},
    {"host_budget_half_made", test_half_made},
    {"host_budget_bad_segments", test_bad_segments},
    {"host_budget_fork_child_holds_none", test_fork_child_holds_none},
    {"host_budget_wait_slices_and_deadline", test_wait_slices_and_deadline},
    {NULL, NULL},
};

SP_SUITE(host_budget, tests)
