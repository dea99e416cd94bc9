/* host_budget.h -- one endpoint's connection budget shared by every process of a user on a host. */
#ifndef SP_HOST_BUDGET_H
#define SP_HOST_BUDGET_H

#include <stddef.h>
#include <stdint.h>

/* Pure C, Linux only (elsewhere sp_host_attach() fails with a message and
 * the endpoint keeps its process budget).
 *
 * The shared segment (POSIX shared memory, mode 0600, named by the binding
 * from a digest of the user id and the endpoint key) holds one word per
 * slot naming its holder, and one entry per attached process. Everything
 * in it is claimed and given back with atomic operations only: there is no
 * shared lock a dead process could leave held. A holder is a process
 * identity (pid and start time from /proc, so a new process with an old
 * pid is never taken for the old one). A dead holder's slots and entry are
 * taken back by whoever scans next (sp_host_reclaim(): the checker of any
 * process, and every process waiting for a slot).
 *
 * Locking: the process-local handle (sp_host) is guarded by the lock of
 * the endpoint it belongs to. sp_host_claim(), sp_host_release(),
 * sp_host_unqueue(), sp_host_publish(), sp_host_others_waiting() and
 * sp_host_over_share() are
 * atomic operations on the segment, fit to call under that leaf lock (the
 * release wakes sleepers with one futex call, as pthread_cond_signal does).
 * sp_host_attach(), sp_host_detach(), sp_host_reclaim(), sp_host_sleep()
 * and sp_host_view() do system calls and file I/O: never under a lock. */

#define SP_HOST_SLOTS 4096     /* the largest host budget */
#define SP_HOST_PROCS 512      /* processes attached at once with a place in line */
/* How long an idle connection stays unused while another process is in
 * line before the checker gives its slot back (seconds, sp_now() clock). */
#define SP_HOST_UNUSED_S 0.1

typedef struct sp_host sp_host;

/* Attaches to the segment `name` ("/..."), creating it with budget `max`
 * if it does not exist. *created tells whether this call made it. NULL
 * when it cannot be used (not Linux, foreign owner, bad mode, another
 * layout version, corrupt, out of memory): `err` then says why. */
sp_host *sp_host_attach(const char *name, int max, int *created, char *err, size_t errlen);
/* Gives back every slot the process holds through `h`, leaves its entry
 * and unmaps the segment. */
void sp_host_detach(sp_host *h);
/* Fork, in the child: the parent's slots and place in line are the
 * parent's; the child starts with none and takes an entry of its own. */
void sp_host_after_fork_child(sp_host *h);

/* The host-wide budget. */
int sp_host_max(const sp_host *h);
void sp_host_set_max(sp_host *h, int max);

/* One slot for this process, in turn: when other processes wait, only the
 * one first in line claims. `queue`: on failure, take a place in line (if
 * not in line already). Returns 1 when a slot was claimed. */
int sp_host_claim(sp_host *h, int queue);
/* Gives back `n` slots this process holds and wakes the sleepers. */
void sp_host_release(sp_host *h, int n);
/* Leaves the line (nobody in this process waits for a slot any more). */
void sp_host_unqueue(sp_host *h);
/* Whether another process is in line for a slot. */
int sp_host_others_waiting(const sp_host *h);
/* Whether this process should give a slot back to the host: another
 * process is in line and this one holds more than its fair share (the
 * host budget over the processes attached to the segment). At or
 * under its share a process keeps its connections, so contended slots do
 * not churn through a connect per checkout; over it, every connection
 * coming back goes to the line. */
int sp_host_over_share(const sp_host *h);
/* Slots held by this process through `h`. */
int sp_host_held(const sp_host *h);
/* Publishes this process's in-use and total counts (for the host view). */
void sp_host_publish(sp_host *h, int in_use, int total);
/* Wakes every sleeper on the host (something a waiter looks at changed). */
void sp_host_wake(sp_host *h);

/* The wake-up sequence a sleeper reads before it looks at its waiter. */
uint32_t sp_host_seq(const sp_host *h);
/* Sleeps until the sequence moves past `seq` or `seconds` pass. */
void sp_host_sleep(sp_host *h, uint32_t seq, double seconds);

/* Takes back the slots and entries of dead holders (at most one scan per
 * 100 ms on the host unless `force`). Returns the slots taken back. */
int sp_host_reclaim(sp_host *h, int force);

/* ---- shared health (host_health.c drives the endpoint with it) ----
 *
 * One record per segment: the endpoint state the last process to learn
 * something published, with a generation that grows with every write.
 * Codes and fixed texts only: nothing a server sent (no secret) is ever
 * stored there. */

enum {
    SP_HOST_REASON_OTHER = 0,
    SP_HOST_REASON_REFUSED,     /* connection refused: nothing listens */
    SP_HOST_REASON_DOWN,        /* connect or reply failed */
    SP_HOST_REASON_LOADING,     /* -LOADING */
    SP_HOST_REASON_SILENT,      /* accepts and answers nobody */
    SP_HOST_REASON_MAXCLIENTS,  /* max number of clients reached */
    SP_HOST_REASON_BACK,        /* a probe was answered */
    SP_HOST_REASONS
};

typedef struct {
    uint64_t gen;               /* filled by sp_host_health_read() */
    uint32_t state;             /* sp_state */
    uint32_t reason;            /* SP_HOST_REASON_* */
    double since;               /* wall clock */
    uint64_t by;                /* identity of the publisher */
    int mine;                   /* published by this process */
    char run_id[41];            /* "" when unknown */
} sp_host_health;

/* Publishes `in` (atomics; under the endpoint lock). 0 when another
 * process was writing at that instant: kept, and sp_host_health_retry()
 * (the checker's tick) publishes it unless newer news came meanwhile. */
int sp_host_health_publish(sp_host *h, const sp_host_health *in);
void sp_host_health_retry(sp_host *h);
/* Whether a record newer than the last one seen here is published (one
 * atomic load: the fast path of every acquire in host scope). */
int sp_host_health_changed(const sp_host *h);
/* Copies the record into `out` if it is newer than the last one seen
 * here and stable: 1, and it counts as seen. Never waits. */
int sp_host_health_read(sp_host *h, sp_host_health *out);
/* While set, a state change is the host's being taken in, not news. */
void sp_host_set_adopting(sp_host *h, int on);
int sp_host_adopting(const sp_host *h);

/* The probe lease: while the endpoint is not ready, one process on the
 * host probes. Claims (or renews) it for `seconds`: 1 when this process
 * may probe now; 0 while another live process holds it (*wait_s: until it
 * ends). A holder that dies loses it when it ends, or sooner once a
 * reclaim scan frees its entry. */
int sp_host_probe_lease(sp_host *h, double seconds, double *wait_s);
/* The holder's next probe is `seconds` away: keep the lease till then. */
void sp_host_probe_lease_extend(sp_host *h, double seconds);
/* Gives the lease up (ready again, detach). */
void sp_host_probe_lease_drop(sp_host *h);
int sp_host_probe_lease_held(const sp_host *h);

/* ---- recovering: one max_connecting for the host ----
 * Each process counts the connects it makes under the host's limit in its
 * entry (reclaimed with the entry when it dies). */
int sp_host_max_connecting(const sp_host *h);
void sp_host_set_max_connecting(sp_host *h, int n);
/* Connects counted on the host now. */
int sp_host_connecting(const sp_host *h);
/* One connect more under the host's limit: 1 when claimed. */
int sp_host_connect_claim(sp_host *h);
/* Gives back the units held above `connecting` (this process's connects
 * in flight) and wakes the sleepers when any went back. */
void sp_host_connect_settle(sp_host *h, int connecting);
int sp_host_connect_units(const sp_host *h);

/* The host view of a segment, read-only from any process. */
typedef struct {
    int max_connections;
    int total;                /* slots held */
    int in_use;               /* published by the holders */
    int processes;            /* live processes attached */
    int waiting;              /* processes in line */
    uint64_t reclaimed;       /* slots taken back from dead holders */
    int connecting;           /* recovering: connects counted on the host */
    int max_connecting;       /* the host's limit on them */
    uint64_t health_gen;      /* writes of the shared health record */
    int health_state;         /* sp_state it holds (-1: none yet) */
    uint64_t probes_led;      /* probes made under the probe lease */
    uint64_t probes_skipped;  /* probes skipped: another process held it */
} sp_host_stats;

void sp_host_stats_of(const sp_host *h, sp_host_stats *out);
/* Opens `name` read-only and fills `out`: 0, or -1 with `err` set. */
int sp_host_view(const char *name, sp_host_stats *out, char *err, size_t errlen);

/* The size of a segment of this layout version. */
size_t sp_host_segment_size(void);

/* This process's identity as a holder (0 if /proc cannot tell). */
uint64_t sp_host_self(void);
/* Whether the holder `id` is a live process. */
int sp_host_alive(uint64_t id);

#endif
