/* Non-blocking sockets for probes: open, start a connect, name an errno, check an idle socket. */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *
sp_net_errno_text(int e, char *buf, size_t size)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(e, buf, size);
#else
    if (strerror_r(e, buf, size) != 0) {
        snprintf(buf, size, "errno %d", e);
    }
    return buf;
#endif
}

/* The sockets this file opened and nobody closed yet. A child of fork()
 * gets a copy of each, and a copy keeps the connection open on the server
 * after the parent closed its own (a probe forked mid-flight stays a client
 * of the server for the child's life), so the child closes them all.
 *
 * Guarded by open_lock, a leaf: held across socket() + the add, and the
 * removal + close(), so a fork (which takes it: sp_net_lock_for_fork())
 * never sees a socket that is open but not listed, or listed but closed
 * (its number could be someone else's by then). */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int *open_fds;           /* unordered */
static size_t n_open, cap_open;

/* Lists fd; with no memory to list it, closes it and fails (ENOMEM). */
static int
list_open_locked(int fd)
{
    if (n_open == cap_open) {
        size_t cap = cap_open ? 2 * cap_open : 16;
        int *grown = realloc(open_fds, cap * sizeof(*open_fds));
        if (grown == NULL) {
            close(fd);
            errno = ENOMEM;
            return -1;
        }
        open_fds = grown;
        cap_open = cap;
    }
    open_fds[n_open++] = fd;
    return fd;
}

void
sp_net_close(int fd)
{
    pthread_mutex_lock(&open_lock);
    for (size_t i = 0; i < n_open; i++) {
        if (open_fds[i] == fd) {
            open_fds[i] = open_fds[--n_open];
            break;
        }
    }
    close(fd);
    pthread_mutex_unlock(&open_lock);
}

void
sp_net_lock_for_fork(void)
{
    pthread_mutex_lock(&open_lock);
}

void
sp_net_unlock_after_fork(void)
{
    pthread_mutex_unlock(&open_lock);
}

void
sp_net_after_fork_child(void)
{
    pthread_mutex_init(&open_lock, NULL);
    for (size_t i = 0; i < n_open; i++) {
        close(open_fds[i]);  /* the child's copy: the parent's socket is untouched */
    }
    n_open = 0;
}

size_t
sp_net_open_count(void)
{
    pthread_mutex_lock(&open_lock);
    size_t n = n_open;
    pthread_mutex_unlock(&open_lock);
    return n;
}

static int
open_socket_unlisted(int family)
{
    int fd;

#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
    fd = socket(family, SOCK_STREAM, 0);
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0
            || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
    }
#endif
#ifdef SO_NOSIGPIPE
    if (fd >= 0) {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
    }
#endif
    return fd;
}

static int
open_socket(int family)
{
    pthread_mutex_lock(&open_lock);
    int fd = open_socket_unlisted(family);
    if (fd >= 0) {
        fd = list_open_locked(fd);
    }
    int e = errno;
    pthread_mutex_unlock(&open_lock);
    errno = e;
    return fd;
}

int
sp_net_connect_start(const struct sockaddr *sa, socklen_t salen, int *pending,
              int *err, int *local)
{
    int fd, r;

    *local = 0;
    *pending = 0;
    fd = open_socket(sa->sa_family);
    if (fd < 0) {
        *err = errno;
        *local = 1;
        return -1;
    }
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    r = connect(fd, sa, salen);
    if (r == 0) {
        return fd;
    }
    if (errno == EINPROGRESS || errno == EINTR) {
        *pending = 1;
        return fd;
    }
    *err = errno;
    sp_net_close(fd);
    return -1;
}

int
sp_fd_idle_ok(int fd)
{
    struct pollfd p;
    int r, tries;

    if (fd < 0) {
        return 0;
    }
    p.fd = fd;
    p.events = POLLIN;
#ifdef POLLRDHUP
    p.events |= POLLRDHUP;
#endif
    for (tries = 0; tries < 8; tries++) {
        p.revents = 0;
        r = poll(&p, 1, 0);
        if (r == 0) {
            return 1;
        }
        if (r > 0) {
            return 0;   /* readable, hung up, error or POLLNVAL */
        }
        if (errno != EINTR) {
            return 0;
        }
    }
    return 0;
}
