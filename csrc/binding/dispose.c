/* dispose.c -- deferred work of endpoint calls, done with the GIL after the lock: closing dropped connections, waking asyncio waiters. */
#include "module_state.h"
#include "dispose.h"

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
sp_py_finish_deferred(sp_modstate *st, sp_deferred *after)
{
    PyObject *ev = NULL;
    int fetched = 0;
    /* Closing a connection frees its slot, which may wake a waiter whose
     * flavor needs another eviction: loop until nothing is left. */
    while (after->n_notify > 0 || after->graveyard != NULL) {
        sp_conn *rec = after->graveyard;
        after->graveyard = NULL;
        if (rec != NULL && !fetched) {
            ev = sp_err_take();
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
        sp_deferred_notify(after);
    }
    if (fetched) {
        sp_err_give(ev);
    }
}

void
sp_py_pool_bury_record(PoolCore *self, sp_conn *rec)
{
    sp_deferred after = {0};
    sp_endpoint_bury(rec->ep, rec, &after);
    sp_py_finish_deferred(self->st, &after);
}
