/* pool_type.c -- PoolCore: get_connection()/release() of SafeConnectionPool, in C with the GIL held. */
#include <string.h>
#include <unistd.h>

#include "auth_gate.h"
#include "checker.h"
#include "clock.h"
#include "forksafe.h"
#include "module_state.h"
#include "probe.h"
#include "registry.h"

/* Rules for this file: endpoint calls never run Python code and never wait
 * for the GIL; Python code (make_connection, connect, disconnect, DECREF)
 * runs only here, with no endpoint lock held. Blocking waits release the
 * GIL; the main thread wakes every SIGNAL_SLICE to run signal handlers. */

#define SIGNAL_SLICE 0.02
#define OTHER_SLICE 3600.0

/* ---- disposal --------------------------------------------------------------- */

/* The record's connection as a new reference, or NULL when it was out and
 * nobody holds it any more; the record lets go of its weak reference. */
static PyObject *
take_payload(sp_conn *rec)
{
    PyObject *wr = rec->weakref;
    if (wr == NULL) {
        return rec->payload;  /* the record's own reference, handed over */
    }
    rec->weakref = NULL;
    Py_CLEAR(rec->on_drop);  /* the connection is closed (or gone) with its record */
    PyObject *conn = PyWeakref_GetObject(wr);
    conn = conn == Py_None ? NULL : Py_NewRef(conn);
    Py_DECREF(wr);  /* its callback never runs now */
    return conn;
}

void
sp_finish_after(sp_modstate *st, sp_after *after)
{
    PyObject *et, *ev, *etb;
    int fetched = 0;
    /* Closing a connection frees its slot, which may wake a waiter whose
     * flavor needs another eviction: loop until nothing is left. */
    while (after->n_notify > 0 || after->graveyard != NULL) {
        sp_conn *rec = after->graveyard;
        after->graveyard = NULL;
        if (rec != NULL && !fetched) {
            PyErr_Fetch(&et, &ev, &etb);
            fetched = 1;
        }
        while (rec) {
            sp_conn *next = rec->next;
            PyObject *conn = take_payload(rec);
            if (conn != NULL && !rec->quiet) {
                PyObject *r = st->disposer ? PyObject_CallOneArg(st->disposer, conn)
                                           : PyObject_CallMethodNoArgs(conn, st->str_disconnect);
                if (r == NULL) {
                    PyErr_Clear();  /* closing a dead socket may fail; it is gone either way */
                }
                Py_XDECREF(r);
            }
            if (rec->counted) {
                sp_endpoint_closed(rec->ep, 1, after);
            }
            Py_XDECREF(conn);
            PyMem_RawFree(rec);
            rec = next;
        }
        /* Wake async waiters last: whatever they were handed is free now. */
        sp_after_notify(after);
    }
    if (fetched) {
        PyErr_Restore(et, ev, etb);
    }
}

/* ---- helpers ----------------------------------------------------------------- */

int
sp_pool_check_fork(PoolCore *self)
{
    uint64_t epoch = sp_fork_epoch();
    if (self->fork_epoch != epoch) {
        /* Child after fork: the parent's connections are on the graveyard;
         * this pool starts with nothing out. */
        self->fork_epoch = epoch;
        self->in_use = 0;
        sp_main_thread_ident = PyThread_get_thread_ident();
        if (sp_checker_ensure_running() != 0) {
            PyErr_SetString(self->st->SafePoolError, "cannot start the health-checker thread");
            return -1;
        }
    }
    return 0;
}

/* sp_conn_fd() through the pool's cache of socket objects. */
static int
cached_socket_fd(PoolCore *self, PyObject *conn)
{
    PyObject *sock = sp_conn_socket(self, conn);
    if (sock == NULL) {
        return -2;
    }
    if (sock == Py_None) {
        Py_DECREF(sock);
        return -1;
    }
    size_t slot = ((uintptr_t)sock >> 4) % SP_FD_CACHE;
    if (self->fd_cache[slot].sock == sock) {
        Py_DECREF(sock);
        return self->fd_cache[slot].fd;
    }
    int fd = sp_conn_fd(self, conn);
    if (fd >= 0) {
        Py_XSETREF(self->fd_cache[slot].sock, sock);  /* keeps our reference */
        self->fd_cache[slot].fd = fd;
    }
    else {
        Py_DECREF(sock);
    }
    return fd;
}

static void
clear_fd_cache(PoolCore *self)
{
    for (int i = 0; i < SP_FD_CACHE; i++) {
        Py_CLEAR(self->fd_cache[i].sock);
    }
}

/* The exception class `name` of this pool's client family (see module_state.h). */
PyObject *
sp_pool_error_class(PoolCore *self, const char *name, PyObject *fallback)
{
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyObject *cls = NULL;
    PyObject *family = PyObject_GetAttr((PyObject *)Py_TYPE(self), self->st->str_errors);
    if (family != NULL) {
        cls = PyObject_GetAttrString(family, name);
        Py_DECREF(family);
    }
    if (cls == NULL || !PyExceptionClass_Check(cls)) {
        Py_XDECREF(cls);
        cls = Py_NewRef(fallback);
    }
    PyErr_Clear();
    PyErr_Restore(et, ev, etb);
    return cls;
}

/* Sets the family's exception `name` with `msg`. */
static void
set_family_error(PoolCore *self, const char *name, PyObject *fallback, const char *msg)
{
    PyObject *cls = sp_pool_error_class(self, name, fallback);
    PyErr_SetString(cls, msg);
    Py_DECREF(cls);
}

/* This pool's password (a new reference to a non-empty str), or NULL. */
static PyObject *
pool_password(PoolCore *self)
{
    PyObject *kwargs = PyObject_GetAttrString((PyObject *)self, "connection_kwargs");
    PyObject *pw = NULL;
    if (kwargs == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (PyDict_Check(kwargs)) {
        pw = PyDict_GetItemString(kwargs, "password");  /* borrowed */
    }
    if (pw != NULL && PyUnicode_Check(pw) && PyUnicode_GET_LENGTH(pw) > 0) {
        Py_INCREF(pw);
    }
    else {
        pw = NULL;
    }
    Py_DECREF(kwargs);
    return pw;
}

/* `text` with every copy of `secret` masked (a new reference). */
static PyObject *
mask_secret(PyObject *text, PyObject *secret)
{
    static PyObject *mask;
    if (mask == NULL && (mask = PyUnicode_InternFromString("***")) == NULL) {
        return NULL;
    }
    return PyUnicode_Replace(text, secret, mask, -1);
}

/* str(exc) with this pool's password masked, and the same done to the
 * exception's own str arguments, so the password reaches no caller, log or
 * HTTP body either (a server may echo the AUTH or HELLO it was sent). A new
 * reference, or NULL with no exception set. */
/* The pool's _scrub_in_flight(exc): masks the credentials its connections
 * send, also in the exceptions `exc` was raised from, and whatever a server
 * quoted after an AUTH (a bare PoolCore has no such method). Keeps any
 * exception that is set. */
static void
scrub_exception(PoolCore *self, PyObject *exc)
{
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_scrub_in_flight", "O", exc);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        PyErr_Clear();
    }
    Py_XDECREF(r);
    PyErr_Restore(et, ev, etb);
}

/* A release in the `finally` of a command that failed: redis-py's own
 * errors (a reconnect inside the command) never pass through the pool, so
 * the exception on its way out is scrubbed here. */
static void
scrub_handled_exception(PoolCore *self)
{
    PyObject *et, *ev, *etb;
    PyErr_GetExcInfo(&et, &ev, &etb);
    if (ev != NULL && ev != Py_None && PyErr_GivenExceptionMatches(ev, PyExc_Exception)) {
        scrub_exception(self, ev);
    }
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(etb);
}

static PyObject *
scrubbed_text(PoolCore *self, PyObject *exc)
{
    scrub_exception(self, exc);
    PyObject *text = PyObject_Str(exc);
    if (text == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *pw = pool_password(self);
    if (pw == NULL) {
        return text;
    }
    int found = PyUnicode_Contains(text, pw);
    PyObject *args = found == 1 ? PyObject_GetAttrString(exc, "args") : NULL;
    if (args != NULL && PyTuple_Check(args)) {
        Py_ssize_t n = PyTuple_GET_SIZE(args);
        PyObject *clean = PyTuple_New(n);
        for (Py_ssize_t i = 0; clean != NULL && i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(args, i);
            item = PyUnicode_Check(item) ? mask_secret(item, pw) : Py_NewRef(item);
            if (item == NULL) {
                Py_CLEAR(clean);
                break;
            }
            PyTuple_SET_ITEM(clean, i, item);
        }
        if (clean == NULL || PyObject_SetAttrString(exc, "args", clean) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(clean);
    }
    Py_XDECREF(args);
    if (found == 1) {
        Py_SETREF(text, mask_secret(text, pw));
    }
    if (found < 0 || text == NULL) {
        PyErr_Clear();
    }
    Py_DECREF(pw);
    return text;
}

/* A TLS server at maxclients accepts the TCP connection and closes it
 * before the handshake: the client sees an EOF where a plain server would
 * have sent "max number of clients reached". A server that accepted TCP is
 * not dead: that is overload (as MongoDB's CMAP reads it). */
static int
tls_handshake_eof(const sp_endpoint *ep, const char *msg)
{
    return ep->tls && strstr(msg, "connecting to") != NULL &&
           (strstr(msg, "UNEXPECTED_EOF") != NULL ||
            strstr(msg, "EOF occurred in violation of protocol") != NULL ||
            strstr(msg, "connection has been closed (EOF)") != NULL);
}

/* Tells the endpoint what an exception says about the server. */
static void
report_exception_on(PoolCore *self, sp_endpoint *ep, uint32_t flavor, PyObject *exc)
{
    sp_modstate *st = self->st;
    if (ep == NULL || exc == NULL || !PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        return;  /* KeyboardInterrupt, cancellation: nothing about the server */
    }
    PyObject *text = scrubbed_text(self, exc);  /* first: every path masks the password */
    if (PyErr_GivenExceptionMatches(exc, st->AuthenticationError) &&
        !PyErr_GivenExceptionMatches(exc, st->CredentialsRejectedError)) {
        /* The server rejected this pool's credentials: an endpoint
         * condition for its flavor, not a reason to probe (auth_gate.h). */
        sp_auth_rejected(ep, flavor, sp_now());
        Py_XDECREF(text);
        return;
    }
    sp_failure kind = SP_FAIL_OTHER;
    const char *msg = "";
    if (text != NULL) {
        msg = PyUnicode_AsUTF8(text);
        if (msg == NULL) {
            PyErr_Clear();
            msg = "";
        }
    }
    else {
        PyErr_Clear();
    }
    PyObject *loading = sp_pool_error_class(self, "BusyLoadingError", self->st->BusyLoadingError);
    PyObject *timeout = sp_pool_error_class(self, "ClientTimeoutError", self->st->RedisTimeoutError);
    if (PyErr_GivenExceptionMatches(exc, loading) || strstr(msg, "LOADING")) {
        kind = SP_FAIL_LOADING;
    }
    else if (strstr(msg, "max number of clients") || tls_handshake_eof(ep, msg)) {
        kind = SP_FAIL_MAXCLIENTS;
    }
    else if (strstr(msg, "Connection refused") || strstr(msg, "Error 111 ") ||
             strstr(msg, "No such file or directory")) {
        kind = SP_FAIL_REFUSED;
    }
    else if (PyErr_GivenExceptionMatches(exc, timeout) ||
             PyErr_GivenExceptionMatches(exc, PyExc_TimeoutError)) {
        kind = SP_FAIL_TIMEOUT;
    }
    Py_DECREF(loading);
    Py_DECREF(timeout);
    sp_checker_report(ep, kind, msg);
    Py_XDECREF(text);
}

void
sp_pool_report_exception(PoolCore *self, PyObject *exc)
{
    report_exception_on(self, self->ep, self->flavor, exc);
}

void
sp_pool_report_exception_for(PoolCore *self, uint32_t flavor, PyObject *exc)
{
    report_exception_on(self, self->ep, flavor, exc);
}

/* Same, for the exception being raised now (kept raised), about `ep`. */
static void
report_pending_error(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    PyObject *et, *exc, *etb;
    PyErr_Fetch(&et, &exc, &etb);
    if (et == NULL) {
        return;
    }
    PyErr_NormalizeException(&et, &exc, &etb);
    report_exception_on(self, ep, flavor, exc);
    PyErr_Restore(et, exc, etb);
}

/* Lets the failure hook see the exception just set; keeps it set. */
static PyObject *
tell_failure(PoolCore *self)
{
    PyObject *hook = self->st->failure_hook;
    if (hook == NULL) {
        return NULL;
    }
    /* A burst of identical failures (a paused endpoint failing hundreds of
     * threads at once) is told once per millisecond: each call costs the
     * GIL, and the hook only keeps the latest. */
    double now = sp_now();
    PyObject *type = PyErr_Occurred();
    if (type == self->last_failure_type && now - self->last_failure_at < 0.001) {
        return NULL;
    }
    self->last_failure_type = type;
    self->last_failure_at = now;
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyErr_NormalizeException(&et, &ev, &etb);
    PyObject *r = PyObject_CallFunctionObjArgs(hook, (PyObject *)self, ev, NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable(hook);
    }
    Py_XDECREF(r);
    PyErr_Restore(et, ev, etb);
    return NULL;
}

PyObject *
sp_pool_raise_closed(PoolCore *self)
{
    PyObject *cls = sp_pool_error_class(self, "PoolClosedError", self->st->PoolClosedError);
    PyErr_Format(cls, "connection pool for %s is closed", self->ep ? self->ep->label : "(unbound)");
    Py_DECREF(cls);
    return tell_failure(self);
}

/* ServerUnavailableError for `ep` (the endpoint the failed call drew from). */
static PyObject *
raise_unavailable_on(PoolCore *self, sp_endpoint *ep)
{
    sp_stats s;
    char msg[700];
    char now[40] = "";
    sp_endpoint_stats(ep, &s);
    /* Name the state that refused this call: a probe may have moved the
     * endpoint on (recovering, ready) before this thread got the GIL back. */
    int refusing = s.state == SP_STATE_PAUSED || s.state == SP_STATE_OVERLOADED;
    if (!refusing && s.refused_since > 0) {
        PyOS_snprintf(now, sizeof(now), " (now %s)", sp_state_name(s.state));
        s.state = s.refused_state;
        s.state_since = s.refused_since;
        memcpy(s.state_reason, s.refused_reason, sizeof(s.state_reason));
    }
    double ago = sp_wall() - s.state_since;
    /* PyErr_Format has no %f: format here. */
    PyOS_snprintf(msg, sizeof(msg), "%s %s %s since %.1fs ago: %s%s%s%s; failing fast%s",
                  ep->label, now[0] ? "was" : "is", sp_state_name(s.state), ago,
                  s.state_reason, s.last_error[0] ? " (last error: " : "", s.last_error,
                  s.last_error[0] ? ")" : "", now);
    set_family_error(self, "ServerUnavailableError", self->st->ServerUnavailableError, msg);
    return tell_failure(self);
}

/* The server rejected this pool's credentials lately: fail fast. */
static PyObject *
raise_credentials_rejected(PoolCore *self, sp_endpoint *ep, double retry_in)
{
    char msg[400];
    PyOS_snprintf(msg, sizeof(msg),
                  "%s rejected this pool's credentials (authentication failed); failing fast, "
                  "next connection attempt in %.1fs",
                  ep->label, retry_in);
    PyErr_SetString(self->st->CredentialsRejectedError, msg);
    return tell_failure(self);
}

int
sp_pool_auth_blocked(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    double retry_in = 0;
    if (sp_auth_gate(ep, flavor, sp_now(), &retry_in) != SP_AUTH_BLOCKED) {
        return 0;
    }
    raise_credentials_rejected(self, ep, retry_in);
    return 1;
}

PyObject *
sp_pool_raise_unavailable(PoolCore *self)
{
    return raise_unavailable_on(self, self->ep);
}

static PyObject *
raise_timeout_on(PoolCore *self, sp_endpoint *ep, double waited)
{
    sp_stats s;
    char msg[400];
    sp_endpoint_stats(ep, &s);
    if (s.state == SP_STATE_SATURATED && s.in_use + s.idle == 0) {
        /* Nothing of ours to share, and no headroom to make one: the
         * server's fullness, not our budget, is why. */
        const sp_server_view *v = &s.server_view;
        PyOS_snprintf(msg, sizeof(msg),
                      "%s is saturated: %lld/%lld clients connected (headroom %lld, reserve "
                      "%lld kept for others); this process holds no connection to share and "
                      "waited %.3fs for headroom",
                      ep->label, v->connected_clients, v->maxclients,
                      v->maxclients - v->connected_clients, s.server_reserve, waited);
        set_family_error(self, "ServerUnavailableError", self->st->ServerUnavailableError, msg);
        sp_pool_tell_metrics(self, 3, waited, 0.0);
        return tell_failure(self);
    }
    PyOS_snprintf(msg, sizeof(msg),
                  "Timed out after %.3fs waiting for a connection to %s "
                  "(max_connections=%d, in use=%d, waiters=%d)",
                  waited, ep->label, s.max_connections, s.in_use, s.waiters);
    set_family_error(self, "PoolTimeoutError", self->st->PoolTimeoutError, msg);
    sp_pool_tell_metrics(self, 3, waited, 0.0);
    return tell_failure(self);
}

PyObject *
sp_pool_raise_timeout(PoolCore *self, double waited)
{
    return raise_timeout_on(self, self->ep, waited);
}

/* Waits in the queue; returns the wait result, or -1 with an exception
 * (a signal handler raised: the waiter has left and given back its due). */
static int
wait_in_queue(PoolCore *self, sp_endpoint *ep, sp_waiter *w, double deadline)
{
    int is_main = PyThread_get_thread_ident() == sp_main_thread_ident;
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
            sp_after after = {0};
            sp_endpoint_cancel(ep, w, &after);
            sp_finish_after(self->st, &after);
            return -1;
        }
    }
}

static int
endpoint_paused(sp_endpoint *ep)
{
    pthread_mutex_lock(&ep->lock);
    int paused = ep->state == SP_STATE_PAUSED;
    pthread_mutex_unlock(&ep->lock);
    return paused;
}

void
sp_pool_drop_record(PoolCore *self, sp_conn *rec)
{
    sp_after after = {0};
    sp_endpoint_discard(rec->ep, rec, &after);
    sp_finish_after(self->st, &after);
}

/* ---- checkouts nobody releases ----------------------------------------------- */

/* While a connection is out, its record refers to it only weakly: the
 * caller's reference keeps it alive, and a caller that drops it without
 * release() lets reclaim_checkout() give its slot back. */

static PyObject *reclaim_checkout(PyObject *pool_wr, PyObject *conn_wr);

static PyMethodDef reclaim_def = {
    "_reclaim_checkout", (PyCFunction)reclaim_checkout, METH_O,
    "Weak-reference callback: a checked-out connection went away unreleased."};

/* A record that owns a reference to its connection hands it to the caller
 * and keeps a weak reference. Connections that refuse weak references stay
 * held by the record (their slot comes back only with the pool). */
static void
hold_weakly(PoolCore *self, sp_conn *rec)
{
    PyObject *conn = rec->payload;
    if (self->reclaim_cb == NULL) {
        PyObject *pool_wr = PyWeakref_NewRef((PyObject *)self, NULL);
        self->reclaim_cb = pool_wr ? PyCFunction_New(&reclaim_def, pool_wr) : NULL;
        Py_XDECREF(pool_wr);
        if (self->reclaim_cb == NULL) {
            PyErr_Clear();
            return;
        }
    }
    PyObject *wr = PyWeakref_NewRef(conn, self->reclaim_cb);
    if (wr == NULL) {
        PyErr_Clear();
        return;
    }
    rec->weakref = wr;
    Py_DECREF(conn);  /* the record's reference: the caller holds its own */
}

/* Back from the caller: the record owns a reference again before the
 * connection can be pooled or handed to a waiter. */
static void
hold_strongly(PoolCore *self, PyObject *conn)
{
    sp_conn *rec = self->ep ? sp_endpoint_find_inuse(self->ep, conn, self) : NULL;
    for (int i = 0; rec == NULL && i < self->n_formers; i++) {
        rec = sp_endpoint_find_inuse(self->formers[i], conn, self);
    }
    if (rec != NULL && rec->weakref != NULL) {
        PyObject *wr = rec->weakref;
        rec->weakref = NULL;
        Py_INCREF(conn);
        Py_DECREF(wr);  /* its callback never runs now */
        Py_CLEAR(rec->on_drop);
    }
}

/* _hold_weakly(conn, on_drop): an asyncio checkout is the caller's from now
 * on; if it is dropped unreleased, on_drop() closes its socket and the slot
 * comes back (as for sync checkouts, whose socket dies with them). */
static PyObject *
pool_hold_weakly(PoolCore *self, PyObject *args)
{
    PyObject *conn, *on_drop;
    if (!PyArg_ParseTuple(args, "OO:_hold_weakly", &conn, &on_drop)) {
        return NULL;
    }
    if (!PyCallable_Check(on_drop)) {
        PyErr_SetString(PyExc_TypeError, "_hold_weakly(): on_drop must be callable");
        return NULL;
    }
    sp_conn *rec = self->ep ? sp_endpoint_find_inuse(self->ep, conn, self) : NULL;
    for (int i = 0; rec == NULL && i < self->n_formers; i++) {
        rec = sp_endpoint_find_inuse(self->formers[i], conn, self);
    }
    if (rec == NULL || rec->weakref != NULL) {
        Py_RETURN_NONE;  /* not ours (the pool was closed meanwhile), or held weakly already */
    }
    hold_weakly(self, rec);
    if (rec->weakref != NULL) {
        rec->on_drop = Py_NewRef(on_drop);
    }
    Py_RETURN_NONE;
}

/* The connection a checkout record of `pool` on `ep` weakly refers to
 * through `wr`, as a key (it is being destroyed), or NULL; its on_drop (or
 * NULL) goes to *on_drop. */
static void *
find_weak_checkout(sp_endpoint *ep, PoolCore *pool, PyObject *wr, PyObject **on_drop)
{
    void *payload = NULL;
    pthread_mutex_lock(&ep->lock);
    for (size_t i = 0; i < ep->conns.cap && payload == NULL; i++) {
        sp_conn *rec = ep->conns.keys[i] ? ep->conns.values[i] : NULL;
        if (rec != NULL && rec->state == SP_CONN_INUSE && rec->owner == pool &&
            rec->weakref == wr) {
            payload = rec->payload;
            *on_drop = rec->on_drop;  /* handed to the caller with its reference */
            rec->on_drop = NULL;
        }
    }
    pthread_mutex_unlock(&ep->lock);
    return payload;
}

static void prune_formers(PoolCore *self);

/* A checked-out connection became unreachable without release(): its slot
 * comes back (counted as closed; its socket closes with it, and no cached
 * socket object keeps it open), and the pool's _checkout_dropped(id) hook
 * hears of it. */
static PyObject *
reclaim_checkout(PyObject *pool_wr, PyObject *conn_wr)
{
    PyObject *pool = PyWeakref_GetObject(pool_wr);
    if (pool == NULL) {
        return NULL;
    }
    if (pool == Py_None) {
        Py_RETURN_NONE;  /* the pool went first and disposed of its records */
    }
    PoolCore *self = (PoolCore *)Py_NewRef(pool);
    sp_endpoint *ep = self->ep;
    PyObject *on_drop = NULL;
    void *payload = ep ? find_weak_checkout(ep, self, conn_wr, &on_drop) : NULL;
    for (int i = 0; payload == NULL && i < self->n_formers; i++) {
        ep = self->formers[i];
        payload = find_weak_checkout(ep, self, conn_wr, &on_drop);
    }
    if (payload == NULL) {
        Py_DECREF(self);
        Py_RETURN_NONE;  /* disposed of already (fork, reset, close) */
    }
    sp_after after = {0};
    if (sp_endpoint_release(ep, self, payload, -1, 0, &after) == SP_REL_OK) {
        self->in_use--;
    }
    if (on_drop != NULL) {
        /* Its socket outlives it in a transport: close it now, while the
         * record (no longer listed) still counts as closing, before
         * sp_finish_after() gives the slot back. */
        PyObject *r = PyObject_CallNoArgs(on_drop);
        if (r == NULL) {
            PyErr_WriteUnraisable(on_drop);
        }
        Py_XDECREF(r);
        Py_DECREF(on_drop);
    }
    clear_fd_cache(self);
    sp_finish_after(self->st, &after);
    if (ep != self->ep) {
        prune_formers(self);
    }
    PyObject *r = PyObject_CallMethod(pool, "_checkout_dropped", "n",
                                      (Py_ssize_t)(uintptr_t)payload);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();  /* a bare PoolCore has no hook */
        }
        else {
            PyErr_WriteUnraisable(pool);
        }
    }
    Py_XDECREF(r);
    Py_DECREF(self);
    Py_RETURN_NONE;
}

/* Makes a checked-out idle connection ready to send: connected, nothing
 * unread. Returns 0, or -1 with an exception (the connection is dropped). */
static int
make_ready(PoolCore *self, sp_conn *rec)
{
    if (sp_conn_ready(self, rec->payload, rec->fd)) {
        return 0;
    }
    sp_endpoint *ep = rec->ep;
    if (endpoint_paused(ep)) {
        /* Paused since it was handed over: no connection attempt. */
        sp_pool_drop_record(self, rec);
        raise_unavailable_on(self, ep);
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
    int fd = r != NULL ? sp_conn_fd(self, conn) : -2;
    Py_XDECREF(r);
    if (fd < 0) {
        if (!PyErr_Occurred()) {
            PyErr_Format(self->st->SafePoolError,
                         "connection to %s has no socket after connect()", ep->label);
        }
        report_pending_error(self, ep, rec->flavor);
        sp_pool_drop_record(self, rec);
        if (endpoint_paused(ep)) {
            /* The idle socket died because the server did. */
            PyErr_Clear();
            raise_unavailable_on(self, ep);
        }
        return -1;
    }
    sp_endpoint_set_fd(ep, rec, sp_conn_registered_fd(self, fd));
    sp_auth_accepted(ep, rec->flavor);  /* its handshake passed */
    return 0;
}

/* Turns a slot into a connection. Returns a new reference, or NULL with an
 * exception (the slot is given back). */
static PyObject *
fill_slot(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    sp_after after = {0};
    if (endpoint_paused(ep)) {
        /* Paused since the slot was handed over: no connection attempts now. */
        sp_endpoint_cancel_slot(ep, &after);
        sp_finish_after(self->st, &after);
        return raise_unavailable_on(self, ep);
    }
    PyObject *conn = PyObject_CallMethodNoArgs((PyObject *)self, self->st->str_make_connection);
    if (conn != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(conn, self->st->str_connect);
        if (r == NULL) {
            report_pending_error(self, ep, flavor);
            Py_CLEAR(conn);
        }
        Py_XDECREF(r);
    }
    int fd = conn ? sp_conn_fd(self, conn) : -2;
    sp_conn *rec = conn && fd > -2 ? PyMem_RawMalloc(sizeof(sp_conn)) : NULL;
    if (conn && fd > -2 && rec == NULL) {
        PyErr_NoMemory();
    }
    if (rec == NULL) {
        Py_XDECREF(conn);
        sp_endpoint_slot_failed(ep, &after);
        sp_finish_after(self->st, &after);
        return NULL;
    }
    if (sp_endpoint_add(ep, rec, conn, self, flavor,
                        fd < 0 ? fd : sp_conn_registered_fd(self, fd)) < 0) {
        PyMem_RawFree(rec);
        Py_DECREF(conn);
        sp_endpoint_slot_failed(ep, &after);
        sp_finish_after(self->st, &after);
        return PyErr_NoMemory();
    }
    sp_auth_accepted(ep, flavor);  /* its handshake passed */
    /* The record owns one reference, the caller gets another. */
    Py_INCREF(conn);
    hold_weakly(self, rec);
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
    if (sp_pool_auth_blocked(self, ep, flavor)) {
        return NULL;
    }
    double deadline = self->timeout < 0 ? -1.0 : (self->timeout == 0 ? 0.0 : start + self->timeout);
    sp_after after = {0};
    sp_waiter w;
    memset(&w, 0, sizeof(w));
    w.notify_fd = -1;
    sp_conn *rec = NULL;
    sp_acquire_status st = sp_endpoint_acquire(ep, self, flavor, deadline, &w, &rec, &after);
    sp_finish_after(self->st, &after);
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
        hold_weakly(self, rec);
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
        return raise_timeout_on(self, ep, sp_now() - start);
    case SP_WAIT_PAUSED:
        return raise_unavailable_on(self, ep);
    default:
        return sp_pool_raise_closed(self);
    }
    self->in_use++;
    if (self->metrics_hook != NULL) {
        double now = sp_now();
        sp_pool_tell_metrics(self, created, now - start, created ? now - filled_at : 0.0);
    }
    return conn;
}

static PyObject *
pool_get_connection(PoolCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* Arguments (command name, keys, options) are accepted and ignored,
     * as redis-py's own pools do since 5.3. */
    if (self->ep == NULL) {
        return sp_pool_raise_closed(self);
    }
    if (sp_pool_check_fork(self) < 0) {
        return NULL;
    }
    if (self->closed) {
        return sp_pool_raise_closed(self);
    }
    self->calls_in_flight++;
    PyObject *conn = checkout_from(self, self->ep, self->flavor);
    self->calls_in_flight--;
    return conn;
}

/* ---- former endpoints -------------------------------------------------------- */

/* reset() with connection settings that name another endpoint moves the pool
 * there, but connections it checked out from the old one are still out, and
 * get_connection() calls that started there are still running: the old
 * endpoint is kept (with the pool's registry reference) until neither is
 * left, so those records stay valid and release() takes them back there. */

/* Whether `pool` has a connection checked out from `ep`. */
static int
has_checkouts_on(sp_endpoint *ep, PoolCore *pool)
{
    int found = 0;
    pthread_mutex_lock(&ep->lock);
    for (size_t i = 0; i < ep->conns.cap && !found; i++) {
        sp_conn *rec = ep->conns.keys[i] ? ep->conns.values[i] : NULL;
        found = rec != NULL && rec->state == SP_CONN_INUSE && rec->owner == pool;
    }
    pthread_mutex_unlock(&ep->lock);
    return found;
}

/* Lets go of former endpoints nothing of this pool uses any more. */
static void
prune_formers(PoolCore *self)
{
    if (self->calls_in_flight > 0) {
        return;  /* a running checkout may still be drawing from one */
    }
    int kept = 0;
    for (int i = 0; i < self->n_formers; i++) {
        sp_endpoint *ep = self->formers[i];
        if (has_checkouts_on(ep, self)) {
            self->formers[kept++] = ep;
        }
        else {
            sp_registry_unbind(ep);
        }
    }
    self->n_formers = kept;
    if (kept == 0) {
        PyMem_RawFree(self->formers);
        self->formers = NULL;
    }
}

/* Keeps the current binding as a former endpoint; 0, or -1 out of memory. */
static int
retire_binding(PoolCore *self)
{
    sp_endpoint **grown = PyMem_RawRealloc(self->formers,
                                           sizeof(*grown) * (size_t)(self->n_formers + 1));
    if (grown == NULL) {
        return -1;
    }
    self->formers = grown;
    sp_after after = {0};
    /* asyncio waiters name this endpoint in the pool's own list: settle them
     * here (thread waiters carry their endpoint and keep waiting). */
    sp_pool_free_async_waiters(self);
    if (self->flavor_counted) {
        sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        self->flavor_counted = 0;
    }
    sp_pool_drop_loop_flavors(self, &after);
    sp_finish_after(self->st, &after);
    for (int i = 0; i < self->n_formers; i++) {
        if (self->formers[i] == self->ep) {
            sp_registry_unbind(self->ep);  /* listed once, with one reference */
            self->ep = NULL;
            return 0;
        }
    }
    self->formers[self->n_formers++] = self->ep;
    self->ep = NULL;
    return 0;
}

/* Release with the socket's fd known (-1: not connected). */
static PyObject *
release_with_fd(PoolCore *self, PyObject *conn, int fd)
{
    sp_modstate *st = self->st;
    scrub_handled_exception(self);
    PyObject *cls;
    sp_after after = {0};
    sp_endpoint *ep = self->ep;
    hold_strongly(self, conn);
    sp_release_status rs = sp_endpoint_release(ep, self, conn, fd, !self->closed, &after);
    for (int i = 0; rs == SP_REL_UNKNOWN && i < self->n_formers; i++) {
        /* Checked out before a reset() moved the pool to another endpoint:
         * closed, not pooled (the pool no longer draws from there). */
        ep = self->formers[i];
        rs = sp_endpoint_release(ep, self, conn, fd, 0, &after);
    }
    sp_finish_after(st, &after);
    switch (rs) {
    case SP_REL_OK:
        self->in_use--;
        if (fd == -1) {
            /* It came back disconnected: usually a command hit an error. */
            sp_checker_report(ep, SP_FAIL_OTHER, NULL);
        }
        if (ep != self->ep) {
            prune_formers(self);
        }
        sp_pool_tell_metrics(self, 2, 0.0, 0.0);
        Py_RETURN_NONE;
    case SP_REL_DOUBLE:
        cls = sp_pool_error_class(self, "DoubleReleaseError", st->DoubleReleaseError);
        PyErr_Format(cls, "connection %R was released twice to the pool for %s",
                     conn, self->ep->label);
        Py_DECREF(cls);
        return NULL;
    case SP_REL_FOREIGN:
        cls = sp_pool_error_class(self, "ForeignConnectionError", st->ForeignConnectionError);
        PyErr_Format(cls, "connection %R was checked out from another pool for %s; release it there",
                     conn, self->ep->label);
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
    cls = sp_pool_error_class(self, "ForeignConnectionError", st->ForeignConnectionError);
    PyErr_Format(cls, "connection %R was not handed out by this pool for %s", conn, self->ep->label);
    Py_DECREF(cls);
    return NULL;
}

static PyObject *
pool_release(PoolCore *self, PyObject *conn)
{
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    if (sp_pool_check_fork(self) < 0) {
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
    if (sp_conn_release_needs_event(self, conn) && sp_endpoint_find_inuse(self->ep, conn, self)) {
        /* redis-py's release event, while the connection is still ours: its
         * re-authentication listener sends AUTH on it, and nobody else may
         * use it meanwhile. A listener that fails leaves it in an unknown
         * state: it goes back disconnected and the error propagates. */
        PyObject *r = PyObject_CallFunctionObjArgs(self->release_hook, (PyObject *)self, conn,
                                                   NULL);
        if (r == NULL) {
            PyObject *et, *ev, *etb;
            PyErr_Fetch(&et, &ev, &etb);
            PyObject *d = PyObject_CallMethodNoArgs(conn, st->str_disconnect);
            Py_XDECREF(d);
            PyErr_Clear();
            PyObject *done = release_with_fd(self, conn, -1);
            Py_XDECREF(done);
            PyErr_Clear();
            PyErr_Restore(et, ev, etb);
            return NULL;
        }
        Py_DECREF(r);
    }
    int fd = cached_socket_fd(self, conn);
    if (fd == -2) {
        return NULL;
    }
    return release_with_fd(self, conn, sp_conn_registered_fd(self, fd));
}

PyObject *
sp_pool_release_fd(PoolCore *self, PyObject *args)
{
    PyObject *conn;
    int fd;
    if (!PyArg_ParseTuple(args, "Oi:_release_fd", &conn, &fd)) {
        return NULL;
    }
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    if (sp_pool_check_fork(self) < 0) {
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
        sp_after after = {0};
        sp_endpoint_fail_pool_waiters(self->formers[i], self, &after);
        sp_endpoint_abandon_pool(self->formers[i], self, &after);
        sp_finish_after(self->st, &after);
        sp_registry_unbind(self->formers[i]);
    }
    PyMem_RawFree(self->formers);
    self->formers = NULL;
    self->n_formers = 0;
    if (self->ep == NULL) {
        return;
    }
    sp_after after = {0};
    sp_endpoint_fail_pool_waiters(self->ep, self, &after);
    sp_pool_free_async_waiters(self);
    sp_endpoint_abandon_pool(self->ep, self, &after);
    if (self->flavor_counted) {
        sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        self->flavor_counted = 0;
    }
    sp_pool_drop_loop_flavors(self, &after);
    sp_finish_after(self->st, &after);
    sp_registry_unbind(self->ep);
    self->ep = NULL;
    self->in_use = 0;
}

/* Same endpoint, maybe new settings: count the pool under `flavor` now. */
static void
rebind_flavor(PoolCore *self, uint32_t flavor)
{
    sp_after after = {0};
    /* asyncio: the Python side forgets its per-loop flavors on reset(). */
    sp_pool_drop_loop_flavors(self, &after);
    if (!self->flavor_counted || self->flavor != flavor) {
        sp_endpoint_pool_added(self->ep, flavor);
        if (self->flavor_counted) {
            sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        }
        self->flavor = flavor;
        self->flavor_counted = 1;
    }
    self->closed = 0;
    sp_finish_after(self->st, &after);
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
    static char *kwlist[] = {"key", "label", "max_connections", "flavor", "host", "port",
                             "unix_path", "username", "password", "tls", "shm_name", NULL};
    const char *key, *label, *host = NULL, *unix_path = NULL, *username = NULL, *password = NULL;
    const char *shm_name = NULL;
    int max_connections, port = -1, tls = 0;
    unsigned int flavor;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ssiI|zizzzpz:_bind", kwlist, &key, &label,
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
    if (self->ep != NULL && strcmp(self->ep->key, key) == 0 && self->flavor == flavor) {
        /* reset() with the same settings: nothing to move; connections out
         * stay valid and come back through release(). (New settings take
         * the general path below: the endpoint may be made anew with them,
         * e.g. the probe's credentials, when nothing holds the old one.) */
        rebind_flavor(self, flavor);
        return bind_result(self->ep, 0, Py_None);
    }
    if (self->ep != NULL && retire_binding(self) < 0) {
        return PyErr_NoMemory();
    }
    prune_formers(self);
    sp_address addr = {host, port, unix_path, username, password, tls};
    int created = 0;
    sp_endpoint *ep = sp_registry_bind(key, label, max_connections, &addr, &created);
    if (ep == NULL) {
        return PyErr_NoMemory();
    }
    self->ep = ep;
    self->flavor = flavor;
    PyObject *note = Py_None;
    Py_INCREF(note);
    if (created) {
        /* The probe speaks with this pool's credentials. */
        pthread_mutex_lock(&ep->lock);
        ep->probe_flavor = flavor;
        pthread_mutex_unlock(&ep->lock);
        if (shm_name != NULL) {
            Py_DECREF(note);
            note = sp_use_host_budget(ep, shm_name, max_connections);
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
    sp_after after = {0};
    sp_endpoint_fail_pool_waiters(self->ep, self, &after);
    for (int i = 0; i < self->n_formers; i++) {
        sp_endpoint_fail_pool_waiters(self->formers[i], self, &after);
    }
    if (self->flavor_counted) {
        sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        self->flavor_counted = 0;
    }
    sp_pool_drop_loop_flavors(self, &after);
    sp_finish_after(self->st, &after);
    Py_RETURN_NONE;
}

static PyObject *
pool_drain_idle(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ep != NULL) {
        sp_after after = {0};
        sp_endpoint_drain_idle(self->ep, self->flavor, &after);
        for (int i = 0; i < self->n_loop_flavors; i++) {
            sp_endpoint_drain_idle(self->ep, self->loop_flavors[i], &after);
        }
        sp_finish_after(self->st, &after);
    }
    Py_RETURN_NONE;
}

/* Its own flavor, or one of the per-loop flavors of an asyncio pool. */
static int
has_flavor(PoolCore *self, uint32_t flavor)
{
    return flavor == self->flavor || sp_pool_uses_flavor(self, flavor);
}

/* Appends to `list` the connections of this pool on `ep`: in use
 * (in_use=1) or idle of its flavor (in_use=0). 0, or -1 with an exception. */
static int
collect_on(PoolCore *self, sp_endpoint *ep, int in_use, PyObject *list)
{
    pthread_mutex_lock(&ep->lock);
    size_t n = 0;
    PyObject **found = PyMem_RawMalloc(sizeof(PyObject *) * (ep->conns.len + 1));
    if (found != NULL) {
        for (size_t i = 0; i < ep->conns.cap; i++) {
            sp_conn *rec = ep->conns.keys[i] ? ep->conns.values[i] : NULL;
            if (rec == NULL) {
                continue;
            }
            if (in_use ? (rec->state == SP_CONN_INUSE && rec->owner == self)
                       : (rec->state == SP_CONN_IDLE && has_flavor(self, rec->flavor))) {
                found[n++] = rec->payload;
            }
        }
    }
    pthread_mutex_unlock(&ep->lock);
    if (found == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Still alive: records keep a reference (callers, those of checkouts
     * held weakly; one that drops it has its record removed at once), and
     * we hold the GIL throughout. */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = PyList_Append(list, found[i]);
    }
    PyMem_RawFree(found);
    return rc;
}

/* Connections of this pool: in use (also those out from former endpoints)
 * or idle of its flavor. */
static PyObject *
collect(PoolCore *self, int in_use)
{
    PyObject *list = PyList_New(0);
    if (list == NULL || self->ep == NULL) {
        return list;
    }
    if (collect_on(self, self->ep, in_use, list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    for (int i = 0; in_use && i < self->n_formers; i++) {
        if (self->formers[i] != self->ep && collect_on(self, self->formers[i], 1, list) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

static PyObject *
pool_in_use_list(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return collect(self, 1);
}

static PyObject *
pool_idle_list(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return collect(self, 0);
}

static PyObject *
pool_owns(PoolCore *self, PyObject *conn)
{
    int owns = 0;
    if (self->ep != NULL) {
        pthread_mutex_lock(&self->ep->lock);
        sp_conn *rec = sp_ptrmap_get(&self->ep->conns, conn);
        owns = rec != NULL && (rec->owner == self ||
                               (rec->state == SP_CONN_IDLE && has_flavor(self, rec->flavor)));
        pthread_mutex_unlock(&self->ep->lock);
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
    PyObject *d = sp_stats_dict(self->ep);
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
        pthread_mutex_lock(&self->ep->lock);
        self->ep->max_idle_time = max_idle_time;
        self->ep->max_lifetime = max_lifetime;
        pthread_mutex_unlock(&self->ep->lock);
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
    return PyUnicode_FromString(self->ep->label);
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
    PyObject *module = NULL;
    for (PyTypeObject *t = type; t != NULL; t = SP_TYPE_BASE(t)) {
        if (PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE)) {
            module = PyType_GetModule(t);
            if (module != NULL) {
                break;
            }
            PyErr_Clear();
        }
    }
    if (module == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_TypeError, "PoolCore subclass without its module");
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
static size_t
owned_payloads(PoolCore *self, sp_endpoint *ep, int own_flavor, PyObject **found, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&ep->lock);
    int sole = 0;
    for (int i = 0; own_flavor && i < ep->n_flavors; i++) {
        if (ep->flavors[i].flavor == self->flavor) {
            sole = ep->flavors[i].pools == 1;
        }
    }
    for (size_t i = 0; i < ep->conns.cap; i++) {
        sp_conn *rec = ep->conns.keys[i] ? ep->conns.values[i] : NULL;
        if (rec == NULL) {
            continue;
        }
        /* A checkout held weakly is the caller's, not the pool's. */
        if ((rec->state == SP_CONN_INUSE && rec->owner == self && rec->weakref == NULL) ||
            (sole && rec->state == SP_CONN_IDLE && rec->flavor == self->flavor)) {
            if (n < cap) {
                found[n] = rec->payload;
            }
            n++;
        }
    }
    pthread_mutex_unlock(&ep->lock);
    return n;
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
    int visited = sp_pool_visit_hooks(self, visit, arg);
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

static void
pool_dealloc(PoolCore *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    unbind(self);
    clear_fd_cache(self);
    sp_pool_clear_hooks(self);
    Py_CLEAR(self->reclaim_cb);
    PyErr_Restore(et, ev, etb);
    SP_TYPE_FREE(tp)((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
pool_raise_unavailable_m(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return self->ep ? sp_pool_raise_unavailable(self) : sp_pool_raise_closed(self);
}

static PyObject *
pool_raise_closed_m(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    return sp_pool_raise_closed(self);
}

/* An idle connection to health-check (TLS endpoints, see _tls_probe.py),
 * checked out like any other; None when none is free to take. */
static PyObject *
pool_take_idle(PoolCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ep == NULL || self->closed) {
        Py_RETURN_NONE;
    }
    if (sp_pool_check_fork(self) < 0) {
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
    sp_pool_report_exception(self, exc);
    Py_RETURN_NONE;
}

static PyMethodDef pool_methods[] = {
    {"_raise_unavailable", (PyCFunction)pool_raise_unavailable_m, METH_NOARGS,
     "Raise ServerUnavailableError describing the endpoint's state."},
    {"_raise_closed", (PyCFunction)pool_raise_closed_m, METH_NOARGS, "Raise PoolClosedError."},
    {"get_connection", (PyCFunction)(void (*)(void))pool_get_connection,
     METH_FASTCALL | METH_KEYWORDS,
     "get_connection() -> Connection\n\nCheck out a connection that is ready to send, waiting up "
     "to `timeout` seconds (FIFO, GIL released, interruptible) for one to come back."},
    {"release", (PyCFunction)pool_release, METH_O,
     "release(connection)\n\nGive a connection back (to the oldest waiter, else the idle stack)."},
    {"_bind", (PyCFunction)(void (*)(void))pool_bind, METH_VARARGS | METH_KEYWORDS,
     "Attach to the endpoint budget for `key`; returns (max_connections, created)."},
    {"_unbind", (PyCFunction)pool_unbind, METH_NOARGS, "Detach from the endpoint."},
    {"_close_core", (PyCFunction)pool_close_core, METH_NOARGS,
     "Refuse new checkouts and fail this pool's waiters."},
    {"_drain_idle", (PyCFunction)pool_drain_idle, METH_NOARGS,
     "Close the idle connections of this pool's flavor."},
    {"_in_use_list", (PyCFunction)pool_in_use_list, METH_NOARGS, "Connections this pool has out."},
    {"_idle_list", (PyCFunction)pool_idle_list, METH_NOARGS, "Idle connections of its flavor."},
    {"_owns", (PyCFunction)pool_owns, METH_O, "Whether the connection belongs to this pool."},
    {"_report", (PyCFunction)pool_report, METH_VARARGS, "Report a failure kind to the checker."},
    {"_report_exception", (PyCFunction)pool_report_exception_m, METH_O,
     "Tell the endpoint what an exception says about the server."},
    {"_take_idle", (PyCFunction)pool_take_idle, METH_NOARGS,
     "The oldest idle connection, checked out for a health check, or None."},
    {"_set_idle_limits", (PyCFunction)pool_set_limits, METH_VARARGS,
     "Set the endpoint's max_idle_time and max_lifetime (0 = off)."},
    {"stats", (PyCFunction)pool_stats, METH_NOARGS, "Counters of the endpoint and this pool."},
    {"_async_acquire", (PyCFunction)sp_pool_async_acquire, METH_VARARGS,
     "_async_acquire(inbox, flavor, future) -> ('conn', conn) | ('slot', None) | ('wait', None)"},
    {"_use_flavor", (PyCFunction)sp_pool_use_flavor, METH_O,
     "_use_flavor(flavor): count this pool as a user of a per-loop flavor."},
    {"_drop_flavor", (PyCFunction)sp_pool_drop_flavor, METH_O,
     "_drop_flavor(flavor): stop using it; its idle connections close if nobody else does."},
    {"_async_forget_inbox", (PyCFunction)sp_pool_async_forget_inbox, METH_O,
     "_async_forget_inbox(inbox): the inbox's loop is gone; give back what its waiters hold."},
    {"_async_cancel", (PyCFunction)sp_pool_async_cancel, METH_VARARGS,
     "_async_cancel(future, timed_out) -> bool: leave the queue, giving back what was handed."},
    {"_hold_weakly", (PyCFunction)pool_hold_weakly, METH_VARARGS,
     "_hold_weakly(conn, on_drop): an asyncio checkout held by its caller from now on; "
     "on_drop() closes its socket if it is dropped unreleased."},
    {"_add", (PyCFunction)sp_pool_add, METH_VARARGS,
     "_add(conn, fd, flavor=0): a slot became a connection, now in use."},
    {"_slot_failed", (PyCFunction)sp_pool_slot_failed, METH_VARARGS,
     "_slot_failed(exc_or_None, flavor=0): give a slot back (and report exc about `flavor`'s "
     "connection)."},
    {"_discard", (PyCFunction)sp_pool_discard, METH_O,
     "_discard(conn): drop a checked-out connection that cannot be made ready."},
    {"_release_fd", (PyCFunction)sp_pool_release_fd, METH_VARARGS,
     "_release_fd(conn, fd): release with the socket fd given (-1: not connected)."},
    {"_set_hooks", (PyCFunction)(void (*)(void))sp_pool_set_hooks, METH_VARARGS | METH_KEYWORDS,
     "_set_hooks(*, socket_getter, pushes_ok, release_hook, event_mapping, event_type, "
     "metrics_hook, reauth_pending): set the ones given."},
    {"_set_quiet_listeners", (PyCFunction)sp_pool_set_quiet_listeners, METH_O,
     "_set_quiet_listeners(list): the release listeners seen doing nothing without a token."},
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
    {Py_tp_methods, pool_methods},
    {Py_tp_getset, pool_getset},
    {Py_tp_doc, "C half of SafeConnectionPool: the per-endpoint budget, checkout and release."},
    {0, NULL},
};

PyType_Spec sp_pool_core_spec = {
    .name = "redis_safepool._core.PoolCore",
    .basicsize = sizeof(PoolCore),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = pool_slots,
};
