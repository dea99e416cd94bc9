/* module_state.h -- per-interpreter state of the _core module, shared by the binding files. */
#ifndef SP_MODULE_STATE_H
#define SP_MODULE_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "abi_compat.h"

#include "endpoint.h"
#include "inbox.h"

typedef struct {
    PyTypeObject *PoolCoreType;
    PyTypeObject *LoopInboxType;
    /* redis_safepool.exceptions */
    PyObject *PoolTimeoutError;
    PyObject *ServerUnavailableError;
    PyObject *PoolClosedError;
    PyObject *DoubleReleaseError;
    PyObject *ForeignConnectionError;
    PyObject *CredentialsRejectedError;
    PyObject *SafePoolError;  /* base of the runtime errors: a redis ConnectionError */
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
    PyObject *str_parser;     /* readiness of the parser's buffer (conn_ready.c) */
    PyObject *str_buffer;
    PyObject *str_reader;
    PyObject *str_has_data;
    PyObject *str_tell;
    PyObject *str_seek;
    PyObject *str_can_read;
    PyObject *str_re_auth_token;
    PyObject *int_zero;       /* arguments of BytesIO.seek(0, SEEK_END) */
    PyObject *int_two;
    PyObject *str_errors;
    /* disposer(conn) closes a connection the pool dropped (set by Python:
     * asyncio connections must be closed on their own loop). */
    PyObject *disposer;
    /* failure_hook(pool, exc) hears every error get_connection() raises
     * (observe.note_acquire_failed: explain() tells why the last one failed). */
    PyObject *failure_hook;
} sp_modstate;

/* One event loop's inbox (pool_async.c): its served waiters and the pipe
 * that wakes it. The pipe's ends stay open for as long as the object lives,
 * and every waiter naming it holds a reference to it. */
typedef struct {
    PyObject_HEAD
    sp_inbox inbox;
    int ready;                /* inbox initialised */
    int read_fd;
    int write_fd;
} sp_loop_inbox;

/* An asyncio waiter: lives on the heap until its loop collects its result
 * or it is cancelled. `w` is the first member (inbox entries are cast back). */
typedef struct sp_async_waiter {
    sp_waiter w;
    struct sp_async_waiter *prev_of_pool;
    struct sp_async_waiter *next_of_pool;
    PyObject *future;         /* strong: the future its task awaits */
    PyObject *inbox_obj;      /* strong: the sp_loop_inbox named by w.inbox */
    double started;
} sp_async_waiter;

#define SP_FD_CACHE 64
/* A pool's wait for a connection when none is given: redis-py's
 * BlockingConnectionPool default (exported as _core.DEFAULT_TIMEOUT). */
#define SP_DEFAULT_TIMEOUT_S 20.0

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
    /* asyncio waiters of this pool not collected yet, newest first, and the
     * same by future (guarded by the GIL, like everything in PoolCore) */
    struct sp_async_waiter *async_waiters;
    sp_ptrmap async_by_future;
    uint64_t next_ticket;
    PyObject *last_failure_type;   /* borrowed, compared by identity only */
    /* release() hot path: socket object -> fileno, so a release costs one
     * attribute lookup instead of a method call. Holds a reference to each
     * socket object, so no address is reused while it is cached. */
    struct { PyObject *sock; int fd; } fd_cache[SP_FD_CACHE];
    double last_failure_at;
    /* Endpoints this pool was bound to before a reset() moved it elsewhere,
     * kept (with their registry reference) while connections it checked out
     * there are out or a get_connection() call that started there runs:
     * those records stay valid and release() finds them here. */
    sp_endpoint **formers;
    int n_formers;
    int calls_in_flight;      /* get_connection() calls running (GIL-guarded) */
    /* Set from Python (pool.py), all module-level functions or plain data,
     * so no reference cycle runs through them; NULL/0 costs nothing.
     * socket_getter(conn) -> socket or None, for connections whose socket
     * is not conn._sock (client-side caching proxies, other ConnectionInterface
     * implementations). pushes_ok: unread data on an idle socket may be RESP3
     * push messages (client-side caching invalidations): only a closed socket
     * is not ready, and the parser is not asked (as redis-py's pools do). */
    PyObject *socket_getter;
    int pushes_ok;
    /* The parser class last seen at checkout and where it buffers replies
     * (conn_ready.c: SP_PARSER_*), so a checkout probes no attribute that
     * is not there. */
    PyObject *parser_type;
    int parser_kind;
    /* Release events (redis-py's AfterConnectionReleasedEvent): release_hook
     * (pool, conn) dispatches; it is called only when the listener list in
     * event_mapping[event_type] is not the one last seen holding nothing but
     * re-authentication listeners (quiet_listeners, quiet_len), or when a
     * token rotation is pending and conn carries a token. event_mapping NULL
     * with a hook: a dispatcher we cannot look into, always called. */
    PyObject *release_hook;
    PyObject *event_mapping;
    PyObject *event_type;
    PyObject *quiet_listeners;
    Py_ssize_t quiet_len;
    int reauth_pending;
    /* OpenTelemetry (observe_otel.py): metrics_hook(pool, kind, wait_s,
     * create_s), kind 0 checkout, 1 checkout of a new connection, 2 release,
     * 3 timeout; NULL when no recorder is configured. */
    PyObject *metrics_hook;
    /* Callback of the weak references checkout records hold: gives the slot
     * of a connection dropped without release() back. Refers to the pool
     * only weakly, so a checkout never keeps its pool alive. */
    PyObject *reclaim_cb;
} PoolCore;

/* The _core module's definition: types find their module state by it. */
extern struct PyModuleDef sp_py_core_module;

extern PyType_Spec sp_py_pool_core_spec;
extern PyType_Spec sp_py_loop_inbox_spec;

/* Thread that the signal handlers run in (updated after fork). */
extern unsigned long sp_py_main_thread_ident;

PyObject *sp_py_stats_dict(sp_endpoint *ep);
/* Puts `ep` on the host budget `shm_name`: None, or a str saying why it
 * stays in process scope (the caller warns), or NULL with an exception. */
PyObject *sp_py_use_host_budget(sp_endpoint *ep, const char *shm_name, int max_connections);

#endif
