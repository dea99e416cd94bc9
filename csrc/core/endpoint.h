/* endpoint.h -- one Redis server's connection budget: idle stack, FIFO waiters, state, counters. */
#ifndef SP_ENDPOINT_H
#define SP_ENDPOINT_H

#include <pthread.h>
#include <stdint.h>

#include "host_budget.h"
#include "allowance.h"
#include "ptrmap.h"
#include "server_view.h"

/* Pure C: nothing here knows Python. A connection is an opaque payload
 * pointer; the binding owns one reference to it for as long as a record
 * exists and drops it only after the endpoint lock is released. */

typedef enum {
    SP_STATE_READY = 0,   /* normal */
    SP_STATE_PAUSED,      /* down or loading: fail fast, create nothing */
    SP_STATE_RECOVERING,  /* probe succeeded: let connections in gradually */
    SP_STATE_OVERLOADED,  /* maxclients reached: use what we have, create nothing */
    SP_STATE_SATURATED    /* headroom below the reserve kept for others: use what
                           * we have, create nothing, queue (allowance.h) */
} sp_state;

const char *sp_state_name(sp_state s);

#define SP_FD_UNPOLLABLE (-3)

/* Whether the next connection released goes to the checker's view loan. */
typedef enum {
    SP_LOAN_NONE = 0,
    SP_LOAN_ANY,          /* near the line: whoever waits */
    SP_LOAN_IF_WAITED     /* a first look: only while a caller waits for it */
} sp_loan_wanted;

typedef enum {
    SP_CONN_IDLE = 0,
    SP_CONN_INUSE,
    SP_CONN_DEAD          /* on the graveyard list, waiting for disposal */
} sp_conn_state;

typedef struct sp_conn {
    void *payload;            /* the connection object */
    void *weakref;            /* while out through get_connection(): a weak
                               * reference to payload, which is then borrowed
                               * (the caller holds it); NULL otherwise. Only
                               * the binding touches it, with the GIL held */
    void *on_drop;            /* with weakref, for asyncio connections: a
                               * callable that closes the socket, which the
                               * connection's transport would keep open after
                               * the connection is gone (binding only, GIL) */
    unsigned long holder_thread; /* while out through a sync get_connection():
                               * the caller's thread (PyThread ident); binding
                               * only, with the GIL held */
    int shut_by_pool;         /* its pool's disconnect() shut its socket down
                               * from another thread while it was out: the
                               * holder closes it when it comes back (binding
                               * only, GIL) */
    void *owner;              /* pool that checked it out; NULL when idle */
    int fd;                   /* socket while idle, -1 when not connected,
                               * SP_FD_UNPOLLABLE when connected through an
                               * asyncio transport (never polled here) */
    sp_conn_state state;
    int quiet;                /* dispose without disconnect(): it was in use at fork */
    int counted;              /* still counted in ep->closing until disposed */
    struct sp_endpoint *ep;
    uint32_t flavor;
    uint64_t generation;      /* endpoint generation it was created in */
    uint64_t lease;           /* bumped at every checkout (checker's ABA guard) */
    double created_mono;      /* sp_now() */
    double expires_mono;      /* jittered max_lifetime deadline, 0 = never */
    double idle_since_mono;   /* sp_now() when last put on the idle stack */
    uint64_t idle_stamp;      /* unique per idle period (checker's ABA guard) */
    struct sp_conn *prev;     /* idle stack or graveyard links */
    struct sp_conn *next;
} sp_conn;

typedef enum {
    SP_WAIT_PENDING = 0,
    SP_WAIT_CONN,             /* handed an idle connection (w->conn) */
    SP_WAIT_SLOT,             /* handed the right to create one */
    SP_WAIT_TIMEOUT,
    SP_WAIT_PAUSED,           /* failed because the endpoint is paused */
    SP_WAIT_CLOSED            /* failed because its pool was closed */
} sp_wait_result;

#define SP_RELAY_WINDOW 4     /* woken and not yet done, at most, in a relay */

typedef struct sp_waiter {
    struct sp_waiter *prev;
    struct sp_waiter *next;
    void *pool;
    uint32_t flavor;
    sp_wait_result result;
    sp_conn *conn;
    double enqueued_mono;
    int notify_fd;            /* async waiters: written to when served; -1 for threads */
    uint64_t ticket;          /* async waiters: the caller's handle */
    /* Async waiters with an inbox (inbox.h) are appended to it when served
     * and wake their loop only if it has no wake-up on the way; the links
     * and in_inbox are guarded by the inbox's lock. */
    struct sp_inbox *inbox;
    struct sp_waiter *served_prev;
    struct sp_waiter *served_next;
    int in_inbox;
    /* Thread waiters sleep on their own mutex and condition variable, so a
     * woken waiter never has to get ep->lock back: a pause that fails
     * hundreds of them wakes them in the order it fails them, without a
     * stampede on the endpoint lock. `result` and `conn` are written with
     * both ep->lock and `mutex` held once has_cond is set (lock order:
     * ep->lock, then mutex; `mutex` is a leaf). */
    int has_cond;
    int nudged;               /* host scope: it became the head of the queue
                               * (set under `mutex`): watch the host now */
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    /* The wake-up relay of a pause (fail_queue_locked): thread waiters it
     * fails are woken newest first, SP_RELAY_WINDOW at a time; each one
     * done (sp_endpoint_wait_done(): the binding calls it with the GIL back)
     * wakes the next. Only a few threads at a time then contend for the
     * GIL, and the newest, which queued a moment before the pause, learn it
     * first instead of behind hundreds woken at once; a thread the OS is
     * slow to run holds up no more than its place in the window. Links,
     * in_relay and relay_woken are guarded by ep->lock. */
    int in_relay;
    int relay_woken;
    struct sp_waiter *relay_prev;
    struct sp_waiter *relay_next;
} sp_waiter;

/* What the binding must do after an endpoint call, outside the lock. */
typedef struct {
    sp_conn *graveyard;       /* records to dispose: drop payload, free record */
    int notify_fds[8];        /* async waiters to wake (write one byte) */
    int n_notify;
    int wake_checker;         /* host scope: an asyncio waiter heads a queue now, and
                               * the checker's tick is what serves it from slots
                               * other processes give back: start looking */
} sp_deferred;

typedef struct sp_flavor_use {
    uint32_t flavor;
    int pools;
    double auth_retry_mono;   /* sp_now(): its credentials were rejected;
                               * fail fast until then (0: not rejected), see
                               * auth_gate.h */
    double auth_backoff_s;    /* seconds between trial connects */
    uint64_t auth_failures;
} sp_flavor_use;

typedef struct sp_endpoint {
    /* Immutable after creation. */
    char *key;
    char *label;              /* shown to people; no secrets */
    char *host;               /* probe target; NULL for unix */
    int port;
    char *unix_path;
    char *username;
    char *password;
    int tls;
    uint64_t serial;          /* unique in the process, never 0: names it
                               * where a pointer could outlive it (watch.h) */

    /* Guarded by the registry lock. */
    int refs;                 /* pools bound to it + checker's temporary refs */
    struct sp_endpoint *reg_next;

    /* Everything below is guarded by `lock`, a leaf lock: while holding it
     * no Python API, no I/O, no waiting on anything but this mutex. */
    pthread_mutex_t lock;
    int max_connections;
    int total;                /* idle + in_use + connecting + closing */
    int in_use;
    int idle;
    int connecting;           /* slots handed out, connection not made yet */
    int closing;              /* dropped, socket not closed yet: still counted */
    sp_conn *idle_top;        /* newest first (LIFO: warmest connection) */
    sp_conn *graveyard;       /* buried records: out of the books, their connections
                               * to be closed by a Python thread. Burying is the one
                               * way a record leaves (the *bury* functions). */
    sp_ptrmap conns;          /* payload -> record, idle and in use */
    sp_waiter *wait_head;     /* oldest waiter */
    sp_waiter *wait_tail;
    int waiters;
    sp_flavor_use *flavors;   /* pools per flavor: idle of a flavor no pool uses is closed */
    int n_flavors;
    int pools;

    /* Health (written by the checker and by failure reports). */
    sp_state state;
    double state_since_wall;  /* wall clock */
    char state_reason[160];   /* written by set_state_locked: password masked */
    char last_error[200];     /* written by note_error_locked only: password masked */
    char run_id[41];
    uint64_t generation;
    int max_connecting;       /* recovering: connections allowed to be created at once */
    int probe_requested;      /* a request thread saw a failure: probe now */
    /* What the endpoint said when it last refused a caller (paused, or
     * overloaded with nothing to use): the caller's error names this, not
     * whatever state a probe moved to before the caller got the GIL back. */
    sp_state refused_state;
    double refused_since_wall;    /* wall clock: state_since of refused_state */
    char refused_reason[160];
    uint64_t progress;        /* checkouts that ended and slots that settled (release,
                               * discard, connect made, failed or given up) */
    /* The checker's stall watch (checker.c, check_stall()): `progress` as it
     * last saw it, since when it has not moved with every slot out and
     * callers queued, and when it may probe a stalled endpoint again. */
    uint64_t stall_progress;
    double stall_since_mono;  /* sp_now() */
    double stall_probe_after_mono; /* sp_now() */
    int stall_probing;        /* the probe in flight is a stall probe */
    int silent;               /* paused because the server answers nobody:
                               * a probe without a reply keeps it paused */
    double next_probe_mono;   /* sp_now() of the next scheduled probe */
    int auth_rejections;      /* flavors whose credentials are rejected now
                               * (auth_gate.h); written under `lock`, read
                               * without it (atomic) so that the common case
                               * costs no lock */
    uint32_t probe_flavor;    /* flavor whose credentials the probe uses (of
                               * the pool that created the endpoint; 0:
                               * unknown): its AUTH answer counts for it */
    int probe_knock;          /* paused, and nothing listened at the last
                               * probe: the next one is a bare connect on a
                               * short cadence (checker.c, probe scheduling) */
    double backoff_s;         /* current probe backoff while down/overloaded */
    uint64_t idle_seq;        /* source of idle_stamp */
    /* Fleet-aware admission (allowance.h): the server's own view of its
     * clients from the checker's last probe, and the share of it this
     * process may hold. New connections are made only while total is
     * under sp_allowance_cap(&allow, max_connections). */
    sp_server_view server_view;
    char server_view_error[96]; /* why the view is unavailable ("" when read):
                                 * error codes only, never reply text */
    sp_allowance allow;
    int probe_slots;          /* slots of `total` the checker's probes hold: not
                               * the callers', so not measured against the allowance */
    int allowance_blocked;    /* a caller queued for want of allowance since the
                               * last probe: probe soon to let it grow */
    /* The view probe near the line is one of the allowance's connections
     * (checker.c): with every slot of the cap taken, a pooled connection
     * is lent to the checker, which reads the view through it (view_loan.h)
     * and gives it back. The loan is off the books (not in `conns`, so no
     * thread can reach its socket), its slot counted in probe_slots and
     * connecting meanwhile. */
    sp_conn *view_loan;       /* the lent connection, or NULL */
    int view_loan_wanted;     /* sp_loan_wanted: whether the next connection that
                               * comes back is lent */
    int loan_ready;           /* a loan the checker has not started on yet */
    uint64_t view_loans;      /* connections lent so far */

    /* Host scope (host_budget.h): every slot counted in `total` is also a
     * slot of the shared host budget held by this process, claimed where
     * `total` grows and given back where it shrinks. NULL: process scope.
     * Set once, under `lock`, while the endpoint holds nothing
     * (sp_endpoint_set_host()), and kept until it is freed, so the checker
     * and stats() may read it with an atomic load and no lock. */
    struct sp_host *host_budget;

    /* Limits for idle connections (0 = off). */
    double max_idle_time;
    double max_lifetime;

    /* Counters. */
    uint64_t created;
    uint64_t closed;
    uint64_t waits;
    double wait_total_s;
    double wait_max_s;
    uint64_t timeouts;
    uint64_t probes;
    uint64_t probe_failures;
    uint64_t refused_by_state;
    uint64_t dead_idle_closed;
    uint64_t peer_hangups;    /* sockets the server closed on us (watch.h) */
    uint64_t transitions;
    uint64_t connect_failures;
} sp_endpoint;

typedef enum {
    SP_ACQ_CONN = 0,          /* *out is an idle connection, now in use */
    SP_ACQ_SLOT,              /* create a connection, then sp_endpoint_add() */
    SP_ACQ_QUEUED,            /* the waiter was queued: call sp_endpoint_wait() */
    SP_ACQ_TIMEOUT,           /* no capacity and the caller would not wait */
    SP_ACQ_PAUSED             /* refused by state */
} sp_acquire_status;

typedef enum {
    SP_REL_OK = 0,
    SP_REL_UNKNOWN,           /* not a connection of this endpoint */
    SP_REL_DOUBLE,            /* already idle: released twice */
    SP_REL_FOREIGN            /* in use, but checked out by another pool */
} sp_release_status;

/* A consistent copy of an endpoint's numbers, for stats(). */
typedef struct {
    int max_connections, total, in_use, idle, connecting, closing, waiters, pools;
    sp_state state;
    double state_since_wall;
    char state_reason[160];
    char last_error[200];
    char run_id[41];
    uint64_t generation, created, closed, waits, timeouts, probes, probe_failures;
    uint64_t refused_by_state, dead_idle_closed, peer_hangups, transitions, connect_failures;
    double wait_total_s, wait_max_s, max_idle_time, max_lifetime;
    sp_state refused_state;
    double refused_since_wall;
    char refused_reason[160];
    int host_scope;           /* 1: the numbers below are the host's */
    sp_host_stats host;
    sp_server_view server_view;
    char server_view_error[96];
    long long server_reserve;  /* -1 unknown */
    int allowance;             /* cap in force: min(max_connections, allowance) */
    uint64_t allowance_decreases;
} sp_stats;

void sp_endpoint_stats(sp_endpoint *ep, sp_stats *out);

/* Lifecycle (the registry calls these). */
sp_endpoint *sp_endpoint_new(const char *key, const char *label, int max_connections);
void sp_endpoint_free(sp_endpoint *ep);
void sp_endpoint_after_fork_child(sp_endpoint *ep);

/* Host scope: puts the endpoint on the shared budget `h` (the endpoint owns
 * it from then on and detaches it when freed). Only while in process scope,
 * holding no slot, with nobody waiting: returns 0, or -1 (nothing changed;
 * the caller still owns `h`). */
int sp_endpoint_set_host(sp_endpoint *ep, struct sp_host *h);
/* The checker's look at a host-scope endpoint (call with no lock held):
 * takes back dead holders' slots, serves waiters from slots other
 * processes gave back, and closes idle connections while another process
 * is in line for a slot. Returns 1 when an asyncio waiter still heads the
 * queue: nobody watches the host's futex for it, so look again soon. */
int sp_endpoint_host_tick(sp_endpoint *ep, sp_deferred *after);
/* A slot for the checker's probe (caller holds the lock): the local budget
 * has room and, in host scope, a host slot is free with nobody in line.
 * Returns 1 when taken (total, connecting and probe_slots count it). */
int sp_endpoint_take_probe_slot_locked(sp_endpoint *ep);

/* The view with the cap full (caller holds the lock): lends the checker
 * the oldest idle connection it may read the view through (view_loan.h),
 * or, with none idle, asks for the next one released (it goes to the loan
 * instead of a waiter). Returns 1 when ep->view_loan is set. */
int sp_endpoint_lend_for_view_locked(sp_endpoint *ep);
/* The first look at an endpoint whose budget has no spare slot (caller
 * holds the lock): only while callers wait for a connection (they wait
 * anyway: one of them waits one round trip more), lends the oldest idle
 * connection, or with none idle asks for the next one released while a
 * caller still waits. Otherwise nothing is lent: no caller is refused for
 * a first look and the pool's counts stay as its callers left them.
 * Returns 1 when ep->view_loan is set. */
int sp_endpoint_lend_for_first_view_locked(sp_endpoint *ep);
/* The checker is done with the loan: `keep` puts it back on the books as
 * a release would (a waiter or the idle stack gets it); 0 closes it (its
 * state is unknown), which frees the slot once its socket is closed. */
void sp_endpoint_return_loan_locked(sp_endpoint *ep, int keep, sp_deferred *after);

/* Binding of pools and flavors. */
void sp_endpoint_pool_added(sp_endpoint *ep, uint32_t flavor);
/* Moves idle connections of a flavor no pool uses any more to the graveyard. */
void sp_endpoint_pool_removed(sp_endpoint *ep, uint32_t flavor, sp_deferred *after);
void sp_endpoint_set_max(sp_endpoint *ep, int max_connections, sp_deferred *after);

/* Checkout. `deadline` < 0 waits forever, == 0 never waits. On
 * SP_ACQ_QUEUED `w` (owned by the caller, on its stack) is in the queue. */
sp_acquire_status sp_endpoint_acquire(sp_endpoint *ep, void *pool, uint32_t flavor,
                                      double deadline, sp_waiter *w, sp_conn **out,
                                      sp_deferred *after);
/* Blocks (call without the GIL) until `w` is served, `deadline` passes or
 * `slice` seconds elapse; returns w->result (SP_WAIT_PENDING after a slice
 * with the waiter still queued). On TIMEOUT the waiter has left the queue.
 * Any other result: call sp_endpoint_wait_done() once the caller runs again
 * (the binding: with the GIL back), before `w` goes away. */
sp_wait_result sp_endpoint_wait(sp_endpoint *ep, sp_waiter *w, double deadline, double slice);
/* A waiter that sp_endpoint_wait() settled is done: it leaves the wake-up
 * relay of a pause, waking the next waiter there, and frees its wait state.
 * Safe to call for any waiter, more than once. */
void sp_endpoint_wait_done(sp_endpoint *ep, sp_waiter *w);
/* Leaves the queue (Ctrl+C, cancellation). Whatever `w` was handed in the
 * meantime is given back, so nothing is lost. */
void sp_endpoint_cancel(sp_endpoint *ep, sp_waiter *w, sp_deferred *after);

/* A slot became a connection: `rec` (allocated by the caller) goes in use. */
int sp_endpoint_add(sp_endpoint *ep, sp_conn *rec, void *payload, void *pool, uint32_t flavor,
                    int fd);
/* A slot is given back unused (no connect was tried). */
void sp_endpoint_cancel_slot(sp_endpoint *ep, sp_deferred *after);
/* A slot could not become a connection (connect failed). */
void sp_endpoint_slot_failed(sp_endpoint *ep, sp_deferred *after);
/* A checked-out connection could not be made ready: bury it (its slot is
 * free once its connection is closed). */
void sp_endpoint_bury(sp_endpoint *ep, sp_conn *rec, sp_deferred *after);
/* For a health check: the oldest idle connection of `flavor`, now in use
 * by `pool`, or NULL (none idle, someone waiting, or not ready). Give it
 * back with sp_endpoint_release(). */
sp_conn *sp_endpoint_take_idle(sp_endpoint *ep, void *pool, uint32_t flavor);
/* Updates the fd of a checked-out connection after a reconnect. */
void sp_endpoint_set_fd(sp_endpoint *ep, sp_conn *rec, int fd);

/* The in-use record of `payload` checked out by `pool`, or NULL. */
sp_conn *sp_endpoint_find_inuse(sp_endpoint *ep, void *payload, void *pool);

/* ---- what the binding reads and sets, without reaching into the books ---- */

/* A visit of one record, under the endpoint's lock (a leaf lock: no Python,
 * no I/O, no other lock). Nonzero stops the walk. */
typedef int (*sp_conn_visit)(sp_conn *rec, void *ctx);
/* Visits every record of the endpoint (in use, idle, connecting) under its
 * lock until a visit returns nonzero; returns that value, or 0. */
int sp_endpoint_walk(sp_endpoint *ep, sp_conn_visit visit, void *ctx);
/* Visits the record of `payload`, if there is one, under the lock: the
 * visit's value, or 0 when there is none. */
int sp_endpoint_visit(sp_endpoint *ep, void *payload, sp_conn_visit visit, void *ctx);
/* Pools counted under `flavor` now. */
int sp_endpoint_flavor_pools(sp_endpoint *ep, uint32_t flavor);
/* Whether the endpoint is paused (down or loading: callers fail fast). */
int sp_endpoint_is_paused(sp_endpoint *ep);
/* The flavor whose credentials the checker's probes use. */
void sp_endpoint_set_probe_flavor(sp_endpoint *ep, uint32_t flavor);
/* max_idle_time and max_lifetime in seconds (0: off). */
void sp_endpoint_set_idle_limits(sp_endpoint *ep, double max_idle_s, double max_lifetime_s);
/* Set at creation and never changed, so read without the lock: the key,
 * the label shown to people (no secrets), whether it is TLS, and whether a
 * host budget backs it (an atomic read). */
const char *sp_endpoint_key(const sp_endpoint *ep);
const char *sp_endpoint_label(const sp_endpoint *ep);
int sp_endpoint_is_tls(const sp_endpoint *ep);
int sp_endpoint_on_host_budget(sp_endpoint *ep);
/* Counts a wait that the caller gave up on after `waited` seconds. */
void sp_endpoint_count_timeout(sp_endpoint *ep, double waited);

/* Release. `keep` = 0 closes the connection instead of pooling it. */
sp_release_status sp_endpoint_release(sp_endpoint *ep, void *pool, void *payload, int fd,
                                      int keep, sp_deferred *after);

/* Buries the idle records of `flavor` (all flavors if flavor == 0). */
void sp_endpoint_bury_idle_of(sp_endpoint *ep, uint32_t flavor, sp_deferred *after);
/* Fails every waiter of `pool` with SP_WAIT_CLOSED. */
void sp_endpoint_fail_pool_waiters(sp_endpoint *ep, void *pool, sp_deferred *after);
/* Buries every in-use record of `pool` (the pool is going away). */
void sp_endpoint_bury_pool_records(sp_endpoint *ep, void *pool, sp_deferred *after);

/* Masks every copy of `secret` in the NUL-terminated `text` (a buffer of
 * `size` bytes, at most 512 used), and a copy cut short at its end. */
void sp_scrub_secret(char *text, size_t size, const char *secret);

/* The one place last_error is written: prefix + text, with the endpoint's
 * password masked (a server may echo the AUTH it was sent). Caller holds
 * the lock. state_reason is scrubbed the same way by set_state_locked. */
void sp_endpoint_note_error_locked(sp_endpoint *ep, const char *prefix, const char *text);

/* Health. Called by the checker (and by failure reports). */
void sp_endpoint_set_state_locked(sp_endpoint *ep, sp_state s, const char *reason,
                                  sp_deferred *after);
void sp_endpoint_dispatch_locked(sp_endpoint *ep, sp_deferred *after);

/* Takes a fresh view of the server (the checker's probe) and updates the
 * allowance; idle connections over the new cap are closed now, busy ones
 * when they come back. `own_probe`: 1 when the probe's connection, which
 * the view counts, holds one of the slots of this process (still in
 * probe_slots): it counts as held. Returns 1 when the headroom is below
 * the reserve. Caller holds the lock. */
int sp_endpoint_server_view_locked(sp_endpoint *ep, const sp_server_view *v, long long reserve,
                                   int own_probe, double u, sp_deferred *after);
/* The view could not be read (`why`: "" when it was): no allowance. */
void sp_endpoint_server_view_unavailable_locked(sp_endpoint *ep, const char *why);
/* A connection of ours was rejected (max clients): halve the allowance. */
void sp_endpoint_rejected_locked(sp_endpoint *ep, sp_deferred *after);
/* The cap on total connections in force (budget and allowance). */
int sp_endpoint_cap_locked(const sp_endpoint *ep);

/* Moves an idle record to `after` (caller holds the lock). */
void sp_endpoint_bury_idle_locked(sp_endpoint *ep, sp_conn *rec, sp_deferred *after);
/* Moves every idle record to `after` (caller holds the lock). */
void sp_endpoint_bury_all_idle_locked(sp_endpoint *ep, sp_deferred *after);

/* `n` records of the graveyard were closed: their slots are free now. */
void sp_endpoint_closed(sp_endpoint *ep, int n, sp_deferred *after);

/* Wakes the async waiters `after` names (one byte each to their pipes).
 * Call with no lock held. */
void sp_deferred_notify(sp_deferred *after);

/* Appends a record to `after`'s graveyard (caller holds the lock). */
void sp_deferred_bury(sp_deferred *after, sp_conn *rec);

#endif
