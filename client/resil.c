/*
 * resil.c - libresil: the C client of resild (contract in resil.h).
 *
 * One handle owns at most one connection.  A call packs its request into a
 * preallocated send buffer, sends it with poll()-bounded non-blocking I/O,
 * and reads responses into a preallocated receive buffer until the one with
 * its msgid arrives.  Every wait is bounded by the call's deadline on
 * CLOCK_MONOTONIC, including the wait for the handle's mutex, so a caller
 * never blocks longer than it asked for, whatever the daemon does.
 *
 * What this file must not do:
 *   - block past a deadline (connect is non-blocking: a blocking AF_UNIX
 *     connect to a live daemon whose backlog is full hangs forever);
 *   - raise SIGPIPE (send uses MSG_NOSIGNAL);
 *   - allocate on the acquire/report/ping path once the handle is open (the
 *     send buffer, receive buffer and msgpack zone are reused; resil_call
 *     may grow the buffers and mallocs its result copy);
 *   - hand a frame to msgpack-c before proto_scan_next() has bounded it.
 *
 * Failure handling.  Connection failures (connect refused, no socket,
 * backlog full, connection lost or reset, EOF, a send error) and garbage
 * answers close the socket and start a back-off (50 ms doubling to 1 s,
 * reset by the next answer); during the back-off calls return RESIL_ECONN
 * with the fallback decision at once, without a syscall.  A deadline that
 * passes on a live connection (the daemon is slow, not gone) keeps the
 * socket and starts no back-off: the next call goes to the socket again,
 * since a live daemon usually answers it in time (issue 8, defect 10).
 * Only a request cut in half by its deadline closes the socket (the stream
 * would be out of step), and then without a back-off.  On a failure errno
 * is left holding the underlying cause (ENOENT, ECONNREFUSED, ETIMEDOUT,
 * EPROTO...) so that tools can print it; resilctl does.
 *
 * An acquire given up on after its request went out is cancelled: the
 * notification [2, "cancel", [{"msgid": N}]] is written at once with one
 * non-blocking send, and nothing is waited for.  The daemon answers a
 * parked request "cancelled" and releases a permit it already granted as
 * "ignore", so a late grant never lingers to permit_ttl_ms and expires
 * into a timeout failure (issue 8, defect 3).  When the socket cannot take
 * the notification whole the connection is dropped instead, which releases
 * every permit of the connection on the daemon.  The late answer itself is
 * skipped like any answer to another msgid.
 *
 * Caller bugs (a NULL or malformed key, an absurd cost or wait, a bad fail
 * mode or outcome...) are refused before anything is sent: RESIL_EINVAL
 * with a deny, whatever the fail mode (issue 8, defect 7).
 */
#include "resil.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "sockpath.h"

#define DEFAULT_DEADLINE_MS 5
#define SEND_CAP_BYTES 65536 /* fixed send buffer; resil_call grows it */
#define RECV_CAP_BYTES 65536 /* acquire/report/ping answers fit in this */
/* resil_call's largest answer: a status page of 1000 keys, or the
 * metrics text (about 1.6 KB per key: 1.6 MB at metrics.max_keys 1000,
 * which overflowed the former 1 MiB).  The buffer grows only when an
 * answer needs it. */
#define CALL_MAX_RESPONSE_BYTES (16u << 20)
#define ZONE_CHUNK_BYTES 8192 /* msgpack zone chunk kept across calls */
#define BACKOFF_START_MS 50
#define BACKOFF_MAX_MS 1000
#define NS_PER_MS 1000000ULL
#define RESIL_KEY_MAX 128 /* longest valid key (SPEC 2) */
/* The daemon's own bounds (daemon/methods.c), checked here so that a
 * caller bug is refused without a round trip. */
#define RESIL_COST_MAX 1000000000ULL
#define RESIL_WAIT_MAX_MS 3600000ULL
#define RESIL_CLASS_MAX 64                  /* bytes of an error class */
#define RESIL_TIME_MAX_MS (86400000LL * 30) /* latency, retry_after */
#define RESIL_ATTEMPT_MAX 1000000
#define RESIL_METHOD_MAX 64 /* bytes of a method name */

struct resil {
    pthread_mutex_t mu;      /* serialises every call on the handle */
    char path[SOCKPATH_MAX]; /* resolved socket path, immutable */
    int path_ok;             /* 0 when the path does not fit sun_path */
    int fd;                  /* connected socket, -1 when none */
    pid_t fd_pid;            /* process that opened fd (fork safety) */
    /* Defaults, read before the mutex is taken (the lock wait is bounded by
     * the deadline), hence accessed with relaxed atomics. */
    int deadline_ms; /* default per-call deadline */
    int fail_mode;   /* default enum resil_fail_mode */
    uint32_t next_msgid;
    uint64_t backoff_ms;       /* current back-off step, 0 when healthy */
    uint64_t backoff_until_ns; /* monotonic; calls before this fall back */
    int backoff_errno;         /* cause of the failure that started it */

    char *sbuf; /* request being sent */
    size_t sbuf_len, sbuf_cap;
    int sbuf_overflow; /* a pack did not fit: request too large */
    msgpack_packer pk; /* writes into sbuf via sbuf_write */

    uint8_t *rbuf;             /* bytes received, object starts at rbuf[0] */
    size_t rbuf_len, rbuf_cap; /* cap grows to CALL_MAX_RESPONSE_BYTES */
    struct proto_scan scan;    /* scanner state for the object at rbuf[0] */
    msgpack_zone zone;         /* decoded objects; cleared after each use */

    /* Event handle (resil_subscribe); all under mu except `events`, which
     * the trading calls read before taking the mutex (relaxed atomics). */
    int events;           /* 1 once subscribed: trading calls refused */
    int ev_dead;          /* connection lost; fd kept until resubscribe */
    int ev_dead_rc;       /* what resil_poll_events returns meanwhile */
    int ev_dead_errno;    /* and the errno it leaves */
    uint32_t ev_frame_at; /* events of the frame at rbuf[0] delivered
                           * already (a frame may carry several) */
    resil_event_fn ev_fn;
    void *ev_arg;
};

/* The handle whose event callback runs on this thread (NULL: none), so a
 * callback that calls back into its own handle is refused instead of
 * waiting for the mutex its caller holds. */
static _Thread_local const struct resil *cb_handle;

/* 1 when a trading call on r must be refused: an event handle, or the
 * handle whose callback is running on this thread. */
static int not_for_trading(const struct resil *r)
{
    return r &&
           (__atomic_load_n(&r->events, __ATOMIC_RELAXED) || cb_handle == r);
}

/* A decoded answer still living in rbuf and the zone. */
struct answer {
    struct proto_msg m;
    size_t frame_len;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int sbuf_write(void *data, const char *buf, size_t len)
{
    struct resil *r = data;

    if (len > r->sbuf_cap - r->sbuf_len) {
        r->sbuf_overflow = 1;
        return -1;
    }
    memcpy(r->sbuf + r->sbuf_len, buf, len);
    r->sbuf_len += len;
    return 0;
}

resil_t *resil_open(const char *path)
{
    resil_t *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->fd = -1;
    r->deadline_ms = DEFAULT_DEADLINE_MS;
    r->fail_mode = RESIL_FAIL_OPEN;
    r->next_msgid = 1;
    r->path_ok = sockpath_resolve(path, r->path, sizeof(r->path)) == 0;
    r->sbuf_cap = SEND_CAP_BYTES;
    r->rbuf_cap = RECV_CAP_BYTES;
    r->sbuf = malloc(r->sbuf_cap);
    r->rbuf = malloc(r->rbuf_cap);
    if (!r->sbuf || !r->rbuf || !msgpack_zone_init(&r->zone, ZONE_CHUNK_BYTES))
        goto fail;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        msgpack_zone_destroy(&r->zone);
        goto fail;
    }
    msgpack_packer_init(&r->pk, r, sbuf_write);
    proto_scan_init(&r->scan);
    return r;
fail:
    free(r->sbuf);
    free(r->rbuf);
    free(r);
    return NULL;
}

void resil_close(resil_t *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    pthread_mutex_destroy(&r->mu);
    msgpack_zone_destroy(&r->zone);
    free(r->sbuf);
    free(r->rbuf);
    free(r);
}

void resil_set_deadline(resil_t *r, int deadline_ms)
{
    if (!r || deadline_ms <= 0)
        return;
    __atomic_store_n(&r->deadline_ms, deadline_ms, __ATOMIC_RELAXED);
}

void resil_set_fail_mode(resil_t *r, enum resil_fail_mode m)
{
    if (!r || (m != RESIL_FAIL_OPEN && m != RESIL_FAIL_CLOSED))
        return;
    __atomic_store_n(&r->fail_mode, (int)m, __ATOMIC_RELAXED);
}

const char *resil_path(const resil_t *r)
{
    return r ? r->path : NULL;
}

const char *resil_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case RESIL_ETIMEDOUT:
        return "deadline passed before the daemon answered";
    case RESIL_ECONN:
        return "cannot connect to the daemon (or backing off)";
    case RESIL_EPROTO:
        return "daemon answered something unreadable";
    case RESIL_EREMOTE:
        return "daemon answered with an error";
    case RESIL_EINVAL:
        return "invalid argument";
    case RESIL_ENOMEM:
        return "out of memory";
    }
    return "unknown error";
}

/* --- connection state --------------------------------------------------- */

static void drop_connection(struct resil *r)
{
    int saved = errno;

    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->rbuf_len = 0;
    proto_scan_init(&r->scan);
    msgpack_zone_clear(&r->zone);
    errno = saved;
}

/* Calls fall back at once for a while (50 ms doubling to 1 s). */
static void back_off(struct resil *r, uint64_t now)
{
    r->backoff_errno = errno;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_START_MS;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
    r->backoff_until_ns = now + r->backoff_ms * NS_PER_MS;
}

/* A call failed for a connection reason: close and back off.  Closing
 * makes the daemon take back every permit this handle holds. */
static void fail_connection(struct resil *r, uint64_t now)
{
    int saved = errno;

    drop_connection(r);
    errno = saved;
    back_off(r, now);
}

/* Wait for events on r->fd until deadline.  Returns revents, 0 on timeout,
 * -1 on a poll error. */
static int wait_fd(struct resil *r, short events, uint64_t deadline)
{
    struct pollfd p = {.fd = r->fd, .events = events};
    struct timespec ts;
    uint64_t now, left;
    int n;

    for (;;) {
        now = now_ns();
        if (now >= deadline)
            return 0;
        left = deadline - now;
        ts.tv_sec = (time_t)(left / 1000000000ULL);
        ts.tv_nsec = (long)(left % 1000000000ULL);
        n = ppoll(&p, 1, &ts, NULL);
        if (n > 0)
            return p.revents;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Connect without blocking.  0, RESIL_ECONN or RESIL_ETIMEDOUT. */
static int do_connect(struct resil *r, uint64_t deadline)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, err = 0, rev;
    socklen_t len = sizeof(err);

    if (!r->path_ok) {
        errno = ENAMETOOLONG;
        return RESIL_ECONN;
    }
    memcpy(sa.sun_path, r->path, strlen(r->path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return RESIL_ECONN;
    r->fd = fd;
    r->fd_pid = getpid();
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return 0;
    /* EAGAIN: the listener's backlog is full (a stalled daemon). */
    if (errno != EINPROGRESS && errno != EINTR)
        return RESIL_ECONN;
    rev = wait_fd(r, POLLOUT, deadline);
    if (rev == 0) {
        errno = ETIMEDOUT;
        return RESIL_ETIMEDOUT;
    }
    if (rev < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return RESIL_ECONN;
    if (err) {
        errno = err;
        return RESIL_ECONN;
    }
    return 0;
}

/* Send sbuf whole.  0, RESIL_ECONN or RESIL_ETIMEDOUT.  *sent counts the
 * bytes that left, so the caller knows whether a retry is safe. */
static int send_all(struct resil *r, uint64_t deadline, size_t *sent)
{
    ssize_t n;
    int rev;

    *sent = 0;
    while (*sent < r->sbuf_len) {
        n = send(r->fd, r->sbuf + *sent, r->sbuf_len - *sent,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            *sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return RESIL_ECONN;
        rev = wait_fd(r, POLLOUT, deadline);
        if (rev == 0) {
            errno = ETIMEDOUT;
            return RESIL_ETIMEDOUT;
        }
        if (rev < 0)
            return RESIL_ECONN;
        /* POLLERR/POLLHUP: the next send reports the error. */
    }
    return 0;
}

/* Drop the first n bytes of rbuf (one handled object). */
static void consume(struct resil *r, size_t n)
{
    memmove(r->rbuf, r->rbuf + n, r->rbuf_len - n);
    r->rbuf_len -= n;
    proto_scan_init(&r->scan);
    msgpack_zone_clear(&r->zone);
}

/* Drop the first off bytes of rbuf (objects already skipped). */
static void compact(struct resil *r, size_t off)
{
    if (!off)
        return;
    memmove(r->rbuf, r->rbuf + off, r->rbuf_len - off);
    r->rbuf_len -= off;
}

static uint32_t next_id(struct resil *r)
{
    uint32_t id = r->next_msgid++;

    return id ? id : r->next_msgid++; /* 0 is the daemon's "no request" */
}

/* --- events --------------------------------------------------------------- */

static const char *const topic_names[] = {"state", "error", "alert", "operator",
                                          "bound"};
#define NTOPICS (sizeof(topic_names) / sizeof(topic_names[0]))

static void event_str(const msgpack_object *map, const char *name, char *dst,
                      size_t cap)
{
    if (proto_str_copy(proto_map_get(map, name), dst, cap) < 0)
        dst[0] = '\0';
}

/* Fill ev from one event map (borrowing raw bytes and the decoded map). */
static void event_fill(struct resil_event *ev, const msgpack_object *map,
                       const uint8_t *raw, size_t raw_len)
{
    const msgpack_object *o;
    size_t i;

    memset(ev, 0, sizeof(*ev));
    event_str(map, "topic", ev->topic_name, sizeof(ev->topic_name));
    for (i = 0; i < NTOPICS; i++)
        if (!strcmp(ev->topic_name, topic_names[i]))
            ev->topic = 1u << i;
    event_str(map, "type", ev->type, sizeof(ev->type));
    event_str(map, "key", ev->key, sizeof(ev->key));
    if ((o = proto_map_get(map, "ts")) &&
        o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        ev->ts_ms = o->via.u64;
    event_str(map, "from", ev->from, sizeof(ev->from));
    event_str(map, "to", ev->to, sizeof(ev->to));
    event_str(map, "cause", ev->cause, sizeof(ev->cause));
    event_str(map, "outcome", ev->outcome, sizeof(ev->outcome));
    event_str(map, "class", ev->error_class, sizeof(ev->error_class));
    event_str(map, "severity", ev->severity, sizeof(ev->severity));
    ev->raw = raw;
    ev->raw_len = raw_len;
    ev->priv = map;
}

/* Bytes of the array header at p[0..n), or 0 if it is not one. */
static size_t array_head(const uint8_t *p, size_t n)
{
    if (n >= 1 && p[0] >= 0x90 && p[0] <= 0x9f)
        return 1;
    if (n >= 3 && p[0] == 0xdc)
        return 3;
    if (n >= 5 && p[0] == 0xdd)
        return 5;
    return 0;
}

/* Size of the one object at p[0..n) (already bounded), or 0. */
static size_t object_len(const uint8_t *p, size_t n)
{
    struct proto_scan s;
    long got;

    proto_scan_init(&s);
    got = proto_scan_next(&s, p, n, n, PROTO_MAX_DEPTH);
    return got > 0 ? (size_t)got : 0;
}

/*
 * Hand the events of the notification frame[0..len) to the callback: the
 * maps of [2, "event", [map...]] from number r->ev_frame_at on, at most
 * budget of them.  Other notifications and non-map elements are skipped.
 * Returns the events delivered, with *done (may be NULL when the budget
 * is unbounded) set when the frame is finished (r->ev_frame_at is back to
 * 0); -1 when the frame does not decode.  The zone is cleared after.
 */
static long deliver_frame(struct resil *r, const uint8_t *frame, size_t len,
                          uint32_t budget, int *done)
{
    const msgpack_object *arr;
    struct resil_event ev;
    struct proto_msg m;
    const char *why;
    size_t off, n;
    uint32_t i;
    long count = 0;

    if (done)
        *done = 1;
    if (proto_decode((const char *)frame, len, &r->zone, &m, &why) < 0) {
        msgpack_zone_clear(&r->zone);
        return -1;
    }
    arr = m.notify_params;
    if (m.type != PROTO_NOTIFY || m.method_len != 5 ||
        memcmp(m.method, "event", 5) || !arr ||
        arr->type != MSGPACK_OBJECT_ARRAY) {
        msgpack_zone_clear(&r->zone);
        return 0; /* not an event: nothing for us */
    }
    /* Where the params array's elements start: skip 0x93, the type and
     * the method name (each one bounded object), then the array head. */
    off = 1;
    off += object_len(frame + off, len - off);
    off += object_len(frame + off, len - off);
    off += array_head(frame + off, len - off);
    for (i = 0; i < arr->via.array.size && off < len; i++) {
        n = object_len(frame + off, len - off);
        if (n == 0)
            break;
        if (i >= r->ev_frame_at &&
            arr->via.array.ptr[i].type == MSGPACK_OBJECT_MAP) {
            if ((uint32_t)count == budget) {
                r->ev_frame_at = i;
                if (done)
                    *done = 0;
                msgpack_zone_clear(&r->zone);
                return count;
            }
            event_fill(&ev, &arr->via.array.ptr[i], frame + off, n);
            cb_handle = r;
            r->ev_fn(&ev, r->ev_arg);
            cb_handle = NULL;
            count++;
        }
        off += n;
    }
    r->ev_frame_at = 0;
    msgpack_zone_clear(&r->zone);
    return count;
}

/*
 * Read until the response to msgid is complete in rbuf.  Answers to other
 * requests (late answers to calls given up on: cancelled acquires
 * included, whose permits the daemon releases itself) and notifications
 * are skipped by their header without decoding, except events on an event
 * handle, which go to its callback in order.  The deadline is checked before
 * every read, so a stream of other messages cannot hold the call.  An
 * answer to msgid larger than max_bytes is a protocol error; one to another
 * msgid may be as large as any answer (CALL_MAX_RESPONSE_BYTES: a late
 * status page after a resil_call timed out), and rbuf grows to skip it,
 * once per handle.  On 0, a->m borrows from
 * rbuf (the answer is at rbuf[0]) and the zone until consume(r,
 * a->frame_len).
 */
/* 1 when the object obj[0..n) (n >= 7, or complete) is not the response
 * to msgid: a notification or another request's answer. */
static int not_ours(const uint8_t *obj, size_t n, uint32_t msgid)
{
    uint32_t id;

    return (n >= 2 && obj[0] == 0x93 && obj[1] == 0x02) ||
           (proto_peek_msgid(obj, n, PROTO_RESPONSE, &id) && id != msgid);
}

static int read_answer(struct resil *r, uint32_t msgid, size_t max_bytes,
                       uint64_t deadline, struct answer *a)
{
    const char *why;
    size_t off = 0; /* the object being scanned starts at rbuf[off] */
    long got;
    ssize_t n;
    int rev;

    for (;;) {
        /* Bounded by the largest answer of any call: whose it is shows
         * only once its header is in. */
        got = r->rbuf_len > off
                  ? proto_scan_next(&r->scan, r->rbuf + off, r->rbuf_len - off,
                                    CALL_MAX_RESPONSE_BYTES, PROTO_MAX_DEPTH)
                  : 0;
        if (got < 0) {
            errno = got == -PROTO_E2BIG ? EMSGSIZE : EPROTO;
            return RESIL_EPROTO;
        }
        if (got > 0) {
            const uint8_t *obj = r->rbuf + off;
            int notify = got >= 2 && obj[0] == 0x93 && obj[1] == 0x02;
            if (notify && r->events) {
                /* An event that came before our answer: hand it over now,
                 * in order (resil.h, "Delivery"). */
                if (deliver_frame(r, obj, (size_t)got, UINT32_MAX, NULL) < 0) {
                    errno = EPROTO;
                    return RESIL_EPROTO;
                }
                off += (size_t)got;
                proto_scan_init(&r->scan);
                continue;
            }
            if (not_ours(obj, (size_t)got, msgid)) {
                off += (size_t)got; /* not ours: skip it undecoded */
                proto_scan_init(&r->scan);
                continue;
            }
            if ((size_t)got > max_bytes) {
                errno = EMSGSIZE;
                return RESIL_EPROTO;
            }
            compact(r, off);
            off = 0;
            if (proto_decode((const char *)r->rbuf, (size_t)got, &r->zone,
                             &a->m, &why) < 0) {
                errno = EPROTO;
                return RESIL_EPROTO;
            }
            if (a->m.type == PROTO_RESPONSE && a->m.msgid == msgid) {
                a->frame_len = (size_t)got;
                return 0;
            }
            consume(r, (size_t)got); /* another message that decodes */
            continue;
        }
        compact(r, off);
        off = 0;
        if (now_ns() >= deadline) {
            errno = ETIMEDOUT;
            return RESIL_ETIMEDOUT;
        }
        if (r->rbuf_len == r->rbuf_cap) {
            /* Our own answer may grow the buffer up to max_bytes (only
             * resil_call's is over RECV_CAP_BYTES); a late answer to skip,
             * up to the largest answer. */
            size_t cap = r->rbuf_cap * 2, most = max_bytes;
            uint8_t *p;

            if (not_ours(r->rbuf, r->rbuf_len, msgid))
                most = CALL_MAX_RESPONSE_BYTES; /* a late answer to skip */
            if (cap > most)
                cap = most;
            if (cap <= r->rbuf_cap) {
                errno = EMSGSIZE;
                return RESIL_EPROTO;
            }
            p = realloc(r->rbuf, cap);
            if (!p)
                return RESIL_ENOMEM;
            r->rbuf = p;
            r->rbuf_cap = cap;
        }
        n = recv(r->fd, r->rbuf + r->rbuf_len, r->rbuf_cap - r->rbuf_len,
                 MSG_DONTWAIT);
        if (n > 0) {
            r->rbuf_len += (size_t)n;
            continue;
        }
        if (n == 0) {
            errno = ECONNRESET; /* the daemon closed the connection */
            return RESIL_ECONN;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return RESIL_ECONN;
        rev = wait_fd(r, POLLIN, deadline);
        if (rev == 0) {
            errno = ETIMEDOUT;
            return RESIL_ETIMEDOUT;
        }
        if (rev < 0)
            return RESIL_ECONN;
    }
}

/*
 * Cancel the acquire msgid, whose answer is no longer waited for: write
 * [2, "cancel", [{"msgid": msgid}]] with one non-blocking send and wait
 * for nothing (a notification has no answer).  The request went out whole,
 * so sbuf is free.  When the socket cannot take the notification whole
 * (a daemon stalled long enough to fill the socket buffer, or gone), drop
 * the connection: half a frame would put the stream out of step, and a
 * closed connection releases all its permits on the daemon anyway.
 */
static void send_cancel(struct resil *r, uint32_t msgid)
{
    int saved = errno;
    ssize_t n;

    r->sbuf_len = 0;
    r->sbuf_overflow = 0;
    proto_pack_notify_head(&r->pk, "cancel");
    msgpack_pack_array(&r->pk, 1);
    msgpack_pack_map(&r->pk, 1);
    proto_kv_u64(&r->pk, "msgid", msgid);
    do
        n = send(r->fd, r->sbuf, r->sbuf_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)r->sbuf_len)
        drop_connection(r);
    errno = saved; /* the call's cause stays ETIMEDOUT */
}

/*
 * Send the request in sbuf (whose msgid is msgid) and read its answer.
 * Handles connecting, one transparent reconnect when a reused connection
 * turns out to be closed before anything was sent (a restarted daemon),
 * and the back-off bookkeeping.  Returns 0 with *a filled (including error
 * answers: the daemon answered), or a negative code.
 *
 * A deadline that passes on a live connection keeps it and starts no
 * back-off (closing it would make the daemon take back every permit of
 * this handle, those of other threads included; backing off would fall
 * back for calls the daemon would have answered).  If nothing of the
 * request went out, nothing else is done; if it went out whole, the late
 * answer is skipped by a later call, and an acquire (is_acquire) is
 * cancelled at once; if it went out in part, the connection is dropped.
 * Connection failures (connect, send or receive errors, EOF) and garbage
 * close it and back off.
 */
static int roundtrip(struct resil *r, uint32_t msgid, size_t max_bytes,
                     uint64_t deadline, struct answer *a, int is_acquire)
{
    size_t sent;
    int rc, reused, attempt;

    if (r->backoff_until_ns && now_ns() < r->backoff_until_ns) {
        errno = r->backoff_errno; /* why we are backing off */
        return RESIL_ECONN;
    }
    if (r->fd >= 0 && r->fd_pid != getpid()) {
        /* Forked child: the connection belongs to the parent.  Forget it
         * without close(): the child may have reused the number. */
        r->fd = -1;
        drop_connection(r);
    }
    for (attempt = 0;; attempt++) {
        reused = r->fd >= 0;
        if (!reused && (rc = do_connect(r, deadline)) < 0)
            goto fail; /* no connection: a connect timeout backs off too */
        rc = send_all(r, deadline, &sent);
        if (rc == RESIL_ECONN && reused && sent == 0 && attempt == 0) {
            drop_connection(r);
            continue;
        }
        if (rc == RESIL_ETIMEDOUT) {
            /* A live daemon that does not read fast enough. */
            if (sent > 0)
                drop_connection(r);
            return rc;
        }
        if (rc < 0)
            goto fail;
        break;
    }
    rc = read_answer(r, msgid, max_bytes, deadline, a);
    if (rc == RESIL_ETIMEDOUT) {
        if (is_acquire)
            send_cancel(r, msgid);
        return rc;
    }
    if (rc < 0)
        goto fail;
    r->backoff_ms = 0;
    r->backoff_until_ns = 0;
    return 0;
fail:
    if (rc == RESIL_ENOMEM)
        drop_connection(r); /* not the daemon's fault: no back-off */
    else
        fail_connection(r, now_ns());
    return rc;
}

/* Lock the handle, waiting no longer than deadline. */
static int lock_until(struct resil *r, uint64_t deadline)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ULL),
                          .tv_nsec = (long)(deadline % 1000000000ULL)};
    int e = pthread_mutex_clocklock(&r->mu, CLOCK_MONOTONIC, &ts);

    if (e == 0)
        return 0;
    errno = e;
    return RESIL_ETIMEDOUT;
}

static uint64_t deadline_of(const struct resil *r, int deadline_ms,
                            uint64_t start)
{
    int ms = deadline_ms > 0
                 ? deadline_ms
                 : __atomic_load_n(&r->deadline_ms, __ATOMIC_RELAXED);

    return start + (uint64_t)ms * NS_PER_MS;
}

/* Begin a request [0, msgid, method, [ ...: the caller packs the params. */
static uint32_t begin_request(struct resil *r, const char *method)
{
    uint32_t id = next_id(r);

    r->sbuf_len = 0;
    r->sbuf_overflow = 0;
    proto_pack_request_head(&r->pk, id, method);
    return id;
}

/* Copy an error answer's code/message.  Returns RESIL_EREMOTE, or
 * RESIL_EPROTO when the error is not a map. */
static int remote_error(const struct proto_msg *m, char *code, size_t code_cap,
                        char *msg, size_t msg_cap)
{
    if (m->error->type != MSGPACK_OBJECT_MAP ||
        proto_str_copy(proto_map_get(m->error, "code"), NULL, 0) < 0) {
        errno = EPROTO;
        return RESIL_EPROTO;
    }
    if (code && code_cap)
        proto_str_copy(proto_map_get(m->error, "code"), code, code_cap);
    if (msg && msg_cap)
        proto_str_copy(proto_map_get(m->error, "message"), msg, msg_cap);
    return RESIL_EREMOTE;
}

/* 1 when the daemon closes the connection after sending this error. */
static int error_closes(const struct proto_msg *m)
{
    const msgpack_object *c = proto_map_get(m->error, "code");

    /* "busy" closes only at connect (msgid 0, never a request's). */
    return proto_str_eq(c, "protocol_error") ||
           proto_str_eq(c, "frame_too_large");
}

static int get_bool(const msgpack_object *map, const char *name, int *out)
{
    const msgpack_object *o = proto_map_get(map, name);

    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    *out = o->via.boolean;
    return 0;
}

static int get_uint(const msgpack_object *map, const char *name, uint64_t *out)
{
    const msgpack_object *o = proto_map_get(map, name);

    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = o->via.u64;
    return 0;
}

/* --- acquire ------------------------------------------------------------ */

static void fallback_decision(struct resil_decision *d, int fail_mode)
{
    memset(d, 0, sizeof(*d));
    d->allow = fail_mode == RESIL_FAIL_CLOSED ? 0 : 1;
    d->fallback = 1;
    strcpy(d->state, "unknown");
    strcpy(d->reason, "fallback");
}

/* The decision for a caller bug: deny whatever the fail mode (resil.h). */
static int invalid_decision(struct resil_decision *d)
{
    fallback_decision(d, RESIL_FAIL_CLOSED);
    strcpy(d->reason, "invalid_argument");
    errno = EINVAL;
    return RESIL_EINVAL;
}

/* 1 when s is a valid key or error class: [A-Za-z0-9._:-]{1,max}.  Reads
 * at most max+1 bytes of s, so a huge or unterminated-looking string costs
 * nothing. */
static int valid_name(const char *s, size_t max)
{
    size_t i;

    if (!s)
        return 0;
    for (i = 0; s[i]; i++) {
        char ch = s[i];
        if (i == max ||
            !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
              ch == '-'))
            return 0;
    }
    return i > 0;
}

int resil_acquire(resil_t *r, const char *key,
                  const struct resil_acquire_opts *opts,
                  struct resil_decision *out)
{
    uint64_t start = now_ns(), deadline;
    int fail_mode, rc, deadline_ms = opts ? opts->deadline_ms : 0;
    struct answer a;
    const msgpack_object *res;
    uint32_t id;
    int allow;

    if (!out) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    /* Caller bugs deny before anything is sent, whatever the fail mode: a
     * fallback allow would trade unchecked on a bug nobody sees. */
    fail_mode = opts ? opts->fail_mode : RESIL_FAIL_DEFAULT;
    if (!r || not_for_trading(r) || !valid_name(key, RESIL_KEY_MAX) ||
        deadline_ms < 0 ||
        (fail_mode != RESIL_FAIL_DEFAULT && fail_mode != RESIL_FAIL_OPEN &&
         fail_mode != RESIL_FAIL_CLOSED) ||
        (opts &&
         (opts->cost > RESIL_COST_MAX || opts->wait_ms > RESIL_WAIT_MAX_MS)))
        return invalid_decision(out);
    if (fail_mode == RESIL_FAIL_DEFAULT)
        fail_mode = __atomic_load_n(&r->fail_mode, __ATOMIC_RELAXED);
    fallback_decision(out, fail_mode);
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    id = begin_request(r, "acquire");
    msgpack_pack_array(&r->pk, 1);
    msgpack_pack_map(&r->pk, 4);
    proto_kv_str(&r->pk, "key", key);
    proto_kv_u64(&r->pk, "cost", opts && opts->cost ? opts->cost : 1);
    proto_kv_u64(&r->pk, "wait_ms", opts ? opts->wait_ms : 0);
    proto_kv_str(&r->pk, "priority",
                 opts && opts->critical ? "critical" : "normal");
    if (r->sbuf_overflow) { /* cannot happen with a valid key */
        rc = invalid_decision(out);
        goto out;
    }
    if ((rc = roundtrip(r, id, RECV_CAP_BYTES, deadline, &a, 1)) < 0)
        goto out;
    if (a.m.error->type != MSGPACK_OBJECT_NIL) {
        rc = remote_error(&a.m, out->error_code, sizeof(out->error_code), NULL,
                          0);
        if (rc == RESIL_EREMOTE) {
            /* bad_request is the caller's bug: deny, so it shows at once
             * instead of trading unchecked.  Anything else (busy,
             * too_many_keys: the daemon cannot decide) keeps the fallback
             * of the fail mode, with error_code saying why. */
            if (!strcmp(out->error_code, "bad_request")) {
                out->allow = 0;
                out->fallback = 0;
                strcpy(out->reason, "error");
            }
            if (error_closes(&a.m))
                drop_connection(r);
            else
                consume(r, a.frame_len);
        } else {
            fail_connection(r, now_ns());
        }
        goto out;
    }
    res = a.m.result;
    if (get_bool(res, "allow", &allow) < 0) {
        errno = EPROTO;
        rc = RESIL_EPROTO;
        fail_connection(r, now_ns());
        goto out;
    }
    out->allow = allow;
    out->fallback = 0;
    if (get_uint(res, "permit", &out->permit) < 0)
        out->permit = 0;
    if (get_uint(res, "retry_after_ms", &out->retry_after_ms) < 0)
        out->retry_after_ms = 0;
    proto_str_copy(proto_map_get(res, "state"), out->state, sizeof(out->state));
    proto_str_copy(proto_map_get(res, "reason"), out->reason,
                   sizeof(out->reason));
    consume(r, a.frame_len);
    rc = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* --- report ------------------------------------------------------------- */

int resil_report(resil_t *r, const struct resil_report *rep,
                 struct resil_report_result *out)
{
    static const char *const outcomes[] = {"success", "failure", "ignore",
                                           "unknown"};
    struct resil_report_result scratch;
    uint64_t start = now_ns(), deadline;
    const msgpack_object *res, *o;
    struct answer a;
    uint32_t id, n, nerr;
    int rc, b;

    if (!out)
        out = &scratch;
    memset(out, 0, sizeof(*out));
    /* The daemon's bounds (a bad_request there): refused without sending.
     * error_message and correlation_id are truncated by the daemon; one
     * too long for the send buffer is refused below. */
    if (!r || not_for_trading(r) || !rep ||
        !valid_name(rep->key, RESIL_KEY_MAX) || rep->deadline_ms < 0 ||
        (unsigned)rep->outcome > RESIL_UNKNOWN ||
        rep->latency_ms > RESIL_TIME_MAX_MS ||
        rep->retry_after_ms > RESIL_TIME_MAX_MS ||
        rep->attempt > RESIL_ATTEMPT_MAX ||
        (rep->error_class && !valid_name(rep->error_class, RESIL_CLASS_MAX))) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, rep->deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;

    n = 2 + !!rep->permit + (rep->latency_ms >= 0) + (rep->attempt > 1) +
        !!rep->non_idempotent + !!rep->correlation_id;
    nerr =
        !!rep->error_class + !!rep->error_message + (rep->retry_after_ms >= 0);
    n += nerr > 0;
    id = begin_request(r, "report");
    msgpack_pack_array(&r->pk, 1);
    msgpack_pack_map(&r->pk, n);
    proto_kv_str(&r->pk, "key", rep->key);
    proto_kv_str(&r->pk, "outcome", outcomes[rep->outcome]);
    if (rep->permit)
        proto_kv_u64(&r->pk, "permit", rep->permit);
    if (rep->latency_ms >= 0)
        proto_kv_u64(&r->pk, "latency_ms", (uint64_t)rep->latency_ms);
    if (rep->attempt > 1)
        proto_kv_u64(&r->pk, "attempt", rep->attempt);
    if (rep->non_idempotent)
        proto_kv_bool(&r->pk, "idempotent", 0);
    if (rep->correlation_id)
        proto_kv_str(&r->pk, "correlation_id", rep->correlation_id);
    if (nerr) {
        proto_pack_cstr(&r->pk, "error");
        msgpack_pack_map(&r->pk, nerr);
        if (rep->error_class)
            proto_kv_str(&r->pk, "class", rep->error_class);
        if (rep->error_message)
            proto_kv_str(&r->pk, "message", rep->error_message);
        if (rep->retry_after_ms >= 0)
            proto_kv_u64(&r->pk, "retry_after_ms",
                         (uint64_t)rep->retry_after_ms);
    }
    if (r->sbuf_overflow) { /* too large to send: a caller bug */
        errno = EINVAL;
        rc = RESIL_EINVAL;
        goto out;
    }
    if ((rc = roundtrip(r, id, RECV_CAP_BYTES, deadline, &a, 0)) < 0)
        goto out;
    if (a.m.error->type != MSGPACK_OBJECT_NIL) {
        rc = remote_error(&a.m, out->error_code, sizeof(out->error_code), NULL,
                          0);
        if (rc != RESIL_EREMOTE)
            fail_connection(r, now_ns());
        else if (error_closes(&a.m))
            drop_connection(r);
        else
            consume(r, a.frame_len);
        goto out;
    }
    res = a.m.result;
    if (proto_str_copy(proto_map_get(res, "state"), out->state,
                       sizeof(out->state)) < 0) {
        errno = EPROTO;
        rc = RESIL_EPROTO;
        fail_connection(r, now_ns());
        goto out;
    }
    if (get_bool(res, "stale", &b) == 0)
        out->stale = b;
    if ((o = proto_map_get(res, "classification")) != NULL) {
        proto_str_copy(proto_map_get(o, "severity"), out->severity,
                       sizeof(out->severity));
        if (get_bool(o, "transient", &b) == 0)
            out->transient = b;
    }
    if ((o = proto_map_get(res, "retry")) != NULL) {
        if (get_bool(o, "retry", &b) == 0)
            out->retry = b;
        if (get_uint(o, "delay_ms", &out->retry_delay_ms) < 0)
            out->retry_delay_ms = 0;
        proto_str_copy(proto_map_get(o, "reason"), out->retry_reason,
                       sizeof(out->retry_reason));
    }
    consume(r, a.frame_len);
    rc = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* --- ping --------------------------------------------------------------- */

int resil_ping(resil_t *r, int deadline_ms, char *version, size_t cap,
               long *pid)
{
    uint64_t start = now_ns(), deadline, u;
    struct answer a;
    uint32_t id;
    int rc;

    if (version && cap)
        version[0] = '\0';
    if (pid)
        *pid = 0;
    if (!r || not_for_trading(r) || deadline_ms < 0) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    id = begin_request(r, "ping");
    msgpack_pack_array(&r->pk, 0);
    if ((rc = roundtrip(r, id, RECV_CAP_BYTES, deadline, &a, 0)) < 0)
        goto out;
    if (a.m.error->type != MSGPACK_OBJECT_NIL) {
        rc = remote_error(&a.m, NULL, 0, NULL, 0);
        if (rc != RESIL_EREMOTE)
            fail_connection(r, now_ns());
        else
            consume(r, a.frame_len);
        goto out;
    }
    if (a.m.result->type != MSGPACK_OBJECT_MAP) {
        errno = EPROTO;
        rc = RESIL_EPROTO;
        fail_connection(r, now_ns());
        goto out;
    }
    if (version && cap)
        proto_str_copy(proto_map_get(a.m.result, "version"), version, cap);
    if (pid && get_uint(a.m.result, "pid", &u) == 0)
        *pid = (long)u;
    consume(r, a.frame_len);
    rc = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* --- generic call ------------------------------------------------------- */

/* Bytes of the header of an array of 4 at p, or 0 if it is not one. */
static size_t array4_head(uint8_t b)
{
    if (b == 0x94)
        return 1;
    if (b == 0xdc)
        return 3;
    if (b == 0xdd)
        return 5;
    return 0;
}

/*
 * The result is the last element of [1, msgid, error, result]: skip the
 * first three with the scanner and copy the rest verbatim (no re-encoding).
 */
static int copy_result(const uint8_t *frame, size_t len, void **result,
                       size_t *result_len)
{
    struct proto_scan s;
    size_t off = array4_head(frame[0]);
    long n;
    int i;

    if (!off)
        return RESIL_EPROTO;
    for (i = 0; i < 3; i++) {
        proto_scan_init(&s);
        n = proto_scan_next(&s, frame + off, len - off, len - off,
                            PROTO_MAX_DEPTH);
        if (n <= 0)
            return RESIL_EPROTO;
        off += (size_t)n;
    }
    if (off >= len)
        return RESIL_EPROTO;
    *result = malloc(len - off);
    if (!*result)
        return RESIL_ENOMEM;
    memcpy(*result, frame + off, len - off);
    *result_len = len - off;
    return 0;
}

/* 1 if buf holds exactly one msgpack map (within the nesting limit). */
static int is_one_map(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    struct proto_scan s;

    if (!len ||
        !((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
        return 0;
    proto_scan_init(&s);
    return proto_scan_next(&s, p, len, len, PROTO_MAX_DEPTH) == (long)len;
}

int resil_call(resil_t *r, const char *method, const void *params_mp,
               size_t params_len, int deadline_ms, void **result,
               size_t *result_len, char *code, char *msg, size_t cap)
{
    uint64_t start = now_ns(), deadline;
    struct answer a;
    uint32_t id;
    int rc;

    if (code && cap)
        code[0] = '\0';
    if (msg && cap)
        msg[0] = '\0';
    if (result)
        *result = NULL;
    if (result_len)
        *result_len = 0;
    if (!r || not_for_trading(r) || !method || !method[0] ||
        strnlen(method, RESIL_METHOD_MAX + 1) > RESIL_METHOD_MAX || !result ||
        !result_len || deadline_ms < 0 ||
        (params_mp && !is_one_map(params_mp, params_len)) ||
        (!params_mp && params_len)) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    /* Room for the head (method name + a few bytes) and the params. */
    if (strlen(method) + params_len + 32 > r->sbuf_cap) {
        size_t want = strlen(method) + params_len + 32;
        char *p = realloc(r->sbuf, want);

        if (!p) {
            rc = RESIL_ENOMEM;
            goto out;
        }
        r->sbuf = p;
        r->sbuf_cap = want;
    }
    id = begin_request(r, method);
    if (params_mp) {
        msgpack_pack_array(&r->pk, 1);
        sbuf_write(r, params_mp, params_len);
    } else {
        msgpack_pack_array(&r->pk, 0);
    }
    if (r->sbuf_overflow) { /* too large to send: a caller bug */
        errno = EINVAL;
        rc = RESIL_EINVAL;
        goto out;
    }
    if ((rc = roundtrip(r, id, CALL_MAX_RESPONSE_BYTES, deadline, &a,
                        !strcmp(method, "acquire"))) < 0)
        goto out;
    if (a.m.error->type != MSGPACK_OBJECT_NIL) {
        rc = remote_error(&a.m, code, cap, msg, cap);
        if (rc != RESIL_EREMOTE)
            fail_connection(r, now_ns());
        else if (error_closes(&a.m))
            drop_connection(r);
        else
            consume(r, a.frame_len);
        goto out;
    }
    rc = copy_result(r->rbuf, a.frame_len, result, result_len);
    if (rc == RESIL_EPROTO) {
        errno = EPROTO;
        fail_connection(r, now_ns());
        goto out;
    }
    consume(r, a.frame_len); /* also on RESIL_ENOMEM: the frame was read */
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* --- heartbeat ------------------------------------------------------------ */

/* The common end of a call whose answer is an error or not a map: copy
 * the error, keep or drop the connection, return the code. */
static int answer_failed(struct resil *r, struct answer *a, char *code,
                         size_t cap)
{
    int rc;

    if (a->m.error->type != MSGPACK_OBJECT_NIL) {
        rc = remote_error(&a->m, code, cap, NULL, 0);
        if (rc != RESIL_EREMOTE)
            fail_connection(r, now_ns());
        else if (error_closes(&a->m))
            drop_connection(r);
        else
            consume(r, a->frame_len);
        return rc;
    }
    errno = EPROTO;
    fail_connection(r, now_ns());
    return RESIL_EPROTO;
}

int resil_heartbeat(resil_t *r, const char *key, int64_t latency_ms,
                    int deadline_ms, struct resil_heartbeat_result *out)
{
    struct resil_heartbeat_result scratch;
    uint64_t start = now_ns(), deadline;
    struct answer a;
    uint32_t id;
    int rc;

    if (!out)
        out = &scratch;
    memset(out, 0, sizeof(*out));
    if (!r || not_for_trading(r) || !valid_name(key, RESIL_KEY_MAX) ||
        latency_ms > RESIL_TIME_MAX_MS || deadline_ms < 0) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    id = begin_request(r, "heartbeat");
    msgpack_pack_array(&r->pk, 1);
    msgpack_pack_map(&r->pk, 1 + (latency_ms >= 0));
    proto_kv_str(&r->pk, "key", key);
    if (latency_ms >= 0)
        proto_kv_u64(&r->pk, "latency_ms", (uint64_t)latency_ms);
    if ((rc = roundtrip(r, id, RECV_CAP_BYTES, deadline, &a, 0)) < 0)
        goto out;
    if (a.m.error->type != MSGPACK_OBJECT_NIL ||
        proto_str_copy(proto_map_get(a.m.result, "state"), out->state,
                       sizeof(out->state)) < 0) {
        rc = answer_failed(r, &a, out->error_code, sizeof(out->error_code));
        goto out;
    }
    consume(r, a.frame_len);
    rc = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* --- status of one key ---------------------------------------------------- */

static uint64_t map_u64(const msgpack_object *map, const char *name)
{
    uint64_t v;

    return get_uint(map, name, &v) == 0 ? v : 0;
}

static double map_num(const msgpack_object *map, const char *name)
{
    const msgpack_object *o = proto_map_get(map, name);

    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (double)o->via.u64;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        return o->via.f64;
    return 0;
}

static void map_str(const msgpack_object *map, const char *name, char *dst,
                    size_t cap)
{
    if (proto_str_copy(proto_map_get(map, name), dst, cap) < 0)
        dst[0] = '\0';
}

static void key_status_fill(struct resil_key_status *s, const msgpack_object *m)
{
    const msgpack_object *o;

    s->found = 1;
    map_str(m, "key", s->key, sizeof(s->key));
    map_str(m, "policy", s->policy, sizeof(s->policy));
    map_str(m, "state", s->state, sizeof(s->state));
    map_str(m, "health", s->health, sizeof(s->health));
    map_str(m, "opened_by", s->opened_by, sizeof(s->opened_by));
    s->since_ms = map_u64(m, "since_ms");
    s->calls = map_u64(m, "calls");
    s->failures = map_u64(m, "failures");
    s->failure_rate = map_num(m, "failure_rate");
    s->slow_rate = map_num(m, "slow_rate");
    s->opens = map_u64(m, "opens");
    s->retry_after_ms = map_u64(m, "retry_after_ms");
    s->outstanding = map_u64(m, "outstanding");
    o = proto_map_get(m, "latency_ms");
    s->latency_p50_ms = map_u64(o, "p50");
    s->latency_p99_ms = map_u64(o, "p99");
    o = proto_map_get(m, "limiter");
    if (o && o->type == MSGPACK_OBJECT_MAP) {
        s->has_limiter = 1;
        s->limiter_rate = map_u64(o, "rate");
        s->limiter_per_ms = map_u64(o, "per_ms");
        s->limiter_burst = map_u64(o, "burst");
        s->limiter_available = map_u64(o, "available");
        s->limiter_paused_ms = map_u64(o, "paused_ms");
    }
    o = proto_map_get(m, "bulkhead");
    if (o && o->type == MSGPACK_OBJECT_MAP) {
        s->has_bulkhead = 1;
        s->bulkhead_in_use = map_u64(o, "in_use");
        s->bulkhead_max = map_u64(o, "max");
        s->bulkhead_queued = map_u64(o, "queued");
    }
    o = proto_map_get(m, "force_reason");
    if (o && o->type == MSGPACK_OBJECT_STR) {
        s->forced = 1;
        map_str(m, "force_reason", s->force_reason, sizeof(s->force_reason));
        s->force_ttl_ms = map_u64(m, "force_ttl_ms");
    }
}

int resil_status(resil_t *r, const char *key, int deadline_ms,
                 struct resil_key_status *out)
{
    uint64_t start = now_ns(), deadline;
    const msgpack_object *keys;
    struct answer a;
    uint32_t id;
    int rc;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!r || !out || not_for_trading(r) || !valid_name(key, RESIL_KEY_MAX) ||
        deadline_ms < 0) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    id = begin_request(r, "status");
    msgpack_pack_array(&r->pk, 1);
    msgpack_pack_map(&r->pk, 1);
    proto_kv_str(&r->pk, "key", key);
    if ((rc = roundtrip(r, id, RECV_CAP_BYTES, deadline, &a, 0)) < 0)
        goto out;
    keys = proto_map_get(a.m.result, "keys");
    if (a.m.error->type != MSGPACK_OBJECT_NIL || !keys ||
        keys->type != MSGPACK_OBJECT_ARRAY ||
        (keys->via.array.size &&
         keys->via.array.ptr[0].type != MSGPACK_OBJECT_MAP)) {
        rc = answer_failed(r, &a, out->error_code, sizeof(out->error_code));
        goto out;
    }
    if (keys->via.array.size)
        key_status_fill(out, &keys->via.array.ptr[0]);
    consume(r, a.frame_len);
    rc = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* --- subscribe / poll ----------------------------------------------------- */

/* Topic mask of a "subscribed" list; unknown names are ignored. */
static unsigned topics_of(const msgpack_object *list)
{
    unsigned mask = 0;
    uint32_t i;
    size_t t;

    if (!list || list->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (i = 0; i < list->via.array.size; i++)
        for (t = 0; t < NTOPICS; t++)
            if (proto_str_eq(&list->via.array.ptr[i], topic_names[t]))
                mask |= 1u << t;
    return mask;
}

/* subscribe or unsubscribe (topics 0: unsubscribe from all).  Holds mu. */
static int topics_call(struct resil *r, const char *method, unsigned topics,
                       uint64_t deadline, struct resil_topics_result *out)
{
    const msgpack_object *list;
    struct answer a;
    uint32_t id, n = 0;
    size_t t;
    int rc;

    for (t = 0; t < NTOPICS; t++)
        n += !!(topics & (1u << t));
    id = begin_request(r, method);
    msgpack_pack_array(&r->pk, 1);
    msgpack_pack_map(&r->pk, n ? 1 : 0);
    if (n) {
        proto_pack_cstr(&r->pk, "topics");
        msgpack_pack_array(&r->pk, n);
        for (t = 0; t < NTOPICS; t++)
            if (topics & (1u << t))
                proto_pack_cstr(&r->pk, topic_names[t]);
    }
    if ((rc = roundtrip(r, id, RECV_CAP_BYTES, deadline, &a, 0)) < 0)
        return rc;
    list = proto_map_get(a.m.result, "subscribed");
    if (a.m.error->type != MSGPACK_OBJECT_NIL || !list ||
        list->type != MSGPACK_OBJECT_ARRAY)
        return answer_failed(r, &a, out->error_code, sizeof(out->error_code));
    out->subscribed = topics_of(list);
    consume(r, a.frame_len);
    return 0;
}

/* The connection of an event handle is lost: remember why, keep the fd
 * (resil.h, "Loss"). */
static int ev_lost(struct resil *r, int rc, int err)
{
    r->ev_dead = 1;
    r->ev_dead_rc = rc;
    r->ev_dead_errno = err;
    errno = err;
    return rc;
}

/*
 * Hand the complete frames in rbuf to the callback, at most budget events
 * (a frame cut by the budget resumes next time); other complete objects
 * (a late answer to an (un)subscribe given up on) are dropped.  Nothing
 * is read from the socket.  The events delivered, or -1 on garbage.
 */
static long deliver_buffered(struct resil *r, int budget)
{
    size_t off = 0;
    long got, n, delivered = 0;
    int done;

    while (delivered < budget) {
        got = r->rbuf_len > off
                  ? proto_scan_next(&r->scan, r->rbuf + off, r->rbuf_len - off,
                                    RECV_CAP_BYTES, PROTO_MAX_DEPTH)
                  : 0;
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        done = 1;
        if (got >= 2 && r->rbuf[off] == 0x93 && r->rbuf[off + 1] == 0x02) {
            n = deliver_frame(r, r->rbuf + off, (size_t)got,
                              (uint32_t)(budget - delivered), &done);
            if (n < 0)
                return -1;
            delivered += n;
        }
        proto_scan_init(&r->scan);
        if (!done)
            break; /* the rest of this frame goes next time */
        off += (size_t)got;
    }
    compact(r, off);
    return delivered;
}

int resil_subscribe(resil_t *r, unsigned topics, resil_event_fn fn, void *arg,
                    int deadline_ms, struct resil_topics_result *out)
{
    struct resil_topics_result scratch;
    uint64_t start = now_ns(), deadline;
    int rc;

    if (!out)
        out = &scratch;
    memset(out, 0, sizeof(*out));
    if (!r || !fn || cb_handle == r || topics == 0 ||
        (topics & ~(unsigned)RESIL_TOPIC_ALL) || deadline_ms < 0) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    __atomic_store_n(&r->events, 1, __ATOMIC_RELAXED);
    r->ev_fn = fn;
    r->ev_arg = arg;
    if (r->ev_dead) { /* the old connection is gone: start a new one */
        drop_connection(r);
        r->ev_dead = 0;
        r->ev_frame_at = 0;
    }
    rc = topics_call(r, "subscribe", topics, deadline, out);
    /* Events that came in the same reads as the answer sit in rbuf, where
     * the fd does not show them: hand them over now, so that an event
     * loop may wait for readability as soon as this returns. */
    if (rc == 0 && deliver_buffered(r, INT32_MAX) < 0)
        rc = ev_lost(r, RESIL_EPROTO, EPROTO);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int resil_unsubscribe(resil_t *r, unsigned topics, int deadline_ms,
                      struct resil_topics_result *out)
{
    struct resil_topics_result scratch;
    uint64_t start = now_ns(), deadline;
    int rc;

    if (!out)
        out = &scratch;
    memset(out, 0, sizeof(*out));
    if (!r || cb_handle == r || (topics & ~(unsigned)RESIL_TOPIC_ALL) ||
        deadline_ms < 0) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, deadline_ms, start);
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    if (!r->events || r->ev_dead || r->fd < 0 || r->fd_pid != getpid()) {
        /* A new connection has no subscription to drop. */
        errno = r->ev_dead ? r->ev_dead_errno : ENOTCONN;
        rc = RESIL_ECONN;
    } else {
        rc = topics_call(r, "unsubscribe", topics, deadline, out);
        if (rc == 0 && deliver_buffered(r, INT32_MAX) < 0)
            rc = ev_lost(r, RESIL_EPROTO, EPROTO);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int resil_fd(const resil_t *r)
{
    if (!r || !__atomic_load_n(&r->events, __ATOMIC_RELAXED) || r->fd < 0 ||
        r->fd_pid != getpid())
        return -1;
    return r->fd;
}

#define POLL_READ_MAX_BYTES (256u * 1024) /* per resil_poll_events call */
#define POLL_MAX_EVENTS 65536

int resil_poll_events(resil_t *r, int max_events)
{
    uint64_t deadline;
    size_t got_bytes = 0;
    long n;
    ssize_t rd;
    int rc, delivered = 0;

    if (!r || cb_handle == r || max_events < 1 ||
        max_events > POLL_MAX_EVENTS ||
        !__atomic_load_n(&r->events, __ATOMIC_RELAXED)) {
        errno = EINVAL;
        return RESIL_EINVAL;
    }
    deadline = deadline_of(r, 0, now_ns());
    if ((rc = lock_until(r, deadline)) < 0)
        return rc;
    if (r->ev_dead) {
        errno = r->ev_dead_errno;
        rc = r->ev_dead_rc;
        goto out;
    }
    if (r->fd < 0 || r->fd_pid != getpid()) {
        errno = ENOTCONN;
        rc = RESIL_ECONN;
        goto out;
    }
    for (;;) {
        if ((n = deliver_buffered(r, max_events - delivered)) < 0) {
            rc = ev_lost(r, RESIL_EPROTO, EPROTO);
            goto out;
        }
        delivered += (int)n;
        if (delivered == max_events || got_bytes >= POLL_READ_MAX_BYTES)
            break;
        rd = recv(r->fd, r->rbuf + r->rbuf_len, r->rbuf_cap - r->rbuf_len,
                  MSG_DONTWAIT);
        if (rd > 0) {
            r->rbuf_len += (size_t)rd;
            got_bytes += (size_t)rd;
            continue;
        }
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EOF or an error: the events before it were delivered; say so
         * next time if any were, now if none. */
        ev_lost(r, RESIL_ECONN, rd == 0 ? ECONNRESET : errno);
        if (delivered == 0) {
            rc = RESIL_ECONN;
            goto out;
        }
        break;
    }
    rc = delivered;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

long resil_event_str(const struct resil_event *ev, const char *name, char *dst,
                     size_t cap)
{
    if (!ev || !ev->priv || !name)
        return -1;
    return proto_str_copy(proto_map_get(ev->priv, name), dst, cap);
}

int resil_event_uint(const struct resil_event *ev, const char *name,
                     uint64_t *v)
{
    if (!ev || !ev->priv || !name || !v)
        return -1;
    return get_uint(ev->priv, name, v);
}

int resil_event_bool(const struct resil_event *ev, const char *name, int *v)
{
    if (!ev || !ev->priv || !name || !v)
        return -1;
    return get_bool(ev->priv, name, v);
}
