/* Test helper: a scripted fake Redis on a loopback port, run by a thread. */
#include "fake_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver.h"
#include "redis_proc.h"

/* 1 when fd is readable before deadline. */
static int
readable(int fd, double deadline)
{
    return sp_wait_io(fd, POLLIN, deadline) == 1;
}

static int
contains(const fake_server *f, const char *s)
{
    size_t sl = strlen(s), i;

    for (i = 0; i + sl <= f->request_len; i++) {
        if (memcmp(f->request + i, s, sl) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Read into f->request until it contains s; 0 on EOF/timeout. */
static int
read_until(fake_server *f, int fd, const char *s, double deadline)
{
    while (!contains(f, s)) {
        ssize_t n;
        if (f->request_len == sizeof(f->request)
            || !readable(fd, deadline)) {
            return 0;
        }
        n = recv(fd, f->request + f->request_len,
                 sizeof(f->request) - f->request_len, 0);
        if (n <= 0) {
            return 0;
        }
        f->request_len += (size_t)n;
    }
    return 1;
}

static void *
fake_main(void *arg)
{
    fake_server *f = arg;
    double deadline = sp_now() + f->timeout;
    int fd, i;

    if (f->mode == FAKE_NOACCEPT) {
        return NULL;    /* the listener stays open until fake_stop() */
    }
    if (!readable(f->lfd, deadline)) {
        return NULL;
    }
    fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    if (f->mode == FAKE_CLOSE) {
        close(fd);
        return NULL;
    }
    for (i = 0; i < FAKE_MAX_STAGES; i++) {
        if (f->expect[i] != NULL
            && !read_until(f, fd, f->expect[i], deadline)) {
            break;
        }
        if (f->reply[i] != NULL) {
            size_t len = f->reply_len[i] ? f->reply_len[i]
                                         : strlen(f->reply[i]);
            size_t off = 0;
            while (off < len) {
                ssize_t n = send(fd, f->reply[i] + off, len - off,
                                 MSG_NOSIGNAL);
                if (n <= 0) {
                    break;
                }
                off += (size_t)n;
            }
        }
    }
    if (f->mode == FAKE_SCRIPT_RESET) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    else {
        /* drain until the client closes */
        char sink[512];
        while (readable(fd, deadline)
               && recv(fd, sink, sizeof(sink), 0) > 0) {
        }
    }
    close(fd);
    return NULL;
}

int
fake_start(fake_server *f)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);

    if (!(f->timeout > 0)) {
        f->timeout = 5.0;
    }
    f->request_len = 0;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->lfd < 0) {
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0
        || listen(f->lfd, f->mode == FAKE_NOACCEPT ? 0 : 8) < 0
        || getsockname(f->lfd, (struct sockaddr *)&sa, &sl) < 0) {
        close(f->lfd);
        return -1;
    }
    f->port = ntohs(sa.sin_port);
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0) {
        close(f->lfd);
        return -1;
    }
    return 0;
}

void
fake_stop(fake_server *f)
{
    /* wakes a thread waiting in poll() on the listener */
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->thread, NULL);
    close(f->lfd);
}
