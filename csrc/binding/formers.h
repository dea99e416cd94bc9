/* formers.h -- former endpoints: after reset() moves a pool, the endpoints its checkouts still draw from. */
#ifndef SP_FORMERS_H
#define SP_FORMERS_H

#include "module_state.h"

/* Lets go of former endpoints nothing of this pool uses any more. */
void sp_py_pool_prune_formers(PoolCore *self);
/* Keeps the current binding as a former endpoint; 0, or -1 out of memory. */
int sp_py_pool_retire_binding(PoolCore *self);

#endif /* SP_FORMERS_H */
