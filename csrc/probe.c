/* Blocking RESP health probe: connect, AUTH, PING, INFO; classify answer. */
#include "probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0      /* platforms with SO_NOSIGPIPE instead */
#endif

#define SP_PROBE_RBUF 16384             /* largest reply we accept */
#define SP_PROBE_WBUF 4096              /* largest request we send */
#define SP_RESP_MAX_DEPTH 8
#define SP_RESP_MAX_BULK (512LL * 1024 * 1024)
#define SP_PROBE_DEFAULT_TIMEOUT 1.0
#define SP_PROBE_MAX_TIMEOUT 3600.0

/* ------------------------------------------------------------------ */
/* time, errors                                                        */

static double
now_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds until deadline, rounded up so poll() never spins; 0 if
   the deadline has passed. */
static int
ms_left(double deadline)
{
    double left = deadline - now_mono();

    if (left <= 0) {
        return 0;
    }
    return (int)(left * 1000.0) + 1;
}

static void
copy_text(char *dst, size_t dstsize, const char *src, size_t n)
{
    size_t i;

    if (dst == NULL || dstsize == 0) {
        return;
    }
    if (n > dstsize - 1) {
        n = dstsize - 1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[n] = '\0';
}

static void
set_status(sp_probe_result *out, sp_probe_status s, const char *fmt, ...)
{
    va_list ap;

    out->status = s;
    va_start(ap, fmt);
    vsnprintf(out->error, sizeof(out->error), fmt, ap);
    va_end(ap);
}

static const char *
errno_text(int e, char *buf, size_t size)
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

/* ------------------------------------------------------------------ */
/* RESP parsing                                                        */

/* Parse a decimal integer filling exactly s[0..n). */
static int
parse_ll(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    long long v = 0;

    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 18) {
        return 0;
    }
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

/* End offset (exclusive) of the reply starting at pos, 0 if incomplete,
   -1 if malformed.  Every aggregate element consumes at least 3 bytes, so
   the loops are bounded by n. */
static long
reply_end(const char *buf, size_t n, size_t pos, int depth)
{
    const char *nl;
    size_t eol, clen, start, end, i;
    long long len;

    if (pos >= n) {
        return 0;
    }
    nl = memchr(buf + pos, '\n', n - pos);
    if (nl == NULL) {
        return 0;
    }
    eol = (size_t)(nl - buf);                  /* index of '\n' */
    if (eol < pos + 2 || buf[eol - 1] != '\r') {
        return -1;
    }
    clen = eol - 1 - (pos + 1);                /* line after the type byte */
    switch (buf[pos]) {
    case '+': case '-': case '_': case ',': case '#': case '(':
        return (long)(eol + 1);
    case ':':
        if (!parse_ll(buf + pos + 1, clen, &len)) {
            return -1;
        }
        return (long)(eol + 1);
    case '$': case '!': case '=':
        if (!parse_ll(buf + pos + 1, clen, &len)) {
            return -1;
        }
        if (len == -1 && buf[pos] == '$') {
            return (long)(eol + 1);
        }
        if (len < 0 || len > SP_RESP_MAX_BULK) {
            return -1;
        }
        start = eol + 1;
        end = start + (size_t)len;              /* index of the CR */
        if (n < end + 2) {
            return 0;
        }
        if (buf[end] != '\r' || buf[end + 1] != '\n') {
            return -1;
        }
        return (long)(end + 2);
    case '*': case '~': case '>': case '%':
        if (!parse_ll(buf + pos + 1, clen, &len)) {
            return -1;
        }
        if (len == -1 && buf[pos] == '*') {
            return (long)(eol + 1);
        }
        if (len < 0 || depth >= SP_RESP_MAX_DEPTH) {
            return -1;
        }
        if (buf[pos] == '%') {
            len *= 2;
        }
        start = eol + 1;
        for (i = 0; i < (size_t)len; i++) {
            long e = reply_end(buf, n, start, depth + 1);
            if (e <= 0) {
                return e;
            }
            start = (size_t)e;
        }
        return (long)start;
    default:
        return -1;
    }
}

long
sp_resp_reply_len(const char *buf, size_t n)
{
    if (buf == NULL) {
        return 0;
    }
    return reply_end(buf, n, 0, 0);
}

/* Does the error line text[0..n) (without '-') start with the error code
   `code` as a whole word? */
static int
error_code_is(const char *text, size_t n, const char *code)
{
    size_t cl = strlen(code);

    return n >= cl && memcmp(text, code, cl) == 0
           && (n == cl || text[cl] == ' ');
}

static int
has_prefix(const char *text, size_t n, const char *prefix)
{
    size_t pl = strlen(prefix);

    return n >= pl && memcmp(text, prefix, pl) == 0;
}

sp_probe_status
sp_probe_classify_reply(const char *buf, size_t n, char *err, size_t errsize)
{
    long len = sp_resp_reply_len(buf, n);
    const char *line;
    size_t ll;

    if (err != NULL && errsize > 0) {
        err[0] = '\0';
    }
    if (len == 0) {
        if (err != NULL) {
            snprintf(err, errsize, "incomplete reply");
        }
        return SP_PROBE_ERROR;
    }
    if (len < 0) {
        if (err != NULL) {
            snprintf(err, errsize, "protocol error: malformed reply");
        }
        return SP_PROBE_ERROR;
    }
    line = buf + 1;
    ll = (size_t)((const char *)memchr(buf, '\n', (size_t)len) - buf) - 2;
    switch (buf[0]) {
    case '+':
        if ((ll == 4 && memcmp(line, "PONG", 4) == 0)
            || (ll == 2 && memcmp(line, "OK", 2) == 0)) {
            return SP_PROBE_OK;
        }
        break;
    case '$':
        /* PING answered as a bulk string (PING <msg> style) */
        if (len == 10 && memcmp(buf, "$4\r\nPONG\r\n", 10) == 0) {
            return SP_PROBE_OK;
        }
        break;
    case '-':
        copy_text(err, errsize, buf, ll + 1);
        if (error_code_is(line, ll, "LOADING")) {
            return SP_PROBE_LOADING;
        }
        if (error_code_is(line, ll, "NOAUTH")
            || error_code_is(line, ll, "WRONGPASS")
            || error_code_is(line, ll, "NOPERM")
            || has_prefix(line, ll, "ERR invalid password")
            || has_prefix(line, ll, "ERR invalid username-password")
            || has_prefix(line, ll, "ERR Client sent AUTH, but no password")
            || has_prefix(line, ll, "ERR AUTH <password> called without")) {
            return SP_PROBE_AUTH;
        }
        if (has_prefix(line, ll, "ERR max number of clients reached")
            || error_code_is(line, ll, "BUSY")) {
            return SP_PROBE_OVERLOADED;
        }
        return SP_PROBE_ERROR;
    default:
        break;
    }
    if (err != NULL && errsize > 0) {
        int w = snprintf(err, errsize, "unexpected reply: ");
        if (w > 0 && (size_t)w < errsize) {
            copy_text(err + w, errsize - (size_t)w, buf,
                      (size_t)len > 40 ? 40 : (size_t)len);
        }
    }
    return SP_PROBE_ERROR;
}

int
sp_info_field(const char *text, size_t n, const char *field,
              char *out, size_t outsize)
{
    size_t fl = strlen(field);
    size_t pos = 0;

    if (out != NULL && outsize > 0) {
        out[0] = '\0';
    }
    if (text == NULL) {
        return 0;
    }
    while (pos < n) {
        const char *nl = memchr(text + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - text) : n;
        size_t ll = end - pos;

        if (ll > 0 && text[pos + ll - 1] == '\r') {
            ll--;
        }
        if (ll > fl && memcmp(text + pos, field, fl) == 0
            && text[pos + fl] == ':') {
            copy_text(out, outsize, text + pos + fl + 1, ll - fl - 1);
            return 1;
        }
        pos = end + 1;
    }
    return 0;
}

const char *
sp_probe_status_name(sp_probe_status s)
{
    switch (s) {
    case SP_PROBE_OK: return "ok";
    case SP_PROBE_DOWN: return "down";
    case SP_PROBE_OVERLOADED: return "overloaded";
    case SP_PROBE_LOADING: return "loading";
    case SP_PROBE_AUTH: return "auth";
    case SP_PROBE_ERROR: return "error";
    }
    return "?";
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

/* ------------------------------------------------------------------ */
/* socket I/O                                                          */

/* 1 ready, 0 deadline passed, -1 poll error (errno set). */
static int
wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd p;
        int ms = ms_left(deadline);
        int r;

        p.fd = fd;
        p.events = events;
        p.revents = 0;
        r = poll(&p, 1, ms);
        if (r > 0) {
            return 1;
        }
        if (r == 0) {
            if (ms == 0 || now_mono() >= deadline) {
                return 0;
            }
            continue;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
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

/* Connect one address.  Returns the fd, or -1 with *err = errno value
   (ETIMEDOUT when the deadline passed) and *local = 1 when socket()
   itself failed. */
static int
connect_addr(const struct sockaddr *sa, socklen_t salen, double deadline,
             int *err, int *local)
{
    int fd, r, soerr;
    socklen_t sl = sizeof(soerr);

    *local = 0;
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
    if (errno != EINPROGRESS && errno != EINTR) {
        *err = errno;
        close(fd);
        return -1;
    }
    r = wait_fd(fd, POLLOUT, deadline);
    if (r <= 0) {
        *err = r == 0 ? ETIMEDOUT : errno;
        close(fd);
        return -1;
    }
    soerr = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
        soerr = errno;
    }
    if (soerr != 0) {
        *err = soerr;
        close(fd);
        return -1;
    }
    return fd;
}

static void
connect_failed(sp_probe_result *out, int err, int local, double timeout,
               const char *what)
{
    char eb[96];
    const char *et = errno_text(err, eb, sizeof(eb));

    if (local) {
        set_status(out, SP_PROBE_ERROR, "socket: %s", et);
        return;
    }
    switch (err) {
    case ETIMEDOUT:
        set_status(out, SP_PROBE_DOWN, "connect timed out after %.3fs",
                   timeout);
        break;
    case ECONNREFUSED:
        set_status(out, SP_PROBE_DOWN, "connection refused");
        break;
    case ENOENT:
        set_status(out, SP_PROBE_DOWN, "no unix socket at %.100s", what);
        break;
    case EAGAIN:
        /* unix sockets: the listen backlog is full */
        set_status(out, SP_PROBE_OVERLOADED, "listen backlog full");
        break;
    case EACCES: case EPERM: case EAFNOSUPPORT: case EINVAL:
    case ENOTDIR: case ENAMETOOLONG:
        set_status(out, SP_PROBE_ERROR, "connect: %s", et);
        break;
    default:
        set_status(out, SP_PROBE_DOWN, "connect: %s", et);
        break;
    }
}

static int probe_connect(const sp_probe_target *t, double timeout, sp_probe_result *out);

sp_probe_status
sp_probe_reachable(const sp_probe_target *t, sp_probe_result *out)
{
    double started = now_mono();
    double timeout = t->timeout;

    memset(out, 0, sizeof(*out));
    out->loading_eta = -1;
    if (!(timeout > 0) || timeout > 3600) {
        timeout = 1.0;
    }
    int fd = probe_connect(t, timeout, out);
    if (fd >= 0) {
        close(fd);
        out->status = SP_PROBE_OK;
        out->error[0] = '\0';
    }
    out->elapsed = now_mono() - started;
    return out->status;
}

int
sp_probe_refused(const sp_probe_target *t, sp_probe_result *out)
{
    if (sp_probe_reachable(t, out) != SP_PROBE_DOWN) {
        return 0;
    }
    /* The texts connect_failed() gives ECONNREFUSED and ENOENT. */
    return strcmp(out->error, "connection refused") == 0 ||
           strncmp(out->error, "no unix socket", 14) == 0;
}

/* Returns a connected fd or -1 with out->status/error set. */
static int
probe_connect(const sp_probe_target *t, double timeout,
              sp_probe_result *out)
{
    double deadline = now_mono() + timeout;
    int err = 0, local = 0, fd;

    if (t->unix_path != NULL) {
        struct sockaddr_un su;
        size_t pl = strlen(t->unix_path);

        if (pl == 0 || pl >= sizeof(su.sun_path)) {
            set_status(out, SP_PROBE_ERROR, "bad unix socket path");
            return -1;
        }
        memset(&su, 0, sizeof(su));
        su.sun_family = AF_UNIX;
        memcpy(su.sun_path, t->unix_path, pl + 1);
        fd = connect_addr((struct sockaddr *)&su, sizeof(su), deadline,
                          &err, &local);
        if (fd < 0) {
            connect_failed(out, err, local, timeout, t->unix_path);
        }
        return fd;
    }
    if (t->host == NULL || t->port <= 0 || t->port > 65535) {
        set_status(out, SP_PROBE_ERROR, "no host/port or unix path");
        return -1;
    }
    {
        struct sockaddr_in s4;
        struct sockaddr_in6 s6;

        memset(&s4, 0, sizeof(s4));
        memset(&s6, 0, sizeof(s6));
        if (inet_pton(AF_INET, t->host, &s4.sin_addr) == 1) {
            s4.sin_family = AF_INET;
            s4.sin_port = htons((unsigned short)t->port);
            fd = connect_addr((struct sockaddr *)&s4, sizeof(s4), deadline,
                              &err, &local);
            if (fd < 0) {
                connect_failed(out, err, local, timeout, t->host);
            }
            return fd;
        }
        if (inet_pton(AF_INET6, t->host, &s6.sin6_addr) == 1) {
            s6.sin6_family = AF_INET6;
            s6.sin6_port = htons((unsigned short)t->port);
            fd = connect_addr((struct sockaddr *)&s6, sizeof(s6), deadline,
                              &err, &local);
            if (fd < 0) {
                connect_failed(out, err, local, timeout, t->host);
            }
            return fd;
        }
    }
    {
        struct addrinfo hints, *res = NULL, *ai;
        char port[16];
        int rc;

        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        snprintf(port, sizeof(port), "%d", t->port);
        rc = getaddrinfo(t->host, port, &hints, &res);
        if (rc != 0 || res == NULL) {
            sp_probe_status s = (rc == EAI_MEMORY || rc == EAI_SYSTEM)
                                ? SP_PROBE_ERROR : SP_PROBE_DOWN;
            set_status(out, s, "cannot resolve %.64s: %s", t->host,
                       rc != 0 ? gai_strerror(rc) : "no address");
            if (res != NULL) {
                freeaddrinfo(res);
            }
            return -1;
        }
        fd = -1;
        err = ECONNREFUSED;
        for (ai = res; ai != NULL; ai = ai->ai_next) {
            fd = connect_addr(ai->ai_addr, ai->ai_addrlen, deadline,
                              &err, &local);
            if (fd >= 0 || err == ETIMEDOUT) {
                break;
            }
        }
        freeaddrinfo(res);
        if (fd < 0) {
            connect_failed(out, err, local, timeout, t->host);
        }
        return fd;
    }
}

/* 0 on success, else an errno value (ETIMEDOUT when the deadline passed). */
static int
send_all(int fd, const char *buf, size_t len, double deadline)
{
    size_t off = 0;

    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r == 0) {
                return ETIMEDOUT;
            }
            if (r < 0) {
                return errno;
            }
            continue;
        }
        return n < 0 ? errno : EPIPE;
    }
    return 0;
}

typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    int overflow;
} wbuf;

static void
w_put(wbuf *w, const char *s, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

/* Append one command as a RESP array of bulk strings. */
static void
w_cmd(wbuf *w, int argc, const char *const *argv)
{
    char head[32];
    int i, hl;

    hl = snprintf(head, sizeof(head), "*%d\r\n", argc);
    w_put(w, head, (size_t)hl);
    for (i = 0; i < argc; i++) {
        size_t al = strlen(argv[i]);
        hl = snprintf(head, sizeof(head), "$%zu\r\n", al);
        w_put(w, head, (size_t)hl);
        w_put(w, argv[i], al);
        w_put(w, "\r\n", 2);
    }
}

typedef enum {
    RD_OK, RD_EOF, RD_TIMEOUT, RD_ERRNO, RD_PROTO, RD_TOOBIG
} rd_status;

typedef struct {
    int fd;
    int err;        /* errno for RD_ERRNO */
    size_t len;     /* valid bytes in buf */
    size_t used;    /* bytes at the front already returned as replies */
    char buf[SP_PROBE_RBUF];
} reader;

/* Read the next complete reply; *reply / *rlen stay valid until the next
   call.  Bounded: every iteration either gains bytes (at most the buffer
   size) or waits no later than the deadline. */
static rd_status
read_reply(reader *r, double deadline, const char **reply, size_t *rlen)
{
    if (r->used > 0) {
        memmove(r->buf, r->buf + r->used, r->len - r->used);
        r->len -= r->used;
        r->used = 0;
    }
    for (;;) {
        long n = sp_resp_reply_len(r->buf, r->len);
        ssize_t got;

        if (n > 0) {
            *reply = r->buf;
            *rlen = (size_t)n;
            r->used = (size_t)n;
            return RD_OK;
        }
        if (n < 0) {
            return RD_PROTO;
        }
        if (r->len == sizeof(r->buf)) {
            return RD_TOOBIG;
        }
        got = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
        if (got > 0) {
            r->len += (size_t)got;
            continue;
        }
        if (got == 0) {
            return RD_EOF;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(r->fd, POLLIN, deadline);
            if (w == 0) {
                return RD_TIMEOUT;
            }
            if (w < 0) {
                r->err = errno;
                return RD_ERRNO;
            }
            continue;
        }
        r->err = errno;
        return RD_ERRNO;
    }
}

/* A handshake reply (to AUTH or PING) could not be read. */
static void
handshake_failed(sp_probe_result *out, reader *r, rd_status st,
                 double timeout, const char *cmd)
{
    char eb[96];

    switch (st) {
    case RD_TIMEOUT:
        set_status(out, SP_PROBE_OVERLOADED,
                   "connected, but no reply to %s within %.3fs", cmd,
                   timeout);
        break;
    case RD_EOF:
        set_status(out, SP_PROBE_DOWN,
                   "connection closed by server before replying to %s",
                   cmd);
        break;
    case RD_ERRNO:
        if (r->err == ECONNRESET) {
            set_status(out, SP_PROBE_DOWN, "connection reset by peer");
        }
        else {
            set_status(out, SP_PROBE_DOWN, "read: %s",
                       errno_text(r->err, eb, sizeof(eb)));
        }
        break;
    case RD_PROTO:
        set_status(out, SP_PROBE_ERROR, "protocol error in reply to %s",
                   cmd);
        break;
    case RD_TOOBIG:
        set_status(out, SP_PROBE_ERROR, "reply to %s too large", cmd);
        break;
    case RD_OK:
        break;
    }
}

/* Payload of a bulk-string reply, or NULL. */
static const char *
bulk_payload(const char *reply, size_t rlen, size_t *plen)
{
    const char *nl;
    size_t hdr;

    if (rlen < 5 || (reply[0] != '$' && reply[0] != '=')) {
        return NULL;
    }
    nl = memchr(reply, '\n', rlen);
    if (nl == NULL) {
        return NULL;
    }
    hdr = (size_t)(nl - reply) + 1;
    if (rlen < hdr + 2) {
        return NULL;
    }
    *plen = rlen - hdr - 2;
    return reply + hdr;
}

/* Read an INFO reply.  Returns 1 if the socket is still usable. */
static int
read_info(reader *r, double deadline, const char *section,
          sp_probe_result *out, int is_persistence)
{
    const char *reply = NULL, *payload;
    size_t rlen = 0, plen = 0;
    rd_status st = read_reply(r, deadline, &reply, &rlen);
    char val[48];

    if (st != RD_OK) {
        if (out->status == SP_PROBE_OK) {
            snprintf(out->error, sizeof(out->error),
                     "INFO %s: no usable reply", section);
        }
        return 0;
    }
    payload = bulk_payload(reply, rlen, &plen);
    if (payload == NULL) {
        if (out->status == SP_PROBE_OK) {
            int w = snprintf(out->error, sizeof(out->error), "INFO %s: ",
                             section);
            if (w > 0 && (size_t)w < sizeof(out->error)) {
                size_t l = (size_t)(
                    (const char *)memchr(reply, '\n', rlen) - reply) - 1;
                copy_text(out->error + w, sizeof(out->error) - (size_t)w,
                          reply, l);
            }
        }
        return 1;
    }
    if (is_persistence) {
        if (sp_info_field(payload, plen, "loading_eta_seconds",
                          val, sizeof(val))) {
            char *end = NULL;
            double eta = strtod(val, &end);
            if (end != val && eta >= 0) {
                out->loading_eta = eta;
            }
        }
    }
    else {
        sp_info_field(payload, plen, "run_id", out->run_id,
                      sizeof(out->run_id));
    }
    return 1;
}

static void
probe_session(int fd, const sp_probe_target *t, double timeout,
              sp_probe_result *out)
{
    static const char *const ping[] = {"PING"};
    static const char *const info_server[] = {"INFO", "server"};
    static const char *const info_pers[] = {"INFO", "persistence"};
    char wb[SP_PROBE_WBUF];
    wbuf w = {wb, sizeof(wb), 0, 0};
    reader r;
    const char *reply = NULL;
    size_t rlen = 0;
    rd_status st;
    sp_probe_status s;
    int have_auth = t->password != NULL;

    if (have_auth) {
        const char *auth[3];
        auth[0] = "AUTH";
        if (t->username != NULL) {
            auth[1] = t->username;
            auth[2] = t->password;
            w_cmd(&w, 3, auth);
        }
        else {
            auth[1] = t->password;
            w_cmd(&w, 2, auth);
        }
    }
    w_cmd(&w, 1, ping);
    w_cmd(&w, 2, info_server);
    if (w.overflow) {
        set_status(out, SP_PROBE_ERROR, "credentials too long");
        return;
    }
    r.fd = fd;
    r.err = 0;
    r.len = 0;
    r.used = 0;
    /* Even when the send fails (EPIPE, ECONNRESET) the server may have
       said why before closing (max clients reached), so read anyway. */
    (void)send_all(fd, wb, w.len, now_mono() + timeout);

    if (have_auth) {
        st = read_reply(&r, now_mono() + timeout, &reply, &rlen);
        if (st != RD_OK) {
            handshake_failed(out, &r, st, timeout, "AUTH");
            return;
        }
        s = sp_probe_classify_reply(reply, rlen, out->error,
                                    sizeof(out->error));
        if (s != SP_PROBE_OK) {
            if (s == SP_PROBE_ERROR && reply[0] == '-') {
                s = SP_PROBE_AUTH;
            }
            out->status = s;
            return;
        }
    }
    st = read_reply(&r, now_mono() + timeout, &reply, &rlen);
    if (st != RD_OK) {
        handshake_failed(out, &r, st, timeout, "PING");
        return;
    }
    s = sp_probe_classify_reply(reply, rlen, out->error, sizeof(out->error));
    out->status = s;
    if (s != SP_PROBE_OK && s != SP_PROBE_LOADING) {
        return;
    }
    if (!read_info(&r, now_mono() + timeout, "server", out, 0)) {
        return;
    }
    if (s == SP_PROBE_LOADING) {
        w.len = 0;
        w_cmd(&w, 2, info_pers);
        if (send_all(fd, wb, w.len, now_mono() + timeout) != 0) {
            return;
        }
        (void)read_info(&r, now_mono() + timeout, "persistence", out, 1);
    }
}

void
sp_probe(const sp_probe_target *t, sp_probe_result *out)
{
    double t0 = now_mono();
    double timeout;
    int fd;

    if (out == NULL) {
        return;
    }
    out->status = SP_PROBE_ERROR;
    out->run_id[0] = '\0';
    out->loading_eta = -1.0;
    out->error[0] = '\0';
    out->elapsed = 0.0;
    if (t == NULL) {
        set_status(out, SP_PROBE_ERROR, "no target");
        return;
    }
    timeout = t->timeout;
    if (!(timeout > 0)) {               /* also catches NaN */
        timeout = SP_PROBE_DEFAULT_TIMEOUT;
    }
    if (timeout > SP_PROBE_MAX_TIMEOUT) {
        timeout = SP_PROBE_MAX_TIMEOUT;
    }
    fd = probe_connect(t, timeout, out);
    if (fd >= 0) {
        probe_session(fd, t, timeout, out);
        close(fd);
    }
    out->elapsed = now_mono() - t0;
}
