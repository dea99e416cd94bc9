/* reclaim.h -- checkouts nobody releases: records hold connections weakly, and a dropped one gives its slot back. */
#ifndef SP_RECLAIM_H
#define SP_RECLAIM_H

#include "module_state.h"

/* Hands the record's reference to its connection to the calling thread (its
 * holder from now on); the record keeps a weak one whose callback gives the
 * slot back if it is dropped. */
void sp_py_pool_hold_weakly(PoolCore *self, sp_conn *rec);
/* Back from the caller (release): the record owns a reference again. The
 * record, or NULL when the connection is not out from this pool. */
sp_conn *sp_py_pool_hold_strongly(PoolCore *self, PyObject *conn);
/* The _hold_weakly(conn, on_drop) method (asyncio checkouts). */
PyObject *sp_py_pool_hold_weakly_method(PoolCore *self, PyObject *args);

#endif /* SP_RECLAIM_H */
