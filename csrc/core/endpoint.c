/* endpoint.c -- one Redis server's connection budget: idle stack, FIFO waiters, state, counters. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "conn_list.h"
#include "endpoint.h"
#include "host_health.h"
#include "inbox.h"
#include "watch.h"

/* Invariants, all under ep->lock:
 *   total == idle + in_use + connecting + closing (a probe's slot counts as
 *   connecting), and total <= max_connections except right after
 *   sp_endpoint_set_max() lowered the limit (then no new slot is handed out
 *   until total is under it again).
 *   Every record is in `conns`; idle ones are also on the idle stack.
 *   A waiter is queued iff its result is SP_WAIT_PENDING.
 *   Waiters are served strictly in queue order (FIFO): a newcomer never takes
 *   an idle connection or a slot while someone is queued. */

const char *
sp_state_name(sp_state s)
{
    switch (s) {
    case SP_STATE_READY:
        return "ready";
    case SP_STATE_PAUSED:
        return "paused";
    case SP_STATE_RECOVERING:
        return "recovering";
    case SP_STATE_OVERLOADED:
        return "overloaded";
    case SP_STATE_SATURATED:
        return "saturated";
    }
    return "unknown";
}

/* The endpoint lock is held for a few dozen instructions at a time, and a
 * waiter woken by pthread_cond_signal() first has to take it: an adaptive
 * mutex spins briefly instead of putting that thread back to sleep. */
static int
init_lock(pthread_mutex_t *lock)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    int rc = pthread_mutex_init(lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

sp_endpoint *
sp_endpoint_new(const char *key, const char *label, int max_connections)
{
    sp_endpoint *ep = calloc(1, sizeof(*ep));
    if (ep == NULL) {
        return NULL;
    }
    ep->key = dup_or_null(key);
    ep->label = dup_or_null(label);
    if (ep->key == NULL || ep->label == NULL || init_lock(&ep->lock) != 0) {
        free(ep->key);
        free(ep->label);
        free(ep);
        return NULL;
    }
    sp_ptrmap_init(&ep->conns);
    ep->port = -1;
    ep->max_connections = max_connections;
    ep->state = SP_STATE_READY;
    ep->state_since_wall = sp_wall();
    ep->max_connecting = 2;
    ep->generation = 1;
    sp_server_view_init(&ep->server_view);
    sp_allowance_init(&ep->allow);
    snprintf(ep->server_view_error, sizeof(ep->server_view_error), "not read yet");
    static uint64_t serials;  /* atomic; 0 is never an endpoint's */
    ep->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
    return ep;
}

void
sp_endpoint_free(sp_endpoint *ep)
{
    /* Only called when no pool is bound: records are gone already. */
    sp_host_detach(ep->host_budget);
    pthread_mutex_destroy(&ep->lock);
    sp_ptrmap_free(&ep->conns);
    free(ep->flavors);
    free(ep->key);
    free(ep->label);
    free(ep->host);
    free(ep->unix_path);
    free(ep->username);
    if (ep->password) {
        memset(ep->password, 0, strlen(ep->password));
    }
    free(ep->password);
    free(ep);
}

void
sp_deferred_bury(sp_deferred *after, sp_conn *rec)
{
    rec->state = SP_CONN_DEAD;
    rec->prev = NULL;
    rec->next = after->graveyard;
    after->graveyard = rec;
}

/* Whether `after` can take one more async waiter's pipe (or has it). */
static int
notify_room(const sp_deferred *after, int fd)
{
    if (after->n_notify < (int)(sizeof(after->notify_fds) / sizeof(int))) {
        return 1;
    }
    for (int i = 0; i < after->n_notify; i++) {
        if (after->notify_fds[i] == fd) {
            return 1;
        }
    }
    return 0;
}

static void
note_notify(sp_deferred *after, int fd)
{
    for (int i = 0; i < after->n_notify; i++) {
        if (after->notify_fds[i] == fd) {
            return;
        }
    }
    after->notify_fds[after->n_notify++] = fd;
}

/* ---- idle stack ---------------------------------------------------------- */

static void
idle_push(sp_endpoint *ep, sp_conn *rec)
{
    rec->state = SP_CONN_IDLE;
    rec->owner = NULL;
    rec->idle_since_mono = sp_now();
    rec->idle_stamp = ++ep->idle_seq;
    rec->prev = NULL;
    rec->next = ep->idle_top;
    if (ep->idle_top) {
        ep->idle_top->prev = rec;
    }
    ep->idle_top = rec;
    ep->idle++;
}

static void
idle_unlink(sp_endpoint *ep, sp_conn *rec)
{
    if (rec->prev) {
        rec->prev->next = rec->next;
    }
    else {
        ep->idle_top = rec->next;
    }
    if (rec->next) {
        rec->next->prev = rec->prev;
    }
    rec->prev = rec->next = NULL;
    ep->idle--;
}

/* Newest idle connection of `flavor`, or NULL. */
static sp_conn *
idle_find(sp_endpoint *ep, uint32_t flavor)
{
    for (sp_conn *rec = ep->idle_top; rec; rec = rec->next) {
        if (rec->flavor == flavor) {
            return rec;
        }
    }
    return NULL;
}

/* ---- slots ---------------------------------------------------------------- */

/* One slot more in `total` (the caller checked the local budget): in host
 * scope only with a host slot claimed for it. `queue`: a waiter is queued
 * for it, so take a place in the host's line when none is free. */
static int
take_slot_locked(sp_endpoint *ep, int queue)
{
    if (ep->host_budget && !sp_host_claim(ep->host_budget, queue)) {
        return 0;
    }
    ep->total++;
    ep->connecting++;
    return 1;
}

/* `n` slots leave `total`; in host scope their host slots go back. */
static void
give_slots_locked(sp_endpoint *ep, int n)
{
    ep->total -= n;
    if (ep->host_budget) {
        sp_host_release(ep->host_budget, n);
    }
}

/* Host scope: another process is in line and this one holds more than its
 * share, so the connection coming back is closed (its slot goes to the
 * host) instead of kept. At or under its share a process keeps it, waiter
 * here or not: between two checkouts a busy process often has nobody in
 * its queue for a moment, and giving the slot back then would cost a
 * connect per checkout. A share nobody here uses goes back through the
 * checker (sp_endpoint_host_tick). */
static int
host_yield_locked(const sp_endpoint *ep)
{
    return ep->host_budget != NULL && sp_host_over_share(ep->host_budget);
}

/* Host scope: the counts the host view shows, and our place in line given
 * up once nobody here waits. */
static void
host_settle_locked(sp_endpoint *ep)
{
    if (ep->host_budget) {
        if (ep->wait_head == NULL) {
            sp_host_unqueue(ep->host_budget);
        }
        /* Connects done give their units of the host's max_connecting back. */
        sp_host_connect_settle(ep->host_budget, ep->connecting);
        sp_host_publish(ep->host_budget, ep->in_use, ep->total);
    }
}

int
sp_endpoint_take_probe_slot_locked(sp_endpoint *ep)
{
    if (ep->total < ep->max_connections && take_slot_locked(ep, 0)) {
        ep->probe_slots++;  /* the checker's, not the callers': outside the allowance */
        return 1;
    }
    return 0;
}

/* Removes a record from the books; the binding disposes of it later. Its
 * slot stays taken (ep->closing) until the socket is really closed, so the
 * server never sees more than max_connections from us. */
static void
bury_locked(sp_endpoint *ep, sp_conn *rec, sp_deferred *after)
{
    sp_ptrmap_del(&ep->conns, rec->payload);
    ep->closing++;
    ep->closed++;
    rec->counted = 1;
    rec->ep = ep;
    sp_deferred_bury(after, rec);
}

void
sp_endpoint_closed(sp_endpoint *ep, int n, sp_deferred *after)
{
    if (n <= 0) {
        return;
    }
    pthread_mutex_lock(&ep->lock);
    ep->closing -= n;
    give_slots_locked(ep, n);
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_bury_idle_locked(sp_endpoint *ep, sp_conn *rec, sp_deferred *after)
{
    idle_unlink(ep, rec);
    bury_locked(ep, rec, after);
}

void
sp_endpoint_bury_all_idle_locked(sp_endpoint *ep, sp_deferred *after)
{
    while (ep->idle_top) {
        sp_endpoint_bury_idle_locked(ep, ep->idle_top, after);
    }
}

/* Hands records the checker buried to the calling (Python) thread. */
static void
collect_graveyard_locked(sp_endpoint *ep, sp_deferred *after)
{
    sp_conn_list_move(&ep->graveyard, &after->graveyard);
}

/* ---- the view probe's loan (checker.c: probes near the line) --------------- */

/* Whether the checker may read the view through a connection of `ep`
 * (view_loan.h): a plain socket of a sync connection (an asyncio
 * transport reads its own socket), not TLS. */
static int
lendable_locked(const sp_endpoint *ep, const sp_conn *rec)
{
    return rec->fd >= 0 && ep->view_loan == NULL && !ep->tls;
}

/* `rec` (off the idle stack, not in use) becomes the loan: it leaves the
 * books, and its slot stays taken as the checker's probe slot (total does
 * not change). */
static int
lend_locked(sp_endpoint *ep, sp_conn *rec)
{
    if (!lendable_locked(ep, rec)) {
        return 0;
    }
    sp_ptrmap_del(&ep->conns, rec->payload);
    rec->state = SP_CONN_DEAD;
    rec->owner = NULL;
    rec->counted = 0;  /* its slot is the probe's now */
    rec->prev = rec->next = NULL;
    ep->connecting++;
    ep->probe_slots++;
    ep->view_loan = rec;
    ep->view_loan_wanted = SP_LOAN_NONE;
    ep->view_loans++;
    ep->loan_ready = 1;
    return 1;
}

int
sp_endpoint_lend_for_view_locked(sp_endpoint *ep)
{
    if (ep->view_loan != NULL) {
        return 1;
    }
    sp_conn *oldest = ep->idle_top;
    while (oldest && oldest->next) {
        oldest = oldest->next;
    }
    for (sp_conn *rec = oldest; rec; rec = rec->prev) {
        if (lendable_locked(ep, rec)) {
            idle_unlink(ep, rec);
            return lend_locked(ep, rec);
        }
    }
    if (ep->idle_top == NULL && !ep->tls) {
        ep->view_loan_wanted = SP_LOAN_ANY;  /* the next connection that comes back */
    }
    return 0;
}

int
sp_endpoint_lend_for_first_view_locked(sp_endpoint *ep)
{
    if (ep->view_loan != NULL) {
        return 1;
    }
    if (ep->waiters == 0) {
        ep->view_loan_wanted = SP_LOAN_NONE;
        return 0;
    }
    if (sp_endpoint_lend_for_view_locked(ep)) {
        return 1;
    }
    if (ep->view_loan_wanted != SP_LOAN_NONE) {
        ep->view_loan_wanted = SP_LOAN_IF_WAITED;
    }
    return 0;
}

static int closes_on_return_locked(sp_endpoint *ep, const sp_conn *rec);
static void give_back_locked(sp_endpoint *ep, sp_conn *rec, sp_deferred *after);

void
sp_endpoint_return_loan_locked(sp_endpoint *ep, int keep, sp_deferred *after)
{
    sp_conn *rec = ep->view_loan;
    if (rec == NULL) {
        return;
    }
    ep->view_loan = NULL;
    ep->loan_ready = 0;
    ep->probe_slots--;
    ep->connecting--;
    rec->ep = ep;
    if (keep && sp_ptrmap_put(&ep->conns, rec->payload, rec) == 0) {
        rec->state = SP_CONN_INUSE;
        ep->in_use++;
        if (closes_on_return_locked(ep, rec)) {
            ep->in_use--;
            bury_locked(ep, rec, after);
            sp_endpoint_dispatch_locked(ep, after);
        }
        else {
            give_back_locked(ep, rec, after);
        }
        return;
    }
    /* Its state is unknown: closed, its slot free once its socket is. */
    ep->closing++;
    ep->closed++;
    rec->counted = 1;
    sp_deferred_bury(after, rec);
    sp_endpoint_dispatch_locked(ep, after);
}

/* ---- waiters ------------------------------------------------------------- */

static void
queue_push(sp_endpoint *ep, sp_waiter *w)
{
    w->next = NULL;
    w->prev = ep->wait_tail;
    if (ep->wait_tail) {
        ep->wait_tail->next = w;
    }
    else {
        ep->wait_head = w;
    }
    ep->wait_tail = w;
    ep->waiters++;
}

/* Host scope: only the head of the queue watches the host's futex word; a
 * thread waiter that becomes the head is woken to take over. */
static void
nudge_new_head_locked(sp_endpoint *ep)
{
    sp_waiter *head = ep->wait_head;
    if (head != NULL && head->has_cond && head->notify_fd < 0) {
        pthread_mutex_lock(&head->mutex);
        head->nudged = 1;
        pthread_cond_signal(&head->cond);
        pthread_mutex_unlock(&head->mutex);
    }
}

static void
queue_unlink(sp_endpoint *ep, sp_waiter *w)
{
    int was_head = ep->wait_head == w;
    if (w->prev) {
        w->prev->next = w->next;
    }
    else {
        ep->wait_head = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    else {
        ep->wait_tail = w->prev;
    }
    w->prev = w->next = NULL;
    ep->waiters--;
    if (was_head && ep->host_budget) {
        nudge_new_head_locked(ep);
    }
}

/* Settles a queued waiter and wakes it. */
static void
serve(sp_endpoint *ep, sp_waiter *w, sp_wait_result result, sp_conn *conn, sp_deferred *after)
{
    int was_head = ep->wait_head == w;
    queue_unlink(ep, w);
    double waited = sp_now() - w->enqueued_mono;
    ep->wait_total_s += waited;
    if (waited > ep->wait_max_s) {
        ep->wait_max_s = waited;
    }
    if (w->has_cond) {
        pthread_mutex_lock(&w->mutex);
        w->conn = conn;
        __atomic_store_n(&w->result, result, __ATOMIC_SEQ_CST);
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->mutex);
        if (was_head && ep->host_budget) {
            /* Host scope: the head sleeps on the host's futex word. */
            sp_host_wake(ep->host_budget);
        }
        return;
    }
    if (ep->host_budget && w->notify_fd < 0) {
        /* Not waiting yet: host_wait() reads it first. */
        w->conn = conn;
        __atomic_store_n(&w->result, result, __ATOMIC_SEQ_CST);
        return;
    }
    w->result = result;
    w->conn = conn;
    if (w->notify_fd >= 0 && (w->inbox == NULL || sp_inbox_push(w->inbox, w))) {
        note_notify(after, w->notify_fd);
    }
}

int
sp_endpoint_cap_locked(const sp_endpoint *ep)
{
    return sp_allowance_cap(&ep->allow, ep->max_connections);
}

static int
may_create_locked(sp_endpoint *ep)
{
    if (ep->total >= ep->max_connections) {
        return 0;
    }
    switch (ep->state) {
    case SP_STATE_READY:
    case SP_STATE_RECOVERING:
        /* The checker's probe holds one of the allowance's slots too: what
         * the server counts of ours never goes over the allowance. */
        if (ep->total >= sp_endpoint_cap_locked(ep)) {
            ep->allowance_blocked = 1;  /* the checker probes soon: maybe grow */
            return 0;
        }
        /* Recovering: the host's max_connecting in host scope. */
        return ep->state == SP_STATE_READY || sp_host_health_may_connect_locked(ep);
    case SP_STATE_PAUSED:
    case SP_STATE_OVERLOADED:
    case SP_STATE_SATURATED:
        return 0;
    }
    return 0;
}

/* Refuse at once instead of queueing: paused, or overloaded with nothing
 * that could ever come back to the queue. Saturated never refuses: the
 * caller waits its timeout for a connection or for headroom. */
static int
refused_by_state_locked(const sp_endpoint *ep)
{
    if (ep->state == SP_STATE_PAUSED) {
        return 1;
    }
    if (ep->state == SP_STATE_OVERLOADED) {
        return ep->total == 0;
    }
    return 0;
}

/* Counts a caller refused by state and keeps the state that refused it
 * for its error message (the copy is skipped while nothing changed). */
static void
note_refusal_locked(sp_endpoint *ep)
{
    ep->refused_by_state++;
    if (ep->refused_state != ep->state || ep->refused_since_wall != ep->state_since_wall ||
        strcmp(ep->refused_reason, ep->state_reason) != 0) {
        ep->refused_state = ep->state;
        ep->refused_since_wall = ep->state_since_wall;
        memcpy(ep->refused_reason, ep->state_reason, sizeof(ep->refused_reason));
    }
}

static sp_conn *
checkout_locked(sp_endpoint *ep, sp_conn *rec, void *pool)
{
    idle_unlink(ep, rec);
    rec->state = SP_CONN_INUSE;
    rec->owner = pool;
    rec->lease++;
    ep->in_use++;
    return rec;
}

/* Oldest idle connection of `flavor` for a health check, checked out to
 * `pool`: only while ready and nobody waits, so a check never takes a
 * connection a caller could have had. NULL when there is none. */
sp_conn *
sp_endpoint_take_idle(sp_endpoint *ep, void *pool, uint32_t flavor)
{
    sp_conn *found = NULL;
    pthread_mutex_lock(&ep->lock);
    if (ep->wait_head == NULL && ep->state == SP_STATE_READY) {
        for (sp_conn *rec = ep->idle_top; rec; rec = rec->next) {
            if (rec->flavor == flavor) {
                found = rec;
            }
        }
        if (found) {
            checkout_locked(ep, found, pool);
        }
    }
    pthread_mutex_unlock(&ep->lock);
    return found;
}

/* The budget is full, but only with idle connections of other flavors
 * (the head waiter found none of its own): closing one makes room. One at
 * a time: a slot being closed already is room on its way. */
static int
evictable_locked(const sp_endpoint *ep)
{
    return ep->idle > 0 && ep->closing == 0 && ep->total >= sp_endpoint_cap_locked(ep) &&
           (ep->state == SP_STATE_READY || ep->state == SP_STATE_RECOVERING);
}

/* The waiter is off the queue and settled: nobody signals it any more. */
static void
destroy_cond(sp_waiter *w)
{
    if (w->has_cond) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mutex);
        w->has_cond = 0;
    }
}

static void
relay_wake(sp_waiter *w)
{
    w->relay_woken = 1;
    pthread_mutex_lock(&w->mutex);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

/* Refused by state: every waiter fails in this one pass, newest first, so
 * a call that queued a moment before the pause learns it at once instead of
 * behind everyone who was waiting already when the server went away.
 * Sleeping thread waiters are not all woken now: they form a relay in that
 * order (see sp_waiter), and only the first SP_RELAY_WINDOW are signalled;
 * each one done wakes the next in sp_endpoint_wait_done(). (Async waiters whose loop's pipe does
 * not fit in `after` stay for the next call.) */
static void
fail_queue_locked(sp_endpoint *ep, sp_deferred *after)
{
    sp_waiter *w = ep->wait_tail;
    sp_waiter *relay_head = NULL, *relay_tail = NULL;
    while (w) {
        sp_waiter *older = w->prev;
        if (w->has_cond) {
            note_refusal_locked(ep);
            queue_unlink(ep, w);
            /* In the relay before its result is set: a waiter that sees the
             * result (under w->mutex) sees in_relay too. */
            w->in_relay = 1;
            w->relay_woken = 0;
            w->relay_next = NULL;
            w->relay_prev = relay_tail;
            if (relay_tail) {
                relay_tail->relay_next = w;
            }
            else {
                relay_head = w;
            }
            relay_tail = w;
            pthread_mutex_lock(&w->mutex);
            w->result = SP_WAIT_PAUSED;
            w->conn = NULL;
            pthread_mutex_unlock(&w->mutex);
        }
        else if (w->notify_fd < 0 || notify_room(after, w->notify_fd)) {
            note_refusal_locked(ep);
            serve(ep, w, SP_WAIT_PAUSED, NULL, after);
        }
        w = older;
    }
    for (int i = 0; relay_head && i < SP_RELAY_WINDOW; i++) {
        relay_wake(relay_head);
        relay_head = relay_head->relay_next;
    }
}

/* Takes `w` out of its pause's relay. One that was woken hands its place
 * in the window to the newest of those still asleep. */
static void
relay_leave_locked(sp_waiter *w)
{
    if (!w->in_relay) {
        return;
    }
    sp_waiter *next = w->relay_next;
    if (w->relay_prev) {
        w->relay_prev->relay_next = next;
    }
    if (next) {
        next->relay_prev = w->relay_prev;
    }
    if (w->relay_woken) {
        while (next && next->relay_woken) {
            next = next->relay_next;
        }
        if (next) {
            relay_wake(next);
        }
    }
    w->in_relay = 0;
    w->relay_woken = 0;
    w->relay_prev = w->relay_next = NULL;
}

void
sp_endpoint_wait_done(sp_endpoint *ep, sp_waiter *w)
{
    if (w->in_relay) {  /* set under ep->lock before its result: read after it */
        pthread_mutex_lock(&ep->lock);
        relay_leave_locked(w);
        pthread_mutex_unlock(&ep->lock);
    }
    destroy_cond(w);
}

void
sp_endpoint_dispatch_locked(sp_endpoint *ep, sp_deferred *after)
{
    while (ep->wait_head) {
        sp_waiter *w = ep->wait_head;
        if (w->notify_fd >= 0 && !notify_room(after, w->notify_fd)) {
            return;  /* the next call serves it */
        }
        sp_conn *rec = idle_find(ep, w->flavor);
        if (rec) {
            serve(ep, w, SP_WAIT_CONN, checkout_locked(ep, rec, w->pool), after);
            continue;
        }
        if (evictable_locked(ep)) {
            /* Full, and only other flavors idle: close the oldest of them. */
            sp_conn *victim = sp_conn_list_last(ep->idle_top);
            idle_unlink(ep, victim);
            bury_locked(ep, victim, after);
        }
        if (may_create_locked(ep) && take_slot_locked(ep, 1)) {
            serve(ep, w, SP_WAIT_SLOT, NULL, after);
            continue;
        }
        if (refused_by_state_locked(ep)) {
            fail_queue_locked(ep, after);
        }
        host_settle_locked(ep);
        return;
    }
    host_settle_locked(ep);
}

/* Dispatch from a call that has no sp_deferred of its own: buried victims go
 * to ep->graveyard (still counted; the next acquire/release hands them to a
 * thread that disposes of them), async waiters to wake are kept in `local`
 * for sp_deferred_notify() once the lock is released. */
static void
dispatch_deferred_locked(sp_endpoint *ep, sp_deferred *local)
{
    sp_endpoint_dispatch_locked(ep, local);
    sp_conn_list_move(&local->graveyard, &ep->graveyard);
}

void
sp_deferred_notify(sp_deferred *after)
{
    for (int i = 0; i < after->n_notify; i++) {
        ssize_t rc = write(after->notify_fds[i], "x", 1);
        (void)rc;  /* a full pipe already means "wake up" */
    }
    after->n_notify = 0;
    if (after->wake_checker) {
        after->wake_checker = 0;
        sp_watch_wake();
    }
}

/* ---- pools and flavors --------------------------------------------------- */

void
sp_endpoint_pool_added(sp_endpoint *ep, uint32_t flavor)
{
    pthread_mutex_lock(&ep->lock);
    ep->pools++;
    for (int i = 0; i < ep->n_flavors; i++) {
        if (ep->flavors[i].flavor == flavor) {
            ep->flavors[i].pools++;
            pthread_mutex_unlock(&ep->lock);
            return;
        }
    }
    sp_flavor_use *grown = realloc(ep->flavors, sizeof(*grown) * (size_t)(ep->n_flavors + 1));
    if (grown != NULL) {
        ep->flavors = grown;
        memset(&ep->flavors[ep->n_flavors], 0, sizeof(ep->flavors[0]));
        ep->flavors[ep->n_flavors].flavor = flavor;
        ep->flavors[ep->n_flavors].pools = 1;
        ep->n_flavors++;
    }
    /* Out of memory: the flavor is simply never drained early. */
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_pool_removed(sp_endpoint *ep, uint32_t flavor, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    ep->pools--;
    for (int i = 0; i < ep->n_flavors; i++) {
        if (ep->flavors[i].flavor == flavor) {
            if (--ep->flavors[i].pools == 0) {
                ep->flavors[i] = ep->flavors[--ep->n_flavors];
                pthread_mutex_unlock(&ep->lock);
                sp_endpoint_bury_idle_of(ep, flavor, after);
                return;
            }
            break;
        }
    }
    pthread_mutex_unlock(&ep->lock);
}

/* Lowered budget or allowance: idle connections over the cap go now
 * (oldest first), busy ones on release. */
static void
trim_idle_locked(sp_endpoint *ep, sp_deferred *after)
{
    while (ep->total - ep->closing - ep->probe_slots > sp_endpoint_cap_locked(ep) &&
           ep->idle > 0) {
        sp_conn *victim = sp_conn_list_last(ep->idle_top);
        idle_unlink(ep, victim);
        bury_locked(ep, victim, after);
    }
}

void
sp_endpoint_set_max(sp_endpoint *ep, int max_connections, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    ep->max_connections = max_connections;
    if (ep->host_budget) {
        sp_host_set_max(ep->host_budget, max_connections);
    }
    trim_idle_locked(ep, after);
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

/* ---- checkout ------------------------------------------------------------ */

sp_acquire_status
sp_endpoint_acquire(sp_endpoint *ep, void *pool, uint32_t flavor, double deadline,
                    sp_waiter *w, sp_conn **out, sp_deferred *after)
{
    sp_acquire_status got;
    pthread_mutex_lock(&ep->lock);
    collect_graveyard_locked(ep, after);
    /* Host scope: paused by another process fails this caller too. */
    sp_host_health_adopt_locked(ep, after);
    /* Latecomers queue behind waiters: no overtaking. */
    if (ep->wait_head == NULL) {
        sp_conn *rec = idle_find(ep, flavor);
        if (rec) {
            *out = checkout_locked(ep, rec, pool);
            host_settle_locked(ep);
            got = SP_ACQ_CONN;
            goto out;
        }
        if (may_create_locked(ep) && take_slot_locked(ep, 0)) {
            host_settle_locked(ep);
            got = SP_ACQ_SLOT;
            goto out;
        }
    }
    if (refused_by_state_locked(ep)) {
        note_refusal_locked(ep);
        got = SP_ACQ_PAUSED;
        goto out;
    }
    /* Not waiting: unless room is a close away (then the caller's
     * sp_py_finish_deferred() closes it and serves this waiter before it waits). */
    if (deadline == 0 && !(ep->wait_head == NULL && evictable_locked(ep))) {
        ep->timeouts++;
        got = SP_ACQ_TIMEOUT;
        goto out;
    }
    w->pool = pool;
    w->flavor = flavor;
    w->result = SP_WAIT_PENDING;
    w->conn = NULL;
    w->enqueued_mono = sp_now();
    ep->waits++;
    queue_push(ep, w);
    after->wake_checker |= ep->host_budget != NULL && w->notify_fd >= 0 && ep->wait_head == w;
    /* Only other flavors idle and the budget full: make room for this one. */
    sp_endpoint_dispatch_locked(ep, after);
    got = SP_ACQ_QUEUED;
out:
    pthread_mutex_unlock(&ep->lock);
    return got;
}

/* Makes a waiter's condition variable (under ep->lock: serve() reads
 * has_cond there). */
static void
make_cond_locked(sp_waiter *w)
{
    pthread_mutex_init(&w->mutex, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    w->has_cond = 1;
}

static sp_wait_result leave_timed_out(sp_endpoint *ep, sp_waiter *w);
static sp_wait_result host_wait(sp_endpoint *ep, sp_waiter *w, double deadline, double slice);

sp_wait_result
sp_endpoint_wait(sp_endpoint *ep, sp_waiter *w, double deadline, double slice)
{
    if (ep->host_budget && w->notify_fd < 0) {
        return host_wait(ep, w, deadline, slice);
    }
    double now = sp_now();
    double until = now + slice;
    int timed_out = 0;
    if (deadline >= 0 && deadline < until) {
        until = deadline;
    }
    if (!w->has_cond) {
        /* Made under ep->lock: serve() reads has_cond there. */
        pthread_mutex_lock(&ep->lock);
        make_cond_locked(w);
        pthread_mutex_unlock(&ep->lock);
    }
    struct timespec ts = sp_timespec(until);
    pthread_mutex_lock(&w->mutex);
    while (w->result == SP_WAIT_PENDING) {
        int rc = pthread_cond_timedwait(&w->cond, &w->mutex, &ts);
        if (rc == ETIMEDOUT) {
            timed_out = deadline >= 0 && sp_now() >= deadline;
            break;
        }
    }
    sp_wait_result result = w->result;
    pthread_mutex_unlock(&w->mutex);
    if (result != SP_WAIT_PENDING) {
        /* Served: serve() signalled and let go of w->mutex before we got
         * it; only a pause's relay may still signal it, until the caller's
         * sp_endpoint_wait_done(). */
        return result;
    }
    if (!timed_out) {
        return result;  /* a slice ended: the caller checks signals */
    }
    return leave_timed_out(ep, w);
}

/* A settled host-scope waiter (its result read without its mutex): wait
 * until whoever settled it let go of the mutex, so that the caller's
 * sp_endpoint_wait_done() may destroy it. */
static sp_wait_result
host_served(sp_waiter *w, sp_wait_result r)
{
    if (w->has_cond) {
        pthread_mutex_lock(&w->mutex);
        pthread_mutex_unlock(&w->mutex);
    }
    return r;
}

/* Host scope, a thread waiter. The head of the queue sleeps on the host's
 * futex word, which moves whenever a slot is given back anywhere on the
 * host or a waiter here is served, and on each wake-up serves the queue
 * (a slot another process gave back has nobody else here to notice it);
 * each of its sleeps (at most 100 ms) ends with a look for dead holders.
 * The others sleep on their own condition variable, as in process scope,
 * until they are served or become the head (nudged). */
static sp_wait_result
host_wait(sp_endpoint *ep, sp_waiter *w, double deadline, double slice)
{
    struct sp_host *h = ep->host_budget;
    double until = sp_now() + slice;
    if (deadline >= 0 && deadline < until) {
        until = deadline;
    }
    for (;;) {
        uint32_t seq = sp_host_seq(h);
        sp_wait_result r = __atomic_load_n(&w->result, __ATOMIC_SEQ_CST);
        if (r != SP_WAIT_PENDING) {
            return host_served(w, r);
        }
        sp_deferred local = {0};
        pthread_mutex_lock(&ep->lock);
        if (!w->has_cond) {
            make_cond_locked(w);
        }
        int head = ep->wait_head == w;
        if (head) {
            sp_host_health_adopt_locked(ep, &local);  /* the futex moves with news too */
            dispatch_deferred_locked(ep, &local);
        }
        pthread_mutex_unlock(&ep->lock);
        sp_deferred_notify(&local);
        r = __atomic_load_n(&w->result, __ATOMIC_SEQ_CST);
        if (r != SP_WAIT_PENDING) {
            return host_served(w, r);
        }
        double now = sp_now();
        if (now >= until) {
            break;
        }
        if (head) {
            sp_host_sleep(h, seq, until - now < 0.1 ? until - now : 0.1);
            sp_host_reclaim(h, 0);
            continue;
        }
        struct timespec ts = sp_timespec(until);
        pthread_mutex_lock(&w->mutex);
        while (w->result == SP_WAIT_PENDING && !w->nudged) {
            if (pthread_cond_timedwait(&w->cond, &w->mutex, &ts) == ETIMEDOUT) {
                break;
            }
        }
        w->nudged = 0;
        pthread_mutex_unlock(&w->mutex);
    }
    if (deadline < 0 || sp_now() < deadline) {
        return SP_WAIT_PENDING;  /* a slice ended: the caller checks signals */
    }
    return host_served(w, leave_timed_out(ep, w));
}

/* The deadline passed: leaves the queue unless served meanwhile. */
static sp_wait_result
leave_timed_out(sp_endpoint *ep, sp_waiter *w)
{
    sp_wait_result result;
    sp_deferred local = {0};
    pthread_mutex_lock(&ep->lock);
    result = w->result;  /* served between the timeout and here? */
    if (result == SP_WAIT_PENDING) {
        queue_unlink(ep, w);
        /* The next waiter may be servable now (idle of its flavor). */
        dispatch_deferred_locked(ep, &local);
        ep->timeouts++;
        double waited = sp_now() - w->enqueued_mono;
        ep->wait_total_s += waited;
        if (waited > ep->wait_max_s) {
            ep->wait_max_s = waited;
        }
        w->result = result = SP_WAIT_TIMEOUT;
    }
    pthread_mutex_unlock(&ep->lock);
    sp_deferred_notify(&local);
    return result;
}

/* Puts a connection back where the next waiter or the idle stack gets it. */
static void
give_back_locked(sp_endpoint *ep, sp_conn *rec, sp_deferred *after)
{
    ep->in_use--;
    int lend = ep->view_loan_wanted == SP_LOAN_ANY ||
               (ep->view_loan_wanted == SP_LOAN_IF_WAITED && ep->waiters > 0);
    if (lend && lend_locked(ep, rec)) {
        return;
    }
    idle_push(ep, rec);
    sp_endpoint_dispatch_locked(ep, after);
}

void
sp_endpoint_cancel(sp_endpoint *ep, sp_waiter *w, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    switch (w->result) {
    case SP_WAIT_PENDING:
        queue_unlink(ep, w);
        w->result = SP_WAIT_CLOSED;
        sp_endpoint_dispatch_locked(ep, after);
        break;
    case SP_WAIT_CONN:
        give_back_locked(ep, w->conn, after);
        w->conn = NULL;
        break;
    case SP_WAIT_SLOT:
        give_slots_locked(ep, 1);
        ep->connecting--;
        sp_endpoint_dispatch_locked(ep, after);
        break;
    default:
        break;
    }
    relay_leave_locked(w);
    pthread_mutex_unlock(&ep->lock);
    destroy_cond(w);
}

int
sp_endpoint_add(sp_endpoint *ep, sp_conn *rec, void *payload, void *pool, uint32_t flavor,
                int fd)
{
    memset(rec, 0, sizeof(*rec));
    rec->ep = ep;
    rec->payload = payload;
    rec->weakref = NULL;
    rec->owner = pool;
    rec->fd = fd;
    rec->flavor = flavor;
    rec->state = SP_CONN_INUSE;
    rec->created_mono = sp_now();
    rec->lease = 1;
    pthread_mutex_lock(&ep->lock);
    if (sp_ptrmap_put(&ep->conns, payload, rec) < 0) {
        pthread_mutex_unlock(&ep->lock);
        return -1;
    }
    rec->generation = ep->generation;
    if (ep->max_lifetime > 0) {
        /* Jitter lifetimes by up to 10% so connections made together do not
         * all expire together. */
        double jitter = (double)(((uintptr_t)rec >> 4) % 1000) / 10000.0;
        rec->expires_mono = rec->created_mono + ep->max_lifetime * (1.0 - jitter);
    }
    ep->connecting--;
    ep->in_use++;
    ep->created++;
    ep->progress++;
    /* Recovering: one connect fewer in flight lets the next waiter in. */
    sp_deferred local = {0};
    dispatch_deferred_locked(ep, &local);
    pthread_mutex_unlock(&ep->lock);
    sp_deferred_notify(&local);
    sp_watch_add(fd, ep->serial);
    return 0;
}

void
sp_endpoint_cancel_slot(sp_endpoint *ep, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    give_slots_locked(ep, 1);
    ep->connecting--;
    ep->progress++;
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_slot_failed(sp_endpoint *ep, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    give_slots_locked(ep, 1);
    ep->connecting--;
    ep->connect_failures++;
    ep->progress++;
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_bury(sp_endpoint *ep, sp_conn *rec, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    ep->in_use--;
    ep->progress++;
    bury_locked(ep, rec, after);
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_set_fd(sp_endpoint *ep, sp_conn *rec, int fd)
{
    pthread_mutex_lock(&ep->lock);
    rec->fd = fd;
    rec->generation = ep->generation;
    pthread_mutex_unlock(&ep->lock);
    sp_watch_add(fd, ep->serial);
}

sp_conn *
sp_endpoint_find_inuse(sp_endpoint *ep, void *payload, void *pool)
{
    pthread_mutex_lock(&ep->lock);
    sp_conn *rec = sp_ptrmap_get(&ep->conns, payload);
    if (rec && (rec->state != SP_CONN_INUSE || rec->owner != pool)) {
        rec = NULL;
    }
    pthread_mutex_unlock(&ep->lock);
    return rec;
}

int
sp_endpoint_walk(sp_endpoint *ep, sp_conn_visit visit, void *ctx)
{
    int rc = 0;
    pthread_mutex_lock(&ep->lock);
    for (size_t i = 0; i < ep->conns.cap && rc == 0; i++) {
        if (ep->conns.keys[i] != NULL) {
            rc = visit(ep->conns.values[i], ctx);
        }
    }
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

int
sp_endpoint_visit(sp_endpoint *ep, void *payload, sp_conn_visit visit, void *ctx)
{
    pthread_mutex_lock(&ep->lock);
    sp_conn *rec = sp_ptrmap_get(&ep->conns, payload);
    int rc = rec != NULL ? visit(rec, ctx) : 0;
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

int
sp_endpoint_flavor_pools(sp_endpoint *ep, uint32_t flavor)
{
    int pools = 0;
    pthread_mutex_lock(&ep->lock);
    for (int i = 0; i < ep->n_flavors; i++) {
        if (ep->flavors[i].flavor == flavor) {
            pools = ep->flavors[i].pools;
        }
    }
    pthread_mutex_unlock(&ep->lock);
    return pools;
}

int
sp_endpoint_is_paused(sp_endpoint *ep)
{
    pthread_mutex_lock(&ep->lock);
    int paused = ep->state == SP_STATE_PAUSED;
    pthread_mutex_unlock(&ep->lock);
    return paused;
}

void
sp_endpoint_set_probe_flavor(sp_endpoint *ep, uint32_t flavor)
{
    pthread_mutex_lock(&ep->lock);
    ep->probe_flavor = flavor;
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_set_idle_limits(sp_endpoint *ep, double max_idle_s, double max_lifetime_s)
{
    pthread_mutex_lock(&ep->lock);
    ep->max_idle_time = max_idle_s;
    ep->max_lifetime = max_lifetime_s;
    pthread_mutex_unlock(&ep->lock);
}

const char *
sp_endpoint_key(const sp_endpoint *ep)
{
    return ep->key;
}

const char *
sp_endpoint_label(const sp_endpoint *ep)
{
    return ep->label;
}

int
sp_endpoint_is_tls(const sp_endpoint *ep)
{
    return ep->tls;
}

int
sp_endpoint_on_host_budget(sp_endpoint *ep)
{
    return __atomic_load_n(&ep->host_budget, __ATOMIC_ACQUIRE) != NULL;
}

void
sp_endpoint_count_timeout(sp_endpoint *ep, double waited)
{
    pthread_mutex_lock(&ep->lock);
    ep->timeouts++;
    ep->wait_total_s += waited;
    if (waited > ep->wait_max_s) {
        ep->wait_max_s = waited;
    }
    pthread_mutex_unlock(&ep->lock);
}

/* ---- release ------------------------------------------------------------- */

/* Whether some pool still hands out connections of `flavor` (always, for an
 * endpoint whose users keep no flavor books: the pure-C driver's). */
static int
flavor_used_locked(const sp_endpoint *ep, uint32_t flavor)
{
    if (ep->n_flavors == 0 && ep->pools == 0) {
        return 1;
    }
    for (int i = 0; i < ep->n_flavors; i++) {
        if (ep->flavors[i].flavor == flavor) {
            return 1;
        }
    }
    return 0;
}

/* Closed instead of pooled when it comes back: from before a pause, over
 * the cap, another process in line (host scope), past its lifetime, or its
 * flavor has no pool any more (checked out before a reset() changed the
 * pool's settings). */
static int
closes_on_return_locked(sp_endpoint *ep, const sp_conn *rec)
{
    return rec->generation != ep->generation || !flavor_used_locked(ep, rec->flavor) ||
           ep->total - ep->closing - ep->probe_slots > sp_endpoint_cap_locked(ep) ||
           host_yield_locked(ep) || (rec->expires_mono > 0 && sp_now() >= rec->expires_mono);
}

sp_release_status
sp_endpoint_release(sp_endpoint *ep, void *pool, void *payload, int fd, int keep,
                    sp_deferred *after)
{
    sp_release_status refused;
    pthread_mutex_lock(&ep->lock);
    collect_graveyard_locked(ep, after);
    sp_conn *rec = sp_ptrmap_get(&ep->conns, payload);
    if (rec == NULL) {
        refused = SP_REL_UNKNOWN;
        goto refuse;
    }
    if (rec->state == SP_CONN_IDLE) {
        refused = SP_REL_DOUBLE;
        goto refuse;
    }
    if (rec->owner != pool) {
        refused = SP_REL_FOREIGN;
        goto refuse;
    }
    ep->progress++;
    uint64_t loans = ep->view_loans;
    /* A new socket (redis-py reconnected during a command) joins the watch. */
    int rewatch = fd >= 0 && fd != rec->fd;
    rec->fd = fd;
    if (!keep || closes_on_return_locked(ep, rec)) {
        ep->in_use--;
        bury_locked(ep, rec, after);
        sp_endpoint_dispatch_locked(ep, after);
    }
    else {
        give_back_locked(ep, rec, after);
    }
    int lent = ep->view_loans != loans;
    pthread_mutex_unlock(&ep->lock);
    if (lent) {
        sp_watch_wake();  /* the checker's view probe waits for it */
    }
    else if (rewatch) {
        sp_watch_add(fd, ep->serial);
    }
    return SP_REL_OK;
refuse:
    pthread_mutex_unlock(&ep->lock);
    return refused;
}

/* ---- bulk operations ------------------------------------------------------ */

void
sp_endpoint_bury_idle_of(sp_endpoint *ep, uint32_t flavor, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    sp_conn *rec = ep->idle_top;
    while (rec) {
        sp_conn *next = rec->next;
        if (flavor == 0 || rec->flavor == flavor) {
            idle_unlink(ep, rec);
            bury_locked(ep, rec, after);
        }
        rec = next;
    }
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_fail_pool_waiters(sp_endpoint *ep, void *pool, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    sp_waiter *w = ep->wait_head;
    while (w) {
        sp_waiter *next = w->next;
        if (w->pool == pool) {
            serve(ep, w, SP_WAIT_CLOSED, NULL, after);
        }
        w = next;
    }
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_endpoint_bury_pool_records(sp_endpoint *ep, void *pool, sp_deferred *after)
{
    pthread_mutex_lock(&ep->lock);
    for (size_t i = 0; i < ep->conns.cap; i++) {
        sp_conn *rec = ep->conns.keys[i] ? ep->conns.values[i] : NULL;
        if (rec && rec->state == SP_CONN_INUSE && rec->owner == pool) {
            ep->in_use--;
            bury_locked(ep, rec, after);
            i--;  /* backward-shift deletion may have moved a key into slot i */
        }
    }
    sp_endpoint_dispatch_locked(ep, after);
    pthread_mutex_unlock(&ep->lock);
}

/* ---- text for people: never the password --------------------------------- */

#define SP_MASK "***"
#define SP_MIN_CUT_SECRET 3  /* shorter tails that match the secret's start are left */

void
sp_scrub_secret(char *text, size_t size, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0;
    size_t tl, i = 0, o = 0;
    char out[512];

    if (text == NULL || size == 0 || sl == 0) {
        return;
    }
    tl = strnlen(text, size - 1);
    if (size > sizeof(out)) {
        size = sizeof(out);
    }
    while (i < tl && o + 1 < size) {
        size_t left = tl - i;
        int whole = left >= sl && memcmp(text + i, secret, sl) == 0;
        /* a copy cut short by the end of the text: a truncated reply */
        int cut = left < sl && left >= SP_MIN_CUT_SECRET && memcmp(text + i, secret, left) == 0;
        if (whole || cut) {
            size_t m = strlen(SP_MASK);
            if (o + m >= size) {
                break;
            }
            memcpy(out + o, SP_MASK, m);
            o += m;
            i += whole ? sl : left;
        }
        else {
            out[o++] = text[i++];
        }
    }
    out[o] = '\0';
    memcpy(text, out, o + 1);
}

void
sp_endpoint_note_error_locked(sp_endpoint *ep, const char *prefix, const char *text)
{
    snprintf(ep->last_error, sizeof(ep->last_error), "%s%s", prefix ? prefix : "",
             text ? text : "");
    sp_scrub_secret(ep->last_error, sizeof(ep->last_error), ep->password);
}

/* ---- health ---------------------------------------------------------------- */

/* Connections of this process the allowance grows from: not the probe's,
 * nor those being closed (after a restart the server has never seen
 * them; they still keep a new one from being made until they are gone). */
static int
held_locked(const sp_endpoint *ep)
{
    return ep->total - ep->probe_slots - ep->closing;
}

int
sp_endpoint_server_view_locked(sp_endpoint *ep, const sp_server_view *v, long long reserve,
                               int own_probe, double u, sp_deferred *after)
{
    ep->server_view = *v;
    ep->server_view_error[0] = '\0';
    ep->allowance_blocked = 0;
    int saturated = sp_allowance_on_view(&ep->allow, v, reserve, held_locked(ep) + own_probe,
                                         ep->max_connections, u);
    trim_idle_locked(ep, after);
    sp_endpoint_dispatch_locked(ep, after);
    return saturated;
}

void
sp_endpoint_server_view_unavailable_locked(sp_endpoint *ep, const char *why)
{
    snprintf(ep->server_view_error, sizeof(ep->server_view_error), "%s", why);
    sp_server_view_init(&ep->server_view);
    sp_allowance_init(&ep->allow);  /* no view: today's rules only */
    ep->allowance_blocked = 0;
}

void
sp_endpoint_rejected_locked(sp_endpoint *ep, sp_deferred *after)
{
    sp_allowance_on_rejection(&ep->allow, held_locked(ep));
    trim_idle_locked(ep, after);
}

void
sp_endpoint_set_state_locked(sp_endpoint *ep, sp_state s, const char *reason, sp_deferred *after)
{
    if (reason) {
        snprintf(ep->state_reason, sizeof(ep->state_reason), "%s", reason);
        sp_scrub_secret(ep->state_reason, sizeof(ep->state_reason), ep->password);
    }
    if (ep->state == s) {
        return;
    }
    ep->state = s;
    ep->state_since_wall = sp_wall();
    ep->transitions++;
    if (s == SP_STATE_PAUSED) {
        /* Nothing from before an outage is ever handed out again: idle
         * connections go now, busy ones when they come back. */
        ep->generation++;
        sp_endpoint_bury_all_idle_locked(ep, after);
        sp_allowance_regrow(&ep->allow);  /* the whole fleet comes back at once */
    }
    if (s == SP_STATE_RECOVERING) {
        ep->max_connecting = 2;
    }
    sp_host_health_on_state_locked(ep);  /* host scope: news for every process */
    sp_endpoint_dispatch_locked(ep, after);
}

void
sp_endpoint_stats(sp_endpoint *ep, sp_stats *out)
{
    pthread_mutex_lock(&ep->lock);
    out->max_connections = ep->max_connections;
    out->total = ep->total;
    out->in_use = ep->in_use;
    out->idle = ep->idle;
    out->connecting = ep->connecting;
    out->closing = ep->closing;
    out->waiters = ep->waiters;
    out->pools = ep->pools;
    out->state = ep->state;
    out->state_since_wall = ep->state_since_wall;
    memcpy(out->state_reason, ep->state_reason, sizeof(out->state_reason));
    memcpy(out->last_error, ep->last_error, sizeof(out->last_error));
    memcpy(out->run_id, ep->run_id, sizeof(out->run_id));
    out->generation = ep->generation;
    out->created = ep->created;
    out->closed = ep->closed;
    out->waits = ep->waits;
    out->timeouts = ep->timeouts;
    out->probes = ep->probes;
    out->probe_failures = ep->probe_failures;
    out->refused_by_state = ep->refused_by_state;
    out->dead_idle_closed = ep->dead_idle_closed;
    out->peer_hangups = ep->peer_hangups;
    out->refused_state = ep->refused_state;
    out->refused_since_wall = ep->refused_since_wall;
    memcpy(out->refused_reason, ep->refused_reason, sizeof(out->refused_reason));
    out->transitions = ep->transitions;
    out->connect_failures = ep->connect_failures;
    out->wait_total_s = ep->wait_total_s;
    out->wait_max_s = ep->wait_max_s;
    out->max_idle_time = ep->max_idle_time;
    out->max_lifetime = ep->max_lifetime;
    struct sp_host *h = ep->host_budget;
    out->server_view = ep->server_view;
    memcpy(out->server_view_error, ep->server_view_error, sizeof(out->server_view_error));
    out->server_reserve = ep->allow.reserve;
    out->allowance = sp_endpoint_cap_locked(ep);
    out->allowance_decreases = ep->allow.decreases;
    pthread_mutex_unlock(&ep->lock);
    /* The host's numbers are atomics in the segment: read without the lock. */
    out->host_scope = h != NULL;
    if (h) {
        sp_host_stats_of(h, &out->host);
    }
    else {
        memset(&out->host, 0, sizeof(out->host));
    }
}

/* ---- fork ------------------------------------------------------------------- */

void
sp_endpoint_after_fork_child(sp_endpoint *ep)
{
    /* Single-threaded here, inside fork(): the parent's lock may have been
     * held by a thread that does not exist in the child. Every record is
     * the parent's: move them all to the graveyard, which the child
     * disposes of without touching the parent's sockets. */
    init_lock(&ep->lock);
    sp_deferred after = {0};
    for (size_t i = 0; i < ep->conns.cap; i++) {
        if (ep->conns.keys[i]) {
            sp_conn *rec = ep->conns.values[i];
            rec->quiet = rec->state == SP_CONN_INUSE;
            rec->counted = 0;
            sp_deferred_bury(&after, rec);
        }
    }
    sp_conn_list_move(&after.graveyard, &ep->graveyard);
    sp_ptrmap_clear(&ep->conns);
    ep->idle_top = NULL;
    ep->wait_head = ep->wait_tail = NULL;
    ep->waiters = 0;
    for (sp_conn *rec = ep->graveyard; rec; rec = rec->next) {
        rec->counted = 0;  /* the child's books start empty */
    }
    if (ep->view_loan != NULL) {
        sp_conn *rec = ep->view_loan;
        ep->view_loan = NULL;
        rec->quiet = 1;  /* the parent's socket */
        rec->counted = 0;
        rec->next = ep->graveyard;
        ep->graveyard = rec;
    }
    ep->loan_ready = 0;
    ep->view_loan_wanted = SP_LOAN_NONE;
    ep->total = ep->in_use = ep->idle = ep->connecting = ep->closing = 0;
    ep->probe_slots = 0;
    ep->generation++;
    ep->probe_requested = 0;
    sp_host_after_fork_child(ep->host_budget);  /* the parent's host slots stay the parent's */
}

/* ---- host scope ------------------------------------------------------------ */

int
sp_endpoint_set_host(sp_endpoint *ep, struct sp_host *h)
{
    int rc = -1;
    pthread_mutex_lock(&ep->lock);
    if (ep->total != 0 || ep->wait_head != NULL || ep->graveyard != NULL) {
        goto out;
    }
    if (ep->host_budget != NULL || h == NULL) {
        /* Once on a host budget, an endpoint stays there until it is freed:
         * the checker and stats() read the handle without the lock. */
        goto out;
    }
    ep->max_connections = sp_host_max(h);
    __atomic_store_n(&ep->host_budget, h, __ATOMIC_RELEASE);
    rc = 0;
out:
    pthread_mutex_unlock(&ep->lock);
    return rc;
}

/* Host scope: idle connections nobody here took for SP_HOST_UNUSED_S while
 * another process is in line are closed, their slots handed to the host;
 * one that came back a moment ago is kept for the next checkout. */
static void
bury_unused_locked(sp_endpoint *ep, double idle_before_mono, sp_deferred *after)
{
    sp_conn *rec = ep->idle_top;
    while (rec) {
        sp_conn *next = rec->next;
        if (rec->idle_since_mono <= idle_before_mono) {
            sp_endpoint_bury_idle_locked(ep, rec, after);
        }
        rec = next;
    }
}

int
sp_endpoint_host_tick(sp_endpoint *ep, sp_deferred *after)
{
    struct sp_host *h = __atomic_load_n(&ep->host_budget, __ATOMIC_ACQUIRE);
    int async_head = 0;
    if (h == NULL) {
        return 0;
    }
    sp_host_reclaim(h, 0);
    pthread_mutex_lock(&ep->lock);
    if (ep->host_budget == h) {
        sp_host_health_retry(h);
        sp_host_health_adopt_locked(ep, after);
        /* asyncio waiters have no thread on the futex: serve them here. */
        sp_endpoint_dispatch_locked(ep, after);
        if (ep->wait_head == NULL && ep->idle > 0 && sp_host_others_waiting(h)) {
            bury_unused_locked(ep, sp_now() - SP_HOST_UNUSED_S, after);
        }
        async_head = ep->wait_head != NULL && ep->wait_head->notify_fd >= 0;
    }
    pthread_mutex_unlock(&ep->lock);
    return async_head;
}
