/* formers.c -- former endpoints: after reset() moves a pool, the endpoints its checkouts still draw from. */
#include "module_state.h"
#include "formers.h"

#include "registry.h"

#include "dispose.h"
#include "pool_async.h"

/* reset() with connection settings that name another endpoint moves the pool
 * there, but connections it checked out from the old one are still out, and
 * get_connection() calls that started there are still running: the old
 * endpoint is kept (with the pool's registry reference) until neither is
 * left, so those records stay valid and release() takes them back there. */
/* Whether `pool` has a connection checked out from `ep`. */
static int
checked_out_by(sp_conn *rec, void *pool)
{
    return rec->state == SP_CONN_INUSE && rec->owner == pool;
}

static int
has_checkouts_on(sp_endpoint *ep, PoolCore *pool)
{
    return sp_endpoint_walk(ep, checked_out_by, pool);
}

/* Lets go of former endpoints nothing of this pool uses any more. */
void
sp_py_pool_prune_formers(PoolCore *self)
{
    if (self->calls_in_flight > 0) {
        return;  /* a running checkout may still be drawing from one */
    }
    int kept = 0;
    for (int i = 0; i < self->n_formers; i++) {
        sp_endpoint *ep = self->formers[i];
        if (has_checkouts_on(ep, self)) {
            self->formers[kept++] = ep;
        }
        else {
            sp_registry_unbind(ep);
        }
    }
    self->n_formers = kept;
    if (kept == 0) {
        PyMem_RawFree(self->formers);
        self->formers = NULL;
    }
}

/* Keeps the current binding as a former endpoint; 0, or -1 out of memory. */
int
sp_py_pool_retire_binding(PoolCore *self)
{
    sp_endpoint **grown = PyMem_RawRealloc(self->formers,
                                           sizeof(*grown) * (size_t)(self->n_formers + 1));
    if (grown == NULL) {
        return -1;
    }
    self->formers = grown;
    sp_deferred after = {0};
    /* asyncio waiters name this endpoint in the pool's own list: settle them
     * here (thread waiters carry their endpoint and keep waiting). */
    sp_py_pool_free_async_waiters(self);
    if (self->flavor_counted) {
        sp_endpoint_pool_removed(self->ep, self->flavor, &after);
        self->flavor_counted = 0;
    }
    sp_py_pool_drop_loop_flavors(self, &after);
    sp_py_finish_deferred(self->st, &after);
    for (int i = 0; i < self->n_formers; i++) {
        if (self->formers[i] == self->ep) {
            sp_registry_unbind(self->ep);  /* listed once, with one reference */
            self->ep = NULL;
            return 0;
        }
    }
    self->formers[self->n_formers++] = self->ep;
    self->ep = NULL;
    return 0;
}
