/* Test helper: start/stop real redis-server processes, talk RESP to them. */
#ifndef SP_REDIS_PROC_H
#define SP_REDIS_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;              /* 0 when not running */
    int port;
    char dir[64];           /* private temp dir: log, rdb, unix socket */
    char unix_path[108];    /* dir/redis.sock ("" unless opts.unix_socket) */
    char log_path[96];
} sp_redis;

typedef struct {
    int port;                   /* 0: pick a free loopback port */
    int unix_socket;            /* also listen on dir/redis.sock */
    int no_wait;                /* return before the server answers PING */
    const char *const *args;    /* extra arguments, NULL-terminated */
} sp_redis_opts;

/* Start redis-server (127.0.0.1 only, no persistence) and, unless no_wait,
   wait (bounded, 10 s) until it answers something other than -LOADING.
   r must be zeroed or a stopped server (restart reuses r->dir).
   Returns 0 on success, -1 on failure (message on stderr). */
int sp_redis_start(sp_redis *r, const sp_redis_opts *opts);

/* Wait until the server answers a command other than with -LOADING. */
int sp_redis_wait_ready(sp_redis *r, double timeout);

/* Stop the server (SIGTERM, SIGKILL after 5 s) and reap it; keeps dir. */
void sp_redis_stop(sp_redis *r);

/* Stop and remove the temp dir. */
void sp_redis_destroy(sp_redis *r);

/* SIGKILL every server still running (end of the driver). */
void sp_redis_kill_all(void);

/* A free loopback TCP port (nothing listens on it right now). */
int sp_free_port(void);

/* Client helpers: connect (non-blocking fd, CLOEXEC), -1 on failure. */
int sp_client_connect(int port, double timeout);
int sp_client_connect_unix(const char *path, double timeout);

/* Send one command (NULL-terminated args) and read one reply into reply
   (NUL-terminated).  Returns the reply length, -1 on error/timeout. */
long sp_client_cmd(int fd, double timeout, char *reply, size_t cap, ...)
    __attribute__((sentinel));

/* One-shot: connect to r, run one command, close. */
long sp_redis_cmd(const sp_redis *r, char *reply, size_t cap, ...)
    __attribute__((sentinel));

/* Waits until fd is ready for `ev` (POLLIN/POLLOUT) or `deadline` (sp_now()
   seconds) passes: 1 ready, 0 timed out, -1 error. EINTR is retried. */
int sp_wait_io(int fd, short ev, double deadline);

#endif /* SP_REDIS_PROC_H */
