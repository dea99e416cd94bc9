/* registry.c -- the process-wide table of endpoints, one per Redis server. */
#include <stdlib.h>
#include <string.h>

#include "registry.h"

/* Guards the list and every endpoint's `refs`/`reg_next`. Never taken while
 * holding an endpoint lock (endpoint locks are leaves below this one). */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static sp_endpoint *registry_head;
/* Endpoints pinned by configure() hold one extra reference each. */

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static sp_endpoint *
find_locked(const char *key)
{
    for (sp_endpoint *ep = registry_head; ep; ep = ep->reg_next) {
        if (strcmp(ep->key, key) == 0) {
            return ep;
        }
    }
    return NULL;
}

static sp_endpoint *
create_locked(const char *key, const char *label, int max_connections, const sp_address *addr)
{
    sp_endpoint *ep = sp_endpoint_new(key, label, max_connections);
    if (ep == NULL) {
        return NULL;
    }
    if (addr) {
        ep->host = dup_or_null(addr->host);
        ep->port = addr->port;
        ep->unix_path = dup_or_null(addr->unix_path);
        ep->username = dup_or_null(addr->username);
        ep->password = dup_or_null(addr->password);
        ep->tls = addr->tls;
    }
    ep->reg_next = registry_head;
    registry_head = ep;
    return ep;
}

sp_endpoint *
sp_registry_bind(const char *key, const char *label, int max_connections,
                 const sp_address *addr, int *created)
{
    pthread_mutex_lock(&registry_lock);
    sp_endpoint *ep = find_locked(key);
    *created = ep == NULL;
    if (ep == NULL) {
        ep = create_locked(key, label, max_connections, addr);
    }
    if (ep) {
        ep->refs++;
    }
    pthread_mutex_unlock(&registry_lock);
    return ep;
}

void
sp_registry_ref(sp_endpoint *ep)
{
    pthread_mutex_lock(&registry_lock);
    ep->refs++;
    pthread_mutex_unlock(&registry_lock);
}

void
sp_registry_unbind(sp_endpoint *ep)
{
    pthread_mutex_lock(&registry_lock);
    if (--ep->refs > 0) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    sp_endpoint **link = &registry_head;
    while (*link != ep) {
        link = &(*link)->reg_next;
    }
    *link = ep->reg_next;
    pthread_mutex_unlock(&registry_lock);
    sp_endpoint_free(ep);
}

sp_endpoint *
sp_registry_configure(const char *key, const char *label, int max_connections,
                      const sp_address *addr, sp_deferred *after)
{
    pthread_mutex_lock(&registry_lock);
    sp_endpoint *ep = find_locked(key);
    if (ep == NULL) {
        ep = create_locked(key, label, max_connections, addr);
        if (ep) {
            ep->refs += 2;  /* pinned (lives until the process ends) + the call's */
        }
    }
    else {
        ep->refs++;      /* held across set_max below */
    }
    pthread_mutex_unlock(&registry_lock);
    if (ep == NULL) {
        return NULL;
    }
    sp_endpoint_set_max(ep, max_connections, after);
    return ep;
}

void
sp_registry_foreach(int (*fn)(sp_endpoint *ep, void *arg), void *arg)
{
    /* Snapshot with references so fn may block or unbind. */
    pthread_mutex_lock(&registry_lock);
    int n = 0;
    for (sp_endpoint *ep = registry_head; ep; ep = ep->reg_next) {
        n++;
    }
    sp_endpoint **eps = n ? malloc(sizeof(*eps) * (size_t)n) : NULL;
    if (n && eps == NULL) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    int i = 0;
    for (sp_endpoint *ep = registry_head; ep; ep = ep->reg_next) {
        ep->refs++;
        eps[i++] = ep;
    }
    pthread_mutex_unlock(&registry_lock);
    int stop = 0;
    for (i = 0; i < n; i++) {
        if (!stop) {
            stop = fn(eps[i], arg);
        }
        sp_registry_unbind(eps[i]);
    }
    free(eps);
}

int
sp_registry_count(void)
{
    pthread_mutex_lock(&registry_lock);
    int n = 0;
    for (sp_endpoint *ep = registry_head; ep; ep = ep->reg_next) {
        n++;
    }
    pthread_mutex_unlock(&registry_lock);
    return n;
}

void
sp_registry_foreach_locked(int (*fn)(sp_endpoint *ep, void *arg), void *arg)
{
    for (sp_endpoint *ep = registry_head; ep; ep = ep->reg_next) {
        if (fn(ep, arg)) {
            return;
        }
    }
}

void
sp_registry_lock_for_fork(void)
{
    pthread_mutex_lock(&registry_lock);
}

void
sp_registry_unlock_after_fork(void)
{
    pthread_mutex_unlock(&registry_lock);
}

void
sp_registry_after_fork_child(void)
{
    pthread_mutex_init(&registry_lock, NULL);
    for (sp_endpoint *ep = registry_head; ep; ep = ep->reg_next) {
        sp_endpoint_after_fork_child(ep);
    }
}
