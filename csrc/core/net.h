/* net.h -- non-blocking sockets for probes: open, start a connect, name an errno, check an idle socket. */
#ifndef SP_NET_H
#define SP_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Starts a non-blocking connect of one address (CLOEXEC, TCP_NODELAY,
   no SIGPIPE). Returns the fd with *pending = 1 while the connect is in
   progress (0: connected at once), or -1 with *err = errno value and
   *local = 1 when socket() itself failed. */
int sp_net_connect_start(const struct sockaddr *sa, socklen_t salen, int *pending,
                         int *err, int *local);

/* Closes a socket of sp_net_connect_start() (the only way to close one). */
void sp_net_close(int fd);

/* Fork: every socket of sp_net_connect_start() still open is closed in the
 * child (its copy would keep the parent's connection open on the server).
 * The lock is a leaf, taken last by the prepare handler. */
void sp_net_lock_for_fork(void);
void sp_net_unlock_after_fork(void);
void sp_net_after_fork_child(void);

/* Sockets of sp_net_connect_start() open now (tests). */
size_t sp_net_open_count(void);

/* strerror_r's text for errno value e, in buf (or a static text). */
const char *sp_net_errno_text(int e, char *buf, size_t size);

/* Idle-socket check: poll(fd, POLLIN, 0).  Returns 1 if there is nothing to
   read and the peer has not hung up, 0 if readable / EOF / error / invalid
   fd.  Never blocks. */
int sp_fd_idle_ok(int fd);

#endif /* SP_NET_H */
