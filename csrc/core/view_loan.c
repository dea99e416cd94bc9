/* view_loan.c -- a pooled connection lent to the view probe: our side closed, settled once the server has closed it (pure C). */
#include "view_loan.h"

#include <errno.h>
#include <sys/socket.h>

#include "watch.h"

int
sp_loan_begin(int fd)
{
    sp_watch_remove(fd);
    return shutdown(fd, SHUT_WR) == 0 ? 0 : -1;
}

int
sp_loan_settled(int fd)
{
    char buf[4096];
    /* A reply on its way when the loan began is read and dropped; the
     * bound keeps one call short whatever the server sends. */
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0) {
            return 1;
        }
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : 1;
        }
    }
    return 0;
}
