/* pool_type.c -- PoolCore: get_connection()/release() of SafeConnectionPool, in C with the GIL held. */
#include "module_state.h"

#include <string.h>
#include <unistd.h>

#include "auth_gate.h"
#include "checker.h"
#include "clock.h"
#include "forksafe.h"
#include "probe.h"
#include "registry.h"

#include "conn_ready.h"
#include "dispose.h"
#include "fd_cache.h"
#include "formers.h"
#include "pool_async.h"
#include "pool_errors.h"
#include "reclaim.h"

/* Rules for this file: endpoint calls never run Python code and never wait
 * for the GIL; Python code (make_connection, connect, disconnect, DECREF)
 * runs only here, with no endpoint lock held. Blocking waits release the
 * GIL; the main thread wakes every SIGNAL_SLICE to run signal handlers. */

#define SIGNAL_SLICE 0.02
#define OTHER_SLICE 3600.0

/* ---- helpers ----------------------------------------------------------------- */

/* Waits in the queue; returns the wait result, or -1 with an exception
 * (a signal handler raised: the waiter has left and given back its due). */
static int
wait_in_queue(PoolCore *self, sp_endpoint *ep, sp_waiter *w, double deadline)
{
    int is_main = PyThread_get_thread_ident() == sp_py_main_thread_ident;
    double slice = is_main ? SIGNAL_SLICE : OTHER_SLICE;
    for (;;) {
        sp_wait_result r;
        Py_BEGIN_ALLOW_THREADS
        r = sp_endpoint_wait(ep, w, deadline, slice);
        Py_END_ALLOW_THREADS
        if (r != SP_WAIT_PENDING) {
            /* With the GIL back: a pause's relay wakes the next waiter now. */
            sp_endpoint_wait_done(ep, w);
            return (int)r;
        }
        if (PyErr_CheckSignals() < 0) {
            sp_deferred after = {0};
            sp_endpoint_cancel(ep, w, &after);
            sp_py_finish_deferred(self->st, &after);
            return -1;
        }
    }
}

/* Makes a checked-out idle connection ready to send: connected, nothing
 * unread. Returns 0, or -1 with an exception (the connection is dropped). */
static int
make_ready(PoolCore *self, sp_conn *rec)
{
    if (sp_py_conn_ready(self, rec->payload, rec->fd)) {
        return 0;
    }
    sp_endpoint *ep = rec->ep;
    if (sp_endpoint_is_paused(ep)) {
        /* Paused since it was handed over: no connection attempt. */
        sp_py_pool_bury_record(self, rec);
        sp_py_pool_raise_unavailable_on(self, ep);
        return -1;
    }
    /* Reconnected in its own slot, without first asking with a connect of
     * our own whether the server is gone: the server would count that
     * socket until it saw it close, next to the new one, one over the
     * budget. A refusal here says the same and pauses the endpoint. */
    PyObject *conn = rec->payload;
    PyObject *r = PyObject_CallMethodNoArgs(conn, self->st->str_disconnect);
    if (r != NULL) {
        Py_DECREF(r);
        r = PyObject_CallMethodNoArgs(conn, self->st->str_connect);
    }
    int fd = r != NULL ? sp_py_conn_fd(self, conn) : -2;
    Py_XDECREF(r);
    if (fd < 0) {
        if (!PyErr_Occurred()) {
            PyErr_Format(self->st->SafePoolError,
                         "connection to %s has no socket after connect()", sp_endpoint_label(ep));
        }
        sp_py_pool_report_pending_error(self, ep, rec->flavor);
        sp_py_pool_bury_record(self, rec);
        if (sp_endpoint_is_paused(ep)) {
            /* The idle socket died because the server did. */
            PyErr_Clear();
            sp_py_pool_raise_unavailable_on(self, ep);
        }
        return -1;
    }
    sp_endpoint_set_fd(ep, rec, sp_py_conn_registered_fd(self, fd));
    sp_auth_accepted(ep, rec->flavor);  /* its handshake passed */
    return 0;
}

/* Turns a slot into a connection. Returns a new reference, or NULL with an
 * exception (the slot is given back). */
static PyObject *
fill_slot(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    sp_deferred after = {0};
    if (sp_endpoint_is_paused(ep)) {
        /* Paused since the slot was handed over: no connection attempts now. */
        sp_endpoint_cancel_slot(ep, &after);
        sp_py_finish_deferred(self->st, &after);
        return sp_py_pool_raise_unavailable_on(self, ep);
    }
    PyObject *conn = PyObject_CallMethodNoArgs((PyObject *)self, self->st->str_make_connection);
    if (conn != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(conn, self->st->str_connect);
        if (r == NULL) {
            sp_py_pool_report_pending_error(self, ep, flavor);
            Py_CLEAR(conn);
        }
        Py_XDECREF(r);
    }
    int fd = conn ? sp_py_conn_fd(self, conn) : -2;
    sp_conn *rec = conn && fd > -2 ? PyMem_RawMalloc(sizeof(sp_conn)) : NULL;
    if (conn && fd > -2 && rec == NULL) {
        PyErr_NoMemory();
    }
    if (rec == NULL) {
        Py_XDECREF(conn);
        sp_endpoint_slot_failed(ep, &after);
        sp_py_finish_deferred(self->st, &after);
        return NULL;
    }
    if (sp_endpoint_add(ep, rec, conn, self, flavor,
                        fd < 0 ? fd : sp_py_conn_registered_fd(self, fd)) < 0) {
        PyMem_RawFree(rec);
        Py_DECREF(conn);
        sp_endpoint_slot_failed(ep, &after);
        sp_py_finish_deferred(self->st, &after);
        return PyErr_NoMemory();
    }
    sp_auth_accepted(ep, flavor);  /* its handshake passed */
    /* The record owns one reference, the caller gets another. */
    Py_INCREF(conn);
    sp_py_pool_hold_weakly(self, rec);
    return conn;
}

/* ---- methods ------------------------------------------------------------------ */

/* One checkout from `ep` with `flavor`: the binding the call started with.
 * A reset() in another thread may rebind the pool meanwhile (self->ep,
 * self->flavor change); the endpoint stays alive and this pool's records
 * there stay valid while the call runs (see former endpoints below). */
static PyObject *
checkout_from(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    double start = sp_now();
    if (sp_py_pool_auth_blocked(self, ep, flavor)) {
        return NULL;
    }
    double deadline = self->timeout < 0 ? -1.0 : (self->timeout == 0 ? 0.0 : start + self->timeout);
    sp_deferred after = {0};
    sp_waiter w;
    memset(&w, 0, sizeof(w));
    w.notify_fd = -1;
    sp_conn *rec = NULL;
    sp_acquire_status st = sp_endpoint_acquire(ep, self, flavor, deadline, &w, &rec, &after);
    sp_py_finish_deferred(self->st, &after);
    int got;
    switch (st) {
    case SP_ACQ_CONN:
        got = SP_WAIT_CONN;
        break;
    case SP_ACQ_SLOT:
        got = SP_WAIT_SLOT;
        break;
    case SP_ACQ_TIMEOUT:
        got = SP_WAIT_TIMEOUT;
        break;
    case SP_ACQ_PAUSED:
        got = SP_WAIT_PAUSED;
        break;
    default:
        got = wait_in_queue(self, ep, &w, deadline);
        rec = w.conn;
        break;
    }
    PyObject *conn = NULL;
    int created = 0;
    double filled_at = 0;
    switch (got) {
    case -1:
        return NULL;
    case SP_WAIT_CONN:
        if (make_ready(self, rec) < 0) {
            return NULL;
        }
        conn = rec->payload;
        Py_INCREF(conn);
        sp_py_pool_hold_weakly(self, rec);
        break;
    case SP_WAIT_SLOT:
        filled_at = self->metrics_hook ? sp_now() : 0;
        conn = fill_slot(self, ep, flavor);
        if (conn == NULL) {
            return NULL;
        }
        created = 1;
        break;
    case SP_WAIT_TIMEOUT:
        return sp_py_pool_raise_timeout_on(self, ep, sp_now() - start);
    case SP_WAIT_PAUSED:
        return sp_py_pool_raise_unavailable_on(self, ep);
    default:
        return sp_py_pool_raise_closed(self);
    }
    self->in_use++;
    if (self->metrics_hook != NULL) {
        double now = sp_now();
        sp_py_pool_tell_metrics(self, created, now - start, created ? now - filled_at : 0.0);
    }
    return conn;
}

static PyObject *
pool_get_connection(PoolCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* Arguments (command name, keys, options) are accepted and ignored,
     * as redis-py's own pools do since 5.3. */
    if (self->ep == NULL) {
        return sp_py_pool_raise_closed(self);
    }
    if (sp_py_pool_check_fork(self) < 0) {
        return NULL;
    }
    if (self->closed) {
        return sp_py_pool_raise_closed(self);
    }
    self->calls_in_flight++;
    PyObject *conn = checkout_from(self, self->ep, self->flavor);
    self->calls_in_flight--;
    return conn;
}

/* Release with the socket's fd known (-1: not connected). */
static PyObject *
release_with_fd(PoolCore *self, PyObject *conn, int fd)
{
    sp_modstate *st = self->st;
    sp_py_pool_scrub_handled_exception(self);
    PyObject *cls;
    sp_deferred after = {0};
    sp_endpoint *ep = self->ep;
    sp_conn *rec = sp_py_pool_hold_strongly(self, conn);
    int shut_by_pool = rec != NULL && rec->shut_by_pool;
    if (shut_by_pool) {
        /* Its socket was shut down under another thread's disconnect():
         * closed here, by its holder; its errors were ours, not the
         * server's. */
        rec->shut_by_pool = 0;
        PyObject *r = PyObject_CallMethodNoArgs(conn, st->str_disconnect);
        if (r == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(r);
        fd = -1;
    }
    sp_release_status rs = sp_endpoint_release(ep, self, conn, fd, !self->closed, &after);
    for (int i = 0; rs == SP_REL_UNKNOWN && i < self->n_formers; i++) {
        /* Checked out before a reset() moved the pool to another endpoint:
         * closed, not pooled (the pool no longer draws from there). */
        ep = self->formers[i];
        rs = sp_endpoint_release(ep, self, conn, fd, 0, &after);
    }
    sp_py_finish_deferred(st, &after);
    switch (rs) {
    case SP_REL_OK:
        self->in_use--;
        if (fd == -1 && !shut_by_pool) {
            /* It came back disconnected: usually a command hit an error. */
            sp_checker_report(ep, SP_FAIL_OTHER, NULL);
        }
        if (ep != self->ep) {
            sp_py_pool_prune_formers(self);
        }
        sp_py_pool_tell_metrics(self, 2, 0.0, 0.0);
        Py_RETURN_NONE;
    case SP_REL_DOUBLE:
        cls = sp_py_pool_error_class(self, "DoubleReleaseError", st->DoubleReleaseError);
        PyErr_Format(cls, "connection %R was released twice to the pool for %s",
                     conn, sp_endpoint_label(self->ep));
        Py_DECREF(cls);
        return NULL;
    case SP_REL_FOREIGN:
        cls = sp_py_pool_error_class(self, "ForeignConnectionError", st->ForeignConnectionError);
        PyErr_Format(cls, "connection %R was checked out from another pool for %s; release it there",
                     conn, sp_endpoint_label(self->ep));
        Py_DECREF(cls);
        return NULL;
    default:
        break;
    }
    /* Unknown: made before a fork (silently dropped, as documented) or foreign. */
    PyObject *pid = PyObject_GetAttr(conn, st->str_pid);
    if (pid == NULL) {
        PyErr_Clear();
    }
    else {
        long conn_pid = PyLong_AsLong(pid);
        Py_DECREF(pid);
        if (conn_pid == -1 && PyErr_Occurred()) {
            PyErr_Clear();
        }
        else if (conn_pid != (long)getpid()) {
            Py_RETURN_NONE;
        }
    }
    cls = sp_py_pool_error_class(self, "ForeignConnectionError", st->ForeignConnectionError);
    PyErr_Format(cls, "connection %R was not handed out by this pool for %s", conn, sp_endpoint_label(self->ep));
    Py_DECREF(cls);
    return NULL;
}

static PyObject *
pool_release(PoolCore *self, PyObject *conn)
{
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    if (sp_py_pool_check_fork(self) < 0) {
        return NULL;
    }
    sp_modstate *st = self->st;
    if (self->check_reconnect) {
        /* Only RESP3 maintenance notifications set it (see pool.py). */
        PyObject *r = PyObject_CallMethodNoArgs(conn, st->str_should_reconnect);
        int again = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        if (again < 0) {
            PyErr_Clear();
        }
        else if (again) {
            r = PyObject_CallMethodNoArgs(conn, st->str_disconnect);
            if (r == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(r);
        }
    }
    if (sp_py_conn_release_needs_event(self, conn) && sp_endpoint_find_inuse(self->ep, conn, self)) {
        /* redis-py's release event, while the connection is still ours: its
         * re-authentication listener sends AUTH on it, and nobody else may
         * use it meanwhile. A listener that fails leaves it in an unknown
         * state: it goes back disconnected and the error propagates. */
        PyObject *r = PyObject_CallFunctionObjArgs(self->release_hook, (PyObject *)self, conn,
                                                   NULL);
        if (r == NULL) {
            PyObject *ev = sp_err_take();
            PyObject *d = PyObject_CallMethodNoArgs(conn, st->str_disconnect);
            Py_XDECREF(d);
            PyErr_Clear();
            PyObject *done = release_with_fd(self, conn, -1);
            Py_XDECREF(done);
            PyErr_Clear();
            sp_err_give(ev);
            return NULL;
        }
        Py_DECREF(r);
    }
    int fd = sp_py_pool_socket_fd(self, conn);
    if (fd == -2) {
        return NULL;
    }
    return release_with_fd(self, conn, sp_py_conn_registered_fd(self, fd));
}

PyObject *
sp_py_pool_release_fd(PoolCore *self, PyObject *args)
{
    PyObject *conn;
    int fd;
    if (!PyArg_ParseTuple(args, "Oi:_release_fd", &conn, &fd)) {
        return NULL;
    }
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    if (sp_py_pool_check_fork(self) < 0) {
        return NULL;
    }
    if (fd < SP_FD_UNPOLLABLE) {
        fd = -1;
    }
    return release_with_fd(self, conn, fd);
}

/* The pool is going away: its books on every endpoint it drew from go. */
static void
unbind(PoolCore *self)
{
    for (int i = 0; i < self->n_formers; i++) {
        sp_deferred after = {0};
        sp_endpoint_fail_pool_waiters(self->formers[i], self, &after);
        sp_endpoint_bury_pool_records(self->formers[i], self, &after);
        sp_py_finish_deferred(self->st, &after);
        sp_registry_unbind(self->formers[i]);
    }
    PyMem_RawFree(self->formers);
    self->formers = NULL;
    self->n_formers = 0;
    if (self->ep == NULL) {
        return;
    }
    sp_deferred after = {0};
    sp_endpoint_fail_pool_waiters(self->ep, self, &after);
    sp_py_pool_free_async_waiters(self);
    sp_endpoint_bury_pool_records(self->ep, self, &after);
    if (self->flavor_counted) {
        sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        self->flavor_counted = 0;
    }
    sp_py_pool_drop_loop_flavors(self, &after);
    sp_py_finish_deferred(self->st, &after);
    sp_registry_unbind(self->ep);
    self->ep = NULL;
    self->in_use = 0;
}

/* Same endpoint, maybe new settings: count the pool under `flavor` now. */
static void
rebind_flavor(PoolCore *self, uint32_t flavor)
{
    sp_deferred after = {0};
    /* asyncio: the Python side forgets its per-loop flavors on reset(). */
    sp_py_pool_drop_loop_flavors(self, &after);
    if (!self->flavor_counted || self->flavor != flavor) {
        sp_endpoint_pool_added(self->ep, flavor);
        if (self->flavor_counted) {
            sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        }
        self->flavor = flavor;
        self->flavor_counted = 1;
    }
    self->closed = 0;
    sp_py_finish_deferred(self->st, &after);
}

/* (budget in force, created, scope, note): `note` says why a pool that
 * asked for host scope stays in process scope (None otherwise). */
static PyObject *
bind_result(sp_endpoint *ep, int created, PyObject *note)
{
    sp_stats s;
    sp_endpoint_stats(ep, &s);
    return Py_BuildValue("(iOsO)", s.host_scope ? s.host.max_connections : s.max_connections,
                         created ? Py_True : Py_False, s.host_scope ? "host" : "process", note);
}

static PyObject *
pool_bind(PoolCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "max_connections", "flavor", "host", "port",
                             "unix_path", "username", "password", "tls", "shm_name", NULL};
    const char *key, *host = NULL, *unix_path = NULL, *username = NULL, *password = NULL;
    const char *shm_name = NULL;
    int max_connections, port = -1, tls = 0;
    unsigned int flavor;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "siI|zizzzpz:_bind", kwlist, &key,
                                     &max_connections, &flavor, &host, &port, &unix_path,
                                     &username, &password, &tls, &shm_name)) {
        return NULL;
    }
    if (max_connections < 1) {
        PyErr_SetString(PyExc_ValueError, "max_connections must be at least 1");
        return NULL;
    }
    if (flavor == 0) {
        PyErr_SetString(PyExc_ValueError, "flavor ids start at 1");
        return NULL;
    }
    if (self->ep != NULL && strcmp(sp_endpoint_key(self->ep), key) == 0 && self->flavor == flavor) {
        /* reset() with the same settings: nothing to move; connections out
         * stay valid and come back through release(). (New settings take
         * the general path below: the endpoint may be made anew with them,
         * e.g. the probe's credentials, when nothing holds the old one.) */
        rebind_flavor(self, flavor);
        return bind_result(self->ep, 0, Py_None);
    }
    if (self->ep != NULL && sp_py_pool_retire_binding(self) < 0) {
        return PyErr_NoMemory();
    }
    sp_py_pool_prune_formers(self);
    sp_address addr = {host, port, unix_path, username, password, tls};
    int created = 0;
    sp_endpoint *ep = sp_registry_bind(key, key, max_connections, &addr, &created);
    if (ep == NULL) {
        return PyErr_NoMemory();
    }
    self->ep = ep;
    self->flavor = flavor;
    PyObject *note = Py_None;
    Py_INCREF(note);
    if (created) {
        /* The probe speaks with this pool's credentials. */
        sp_endpoint_set_probe_flavor(ep, flavor);
        if (shm_name != NULL) {
            Py_DECREF(note);
            note = sp_py_use_host_budget(ep, shm_name, max_connections);
            if (note == NULL) {
                sp_registry_unbind(ep);
                self->ep = NULL;
                return NULL;
            }
        }
    }
    sp_endpoint_pool_added(ep, flavor);
    self->flavor_counted = 1;
    self->closed = 0;
    self->fork_epoch = sp_fork_epoch();
    if (sp_checker_ensure_running() != 0) {
        Py_DECREF(note);
        PyErr_SetString(self->st->SafePoolError, "cannot start the health-checker thread");
        return NULL;
    }
    PyObject *result = bind_result(ep, created, note);
    Py_DECREF(note);
    return result;
}

static PyObject *
pool_unbind(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    unbind(self);
    Py_RETURN_NONE;
}

static PyObject *
pool_close_core(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ep == NULL || self->closed) {
        self->closed = 1;
        Py_RETURN_NONE;
    }
    self->closed = 1;
    sp_deferred after = {0};
    sp_endpoint_fail_pool_waiters(self->ep, self, &after);
    for (int i = 0; i < self->n_formers; i++) {
        sp_endpoint_fail_pool_waiters(self->formers[i], self, &after);
    }
    if (self->flavor_counted) {
        sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        self->flavor_counted = 0;
    }
    sp_py_pool_drop_loop_flavors(self, &after);
    sp_py_finish_deferred(self->st, &after);
    Py_RETURN_NONE;
}

static PyObject *
pool_bury_idle(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ep != NULL) {
        sp_deferred after = {0};
        sp_endpoint_bury_idle_of(self->ep, self->flavor, &after);
        for (int i = 0; i < self->n_loop_flavors; i++) {
            sp_endpoint_bury_idle_of(self->ep, self->loop_flavors[i], &after);
        }
        sp_py_finish_deferred(self->st, &after);
    }
    Py_RETURN_NONE;
}

/* Its own flavor, or one of the per-loop flavors of an asyncio pool. */
static int
has_flavor(PoolCore *self, uint32_t flavor)
{
    return flavor == self->flavor || sp_py_pool_uses_flavor(self, flavor);
}

/* Which of a pool's records a walk gathers. */
typedef enum {
    COLLECT_IDLE,            /* idle, of the pool's flavors */
    COLLECT_IN_USE,          /* out from the pool */
    COLLECT_HERE,            /* out from the pool to the calling thread */
    COLLECT_ELSEWHERE        /* out to other threads: marked shut_by_pool */
} collect_what;

/* Payloads of one pool's records that a walk gathers, into a growing array. */
typedef struct {
    PoolCore *pool;
    collect_what what;
    unsigned long thread;    /* the calling thread (COLLECT_HERE, _ELSEWHERE) */
    PyObject **found;
    size_t n, cap;           /* n > cap: the array was too small, walk again */
} gather;

static int
gathered(const gather *g, sp_conn *rec)
{
    if (g->what == COLLECT_IDLE) {
        return rec->state == SP_CONN_IDLE && has_flavor(g->pool, rec->flavor);
    }
    if (rec->state != SP_CONN_INUSE || rec->owner != g->pool) {
        return 0;
    }
    if (g->what == COLLECT_IN_USE) {
        return 1;
    }
    if (g->what == COLLECT_HERE) {
        return rec->holder_thread == g->thread;
    }
    if (rec->holder_thread == g->thread) {
        return 0;
    }
    rec->shut_by_pool = 1;
    return 1;
}

static int
gather_collected(sp_conn *rec, void *ctx)
{
    gather *g = ctx;
    if (gathered(g, rec)) {
        if (g->n < g->cap) {
            g->found[g->n] = rec->payload;
        }
        g->n++;
    }
    return 0;
}

/* Appends to `list` the connections of this pool on `ep` that `what`
 * says. 0, or -1 with an exception. */
static int
collect_on(PoolCore *self, sp_endpoint *ep, collect_what what, PyObject *list)
{
    PyObject *stack[64];
    gather g = {self, what, PyThread_get_thread_ident(), stack, 0, 64};
    sp_endpoint_walk(ep, gather_collected, &g);
    while (g.n > g.cap) {
        if (g.found != stack) {
            PyMem_RawFree(g.found);
        }
        g.cap = g.n * 2;
        g.n = 0;
        g.found = PyMem_RawMalloc(sizeof(PyObject *) * g.cap);
        if (g.found == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        sp_endpoint_walk(ep, gather_collected, &g);
    }
    /* Still alive: records keep a reference (callers, those of checkouts
     * held weakly; one that drops it has its record removed at once), and
     * we hold the GIL throughout. */
    int rc = 0;
    for (size_t i = 0; i < g.n && rc == 0; i++) {
        rc = PyList_Append(list, g.found[i]);
    }
    if (g.found != stack) {
        PyMem_RawFree(g.found);
    }
    return rc;
}

/* Connections of this pool: in use (also those out from former endpoints)
 * or idle of its flavor, as `what` says. */
static PyObject *
collect(PoolCore *self, collect_what what)
{
    PyObject *list = PyList_New(0);
    if (list == NULL || self->ep == NULL) {
        return list;
    }
    if (collect_on(self, self->ep, what, list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    for (int i = 0; what != COLLECT_IDLE && i < self->n_formers; i++) {
        if (self->formers[i] != self->ep && collect_on(self, self->formers[i], what, list) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

static PyObject *
pool_in_use_list(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return collect(self, COLLECT_IN_USE);
}

/* disconnect(): the calling thread's checkouts, which it may close itself,
 * and the other threads', which their holders close when they come back
 * (the caller only shuts their sockets down: closing a socket another
 * thread is using could hand that thread someone else's fd, or orphan the
 * one it reconnects meanwhile). */
static PyObject *
pool_in_use_split(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *here = collect(self, COLLECT_HERE);
    PyObject *elsewhere = here ? collect(self, COLLECT_ELSEWHERE) : NULL;
    PyObject *pair = elsewhere ? PyTuple_Pack(2, here, elsewhere) : NULL;
    Py_XDECREF(here);
    Py_XDECREF(elsewhere);
    return pair;
}

static PyObject *
pool_idle_list(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return collect(self, COLLECT_IDLE);
}

/* Checked out by this pool, or idle of one of its flavors. */
static int
owned_by(sp_conn *rec, void *pool)
{
    PoolCore *self = pool;
    return rec->owner == self || (rec->state == SP_CONN_IDLE && has_flavor(self, rec->flavor));
}

static PyObject *
pool_owns(PoolCore *self, PyObject *conn)
{
    int owns = 0;
    if (self->ep != NULL) {
        owns = sp_endpoint_visit(self->ep, conn, owned_by, self);
    }
    for (int i = 0; !owns && i < self->n_formers; i++) {
        owns = sp_endpoint_find_inuse(self->formers[i], conn, self) != NULL;
    }
    return PyBool_FromLong(owns);
}

static PyObject *
pool_stats(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ep == NULL) {
        return PyDict_New();
    }
    PyObject *d = sp_py_stats_dict(self->ep);
    if (d == NULL) {
        return NULL;
    }
    PyObject *v = PyLong_FromSsize_t(self->in_use);
    if (v == NULL || PyDict_SetItemString(d, "pool_in_use", v) < 0) {
        Py_XDECREF(v);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(v);
    return d;
}

static PyObject *
pool_report(PoolCore *self, PyObject *args)
{
    int kind;
    const char *message;
    if (!PyArg_ParseTuple(args, "is:_report", &kind, &message)) {
        return NULL;
    }
    if (kind < SP_FAIL_REFUSED || kind > SP_FAIL_OTHER) {
        PyErr_SetString(PyExc_ValueError, "unknown failure kind");
        return NULL;
    }
    if (self->ep != NULL) {
        sp_checker_report(self->ep, (sp_failure)kind, message);
    }
    Py_RETURN_NONE;
}

static PyObject *
pool_set_limits(PoolCore *self, PyObject *args)
{
    double max_idle_time, max_lifetime;
    if (!PyArg_ParseTuple(args, "dd:_set_idle_limits", &max_idle_time, &max_lifetime)) {
        return NULL;
    }
    if (self->ep != NULL) {
        sp_endpoint_set_idle_limits(self->ep, max_idle_time, max_lifetime);
    }
    Py_RETURN_NONE;
}

static PyObject *
get_timeout(PoolCore *self, void *closure)
{
    if (self->timeout < 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(self->timeout);
}

static int
set_timeout(PoolCore *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        self->timeout = -1;
        return 0;
    }
    if (PyBool_Check(value) || !(PyLong_Check(value) || PyFloat_Check(value))) {
        PyObject *name = sp_type_name(Py_TYPE(value));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, not %.100U",
                         name);
            Py_DECREF(name);
        }
        return -1;
    }
    double t = PyFloat_AsDouble(value);
    if (t == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(t >= 0) || t > 1e9) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be >= 0 seconds (or None to wait forever), got %R", value);
        return -1;
    }
    self->timeout = t;
    return 0;
}

static PyObject *
get_closed(PoolCore *self, void *closure)
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
get_check_reconnect(PoolCore *self, void *closure)
{
    return PyBool_FromLong(self->check_reconnect);
}

static int
set_check_reconnect(PoolCore *self, PyObject *value, void *closure)
{
    int v = value ? PyObject_IsTrue(value) : 0;
    if (v < 0) {
        return -1;
    }
    self->check_reconnect = v;
    return 0;
}

static PyObject *
get_label(PoolCore *self, void *closure)
{
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(sp_endpoint_label(self->ep));
}

static PyObject *
get_in_use_count(PoolCore *self, void *closure)
{
    return PyLong_FromSsize_t(self->in_use);
}

static PyObject *
pool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PoolCore *self = (PoolCore *)SP_TYPE_ALLOC(type)(type, 0);
    if (self == NULL) {
        return NULL;
    }
    PyObject *module = sp_type_module_by_def(type, &sp_py_core_module);
    if (module == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->st = PyModule_GetState(module);
    self->timeout = SP_DEFAULT_TIMEOUT_S;
    self->fork_epoch = sp_fork_epoch();
    return (PyObject *)self;
}

/* Payloads the pool owns on `ep`, up to `cap`, into `found`: connections it
 * has checked out, and idle connections of a flavor only it uses. Returns
 * how many there are (more than `cap`: call again with more room). */
typedef struct {
    PoolCore *pool;
    int sole;                /* the pool is its flavor's only user */
    PyObject **found;
    size_t n, cap;
} owned;

static int
gather_owned(sp_conn *rec, void *ctx)
{
    owned *o = ctx;
    /* A checkout held weakly is the caller's, not the pool's. */
    if ((rec->state == SP_CONN_INUSE && rec->owner == o->pool && rec->weakref == NULL) ||
        (o->sole && rec->state == SP_CONN_IDLE && rec->flavor == o->pool->flavor)) {
        if (o->n < o->cap) {
            o->found[o->n] = rec->payload;
        }
        o->n++;
    }
    return 0;
}

static size_t
owned_payloads(PoolCore *self, sp_endpoint *ep, int own_flavor, PyObject **found, size_t cap)
{
    /* flavor counts change only with the GIL, which the GC holds */
    int sole = own_flavor && sp_endpoint_flavor_pools(ep, self->flavor) == 1;
    owned o = {self, sole, found, 0, cap};
    sp_endpoint_walk(ep, gather_owned, &o);
    return o.n;
}

static int
traverse_on(PoolCore *self, sp_endpoint *ep, int own_flavor, visitproc visit, void *arg)
{
    PyObject *stack[64];
    PyObject **found = stack;
    size_t cap = 64;
    size_t n = owned_payloads(self, ep, own_flavor, found, cap);
    while (n > cap) {
        /* Only a checker hand-over to a waiter of this pool adds to the set
         * without the GIL; retry with room to spare. */
        if (found != stack) {
            PyMem_RawFree(found);
        }
        cap = n + 16;
        found = PyMem_RawMalloc(sizeof(PyObject *) * cap);
        if (found == NULL) {
            return 0;  /* out of memory: report nothing rather than half */
        }
        n = owned_payloads(self, ep, own_flavor, found, cap);
    }
    int rc = 0;
    /* Still alive: records keep a reference and we hold the GIL. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = visit(found[i], arg);
    }
    if (found != stack) {
        PyMem_RawFree(found);
    }
    return rc;
}

/* What the pool owns through its records is reported to the GC: the
 * connections it has out and the idle connections of a flavor only it uses.
 * redis-py connections refer back to their pool (the maintenance-
 * notifications handler), so without this the cycle pool -> (C record) ->
 * connection -> pool would never be collected, and a checkout nobody can
 * release any more would pin its slot for the life of the process. */
static int
pool_traverse(PoolCore *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    int visited = sp_py_pool_visit_hooks(self, visit, arg);
    if (visited != 0) {
        return visited;
    }
    Py_VISIT(self->reclaim_cb);
    if (self->ep != NULL) {
        int rc = traverse_on(self, self->ep, self->flavor_counted, visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    for (int i = 0; i < self->n_formers; i++) {
        if (self->formers[i] == self->ep) {
            continue;  /* moved back to it: visited above, and only once */
        }
        int rc = traverse_on(self, self->formers[i], 0, visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Breaks the cycles the GC found through this pool: drops the Python objects
 * it refers to directly. What its records own (connections checked out or
 * idle) stays with the core's books until dealloc unbinds the pool, which
 * closes them and gives their slots back: a cleared pool is still one. */
static int
pool_clear(PoolCore *self)
{
    sp_py_pool_clear_hooks(self);
    Py_CLEAR(self->reclaim_cb);
    return 0;
}

static void
pool_dealloc(PoolCore *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyObject *ev = sp_err_take();
    unbind(self);
    sp_py_pool_clear_fd_cache(self);
    sp_py_pool_clear_hooks(self);
    Py_CLEAR(self->reclaim_cb);
    sp_err_give(ev);
    SP_TYPE_FREE(tp)((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
pool_raise_unavailable_m(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return self->ep ? sp_py_pool_raise_unavailable(self) : sp_py_pool_raise_closed(self);
}

static PyObject *
pool_raise_closed_m(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return sp_py_pool_raise_closed(self);
}

/* An idle connection to health-check (TLS endpoints, see _tls_probe.py),
 * checked out like any other; None when none is free to take. */
static PyObject *
pool_take_idle(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ep == NULL || self->closed) {
        Py_RETURN_NONE;
    }
    if (sp_py_pool_check_fork(self) < 0) {
        return NULL;
    }
    sp_conn *rec = sp_endpoint_take_idle(self->ep, self, self->flavor);
    if (rec == NULL) {
        Py_RETURN_NONE;
    }
    self->in_use++;
    return Py_NewRef(rec->payload);
}

/* Tells the endpoint what an exception says about the server. */
static PyObject *
pool_report_exception_m(PoolCore *self, PyObject *exc)
{
    sp_py_pool_report_exception(self, exc);
    Py_RETURN_NONE;
}

static PyMethodDef pool_methods[] = {
    {"_raise_unavailable", (PyCFunction)pool_raise_unavailable_m, METH_NOARGS,
     "_raise_unavailable($self, /)\n--\n\n"
     "Raise ServerUnavailableError describing the endpoint's state."},
    {"_raise_closed", (PyCFunction)pool_raise_closed_m, METH_NOARGS,
     "_raise_closed($self, /)\n--\n\n"
     "Raise PoolClosedError."},
    {"get_connection", (PyCFunction)(void (*)(void))pool_get_connection,
     METH_FASTCALL | METH_KEYWORDS, "get_connection($self, /, *args, **kwargs)\n--\n\n"
     "Check out a connection that is ready to send, waiting up to `timeout` seconds (FIFO, "
     "GIL released, interruptible) for one to come back."},
    {"release", (PyCFunction)pool_release, METH_O, "release($self, connection, /)\n--\n\n"
     "Give a connection back (to the oldest waiter, else the idle stack)."},
    {"_bind", (PyCFunction)(void (*)(void))pool_bind, METH_VARARGS | METH_KEYWORDS,
     "_bind($self, /, key, max_connections, flavor, host=None, port=-1, unix_path=None, "
     "username=None, password=None, tls=False, shm_name=None)\n--\n\n"
     "Attach to the endpoint budget for `key`; returns (max_connections, created)."},
    {"_unbind", (PyCFunction)pool_unbind, METH_NOARGS, "_unbind($self, /)\n--\n\n"
     "Detach from the endpoint."},
    {"_close_core", (PyCFunction)pool_close_core, METH_NOARGS, "_close_core($self, /)\n--\n\n"
     "Refuse new checkouts and fail this pool's waiters."},
    {"_bury_idle", (PyCFunction)pool_bury_idle, METH_NOARGS, "_bury_idle($self, /)\n--\n\n"
     "Close the idle connections of this pool's flavor."},
    {"_in_use_list", (PyCFunction)pool_in_use_list, METH_NOARGS, "_in_use_list($self, /)\n--\n\n"
     "Connections this pool has out."},
    {"_in_use_split", (PyCFunction)pool_in_use_split, METH_NOARGS,
     "_in_use_split($self, /)\n--\n\n"
     "(out to this thread, out to others): the others' are closed by their holders on release."},
    {"_idle_list", (PyCFunction)pool_idle_list, METH_NOARGS, "_idle_list($self, /)\n--\n\n"
     "Idle connections of its flavor."},
    {"_owns", (PyCFunction)pool_owns, METH_O, "_owns($self, connection, /)\n--\n\n"
     "Whether the connection belongs to this pool."},
    {"_report", (PyCFunction)pool_report, METH_VARARGS, "_report($self, kind, message, /)\n--\n\n"
     "Report a failure kind to the checker."},
    {"_timeout_error", (PyCFunction)sp_py_pool_timeout_error, METH_O,
     "_timeout_error($self, waited, /)\n--\n\n"
     "The error of an asyncio wait that ended after `waited` seconds (returned, not raised)."},
    {"_report_exception", (PyCFunction)pool_report_exception_m, METH_O,
     "_report_exception($self, exc, /)\n--\n\n"
     "Tell the endpoint what an exception says about the server."},
    {"_take_idle", (PyCFunction)pool_take_idle, METH_NOARGS, "_take_idle($self, /)\n--\n\n"
     "The oldest idle connection, checked out for a health check, or None."},
    {"_set_idle_limits", (PyCFunction)pool_set_limits, METH_VARARGS,
     "_set_idle_limits($self, max_idle_time, max_lifetime, /)\n--\n\n"
     "Set the endpoint's max_idle_time and max_lifetime (0 = off)."},
    {"stats", (PyCFunction)pool_stats, METH_NOARGS, "stats($self, /)\n--\n\n"
     "Counters of the endpoint and this pool."},
    {"_async_acquire", (PyCFunction)sp_py_pool_async_acquire, METH_VARARGS,
     "_async_acquire($self, inbox, flavor, future, /)\n--\n\n"
     "Join the queue without blocking: ('conn', conn), ('slot', None) or ('wait', None)."},
    {"_use_flavor", (PyCFunction)sp_py_pool_use_flavor, METH_O,
     "_use_flavor($self, flavor, /)\n--\n\n"
     "Count this pool as a user of a per-loop flavor."},
    {"_drop_flavor", (PyCFunction)sp_py_pool_drop_flavor, METH_O,
     "_drop_flavor($self, flavor, /)\n--\n\n"
     "Stop using it; its idle connections close if nobody else does."},
    {"_async_forget_inbox", (PyCFunction)sp_py_pool_async_forget_inbox, METH_O,
     "_async_forget_inbox($self, inbox, /)\n--\n\n"
     "The inbox's loop is gone; give back what its waiters hold."},
    {"_async_cancel", (PyCFunction)sp_py_pool_async_cancel, METH_VARARGS,
     "_async_cancel($self, future, timed_out, /)\n--\n\n"
     "Leave the queue, giving back what was handed; whether the future was queued."},
    {"_hold_weakly", (PyCFunction)sp_py_pool_hold_weakly_method, METH_VARARGS,
     "_hold_weakly($self, conn, on_drop, /)\n--\n\n"
     "An asyncio checkout held by its caller from now on; on_drop() closes its socket if it "
     "is dropped unreleased."},
    {"_add", (PyCFunction)sp_py_pool_add, METH_VARARGS, "_add($self, conn, fd, flavor=0, /)\n--\n\n"
     "A slot became a connection, now in use."},
    {"_slot_failed", (PyCFunction)sp_py_pool_slot_failed, METH_VARARGS,
     "_slot_failed($self, exc, flavor=0, /)\n--\n\n"
     "Give a slot back (and report exc about `flavor`'s connection)."},
    {"_bury", (PyCFunction)sp_py_pool_bury, METH_O, "_bury($self, conn, /)\n--\n\n"
     "Drop a checked-out connection that cannot be made ready."},
    {"_release_fd", (PyCFunction)sp_py_pool_release_fd, METH_VARARGS,
     "_release_fd($self, conn, fd, /)\n--\n\n"
     "Release with the socket fd given (-1: not connected)."},
    {"_set_hooks", (PyCFunction)(void (*)(void))sp_py_pool_set_hooks, METH_VARARGS | METH_KEYWORDS,
     "_set_hooks($self, /, **hooks)\n--\n\n"
     "Set the ones given."},
    {"_set_quiet_listeners", (PyCFunction)sp_py_pool_set_quiet_listeners, METH_O,
     "_set_quiet_listeners($self, listeners, /)\n--\n\n"
     "The release listeners seen doing nothing without a token."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pool_getset[] = {
    {"timeout", (getter)get_timeout, (setter)set_timeout,
     "Seconds get_connection() waits; None waits forever, 0 never waits.", NULL},
    {"_closed", (getter)get_closed, NULL, "Whether close() was called.", NULL},
    {"_check_reconnect", (getter)get_check_reconnect, (setter)set_check_reconnect,
     "Ask connections should_reconnect() on release.", NULL},
    {"endpoint", (getter)get_label, NULL, "The endpoint this pool draws from (no secrets).", NULL},
    {"_pool_in_use", (getter)get_in_use_count, NULL, "Connections this pool has out.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot pool_slots[] = {
    {Py_tp_new, pool_new},
    {Py_tp_dealloc, pool_dealloc},
    {Py_tp_traverse, pool_traverse},
    {Py_tp_clear, pool_clear},
    {Py_tp_methods, pool_methods},
    {Py_tp_getset, pool_getset},
    {Py_tp_doc, "C half of SafeConnectionPool: the per-endpoint budget, checkout and release."},
    {0, NULL},
};

PyType_Spec sp_py_pool_core_spec = {
    .name = "redis_safepool._core.PoolCore",
    .basicsize = sizeof(PoolCore),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pool_slots,
};
