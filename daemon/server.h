/*
 * server.h - the Unix-socket front end: listen, accept, read, frame,
 * dispatch, write, close.  The only module that talks to libuv sockets.
 *
 * One loop, one thread.  Every size a peer controls is bounded here before
 * anything is allocated: frame bytes (max_frame_bytes, via the scanner),
 * output queued per connection (stop taking requests while a write is in
 * flight and SERVER_OUT_HIGH more waits; close a client that does not read:
 * output refused by the kernel for stall_timeout_ms, or over
 * max_output_bytes for a second), a partial object older than
 * partial_timeout_ms, and connections (max_clients); the limits are the
 * configuration's.
 */
#ifndef RESIL_SERVER_H
#define RESIL_SERVER_H

#include <uv.h>

#include "methods.h"

#define SERVER_OUT_HIGH (64 * 1024) /* stop taking requests above this */
#define SERVER_OUT_LOW (16 * 1024)  /* resume below this */
#define SERVER_DRAIN_MS 5000        /* SIGTERM: time given to flush */
#define SERVER_CRON_MS 100          /* housekeeping period */

struct conn;

struct server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_timer_t cron;
    uv_timer_t wake;       /* next parked request that may pass */
    uv_signal_t sig[3];    /* SIGTERM, SIGINT, SIGHUP */
    struct resild *d;      /* borrowed */
    struct conn *conns;    /* every open connection */
    struct conn *to_flush; /* answers packed for later: see caller_flush */
    uint32_t nconns;
    uint32_t max_clients; /* config value, lowered to fit RLIMIT_NOFILE */
    msgpack_zone zone;    /* decode zone, cleared after each request */
    char path[108];
    int listening;
    int stopping;
    uint64_t stop_deadline_ms;
    uid_t self_uid;
};

/*
 * Bind and listen on path (refusing symlinks, non-sockets and a live
 * daemon; unlinking a stale socket).  Returns 0, or -1 with a message
 * logged.
 */
int server_start(struct server *s, uv_loop_t *loop, struct resild *d,
                 const char *path);

/* Begin a graceful stop: no new connections, answer what was read, flush,
 * close.  The loop ends when everything is closed. */
void server_stop(struct server *s);

/* After uv_run returns. */
void server_free(struct server *s);

#endif
