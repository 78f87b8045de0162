/*
 * redis.c - Redis as a sink of the event stream and a source of shared
 * state (see redis.h for the modes and what each guarantees).
 *
 * Must not: wait on Redis anywhere (every command is queued on the loop
 * and its answer handled later), call into the core from inside the sink
 * (the sink only marks keys and publishes; changes from Redis are applied
 * from the links' callbacks, outside any core call), or trust anything
 * read from Redis (records are checked as a snapshot file's are; messages
 * are bounded before they are decoded).
 *
 * Two links (rlink.h): `cmd` for writes, reads and lease scripts, and, in
 * shared mode, `sub` subscribed to <prefix>events.  One uv_check runs after
 * every loop turn to send what the turn produced (marked keys, lease
 * wants); one unreferenced timer gives back expired leases, keeps health
 * current and ends the drain at shutdown.
 */
#include "redis.h"

#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "core.h"
#include "error.h"
#include "keys.h"
#include "log.h"
#include "prom.h"
#include "proto.h"
#include "rlink.h"
#include "server.h"
#include "snapfile.h"

#define REDIS_PENDING_MAX 4096  /* commands in flight on the command link */
#define REDIS_FLUSH_MAX 256     /* key records written per loop turn */
#define REDIS_LEASES_MAX 256    /* lease requests sent per loop turn */
#define REDIS_MSG_MAX 1024      /* a pub/sub message's bytes */
#define REDIS_ORIGINS 64        /* origins whose sequence is remembered */
#define REDIS_SCAN_COUNT 256    /* keys per SCAN step of a read-back */
#define REDIS_READ_KEYS 256     /* keys per read script of a read-back */
/* The largest record read back: a key record is at most a few hundred
 * bytes plus its window (10,000 call bytes, or 3,600 buckets x 16 bytes),
 * under 64 KiB.  A read of REDIS_READ_KEYS then stays far below the link's
 * limit on one reply (rlink.c: 64 MiB), which would drop the connection
 * and, read back again at the reconnect, drop it for ever. */
#define REDIS_RECORD_MAX (128u << 10)
#define REDIS_TIMER_MS 50       /* lease give-back, health, drain */
#define REDIS_DRAIN_MS 1000     /* shutdown: the queue's last chance */
#define REDIS_LEASE_RETRY_MS 50 /* a lease with no answer: ask again */
#define REDIS_LEASE_ERR_MS 1000 /* an error reply: on the share this long */
#define REDIS_MARK_MS 1000      /* how often the mirror's marker is checked */
#define REDIS_RECORD_MAGIC "RSM1"
#define REDIS_RECORD_HDR 16 /* magic, u64 wall ms, u32 CRC of the rest */
#define REDIS_MSG_VERSION 1
/* The longest time a shared change may carry: what an operator may give
 * here (methods.c: a force's ttl_ms, a 429's retry_after_ms), and well
 * beyond the longest open period (open_ms <= 7 days, backed off). */
#define REDIS_MSG_TTL_MAX (86400000ULL * 30)

/*
 * The global limiter's bucket, on the Redis clock: GCRA with the
 * theoretical arrival time (µs) in KEYS[1].  ARGV: rate, per_ms, burst,
 * tokens wanted, tokens given back.  What KEYS[1] holds is not trusted
 * (another writer, another version): anything but a number (missing, a
 * word, nan, another type) is an empty bucket (TAT now), and a TAT beyond
 * now + burst x T, which no grant can make, is cut to it (the bucket is
 * empty, not empty for ever).  Giving back moves the TAT back, never
 * before now (the bucket never holds more than burst).  Returns {granted,
 * ms until one token is free when none was granted}.
 */
static const char lease_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local rate = tonumber(ARGV[1])\n"
    "local per = tonumber(ARGV[2]) * 1000\n"
    "local burst = tonumber(ARGV[3])\n"
    "local want = tonumber(ARGV[4])\n"
    "local back = tonumber(ARGV[5])\n"
    "local T = per / rate\n"
    "local tat = tonumber(redis.pcall('GET', KEYS[1]))\n"
    "if not tat or tat ~= tat or tat < now then tat = now end\n"
    "if tat > now + burst * T then tat = now + burst * T end\n"
    "if back > 0 then tat = math.max(now, tat - back * T) end\n"
    "local granted = 0\n"
    "local retry = 0\n"
    "if want > 0 then\n"
    "  local avail = math.floor((now + burst * T - tat) / T + 1e-9)\n"
    "  if avail > want then avail = want end\n"
    "  if avail > 0 then\n"
    "    granted = avail\n"
    "    tat = tat + avail * T\n"
    "  else\n"
    "    retry = math.ceil((tat + T - now - burst * T) / 1000)\n"
    "    if retry < 1 then retry = 1 end\n"
    "  end\n"
    "end\n"
    "local ttl = math.ceil((tat - now) / 1000) + 1000\n"
    "redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', ttl)\n"
    "return {granted, retry}\n";

/*
 * A read-back's batch: each key's value when it is a string of at most
 * ARGV[1] bytes, else its length (too long) or 0 (another type), or false
 * when gone.  Never a reply larger than batch x ARGV[1].
 */
static const char read_script[] =
    "local max = tonumber(ARGV[1])\n"
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local n = redis.pcall('STRLEN', k)\n"
    "  if type(n) ~= 'number' then out[i] = 0\n"
    "  elseif n > max then out[i] = n\n"
    "  else out[i] = redis.call('GET', k) end\n"
    "end\n"
    "return out\n";

struct origin_seen {
    char name[64];
    uint64_t epoch, seq;
    uint64_t used; /* for replacing the least recently heard */
};

struct redis {
    uv_loop_t *loop;
    struct resild *d;
    struct server *srv;
    struct rlink cmd, sub;
    int mode;
    char prefix[64];
    char origin[64];
    uint64_t epoch; /* this start (random): a restart's sequence is new */
    uint64_t seq;   /* last sequence published */
    /* Mirror queue: a FIFO ring of marked keys and a set of them (open
     * addressing, linear probing, backward-shift deletion). */
    struct key **q;
    uint32_t qcap, qhead, qlen;
    struct key **set;
    uint32_t setmask;
    int resync;             /* writes were dropped: re-write every key */
    struct key *rs_key;     /* the re-write's walk cursor */
    size_t rs_bucket;
    int rs_on;
    int reshare;    /* publishes were lost: the walk re-publishes */
    int rs_share;   /* this walk re-publishes global keys' state */
    /* Read-back (warm start, shared catch-up). */
    int warm;      /* mirror: read back once, at the first connect */
    int loading;   /* a SCAN walk is in flight */
    int load_warm; /* this walk imports missing keys */
    int load_last; /* the walk's last reads are in flight */
    int load_inflight; /* reads sent, not yet answered */
    int load_again;    /* a catch-up was due during a walk: walk again */
    struct key_export *ex;
    struct snapbuf buf;
    struct origin_seen origins[REDIS_ORIGINS];
    uint64_t heard;
    struct lease_req *lease_head, *lease_tail; /* in flight, oldest first */
    uint64_t lease_stall_ms; /* the oldest waiting longer: Redis is slow */
    int lease_stalled;
    /* The lease script answered with an error (Redis out of memory, an
     * ACL, a script error): leasing is off until lease_err_until, then
     * tried again; the text stays for health until a lease is answered. */
    uint64_t lease_err_until;
    char lease_err[120];
    /* A write got no OK (text for health); once one does again, every key
     * is written again, since what failed is lost.  Meanwhile a small
     * probe write (<prefix>probe:<origin>) every second finds out. */
    int write_lost;
    uint64_t write_probed_ms;
    char write_err[120];
    uint64_t clash_until; /* another daemon used our origin: health, 60 s */
    uv_check_t check;
    uv_timer_t timer;
    int draining;
    uint64_t pinged_ms; /* last idle PING on the command link */
    uint64_t marked_ms; /* last check of <prefix>mark:<origin> */
    int mark_seen;      /* it was there, or set, once in this process */
    uint64_t drain_until;
    int closing, closed_links;
    int closed; /* every handle closed */
    void (*next_stop)(void *); /* the server's on_stop before ours */
    void *next_stop_ctx;
    struct redis_stats st;
};

static uint64_t now_ms(const struct redis *r)
{
    return uv_now(r->loop);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* --- the mirror queue ---------------------------------------------------- */

static uint32_t ptr_hash(const struct key *k)
{
    uint64_t x = (uint64_t)(uintptr_t)k;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Index of k in the set, or of the empty slot where it would go. */
static uint32_t set_slot(const struct redis *r, const struct key *k)
{
    uint32_t i = ptr_hash(k) & r->setmask;
    while (r->set[i] && r->set[i] != k)
        i = (i + 1) & r->setmask;
    return i;
}

static void set_del(struct redis *r, const struct key *k)
{
    uint32_t i = set_slot(r, k), j, h;

    if (!r->set[i])
        return;
    r->set[i] = NULL;
    /* Backward shift: pull later entries of the cluster into the hole
     * when their home slot is not between the hole and them. */
    j = i;
    for (;;) {
        j = (j + 1) & r->setmask;
        if (!r->set[j])
            break;
        h = ptr_hash(r->set[j]) & r->setmask;
        if (((j - h) & r->setmask) >= ((j - i) & r->setmask)) {
            r->set[i] = r->set[j];
            r->set[j] = NULL;
            i = j;
        }
    }
}

/* Mark k for writing.  0, or RD_EFULL (counted; a full re-write follows). */
static int mark(struct redis *r, struct key *k)
{
    uint32_t i;

    if (r->mode == REDIS_OFF)
        return 0;
    i = set_slot(r, k);
    if (r->set[i])
        return 0; /* already queued: one write carries both changes */
    if (r->qlen == r->qcap) {
        r->st.writes_dropped++;
        r->resync = 1;
        return RD_EFULL;
    }
    r->set[i] = k;
    r->q[(r->qhead + r->qlen) % r->qcap] = k;
    r->qlen++;
    return 0;
}

static struct key *unmark(struct redis *r)
{
    struct key *k;

    if (!r->qlen)
        return NULL;
    k = r->q[r->qhead];
    r->qhead = (r->qhead + 1) % r->qcap;
    r->qlen--;
    set_del(r, k);
    return k;
}

/* --- records: <prefix>key:<name> = magic, wall ms, CRC, key record ----- */

static size_t redis_key(const struct redis *r, const char *what,
                        const char *name, size_t n, char *out, size_t cap)
{
    int len = snprintf(out, cap, "%s%s%.*s", r->prefix, what, (int)n, name);
    return len < 0 || (size_t)len >= cap ? 0 : (size_t)len;
}

static void on_write(struct rlink *l, void *reply, void *priv)
{
    struct redis *r = priv;
    redisReply *rep = reply;

    (void)l;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        r->st.writes_failed++;
        r->write_lost = 1;
        if (rep && !r->write_err[0])
            log_msg(LOG_WARN, "redis: a key record write failed: %.*s",
                    (int)(rep->len > 100 ? 100 : rep->len), rep->str);
        if (rep)
            snprintf(r->write_err, sizeof(r->write_err), "%.*s",
                     (int)(rep->len > 100 ? 100 : rep->len), rep->str);
    } else if (r->write_lost) {
        /* Writes work again: what failed is re-written with every key. */
        r->write_lost = 0;
        r->write_err[0] = '\0';
        r->resync = 1;
    }
}

/* Write k's record.  0, or RD_EDOWN / RD_ENOMEM (k stays unwritten). */
static int write_key(struct redis *r, struct key *k)
{
    char name[KEY_MAX + 80];
    const char *argv[3];
    size_t argvlen[3], body;
    uint8_t *p;

    core_export_key(k, now_ms(r), r->ex);
    r->buf.len = 0;
    r->buf.oom = 0;
    if (snapbuf_reserve(&r->buf, REDIS_RECORD_HDR) < 0)
        return RD_ENOMEM;
    r->buf.len = REDIS_RECORD_HDR;
    if (snapfile_put_key(&r->buf, r->ex) < 0)
        return RD_ENOMEM;
    p = r->buf.p;
    memcpy(p, REDIS_RECORD_MAGIC, 4);
    put_u64(p + 4, wall_ms());
    body = r->buf.len - REDIS_RECORD_HDR;
    put_u32(p + 12, snapfile_crc32(snapfile_crc32(0, p + 4, 8),
                                   p + REDIS_RECORD_HDR, body));
    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = name;
    argvlen[1] = redis_key(r, "key:", k->name, k->len, name, sizeof(name));
    argv[2] = (const char *)p;
    argvlen[2] = r->buf.len;
    if (rlink_command_argv(&r->cmd, on_write, r, 3, argv, argvlen) < 0)
        return RD_EDOWN;
    r->st.writes++;
    return 0;
}

/*
 * Decode a record read back: 0 and r->ex with every remaining time
 * shortened by the wall time since it was written, or SNAPFILE_ECORRUPT.
 */
static int read_record(struct redis *r, const uint8_t *p, size_t n)
{
    uint64_t at, now = wall_ms(), age;
    uint32_t len;
    struct key_export *ex = r->ex;

    if (n < REDIS_RECORD_HDR + 4 || memcmp(p, REDIS_RECORD_MAGIC, 4) ||
        snapfile_u32(p + 12) !=
            snapfile_crc32(snapfile_crc32(0, p + 4, 8), p + REDIS_RECORD_HDR,
                           n - REDIS_RECORD_HDR))
        return SNAPFILE_ECORRUPT;
    len = snapfile_u32(p + REDIS_RECORD_HDR);
    if (len != n - REDIS_RECORD_HDR - 4 ||
        snapfile_get_key(p + REDIS_RECORD_HDR + 4, len, ex) < 0)
        return SNAPFILE_ECORRUPT;
    at = get_u64(p + 4);
    age = now > at ? now - at : 0; /* a clock behind the writer's: fresh */
#define SHORTEN(f) (f = f > age ? f - age : 0)
    SHORTEN(ex->br.open_left_ms);
    if (ex->br.force_has_ttl)
        SHORTEN(ex->br.force_left_ms);
    SHORTEN(ex->lim.paused_left_ms);
#undef SHORTEN
    ex->hb.silent_ms += age;
    return 0;
}

/* --- shared changes: publish, receive ------------------------------------ */

static int key_is_global(const struct redis *r, const struct key *k)
{
    return r->mode == REDIS_SHARED && k->policy && k->policy->global;
}

static void publish(struct redis *r, const struct key *k,
                    const struct remote_change *rc)
{
    char ch[128];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    const char *argv[3];
    size_t argvlen[3];

    if (!rlink_is_up(&r->cmd) || rlink_pending(&r->cmd) >= REDIS_PENDING_MAX) {
        /* Lost for now: once Redis takes commands again, a walk of every
         * key re-publishes the state of the global ones (state, not the
         * history: an open breaker, a force). */
        r->st.publish_dropped++;
        r->resync = 1;
        r->reshare = 1;
        return;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 11);
    msgpack_pack_uint32(&pk, REDIS_MSG_VERSION);
    msgpack_pack_str_with_body(&pk, r->origin, strlen(r->origin));
    msgpack_pack_uint64(&pk, r->epoch);
    msgpack_pack_uint64(&pk, ++r->seq);
    msgpack_pack_uint32(&pk, (uint32_t)rc->kind);
    msgpack_pack_str_with_body(&pk, k->name, k->len);
    msgpack_pack_uint64(&pk, rc->open_left_ms);
    msgpack_pack_uint64(&pk, rc->open_for_ms);
    msgpack_pack_uint32(&pk, (uint32_t)rc->force);
    msgpack_pack_uint64(&pk, rc->force_left_ms);
    if (rc->kind == REMOTE_PAUSE)
        msgpack_pack_uint64(&pk, rc->paused_ms);
    else
        msgpack_pack_str_with_body(&pk, rc->reason ? rc->reason : "",
                                   rc->reason ? rc->reason_len : 0);
    argv[0] = "PUBLISH";
    argvlen[0] = 7;
    argv[1] = ch;
    argvlen[1] = redis_key(r, "events", "", 0, ch, sizeof(ch));
    argv[2] = sb.data;
    argvlen[2] = sb.size;
    if (rlink_command_argv(&r->cmd, NULL, NULL, 3, argv, argvlen) < 0)
        r->st.publish_dropped++;
    else
        r->st.published++;
    msgpack_sbuffer_destroy(&sb);
}

static enum breaker_force force_of(const char *s)
{
    if (!strcmp(s, "open"))
        return BREAKER_FORCE_OPEN;
    if (!strcmp(s, "closed"))
        return BREAKER_FORCE_CLOSED;
    if (!strcmp(s, "disabled"))
        return BREAKER_FORCE_DISABLED;
    return BREAKER_AUTO;
}

/* What a local event means for the other daemons, if anything. */
static void share(struct redis *r, const struct event *ev)
{
    struct key *k = (struct key *)ev->key;
    struct remote_change rc = {0};

    switch (ev->type) {
    case EV_TRANSITION: {
        const struct breaker_transition *t = &ev->u.transition;
        if (t->cause == BREAKER_TC_FORCE || t->cause == BREAKER_TC_RESET ||
            t->cause == BREAKER_TC_FORCE_EXPIRED ||
            t->cause == BREAKER_TC_REMOTE ||
            t->cause == BREAKER_TC_OPEN_TIME_OVER)
            return; /* shared as the action, or each daemon's own clock */
        if (k->br.state == BREAKER_OPEN) {
            uint64_t left = k->br.open_until_ms > ev->now_ms
                                ? k->br.open_until_ms - ev->now_ms
                                : 0;
            if (!left)
                return;
            rc.kind = REMOTE_OPEN;
            rc.open_left_ms = left;
            rc.open_for_ms = k->br.open_for_ms;
        } else if (k->br.state == BREAKER_CLOSED &&
                   t->cause == BREAKER_TC_PROBE_SUCCESS) {
            rc.kind = REMOTE_CLOSE;
        } else {
            return;
        }
        break;
    }
    case EV_FORCE:
        rc.kind = REMOTE_FORCE;
        rc.force = force_of(ev->u.force.state);
        rc.force_left_ms = ev->u.force.ttl_ms;
        rc.reason = ev->u.force.reason;
        rc.reason_len = ev->u.force.reason ? strlen(ev->u.force.reason) : 0;
        break;
    case EV_RESET:
        rc.kind = REMOTE_RESET;
        break;
    case EV_VENUE_PAUSE:
        if (!ev->u.venue_pause.paused_ms)
            return;
        rc.kind = REMOTE_PAUSE;
        rc.paused_ms = ev->u.venue_pause.paused_ms;
        break;
    default:
        return;
    }
    publish(r, k, &rc);
}

/* The state of global key k as the others must know it after a change
 * was lost: a force, or an open breaker with its time left. */
static void publish_state(struct redis *r, struct key *k, uint64_t now)
{
    struct remote_change rc = {0};

    if (!key_is_global(r, k))
        return;
    if (k->br.force != BREAKER_AUTO) {
        rc.kind = REMOTE_FORCE;
        rc.force = k->br.force;
        rc.force_left_ms = k->br.force_until_ms > now
                               ? k->br.force_until_ms - now
                               : 0;
        if (k->br.force_until_ms && !rc.force_left_ms)
            return; /* ends now */
        rc.reason = key_force_reason(k);
        rc.reason_len = strlen(rc.reason);
        publish(r, k, &rc);
    }
    if (k->br.state == BREAKER_OPEN && k->br.open_until_ms > now) {
        memset(&rc, 0, sizeof(rc));
        rc.kind = REMOTE_OPEN;
        rc.open_left_ms = k->br.open_until_ms - now;
        rc.open_for_ms = k->br.open_for_ms;
        publish(r, k, &rc);
    }
}

/* The sink: mark what changed; share what the others must know.  Never
 * calls into the core, never waits. */
static void redis_sink(void *ctx, const struct event *ev)
{
    struct redis *r = ctx;

    if (!ev->key || r->closing)
        return;
    switch (ev->type) {
    case EV_TRANSITION:
    case EV_FORCE:
    case EV_RESET:
    case EV_VENUE_PAUSE:
    case EV_HEARTBEAT_LOST:
    case EV_HEARTBEAT_RESTORED:
        break;
    default:
        return;
    }
    if (ev->origin)
        return; /* the daemon it came from writes and shares it */
    mark(r, (struct key *)ev->key);
    if (key_is_global(r, ev->key))
        share(r, ev);
}

static void describe(struct redis *r);

/* 1 if (origin, epoch, seq) is news, recording it. */
static int fresh(struct redis *r, const char *origin, size_t on,
                 uint64_t epoch, uint64_t seq)
{
    struct origin_seen *o, *lru = &r->origins[0];
    size_t i;

    r->heard++;
    for (i = 0; i < REDIS_ORIGINS; i++) {
        o = &r->origins[i];
        if (o->name[0] && strlen(o->name) == on &&
            !memcmp(o->name, origin, on)) {
            o->used = r->heard;
            if (o->epoch == epoch && seq <= o->seq)
                return 0;
            o->epoch = epoch;
            o->seq = seq;
            return 1;
        }
        if (o->used < lru->used)
            lru = o;
    }
    memcpy(lru->name, origin, on);
    lru->name[on] = '\0';
    lru->epoch = epoch;
    lru->seq = seq;
    lru->used = r->heard;
    return 1;
}

static int obj_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *v = o->via.u64;
    return 0;
}

static void after_change(struct redis *r)
{
    if (r->srv)
        server_after_change(r->srv); /* parked requests, answers out */
}

static void on_message(struct rlink *l, void *ctx, const char *channel,
                       const char *data, size_t len)
{
    struct redis *r = ctx;
    msgpack_unpacked u;
    struct proto_scan scan;
    const msgpack_object *a;
    uint64_t ver, epoch, seq, kind, f, v[3];
    struct remote_change rc = {0};
    char origin[64];
    struct key *k;
    int ok = 0;

    (void)l;
    (void)channel;
    r->st.received++;
    if (len > REDIS_MSG_MAX) {
        r->st.rejected++;
        return;
    }
    /* The bounded pre-scan first (proto.h): msgpack-c allocates from a
     * declared count before the elements arrive, so 5 bytes
     * "dd ff ff ff ff" published by anyone who can reach Redis would ask
     * it for 128 GiB (ASan aborts on that; without it, malloc's answer
     * decides).  Only a whole, bounded object reaches msgpack-c. */
    proto_scan_init(&scan);
    if (proto_scan_next(&scan, (const uint8_t *)data, len, REDIS_MSG_MAX, 2) !=
        (long)len) {
        r->st.rejected++;
        return;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 11)
        goto out;
    a = u.data.via.array.ptr;
    if (obj_u64(&a[0], &ver) < 0 || ver != REDIS_MSG_VERSION ||
        a[1].type != MSGPACK_OBJECT_STR || a[1].via.str.size == 0 ||
        a[1].via.str.size >= sizeof(origin) || obj_u64(&a[2], &epoch) < 0 ||
        obj_u64(&a[3], &seq) < 0 || obj_u64(&a[4], &kind) < 0 ||
        kind > REMOTE_PAUSE || a[5].type != MSGPACK_OBJECT_STR ||
        !keys_valid(a[5].via.str.ptr, a[5].via.str.size) ||
        obj_u64(&a[6], &v[0]) < 0 || obj_u64(&a[7], &v[1]) < 0 ||
        obj_u64(&a[8], &f) < 0 || f > BREAKER_FORCE_DISABLED ||
        obj_u64(&a[9], &v[2]) < 0)
        goto out;
    memcpy(origin, a[1].via.str.ptr, a[1].via.str.size);
    origin[a[1].via.str.size] = '\0';
    ok = 1;
    if (!strcmp(origin, r->origin)) {
        if (epoch == r->epoch) {
            r->st.echoes++;
            goto out;
        }
        /* Our name, not our start: another daemon runs with the same
         * origin (redis.origin defaults to the host name: two hosts both
         * called "trader").  Its changes are applied -- ignored as echoes
         * they would be lost without a trace -- and health says so. */
        if (!r->clash_until || now_ms(r) >= r->clash_until)
            log_msg(LOG_WARN,
                    "redis: another daemon publishes as origin \"%s\" "
                    "(this one's name): give each its own redis.origin",
                    origin);
        r->clash_until = now_ms(r) + 60000;
        describe(r);
    }
    if (!fresh(r, origin, strlen(origin), epoch, seq)) {
        r->st.stale++;
        goto out;
    }
    rc.kind = (enum remote_kind)kind;
    rc.open_left_ms = v[0];
    rc.open_for_ms = v[1];
    rc.force = (enum breaker_force)f;
    rc.force_left_ms = v[2];
    rc.origin = origin;
    if (rc.kind == REMOTE_PAUSE) {
        if (obj_u64(&a[10], &rc.paused_ms) < 0) {
            ok = 0;
            goto out;
        }
    } else if (a[10].type == MSGPACK_OBJECT_STR) {
        rc.reason = a[10].via.str.ptr;
        rc.reason_len = a[10].via.str.size;
        if (rc.reason_len > KEY_REASON_MAX)
            rc.reason_len = KEY_REASON_MAX;
    }
    /* A time beyond what any daemon sends is a bug or an attack: taken as
     * given it would pause or force the key for ever (a u64 near 2^64). */
    if ((rc.kind == REMOTE_OPEN && !rc.open_left_ms) ||
        rc.open_left_ms > REDIS_MSG_TTL_MAX ||
        rc.open_for_ms > REDIS_MSG_TTL_MAX ||
        rc.force_left_ms > REDIS_MSG_TTL_MAX ||
        rc.paused_ms > REDIS_MSG_TTL_MAX) {
        ok = 0;
        goto out;
    }
    /* Only keys global here too: a daemon whose policy keeps the key
     * local is not bound by another's view of it. */
    {
        char name[KEY_MAX + 1];
        memcpy(name, a[5].via.str.ptr, a[5].via.str.size);
        name[a[5].via.str.size] = '\0';
        if (!config_match(&r->d->cfg, name)->global) {
            ok = 0;
            goto out;
        }
        if (rc.kind == REMOTE_CLOSE || rc.kind == REMOTE_RESET ||
            (rc.kind == REMOTE_FORCE && rc.force == BREAKER_AUTO)) {
            /* A no-op on a key this daemon does not have: none is made
             * for it (a flood of them must not fill max_keys). */
            if (!(k = keys_find(&r->d->keys, name, a[5].via.str.size)))
                goto out;
        } else if (core_key(r->d, name, a[5].via.str.size, now_ms(r),
                            &k) < 0) {
            ok = 0;
            goto out;
        }
    }
    core_remote(r->d, k, &rc, now_ms(r));
    r->st.applied++;
    after_change(r);
out:
    if (!ok)
        r->st.rejected++;
    msgpack_unpacked_destroy(&u);
}

/* --- read-back: warm start and shared catch-up ---------------------------- */

static void load_step(struct redis *r, const char *cursor);

/* One record read back.  Warm start: a key this daemon does not have is
 * imported whole.  Catch-up (shared, global keys): an open breaker or a
 * force is applied as a remote change; a closed record never closes
 * anything here (it may be older than what this daemon saw). */
static void load_record(struct redis *r, const uint8_t *p, size_t n)
{
    struct key_export *ex = r->ex;
    struct key *k;
    uint64_t now = now_ms(r);

    if (read_record(r, p, n) < 0 || core_export_check(ex) < 0) {
        r->st.rejected++;
        return;
    }
    k = keys_find(&r->d->keys, ex->name, ex->len);
    if (!k && r->load_warm) {
        if (core_import_key(r->d, ex, now) == 0)
            r->st.loaded++;
        return;
    }
    if (r->mode != REDIS_SHARED ||
        !config_match(&r->d->cfg, ex->name)->global)
        return;
    /* A record with nothing to apply (closed, no force) makes no key: the
     * mirror holds every host's keys, read back at every reconnect. */
    if (!k && !(ex->br.force != BREAKER_AUTO &&
                (!ex->br.force_has_ttl || ex->br.force_left_ms)) &&
        !(ex->br.state == BREAKER_OPEN && ex->br.open_left_ms))
        return;
    if (!k && core_key(r->d, ex->name, ex->len, now, &k) < 0)
        return;
    if (ex->br.force != BREAKER_AUTO && ex->br.force != k->br.force &&
        (!ex->br.force_has_ttl || ex->br.force_left_ms)) {
        struct remote_change rc = {.kind = REMOTE_FORCE,
                                   .force = ex->br.force,
                                   .force_left_ms = ex->br.force_has_ttl
                                                        ? ex->br.force_left_ms
                                                        : 0,
                                   .reason = ex->reason,
                                   .reason_len = ex->reason_len,
                                   .origin = "redis"};
        core_remote(r->d, k, &rc, now);
        r->st.applied++;
    }
    if (ex->br.state == BREAKER_OPEN && ex->br.open_left_ms) {
        struct remote_change rc = {.kind = REMOTE_OPEN,
                                   .open_left_ms = ex->br.open_left_ms,
                                   .open_for_ms = ex->br.open_for_ms,
                                   .origin = "redis"};
        core_remote(r->d, k, &rc, now);
        r->st.applied++;
    }
}

/* The walk is over (its last read answered, or nothing to read). */
static void catch_up(struct redis *r);

static void load_done(struct redis *r)
{
    if (r->load_warm && r->st.loaded)
        log_msg(LOG_INFO, "redis: started warm: %llu keys from Redis",
                (unsigned long long)r->st.loaded);
    if (r->load_warm)
        r->warm = 0; /* read back once */
    r->load_warm = 0;
    r->loading = 0;
    if (r->load_again) {
        r->load_again = 0;
        catch_up(r);
    }
}

static void on_mget(struct rlink *l, void *reply, void *priv)
{
    struct redis *r = priv;
    redisReply *rep = reply;
    size_t i;

    (void)l;
    if (r->load_inflight)
        r->load_inflight--;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        r->loading = 0; /* again at the next connect */
        r->load_last = 0;
        return;
    }
    for (i = 0; i < rep->elements; i++)
        if (rep->element[i]->type == REDIS_REPLY_STRING)
            load_record(r, (const uint8_t *)rep->element[i]->str,
                        rep->element[i]->len);
        else if (rep->element[i]->type == REDIS_REPLY_INTEGER)
            r->st.rejected++; /* too long, or not a string */
    after_change(r);
    if (r->load_last && !r->load_inflight) {
        r->load_last = 0;
        load_done(r);
    }
}

static void on_scan(struct rlink *l, void *reply, void *priv)
{
    struct redis *r = priv;
    redisReply *rep = reply, *keys;
    const char **argv;
    size_t *argvlen, i, j, n, m;
    char maxlen[16];
    int more;

    (void)l;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_ARRAY) {
        r->loading = 0;
        return;
    }
    keys = rep->element[1];
    more = strcmp(rep->element[0]->str, "0") != 0;
    n = keys->elements;
    if (n) {
        /* EVAL script numkeys key... maxlen, in batches of at most
         * REDIS_READ_KEYS (SCAN's COUNT is a hint, not a bound). */
        argv = calloc(REDIS_READ_KEYS + 4, sizeof(*argv));
        argvlen = calloc(REDIS_READ_KEYS + 4, sizeof(*argvlen));
        if (!argv || !argvlen) {
            free(argv);
            free(argvlen);
            r->loading = 0;
            return;
        }
        snprintf(maxlen, sizeof(maxlen), "%u", REDIS_RECORD_MAX);
        for (i = 0; i < n && r->loading; i += m) {
            char num[16];
            m = n - i < REDIS_READ_KEYS ? n - i : REDIS_READ_KEYS;
            snprintf(num, sizeof(num), "%zu", m);
            argv[0] = "EVAL";
            argv[1] = read_script;
            argv[2] = num;
            for (j = 0; j < m; j++) {
                argv[3 + j] = keys->element[i + j]->str;
                argvlen[3 + j] = keys->element[i + j]->len;
            }
            argv[3 + m] = maxlen;
            argvlen[0] = 4;
            argvlen[1] = strlen(read_script);
            argvlen[2] = strlen(num);
            argvlen[3 + m] = strlen(maxlen);
            if (rlink_command_argv(&r->cmd, on_mget, r, (int)m + 4, argv,
                                   argvlen) < 0)
                r->loading = 0; /* down: again at the next connect */
            else
                r->load_inflight++;
        }
        free(argv);
        free(argvlen);
        if (!r->loading)
            return; /* not done: the walk starts over at the next connect */
    }
    if (more)
        load_step(r, rep->element[0]->str);
    else if (r->load_inflight)
        r->load_last = 1; /* done when the last read is answered */
    else
        load_done(r);
}

/*
 * Read the mirror back when it is due: a warm start once the command link
 * is up; in shared mode each time both links are up again (whichever came
 * back second), since what was published while the subscriber was away
 * (a reconnect of either link) was missed and is only in the records.  A
 * walk already under way is walked again once it ends.
 */
static void catch_up(struct redis *r)
{
    if (!rlink_is_up(&r->cmd) ||
        !(r->warm || (r->mode == REDIS_SHARED && rlink_is_up(&r->sub))))
        return;
    if (r->loading) {
        r->load_again = 1;
        return;
    }
    r->loading = 1;
    r->load_warm = r->warm;
    r->st.readbacks++;
    load_step(r, "0");
}

static void load_step(struct redis *r, const char *cursor)
{
    char match[128];

    snprintf(match, sizeof(match), "%skey:*", r->prefix);
    if (rlink_command(&r->cmd, on_scan, r, "SCAN %s MATCH %s COUNT %d", cursor,
                      match, REDIS_SCAN_COUNT) < 0)
        r->loading = 0;
}

/* --- leases ---------------------------------------------------------------- */


/* A lease request in flight.  Replies come in order: the oldest is the
 * FIFO's head, and how long it has waited says whether Redis keeps up. */
struct lease_req {
    struct redis *r;
    struct key *k;
    uint64_t sent_ms;
    struct lease_req *next;
};

/* Leasing on or off as Redis keeps up: off while the command link is down
 * or the oldest lease request has waited more than lease_stall_ms (a
 * stopped or sleeping Redis is not yet a dropped connection, and a key
 * out of tokens must not be denied meanwhile: it falls back to its share
 * at once), on again once leases are answered. */
static void lease_health(struct redis *r)
{
    uint64_t now = now_ms(r);
    int stalled = r->lease_head && now - r->lease_head->sent_ms >
                                       r->lease_stall_ms;
    int want = rlink_is_up(&r->cmd) && !stalled && now >= r->lease_err_until;

    if (stalled != r->lease_stalled) {
        r->lease_stalled = stalled;
        if (stalled)
            log_msg(LOG_WARN,
                    "redis: a lease request unanswered for %u ms: global "
                    "limits on this host's share until Redis answers",
                    (unsigned)r->lease_stall_ms);
        describe(r);
    }
    if (want != r->st.leasing) {
        core_lease_mode(r->d, want, now);
        r->st.leasing = want;
        if (!want)
            r->st.share_switches++;
        if (want)
            after_change(r);
    }
}

static void on_lease(struct rlink *l, void *reply, void *priv)
{
    struct lease_req *q = priv;
    struct redis *r = q->r;
    redisReply *rep = reply;
    uint64_t now = now_ms(r);

    (void)l;
    if (r->lease_head == q) { /* always: replies come in order */
        r->lease_head = q->next;
        if (!r->lease_head)
            r->lease_tail = NULL;
    }
    if (r->closing) {
        free(q);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER ||
        rep->element[0]->integer < 0 || rep->element[1]->integer < 0) {
        r->st.lease_failures++;
        core_lease_failed(r->d, q->k, REDIS_LEASE_RETRY_MS, now);
        if (rep) {
            /* Redis answered, but no lease: it will not lease (out of
             * memory, an ACL, a broken script).  A key that had a lease
             * must not wait on one that cannot come: leasing goes off (the
             * share decides) and is tried again after a while. */
            const char *what = rep->type == REDIS_REPLY_ERROR
                                   ? rep->str
                                   : "not {granted, retry}";
            int n = rep->type == REDIS_REPLY_ERROR
                        ? (int)(rep->len > 100 ? 100 : rep->len)
                        : (int)strlen(what);
            if (!r->lease_err[0])
                log_msg(LOG_WARN,
                        "redis: lease script failed: %.*s; global limits on "
                        "this host's share until it works",
                        n, what);
            snprintf(r->lease_err, sizeof(r->lease_err), "%.*s", n, what);
            r->lease_err_until = now + REDIS_LEASE_ERR_MS;
            describe(r);
        }
    } else {
        if (r->lease_err[0]) {
            log_msg(LOG_INFO, "redis: lease script works again");
            r->lease_err[0] = '\0';
        }
        r->st.lease_tokens += (uint64_t)rep->element[0]->integer;
        core_lease_grant(r->d, q->k, (uint64_t)rep->element[0]->integer,
                         (uint64_t)rep->element[1]->integer, now);
        after_change(r);
    }
    free(q);
    lease_health(r);
}

/* Run the lease script for k: want tokens, back given back. */
static int lease(struct redis *r, struct key *k, uint64_t want, uint64_t back,
                 struct lease_req *q)
{
    char name[KEY_MAX + 80], a[5][24];
    const char *argv[9];
    size_t argvlen[9];
    const struct limiter_conf *c = &k->policy->limiter;
    int i;

    argv[0] = "EVAL";
    argv[1] = lease_script;
    argv[2] = "1";
    argv[3] = name;
    snprintf(a[0], sizeof(a[0]), "%llu", (unsigned long long)c->rate);
    snprintf(a[1], sizeof(a[1]), "%llu", (unsigned long long)c->per_ms);
    snprintf(a[2], sizeof(a[2]), "%llu", (unsigned long long)c->burst);
    snprintf(a[3], sizeof(a[3]), "%llu", (unsigned long long)want);
    snprintf(a[4], sizeof(a[4]), "%llu", (unsigned long long)back);
    for (i = 0; i < 5; i++)
        argv[4 + i] = a[i];
    argvlen[3] = redis_key(r, "gcra:", k->name, k->len, name, sizeof(name));
    for (i = 0; i < 9; i++)
        if (i != 3)
            argvlen[i] = strlen(argv[i]);
    return rlink_command_argv(&r->cmd, q ? on_lease : NULL, q, 9, argv,
                              argvlen);
}

static void send_leases(struct redis *r)
{
    struct key *k;
    uint64_t want, now = now_ms(r);
    int n = 0;

    while (n < REDIS_LEASES_MAX &&
           rlink_pending(&r->cmd) < REDIS_PENDING_MAX &&
           (k = core_lease_wanted(r->d, &want))) {
        struct lease_req *q = malloc(sizeof(*q));
        n++;
        if (!q) {
            core_lease_failed(r->d, k, REDIS_LEASE_RETRY_MS, now);
            continue;
        }
        q->r = r;
        q->k = k;
        q->sent_ms = now;
        q->next = NULL;
        if (lease(r, k, want, 0, q) < 0) {
            free(q);
            r->st.lease_failures++;
            core_lease_failed(r->d, k, REDIS_LEASE_RETRY_MS, now);
            continue;
        }
        if (r->lease_tail)
            r->lease_tail->next = q;
        else
            r->lease_head = q;
        r->lease_tail = q;
        r->st.lease_requests++;
    }
}

static void give_back(struct redis *r)
{
    struct key *k;
    uint64_t unused, now = now_ms(r);

    while ((k = core_lease_expired(r->d, now, &unused))) {
        if (!unused)
            continue;
        if (rlink_is_up(&r->cmd) && lease(r, k, 0, unused, NULL) == 0)
            r->st.lease_returned += unused;
    }
}

/* --- the loop's side -------------------------------------------------------- */

/* After every loop turn: write marked keys, send lease requests. */
static void on_check(uv_check_t *h)
{
    struct redis *r = h->data;
    struct key *k;
    int n = 0;

    if (r->closing)
        return;
    if (r->mode == REDIS_SHARED)
        lease_health(r);
    if (!rlink_is_up(&r->cmd))
        return;
    if (r->mode == REDIS_SHARED)
        send_leases(r);
    while (n < REDIS_FLUSH_MAX && rlink_pending(&r->cmd) < REDIS_PENDING_MAX &&
           (k = unmark(r))) {
        n++;
        if (write_key(r, k) < 0) {
            mark(r, k); /* next turn */
            break;
        }
    }
    /* A full re-write after drops: walk every key, queueing while there is
     * room (the walk resumes next turn; keys are never freed). */
    if (r->resync && !r->rs_on) {
        r->rs_on = 1;
        r->rs_key = NULL;
        r->rs_bucket = 0;
        r->resync = 0;
        r->rs_share = r->reshare;
        r->reshare = 0;
        r->st.resyncs++;
    }
    n = 0;
    while (r->rs_on && r->qlen < r->qcap && n++ < REDIS_FLUSH_MAX &&
           rlink_pending(&r->cmd) < REDIS_PENDING_MAX) {
        r->rs_key = core_key_next(r->d, r->rs_key, &r->rs_bucket);
        if (!r->rs_key) {
            r->rs_on = 0;
            break;
        }
        mark(r, r->rs_key);
        if (r->rs_share)
            publish_state(r, r->rs_key, now_ms(r));
    }
}

static void describe(struct redis *r)
{
    char link[200], detail[256];
    int ok = rlink_is_up(&r->cmd) &&
             (r->mode != REDIS_SHARED || rlink_is_up(&r->sub));

    if (ok && r->clash_until && now_ms(r) < r->clash_until) {
        snprintf(detail, sizeof(detail),
                 "another daemon publishes as origin \"%.60s\": give each "
                 "its own redis.origin",
                 r->origin);
        ok = 0;
    } else if (ok && r->mode == REDIS_SHARED && r->lease_err[0]) {
        snprintf(detail, sizeof(detail),
                 "lease script failing: %.120s; global limits on this "
                 "host's share",
                 r->lease_err);
        ok = 0;
    } else if (ok && r->write_err[0]) {
        snprintf(detail, sizeof(detail),
                 "key record writes failing: %.120s; the mirror is behind",
                 r->write_err);
        ok = 0;
    } else if (ok && r->mode == REDIS_SHARED && r->lease_stalled) {
        rlink_addr_str(&r->cmd, link, sizeof(link));
        snprintf(detail, sizeof(detail),
                 "lease requests timed out (no answer in %u ms) at %.120s; "
                 "global limits on this host's share",
                 (unsigned)r->lease_stall_ms, link);
        ok = 0;
    } else if (ok) {
        rlink_addr_str(&r->cmd, link, sizeof(link));
        snprintf(detail, sizeof(detail), "%s via %.150s; queue %llu",
                 r->mode == REDIS_SHARED ? "shared" : "mirror", link,
                 (unsigned long long)r->qlen);
    } else {
        rlink_describe(rlink_is_up(&r->cmd) ? &r->sub : &r->cmd, link,
                       sizeof(link));
        snprintf(detail, sizeof(detail), "%.190s; deciding locally%s", link,
                 r->mode == REDIS_SHARED
                     ? ", global limits on this host's share"
                     : "");
    }
    core_component(r->d, "redis", ok, detail);
}

static void stats_sync(struct redis *r)
{
    struct redis_stats *st = &r->st;

    st->up = rlink_is_up(&r->cmd);
    st->sub_up = r->mode == REDIS_SHARED && rlink_is_up(&r->sub);
    st->queued = r->qlen;
    st->connects = r->cmd.stats.connects + r->sub.stats.connects;
    st->disconnects = r->cmd.stats.disconnects + r->sub.stats.disconnects;
    st->connect_failures =
        r->cmd.stats.connect_failures + r->sub.stats.connect_failures;
    st->timeouts = r->cmd.stats.timeouts + r->sub.stats.timeouts;
    st->failovers = r->cmd.stats.failovers;
}

static void on_link_closed(struct rlink *l)
{
    struct redis *r = l->ops.ctx;

    if (++r->closed_links == (r->mode == REDIS_SHARED ? 2 : 1)) {
        uv_close((uv_handle_t *)&r->check, NULL);
        uv_close((uv_handle_t *)&r->timer, NULL);
        r->closed = 1;
    }
}

static void close_links(struct redis *r)
{
    if (r->closing)
        return;
    r->closing = 1;
    if (r->qlen)
        log_msg(LOG_WARN, "redis: %u key(s) not written at shutdown",
                (unsigned)r->qlen);
    rlink_close(&r->cmd, on_link_closed);
    if (r->mode == REDIS_SHARED)
        rlink_close(&r->sub, on_link_closed);
}

static void on_mark(struct rlink *l, void *reply, void *priv)
{
    struct redis *r = priv;
    redisReply *rep = reply;

    (void)l;
    if (!rep || r->closing || rep->type == REDIS_REPLY_ERROR)
        return; /* the writes will tell */
    if (rep->type == REDIS_REPLY_STATUS && r->mark_seen) {
        log_msg(LOG_WARN, "redis: the mirror was lost (Redis restarted "
                          "empty or was flushed): writing every key again");
        r->resync = 1;
        if (r->mode == REDIS_SHARED)
            r->reshare = 1;
    }
    r->mark_seen = 1;
}

static void on_timer(uv_timer_t *t)
{
    struct redis *r = t->data;

    if (r->closing)
        return;
    if (r->mode == REDIS_SHARED)
        give_back(r);
    /* An idle link would not notice a stopped Redis (nothing to time
     * out): a PING every command_timeout_ms gives it something. */
    if (rlink_is_up(&r->cmd) && !rlink_pending(&r->cmd) &&
        now_ms(r) - r->pinged_ms >= r->d->cfg.redis_command_timeout_ms) {
        r->pinged_ms = now_ms(r);
        rlink_command(&r->cmd, NULL, NULL, "PING");
    }
    /* Is what this daemon wrote still there?  <prefix>mark:<origin> is
     * set (NX) when missing.  Missing after it was seen means Redis lost
     * its data (restarted empty, FLUSHALL, a failover to a replica that
     * had none, eviction): every key is written again (and, shared, the
     * global keys' state is published again), so the mirror does not stay
     * empty.  Missing at the first check is a first start, or a loss while
     * this daemon was down: then its state may be older than what others
     * did meanwhile, and is not pushed over theirs. */
    if (rlink_is_up(&r->cmd) && now_ms(r) - r->marked_ms >= REDIS_MARK_MS &&
        rlink_pending(&r->cmd) < REDIS_PENDING_MAX) {
        char name[160];
        r->marked_ms = now_ms(r);
        snprintf(name, sizeof(name), "%smark:%s", r->prefix, r->origin);
        rlink_command(&r->cmd, on_mark, r, "SET %s %llu NX", name,
                      (unsigned long long)r->epoch);
    }
    if (r->write_lost && rlink_is_up(&r->cmd) &&
        now_ms(r) - r->write_probed_ms >= REDIS_LEASE_ERR_MS) {
        char name[160];
        r->write_probed_ms = now_ms(r);
        snprintf(name, sizeof(name), "%sprobe:%s", r->prefix, r->origin);
        rlink_command(&r->cmd, on_write, r, "SET %s 1 PX 10000", name);
    }
    stats_sync(r);
    describe(r);
    if (r->draining &&
        ((!r->qlen && !rlink_pending(&r->cmd)) || !rlink_is_up(&r->cmd) ||
         now_ms(r) >= r->drain_until))
        close_links(r);
}

static void on_up(struct rlink *l, void *ctx)
{
    struct redis *r = ctx;
    char addr[200];

    rlink_addr_str(l, addr, sizeof(addr));
    log_msg(LOG_INFO, "redis: %s connected to %s", l->conf.name, addr);
    if (l == &r->cmd && r->mode == REDIS_SHARED)
        lease_health(r);
    catch_up(r);
    stats_sync(r);
    describe(r);
}

static void on_down(struct rlink *l, void *ctx, const char *why)
{
    struct redis *r = ctx;

    if (l == &r->cmd) {
        if (r->mode == REDIS_SHARED)
            lease_health(r);
        r->loading = 0;
        r->load_last = 0;
        r->load_inflight = 0;
        r->load_again = 0; /* the next up reads back anyway */
    }
    (void)why; /* rlink logs it */
    stats_sync(r);
    describe(r);
}

static void metrics_hook(void *ctx, struct prom_buf *b);

/* --- lifecycle -------------------------------------------------------------- */

static int link_conf(const struct config *c, const char *name,
                     struct rlink_conf *lc)
{
    char err[160];
    size_t i;

    memset(lc, 0, sizeof(*lc));
    lc->name = name;
    snprintf(lc->password, sizeof(lc->password), "%s", c->redis_password);
    lc->db = c->redis_db;
    lc->connect_timeout_ms = c->redis_connect_timeout_ms;
    lc->command_timeout_ms = c->redis_command_timeout_ms;
    lc->backoff_min_ms = 100;
    lc->backoff_max_ms = 5000;
    if (c->redis_nsentinels) {
        lc->nsentinels = c->redis_nsentinels;
        for (i = 0; i < c->redis_nsentinels; i++)
            if (rlink_parse_addr(c->redis_sentinels[i], 1, &lc->sentinels[i],
                                 err, sizeof(err)) < 0) {
                log_msg(LOG_ERR, "redis.sentinels[%zu]: %s", i, err);
                return RD_EINVAL;
            }
        snprintf(lc->master_name, sizeof(lc->master_name), "%s",
                 c->redis_master_name);
    } else if (rlink_parse_addr(c->redis_url, 0, &lc->addr, err,
                                sizeof(err)) < 0) {
        log_msg(LOG_ERR, "redis.url: %s", err);
        return RD_EINVAL;
    }
    return 0;
}

int redis_start(struct redis **out, uv_loop_t *loop, struct resild *d,
                struct server *srv, uint64_t seed, int warm)
{
    const struct config *c = &d->cfg;
    struct rlink_ops ops = {on_up, on_down, NULL, NULL};
    struct rlink_conf lc;
    struct redis *r;
    uint32_t setcap = 16;
    int rc;
    char ch[128];

    *out = NULL;
    if (c->redis_mode == REDIS_OFF)
        return 0;
    if (!(r = calloc(1, sizeof(*r))))
        return RD_ENOMEM;
    ops.ctx = r;
    r->loop = loop;
    r->d = d;
    r->srv = srv;
    r->mode = c->redis_mode;
    r->st.mode = c->redis_mode;
    r->warm = warm;
    r->epoch = seed ^ wall_ms();
    /* A lease unanswered for a quarter of lease_ms (5 to 50 ms) means
     * Redis is not keeping up: a key asks at half its lease, so at its
     * share of the rate it has half a lease period before it runs dry,
     * and at twice its share still a quarter.  A local Redis answers in
     * well under a millisecond. */
    r->lease_stall_ms = c->redis_lease_ms / 4;
    if (r->lease_stall_ms < 5)
        r->lease_stall_ms = 5;
    if (r->lease_stall_ms > 50)
        r->lease_stall_ms = 50;
    snprintf(r->prefix, sizeof(r->prefix), "%s", c->redis_prefix);
    snprintf(r->origin, sizeof(r->origin), "%s", c->redis_origin);
    r->qcap = c->redis_queue;
    while (setcap < r->qcap * 2)
        setcap <<= 1;
    r->setmask = setcap - 1;
    snapbuf_init(&r->buf);
    r->q = calloc(r->qcap, sizeof(*r->q));
    r->set = calloc(setcap, sizeof(*r->set));
    r->ex = malloc(sizeof(*r->ex));
    if (!r->q || !r->set || !r->ex) {
        rc = RD_ENOMEM;
        goto fail;
    }
    if ((rc = link_conf(c, "redis", &lc)) < 0 ||
        (rc = rlink_init(&r->cmd, loop, &lc, &ops, seed)) < 0)
        goto fail;
    if (r->mode == REDIS_SHARED) {
        ops.message = on_message;
        lc.name = "redis-sub";
        redis_key(r, "events", "", 0, ch, sizeof(ch));
        if ((rc = rlink_init(&r->sub, loop, &lc, &ops, seed ^ 0x9e37)) < 0 ||
            (rc = rlink_subscribe(&r->sub, ch)) < 0)
            goto fail;
    }
    if ((rc = core_add_sink(d, redis_sink, r)) < 0)
        goto fail;
    d->metrics_extra = metrics_hook;
    d->metrics_extra_ctx = r;
    uv_check_init(loop, &r->check);
    r->check.data = r;
    uv_check_start(&r->check, on_check);
    uv_unref((uv_handle_t *)&r->check);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, REDIS_TIMER_MS, REDIS_TIMER_MS);
    uv_unref((uv_handle_t *)&r->timer);
    rlink_start(&r->cmd);
    if (r->mode == REDIS_SHARED)
        rlink_start(&r->sub);
    describe(r);
    log_msg(LOG_INFO, "redis: %s mode, prefix \"%s\", origin \"%s\"%s",
            r->mode == REDIS_SHARED ? "shared" : "mirror", r->prefix,
            r->origin, warm ? "; no local state: reading the mirror back" : "");
    *out = r;
    return 0;
fail:
    free(r->q);
    free(r->set);
    free(r->ex);
    snapbuf_free(&r->buf);
    free(r);
    return rc;
}

void redis_drain(struct redis *r)
{
    if (!r || r->draining)
        return;
    r->draining = 1;
    r->drain_until = now_ms(r) + REDIS_DRAIN_MS;
    if (!r->qlen || !rlink_is_up(&r->cmd))
        close_links(r);
}

static void on_server_stop(void *ctx)
{
    struct redis *r = ctx;

    redis_drain(r);
    if (r->next_stop)
        r->next_stop(r->next_stop_ctx);
}

void redis_hook_stop(struct redis *r, struct server *srv)
{
    if (!r)
        return;
    r->next_stop = srv->on_stop;
    r->next_stop_ctx = srv->on_stop_ctx;
    srv->on_stop = on_server_stop;
    srv->on_stop_ctx = r;
}

static void metrics_hook(void *ctx, struct prom_buf *b)
{
    redis_metrics(&((struct redis *)ctx)->st, b);
}

void redis_free(struct redis *r)
{
    if (!r)
        return;
    if (!r->closed) {
        close_links(r);
        while (!r->closed && uv_run(r->loop, UV_RUN_ONCE))
            ;
    }
    free(r->q);
    free(r->set);
    free(r->ex);
    snapbuf_free(&r->buf);
    free(r);
}

const struct redis_stats *redis_stats(const struct redis *r)
{
    return r ? &r->st : NULL;
}

/* --- metrics ------------------------------------------------------------- */

void redis_metrics(const struct redis_stats *st, struct prom_buf *b)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
#define C(f, h) {"resild_redis_" #f "_total", h, offsetof(struct redis_stats, f)}
        C(writes, "Key records written behind to Redis."),
        C(writes_failed, "Key record writes that got no OK."),
        C(writes_dropped, "Key changes not queued for Redis: queue full."),
        C(resyncs, "Full re-writes of every key after dropped writes."),
        C(loaded, "Keys taken from Redis at a warm start."),
        C(readbacks, "Walks of the records in Redis (warm start, catch-up)."),
        C(published, "Shared breaker changes published."),
        C(publish_dropped, "Shared changes not published: Redis away."),
        C(received, "Shared changes received from other daemons."),
        C(applied, "Shared changes applied here."),
        C(echoes, "Own shared changes heard back (ignored)."),
        C(stale, "Shared changes older than what was known (ignored)."),
        C(rejected, "Malformed shared messages or records, or not global here."),
        C(lease_requests, "Global limiter lease requests sent."),
        C(lease_tokens, "Global limiter tokens leased."),
        C(lease_returned, "Leased tokens given back unused."),
        C(lease_failures, "Lease requests that got no answer."),
        C(share_switches, "Times global limits fell back to this host's "
                          "share (Redis slow, away or failing)."),
        C(connects, "Redis connections made."),
        C(disconnects, "Redis connections lost."),
        C(connect_failures, "Redis connection attempts that failed."),
        C(timeouts, "Redis commands that ran out of time."),
        C(failovers, "Sentinel primary switches followed."),
#undef C
    };
    size_t i;

    prom_family(b, "resild_redis_up", PROM_GAUGE,
                "1 when the Redis command connection is up.");
    prom_sample(b, NULL, 0, st->up);
    prom_family(b, "resild_redis_leasing", PROM_GAUGE,
                "1 when global limiters decide from Redis leases, 0 when "
                "on this host's share.");
    prom_sample(b, NULL, 0, st->leasing);
    prom_family(b, "resild_redis_queued", PROM_GAUGE,
                "Keys waiting to be written to Redis.");
    prom_sample(b, NULL, 0, (double)st->queued);
    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        prom_family(b, counters[i].name, PROM_COUNTER, counters[i].help);
        prom_sample_u64(b, NULL, 0,
                        *(const uint64_t *)((const char *)st +
                                            counters[i].off));
    }
}
