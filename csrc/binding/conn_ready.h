/* conn_ready.h -- a connection through redis-py's interface: socket, readiness, release events, hooks. */
#ifndef SP_CONN_READY_H
#define SP_CONN_READY_H

#include "module_state.h"

/* The socket object (new reference; Py_None when not connected), NULL with an exception. */
PyObject *sp_py_conn_socket(PoolCore *self, PyObject *conn);
/* fd of a socket object, -1 when it is closed (never an exception). */
int sp_py_socket_fileno(PoolCore *self, PyObject *sock);
/* fd of the connection's socket, -1 when not connected, -2 with an exception. */
int sp_py_conn_fd(PoolCore *self, PyObject *conn);
/* 1 when an idle connection's socket and parser hold nothing unread (or,
 * with pushes_ok, only when the socket is still open), 0 otherwise. */
int sp_py_conn_ready(PoolCore *self, PyObject *conn, int fd);
/* The fd the endpoint records: with pushes_ok, SP_FD_UNPOLLABLE, so neither
 * the checker's idle poll nor its hangup watch mistakes a pending push for a
 * dead socket (sp_py_conn_ready() finds the socket again at checkout). */
int sp_py_conn_registered_fd(PoolCore *self, int fd);
/* Release events: 1 when release_hook must run for conn (see PoolCore). */
int sp_py_conn_release_needs_event(PoolCore *self, PyObject *conn);
/* Tells metrics_hook, if any; an error in it is reported as unraisable. */
void sp_py_pool_tell_metrics(PoolCore *self, int kind, double wait_s, double create_s);
/* _set_hooks(socket_getter=, pushes_ok=, release_hook=, event_mapping=,
 * event_type=, metrics_hook=, reauth_pending=): sets the fields given. */
PyObject *sp_py_pool_set_hooks(PoolCore *self, PyObject *args, PyObject *kwds);
/* _set_quiet_listeners(list): the listener list seen holding only re-auth listeners. */
PyObject *sp_py_pool_set_quiet_listeners(PoolCore *self, PyObject *listeners);
/* Drops the references the fields above hold (dealloc), or visits them (GC). */
void sp_py_pool_clear_hooks(PoolCore *self);
int sp_py_pool_visit_hooks(PoolCore *self, visitproc visit, void *arg);

#endif /* SP_CONN_READY_H */
