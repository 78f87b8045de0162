/*
 * fake_peer.c - a scripted stand-in for resild (fake_peer.h).
 */
#include "fake_peer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "integ_util.h"
#include "proto.h"

#define PEER_CONNS 8            /* connections served at once */
#define PEER_BUF_BYTES 65536    /* input buffered per connection */
#define PEER_START_WAIT_MS 5000 /* for the child to listen */

struct conn {
    int fd; /* -1 when free */
    size_t len;
    uint8_t buf[PEER_BUF_BYTES];
};

/* The child's state (it serves one test, then is killed). */
struct child {
    const struct peer_opts *o;
    int log;      /* write end of the log pipe */
    int answered; /* requests answered so far (PEER_SLOW_ONCE) */
    struct conn c[PEER_CONNS];
};

static void logf_line(struct child *ch, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_line(struct child *ch, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;
    ssize_t w;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    w = write(ch->log, line, (size_t)n); /* < PIPE_BUF: atomic */
    (void)w;
}

static void write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void key_map(struct child *ch, msgpack_packer *pk, int i)
{
    char name[16];
    int forced = i == 0 && ch->o->force_reason;

    snprintf(name, sizeof(name), "k%05d", i);
    msgpack_pack_map(pk, 8 + forced);
    proto_kv_str(pk, "key", name);
    proto_kv_str(pk, "policy", "*");
    proto_kv_str(pk, "state", forced ? "forced_open" : "closed");
    proto_kv_str(pk, "health", "operational");
    proto_kv_u64(pk, "calls", 0);
    proto_kv_u64(pk, "failures", 0);
    proto_kv_f64(pk, "failure_rate", 0.0);
    proto_kv_u64(pk, "opens", 0);
    if (forced) {
        proto_pack_cstr(pk, "force_reason");
        proto_pack_strn(pk, ch->o->force_reason, ch->o->force_reason_len);
    }
}

/* status: keys k00000.. after `after`, at most `limit`, `next` when more. */
static void status_result(struct child *ch, msgpack_packer *pk,
                          const msgpack_object *params, uint64_t limit,
                          const char *after)
{
    int first = 0, n, i;

    (void)params;
    if (after[0]) /* the first key greater than after */
        while (first < ch->o->nkeys) {
            char name[16];
            snprintf(name, sizeof(name), "k%05d", first);
            if (strcmp(name, after) > 0)
                break;
            first++;
        }
    n = ch->o->nkeys - first;
    if ((uint64_t)n > limit)
        n = (int)limit;
    msgpack_pack_map(pk, 3 + (first + n < ch->o->nkeys));
    proto_kv_str(pk, "health", "operational");
    proto_kv_u64(pk, "total", (uint64_t)ch->o->nkeys);
    proto_pack_cstr(pk, "keys");
    msgpack_pack_array(pk, (uint32_t)n);
    for (i = first; i < first + n; i++)
        key_map(ch, pk, i);
    if (first + n < ch->o->nkeys) {
        char name[16];
        snprintf(name, sizeof(name), "k%05d", first + n - 1);
        proto_kv_str(pk, "next", name);
    }
}

/* status {"key": key}: the key's full status map (SPEC 3). */
static void status_one(msgpack_packer *pk, const msgpack_object *key)
{
    if (proto_str_eq(key, "nokey")) { /* a key the daemon does not have */
        msgpack_pack_map(pk, 3);
        proto_kv_str(pk, "health", "healthy");
        proto_kv_u64(pk, "total", 0);
        proto_pack_cstr(pk, "keys");
        msgpack_pack_array(pk, 0);
        return;
    }
    msgpack_pack_map(pk, 3);
    proto_kv_str(pk, "health", "degraded");
    proto_kv_u64(pk, "total", 1);
    proto_pack_cstr(pk, "keys");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 20);
    proto_pack_cstr(pk, "key");
    msgpack_pack_object(pk, *key);
    proto_kv_str(pk, "policy", "binance.*");
    proto_kv_str(pk, "state", "half_open");
    proto_kv_str(pk, "health", "degraded");
    proto_kv_u64(pk, "since_ms", 1500);
    proto_kv_u64(pk, "calls", 120);
    proto_kv_u64(pk, "failures", 30);
    proto_kv_f64(pk, "failure_rate", 25.5);
    proto_kv_f64(pk, "slow_rate", 1.25);
    proto_kv_u64(pk, "opens", 3);
    proto_kv_str(pk, "opened_by", "failure_rate");
    proto_kv_u64(pk, "retry_after_ms", 0);
    proto_kv_u64(pk, "outstanding", 2);
    proto_pack_cstr(pk, "latency_ms");
    msgpack_pack_map(pk, 2);
    proto_kv_u64(pk, "p50", 4);
    proto_kv_u64(pk, "p99", 42);
    proto_kv_u64(pk, "probes_in_flight", 1);
    proto_pack_cstr(pk, "limiter");
    msgpack_pack_map(pk, 5);
    proto_kv_u64(pk, "rate", 10);
    proto_kv_u64(pk, "per_ms", 1000);
    proto_kv_u64(pk, "burst", 20);
    proto_kv_u64(pk, "available", 7);
    proto_kv_u64(pk, "paused_ms", 250);
    proto_pack_cstr(pk, "bulkhead");
    msgpack_pack_nil(pk);
    proto_kv_str(pk, "force_reason",
                 "a reason longer than the client's buffer: "
                 "0123456789012345678901234567890123456789012345678901234567"
                 "890123456789012345678901234567890123456789");
    proto_kv_u64(pk, "force_ttl_ms", 60000);
    proto_kv_u64(pk, "shadow_denied", 0);
}

static void health_result(struct child *ch, msgpack_packer *pk)
{
    msgpack_pack_map(pk, 5);
    proto_kv_str(pk, "overall", ch->o->overall ? ch->o->overall : "healthy");
    proto_pack_cstr(pk, "services");
    msgpack_pack_map(pk, 3);
    proto_kv_str(pk, "binance.orders", "unavailable");
    proto_kv_str(pk, "okx\x1b[31m.ws", "degraded");
    proto_kv_str(pk, "kraken.rest", "operational");
    proto_pack_cstr(pk, "open");
    msgpack_pack_array(pk, 1);
    proto_pack_cstr(pk, "binance.orders");
    proto_kv_u64(pk, "recent_errors", 12);
    proto_pack_cstr(pk, "components");
    msgpack_pack_map(pk, 1);
    proto_pack_cstr(pk, "redis");
    msgpack_pack_map(pk, 2);
    proto_kv_bool(pk, "ok", 0);
    proto_kv_str(pk, "detail", "connection refused\x07");
}

/* The metrics text: valid exposition lines and one with a raw ESC. */
static const char metrics_text[] =
    "# HELP resild_uptime_seconds Time since start.\n"
    "# TYPE resild_uptime_seconds gauge\n"
    "resild_uptime_seconds 12.5\n"
    "resild_decisions_total{key=\"a.b\",result=\"allow\"} 3\n"
    "resild_odd{x=\"\x1b[2J\"} 1\n";

/* Echo the subscribe topics (or none for unsubscribe). */
static void topics_result(msgpack_packer *pk, const struct proto_msg *m,
                          int echo)
{
    const msgpack_object *t = proto_map_get(m->params, "topics");

    msgpack_pack_map(pk, 1);
    proto_pack_cstr(pk, "subscribed");
    if (echo && t)
        msgpack_pack_object(pk, *t);
    else
        msgpack_pack_array(pk, 0);
}

/* The generated events: nevents transitions, events_per_frame a frame. */
static void write_events(struct child *ch, int fd)
{
    int per = ch->o->events_per_frame > 0 ? ch->o->events_per_frame : 1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char key[16];
    int i, j;

    if (ch->o->events_raw_len && !ch->o->raw_with_answer)
        write_all(fd, ch->o->events_raw, ch->o->events_raw_len);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (i = 0; i < ch->o->nevents; i += per) {
        int n = ch->o->nevents - i < per ? ch->o->nevents - i : per;
        proto_pack_notify_head(&pk, "event");
        msgpack_pack_array(&pk, (uint32_t)n);
        for (j = i; j < i + n; j++) {
            snprintf(key, sizeof(key), "e%06d", j);
            msgpack_pack_map(&pk, 9);
            proto_kv_str(&pk, "topic", "state");
            proto_kv_str(&pk, "type", "transition");
            proto_kv_str(&pk, "key", key);
            proto_kv_u64(&pk, "ts", 1700000000000ULL + (uint64_t)j);
            proto_kv_str(&pk, "from", "closed");
            proto_kv_str(&pk, "to", "open");
            proto_kv_str(&pk, "cause", "failures");
            proto_kv_str(&pk, "origin", "local");
            proto_kv_u64(&pk, "seq", (uint64_t)j);
        }
        if (sb.size > 32768) {
            write_all(fd, sb.data, sb.size);
            sb.size = 0;
        }
    }
    write_all(fd, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* The answer to request m, packed into sb. */
static void answer(struct child *ch, const struct proto_msg *m,
                   msgpack_sbuffer *sb, uint64_t limit, const char *after)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (m->method_len == 4 && !memcmp(m->method, "ping", 4)) {
        proto_pack_response_head(&pk, m->msgid);
        msgpack_pack_map(&pk, 3);
        proto_kv_str(&pk, "version", "fake");
        proto_kv_u64(&pk, "pid", (uint64_t)getpid());
        proto_kv_u64(&pk, "uptime_ms", 1);
    } else if (m->method_len == 7 && !memcmp(m->method, "acquire", 7)) {
        proto_pack_response_head(&pk, m->msgid);
        msgpack_pack_map(&pk, 5);
        proto_kv_bool(&pk, "allow", 1);
        proto_kv_u64(&pk, "permit", 7);
        proto_kv_str(&pk, "state", "closed");
        proto_kv_str(&pk, "reason", "ok");
        proto_kv_u64(&pk, "retry_after_ms", 0);
    } else if (m->method_len == 6 && !memcmp(m->method, "report", 6)) {
        proto_pack_response_head(&pk, m->msgid);
        msgpack_pack_map(&pk, 2);
        proto_kv_str(&pk, "state", "closed");
        proto_kv_bool(&pk, "stale", 0);
    } else if (m->method_len == 6 && !memcmp(m->method, "status", 6) &&
               proto_map_get(m->params, "key")) {
        proto_pack_response_head(&pk, m->msgid);
        status_one(&pk, proto_map_get(m->params, "key"));
    } else if (m->method_len == 6 && !memcmp(m->method, "status", 6)) {
        proto_pack_response_head(&pk, m->msgid);
        status_result(ch, &pk, m->params, limit, after);
    } else if (m->method_len == 5 && !memcmp(m->method, "force", 5)) {
        proto_pack_response_head(&pk, m->msgid);
        key_map(ch, &pk, 0);
    } else if (m->method_len == 9 && !memcmp(m->method, "heartbeat", 9)) {
        proto_pack_response_head(&pk, m->msgid);
        msgpack_pack_map(&pk, 2);
        proto_kv_str(&pk, "state", "closed");
        proto_kv_str(&pk, "heartbeat", "ok");
    } else if (m->method_len == 6 && !memcmp(m->method, "health", 6)) {
        proto_pack_response_head(&pk, m->msgid);
        health_result(ch, &pk);
    } else if (m->method_len == 7 && !memcmp(m->method, "metrics", 7)) {
        proto_pack_response_head(&pk, m->msgid);
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "text");
        proto_pack_strn(&pk, metrics_text, sizeof(metrics_text) - 1);
    } else if (m->method_len == 9 && !memcmp(m->method, "subscribe", 9)) {
        proto_pack_response_head(&pk, m->msgid);
        topics_result(&pk, m, 1);
    } else if (m->method_len == 11 && !memcmp(m->method, "unsubscribe", 11)) {
        proto_pack_response_head(&pk, m->msgid);
        topics_result(&pk, m, 0);
    } else {
        proto_pack_error(&pk, m->msgid, "no_such_method", "fake");
    }
}

static void sleep_late(const struct child *ch)
{
    sleep_ms(ch->o->late_ms);
}

/* Handle one decoded frame from connection c. */
static void on_frame(struct child *ch, struct conn *c, const uint8_t *frame,
                     size_t len)
{
    msgpack_zone zone;
    struct proto_msg m;
    msgpack_sbuffer sb;
    const char *why;
    const msgpack_object *o;
    char after[160] = "", extra[256] = "";
    uint64_t limit = 1000, id = 0;

    msgpack_zone_init(&zone, 4096);
    if (proto_decode((const char *)frame, len, &zone, &m, &why) < 0) {
        logf_line(ch, "BAD");
        msgpack_zone_destroy(&zone);
        return;
    }
    if (m.type == PROTO_NOTIFY) {
        const msgpack_object *np = m.notify_params;
        if (np && np->type == MSGPACK_OBJECT_ARRAY && np->via.array.size == 1 &&
            (o = proto_map_get(&np->via.array.ptr[0], "msgid")) &&
            o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            snprintf(extra, sizeof(extra), " msgid=%llu",
                     (unsigned long long)o->via.u64);
        logf_line(ch, "NOTE %.*s%s", (int)m.method_len, m.method, extra);
        msgpack_zone_destroy(&zone);
        return;
    }
    if (m.type != PROTO_REQUEST) {
        logf_line(ch, "BAD");
        msgpack_zone_destroy(&zone);
        return;
    }
    if ((o = proto_map_get(m.params, "after")))
        proto_str_copy(o, after, sizeof(after));
    if ((o = proto_map_get(m.params, "limit")) &&
        o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        limit = o->via.u64;
    if (m.method_len == 6 && !memcmp(m.method, "status", 6))
        snprintf(extra, sizeof(extra), " after=%s limit=%llu", after,
                 (unsigned long long)limit);
    if ((o = proto_map_get(m.params, "reason")) &&
        o->type == MSGPACK_OBJECT_STR) { /* the bytes, in hex */
        size_t i, n = strlen(extra);
        n += (size_t)snprintf(extra + n, sizeof(extra) - n, " reason=");
        for (i = 0; i < o->via.str.size && n + 3 < sizeof(extra); i++)
            n += (size_t)snprintf(extra + n, sizeof(extra) - n, "%02x",
                                  (unsigned char)o->via.str.ptr[i]);
    }
    id = m.msgid;
    logf_line(ch, "REQ %.*s %llu%s", (int)m.method_len, m.method,
              (unsigned long long)id, extra);
    if (ch->o->log_hex) { /* the request's bytes, up to 240 */
        char hex[2 * 240 + 1];
        size_t i;
        for (i = 0; i < len && i < 240; i++)
            snprintf(hex + 2 * i, 3, "%02x", frame[i]);
        hex[2 * i] = '\0';
        logf_line(ch, "HEX %s", hex);
    }
    if (m.method_len == 9 && !memcmp(m.method, "subscribe", 9) &&
        ch->o->mode == PEER_ANSWER) {
        msgpack_sbuffer_init(&sb);
        answer(ch, &m, &sb, limit, after);
        if (ch->o->events_before_answer)
            write_events(ch, c->fd);
        if (ch->o->raw_with_answer)
            msgpack_sbuffer_write(&sb, ch->o->events_raw,
                                  ch->o->events_raw_len);
        write_all(c->fd, sb.data, sb.size);
        if (!ch->o->events_before_answer)
            write_events(ch, c->fd);
        msgpack_sbuffer_destroy(&sb);
        msgpack_zone_destroy(&zone);
        if (ch->o->close_after_events) {
            close(c->fd);
            c->fd = -1;
        }
        return;
    }
    msgpack_sbuffer_init(&sb);
    answer(ch, &m, &sb, limit, after);
    switch (ch->o->mode) {
    case PEER_HALF:
        write_all(c->fd, sb.data, sb.size / 2);
        raise(SIGKILL);
        break;
    case PEER_GARBAGE:
        write_all(c->fd, "\xc1\xc1\xc1\xc1", 4);
        break;
    case PEER_LATE:
        sleep_late(ch);
        write_all(c->fd, sb.data, sb.size);
        break;
    case PEER_SLOW_ONCE:
        if (ch->answered == 0)
            sleep_late(ch);
        write_all(c->fd, sb.data, sb.size);
        break;
    case PEER_SILENT:
        break;
    default:
        write_all(c->fd, sb.data, sb.size);
        break;
    }
    ch->answered++;
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&zone);
}

/* Read what c has and handle every complete frame. */
static void on_readable(struct child *ch, struct conn *c)
{
    struct proto_scan s;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    size_t off = 0;
    long got;

    if (n <= 0) {
        close(c->fd);
        c->fd = -1;
        return;
    }
    c->len += (size_t)n;
    for (;;) {
        proto_scan_init(&s);
        got = proto_scan_next(&s, c->buf + off, c->len - off, sizeof(c->buf),
                              PROTO_MAX_DEPTH);
        if (got < 0) {
            logf_line(ch, "BAD");
            close(c->fd);
            c->fd = -1;
            return;
        }
        if (got == 0)
            break;
        on_frame(ch, c, c->buf + off, (size_t)got);
        if (c->fd < 0) { /* on_frame closed it (close_after_events) */
            c->len = 0;
            return;
        }
        off += (size_t)got;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static int listen_on(const char *path, int backlog)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, backlog) < 0)
        return -1;
    return fd;
}

/* Fill the backlog of the listener at path: connect until EAGAIN. */
static void fill_backlog(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int i, fd;

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    for (i = 0; i < 64; i++) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
            return; /* kept open: the child holds them until it dies */
    }
}

static void child_main(const char *path, const struct peer_opts *o, int log)
{
    static struct child ch;
    struct pollfd pf[PEER_CONNS + 1];
    int lfd, i, n;

    ch.o = o;
    ch.log = log;
    for (i = 0; i < PEER_CONNS; i++)
        ch.c[i].fd = -1;
    lfd = listen_on(path, o->mode == PEER_BACKLOG ? 0 : 16);
    if (lfd < 0)
        _exit(1);
    if (o->mode == PEER_BACKLOG)
        fill_backlog(path);
    logf_line(&ch, "READY");
    for (;;) {
        pf[0].fd = o->mode == PEER_BACKLOG ? -1 : lfd;
        pf[0].events = POLLIN;
        for (i = 0; i < PEER_CONNS; i++) {
            pf[i + 1].fd = ch.c[i].fd;
            pf[i + 1].events = POLLIN;
        }
        n = poll(pf, PEER_CONNS + 1, -1);
        if (n < 0 && errno != EINTR)
            _exit(1);
        if (n <= 0)
            continue;
        if (pf[0].revents & POLLIN) {
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0 && o->mode == PEER_CLOSE) {
                close(fd);
            } else if (fd >= 0) {
                for (i = 0; i < PEER_CONNS && ch.c[i].fd >= 0; i++)
                    ;
                if (i == PEER_CONNS) {
                    close(fd);
                } else {
                    ch.c[i].fd = fd;
                    ch.c[i].len = 0;
                }
            }
        }
        for (i = 0; i < PEER_CONNS; i++)
            if (ch.c[i].fd >= 0 && (pf[i + 1].revents & (POLLIN | POLLHUP)))
                on_readable(&ch, &ch.c[i]);
    }
}

int peer_start(struct peer *p, const char *path, const struct peer_opts *o)
{
    int pfd[2];

    memset(p, 0, sizeof(*p));
    snprintf(p->path, sizeof(p->path), "%s", path);
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    p->pid = fork();
    if (p->pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        p->pid = 0;
        return -1;
    }
    if (p->pid == 0) {
        close(pfd[0]);
        signal(SIGPIPE, SIG_IGN);
        child_main(path, o, pfd[1]);
        _exit(0);
    }
    close(pfd[1]);
    p->log_fd = pfd[0];
    if (!peer_wait_log(p, "READY\n", PEER_START_WAIT_MS)) {
        peer_stop(p);
        return -1;
    }
    return 0;
}

void peer_stop(struct peer *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    if (p->log_fd > 0)
        close(p->log_fd);
    p->log_fd = -1;
    unlink(p->path);
}

int peer_wait_log(struct peer *p, const char *needle, int wait_ms)
{
    long long end = mono_ms() + wait_ms;
    struct pollfd pf = {.fd = p->log_fd, .events = POLLIN};
    ssize_t n;
    long long left;

    for (;;) {
        if (strstr(p->log, needle))
            return 1;
        left = end - mono_ms();
        if (left < 0)
            left = 0;
        if (poll(&pf, 1, (int)left) <= 0) {
            if (left == 0)
                return 0;
            continue;
        }
        if (p->log_len + 1 >= sizeof(p->log))
            return 0;
        n = read(p->log_fd, p->log + p->log_len,
                 sizeof(p->log) - 1 - p->log_len);
        if (n <= 0) /* the child is gone */
            return strstr(p->log, needle) != NULL;
        p->log_len += (size_t)n;
        p->log[p->log_len] = '\0';
    }
}

int peer_count(const struct peer *p, const char *prefix)
{
    const char *s = p->log;
    size_t n = strlen(prefix);
    int count = 0;

    while (*s) {
        if (!strncmp(s, prefix, n))
            count++;
        s = strchr(s, '\n');
        if (!s)
            break;
        s++;
    }
    return count;
}

int peer_make_stale(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc;

    if (fd < 0)
        return -1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    close(fd); /* the file stays; nobody listens */
    return rc;
}

int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}
