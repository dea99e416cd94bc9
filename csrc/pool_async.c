/* pool_async.c -- asyncio primitives of PoolCore: queue without blocking, collect results via a notify fd. */
#include <limits.h>
#include <string.h>

#include "clock.h"
#include "module_state.h"

/* An asyncio task never blocks in C. It joins the same FIFO queue as the
 * threads, with a heap waiter that names a notify fd (a pipe its event loop
 * reads). Whoever serves the waiter (a release in any thread, the checker)
 * writes a byte to that fd after dropping the endpoint lock; the loop then
 * calls _async_ready() and resolves the futures. */

static sp_async_waiter *
find_waiter(PoolCore *self, uint64_t ticket, sp_async_waiter ***link_out)
{
    sp_async_waiter **link = &self->async_waiters;
    while (*link && (*link)->w.ticket != ticket) {
        link = &(*link)->next_of_pool;
    }
    *link_out = link;
    return *link;
}

void
sp_pool_free_async_waiters(PoolCore *self)
{
    /* Called after sp_endpoint_fail_pool_waiters(): none is queued any more,
     * and nothing they were handed is lost (closed waiters hold nothing). */
    sp_async_waiter *aw = self->async_waiters;
    self->async_waiters = NULL;
    while (aw) {
        sp_async_waiter *next = aw->next_of_pool;
        if (self->ep != NULL) {
            sp_after after = {0};
            sp_endpoint_cancel(self->ep, &aw->w, &after);
            sp_finish_after(self->st, &after);
        }
        PyMem_RawFree(aw);
        aw = next;
    }
}

/* ---- per-loop flavors ------------------------------------------------------- */

/* An asyncio connection belongs to the event loop it was made on, so each
 * loop a pool serves gets a flavor of its own: idle connections and
 * hand-overs never cross loops. The pool counts itself as a user of each,
 * so a loop's idle connections are closed when the loop goes (or the pool). */

int
sp_pool_uses_flavor(PoolCore *self, uint32_t flavor)
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
sp_pool_use_flavor(PoolCore *self, PyObject *arg)
{
    uint32_t flavor;
    if (flavor_arg(arg, &flavor) < 0) {
        return NULL;
    }
    if (self->ep == NULL || sp_pool_uses_flavor(self, flavor)) {
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
sp_pool_drop_flavor(PoolCore *self, PyObject *arg)
{
    uint32_t flavor;
    if (flavor_arg(arg, &flavor) < 0) {
        return NULL;
    }
    for (int i = 0; i < self->n_loop_flavors; i++) {
        if (self->loop_flavors[i] == flavor) {
            self->loop_flavors[i] = self->loop_flavors[--self->n_loop_flavors];
            if (self->ep != NULL) {
                sp_after after = {0};
                sp_endpoint_pool_removed(self->ep, flavor, &after);
                sp_finish_after(self->st, &after);
            }
            break;
        }
    }
    Py_RETURN_NONE;
}

void
sp_pool_drop_loop_flavors(PoolCore *self, sp_after *after)
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
sp_pool_async_acquire(PoolCore *self, PyObject *args)
{
    long fd;
    unsigned int flavor = 0;
    if (!PyArg_ParseTuple(args, "l|I:_async_acquire", &fd, &flavor)) {
        return NULL;
    }
    if (flavor == 0) {
        flavor = self->flavor;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "notify_fd must be a file descriptor");
        return NULL;
    }
    if (self->ep == NULL || self->closed) {
        return sp_pool_raise_closed(self);
    }
    if (sp_pool_check_fork(self) < 0) {
        return NULL;
    }
    sp_async_waiter *aw = PyMem_RawCalloc(1, sizeof(*aw));
    if (aw == NULL) {
        return PyErr_NoMemory();
    }
    aw->w.notify_fd = (int)fd;
    aw->w.ticket = ++self->next_ticket;
    aw->started = sp_now();
    sp_after after = {0};
    sp_conn *rec = NULL;
    /* The asyncio side keeps the deadline itself (loop.call_later). */
    double deadline = self->timeout == 0 ? 0.0 : -1.0;
    sp_acquire_status st = sp_endpoint_acquire(self->ep, self, flavor, deadline, &aw->w,
                                               &rec, &after);
    sp_finish_after(self->st, &after);
    switch (st) {
    case SP_ACQ_QUEUED:
        aw->next_of_pool = self->async_waiters;
        self->async_waiters = aw;
        return Py_BuildValue("(sK)", "wait", (unsigned long long)aw->w.ticket);
    case SP_ACQ_CONN:
        PyMem_RawFree(aw);
        self->in_use++;
        return Py_BuildValue("(sO)", "conn", (PyObject *)rec->payload);
    case SP_ACQ_SLOT:
        PyMem_RawFree(aw);
        return Py_BuildValue("(sO)", "slot", Py_None);
    case SP_ACQ_TIMEOUT:
        PyMem_RawFree(aw);
        return sp_pool_raise_timeout(self, 0.0);
    default:
        PyMem_RawFree(aw);
        return sp_pool_raise_unavailable(self);
    }
}

PyObject *
sp_pool_async_ready(PoolCore *self, PyObject *Py_UNUSED(unused))
{
    PyObject *list = PyList_New(0);
    if (list == NULL || self->ep == NULL) {
        return list;
    }
    sp_async_waiter **link = &self->async_waiters;
    while (*link) {
        sp_async_waiter *aw = *link;
        pthread_mutex_lock(&self->ep->lock);
        sp_wait_result r = aw->w.result;
        pthread_mutex_unlock(&self->ep->lock);
        if (r == SP_WAIT_PENDING) {
            link = &aw->next_of_pool;
            continue;
        }
        const char *kind = r == SP_WAIT_CONN ? "conn" : r == SP_WAIT_SLOT ? "slot"
                         : r == SP_WAIT_PAUSED ? "paused" : "closed";
        PyObject *conn = r == SP_WAIT_CONN ? (PyObject *)aw->w.conn->payload : Py_None;
        PyObject *item = Py_BuildValue("(KsO)", (unsigned long long)aw->w.ticket, kind, conn);
        if (item == NULL || PyList_Append(list, item) < 0) {
            /* Leave it queued for the next call: nothing is lost. */
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
        if (r == SP_WAIT_CONN) {
            self->in_use++;
        }
        *link = aw->next_of_pool;
        PyMem_RawFree(aw);
    }
    return list;
}

PyObject *
sp_pool_async_cancel(PoolCore *self, PyObject *args)
{
    unsigned long long ticket;
    int timed_out = 0;
    if (!PyArg_ParseTuple(args, "K|p:_async_cancel", &ticket, &timed_out)) {
        return NULL;
    }
    sp_async_waiter **link;
    sp_async_waiter *aw = find_waiter(self, ticket, &link);
    if (aw == NULL || self->ep == NULL) {
        Py_RETURN_FALSE;  /* already collected: the caller owns what it got */
    }
    *link = aw->next_of_pool;
    sp_after after = {0};
    sp_endpoint_cancel(self->ep, &aw->w, &after);
    if (timed_out) {
        sp_endpoint_count_timeout(self->ep, sp_now() - aw->started);
    }
    PyMem_RawFree(aw);
    sp_finish_after(self->st, &after);
    Py_RETURN_TRUE;
}

PyObject *
sp_pool_add(PoolCore *self, PyObject *args)
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
        return sp_pool_raise_closed(self);
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
    self->in_use++;
    Py_RETURN_NONE;
}

PyObject *
sp_pool_slot_failed(PoolCore *self, PyObject *exc)
{
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    if (exc != Py_None) {
        sp_pool_report_exception(self, exc);
    }
    sp_after after = {0};
    sp_endpoint_slot_failed(self->ep, &after);
    sp_finish_after(self->st, &after);
    Py_RETURN_NONE;
}

PyObject *
sp_pool_discard(PoolCore *self, PyObject *conn)
{
    if (self->ep == NULL) {
        Py_RETURN_NONE;
    }
    sp_conn *rec = sp_endpoint_find_inuse(self->ep, conn, self);
    if (rec == NULL) {
        PyObject *cls = sp_pool_error_class(self, "ForeignConnectionError",
                                            self->st->ForeignConnectionError);
        PyErr_Format(cls, "connection %R is not checked out from this pool", conn);
        Py_DECREF(cls);
        return NULL;
    }
    self->in_use--;
    sp_pool_drop_record(self, rec);
    Py_RETURN_NONE;
}
