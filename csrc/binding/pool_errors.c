/* pool_errors.c -- what a pool raises and reports: its client family's errors with scrubbed messages, failures told to the endpoint, the fork guard. */
#include "module_state.h"
#include "pool_errors.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "auth_gate.h"
#include "checker.h"
#include "clock.h"
#include "forksafe.h"

#include "conn_ready.h"

int
sp_py_pool_check_fork(PoolCore *self)
{
    uint64_t epoch = sp_fork_epoch();
    if (self->fork_epoch != epoch) {
        /* Child after fork: the parent's connections are on the graveyard;
         * this pool starts with nothing out. */
        self->fork_epoch = epoch;
        self->in_use = 0;
        sp_py_main_thread_ident = PyThread_get_thread_ident();
        if (sp_checker_ensure_running() != 0) {
            PyErr_SetString(self->st->SafePoolError, "cannot start the health-checker thread");
            return -1;
        }
    }
    return 0;
}

/* The exception class `name` of this pool's client family (see module_state.h). */
PyObject *
sp_py_pool_error_class(PoolCore *self, const char *name, PyObject *fallback)
{
    PyObject *ev = sp_err_take();
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
    sp_err_give(ev);
    return cls;
}

/* Sets the family's exception `name` with `msg`. */
static void
set_family_error(PoolCore *self, const char *name, PyObject *fallback, const char *msg)
{
    PyObject *cls = sp_py_pool_error_class(self, name, fallback);
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
    PyObject *ev = sp_err_take();
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_scrub_in_flight", "O", exc);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        PyErr_Clear();
    }
    Py_XDECREF(r);
    sp_err_give(ev);
}

/* A release in the `finally` of a command that failed: redis-py's own
 * errors (a reconnect inside the command) never pass through the pool, so
 * the exception on its way out is scrubbed here. */
void
sp_py_pool_scrub_handled_exception(PoolCore *self)
{
    PyObject *ev = sp_err_handled();
    if (ev != NULL && PyErr_GivenExceptionMatches(ev, PyExc_Exception)) {
        scrub_exception(self, ev);
    }
    Py_XDECREF(ev);
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
    return sp_endpoint_is_tls(ep) && strstr(msg, "connecting to") != NULL &&
           (strstr(msg, "UNEXPECTED_EOF") != NULL ||
            strstr(msg, "EOF occurred in violation of protocol") != NULL ||
            strstr(msg, "connection has been closed (EOF)") != NULL);
}

/* The errno of the OSError behind `exc`: itself, or its __cause__ or
 * __context__, a few links deep (redis-py raises its ConnectionError inside
 * the connect's `except OSError`), or 0. Call with no exception pending. */
static int
cause_errno(PyObject *exc)
{
    int found = 0;
    PyObject *link = Py_NewRef(exc);
    for (int depth = 0; link != NULL && depth < 8 && found == 0; depth++) {
        if (PyErr_GivenExceptionMatches(link, PyExc_OSError)) {
            PyObject *no = PyObject_GetAttrString(link, "errno");
            if (no == NULL) {
                PyErr_Clear();
            }
            else if (PyLong_Check(no)) {
                long value = PyLong_AsLong(no);
                found = value > 0 && value <= INT_MAX ? (int)value : 0;
            }
            Py_XDECREF(no);
        }
        PyObject *next = PyException_GetCause(link);
        if (next == NULL) {
            next = PyException_GetContext(link);
        }
        Py_DECREF(link);
        link = next;
    }
    Py_XDECREF(link);
    return found;
}

/* Nothing listens: a refused TCP connect, or no unix socket file. */
static int
refused_errno(int err)
{
    return err == ECONNREFUSED || err == ENOENT;
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
    PyObject *loading = sp_py_pool_error_class(self, "BusyLoadingError", self->st->BusyLoadingError);
    PyObject *timeout = sp_py_pool_error_class(self, "ClientTimeoutError", self->st->RedisTimeoutError);
    if (PyErr_GivenExceptionMatches(exc, loading) || strstr(msg, "LOADING")) {
        kind = SP_FAIL_LOADING;
    }
    else if (strstr(msg, "max number of clients") || tls_handshake_eof(ep, msg)) {
        kind = SP_FAIL_MAXCLIENTS;
    }
    else if (refused_errno(cause_errno(exc))) {
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
sp_py_pool_report_exception(PoolCore *self, PyObject *exc)
{
    report_exception_on(self, self->ep, self->flavor, exc);
}

void
sp_py_pool_report_exception_for(PoolCore *self, uint32_t flavor, PyObject *exc)
{
    report_exception_on(self, self->ep, flavor, exc);
}

/* Same, for the exception being raised now (kept raised), about `ep`. */
void
sp_py_pool_report_pending_error(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    PyObject *exc = sp_err_take();
    if (exc == NULL) {
        return;
    }
    report_exception_on(self, ep, flavor, exc);
    sp_err_give(exc);
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
    PyObject *ev = sp_err_take();
    PyObject *r = PyObject_CallFunctionObjArgs(hook, (PyObject *)self, ev, NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable(hook);
    }
    Py_XDECREF(r);
    sp_err_give(ev);
    return NULL;
}

PyObject *
sp_py_pool_raise_closed(PoolCore *self)
{
    PyObject *cls = sp_py_pool_error_class(self, "PoolClosedError", self->st->PoolClosedError);
    PyErr_Format(cls, "connection pool for %s is closed", self->ep ? sp_endpoint_label(self->ep) : "(unbound)");
    Py_DECREF(cls);
    return tell_failure(self);
}

/* ServerUnavailableError for `ep` (the endpoint the failed call drew from). */
PyObject *
sp_py_pool_raise_unavailable_on(PoolCore *self, sp_endpoint *ep)
{
    sp_stats s;
    char msg[700];
    char now[40] = "";
    sp_endpoint_stats(ep, &s);
    /* Name the state that refused this call: a probe may have moved the
     * endpoint on (recovering, ready) before this thread got the GIL back. */
    int refusing = s.state == SP_STATE_PAUSED || s.state == SP_STATE_OVERLOADED;
    if (!refusing && s.refused_since_wall > 0) {
        PyOS_snprintf(now, sizeof(now), " (now %s)", sp_state_name(s.state));
        s.state = s.refused_state;
        s.state_since_wall = s.refused_since_wall;
        memcpy(s.state_reason, s.refused_reason, sizeof(s.state_reason));
    }
    double ago = sp_wall() - s.state_since_wall;
    /* PyErr_Format has no %f: format here. */
    PyOS_snprintf(msg, sizeof(msg), "%s %s %s since %.1fs ago: %s%s%s%s; failing fast%s",
                  sp_endpoint_label(ep), now[0] ? "was" : "is", sp_state_name(s.state), ago,
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
                  sp_endpoint_label(ep), retry_in);
    PyErr_SetString(self->st->CredentialsRejectedError, msg);
    return tell_failure(self);
}

int
sp_py_pool_auth_blocked(PoolCore *self, sp_endpoint *ep, uint32_t flavor)
{
    double retry_in = 0;
    if (sp_auth_gate(ep, flavor, sp_now(), &retry_in) != SP_AUTH_BLOCKED) {
        return 0;
    }
    raise_credentials_rejected(self, ep, retry_in);
    return 1;
}

PyObject *
sp_py_pool_raise_unavailable(PoolCore *self)
{
    return sp_py_pool_raise_unavailable_on(self, self->ep);
}

/* Sets the error of a wait for `ep` that ended after `waited` seconds: a
 * pool timeout, or the server's saturation when the process holds nothing.
 * The one text of both, for the sync pools and the asyncio one. */
static void
set_timeout_error(PoolCore *self, sp_endpoint *ep, double waited)
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
                      sp_endpoint_label(ep), v->connected_clients, v->maxclients,
                      v->maxclients - v->connected_clients, s.server_reserve, waited);
        set_family_error(self, "ServerUnavailableError", self->st->ServerUnavailableError, msg);
        return;
    }
    PyOS_snprintf(msg, sizeof(msg),
                  "Timed out after %.3fs waiting for a connection to %s "
                  "(max_connections=%d, in use=%d, waiters=%d)",
                  waited, sp_endpoint_label(ep), s.max_connections, s.in_use, s.waiters);
    set_family_error(self, "PoolTimeoutError", self->st->PoolTimeoutError, msg);
}

PyObject *
sp_py_pool_raise_timeout_on(PoolCore *self, sp_endpoint *ep, double waited)
{
    set_timeout_error(self, ep, waited);
    sp_py_pool_tell_metrics(self, 3, waited, 0.0);
    return tell_failure(self);
}

PyObject *
sp_py_pool_timeout_error(PoolCore *self, PyObject *arg)
{
    double waited = PyFloat_AsDouble(arg);
    if (waited == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->ep == NULL) {
        sp_py_pool_raise_closed(self);  /* unbound meanwhile: the timer may fire after that */
    }
    else {
        set_timeout_error(self, self->ep, waited);
        tell_failure(self);
    }
    PyObject *ev = sp_err_take();
    return ev;
}

PyObject *
sp_py_pool_raise_timeout(PoolCore *self, double waited)
{
    return sp_py_pool_raise_timeout_on(self, self->ep, waited);
}
