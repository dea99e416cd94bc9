/* The RESP wire format for probes: reply lengths (RESP2 and RESP3), bulk payloads, INFO fields, requests. */
#include "resp.h"

#include <stdio.h>
#include <string.h>

#define SP_RESP_MAX_DEPTH 8
#define SP_RESP_MAX_BULK (512LL * 1024 * 1024)

/* Parse a decimal integer filling exactly s[0..n). */
static int
parse_ll(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    long long v = 0;

    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 18) {
        return 0;
    }
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

/* End offset (exclusive) of the reply starting at pos, 0 if incomplete,
   -1 if malformed.  Every aggregate element consumes at least 3 bytes, so
   the loops are bounded by n. */
static long
reply_end(const char *buf, size_t n, size_t pos, int depth)
{
    const char *nl;
    size_t eol, clen, start, end, i;
    long long len;

    if (pos >= n) {
        return 0;
    }
    nl = memchr(buf + pos, '\n', n - pos);
    if (nl == NULL) {
        return 0;
    }
    eol = (size_t)(nl - buf);                  /* index of '\n' */
    if (eol < pos + 2 || buf[eol - 1] != '\r') {
        return -1;
    }
    clen = eol - 1 - (pos + 1);                /* line after the type byte */
    switch (buf[pos]) {
    case '+': case '-': case '_': case ',': case '#': case '(':
        return (long)(eol + 1);
    case ':':
        if (!parse_ll(buf + pos + 1, clen, &len)) {
            return -1;
        }
        return (long)(eol + 1);
    case '$': case '!': case '=':
        if (!parse_ll(buf + pos + 1, clen, &len)) {
            return -1;
        }
        if (len == -1 && buf[pos] == '$') {
            return (long)(eol + 1);
        }
        if (len < 0 || len > SP_RESP_MAX_BULK) {
            return -1;
        }
        start = eol + 1;
        end = start + (size_t)len;              /* index of the CR */
        if (n < end + 2) {
            return 0;
        }
        if (buf[end] != '\r' || buf[end + 1] != '\n') {
            return -1;
        }
        return (long)(end + 2);
    case '*': case '~': case '>': case '%':
        if (!parse_ll(buf + pos + 1, clen, &len)) {
            return -1;
        }
        if (len == -1 && buf[pos] == '*') {
            return (long)(eol + 1);
        }
        if (len < 0 || depth >= SP_RESP_MAX_DEPTH) {
            return -1;
        }
        if (buf[pos] == '%') {
            len *= 2;
        }
        start = eol + 1;
        for (i = 0; i < (size_t)len; i++) {
            long e = reply_end(buf, n, start, depth + 1);
            if (e <= 0) {
                return e;
            }
            start = (size_t)e;
        }
        return (long)start;
    default:
        return -1;
    }
}

void
sp_copy_printable(char *dst, size_t dstsize, const char *src, size_t n)
{
    size_t i;

    if (dst == NULL || dstsize == 0) {
        return;
    }
    if (n > dstsize - 1) {
        n = dstsize - 1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[n] = '\0';
}

long
sp_resp_reply_len(const char *buf, size_t n)
{
    if (buf == NULL) {
        return 0;
    }
    return reply_end(buf, n, 0, 0);
}

int
sp_info_field(const char *text, size_t n, const char *field,
              char *out, size_t outsize)
{
    size_t fl = strlen(field);
    size_t pos = 0;

    if (out != NULL && outsize > 0) {
        out[0] = '\0';
    }
    if (text == NULL) {
        return 0;
    }
    while (pos < n) {
        const char *nl = memchr(text + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - text) : n;
        size_t ll = end - pos;

        if (ll > 0 && text[pos + ll - 1] == '\r') {
            ll--;
        }
        if (ll > fl && memcmp(text + pos, field, fl) == 0
            && text[pos + fl] == ':') {
            sp_copy_printable(out, outsize, text + pos + fl + 1, ll - fl - 1);
            return 1;
        }
        pos = end + 1;
    }
    return 0;
}

static void
w_put(sp_resp_buf *w, const char *s, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

void
sp_resp_cmd(sp_resp_buf *w, int argc, const char *const *argv)
{
    char head[32];
    int i, hl;

    hl = snprintf(head, sizeof(head), "*%d\r\n", argc);
    w_put(w, head, (size_t)hl);
    for (i = 0; i < argc; i++) {
        size_t al = strlen(argv[i]);
        hl = snprintf(head, sizeof(head), "$%zu\r\n", al);
        w_put(w, head, (size_t)hl);
        w_put(w, argv[i], al);
        w_put(w, "\r\n", 2);
    }
}

const char *
sp_resp_bulk_payload(const char *reply, size_t rlen, size_t *plen)
{
    const char *nl;
    size_t hdr;

    if (rlen < 5 || (reply[0] != '$' && reply[0] != '=')) {
        return NULL;
    }
    nl = memchr(reply, '\n', rlen);
    if (nl == NULL) {
        return NULL;
    }
    hdr = (size_t)(nl - reply) + 1;
    if (rlen < hdr + 2) {
        return NULL;
    }
    *plen = rlen - hdr - 2;
    return reply + hdr;
}
