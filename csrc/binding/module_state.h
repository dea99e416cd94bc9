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

extern PyType_Spec sp_pool_core_spec;
extern PyType_Spec sp_loop_inbox_spec;

/* Finishes what an endpoint call left to do: disposes of buried records
 * (disconnect + DECREF, with the GIL, after the lock is released) and wakes
 * async waiters. Keeps any pending exception. */
void sp_finish_after(sp_modstate *st, sp_after *after);

/* Thread that the signal handlers run in (updated after fork). */
extern unsigned long sp_main_thread_ident;

PyObject *sp_stats_dict(sp_endpoint *ep);
/* Puts `ep` on the host budget `shm_name`: None, or a str saying why it
 * stays in process scope (the caller warns), or NULL with an exception. */
PyObject *sp_use_host_budget(sp_endpoint *ep, const char *shm_name, int max_connections);

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
/* Same, for a connection of `flavor` (asyncio: the flavor of its loop). */
void sp_pool_report_exception_for(PoolCore *self, uint32_t flavor, PyObject *exc);
/* 1 with the credentials error raised when the server rejected `flavor`'s
 * credentials and its backoff runs (see auth_gate.h); 0: go on. */
int sp_pool_auth_blocked(PoolCore *self, sp_endpoint *ep, uint32_t flavor);
/* Drops a checked-out record that cannot be used and closes its connection. */
void sp_pool_drop_record(PoolCore *self, sp_conn *rec);
void sp_pool_free_async_waiters(PoolCore *self);

/* Connections as redis-py's ConnectionInterface has them (conn_ready.c). */
/* The socket object (new reference; Py_None when not connected), NULL with an exception. */
PyObject *sp_conn_socket(PoolCore *self, PyObject *conn);
/* fd of the connection's socket, -1 when not connected, -2 with an exception. */
int sp_conn_fd(PoolCore *self, PyObject *conn);
/* 1 when an idle connection's socket and parser hold nothing unread (or,
 * with pushes_ok, only when the socket is still open), 0 otherwise. */
int sp_conn_ready(PoolCore *self, PyObject *conn, int fd);
/* The fd the endpoint records: with pushes_ok, SP_FD_UNPOLLABLE, so neither
 * the checker's idle poll nor its hangup watch mistakes a pending push for a
 * dead socket (sp_conn_ready() finds the socket again at checkout). */
int sp_conn_registered_fd(PoolCore *self, int fd);
/* Release events: 1 when release_hook must run for conn (see PoolCore). */
int sp_conn_release_needs_event(PoolCore *self, PyObject *conn);
/* Tells metrics_hook, if any; an error in it is reported as unraisable. */
void sp_pool_tell_metrics(PoolCore *self, int kind, double wait_s, double create_s);
/* _set_hooks(socket_getter=, pushes_ok=, release_hook=, event_mapping=,
 * event_type=, metrics_hook=, reauth_pending=): sets the fields given. */
PyObject *sp_pool_set_hooks(PoolCore *self, PyObject *args, PyObject *kwds);
/* _set_quiet_listeners(list): the listener list seen holding only re-auth listeners. */
PyObject *sp_pool_set_quiet_listeners(PoolCore *self, PyObject *listeners);
/* Drops the references the fields above hold (dealloc), or visits them (GC). */
void sp_pool_clear_hooks(PoolCore *self);
int sp_pool_visit_hooks(PoolCore *self, visitproc visit, void *arg);

/* asyncio primitives (pool_async.c), in PoolCore's method table. */
PyObject *sp_pool_async_acquire(PoolCore *self, PyObject *args);
PyObject *sp_pool_async_forget_inbox(PoolCore *self, PyObject *inbox);
PyObject *sp_pool_async_cancel(PoolCore *self, PyObject *args);
PyObject *sp_pool_add(PoolCore *self, PyObject *args);
PyObject *sp_pool_slot_failed(PoolCore *self, PyObject *args);
PyObject *sp_pool_discard(PoolCore *self, PyObject *conn);
PyObject *sp_pool_release_fd(PoolCore *self, PyObject *args);
PyObject *sp_pool_use_flavor(PoolCore *self, PyObject *arg);
PyObject *sp_pool_drop_flavor(PoolCore *self, PyObject *arg);
void sp_pool_drop_loop_flavors(PoolCore *self, sp_after *after);
int sp_pool_uses_flavor(PoolCore *self, uint32_t flavor);

#endif
