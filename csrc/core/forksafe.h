/* forksafe.h -- pthread_atfork handlers that leave the child a clean, unlocked core. */
#ifndef SP_FORKSAFE_H
#define SP_FORKSAFE_H

#include <stdint.h>

/* Bumped in every child after fork(). Pools remember the epoch they last
 * saw; a different one means "the records are gone, start afresh". */
uint64_t sp_fork_epoch(void);

/* Installs the handlers once per process (idempotent, thread-safe). */
int sp_forksafe_install(void);

#endif
