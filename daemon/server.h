/*
 * server.h - the Unix-socket front end: listen, accept, read, frame,
 * dispatch, write, close.  The server layer (with http.c and main.c): it
 * may include uv; it moves bytes and calls the RPC layer (methods.h) and
 * the core's lifecycle (core_tick, core_wake, core_stop, core_bound,
 * core_set_connections), never the core's state.
 *
 * One loop, one thread.  Every size a peer controls is bounded here before
 * anything is allocated: frame bytes (max_frame_bytes, via the scanner),
 * output queued per connection (stop taking requests while a write is in
 * flight and SERVER_OUT_HIGH more waits; close a client that does not read:
 * output refused by the kernel for stall_timeout_ms, or over
 * max_output_bytes for a second), a partial object older than
 * partial_timeout_ms, and connections (max_clients); the limits are the
 * configuration's.
 *
 * A connect/close flood must not starve the clients already connected:
 * at most SERVER_ACCEPT_BATCH connections are accepted per loop turn (the
 * listening socket is watched with our own level-triggered uv_poll_t, not
 * libuv's accept loop, which accepts until EAGAIN), and a refused one
 * (max_clients, stopping, allow lists) costs one non-blocking send of a
 * pre-packed error frame and a close: no handle, no buffer.  Input is read
 * into one server-wide buffer; a connection owns input memory only while
 * it holds the unfinished part of an object, so an idle connection costs
 * its struct alone.
 */
#ifndef RESIL_SERVER_H
#define RESIL_SERVER_H

#include <uv.h>

#include "methods.h"

#define SERVER_OUT_HIGH (64 * 1024) /* stop taking requests above this */
#define SERVER_OUT_LOW (16 * 1024)  /* resume below this */
#define SERVER_DRAIN_MS 5000        /* SIGTERM: time given to flush */
#define SERVER_CRON_MS 100          /* housekeeping period */
#define SERVER_ACCEPT_BATCH 16      /* connections accepted per loop turn */
#define SERVER_HUP_MS 25 /* half-closed peers: how often to ask if gone */

struct conn;
struct pollfd;

struct server {
    uv_loop_t *loop;
    uv_poll_t listener; /* readable: connections wait in the backlog */
    int listen_fd;      /* owned; -1 when closed */
    int accept_paused;  /* out of fds: cron watches the listener again */
    uv_timer_t cron;
    uv_timer_t hup;          /* runs while nhalf > 0: see on_hup */
    uint32_t nhalf;          /* half-closed connections still open */
    struct pollfd *hup_fds;  /* max_clients entries, for on_hup's one poll */
    struct conn **hup_conns; /* the connection of each hup_fds entry */
    uv_timer_t wake;         /* next parked request that may pass */
    uv_signal_t sig[3];      /* SIGTERM, SIGINT, SIGHUP */
    struct resild *d;        /* borrowed */
    struct conn *conns;      /* every open connection */
    struct conn *to_flush;   /* answers packed for later: see caller_flush */
    uint32_t nconns;
    uint32_t max_clients; /* config value, lowered to fit RLIMIT_NOFILE */
    msgpack_zone zone;    /* decode zone, cleared after each request */
    uint8_t *rbuf;   /* shared input buffer, rbuf_cap bytes: see on_alloc */
    size_t rbuf_cap; /* max_frame_bytes + slack */
    msgpack_sbuffer notify_out; /* what a notification's method packs:
                                 * dropped, never sent */
    msgpack_packer notify_pk;   /* packs into notify_out */
    msgpack_sbuffer refuse_busy, refuse_forbidden; /* pre-packed errors */
    char path[108];
    /* systemd socket activation (sdnotify_listen_fd): listen_fd was passed
     * in, path is its name; resild never binds or unlinks it. */
    int activated;
    int listening;
    int stopping;
    uint64_t stop_deadline_ms;
    uid_t self_uid;
    /* SIGHUP: re-read the configuration (main installs it). */
    void (*on_reload)(void *ctx);
    void *on_reload_ctx;
    /* Called once by server_stop (SIGTERM): other listeners stop too. */
    void (*on_stop)(void *ctx);
    void *on_stop_ctx;
};

/*
 * Bind and listen on path (refusing symlinks, non-sockets and a live
 * daemon; unlinking a stale socket).  Returns 0, or -1 with a message
 * logged.  When systemd passed a listening socket (LISTEN_FDS/LISTEN_PID,
 * resild.socket), serve that one instead: path is then only compared with
 * its name, nothing is bound, and the socket is never unlinked (s->path
 * holds the passed socket's name, s->activated is set).
 */
int server_start(struct server *s, uv_loop_t *loop, struct resild *d,
                 const char *path);

/* Begin a graceful stop: no new connections, answer what was read, flush,
 * close.  The loop ends when everything is closed. */
void server_stop(struct server *s);

/* Something outside a client's request changed what parked requests wait
 * for (a change from another daemon, leased tokens): serve them now and
 * write what was answered.  On the loop, outside any core call. */
void server_after_change(struct server *s);

/* After uv_run returns. */
void server_free(struct server *s);

#endif
