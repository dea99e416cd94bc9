/* RESP health probe as a non-blocking state machine: connect, AUTH, PING, INFO; classify answer. */
#include "probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
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

#include "checker.h"
#include "clock.h"
#include "net.h"
#include "resp.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0      /* platforms with SO_NOSIGPIPE instead */
#endif

#define SP_PROBE_DEFAULT_TIMEOUT 1.0
#define SP_PROBE_MAX_TIMEOUT 3600.0

/* ------------------------------------------------------------------ */
/* deadlines, results                                                   */

/* Milliseconds until deadline, rounded up so poll() never spins; 0 if
   the deadline has passed. */
static int
ms_left(double deadline)
{
    double left = deadline - sp_now();

    if (left <= 0) {
        return 0;
    }
    return (int)(left * 1000.0) + 1;
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
        sp_copy_printable(err, errsize, buf, ll + 1);
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
            sp_copy_printable(err + w, errsize - (size_t)w, buf,
                      (size_t)len > 40 ? 40 : (size_t)len);
        }
    }
    return SP_PROBE_ERROR;
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


static void
connect_failed(sp_probe_result *out, int err, int local, double timeout,
               const char *what)
{
    char eb[96];
    const char *et = sp_net_errno_text(err, eb, sizeof(eb));

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

/* Starts connecting op to t.  Returns the fd (op->phase tells whether the
   connect is still in progress) or -1 with op->res set. */
static int
probe_connect_start(sp_probe_op *op, const sp_probe_target *t)
{
    int err = 0, local = 0, pending = 0, fd;
    const char *what = t->unix_path != NULL ? t->unix_path : t->host;

    if (t->unix_path != NULL) {
        struct sockaddr_un su;
        size_t pl = strlen(t->unix_path);

        if (pl == 0 || pl >= sizeof(su.sun_path)) {
            set_status(&op->res, SP_PROBE_ERROR, "bad unix socket path");
            return -1;
        }
        memset(&su, 0, sizeof(su));
        su.sun_family = AF_UNIX;
        memcpy(su.sun_path, t->unix_path, pl + 1);
        fd = sp_net_connect_start((struct sockaddr *)&su, sizeof(su), &pending,
                           &err, &local);
    }
    else if (t->host == NULL || t->port <= 0 || t->port > 65535) {
        set_status(&op->res, SP_PROBE_ERROR, "no host/port or unix path");
        return -1;
    }
    else {
        struct sockaddr_in s4;
        struct sockaddr_in6 s6;

        memset(&s4, 0, sizeof(s4));
        memset(&s6, 0, sizeof(s6));
        if (inet_pton(AF_INET, t->host, &s4.sin_addr) == 1) {
            s4.sin_family = AF_INET;
            s4.sin_port = htons((unsigned short)t->port);
            fd = sp_net_connect_start((struct sockaddr *)&s4, sizeof(s4), &pending,
                               &err, &local);
        }
        else if (inet_pton(AF_INET6, t->host, &s6.sin6_addr) == 1) {
            s6.sin6_family = AF_INET6;
            s6.sin6_port = htons((unsigned short)t->port);
            fd = sp_net_connect_start((struct sockaddr *)&s6, sizeof(s6), &pending,
                               &err, &local);
        }
        else {
            struct addrinfo hints, *res = NULL, *ai;
            char port[16];
            int rc;

            memset(&hints, 0, sizeof(hints));
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            hints.ai_flags = AI_NUMERICSERV;
            snprintf(port, sizeof(port), "%d", t->port);
            sp_checker_blocking_begin();   /* a fork need not wait for DNS */
            rc = getaddrinfo(t->host, port, &hints, &res);
            sp_checker_blocking_end();
            if (rc != 0 || res == NULL) {
                sp_probe_status s = (rc == EAI_MEMORY || rc == EAI_SYSTEM)
                                    ? SP_PROBE_ERROR : SP_PROBE_DOWN;
                set_status(&op->res, s, "cannot resolve %.64s: %s", t->host,
                           rc != 0 ? gai_strerror(rc) : "no address");
                if (res != NULL) {
                    freeaddrinfo(res);
                }
                return -1;
            }
            /* The first address whose connect does not fail at once. */
            fd = -1;
            err = ECONNREFUSED;
            for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
                fd = sp_net_connect_start(ai->ai_addr, ai->ai_addrlen, &pending,
                                   &err, &local);
            }
            freeaddrinfo(res);
        }
    }
    if (fd < 0) {
        connect_failed(&op->res, err, local, op->timeout, what);
        return -1;
    }
    op->phase = pending ? SP_PROBE_CONNECTING : SP_PROBE_SENDING;
    return fd;
}

/* ------------------------------------------------------------------ */
/* the state machine                                                   */

typedef enum {
    RD_OK, RD_AGAIN, RD_EOF, RD_ERRNO, RD_PROTO, RD_TOOBIG
} rd_status;

/* The command whose reply the current phase waits for. */
static const char *
phase_cmd(const sp_probe_op *op)
{
    switch (op->phase) {
    case SP_PROBE_READ_AUTH:
        return "AUTH";
    case SP_PROBE_READ_INFO:
        return "INFO server";
    case SP_PROBE_READ_CLIENTS:
        return "INFO clients";
    case SP_PROBE_READ_STATS:
        return "INFO stats";
    case SP_PROBE_SEND_PERSISTENCE:
    case SP_PROBE_READ_PERSISTENCE:
        return "INFO persistence";
    case SP_PROBE_SENDING:
        return op->have_auth ? "AUTH" : "PING";
    default:
        return "PING";
    }
}

static void
finish(sp_probe_op *op)
{
    if (op->fd >= 0) {
        sp_net_close(op->fd);
        op->fd = -1;
    }
    op->phase = SP_PROBE_DONE;
    op->res.elapsed = sp_now() - op->started;
}

static void
enter(sp_probe_op *op, int phase)
{
    op->phase = phase;
    op->deadline = sp_now() + op->timeout;
}

/* Next complete reply from the socket, without blocking: RD_AGAIN when
   more bytes are needed and none are there yet. */
static rd_status
next_reply(sp_probe_op *op, const char **reply, size_t *rlen)
{
    if (op->rused > 0) {
        memmove(op->rbuf, op->rbuf + op->rused, op->rlen - op->rused);
        op->rlen -= op->rused;
        op->rused = 0;
    }
    for (;;) {
        long n = sp_resp_reply_len(op->rbuf, op->rlen);
        ssize_t got;

        if (n > 0) {
            *reply = op->rbuf;
            *rlen = (size_t)n;
            op->rused = (size_t)n;
            return RD_OK;
        }
        if (n < 0) {
            return RD_PROTO;
        }
        if (op->rlen == sizeof(op->rbuf)) {
            return RD_TOOBIG;
        }
        got = recv(op->fd, op->rbuf + op->rlen, sizeof(op->rbuf) - op->rlen, 0);
        if (got > 0) {
            op->rlen += (size_t)got;
            continue;
        }
        if (got == 0) {
            return RD_EOF;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return RD_AGAIN;
        }
        op->rerr = errno;
        return RD_ERRNO;
    }
}

/* A handshake reply (to AUTH or PING) could not be read. */
static void
handshake_failed(sp_probe_op *op, rd_status st)
{
    char eb[96];
    sp_probe_result *out = &op->res;
    const char *cmd = phase_cmd(op);

    switch (st) {
    case RD_EOF:
        set_status(out, SP_PROBE_DOWN,
                   "connection closed by server before replying to %s", cmd);
        break;
    case RD_ERRNO:
        if (op->rerr == ECONNRESET) {
            set_status(out, SP_PROBE_DOWN, "connection reset by peer");
        }
        else {
            set_status(out, SP_PROBE_DOWN, "read: %s",
                       sp_net_errno_text(op->rerr, eb, sizeof(eb)));
        }
        break;
    case RD_PROTO:
        set_status(out, SP_PROBE_ERROR, "protocol error in reply to %s", cmd);
        break;
    case RD_TOOBIG:
        set_status(out, SP_PROBE_ERROR, "reply to %s too large", cmd);
        break;
    default:
        break;
    }
}

/* Why the server's view is incomplete: the first reason is kept. */
static void
view_failed(sp_probe_result *out, const char *section, const char *reply, size_t rlen)
{
    size_t n = 0;

    if (out->view_error[0] != '\0') {
        return;
    }
    if (reply == NULL) {
        snprintf(out->view_error, sizeof(out->view_error), "INFO %s: no usable reply", section);
        return;
    }
    if (reply[0] != '-') {
        snprintf(out->view_error, sizeof(out->view_error), "INFO %s: unexpected reply", section);
        return;
    }
    /* The error code only (NOPERM, ERR...): a listener that is not Redis
     * may echo what it was sent. */
    while (n + 1 < rlen && n < 32 && reply[n + 1] >= 'A' && reply[n + 1] <= 'Z') {
        n++;
    }
    snprintf(out->view_error, sizeof(out->view_error), "INFO %s: -%.*s%s", section, (int)n,
             reply + 1, n >= 6 && memcmp(reply + 1, "NOPERM", 6) == 0
                            ? " (the user may not run INFO)" : "");
}

/* The INFO section a phase reads. */
static const char *
info_section(int phase)
{
    switch (phase) {
    case SP_PROBE_READ_CLIENTS:
        return "clients";
    case SP_PROBE_READ_STATS:
        return "stats";
    case SP_PROBE_READ_PERSISTENCE:
        return "persistence";
    default:
        return "server";
    }
}

/* Reads the INFO reply of op->phase into op->res.  Returns 0 when it is
   done (read or unusable), 1 when more bytes are needed. */
static int
step_info(sp_probe_op *op)
{
    const char *reply = NULL, *payload;
    size_t rlen = 0, plen = 0;
    const char *section = info_section(op->phase);
    int of_view = op->phase == SP_PROBE_READ_CLIENTS || op->phase == SP_PROBE_READ_STATS;
    sp_probe_result *out = &op->res;
    rd_status st = next_reply(op, &reply, &rlen);
    char val[48];

    if (st == RD_AGAIN) {
        return 1;
    }
    if (st != RD_OK) {
        if (of_view) {
            view_failed(out, section, NULL, 0);
        }
        else if (out->status == SP_PROBE_OK) {
            snprintf(out->error, sizeof(out->error),
                     "INFO %s: no usable reply", section);
        }
        op->info_broken = 1;
        return 0;
    }
    payload = sp_resp_bulk_payload(reply, rlen, &plen);
    if (payload == NULL) {
        if (of_view) {
            view_failed(out, section, reply, rlen);
        }
        else if (out->status == SP_PROBE_OK) {
            int w = snprintf(out->error, sizeof(out->error), "INFO %s: ", section);
            if (w > 0 && (size_t)w < sizeof(out->error)) {
                size_t l = (size_t)(
                    (const char *)memchr(reply, '\n', rlen) - reply) - 1;
                sp_copy_printable(out->error + w, sizeof(out->error) - (size_t)w,
                          reply, l);
            }
        }
        return 0;
    }
    if (op->phase == SP_PROBE_READ_PERSISTENCE) {
        if (sp_info_field(payload, plen, "loading_eta_seconds", val, sizeof(val))) {
            char *end = NULL;
            double eta = strtod(val, &end);
            if (end != val && eta >= 0) {
                out->loading_eta = eta;
            }
        }
    }
    else if (of_view) {
        /* Each section says only its own fields: the clients section has
         * no rejected_connections, the stats section no maxclients. */
        sp_server_view got;
        sp_server_view_init(&got);
        sp_server_view_parse(&got, payload, plen);
        if (op->phase == SP_PROBE_READ_CLIENTS) {
            out->view.connected_clients = got.connected_clients;
            out->view.maxclients = got.maxclients;
            if (!sp_server_view_usable(&got)) {
                snprintf(out->view_error, sizeof(out->view_error),
                         "INFO clients: no connected_clients/maxclients");
            }
        }
        else {
            out->view.rejected_connections = got.rejected_connections;
        }
    }
    else {
        sp_info_field(payload, plen, "run_id", out->run_id, sizeof(out->run_id));
    }
    return 0;
}

/* What is kept of a failed reply to AUTH: its error code, or the one
 * known server text it starts with, never the rest: a listener that is not
 * Redis (or an old one) may echo the command, password included. */
static void
auth_reply_text(const char *reply, size_t rlen, sp_probe_status s,
                char *err, size_t errsize)
{
    static const char maxclients[] = "ERR max number of clients reached";
    size_t n = 0;

    if (s == SP_PROBE_OVERLOADED && rlen > sizeof(maxclients)
        && memcmp(reply + 1, maxclients, sizeof(maxclients) - 1) == 0) {
        snprintf(err, errsize, "-%s", maxclients);
        return;
    }
    if (reply[0] != '-') {
        snprintf(err, errsize, "unexpected reply to AUTH");
        return;
    }
    while (n + 1 < rlen && n < 32 && reply[n + 1] >= 'A' && reply[n + 1] <= 'Z') {
        n++;
    }
    snprintf(err, errsize, "-%.*s (reply to AUTH)", (int)n, reply + 1);
}

/* Sends what is left of op->wbuf.  1: more to send later (EAGAIN), 0: all
   sent, -1: the send failed. */
static int
send_rest(sp_probe_op *op)
{
    while (op->woff < op->wlen) {
        ssize_t n = send(op->fd, op->wbuf + op->woff, op->wlen - op->woff,
                         MSG_NOSIGNAL);
        if (n > 0) {
            op->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 1;
        }
        return -1;
    }
    return 0;
}

/* Runs the probe as far as it goes without blocking: 1 while it waits for
   the socket (op->want says for what), 0 when done. */
static int
advance(sp_probe_op *op)
{
    static const char *const info_pers[] = {"INFO", "persistence"};
    const char *reply = NULL;
    size_t rlen = 0;
    rd_status st;
    sp_probe_status s;

    for (;;) {
        switch (op->phase) {
        case SP_PROBE_CONNECTING: {
            struct pollfd p = {op->fd, POLLOUT, 0};
            int soerr = 0;
            socklen_t sl = sizeof(soerr);

            if (poll(&p, 1, 0) <= 0) {
                op->want = POLLOUT;
                return 1;
            }
            if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
                soerr = errno;
            }
            if (soerr != 0) {
                connect_failed(&op->res, soerr, 0, op->timeout, op->what);
                finish(op);
                return 0;
            }
            enter(op, SP_PROBE_SENDING);
            break;
        }
        case SP_PROBE_SENDING:
            if (op->bare == SP_PROBE_MODE_CONNECT) {
                op->res.status = SP_PROBE_OK;
                op->res.error[0] = '\0';
                finish(op);
                return 0;
            }
            if (op->bare == SP_PROBE_MODE_TLS_ALERT) {
                int r = send_rest(op);
                if (r == 1) {
                    op->want = POLLOUT;
                    return 1;
                }
                enter(op, SP_PROBE_READ_ANY);  /* a failed send (reset) is an answer too */
                break;
            }
            if (send_rest(op) == 1) {
                op->want = POLLOUT;
                return 1;
            }
            /* Even when the send failed (EPIPE, ECONNRESET) the server may
               have said why before closing (max clients reached): read. */
            enter(op, op->have_auth ? SP_PROBE_READ_AUTH : SP_PROBE_READ_PING);
            break;
        case SP_PROBE_READ_AUTH:
        case SP_PROBE_READ_PING:
            st = next_reply(op, &reply, &rlen);
            if (st == RD_AGAIN) {
                op->want = POLLIN;
                return 1;
            }
            if (st != RD_OK) {
                handshake_failed(op, st);
                finish(op);
                return 0;
            }
            s = sp_probe_classify_reply(reply, rlen, op->res.error,
                                        sizeof(op->res.error));
            if (op->phase == SP_PROBE_READ_AUTH) {
                if (s != SP_PROBE_OK) {
                    if (s == SP_PROBE_ERROR && reply[0] == '-') {
                        s = SP_PROBE_AUTH;
                    }
                    auth_reply_text(reply, rlen, s, op->res.error,
                                    sizeof(op->res.error));
                    op->res.status = s;
                    finish(op);
                    return 0;
                }
                enter(op, SP_PROBE_READ_PING);
                break;
            }
            op->res.status = s;
            if (s != SP_PROBE_OK && s != SP_PROBE_LOADING) {
                finish(op);
                return 0;
            }
            enter(op, SP_PROBE_READ_INFO);
            break;
        case SP_PROBE_READ_INFO:
        case SP_PROBE_READ_CLIENTS:
            if (step_info(op)) {
                op->want = POLLIN;
                return 1;
            }
            if (op->info_broken) {
                finish(op);
                return 0;
            }
            if (op->phase == SP_PROBE_READ_INFO) {
                op->res.view_error[0] = '\0';  /* the view's replies come next */
            }
            enter(op, op->phase + 1);
            break;
        case SP_PROBE_READ_STATS:
            if (step_info(op)) {
                op->want = POLLIN;
                return 1;
            }
            if (op->res.status != SP_PROBE_LOADING || op->info_broken) {
                finish(op);
                return 0;
            }
            {
                sp_resp_buf w = {op->wbuf, sizeof(op->wbuf), 0, 0};
                sp_resp_cmd(&w, 2, info_pers);
                op->wlen = w.len;
                op->woff = 0;
            }
            enter(op, SP_PROBE_SEND_PERSISTENCE);
            break;
        case SP_PROBE_SEND_PERSISTENCE: {
            int r = send_rest(op);
            if (r == 1) {
                op->want = POLLOUT;
                return 1;
            }
            if (r < 0) {
                finish(op);
                return 0;
            }
            enter(op, SP_PROBE_READ_PERSISTENCE);
            break;
        }
        case SP_PROBE_READ_PERSISTENCE:
            if (step_info(op)) {
                op->want = POLLIN;
                return 1;
            }
            finish(op);
            return 0;
        case SP_PROBE_READ_ANY: {
            struct pollfd p = {op->fd, POLLIN, 0};
            if (poll(&p, 1, 0) <= 0) {
                op->want = POLLIN;
                return 1;
            }
            /* Its TLS stack read our alert and answered or hung up: the
               server process runs. */
            op->res.status = SP_PROBE_OK;
            op->res.error[0] = '\0';
            finish(op);
            return 0;
        }
        default:
            return 0;
        }
    }
}

int
sp_probe_begin(sp_probe_op *op, const sp_probe_target *t, int bare)
{
    static const char *const ping[] = {"PING"};
    static const char *const info_server[] = {"INFO", "server"};
    static const char *const info_clients[] = {"INFO", "clients"};
    static const char *const info_stats[] = {"INFO", "stats"};
    double timeout;

    op->fd = -1;
    op->phase = SP_PROBE_DONE;
    op->want = 0;
    op->bare = bare;
    op->have_auth = 0;
    op->info_broken = 0;
    op->rerr = 0;
    op->wlen = op->woff = op->rlen = op->rused = 0;
    op->started = sp_now();
    op->deadline = op->started;
    op->what[0] = '\0';
    op->res.status = SP_PROBE_ERROR;
    op->res.run_id[0] = '\0';
    op->res.loading_eta = -1.0;
    op->res.error[0] = '\0';
    op->res.elapsed = 0.0;
    sp_server_view_init(&op->res.view);
    snprintf(op->res.view_error, sizeof(op->res.view_error), "no INFO reply");
    if (t == NULL) {
        set_status(&op->res, SP_PROBE_ERROR, "no target");
        return 0;
    }
    timeout = t->timeout;
    if (!(timeout > 0)) {               /* also catches NaN */
        timeout = SP_PROBE_DEFAULT_TIMEOUT;
    }
    if (timeout > SP_PROBE_MAX_TIMEOUT) {
        timeout = SP_PROBE_MAX_TIMEOUT;
    }
    op->timeout = timeout;
    op->deadline = op->started + timeout;
    snprintf(op->what, sizeof(op->what), "%s",
             t->unix_path != NULL ? t->unix_path : (t->host ? t->host : ""));
    if (bare == SP_PROBE_MODE_TLS_ALERT) {
        /* TLS record: alert, version 3.1, length 2; fatal handshake_failure */
        static const unsigned char alert[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28};
        memcpy(op->wbuf, alert, sizeof(alert));
        op->wlen = sizeof(alert);
    }
    else if (bare == SP_PROBE_MODE_RESP) {
        sp_resp_buf w = {op->wbuf, sizeof(op->wbuf), 0, 0};
        if (t->password != NULL) {
            const char *auth[3];
            auth[0] = "AUTH";
            if (t->username != NULL) {
                auth[1] = t->username;
                auth[2] = t->password;
                sp_resp_cmd(&w, 3, auth);
            }
            else {
                auth[1] = t->password;
                sp_resp_cmd(&w, 2, auth);
            }
            op->have_auth = 1;
        }
        sp_resp_cmd(&w, 1, ping);
        sp_resp_cmd(&w, 2, info_server);
        sp_resp_cmd(&w, 2, info_clients);
        sp_resp_cmd(&w, 2, info_stats);
        if (w.overflow) {
            memset(op->wbuf, 0, sizeof(op->wbuf));
            set_status(&op->res, SP_PROBE_ERROR, "credentials too long");
            return 0;
        }
        op->wlen = w.len;
    }
    op->fd = probe_connect_start(op, t);
    if (op->fd < 0) {
        finish(op);
        return 0;
    }
    return advance(op);
}

int
sp_probe_continue(sp_probe_op *op)
{
    if (op->phase == SP_PROBE_DONE) {
        return 0;
    }
    return advance(op);
}

int
sp_probe_expire(sp_probe_op *op, double now)
{
    if (op->phase == SP_PROBE_DONE) {
        return 0;
    }
    if (now < op->deadline) {
        return 1;
    }
    switch (op->phase) {
    case SP_PROBE_CONNECTING:
        connect_failed(&op->res, ETIMEDOUT, 0, op->timeout, op->what);
        break;
    case SP_PROBE_READ_ANY:
        set_status(&op->res, SP_PROBE_OVERLOADED,
                   "connected, but no answer to a TLS alert within %.3fs", op->timeout);
        break;
    case SP_PROBE_SENDING:
    case SP_PROBE_READ_AUTH:
    case SP_PROBE_READ_PING:
        set_status(&op->res, SP_PROBE_OVERLOADED,
                   "connected, but no reply to %s within %.3fs", phase_cmd(op),
                   op->timeout);
        break;
    case SP_PROBE_READ_CLIENTS:
    case SP_PROBE_READ_STATS:
        view_failed(&op->res, info_section(op->phase), NULL, 0);
        break;
    default:
        /* INFO after a PING reply: the status stands. */
        if (op->res.status == SP_PROBE_OK) {
            snprintf(op->res.error, sizeof(op->res.error),
                     "%s: no usable reply", phase_cmd(op));
        }
        break;
    }
    finish(op);
    return 0;
}

void
sp_probe_abort(sp_probe_op *op)
{
    if (op->phase != SP_PROBE_DONE) {
        set_status(&op->res, SP_PROBE_ERROR, "probe abandoned");
        finish(op);
    }
}

/* Runs op to the end, waiting in poll() up to each phase's deadline. */
static void
run_blocking(sp_probe_op *op, int pending)
{
    while (pending) {
        struct pollfd p = {op->fd, op->want, 0};
        int r = poll(&p, 1, ms_left(op->deadline));

        if (r < 0 && errno != EINTR) {
            char eb[96];
            set_status(&op->res, SP_PROBE_ERROR, "poll: %s",
                       sp_net_errno_text(errno, eb, sizeof(eb)));
            finish(op);
            return;
        }
        pending = sp_probe_continue(op);
        if (pending) {
            pending = sp_probe_expire(op, sp_now());
        }
    }
}

void
sp_probe(const sp_probe_target *t, sp_probe_result *out)
{
    sp_probe_op *op;

    if (out == NULL) {
        return;
    }
    op = malloc(sizeof(*op));
    if (op == NULL) {
        memset(out, 0, sizeof(*out));
        out->loading_eta = -1.0;
        set_status(out, SP_PROBE_ERROR, "out of memory");
        return;
    }
    run_blocking(op, sp_probe_begin(op, t, 0));
    *out = op->res;
    /* The request may hold a password: leave nothing behind. */
    memset(op->wbuf, 0, sizeof(op->wbuf));
    free(op);
}

sp_probe_status
sp_probe_reachable(const sp_probe_target *t, sp_probe_result *out)
{
    sp_probe_op *op = malloc(sizeof(*op));

    if (op == NULL) {
        memset(out, 0, sizeof(*out));
        out->loading_eta = -1.0;
        set_status(out, SP_PROBE_ERROR, "out of memory");
        return out->status;
    }
    run_blocking(op, sp_probe_begin(op, t, 1));
    *out = op->res;
    free(op);
    return out->status;
}

int
sp_probe_refused(const sp_probe_target *t, sp_probe_result *out)
{
    if (sp_probe_reachable(t, out) != SP_PROBE_DOWN) {
        return 0;
    }
    return sp_probe_result_refused(out);
}

int
sp_probe_result_refused(const sp_probe_result *res)
{
    /* The texts connect_failed() gives ECONNREFUSED and ENOENT. */
    return res->status == SP_PROBE_DOWN &&
           (strcmp(res->error, "connection refused") == 0 ||
            strncmp(res->error, "no unix socket", 14) == 0);
}
