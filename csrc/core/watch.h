/* watch.h -- an epoll set of every pooled socket: wakes the checker the moment a server hangs up on us. */
#ifndef SP_WATCH_H
#define SP_WATCH_H

#include <stdint.h>

/*
 * Why: when a server dies, the kernel closes all its sockets at once, but
 * the pool would only learn it from a request thread that reads EOF and
 * then gets the GIL back, milliseconds later under load. Meanwhile new
 * callers queue up behind connections that will never come back. The
 * checker thread, waiting here instead of on a condition variable, sees the
 * hangup within microseconds, checks whether anything still listens, and
 * pauses the endpoint.
 *
 * How: one epoll set per process, edge-triggered on EPOLLRDHUP, each socket
 * tagged with its endpoint's serial number (never a pointer: endpoints may
 * be freed). epoll holds no reference to the sockets, so a socket closed by
 * its owner leaves the set by itself and its close is never delayed. A
 * stale tag (an fd number reused after a close the set did not see) costs
 * one spurious check, never a wrong state: the check itself decides.
 *
 * Only a hangup *by the peer* counts: FIN with our sending side still open
 * (EPOLLRDHUP without EPOLLHUP) or a reset (EPOLLERR). Our own
 * shutdown(SHUT_RDWR) before a close shows EPOLLHUP without EPOLLERR and
 * is ignored.
 *
 * Thread safety: sp_watch_add() and sp_watch_wake() may be called from any
 * thread with or without locks (they never block); sp_watch_wait() is the
 * checker thread's alone. Where epoll is missing (not Linux) or cannot be
 * created, every call is a no-op and sp_watch_wait() returns -1: the
 * checker then waits on its condition variable as before.
 */

/* Creates the set now; the checker thread calls it once before it first
 * waits, so that no wake-up is lost to a set that did not exist yet.
 * Returns 0, or -1 when there is no watch. */
int sp_watch_open(void);

/* The epoll fd itself (readable when a wait would return at once), for a
 * caller that polls it beside other fds; -1 when there is no watch. */
int sp_watch_fd(void);

/* Watches `fd` for a peer hangup on behalf of endpoint `serial` (> 0). */
void sp_watch_add(int fd, uint64_t serial);

/* Stops watching `fd`: call it before closing a socket of ours that may
 * still have a reply on its way (disconnect() of a connection another
 * thread is using): data arriving after our shutdown() makes the kernel
 * reset the socket, which would look like the server hanging up. */
void sp_watch_remove(int fd);

/* Makes a pending or the next sp_watch_wait() return at once. */
void sp_watch_wake(void);

/* One endpoint's peer hangups, as seen by one wait. */
typedef struct {
    uint64_t serial;
    int sockets;              /* how many of its sockets hung up */
} sp_watch_hit;

/* Waits up to `timeout` seconds for a wake or a peer hangup. Stores each
 * endpoint that saw one once in `hits` (up to `max`) and returns how many
 * (0: woken or timed out), or -1 when there is no watch. */
int sp_watch_wait(double timeout, sp_watch_hit *hits, int max);

/* Counters for tests and stats: sockets added, peer hangups seen. */
void sp_watch_counts(uint64_t *added, uint64_t *hangups);

/* Fork: the child must not share the parent's epoll set. */
void sp_watch_after_fork_child(void);

#endif
