/* Tests of csrc/core/checker.c and events.c: the health-checker thread against a real redis-server. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checker.h"
#include "core_util.h"
#include "driver.h"
#include "events.h"
#include "redis_proc.h"
#include "registry.h"

static int pool_x;
#define POOL_X ((void *)&pool_x)

/* Short intervals: the whole suite must stay quick under valgrind. */
static void
fast_config(void)
{
    sp_checker_config cfg = {0.05, 0.02, 0.01, 0.05, 0.5, 1, 0.0, 0};

    sp_checker_set_config(&cfg);
}

static void
drain_events(void)
{
    sp_event ev[32];
    unsigned long dropped;

    while (sp_events_wait(ev, 32, 0, &dropped) > 0) {
    }
}

/* Transitions of one endpoint seen so far, "old>new;" each. */
typedef struct {
    char seq[2048];
    char reasons[2048];
} ev_log;

static void
read_events(ev_log *log, const char *label, double timeout)
{
    sp_event ev[32];
    unsigned long dropped;
    int n, i;

    n = sp_events_wait(ev, 32, timeout, &dropped);
    for (i = 0; i < n; i++) {
        if (strcmp(ev[i].endpoint, label) != 0) {
            continue;
        }
        size_t len = strlen(log->seq);
        snprintf(log->seq + len, sizeof(log->seq) - len, "%s>%s;", ev[i].old_state,
                 ev[i].new_state);
        len = strlen(log->reasons);
        snprintf(log->reasons + len, sizeof(log->reasons) - len, "%s;", ev[i].reason);
    }
}

/* Reads events until `want` appears in the sequence (bounded). */
static int
await_events(ev_log *log, const char *label, const char *want, double timeout)
{
    double deadline = sp_now() + timeout;

    while (strstr(log->seq, want) == NULL) {
        double left = deadline - sp_now();
        if (left <= 0) {
            return 0;
        }
        read_events(log, label, left < 0.1 ? left : 0.1);
    }
    return 1;
}

static int
state_is(sp_endpoint *ep, void *arg)
{
    return ep->state == *(sp_state *)arg;
}

static int
await_state(sp_endpoint *ep, sp_state s, double timeout)
{
    return tp_wait_locked(ep, state_is, &s, timeout);
}

static int
has_run_id(sp_endpoint *ep, void *arg)
{
    (void)arg;
    return ep->run_id[0] != '\0' && ep->probes > 0;
}

static int
dead_idle_at_least(sp_endpoint *ep, void *arg)
{
    return ep->dead_idle_closed >= *(uint64_t *)arg;
}

/* The checker buries, shuts the socket down, then hands the record to the
 * graveyard and frees its slot: wait for the last step (lock held). */
static int
buried_and_closed(sp_endpoint *ep, void *arg)
{
    return tp_list_has(ep->graveyard, arg) && ep->closing == 0;
}

static int
idle_is(sp_endpoint *ep, void *arg)
{
    return ep->idle == *(int *)arg;
}

static int
probes_over(sp_endpoint *ep, void *arg)
{
    return ep->probes > *(uint64_t *)arg && !ep->probe_requested;
}

static int
graveyard_has(sp_endpoint *ep, const void *payload)
{
    int has;

    pthread_mutex_lock(&ep->lock);
    has = tp_list_has(ep->graveyard, payload);
    pthread_mutex_unlock(&ep->lock);
    return has;
}

/* A connection of POOL_X, in use, whose fd is a real client socket. */
static tp_payload *
socket_conn(sp_endpoint *ep, int port, long *client_id)
{
    char reply[64];
    tp_payload *p;
    int fd = sp_client_connect(port, 2.0);

    CHECK(fd >= 0);
    if (fd < 0) {
        return NULL;
    }
    CHECK(sp_client_cmd(fd, 2.0, reply, sizeof(reply), "CLIENT", "ID", (char *)NULL) > 0 &&
          reply[0] == ':');
    *client_id = strtol(reply + 1, NULL, 10);
    p = tp_connect(ep, POOL_X, 1, fd);
    if (p == NULL) {
        close(fd);
    }
    return p;
}

static void
release_to_idle(sp_endpoint *ep, tp_payload *p)
{
    sp_deferred after = {0};

    if (p != NULL) {
        CHECK(sp_endpoint_release(ep, POOL_X, p, p->fd, 1, &after) == SP_REL_OK);
        tp_after_done(&after);
    }
}

static void
cleanup_endpoint(sp_endpoint *ep)
{
    sp_deferred after = {0};

    sp_endpoint_bury_pool_records(ep, POOL_X, &after);
    sp_endpoint_bury_idle_of(ep, 0, &after);
    tp_after_done(&after);
    tp_collect(ep);
    sp_endpoint_pool_removed(ep, 1, &after);
    tp_after_done(&after);
    tp_check_counts(ep, 0);
    CHECKF(ep->total == 0, "total=%d", ep->total);
    sp_registry_unbind(ep);
}

static void
test_checker_real_server(void)
{
    sp_redis r;
    sp_redis_opts opts = {0, 0, 0, NULL};
    sp_endpoint *ep = NULL;
    sp_deferred after = {0};
    sp_waiter w;
    sp_conn *got;
    ev_log log;
    tp_payload *pa, *pb;
    char reply[64], old_run_id[41], killed[32];
    uint64_t gen0, gen_paused, one = 1, probes;
    long id_a = -1, id_b = -1;
    int created, zero = 0, base = sp_registry_count();

    memset(&log, 0, sizeof(log));
    memset(&r, 0, sizeof(r));
    if (sp_redis_start(&r, &opts) != 0) {
        CHECKF(0, "redis-server did not start");
        sp_redis_destroy(&r);
        return;
    }
    drain_events();
    fast_config();
    {
        sp_address addr = {"127.0.0.1", r.port, NULL, NULL, NULL, 0};
        ep = sp_registry_bind("ck-real", "redis://ck-real", 4, &addr, &created);
    }
    if (ep == NULL) {
        CHECK(ep != NULL);
        sp_redis_destroy(&r);
        return;
    }
    sp_endpoint_pool_added(ep, 1);  /* probes only run for endpoints with pools */
    CHECK(sp_checker_ensure_running() == 0 && sp_checker_running());
    CHECK(sp_checker_ensure_running() == 0 && sp_checker_running());

    /* First probe: ready, run_id learnt. */
    CHECKF(tp_wait_locked(ep, has_run_id, NULL, 10.0), "no successful probe");
    CHECK(ep->state == SP_STATE_READY && strlen(ep->run_id) == 40);
    memcpy(old_run_id, ep->run_id, sizeof(old_run_id));
    gen0 = ep->generation;

    /* Idle sockets: the one the server killed is buried, the other stays. */
    pa = socket_conn(ep, r.port, &id_a);
    pb = socket_conn(ep, r.port, &id_b);
    release_to_idle(ep, pa);
    release_to_idle(ep, pb);
    CHECK(ep->idle == 2);
    snprintf(killed, sizeof(killed), "%ld", id_a);
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "CLIENT", "KILL", "ID", killed,
                       (char *)NULL) > 0 && strcmp(reply, ":1\r\n") == 0);
    CHECKF(tp_wait_locked(ep, dead_idle_at_least, &one, 10.0), "killed socket not noticed");
    CHECKF(tp_wait_locked(ep, buried_and_closed, pa, 10.0), "killed socket not buried");
    CHECK(graveyard_has(ep, pa) && !graveyard_has(ep, pb));
    CHECK(ep->dead_idle_closed == 1 && ep->idle == 1 && ep->idle_top != NULL &&
          ep->idle_top->payload == pb);
    tp_check_counts(ep, 0);
    CHECK_EQ(tp_collect(ep), 1);  /* closes pa's fd */
    tp_check_counts(ep, 0);
    CHECK(ep->state == SP_STATE_READY);

    /* Server gone: paused, generation bumped, idle connections dropped. */
    sp_redis_stop(&r);
    CHECKF(await_state(ep, SP_STATE_PAUSED, 10.0), "state %s", sp_state_name(ep->state));
    CHECKF(tp_wait_locked(ep, idle_is, &zero, 5.0), "idle=%d", ep->idle);
    CHECK(ep->generation > gen0);
    gen_paused = ep->generation;
    CHECK(strstr(ep->state_reason, "server down") != NULL);
    tp_waiter_init(&w);
    CHECK_EQ(sp_endpoint_acquire(ep, POOL_X, 1, -1, &w, &got, &after), SP_ACQ_PAUSED);
    tp_after_done(&after);
    tp_collect(ep);
    CHECK(await_events(&log, "redis://ck-real", "ready>paused;", 5.0));

    /* Back on the same port with a new run_id: recovering, then ready. */
    opts.port = r.port;
    if (sp_redis_start(&r, &opts) != 0) {
        CHECKF(0, "redis-server did not restart");
    }
    else {
        CHECKF(await_state(ep, SP_STATE_READY, 10.0), "state %s", sp_state_name(ep->state));
        CHECK(await_events(&log, "redis://ck-real", "paused>recovering;recovering>ready;",
                           5.0));
        CHECK(strlen(ep->run_id) == 40 && strcmp(ep->run_id, old_run_id) != 0);
        CHECK(ep->generation > gen_paused);
        CHECK(strstr(log.reasons, "server restarted (run_id changed)") != NULL);
        CHECK(ep->transitions >= 3);
        tp_check_counts(ep, 0);
        CHECK_EQ(sp_endpoint_acquire(ep, POOL_X, 1, 0, &w, &got, &after), SP_ACQ_SLOT);
        sp_endpoint_slot_failed(ep, &after);
        tp_after_done(&after);

        /* Failure reports: refused pauses at once, the probe brings it back. */
        memset(&log, 0, sizeof(log));
        sp_checker_report(ep, SP_FAIL_REFUSED, "test: refused");
        CHECK(strcmp(ep->last_error, "test: refused") == 0);
        CHECK(await_events(&log, "redis://ck-real", "ready>paused;paused>recovering;"
                                                    "recovering>ready;", 5.0));
        CHECK(await_state(ep, SP_STATE_READY, 10.0));
        CHECK(strstr(log.reasons, "server down: connection refused") != NULL);

        memset(&log, 0, sizeof(log));
        sp_checker_report(ep, SP_FAIL_MAXCLIENTS, "test: max clients");
        CHECK(await_events(&log, "redis://ck-real", "ready>overloaded;overloaded>recovering;"
                                                    "recovering>ready;", 5.0));
        CHECK(await_state(ep, SP_STATE_READY, 10.0));

        memset(&log, 0, sizeof(log));
        sp_checker_report(ep, SP_FAIL_LOADING, "test: loading");
        CHECK(await_events(&log, "redis://ck-real", "ready>paused;paused>recovering;"
                                                    "recovering>ready;", 5.0));
        CHECK(strstr(log.reasons, "server is loading its dataset") != NULL);
        CHECK(await_state(ep, SP_STATE_READY, 10.0));

        /* Anything else only asks for a probe. */
        pthread_mutex_lock(&ep->lock);
        probes = ep->probes;
        pthread_mutex_unlock(&ep->lock);
        sp_checker_report(ep, SP_FAIL_OTHER, "test: reset");
        CHECK(tp_wait_locked(ep, probes_over, &probes, 5.0));
        CHECK(ep->state == SP_STATE_READY);
        CHECK(ep->probe_failures >= 1);
    }

    sp_checker_stop();
    CHECK(!sp_checker_running());
    sp_checker_stop();  /* no-op */
    cleanup_endpoint(ep);
    CHECK_EQ(sp_registry_count(), base);
    sp_redis_destroy(&r);
}

static int
probes_at_least(sp_endpoint *ep, void *arg)
{
    return ep->probes >= *(uint64_t *)arg;
}

/* A fresh server and an endpoint on it with one pool, the checker running
 * with `cfg` and a first probe done. NULL (server gone) on failure. */
static sp_endpoint *
watched_endpoint(sp_redis *r, const char *key, const char *label,
                 const sp_checker_config *cfg)
{
    sp_redis_opts opts = {0, 0, 0, NULL};
    sp_endpoint *ep;
    uint64_t one = 1;
    int created;

    memset(r, 0, sizeof(*r));
    if (sp_redis_start(r, &opts) != 0) {
        CHECKF(0, "redis-server did not start");
        sp_redis_destroy(r);
        return NULL;
    }
    drain_events();
    sp_checker_set_config(cfg);
    {
        sp_address addr = {"127.0.0.1", r->port, NULL, NULL, NULL, 0};
        ep = sp_registry_bind(key, label, 4, &addr, &created);
    }
    if (ep == NULL) {
        CHECK(ep != NULL);
        sp_redis_destroy(r);
        return NULL;
    }
    sp_endpoint_pool_added(ep, 1);
    CHECK_EQ(sp_checker_ensure_running(), 0);
    CHECKF(tp_wait_locked(ep, probes_at_least, &one, 10.0), "no first probe");
    return ep;
}

/* Undoes watched_endpoint(): checker stopped, endpoint gone, server gone. */
static void
end_watched(sp_endpoint *ep, sp_redis *r, int registry_base)
{
    sp_checker_stop();
    fast_config();
    cleanup_endpoint(ep);
    CHECK_EQ(sp_registry_count(), registry_base);
    sp_redis_destroy(r);
}

/* A server that dies under a connection in use: the watch sees the hangup
 * and pauses the endpoint with no report from anyone and long before the
 * next scheduled probe (30 s away). */
static void
test_checker_hangup_pauses(void)
{
    sp_checker_config slow = {30.0, 30.0, 30.0, 30.0, 0.5, 1, 0.0, 0};
    sp_redis r;
    sp_endpoint *ep;
    tp_payload *busy;
    long id = -1;
    int base = sp_registry_count();

    ep = watched_endpoint(&r, "ck-hangup", "redis://ck-hangup", &slow);
    if (ep == NULL) {
        return;
    }
    busy = socket_conn(ep, r.port, &id);
    CHECK(busy != NULL && ep->state == SP_STATE_READY && ep->peer_hangups == 0);

    sp_redis_stop(&r);
    CHECKF(await_state(ep, SP_STATE_PAUSED, 10.0), "state %s", sp_state_name(ep->state));
    CHECKF(ep->peer_hangups >= 1, "peer_hangups=%llu", (unsigned long long)ep->peer_hangups);
    /* refused, or reset from the listen backlog of a server going down */
    CHECKF(strstr(ep->state_reason, "server down") != NULL, "%s", ep->state_reason);

    end_watched(ep, &r, base);
}

/* The server kills every client while it keeps running: all our sockets
 * close at once, as in a death, but the probe that follows is answered, so
 * the endpoint never leaves ready. */
static int
probed_after_hangups(sp_endpoint *ep, void *arg)
{
    const uint64_t *base = arg;  /* {probes, peer_hangups} before */
    return ep->peer_hangups >= base[1] + 2 && ep->probes > base[0];
}

static void
test_checker_mass_hangup_live_server(void)
{
    sp_checker_config slow = {30.0, 0.02, 30.0, 30.0, 0.5, 1, 0.0, 0};
    sp_redis r;
    sp_endpoint *ep;
    tp_payload *busy[3];
    char reply[64];
    long id = -1;
    uint64_t base_counts[2];
    int i, base = sp_registry_count();

    ep = watched_endpoint(&r, "ck-mass", "redis://ck-mass", &slow);
    if (ep == NULL) {
        return;
    }
    for (i = 0; i < 3; i++) {
        busy[i] = socket_conn(ep, r.port, &id);
        CHECK(busy[i] != NULL);
    }
    CHECK(ep->in_use == 3);
    pthread_mutex_lock(&ep->lock);
    base_counts[0] = ep->probes;
    base_counts[1] = ep->peer_hangups;
    uint64_t transitions = ep->transitions;
    pthread_mutex_unlock(&ep->lock);
    CHECK(sp_redis_cmd(&r, reply, sizeof(reply), "CLIENT", "KILL", "TYPE", "normal",
                       (char *)NULL) > 0 && reply[0] == ':');
    CHECK(tp_wait_locked(ep, probed_after_hangups, base_counts, 10.0));
    pthread_mutex_lock(&ep->lock);
    CHECKF(ep->transitions == transitions && ep->state == SP_STATE_READY, "%s: %s",
           sp_state_name(ep->state), ep->state_reason);
    CHECK(ep->refused_by_state == 0);
    pthread_mutex_unlock(&ep->lock);

    end_watched(ep, &r, base);
}

/* Every slot in use, a caller queued, and the server stops answering
 * (SIGSTOP: it still accepts): no spare slot for an ordinary probe, but
 * nothing comes back, so the checker probes anyway, gets no reply and
 * pauses, failing the queue; a probe without a reply keeps it paused, and
 * the first one answered after SIGCONT lets traffic back. */
static int
waiter_failed(sp_endpoint *ep, void *arg)
{
    (void)ep;
    return ((sp_waiter *)arg)->result != SP_WAIT_PENDING;
}

static void
test_checker_stopped_server_saturated(void)
{
    sp_checker_config cfg = {0.2, 0.02, 0.02, 0.05, 0.2, 1, 0.0, 0};
    sp_redis r;
    sp_endpoint *ep;
    tp_payload *busy[4];
    sp_waiter w;
    sp_conn *got = NULL;
    sp_deferred after = {0};
    uint64_t probes;
    long id = -1;
    int i, base = sp_registry_count();

    ep = watched_endpoint(&r, "ck-stopped", "redis://ck-stopped", &cfg);
    if (ep == NULL) {
        return;
    }
    for (i = 0; i < 4; i++) {
        busy[i] = socket_conn(ep, r.port, &id);
        CHECK(busy[i] != NULL);
    }
    tp_waiter_init(&w);
    CHECK_EQ(sp_endpoint_acquire(ep, POOL_X, 1, -1, &w, &got, &after), SP_ACQ_QUEUED);
    CHECK_EQ(kill(r.pid, SIGSTOP), 0);
    CHECK(tp_wait_locked(ep, waiter_failed, &w, 10.0));
    pthread_mutex_lock(&ep->lock);
    CHECKF(w.result == SP_WAIT_PAUSED && ep->state == SP_STATE_PAUSED, "%s: %s",
           sp_state_name(ep->state), ep->state_reason);
    CHECKF(strstr(ep->state_reason, "not answering") != NULL, "%s", ep->state_reason);
    probes = ep->probes + 2;
    pthread_mutex_unlock(&ep->lock);
    CHECK(tp_wait_locked(ep, probes_at_least, &probes, 10.0));
    CHECKF(ep->state == SP_STATE_PAUSED, "%s", sp_state_name(ep->state));
    CHECK_EQ(kill(r.pid, SIGCONT), 0);
    CHECKF(await_state(ep, SP_STATE_READY, 10.0), "state %s", sp_state_name(ep->state));
    sp_endpoint_cancel(ep, &w, &after);
    tp_after_done(&after);

    end_watched(ep, &r, base);
}

static void
test_checker_idle_limits(void)
{
    sp_deferred after = {0};
    sp_endpoint *ep;
    tp_payload *p[3];
    int created, i, zero = 0;

    fast_config();
    /* No address and no pool: the checker never probes it, only looks at
       its idle connections. */
    ep = sp_registry_bind("ck-idle", "redis://ck-idle", 4, NULL, &created);
    if (ep == NULL) {
        CHECK(ep != NULL);
        return;
    }
    for (i = 0; i < 3; i++) {
        p[i] = tp_connect(ep, POOL_X, 1, -1);
    }
    CHECK_EQ(sp_checker_ensure_running(), 0);
    pthread_mutex_lock(&ep->lock);
    ep->max_idle_time = 0.05;
    pthread_mutex_unlock(&ep->lock);
    for (i = 0; i < 2; i++) {
        if (p[i] != NULL) {
            sp_endpoint_release(ep, POOL_X, p[i], -1, 1, &after);
        }
    }
    tp_after_done(&after);
    CHECKF(tp_wait_locked(ep, idle_is, &zero, 5.0), "idle=%d", ep->idle);
    /* Not shut down by the checker (no fd): still counted until disposed. */
    pthread_mutex_lock(&ep->lock);
    CHECK(tp_list_len(ep->graveyard) == 2 && ep->closing == 2 && ep->total == 3);
    CHECK(ep->probes == 0 && ep->dead_idle_closed == 0);
    pthread_mutex_unlock(&ep->lock);
    tp_check_counts(ep, 0);
    CHECK_EQ(tp_collect(ep), 2);
    CHECK(ep->total == 1 && ep->closing == 0);

    /* max_lifetime: an expired connection is closed when it comes back. */
    pthread_mutex_lock(&ep->lock);
    ep->max_idle_time = 0;
    ep->max_lifetime = 0.05;
    pthread_mutex_unlock(&ep->lock);
    p[0] = tp_connect(ep, POOL_X, 1, -1);
    tp_sleep_ms(80);
    if (p[0] != NULL) {
        CHECK_EQ(sp_endpoint_release(ep, POOL_X, p[0], -1, 1, &after), SP_REL_OK);
        CHECK(tp_list_has(after.graveyard, p[0]));
        tp_after_done(&after);
    }
    sp_checker_stop();
    cleanup_endpoint(ep);
}

typedef struct {
    int n;
    double waited;
} ev_wait_arg;

static void *
events_waiter(void *p)
{
    ev_wait_arg *a = p;
    sp_event ev[4];
    unsigned long dropped;
    double t0 = sp_now();

    int n = sp_events_wait(ev, 4, 10.0, &dropped);

    a->waited = sp_now() - t0;
    __atomic_store_n(&a->n, n, __ATOMIC_RELEASE);
    return NULL;
}

static void
test_events_ring(void)
{
    static sp_event ev[300];
    unsigned long dropped;
    pthread_t th;
    ev_wait_arg arg = {-1, 0};
    double t0;
    int i, n;
    char label[32];

    drain_events();
    /* Empty: waits for the timeout, returns nothing. */
    t0 = sp_now();
    CHECK(sp_events_wait(ev, 4, 0.05, &dropped) == 0 && dropped == 0);
    CHECK(sp_now() - t0 >= 0.045);

    sp_events_push("ev-a", "ready", "paused", "why");
    n = sp_events_wait(ev, 4, 1.0, &dropped);
    CHECK(n == 1 && dropped == 0);
    CHECK(strcmp(ev[0].endpoint, "ev-a") == 0 && strcmp(ev[0].old_state, "ready") == 0 &&
          strcmp(ev[0].new_state, "paused") == 0 && strcmp(ev[0].reason, "why") == 0);
    CHECK(ev[0].when > 1e9);

    /* Overflow drops the oldest and says how many. */
    for (i = 0; i < 300; i++) {
        snprintf(label, sizeof(label), "ev-%d", i);
        sp_events_push(label, "a", "b", NULL);
    }
    n = sp_events_wait(ev, 300, 0, &dropped);
    CHECKF(n == 256 && dropped == 44, "n=%d dropped=%lu", n, dropped);
    CHECK(n > 0 && strcmp(ev[0].endpoint, "ev-44") == 0);
    CHECK(n == 256 && strcmp(ev[255].endpoint, "ev-299") == 0 && ev[255].reason[0] == '\0');
    CHECK(sp_events_wait(ev, 4, 0, &dropped) == 0 && dropped == 0);

    /* A blocked reader wakes on a push, and on interrupt. */
    for (i = 0; i < 2; i++) {
        double deadline = sp_now() + 5.0;
        arg.n = -1;
        CHECK(pthread_create(&th, NULL, events_waiter, &arg) == 0);
        tp_sleep_ms(30);
        if (i == 0) {
            sp_events_push("ev-w", "a", "b", "c");
        }
        else {
            /* An interrupt before the reader is inside sp_events_wait() is
               not remembered: repeat it until the reader returns. */
            while (__atomic_load_n(&arg.n, __ATOMIC_ACQUIRE) < 0 && sp_now() < deadline) {
                sp_events_interrupt();
                tp_sleep_ms(10);
            }
        }
        pthread_join(th, NULL);
        CHECKF(arg.n == (i == 0 ? 1 : 0), "round %d: n=%d", i, arg.n);
        CHECKF(arg.waited < 5.0, "round %d: waited %.3fs", i, arg.waited);
    }
}


/* A black hole: a loopback listener nobody accepts on, so a connect
 * completes in the kernel and nothing ever answers (like a server stopped
 * with SIGSTOP). Returns the listening fd, its port in *port. */
static int
black_hole(int *port)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0) {
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

#define N_HOLES 8

static int
connecting_at_least_one(sp_endpoint *ep, void *arg)
{
    (void)arg;
    return ep->connecting >= 1;  /* the probe holds its slot while in flight */
}

/* Binds an endpoint with one pool on 127.0.0.1:port. */
static sp_endpoint *
bind_port(const char *key, int port)
{
    sp_address addr = {"127.0.0.1", port, NULL, NULL, NULL, 0};
    int created;
    sp_endpoint *ep = sp_registry_bind(key, key, 4, &addr, &created);

    if (ep != NULL) {
        sp_endpoint_pool_added(ep, 1);
    }
    return ep;
}

static void
unbind_port(sp_endpoint *ep)
{
    sp_deferred after = {0};

    sp_endpoint_pool_removed(ep, 1, &after);
    tp_after_done(&after);
    tp_check_counts(ep, 0);
    CHECKF(ep->total == 0, "%s: total=%d", ep->label, ep->total);
    sp_registry_unbind(ep);
}

/* Eight black-holed servers whose probes each wait 30 s for a reply, and a
 * real server that dies: its pause comes while every black-holed probe is
 * still waiting (none of them has been decided), not after them. Then the
 * checker stops at once, long before those probes' deadlines. */
static void
test_checker_black_holes_independent(void)
{
    sp_checker_config cfg = {0.05, 0.02, 0.01, 0.05, 30.0, 1, 0.0, 0};
    sp_endpoint *holes[N_HOLES];
    int hole_fds[N_HOLES];
    sp_redis r;
    sp_endpoint *ep;
    tp_payload *busy;
    long id = -1;
    char key[32];
    int i, port, base = sp_registry_count();

    for (i = 0; i < N_HOLES; i++) {
        holes[i] = NULL;
        hole_fds[i] = black_hole(&port);
        CHECK(hole_fds[i] >= 0);
        if (hole_fds[i] >= 0) {
            snprintf(key, sizeof(key), "ck-hole-%d", i);
            holes[i] = bind_port(key, port);
        }
    }
    ep = watched_endpoint(&r, "ck-live", "redis://ck-live", &cfg);
    if (ep == NULL) {
        goto out;
    }
    for (i = 0; i < N_HOLES; i++) {
        if (holes[i] != NULL) {
            CHECKF(tp_wait_locked(holes[i], connecting_at_least_one, NULL, 10.0),
                   "%s: no probe in flight", holes[i]->label);
        }
    }
    busy = socket_conn(ep, r.port, &id);
    CHECK(busy != NULL);
    double stopped_at = sp_now();
    sp_redis_stop(&r);
    CHECKF(await_state(ep, SP_STATE_PAUSED, 10.0), "state %s", sp_state_name(ep->state));
    sp_note("paused %.1f ms after the kill", (sp_now() - stopped_at) * 1e3);
    for (i = 0; i < N_HOLES; i++) {
        if (holes[i] != NULL) {
            pthread_mutex_lock(&holes[i]->lock);
            CHECKF(holes[i]->probes == 0 && holes[i]->state == SP_STATE_READY,
                   "%s: probes=%llu state=%s", holes[i]->label,
                   (unsigned long long)holes[i]->probes, sp_state_name(holes[i]->state));
            pthread_mutex_unlock(&holes[i]->lock);
        }
    }
    /* Stopping abandons the probes in flight and gives their slots back. */
    double t0 = sp_now();
    sp_checker_stop();
    double took = sp_now() - t0;
    sp_note("checker stopped in %.2f ms with %d probes in flight", took * 1e3, N_HOLES);
    CHECKF(took < cfg.probe_timeout / 3, "stop took %.3fs", took);
    CHECK(!sp_checker_running());
    end_watched(ep, &r, base + N_HOLES);
out:
    sp_checker_stop();
    fast_config();
    for (i = 0; i < N_HOLES; i++) {
        if (holes[i] != NULL) {
            unbind_port(holes[i]);
        }
        if (hole_fds[i] >= 0) {
            close(hole_fds[i]);
        }
    }
    CHECK_EQ(sp_registry_count(), base);
}

/* A server that listens again after it was down is probed within one knock
 * (5-10 ms), not after the backoff of a long outage. */
static void
test_checker_knock_while_down(void)
{
    sp_checker_config cfg = {30.0, 0.02, 1.0, 30.0, 0.5, 1, 0.0, 0};
    sp_redis r;
    sp_endpoint *ep;
    tp_payload *busy;
    long id = -1;
    int base = sp_registry_count();

    ep = watched_endpoint(&r, "ck-knock", "redis://ck-knock", &cfg);
    if (ep == NULL) {
        return;
    }
    busy = socket_conn(ep, r.port, &id);
    CHECK(busy != NULL);
    sp_redis_stop(&r);
    CHECKF(await_state(ep, SP_STATE_PAUSED, 10.0), "state %s", sp_state_name(ep->state));
    /* Let the backoff grow past anything a knock waits: with backoff_max
     * 30 s, only knocks can find the server in time. */
    uint64_t probes0 = ep->probes;
    tp_sleep_ms(300);
    pthread_mutex_lock(&ep->lock);
    uint64_t knocked = ep->probes - probes0;
    CHECKF(ep->probe_knock == 1, "probe_knock=%d", ep->probe_knock);
    pthread_mutex_unlock(&ep->lock);
    sp_note("%llu probes in 300 ms while down", (unsigned long long)knocked);
    CHECKF(knocked >= 3 && knocked <= 300 / 5 + 1, "%llu probes", (unsigned long long)knocked);
    sp_redis_opts again = {r.port, 0, 0, NULL};
    CHECK_EQ(sp_redis_start(&r, &again), 0);
    double t0 = sp_now();
    CHECKF(await_state(ep, SP_STATE_RECOVERING, 10.0) || ep->state == SP_STATE_READY,
           "state %s", sp_state_name(ep->state));
    sp_note("probed back %.1f ms after the restart returned", (sp_now() - t0) * 1e3);
    end_watched(ep, &r, base);
}

static const sp_test tests[] = {
    {"checker/events_ring", test_events_ring},
    {"checker/idle_limits", test_checker_idle_limits},
    {"checker/real_server", test_checker_real_server},
    {"checker/hangup_pauses", test_checker_hangup_pauses},
    {"checker/mass_hangup_live_server", test_checker_mass_hangup_live_server},
    {"checker/black_holes_independent", test_checker_black_holes_independent},
    {"checker/knock_while_down", test_checker_knock_while_down},
    {"checker/stopped_server_saturated", test_checker_stopped_server_saturated},
    {NULL, NULL},
};

SP_SUITE(checker, tests)
