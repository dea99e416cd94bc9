/* pool_async.h -- PoolCore's asyncio primitives: queue without blocking, hand-overs. */
#ifndef SP_POOL_ASYNC_H
#define SP_POOL_ASYNC_H

#include "module_state.h"

/* asyncio primitives, in PoolCore's method table. */
PyObject *sp_py_pool_async_acquire(PoolCore *self, PyObject *args);
PyObject *sp_py_pool_async_forget_inbox(PoolCore *self, PyObject *inbox);
PyObject *sp_py_pool_async_cancel(PoolCore *self, PyObject *args);
PyObject *sp_py_pool_add(PoolCore *self, PyObject *args);
PyObject *sp_py_pool_slot_failed(PoolCore *self, PyObject *args);
PyObject *sp_py_pool_bury(PoolCore *self, PyObject *conn);
PyObject *sp_py_pool_use_flavor(PoolCore *self, PyObject *arg);
PyObject *sp_py_pool_drop_flavor(PoolCore *self, PyObject *arg);
void sp_py_pool_drop_loop_flavors(PoolCore *self, sp_deferred *after);
int sp_py_pool_uses_flavor(PoolCore *self, uint32_t flavor);
/* Frees the pool's asyncio waiters not collected yet (dealloc). */
void sp_py_pool_free_async_waiters(PoolCore *self);

#endif /* SP_POOL_ASYNC_H */
