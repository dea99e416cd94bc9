/* events.h -- a bounded ring of endpoint state transitions, drained by a Python logging thread. */
#ifndef SP_EVENTS_H
#define SP_EVENTS_H

typedef struct {
    double when;              /* wall clock */
    char endpoint[128];
    char old_state[16];
    char new_state[16];
    char reason[200];
} sp_event;

/* Records one transition; the oldest is dropped when the ring is full.
 * `ring.lock` is a leaf below endpoint locks: safe to call with one held. */
void sp_events_push(const char *endpoint, const char *old_state, const char *new_state,
                    const char *reason);
/* Waits up to `timeout` seconds (call without the GIL) for events and
 * copies up to `max` of them out. Returns how many; *dropped tells how many
 * were lost to overflow since the last call. */
int sp_events_wait(sp_event *out, int max, double timeout, unsigned long *dropped);
/* Wakes every sp_events_wait() (interpreter exit). */
void sp_events_interrupt(void);
void sp_events_after_fork_child(void);

#endif
