/* server_view.h -- what a Redis server says about its clients (INFO clients, INFO stats), parsed defensively (pure C). */
#ifndef SP_SERVER_VIEW_H
#define SP_SERVER_VIEW_H

#include <stddef.h>

/* Largest value taken for any field: anything longer or larger is not a
 * number a Redis server reports, and is ignored (the field stays unknown). */
#define SP_SERVER_VIEW_MAX 1000000000000LL

typedef struct {
    long long connected_clients;     /* INFO clients; -1 unknown */
    long long maxclients;            /* INFO clients (Redis >= 4); -1 unknown */
    long long rejected_connections;  /* INFO stats; -1 unknown */
} sp_server_view;

void sp_server_view_init(sp_server_view *v);

/* Takes every field it knows from one INFO payload text[0..n) (any
 * section). A value counts only when it is a plain decimal number
 * (digits only, at most 13 of them, <= SP_SERVER_VIEW_MAX); anything
 * else (a sign, a fraction, a truncated line, an echo) leaves the field
 * as it was. Returns how many fields it took. */
int sp_server_view_parse(sp_server_view *v, const char *text, size_t n);

/* 1 when the view has what fleet admission needs: connected_clients and
 * a maxclients >= 1. */
int sp_server_view_usable(const sp_server_view *v);

#endif
