/* module.c -- the redis_safepool._core extension module: multi-phase init, module state, functions. */
#include "module_state.h"

#include <limits.h>

#include "checker.h"
#include "clock.h"
#include "events.h"
#include "forksafe.h"
#include "net.h"
#include "probe.h"
#include "registry.h"
#include "watch.h"

#include "dispose.h"

unsigned long sp_py_main_thread_ident;

static sp_modstate *
get_state(PyObject *module)
{
    return (sp_modstate *)PyModule_GetState(module);
}

/* ---- stats ---------------------------------------------------------------------- */

static int
set_item(PyObject *d, const char *key, PyObject *v)
{
    if (v == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

/* A number from the server's view, None while unknown (-1). */
static PyObject *
count_or_none(long long v)
{
    if (v < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(v);
}

static PyObject *
text_or_none(const char *s)
{
    if (s[0] == '\0') {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *
host_number(const sp_stats *s, long long v)
{
    if (!s->host_scope) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(v);
}

/* `scope` and the host's numbers (None in process scope). */
static int
set_host_items(PyObject *d, const sp_stats *s)
{
    if (set_item(d, "scope", PyUnicode_FromString(s->host_scope ? "host" : "process")) < 0 ||
        set_item(d, "host_total", host_number(s, s->host.total)) < 0 ||
        set_item(d, "host_in_use", host_number(s, s->host.in_use)) < 0 ||
        set_item(d, "host_processes", host_number(s, s->host.processes)) < 0 ||
        set_item(d, "host_waiting", host_number(s, s->host.waiting)) < 0 ||
        set_item(d, "host_reclaimed", host_number(s, (long long)s->host.reclaimed)) < 0 ||
        set_item(d, "host_connecting", host_number(s, s->host.connecting)) < 0 ||
        set_item(d, "host_max_connecting", host_number(s, s->host.max_connecting)) < 0 ||
        set_item(d, "host_probes_led", host_number(s, (long long)s->host.probes_led)) < 0 ||
        set_item(d, "host_probes_skipped",
                 host_number(s, (long long)s->host.probes_skipped)) < 0) {
        return -1;
    }
    if (s->host_scope) {
        /* The budget in force is the host's (another process may have changed it). */
        return set_item(d, "max_connections", PyLong_FromLong(s->host.max_connections));
    }
    return 0;
}

/* The server's view of its clients and this process's allowance. */
static int
set_server_view(PyObject *d, const sp_stats *s)
{
    const sp_server_view *v = &s->server_view;
    int known = sp_server_view_usable(v);
    PyObject *headroom = known ? PyLong_FromLongLong(v->maxclients - v->connected_clients)
                               : (Py_INCREF(Py_None), Py_None);
    return set_item(d, "server_connected_clients", count_or_none(v->connected_clients)) < 0 ||
                   set_item(d, "server_maxclients", count_or_none(v->maxclients)) < 0 ||
                   set_item(d, "server_headroom", headroom) < 0 ||
                   set_item(d, "server_rejected_connections",
                            count_or_none(v->rejected_connections)) < 0 ||
                   set_item(d, "server_reserve", count_or_none(known ? s->server_reserve : -1)) < 0 ||
                   set_item(d, "server_view_error", text_or_none(s->server_view_error)) < 0 ||
                   set_item(d, "allowance", PyLong_FromLong(s->allowance)) < 0 ||
                   set_item(d, "allowance_decreases",
                            PyLong_FromUnsignedLongLong(s->allowance_decreases)) < 0
               ? -1
               : 0;
}

PyObject *
sp_py_stats_dict(sp_endpoint *ep)
{
    sp_stats s;
    sp_endpoint_stats(ep, &s);
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (set_item(d, "endpoint", PyUnicode_FromString(sp_endpoint_label(ep))) < 0 ||
        set_item(d, "max_connections", PyLong_FromLong(s.max_connections)) < 0 ||
        set_item(d, "in_use", PyLong_FromLong(s.in_use)) < 0 ||
        set_item(d, "idle", PyLong_FromLong(s.idle)) < 0 ||
        set_item(d, "connecting", PyLong_FromLong(s.connecting)) < 0 ||
        set_item(d, "closing", PyLong_FromLong(s.closing)) < 0 ||
        set_item(d, "total", PyLong_FromLong(s.total)) < 0 ||
        set_item(d, "created", PyLong_FromUnsignedLongLong(s.created)) < 0 ||
        set_item(d, "closed", PyLong_FromUnsignedLongLong(s.closed)) < 0 ||
        set_item(d, "waits", PyLong_FromUnsignedLongLong(s.waits)) < 0 ||
        set_item(d, "wait_time_total", PyFloat_FromDouble(s.wait_total_s)) < 0 ||
        set_item(d, "wait_time_max", PyFloat_FromDouble(s.wait_max_s)) < 0 ||
        set_item(d, "timeouts", PyLong_FromUnsignedLongLong(s.timeouts)) < 0 ||
        set_item(d, "waiters", PyLong_FromLong(s.waiters)) < 0 ||
        set_item(d, "pools", PyLong_FromLong(s.pools)) < 0 ||
        set_item(d, "state", PyUnicode_FromString(sp_state_name(s.state))) < 0 ||
        set_item(d, "state_since", PyFloat_FromDouble(s.state_since_wall)) < 0 ||
        set_item(d, "state_reason", text_or_none(s.state_reason)) < 0 ||
        set_item(d, "last_error", text_or_none(s.last_error)) < 0 ||
        set_item(d, "run_id", text_or_none(s.run_id)) < 0 ||
        set_item(d, "generation", PyLong_FromUnsignedLongLong(s.generation)) < 0 ||
        set_item(d, "probes", PyLong_FromUnsignedLongLong(s.probes)) < 0 ||
        set_item(d, "probe_failures", PyLong_FromUnsignedLongLong(s.probe_failures)) < 0 ||
        set_item(d, "refused_by_state", PyLong_FromUnsignedLongLong(s.refused_by_state)) < 0 ||
        set_item(d, "dead_idle_closed", PyLong_FromUnsignedLongLong(s.dead_idle_closed)) < 0 ||
        set_item(d, "peer_hangups", PyLong_FromUnsignedLongLong(s.peer_hangups)) < 0 ||
        set_item(d, "transitions", PyLong_FromUnsignedLongLong(s.transitions)) < 0 ||
        set_item(d, "connect_failures", PyLong_FromUnsignedLongLong(s.connect_failures)) < 0 ||
        set_item(d, "max_idle_time", PyFloat_FromDouble(s.max_idle_time)) < 0 ||
        set_item(d, "max_lifetime", PyFloat_FromDouble(s.max_lifetime)) < 0 ||
        set_host_items(d, &s) < 0 ||
        set_server_view(d, &s) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static int
add_stats(sp_endpoint *ep, void *arg)
{
    PyObject *all = arg;
    if (PyErr_Occurred()) {
        return 1;
    }
    PyObject *d = sp_py_stats_dict(ep);
    if (d == NULL) {
        return 1;
    }
    int rc = PyDict_SetItemString(all, sp_endpoint_label(ep), d);
    Py_DECREF(d);
    return rc < 0;
}

static PyObject *
core_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    PyObject *all = PyDict_New();
    if (all == NULL) {
        return NULL;
    }
    /* The callbacks run with the GIL held and take only endpoint locks. */
    sp_registry_foreach(add_stats, all);
    if (PyErr_Occurred()) {
        Py_DECREF(all);
        return NULL;
    }
    return all;
}

/* ---- set_budget ------------------------------------------------------------------ */

static PyObject *
core_set_budget(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "max_connections", "host", "port", "unix_path",
                             "username", "password", "tls", "shm_name", NULL};
    const char *key, *host = NULL, *unix_path = NULL, *username = NULL, *password = NULL;
    const char *shm_name = NULL;
    int max_connections, port = -1, tls = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "si|zizzzpz:set_budget", kwlist, &key,
                                     &max_connections, &host, &port, &unix_path, &username,
                                     &password, &tls, &shm_name)) {
        return NULL;
    }
    if (max_connections < 1) {
        PyErr_SetString(PyExc_ValueError, "max_connections must be at least 1");
        return NULL;
    }
    sp_address addr = {host, port, unix_path, username, password, tls};
    sp_deferred after = {0};
    sp_endpoint *ep = sp_registry_configure(key, key, max_connections, &addr, &after);
    if (ep == NULL) {
        return PyErr_NoMemory();
    }
    sp_py_finish_deferred(get_state(module), &after);
    PyObject *note = Py_None;
    Py_INCREF(note);
    if (shm_name != NULL && !sp_endpoint_on_host_budget(ep)) {
        Py_DECREF(note);
        note = sp_py_use_host_budget(ep, shm_name, max_connections);
        if (note == NULL) {
            sp_registry_unbind(ep);
            return NULL;
        }
        if (note == Py_None) {
            sp_endpoint_set_max(ep, max_connections, &after);  /* the host's, explicitly */
            sp_py_finish_deferred(get_state(module), &after);
        }
    }
    sp_registry_unbind(ep);  /* configure() took a reference for the call */
    return note;
}

/* ---- host scope ----------------------------------------------------------------- */

PyObject *
sp_py_use_host_budget(sp_endpoint *ep, const char *shm_name, int max_connections)
{
    char err[200] = "";
    int created = 0;
    sp_host *h;
    Py_BEGIN_ALLOW_THREADS
    h = sp_host_attach(shm_name, max_connections, &created, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (h == NULL) {
        return PyUnicode_FromString(err);
    }
    if (sp_endpoint_set_host(ep, h) < 0) {
        sp_host_detach(h);
        return PyUnicode_FromString("the endpoint already has connections in process scope");
    }
    Py_RETURN_NONE;
}

static PyObject *
core_host_view(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "host_view() takes a segment name");
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    sp_host_stats hs;
    char err[200] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = sp_host_view(name, &hs, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_SetString(PyExc_OSError, err);
        return NULL;
    }
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:K,s:s,s:i,s:i,s:K,s:K}", "max_connections",
                         hs.max_connections, "total", hs.total, "in_use", hs.in_use,
                         "processes", hs.processes, "waiting", hs.waiting, "reclaimed",
                         (unsigned long long)hs.reclaimed, "state",
                         hs.health_state < 0 ? "unknown" : sp_state_name((sp_state)hs.health_state),
                         "connecting", hs.connecting, "max_connecting", hs.max_connecting,
                         "probes_led", (unsigned long long)hs.probes_led, "probes_skipped",
                         (unsigned long long)hs.probes_skipped);
}

/* ---- checker -------------------------------------------------------------------- */

static PyObject *
core_checker_config(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"interval", "recover_interval", "backoff_min", "backoff_max",
                             "probe_timeout", "enabled", "server_reserve",
                             "server_reserve_min", NULL};
    sp_checker_config cfg;
    sp_checker_get_config(&cfg);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|dddddpdi:checker_config", kwlist,
                                     &cfg.interval, &cfg.recover_interval, &cfg.backoff_min,
                                     &cfg.backoff_max, &cfg.probe_timeout, &cfg.enabled,
                                     &cfg.server_reserve, &cfg.server_reserve_min)) {
        return NULL;
    }
    if (!(cfg.server_reserve >= 0 && cfg.server_reserve < 1) || cfg.server_reserve_min < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "server_reserve must be a fraction in [0, 1) and server_reserve_min >= 0");
        return NULL;
    }
    if (!(cfg.interval > 0) || !(cfg.recover_interval > 0) || !(cfg.backoff_min > 0) ||
        !(cfg.backoff_max >= cfg.backoff_min) || !(cfg.probe_timeout > 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "checker intervals and timeouts must be > 0 and backoff_max >= backoff_min");
        return NULL;
    }
    if ((args && PyTuple_GET_SIZE(args) > 0) || (kwds && PyDict_GET_SIZE(kwds) > 0)) {
        /* Only a call that changes something writes: a plain read must not
         * put back values another thread changed in the meantime. */
        sp_checker_set_config(&cfg);
    }
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:d,s:O,s:d,s:i}", "interval", cfg.interval,
                         "recover_interval", cfg.recover_interval, "backoff_min", cfg.backoff_min,
                         "backoff_max", cfg.backoff_max, "probe_timeout", cfg.probe_timeout,
                         "enabled", cfg.enabled ? Py_True : Py_False, "server_reserve",
                         cfg.server_reserve, "server_reserve_min", cfg.server_reserve_min);
}

static PyObject *
core_checker_running(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(sp_checker_running());
}

static PyObject *
core_shutdown(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    Py_BEGIN_ALLOW_THREADS
    sp_checker_stop();
    sp_events_interrupt();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *
core_wait_events(PyObject *module, PyObject *arg)
{
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    sp_event events[32];
    unsigned long dropped = 0;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = sp_events_wait(events, 32, timeout, &dropped);
    Py_END_ALLOW_THREADS
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue("(dssss)", events[i].when, events[i].endpoint,
                                       events[i].old_state, events[i].new_state,
                                       events[i].reason);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return Py_BuildValue("(Nk)", list, dropped);
}

static PyObject *
core_fork_epoch(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(sp_fork_epoch());
}

static PyObject *
core_set_disposer(PyObject *module, PyObject *fn)
{
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "disposer must be callable or None");
        return NULL;
    }
    sp_modstate *st = get_state(module);
    Py_XSETREF(st->disposer, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *
core_set_failure_hook(PyObject *module, PyObject *fn)
{
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "failure hook must be callable or None");
        return NULL;
    }
    sp_modstate *st = get_state(module);
    Py_XSETREF(st->failure_hook, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *
core_fd_idle_ok(PyObject *module, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(fd >= 0 && fd <= INT_MAX && sp_fd_idle_ok((int)fd));
}

static PyObject *
core_unwatch(PyObject *module, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd >= 0 && fd <= INT_MAX) {
        sp_watch_remove((int)fd);
    }
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"_set_disposer", core_set_disposer, METH_O, "_set_disposer($module, fn, /)\n--\n\n"
     "Set the callable that closes dropped connections."},
    {"_set_failure_hook", core_set_failure_hook, METH_O,
     "_set_failure_hook($module, fn, /)\n--\n\n"
     "Set failure_hook(pool, exc), called when get_connection() raises."},
    {"fd_idle_ok", core_fd_idle_ok, METH_O, "fd_idle_ok($module, fd, /)\n--\n\n"
     "True if the socket has nothing to read and is not hung up."},
    {"unwatch", core_unwatch, METH_O, "unwatch($module, fd, /)\n--\n\n"
     "Stop watching a socket we are about to close (our close is no hangup)."},
    {"stats", core_stats, METH_NOARGS, "stats($module, /)\n--\n\n"
     "Counters of every endpoint: {label: {...}}."},
    {"host_view", (PyCFunction)core_host_view, METH_O,
     "host_view($module, segment_name, /)\n--\n\n"
     "The host budget's numbers, read from its shared segment without attaching."},
    {"set_budget", (PyCFunction)(void (*)(void))core_set_budget, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("set_budget($module, /, key, max_connections, host=None, port=-1, unix_path=None, "
               "username=None, password=None, tls=False, shm_name=None)\n--\n\n"
               "Set an endpoint's max_connections, creating it if needed; None, or why it\n"
               "keeps a process budget when shm_name asked for a host one.")},
    {"checker_config", (PyCFunction)(void (*)(void))core_checker_config,
     METH_VARARGS | METH_KEYWORDS,
     "checker_config($module, /, interval=..., recover_interval=..., backoff_min=..., "
     "backoff_max=..., probe_timeout=..., enabled=..., server_reserve=..., "
     "server_reserve_min=...)\n--\n\n"
     "Read or change the health checker's intervals."},
    {"checker_running", core_checker_running, METH_NOARGS, "checker_running($module, /)\n--\n\n"
     "Whether the checker thread runs."},
    {"shutdown", core_shutdown, METH_NOARGS, "shutdown($module, /)\n--\n\n"
     "Stop the checker thread (interpreter exit)."},
    {"wait_events", core_wait_events, METH_O, "wait_events($module, timeout, /)\n--\n\n"
     "The state transitions since the last call, waiting up to timeout seconds:\n"
     "([(when, endpoint, old, new, reason)], dropped)."},
    {"fork_epoch", core_fork_epoch, METH_NOARGS, "fork_epoch($module, /)\n--\n\n"
     "Bumped in every child after fork()."},
    {NULL, NULL, 0, NULL},
};

/* ---- module lifecycle ----------------------------------------------------------- */

static int
import_attr(PyObject **out, const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL) {
        return -1;
    }
    *out = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return *out ? 0 : -1;
}

static int
core_exec(PyObject *module)
{
    sp_modstate *st = get_state(module);
    /* The endpoint registry is process-wide and holds the main interpreter's
     * objects. The Py_mod_multiple_interpreters slot (below) says so to 3.12+
     * in the version-specific build only; this check holds for every build
     * and version (the stable ABI of 3.10 has no such slot, nor has 3.11). */
    if (PyInterpreterState_GetID(PyInterpreterState_Get()) != 0) {
        PyErr_SetString(PyExc_ImportError,
                        "redis_safepool._core does not support subinterpreters");
        return -1;
    }
    if (sp_forksafe_install() != 0) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
        return -1;
    }
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        return -1;
    }
    PyObject *main_thread = PyObject_CallMethod(threading, "main_thread", NULL);
    Py_DECREF(threading);
    PyObject *ident = main_thread ? PyObject_GetAttrString(main_thread, "ident") : NULL;
    Py_XDECREF(main_thread);
    if (ident == NULL) {
        return -1;
    }
    sp_py_main_thread_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (PyErr_Occurred()) {
        return -1;
    }

    st->PoolCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &sp_py_pool_core_spec, NULL);
    if (st->PoolCoreType == NULL || PyModule_AddType(module, st->PoolCoreType) < 0) {
        return -1;
    }
    st->LoopInboxType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &sp_py_loop_inbox_spec,
                                                                 NULL);
    if (st->LoopInboxType == NULL || PyModule_AddType(module, st->LoopInboxType) < 0) {
        return -1;
    }
    /* Facts the Python layer takes from here rather than repeat. */
    PyObject *timeout = PyFloat_FromDouble(SP_DEFAULT_TIMEOUT_S);
    int added = timeout != NULL ? PyModule_AddObjectRef(module, "DEFAULT_TIMEOUT", timeout) : -1;
    Py_XDECREF(timeout);
    if (added < 0 || PyModule_AddIntConstant(module, "FD_UNPOLLABLE", SP_FD_UNPOLLABLE) < 0) {
        return -1;
    }
    const char *exc = "redis_safepool.exceptions";
    if (import_attr(&st->PoolTimeoutError, exc, "PoolTimeoutError") < 0 ||
        import_attr(&st->ServerUnavailableError, exc, "ServerUnavailableError") < 0 ||
        import_attr(&st->PoolClosedError, exc, "PoolClosedError") < 0 ||
        import_attr(&st->DoubleReleaseError, exc, "DoubleReleaseError") < 0 ||
        import_attr(&st->ForeignConnectionError, exc, "ForeignConnectionError") < 0 ||
        import_attr(&st->CredentialsRejectedError, exc, "CredentialsRejectedError") < 0 ||
        import_attr(&st->SafePoolError, exc, "SafePoolError") < 0 ||
        import_attr(&st->BusyLoadingError, "redis.exceptions", "BusyLoadingError") < 0 ||
        import_attr(&st->AuthenticationError, "redis.exceptions", "AuthenticationError") < 0 ||
        import_attr(&st->RedisTimeoutError, "redis.exceptions", "TimeoutError") < 0) {
        return -1;
    }
    if ((st->str_sock = PyUnicode_InternFromString("_sock")) == NULL ||
        (st->str_fileno = PyUnicode_InternFromString("fileno")) == NULL ||
        (st->str_make_connection = PyUnicode_InternFromString("make_connection")) == NULL ||
        (st->str_connect = PyUnicode_InternFromString("connect")) == NULL ||
        (st->str_disconnect = PyUnicode_InternFromString("disconnect")) == NULL ||
        (st->str_pid = PyUnicode_InternFromString("pid")) == NULL ||
        (st->str_should_reconnect = PyUnicode_InternFromString("should_reconnect")) == NULL ||
        (st->str_parser = PyUnicode_InternFromString("_parser")) == NULL ||
        (st->str_buffer = PyUnicode_InternFromString("_buffer")) == NULL ||
        (st->str_reader = PyUnicode_InternFromString("_reader")) == NULL ||
        (st->str_has_data = PyUnicode_InternFromString("has_data")) == NULL ||
        (st->str_tell = PyUnicode_InternFromString("tell")) == NULL ||
        (st->str_seek = PyUnicode_InternFromString("seek")) == NULL ||
        (st->str_can_read = PyUnicode_InternFromString("can_read")) == NULL ||
        (st->str_re_auth_token = PyUnicode_InternFromString("_re_auth_token")) == NULL ||
        (st->int_zero = PyLong_FromLong(0)) == NULL ||
        (st->int_two = PyLong_FromLong(2)) == NULL ||

        (st->str_errors = PyUnicode_InternFromString("_errors")) == NULL) {
        return -1;
    }
    return 0;
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    sp_modstate *st = get_state(module);
    Py_VISIT(st->PoolCoreType);
    Py_VISIT(st->LoopInboxType);
    Py_VISIT(st->PoolTimeoutError);
    Py_VISIT(st->ServerUnavailableError);
    Py_VISIT(st->PoolClosedError);
    Py_VISIT(st->DoubleReleaseError);
    Py_VISIT(st->ForeignConnectionError);
    Py_VISIT(st->SafePoolError);
    Py_VISIT(st->BusyLoadingError);
    Py_VISIT(st->CredentialsRejectedError);
    Py_VISIT(st->AuthenticationError);
    Py_VISIT(st->RedisTimeoutError);
    Py_VISIT(st->disposer);
    Py_VISIT(st->failure_hook);
    return 0;
}

static int
core_clear(PyObject *module)
{
    sp_modstate *st = get_state(module);
    Py_CLEAR(st->PoolCoreType);
    Py_CLEAR(st->LoopInboxType);
    Py_CLEAR(st->PoolTimeoutError);
    Py_CLEAR(st->ServerUnavailableError);
    Py_CLEAR(st->PoolClosedError);
    Py_CLEAR(st->DoubleReleaseError);
    Py_CLEAR(st->ForeignConnectionError);
    Py_CLEAR(st->SafePoolError);
    Py_CLEAR(st->BusyLoadingError);
    Py_CLEAR(st->CredentialsRejectedError);
    Py_CLEAR(st->AuthenticationError);
    Py_CLEAR(st->RedisTimeoutError);
    Py_CLEAR(st->str_sock);
    Py_CLEAR(st->str_fileno);
    Py_CLEAR(st->str_make_connection);
    Py_CLEAR(st->str_connect);
    Py_CLEAR(st->str_disconnect);
    Py_CLEAR(st->str_pid);
    Py_CLEAR(st->str_should_reconnect);
    Py_CLEAR(st->str_parser);
    Py_CLEAR(st->str_buffer);
    Py_CLEAR(st->str_reader);
    Py_CLEAR(st->str_has_data);
    Py_CLEAR(st->str_tell);
    Py_CLEAR(st->str_seek);
    Py_CLEAR(st->str_can_read);
    Py_CLEAR(st->str_re_auth_token);
    Py_CLEAR(st->int_zero);
    Py_CLEAR(st->int_two);
    Py_CLEAR(st->str_errors);
    Py_CLEAR(st->disposer);
    Py_CLEAR(st->failure_hook);
    return 0;
}

static void
core_free(void *module)
{
    /* a module refused by a subinterpreter (core_exec) owns no checker */
    if (PyInterpreterState_GetID(PyInterpreterState_Get()) == 0) {
        sp_checker_stop();
    }
    core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#if PY_VERSION_HEX >= 0x030C0000 && !defined(Py_LIMITED_API)
    /* The endpoint registry is process-wide and holds this interpreter's
     * objects: one interpreter only. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

struct PyModuleDef sp_py_core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "redis_safepool._core",
    .m_doc = "C core of redis-safepool: per-endpoint budgets, FIFO waits, health checker.",
    .m_size = sizeof(sp_modstate),
    .m_methods = core_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&sp_py_core_module);
}
