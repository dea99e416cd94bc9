/* Test helpers shared by the C-core suites: fake payloads, records, graveyards, invariants. */
#ifndef SP_CORE_UTIL_H
#define SP_CORE_UTIL_H

#include <stdint.h>
#include <sys/types.h>

#include "endpoint.h"

/* A connection payload as the core sees it: opaque. `fd` (or -1) is closed
   when the payload is disposed of. */
typedef struct {
    int id;
    int fd;
} tp_payload;

/* A malloc'd payload with a fresh id. */
tp_payload *tp_payload_new(int fd);

/* Disposes of after->graveyard like the binding does: closes the payload's
   fd, frees payload and record, and gives a still-counted record's slot
   back (sp_endpoint_closed), which may bury more: loops until empty.
   Returns how many records were disposed of. */
int tp_after_done(sp_deferred *after);

/* Takes ep->graveyard under the lock and disposes of it. Returns the count. */
int tp_collect(sp_endpoint *ep);

/* Number of records on a graveyard list. */
int tp_list_len(const sp_conn *list);

/* 1 when `payload` is on the list. */
int tp_list_has(const sp_conn *list, const void *payload);

/* A zeroed thread waiter (notify_fd = -1, no condvar yet). */
void tp_waiter_init(sp_waiter *w);

/* sp_endpoint_wait() as the binding calls it: a settled waiter is done at
   once (sp_endpoint_wait_done(): a pause's relay wakes the next). */
sp_wait_result tp_wait(sp_endpoint *ep, sp_waiter *w, double deadline, double slice);

/* Acquires a slot (CHECKs SP_ACQ_SLOT) and turns it into a connection of
   `pool`/`flavor` with a new malloc'd record. Returns the payload or NULL. */
tp_payload *tp_connect(sp_endpoint *ep, void *pool, uint32_t flavor, int fd);

/* Checks total == idle + in_use + connecting + closing, the idle stack length, the
   map size, the queue length and total <= max (unless allow_over). */
#define tp_check_counts(ep, allow_over) \
    tp_check_counts_at((ep), (allow_over), __FILE__, __LINE__)
void tp_check_counts_at(sp_endpoint *ep, int allow_over, const char *file,
                        int line);

/* Polls cond_fn(ep) under ep->lock every 2 ms until it is true or
   `timeout` seconds passed. Returns 1 when it became true. */
int tp_wait_locked(sp_endpoint *ep, int (*cond_fn)(sp_endpoint *, void *),
                   void *arg, double timeout);

/* Runs fn(name, fd) in a forked child that exits 0 when it returned 0 with
   no CHECK failed; *rfd reads what the child writes to fd. */
pid_t tp_spawn(int (*fn)(const char *name, int fd), const char *name, int *rfd);

/* Reaps `pid`: 1 when it exited with status 0. */
int tp_exited_ok(pid_t pid);

/* Sleeps for ms milliseconds. */
void tp_sleep_ms(int ms);

/* 1 when the environment asks for tests that need a core fix
   (SP_DRIVER_PENDING=1); otherwise prints why the check is skipped. */
int tp_pending(const char *why);

#endif /* SP_CORE_UTIL_H */
