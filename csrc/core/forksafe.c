/* forksafe.c -- pthread_atfork handlers that leave the child a clean, unlocked core. */
#include <pthread.h>
#include <stdatomic.h>

#include "checker.h"
#include "events.h"
#include "forksafe.h"
#include "net.h"
#include "registry.h"

static _Atomic uint64_t fork_epoch = 1;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_rc;

uint64_t
sp_fork_epoch(void)
{
    return atomic_load_explicit(&fork_epoch, memory_order_relaxed);
}

static int
lock_endpoint(sp_endpoint *ep, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ep->lock);
    return 0;
}

static int
unlock_endpoint(sp_endpoint *ep, void *arg)
{
    (void)arg;
    pthread_mutex_unlock(&ep->lock);
    return 0;
}

/* Lock order: checker, registry, every endpoint, then the list of open
 * probe sockets. Endpoint locks and that list's are held only for a few
 * instructions and never while waiting on anything, so this cannot
 * deadlock; it makes the child's copy consistent. */
static void
prepare(void)
{
    sp_checker_lock_for_fork();
    sp_registry_lock_for_fork();
    sp_registry_foreach_locked(lock_endpoint, NULL);
    sp_net_lock_for_fork();
}

static void
parent(void)
{
    sp_net_unlock_after_fork();
    sp_registry_foreach_locked(unlock_endpoint, NULL);
    sp_registry_unlock_after_fork();
    sp_checker_unlock_after_fork();
}

static void
child(void)
{
    /* Only the forking thread exists here: re-initialise instead of
     * unlocking, and forget what belonged to threads that are gone. */
    sp_net_after_fork_child();
    sp_registry_after_fork_child();
    sp_checker_after_fork_child();
    sp_events_after_fork_child();
    atomic_fetch_add(&fork_epoch, 1);
}

static void
install(void)
{
    install_rc = pthread_atfork(prepare, parent, child);
}

int
sp_forksafe_install(void)
{
    pthread_once(&install_once, install);
    return install_rc;
}
