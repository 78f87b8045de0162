/*
 * http.c - GET /metrics over HTTP/1.1 (see http.h).
 *
 * Life of a connection: accepted (or refused with a canned 503) ->
 * READING: bytes go into its head buffer, parsed as they come; the request
 * timer runs from accept -> WRITING: one uv_write of status line, headers
 * and the body copied from the render callback, then uv_shutdown; the
 * write timer runs -> LINGER: after the shutdown, input is read into a
 * shared scratch buffer and dropped until EOF or HTTP_LINGER_MS -> closed.
 * A timer firing in READING answers 408; in WRITING or LINGER it closes.
 *
 * Must not: block, log (the daemon reads http->stats), read a clock other
 * than through libuv timers, or free a connection anywhere but its close
 * callbacks (two handles: the stream and the timer).
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum phase { READING, WRITING, LINGER };

struct http_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u; /* u.handle.data == this */
    uv_timer_t timer;
    struct http *h;
    struct http_conn *prev, *next;
    enum phase phase;
    int closing;
    int handles_open; /* freed when the last close callback runs */
    struct http_req req;
    size_t head_len;
    char head[HTTP_MAX_HEAD_BYTES];
    char hdr[256]; /* status line and headers of the response */
    char *body;    /* owned copy of the page, or NULL */
    uv_write_t wreq;
    uv_shutdown_t sreq;
};

static const char refuse_503[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 29\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "too many metrics connections\n";

/* ---- the request-head parser ---- */

static int tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Forbidden anywhere in a head: controls other than HT, CR, LF, and DEL. */
static int bad_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

/* "METHOD SP target SP HTTP/d.d" in line[0..n). */
static int parse_request_line(struct http_req *r, const char *buf, size_t off,
                              size_t n)
{
    const char *line = buf + off, *sp1, *sp2, *v, *t;
    size_t mlen, tlen, i;

    if (!(sp1 = memchr(line, ' ', n)))
        return -400;
    mlen = (size_t)(sp1 - line);
    if (mlen == 0)
        return -400;
    for (i = 0; i < mlen; i++)
        if (!tchar((unsigned char)line[i]))
            return -400;
    t = sp1 + 1;
    if (!(sp2 = memchr(t, ' ', n - mlen - 1)))
        return -400;
    tlen = (size_t)(sp2 - t);
    for (i = 0; i < tlen; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return -400;
    v = sp2 + 1;
    if ((size_t)(line + n - v) != 8 || memcmp(v, "HTTP/", 5) != 0 ||
        v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return -400;
    if (v[5] != '1')
        return -505;
    r->minor = v[7] - '0';
    if (mlen == 3 && !memcmp(line, "GET", 3))
        r->method = HTTP_GET;
    else if (mlen == 4 && !memcmp(line, "HEAD", 4))
        r->method = HTTP_HEAD;
    else
        r->method = HTTP_OTHER;
    /* origin-form "/path?query", or absolute-form "http://host/path". */
    if (tlen >= 7 && !strncasecmp(t, "http://", 7)) {
        const char *slash = memchr(t + 7, '/', tlen - 7);
        if (!slash)
            return -400;
        tlen -= (size_t)(slash - t);
        t = slash;
    } else if (tlen == 0 || t[0] != '/') {
        return -400;
    }
    r->path_off = (size_t)(t - buf);
    for (r->path_len = 0;
         r->path_len < tlen && t[r->path_len] != '?' && t[r->path_len] != '#';
         r->path_len++)
        ;
    return 0;
}

/* "name: value" in line[0..n): a token, a colon, then any non-control. */
static int header_ok(const char *line, size_t n)
{
    size_t i = 0;

    while (i < n && tchar((unsigned char)line[i]))
        i++;
    return i > 0 && i < n && line[i] == ':';
}

int http_parse_head(struct http_req *r, const char *buf, size_t len)
{
    size_t i;

    /* Garbage is refused as soon as it arrives: controls, a lone CR. */
    for (i = r->checked; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (bad_ctl(c))
            return -400;
        if (c == '\r') {
            if (i + 1 == len)
                break; /* decided by the next byte */
            if (buf[i + 1] != '\n')
                return -400;
        }
    }
    r->checked = i;
    for (;;) {
        const char *nl = memchr(buf + r->off, '\n', len - r->off);
        size_t n, start = r->off;
        int rc;

        if (!nl)
            break;
        n = (size_t)(nl - (buf + start));
        r->off = start + n + 1;
        if (n && buf[start + n - 1] == '\r')
            n--;
        if (!r->have_line) {
            if (n == 0)
                continue; /* empty lines before the request line */
            if ((rc = parse_request_line(r, buf, start, n)) < 0)
                return rc;
            r->have_line = 1;
            continue;
        }
        if (n == 0)
            return (int)r->off; /* the empty line ending the head */
        if (buf[start] == ' ' || buf[start] == '\t' ||
            !header_ok(buf + start, n))
            return -400; /* obsolete line folding, or not a header */
    }
    /* An unfinished request line already malformed: no need to wait. */
    if (!r->have_line) {
        for (i = r->off; i < len && buf[i] != ' '; i++)
            if (!tchar((unsigned char)buf[i]) && buf[i] != '\r' &&
                buf[i] != '\n')
                return -400;
    }
    return 0;
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *handle)
{
    struct http_conn *c = handle->data;

    if (--c->handles_open > 0)
        return;
    free(c->body);
    free(c);
}

/* Close now; freed when both handles' close callbacks have run. */
static void conn_close(struct http_conn *c)
{
    struct http *h = c->h;

    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nconns--;
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close(&c->u.handle, on_conn_closed);
}

static void on_timer(uv_timer_t *t);

static void arm(struct http_conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_linger_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf)
{
    struct http_conn *c = handle->data;

    (void)hint;
    *buf = uv_buf_init(c->h->discard, sizeof(c->h->discard));
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0) /* EOF or error: the client is done */
        conn_close(s->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;

    if (c->closing)
        return; /* closed while the shutdown waited: ECANCELED */
    if (status < 0 ||
        uv_read_start(&c->u.stream, on_linger_alloc, on_linger_read) < 0) {
        conn_close(c);
        return;
    }
    c->phase = LINGER;
    arm(c, HTTP_LINGER_MS);
}

static void on_write(uv_write_t *req, int status)
{
    struct http_conn *c = req->data;

    if (status < 0 && !c->closing)
        conn_close(c);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Error";
}

/*
 * Answer status (200: render the page) and end the connection after it:
 * stop reading, write, shut down the write side.  head_only for HEAD:
 * the headers of the GET, no body.
 */
static void respond(struct http_conn *c, int status, int head_only)
{
    struct http *h = c->h;
    const char *text = NULL;
    size_t len = 0;
    uv_buf_t bufs[2];
    int n;

    uv_read_stop(&c->u.stream);
    uv_timer_stop(&c->timer);
    if (status == 200) {
        text = h->render(h->ctx, &len);
        if (!text)
            status = 500;
    }
    if (status != 200) {
        static char msg[64];
        snprintf(msg, sizeof(msg), "%d %s\n", status, reason(status));
        text = msg;
        len = strlen(msg);
    }
    n = snprintf(c->hdr, sizeof(c->hdr),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "%s"
                 "Connection: close\r\n"
                 "\r\n",
                 status, reason(status),
                 status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                               : "text/plain; charset=utf-8",
                 len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    bufs[0] = uv_buf_init(c->hdr, (unsigned)n);
    if (head_only || len == 0) {
        len = 0;
    } else if (!(c->body = malloc(len))) {
        conn_close(c); /* out of memory: the client sees a close */
        return;
    } else {
        memcpy(c->body, text, len);
        bufs[1] = uv_buf_init(c->body, (unsigned)len);
    }
    h->stats.responses++;
    if (status == 200)
        h->stats.ok++;
    else if (status == 408)
        h->stats.timeouts++;
    else if (status != 500)
        h->stats.bad++;
    c->phase = WRITING;
    c->wreq.data = c;
    c->sreq.data = c;
    if (uv_write(&c->wreq, &c->u.stream, bufs, len ? 2 : 1, on_write) < 0 ||
        uv_shutdown(&c->sreq, &c->u.stream, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    arm(c, h->conf.write_timeout_ms);
}

static void on_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;

    if (c->phase == READING) {
        respond(c, 408, 0);
        return;
    }
    if (c->phase == WRITING)
        c->h->stats.timeouts++;
    conn_close(c);
}

/* A complete head: route it. */
static void serve(struct http_conn *c)
{
    const struct http_req *r = &c->req;
    static const char path[] = "/metrics";

    if (r->path_len != sizeof(path) - 1 ||
        memcmp(c->head + r->path_off, path, r->path_len) != 0)
        respond(c, 404, r->method == HTTP_HEAD);
    else if (r->method == HTTP_OTHER)
        respond(c, 405, 0);
    else
        respond(c, 200, r->method == HTTP_HEAD);
}

static void on_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf)
{
    struct http_conn *c = handle->data;

    (void)hint;
    *buf = uv_buf_init(c->head + c->head_len,
                       (unsigned)(sizeof(c->head) - c->head_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = s->data;
    int rc;

    (void)buf;
    if (nread < 0) { /* EOF before a whole head, or an error */
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->head_len += (size_t)nread;
    rc = http_parse_head(&c->req, c->head, c->head_len);
    if (rc > 0)
        serve(c);
    else if (rc < 0)
        respond(c, -rc, 0);
    else if (c->head_len == sizeof(c->head))
        respond(c, 431, 0);
}

/* Serve fd (non-blocking, close-on-exec) or refuse it.  Takes fd. */
static void conn_accept(struct http *h, int fd)
{
    struct http_conn *c;
    int rc;

    if (h->nconns >= h->conf.max_conns || h->stopping ||
        !(c = calloc(1, sizeof(*c)))) {
        h->stats.refused++;
        (void)!send(fd, refuse_503, sizeof(refuse_503) - 1,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
        return;
    }
    c->h = h;
    if (h->path[0]) {
        uv_pipe_init(h->loop, &c->u.pipe, 0);
        rc = uv_pipe_open(&c->u.pipe, fd);
    } else {
        uv_tcp_init(h->loop, &c->u.tcp);
        rc = uv_tcp_open(&c->u.tcp, fd);
        if (rc == 0)
            uv_tcp_nodelay(&c->u.tcp, 1);
    }
    c->u.handle.data = c;
    uv_timer_init(h->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    if (rc < 0) {
        close(fd); /* not the handle's: opening it failed */
        conn_close(c);
        return;
    }
    h->stats.accepted++;
    arm(c, h->conf.request_timeout_ms);
    if (uv_read_start(&c->u.stream, on_alloc, on_read) < 0)
        conn_close(c);
}

static void on_listen_ready(uv_poll_t *p, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
    struct http *h = t->data;

    if (h->listening)
        uv_poll_start(&h->listener, UV_READABLE, on_listen_ready);
}

/* Accept at most HTTP_ACCEPT_BATCH, then let the loop serve the rest; the
 * poll is level-triggered, so the backlog is taken on later turns.  Out of
 * fds, stop watching for HTTP_PAUSE_MS (it would be readable for ever). */
static void on_listen_ready(uv_poll_t *p, int status, int events)
{
    struct http *h = p->data;
    int i;

    (void)events;
    if (status < 0)
        return;
    for (i = 0; i < HTTP_ACCEPT_BATCH && h->listening; i++) {
        int fd =
            accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_accept(h, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            uv_poll_stop(&h->listener);
            uv_timer_start(&h->pause, on_pause_over, HTTP_PAUSE_MS, 0);
        }
        break;
    }
}

/* ---- listening ---- */

/* "A.B.C.D:PORT" (port 0..65535) into sin; 0 or -1. */
static int parse_inet(const char *s, struct sockaddr_in *sin)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN], *end;
    unsigned long port;

    memset(sin, 0, sizeof(*sin));
    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return -1;
    if (colon[1] < '0' || colon[1] > '9')
        return -1;
    port = strtoul(colon + 1, &end, 10);
    if (*end || port > 65535)
        return -1;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    return 0;
}

/* A symlink or non-socket at path: refused; a live listener: refused; a
 * stale socket: unlinked.  The probe connect is non-blocking. */
static int check_unix_path(const char *path, char *err, size_t errcap)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd, rc;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errcap, "metrics.listen %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errcap,
                 "metrics.listen %s: exists and is not a socket (%s); "
                 "refusing to touch it",
                 path, S_ISLNK(st.st_mode) ? "a symlink" : "another file");
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) <
        0) {
        snprintf(err, errcap, "metrics.listen %s: socket: %s", path,
                 strerror(errno));
        return -1;
    }
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
        close(fd);
        snprintf(err, errcap,
                 "metrics.listen %s: something is already listening there",
                 path);
        return -1;
    }
    close(fd);
    if (errno != ECONNREFUSED || (unlink(path) < 0 && errno != ENOENT)) {
        snprintf(err, errcap,
                 "metrics.listen %s: cannot replace stale "
                 "socket: %s",
                 path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Bind and listen on listen_addr into h->listen_fd; 0 or -1 with err. */
static int listen_on(struct http *h, const char *addr, char *err, size_t errcap)
{
    struct sockaddr_in sin;
    struct sockaddr_un sun;
    struct stat st;
    int fd = -1, one = 1, rc;

    if (addr[0] == '/') {
        mode_t old;
        if (strlen(addr) >= sizeof(sun.sun_path)) {
            snprintf(err, errcap, "metrics.listen %s: path too long", addr);
            return -1;
        }
        if (check_unix_path(addr, err, errcap) < 0)
            return -1;
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        strcpy(sun.sun_path, addr);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto fail;
        /* Born with its final mode: never chmod after bind. */
        old = umask(~h->conf.unix_mode & 0777);
        rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
        umask(old);
        if (rc < 0)
            goto fail;
        strcpy(h->path, addr);
        if (stat(addr, &st) == 0) {
            h->path_dev = st.st_dev;
            h->path_ino = st.st_ino;
        }
    } else {
        socklen_t slen = sizeof(sin);
        if (parse_inet(addr, &sin) < 0) {
            snprintf(err, errcap,
                     "metrics.listen %s: must be A.B.C.D:PORT or an "
                     "absolute Unix socket path",
                     addr);
            return -1;
        }
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto fail;
        /* A restart must not wait for TIME_WAIT connections to expire. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
            getsockname(fd, (struct sockaddr *)&sin, &slen) < 0)
            goto fail;
        h->port = ntohs(sin.sin_port);
    }
    if (listen(fd, 64) < 0)
        goto fail;
    h->listen_fd = fd;
    return 0;
fail:
    snprintf(err, errcap, "metrics.listen %s: %s", addr, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (h->path[0]) {
        unlink(h->path);
        h->path[0] = '\0';
    }
    return -1;
}

int http_start(struct http *h, uv_loop_t *loop, const char *listen_addr,
               const struct http_conf *conf, http_render_fn render, void *ctx,
               char *err, size_t errcap)
{
    int rc;

    memset(h, 0, sizeof(*h));
    h->listen_fd = -1;
    h->loop = loop;
    h->render = render;
    h->ctx = ctx;
    if (conf)
        h->conf = *conf;
    if (!h->conf.max_conns)
        h->conf.max_conns = HTTP_DEFAULT_MAX_CONNS;
    if (!h->conf.request_timeout_ms)
        h->conf.request_timeout_ms = HTTP_DEFAULT_REQUEST_TIMEOUT_MS;
    if (!h->conf.write_timeout_ms)
        h->conf.write_timeout_ms = HTTP_DEFAULT_WRITE_TIMEOUT_MS;
    if (!h->conf.unix_mode)
        h->conf.unix_mode = HTTP_DEFAULT_UNIX_MODE;
    if (listen_on(h, listen_addr, err, errcap) < 0)
        return -1;
    if ((rc = uv_poll_init(loop, &h->listener, h->listen_fd)) < 0) {
        snprintf(err, errcap, "metrics.listen %s: %s", listen_addr,
                 uv_strerror(rc));
        close(h->listen_fd);
        h->listen_fd = -1;
        if (h->path[0])
            unlink(h->path);
        h->path[0] = '\0';
        return -1;
    }
    h->listener.data = h;
    uv_timer_init(loop, &h->pause);
    h->pause.data = h;
    h->started = 1;
    h->listening = 1;
    uv_poll_start(&h->listener, UV_READABLE, on_listen_ready);
    return 0;
}

void http_stop(struct http *h)
{
    struct stat st;

    if (!h->started || h->stopping)
        return;
    h->stopping = 1;
    h->listening = 0;
    uv_poll_stop(&h->listener);
    uv_close((uv_handle_t *)&h->listener, NULL);
    uv_close((uv_handle_t *)&h->pause, NULL);
    close(h->listen_fd);
    h->listen_fd = -1;
    /* Unlink only the socket we bound, not one that replaced it. */
    if (h->path[0] && stat(h->path, &st) == 0 && st.st_dev == h->path_dev &&
        st.st_ino == h->path_ino)
        unlink(h->path);
    while (h->conns)
        conn_close(h->conns);
}
