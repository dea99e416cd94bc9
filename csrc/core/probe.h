/* RESP health probe of one Redis server: a non-blocking state machine, and blocking wrappers (pure C). */
#ifndef SP_PROBE_H
#define SP_PROBE_H

#include <stddef.h>

#include "server_view.h"

/*
 * A probe opens its own short-lived socket (TCP or unix, non-blocking,
 * CLOEXEC, MSG_NOSIGNAL), sends RESP arrays in one write:
 *
 *     [AUTH [username] password]  PING  INFO server  INFO clients  INFO stats
 *
 * (the last two give the server's view of its clients: server_view.h)
 * and, only when PING answered -LOADING, one more round trip for
 * "INFO persistence" (loading_eta_seconds).
 *
 * The engine (sp_probe_begin/continue/expire) never blocks, except in
 * getaddrinfo() for host names that are not numeric addresses: the
 * checker thread runs many probes at once in its event loop, each with its
 * own deadline. sp_probe() and sp_probe_reachable() run one probe to the
 * end in poll(); their socket is closed before they return.
 *
 * Classification:
 *   OK          PING answered +PONG (run_id filled from INFO server when
 *               the user may run INFO; "" otherwise).
 *   DOWN        connect refused / reset / unreachable, no unix socket file,
 *               connect not finished within `timeout`, or the server closed
 *               or reset the connection before answering.
 *   OVERLOADED  -ERR max number of clients reached, -BUSY (script or module
 *               busy), a unix listen backlog that is full, or the connection
 *               was established but no complete reply came within `timeout`
 *               (handshake timeout after connect).
 *   LOADING     -LOADING (loading_eta from INFO persistence, -1 if unknown).
 *   AUTH        -NOAUTH / -WRONGPASS / -NOPERM, or any error reply to AUTH
 *               (e.g. AUTH sent to a server with no password configured).
 *   ERROR       anything else: protocol errors, unexpected replies, replies
 *               larger than the probe buffer, local failures (socket(),
 *               credentials too long, bad target).
 *
 * `timeout` applies to the connect and separately to each reply; the probe
 * returns at the first timeout, so a silent or unreachable server costs
 * about one `timeout` (a server answering each reply just in time could
 * stretch it to 5 * timeout).  A timeout <= 0 (or NaN) means 1 second;
 * values above 3600 are clamped.  Host names other than numeric IPv4/IPv6
 * are resolved with getaddrinfo(), which may block on DNS.
 */

typedef enum {
    SP_PROBE_OK = 0,        /* +PONG, server usable */
    SP_PROBE_DOWN,          /* refused, reset, EOF, connect timeout */
    SP_PROBE_OVERLOADED,    /* max clients, -BUSY, no reply after connect */
    SP_PROBE_LOADING,       /* -LOADING */
    SP_PROBE_AUTH,          /* -NOAUTH / -WRONGPASS / -NOPERM */
    SP_PROBE_ERROR          /* anything else unexpected (protocol error...) */
} sp_probe_status;

typedef struct {
    const char *host;        /* NULL when unix_path is set */
    int port;
    const char *unix_path;   /* NULL for TCP */
    const char *username;    /* NULL = none */
    const char *password;    /* NULL = no AUTH */
    double timeout;          /* seconds, for connect and for each reply */
} sp_probe_target;

typedef struct {
    sp_probe_status status;
    char run_id[41];         /* from INFO server, "" if unknown */
    double loading_eta;      /* loading_eta_seconds, -1 unknown */
    char error[160];         /* short human-readable reason, "" when OK */
    double elapsed;          /* seconds the probe took */
    sp_server_view view;     /* from INFO clients and INFO stats (-1: unknown) */
    char view_error[96];     /* why the view is incomplete, "" when it is not;
                                error codes only, never the text of a reply */
} sp_probe_result;

/* Probe the server described by t; always fills *out completely. Blocks
   up to the target's timeout per step. */
void sp_probe(const sp_probe_target *t, sp_probe_result *out);

/* ---- the non-blocking engine ---- */

#define SP_PROBE_RBUF 16384             /* largest reply accepted */
#define SP_PROBE_WBUF 4096              /* largest request sent */

enum {
    SP_PROBE_DONE = 0,          /* op->res is final, the socket is closed */
    SP_PROBE_CONNECTING,
    SP_PROBE_SENDING,
    SP_PROBE_READ_AUTH,
    SP_PROBE_READ_PING,
    SP_PROBE_READ_INFO,
    SP_PROBE_READ_CLIENTS,
    SP_PROBE_READ_STATS,
    SP_PROBE_SEND_PERSISTENCE,
    SP_PROBE_READ_PERSISTENCE,
    SP_PROBE_READ_ANY           /* TLS alert sent: any byte, EOF or reset answers */
};

/* What a probe sends (sp_probe_begin's `bare`). */
#define SP_PROBE_MODE_RESP 0       /* AUTH, PING, INFO: the full probe */
#define SP_PROBE_MODE_CONNECT 1    /* connect only: refused or not */
/* A TLS port that may be stopped: connect, send one fatal TLS alert record
 * and wait for the server's TLS stack to answer it (an alert, or closing
 * the socket). A stopped or black-holed server lets the connect through
 * its kernel backlog but never answers; no certificate or TLS library is
 * needed to tell that apart. The server logs the aborted handshake, so this
 * is used only while the endpoint is suspected of not answering. */
#define SP_PROBE_MODE_TLS_ALERT 2

/* One probe in flight. Owned by one thread; no locks. Every field is
 * internal except fd, want and deadline (what to wait for, until when). */
typedef struct {
    int fd;                  /* -1 once done */
    int phase;               /* SP_PROBE_DONE, ... */
    short want;              /* POLLIN or POLLOUT while pending */
    int bare;                /* SP_PROBE_MODE_RESP, _CONNECT or _TLS_ALERT */
    int have_auth;
    int info_broken;
    int rerr;
    double timeout;          /* seconds per step (connect, each reply) */
    double started;          /* CLOCK_MONOTONIC seconds, as sp_now() */
    double deadline;         /* of the current step, same clock */
    char what[112];          /* host or unix path, for messages */
    size_t wlen, woff;       /* request bytes, sent so far */
    size_t rlen, rused;      /* reply bytes read, consumed */
    char wbuf[SP_PROBE_WBUF];
    char rbuf[SP_PROBE_RBUF];
    sp_probe_result res;
} sp_probe_op;

/* Starts a probe of t (bare: an SP_PROBE_MODE_*; _CONNECT is sp_probe_reachable()).
   Returns 1 while it waits for op->fd (op->want) until op->deadline, 0
   when it is already done (refused on loopback is known at once). t and
   its strings need not outlive the call. */
int sp_probe_begin(sp_probe_op *op, const sp_probe_target *t, int bare);
/* Goes on as far as it can without blocking (after op->fd polled ready,
   or at any time): 1 still pending, 0 done. */
int sp_probe_continue(sp_probe_op *op);
/* Ends the probe with its timeout classification when `now` (sp_now()
   seconds) is past op->deadline: 0 done, 1 still pending. */
int sp_probe_expire(sp_probe_op *op, double now);
/* Ends a pending probe at once (status ERROR, socket closed). */
void sp_probe_abort(sp_probe_op *op);

/* 1 when res says nothing listens (connection refused, or no unix socket
   file): down for sure. */
int sp_probe_result_refused(const sp_probe_result *res);

/* Connect only (no RESP): OK if the server accepts a connection, else DOWN
   or ERROR with the reason in out->error. The socket is closed at once. For
   a request thread that found its idle socket dead: is the server gone? */
sp_probe_status sp_probe_reachable(const sp_probe_target *t, sp_probe_result *out);

/* Connect only, like sp_probe_reachable(): 1 when nothing listens (the
   connection was refused, or the unix socket file is gone), so the server
   is down for sure; 0 when it accepted or the answer is unsure (a
   timeout, a local error). */
int sp_probe_refused(const sp_probe_target *t, sp_probe_result *out);

/* "ok", "down", "overloaded", "loading", "auth", "error" ("?" if invalid). */
const char *sp_probe_status_name(sp_probe_status s);

/* ---- internals exposed for the test driver ---- */

/* Classify one complete reply to AUTH or PING held in buf[0..n).  Writes a
   short reason into err (NUL-terminated; "" for OK; err may be NULL). */
sp_probe_status sp_probe_classify_reply(const char *buf, size_t n,
                                        char *err, size_t errsize);

#endif /* SP_PROBE_H */
