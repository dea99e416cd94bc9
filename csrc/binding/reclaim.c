/* reclaim.c -- checkouts nobody releases: records hold connections weakly, and a dropped one gives its slot back. */
#include "module_state.h"
#include "reclaim.h"

#include "dispose.h"
#include "fd_cache.h"
#include "formers.h"

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
void
sp_py_pool_hold_weakly(PoolCore *self, sp_conn *rec)
{
    PyObject *conn = rec->payload;
    rec->holder_thread = PyThread_get_thread_ident();
    rec->shut_by_pool = 0;
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
sp_conn *
sp_py_pool_hold_strongly(PoolCore *self, PyObject *conn)
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
    return rec;
}

/* _hold_weakly(conn, on_drop): an asyncio checkout is the caller's from now
 * on; if it is dropped unreleased, on_drop() closes its socket and the slot
 * comes back (as for sync checkouts, whose socket dies with them). */
PyObject *
sp_py_pool_hold_weakly_method(PoolCore *self, PyObject *args)
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
    sp_py_pool_hold_weakly(self, rec);
    if (rec->weakref != NULL) {
        rec->on_drop = Py_NewRef(on_drop);
    }
    Py_RETURN_NONE;
}

typedef struct {
    PoolCore *pool;
    PyObject *wr;
    void *payload;           /* found */
    PyObject *on_drop;
} weak_checkout;

static int
take_weak_checkout(sp_conn *rec, void *ctx)
{
    weak_checkout *w = ctx;
    if (rec->state != SP_CONN_INUSE || rec->owner != w->pool || rec->weakref != w->wr) {
        return 0;
    }
    w->payload = rec->payload;
    w->on_drop = rec->on_drop;  /* handed to the caller with its reference */
    rec->on_drop = NULL;
    return 1;
}

/* The connection a checkout record of `pool` on `ep` weakly refers to
 * through `wr`, as a key (it is being destroyed), or NULL; its on_drop (or
 * NULL) goes to *on_drop. */
static void *
find_weak_checkout(sp_endpoint *ep, PoolCore *pool, PyObject *wr, PyObject **on_drop)
{
    weak_checkout w = {pool, wr, NULL, NULL};
    sp_endpoint_walk(ep, take_weak_checkout, &w);
    *on_drop = w.on_drop;
    return w.payload;
}

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
    sp_deferred after = {0};
    if (sp_endpoint_release(ep, self, payload, -1, 0, &after) == SP_REL_OK) {
        self->in_use--;
    }
    if (on_drop != NULL) {
        /* Its socket outlives it in a transport: close it now, while the
         * record (no longer listed) still counts as closing, before
         * sp_py_finish_deferred() gives the slot back. */
        PyObject *r = PyObject_CallNoArgs(on_drop);
        if (r == NULL) {
            PyErr_WriteUnraisable(on_drop);
        }
        Py_XDECREF(r);
        Py_DECREF(on_drop);
    }
    sp_py_pool_clear_fd_cache(self);
    sp_py_finish_deferred(self->st, &after);
    if (ep != self->ep) {
        sp_py_pool_prune_formers(self);
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
