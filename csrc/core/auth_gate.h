/* auth_gate.h -- credentials a server rejected: per flavor, fail fast with backoff, one trial connect per period. */
#ifndef SP_AUTH_GATE_H
#define SP_AUTH_GATE_H

#include <stdint.h>

#include "checker.h"
#include "endpoint.h"

/*
 * Why: a server restarted with a new `requirepass` rejects every handshake,
 * and each rejected caller used to retry at once with a new connection:
 * hundreds of connections per second from one process, none of them
 * useful. A rejection is a condition of the endpoint for the flavor whose
 * credentials were rejected (flavors differ by credentials; the endpoint
 * key does not include them): until its backoff ends, callers of that
 * flavor fail fast without connecting; then exactly one caller (the trial)
 * may connect, and its success, or a probe that passes with the same
 * credentials, lifts the condition for everyone. The backoff doubles from
 * the checker's backoff_max up to its interval (at least 1 s), so a
 * process opens about one connection per interval per rejected flavor,
 * plus the checker's probes, however many threads call.
 *
 * State lives in the endpoint's flavor table (ep->flavors, guarded by
 * ep->lock); every function here takes ep->lock, except the _locked ones,
 * whose caller holds it.
 */

typedef enum {
    SP_AUTH_PASS = 0,         /* nothing known against these credentials */
    SP_AUTH_TRIAL,            /* rejected before: this caller is the one trial */
    SP_AUTH_BLOCKED           /* rejected: fail fast */
} sp_auth_verdict;

/* May a caller of `flavor` go on (at `now`, sp_now() seconds)? On BLOCKED
 * *retry_in is set to the seconds until the next trial. */
sp_auth_verdict sp_auth_gate(sp_endpoint *ep, uint32_t flavor, double now, double *retry_in);

/* The server rejected `flavor`'s credentials (a handshake or the probe). */
void sp_auth_rejected(sp_endpoint *ep, uint32_t flavor, double now);
void sp_auth_rejected_locked(sp_endpoint *ep, uint32_t flavor, double now,
                             const sp_checker_config *cfg);

/* A handshake with `flavor`'s credentials passed: lift the condition. */
void sp_auth_accepted(sp_endpoint *ep, uint32_t flavor);
void sp_auth_accepted_locked(sp_endpoint *ep, uint32_t flavor);

/* How many flavors of `ep` are rejected right now (for stats). */
int sp_auth_rejected_count_locked(const sp_endpoint *ep);

#endif
