/*
 * http.h - the optional HTTP/1.1 listener for GET /metrics (config
 * "metrics.listen"), on the daemon's libuv loop.  Off by default; when on,
 * it is the daemon's one TCP listener, bound to exactly the address the
 * configuration gives ("A.B.C.D:PORT"), or a Unix socket path.
 *
 * Not a web server: one resource, GET and HEAD, one response per
 * connection ("Connection: close"), no keep-alive, no chunking, no bodies
 * read.  Answers: 200 with the text the render callback gives
 * ("Content-Type: text/plain; version=0.0.4; charset=utf-8"), 404 for any
 * other path, 405 (Allow: GET, HEAD) for another method on /metrics, 400
 * for a malformed request, 505 for an HTTP version other than 1.x, 408
 * when the request head is not complete in time, 431 when it passes
 * HTTP_MAX_HEAD_BYTES, 503 when max_conns connections are open, 500 when
 * the render callback fails.
 *
 * Bounds (every size and time a peer controls): request line + headers
 * <= HTTP_MAX_HEAD_BYTES; the whole head within request_timeout_ms of
 * accept (a slowloris gets 408 and is closed); the response written within
 * write_timeout_ms (a client that does not read is closed); at most
 * max_conns connections, further ones refused with one non-blocking send
 * of a canned 503 and a close (no handle, no buffer); at most
 * HTTP_ACCEPT_BATCH accepts per loop turn (the listener is our own
 * level-triggered uv_poll_t, as in server.h).  After its response a
 * connection shuts down its write side and reads and drops what the
 * client still sends for at most HTTP_LINGER_MS, so that closing with
 * unread input (a pipelined request, a body) does not reset the
 * connection before the client has read the answer.
 *
 * Never blocks the loop: every write is a uv_write, every socket
 * non-blocking.  Memory: a connection owns its head buffer and a copy of
 * the response, freed in its close callbacks.
 */
#ifndef RESIL_HTTP_H
#define RESIL_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define HTTP_MAX_HEAD_BYTES 8192 /* request line + headers */
#define HTTP_ACCEPT_BATCH 16     /* connections accepted per loop turn */
#define HTTP_LINGER_MS 1000      /* reading and dropping after a response */
#define HTTP_PAUSE_MS 100        /* out of fds: accepting again after */

/* Defaults of struct http_conf (a field left 0 takes its default). */
#define HTTP_DEFAULT_MAX_CONNS 16
#define HTTP_DEFAULT_REQUEST_TIMEOUT_MS 5000
#define HTTP_DEFAULT_WRITE_TIMEOUT_MS 10000
#define HTTP_DEFAULT_UNIX_MODE 0660

/*
 * The page: called once per GET or HEAD of /metrics, on the loop thread.
 * Returns the text and its length in *len, or NULL for a 500.  The text
 * is borrowed: http copies it before returning to the loop, so it need
 * only stay valid until the callback's caller returns (a buffer the daemon
 * reuses for every render is fine).
 */
typedef const char *(*http_render_fn)(void *ctx, size_t *len);

struct http_conf {
    uint32_t max_conns;          /* open connections; more get a 503 */
    uint32_t request_timeout_ms; /* accept to complete request head */
    uint32_t write_timeout_ms;   /* response handed over to the client */
    unsigned unix_mode;          /* permission bits of a Unix socket */
};

/* Counters for the daemon's own metrics; only ever increase. */
struct http_stats {
    uint64_t accepted;  /* connections served */
    uint64_t refused;   /* 503: max_conns open */
    uint64_t responses; /* answers written, any status */
    uint64_t ok;        /* 200s */
    uint64_t bad;       /* 400, 404, 405, 431, 505 */
    uint64_t timeouts;  /* 408s, and writes not taken in time */
};

struct http_conn;

struct http {
    uv_loop_t *loop;
    struct http_conf conf;
    http_render_fn render;
    void *ctx;
    uv_poll_t listener; /* readable: connections wait in the backlog */
    int listen_fd;      /* owned; -1 when closed */
    int listening;
    uv_timer_t pause; /* out of fds: watches the listener again */
    int started;      /* listener and pause are initialised handles */
    int stopping;
    struct http_conn *conns;
    uint32_t nconns;
    char path[108]; /* the Unix socket path, "" for TCP */
    dev_t path_dev; /* the socket we bound there: unlinked at stop only */
    ino_t path_ino; /* if the path still names it */
    int port;       /* the TCP port bound (useful when 0 was asked) */
    struct http_stats stats;
    char discard[4096]; /* where lingering input goes */
};

/*
 * Listen on listen_addr ("A.B.C.D:PORT", port 0 picking a free one, or an
 * absolute Unix path: a symlink or non-socket there is refused, a live
 * listener too, a stale socket unlinked) and serve render's text at
 * /metrics on loop.  conf may be NULL (defaults).  h is the caller's and
 * must stay put until the loop has run the close callbacks after
 * http_stop.  Returns 0, or -1 with one line in err (nothing left open).
 */
int http_start(struct http *h, uv_loop_t *loop, const char *listen_addr,
               const struct http_conf *conf, http_render_fn render, void *ctx,
               char *err, size_t errcap);

/* Stop: close the listener (unlinking a Unix path we bound), drop every
 * connection.  Memory is freed by close callbacks, so the loop must run
 * once more.  Idempotent; harmless if http_start failed. */
void http_stop(struct http *h);

/* ---- the request-head parser, exposed for tests ---- */

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_OTHER };

struct http_req {
    /* Parser state: zero the struct before the first call, then call
     * again with the same buffer grown; work is linear in the bytes. */
    size_t off;     /* start of the first line not yet parsed */
    size_t checked; /* bytes checked for forbidden control characters */
    int have_line;  /* request line parsed */
    /* The request, once have_line. */
    enum http_method method;
    size_t path_off, path_len; /* the target's path (no query) in buf */
    int minor;                 /* HTTP/1.minor */
};

/*
 * Parse the request head in buf[0..len): request line (leading empty lines
 * skipped), header lines, empty line; CRLF or bare LF line ends.  Returns
 * the head's length (> 0) when complete, 0 when more is needed, or the
 * negative HTTP status to answer: -400 (a control character, a CR not
 * before LF, a bad request line or header line, a folded header, a target
 * that is neither "/..." nor "http://host/..."), -505 (HTTP/ but not 1.x).
 * Refuses garbage as soon as it is seen, not when the head ends.
 */
int http_parse_head(struct http_req *r, const char *buf, size_t len);

#endif
