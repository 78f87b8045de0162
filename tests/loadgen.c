/*
 * loadgen.c - the load generator of `make bench` (tests/bench_table.py):
 * one thread, epoll, c non-blocking AF_UNIX connections, each keeping P
 * requests in flight, for n timed requests after w untimed ones; every
 * request's latency (send -> its answer) is recorded and the run prints
 * requests/s and p50, p99, p99.9 in microseconds.
 *
 * The same loop, the same clock and the same accounting drive every
 * protocol, so the rows of the table differ only in the server:
 *   resild   msgpack-rpc `acquire {key}`; each allowed answer is followed,
 *            in the same write as the slot's next acquire, by the matching
 *            `report {key, permit, outcome: success, latency_ms: 1}` sent
 *            as a notification (fire and forget, as a pipelining client
 *            does), so the permit pool never fills and each counted
 *            request is one whole decision.  Every answer is checked: its
 *            msgid must be one in flight on that connection and the
 *            decision an allow with a permit; an error or a denial counts
 *            as a failure.
 *   incr     RESP `INCR key`, answer an integer.
 *   gcra     RESP `EVALSHA sha 1 key 1 1000000000` (tests/bench_table.py
 *            loads the script: a GCRA limiter as a user would write it),
 *            answer the integer 1 (allowed).
 *   hset     RESP `HSET key state closed failures 0 tokens 1000 updated_ms
 *            1700000000000 opened_ms 0`, answer an integer (loading).
 *   echo     `bytes` bytes (default: the size of the resild acquire) that
 *            must come back unchanged, against `loadgen serve-echo PATH`:
 *            a single-threaded epoll echo server, the floor for one event
 *            loop on this socket type.
 * With -K PREFIX each request names its own key, PREFIX followed by a
 * 7-digit number counting up from -s START (loading: one key per request);
 * else every request uses -k KEY.
 *
 * Requests are packed once, up front (msgpack-c for the resild ones, with
 * the msgid, permit and key digits at fixed offsets patched in place);
 * answers are parsed in place by small bounded readers.  Nothing is
 * allocated in the timed loop.
 *
 * Output: a human line unless -q, then one machine line
 *   RESULT proto=.. c=.. P=.. n=.. secs=.. rps=.. p50=.. p99=.. p999=..
 *          max=.. failures=..
 * (latencies in us, nearest rank over all n samples); -o FILE also
 * writes the n samples (uint64 ns, native order) for a driver to merge.  Exit
 * 0, or 1 when anything broke (connect, a wrong or failed answer, a denial, a
 * stall of 10 s with requests in flight), 2 on bad usage.  Never asserts a
 * time.
 *
 * Not a test: its name does not start with test_, so tests/run.sh skips it.
 */
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define MAX_DEPTH 1024 /* P: slot numbers fit the msgid's low 10 bits */
#define SLOT_BITS 10
#define MAX_N 50000000     /* 400 MB of samples at most */
#define MAX_REQ_BYTES 4096 /* one packed request or report */
#define IN_BYTES 65536     /* per-connection input buffer */
#define STALL_MS 10000     /* no answer for this long: broken */
#define KEY_DIGITS 7       /* -K: PREFIX0000000 .. PREFIX9999999 */
#define MAX_NEST 8         /* answers nested deeper are refused */

enum proto { P_RESILD, P_INCR, P_GCRA, P_HSET, P_ECHO };

/* One packed message with the byte offsets to patch (0: none). */
struct tmpl {
    unsigned char buf[MAX_REQ_BYTES];
    size_t len;
    size_t msgid_off;  /* 4 bytes big-endian after 0xce */
    size_t permit_off; /* 8 bytes big-endian after 0xcf */
    size_t key_off;    /* the KEY_DIGITS digits of a -K key */
};

struct conn {
    int fd;
    unsigned char in[IN_BYTES];
    size_t in_len;
    unsigned char *out; /* queued bytes not yet written */
    size_t out_len, out_cap;
    int want_out; /* EPOLLOUT is on */
    unsigned inflight;
    uint64_t sent_ns[MAX_DEPTH];
    uint32_t expect[MAX_DEPTH]; /* resild: msgid in flight per slot */
    uint32_t keyidx[MAX_DEPTH]; /* -K: the key number per slot */
    uint16_t free_slots[MAX_DEPTH];
    unsigned nfree;
    uint32_t seq;                 /* resild: msgid generation */
    uint64_t fifo_sent, fifo_got; /* RESP and echo: in-order slots */
};

struct run {
    enum proto proto;
    const char *path;
    unsigned c, depth;
    uint64_t n, warm;
    const char *key, *prefix, *sha;
    const char *samples_path; /* -o: the timed samples, raw uint64 ns */
    uint64_t start;
    size_t echo_bytes;
    int quiet;
    struct tmpl req, rep;
    struct conn *conns;
    int ep;
    /* the phase in progress */
    uint64_t to_send, sent, got, next_key;
    uint64_t *samples;
    size_t nsamples;
    uint64_t failures;
    const char *why; /* first failure, for the message */
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(struct run *r, const char *why)
{
    if (!r->failures++)
        r->why = why;
}

/* --- templates ----------------------------------------------------------- */

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    while (bytes-- > 0) {
        p[bytes] = (unsigned char)v;
        v >>= 8;
    }
}

static void put_digits(unsigned char *p, uint64_t v)
{
    int i;

    for (i = KEY_DIGITS - 1; i >= 0; i--) {
        p[i] = (unsigned char)('0' + v % 10);
        v /= 10;
    }
}

/* msgpack-c writes into the template through this. */
static int tmpl_write(void *data, const char *buf, size_t len)
{
    struct tmpl *t = data;

    if (t->len + len > sizeof(t->buf))
        return -1;
    memcpy(t->buf + t->len, buf, len);
    t->len += len;
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);

    return msgpack_pack_str(pk, len) | msgpack_pack_str_body(pk, s, len);
}

/* The key string: KEY, or PREFIX plus KEY_DIGITS zeros (offset kept). */
static int pack_key(struct run *r, msgpack_packer *pk, struct tmpl *t)
{
    char k[256];

    if (!r->prefix)
        return pack_str(pk, r->key);
    snprintf(k, sizeof(k), "%s%0*d", r->prefix, KEY_DIGITS, 0);
    if (msgpack_pack_str(pk, strlen(k)) < 0)
        return -1;
    t->key_off = t->len + strlen(r->prefix);
    return msgpack_pack_str_body(pk, k, strlen(k));
}

/* [0, msgid, "acquire", [{"key": K}]] and
 * [2, "report", [{"key": K, "permit": P, "outcome": "success",
 *                 "latency_ms": 1}]], msgid as uint32 and permit as
 * uint64 in their full-width forms so they can be patched. */
static int tmpl_resild(struct run *r)
{
    static const unsigned char zero8[8];
    msgpack_packer pk;
    int rc;

    r->req.buf[0] = 0x94;
    r->req.buf[1] = 0x00;
    r->req.buf[2] = 0xce;
    r->req.msgid_off = 3;
    r->req.len = 7;
    msgpack_packer_init(&pk, &r->req, tmpl_write);
    rc = pack_str(&pk, "acquire") | msgpack_pack_array(&pk, 1) |
         msgpack_pack_map(&pk, 1) | pack_str(&pk, "key") |
         pack_key(r, &pk, &r->req);
    msgpack_packer_init(&pk, &r->rep, tmpl_write);
    rc |= msgpack_pack_array(&pk, 3) | msgpack_pack_int(&pk, 2) |
          pack_str(&pk, "report") | msgpack_pack_array(&pk, 1) |
          msgpack_pack_map(&pk, 4) | pack_str(&pk, "key") |
          pack_key(r, &pk, &r->rep) | pack_str(&pk, "permit");
    if (r->rep.len + 9 > sizeof(r->rep.buf))
        return -1;
    r->rep.buf[r->rep.len++] = 0xcf;
    r->rep.permit_off = r->rep.len;
    rc |= tmpl_write(&r->rep, (const char *)zero8, 8);
    rc |= pack_str(&pk, "outcome") | pack_str(&pk, "success") |
          pack_str(&pk, "latency_ms") | msgpack_pack_uint8(&pk, 1);
    return rc ? -1 : 0;
}

/* A RESP array of argc bulk strings; an argument "\x01" stands for the
 * key (KEY, or PREFIX plus digits, offset kept). */
static int tmpl_resp(struct run *r, int argc, const char **argv)
{
    struct tmpl *t = &r->req;
    char k[256];
    int i, n;

    n = snprintf((char *)t->buf, sizeof(t->buf), "*%d\r\n", argc);
    t->len = (size_t)n;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "\x01") == 0) {
            if (r->prefix)
                snprintf(k, sizeof(k), "%s%0*d", r->prefix, KEY_DIGITS, 0);
            else
                snprintf(k, sizeof(k), "%s", r->key);
            a = k;
        }
        n = snprintf((char *)t->buf + t->len, sizeof(t->buf) - t->len,
                     "$%zu\r\n", strlen(a));
        if (n < 0 || t->len + (size_t)n + strlen(a) + 2 > sizeof(t->buf))
            return -1;
        t->len += (size_t)n;
        if (a == k && r->prefix)
            t->key_off = t->len + strlen(r->prefix);
        memcpy(t->buf + t->len, a, strlen(a));
        t->len += strlen(a);
        memcpy(t->buf + t->len, "\r\n", 2);
        t->len += 2;
    }
    return 0;
}

static int tmpl_build(struct run *r)
{
    static const char *incr[] = {"INCR", "\x01"};
    static const char *hset[] = {
        "HSET",   "\x01", "state",      "closed",        "failures",  "0",
        "tokens", "1000", "updated_ms", "1700000000000", "opened_ms", "0"};
    const char *gcra[] = {"EVALSHA", r->sha ? r->sha : "", "1", "\x01",
                          "1",       "1000000000"};
    struct run tmp;
    size_t i;

    switch (r->proto) {
    case P_RESILD:
        return tmpl_resild(r);
    case P_INCR:
        return tmpl_resp(r, 2, incr);
    case P_GCRA:
        return r->sha ? tmpl_resp(r, 6, gcra) : -1;
    case P_HSET:
        return tmpl_resp(r, 12, hset);
    case P_ECHO:
        if (!r->echo_bytes) { /* the size of the resild acquire */
            memset(&tmp, 0, sizeof(tmp));
            tmp.key = r->key;
            tmp.prefix = r->prefix;
            if (tmpl_resild(&tmp) < 0)
                return -1;
            r->echo_bytes = tmp.req.len;
        }
        if (r->echo_bytes > sizeof(r->req.buf))
            return -1;
        for (i = 0; i < r->echo_bytes; i++)
            r->req.buf[i] = (unsigned char)('a' + i % 26);
        r->req.len = r->echo_bytes;
        return 0;
    }
    return -1;
}

/* --- answer readers ------------------------------------------------------ */

/* Bounded msgpack reader over p[0..len): each returns 1 and advances *off
 * on success, 0 when the bytes end first, -1 on a malformed or unwanted
 * value. */
struct mp {
    const unsigned char *p;
    size_t len, off;
};

static int mp_need(struct mp *m, size_t k)
{
    return m->len - m->off >= k;
}

static uint64_t mp_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;

    while (bytes-- > 0)
        v = v << 8 | *p++;
    return v;
}

/* The header at off: its kind ('i' uint, 'n' negative int, 'z' nil,
 * 'b' bool, 'f' float, 's' str, 'r' bin, 'e' ext, 'a' array, 'm' map),
 * its value (ints, bools), or byte length (str, bin, ext) or count. */
static int mp_head(struct mp *m, char *kind, uint64_t *v)
{
    unsigned char b;
    int w;

    if (!mp_need(m, 1))
        return 0;
    b = m->p[m->off];
    if (b <= 0x7f || b >= 0xe0) {
        *kind = b <= 0x7f ? 'i' : 'n';
        *v = b;
        m->off++;
        return 1;
    }
    if (b >= 0x80 && b <= 0xbf) {
        *kind = b <= 0x8f ? 'm' : b <= 0x9f ? 'a' : 's';
        *v = b <= 0x9f ? (b & 0x0f) : (b & 0x1f);
        m->off++;
        return 1;
    }
    switch (b) {
    case 0xc0:
        *kind = 'z', *v = 0, w = 0;
        break;
    case 0xc2:
    case 0xc3:
        *kind = 'b', *v = b & 1, w = 0;
        break;
    case 0xc4:
        *kind = 'r', w = 1;
        break;
    case 0xc5:
        *kind = 'r', w = 2;
        break;
    case 0xc6:
        *kind = 'r', w = 4;
        break;
    case 0xc7:
        *kind = 'e', w = 1;
        break;
    case 0xc8:
        *kind = 'e', w = 2;
        break;
    case 0xc9:
        *kind = 'e', w = 4;
        break;
    case 0xca:
        *kind = 'f', w = 4;
        break;
    case 0xcb:
        *kind = 'f', w = 8;
        break;
    case 0xcc:
        *kind = 'i', w = 1;
        break;
    case 0xcd:
        *kind = 'i', w = 2;
        break;
    case 0xce:
        *kind = 'i', w = 4;
        break;
    case 0xcf:
        *kind = 'i', w = 8;
        break;
    case 0xd0:
        *kind = 'n', w = 1;
        break;
    case 0xd1:
        *kind = 'n', w = 2;
        break;
    case 0xd2:
        *kind = 'n', w = 4;
        break;
    case 0xd3:
        *kind = 'n', w = 8;
        break;
    case 0xd9:
        *kind = 's', w = 1;
        break;
    case 0xda:
        *kind = 's', w = 2;
        break;
    case 0xdb:
        *kind = 's', w = 4;
        break;
    case 0xdc:
        *kind = 'a', w = 2;
        break;
    case 0xdd:
        *kind = 'a', w = 4;
        break;
    case 0xde:
        *kind = 'm', w = 2;
        break;
    case 0xdf:
        *kind = 'm', w = 4;
        break;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        /* fixext 1..16: type byte plus 1 << (b - 0xd4) data bytes */
        *kind = 'e', *v = ((uint64_t)1 << (b - 0xd4)) + 1, w = 0;
        break;
    default:
        return -1;
    }
    if (!mp_need(m, 1 + (size_t)w))
        return 0;
    if (w)
        *v = mp_be(m->p + m->off + 1, w);
    m->off += 1 + (size_t)w;
    if (*kind == 'e' && b >= 0xc7 && b <= 0xc9)
        (*v)++; /* the type byte */
    if (*kind == 'f') {
        m->off -= (size_t)w; /* the payload is skipped as bytes */
        *v = (uint64_t)w;
    }
    return 1;
}

/* Skip one whole value.  1, 0 (incomplete) or -1. */
static int mp_skip(struct mp *m, int depth)
{
    uint64_t v, i, n;
    char kind;
    int rc;

    if (depth > MAX_NEST)
        return -1;
    if ((rc = mp_head(m, &kind, &v)) <= 0)
        return rc;
    switch (kind) {
    case 's':
    case 'r':
    case 'e':
    case 'f':
        if (!mp_need(m, v))
            return 0;
        m->off += v;
        return 1;
    case 'a':
    case 'm':
        n = kind == 'm' ? 2 * v : v;
        for (i = 0; i < n; i++)
            if ((rc = mp_skip(m, depth + 1)) <= 0)
                return rc;
        return 1;
    default:
        return 1;
    }
}

/* One resild answer at the front of p[0..len): 1 with *used bytes, its
 * msgid and permit (0 when not an allow with a permit; *err set when the
 * answer is an error), 0 when incomplete, -1 when it is not a response. */
static int mp_answer(const unsigned char *p, size_t len, size_t *used,
                     uint32_t *msgid, uint64_t *permit, int *err)
{
    struct mp m = {p, len, 0};
    uint64_t v, cnt, i;
    int rc, allow = 0;
    const unsigned char *ks;
    char kind;

    if ((rc = mp_skip(&m, 1)) <= 0)
        return rc;
    *used = m.off;
    m.off = 0;
    *permit = 0;
    *err = 0;
    if (mp_head(&m, &kind, &v) != 1 || kind != 'a' || v != 4 ||
        mp_head(&m, &kind, &v) != 1 || kind != 'i' || v != 1 ||
        mp_head(&m, &kind, &v) != 1 || kind != 'i' || v > UINT32_MAX)
        return -1;
    *msgid = (uint32_t)v;
    if (mp_head(&m, &kind, &v) != 1)
        return -1;
    if (kind != 'z') {
        *err = 1;
        return 1;
    }
    if (mp_head(&m, &kind, &cnt) != 1 || kind != 'm')
        return -1;
    for (i = 0; i < cnt; i++) {
        if (mp_head(&m, &kind, &v) != 1 || kind != 's' || !mp_need(&m, v))
            return -1;
        ks = m.p + m.off;
        m.off += v;
        if (v == 5 && memcmp(ks, "allow", 5) == 0) {
            if (mp_head(&m, &kind, &v) != 1 || kind != 'b')
                return -1;
            allow = (int)v;
        } else if (v == 6 && memcmp(ks, "permit", 6) == 0) {
            if (mp_head(&m, &kind, &v) != 1 || kind != 'i')
                return -1;
            *permit = v;
        } else if (mp_skip(&m, 2) != 1) {
            return -1;
        }
    }
    if (!allow)
        *permit = 0;
    return 1;
}

/* One RESP reply at the front of p[0..len): 1 with *used bytes, *type
 * (the first byte) and *ival (for ':'), 0 when incomplete, -1 when bad. */
static int resp_reply(const unsigned char *p, size_t len, size_t *used,
                      char *type, long long *ival, int depth)
{
    const unsigned char *nl;
    size_t off, u;
    long long n, i;
    char t2;
    long long iv2;
    int rc;

    if (depth > MAX_NEST)
        return -1;
    if (len < 3)
        return 0;
    nl = memchr(p, '\n', len);
    if (!nl)
        return len > 512 ? -1 : 0;
    if (nl == p || nl[-1] != '\r')
        return -1;
    off = (size_t)(nl - p) + 1;
    *type = (char)p[0];
    *ival = 0;
    switch (p[0]) {
    case '+':
    case '-':
        break;
    case ':':
        *ival = strtoll((const char *)p + 1, NULL, 10);
        break;
    case '$':
        n = strtoll((const char *)p + 1, NULL, 10);
        if (n >= 0) {
            if (len - off < (size_t)n + 2)
                return 0;
            off += (size_t)n + 2;
        }
        break;
    case '*':
        n = strtoll((const char *)p + 1, NULL, 10);
        for (i = 0; i < n; i++) {
            rc = resp_reply(p + off, len - off, &u, &t2, &iv2, depth + 1);
            if (rc <= 0)
                return rc;
            off += u;
        }
        break;
    default:
        return -1;
    }
    *used = off;
    return 1;
}

/* --- connections and the loop -------------------------------------------- */

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int queue_bytes(struct conn *c, const void *p, size_t len)
{
    if (c->out_len + len > c->out_cap)
        return -1; /* out_cap covers it (see main) */
    memcpy(c->out + c->out_len, p, len);
    c->out_len += len;
    return 0;
}

/* Queue the next request on c if the phase wants more.  0 or -1. */
static int send_one(struct run *r, struct conn *c, uint64_t t)
{
    unsigned char *q;
    unsigned s;
    uint64_t k = 0;

    if (r->sent >= r->to_send || c->inflight >= r->depth)
        return 0;
    if (r->prefix)
        k = r->start + r->next_key++;
    q = c->out + c->out_len;
    if (queue_bytes(c, r->req.buf, r->req.len) < 0)
        return -1;
    if (r->prefix)
        put_digits(q + r->req.key_off, k);
    if (r->proto == P_RESILD) {
        s = c->free_slots[--c->nfree];
        c->expect[s] = (c->seq++ << SLOT_BITS) | s;
        put_be(q + r->req.msgid_off, c->expect[s], 4);
    } else {
        s = (unsigned)(c->fifo_sent++ % r->depth);
    }
    c->keyidx[s] = (uint32_t)k;
    c->sent_ns[s] = t;
    c->inflight++;
    r->sent++;
    return 0;
}

/* The answer to slot s arrived at t. */
static void answered(struct run *r, struct conn *c, unsigned s, uint64_t t)
{
    if (r->samples && r->nsamples < r->n)
        r->samples[r->nsamples++] = t - c->sent_ns[s];
    c->inflight--;
    r->got++;
}

/* Parse every complete answer in c->in.  0, or -1 on a broken stream. */
static int parse_answers(struct run *r, struct conn *c, uint64_t t)
{
    size_t off = 0, used = 0;
    unsigned s;
    int rc, err;

    while (off < c->in_len && c->inflight > 0) {
        const unsigned char *p = c->in + off;
        size_t len = c->in_len - off;
        if (r->proto == P_RESILD) {
            uint32_t msgid;
            uint64_t permit;
            rc = mp_answer(p, len, &used, &msgid, &permit, &err);
            if (rc <= 0)
                break;
            s = msgid & ((1u << SLOT_BITS) - 1);
            if (s >= r->depth || c->expect[s] != msgid ||
                c->expect[s] == UINT32_MAX) {
                fail(r, "resild answered a msgid not in flight");
                return -1;
            }
            c->expect[s] = UINT32_MAX;
            c->free_slots[c->nfree++] = (uint16_t)s;
            if (err)
                fail(r, "resild answered an error");
            else if (!permit)
                fail(r, "resild denied an acquire");
            else {
                unsigned char *q = c->out + c->out_len;
                if (queue_bytes(c, r->rep.buf, r->rep.len) < 0)
                    return -1;
                put_be(q + r->rep.permit_off, permit, 8);
                if (r->prefix)
                    put_digits(q + r->rep.key_off, c->keyidx[s]);
            }
        } else if (r->proto == P_ECHO) {
            if (len < r->req.len)
                break;
            used = r->req.len;
            if (memcmp(p, r->req.buf, used) != 0) {
                fail(r, "the echo came back changed");
                return -1;
            }
            s = (unsigned)(c->fifo_got++ % r->depth);
        } else {
            char type;
            long long v;
            rc = resp_reply(p, len, &used, &type, &v, 0);
            if (rc == 0)
                break;
            if (rc < 0) {
                fail(r, "not a RESP reply");
                return -1;
            }
            s = (unsigned)(c->fifo_got++ % r->depth);
            if (type == '-')
                fail(r, "redis answered an error");
            else if (type != ':' || (r->proto == P_GCRA && v != 1))
                fail(r, "redis answered other than the expected integer");
        }
        answered(r, c, s, t);
        off += used;
        if (send_one(r, c, t) < 0)
            return -1;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (c->in_len == sizeof(c->in)) {
        fail(r, "an answer larger than the input buffer");
        return -1;
    }
    return 0;
}

/* Write what is queued; EPOLLOUT on while some is left.  0 or -1. */
static int flush_out(struct run *r, struct conn *c)
{
    struct epoll_event ev = {.data.ptr = c};
    ssize_t n;
    int want;

    while (c->out_len > 0) {
        n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            fail(r, "send failed");
            return -1;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    want = c->out_len > 0;
    if (want != c->want_out) {
        ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
        if (epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            return -1;
        c->want_out = want;
    }
    return 0;
}

/* Run n requests over every connection; samples when timed.  Returns the
 * phase's wall time in ns, or 0 when something broke. */
static uint64_t phase(struct run *r, uint64_t n, int timed)
{
    struct epoll_event evs[64];
    uint64_t t0 = now_ns(), t, last = t0;
    unsigned i;
    int k, j;
    ssize_t got;

    r->to_send += n;
    r->nsamples = timed ? 0 : r->nsamples;
    for (i = 0; i < r->c; i++) {
        struct conn *c = &r->conns[i];
        while (r->sent < r->to_send && c->inflight < r->depth)
            if (send_one(r, c, t0) < 0)
                return 0;
        if (flush_out(r, c) < 0)
            return 0;
    }
    while (r->got < r->to_send) {
        k = epoll_wait(r->ep, evs, 64, 1000);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return 0;
        t = now_ns();
        if (k == 0 && t - last > (uint64_t)STALL_MS * 1000000u) {
            fail(r, "no answer for 10 s");
            return 0;
        }
        for (j = 0; j < k; j++) {
            struct conn *c = evs[j].data.ptr;
            if (evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                got = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    got = -2;
                if (got == 0 || got == -1) {
                    fail(r, "the server closed a connection");
                    return 0;
                }
                if (got > 0) {
                    c->in_len += (size_t)got;
                    last = t;
                    if (parse_answers(r, c, t) < 0)
                        return 0;
                }
            }
            if (flush_out(r, c) < 0)
                return 0;
        }
    }
    return now_ns() - t0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, size_t n, unsigned per_mille)
{
    size_t rank = (n * per_mille + 999) / 1000;

    return n ? (double)v[rank ? rank - 1 : 0] / 1000.0 : 0.0;
}

/* -o: the timed samples, native uint64 nanoseconds, for a driver that
 * merges rounds.  0 or -1. */
static int write_samples(const struct run *r)
{
    FILE *f = fopen(r->samples_path, "wb");
    int rc;

    if (!f)
        return -1;
    rc = fwrite(r->samples, sizeof(uint64_t), r->nsamples, f) == r->nsamples
             ? 0
             : -1;
    return fclose(f) == 0 ? rc : -1;
}

static const char *proto_name(enum proto p)
{
    static const char *names[] = {"resild", "incr", "gcra", "hset", "echo"};

    return names[p];
}

/* --- the echo server ----------------------------------------------------- */

/* One client of the echo server: bytes read and not yet written back. */
struct echo_client {
    int fd;
    size_t len;
    unsigned char buf[IN_BYTES];
};

/* Serve path until killed: accept everything, echo every byte, one
 * thread, epoll, a client whose echo the kernel does not take is not
 * read until it is. */
static int serve_echo(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct epoll_event ev, evs[64];
    int lfd, ep, k, j, fd;
    ssize_t n;

    if (strlen(path) >= sizeof(sa.sun_path))
        return 2;
    strcpy(sa.sun_path, path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || ep < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(lfd, 511) < 0) {
        perror("loadgen serve-echo");
        return 1;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        k = epoll_wait(ep, evs, 64, -1);
        for (j = 0; j < k; j++) {
            struct echo_client *e = evs[j].data.ptr;
            if (!e) {
                while ((fd = accept4(lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (!(e = malloc(sizeof(*e)))) {
                        close(fd);
                        continue;
                    }
                    e->fd = fd;
                    e->len = 0;
                    ev.events = EPOLLIN;
                    ev.data.ptr = e;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (e->len == 0) {
                n = read(e->fd, e->buf, sizeof(e->buf));
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    close(e->fd); /* also leaves the epoll set */
                    free(e);
                    continue;
                }
                e->len = n > 0 ? (size_t)n : 0;
            }
            if (e->len > 0) {
                n = send(e->fd, e->buf, e->len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                    memmove(e->buf, e->buf + n, e->len - (size_t)n);
                    e->len -= (size_t)n;
                }
                ev.events = e->len ? EPOLLOUT : EPOLLIN;
                ev.data.ptr = e;
                epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev);
            }
        }
    }
}

/* --- main ---------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen resild|incr|gcra|hset|echo SOCKET [-c CONNS] "
            "[-P DEPTH] [-n N] [-w WARMUP]\n"
            "               [-k KEY | -K PREFIX [-s START]] [-S SHA] "
            "[-b BYTES] [-o FILE] [-q]\n"
            "       loadgen serve-echo SOCKET\n");
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || !*s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const char *protos[] = {"resild", "incr", "gcra", "hset", "echo"};
    struct run r = {.c = 1, .depth = 1, .n = 100000, .key = "bench.k"};
    uint64_t v, ns;
    int opt, warm_set = 0, ok = 0;
    unsigned i, p;
    double secs, p50, p99, p999, max;

    if (argc >= 3 && strcmp(argv[1], "serve-echo") == 0)
        return serve_echo(argv[2]);
    if (argc < 3) {
        usage();
        return 2;
    }
    for (p = 0; p < sizeof(protos) / sizeof(protos[0]); p++)
        if (strcmp(argv[1], protos[p]) == 0)
            break;
    if (p == sizeof(protos) / sizeof(protos[0])) {
        usage();
        return 2;
    }
    r.proto = (enum proto)p;
    r.path = argv[2];
    optind = 3;
    while ((opt = getopt(argc, argv, "c:P:n:w:k:K:s:S:b:o:q")) != -1) {
        switch (opt) {
        case 'c':
            if (parse_u64(optarg, 1, MAX_CONNS, &v) < 0)
                goto bad;
            r.c = (unsigned)v;
            break;
        case 'P':
            if (parse_u64(optarg, 1, MAX_DEPTH, &v) < 0)
                goto bad;
            r.depth = (unsigned)v;
            break;
        case 'n':
            if (parse_u64(optarg, 1, MAX_N, &r.n) < 0)
                goto bad;
            break;
        case 'w':
            if (parse_u64(optarg, 0, MAX_N, &r.warm) < 0)
                goto bad;
            warm_set = 1;
            break;
        case 'k':
            r.key = optarg;
            break;
        case 'K':
            if (strlen(optarg) > 100)
                goto bad;
            r.prefix = optarg;
            break;
        case 's':
            if (parse_u64(optarg, 0, 9999999, &r.start) < 0)
                goto bad;
            break;
        case 'S':
            r.sha = optarg;
            break;
        case 'b':
            if (parse_u64(optarg, 1, MAX_REQ_BYTES, &v) < 0)
                goto bad;
            r.echo_bytes = (size_t)v;
            break;
        case 'o':
            r.samples_path = optarg;
            break;
        case 'q':
            r.quiet = 1;
            break;
        default:
            goto bad;
        }
    }
    if (optind != argc)
        goto bad;
    if (!warm_set)
        r.warm = r.prefix ? 0 : r.n / 10;
    if (r.prefix && r.start + r.warm + r.n > 10000000)
        goto bad;
    if (tmpl_build(&r) < 0) {
        fprintf(stderr, "loadgen: cannot build the request (-S SHA for "
                        "gcra?)\n");
        return 2;
    }

    r.samples = malloc(r.n * sizeof(uint64_t));
    r.conns = calloc(r.c, sizeof(struct conn));
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!r.samples || !r.conns || r.ep < 0) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (i = 0; i < r.c; i++) {
        struct conn *c = &r.conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        unsigned s;
        /* Each answer queues at most one report and one request, and no
         * more than P answers can arrive per P requests written. */
        c->out_cap = 4 * (size_t)r.depth * (r.req.len + r.rep.len) + IN_BYTES;
        c->out = malloc(c->out_cap);
        c->fd = connect_unix(r.path);
        if (!c->out || c->fd < 0 ||
            epoll_ctl(r.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            fprintf(stderr, "loadgen: connect %s: %s\n", r.path,
                    strerror(errno));
            goto out;
        }
        for (s = 0; s < r.depth; s++) {
            c->free_slots[s] = (uint16_t)(r.depth - 1 - s);
            c->expect[s] = UINT32_MAX;
        }
        c->nfree = r.depth;
    }
    if (r.warm && !phase(&r, r.warm, 0))
        goto out;
    ns = phase(&r, r.n, 1);
    if (!ns)
        goto out;
    ok = r.failures == 0;
    if (r.samples_path && write_samples(&r) < 0) {
        fprintf(stderr, "loadgen: %s: %s\n", r.samples_path, strerror(errno));
        ok = 0;
    }
    secs = (double)ns / 1e9;
    qsort(r.samples, r.nsamples, sizeof(uint64_t), cmp_u64);
    p50 = pct_us(r.samples, r.nsamples, 500);
    p99 = pct_us(r.samples, r.nsamples, 990);
    p999 = pct_us(r.samples, r.nsamples, 999);
    max = r.nsamples ? (double)r.samples[r.nsamples - 1] / 1000.0 : 0.0;
    if (!r.quiet)
        printf("%s c=%u P=%u: %llu requests in %.3f s, %.0f/s, p50 %.1f us, "
               "p99 %.1f us, p99.9 %.1f us, max %.1f us, %llu failures\n",
               proto_name(r.proto), r.c, r.depth, (unsigned long long)r.n, secs,
               (double)r.n / secs, p50, p99, p999, max,
               (unsigned long long)r.failures);
    printf("RESULT proto=%s c=%u P=%u n=%llu secs=%.6f rps=%.1f p50=%.2f "
           "p99=%.2f p999=%.2f max=%.2f failures=%llu\n",
           proto_name(r.proto), r.c, r.depth, (unsigned long long)r.n, secs,
           (double)r.n / secs, p50, p99, p999, max,
           (unsigned long long)r.failures);
out:
    if (r.failures)
        fprintf(stderr, "loadgen %s: %llu failures, the first: %s\n",
                proto_name(r.proto), (unsigned long long)r.failures, r.why);
    for (i = 0; r.conns && i < r.c; i++) {
        if (r.conns[i].fd > 0)
            close(r.conns[i].fd);
        free(r.conns[i].out);
    }
    free(r.conns);
    free(r.samples);
    if (r.ep >= 0)
        close(r.ep);
    return ok ? 0 : 1;
bad:
    usage();
    return 2;
}
