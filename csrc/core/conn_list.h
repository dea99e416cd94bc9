/* conn_list.h -- singly linked lists of records (graveyards, the idle stack): the last one, moving a list. */
#ifndef SP_CONN_LIST_H
#define SP_CONN_LIST_H

#include <stddef.h>

#include "endpoint.h"

/* The last record of the list that starts at `head` (NULL for none): the
 * oldest of the idle stack. */
static inline sp_conn *
sp_conn_list_last(sp_conn *head)
{
    sp_conn *rec = head;
    while (rec != NULL && rec->next != NULL) {
        rec = rec->next;
    }
    return rec;
}

/* Moves the whole list *from in front of *to, keeping its order; *from is
 * left empty. The caller holds whatever lock guards each list. */
static inline void
sp_conn_list_move(sp_conn **from, sp_conn **to)
{
    sp_conn *last = sp_conn_list_last(*from);
    if (last == NULL) {
        return;
    }
    last->next = *to;
    *to = *from;
    *from = NULL;
}

#endif /* SP_CONN_LIST_H */
