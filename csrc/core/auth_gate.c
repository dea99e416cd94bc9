/* auth_gate.c -- rejected credentials as an endpoint condition: see auth_gate.h. */
#include "auth_gate.h"

#include <stddef.h>

#include "checker.h"

static sp_flavor_use *
find_locked(sp_endpoint *ep, uint32_t flavor)
{
    for (int i = 0; i < ep->n_flavors; i++) {
        if (ep->flavors[i].flavor == flavor) {
            return &ep->flavors[i];
        }
    }
    return NULL;
}

static void
recount_locked(sp_endpoint *ep)
{
    __atomic_store_n(&ep->auth_rejections, sp_auth_rejected_count_locked(ep), __ATOMIC_RELEASE);
}

sp_auth_verdict
sp_auth_gate(sp_endpoint *ep, uint32_t flavor, double now, double *retry_in)
{
    sp_auth_verdict v = SP_AUTH_PASS;
    if (__atomic_load_n(&ep->auth_rejections, __ATOMIC_ACQUIRE) == 0) {
        return v;  /* nothing rejected: no lock taken */
    }
    pthread_mutex_lock(&ep->lock);
    sp_flavor_use *f = find_locked(ep, flavor);
    if (f != NULL && f->auth_retry_mono > 0) {
        if (now >= f->auth_retry_mono) {
            /* This caller is the trial; the next one waits a period. */
            f->auth_retry_mono = now + f->auth_backoff_s;
            v = SP_AUTH_TRIAL;
        }
        else {
            if (retry_in != NULL) {
                *retry_in = f->auth_retry_mono - now;
            }
            ep->refused_by_state++;
            v = SP_AUTH_BLOCKED;
        }
    }
    pthread_mutex_unlock(&ep->lock);
    return v;
}

void
sp_auth_rejected_locked(sp_endpoint *ep, uint32_t flavor, double now,
                        const sp_checker_config *cfg)
{
    sp_flavor_use *f = find_locked(ep, flavor);
    if (f == NULL) {
        return;
    }
    double cap = cfg->interval > 1.0 ? cfg->interval : 1.0;
    double first = cfg->backoff_max > 0 ? cfg->backoff_max : 0.3;
    if (f->auth_retry_mono <= 0) {
        f->auth_backoff_s = first;
    }
    else if (f->auth_backoff_s < cap) {
        f->auth_backoff_s *= 2;
    }
    if (f->auth_backoff_s > cap) {
        f->auth_backoff_s = cap;
    }
    double until = now + f->auth_backoff_s;
    /* A trial in progress already moved the mark: keep the later one. */
    if (until > f->auth_retry_mono) {
        f->auth_retry_mono = until;
    }
    f->auth_failures++;
    recount_locked(ep);
}

void
sp_auth_rejected(sp_endpoint *ep, uint32_t flavor, double now)
{
    sp_checker_config cfg;
    sp_checker_get_config(&cfg);  /* before ep->lock: that one is a leaf */
    pthread_mutex_lock(&ep->lock);
    sp_auth_rejected_locked(ep, flavor, now, &cfg);
    pthread_mutex_unlock(&ep->lock);
}

void
sp_auth_accepted_locked(sp_endpoint *ep, uint32_t flavor)
{
    sp_flavor_use *f = find_locked(ep, flavor);
    if (f != NULL && f->auth_retry_mono > 0) {
        f->auth_retry_mono = 0;
        f->auth_backoff_s = 0;
        recount_locked(ep);
    }
}

void
sp_auth_accepted(sp_endpoint *ep, uint32_t flavor)
{
    if (__atomic_load_n(&ep->auth_rejections, __ATOMIC_ACQUIRE) == 0) {
        return;
    }
    pthread_mutex_lock(&ep->lock);
    sp_auth_accepted_locked(ep, flavor);
    pthread_mutex_unlock(&ep->lock);
}

int
sp_auth_rejected_count_locked(const sp_endpoint *ep)
{
    int n = 0;
    for (int i = 0; i < ep->n_flavors; i++) {
        n += ep->flavors[i].auth_retry_mono > 0;
    }
    return n;
}
