/* watch.c -- the epoll set behind watch.h: pooled sockets, peer-hangup edges, the checker's wake-up eventfd. */
#include "watch.h"

#ifdef __linux__

#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

/* An event's tag: 0 is the wake-up eventfd; a socket's is its endpoint's
 * serial shifted left once, with bit 0 set for unix sockets (whose peer
 * hangup looks like our own shutdown: both ends shut, EPOLLHUP). */
#define WAKE_TAG 0

/* `lock` guards creating the two fds. `epfd` is published last with a
 * release store, so a reader that sees it >= 0 also sees `wakefd`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int epfd = -1;
static int wakefd = -1;
static int failed;                /* creation failed once: no watch, for good */
static uint64_t n_added;          /* atomic */
static uint64_t n_hangups;        /* atomic */

static int
ensure_open(void)
{
    int e = __atomic_load_n(&epfd, __ATOMIC_ACQUIRE);
    if (e >= 0) {
        return e;
    }
    pthread_mutex_lock(&lock);
    if (epfd < 0 && !failed) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        int w = ep >= 0 ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TAG};
        if (w >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, w, &ev) == 0) {
            wakefd = w;
            __atomic_store_n(&epfd, ep, __ATOMIC_RELEASE);
        }
        else {
            if (w >= 0) {
                close(w);
            }
            if (ep >= 0) {
                close(ep);
            }
            failed = 1;
        }
    }
    e = epfd;
    pthread_mutex_unlock(&lock);
    return e;
}

int
sp_watch_open(void)
{
    return ensure_open() < 0 ? -1 : 0;
}

int
sp_watch_fd(void)
{
    return __atomic_load_n(&epfd, __ATOMIC_ACQUIRE);
}

void
sp_watch_add(int fd, uint64_t serial)
{
    if (fd < 0 || serial == 0) {
        return;
    }
    int e = ensure_open();
    if (e < 0) {
        return;
    }
    int domain = 0;
    socklen_t len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) {
        return;  /* not a socket (any more): nothing to watch */
    }
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET,
                             .data.u64 = serial << 1 | (domain == AF_UNIX)};
    /* EEXIST: the fd number is in the set already (a reconnect reused
     * it, or the same socket came back): retag and rearm. */
    if (epoll_ctl(e, EPOLL_CTL_ADD, fd, &ev) == 0 ||
        (errno == EEXIST && epoll_ctl(e, EPOLL_CTL_MOD, fd, &ev) == 0)) {
        __atomic_add_fetch(&n_added, 1, __ATOMIC_RELAXED);
    }
}

void
sp_watch_remove(int fd)
{
    int e = __atomic_load_n(&epfd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && e >= 0) {
        (void)epoll_ctl(e, EPOLL_CTL_DEL, fd, NULL);  /* ENOENT: not watched */
    }
}

void
sp_watch_wake(void)
{
    if (__atomic_load_n(&epfd, __ATOMIC_ACQUIRE) < 0) {
        return;
    }
    uint64_t one = 1;
    ssize_t rc = write(wakefd, &one, sizeof(one));
    (void)rc;  /* EAGAIN: the counter is full, so a wake is pending anyway */
}

/* A hangup by the peer, not by us: see watch.h. */
static int
peer_hung_up(uint32_t events, int unix_socket)
{
    if (unix_socket) {
        return 1;
    }
    return (events & EPOLLERR) || ((events & EPOLLRDHUP) && !(events & EPOLLHUP));
}

/* Adds one endpoint's hangup to `hits` (merged by serial). */
static void
add_hit(sp_watch_hit *hits, int *n, int max, uint64_t serial)
{
    for (int j = 0; j < *n; j++) {
        if (hits[j].serial == serial) {
            hits[j].sockets++;
            return;
        }
    }
    if (*n < max) {
        hits[*n].serial = serial;
        hits[*n].sockets = 1;
        (*n)++;
    }
}

/* One epoll_wait() of up to `ms`: merges hangups into hits. Returns -1
 * (nothing happened: timeout or signal), 0 (only our own shutdowns) or 1
 * (a wake-up or a hangup). */
static int
wait_once(int e, int ms, sp_watch_hit *hits, int *n, int max)
{
    struct epoll_event evs[64];
    int got = epoll_wait(e, evs, 64, ms);
    if (got <= 0) {
        return -1;
    }
    int news = 0;
    for (int i = 0; i < got; i++) {
        uint64_t tag = evs[i].data.u64;
        if (tag == WAKE_TAG) {
            uint64_t count;
            ssize_t rc = read(wakefd, &count, sizeof(count));
            (void)rc;
            news = 1;
            continue;
        }
        if (!peer_hung_up(evs[i].events, (int)(tag & 1))) {
            continue;
        }
        __atomic_add_fetch(&n_hangups, 1, __ATOMIC_RELAXED);
        add_hit(hits, n, max, tag >> 1);
        news = 1;
    }
    return news;
}

int
sp_watch_wait(double timeout, sp_watch_hit *hits, int max)
{
    int e = ensure_open();
    if (e < 0) {
        return -1;
    }
    double deadline = sp_now() + (timeout > 0 ? timeout : 0);
    int n = 0;
    for (;;) {
        double left = deadline - sp_now();
        int ms = left <= 0 ? 0 : left > 3600 ? 3600000 : (int)(left * 1000.0) + 1;
        int r = wait_once(e, ms, hits, &n, max);
        if (r != 0) {
            return n;  /* news, or timed out */
        }
        /* Only our own shutdowns: keep waiting out the timeout. */
    }
}

void
sp_watch_counts(uint64_t *added, uint64_t *hangups)
{
    *added = __atomic_load_n(&n_added, __ATOMIC_RELAXED);
    *hangups = __atomic_load_n(&n_hangups, __ATOMIC_RELAXED);
}

void
sp_watch_after_fork_child(void)
{
    /* The epoll set is shared with the parent through the inherited fd:
     * drop ours; the child's checker makes its own. Single-threaded here. */
    pthread_mutex_init(&lock, NULL);
    if (epfd >= 0) {
        close(epfd);
        close(wakefd);
    }
    epfd = -1;
    wakefd = -1;
    failed = 0;
}

#else /* no epoll: the checker keeps waiting on its condition variable */

int
sp_watch_open(void)
{
    return -1;
}

int
sp_watch_fd(void)
{
    return -1;
}

void
sp_watch_add(int fd, uint64_t serial)
{
    (void)fd;
    (void)serial;
}

void
sp_watch_remove(int fd)
{
    (void)fd;
}

void
sp_watch_wake(void)
{
}

int
sp_watch_wait(double timeout, sp_watch_hit *hits, int max)
{
    (void)timeout;
    (void)hits;
    (void)max;
    return -1;
}

void
sp_watch_counts(uint64_t *added, uint64_t *hangups)
{
    *added = 0;
    *hangups = 0;
}

void
sp_watch_after_fork_child(void)
{
}

#endif
