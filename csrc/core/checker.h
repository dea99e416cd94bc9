/* checker.h -- the native health-checker thread: probes servers and idle sockets, drives endpoint states. */
#ifndef SP_CHECKER_H
#define SP_CHECKER_H

#include "endpoint.h"

typedef struct {
    double interval;          /* seconds between probes while ready (default 1) */
    double recover_interval;  /* seconds between probes while recovering (default 0.1) */
    double backoff_min;       /* first retry while down (default 0.05) */
    double backoff_max;       /* cap of the jittered backoff while down (default 0.3) */
    double probe_timeout;     /* connect/reply timeout of a probe (default 1) */
    int enabled;              /* 0 stops probing (tests of the bare budget) */
    double server_reserve;    /* fraction of maxclients kept free for others (default 0.1) */
    int server_reserve_min;   /* at least this many (default 4); both 0: no reserve */
} sp_checker_config;

void sp_checker_get_config(sp_checker_config *out);
void sp_checker_set_config(const sp_checker_config *cfg);

/* Starts the thread if it is not running in this process (lazily, and
 * again after fork). Returns 0 or an errno value. */
int sp_checker_ensure_running(void);
/* Stops and joins the thread (interpreter exit). */
void sp_checker_stop(void);
int sp_checker_running(void);

typedef enum {
    SP_FAIL_REFUSED = 1,      /* connect refused / no such socket: the server is down */
    SP_FAIL_TIMEOUT,          /* connect or reply timed out */
    SP_FAIL_MAXCLIENTS,       /* -ERR max number of clients reached */
    SP_FAIL_LOADING,          /* -LOADING */
    SP_FAIL_OTHER             /* reset, EOF, anything else: probe to find out */
} sp_failure;

/* A request thread saw `kind` on `ep`: adjust the state at once where the
 * error says enough, and ask for an immediate probe. Never blocks. */
void sp_checker_report(sp_endpoint *ep, sp_failure kind, const char *message);

/* Around a call that may block for long (a host name's resolution) on the
 * checker's thread: lets a fork() go ahead meanwhile (see fork_gate in
 * checker.c). No-ops on any other thread. */
void sp_checker_blocking_begin(void);
void sp_checker_blocking_end(void);

/* Fork handlers (see forksafe.c): the first waits until the checker's
 * thread is asleep. */
void sp_checker_lock_for_fork(void);
void sp_checker_unlock_after_fork(void);
void sp_checker_after_fork_child(void);

#endif
