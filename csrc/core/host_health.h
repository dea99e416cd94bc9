/* host_health.h -- an endpoint's health shared by every process on the host: adopt, publish, one probe per host. */
#ifndef SP_HOST_HEALTH_H
#define SP_HOST_HEALTH_H

#include "endpoint.h"

/* Pure C. Every function here is for a host-scope endpoint and does
 * nothing in process scope (ep->host_budget NULL), so the per-process
 * rules stay as they are there. Callers hold ep->lock: everything below
 * is atomic operations on the segment (host_budget.h), never I/O. */

/* A state change of `ep` (sp_endpoint_set_state_locked()) is news for the
 * host: published with a reason code (never the text, which may quote a
 * server), unless it is the host's state being taken in. */
void sp_host_health_on_state_locked(sp_endpoint *ep);

/* Takes in the host's state when another process published one newer
 * than the last seen here: paused there fails callers here at once. */
void sp_host_health_adopt_locked(sp_endpoint *ep, sp_deferred *after);

/* The checker is about to probe: while the endpoint is not ready, only
 * the holder of the host's probe lease does. Returns 1 to probe; 0 when
 * another live process holds it (next_probe moves to when it ends). */
int sp_host_health_may_probe_locked(sp_endpoint *ep, double probe_timeout, double now);

/* A probe landed: the lease holder keeps the lease until its next probe
 * (and a little more), gives it up once ready, and shares the recovering
 * connect limit it decided. */
void sp_host_health_landed_locked(sp_endpoint *ep, double now);

/* Recovering: one connect more may start (the host's max_connecting in
 * host scope, the endpoint's own in process scope). */
int sp_host_health_may_connect_locked(sp_endpoint *ep);

/* Recovering: nobody wants more connections (here, or on the host). */
int sp_host_health_demand_met_locked(const sp_endpoint *ep);

#endif
