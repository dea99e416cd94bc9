/* Test helpers shared by the C-core suites: fake payloads, records, graveyards, invariants. */
#include "core_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver.h"

static int next_payload_id = 1;

tp_payload *
tp_payload_new(int fd)
{
    tp_payload *p = malloc(sizeof(*p));

    if (p != NULL) {
        p->id = __atomic_fetch_add(&next_payload_id, 1, __ATOMIC_RELAXED);
        p->fd = fd;
    }
    return p;
}

int
tp_after_done(sp_deferred *after)
{
    int n = 0;

    /* Like the binding: a closed record frees its slot, which may wake a
       waiter whose flavor needs another eviction, so loop. */
    while (after->graveyard != NULL) {
        sp_conn *rec = after->graveyard;
        after->graveyard = NULL;
        after->n_notify = 0;
        while (rec != NULL) {
            sp_conn *next = rec->next;
            tp_payload *p = rec->payload;
            CHECK(rec->state == SP_CONN_DEAD);
            if (p != NULL) {
                if (p->fd >= 0) {
                    close(p->fd);
                }
                free(p);
            }
            if (rec->counted) {
                sp_endpoint_closed(rec->ep, 1, after);
            }
            free(rec);
            rec = next;
            n++;
        }
    }
    after->n_notify = 0;
    return n;
}

int
tp_collect(sp_endpoint *ep)
{
    sp_deferred after = {0};

    pthread_mutex_lock(&ep->lock);
    after.graveyard = ep->graveyard;
    ep->graveyard = NULL;
    pthread_mutex_unlock(&ep->lock);
    return tp_after_done(&after);
}

int
tp_list_len(const sp_conn *list)
{
    int n = 0;

    for (; list != NULL; list = list->next) {
        n++;
    }
    return n;
}

int
tp_list_has(const sp_conn *list, const void *payload)
{
    for (; list != NULL; list = list->next) {
        if (list->payload == payload) {
            return 1;
        }
    }
    return 0;
}

void
tp_waiter_init(sp_waiter *w)
{
    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
}

sp_wait_result
tp_wait(sp_endpoint *ep, sp_waiter *w, double deadline, double slice)
{
    sp_wait_result r = sp_endpoint_wait(ep, w, deadline, slice);
    if (r != SP_WAIT_PENDING) {
        sp_endpoint_wait_done(ep, w);
    }
    return r;
}

tp_payload *
tp_connect(sp_endpoint *ep, void *pool, uint32_t flavor, int fd)
{
    sp_waiter w;
    sp_deferred after = {0};
    sp_conn *got = NULL;
    sp_conn *rec;
    tp_payload *p;
    sp_acquire_status st;

    tp_waiter_init(&w);
    st = sp_endpoint_acquire(ep, pool, flavor, 0, &w, &got, &after);
    tp_after_done(&after);
    CHECKF(st == SP_ACQ_SLOT, "acquire returned %d, expected a slot", (int)st);
    if (st != SP_ACQ_SLOT) {
        if (st == SP_ACQ_CONN) {
            sp_endpoint_release(ep, pool, got->payload, got->fd, 1, &after);
            tp_after_done(&after);
        }
        return NULL;
    }
    rec = malloc(sizeof(*rec));
    p = tp_payload_new(fd);
    if (rec == NULL || p == NULL || sp_endpoint_add(ep, rec, p, pool, flavor, fd) != 0) {
        CHECKF(0, "out of memory");
        free(rec);
        free(p);
        sp_endpoint_slot_failed(ep, &after);
        tp_after_done(&after);
        return NULL;
    }
    return p;
}

void
tp_check_counts_at(sp_endpoint *ep, int allow_over, const char *file, int line)
{
    int idle_len = 0, queue_len = 0, in_use_recs = 0;
    sp_conn *rec;
    sp_waiter *w;
    size_t i;

    pthread_mutex_lock(&ep->lock);
    for (rec = ep->idle_top; rec != NULL; rec = rec->next) {
        idle_len++;
        if (rec->state != SP_CONN_IDLE) {
            sp_check_failed(file, line, "idle record state", "%d", (int)rec->state);
        }
    }
    for (w = ep->wait_head; w != NULL; w = w->next) {
        queue_len++;
    }
    for (i = 0; i < ep->conns.cap; i++) {
        if (ep->conns.keys[i] != NULL) {
            in_use_recs += ((sp_conn *)ep->conns.values[i])->state == SP_CONN_INUSE;
        }
    }
    if (ep->total != ep->idle + ep->in_use + ep->connecting + ep->closing) {
        sp_check_failed(file, line, "total == idle + in_use + connecting + closing",
                        "total=%d idle=%d in_use=%d connecting=%d closing=%d", ep->total,
                        ep->idle, ep->in_use, ep->connecting, ep->closing);
    }
    if (!allow_over && ep->total > ep->max_connections) {
        sp_check_failed(file, line, "total <= max_connections", "total=%d max=%d",
                        ep->total, ep->max_connections);
    }
    if (idle_len != ep->idle || in_use_recs != ep->in_use) {
        sp_check_failed(file, line, "record lists match counters",
                        "idle list %d/%d, in-use records %d/%d", idle_len, ep->idle,
                        in_use_recs, ep->in_use);
    }
    if (ep->conns.len != (size_t)(ep->idle + ep->in_use)) {
        sp_check_failed(file, line, "conns.len == idle + in_use", "len=%zu", ep->conns.len);
    }
    if (queue_len != ep->waiters) {
        sp_check_failed(file, line, "queue length == waiters", "%d/%d", queue_len,
                        ep->waiters);
    }
    if (ep->total < 0 || ep->idle < 0 || ep->in_use < 0 || ep->connecting < 0 ||
        ep->closing < 0) {
        sp_check_failed(file, line, "counts >= 0", "total=%d idle=%d in_use=%d connecting=%d",
                        ep->total, ep->idle, ep->in_use, ep->connecting);
    }
    pthread_mutex_unlock(&ep->lock);
}

int
tp_wait_locked(sp_endpoint *ep, int (*cond_fn)(sp_endpoint *, void *), void *arg,
               double timeout)
{
    double deadline = sp_now() + timeout;

    for (;;) {
        int ok;
        pthread_mutex_lock(&ep->lock);
        ok = cond_fn(ep, arg);
        pthread_mutex_unlock(&ep->lock);
        if (ok) {
            return 1;
        }
        if (sp_now() > deadline) {
            return 0;
        }
        tp_sleep_ms(2);
    }
}

void
tp_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int
tp_pending(const char *why)
{
    const char *env = getenv("SP_DRIVER_PENDING");

    if (env != NULL && env[0] == '1') {
        return 1;
    }
    sp_note("SKIPPED (needs a core fix; SP_DRIVER_PENDING=1 runs it): %s", why);
    return 0;
}

pid_t
tp_spawn(int (*fn)(const char *name, int fd), const char *name, int *rfd)
{
    int p[2];
    if (pipe(p) < 0) {
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        sp_test_failures = 0;
        int bad = fn(name, p[1]);
        _exit(bad || sp_test_failures ? 1 : 0);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

int
tp_exited_ok(pid_t pid)
{
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        return 0;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
