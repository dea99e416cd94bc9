/* inbox.h -- served asyncio waiters of one event loop, collected in one pass per wake-up. */
#ifndef SP_INBOX_H
#define SP_INBOX_H

#include <pthread.h>

struct sp_waiter;

/* Pure C. Whoever serves an async waiter (a release in any thread, the
 * checker) appends it here under the endpoint lock; the loop takes the
 * served waiters out oldest first. Only the first push after the loop
 * emptied the inbox asks for a wake-up byte, so a hand-over costs the
 * same however many tasks wait, and a burst of hand-overs costs one byte.
 *
 * `lock` is a leaf lock: it may be taken with an endpoint lock held
 * (ep->lock, then inbox lock), never the other way round, and nothing
 * else is ever taken under it. It guards `head`, `tail`, `signaled` and
 * the served_prev/served_next/in_inbox fields of the waiters listed. */
typedef struct sp_inbox {
    pthread_mutex_t lock;
    struct sp_waiter *head;   /* oldest served, not yet taken */
    struct sp_waiter *tail;
    int signaled;             /* a wake-up was asked for since the inbox was last emptied */
    int notify_fd;            /* write end of the loop's pipe; immutable */
} sp_inbox;

int sp_inbox_init(sp_inbox *ib, int notify_fd);
void sp_inbox_destroy(sp_inbox *ib);
/* Appends a served waiter (not listed yet). Returns 1 when the caller must
 * write a wake-up byte to notify_fd (after dropping its locks), else 0. */
int sp_inbox_push(sp_inbox *ib, struct sp_waiter *w);
/* Takes the oldest served waiter out, or returns NULL and re-arms the
 * wake-up once the inbox is empty. */
struct sp_waiter *sp_inbox_pop(sp_inbox *ib);
/* Puts a waiter sp_inbox_pop() took back in front, to be taken first again
 * (its collector failed to hand it on), and marks the inbox signaled: the
 * caller writes a wake-up byte (the one that brought the reader here has been
 * read), so the loop collects again. */
void sp_inbox_unpop(sp_inbox *ib, struct sp_waiter *w);
/* Marks the inbox signaled without a wake-up byte: no push asks for one
 * until sp_inbox_pop() empties the inbox and re-arms it (a release on the
 * inbox's own loop collects what it hands over itself). */
void sp_inbox_hold(sp_inbox *ib);
/* Takes `w` out if it is listed; returns 1 if it was. */
int sp_inbox_remove(sp_inbox *ib, struct sp_waiter *w);

#endif
