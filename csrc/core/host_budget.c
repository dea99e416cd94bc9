/* host_budget.c -- one endpoint's connection budget shared by every process of a user on a host. */
#include "host_budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HOST_MAGIC 0x31304d4853485053ULL   /* "SPHSHM01" */
#define HOST_LAYOUT 2u
#define RECLAIM_EVERY_NS 100000000ULL     /* one scan per 100 ms on the host */
#define INIT_WAIT_S 1.0                   /* how long a segment may stay half made */

/* One attached process. `holder` is written by the process that claims
 * the entry (0 -> its identity) and by a reclaimer (a dead holder -> 0,
 * after its ticket). `ticket` and the counts are written by the holder
 * only (and cleared by a reclaimer once the holder is dead). */
typedef struct {
    _Atomic uint64_t holder;    /* process identity; 0: free */
    _Atomic uint64_t ticket;    /* in line for a slot since this ticket; 0: not in line */
    _Atomic uint32_t in_use;    /* its endpoint's counts, for the host view */
    _Atomic uint32_t total;
    _Atomic uint32_t connect_units;  /* recovering: connects it holds of the host's
                                      * max_connecting (cleared with the entry) */
    uint32_t reserved;
} host_proc;

/* The endpoint's health, shared (a seqlock that a dead writer cannot
 * block): `writer` is claimed by CAS 0 -> self (or dead writer -> self)
 * for the few stores of one write; `gen` is odd while a write is under
 * way and grows by 2 with every write. A reader never waits: an odd or
 * moving `gen` means "nothing new to read" this time. Only codes and
 * fixed texts are stored (no server reply, so no secret). */
typedef struct {
    _Atomic uint64_t writer;    /* identity of the process writing; 0: none */
    _Atomic uint64_t gen;
    _Atomic uint32_t state;     /* sp_state of the endpoint */
    _Atomic uint32_t reason;    /* SP_HOST_REASON_* */
    _Atomic uint64_t since;     /* wall clock, the bits of a double */
    _Atomic uint64_t by;        /* identity of the process that published it */
    _Atomic uint64_t run_id[5]; /* the server's run_id (40 characters) */
} host_health;

/* The segment. Fields above `creator` are written once by the creator
 * before it publishes `magic` (release) and only read after. Every other
 * field is atomic; there is no lock. A slot word is 0 (free) or the
 * identity of the process that holds it: claimed by CAS 0 -> self, given
 * back by CAS self -> 0, taken from a dead holder by CAS dead -> 0. */
typedef struct {
    _Atomic uint64_t magic;     /* HOST_MAGIC once the segment is made */
    uint32_t layout;            /* HOST_LAYOUT */
    uint32_t size;              /* sizeof(host_shm) */
    uint32_t uid;               /* owner */
    uint32_t n_slots;           /* SP_HOST_SLOTS */
    uint32_t n_procs;           /* SP_HOST_PROCS */
    uint32_t reserved;
    _Atomic uint64_t creator;   /* the process making it (until magic is set) */
    _Atomic uint32_t max;       /* host budget: slots [0, max) may be claimed */
    _Atomic uint32_t wake_seq;  /* futex word: bumped on every release and hand-over */
    _Atomic uint32_t sleepers;  /* threads in futex wait on wake_seq */
    _Atomic uint32_t waiting;   /* hint: tickets taken and not given back (may
                                 * stay high after a holder died mid-step;
                                 * readers confirm by scanning the entries) */
    _Atomic uint32_t procs_hw;  /* entries [0, procs_hw) have been used */
    uint32_t reserved2;
    _Atomic uint64_t next_ticket;
    _Atomic uint64_t reclaim_after_ns;  /* CLOCK_MONOTONIC: next reclaim scan */
    _Atomic uint64_t reclaimed;         /* slots taken back from dead holders */
    host_health health;
    /* The probe lease: (entry + 1) << 48 | until (CLOCK_MONOTONIC ms). The
     * process whose entry it names probes the server while it is not
     * ready; anyone takes it over once it ends or its entry is gone. */
    _Atomic uint64_t probe_lease;
    _Atomic uint32_t max_connecting;    /* recovering: connects at once on the host */
    uint32_t reserved3;
    _Atomic uint64_t probes_led;        /* probes this host made under the lease */
    _Atomic uint64_t probes_skipped;    /* probes skipped: another process held it */
    _Atomic uint64_t slots[SP_HOST_SLOTS];
    host_proc procs[SP_HOST_PROCS];
} host_shm;

/* Process-local handle, guarded by its endpoint's lock. */
struct sp_host {
    host_shm *shm;
    uint64_t self;              /* identity as holder */
    int proc;                   /* entry index, -1 when the table was full */
    int in_line;                /* our entry has a ticket */
    int held;                   /* slots held: indices in held_idx[0, held) */
    int hint;                   /* where the next claim starts looking */
    int connect_units;          /* units of the host's max_connecting held */
    int adopting;               /* a host state is being taken in: do not publish it */
    uint64_t health_seen;       /* gen of the last health record read or written */
    sp_host_health pending;     /* a publication that found the writer busy */
    int has_pending;
    int held_idx[SP_HOST_SLOTS];
};

/* ---- identity -------------------------------------------------------- */

/* State letter and start time (clock ticks since boot) of a process:
 * 0, or -1 with errno (ENOENT: no such process). */
static int
read_stat(long pid, char *state, uint64_t *start)
{
    char path[64];
    char buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int saved = errno;
    close(fd);
    if (n <= 0) {
        errno = n == 0 ? ENOENT : saved;
        return -1;
    }
    buf[n] = '\0';
    char *p = strrchr(buf, ')');  /* the command name may hold spaces and ')' */
    if (p == NULL || p[1] != ' ') {
        errno = EINVAL;
        return -1;
    }
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) {  /* starttime is field 22 */
        p = strchr(p, ' ');
        if (p == NULL) {
            errno = EINVAL;
            return -1;
        }
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

static uint64_t
identity(long pid, uint64_t start)
{
    return ((uint64_t)pid << 40) | (start & ((1ULL << 40) - 1));
}

uint64_t
sp_host_self(void)
{
    static _Atomic long cached_pid;
    static _Atomic uint64_t cached_id;
    long pid = (long)getpid();
    if (atomic_load(&cached_pid) == pid) {
        return atomic_load(&cached_id);
    }
    char state;
    uint64_t start;
    if (read_stat(pid, &state, &start) < 0) {
        return 0;
    }
    uint64_t id = identity(pid, start);
    atomic_store(&cached_id, id);
    atomic_store(&cached_pid, pid);
    return id;
}

int
sp_host_alive(uint64_t id)
{
    char state;
    uint64_t start;
    if (read_stat((long)(id >> 40), &state, &start) < 0) {
        /* Gone. Anything else (a /proc we cannot read) counts as alive:
         * never give a live holder's slot to someone else. */
        return errno != ENOENT && errno != ESRCH;
    }
    if (state == 'Z' || state == 'X') {
        return 0;  /* killed, not reaped yet: its sockets are closed */
    }
    return identity((long)(id >> 40), start) == id;
}

/* ---- futex ----------------------------------------------------------- */

static void
futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void
sp_host_wake(sp_host *h)
{
    atomic_fetch_add(&h->shm->wake_seq, 1);
    if (atomic_load(&h->shm->sleepers) > 0) {
        futex_wake_all(&h->shm->wake_seq);
    }
}

uint32_t
sp_host_seq(const sp_host *h)
{
    return atomic_load(&h->shm->wake_seq);
}

void
sp_host_sleep(sp_host *h, uint32_t seq, double seconds)
{
    if (!(seconds > 0)) {
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    atomic_fetch_add(&h->shm->sleepers, 1);
    syscall(SYS_futex, (uint32_t *)&h->shm->wake_seq, FUTEX_WAIT, seq, &ts, NULL, 0);
    atomic_fetch_sub(&h->shm->sleepers, 1);
}

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void
nap_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- entries and the line --------------------------------------------- */

static int attached(const host_shm *s, uint64_t id);

static int
claim_entry(host_shm *s, uint64_t self)
{
    for (int i = 0; i < SP_HOST_PROCS; i++) {
        uint64_t expected = 0;
        if (atomic_load(&s->procs[i].holder) == 0 &&
            atomic_compare_exchange_strong(&s->procs[i].holder, &expected, self)) {
            atomic_store(&s->procs[i].ticket, 0);
            atomic_store(&s->procs[i].in_use, 0);
            atomic_store(&s->procs[i].total, 0);
            atomic_store(&s->procs[i].connect_units, 0);
            uint32_t hw = atomic_load(&s->procs_hw);
            while (hw < (uint32_t)i + 1 &&
                   !atomic_compare_exchange_weak(&s->procs_hw, &hw, (uint32_t)i + 1)) {
            }
            return i;
        }
    }
    return -1;
}

static void
take_place(sp_host *h)
{
    if (h->proc < 0 || h->in_line) {
        return;
    }
    host_shm *s = h->shm;
    atomic_fetch_add(&s->waiting, 1);  /* before the ticket: a reclaimer never takes more */
    uint64_t t = atomic_fetch_add(&s->next_ticket, 1) + 1;
    atomic_store(&s->procs[h->proc].ticket, t);
    h->in_line = 1;
}

void
sp_host_unqueue(sp_host *h)
{
    if (!h->in_line) {
        return;
    }
    atomic_store(&h->shm->procs[h->proc].ticket, 0);
    atomic_fetch_sub(&h->shm->waiting, 1);
    h->in_line = 0;
}

/* No other live entry holds an older ticket than ours (none at all, when
 * we are not in line). */
static int
first_in_line(const sp_host *h)
{
    const host_shm *s = h->shm;
    uint64_t mine = h->in_line ? atomic_load(&s->procs[h->proc].ticket) : 0;
    uint32_t hw = atomic_load(&s->procs_hw);
    for (uint32_t i = 0; i < hw && i < SP_HOST_PROCS; i++) {
        if ((int)i == h->proc) {
            continue;
        }
        uint64_t t = atomic_load(&s->procs[i].ticket);
        if (t != 0 && atomic_load(&s->procs[i].holder) != 0 && (mine == 0 || t < mine)) {
            return 0;
        }
    }
    return 1;
}

/* 1 when another process is in line, in one pass over the process
 * entries (none when the `waiting` hint says nobody else is); with 1,
 * *attached (when not NULL) is the number of processes attached, this
 * one included. */
static int
scan_others(const sp_host *h, long long *attached)
{
    const host_shm *s = h->shm;
    if (atomic_load(&s->waiting) <= (uint32_t)(h->in_line ? 1 : 0)) {
        return 0;
    }
    uint32_t hw = atomic_load(&s->procs_hw);
    int in_line = 0;
    long long procs = 1;  /* this one */
    for (uint32_t i = 0; i < hw && i < SP_HOST_PROCS; i++) {
        if ((int)i == h->proc || atomic_load(&s->procs[i].holder) == 0) {
            continue;
        }
        procs++;
        if (atomic_load(&s->procs[i].ticket) != 0) {
            in_line = 1;
            if (attached == NULL) {
                break;
            }
        }
    }
    if (attached != NULL) {
        *attached = procs;
    }
    return in_line;
}

int
sp_host_others_waiting(const sp_host *h)
{
    return scan_others(h, NULL);
}

int
sp_host_over_share(const sp_host *h)
{
    /* Every process attached counts, busy or not: a share too small only
     * costs connects, one too large could starve a process in line (the
     * published counts may be a step behind). With the budget full and a
     * process in line, some holder is always over its share. */
    long long procs;
    if (!scan_others(h, &procs)) {
        return 0;
    }
    return (long long)h->held * procs > (long long)atomic_load(&h->shm->max);
}

/* ---- slots ------------------------------------------------------------ */

int
sp_host_claim(sp_host *h, int queue)
{
    host_shm *s = h->shm;
    if (h->held >= SP_HOST_SLOTS) {
        return 0;
    }
    if (atomic_load(&s->waiting) > 0 && !first_in_line(h)) {
        if (queue) {
            take_place(h);
        }
        return 0;
    }
    int max = (int)atomic_load(&s->max);
    for (int i = 0; i < max; i++) {
        int idx = (h->hint + i) % max;
        uint64_t expected = 0;
        if (atomic_load(&s->slots[idx]) != 0 ||
            !atomic_compare_exchange_strong(&s->slots[idx], &expected, h->self)) {
            continue;
        }
        if (idx >= (int)atomic_load(&s->max)) {
            /* The budget was lowered meanwhile: not ours to take. */
            atomic_store(&s->slots[idx], 0);
            sp_host_wake(h);
            break;
        }
        h->held_idx[h->held++] = idx;
        h->hint = idx;
        sp_host_unqueue(h);  /* served: the next slot takes a new place in line */
        return 1;
    }
    if (queue) {
        take_place(h);
    }
    return 0;
}

void
sp_host_release(sp_host *h, int n)
{
    int gave = 0;
    while (n-- > 0 && h->held > 0) {
        int idx = h->held_idx[--h->held];
        uint64_t expected = h->self;
        atomic_compare_exchange_strong(&h->shm->slots[idx], &expected, 0);
        gave++;
    }
    if (gave) {
        sp_host_wake(h);
    }
}

int
sp_host_held(const sp_host *h)
{
    return h->held;
}

void
sp_host_publish(sp_host *h, int in_use, int total)
{
    if (h->proc >= 0) {
        atomic_store(&h->shm->procs[h->proc].in_use, (uint32_t)(in_use < 0 ? 0 : in_use));
        atomic_store(&h->shm->procs[h->proc].total, (uint32_t)(total < 0 ? 0 : total));
    }
}

int
sp_host_max(const sp_host *h)
{
    return (int)atomic_load(&h->shm->max);
}

void
sp_host_set_max(sp_host *h, int max)
{
    if (max < 1) {
        max = 1;
    }
    if (max > SP_HOST_SLOTS) {
        max = SP_HOST_SLOTS;
    }
    atomic_store(&h->shm->max, (uint32_t)max);
    sp_host_wake(h);
}

/* ---- recovering: the host's max_connecting ---------------------------- */

int
sp_host_max_connecting(const sp_host *h)
{
    return (int)atomic_load(&h->shm->max_connecting);
}

void
sp_host_set_max_connecting(sp_host *h, int n)
{
    if (n < 1) {
        n = 1;
    }
    if (n > SP_HOST_SLOTS) {
        n = SP_HOST_SLOTS;
    }
    if (atomic_exchange(&h->shm->max_connecting, (uint32_t)n) < (uint32_t)n) {
        sp_host_wake(h);  /* more may connect now */
    }
}

int
sp_host_connecting(const sp_host *h)
{
    const host_shm *s = h->shm;
    int sum = 0;
    uint32_t hw = atomic_load(&s->procs_hw);
    for (uint32_t i = 0; i < hw && i < SP_HOST_PROCS; i++) {
        if (atomic_load(&s->procs[i].holder) != 0) {
            sum += (int)atomic_load(&s->procs[i].connect_units);
        }
    }
    return sum;
}

int
sp_host_connect_claim(sp_host *h)
{
    if (h->proc < 0) {
        return 0;  /* no entry to count it in: connect when the host is ready */
    }
    host_proc *me = &h->shm->procs[h->proc];
    /* Ours first, then the sum: of two processes after the last unit, at
     * least one sees both (sequentially consistent), so the host never
     * goes over; both may back off, and try again at their next dispatch. */
    atomic_fetch_add(&me->connect_units, 1);
    if (sp_host_connecting(h) > sp_host_max_connecting(h)) {
        atomic_fetch_sub(&me->connect_units, 1);
        return 0;
    }
    h->connect_units++;
    return 1;
}

void
sp_host_connect_settle(sp_host *h, int connecting)
{
    int gave = 0;
    while (h->connect_units > (connecting < 0 ? 0 : connecting)) {
        atomic_fetch_sub(&h->shm->procs[h->proc].connect_units, 1);
        h->connect_units--;
        gave++;
    }
    if (gave) {
        sp_host_wake(h);
    }
}

int
sp_host_connect_units(const sp_host *h)
{
    return h->connect_units;
}

/* ---- the shared health record ----------------------------------------- */

/* Whether `id` holds an entry (no system call: fit under a lock). A dead
 * process holds one until a reclaim scan clears it. */
static int
attached(const host_shm *s, uint64_t id)
{
    uint32_t hw = atomic_load(&s->procs_hw);
    for (uint32_t i = 0; i < hw && i < SP_HOST_PROCS; i++) {
        if (atomic_load(&s->procs[i].holder) == id) {
            return 1;
        }
    }
    return 0;
}

static void
pack_run_id(_Atomic uint64_t *words, const char *run_id)
{
    char buf[40] = {0};
    size_t n = strnlen(run_id, sizeof(buf));
    memcpy(buf, run_id, n);
    for (int i = 0; i < 5; i++) {
        uint64_t w;
        memcpy(&w, buf + 8 * i, 8);
        atomic_store(&words[i], w);
    }
}

/* Only hex digits (what a run_id is): anything else in the segment is
 * read as no run_id. */
static void
unpack_run_id(_Atomic uint64_t *words, char *out)
{
    for (int i = 0; i < 5; i++) {
        uint64_t w = atomic_load(&words[i]);
        memcpy(out + 8 * i, &w, 8);
    }
    out[40] = '\0';
    for (int i = 0; i < 40 && out[i]; i++) {
        char c = out[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            out[0] = '\0';
            return;
        }
    }
}

int
sp_host_health_publish(sp_host *h, const sp_host_health *in)
{
    host_health *r = &h->shm->health;
    uint64_t w = atomic_load(&r->writer);
    if ((w != 0 && w != h->self && attached(h->shm, w)) ||
        !atomic_compare_exchange_strong(&r->writer, &w, h->self)) {
        /* Another process writes this very moment (or died writing and
         * is not reclaimed yet): the checker tries again at its tick,
         * unless the record moved on meanwhile (newer news). */
        h->pending = *in;
        h->pending.gen = atomic_load(&r->gen);
        h->has_pending = 1;
        return 0;
    }
    h->has_pending = 0;
    uint64_t g = atomic_load(&r->gen) | 1;
    atomic_store(&r->gen, g);          /* odd: readers keep what they have */
    atomic_store(&r->state, in->state);
    atomic_store(&r->reason, in->reason);
    uint64_t bits;
    memcpy(&bits, &in->since, sizeof(bits));
    atomic_store(&r->since, bits);
    atomic_store(&r->by, h->self);
    pack_run_id(r->run_id, in->run_id);
    atomic_store(&r->gen, g + 1);
    h->health_seen = g + 1;
    atomic_store(&r->writer, 0);
    sp_host_wake(h);
    return 1;
}

void
sp_host_health_retry(sp_host *h)
{
    if (h->has_pending) {
        sp_host_health pending = h->pending;
        h->has_pending = 0;
        if (atomic_load(&h->shm->health.gen) == pending.gen) {
            sp_host_health_publish(h, &pending);  /* still stuck: the writer died */
        }
    }
}

int
sp_host_health_changed(const sp_host *h)
{
    uint64_t g = atomic_load(&h->shm->health.gen);
    return g != h->health_seen && (g & 1) == 0;
}

int
sp_host_health_read(sp_host *h, sp_host_health *out)
{
    host_health *r = &h->shm->health;
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t g = atomic_load(&r->gen);
        if (g == h->health_seen || (g & 1) != 0 || g == 0) {
            return 0;
        }
        out->state = atomic_load(&r->state);
        out->reason = atomic_load(&r->reason);
        uint64_t bits = atomic_load(&r->since);
        memcpy(&out->since, &bits, sizeof(bits));
        out->by = atomic_load(&r->by);
        unpack_run_id(r->run_id, out->run_id);
        if (atomic_load(&r->gen) == g) {
            h->health_seen = g;
            out->gen = g;
            out->mine = out->by == h->self;
            return out->reason < SP_HOST_REASONS;
        }
    }
    return 0;
}

void
sp_host_set_adopting(sp_host *h, int on)
{
    h->adopting = on;
}

int
sp_host_adopting(const sp_host *h)
{
    return h->adopting;
}

/* ---- the probe lease --------------------------------------------------- */

#define LEASE_UNTIL_MASK ((1ULL << 48) - 1)

static uint64_t
mono_ms(void)
{
    return mono_ns() / 1000000ULL;
}

int
sp_host_probe_lease(sp_host *h, double seconds, double *wait_s)
{
    host_shm *s = h->shm;
    if (h->proc < 0) {
        return 1;  /* no entry to name in the lease: probe as alone */
    }
    uint64_t mine = (uint64_t)h->proc + 1;
    uint64_t ms = seconds > 0 ? (uint64_t)(seconds * 1000.0) + 1 : 1;
    for (;;) {
        uint64_t cur = atomic_load(&s->probe_lease);
        uint64_t who = cur >> 48;
        uint64_t until = cur & LEASE_UNTIL_MASK;
        uint64_t now = mono_ms();
        int free_now = who == 0 || who == mine || now >= until || who > SP_HOST_PROCS ||
                       atomic_load(&s->procs[who - 1].holder) == 0;
        if (!free_now) {
            if (wait_s) {
                *wait_s = (double)(until - now) / 1000.0;
            }
            atomic_fetch_add(&s->probes_skipped, 1);
            return 0;
        }
        uint64_t next = mine << 48 | ((now + ms) & LEASE_UNTIL_MASK);
        if (atomic_compare_exchange_strong(&s->probe_lease, &cur, next)) {
            atomic_fetch_add(&s->probes_led, 1);
            return 1;
        }
    }
}

void
sp_host_probe_lease_extend(sp_host *h, double seconds)
{
    host_shm *s = h->shm;
    if (h->proc < 0) {
        return;
    }
    uint64_t mine = (uint64_t)h->proc + 1;
    uint64_t cur = atomic_load(&s->probe_lease);
    if (cur >> 48 != mine) {
        return;  /* taken over meanwhile: it is theirs */
    }
    uint64_t ms = seconds > 0 ? (uint64_t)(seconds * 1000.0) + 1 : 1;
    uint64_t next = mine << 48 | ((mono_ms() + ms) & LEASE_UNTIL_MASK);
    atomic_compare_exchange_strong(&s->probe_lease, &cur, next);
}

void
sp_host_probe_lease_drop(sp_host *h)
{
    if (h->proc < 0) {
        return;
    }
    uint64_t cur = atomic_load(&h->shm->probe_lease);
    if (cur >> 48 == (uint64_t)h->proc + 1) {
        atomic_compare_exchange_strong(&h->shm->probe_lease, &cur, 0);
    }
}

int
sp_host_probe_lease_held(const sp_host *h)
{
    if (h->proc < 0) {
        return 0;
    }
    uint64_t cur = atomic_load(&h->shm->probe_lease);
    return cur >> 48 == (uint64_t)h->proc + 1 && mono_ms() < (cur & LEASE_UNTIL_MASK);
}

/* ---- dead holders ----------------------------------------------------- */

typedef struct {
    uint64_t id[32];
    int alive[32];
    int n;
} alive_cache;

static int
alive_cached(alive_cache *c, uint64_t id)
{
    for (int i = 0; i < c->n; i++) {
        if (c->id[i] == id) {
            return c->alive[i];
        }
    }
    int alive = sp_host_alive(id);
    if (c->n < 32) {
        c->id[c->n] = id;
        c->alive[c->n] = alive;
        c->n++;
    }
    return alive;
}

int
sp_host_reclaim(sp_host *h, int force)
{
    host_shm *s = h->shm;
    uint64_t now = mono_ns();
    uint64_t after = atomic_load(&s->reclaim_after_ns);
    if (!force && (now < after ||
                   !atomic_compare_exchange_strong(&s->reclaim_after_ns, &after,
                                                   now + RECLAIM_EVERY_NS))) {
        return 0;
    }
    alive_cache cache = {{0}, {0}, 0};
    int taken_units = 0;
    uint32_t hw = atomic_load(&s->procs_hw);
    for (uint32_t i = 0; i < hw && i < SP_HOST_PROCS; i++) {
        uint64_t id = atomic_load(&s->procs[i].holder);
        if (id == 0 || id == h->self || alive_cached(&cache, id)) {
            continue;
        }
        /* Its place in line first, then the entry itself. */
        uint64_t t = atomic_load(&s->procs[i].ticket);
        if (t != 0 && atomic_compare_exchange_strong(&s->procs[i].ticket, &t, 0)) {
            atomic_fetch_sub(&s->waiting, 1);
        }
        atomic_store(&s->procs[i].in_use, 0);
        atomic_store(&s->procs[i].total, 0);
        if (atomic_exchange(&s->procs[i].connect_units, 0) != 0) {
            taken_units = 1;  /* its connects are free: wake below */
        }
        atomic_compare_exchange_strong(&s->procs[i].holder, &id, 0);
    }
    int taken = 0;
    for (int i = 0; i < SP_HOST_SLOTS; i++) {
        uint64_t id = atomic_load(&s->slots[i]);
        if (id == 0 || id == h->self || alive_cached(&cache, id)) {
            continue;
        }
        if (atomic_compare_exchange_strong(&s->slots[i], &id, 0)) {
            taken++;
        }
    }
    if (taken) {
        atomic_fetch_add(&s->reclaimed, (uint64_t)taken);
    }
    if (taken || taken_units) {
        sp_host_wake(h);
    }
    return taken;
}

/* ---- attach ----------------------------------------------------------- */

static void
say(char *err, size_t errlen, const char *fmt, const char *what)
{
    if (err && errlen) {
        snprintf(err, errlen, fmt, what);
    }
}

/* Checks a segment someone else made: 0, or -1 with `err` set. */
static int
check_made(const host_shm *s, char *err, size_t errlen)
{
    if (atomic_load(&s->magic) != HOST_MAGIC) {
        say(err, errlen, "%s: not a redis-safepool host budget (corrupt)", "shared segment");
        return -1;
    }
    if (s->layout != HOST_LAYOUT || s->size != sizeof(host_shm) || s->n_slots != SP_HOST_SLOTS ||
        s->n_procs != SP_HOST_PROCS) {
        say(err, errlen, "%s: made by another layout version of redis-safepool",
            "shared segment");
        return -1;
    }
    if (s->uid != (uint32_t)geteuid()) {
        say(err, errlen, "%s: made for another user", "shared segment");
        return -1;
    }
    uint32_t max = atomic_load(&s->max);
    if (max < 1 || max > SP_HOST_SLOTS) {
        say(err, errlen, "%s: budget out of range (corrupt)", "shared segment");
        return -1;
    }
    return 0;
}

/* Owner and mode of an open segment: 0, or -1 with `err` set. */
static int
check_owner(int fd, struct stat *st, char *err, size_t errlen)
{
    if (fstat(fd, st) < 0) {
        say(err, errlen, "cannot stat the shared segment: %s", strerror(errno));
        return -1;
    }
    if (st->st_uid != geteuid()) {
        say(err, errlen, "%s is owned by another user", "the shared segment");
        return -1;
    }
    if ((st->st_mode & 0777) != 0600) {
        say(err, errlen, "%s has a mode other than 0600", "the shared segment");
        return -1;
    }
    return 0;
}

/* Removes `name` if it still is the segment open as `fd`. */
static void
unlink_if_same(const char *name, int fd)
{
    struct stat mine, now;
    int again = shm_open(name, O_RDONLY, 0);
    if (again < 0) {
        return;
    }
    if (fstat(fd, &mine) == 0 && fstat(again, &now) == 0 && mine.st_ino == now.st_ino &&
        mine.st_dev == now.st_dev) {
        shm_unlink(name);
    }
    close(again);
}

/* Opens a segment another process made (or is making). NULL with `err`
 * set; *stale = 1 when its maker died before finishing it (removed then:
 * the caller tries once more). */
static host_shm *
open_existing(const char *name, int *stale, char *err, size_t errlen)
{
    *stale = 0;
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) {
        if (errno == ENOENT) {
            *stale = 1;  /* gone meanwhile: make it */
            return NULL;
        }
        say(err, errlen, "cannot open the shared segment: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (check_owner(fd, &st, err, errlen) < 0) {
        close(fd);
        return NULL;
    }
    double until = (double)mono_ns() / 1e9 + INIT_WAIT_S;
    while (st.st_size == 0 && (double)mono_ns() / 1e9 < until) {
        nap_ms(1);  /* its maker sizes it right after creating it */
        if (fstat(fd, &st) < 0) {
            break;
        }
    }
    if (st.st_size == 0) {
        unlink_if_same(name, fd);  /* its maker died before sizing it */
        close(fd);
        *stale = 1;
        return NULL;
    }
    if ((size_t)st.st_size != sizeof(host_shm)) {
        close(fd);
        say(err, errlen, "%s: made by another layout version of redis-safepool",
            "shared segment");
        return NULL;
    }
    host_shm *s = mmap(NULL, sizeof(host_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) {
        close(fd);
        say(err, errlen, "cannot map the shared segment: %s", strerror(errno));
        return NULL;
    }
    while (atomic_load(&s->magic) == 0 && (double)mono_ns() / 1e9 < until) {
        uint64_t maker = atomic_load(&s->creator);
        if (maker != 0 && !sp_host_alive(maker)) {
            break;
        }
        nap_ms(1);
    }
    if (atomic_load(&s->magic) == 0) {
        uint64_t maker = atomic_load(&s->creator);
        if (maker == 0 || !sp_host_alive(maker)) {
            unlink_if_same(name, fd);  /* its maker died half-way */
            *stale = 1;
        }
        else {
            say(err, errlen, "%s: still not made after 1 s", "shared segment");
        }
        close(fd);
        munmap(s, sizeof(host_shm));
        return NULL;
    }
    close(fd);
    if (check_made(s, err, errlen) < 0) {
        munmap(s, sizeof(host_shm));
        return NULL;
    }
    return s;
}

static host_shm *
create_new(const char *name, int max, uint64_t self, int *exists, char *err, size_t errlen)
{
    *exists = 0;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        if (errno == EEXIST) {
            *exists = 1;
        }
        else {
            say(err, errlen, "cannot create the shared segment: %s", strerror(errno));
        }
        return NULL;
    }
    host_shm *s = MAP_FAILED;
    if (fchmod(fd, 0600) == 0 && ftruncate(fd, (off_t)sizeof(host_shm)) == 0) {
        s = mmap(NULL, sizeof(host_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (s == MAP_FAILED) {
        say(err, errlen, "cannot make the shared segment: %s", strerror(errno));
        shm_unlink(name);
        close(fd);
        return NULL;
    }
    close(fd);
    /* The pages are zero: only the constants and the budget to write. */
    atomic_store(&s->creator, self);
    s->layout = HOST_LAYOUT;
    s->size = (uint32_t)sizeof(host_shm);
    s->uid = (uint32_t)geteuid();
    s->n_slots = SP_HOST_SLOTS;
    s->n_procs = SP_HOST_PROCS;
    atomic_store(&s->max, (uint32_t)max);
    atomic_store(&s->max_connecting, 2);
    atomic_store_explicit(&s->magic, HOST_MAGIC, memory_order_release);
    return s;
}

sp_host *
sp_host_attach(const char *name, int max, int *created, char *err, size_t errlen)
{
    *created = 0;
    if (name == NULL || name[0] != '/' || strchr(name + 1, '/') != NULL || strlen(name) > 200) {
        say(err, errlen, "bad shared segment name%s", "");
        return NULL;
    }
    if (max < 1 || max > SP_HOST_SLOTS) {
        say(err, errlen, "a host budget is 1 to %s connections", "4096");
        return NULL;
    }
    uint64_t self = sp_host_self();
    if (self == 0) {
        say(err, errlen, "cannot read this process's start time from %s", "/proc/self/stat");
        return NULL;
    }
    sp_host *h = malloc(sizeof(*h));
    if (h == NULL) {
        say(err, errlen, "out of memory%s", "");
        return NULL;
    }
    host_shm *s = NULL;
    for (int attempt = 0; attempt < 3 && s == NULL; attempt++) {
        int exists = 0, stale = 0;
        s = create_new(name, max, self, &exists, err, errlen);
        if (s != NULL) {
            *created = 1;
            break;
        }
        if (!exists) {
            break;
        }
        s = open_existing(name, &stale, err, errlen);
        if (s == NULL && !stale) {
            break;
        }
    }
    if (s == NULL) {
        if (err && errlen && err[0] == '\0') {
            say(err, errlen, "the shared segment keeps changing%s", "");
        }
        free(h);
        return NULL;
    }
    h->shm = s;
    h->self = self;
    h->in_line = 0;
    h->held = 0;
    h->connect_units = 0;
    h->adopting = 0;
    h->health_seen = 0;
    h->has_pending = 0;
    h->hint = (int)((self >> 40) % (uint64_t)max);
    h->proc = claim_entry(s, self);
    /* A state published by a process that is gone (the last one exited
     * while the server was down) is history, not news: our checker finds
     * out for itself. Anything a live process published is taken in. */
    uint64_t g = atomic_load(&s->health.gen);
    if (g != 0 && (g & 1) == 0 && !attached(s, atomic_load(&s->health.by))) {
        h->health_seen = g;
    }
    return h;
}

void
sp_host_detach(sp_host *h)
{
    if (h == NULL) {
        return;
    }
    sp_host_release(h, h->held);
    sp_host_connect_settle(h, 0);
    sp_host_probe_lease_drop(h);
    sp_host_unqueue(h);
    if (h->proc >= 0) {
        host_shm *s = h->shm;
        atomic_store(&s->procs[h->proc].in_use, 0);
        atomic_store(&s->procs[h->proc].total, 0);
        uint64_t expected = h->self;
        atomic_compare_exchange_strong(&s->procs[h->proc].holder, &expected, 0);
    }
    munmap(h->shm, sizeof(host_shm));
    free(h);
}

void
sp_host_after_fork_child(sp_host *h)
{
    if (h == NULL) {
        return;
    }
    h->self = sp_host_self();
    h->held = 0;      /* the parent's slots stay the parent's */
    h->in_line = 0;   /* and so does its place in line */
    h->connect_units = 0;  /* and its connects, and its probe lease */
    h->proc = h->self ? claim_entry(h->shm, h->self) : -1;
}

/* ---- the host view ---------------------------------------------------- */

size_t
sp_host_segment_size(void)
{
    return sizeof(host_shm);
}

static void
fill_stats(const host_shm *s, sp_host_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->max_connections = (int)atomic_load(&s->max);
    for (int i = 0; i < SP_HOST_SLOTS; i++) {
        out->total += atomic_load(&s->slots[i]) != 0;
    }
    uint32_t hw = atomic_load(&s->procs_hw);
    for (uint32_t i = 0; i < hw && i < SP_HOST_PROCS; i++) {
        uint64_t id = atomic_load(&s->procs[i].holder);
        if (id == 0) {
            continue;
        }
        out->processes++;
        out->in_use += (int)atomic_load(&s->procs[i].in_use);
        out->waiting += atomic_load(&s->procs[i].ticket) != 0;
        out->connecting += (int)atomic_load(&s->procs[i].connect_units);
    }
    out->reclaimed = atomic_load(&s->reclaimed);
    out->max_connecting = (int)atomic_load(&s->max_connecting);
    out->health_gen = atomic_load(&s->health.gen) / 2;
    out->health_state = out->health_gen ? (int)atomic_load(&s->health.state) : -1;
    out->probes_led = atomic_load(&s->probes_led);
    out->probes_skipped = atomic_load(&s->probes_skipped);
}

void
sp_host_stats_of(const sp_host *h, sp_host_stats *out)
{
    fill_stats(h->shm, out);
}

int
sp_host_view(const char *name, sp_host_stats *out, char *err, size_t errlen)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) {
        say(err, errlen, "no host budget: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (check_owner(fd, &st, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    if ((size_t)st.st_size != sizeof(host_shm)) {
        close(fd);
        say(err, errlen, "%s: made by another layout version of redis-safepool",
            "shared segment");
        return -1;
    }
    host_shm *s = mmap(NULL, sizeof(host_shm), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (s == MAP_FAILED) {
        say(err, errlen, "cannot map the shared segment: %s", strerror(errno));
        return -1;
    }
    int rc = check_made(s, err, errlen);
    if (rc == 0) {
        fill_stats(s, out);
    }
    munmap(s, sizeof(host_shm));
    return rc;
}

#else /* not Linux: process scope only */

sp_host *
sp_host_attach(const char *name, int max, int *created, char *err, size_t errlen)
{
    (void)name;
    (void)max;
    *created = 0;
    if (err && errlen) {
        snprintf(err, errlen, "host scope needs Linux");
    }
    return NULL;
}

void sp_host_detach(sp_host *h) { (void)h; }
void sp_host_after_fork_child(sp_host *h) { (void)h; }
int sp_host_max(const sp_host *h) { (void)h; return 0; }
void sp_host_set_max(sp_host *h, int max) { (void)h; (void)max; }
int sp_host_claim(sp_host *h, int queue) { (void)h; (void)queue; return 0; }
void sp_host_release(sp_host *h, int n) { (void)h; (void)n; }
void sp_host_unqueue(sp_host *h) { (void)h; }
int sp_host_others_waiting(const sp_host *h) { (void)h; return 0; }
int sp_host_over_share(const sp_host *h) { (void)h; return 0; }
int sp_host_held(const sp_host *h) { (void)h; return 0; }
void sp_host_publish(sp_host *h, int in_use, int total) { (void)h; (void)in_use; (void)total; }
void sp_host_wake(sp_host *h) { (void)h; }
uint32_t sp_host_seq(const sp_host *h) { (void)h; return 0; }
void sp_host_sleep(sp_host *h, uint32_t seq, double seconds) { (void)h; (void)seq; (void)seconds; }
int sp_host_reclaim(sp_host *h, int force) { (void)h; (void)force; return 0; }
void sp_host_stats_of(const sp_host *h, sp_host_stats *out) { (void)h; memset(out, 0, sizeof(*out)); }
int sp_host_max_connecting(const sp_host *h) { (void)h; return 0; }
void sp_host_set_max_connecting(sp_host *h, int n) { (void)h; (void)n; }
int sp_host_connecting(const sp_host *h) { (void)h; return 0; }
int sp_host_connect_claim(sp_host *h) { (void)h; return 0; }
void sp_host_connect_settle(sp_host *h, int connecting) { (void)h; (void)connecting; }
int sp_host_connect_units(const sp_host *h) { (void)h; return 0; }
int sp_host_health_publish(sp_host *h, const sp_host_health *in) { (void)h; (void)in; return 0; }
void sp_host_health_retry(sp_host *h) { (void)h; }
int sp_host_health_changed(const sp_host *h) { (void)h; return 0; }
int sp_host_health_read(sp_host *h, sp_host_health *out) { (void)h; (void)out; return 0; }
void sp_host_set_adopting(sp_host *h, int on) { (void)h; (void)on; }
int sp_host_adopting(const sp_host *h) { (void)h; return 0; }
int
sp_host_probe_lease(sp_host *h, double seconds, double *wait_s)
{
    (void)h;
    (void)seconds;
    (void)wait_s;
    return 1;
}
void sp_host_probe_lease_extend(sp_host *h, double seconds) { (void)h; (void)seconds; }
void sp_host_probe_lease_drop(sp_host *h) { (void)h; }
int sp_host_probe_lease_held(const sp_host *h) { (void)h; return 0; }

int
sp_host_view(const char *name, sp_host_stats *out, char *err, size_t errlen)
{
    (void)name;
    memset(out, 0, sizeof(*out));
    if (err && errlen) {
        snprintf(err, errlen, "host scope needs Linux");
    }
    return -1;
}

size_t sp_host_segment_size(void) { return 0; }
uint64_t sp_host_self(void) { return 0; }
int sp_host_alive(uint64_t id) { (void)id; return 1; }

#endif
