/* Non-blocking sockets for probes: open, start a connect, name an errno, check an idle socket. */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
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

static int
open_socket(int family)
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
    close(fd);
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
