/* resp.h -- the RESP wire format for probes: reply lengths, bulk payloads, INFO fields, requests. */
#ifndef SP_RESP_H
#define SP_RESP_H

#include <stddef.h>

/* Length in bytes of the first complete RESP reply in buf[0..n) (RESP2 and
   the RESP3 types), 0 if more bytes are needed, -1 if it is not valid RESP
   (or nests deeper than 8 levels, or a bulk is longer than 512 MB). */
long sp_resp_reply_len(const char *buf, size_t n);

/* Payload of the bulk-string (or verbatim) reply reply[0..rlen), with its
   length in *plen, or NULL when the reply is not one. */
const char *sp_resp_bulk_payload(const char *reply, size_t rlen, size_t *plen);

/* Find "field:value" at the start of a line of an INFO payload text[0..n)
   and copy value (up to CR/LF, truncated to outsize - 1) into out.
   Returns 1 if found, 0 if not (out is then ""). */
int sp_info_field(const char *text, size_t n, const char *field,
                  char *out, size_t outsize);

/* Copies src[0..n) into dst as NUL-terminated text, truncated to dstsize - 1,
   with every byte that is not printable ASCII as '?'. */
void sp_copy_printable(char *dst, size_t dstsize, const char *src, size_t n);

/* A request being written into a fixed buffer: once a command does not fit,
   `overflow` is set and nothing more is written. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    int overflow;
} sp_resp_buf;

/* Appends one command as a RESP array of bulk strings. */
void sp_resp_cmd(sp_resp_buf *w, int argc, const char *const *argv);

#endif /* SP_RESP_H */
