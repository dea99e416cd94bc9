/* registry.h -- the process-wide table of endpoints, one per Redis server. */
#ifndef SP_REGISTRY_H
#define SP_REGISTRY_H

#include "endpoint.h"

/* Where the health checker can reach the server (copied at creation). */
typedef struct {
    const char *host;
    int port;
    const char *unix_path;
    const char *username;
    const char *password;
    int tls;
} sp_address;

/* Finds or creates the endpoint for `key` and takes a reference.
 * *created tells whether this call made it (its budget is then `max`);
 * otherwise the existing budget stays. Returns NULL when out of memory. */
sp_endpoint *sp_registry_bind(const char *key, const char *label, int max_connections,
                              const sp_address *addr, int *created);
/* Takes one more reference on an endpoint the caller holds one on. */
void sp_registry_ref(sp_endpoint *ep);
/* Drops a reference; the last one frees the endpoint. */
void sp_registry_unbind(sp_endpoint *ep);
/* Sets an endpoint's budget, creating and pinning it when it does not exist
 * yet, so that pools made later use it. */
sp_endpoint *sp_registry_configure(const char *key, const char *label, int max_connections,
                                   const sp_address *addr, sp_deferred *after);

/* Calls fn for every endpoint with a reference held (safe to drop the
 * registry lock inside fn). Stops early when fn returns nonzero. */
void sp_registry_foreach(int (*fn)(sp_endpoint *ep, void *arg), void *arg);
int sp_registry_count(void);

/* Like sp_registry_foreach, for the fork handlers: the registry lock is
 * already held and no references are taken. */
void sp_registry_foreach_locked(int (*fn)(sp_endpoint *ep, void *arg), void *arg);

/* Fork: called in the child by the pthread_atfork handler. */
void sp_registry_after_fork_child(void);
void sp_registry_lock_for_fork(void);
void sp_registry_unlock_after_fork(void);

#endif
