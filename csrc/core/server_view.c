/* server_view.c -- what a Redis server says about its clients (INFO clients, INFO stats), parsed defensively (pure C). */
#include "server_view.h"

#include <string.h>

#include "resp.h"

void
sp_server_view_init(sp_server_view *v)
{
    v->connected_clients = -1;
    v->maxclients = -1;
    v->rejected_connections = -1;
}

/* A plain decimal number of at most 13 digits, or -1. */
static long long
plain_number(const char *s)
{
    size_t n = strlen(s);
    long long value = 0;

    if (n == 0 || n > 13) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        value = value * 10 + (s[i] - '0');
    }
    return value <= SP_SERVER_VIEW_MAX ? value : -1;
}

static int
take(const char *text, size_t n, const char *field, long long *out)
{
    char val[24];

    /* A value cut short by val's size has more than 13 digits anyway. */
    if (!sp_info_field(text, n, field, val, sizeof(val))) {
        return 0;
    }
    long long v = plain_number(val);
    if (v < 0) {
        return 0;
    }
    *out = v;
    return 1;
}

int
sp_server_view_parse(sp_server_view *v, const char *text, size_t n)
{
    if (text == NULL) {
        return 0;
    }
    return take(text, n, "connected_clients", &v->connected_clients) +
           take(text, n, "maxclients", &v->maxclients) +
           take(text, n, "rejected_connections", &v->rejected_connections);
}

int
sp_server_view_usable(const sp_server_view *v)
{
    return v->connected_clients >= 0 && v->maxclients >= 1;
}
