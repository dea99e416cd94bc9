/* module_state.h -- per-interpreter state of the _core module, shared by the binding files. */
#ifndef SP_MODULE_STATE_H
#define SP_MODULE_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "endpoint.h"

typedef struct {
    PyTypeObject *PoolCoreType;
    /* redis_safepool.exceptions */
    PyObject *PoolTimeoutError;
    PyObject *ServerUnavailableError;
    PyObject *PoolClosedError;
    PyObject *DoubleReleaseError;
    PyObject *ForeignConnectionError;
    PyObject *CredentialsRejectedError;
    /* redis.exceptions, to classify connect errors */
    PyObject *BusyLoadingError;
    PyObject *AuthenticationError;
    PyObject *RedisTimeoutError;
    /* interned attribute names */
    PyObject *str_sock;
    PyObject *str_fileno;
    PyObject *str_make_connection;
    PyObject *str_connect;
    PyObject *str_disconnect;
    PyObject *str_pid;
    PyObject *str_should_reconnect;
    PyObject *str_errors;
    /* disposer(conn) closes a connection the pool dropped (set by Python:
     * asyncio connections must be closed on their own loop). */
    PyObject *disposer;
    /* failure_hook(pool, exc) hears every error get_connection() raises
     * (observe.note_acquire_failed: explain() tells why the last one failed). */
    PyObject *failure_hook;
} sp_modstate;

/* An asyncio waiter: lives on the heap until the loop collects its result. */
typedef struct sp_async_waiter {
    sp_waiter w;
    struct sp_async_waiter *next_of_pool;
    double started;
} sp_async_waiter;

#define SP_FD_CACHE 64

/* The Python half of a pool: the budget it draws from and its own books. */
typedef struct {
    PyObject_HEAD
    sp_modstate *st;
    sp_endpoint *ep;          /* NULL until _bind() */
    uint32_t flavor;
    int flavor_counted;       /* counted in ep's flavor table */
    double timeout;           /* seconds; < 0 waits forever */
    int closed;
    int check_reconnect;      /* call should_reconnect() on release */
    uint64_t fork_epoch;
    Py_ssize_t in_use;        /* connections this pool object has out */
    uint32_t *loop_flavors;   /* asyncio: one flavor per event loop it served */
    int n_loop_flavors;
    struct sp_async_waiter *async_waiters;  /* asyncio waiters of this pool, newest first */
    uint64_t next_ticket;
    PyObject *last_failure_type;   /* borrowed, compared by identity only */
    /* release() hot path: socket object -> fileno, so a release costs one
     * attribute lookup instead of a method call. Holds a reference to each
     * socket object, so no address is reused while it is cached. */
    struct { PyObject *sock; int fd; } fd_cache[SP_FD_CACHE];
    double last_failure_at;
} PoolCore;

extern PyType_Spec sp_pool_core_spec;

/* Finishes what an endpoint call left to do: disposes of buried records
 * (disconnect + DECREF, with the GIL, after the lock is released) and wakes
 * async waiters. Keeps any pending exception. */
void sp_finish_after(sp_modstate *st, sp_after *after);

/* Thread that the signal handlers run in (updated after fork). */
extern unsigned long sp_main_thread_ident;

PyObject *sp_stats_dict(sp_endpoint *ep);

/* Shared by pool_type.c and pool_async.c. */
int sp_pool_check_fork(PoolCore *self);
PyObject *sp_pool_raise_closed(PoolCore *self);
PyObject *sp_pool_raise_unavailable(PoolCore *self);
PyObject *sp_pool_raise_timeout(PoolCore *self, double waited);
/* The exception class `name` of the pool's client family (new reference):
 * the pool class's `_errors` namespace names it (redis_safepool.exceptions
 * for redis-py pools, redis_safepool.valkey.exceptions for valkey-py's);
 * `fallback` (the redis-py family's) when it names none. Keeps any pending
 * exception. */
PyObject *sp_pool_error_class(PoolCore *self, const char *name, PyObject *fallback);
void sp_pool_report_exception(PoolCore *self, PyObject *exc);
/* Drops a checked-out record that cannot be used and closes its connection. */
void sp_pool_drop_record(PoolCore *self, sp_conn *rec);
void sp_pool_free_async_waiters(PoolCore *self);

/* asyncio primitives (pool_async.c), in PoolCore's method table. */
PyObject *sp_pool_async_acquire(PoolCore *self, PyObject *args);
PyObject *sp_pool_async_ready(PoolCore *self, PyObject *unused);
PyObject *sp_pool_async_cancel(PoolCore *self, PyObject *args);
PyObject *sp_pool_add(PoolCore *self, PyObject *args);
PyObject *sp_pool_slot_failed(PoolCore *self, PyObject *exc);
PyObject *sp_pool_discard(PoolCore *self, PyObject *conn);
PyObject *sp_pool_release_fd(PoolCore *self, PyObject *args);
PyObject *sp_pool_use_flavor(PoolCore *self, PyObject *arg);
PyObject *sp_pool_drop_flavor(PoolCore *self, PyObject *arg);
void sp_pool_drop_loop_flavors(PoolCore *self, sp_after *after);
int sp_pool_uses_flavor(PoolCore *self, uint32_t flavor);

#endif
