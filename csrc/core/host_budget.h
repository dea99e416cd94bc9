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
 * sp_host_unqueue(), sp_host_publish() and sp_host_others_waiting() are
 * atomic operations on the segment, fit to call under that leaf lock (the
 * release wakes sleepers with one futex call, as pthread_cond_signal does).
 * sp_host_attach(), sp_host_detach(), sp_host_reclaim(), sp_host_sleep()
 * and sp_host_view() do system calls and file I/O: never under a lock. */

#define SP_HOST_SLOTS 4096     /* the largest host budget */
#define SP_HOST_PROCS 512      /* processes attached at once with a place in line */

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

/* The host view of a segment, read-only from any process. */
typedef struct {
    int max_connections;
    int total;                /* slots held */
    int in_use;               /* published by the holders */
    int processes;            /* live processes attached */
    int waiting;              /* processes in line */
    uint64_t reclaimed;       /* slots taken back from dead holders */
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
