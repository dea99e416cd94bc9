/* Tests of csrc/core/probe.c: canned replies, fake servers, real redis-server. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "fake_server.h"
#include "net.h"
#include "probe.h"
#include "redis_proc.h"
#include "resp.h"

#define RUN_ID_A "0123456789abcdef0123456789abcdef01234567"

static int
is_run_id(const char *s)
{
    size_t i;

    for (i = 0; i < 40; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return s[40] == '\0';
}

static sp_probe_target
tcp_target(int port, double timeout)
{
    sp_probe_target t;

    memset(&t, 0, sizeof(t));
    t.host = "127.0.0.1";
    t.port = port;
    t.timeout = timeout;
    return t;
}

static void
probe_port(int port, double timeout, sp_probe_result *res)
{
    sp_probe_target t = tcp_target(port, timeout);

    sp_probe(&t, res);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Start a server with extra args (NULL-terminated); CHECKs success. */
static int
start_server(sp_redis *r, const char *const *args)
{
    sp_redis_opts o = {0, 0, 0, args};
    int rc;

    memset(r, 0, sizeof(*r));
    rc = sp_redis_start(r, &o);
    CHECKF(rc == 0, "redis-server did not start");
    return rc;
}

/* "$<n>\r\n<text>\r\n" into buf. */
static const char *
bulk(char *buf, size_t cap, const char *text)
{
    snprintf(buf, cap, "$%zu\r\n%s\r\n", strlen(text), text);
    return buf;
}

/* Replies to INFO clients and INFO stats, as a server gives them. */
#define VIEW_CLIENTS "# Clients\r\nconnected_clients:3\r\nmaxclients:64\r\n"
#define VIEW_STATS "# Stats\r\nrejected_connections:2\r\n"
#define VIEW_REPLIES "$47\r\n" VIEW_CLIENTS "\r\n$33\r\n" VIEW_STATS "\r\n"

/* ---------------------------------------------------------------- */
/* canned bytes                                                      */

static void
test_resp_reply_len(void)
{
    static const struct {
        const char *bytes;
        long expect;
    } cases[] = {
        {"+PONG\r\n", 7},
        {"+PONG\r\nextra", 7},
        {"-ERR x\r\n", 8},
        {":42\r\n", 5},
        {":-1\r\n", 5},
        {"$4\r\nPONG\r\n", 10},
        {"$0\r\n\r\n", 6},
        {"$-1\r\n", 5},
        {"*-1\r\n", 5},
        {"*0\r\n", 4},
        {"*2\r\n$1\r\na\r\n:1\r\n", 15},
        {"*1\r\n*1\r\n+x\r\n", 12},
        {"%1\r\n+a\r\n:1\r\n", 12},
        {"_\r\n", 3},
        {",1.5\r\n", 6},
        {"#t\r\n", 4},
        {"", 0},
        {"+PONG", 0},
        {"+PONG\r", 0},
        {"$4\r\nPON", 0},
        {"$4\r\nPONG\r", 0},
        {"*2\r\n$1\r\na\r\n", 0},
        {"*3\r\n:1\r\n", 0},
        {"+PONG\n", -1},
        {"\r\n", -1},
        {"?what\r\n", -1},
        {"$x\r\n", -1},
        {"$-2\r\n", -1},
        {"$\r\n", -1},
        {"$4\r\nPONGxx", -1},
        {":12a\r\n", -1},
        {"*-2\r\n", -1},
        {"$99999999999999999999\r\n", -1},
        {"$999999999\r\n", -1},                 /* > 512 MB */
        {"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", -1},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long got = sp_resp_reply_len(cases[i].bytes, strlen(cases[i].bytes));
        CHECKF(got == cases[i].expect, "case %zu %s: got %ld want %ld", i,
               cases[i].bytes, got, cases[i].expect);
    }
    /* a huge array count over a short buffer is just incomplete */
    CHECK(sp_resp_reply_len("*100000000\r\n:1\r\n", 16) == 0);
    CHECK(sp_resp_reply_len(NULL, 0) == 0);
}

static void
test_classify_reply(void)
{
    static const struct {
        const char *bytes;
        sp_probe_status expect;
        const char *err_prefix;
    } cases[] = {
        {"+PONG\r\n", SP_PROBE_OK, ""},
        {"+OK\r\n", SP_PROBE_OK, ""},
        {"$4\r\nPONG\r\n", SP_PROBE_OK, ""},
        {"-LOADING Redis is loading the dataset in memory\r\n",
         SP_PROBE_LOADING, "-LOADING Redis is loading"},
        {"-ERR max number of clients reached\r\n", SP_PROBE_OVERLOADED,
         "-ERR max number of clients reached"},
        {"-BUSY Redis is busy running a script.\r\n", SP_PROBE_OVERLOADED,
         "-BUSY"},
        {"-BUSYKEY Target key name already exists.\r\n", SP_PROBE_ERROR,
         "-BUSYKEY"},
        {"-NOAUTH Authentication required.\r\n", SP_PROBE_AUTH, "-NOAUTH"},
        {"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
         SP_PROBE_AUTH, "-WRONGPASS"},
        {"-NOPERM this user has no permissions to run the 'ping' command\r\n",
         SP_PROBE_AUTH, "-NOPERM"},
        {"-ERR invalid password\r\n", SP_PROBE_AUTH, "-ERR invalid"},
        {"-ERR AUTH <password> called without any password configured for "
         "the default user. Are you sure your configuration is correct?\r\n",
         SP_PROBE_AUTH, "-ERR AUTH"},
        {"-LOADINGX odd\r\n", SP_PROBE_ERROR, "-LOADINGX"},
        {"-ERR unknown command 'PING'\r\n", SP_PROBE_ERROR, "-ERR unknown"},
        {"-MASTERDOWN Link with MASTER is down\r\n", SP_PROBE_ERROR,
         "-MASTERDOWN"},
        {"+QUEUED\r\n", SP_PROBE_ERROR, "unexpected reply: +QUEUED"},
        {":1\r\n", SP_PROBE_ERROR, "unexpected reply"},
        {"*1\r\n$4\r\nPONG\r\n", SP_PROBE_ERROR, "unexpected reply"},
        {"+PONG", SP_PROBE_ERROR, "incomplete"},
        {"HTTP/1.1 400 Bad Request\r\n", SP_PROBE_ERROR, "protocol error"},
        {"-ERR \x01\x02\r\n", SP_PROBE_ERROR, "-ERR ??"},
    };
    size_t i;
    char err[160];

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sp_probe_status s;
        memset(err, 'x', sizeof(err));
        s = sp_probe_classify_reply(cases[i].bytes, strlen(cases[i].bytes),
                                    err, sizeof(err));
        CHECKF(s == cases[i].expect, "case %zu %s: got %s want %s", i,
               cases[i].bytes, sp_probe_status_name(s),
               sp_probe_status_name(cases[i].expect));
        CHECKF(strncmp(err, cases[i].err_prefix,
                       strlen(cases[i].err_prefix)) == 0
               && (cases[i].err_prefix[0] != '\0' || err[0] == '\0'),
               "case %zu: err '%s' want prefix '%s'", i, err,
               cases[i].err_prefix);
        CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    }
    /* a tiny or NULL error buffer is respected */
    memset(err, 'x', sizeof(err));
    CHECK(sp_probe_classify_reply("-LOADING x\r\n", 12, err, 4)
          == SP_PROBE_LOADING);
    CHECK(strcmp(err, "-LO") == 0 && err[4] == 'x');
    CHECK(sp_probe_classify_reply("-NOAUTH x\r\n", 11, NULL, 0)
          == SP_PROBE_AUTH);
    /* a very long error line is truncated */
    {
        char big[600];
        memset(big, 'E', sizeof(big));
        memcpy(big, "-ERR ", 5);
        memcpy(big + sizeof(big) - 2, "\r\n", 2);
        CHECK(sp_probe_classify_reply(big, sizeof(big), err, sizeof(err))
              == SP_PROBE_ERROR);
        CHECK_EQ(strlen(err), sizeof(err) - 1);
    }
}

static void
test_info_field(void)
{
    const char *info =
        "# Server\r\nredis_version:7.0.15\r\nxrun_id:nope\r\n"
        "run_id:" RUN_ID_A "\r\ntcp_port:6379\r\n\r\n"
        "# Persistence\r\nloading:1\r\nloading_eta_seconds:12\n"
        "last:value";
    size_t n = strlen(info);
    char out[48];

    CHECK(sp_info_field(info, n, "run_id", out, 41) == 1);
    CHECK_EQ(strcmp(out, RUN_ID_A), 0);
    CHECK(sp_info_field(info, n, "loading_eta_seconds", out, sizeof(out)));
    CHECK(strcmp(out, "12") == 0);
    CHECK(sp_info_field(info, n, "last", out, sizeof(out)));
    CHECK(strcmp(out, "value") == 0);
    CHECK(sp_info_field(info, n, "redis_version", out, 4));
    CHECK(strcmp(out, "7.0") == 0);
    CHECK(sp_info_field(info, n, "run", out, sizeof(out)) == 0);
    CHECK_EQ(out[0], '\0');
    CHECK(sp_info_field(info, n, "missing", out, sizeof(out)) == 0);
    /* field cut off by the buffer end is not read beyond n */
    CHECK(sp_info_field("run_id:abc", 6, "run_id", out, sizeof(out)) == 0);
    CHECK(sp_info_field(NULL, 0, "run_id", out, sizeof(out)) == 0);
}

static void
test_status_names(void)
{
    CHECK(strcmp(sp_probe_status_name(SP_PROBE_OK), "ok") == 0);
    CHECK(strcmp(sp_probe_status_name(SP_PROBE_DOWN), "down") == 0);
    CHECK(strcmp(sp_probe_status_name(SP_PROBE_OVERLOADED),
                 "overloaded") == 0);
    CHECK(strcmp(sp_probe_status_name(SP_PROBE_LOADING), "loading") == 0);
    CHECK(strcmp(sp_probe_status_name(SP_PROBE_AUTH), "auth") == 0);
    CHECK(strcmp(sp_probe_status_name(SP_PROBE_ERROR), "error") == 0);
    CHECK(strcmp(sp_probe_status_name((sp_probe_status)99), "?") == 0);
}

static void
test_fd_idle_socketpair(void)
{
    int sv[2], closed_fd;
    char c;

    CHECK_EQ(sp_fd_idle_ok(-1), 0);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECKF(0, "socketpair failed");
        return;
    }
    CHECK_EQ(sp_fd_idle_ok(sv[0]), 1);
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK_EQ(sp_fd_idle_ok(sv[0]), 0);           /* unread data */
    CHECK_EQ(read(sv[0], &c, 1), 1);
    CHECK_EQ(sp_fd_idle_ok(sv[0]), 1);
    close(sv[1]);
    CHECK_EQ(sp_fd_idle_ok(sv[0]), 0);           /* EOF */
    closed_fd = sv[0];
    close(sv[0]);
    CHECK_EQ(sp_fd_idle_ok(closed_fd), 0);       /* not open: POLLNVAL */
}

/* ---------------------------------------------------------------- */
/* bad targets, fake servers                                         */

static void
test_probe_bad_targets(void)
{
    sp_probe_target t;
    sp_probe_result res;
    char longpath[200];

    memset(&t, 0, sizeof(t));
    sp_probe(&t, &res);
    CHECK_EQ(res.status, SP_PROBE_ERROR);
    CHECK(res.run_id[0] == '\0' && res.loading_eta == -1.0);
    CHECK(res.error[0] != '\0');
    sp_probe(NULL, &res);
    CHECK_EQ(res.status, SP_PROBE_ERROR);
    sp_probe(&t, NULL);                         /* no crash */

    t.host = "127.0.0.1";
    t.port = 70000;
    sp_probe(&t, &res);
    CHECK_EQ(res.status, SP_PROBE_ERROR);

    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    memset(&t, 0, sizeof(t));
    t.unix_path = longpath;
    sp_probe(&t, &res);
    CHECK_EQ(res.status, SP_PROBE_ERROR);

    t.unix_path = "/nonexistent-sp-driver/redis.sock";
    t.timeout = 0.5;
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
           sp_probe_status_name(res.status), res.error);

    /* a host name that cannot resolve */
    memset(&t, 0, sizeof(t));
    t.host = "sp-driver-no-such-host.invalid";
    t.port = 6379;
    t.timeout = 0.5;
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_DOWN || res.status == SP_PROBE_ERROR,
           "%s", sp_probe_status_name(res.status));
}

static void
test_probe_credentials_too_long(void)
{
    fake_server f;
    sp_probe_target t;
    sp_probe_result res;
    static char pw[5000];

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    memset(pw, 'a', sizeof(pw) - 1);
    t = tcp_target(f.port, 1.0);
    t.password = pw;
    sp_probe(&t, &res);
    fake_stop(&f);
    CHECK_EQ(res.status, SP_PROBE_ERROR);
    CHECK(strstr(res.error, "too long") != NULL);
}

static void
test_probe_request_format(void)
{
    static const char expect[] =
        "*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\ns3cr3t\r\n"
        "*1\r\n$4\r\nPING\r\n"
        "*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
        "*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n"
        "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n";
    fake_server f;
    sp_probe_target t;
    sp_probe_result res;
    char info[128];
    char replies[384];

    snprintf(replies, sizeof(replies), "+OK\r\n+PONG\r\n%s" VIEW_REPLIES,
             bulk(info, sizeof(info), "# Server\r\nrun_id:" RUN_ID_A));
    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = replies;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    t = tcp_target(f.port, 2.0);
    t.username = "alice";
    t.password = "s3cr3t";
    sp_probe(&t, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK_EQ(strcmp(res.run_id, RUN_ID_A), 0);
    CHECK_EQ(res.error[0], '\0');
    CHECK_EQ(res.loading_eta, -1.0);
    /* the server's view of its clients, from the same round trip */
    CHECKF(res.view.connected_clients == 3 && res.view.maxclients == 64 &&
           res.view.rejected_connections == 2 && res.view_error[0] == '\0',
           "%lld/%lld %lld %s", res.view.connected_clients, res.view.maxclients,
           res.view.rejected_connections, res.view_error);
    CHECKF(f.request_len == sizeof(expect) - 1
           && memcmp(f.request, expect, f.request_len) == 0,
           "request was %.*s", (int)f.request_len, f.request);

    /* password only: AUTH pass */
    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = replies;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    t = tcp_target(f.port, 2.0);
    t.password = "pw";
    sp_probe(&t, &res);
    fake_stop(&f);
    CHECK_EQ(res.status, SP_PROBE_OK);
    CHECK(f.request_len > 20
          && memcmp(f.request, "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*1\r\n", 26)
             == 0);
}

static void
test_probe_fake_loading(void)
{
    fake_server f;
    sp_probe_result res;
    char info1[128], info2[160], stage0[384];

    snprintf(stage0, sizeof(stage0), "-LOADING Redis is loading the dataset "
             "in memory\r\n%s" VIEW_REPLIES,
             bulk(info1, sizeof(info1), "# Server\r\nrun_id:" RUN_ID_A));
    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = stage0;
    f.expect[1] = "persistence\r\n";
    f.reply[1] = bulk(info2, sizeof(info2),
                      "# Persistence\r\nloading:1\r\nloading_eta_seconds:"
                      "12.5\r\nrdb_changes_since_last_save:0");
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 2.0, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_LOADING, "%s",
           sp_probe_status_name(res.status));
    CHECK_EQ(strcmp(res.run_id, RUN_ID_A), 0);
    CHECKF(res.loading_eta == 12.5, "eta %f", res.loading_eta);
    CHECK(strncmp(res.error, "-LOADING Redis is loading", 25) == 0);
}

/* Replies, then resets the connection while the probe still wants to send
   INFO persistence: must not raise SIGPIPE (the driver keeps it fatal). */
static void
test_probe_fake_reset_no_sigpipe(void)
{
    int i;

    for (i = 0; i < 5; i++) {
        fake_server f;
        sp_probe_result res;
        char info[128], stage0[256];

        snprintf(stage0, sizeof(stage0), "-LOADING x\r\n%s",
                 bulk(info, sizeof(info), "run_id:" RUN_ID_A));
        memset(&f, 0, sizeof(f));
        f.mode = FAKE_SCRIPT_RESET;
        f.expect[0] = "server\r\n";
        f.reply[0] = stage0;
        if (fake_start(&f) != 0) {
            CHECKF(0, "fake server");
            return;
        }
        probe_port(f.port, 2.0, &res);
        fake_stop(&f);
        CHECKF(res.status == SP_PROBE_LOADING, "%s %s",
               sp_probe_status_name(res.status), res.error);
        CHECK_EQ(res.loading_eta, -1.0);
    }
}

static void
test_probe_fake_silent(void)
{
    fake_server f;
    sp_probe_result res;

    /* accepts, reads, never answers */
    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "never sent";
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 0.2, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_OVERLOADED, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strstr(res.error, "no reply to PING") != NULL);
    CHECKF(res.elapsed >= 0.19 && res.elapsed < 1.5, "elapsed %.3f",
           res.elapsed);
}

static void
test_probe_fake_partial_reply(void)
{
    fake_server f;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = "+PO";
    f.expect[1] = "never sent";
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 0.2, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_OVERLOADED, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(res.elapsed < 1.5);
}

static void
test_probe_fake_close(void)
{
    fake_server f;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_CLOSE;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 2.0, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(res.elapsed < 1.5);
}

static void
test_probe_fake_garbage(void)
{
    fake_server f;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 2.0, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_ERROR, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strstr(res.error, "protocol error") != NULL);
}

static void
test_probe_fake_too_large(void)
{
    static char big[40000];
    fake_server f;
    sp_probe_result res;
    size_t hl;

    hl = (size_t)snprintf(big, sizeof(big), "$%zu\r\n", sizeof(big) - 20);
    memset(big + hl, 'z', sizeof(big) - hl);
    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = big;
    f.reply_len[0] = sizeof(big);
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 2.0, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_ERROR, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strstr(res.error, "too large") != NULL);
}

/* INFO failing after a good PING keeps OK but says why in error. */
static void
test_probe_fake_info_denied(void)
{
    fake_server f;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = "+PONG\r\n-NOPERM no INFO for you\r\n";
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_port(f.port, 2.0, &res);
    fake_stop(&f);
    CHECK_EQ(res.status, SP_PROBE_OK);
    CHECK_EQ(res.run_id[0], '\0');
    CHECKF(strstr(res.error, "INFO server: -NOPERM") != NULL, "%s",
           res.error);
}

/* A listener whose accept queue is full: the SYN is dropped, connect()
   never completes -> DOWN after the timeout. */
static void
test_probe_connect_timeout(void)
{
    fake_server f;
    sp_probe_result res;
    int held[4], nheld = 0, i;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_NOACCEPT;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    /* fill the backlog (listen(fd, 0) accepts about one) */
    for (i = 0; i < 4; i++) {
        int fd = sp_client_connect(f.port, 0.2);
        if (fd < 0) {
            break;
        }
        held[nheld++] = fd;
    }
    CHECKF(nheld >= 1 && nheld < 4, "held %d", nheld);
    probe_port(f.port, 0.2, &res);
    CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strstr(res.error, "connect timed out") != NULL);
    CHECKF(res.elapsed >= 0.19 && res.elapsed < 1.5, "elapsed %.3f",
           res.elapsed);
    for (i = 0; i < nheld; i++) {
        close(held[i]);
    }
    fake_stop(&f);
}

/* Runs a non-blocking probe of `mode` on 127.0.0.1:port to its end. */
static void
probe_mode(int port, int mode, double timeout, sp_probe_result *res)
{
    sp_probe_target t = tcp_target(port, timeout);
    sp_probe_op *op = malloc(sizeof(*op));

    if (op == NULL) {
        CHECKF(0, "out of memory");
        return;
    }
    int pending = sp_probe_begin(op, &t, mode);
    while (pending) {
        struct pollfd p = {op->fd, op->want, 0};
        (void)poll(&p, 1, 10);
        pending = sp_probe_continue(op) && sp_probe_expire(op, sp_now());
    }
    *res = op->res;
    free(op);
}

/* A TLS stack answers the alert (here: with one of its own): the server runs. */
static void
test_probe_tls_alert_answered(void)
{
    static const char alert[] = "\x15\x03\x03\x00\x02\x02\x28";
    fake_server f;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "\x15\x03\x01";
    f.reply[0] = alert;
    f.reply_len[0] = sizeof(alert) - 1;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_mode(f.port, SP_PROBE_MODE_TLS_ALERT, 2.0, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_OK, "%s %s", sp_probe_status_name(res.status), res.error);
    CHECKF(f.request_len == 7 && memcmp(f.request, "\x15\x03\x01\x00\x02\x02\x28", 7) == 0,
           "sent %zu bytes", f.request_len);
    CHECK(res.elapsed < 1.5);
}

/* A server that accepts (its kernel does) and never answers: no answer
   by the deadline, which is what a stopped TLS server looks like. */
static void
test_probe_tls_alert_unanswered(void)
{
    fake_server f;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "never sent";
    f.timeout = 1.0;
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    probe_mode(f.port, SP_PROBE_MODE_TLS_ALERT, 0.2, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_OVERLOADED, "%s %s", sp_probe_status_name(res.status),
           res.error);
    CHECKF(strstr(res.error, "no answer to a TLS alert") != NULL, "%s", res.error);
    CHECKF(res.elapsed >= 0.19 && res.elapsed < 1.5, "elapsed %.3f", res.elapsed);
}

/* ---------------------------------------------------------------- */
/* real redis-server                                                 */

static void
test_probe_ok(void)
{
    sp_redis r;
    sp_probe_result res;
    char reply[4096];
    char run_id[48];

    if (start_server(&r, NULL) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    probe_port(r.port, 1.0, &res);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECKF(is_run_id(res.run_id), "run_id '%s'", res.run_id);
    CHECK_EQ(res.error[0], '\0');
    CHECK_EQ(res.loading_eta, -1.0);
    CHECKF(res.elapsed > 0 && res.elapsed < 1.0, "%.3f", res.elapsed);
    /* the run_id is the server's */
    if (sp_redis_cmd(&r, reply, sizeof(reply), "INFO", "server",
                     (char *)NULL) > 0) {
        const char *p = strchr(reply, '\n');
        CHECK(p && sp_info_field(p + 1, strlen(p + 1), "run_id", run_id,
                                 41));
        CHECK_EQ(strcmp(run_id, res.run_id), 0);
    }
    else {
        CHECKF(0, "INFO server failed");
    }
    /* host name path (getaddrinfo) */
    {
        sp_probe_target t = tcp_target(r.port, 1.0);
        t.host = "localhost";
        sp_probe(&t, &res);
        CHECKF(res.status == SP_PROBE_OK, "localhost: %s %s",
               sp_probe_status_name(res.status), res.error);
    }
    /* the probes closed their connections: only ours is listed */
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "CLIENT", "LIST",
                       (char *)NULL) > 0);
    CHECKF(strchr(reply, '\n') != NULL
           && strchr(strchr(reply, '\n') + 1, '\n') != NULL
           && strstr(strchr(strchr(reply, '\n') + 1, '\n') + 1, "id=")
              == NULL,
           "clients: %s", reply);
    sp_redis_destroy(&r);
}

static void
test_probe_down_closed_port(void)
{
    sp_probe_result res;
    int port = sp_free_port();

    CHECK(port > 0);
    probe_port(port, 1.0, &res);
    CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strcmp(res.error, "connection refused") == 0);
    CHECK_EQ(res.run_id[0], '\0');
    CHECKF(res.elapsed < 0.5, "%.3f", res.elapsed);
}

static void
test_probe_restart_new_run_id(void)
{
    sp_redis r;
    sp_redis_opts o = {0, 0, 0, NULL};
    sp_probe_result res;
    char first[41];

    if (start_server(&r, NULL) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    probe_port(r.port, 1.0, &res);
    CHECK(res.status == SP_PROBE_OK && is_run_id(res.run_id));
    memcpy(first, res.run_id, sizeof(first));

    sp_redis_stop(&r);
    probe_port(r.port, 1.0, &res);
    CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
           sp_probe_status_name(res.status), res.error);

    o.port = r.port;
    CHECKF(sp_redis_start(&r, &o) == 0, "restart on port %d", o.port);
    probe_port(r.port, 1.0, &res);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(is_run_id(res.run_id));
    CHECKF(strcmp(first, res.run_id) != 0, "run_id unchanged %s", first);
    sp_redis_destroy(&r);
}

static void
test_probe_auth_requirepass(void)
{
    static const char *const args[] = {"--requirepass", "s3cr3t", NULL};
    sp_redis r;
    sp_probe_target t;
    sp_probe_result res;

    if (start_server(&r, args) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    t = tcp_target(r.port, 1.0);
    sp_probe(&t, &res);                         /* no password */
    CHECKF(res.status == SP_PROBE_AUTH, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strncmp(res.error, "-NOAUTH", 7) == 0);

    t.password = "wrong";
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_AUTH, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strncmp(res.error, "-WRONGPASS", 10) == 0);
    CHECK_EQ(res.run_id[0], '\0');

    t.password = "s3cr3t";
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(is_run_id(res.run_id));

    t.username = "default";                     /* AUTH default s3cr3t */
    sp_probe(&t, &res);
    CHECK_EQ(res.status, SP_PROBE_OK);
    sp_redis_destroy(&r);
}

static void
test_probe_auth_acl_user(void)
{
    sp_redis r;
    sp_probe_target t;
    sp_probe_result res;
    char reply[256];

    if (start_server(&r, NULL) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "ACL", "SETUSER", "alice",
                       "on", ">pw", "~*", "+@all", (char *)NULL) > 0
          && strcmp(reply, "+OK\r\n") == 0);
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "ACL", "SETUSER", "bob",
                       "on", ">pw", "-@all", (char *)NULL) > 0);
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "ACL", "SETUSER", "carol",
                       "on", ">pw", "-@all", "+ping", (char *)NULL) > 0);

    t = tcp_target(r.port, 1.0);
    t.username = "alice";
    t.password = "pw";
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(is_run_id(res.run_id));

    t.password = "bad";
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_AUTH, "%s %s",
           sp_probe_status_name(res.status), res.error);

    t.username = "bob";                         /* may not even PING */
    t.password = "pw";
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_AUTH, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(strncmp(res.error, "-NOPERM", 7) == 0);

    t.username = "carol";                       /* PING yes, INFO no */
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK_EQ(res.run_id[0], '\0');
    CHECK(strstr(res.error, "NOPERM") != NULL);
    /* no view of the server either, and the reason says so (code only) */
    CHECK(!sp_server_view_usable(&res.view));
    CHECKF(strcmp(res.view_error, "INFO clients: -NOPERM (the user may not run INFO)") == 0,
           "%s", res.view_error);

    /* a password given to a server that has none: redis-py fails too */
    t.username = NULL;
    t.password = "pw";
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_AUTH, "%s %s",
           sp_probe_status_name(res.status), res.error);
    sp_redis_destroy(&r);
}

static void
test_probe_overloaded_maxclients(void)
{
    static const char *const args[] = {"--maxclients", "1", NULL};
    sp_redis r;
    sp_probe_result res;
    char reply[64];
    int held, i, ok = 0;
    double deadline;

    if (start_server(&r, args) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    held = sp_client_connect(r.port, 1.0);
    CHECK(held >= 0);
    CHECK(sp_client_cmd(held, 1.0, reply, sizeof(reply), "PING",
                        (char *)NULL) > 0 && strcmp(reply, "+PONG\r\n") == 0);
    for (i = 0; i < 20; i++) {
        probe_port(r.port, 1.0, &res);
        CHECKF(res.status == SP_PROBE_OVERLOADED, "try %d: %s %s", i,
               sp_probe_status_name(res.status), res.error);
        CHECK(strstr(res.error, "max number of clients reached") != NULL);
        CHECK_EQ(res.run_id[0], '\0');
    }
    close(held);
    /* the server notices the close asynchronously: poll, bounded */
    deadline = sp_now() + 5.0;
    while (sp_now() < deadline) {
        probe_port(r.port, 1.0, &res);
        if (res.status == SP_PROBE_OK) {
            ok = 1;
            break;
        }
        sleep_ms(5);
    }
    CHECKF(ok, "never OK again: %s", res.error);
    CHECK(is_run_id(res.run_id));
    sp_redis_destroy(&r);
}

static void
test_probe_unix_socket(void)
{
    sp_redis r;
    sp_redis_opts o = {0, 1, 0, NULL};
    sp_probe_target t;
    sp_probe_result res;
    char reply[64];

    memset(&r, 0, sizeof(r));
    if (sp_redis_start(&r, &o) != 0) {
        CHECKF(0, "redis-server did not start");
        sp_redis_destroy(&r);
        return;
    }
    memset(&t, 0, sizeof(t));
    t.unix_path = r.unix_path;
    t.timeout = 1.0;
    sp_probe(&t, &res);
    CHECKF(res.status == SP_PROBE_OK, "%s %s",
           sp_probe_status_name(res.status), res.error);
    CHECK(is_run_id(res.run_id));

    /* the unix client works for the idle check too */
    {
        int fd = sp_client_connect_unix(r.unix_path, 1.0);
        CHECK(fd >= 0);
        CHECK(sp_client_cmd(fd, 1.0, reply, sizeof(reply), "PING",
                            (char *)NULL) > 0);
        CHECK_EQ(sp_fd_idle_ok(fd), 1);
        close(fd);
    }
    sp_redis_stop(&r);
    sp_probe(&t, &res);                 /* socket file gone or refused */
    CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
           sp_probe_status_name(res.status), res.error);
    sp_redis_destroy(&r);
}

/* Real LOADING: restart from an RDB with key-load-delay so that loading
   takes about a second; probes during it must see LOADING with an ETA. */
static void
test_probe_loading_real(void)
{
    static const char *const debug[] = {
        "--enable-debug-command", "local", NULL};
    static const char *const slow[] = {
        "--key-load-delay", "50",
        "--loading-process-events-interval-bytes", "1024", NULL};
    sp_redis r;
    sp_redis_opts o = {0, 0, 1, slow};
    sp_probe_result res;
    char reply[256], loading_run_id[41] = "";
    double deadline;
    int seen_loading = 0, seen_ok = 0;

    if (start_server(&r, debug) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "DEBUG", "POPULATE",
                       "10000", (char *)NULL) > 0
          && strcmp(reply, "+OK\r\n") == 0);
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "SAVE", (char *)NULL) > 0
          && strcmp(reply, "+OK\r\n") == 0);
    sp_redis_stop(&r);
    o.port = r.port;
    if (sp_redis_start(&r, &o) != 0) {
        CHECKF(0, "restart failed");
        sp_redis_destroy(&r);
        return;
    }
    deadline = sp_now() + 20.0;
    while (sp_now() < deadline) {
        probe_port(r.port, 1.0, &res);
        if (res.status == SP_PROBE_LOADING) {
            if (!seen_loading) {
                sp_note("loading: eta %.1fs, %s", res.loading_eta,
                        res.error);
                CHECKF(res.loading_eta >= 0, "eta %f", res.loading_eta);
                CHECKF(is_run_id(res.run_id), "'%s'", res.run_id);
                CHECK(strncmp(res.error, "-LOADING", 8) == 0);
                memcpy(loading_run_id, res.run_id, sizeof(loading_run_id));
            }
            seen_loading = 1;
        }
        else if (res.status == SP_PROBE_OK) {
            seen_ok = 1;
            break;
        }
        else {
            CHECKF(res.status == SP_PROBE_DOWN, "%s %s",
                   sp_probe_status_name(res.status), res.error);
        }
        sleep_ms(5);
    }
    CHECKF(seen_loading, "never saw LOADING");
    CHECKF(seen_ok, "never became OK");
    CHECK_EQ(strcmp(loading_run_id, res.run_id), 0);
    sp_redis_destroy(&r);
}

static void
test_fd_idle_client_kill(void)
{
    sp_redis r;
    char reply[128];
    int a, b, c;
    long id;
    struct pollfd p;

    if (start_server(&r, NULL) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    a = sp_client_connect(r.port, 1.0);
    b = sp_client_connect(r.port, 1.0);
    c = sp_client_connect(r.port, 1.0);
    CHECK(a >= 0 && b >= 0 && c >= 0);
    CHECK(sp_client_cmd(a, 1.0, reply, sizeof(reply), "CLIENT", "ID",
                        (char *)NULL) > 0 && reply[0] == ':');
    id = strtol(reply + 1, NULL, 10);
    CHECK(sp_client_cmd(b, 1.0, reply, sizeof(reply), "PING",
                        (char *)NULL) > 0);
    CHECK_EQ(sp_fd_idle_ok(a), 1);
    CHECK_EQ(sp_fd_idle_ok(b), 1);

    snprintf(reply, sizeof(reply), "%ld", id);
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "CLIENT", "KILL", "ID",
                       reply, (char *)NULL) > 0
          && strcmp(reply, ":1\r\n") == 0);
    p.fd = a;
    p.events = POLLIN;
    CHECK_EQ(poll(&p, 1, 2000), 1);              /* wait for the FIN */
    CHECK_EQ(sp_fd_idle_ok(a), 0);               /* killed */
    CHECK_EQ(sp_fd_idle_ok(b), 1);               /* healthy idle */

    /* unread data (a reply nobody read) is not idle */
    CHECK(send(c, "*1\r\n$4\r\nPING\r\n", 14, MSG_NOSIGNAL) == 14);
    p.fd = c;
    CHECK_EQ(poll(&p, 1, 2000), 1);
    CHECK_EQ(sp_fd_idle_ok(c), 0);
    CHECK_EQ(recv(c, reply, sizeof(reply), 0), 7);
    CHECK_EQ(sp_fd_idle_ok(c), 1);

    close(a);
    close(b);
    close(c);
    sp_redis_destroy(&r);
}

typedef struct {
    int port;
    int ok;
    char run_id[41];
    int same;
} thread_arg;

static void *
probe_thread(void *p)
{
    thread_arg *a = p;
    int i;

    a->same = 1;
    for (i = 0; i < 25; i++) {
        sp_probe_result res;
        probe_port(a->port, 2.0, &res);
        if (res.status == SP_PROBE_OK) {
            a->ok++;
        }
        if (i == 0) {
            memcpy(a->run_id, res.run_id, sizeof(a->run_id));
        }
        else if (strcmp(a->run_id, res.run_id) != 0) {
            a->same = 0;
        }
    }
    return NULL;
}

static void
test_probe_concurrent_threads(void)
{
    sp_redis r;
    pthread_t th[4];
    thread_arg args[4];
    int i;

    if (start_server(&r, NULL) != 0) {
        sp_redis_destroy(&r);
        return;
    }
    for (i = 0; i < 4; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].port = r.port;
        CHECK(pthread_create(&th[i], NULL, probe_thread, &args[i]) == 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECKF(args[i].ok == 25, "thread %d: %d ok", i, args[i].ok);
        CHECK(args[i].same);
        CHECK_EQ(strcmp(args[i].run_id, args[0].run_id), 0);
    }
    sp_redis_destroy(&r);
}

/* A listener that answers AUTH by echoing it: the probe keeps the error
   code, never the echoed password. */
static void
test_probe_auth_echo_keeps_no_secret(void)
{
    fake_server f;
    sp_probe_target t;
    sp_probe_result res;

    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = "-ERR unknown command 'AUTH', with args beginning with: "
                 "'hunter2-secret'\r\n";
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    t = tcp_target(f.port, 2.0);
    t.password = "hunter2-secret";
    sp_probe(&t, &res);
    fake_stop(&f);
    CHECKF(res.status == SP_PROBE_AUTH, "%s", sp_probe_status_name(res.status));
    CHECKF(strstr(res.error, "hunter") == NULL, "%s", res.error);
    CHECKF(strcmp(res.error, "-ERR (reply to AUTH)") == 0, "%s", res.error);

    /* an echo of the command itself (not even an error reply) */
    memset(&f, 0, sizeof(f));
    f.mode = FAKE_SCRIPT;
    f.expect[0] = "server\r\n";
    f.reply[0] = "*2\r\n$4\r\nAUTH\r\n$14\r\nhunter2-secret\r\n";
    if (fake_start(&f) != 0) {
        CHECKF(0, "fake server");
        return;
    }
    t = tcp_target(f.port, 2.0);
    t.password = "hunter2-secret";
    sp_probe(&t, &res);
    fake_stop(&f);
    CHECKF(strstr(res.error, "hunter") == NULL, "%s", res.error);
}

static const sp_test tests[] = {
    {"probe/auth_echo_keeps_no_secret", test_probe_auth_echo_keeps_no_secret},
    {"probe/resp_reply_len", test_resp_reply_len},
    {"probe/classify_reply", test_classify_reply},
    {"probe/info_field", test_info_field},
    {"probe/status_names", test_status_names},
    {"probe/fd_idle_socketpair", test_fd_idle_socketpair},
    {"probe/bad_targets", test_probe_bad_targets},
    {"probe/credentials_too_long", test_probe_credentials_too_long},
    {"probe/fake_request_format", test_probe_request_format},
    {"probe/fake_loading", test_probe_fake_loading},
    {"probe/fake_reset_no_sigpipe", test_probe_fake_reset_no_sigpipe},
    {"probe/fake_silent_overloaded", test_probe_fake_silent},
    {"probe/fake_partial_reply", test_probe_fake_partial_reply},
    {"probe/fake_close_down", test_probe_fake_close},
    {"probe/fake_garbage_error", test_probe_fake_garbage},
    {"probe/fake_too_large", test_probe_fake_too_large},
    {"probe/fake_info_denied", test_probe_fake_info_denied},
    {"probe/connect_timeout_down", test_probe_connect_timeout},
    {"probe/tls_alert_answered", test_probe_tls_alert_answered},
    {"probe/tls_alert_unanswered", test_probe_tls_alert_unanswered},
    {"probe/ok_run_id", test_probe_ok},
    {"probe/down_closed_port", test_probe_down_closed_port},
    {"probe/restart_new_run_id", test_probe_restart_new_run_id},
    {"probe/auth_requirepass", test_probe_auth_requirepass},
    {"probe/auth_acl_user", test_probe_auth_acl_user},
    {"probe/overloaded_maxclients", test_probe_overloaded_maxclients},
    {"probe/unix_socket", test_probe_unix_socket},
    {"probe/loading_real", test_probe_loading_real},
    {"probe/fd_idle_client_kill", test_fd_idle_client_kill},
    {"probe/concurrent_threads", test_probe_concurrent_threads},
    {NULL, NULL},
};

SP_SUITE(probe, tests)
