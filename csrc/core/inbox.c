/* inbox.c -- served asyncio waiters of one event loop, collected in one pass per wake-up. */
#include <stddef.h>

#include "endpoint.h"
#include "inbox.h"

int
sp_inbox_init(sp_inbox *ib, int notify_fd)
{
    ib->head = ib->tail = NULL;
    ib->signaled = 0;
    ib->notify_fd = notify_fd;
    return pthread_mutex_init(&ib->lock, NULL) == 0 ? 0 : -1;
}

void
sp_inbox_destroy(sp_inbox *ib)
{
    pthread_mutex_destroy(&ib->lock);
}

static void
unlink_locked(sp_inbox *ib, sp_waiter *w)
{
    if (w->served_prev) {
        w->served_prev->served_next = w->served_next;
    }
    else {
        ib->head = w->served_next;
    }
    if (w->served_next) {
        w->served_next->served_prev = w->served_prev;
    }
    else {
        ib->tail = w->served_prev;
    }
    w->served_prev = w->served_next = NULL;
    w->in_inbox = 0;
}

int
sp_inbox_push(sp_inbox *ib, sp_waiter *w)
{
    pthread_mutex_lock(&ib->lock);
    w->served_next = NULL;
    w->served_prev = ib->tail;
    if (ib->tail) {
        ib->tail->served_next = w;
    }
    else {
        ib->head = w;
    }
    ib->tail = w;
    w->in_inbox = 1;
    int wake = !ib->signaled;
    ib->signaled = 1;
    pthread_mutex_unlock(&ib->lock);
    return wake;
}

sp_waiter *
sp_inbox_pop(sp_inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    sp_waiter *w = ib->head;
    if (w) {
        unlink_locked(ib, w);
    }
    else {
        ib->signaled = 0;
    }
    pthread_mutex_unlock(&ib->lock);
    return w;
}

void
sp_inbox_unpop(sp_inbox *ib, sp_waiter *w)
{
    pthread_mutex_lock(&ib->lock);
    w->served_prev = NULL;
    w->served_next = ib->head;
    if (ib->head) {
        ib->head->served_prev = w;
    }
    else {
        ib->tail = w;
    }
    ib->head = w;
    w->in_inbox = 1;
    ib->signaled = 1;
    pthread_mutex_unlock(&ib->lock);
}

void
sp_inbox_hold(sp_inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    ib->signaled = 1;
    pthread_mutex_unlock(&ib->lock);
}

int
sp_inbox_remove(sp_inbox *ib, sp_waiter *w)
{
    pthread_mutex_lock(&ib->lock);
    int listed = w->in_inbox;
    if (listed) {
        unlink_locked(ib, w);
    }
    pthread_mutex_unlock(&ib->lock);
    return listed;
}
