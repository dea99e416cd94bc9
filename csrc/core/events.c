/* events.c -- a bounded ring of endpoint state transitions, drained by a Python logging thread. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "events.h"

#define RING_SIZE 256

/* Everything in `ring` is guarded by ring.lock, a leaf lock (it may be
 * taken while an endpoint lock is held, never the other way round). */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int cond_ready;
    sp_event items[RING_SIZE];
    unsigned long head;       /* next to read */
    unsigned long tail;       /* next to write */
    unsigned long dropped;
    unsigned long interrupts;
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void
ensure_cond_locked(void)
{
    if (!ring.cond_ready) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&ring.cond, &attr);
        pthread_condattr_destroy(&attr);
        ring.cond_ready = 1;
    }
}

void
sp_events_push(const char *endpoint, const char *old_state, const char *new_state,
               const char *reason)
{
    pthread_mutex_lock(&ring.lock);
    ensure_cond_locked();
    if (ring.tail - ring.head == RING_SIZE) {
        ring.head++;
        ring.dropped++;
    }
    sp_event *e = &ring.items[ring.tail % RING_SIZE];
    e->when = sp_wall();
    snprintf(e->endpoint, sizeof(e->endpoint), "%s", endpoint ? endpoint : "");
    snprintf(e->old_state, sizeof(e->old_state), "%s", old_state ? old_state : "");
    snprintf(e->new_state, sizeof(e->new_state), "%s", new_state ? new_state : "");
    snprintf(e->reason, sizeof(e->reason), "%s", reason ? reason : "");
    ring.tail++;
    pthread_cond_broadcast(&ring.cond);
    pthread_mutex_unlock(&ring.lock);
}

int
sp_events_wait(sp_event *out, int max, double timeout, unsigned long *dropped)
{
    pthread_mutex_lock(&ring.lock);
    ensure_cond_locked();
    unsigned long interrupts = ring.interrupts;
    struct timespec ts = sp_timespec(sp_now() + (timeout > 0 ? timeout : 0));
    while (ring.head == ring.tail && ring.interrupts == interrupts && timeout > 0) {
        if (pthread_cond_timedwait(&ring.cond, &ring.lock, &ts) != 0) {
            break;
        }
    }
    int n = 0;
    while (ring.head != ring.tail && n < max) {
        out[n++] = ring.items[ring.head % RING_SIZE];
        ring.head++;
    }
    *dropped = ring.dropped;
    ring.dropped = 0;
    pthread_mutex_unlock(&ring.lock);
    return n;
}

void
sp_events_interrupt(void)
{
    pthread_mutex_lock(&ring.lock);
    ensure_cond_locked();
    ring.interrupts++;
    pthread_cond_broadcast(&ring.cond);
    pthread_mutex_unlock(&ring.lock);
}

void
sp_events_after_fork_child(void)
{
    pthread_mutex_init(&ring.lock, NULL);
    if (ring.cond_ready) {
        ring.cond_ready = 0;
        ensure_cond_locked();
    }
}
