/* fd_cache.c -- a pool's cache of socket object -> fd, so release() costs one attribute lookup. */
#include "module_state.h"
#include "fd_cache.h"

#include "conn_ready.h"

/* sp_py_conn_fd() through the pool's cache of socket objects. */
int
sp_py_pool_socket_fd(PoolCore *self, PyObject *conn)
{
    PyObject *sock = sp_py_conn_socket(self, conn);
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
    int fd = sp_py_socket_fileno(self, sock);
    if (fd >= 0) {
        Py_XSETREF(self->fd_cache[slot].sock, sock);  /* keeps our reference */
        self->fd_cache[slot].fd = fd;
    }
    else {
        Py_DECREF(sock);
    }
    return fd;
}

void
sp_py_pool_clear_fd_cache(PoolCore *self)
{
    for (int i = 0; i < SP_FD_CACHE; i++) {
        Py_CLEAR(self->fd_cache[i].sock);
    }
}
