/* Test helper: start/stop real redis-server processes, talk RESP to them. */
#include "redis_proc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "probe.h"
#include "resp.h"

#define MAX_SERVERS 32
#define MAX_ARGS 64

static pid_t live[MAX_SERVERS];

static void
track(pid_t pid, int add)
{
    int i;

    for (i = 0; i < MAX_SERVERS; i++) {
        if (add && live[i] == 0) {
            live[i] = pid;
            return;
        }
        if (!add && live[i] == pid) {
            live[i] = 0;
            return;
        }
    }
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int
sp_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd < 0) {
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0
        && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

int
sp_wait_io(int fd, short ev, double deadline)
{
    for (;;) {
        struct pollfd p = {fd, ev, 0};
        double left = deadline - sp_now();
        int r;

        if (left <= 0) {
            return 0;
        }
        r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) {
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static int
connect_sa(const struct sockaddr *sa, socklen_t sl, double timeout)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    0);
    int soerr = 0;
    socklen_t el = sizeof(soerr);

    if (fd < 0) {
        return -1;
    }
    if (connect(fd, sa, sl) == 0) {
        return fd;
    }
    if (errno != EINPROGRESS
        || sp_wait_io(fd, POLLOUT, sp_now() + timeout) != 1
        || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0
        || soerr != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int
sp_client_connect(int port, double timeout)
{
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect_sa((struct sockaddr *)&sa, sizeof(sa), timeout);
}

int
sp_client_connect_unix(const char *path, double timeout)
{
    struct sockaddr_un su;

    memset(&su, 0, sizeof(su));
    su.sun_family = AF_UNIX;
    snprintf(su.sun_path, sizeof(su.sun_path), "%s", path);
    return connect_sa((struct sockaddr *)&su, sizeof(su), timeout);
}

static long
vcmd(int fd, double timeout, char *reply, size_t cap, va_list ap)
{
    char req[4096];
    size_t len = 0, got = 0;
    const char *args[32];
    int argc = 0, i;
    double deadline = sp_now() + timeout;
    const char *a;

    while ((a = va_arg(ap, const char *)) != NULL && argc < 32) {
        args[argc++] = a;
    }
    len += (size_t)snprintf(req + len, sizeof(req) - len, "*%d\r\n", argc);
    for (i = 0; i < argc; i++) {
        size_t al = strlen(args[i]);
        if (len + al + 32 > sizeof(req)) {
            return -1;
        }
        len += (size_t)snprintf(req + len, sizeof(req) - len, "$%zu\r\n", al);
        memcpy(req + len, args[i], al);
        len += al;
        memcpy(req + len, "\r\n", 2);
        len += 2;
    }
    for (i = 0; (size_t)i < len;) {
        ssize_t n = send(fd, req + i, len - (size_t)i, MSG_NOSIGNAL);
        if (n > 0) {
            i += (int)n;
        }
        else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (sp_wait_io(fd, POLLOUT, deadline) != 1) {
                return -1;
            }
        }
        else {
            return -1;
        }
    }
    for (;;) {
        long rl = sp_resp_reply_len(reply, got);
        ssize_t n;
        if (rl > 0) {
            reply[rl] = '\0';
            return rl;
        }
        if (rl < 0 || got + 1 >= cap) {
            return -1;
        }
        n = recv(fd, reply + got, cap - 1 - got, 0);
        if (n > 0) {
            got += (size_t)n;
        }
        else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (sp_wait_io(fd, POLLIN, deadline) != 1) {
                return -1;
            }
        }
        else {
            return -1;
        }
    }
}

long
sp_client_cmd(int fd, double timeout, char *reply, size_t cap, ...)
{
    va_list ap;
    long r;

    va_start(ap, cap);
    r = vcmd(fd, timeout, reply, cap, ap);
    va_end(ap);
    return r;
}

long
sp_redis_cmd(const sp_redis *r, char *reply, size_t cap, ...)
{
    va_list ap;
    long n;
    int fd = sp_client_connect(r->port, 2.0);

    if (fd < 0) {
        return -1;
    }
    va_start(ap, cap);
    n = vcmd(fd, 5.0, reply, cap, ap);
    va_end(ap);
    close(fd);
    return n;
}

/* 1 if the child exited (and was reaped). */
static int
reap(sp_redis *r, int block)
{
    int st;
    pid_t p;

    if (r->pid <= 0) {
        return 1;
    }
    do {
        p = waitpid(r->pid, &st, block ? 0 : WNOHANG);
    } while (p < 0 && errno == EINTR);
    if (p == r->pid || (p < 0 && errno == ECHILD)) {
        track(r->pid, 0);
        r->pid = 0;
        return 1;
    }
    return 0;
}

int
sp_redis_wait_ready(sp_redis *r, double timeout)
{
    double deadline = sp_now() + timeout;
    char reply[256];

    while (sp_now() < deadline) {
        int fd;
        if (reap(r, 0)) {
            fprintf(stderr, "redis-server on port %d exited; log %s\n",
                    r->port, r->log_path);
            return -1;
        }
        fd = sp_client_connect(r->port, 0.5);
        if (fd >= 0) {
            long n = sp_client_cmd(fd, 1.0, reply, sizeof(reply), "PING",
                                   (char *)NULL);
            close(fd);
            if (n > 0 && strncmp(reply, "-LOADING", 8) != 0) {
                return 0;
            }
        }
        sleep_ms(10);
    }
    fprintf(stderr, "redis-server on port %d not ready after %.1fs\n",
            r->port, timeout);
    return -1;
}

static int
spawn(sp_redis *r, const sp_redis_opts *o, int port)
{
    const char *argv[MAX_ARGS];
    char portbuf[16];
    int argc = 0, i;
    pid_t parent = getpid(), pid;

    snprintf(portbuf, sizeof(portbuf), "%d", port);
    argv[argc++] = "redis-server";
    argv[argc++] = "--port";
    argv[argc++] = portbuf;
    argv[argc++] = "--bind";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--save";
    argv[argc++] = "";
    argv[argc++] = "--appendonly";
    argv[argc++] = "no";
    argv[argc++] = "--daemonize";
    argv[argc++] = "no";
    argv[argc++] = "--dir";
    argv[argc++] = r->dir;
    argv[argc++] = "--logfile";
    argv[argc++] = r->log_path;
    if (o->unix_socket) {
        argv[argc++] = "--unixsocket";
        argv[argc++] = r->unix_path;
        argv[argc++] = "--unixsocketperm";
        argv[argc++] = "700";
    }
    for (i = 0; o->args != NULL && o->args[i] != NULL; i++) {
        if (argc >= MAX_ARGS - 1) {
            return -1;
        }
        argv[argc++] = o->args[i];
    }
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        int devnull;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    r->pid = pid;
    r->port = port;
    track(pid, 1);
    return 0;
}

int
sp_redis_start(sp_redis *r, const sp_redis_opts *opts)
{
    static const sp_redis_opts none = {0, 0, 0, NULL};
    const sp_redis_opts *o = opts ? opts : &none;
    int attempt;

    if (r->pid > 0) {
        return -1;
    }
    if (r->dir[0] == '\0') {
        snprintf(r->dir, sizeof(r->dir), "/tmp/sp_driver.XXXXXX");
        if (mkdtemp(r->dir) == NULL) {
            r->dir[0] = '\0';
            return -1;
        }
    }
    snprintf(r->log_path, sizeof(r->log_path), "%s/redis.log", r->dir);
    r->unix_path[0] = '\0';
    if (o->unix_socket) {
        snprintf(r->unix_path, sizeof(r->unix_path), "%s/redis.sock", r->dir);
    }
    /* A free port can be taken between sp_free_port() and the bind: retry. */
    for (attempt = 0; attempt < 5; attempt++) {
        int port = o->port > 0 ? o->port : sp_free_port();
        if (port <= 0 || spawn(r, o, port) < 0) {
            return -1;
        }
        if (o->no_wait) {
            return 0;
        }
        if (sp_redis_wait_ready(r, 10.0) == 0) {
            return 0;
        }
        sp_redis_stop(r);
        if (o->port > 0) {
            break;
        }
    }
    return -1;
}

void
sp_redis_stop(sp_redis *r)
{
    double deadline;

    if (r->pid <= 0) {
        return;
    }
    kill(r->pid, SIGTERM);
#ifdef SYS_pidfd_open
    {
        /* wait for the exit itself instead of polling waitpid (once
           ENOSYS, e.g. under an older valgrind, fall back to polling) */
        static int no_pidfd;
        int pfd = no_pidfd ? -1 : (int)syscall(SYS_pidfd_open, r->pid, 0);
        if (pfd < 0 && errno == ENOSYS) {
            no_pidfd = 1;
        }
        if (pfd >= 0) {
            struct pollfd p = {pfd, POLLIN, 0};
            while (poll(&p, 1, 5000) < 0 && errno == EINTR) {
            }
            close(pfd);
        }
    }
#endif
    deadline = sp_now() + 5.0;
    while (!reap(r, 0)) {
        if (sp_now() > deadline) {
            kill(r->pid, SIGKILL);
            reap(r, 1);
            break;
        }
        sleep_ms(5);
    }
}

void
sp_redis_destroy(sp_redis *r)
{
    DIR *d;
    struct dirent *e;
    char path[512];

    sp_redis_stop(r);
    if (r->dir[0] == '\0') {
        return;
    }
    d = opendir(r->dir);
    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                snprintf(path, sizeof(path), "%s/%s", r->dir, e->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(r->dir);
    r->dir[0] = '\0';
}

void
sp_redis_kill_all(void)
{
    int i, st;

    for (i = 0; i < MAX_SERVERS; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            while (waitpid(live[i], &st, 0) < 0 && errno == EINTR) {
            }
            live[i] = 0;
        }
    }
}
