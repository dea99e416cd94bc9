/* allowance.c -- fleet-aware admission: the reserve kept free on a server and this process's share of it (AIMD, pure C). */
#include "allowance.h"

long long
sp_server_reserve(long long maxclients, double fraction, int floor)
{
    if (maxclients < 1 || (!(fraction > 0) && floor <= 0)) {
        return 0;
    }
    double share = fraction > 0 ? fraction * (double)maxclients : 0.0;
    long long reserve = (long long)share;
    if ((double)reserve < share) {
        reserve++;  /* rounded up */
    }
    if (reserve < floor) {
        reserve = floor;
    }
    if (reserve > maxclients / 2) {
        reserve = maxclients / 2;
    }
    return reserve;
}

void
sp_allowance_init(sp_allowance *a)
{
    a->allowance = SP_ALLOWANCE_NONE;
    a->last_rejected = -1;
    a->reserve = -1;
    a->headroom = 0;
    a->saturated = 0;
    a->held_at_view = 0;
    a->decreases = 0;
    a->regrowing = 1;  /* a fleet that starts together reads an empty server at once */
}

static int
at_least_one(long long n)
{
    return n < 1 ? 1 : n > SP_ALLOWANCE_NONE - 1 ? SP_ALLOWANCE_NONE - 1 : (int)n;
}

static void
decrease(sp_allowance *a, int total)
{
    int held = a->allowance < total ? a->allowance : total;
    a->allowance = at_least_one(held / 2);
    a->decreases++;
}

int
sp_allowance_on_view(sp_allowance *a, const sp_server_view *v, long long reserve,
                     int total, int budget, double u)
{
    if (!sp_server_view_usable(v) || reserve <= 0) {
        a->allowance = SP_ALLOWANCE_NONE;
        a->reserve = sp_server_view_usable(v) ? 0 : -1;
        a->saturated = 0;
        a->last_rejected = v->rejected_connections;
        return 0;
    }
    long long headroom = v->maxclients - v->connected_clients;
    long long rejected = v->rejected_connections;
    int rose = rejected >= 0 && a->last_rejected >= 0 && rejected > a->last_rejected;
    /* A restarted server counts from 0 again: just follow it. */
    a->last_rejected = rejected;
    a->reserve = reserve;
    a->headroom = headroom;
    a->saturated = headroom < reserve;
    if (total < 0) {
        total = 0;
    }
    a->held_at_view = total;
    if (rose) {
        decrease(a, total);
        return a->saturated;
    }
    if (a->saturated) {
        /* Everyone over the line gives back their share of the excess: the
         * fleet settles with the reserve free, whoever caused it. */
        long long excess = reserve - headroom;
        long long share = v->connected_clients > 0
                              ? (excess * total + v->connected_clients - 1) / v->connected_clients
                              : 0;
        a->allowance = at_least_one((long long)total - share);
        return 1;
    }
    /* Near the line (spare within 4 reserves) one at a time, and the
     * closer to it the rarer (with odds (spare - 1) / (2 * reserve)): the
     * last one above the line is slack for processes that read one
     * headroom at once (all of them, right after a restart): two of them
     * growing together end at the line, not over it, and going over takes
     * three at a spare of 2, each with odds 1 / (2 * reserve). Far from
     * it, a jittered share of the spare, so that a lone process on a large
     * server is not held back. */
    long long spare = headroom - reserve;
    long long step = spare <= 1 ? 0
                     : spare <= 4 * reserve
                         ? (u * 2.0 * (double)reserve < (double)(spare - 1) ? 1 : 0)
                         : 1 + (long long)(u * (double)(spare - 4 * reserve) / 16.0);
    if (step > spare) {
        step = spare;
    }
    long long next = (long long)total + step;
    if (next > budget || (!a->regrowing && spare - 4 * reserve >= budget)) {
        next = budget;  /* room for the whole budget and more: no limit short of it */
    }
    if (next >= budget || spare <= 4 * reserve) {
        a->regrowing = 0;  /* back at the line, or at the budget: regrown */
    }
    a->allowance = at_least_one(next);
    return 0;
}

void
sp_allowance_regrow(sp_allowance *a)
{
    a->regrowing = 1;
}

void
sp_allowance_on_rejection(sp_allowance *a, int total)
{
    if (a->allowance == SP_ALLOWANCE_NONE && a->reserve < 0) {
        /* No view to grow back from: the overloaded state handles it. */
        return;
    }
    decrease(a, total);
}

int
sp_allowance_cap(const sp_allowance *a, int budget)
{
    return a->allowance < budget ? a->allowance : budget;
}

int
sp_allowance_near_line(const sp_allowance *a)
{
    return a->reserve > 0 && a->headroom - a->reserve <= 4 * a->reserve;
}

int
sp_allowance_within_reach(const sp_allowance *a, int budget, int held)
{
    long long headroom_now = a->headroom - (held - a->held_at_view);
    return a->reserve > 0 && headroom_now - a->reserve <= 4 * a->reserve + budget;
}
