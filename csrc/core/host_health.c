/* host_health.c -- an endpoint's health shared by every process on the host: adopt, publish, one probe per host. */
#include "host_health.h"

#include <stdio.h>
#include <string.h>

#include "events.h"
#include "host_budget.h"

/* The fixed texts of the reason codes: what a process that takes in the
 * host's state says (never a server's own words). */
static const char *const reason_text[SP_HOST_REASONS] = {
    "state changed",
    "server down: connection refused",
    "server down",
    "server is loading its dataset",
    "server not answering",
    "max number of clients reached",
    "probe succeeded",
};

/* The reason code of a state reason (set_state_locked() callers in
 * checker.c and host_health.c word them; matched by their first words). */
static uint32_t
reason_code(sp_state s, const char *reason)
{
    if (s == SP_STATE_READY || s == SP_STATE_RECOVERING) {
        return SP_HOST_REASON_BACK;
    }
    if (strstr(reason, "connection refused") != NULL) {
        return SP_HOST_REASON_REFUSED;
    }
    if (strstr(reason, "loading") != NULL) {
        return SP_HOST_REASON_LOADING;
    }
    if (strstr(reason, "not answering") != NULL) {
        return SP_HOST_REASON_SILENT;
    }
    if (strstr(reason, "max number of clients") != NULL || s == SP_STATE_OVERLOADED) {
        return SP_HOST_REASON_MAXCLIENTS;
    }
    if (strncmp(reason, "server down", 11) == 0) {
        return SP_HOST_REASON_DOWN;
    }
    return SP_HOST_REASON_OTHER;
}

void
sp_host_health_on_state_locked(sp_endpoint *ep)
{
    sp_host *h = ep->host_budget;
    if (h == NULL || sp_host_adopting(h) || ep->state == SP_STATE_SATURATED) {
        return;  /* saturated is this process's allowance, not the server's health */
    }
    sp_host_health rec;
    memset(&rec, 0, sizeof(rec));
    rec.state = (uint32_t)ep->state;
    rec.reason = reason_code(ep->state, ep->state_reason);
    rec.since = ep->state_since_wall;
    memcpy(rec.run_id, ep->run_id, sizeof(rec.run_id));
    if (ep->state == SP_STATE_RECOVERING) {
        sp_host_set_max_connecting(h, 2);  /* before the news: nobody rushes */
    }
    sp_host_health_publish(h, &rec);
    if (ep->state == SP_STATE_READY) {
        sp_host_probe_lease_drop(h);
    }
}

/* The server answered the publisher: a new run_id is a restart here too. */
static void
adopt_run_id_locked(sp_endpoint *ep, const sp_host_health *rec, sp_deferred *after)
{
    if (rec->run_id[0] == '\0' ||
        (rec->state != SP_STATE_READY && rec->state != SP_STATE_RECOVERING)) {
        return;
    }
    if (ep->run_id[0] && strcmp(rec->run_id, ep->run_id) != 0) {
        ep->generation++;  /* nothing from the old server process is handed out */
        sp_endpoint_bury_all_idle_locked(ep, after);
        sp_events_push(ep->label, sp_state_name(ep->state), sp_state_name(ep->state),
                       "server restarted (run_id changed, learnt from another process on "
                       "this host)");
    }
    memcpy(ep->run_id, rec->run_id, sizeof(ep->run_id));
}

/* Whether the host's `want` replaces our state: bad news always does,
 * good news only where we are not ready for our own reasons. */
static int
takes_over(sp_state have, sp_state want)
{
    switch (want) {
    case SP_STATE_PAUSED:
        return have != SP_STATE_PAUSED;
    case SP_STATE_OVERLOADED:
        return have == SP_STATE_READY || have == SP_STATE_RECOVERING;
    case SP_STATE_RECOVERING:
        return have == SP_STATE_PAUSED || have == SP_STATE_OVERLOADED;
    case SP_STATE_READY:
        return have == SP_STATE_PAUSED || have == SP_STATE_OVERLOADED ||
               have == SP_STATE_RECOVERING;
    case SP_STATE_SATURATED:
        return 0;
    }
    return 0;
}

void
sp_host_health_adopt_locked(sp_endpoint *ep, sp_deferred *after)
{
    sp_host *h = ep->host_budget;
    sp_host_health rec;
    if (h == NULL || !sp_host_health_changed(h) || !sp_host_health_read(h, &rec) || rec.mine ||
        rec.state > SP_STATE_SATURATED) {
        return;
    }
    adopt_run_id_locked(ep, &rec, after);
    sp_state want = (sp_state)rec.state;
    sp_state old = ep->state;
    if (!takes_over(old, want)) {
        return;
    }
    char reason[160];
    snprintf(reason, sizeof(reason), "%s (learnt from another process on this host)",
             reason_text[rec.reason]);
    if (want == SP_STATE_PAUSED || want == SP_STATE_OVERLOADED) {
        sp_endpoint_note_error_locked(ep, "host: ", reason_text[rec.reason]);
    }
    ep->backoff_s = 0;
    ep->probe_knock = 0;
    ep->probe_requested = 0;
    ep->silent = want == SP_STATE_PAUSED && rec.reason == SP_HOST_REASON_SILENT;
    sp_host_set_adopting(h, 1);
    sp_endpoint_set_state_locked(ep, want, reason, after);
    sp_host_set_adopting(h, 0);
    if (want == SP_STATE_RECOVERING) {
        ep->max_connecting = sp_host_max_connecting(h);
        sp_endpoint_dispatch_locked(ep, after);
    }
    sp_events_push(ep->label, sp_state_name(old), sp_state_name(want), ep->state_reason);
}

/* The states in which probes decide when the server is usable again:
 * one process of the host probes then. */
static int
leased_state(sp_state s)
{
    return s == SP_STATE_PAUSED || s == SP_STATE_OVERLOADED || s == SP_STATE_RECOVERING;
}

int
sp_host_health_may_probe_locked(sp_endpoint *ep, double probe_timeout, double now)
{
    sp_host *h = ep->host_budget;
    if (h == NULL || !leased_state(ep->state)) {
        return 1;
    }
    double wait = 0;
    /* Held for the probe itself; its landing extends it to the next one. */
    if (sp_host_probe_lease(h, probe_timeout + 0.05, &wait)) {
        return 1;
    }
    ep->probe_requested = 0;
    ep->next_probe_mono = now + wait + 0.001;  /* look again when the lease ends */
    return 0;
}

void
sp_host_health_landed_locked(sp_endpoint *ep, double now)
{
    sp_host *h = ep->host_budget;
    if (h == NULL || !sp_host_probe_lease_held(h)) {
        return;
    }
    if (!leased_state(ep->state)) {
        sp_host_probe_lease_drop(h);
        return;
    }
    if (ep->state == SP_STATE_RECOVERING && ep->max_connecting > sp_host_max_connecting(h)) {
        sp_host_set_max_connecting(h, ep->max_connecting);  /* the doubling, for the host */
    }
    double next = ep->next_probe_mono - now;
    if (next < 0) {
        next = 0;
    }
    /* A quarter more (and 5 ms): a holder that dies hands over within
     * about one interval. */
    sp_host_probe_lease_extend(h, next * 1.25 + 0.005);
}

int
sp_host_health_may_connect_locked(sp_endpoint *ep)
{
    if (ep->host_budget == NULL) {
        return ep->connecting < ep->max_connecting;
    }
    return sp_host_connect_claim(ep->host_budget);
}

int
sp_host_health_demand_met_locked(const sp_endpoint *ep)
{
    if (ep->host_budget == NULL) {
        return ep->waiters == 0;
    }
    return ep->waiters == 0 && sp_host_connecting(ep->host_budget) == 0 &&
           !sp_host_others_waiting(ep->host_budget);
}
