/* conn_ready.c -- a connection as redis-py's ConnectionInterface has it: its socket, readiness, release events. */
#include "module_state.h"
#include "conn_ready.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "clock.h"
#include "net.h"
#include "probe.h"


/* ---- the socket ------------------------------------------------------------ */

PyObject *
sp_py_conn_socket(PoolCore *self, PyObject *conn)
{
    PyObject *sock;
    if (self->socket_getter != NULL) {
        /* Client-side caching proxies and other ConnectionInterface
         * implementations: the interface's _get_socket() (see pool.py). */
        sock = PyObject_CallOneArg(self->socket_getter, conn);
    }
    else {
        /* Plain redis-py connections: one attribute lookup, no call. */
        sock = PyObject_GetAttr(conn, self->st->str_sock);
        if (sock == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            Py_INCREF(Py_None);
            return Py_None;
        }
    }
    return sock;
}

int
sp_py_conn_fd(PoolCore *self, PyObject *conn)
{
    PyObject *sock = sp_py_conn_socket(self, conn);
    if (sock == NULL) {
        return -2;
    }
    int fd = sock == Py_None ? -1 : sp_py_socket_fileno(self, sock);
    Py_DECREF(sock);
    return fd;
}

int
sp_py_socket_fileno(PoolCore *self, PyObject *sock)
{
    PyObject *fd_obj = PyObject_CallMethodNoArgs(sock, self->st->str_fileno);
    if (fd_obj == NULL) {
        PyErr_Clear();  /* a closed socket object: treat as not connected */
        return -1;
    }
    long fd = PyLong_AsLong(fd_obj);
    Py_DECREF(fd_obj);
    if (fd == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return fd < 0 || fd > INT_MAX ? -1 : (int)fd;
}

/* ---- readiness ------------------------------------------------------------- */

/* Open and not hung up; unread bytes are allowed (RESP3 pushes). A peek
 * tells data from the EOF that also reads as POLLIN. Never blocks. */
static int
fd_open(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
#ifdef POLLRDHUP
    p.events |= POLLRDHUP;
#endif
    int r;
    do {
        r = poll(&p, 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r == 0) {
        return 1;
    }
    if (r < 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL))) {
        return 0;
    }
#ifdef POLLRDHUP
    if (p.revents & POLLRDHUP) {
        return 0;
    }
#endif
    char byte;
    ssize_t n;
    do {
        n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/* Where a parser class keeps replies it has read: hiredis in its Reader
 * (_reader.has_data()), redis-py's Python parsers in a SocketBuffer (_buffer,
 * a BytesIO); a parser of neither kind is left to the socket poll. hiredis's
 * parser also has a _buffer (a bytearray it reads into): _reader first. */
enum { SP_PARSER_UNKNOWN, SP_PARSER_HIREDIS, SP_PARSER_SOCKETBUFFER };

static int
parser_kind(PoolCore *self, PyObject *parser)
{
    PyObject *type = (PyObject *)Py_TYPE(parser);
    if (type != self->parser_type) {
        int has_reader = PyObject_HasAttr(parser, self->st->str_reader);
        int has_buffer = PyObject_HasAttr(parser, self->st->str_buffer);
        self->parser_kind = has_reader ? SP_PARSER_HIREDIS
                          : has_buffer ? SP_PARSER_SOCKETBUFFER : SP_PARSER_UNKNOWN;
        Py_INCREF(type);
        Py_XSETREF(self->parser_type, type);
    }
    return self->parser_kind;
}

/* 1 when a SocketBuffer holds nothing: its BytesIO is empty, as it is after
 * redis-py's purge() once every reply was read (the position never passes
 * the end). One C method call, seek(0, SEEK_END); a buffer holding bytes is
 * reconnected anyway, so the position it leaves does not matter. */
static int
socket_buffer_empty(sp_modstate *st, PyObject *sockbuf)
{
    PyObject *bio = PyObject_GetAttr(sockbuf, st->str_buffer);
    if (bio == NULL) {
        return -1;
    }
    if (bio == Py_None) {
        Py_DECREF(bio);
        return 1;
    }
    PyObject *end = sp_call_method_2(bio, st->str_seek, st->int_zero, st->int_two);
    Py_DECREF(bio);
    if (end == NULL) {
        return -1;
    }
    long n = PyLong_AsLong(end);
    Py_DECREF(end);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    return n == 0;
}

/* 1 when the parser holds no reply already read from the socket, 0 when it
 * does, -1 with an exception. A connection without a _parser is asked
 * can_read(), as redis-py's pools ask every connection. */
static int
parser_empty(PoolCore *self, PyObject *conn)
{
    sp_modstate *st = self->st;
    PyObject *parser = PyObject_GetAttr(conn, st->str_parser);
    if (parser == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        PyObject *r = PyObject_CallMethodNoArgs(conn, st->str_can_read);
        int readable = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        return readable < 0 ? -1 : !readable;
    }
    int empty = 1;
    int kind = parser_kind(self, parser);
    if (kind != SP_PARSER_UNKNOWN) {
        PyObject *inner = PyObject_GetAttr(parser, kind == SP_PARSER_HIREDIS ? st->str_reader
                                                                             : st->str_buffer);
        if (inner == NULL) {
            empty = -1;
        }
        else if (inner == Py_None) {
            /* hiredis without a reader is disconnected; no SocketBuffer: nothing read */
            empty = kind != SP_PARSER_HIREDIS;
        }
        else if (kind == SP_PARSER_HIREDIS) {
            PyObject *r = PyObject_CallMethodNoArgs(inner, st->str_has_data);
            int has = r ? PyObject_IsTrue(r) : -1;
            Py_XDECREF(r);
            empty = has < 0 ? -1 : !has;
        }
        else {
            empty = socket_buffer_empty(st, inner);
        }
        Py_XDECREF(inner);
    }
    Py_DECREF(parser);
    return empty;
}

int
sp_py_conn_registered_fd(PoolCore *self, int fd)
{
    return self->pushes_ok && fd >= 0 ? SP_FD_UNPOLLABLE : fd;
}

int
sp_py_conn_ready(PoolCore *self, PyObject *conn, int fd)
{
    if (self->pushes_ok) {
        /* Registered unpollable (see sp_py_conn_registered_fd): found again here. */
        fd = fd == SP_FD_UNPOLLABLE ? sp_py_conn_fd(self, conn) : fd;
        if (fd < 0) {
            PyErr_Clear();
            return 0;
        }
        return fd_open(fd);
    }
    if (fd < 0) {
        return 0;
    }
    if (!sp_fd_idle_ok(fd)) {
        return 0;
    }
    int empty = parser_empty(self, conn);
    if (empty < 0) {
        PyErr_Clear();  /* cannot tell: reconnect, which can */
        return 0;
    }
    return empty;
}

/* ---- release events ---------------------------------------------------------- */

int
sp_py_conn_release_needs_event(PoolCore *self, PyObject *conn)
{
    if (self->release_hook == NULL) {
        return 0;
    }
    if (self->event_mapping == NULL || self->event_type == NULL) {
        return 1;
    }
    PyObject *listeners = PyDict_GetItemWithError(self->event_mapping, self->event_type);
    if (listeners == NULL) {
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        return 0;  /* nobody listens */
    }
    if (listeners != self->quiet_listeners || !PyList_Check(listeners) ||
        PyList_GET_SIZE(listeners) != self->quiet_len) {
        return 1;  /* new or changed listeners: the hook looks at them */
    }
    if (!self->reauth_pending) {
        return 0;
    }
    PyObject *token = PyObject_GetAttr(conn, self->st->str_re_auth_token);
    if (token == NULL) {
        PyErr_Clear();
        return 1;
    }
    int pending = token != Py_None;
    Py_DECREF(token);
    return pending;
}

/* ---- metrics ------------------------------------------------------------------ */

void
sp_py_pool_tell_metrics(PoolCore *self, int kind, double wait_s, double create_s)
{
    if (self->metrics_hook == NULL) {
        return;
    }
    PyObject *ev = sp_err_take();
    PyObject *r = PyObject_CallFunction(self->metrics_hook, "Oidd", (PyObject *)self, kind,
                                        wait_s, create_s);
    if (r == NULL) {
        PyErr_WriteUnraisable(self->metrics_hook);
    }
    Py_XDECREF(r);
    sp_err_give(ev);
}

/* ---- setters ------------------------------------------------------------------- */

static int
set_callable(PyObject **field, PyObject *value, const char *name)
{
    if (value == NULL) {
        return 0;
    }
    if (value != Py_None && !PyCallable_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None", name);
        return -1;
    }
    Py_XSETREF(*field, value == Py_None ? NULL : Py_NewRef(value));
    return 0;
}

PyObject *
sp_py_pool_set_hooks(PoolCore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"socket_getter", "pushes_ok", "release_hook", "event_mapping",
                             "event_type", "metrics_hook", "reauth_pending", NULL};
    PyObject *getter = NULL, *release = NULL, *mapping = NULL, *etype = NULL, *metrics = NULL;
    int pushes_ok = -1, reauth = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OpOOOOp:_set_hooks", kwlist, &getter,
                                     &pushes_ok, &release, &mapping, &etype, &metrics,
                                     &reauth)) {
        return NULL;
    }
    if (mapping != NULL && mapping != Py_None && !PyDict_Check(mapping)) {
        PyErr_SetString(PyExc_TypeError, "event_mapping must be a dict or None");
        return NULL;
    }
    if (set_callable(&self->socket_getter, getter, "socket_getter") < 0 ||
        set_callable(&self->release_hook, release, "release_hook") < 0 ||
        set_callable(&self->metrics_hook, metrics, "metrics_hook") < 0) {
        return NULL;
    }
    if (mapping != NULL) {
        Py_XSETREF(self->event_mapping, mapping == Py_None ? NULL : Py_NewRef(mapping));
        Py_CLEAR(self->quiet_listeners);
    }
    if (etype != NULL) {
        Py_XSETREF(self->event_type, etype == Py_None ? NULL : Py_NewRef(etype));
        Py_CLEAR(self->quiet_listeners);
    }
    if (pushes_ok >= 0) {
        self->pushes_ok = pushes_ok;
    }
    if (reauth >= 0) {
        self->reauth_pending = reauth;
    }
    Py_RETURN_NONE;
}

PyObject *
sp_py_pool_set_quiet_listeners(PoolCore *self, PyObject *listeners)
{
    if (listeners == Py_None) {
        Py_CLEAR(self->quiet_listeners);
        Py_RETURN_NONE;
    }
    if (!PyList_Check(listeners)) {
        PyErr_SetString(PyExc_TypeError, "listeners must be a list or None");
        return NULL;
    }
    Py_XSETREF(self->quiet_listeners, Py_NewRef(listeners));
    self->quiet_len = PyList_GET_SIZE(listeners);
    Py_RETURN_NONE;
}

void
sp_py_pool_clear_hooks(PoolCore *self)
{
    Py_CLEAR(self->socket_getter);
    Py_CLEAR(self->release_hook);
    Py_CLEAR(self->event_mapping);
    Py_CLEAR(self->event_type);
    Py_CLEAR(self->quiet_listeners);
    Py_CLEAR(self->metrics_hook);
    Py_CLEAR(self->parser_type);
}

int
sp_py_pool_visit_hooks(PoolCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->socket_getter);
    Py_VISIT(self->release_hook);
    Py_VISIT(self->event_mapping);
    Py_VISIT(self->event_type);
    Py_VISIT(self->quiet_listeners);
    Py_VISIT(self->metrics_hook);
    Py_VISIT(self->parser_type);
    return 0;
}
