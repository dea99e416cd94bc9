/* view_loan.h -- a pooled connection lent to the view probe: our side closed, settled once the server has closed it (pure C). */
#ifndef SP_VIEW_LOAN_H
#define SP_VIEW_LOAN_H

/*
 * Near the line the view probe is one of the allowance's connections; with
 * every slot of the cap taken, one pooled connection is lent to it
 * (sp_endpoint_lend_for_view_locked()). The probe may connect only once the
 * server no longer counts the lent one: the server drops a client from
 * `connected_clients` when it frees it, and closes its socket then. So our
 * side closes its half (shutdown(SHUT_WR): the server reads EOF and frees
 * the client) and waits for the server's own close (EOF or a reset on our
 * side). The socket itself stays open: it belongs to the connection object,
 * which a Python thread disposes of afterwards.
 */

/* Takes the socket out of the watch (its hangup is ours, not the server's)
 * and shuts down our writing half. Returns 0, or -1 (the socket is dead:
 * settled already). */
int sp_loan_begin(int fd);

/* Reads what is left without blocking (bounded): 1 when the server has
 * closed its side (EOF, a reset, any error), 0 while it has not yet. */
int sp_loan_settled(int fd);

#endif
