/* view_loan.h -- the server's view read through a pooled connection lent to the checker (pure C). */
#ifndef SP_VIEW_LOAN_H
#define SP_VIEW_LOAN_H

#include <stddef.h>

#include "server_view.h"

/*
 * Near the line the view probe is one of the allowance's connections; with
 * every slot of the cap taken, one pooled connection is lent to the checker
 * (sp_endpoint_lend_for_view_locked()), which reads the view through it:
 * no connection is made or closed, so the server counts exactly what it
 * counted before, and nobody else reads a slot vacated for a moment as
 * headroom.
 *
 * The connection is off the books meanwhile (no thread can reach it). A
 * server sends nothing unasked on a connection that is not subscribed,
 * except RESP3 pushes (client-side caching invalidations, maintenance
 * notices): once both replies are read with nothing else, the connection
 * is exactly as its owner left it; a push among them means it is not, and
 * it is closed (redis-py flushes a caching connection's cache when it is
 * disconnected, so no invalidation is lost). The exchange is
 *
 *     INFO clients  INFO stats      (pipelined, one write)
 *
 * A connection with bytes waiting before the write, a write cut short, a
 * reply that is not two complete RESP replies within probe_timeout: the
 * connection's state is unknown, and it is closed instead of given back.
 */

/* Sends the two INFO commands on `fd` (non-blocking). 0: sent; -1: the
 * connection had bytes waiting, is closed, or took less than all of it. */
int sp_loan_send_info(int fd);

/* Reads what has come (non-blocking) into buf[*len .. cap). Returns 1 when
 * both replies are complete (fields taken into *v; a reply that is an
 * error, such as -NOPERM, is named in why[], error code only), 0 while more
 * is needed, -1 when the connection broke or sent something else. */
int sp_loan_read_view(int fd, char *buf, size_t cap, size_t *len, sp_server_view *v,
                      char *why, size_t whysize);

#endif
