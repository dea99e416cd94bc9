/* checker.c -- the native health-checker thread: probes servers and idle sockets, drives endpoint states. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth_gate.h"
#include "checker.h"
#include "clock.h"
#include "conn_list.h"
#include "events.h"
#include "host_health.h"
#include "probe.h"
#include "registry.h"
#include "view_loan.h"
#include "watch.h"

/* The thread never touches Python objects and never takes the GIL. It takes
 * the registry lock (through sp_registry_foreach) and endpoint locks, one at
 * a time, and does all I/O (probes, poll(), shutdown()) with no lock held.
 *
 * `ck.lock` guards the fields of `ck` only; nothing else is locked while it
 * is held, so it can be taken from anywhere. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;          /* wakes the thread early (report, stop) */
    int running;
    int stopping;
    int wake;
    pthread_t thread;
    sp_checker_config cfg;
} ck = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cfg = {1.0, 0.1, 0.05, 0.3, 1.0, 1, 0.1, 4},
};

static int cond_ready;

/* Builds with AddressSanitizer only: the thread holds `fork_gate` whenever
 * it is awake and lets go of it only while it sleeps (poll(), epoll_wait(),
 * its condition variable) or resolves a host name, and fork() takes the
 * gate first (sp_checker_lock_for_fork()), so the child is never made while
 * this thread is inside malloc() or free(). The AddressSanitizer runtime of
 * GCC 12 has no fork handlers for its allocator and stack depot locks (LLVM
 * 18 added them): a child forked while this thread held one hung at its
 * first allocation (an RQ work horse). glibc's allocator is fork-safe, so
 * other builds have no gate and a fork never waits for the checker.
 * Outermost lock: taken before ck.lock and every other one; only the
 * checker's own thread ever holds it, besides a forking thread. */
#if defined(__SANITIZE_ADDRESS__)
#define SP_FORK_GATE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SP_FORK_GATE 1
#endif
#endif

#ifdef SP_FORK_GATE
static pthread_mutex_t fork_gate = PTHREAD_MUTEX_INITIALIZER;
static __thread int holds_gate;   /* this thread is the checker, awake */

static void
gate_enter(void)
{
    pthread_mutex_lock(&fork_gate);
    holds_gate = 1;
}

static void
gate_leave(void)
{
    holds_gate = 0;
    pthread_mutex_unlock(&fork_gate);
}
#else
static __thread int holds_gate;
static void gate_enter(void) {}
static void gate_leave(void) {}
#endif

void
sp_checker_blocking_begin(void)
{
    if (holds_gate) {
        gate_leave();
        holds_gate = 2;   /* to be taken again by sp_checker_blocking_end() */
    }
}

void
sp_checker_blocking_end(void)
{
    if (holds_gate == 2) {
        gate_enter();
    }
}

#define KNOCK_INTERVAL 0.01   /* seconds between knocks; jittered to 5-10 ms */

/* xorshift64*: jitter only, seeded per thread start. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

/* Uniform in [0, 1). */
static double
random_unit(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static double
jitter(double base)
{
    return base * (0.5 + 0.5 * random_unit());  /* "equal jitter": between base/2 and base */
}

void
sp_checker_get_config(sp_checker_config *out)
{
    pthread_mutex_lock(&ck.lock);
    *out = ck.cfg;
    pthread_mutex_unlock(&ck.lock);
}

void
sp_checker_set_config(const sp_checker_config *cfg)
{
    pthread_mutex_lock(&ck.lock);
    ck.cfg = *cfg;
    ck.wake = 1;
    if (cond_ready) {
        pthread_cond_signal(&ck.cond);
    }
    pthread_mutex_unlock(&ck.lock);
    sp_watch_wake();
}

static void
wake_thread(void)
{
    pthread_mutex_lock(&ck.lock);
    int first = !ck.wake;     /* later ones find a wake-up pending */
    ck.wake = 1;
    if (cond_ready) {
        pthread_cond_signal(&ck.cond);
    }
    pthread_mutex_unlock(&ck.lock);
    if (first) {
        sp_watch_wake();
    }
}

/* ---- state changes --------------------------------------------------------- */

/* Changes state under ep->lock and records the transition for the event
 * pump; buried records are appended to ep->graveyard for a Python thread. */
static void
change_state_locked(sp_endpoint *ep, sp_state s, const char *reason, sp_deferred *after)
{
    sp_state old = ep->state;
    sp_endpoint_set_state_locked(ep, s, reason, after);
    if (old != s) {
        /* the stored reason: scrubbed of the password */
        sp_events_push(ep->label, sp_state_name(old), sp_state_name(s),
                       reason ? ep->state_reason : NULL);
    }
}

/* Closes the server side of records the checker buried (with no lock
 * held: shutdown() on our end; the fd itself stays open until a Python
 * thread disposes of the object, so no fd number is reused under anyone),
 * frees their slots, and hands them to the graveyard for disposal.
 * Records whose socket it cannot touch (asyncio) stay counted until then. */
static void
close_buried(sp_endpoint *ep, sp_deferred *after)
{
    while (after->graveyard != NULL) {
        sp_conn *list = after->graveyard;
        after->graveyard = NULL;
        int n = 0;
        for (sp_conn *rec = list; rec; rec = rec->next) {
            if (rec->fd >= 0 && rec->counted) {
                shutdown(rec->fd, SHUT_RDWR);
                rec->counted = 0;
                n++;
            }
        }
        pthread_mutex_lock(&ep->lock);
        sp_conn_list_move(&list, &ep->graveyard);
        pthread_mutex_unlock(&ep->lock);
        sp_endpoint_closed(ep, n, after);  /* may evict more: loop */
    }
    sp_deferred_notify(after);
}

void
sp_checker_report(sp_endpoint *ep, sp_failure kind, const char *message)
{
    sp_deferred after = {0};
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_note_error_locked(ep, NULL, message);
    ep->probe_requested = 1;
    switch (kind) {
    case SP_FAIL_REFUSED:
        /* Nothing listens: nobody else needs to find out the slow way. */
        if (ep->state != SP_STATE_PAUSED) {
            ep->backoff_s = 0;
            change_state_locked(ep, SP_STATE_PAUSED, "server down: connection refused", &after);
        }
        break;
    case SP_FAIL_LOADING:
        if (ep->state != SP_STATE_PAUSED) {
            ep->backoff_s = 0;
            change_state_locked(ep, SP_STATE_PAUSED, "server is loading its dataset", &after);
        }
        break;
    case SP_FAIL_MAXCLIENTS:
        sp_endpoint_rejected_locked(ep, &after);  /* multiplicative decrease */
        if (ep->state == SP_STATE_READY || ep->state == SP_STATE_RECOVERING ||
            ep->state == SP_STATE_SATURATED) {
            ep->backoff_s = 0;
            change_state_locked(ep, SP_STATE_OVERLOADED, "max number of clients reached",
                                &after);
        }
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&ep->lock);
    close_buried(ep, &after);
    wake_thread();
}

/* ---- idle sockets ------------------------------------------------------------ */

typedef struct {
    void *payload;
    uint64_t stamp;
    int fd;
} idle_snap;

static void
check_idle(sp_endpoint *ep, double now)
{
    sp_deferred after = {0};
    idle_snap snap[256];
    struct pollfd pfd[256];
    int n = 0;

    pthread_mutex_lock(&ep->lock);
    sp_conn *rec = ep->idle_top;
    while (rec) {
        sp_conn *next = rec->next;
        int expired = (ep->max_idle_time > 0 && now - rec->idle_since_mono > ep->max_idle_time) ||
                      (rec->expires_mono > 0 && now >= rec->expires_mono);
        if (expired || rec->generation != ep->generation) {
            sp_endpoint_bury_idle_locked(ep, rec, &after);
        }
        else if (rec->fd >= 0 && n < 256) {
            snap[n].payload = rec->payload;
            snap[n].stamp = rec->idle_stamp;
            snap[n].fd = rec->fd;
            pfd[n].fd = rec->fd;
            pfd[n].events = POLLIN;
            pfd[n].revents = 0;
            n++;
        }
        rec = next;
    }
    if (after.graveyard) {
        sp_endpoint_dispatch_locked(ep, &after);
    }
    pthread_mutex_unlock(&ep->lock);

    /* The fds stay valid while their records are idle: only a thread that
     * checked the connection out could close them, and the stamps below
     * tell whether that happened. */
    int dead = 0;
    if (n > 0 && poll(pfd, (nfds_t)n, 0) > 0) {
        for (int i = 0; i < n; i++) {
            dead += pfd[i].revents != 0;
        }
    }
    if (dead) {
        pthread_mutex_lock(&ep->lock);
        for (int i = 0; i < n; i++) {
            if (pfd[i].revents == 0) {
                continue;
            }
            sp_conn *r = sp_ptrmap_get(&ep->conns, snap[i].payload);
            if (r && r->state == SP_CONN_IDLE && r->idle_stamp == snap[i].stamp) {
                sp_endpoint_bury_idle_locked(ep, r, &after);
                ep->dead_idle_closed++;
            }
        }
        /* A server that dropped our idle connections may have gone away. */
        ep->probe_requested = 1;
        sp_endpoint_dispatch_locked(ep, &after);
        pthread_mutex_unlock(&ep->lock);
    }
    close_buried(ep, &after);
}

/* ---- probes ------------------------------------------------------------------ */

/* Paused and refused: knock again in 5-10 ms (see "probes in flight");
 * anything else (a timeout: maybe a black hole) keeps the backoff. Returns
 * the wait until the next probe. */
static double
knock_schedule_locked(sp_endpoint *ep, const sp_probe_result *res, double backoff_wait)
{
    ep->probe_knock = sp_probe_result_refused(res);
    if (!ep->probe_knock) {
        return backoff_wait;
    }
    double knock = jitter(KNOCK_INTERVAL);
    return knock < backoff_wait ? knock : backoff_wait;
}

/* The probe connected, or tried to, and had no answer in its whole time. */
static int
no_reply(const sp_probe_result *res, const sp_checker_config *cfg)
{
    return (res->status == SP_PROBE_OVERLOADED || res->status == SP_PROBE_DOWN) &&
           res->elapsed >= 0.9 * cfg->probe_timeout;
}

/* Callers wanted more connections than the allowance let them have. */
static int
growing_locked(const sp_endpoint *ep)
{
    return ep->allowance_blocked || (ep->waiters > 0 && ep->total < ep->max_connections);
}

/* Fleet-aware admission: takes the server's view from an answered probe
 * (allowance.h). Headroom below the reserve makes the endpoint saturated
 * (no new connections; callers queue for the ones the process has);
 * headroom back makes it ready, and the allowance grows from there. An
 * endpoint coming back from paused or overloaded goes through saturated
 * when the server is that full. Returns 1 when it decided the state and
 * the next probe. Caller holds ep->lock. */
static int
apply_view_locked(sp_endpoint *ep, const sp_probe_result *res, int counted,
                  const sp_checker_config *cfg, double now, sp_deferred *after)
{
    if (ep->tls) {
        return 0;  /* bare probes: no view (TLS endpoints) */
    }
    if (!sp_server_view_usable(&res->view)) {
        sp_endpoint_server_view_unavailable_locked(ep, res->view_error[0] ? res->view_error
                                                                          : "no view");
        if (ep->state == SP_STATE_SATURATED) {
            change_state_locked(ep, SP_STATE_READY, "server's view unavailable", after);
            ep->next_probe_mono = now + cfg->interval;
            return 1;
        }
        return 0;
    }
    /* A probe in a slot of ours (counted, not given back yet) is one of
     * the connections this process holds: the view counts it, and so does
     * the allowance. Any other probe's connection is gone once it has
     * landed. */
    sp_server_view v = res->view;
    if (!counted && v.connected_clients > 0) {
        v.connected_clients--;
    }
    long long reserve = sp_server_reserve(v.maxclients, cfg->server_reserve,
                                          cfg->server_reserve_min);
    int saturated = sp_endpoint_server_view_locked(ep, &v, reserve, counted, random_unit(),
                                                   after);
    char reason[160];
    long long headroom = v.maxclients - v.connected_clients;
    /* Near the line every process of the fleet probes, and each probe is
     * a connection in the reserve: there they come once per interval
     * (jittered), so N processes still look N times per interval. */
    double near_line = jitter(cfg->interval);
    if (saturated) {
        snprintf(reason, sizeof(reason),
                 "server saturated: %lld/%lld clients connected, headroom %lld below the "
                 "reserve of %lld",
                 v.connected_clients, v.maxclients, headroom, reserve);
        change_state_locked(ep, SP_STATE_SATURATED, reason, after);
        ep->next_probe_mono = now + near_line;
        return 1;
    }
    if (ep->state == SP_STATE_SATURATED && headroom <= reserve) {
        /* At the line: stays saturated (no flapping between states while
         * the fleet sits on the reserve). */
        ep->next_probe_mono = now + near_line;
        return 1;
    }
    if (ep->state == SP_STATE_SATURATED) {
        snprintf(reason, sizeof(reason),
                 "headroom back: %lld/%lld clients connected, reserve %lld",
                 v.connected_clients, v.maxclients, reserve);
        change_state_locked(ep, SP_STATE_READY, reason, after);
        ep->next_probe_mono = now + (sp_allowance_near_line(&ep->allow) ? near_line
                                                                     : jitter(cfg->recover_interval));
        return 1;
    }
    if (sp_allowance_near_line(&ep->allow) &&
        (ep->state == SP_STATE_RECOVERING || ep->state == SP_STATE_OVERLOADED ||
         ep->state == SP_STATE_PAUSED)) {
        /* Back near the line (a restart, with the fleet coming back at
         * once): the allowance governs growth from here, not recovering's
         * doubling, and the probes slow down with everyone's. */
        change_state_locked(ep, SP_STATE_READY, "recovered: the server's headroom governs growth",
                            after);
        ep->next_probe_mono = now + near_line;
        return 1;
    }
    return 0;
}

static void
apply_probe(sp_endpoint *ep, const sp_probe_result *res, int counted,
            const sp_checker_config *cfg, double now)
{
    sp_deferred after = {0};
    char reason[200];
    pthread_mutex_lock(&ep->lock);
    ep->probes++;
    ep->probe_knock = 0;
    sp_probe_status st = res->status;
    if (st == SP_PROBE_AUTH) {
        /* It answered: the server is up, and rejects the credentials of
         * the flavor the probe speaks for (auth_gate.h). */
        sp_endpoint_note_error_locked(ep, "probe: ", res->error);
        sp_auth_rejected_locked(ep, ep->probe_flavor, now, cfg);
        st = SP_PROBE_OK;
    }
    else if (st == SP_PROBE_OK) {
        sp_auth_accepted_locked(ep, ep->probe_flavor);
    }
    if (st == SP_PROBE_OK) {
        ep->silent = 0;
        if (res->run_id[0] && ep->run_id[0] && strcmp(res->run_id, ep->run_id) != 0) {
            /* Restarted: nothing from the old process may be handed out. */
            ep->generation++;
            sp_endpoint_bury_all_idle_locked(ep, &after);
            sp_events_push(ep->label, sp_state_name(ep->state), sp_state_name(ep->state),
                           "server restarted (run_id changed)");
            /* Logged, but not a state transition: generation tells it. */
        }
        if (res->run_id[0]) {
            memcpy(ep->run_id, res->run_id, sizeof(ep->run_id));
        }
        ep->backoff_s = 0;
        if (apply_view_locked(ep, res, counted, cfg, now, &after)) {
            pthread_mutex_unlock(&ep->lock);
            close_buried(ep, &after);
            return;
        }
        switch (ep->state) {
        case SP_STATE_PAUSED:
        case SP_STATE_OVERLOADED:
            change_state_locked(ep, SP_STATE_RECOVERING, "probe succeeded: letting connections in",
                                &after);
            ep->next_probe_mono = now + cfg->recover_interval;
            break;
        case SP_STATE_RECOVERING:
            /* Double the connect rate each round until demand is met. */
            if (sp_host_health_demand_met_locked(ep) ||
                ep->max_connecting >= ep->max_connections) {
                change_state_locked(ep, SP_STATE_READY, "recovered", &after);
                ep->next_probe_mono = now + cfg->interval;
            }
            else {
                ep->max_connecting *= 2;
                sp_endpoint_dispatch_locked(ep, &after);
                ep->next_probe_mono = now + cfg->recover_interval;
            }
            break;
        case SP_STATE_READY:
            ep->next_probe_mono = now + cfg->interval;
            break;
        case SP_STATE_SATURATED:
            break;  /* apply_view_locked() decided */
        }
        if (ep->state == SP_STATE_READY && growing_locked(ep) &&
            !sp_allowance_near_line(&ep->allow)) {
            /* Held back by the allowance: look again soon to let it grow
             * (jittered: processes that read one headroom grow apart). */
            double soon = now + jitter(cfg->recover_interval);
            if (soon < ep->next_probe_mono) {
                ep->next_probe_mono = soon;
            }
        }
    }
    else {
        ep->probe_failures++;
        sp_endpoint_note_error_locked(ep, NULL, res->error);
        ep->backoff_s = ep->backoff_s <= 0 ? cfg->backoff_min : ep->backoff_s * 2;
        if (ep->backoff_s > cfg->backoff_max) {
            ep->backoff_s = cfg->backoff_max;
        }
        double wait = jitter(ep->backoff_s);
        switch (st) {
        case SP_PROBE_DOWN:
            snprintf(reason, sizeof(reason), "server down: %s", res->error);
            change_state_locked(ep, SP_STATE_PAUSED, reason, &after);
            wait = knock_schedule_locked(ep, res, wait);
            break;
        case SP_PROBE_LOADING:
            snprintf(reason, sizeof(reason), "server is loading its dataset (eta %.0fs)",
                     res->loading_eta);
            change_state_locked(ep, SP_STATE_PAUSED, reason, &after);
            if (res->loading_eta > 0 && res->loading_eta < wait) {
                wait = res->loading_eta;
            }
            break;
        case SP_PROBE_OVERLOADED:
            if (ep->silent && ep->state == SP_STATE_PAUSED && no_reply(res, cfg)) {
                break;  /* still answering nobody: callers keep failing fast */
            }
            if (strstr(res->error, "max number of clients") != NULL) {
                /* Our probe was rejected: the server is over its maxclients
                 * (lowered under us, or filled by others) and no view can
                 * come in: multiplicative decrease until one does. */
                sp_endpoint_rejected_locked(ep, &after);
            }
            snprintf(reason, sizeof(reason), "server overloaded: %s", res->error);
            change_state_locked(ep, SP_STATE_OVERLOADED, reason, &after);
            break;
        default:
            /* Protocol surprises: not a reason to stop traffic. */
            wait = cfg->interval;
            break;
        }
        ep->next_probe_mono = now + wait;
    }
    pthread_mutex_unlock(&ep->lock);
    close_buried(ep, &after);
}

/* ---- probes in flight ---------------------------------------------------------
 *
 * Every probe is a non-blocking state machine (probe.h) run by this thread's
 * event loop, each with its own deadline: a server that accepts and never
 * answers (SIGSTOP, a black hole) costs its own probe's timeout and nobody
 * else's, and stopping the thread never waits for a probe.
 *
 * The probe speaks plain RESP, which a TLS port answers with a reset. For
 * TLS endpoints it is a bare TCP connect: refused is down, accepted is up
 * (no run_id); LOADING, max clients and dead sockets are learnt from the
 * pool's own connections (their errors are reported, idle ones polled).
 * A connect does not tell a stopped TLS server (its kernel still accepts):
 * while one is suspected (stalled at full budget, or paused as not
 * answering) its probe sends a TLS alert and waits for the server's TLS
 * stack to answer it (SP_PROBE_MODE_TLS_ALERT).
 *
 * While paused with nothing listening, the probe is a bare connect every
 * 5-10 ms ("knock", jittered so processes do not fall in step): refused
 * costs one SYN and one RST on the server's host, and the moment the
 * server listens again a full probe follows at once. */

typedef struct {
    sp_endpoint *ep;          /* a reference is held while in flight */
    int counted;              /* the probe holds a slot of the budget */
    int knock;                /* bare connect while paused */
    int view_only;            /* for the server's view at a full budget: a probe
                               * without a reply says nothing (check_stall() decides) */
    int loan;                 /* not a probe: INFO through a lent connection (view_loan.h),
                               * op.fd its socket (not ours to close); 2: abandoned */
    sp_probe_op op;
} flight;

/* The probes in flight. The array is the checker thread's; it changes
 * only under ck.lock so that a fork (which takes ck.lock) sees it whole. */
static flight **flights;
static int n_flights, cap_flights;

static void apply_probe(sp_endpoint *ep, const sp_probe_result *res, int counted,
                        const sp_checker_config *cfg, double now);
static void probe_start(sp_endpoint *ep, int counted, int view_only,
                        const sp_checker_config *cfg);
static void flight_add(flight *fl);

/* Ends a flight before its time: a probe's socket is closed; a loan's
 * socket is the connection's, closed by its owner once given up. */
static void
flight_abandon(flight *fl)
{
    if (fl->loan) {
        fl->loan = 2;
    }
    else {
        sp_probe_abort(&fl->op);
    }
}

static flight *
flight_of(const sp_endpoint *ep)
{
    for (int i = 0; i < n_flights; i++) {
        if (flights[i]->ep == ep) {
            return flights[i];
        }
    }
    return NULL;
}

/* A knock that got in: the server listens again; probe it for real now. */
static void
apply_knock(sp_endpoint *ep, const sp_probe_result *res, const sp_checker_config *cfg,
            double now)
{
    if (res->status != SP_PROBE_OK) {
        apply_probe(ep, res, 0, cfg, now);
        return;
    }
    pthread_mutex_lock(&ep->lock);
    ep->probe_knock = 0;
    ep->probe_requested = 0;
    int counted = sp_endpoint_take_probe_slot_locked(ep);  /* the probe's own connection counts */
    pthread_mutex_unlock(&ep->lock);
    probe_start(ep, counted, 0, cfg);
}

static int apply_stall(sp_endpoint *ep, const sp_probe_result *res,
                       const sp_checker_config *cfg, double now);

/* A probe that held a slot of the budget is done with it. */
static void
give_probe_slot(sp_endpoint *ep)
{
    sp_deferred after = {0};
    pthread_mutex_lock(&ep->lock);
    ep->probe_slots--;
    pthread_mutex_unlock(&ep->lock);
    sp_endpoint_cancel_slot(ep, &after);
    close_buried(ep, &after);
}

/* Host scope: the probe lease lasts until this process's next probe. */
static void
host_probe_landed(sp_endpoint *ep)
{
    pthread_mutex_lock(&ep->lock);
    sp_host_health_landed_locked(ep, sp_now());
    pthread_mutex_unlock(&ep->lock);
}

static void loan_land(flight *fl, const sp_checker_config *cfg);

/* A probe ended: act on its answer and give its slot back (after: a view
 * read in a slot of ours counts that slot as held). */
static void
flight_land(flight *fl)
{
    sp_checker_config cfg;
    sp_checker_get_config(&cfg);
    if (fl->loan) {
        loan_land(fl, &cfg);
        return;
    }
    if (fl->knock) {
        if (fl->counted) {
            give_probe_slot(fl->ep);
        }
        apply_knock(fl->ep, &fl->op.res, &cfg, sp_now());
    }
    else if (fl->view_only && no_reply(&fl->op.res, &cfg)) {
        /* Silence says nothing here: callers hold every slot, and the stall
         * watch is what tells a stopped server from long holders. */
        pthread_mutex_lock(&fl->ep->lock);
        fl->ep->next_probe_mono = sp_now() + cfg.interval;
        pthread_mutex_unlock(&fl->ep->lock);
    }
    else if (!apply_stall(fl->ep, &fl->op.res, &cfg, sp_now())) {
        apply_probe(fl->ep, &fl->op.res, fl->counted, &cfg, sp_now());
    }
    if (fl->counted && !fl->knock) {
        give_probe_slot(fl->ep);
    }
    host_probe_landed(fl->ep);
    /* The request held the password: leave nothing behind. */
    memset(fl->op.wbuf, 0, sizeof(fl->op.wbuf));
}

/* Starts a probe of `ep` (counted: it holds a slot the caller took). One
 * that ends at once (refused on loopback) lands before this returns. */
static void
probe_start(sp_endpoint *ep, int counted, int view_only, const sp_checker_config *cfg)
{
    flight *fl = malloc(sizeof(*fl));
    if (fl == NULL) {
        if (counted) {
            give_probe_slot(ep);
        }
        return;
    }
    pthread_mutex_lock(&ep->lock);
    int knock = ep->probe_knock && ep->state == SP_STATE_PAUSED;
    /* A TLS port suspected of not answering gets a TLS alert to answer;
     * otherwise a connect is all a TLS port is asked (its log stays quiet). */
    int mode = knock ? SP_PROBE_MODE_CONNECT
               : !ep->tls ? SP_PROBE_MODE_RESP
               : (ep->stall_probing || ep->silent) ? SP_PROBE_MODE_TLS_ALERT
               : SP_PROBE_MODE_CONNECT;
    pthread_mutex_unlock(&ep->lock);
    fl->ep = ep;
    fl->counted = counted;
    fl->knock = knock;
    fl->view_only = view_only;
    fl->loan = 0;
    sp_probe_target t = {ep->host, ep->port, ep->unix_path, ep->username, ep->password,
                         cfg->probe_timeout};
    if (!sp_probe_begin(&fl->op, &t, mode)) {
        flight_land(fl);
        free(fl);
        return;
    }
    flight_add(fl);
}

/* Puts a started flight in the array (the thread's event loop runs it);
 * out of memory, it ends at once. */
static void
flight_add(flight *fl)
{
    pthread_mutex_lock(&ck.lock);
    if (n_flights == cap_flights) {
        int cap = cap_flights ? 2 * cap_flights : 16;
        flight **grown = realloc(flights, sizeof(*flights) * (size_t)cap);
        if (grown == NULL) {
            pthread_mutex_unlock(&ck.lock);
            flight_abandon(fl);
            flight_land(fl);
            free(fl);
            return;
        }
        flights = grown;
        cap_flights = cap;
    }
    sp_registry_ref(fl->ep);
    flights[n_flights++] = fl;
    pthread_mutex_unlock(&ck.lock);
}

static void
flight_remove(int i)
{
    flight *fl = flights[i];
    pthread_mutex_lock(&ck.lock);
    flights[i] = flights[--n_flights];
    pthread_mutex_unlock(&ck.lock);
    flight_land(fl);
    sp_registry_unbind(fl->ep);
    free(fl);
}

/* ---- the view probe near the line (fleet-aware admission) -------------------
 *
 * Near the line every process of a fleet probes, and each probe is one
 * more connection on the server: there the view probe is one of the
 * allowance's connections. With room under the cap it takes a slot of it
 * (no caller can take that slot meanwhile). With the cap full, a pooled
 * connection is lent to the checker (the oldest idle one, else the next
 * one released), which reads the view through it and gives it back
 * (view_loan.h): nothing is connected or closed. What the server counts of
 * this process, probes included, never exceeds its allowance. */

/* While ready, a probe takes a spare slot only, never the last free one
 * unless an idle connection can serve a caller meanwhile: nobody is
 * refused or kept waiting because of a probe. Caller holds ep->lock. */
static int
ready_probe_has_slot_locked(const sp_endpoint *ep)
{
    return ep->total < ep->max_connections &&
           (ep->total + 1 < ep->max_connections || ep->idle > 0);
}

/* A due probe finds no slot and may not go over the budget: a recovering
 * endpoint whose budget is in use by connections made since the server
 * came back has recovered; the next probe is an interval away. Caller
 * holds ep->lock. */
static void
no_slot_for_probe_locked(sp_endpoint *ep, double now, const sp_checker_config *cfg,
                         sp_deferred *after)
{
    if (ep->state == SP_STATE_RECOVERING) {
        change_state_locked(ep, SP_STATE_READY, "recovered: budget in use", after);
    }
    ep->next_probe_mono = now + cfg->interval;
}

enum { VIEW_TODAY = 0, VIEW_SLOT, VIEW_LOAN, VIEW_WAIT, VIEW_OVER };

/* Where a due probe of `ep` goes: VIEW_TODAY (not near the line, or no
 * view: the usual rules), VIEW_SLOT (it took a free slot of the cap),
 * VIEW_LOAN (a connection is lent: ep->view_loan), VIEW_WAIT (the next
 * connection released is lent) or VIEW_OVER (nothing can be lent: over
 * the cap by its one brief connection). Caller holds ep->lock. */
static int
view_probe_locked(sp_endpoint *ep)
{
    if (ep->view_loan != NULL) {
        return VIEW_LOAN;  /* lent already: read through it */
    }
    int held = ep->total - ep->probe_slots - ep->closing;
    int fleet = !ep->tls && ep->allow.reserve > 0 && ep->allow.allowance != SP_ALLOWANCE_NONE &&
                (ep->state == SP_STATE_SATURATED ||
                 (ep->state == SP_STATE_READY &&
                  (sp_allowance_near_line(&ep->allow) ||
                   sp_allowance_within_reach(&ep->allow, ep->max_connections, held))));
    /* The first look at a new endpoint reads the view even with its budget
     * full: a pool that filled before the checker got round to it would
     * otherwise never learn how full the server is (a full budget leaves
     * no spare slot for the usual probe, and no view means no line). */
    int first_view = !ep->tls && ep->state == SP_STATE_READY && ep->probes == 0;
    if (!fleet && !first_view) {
        ep->view_loan_wanted = SP_LOAN_NONE;
        return VIEW_TODAY;
    }
    if (!fleet) {
        /* With a spare slot the usual probe reads it. Without, a first look
         * never takes what a caller could be served with (the last free
         * slot, an idle connection): it borrows a connection for one round
         * trip only while callers wait for one anyway. */
        if (ready_probe_has_slot_locked(ep)) {
            ep->view_loan_wanted = SP_LOAN_NONE;
            return VIEW_TODAY;
        }
        if (sp_endpoint_lend_for_first_view_locked(ep)) {
            return VIEW_LOAN;
        }
        return ep->view_loan_wanted == SP_LOAN_NONE ? VIEW_TODAY : VIEW_WAIT;
    }
    if (ep->total < sp_endpoint_cap_locked(ep) && sp_endpoint_take_probe_slot_locked(ep)) {
        ep->view_loan_wanted = SP_LOAN_NONE;
        return VIEW_SLOT;
    }
    if (sp_endpoint_lend_for_view_locked(ep)) {
        return VIEW_LOAN;
    }
    /* Nothing to lend (RESP3, asyncio): the probe goes over the cap by
     * its one brief connection; no reply to it says nothing. */
    return ep->view_loan_wanted ? VIEW_WAIT : VIEW_OVER;
}

/* The checker is done with the loan of `ep`: back on the books (`keep`)
 * or closed (its state is unknown). Call with no lock held. */
static void
loan_return(sp_endpoint *ep, int keep)
{
    sp_deferred after = {0};
    pthread_mutex_lock(&ep->lock);
    sp_endpoint_return_loan_locked(ep, keep, &after);
    pthread_mutex_unlock(&ep->lock);
    close_buried(ep, &after);
}

/* Sends INFO through the loan of `ep`, unless it is under way already;
 * its replies land in loan_land(). Call with no lock held. */
static void
loan_start(sp_endpoint *ep, const sp_checker_config *cfg)
{
    pthread_mutex_lock(&ep->lock);
    int fd = ep->loan_ready && ep->view_loan != NULL ? ep->view_loan->fd : -1;
    ep->loan_ready = 0;
    pthread_mutex_unlock(&ep->lock);
    if (fd < 0) {
        return;
    }
    flight *fl = calloc(1, sizeof(*fl));
    if (fl == NULL || sp_loan_send_info(fd) != 0) {
        free(fl);
        loan_return(ep, fl != NULL ? 0 : 1);  /* unsent: as it was; half sent: closed */
        return;
    }
    fl->ep = ep;
    fl->loan = 1;
    fl->op.fd = fd;
    fl->op.want = POLLIN;
    fl->op.deadline = sp_now() + cfg->probe_timeout;
    fl->op.res.status = SP_PROBE_ERROR;
    sp_server_view_init(&fl->op.res.view);
    flight_add(fl);
}

/* The replies to a loan's INFO: 0 once both are in (op.res.status OK), the
 * connection broke, or probe_timeout passed; 1 while they are on the way. */
static int
loan_pending(flight *fl, int readable, double now)
{
    if (readable) {
        sp_probe_op *op = &fl->op;
        int got = sp_loan_read_view(op->fd, op->rbuf, sizeof(op->rbuf), &op->rlen, &op->res.view,
                                    op->res.view_error, sizeof(op->res.view_error));
        if (got != 0) {
            op->res.status = got > 0 ? SP_PROBE_OK : SP_PROBE_ERROR;
            return 0;
        }
    }
    return now < fl->op.deadline;
}

/* A loan's view is in: applied as a probe's (its connection holds a slot
 * of ours, counted in the view), then the connection goes back. Without
 * both replies it is closed, and the view stays as it was. */
static void
loan_land(flight *fl, const sp_checker_config *cfg)
{
    int ok = fl->loan == 1 && fl->op.res.status == SP_PROBE_OK;
    if (ok) {
        apply_probe(fl->ep, &fl->op.res, 1, cfg, sp_now());
    }
    else {
        pthread_mutex_lock(&fl->ep->lock);
        fl->ep->next_probe_mono = sp_now() + cfg->interval;
        pthread_mutex_unlock(&fl->ep->lock);
    }
    loan_return(fl->ep, ok);
}

/* Moves every probe on: revents[i] tells what poll() saw on flight i's
 * socket (0: nothing; it is only checked against its deadline). */
static void
flights_run(const struct pollfd *pfd)
{
    double now = sp_now();
    for (int i = n_flights - 1; i >= 0; i--) {
        flight *fl = flights[i];
        int pending = 1;
        if (fl->loan) {
            pending = loan_pending(fl, pfd == NULL || pfd[i].revents, now);
        }
        else {
            if (pfd == NULL || pfd[i].revents) {
                pending = sp_probe_continue(&fl->op);
            }
            if (pending) {
                pending = sp_probe_expire(&fl->op, now);
            }
        }
        if (!pending) {
            flight_remove(i);  /* the last one moves to i: already run */
        }
    }
}

/* Ends every probe at once (the thread is stopping). */
static void
flights_abort_all(void)
{
    while (n_flights > 0) {
        flight_abandon(flights[n_flights - 1]);
        flight_remove(n_flights - 1);
    }
    pthread_mutex_lock(&ck.lock);
    free(flights);
    flights = NULL;
    cap_flights = 0;
    pthread_mutex_unlock(&ck.lock);
}

/* Waits until `until` (sp_now() seconds) for a wake-up, a hangup or a
 * probe's socket, whichever comes first, and moves the probes on. Stores
 * hangups in hits like sp_watch_wait() and returns their count. Without a
 * watch, waits in slices of 5 ms so that wake-ups on ck.cond are seen. */
static int
wait_events(double until, sp_watch_hit *hits, int max, int watching)
{
    if (n_flights == 0 && watching) {
        gate_leave();
        int n = sp_watch_wait(until - sp_now(), hits, max);
        gate_enter();
        return n < 0 ? 0 : n;
    }
    struct pollfd stack_pfd[65];
    struct pollfd *pfd = stack_pfd;
    if (n_flights + 1 > 65) {
        pfd = malloc(sizeof(*pfd) * (size_t)(n_flights + 1));
        if (pfd == NULL) {
            flights_run(NULL);
            return 0;
        }
    }
    for (int i = 0; i < n_flights; i++) {
        pfd[i + 1].fd = flights[i]->op.fd;
        pfd[i + 1].events = flights[i]->op.want;
        pfd[i + 1].revents = 0;
        if (flights[i]->op.deadline < until) {
            until = flights[i]->op.deadline;
        }
    }
    pfd[0].fd = watching ? sp_watch_fd() : -1;  /* poll() skips a negative fd */
    pfd[0].events = POLLIN;
    pfd[0].revents = 0;
    if (!watching && until > sp_now() + 0.005) {
        until = sp_now() + 0.005;
    }
    double left = until - sp_now();
    int ms = left <= 0 ? 0 : left > 3600 ? 3600000 : (int)(left * 1000.0) + 1;
    int n = 0;
    gate_leave();
    int polled = poll(pfd, (nfds_t)n_flights + 1, ms);
    gate_enter();
    if (polled > 0 && pfd[0].revents) {
        n = sp_watch_wait(0, hits, max);
        n = n < 0 ? 0 : n;
    }
    flights_run(pfd + 1);
    if (pfd != stack_pfd) {
        free(pfd);
    }
    return n;
}

/* The server closed some of our sockets (watch.h): probe it now (returns
 * 1 when the caller should, with no slot of the budget). A server that is
 * gone refuses the connect (a microsecond on loopback), or resets it from
 * its listen backlog as the process goes (its client sockets close a
 * moment before its listener); either way the probe says down and the
 * endpoint pauses before request threads find out one by one. A server
 * that still accepts and answers (CLIENT KILL, its idle `timeout`, a reset
 * of a socket we shut down ourselves with a reply on its way) fails nobody,
 * however many sockets it closed: callers keep queueing meanwhile, and a
 * pause fails the queue newest first. The probe may take a slot the budget
 * has no room for, but never goes over it on the server's side: the
 * sockets that hung up no longer count there. */
static int
check_hangup(sp_endpoint *ep, int sockets)
{
    pthread_mutex_lock(&ep->lock);
    ep->peer_hangups += (uint64_t)sockets;
    int check = ep->pools > 0 && ep->state != SP_STATE_PAUSED &&
                (ep->host != NULL || ep->unix_path != NULL);
    pthread_mutex_unlock(&ep->lock);
    return check;  /* probe now: see probe_now() */
}

/* ---- a server that answers nobody while every slot is out -------------- */

/* While ready the probe takes only a spare slot, and with every slot out
 * and callers queued there is none: a server that stopped answering (kill
 * -STOP, a black-holed route: it accepts and never replies) would make
 * every caller wait its whole timeout. The endpoint is stalled when the
 * budget is full, someone is queued, and nothing came back or settled
 * (ep->progress) for probe_timeout. A server that answers returns
 * connections within milliseconds, so only a silent server, or callers
 * holding every connection that long, gets here; one probe tells which.
 * It goes over the budget by its one connection, for at most
 * probe_timeout, and only to a server that has answered none of ours for
 * that long. Caller holds ep->lock. */
static int
stalled_locked(sp_endpoint *ep, const sp_checker_config *cfg, double now)
{
    int full = ep->state == SP_STATE_READY && ep->pools > 0 && ep->waiters > 0 &&
               ep->total >= sp_endpoint_cap_locked(ep) &&
               (ep->host != NULL || ep->unix_path != NULL);
    if (!full || ep->progress != ep->stall_progress) {
        ep->stall_progress = ep->progress;
        ep->stall_since_mono = now;
        return 0;
    }
    return now - ep->stall_since_mono >= cfg->probe_timeout && now >= ep->stall_probe_after_mono;
}

/* Starts a probe of a stalled endpoint, over the budget (see above); its
 * answer lands in apply_stall(). */
static void
check_stall(sp_endpoint *ep, const sp_checker_config *cfg, double now)
{
    if (flight_of(ep) != NULL) {
        return;  /* the probe in flight answers */
    }
    pthread_mutex_lock(&ep->lock);
    int stall = stalled_locked(ep, cfg, now);
    ep->stall_probing = stall;
    pthread_mutex_unlock(&ep->lock);
    if (stall) {
        probe_start(ep, 0, 0, cfg);
    }
}

/* A stall probe landed. No reply while still nothing came back pauses the
 * endpoint ("server not answering"), so queued and later callers fail fast
 * until a probe is answered; returns 1 then. Anything else (0) is applied
 * as any probe's answer. */
static int
apply_stall(sp_endpoint *ep, const sp_probe_result *res, const sp_checker_config *cfg,
            double now)
{
    sp_deferred after = {0};
    char reason[160];
    pthread_mutex_lock(&ep->lock);
    int mine = ep->stall_probing;
    ep->stall_probing = 0;
    int silent = mine && no_reply(res, cfg) && ep->state == SP_STATE_READY &&
                 ep->progress == ep->stall_progress;
    if (mine && !silent) {
        ep->stall_probe_after_mono = now + cfg->interval;  /* long holders: look again later */
    }
    if (silent) {
        snprintf(reason, sizeof(reason),
                 "server not answering: no connection came back for %.1fs with %d callers "
                 "waiting, and a probe had no reply in %.1fs (stopped or black-holed)",
                 now - ep->stall_since_mono, ep->waiters, cfg->probe_timeout);
        ep->probes++;
        ep->probe_failures++;
        sp_endpoint_note_error_locked(ep, NULL, res->error);
        ep->silent = 1;
        ep->backoff_s = cfg->backoff_min;
        change_state_locked(ep, SP_STATE_PAUSED, reason, &after);
        ep->next_probe_mono = now + jitter(ep->backoff_s);
    }
    pthread_mutex_unlock(&ep->lock);
    close_buried(ep, &after);
    return silent;
}

typedef struct {
    const sp_watch_hit *hits;
    int n;
} hit_list;

/* How many of `ep`'s sockets hung up, per the watch (0: none). */
static int
hangups_of(const hit_list *hl, const sp_endpoint *ep)
{
    for (int i = 0; i < hl->n; i++) {
        if (hl->hits[i].serial == ep->serial) {
            return hl->hits[i].sockets;
        }
    }
    return 0;
}

typedef struct {
    double next_due;          /* the earliest probe due, over all endpoints */
    hit_list hung;            /* endpoints a server hung up on */
} tick_state;

/* Host scope: an asyncio waiter heads the queue, and a slot another
 * process gives back reaches it only through a tick: the next one in
 * HOST_ASYNC_POLL instead of the usual 250 ms. */
#define HOST_ASYNC_POLL 0.01

static void
host_async_soon(tick_state *ts, double now)
{
    if (now + HOST_ASYNC_POLL < ts->next_due) {
        ts->next_due = now + HOST_ASYNC_POLL;
    }
}

static int
tick_endpoint(sp_endpoint *ep, void *arg)
{
    tick_state *ts = arg;
    sp_checker_config cfg;
    sp_checker_get_config(&cfg);

    /* Idle sockets first: the ones that hung up are buried and counted as
     * dead before a burst pause would drain them with the rest. */
    double now = sp_now();
    check_idle(ep, now);
    check_stall(ep, &cfg, now);
    sp_deferred host = {0};
    if (sp_endpoint_host_tick(ep, &host)) {
        host_async_soon(ts, now);
    }
    close_buried(ep, &host);
    int sockets = hangups_of(&ts->hung, ep);
    int in_flight = flight_of(ep) != NULL;
    if (sockets > 0 && check_hangup(ep, sockets) && !in_flight) {
        pthread_mutex_lock(&ep->lock);
        ep->probe_requested = 0;
        /* Host scope: the probe holds a host slot like any connection (other
         * processes may use every other one); with none free, it waits for
         * the next probe that finds one. */
        int counted = 0, go = 1;
        if (ep->host_budget != NULL) {
            counted = go = sp_endpoint_take_probe_slot_locked(ep);
            ep->probe_requested = !go;
        }
        pthread_mutex_unlock(&ep->lock);
        if (go) {
            probe_start(ep, counted, 0, &cfg);
        }
        in_flight = flight_of(ep) != NULL;
    }

    pthread_mutex_lock(&ep->lock);
    /* One probe at a time per endpoint: the one in flight answers. */
    int due = !in_flight && ep->pools > 0 && (ep->probe_requested || now >= ep->next_probe_mono);
    int view = due || (ep->loan_ready && !in_flight) ? view_probe_locked(ep) : VIEW_TODAY;
    /* While ready, a probe takes a spare slot only; with nothing to spare,
     * traffic and the idle checks prove health. */
    int has_slot = ep->state != SP_STATE_READY || ready_probe_has_slot_locked(ep);
    /* A probe over the budget only while paused: the old connections still
     * counted may all be dead. Recovering with the budget full of new,
     * working connections means recovered. */
    if (ep->state != SP_STATE_READY && ep->state != SP_STATE_PAUSED &&
        ep->state != SP_STATE_SATURATED && ep->total >= ep->max_connections) {
        has_slot = 0;
    }
    /* Saturated: the probe's connection is one of the reserve's, brief,
     * and the only way to learn that headroom came back. */
    if (ep->state == SP_STATE_SATURATED) {
        has_slot = 1;
    }
    /* Held back by the allowance: probe soon, to let it grow. */
    if (!due && !in_flight && ep->state == SP_STATE_READY && ep->allowance_blocked &&
        !sp_allowance_near_line(&ep->allow) && ep->next_probe_mono > now + cfg.recover_interval) {
        ep->next_probe_mono = now + jitter(cfg.recover_interval);
    }
    sp_deferred full = {0};
    if (view != VIEW_TODAY) {
        /* Near the line: the probe is one of the allowance's connections. */
        if (view == VIEW_WAIT) {
            ep->next_probe_mono = now + cfg.interval;  /* or as soon as one is lent */
        }
        else {
            ep->probe_requested = 0;
        }
        due = view == VIEW_SLOT ? 1 : view == VIEW_OVER ? 2 : 0;
        has_slot = 1;
    }
    if (due && !has_slot) {
        no_slot_for_probe_locked(ep, now, &cfg, &full);
        due = 0;
    }
    /* Host scope, not ready: one probe for the host (the lease holder's). */
    if (due && view == VIEW_TODAY && !sp_host_health_may_probe_locked(ep, cfg.probe_timeout, now)) {
        due = 0;
    }
    if (due && view == VIEW_TODAY) {
        ep->probe_requested = 0;
        if (sp_endpoint_take_probe_slot_locked(ep)) {
            /* the probe's own connection counts */
        }
        else if ((ep->total < ep->max_connections && ep->state == SP_STATE_READY) ||
                 ep->state == SP_STATE_RECOVERING) {
            /* Host scope: no host slot to spare. Ready, traffic proves
             * health; recovering, every host slot is taken by connections
             * made since the server came back, and a probe now would be one
             * over the host budget. */
            no_slot_for_probe_locked(ep, now, &cfg, &full);
            due = 0;
        }
        else {
            due = 2;          /* paused with old connections still out: probe anyway */
        }
    }
    double ep_next = ep->next_probe_mono;
    pthread_mutex_unlock(&ep->lock);
    close_buried(ep, &full);

    if (view == VIEW_LOAN) {
        loan_start(ep, &cfg);  /* the probe follows once it is settled */
        in_flight = flight_of(ep) != NULL;
    }
    if (due) {
        probe_start(ep, due == 1, view == VIEW_OVER, &cfg);  /* the slot goes back when it lands */
        in_flight = flight_of(ep) != NULL;
        pthread_mutex_lock(&ep->lock);
        ep_next = ep->next_probe_mono;
        pthread_mutex_unlock(&ep->lock);
    }
    /* A probe in flight wakes the loop itself (its socket, its deadline). */
    if (!in_flight && ep_next < ts->next_due) {
        ts->next_due = ep_next;
    }
    return 0;
}

static void *
checker_main(void *arg)
{
    (void)arg;
    gate_enter();
    rng_state ^= (uint64_t)getpid() * 0x100000001B3ULL ^ (uint64_t)(sp_now() * 1e9);
    /* Waits on the watch (wake-ups and hangups) where there is one, on
     * ck.cond otherwise; opened before the first look at ck.wake so no
     * wake-up is lost. */
    int watching = sp_watch_open() == 0;
    sp_watch_hit hung[64];
    int n_hung = 0;
    pthread_mutex_lock(&ck.lock);
    while (!ck.stopping) {
        int enabled = ck.cfg.enabled;
        double interval = ck.cfg.interval;
        ck.wake = 0;
        pthread_mutex_unlock(&ck.lock);

        tick_state ts = {sp_now() + (interval < 0.25 ? interval : 0.25), {hung, n_hung}};
        if (enabled) {
            sp_registry_foreach(tick_endpoint, &ts);
        }
        n_hung = 0;

        pthread_mutex_lock(&ck.lock);
        if (!ck.stopping && !ck.wake) {
            double floor = sp_now() + 0.005;  /* never spin */
            double until = ts.next_due > floor ? ts.next_due : floor;
            if (watching || n_flights > 0) {
                pthread_mutex_unlock(&ck.lock);
                /* A hangup is acted on at once, without waiting for the
                 * rest of a burst: the probe it starts is the endpoint's
                 * one in flight, and the hangups that follow are only
                 * counted. Waiting (napping) here would hand the CPU to
                 * the threads a dying server just woke, and the probe's
                 * verdict would wait for the checker to be run again. */
                n_hung = wait_events(until, hung, 64, watching);
                pthread_mutex_lock(&ck.lock);
            }
            else {
                struct timespec when = sp_timespec(until);
                gate_leave();
                pthread_cond_timedwait(&ck.cond, &ck.lock, &when);
                pthread_mutex_unlock(&ck.lock);  /* the gate comes first */
                gate_enter();
                pthread_mutex_lock(&ck.lock);
            }
        }
    }
    pthread_mutex_unlock(&ck.lock);
    flights_abort_all();
    gate_leave();
    return NULL;
}

int
sp_checker_ensure_running(void)
{
    int rc = 0;
    pthread_mutex_lock(&ck.lock);
    if (!cond_ready) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&ck.cond, &attr);
        pthread_condattr_destroy(&attr);
        cond_ready = 1;
    }
    if (!ck.running) {
        ck.stopping = 0;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        rc = pthread_create(&ck.thread, &attr, checker_main, NULL);
        pthread_attr_destroy(&attr);
        ck.running = rc == 0;
    }
    pthread_mutex_unlock(&ck.lock);
    return rc;
}

void
sp_checker_stop(void)
{
    pthread_mutex_lock(&ck.lock);
    if (!ck.running) {
        pthread_mutex_unlock(&ck.lock);
        return;
    }
    ck.stopping = 1;
    pthread_cond_signal(&ck.cond);
    pthread_t thread = ck.thread;
    pthread_mutex_unlock(&ck.lock);
    sp_watch_wake();
    pthread_join(thread, NULL);
    pthread_mutex_lock(&ck.lock);
    ck.running = 0;
    pthread_mutex_unlock(&ck.lock);
}

int
sp_checker_running(void)
{
    pthread_mutex_lock(&ck.lock);
    int running = ck.running;
    pthread_mutex_unlock(&ck.lock);
    return running;
}

void
sp_checker_lock_for_fork(void)
{
#ifdef SP_FORK_GATE
    pthread_mutex_lock(&fork_gate);   /* the thread is asleep: see fork_gate */
#endif
    pthread_mutex_lock(&ck.lock);
}

void
sp_checker_unlock_after_fork(void)
{
    pthread_mutex_unlock(&ck.lock);
#ifdef SP_FORK_GATE
    pthread_mutex_unlock(&fork_gate);
#endif
}

void
sp_checker_after_fork_child(void)
{
    sp_watch_after_fork_child();
    /* The thread did not survive fork(); the next pool use starts another. */
#ifdef SP_FORK_GATE
    pthread_mutex_init(&fork_gate, NULL);
#endif
    pthread_mutex_init(&ck.lock, NULL);
    if (cond_ready) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&ck.cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    ck.running = 0;
    ck.stopping = 0;
    ck.wake = 0;
    /* The parent's probes in flight: their sockets are copies here, closed
     * already (sp_net_after_fork_child()), their slots were zeroed with the
     * counts; drop them with their references. A loan's socket is the
     * connection's. */
    for (int i = 0; i < n_flights; i++) {
        sp_registry_unbind(flights[i]->ep);
        free(flights[i]);
    }
    free(flights);
    flights = NULL;
    n_flights = cap_flights = 0;
}
