/* allowance.h -- fleet-aware admission: the reserve kept free on a server and this process's share of it (AIMD, pure C). */
#ifndef SP_ALLOWANCE_H
#define SP_ALLOWANCE_H

#include "server_view.h"

/* No limit: the server's view is unknown (not read yet, INFO not allowed,
 * a TLS endpoint), so only max_connections applies, as without this file. */
#define SP_ALLOWANCE_NONE 0x7fffffff

/* Connections kept free on a server for everyone else (operators,
 * monitoring, other applications): `fraction` of maxclients rounded up,
 * at least `floor`, and never more than half of maxclients (a tiny server
 * stays usable). 0 when fraction and floor are both 0 (the rule is off). */
long long sp_server_reserve(long long maxclients, double fraction, int floor);

typedef struct {
    int allowance;            /* connections this process may hold; SP_ALLOWANCE_NONE */
    long long last_rejected;  /* rejected_connections at the last view; -1 unknown */
    long long reserve;        /* of the last usable view; -1 unknown */
    long long headroom;       /* maxclients - connected_clients of the last view */
    int saturated;            /* the last view had headroom below the reserve */
    int held_at_view;         /* what the process held when it was read */
    unsigned long long decreases;  /* multiplicative decreases so far */
    int regrowing;            /* growing from nothing (a new endpoint, or one back
                               * from a pause: a restart): growth is additive only,
                               * no jump to the budget, until the process is back
                               * at the line or at its budget */
} sp_allowance;

void sp_allowance_init(sp_allowance *a);

/* Applies a fresh view of the server, read while this process held
 * `total` connections of a budget of `budget`. `u` is a random number in
 * [0, 1) (the jitter of the increase). The rules:
 *   - an unusable view, or a reserve of 0: no limit (SP_ALLOWANCE_NONE);
 *   - rejected_connections rose since the last view: multiplicative
 *     decrease, half of what the process holds;
 *   - headroom below the reserve: saturated; the process gives back its
 *     share of the excess, ceil((reserve - headroom) * total / connected);
 *   - headroom above the reserve: additive increase over what it holds
 *     (spare = headroom - reserve): while spare is within 4 reserves, 1
 *     when u * 2 * reserve < spare - 1 (else 0: the closer, the rarer; a
 *     spare of 1 is slack for processes that read one headroom at once),
 *     1 + u * (spare - 4 * reserve) / 16 beyond, so that processes reading
 *     one headroom do not all take it; with room beyond that for the
 *     whole budget, the budget (a lone process on a large server is not
 *     held back), except while regrowing (sp_allowance_regrow()).
 * The allowance never goes below 1: a process may always keep one
 * connection it has. Returns a->saturated. */
int sp_allowance_on_view(sp_allowance *a, const sp_server_view *v, long long reserve,
                         int total, int budget, double u);

/* The endpoint is coming back from a pause (the server restarted, or was
 * unreachable): every process of a fleet reads an empty server at about
 * the same moment, as a fleet that starts together does (a new allowance
 * starts regrowing too), so until the process is back at the line or at
 * its budget its growth is the additive, jittered step only, never the
 * jump to the budget that a lone process on a roomy server gets. */
void sp_allowance_regrow(sp_allowance *a);

/* The server rejected one of our connections (max number of clients
 * reached): multiplicative decrease at once. */
void sp_allowance_on_rejection(sp_allowance *a, int total);

/* 1 when the last view had the server near the line: a spare of at most
 * 4 reserves above the reserve (or less). The checker probes less often there. */
int sp_allowance_near_line(const sp_allowance *a);

/* 1 when the line is within reach of a process with this budget that
 * holds `held` now: the last view's spare, less what the process made
 * since, is at most 4 reserves plus the budget. */
int sp_allowance_within_reach(const sp_allowance *a, int budget, int held);

/* The cap on connections in force: the smaller of budget and allowance. */
int sp_allowance_cap(const sp_allowance *a, int budget);

#endif
