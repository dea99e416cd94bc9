/* Test helper: a scripted fake Redis on a loopback port, run by a thread. */
#ifndef SP_FAKE_SERVER_H
#define SP_FAKE_SERVER_H

#include <pthread.h>
#include <stddef.h>

typedef enum {
    FAKE_SCRIPT,        /* answer per stage, then wait for the client EOF */
    FAKE_SCRIPT_RESET,  /* answer per stage, then close with RST */
    FAKE_CLOSE,         /* accept and close at once (FIN) */
    FAKE_NOACCEPT       /* listen, never accept (kernel completes connect) */
} fake_mode;

#define FAKE_MAX_STAGES 3

typedef struct {
    fake_mode mode;
    /* Stage i: wait until the request received so far contains
       expect[i] (NULL: do not wait), then write reply[i] (NULL: nothing).
       A stage whose expect[] never arrives stalls until the timeout. */
    const char *expect[FAKE_MAX_STAGES];
    const char *reply[FAKE_MAX_STAGES];
    size_t reply_len[FAKE_MAX_STAGES];  /* 0: strlen(reply[i]) */
    double timeout;                     /* bound on every wait (default 5) */
    /* filled in */
    int port;
    int lfd;
    pthread_t thread;
    char request[4096];                 /* what the client sent */
    size_t request_len;
} fake_server;

/* Listen on 127.0.0.1:0 and start the thread. 0 on success. */
int fake_start(fake_server *f);

/* Join the thread and close everything. */
void fake_stop(fake_server *f);

#endif /* SP_FAKE_SERVER_H */
