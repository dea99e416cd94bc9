/* view_loan.c -- the server's view read through a pooled connection lent to the checker (pure C). */
#include "view_loan.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "resp.h"

static const char INFO_REQUEST[] =
    "*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n"
    "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n";

int
sp_loan_send_info(int fd)
{
    char peek;
    ssize_t waiting = recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
    if (waiting >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        return -1;  /* bytes nobody asked for, or closed: not as its owner left it */
    }
    size_t n = sizeof(INFO_REQUEST) - 1;
    return send(fd, INFO_REQUEST, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n ? 0 : -1;
}

/* Takes one complete reply: a bulk string (RESP2) or a verbatim string
 * (RESP3, "txt:" first) is an INFO payload; an error reply is named by its
 * code only (a listener may echo what it was sent). Anything else, a RESP3
 * push among them, is -1: the connection is not as its owner left it. */
static int
take_reply(const char *r, size_t n, const char *section, sp_server_view *v, char *why,
           size_t whysize)
{
    if (r[0] == '$' || r[0] == '=') {
        const char *body = memchr(r, '\n', n);
        if (body == NULL) {
            return -1;
        }
        body++;
        size_t blen = n - (size_t)(body - r);
        blen = blen >= 2 ? blen - 2 : 0;
        if (r[0] == '=') {
            if (blen < 4) {
                return -1;
            }
            body += 4;  /* the format: "txt:" */
            blen -= 4;
        }
        sp_server_view_parse(v, body, blen);
        return 0;
    }
    if (r[0] != '-') {
        return -1;
    }
    size_t code = 0;
    while (code + 1 < n && code < 32 && r[code + 1] >= 'A' && r[code + 1] <= 'Z') {
        code++;
    }
    if (why[0] == '\0') {
        snprintf(why, whysize, "INFO %s: -%.*s%s", section, (int)code, r + 1,
                 code >= 6 && memcmp(r + 1, "NOPERM", 6) == 0 ? " (the user may not run INFO)"
                                                              : "");
    }
    return 0;
}

int
sp_loan_read_view(int fd, char *buf, size_t cap, size_t *len, sp_server_view *v, char *why,
                  size_t whysize)
{
    while (*len < cap) {
        ssize_t got = recv(fd, buf + *len, cap - *len, MSG_DONTWAIT);
        if (got == 0) {
            return -1;
        }
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return -1;
            }
            break;
        }
        *len += (size_t)got;
    }
    long first = sp_resp_reply_len(buf, *len);
    long second = first > 0 ? sp_resp_reply_len(buf + first, *len - (size_t)first) : 0;
    if (first < 0 || second < 0) {
        return -1;
    }
    if (first == 0 || second == 0) {
        return *len < cap ? 0 : -1;  /* more to come (a full buffer: too large) */
    }
    if ((size_t)(first + second) != *len) {
        return -1;  /* more than the two replies: not a quiet RESP2 connection */
    }
    if (take_reply(buf, (size_t)first, "clients", v, why, whysize) < 0 ||
        take_reply(buf + first, (size_t)second, "stats", v, why, whysize) < 0) {
        return -1;
    }
    return 1;
}
