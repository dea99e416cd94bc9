/* pool_async.c -- asyncio primitives of PoolCore: queue without blocking, served waiters collected per loop. */
#include "module_state.h"
#include "pool_async.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "auth_gate.h"
#include "clock.h"
#include "inbox.h"

#include "dispose.h"
#include "pool_errors.h"

/* An asyncio task never blocks in C. It joins the same FIFO queue as the
 * threads, with a heap waiter that names its event loop's inbox (inbox.h)
 * and the future it awaits. Whoever serves the waiter (a release in any
 * thread, the checker) appends it to that inbox under the endpoint lock
 * and, if the loop has no wake-up on the way, writes one byte to the
 * loop's pipe after dropping the lock. The loop's reader drains the pipe
 * and takes the served waiters out of its own inbox only: a hand-over
 * costs the same however many tasks wait, on however many loops.
 *
 * A waiter belongs to its pool (pool list and future -> waiter map, both
 * guarded by the GIL) until its loop takes it out of the inbox or the task
 * cancels it. When the pool unbinds first, its waiters give back what they
 * were handed and stay in their inbox, detached (w.pool == NULL), as
 * "closed": the loop still resolves their futures. */

static void
unlink_from_pool(PoolCore *self, sp_async_waiter *aw)
{
    if (aw->prev_of_pool) {
        aw->prev_of_pool->next_of_pool = aw->next_of_pool;
    }
    else {
        self->async_waiters = aw->next_of_pool;
    }
    if (aw->next_of_pool) {
        aw->next_of_pool->prev_of_pool = aw->prev_of_pool;
    }
    aw->prev_of_pool = aw->next_of_pool = NULL;
    sp_ptrmap_del(&self->async_by_future, aw->future);
}

static void
free_waiter(sp_async_waiter *aw)
{
    Py_XDECREF(aw->future);
    Py_XDECREF(aw->inbox_obj);
    PyMem_RawFree(aw);
}

/* Leaves the queue, giving back whatever the waiter was handed. */
static void
withdraw(PoolCore *self, sp_async_waiter *aw, sp_deferred *after)
{
    if (self->ep != NULL) {
        sp_endpoint_cancel(self->ep, &aw->w, after);
    }
}

void
sp_py_pool_free_async_waiters(PoolCore *self)
{
    /* Called after sp_endpoint_fail_pool_waiters(): none is queued any more.
     * Each gives back what it was handed and waits, detached and "closed",
     * in its loop's inbox for the loop to resolve its future. */
    while (self->async_waiters) {
        sp_async_waiter *aw = self->async_waiters;
        unlink_from_pool(self, aw);
        sp_deferred after = {0};
        withdraw(self, aw, &after);
        sp_py_finish_deferred(self->st, &after);
        aw->w.result = SP_WAIT_CLOSED;
        aw->w.conn = NULL;
        aw->w.pool = NULL;
        sp_loop_inbox *ib = (sp_loop_inbox *)aw->inbox_obj;
        if (!aw->w.in_inbox && sp_inbox_push(&ib->inbox, &aw->w)) {
            ssize_t rc = write(ib->write_fd, "x", 1);
            (void)rc;  /* a full pipe already means "wake up" */
        }
    }
    sp_ptrmap_free(&self->async_by_future);
}

/* ---- the per-loop inbox object ---------------------------------------------- */

static int
set_nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *
inbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "LoopInbox() takes no arguments");
        return NULL;
    }
    int fds[2];
    if (pipe(fds) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (set_nonblocking_cloexec(fds[0]) < 0 || set_nonblocking_cloexec(fds[1]) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fds[0]);
        close(fds[1]);
        return NULL;
    }
    sp_loop_inbox *self = (sp_loop_inbox *)SP_TYPE_ALLOC(type)(type, 0);
    if (self == NULL || sp_inbox_init(&self->inbox, fds[1]) < 0) {
        close(fds[0]);
        close(fds[1]);
        if (self != NULL) {
            self->read_fd = self->write_fd = -1;
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
        return NULL;
    }
    self->read_fd = fds[0];
    self->write_fd = fds[1];
    self->ready = 1;
    return (PyObject *)self;
}

static void
inbox_dealloc(sp_loop_inbox *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    /* Every waiter holds a reference to its inbox: none is listed here. */
    if (self->ready) {
        sp_inbox_destroy(&self->inbox);
    }
    if (self->read_fd >= 0) {
        close(self->read_fd);
    }
    if (self->write_fd >= 0) {
        close(self->write_fd);
    }
    SP_TYPE_FREE(tp)((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
inbox_fileno(sp_loop_inbox *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromLong(self->read_fd);
}

static const char *
result_kind(sp_wait_result r)
{
    return r == SP_WAIT_CONN ? "conn" : r == SP_WAIT_SLOT ? "slot"
         : r == SP_WAIT_PAUSED ? "paused" : "closed";
}

/* Takes every served waiter out as a list (None when there is none). A
 * failure puts the waiter back (the oldest first again) and asks for a
 * wake-up byte, so the loop's reader tries again: nothing is lost. */
static PyObject *
take_served(sp_loop_inbox *self)
{
    PyObject *list = NULL;
    sp_waiter *w;
    while ((w = sp_inbox_pop(&self->inbox)) != NULL) {
        sp_async_waiter *aw = (sp_async_waiter *)w;  /* w is its first member */
        PoolCore *pool = (PoolCore *)w->pool;
        PyObject *conn = w->result == SP_WAIT_CONN ? (PyObject *)w->conn->payload : Py_None;
        PyObject *item = Py_BuildValue("(OOsO)", pool ? (PyObject *)pool : Py_None,
                                       aw->future, result_kind(w->result), conn);
        if (list == NULL && item != NULL) {
            list = PyList_New(0);
        }
        if (item == NULL || list == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_XDECREF(list);
            sp_inbox_unpop(&self->inbox, w);
            ssize_t rc = write(self->write_fd, "x", 1);
            (void)rc;  /* a full pipe already means "wake up" */
            return NULL;
        }
        Py_DECREF(item);
        if (pool != NULL) {
            if (w->result == SP_WAIT_CONN) {
                pool->in_use++;
            }
            unlink_from_pool(pool, aw);
        }
        free_waiter(aw);
    }
    if (list == NULL) {
        Py_RETURN_NONE;
    }
    return list;
}

/* Drains the pipe, then takes every served waiter out: the pipe first, so a
 * byte written for a waiter pushed after the last pop is never swallowed. */
static PyObject *
inbox_collect(sp_loop_inbox *self, PyObject *Py_UNUSED(unused))
{
    char buf[256];
    while (read(self->read_fd, buf, sizeof(buf)) > 0) {
    }
    PyObject *served = take_served(self);
    if (served == Py_None) {
        Py_DECREF(served);
        return PyList_New(0);
    }
    return served;
}

/* A release on the inbox's own loop: its hand-overs to this loop's waiters
 * need no wake-up byte, since the releasing task takes them out itself right
 * after (take()). hold() marks the inbox as signaled, so no push asks for a
 * byte until take() empties the inbox and re-arms it; a push from another
 * thread meanwhile is taken by that take() too. A byte already in the pipe
 * only makes the reader collect an empty inbox once. */
static PyObject *
inbox_hold(sp_loop_inbox *self, PyObject *Py_UNUSED(unused))
{
    sp_inbox_hold(&self->inbox);
    Py_RETURN_NONE;
}

static PyObject *
inbox_take(sp_loop_inbox *self, PyObject *Py_UNUSED(unused))
{
    return take_served(self);
}

static PyMethodDef inbox_methods[] = {
    {"fileno", (PyCFunction)inbox_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\n"
     "The read end of the pipe that wakes the loop."},
    {"collect", (PyCFunction)inbox_collect, METH_NOARGS,
     "collect($self, /)\n--\n\n"
     "Served waiters, oldest first: [(pool or None, future, 'conn'|'slot'|'paused'|'closed', conn)]."},
    {"hold", (PyCFunction)inbox_hold, METH_NOARGS,
     "hold($self, /)\n--\n\n"
     "On the inbox's own loop, before a release: no wake-up byte until take()."},
    {"take", (PyCFunction)inbox_take, METH_NOARGS,
     "take($self, /)\n--\n\n"
     "After hold() and the release: served waiters as collect() gives them, or None; "
     "re-arms the wake-up."},
    {NULL, NULL, 0, NULL},
};

/* No tp_traverse or tp_clear: a LoopInbox refers to no Python object (its
 * pipe and its queue of served waiters are C); waiters refer to it, and let
 * go of it when their loop collects them or they are cancelled. */
static PyType_Slot inbox_slots[] = {
    {Py_tp_new, inbox_new},
    {Py_tp_dealloc, inbox_dealloc},
    {Py_tp_methods, inbox_methods},
    {Py_tp_doc, "One event loop's served asyncio waiters and the pipe that wakes it."},
    {0, NULL},
};

PyType_Spec sp_py_loop_inbox_spec = {
    .name = "redis_safepool._core.LoopInbox",
    .basicsize = sizeof(sp_loop_inbox),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = inbox_slots,
};

/* ---- per-loop flavors ------------------------------------------------------- */

/* An asyncio connection belongs to the event loop it was made on, so each
 * loop a pool serves gets a flavor of its own: idle connections and
 * hand-overs never cross loops. The pool counts itself as a user of each,
 * so a loop's idle connections are closed when the loop goes (or the pool). */

int
sp_py_pool_uses_flavor(PoolCore *self, uint32_t flavor)
{
    for (int i = 0; i < self->n_loop_flavors; i++) {
        if (self->loop_flavors[i] == flavor) {
            return 1;
        }
    }
    return 0;
}

static int
flavor_arg(PyObject *arg, uint32_t *out)
{
    unsigned long v = PyLong_AsUnsignedLong(arg);
    if (v == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (v == 0 || v > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "flavor ids are in 1..2**32-1");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

PyObject *
sp_py_pool_use_flavor(PoolCore *self, PyObject *arg)
{
    uint32_t flavor;
    if (flavor_arg(arg, &flavor) < 0) {
        return NULL;
    }
    if (self->ep == NULL || sp_py_pool_uses_flavor(self, flavor)) {
        Py_RETURN_NONE;
    }
    uint32_t *grown = PyMem_RawRealloc(self->loop_flavors,
                                       sizeof(uint32_t) * (size_t)(self->n_loop_flavors + 1));
    if (grown == NULL) {
        return PyErr_NoMemory();
    }
    self->loop_flavors = grown;
    self->loop_flavors[self->n_loop_flavors++] = flavor;
    sp_endpoint_pool_added(self->ep, flavor);
    Py_RETURN_NONE;
}

PyObject *
sp_py_pool_drop_flavor(PoolCore *self, PyObject *arg)
{
    uint32_t flavor;
    if (flavor_arg(arg, &flavor) < 0) {
        return NULL;
    }
    for (int i = 0; i < self->n_loop_flavors; i++) {
        if (self->loop_flavors[i] == flavor) {
            self->loop_flavors[i] = self->loop_flavors[--self->n_loop_flavors];
            if (self->ep != NULL) {
                sp_deferred after = {0};
                sp_endpoint_pool_removed(self->ep, flavor, &after);
                sp_py_finish_deferred(self->st, &after);
            }
            break;
        }
    }
    Py_RETURN_NONE;
}

void
sp_py_pool_drop_loop_flavors(PoolCore *self, sp_deferred *after)
{
    for (int i = 0; i < self->n_loop_flavors && self->ep != NULL; i++) {
        sp_endpoint_pool_removed(self->ep, self->loop_flavors[i], after);
    }
    PyMem_RawFree(self->loop_flavors);
    self->loop_flavors = NULL;
    self->n_loop_flavors = 0;
}

/* ---- checkout ------------------------------------------------------------------ */

PyObject *
sp_py_pool_async_acquire(PoolCore *self, PyObject *args)
{
    PyObject *inbox_obj, *future;
    unsigned int flavor = 0;
    if (!PyArg_ParseTuple(args, "OIO:_async_acquire", &inbox_obj, &flavor, &future)) {
        return NULL;
    }
    if (!PyObject_TypeCheck(inbox_obj, self->st->LoopInboxType)) {
        PyErr_SetString(PyExc_TypeError, "_async_acquire() needs a LoopInbox");
        return NULL;
    }
    if (flavor == 0) {
        flavor = self->flavor;
    }
    if (self->ep == NULL || self->closed) {
        return sp_py_pool_raise_closed(self);
    }
    if (sp_py_pool_check_fork(self) < 0) {
        return NULL;
    }
    if (sp_py_pool_auth_blocked(self, self->ep, flavor)) {
        return NULL;
    }
    if (sp_ptrmap_get(&self->async_by_future, future) != NULL) {
        PyErr_SetString(PyExc_ValueError, "this future is already waiting for a connection");
        return NULL;
    }
    sp_loop_inbox *ib = (sp_loop_inbox *)inbox_obj;
    sp_async_waiter *aw = PyMem_RawCalloc(1, sizeof(*aw));
    if (aw == NULL) {
        return PyErr_NoMemory();
    }
    if (sp_ptrmap_put(&self->async_by_future, future, aw) < 0) {
        PyMem_RawFree(aw);
        return PyErr_NoMemory();
    }
    aw->w.notify_fd = ib->write_fd;
    aw->w.inbox = &ib->inbox;
    aw->w.ticket = ++self->next_ticket;
    aw->started = sp_now();
    sp_deferred after = {0};
    sp_conn *rec = NULL;
    /* The asyncio side keeps the deadline itself (loop.call_later). */
    double deadline = self->timeout == 0 ? 0.0 : -1.0;
    sp_acquire_status st = sp_endpoint_acquire(self->ep, self, flavor, deadline, &aw->w,
                                               &rec, &after);
    if (st == SP_ACQ_QUEUED) {
        /* Linked before sp_py_finish_deferred() runs any Python code: the waiter
         * may be served (and pushed to its inbox) at any moment now. */
        Py_INCREF(future);
        Py_INCREF(inbox_obj);
        aw->future = future;
        aw->inbox_obj = inbox_obj;
        aw->next_of_pool = self->async_waiters;
        if (self->async_waiters) {
            self->async_waiters->prev_of_pool = aw;
        }
        self->async_waiters = aw;
    }
    else {
        sp_ptrmap_del(&self->async_by_future, future);
        PyMem_RawFree(aw);
    }
    sp_py_finish_deferred(self->st, &after);
    switch (st) {
    case SP_ACQ_QUEUED:
        return Py_BuildValue("(sO)", "wait", Py_None);
    case SP_ACQ_CONN:
        self->in_use++;
        return Py_BuildValue("(sO)", "conn", (PyObject *)rec->payload);
    case SP_ACQ_SLOT:
        return Py_BuildValue("(sO)", "slot", Py_None);
    case SP_ACQ_TIMEOUT:
        return sp_py_pool_raise_timeout(self, 0.0);
    default:
        return sp_py_pool_raise_unavailable(self);
    }
}

PyObject *
sp_py_pool_async_cancel(PoolCore *self, PyObject *args)
{
    PyObject *future;
    int timed_out = 0;
    if (!PyArg_ParseTuple(args, "O|p:_async_cancel", &future, &timed_out)) {
        return NULL;
    }
    sp_async_waiter *aw = sp_ptrmap_get(&self->async_by_future, future);
    if (aw == NULL) {
        Py_RETURN_FALSE;  /* already collected (or detached): the loop settles it */
    }
    unlink_from_pool(self, aw);
    sp_deferred after = {0};
    withdraw(self, aw, &after);
    sp_inbox_remove(aw->w.inbox, &aw->w);
    if (timed_out && self->ep != NULL) {
        sp_endpoint_count_timeout(self->ep, sp_now() - aw->started);
    }
    free_waiter(aw);
    sp_py_finish_deferred(self->st, &after);
    Py_RETURN_TRUE;
}

PyObject *
sp_py_pool_async_forget_inbox(PoolCore *self, PyObject *inbox_obj)
{
    /* The inbox's loop is closed or gone: its waiters will never run again. */
    sp_async_waiter *aw = self->async_waiters;
    while (aw) {
        sp_async_waiter *next = aw->next_of_pool;
        if (aw->inbox_obj == inbox_obj) {
            unlink_from_pool(self, aw);
            sp_deferred after = {0};
            withdraw(self, aw, &after);
            sp_inbox_remove(aw->w.inbox, &aw->w);
            free_waiter(aw);
            sp_py_finish_deferred(self->st, &after);
            next = self->async_waiters;  /* Python code ran: start over */
        }
        aw = next;
    }
    Py_RETURN_NONE;
}

PyObject *
sp_py_pool_add(PoolCore *self, PyObject *args)
{
    PyObject *conn;
    int fd;
    unsigned int flavor = 0;
    if (!PyArg_ParseTuple(args, "Oi|I:_add", &conn, &fd, &flavor)) {
        return NULL;
    }
    if (flavor == 0) {
        flavor = self->flavor;
    }
    if (self->ep == NULL) {
        return sp_py_pool_raise_closed(self);
    }
    sp_conn *rec = PyMem_RawMalloc(sizeof(sp_conn));
    if (rec == NULL) {
        return PyErr_NoMemory();
    }
    Py_INCREF(conn);
    if (sp_endpoint_add(self->ep, rec, conn, self, flavor,
                        fd < SP_FD_UNPOLLABLE ? -1 : fd) < 0) {
        Py_DECREF(conn);
        PyMem_RawFree(rec);
        return PyErr_NoMemory();
    }
    sp_auth_accepted(self->ep, flavor);  /* its handshake passed */
    self->in_use++;
    Py_RETURN_NONE;
}

PyObject *
sp_py_pool_slot_failed(PoolCore *self, PyObject *args)
{
    PyObject *exc;
    unsigned int flavor = 0;
    if (!PyArg_ParseTuple(args, "O|I:_slot_failed", &exc, &flavor)) {
        return NULL;
    }
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    if (exc != Py_None) {
        sp_py_pool_report_exception_for(self, flavor ? flavor : self->flavor, exc);
    }
    sp_deferred after = {0};
    sp_endpoint_slot_failed(self->ep, &after);
    sp_py_finish_deferred(self->st, &after);
    Py_RETURN_NONE;
}

PyObject *
sp_py_pool_bury(PoolCore *self, PyObject *conn)
{
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    sp_conn *rec = sp_endpoint_find_inuse(self->ep, conn, self);
    if (rec == NULL) {
        PyObject *cls = sp_py_pool_error_class(self, "ForeignConnectionError",
                                            self->st->ForeignConnectionError);
        PyErr_Format(cls, "connection %R is not checked out from this pool", conn);
        Py_DECREF(cls);
        return NULL;
    }
    self->in_use--;
    sp_py_pool_bury_record(self, rec);
    Py_RETURN_NONE;
}
