/*
 * server.c - Unix socket server (see server.h).
 *
 * Life of a request: libuv reads into the server's shared input buffer
 * (max_frame_bytes + slack); the resumable scanner finds where each object
 * ends without allocating; msgpack-c decodes the accepted frame into a
 * shared zone that is cleared after the request; methods_dispatch packs the
 * response into the connection's output buffer; after the batch one
 * uv_write sends it.  Two output buffers alternate (one being written, one
 * being filled), so the steady state allocates nothing.  Only the bytes of
 * an object not complete at the end of a read (or not processed while
 * output is paused) move to a buffer the connection owns, sized to what it
 * holds and grown up to max_frame_bytes + slack; it is freed once empty.
 *
 * Accepting: see server.h (bounded per loop turn, refusals cost nothing).
 * A notification runs its method with the answer packed into a scratch
 * buffer that is dropped.  A peer that half-closed is polled every
 * SERVER_HUP_MS until it is gone or done, so its permits and parked
 * requests come back when it exits.
 *
 * Must not: block, read the clock other than through uv_now, or free a
 * connection anywhere but its close callback.
 */
#include "server.h"

#include <errno.h>
#include <libgen.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"
#include "log.h"
#include "sdnotify.h"

/* Input room beyond one maximal frame; also the least room an owned input
 * buffer offers a read. */
#define READ_SLACK 4096
#define NOTIFY_KEEP (64 * 1024) /* notify_out capacity kept between uses */

struct conn {
    uv_pipe_t pipe; /* handle; pipe.data == this */
    struct server *srv;
    struct conn *prev, *next;
    struct rpc_client rc;  /* the RPC layer's view; rc.caller the core's */
    uint8_t *in;           /* input: srv->rbuf during a read callback when
                            * nothing was held, else owned (malloc), NULL
                            * when nothing is held; in_cap bytes */
    size_t in_cap, in_len; /* bytes held */
    size_t in_off;         /* start of the object being scanned */
    struct proto_scan scan;
    uint64_t partial_since_ms; /* first byte of an incomplete object; 0 */
    msgpack_sbuffer out[2];    /* out[cur] fills while out[!cur] is written */
    int cur;
    msgpack_packer pk; /* packs into out[cur] */
    uv_write_t wreq;
    int writing;
    int paused;              /* reading stopped for backpressure */
    uint64_t stall_since_ms; /* kernel refusing our output since; 0 */
    size_t stall_unsent;     /* libuv's unsent bytes seen then */
    int input_done;          /* EOF or stopping: answer what was read and
                              * what is parked, then close */
    int failed;              /* protocol error: take nothing more, close
                              * once the error is flushed */
    int closing;
    int half_closed;         /* EOF while still alive: counted in nhalf */
    struct conn *flush_next; /* on srv->to_flush */
    int to_flush;
};

static uint64_t now_ms(const struct server *s)
{
    return uv_now(s->loop);
}

/* Bytes of the write in flight that the kernel has not taken yet: output a
 * client has not read and the socket buffer could not hold.  libuv tries the
 * write at once, so a client that reads keeps this near zero. */
static size_t unsent(const struct conn *c)
{
    return c->pipe.write_queue_size;
}

/* rpc_client->queued: output waiting for the client, in flight and
 * packed. */
static size_t queued(struct rpc_client *rc)
{
    struct conn *c = (struct conn *)((char *)rc - offsetof(struct conn, rc));

    return unsent(c) + c->out[c->cur].size;
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (c->in != c->srv->rbuf)
        free(c->in);
    msgpack_sbuffer_destroy(&c->out[0]);
    msgpack_sbuffer_destroy(&c->out[1]);
    free(c);
}

/* Close now: release permits, unlink, free in the close callback. */
static void conn_close(struct conn *c)
{
    struct server *s = c->srv;

    if (c->closing)
        return;
    c->closing = 1;
    if (c->half_closed) {
        c->half_closed = 0;
        if (--s->nhalf == 0)
            uv_timer_stop(&s->hup);
    }
    if (c->to_flush) {
        struct conn **pp = &s->to_flush;
        while (*pp != c)
            pp = &(*pp)->flush_next;
        *pp = c->flush_next;
        c->to_flush = 0;
    }
    methods_client_gone(s->d, &c->rc, now_ms(s));
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    core_set_connections(s->d, s->nconns);
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_write(uv_write_t *req, int status);
static void conn_flush(struct conn *c);
static void schedule_wake(struct server *s);
static void after_io(struct server *s);

/*
 * rpc_client->flush: an answer to a parked request or an event was packed,
 * in the middle of the core's walk over its queues or sinks.  Writing now
 * could fail and close a connection under that walk, so the connection is
 * only queued here and flush_pending writes (or, for a subscriber over its
 * output bound, closes) it once the walk is over.
 */
static void caller_flush(struct rpc_client *rc)
{
    struct conn *c = (struct conn *)((char *)rc - offsetof(struct conn, rc));

    if (c->closing || c->to_flush)
        return;
    c->to_flush = 1;
    c->flush_next = c->srv->to_flush;
    c->srv->to_flush = c;
}

/* Write every connection caller_flush queued.  Call at the end of each
 * callback that can run the admission code. */
static void flush_pending(struct server *s)
{
    struct conn *c;

    while ((c = s->to_flush)) {
        s->to_flush = c->flush_next;
        c->to_flush = 0;
        conn_flush(c);
    }
}
static void conn_process(struct conn *c);
static int conn_keep_input(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/*
 * Send out[cur] if nothing is in flight: straight to the socket when it
 * takes it all (the common case: one write(2), no request, no poll change),
 * else the rest through uv_write, and out[cur] swaps with the other buffer.
 * Closes the connection only on a write error.
 */
static void conn_write(struct conn *c)
{
    msgpack_sbuffer *o = &c->out[c->cur];
    uv_buf_t b;
    int rc;

    if (c->closing || c->writing)
        return;
    if (o->size > 0) {
        b = uv_buf_init(o->data, (unsigned)o->size);
        rc = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
        if (rc < 0 && rc != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (rc == (int)o->size)
            msgpack_sbuffer_clear(o);
        else if (rc > 0)
            b = uv_buf_init(o->data + rc, (unsigned)(o->size - (size_t)rc));
    }
    if (o->size == 0)
        return;
    c->wreq.data = c;
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    c->writing = 1;
    c->cur ^= 1;
    msgpack_packer_init(&c->pk, &c->out[c->cur], msgpack_sbuffer_write);
}

/*
 * conn_write, then close a connection that is done: failed (its error is
 * out), or input ended and everything read is answered, nothing parked.
 * Not for the middle of conn_process, where read requests may remain.
 */
static void conn_flush(struct conn *c)
{
    if (c->rc.drop && !c->closing) {
        /* A subscriber that does not read its events: they would grow
         * without bound, so it goes (counted by the sink). */
        log_peer(now_ms(c->srv),
                 "client uid %u: not reading its events (%zu bytes "
                 "waiting); closing",
                 (unsigned)c->rc.caller.uid, unsent(c) + c->out[c->cur].size);
        conn_close(c);
        return;
    }
    conn_write(c);
    if (c->closing || c->writing || c->out[c->cur].size)
        return;
    if (c->failed || (c->input_done && !c->paused && !c->rc.caller.nparked))
        conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    c->writing = 0;
    c->stall_since_ms = 0;
    msgpack_sbuffer_clear(&c->out[c->cur ^ 1]);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        flush_pending(c->srv); /* answers its close let through */
        return;
    }
    conn_flush(c); /* what was packed while this write ran */
    if (c->closing || !c->paused || c->out[c->cur].size >= SERVER_OUT_LOW) {
        flush_pending(c->srv);
        return;
    }
    c->paused = 0;
    conn_process(c);
    conn_keep_input(c);
    if (!c->closing && !c->paused && !c->input_done && !c->failed)
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    conn_flush(c);
    after_io(c->srv); /* what it read may have freed or parked */
}

/* Reply with an error (when a msgid is known), then close once flushed. */
static void conn_fail(struct conn *c, int msgid_known, uint32_t msgid,
                      const char *code, const char *msg)
{
    log_peer(now_ms(c->srv), "client uid %u: %s (%s); closing",
             (unsigned)c->rc.caller.uid, code, msg);
    if (msgid_known)
        proto_pack_error(&c->pk, msgid, code, msg);
    c->failed = 1;
    core_caller_failed(c->srv->d, &c->rc.caller); /* parked: unanswered */
    uv_read_stop((uv_stream_t *)&c->pipe);
}

/* Scan, decode and answer every complete object in the input buffer, until
 * output backs up. */
static void conn_process(struct conn *c)
{
    struct server *s = c->srv;
    size_t max_frame = s->d->cfg.max_frame_bytes;

    while (!c->closing && !c->failed && c->in_off < c->in_len) {
        const uint8_t *obj = c->in + c->in_off;
        size_t avail = c->in_len - c->in_off;
        struct proto_msg m;
        const char *why;
        uint32_t id = 0;
        long n;

        if (c->out[c->cur].size >= SERVER_OUT_HIGH) {
            /* Hand the batch so far to the kernel; stop taking requests
             * only while a write is still in flight.  This bounds what one
             * connection holds to two buffers of SERVER_OUT_HIGH plus one
             * answer each. */
            conn_write(c);
            if (c->closing)
                return;
            if (c->out[c->cur].size >= SERVER_OUT_HIGH) {
                c->paused = 1;
                uv_read_stop((uv_stream_t *)&c->pipe);
                break;
            }
        }
        n = proto_scan_next(&c->scan, obj, avail, max_frame, PROTO_MAX_DEPTH);
        if (n == 0) {
            if (!c->partial_since_ms)
                c->partial_since_ms = now_ms(s);
            break;
        }
        if (n < 0) {
            int known = proto_peek_msgid(obj, avail, PROTO_REQUEST, &id);
            if (n == -PROTO_E2BIG) {
                core_bound(s->d, BOUND_MAX_FRAME, NULL,
                           "object over max_frame_bytes", now_ms(s));
                conn_fail(c, known, id, "frame_too_large",
                          "object exceeds max_frame_bytes");
            } else {
                core_bound(s->d, BOUND_PROTOCOL, NULL, "not msgpack-rpc",
                           now_ms(s));
                conn_fail(c, known, id, "protocol_error",
                          n == -PROTO_EDEPTH ? "nesting deeper than 8"
                                             : "not valid msgpack");
            }
            break;
        }
        if (proto_decode((const char *)obj, (size_t)n, &s->zone, &m, &why) <
            0) {
            core_bound(s->d, BOUND_PROTOCOL, NULL, "not msgpack-rpc",
                       now_ms(s));
            conn_fail(c, m.msgid_known, m.msgid, "protocol_error", why);
        } else if (m.type == PROTO_RESPONSE) {
            core_bound(s->d, BOUND_PROTOCOL, NULL, "not msgpack-rpc",
                       now_ms(s));
            conn_fail(c, m.msgid_known, m.msgid, "protocol_error",
                      "a response [1, msgid, error, result] was sent, but the "
                      "daemon asks nothing: only requests and notifications "
                      "are accepted");
        } else if (m.type == PROTO_NOTIFY) {
            /* Fire and forget (SPEC §3): the method runs, its answer is
             * packed into the scratch buffer and dropped, so nothing
             * reaches the client; an unknown method is counted and
             * ignored by methods_dispatch.  Clear, or free the scratch
             * when an answer made it big (a status of every key). */
            methods_dispatch(s->d, &c->rc, &m, &s->notify_pk, now_ms(s));
            if (s->notify_out.alloc > NOTIFY_KEEP) {
                msgpack_sbuffer_destroy(&s->notify_out);
                msgpack_sbuffer_init(&s->notify_out);
            }
            msgpack_sbuffer_clear(&s->notify_out);
        } else {
            methods_dispatch(s->d, &c->rc, &m, &c->pk, now_ms(s));
        }
        msgpack_zone_clear(&s->zone);
        c->in_off += (size_t)n;
        c->partial_since_ms = 0;
        proto_scan_init(&c->scan);
    }
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
    } else if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
}

static void on_wake(uv_timer_t *t);

/* Serve parked requests that can be answered now and arm the wake timer
 * for the next moment one could be (a limiter refill or a deadline). */
static void schedule_wake(struct server *s)
{
    uint64_t now = now_ms(s), at;

    at = core_wake(s->d, now);
    flush_pending(s);
    if (!at) {
        uv_timer_stop(&s->wake);
        return;
    }
    /* Never 0: libuv 1.44 runs a timer re-armed at 0 from its own callback
     * again in the same pass, for ever (libuv #4245, fixed in 1.48). */
    uv_timer_start(&s->wake, on_wake, at > now ? at - now : 1, 0);
}

static void on_wake(uv_timer_t *t)
{
    schedule_wake(t->data);
}

/* End of a read or write callback: serve parked requests only when the
 * batch changed something they wait for (admit_wake walks every one of
 * them); time-driven changes are the wake timer's.  Always write what the
 * admission code answered meanwhile (a close answers others). */
static void after_io(struct server *s)
{
    if (core_wake_due(s->d))
        schedule_wake(s);
    else
        flush_pending(s);
}

/*
 * Where the next read goes.  Nothing held: the shared buffer, which the
 * read callback that follows at once (libuv calls them in pairs) hands back
 * through conn_keep_input.  Else the owned buffer, grown (doubling, up to
 * rbuf_cap) to offer at least READ_SLACK bytes.  A zero-length buffer makes
 * libuv report UV_ENOBUFS: full at rbuf_cap (paused), or out of memory.
 */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    struct server *s = c->srv;

    (void)hint;
    if (c->in_len == 0) {
        if (c->in != s->rbuf)
            free(c->in);
        c->in = s->rbuf;
        c->in_cap = s->rbuf_cap;
    } else if (c->in_cap - c->in_len < READ_SLACK && c->in_cap < s->rbuf_cap) {
        size_t cap = c->in_cap * 2;
        uint8_t *p;

        while (cap < c->in_len + READ_SLACK)
            cap *= 2;
        if (cap > s->rbuf_cap)
            cap = s->rbuf_cap;
        p = realloc(c->in, cap);
        if (p) {
            c->in = p;
            c->in_cap = cap;
        }
    }
    *buf = uv_buf_init((char *)c->in + c->in_len,
                       (unsigned)(c->in_cap - c->in_len));
}

/*
 * After conn_process: give the shared buffer back.  Bytes still held (an
 * unfinished object, or objects left while paused) move to an owned buffer
 * of at least READ_SLACK bytes beyond them; an empty owned buffer is freed,
 * so an idle connection holds no input memory.  0, or -1 when out of
 * memory (the connection is closed: its bytes are lost).
 */
static int conn_keep_input(struct conn *c)
{
    struct server *s = c->srv;
    size_t cap = READ_SLACK;
    uint8_t *p;

    if (c->closing)
        c->in_len = 0;
    if (c->in_len == 0) {
        if (c->in != s->rbuf)
            free(c->in);
        c->in = NULL;
        c->in_cap = 0;
        return 0;
    }
    if (c->in != s->rbuf)
        return 0;
    while (cap < c->in_len + READ_SLACK)
        cap *= 2;
    if (cap > s->rbuf_cap)
        cap = s->rbuf_cap;
    p = malloc(cap);
    if (!p) {
        log_msg(LOG_WARN,
                "client uid %u: out of memory for %zu input bytes; "
                "closing",
                (unsigned)c->rc.caller.uid, c->in_len);
        c->in = NULL;
        c->in_cap = c->in_len = 0;
        conn_close(c);
        return -1;
    }
    memcpy(p, s->rbuf, c->in_len);
    c->in = p;
    c->in_cap = cap;
    return 0;
}

/* At EOF: 1 when the peer closed its socket entirely (POLLHUP), 0 when it
 * only shut down its writing side and may still read our answers. */
static int peer_gone(struct conn *c)
{
    struct pollfd p = {0};
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0)
        return 1;
    p.fd = fd;
    p.events = POLLIN;
    return poll(&p, 1, 0) < 0 || (p.revents & (POLLHUP | POLLERR));
}

static void on_hup(uv_timer_t *t);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = st->data;

    (void)buf;
    if (c->closing) {
        conn_keep_input(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        /* A full buffer of rbuf_cap is a paused one (the scanner refuses
         * an object that would not fit): wait for output to drain.  A
         * smaller one could not grow. */
        uv_read_stop(st);
        if (c->in_cap < c->srv->rbuf_cap) {
            log_msg(LOG_WARN,
                    "client uid %u: out of memory for input; "
                    "closing",
                    (unsigned)c->rc.caller.uid);
            conn_close(c);
            after_io(c->srv);
        } else {
            c->paused = 1;
        }
        return;
    }
    if (nread < 0) {
        /* EOF or reset.  What was read still counts (a client often
         * reports and exits).  A half-closed client may still read: its
         * answers and parked requests are finished before the close.  A
         * client that is gone (exit, SIGKILL, reset) is closed now, so its
         * parked requests and permits go back at once. */
        c->input_done = 1;
        uv_read_stop(st);
        conn_process(c);
        conn_keep_input(c);
        if (!c->closing && (nread != UV_EOF || peer_gone(c)))
            conn_close(c);
        else
            conn_flush(c);
        if (!c->closing && !c->half_closed) {
            /* Still answering a half-closed peer: watch for its exit. */
            struct server *s = c->srv;
            c->half_closed = 1;
            if (s->nhalf++ == 0)
                uv_timer_start(&s->hup, on_hup, SERVER_HUP_MS, SERVER_HUP_MS);
        }
        after_io(c->srv);
        return;
    }
    c->in_len += (size_t)nread;
    conn_process(c);
    if (conn_keep_input(c) == 0)
        conn_flush(c);
    after_io(c->srv);
}

/*
 * Every SERVER_HUP_MS while some peer has half-closed: one poll(2) over all
 * of them, and close those whose peer is gone (POLLHUP: it closed its end
 * too, by exit or close).  Their permits and parked requests go back now,
 * not when their parked requests time out.
 */
static void on_hup(uv_timer_t *t)
{
    struct server *s = t->data;
    struct conn *c;
    nfds_t n = 0, i;

    for (c = s->conns; c && n < s->max_clients; c = c->next) {
        uv_os_fd_t fd;
        if (!c->half_closed || c->closing ||
            uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0)
            continue;
        s->hup_fds[n].fd = fd;
        s->hup_fds[n].events = 0; /* POLLHUP and POLLERR are always told */
        s->hup_fds[n].revents = 0;
        s->hup_conns[n++] = c;
    }
    if (n == 0 || poll(s->hup_fds, n, 0) <= 0)
        return;
    for (i = 0; i < n; i++)
        if (s->hup_fds[i].revents & (POLLHUP | POLLERR))
            conn_close(s->hup_conns[i]);
    after_io(s); /* what the closes let through */
}

static int id_in(const struct id_list *l, uint32_t id)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        if (l->id[i] == id)
            return 1;
    return 0;
}

/* --- supplementary groups (issue 10) ------------------------------------
 * allow_gids/admin_gids match a peer's primary gid or any of its
 * supplementary groups (a client service joins the socket's group with
 * SupplementaryGroups=).  They are read with SO_PEERGROUPS: the groups the
 * kernel recorded at connect(2), so no race with a pid that exits and is
 * reused, and no /proc read (the unit's ProtectProc=invisible hides other
 * users' /proc/PID from resild).  At most SERVER_PEER_GROUPS are read; a
 * peer in more groups than that is matched on its primary gid only. */
#define SERVER_PEER_GROUPS 256

struct peer_groups {
    gid_t gid[SERVER_PEER_GROUPS];
    size_t n;
};

/* Read fd's peer's supplementary groups into pg; none when they cannot be
 * read (or there are over SERVER_PEER_GROUPS). */
static void peer_groups_read(int fd, struct peer_groups *pg)
{
    socklen_t len = sizeof(pg->gid);

    pg->n = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, pg->gid, &len) == 0)
        pg->n = len / sizeof(gid_t);
}

/* gid, or one of pg's groups, is in l. */
static int gids_in(const struct id_list *l, gid_t gid,
                   const struct peer_groups *pg)
{
    size_t i;

    if (id_in(l, gid))
        return 1;
    for (i = 0; i < pg->n; i++)
        if (id_in(l, pg->gid[i]))
            return 1;
    return 0;
}
/* --- end supplementary groups --- */

/* Fill caller identity from SO_PEERCRED of fd; 0 if admitted, -1 if not
 * in the allow lists, -2 if the credentials cannot be read. */
static int admit(struct server *s, int fd, struct caller *cl)
{
    const struct config *cfg = &s->d->cfg;
    struct ucred cred;
    struct peer_groups pg;
    socklen_t len = sizeof(cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return -2;
    cl->uid = cred.uid;
    cl->gid = cred.gid;
    pg.n = 0; /* read only when a gid list is configured */
    if (cfg->admin_gids.n || cfg->allow_gids.n)
        peer_groups_read(fd, &pg);
    if (cfg->admin_ids_given)
        cl->admin = id_in(&cfg->admin_uids, cred.uid) ||
                    gids_in(&cfg->admin_gids, cred.gid, &pg);
    else
        cl->admin = cred.uid == 0 || cred.uid == s->self_uid;
    if (cfg->allow_uids.n == 0 && cfg->allow_gids.n == 0)
        return 0;
    if (id_in(&cfg->allow_uids, cred.uid) ||
        gids_in(&cfg->allow_gids, cred.gid, &pg) || cl->admin)
        return 0;
    return -1;
}

/* Refuse fd: one non-blocking send of a pre-packed error frame (msgid 0;
 * whatever the socket buffer does not take is lost, and a fresh socket
 * takes it), then close.  No handle, no buffer. */
static void refuse(struct server *s, int fd, const msgpack_sbuffer *frame,
                   enum core_bound why)
{
    core_bound(s->d, why, NULL, "connection refused", now_ms(s));
    (void)!send(fd, frame->data, frame->size, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

/* Serve the accepted socket fd (non-blocking, close-on-exec), or refuse
 * it.  Takes fd. */
static void conn_accept(struct server *s, int fd)
{
    struct caller who = {0};
    struct conn *c;
    int rc;

    rc = admit(s, fd, &who);
    if (rc == -2) {
        close(fd);
        return;
    }
    if (s->nconns >= s->max_clients || s->stopping) {
        log_peer(now_ms(s),
                 "client uid %u: busy (max_clients %u connections "
                 "already open); refused",
                 (unsigned)who.uid, s->max_clients);
        refuse(s, fd, &s->refuse_busy, BOUND_MAX_CLIENTS);
        return;
    }
    if (rc < 0) {
        log_peer(now_ms(s), "refused client uid %u gid %u: not in allow lists",
                 (unsigned)who.uid, (unsigned)who.gid);
        refuse(s, fd, &s->refuse_forbidden, BOUND_NOT_ALLOWED);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        log_msg(LOG_WARN, "out of memory for a connection; refused");
        close(fd);
        return;
    }
    c->srv = s;
    msgpack_sbuffer_init(&c->out[0]);
    msgpack_sbuffer_init(&c->out[1]);
    msgpack_packer_init(&c->pk, &c->out[0], msgpack_sbuffer_write);
    methods_client_init(&c->rc, &c->pk, caller_flush);
    c->rc.queued = queued;
    c->rc.caller.uid = who.uid;
    c->rc.caller.gid = who.gid;
    c->rc.caller.admin = who.admin;
    proto_scan_init(&c->scan);
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    core_set_connections(s->d, s->nconns);
    rc = uv_pipe_open(&c->pipe, fd);
    if (rc < 0) {
        log_msg(LOG_WARN, "accept: %s", uv_strerror(rc));
        close(fd); /* not the handle's: uv_pipe_open failed */
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

/*
 * The listening socket is readable: accept at most SERVER_ACCEPT_BATCH
 * connections, then let the loop serve everything else that is ready.
 * The poll is level-triggered, so what stays in the backlog is taken next
 * turn.  Out of file descriptors, stop watching (it would report readable
 * at once, for ever) until the next cron tick.
 */
static void on_listen_ready(uv_poll_t *h, int status, int events)
{
    struct server *s = h->data;
    int i;

    (void)events;
    if (status < 0) {
        log_msg(LOG_WARN, "listener: %s", uv_strerror(status));
        return;
    }
    for (i = 0; i < SERVER_ACCEPT_BATCH && s->listening; i++) {
        int fd =
            accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_accept(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        log_peer(now_ms(s), "accept: %s; not accepting for %d ms",
                 strerror(errno), SERVER_CRON_MS);
        uv_poll_stop(&s->listener);
        s->accept_paused = 1;
        break;
    }
    flush_pending(s);
}

/*
 * A client that does not read its answers: part of the write in flight has
 * sat refused by the kernel, not shrinking, for stall_timeout_ms; or for a
 * second while more than max_output_bytes waits for it.  Called from cron.
 */
static int conn_not_reading(struct conn *c, uint64_t now)
{
    size_t n = unsent(c);

    if (n == 0) {
        c->stall_since_ms = 0;
        return 0;
    }
    if (!c->stall_since_ms || n < c->stall_unsent) {
        c->stall_since_ms = now;
        c->stall_unsent = n;
        return 0;
    }
    const struct config *cfg = &c->srv->d->cfg;

    return now - c->stall_since_ms >= cfg->stall_timeout_ms ||
           (now - c->stall_since_ms >= 1000 &&
            n + c->out[c->cur].size > cfg->max_output_bytes);
}

static void on_cron(uv_timer_t *t)
{
    struct server *s = t->data;
    uint64_t now = now_ms(s);
    struct conn *c, *next;

    core_tick(s->d, now);
    schedule_wake(s);
    if (s->accept_paused && s->listening) {
        s->accept_paused = 0;
        uv_poll_start(&s->listener, UV_READABLE, on_listen_ready);
    }
    for (c = s->conns; c; c = next) {
        next = c->next;
        if (c->partial_since_ms && !c->paused && !c->input_done &&
            now - c->partial_since_ms > s->d->cfg.partial_timeout_ms) {
            core_bound(s->d, BOUND_PARTIAL_TIMEOUT, NULL,
                       "partial object past partial_timeout_ms", now);
            log_peer(now,
                     "client uid %u: partial object for over %d ms; "
                     "closing",
                     (unsigned)c->rc.caller.uid, s->d->cfg.partial_timeout_ms);
            conn_close(c);
        } else if (conn_not_reading(c, now)) {
            core_bound(s->d, BOUND_OUTPUT, NULL,
                       "a client that does not read its answers", now);
            log_peer(now,
                     "client uid %u: not reading its answers "
                     "(%zu bytes waiting); closing",
                     (unsigned)c->rc.caller.uid,
                     unsent(c) + c->out[c->cur].size);
            conn_close(c);
        } else if (s->stopping && now >= s->stop_deadline_ms) {
            conn_close(c);
        }
    }
    flush_pending(s);
    if (s->stopping && !s->conns) {
        int i;
        uv_close((uv_handle_t *)&s->cron, NULL);
        uv_close((uv_handle_t *)&s->wake, NULL);
        uv_close((uv_handle_t *)&s->hup, NULL);
        for (i = 0; i < 3; i++)
            uv_close((uv_handle_t *)&s->sig[i], NULL);
    }
}

void server_after_change(struct server *s)
{
    after_io(s);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;

    if (signum == SIGHUP) {
        if (s->on_reload) {
            s->on_reload(s->on_reload_ctx);
            after_io(s); /* the new limits may let parked requests by */
        }
        return;
    }
    log_msg(LOG_INFO, "%s: draining %u connection(s)", strsignal(signum),
            s->nconns);
    server_stop(s);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct server *s = h->data;

    close(s->listen_fd);
    s->listen_fd = -1;
}

void server_stop(struct server *s)
{
    struct conn *c, *next;

    if (s->stopping)
        return;
    s->stopping = 1;
    s->stop_deadline_ms = now_ms(s) + SERVER_DRAIN_MS;
    if (s->on_stop)
        s->on_stop(s->on_stop_ctx);
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
        if (!s->activated) /* systemd's socket outlives us: never unlink */
            unlink(s->path);
        s->listening = 0;
    }
    /* Answer what was read (a paused connection goes on once its output
     * drains), then every parked request; nothing parks from now on. */

    for (c = s->conns; c; c = c->next) {
        if (c->failed)
            continue;
        c->input_done = 1;
        uv_read_stop((uv_stream_t *)&c->pipe);
        conn_process(c);
        conn_keep_input(c);
    }
    core_stop(s->d, now_ms(s));
    flush_pending(s);
    for (c = s->conns; c; c = next) {
        next = c->next; /* conn_flush may close c, and only c */
        conn_flush(c);
    }
}

/* The directory that will hold path must exist: bind(2) would say ENOENT,
 * and an operator should read which directory is missing, not (as libuv's
 * bind reported it) "permission denied".  0, or -1 with a message. */
static int check_dir(const char *path)
{
    char copy[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *dir;
    struct stat st;

    snprintf(copy, sizeof(copy), "%s", path);
    dir = dirname(copy);
    if (stat(dir, &st) < 0) {
        if (errno == ENOENT)
            log_msg(LOG_ERR,
                    "cannot listen on %s: directory %s does not exist "
                    "(create it, or choose another path with -s)",
                    path, dir);
        else
            log_msg(LOG_ERR, "cannot listen on %s: directory %s: %s", path, dir,
                    strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_msg(LOG_ERR, "cannot listen on %s: %s is not a directory", path,
                dir);
        return -1;
    }
    return 0;
}

/* Refuse a symlink or non-socket at path; unlink a stale socket; fail if a
 * daemon answers there.  Never blocks: the probe connect is non-blocking. */
static int check_path(const char *path)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd, rc;

    if (check_dir(path) < 0)
        return -1;
    if (lstat(path, &st) < 0)
        return errno == ENOENT
                   ? 0
                   : (log_msg(LOG_ERR, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        log_msg(LOG_ERR,
                "%s exists and is not a socket (%s); refusing to "
                "touch it",
                path, S_ISLNK(st.st_mode) ? "a symlink" : "another file");
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
        close(fd);
        log_msg(LOG_ERR,
                "another resild is already listening on %s; "
                "exiting",
                path);
        return -1;
    }
    close(fd);
    if (errno != ECONNREFUSED) {
        log_msg(LOG_ERR, "cannot probe %s: %s", path, strerror(errno));
        return -1;
    }
    log_msg(LOG_INFO, "removing stale socket %s", path);
    if (unlink(path) < 0 && errno != ENOENT) {
        log_msg(LOG_ERR, "cannot remove stale socket %s: %s", path,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Lower max_clients to what the open-file limit allows. */
static uint32_t fit_clients(uint32_t want)
{
    struct rlimit rl;
    const rlim_t reserve = 64; /* listener, loop, logs, spares */

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return want;
    if (rl.rlim_cur < want + reserve && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want + reserve) {
        uint32_t fit =
            rl.rlim_cur > reserve + 1 ? (uint32_t)(rl.rlim_cur - reserve) : 1;
        log_msg(LOG_WARN,
                "max_clients lowered from %u to %u to fit the "
                "open-file limit (%llu)",
                want, fit, (unsigned long long)rl.rlim_cur);
        return fit;
    }
    return want;
}

/* The two refusal frames, packed once: [1, 0, {code, message}, nil]. */
static int pack_refusals(struct server *s)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, &s->refuse_busy, msgpack_sbuffer_write);
    proto_pack_error(&pk, 0, "busy", "max_clients connections already open");
    msgpack_packer_init(&pk, &s->refuse_forbidden, msgpack_sbuffer_write);
    proto_pack_error(&pk, 0, "forbidden",
                     "uid/gid not in allow_uids/allow_gids");
    return s->refuse_busy.size && s->refuse_forbidden.size ? 0 : -1;
}

/* Bind and listen on path, non-blocking, into s->listen_fd.  The socket is
 * born with its final mode (umask around bind): never chmod after bind.
 * 0, or -1 with a message logged and nothing left behind. */
static int listen_on(struct server *s, const char *path)
{
    struct sockaddr_un sa;
    mode_t old;
    int fd, rc, err;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_msg(LOG_ERR, "cannot listen on %s: socket: %s", path,
                strerror(errno));
        return -1;
    }
    old = umask(~s->d->cfg.socket_mode & 0777);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    err = errno;
    umask(old);
    if (rc < 0) {
        log_msg(LOG_ERR, "cannot listen on %s: %s", path,
                err == ENOENT ? "its directory does not exist" : strerror(err));
        close(fd);
        return -1;
    }
    if (listen(fd, 511) < 0) {
        log_msg(LOG_ERR, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    s->listen_fd = fd;
    return 0;
}

/* --- systemd socket activation (sdnotify.h) ------------------------------
 * Take the socket systemd passed (resild.socket), if any: 1 taken
 * (s->listen_fd, s->path its name, s->activated), 0 none passed, -1 with a
 * message when one was passed that resild cannot serve.  The stale-socket
 * probe and bind are skipped: the path is systemd's, live, and never ours
 * to unlink.  Its mode and group are the .socket unit's SocketMode= and
 * SocketGroup=; "socket_mode" does not apply. */
static int take_activated(struct server *s, const char *path)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    size_t n;
    char err[256];
    int fd = sdnotify_listen_fd(err, sizeof(err));

    if (fd == -1)
        return 0;
    if (fd < 0) {
        log_msg(LOG_ERR, "socket activation: %s", err);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
        len <= offsetof(struct sockaddr_un, sun_path) ||
        sa.sun_path[0] == '\0') {
        log_msg(LOG_ERR, "socket activation: the passed socket has no path "
                         "(ListenStream= must be an absolute path)");
        close(fd);
        return -1;
    }
    n = strnlen(sa.sun_path, len - offsetof(struct sockaddr_un, sun_path));
    if (n >= sizeof(s->path))
        n = sizeof(s->path) - 1;
    memcpy(s->path, sa.sun_path, n);
    s->path[n] = '\0';
    s->listen_fd = fd;
    s->activated = 1;
    if (strcmp(s->path, path) != 0)
        log_msg(LOG_WARN,
                "socket activation: serving %s, the socket systemd passed, "
                "not %s",
                s->path, path);
    else
        log_msg(LOG_INFO,
                "socket activation: serving %s as passed by "
                "systemd (its mode and group are the .socket's)",
                s->path);
    return 1;
}
/* --- end socket activation --- */

int server_start(struct server *s, uv_loop_t *loop, struct resild *d,
                 const char *path)
{
    static const int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    int rc, i;

    memset(s, 0, sizeof(*s));
    s->listen_fd = -1;
    msgpack_sbuffer_init(&s->notify_out);
    msgpack_packer_init(&s->notify_pk, &s->notify_out, msgpack_sbuffer_write);
    msgpack_sbuffer_init(&s->refuse_busy);
    msgpack_sbuffer_init(&s->refuse_forbidden);
    s->rbuf_cap = d->cfg.max_frame_bytes + READ_SLACK;
    s->loop = loop;
    s->d = d;
    s->self_uid = getuid();
    s->max_clients = fit_clients(d->cfg.max_clients);
    if (strlen(path) >= sizeof(s->path)) {
        log_msg(LOG_ERR, "socket path too long: %s", path);
        return -1;
    }
    strcpy(s->path, path);
    if (!msgpack_zone_init(&s->zone, 8192))
        return -1;
    if ((rc = take_activated(s, path)) < 0 || (rc == 0 && check_path(path) < 0))
        return -1;
    if (pack_refusals(s) < 0 || !(s->rbuf = malloc(s->rbuf_cap)) ||
        !(s->hup_fds = calloc(s->max_clients, sizeof(*s->hup_fds))) ||
        !(s->hup_conns = calloc(s->max_clients, sizeof(*s->hup_conns)))) {
        log_msg(LOG_ERR, "out of memory");
        return -1;
    }
    if (!s->activated && listen_on(s, path) < 0)
        return -1;
    if ((rc = uv_poll_init(loop, &s->listener, s->listen_fd)) < 0) {
        log_msg(LOG_ERR, "cannot listen on %s: %s", s->path, uv_strerror(rc));
        if (!s->activated)
            unlink(path);
        return -1; /* server_free closes listen_fd */
    }
    s->listener.data = s;
    uv_poll_start(&s->listener, UV_READABLE, on_listen_ready);
    s->listening = 1;
    uv_timer_init(loop, &s->cron);
    s->cron.data = s;
    uv_timer_start(&s->cron, on_cron, SERVER_CRON_MS, SERVER_CRON_MS);
    uv_timer_init(loop, &s->wake);
    s->wake.data = s;
    uv_timer_init(loop, &s->hup);
    s->hup.data = s;
    for (i = 0; i < 3; i++) {
        uv_signal_init(loop, &s->sig[i]);
        s->sig[i].data = s;
        uv_signal_start(&s->sig[i], on_signal, signums[i]);
    }
    return 0;
}

void server_free(struct server *s)
{
    msgpack_zone_destroy(&s->zone);
    msgpack_sbuffer_destroy(&s->notify_out);
    msgpack_sbuffer_destroy(&s->refuse_busy);
    msgpack_sbuffer_destroy(&s->refuse_forbidden);
    free(s->rbuf);
    free(s->hup_fds);
    free(s->hup_conns);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
}
