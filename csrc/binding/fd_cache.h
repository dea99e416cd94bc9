/* fd_cache.h -- a pool's cache of socket object -> fd, so release() costs one attribute lookup. */
#ifndef SP_FD_CACHE_H
#define SP_FD_CACHE_H

#include "module_state.h"

/* sp_py_conn_fd() through the pool's cache of socket objects: the fd, -1 when
 * not connected, -2 with an exception. */
int sp_py_pool_socket_fd(PoolCore *self, PyObject *conn);
/* Lets go of every cached socket object. */
void sp_py_pool_clear_fd_cache(PoolCore *self);

#endif /* SP_FD_CACHE_H */
