/* dispose.h -- deferred work of endpoint calls, done with the GIL after the lock: closing dropped connections, waking asyncio waiters. */
#ifndef SP_DISPOSE_H
#define SP_DISPOSE_H

#include "module_state.h"

/* Finishes what an endpoint call left to do: disposes of buried records
 * (disconnect + DECREF, with the GIL, after the lock is released) and wakes
 * async waiters. Keeps any pending exception. */
void sp_py_finish_deferred(sp_modstate *st, sp_deferred *after);

/* Drops a checked-out record that cannot be used and closes its connection. */
void sp_py_pool_bury_record(PoolCore *self, sp_conn *rec);

#endif /* SP_DISPOSE_H */
