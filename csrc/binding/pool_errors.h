/* pool_errors.h -- what a pool raises and reports: its client family's errors with scrubbed messages, failures told to the endpoint, the fork guard. */
#ifndef SP_POOL_ERRORS_H
#define SP_POOL_ERRORS_H

#include "module_state.h"

/* After fork, the child's pool starts with nothing out (and the checker
 * running): 0, or -1 with an exception. Every pool call starts with it. */
int sp_py_pool_check_fork(PoolCore *self);

/* The exception class `name` of the pool's client family (new reference):
 * the pool class's `_errors` namespace names it (redis_safepool.exceptions
 * for redis-py pools, redis_safepool.valkey.exceptions for valkey-py's);
 * `fallback` (the redis-py family's) when it names none. Keeps any pending
 * exception. */
PyObject *sp_py_pool_error_class(PoolCore *self, const char *name, PyObject *fallback);

/* A release in the `finally` of a failed command: masks the pool's secrets
 * in the exception being handled (and its causes). */
void sp_py_pool_scrub_handled_exception(PoolCore *self);

/* Tells the endpoint what an exception says about the server. */
void sp_py_pool_report_exception(PoolCore *self, PyObject *exc);
/* Same, for a connection of `flavor` (asyncio: the flavor of its loop). */
void sp_py_pool_report_exception_for(PoolCore *self, uint32_t flavor, PyObject *exc);
/* Same, for the exception being raised now (kept raised), about `ep`. */
void sp_py_pool_report_pending_error(PoolCore *self, sp_endpoint *ep, uint32_t flavor);

/* Raise the pool's errors (each returns NULL): closed; unavailable (the
 * message names the endpoint's state); timed out after `waited` seconds.
 * The _on forms name the endpoint the failed call drew from. */
PyObject *sp_py_pool_raise_closed(PoolCore *self);
PyObject *sp_py_pool_raise_unavailable(PoolCore *self);
PyObject *sp_py_pool_raise_unavailable_on(PoolCore *self, sp_endpoint *ep);
PyObject *sp_py_pool_raise_timeout(PoolCore *self, double waited);
PyObject *sp_py_pool_raise_timeout_on(PoolCore *self, sp_endpoint *ep, double waited);
/* The _timeout_error(waited) method: the same error, returned, for an asyncio
 * waiter's future (the caller tells the metrics). */
PyObject *sp_py_pool_timeout_error(PoolCore *self, PyObject *arg);

/* 1 with the credentials error raised when the server rejected `flavor`'s
 * credentials and its backoff runs (see auth_gate.h); 0: go on. */
int sp_py_pool_auth_blocked(PoolCore *self, sp_endpoint *ep, uint32_t flavor);

#endif /* SP_POOL_ERRORS_H */
