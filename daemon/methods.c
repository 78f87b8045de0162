/*
 * methods.c - the RPC layer (see methods.h): one table entry per method.
 *
 * Each handler validates its named arguments first and answers bad_request
 * naming the argument before it touches any state, so a bad request changes
 * nothing; then it calls the core (core.h) and packs the answer straight
 * into the connection's output buffer.  The only layer below the server
 * that includes msgpack.  Decisions, outcomes and state changes are the
 * core's: nothing here changes a breaker, a limiter or a permit by itself,
 * and nothing here writes a log line (the log is an event sink).  Also the
 * subscriber sink: events packed as notifications for the connections that
 * subscribed.
 */
#include "methods.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <time.h>

#include "admit.h"
#include "analytics.h"
#include "core.h"
#include "error.h"
#include "log.h"
#include "metrics.h"

#define MAX_COST 1000000000ULL /* a cost above this is surely a bug */
#define MAX_WAIT_MS 3600000ULL /* parking longer than an hour: no */
#define MAX_TTL_MS (86400000ULL * 30)
#define CLASS_MAX 64 /* bytes of an error class */

struct req {
    struct resild *d;
    struct rpc_client *rc;
    struct caller *c;
    const struct proto_msg *m;
    msgpack_packer *pk;
    uint64_t now_ms;
    const char *name; /* method name, NUL-terminated, for messages */
    /* The top-level arguments, found once by known_args: vals[j] is the
     * value named allowed[j], or NULL. */
    const char *const *allowed;
    const msgpack_object *vals[32];
};

/* --- argument helpers: each packs bad_request and returns -1 on error --- */

static int bad(struct req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int bad(struct req *r, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    int n = snprintf(msg, sizeof(msg), "%s: ", r->name);

    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    r->d->m.bounds[BOUND_BAD_REQUEST]++;
    proto_pack_error(r->pk, r->m->msgid, "bad_request", msg);
    return -1;
}

/*
 * Every name in map must be one of allowed (NULL-terminated, at most 32),
 * once: a mistyped argument ("costs") must never pass as its default, and
 * one given twice must not pass as whichever copy a reader picks (the
 * handlers take the first, a dict-based client the last).  where prefixes
 * the name in the message ("error.").
 */
/* Every name in map must be one of allowed (at most 32), once.  With
 * vals, vals[j] is set to the value named allowed[j] (NULL: not given). */
static int known_args(struct req *r, const msgpack_object *map,
                      const char *where, const char *const *allowed,
                      const msgpack_object **vals)
{
    uint32_t i, seen = 0;
    size_t j;

    for (j = 0; vals && allowed[j]; j++)
        vals[j] = NULL;
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return 0;
    for (i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        char esc[48];
        if (k->type != MSGPACK_OBJECT_STR)
            return bad(r, "argument names must be strings");
        for (j = 0; allowed[j]; j++) /* first byte first: cheap misses */
            if (k->via.str.size && allowed[j][0] == k->via.str.ptr[0] &&
                proto_str_eq(k, allowed[j]))
                break;
        if (!allowed[j])
            return bad(
                r, "unknown argument '%s%s'", where,
                log_escape(esc, sizeof(esc), k->via.str.ptr, k->via.str.size));
        if (seen & (1u << j))
            return bad(r, "argument '%s%s' given twice", where, allowed[j]);
        seen |= 1u << j;
        if (vals)
            vals[j] = &map->via.map.ptr[i].val;
    }
    return 0;
}

/* The value of argument name in map, or NULL.  The request's own
 * arguments come from the index known_args made (a pointer compare
 * finds the name: the method tables and the callers use the same
 * literals), anything else from a walk of map. */
static const msgpack_object *lookup(const struct req *r,
                                    const msgpack_object *map,
                                    const char *name)
{
    size_t j;

    if (map && map == r->m->params && r->allowed) {
        for (j = 0; r->allowed[j]; j++)
            if (r->allowed[j] == name)
                return r->vals[j];
        for (j = 0; r->allowed[j]; j++)
            if (!strcmp(r->allowed[j], name))
                return r->vals[j];
        return NULL; /* not an argument of this method: never given */
    }
    return proto_map_get(map, name);
}

static int arg_key(struct req *r, const char *name, int required,
                   const char **s, size_t *n)
{
    const msgpack_object *o = lookup(r, r->m->params, name);

    *s = NULL;
    *n = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required)
            return bad(r, "'%s' is required", name);
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return bad(r, "'%s' must be a string", name);
    if (!keys_valid(o->via.str.ptr, o->via.str.size))
        return bad(r, "'%s' must match [A-Za-z0-9._:-]{1,%d}", name, KEY_MAX);
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

static int arg_uint(struct req *r, const char *name, uint64_t def, uint64_t min,
                    uint64_t max, uint64_t *out)
{
    const msgpack_object *o = lookup(r, r->m->params, name);

    *out = def;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < min ||
        o->via.u64 > max)
        return bad(r, "'%s' must be an integer in %llu..%llu", name,
                   (unsigned long long)min, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

/* One of the NULL-terminated choices; returns its index via *out. */
static int arg_enum(struct req *r, const char *name, int required, int def,
                    const char *const *choices, int *out)
{
    const msgpack_object *o = lookup(r, r->m->params, name);
    int i;

    *out = def;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required)
            return bad(r, "'%s' is required", name);
        return 0;
    }
    for (i = 0; choices[i]; i++)
        if (proto_str_eq(o, choices[i])) {
            *out = i;
            return 0;
        }
    {
        char list[128] = "";
        for (i = 0; choices[i]; i++) {
            strncat(list, i ? "/" : "", sizeof(list) - strlen(list) - 1);
            strncat(list, choices[i], sizeof(list) - strlen(list) - 1);
        }
        return bad(r, "'%s' must be one of %s", name, list);
    }
}

/* arg_enum for a value inside a nested map; label names it in messages. */
static int arg_enum_in(struct req *r, const msgpack_object *map,
                       const char *name, const char *label, int def,
                       const char *const *choices, int *out)
{
    const msgpack_object *o = lookup(r, map, name);
    int i;

    *out = def;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    for (i = 0; choices[i]; i++)
        if (proto_str_eq(o, choices[i])) {
            *out = i;
            return 0;
        }
    return bad(r, "'%s' is not one of the allowed values", label);
}

static int arg_bool(struct req *r, const msgpack_object *map, const char *name,
                    int def, int *out)
{
    const msgpack_object *o = lookup(r, map, name);

    *out = def;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return bad(r, "'%s' must be true or false", name);
    *out = o->via.boolean;
    return 0;
}

static int arg_text(struct req *r, const msgpack_object *map, const char *name,
                    size_t max, const char **s, size_t *n)
{
    const msgpack_object *o = lookup(r, map, name);

    *s = NULL;
    *n = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_STR)
        return bad(r, "'%s' must be a string", name);
    *s = o->via.str.ptr;
    *n = o->via.str.size < max ? o->via.str.size : max;
    return 0;
}

/* Map a key error to its response. */
static int key_error(struct req *r, int rc, const char *name, size_t n)
{
    char esc[64];

    if (rc == RD_EKEYS) {
        proto_pack_error(r->pk, r->m->msgid, "too_many_keys",
                         "max_keys reached; no new key can be created");
        return -1;
    }
    if (rc == RD_EINVAL)
        return bad(r, "bad key '%s'", log_escape(esc, sizeof(esc), name, n));
    proto_pack_error(r->pk, r->m->msgid, "busy", "out of memory");
    return -1;
}

/* core_key: the key, created on first use; errors packed. */
static int get_key(struct req *r, const char *name, size_t n, struct key **k)
{
    int rc = core_key(r->d, name, n, r->now_ms, k);
    char esc[64];

    if (rc == RD_EDEEP)
        return bad(r,
                   "key '%s' lies below more than %d keys with rate "
                   "limiters; not every limit could be applied",
                   log_escape(esc, sizeof(esc), name, n), KEY_MAX_ANCESTORS);
    if (rc == RD_EKEYS)
        core_bound(r->d, BOUND_MAX_KEYS, NULL, "max_keys reached", r->now_ms);
    if (rc < 0)
        return key_error(r, rc, name, n);
    return 0;
}

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points over U+10FFFF), so what is stored can be shown as text. */
static int utf8_valid(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s, *end = p + n;

    while (p < end) {
        uint8_t c = *p;
        size_t len, i;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07;
        else
            return 0;
        if ((size_t)(end - p) < len)
            return 0;
        for (i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        p += len;
    }
    return 1;
}

/* The longest prefix of valid UTF-8 s[0..n) of at most max bytes that
 * does not split a character. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((uint8_t)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

/* A fixed buffer for msgpack_packer: what does not fit is refused and
 * the whole is marked too big (no allocation per request). */
struct fixbuf {
    char *data;
    size_t len, cap;
    int over;
};

static int fixbuf_write(void *data, const char *buf, size_t len)
{
    struct fixbuf *f = data;

    if (f->over || len > f->cap - f->len) {
        f->over = 1;
        return -1;
    }
    memcpy(f->data + f->len, buf, len);
    f->len += len;
    return 0;
}

/* --- status maps --- */

/* An acquire answer: allow, permit, state, reason, retry_after_ms, and
 * shadow_denied when only the shadow setting allowed it. */
/* The constant parts of the acquire and report answers, packed by
 * msgpack-c once (proto_pack_pre): the same bytes, a third of the writes.
 * Built on first use; the daemon has one thread. */
static struct {
    int ready;
    struct proto_pre allow[2], permit, state[6], reason[ADMIT_NREASONS],
        retry_after, stale[2];
} pre;

static void pre_init(void)
{
    int i, bad = 0;

    for (i = 0; i < 2; i++) {
        bad |= proto_pre_kv_bool(&pre.allow[i], "allow", i);
        bad |= proto_pre_kv_bool(&pre.stale[i], "stale", i);
    }
    for (i = 0; i < 6; i++)
        bad |= proto_pre_kv_str(&pre.state[i], "state",
                                breaker_visible_name((enum breaker_visible)i));
    for (i = 0; i < ADMIT_NREASONS; i++)
        bad |= proto_pre_kv_str(&pre.reason[i], "reason",
                                admit_reason_name((enum admit_reason)i));
    bad |= proto_pre_str(&pre.permit, "permit");
    bad |= proto_pre_str(&pre.retry_after, "retry_after_ms");
    pre.ready = bad ? -1 : 1; /* -1: never (a name grew past the room) */
}

static void pack_result(msgpack_packer *pk, const struct key *k,
                        const struct admit_result *res)
{
    if (!pre.ready)
        pre_init();
    msgpack_pack_map(pk, res->shadow ? 6 : 5);
    if (pre.ready > 0) {
        proto_pack_pre(pk, &pre.allow[res->allow ? 1 : 0]);
        proto_pack_pre(pk, &pre.permit);
        msgpack_pack_uint64(pk, res->permit);
        proto_pack_pre(pk, &pre.state[breaker_visible_state(&k->br)]);
        proto_pack_pre(pk, &pre.reason[res->reason]);
        proto_pack_pre(pk, &pre.retry_after);
        msgpack_pack_uint64(pk, res->retry_after_ms);
    } else {
        proto_kv_bool(pk, "allow", res->allow);
        proto_kv_u64(pk, "permit", res->permit);
        proto_kv_str(pk, "state", breaker_state_name(&k->br));
        proto_kv_str(pk, "reason", admit_reason_name(res->reason));
        proto_kv_u64(pk, "retry_after_ms", res->retry_after_ms);
    }
    if (res->shadow)
        proto_kv_str(pk, "shadow_denied",
                     admit_reason_name(res->shadow_reason));
}

/* limiter and bulkhead entries of a status map (nil when the policy has
 * none). */
static void pack_admission(msgpack_packer *pk, struct key *k, uint64_t now_ms)
{
    const struct policy *pol = k->policy;

    proto_pack_cstr(pk, "limiter");
    if (pol->has_limiter) {
        msgpack_pack_map(pk, 5);
        proto_kv_u64(pk, "rate", pol->limiter.rate);
        proto_kv_u64(pk, "per_ms", pol->limiter.per_ms);
        proto_kv_u64(pk, "burst", pol->limiter.burst);
        proto_kv_u64(pk, "available", admit_available(k, now_ms));
        proto_kv_u64(pk, "paused_ms", limiter_paused_ms(&k->lim, now_ms));
    } else {
        msgpack_pack_nil(pk);
    }
    proto_pack_cstr(pk, "bulkhead");
    if (pol->has_bulkhead) {
        msgpack_pack_map(pk, 3);
        proto_kv_u64(pk, "in_use", k->bh.in_use);
        proto_kv_u64(pk, "max", pol->bulkhead.max_concurrent);
        proto_kv_u64(pk, "queued", k->q_len);
    } else {
        msgpack_pack_nil(pk);
    }
}

/* The per-key status map of SPEC §3.  k must be advanced (core_advance). */
static void pack_key_status(msgpack_packer *pk, struct key *k, uint64_t now)
{
    const struct breaker *b = &k->br;
    int forced = b->force != BREAKER_AUTO, hb = k->policy->has_heartbeat;
    uint64_t p50, p99;

    msgpack_pack_map(pk, 17 + (forced ? 2 : 0) + (k->policy->shadow ? 1 : 0) +
                             (hb ? 1 : 0));
    proto_pack_cstr(pk, "key");
    proto_pack_strn(pk, k->name, k->len);
    proto_kv_str(pk, "policy", k->policy->pattern);
    proto_kv_str(pk, "state", breaker_state_name(b));
    proto_kv_str(pk, "health", core_health_name(core_key_health(k)));
    proto_kv_u64(pk, "since_ms", now > b->since_ms ? now - b->since_ms : 0);
    /* calls/failures: lifetime; the rates are over the sliding window. */
    proto_kv_u64(pk, "calls", b->calls);
    proto_kv_u64(pk, "failures", b->failures);
    proto_kv_f64(pk, "failure_rate", breaker_failure_rate(b, now));
    proto_kv_f64(pk, "slow_rate", breaker_slow_rate(b, now));
    proto_kv_u64(pk, "opens", b->opens);
    proto_kv_str(pk, "opened_by", breaker_cause_name(b->cause));
    proto_kv_u64(pk, "retry_after_ms", breaker_retry_after(b, now));
    proto_kv_u64(pk, "outstanding", k->outstanding);
    proto_pack_cstr(pk, "latency_ms");
    msgpack_pack_map(pk, 2);
    keys_latency_percentiles(k, 50, 99, &p50, &p99);
    proto_kv_u64(pk, "p50", p50);
    proto_kv_u64(pk, "p99", p99);
    proto_kv_u64(pk, "probes_in_flight",
                 b->state == BREAKER_HALF_OPEN ? b->probes_in_flight : 0);
    if (k->policy->shadow)
        proto_kv_u64(pk, "shadow_denied", k->x ? k->x->shadow_denied : 0);
    pack_admission(pk, k, now);
    if (hb) {
        proto_pack_cstr(pk, "heartbeat");
        msgpack_pack_map(pk, 3);
        proto_kv_bool(pk, "lost", k->hb.lost);
        proto_kv_u64(pk, "silent_ms", heartbeat_silent_ms(&k->hb, now));
        proto_kv_u64(pk, "timeout_ms", k->policy->heartbeat_timeout_ms);
    }
    if (forced) {
        proto_kv_str(pk, "force_reason", key_force_reason(k));
        proto_kv_u64(pk, "force_ttl_ms",
                     b->force_until_ms > now ? b->force_until_ms - now : 0);
    }
}

/* --- methods --- */

static void m_ping(struct req *r)
{
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 3);
    proto_kv_str(r->pk, "version", RESIL_VERSION);
    proto_kv_u64(r->pk, "pid", (uint64_t)r->d->pid);
    proto_kv_u64(r->pk, "uptime_ms", r->now_ms - r->d->start_ms);
}

static void m_acquire(struct req *r)
{
    static const char *const prio[] = {"normal", "critical", NULL};
    const struct key *culprit = NULL;
    struct admit_result res;
    const char *name;
    struct key *k;
    uint64_t cost, wait_ms;
    size_t n;
    int rc, critical;

    if (arg_key(r, "key", 1, &name, &n) < 0 ||
        arg_uint(r, "cost", 1, 1, MAX_COST, &cost) < 0 ||
        arg_uint(r, "wait_ms", 0, 0, MAX_WAIT_MS, &wait_ms) < 0 ||
        arg_enum(r, "priority", 0, 0, prio, &critical) < 0 ||
        get_key(r, name, n, &k) < 0)
        return;
    rc = core_acquire(r->d, r->c, k, cost, critical, wait_ms, r->m->msgid,
                      r->now_ms, &res, &culprit);
    if (rc == RD_E2BIG) {
        bad(r,
            "'cost' %llu exceeds what the limiter of '%s' can ever grant "
            "(burst %llu, of which %llu only for priority critical)",
            (unsigned long long)cost, culprit->name,
            (unsigned long long)culprit->policy->limiter.burst,
            (unsigned long long)culprit->policy->reserve);
        return;
    }
    if (rc == RD_EPERMITS || rc == RD_ENOMEM) {
        if (rc == RD_EPERMITS)
            core_bound(r->d, BOUND_MAX_PERMITS, k, "max_permits outstanding",
                       r->now_ms);
        proto_pack_error(r->pk, r->m->msgid, "busy",
                         rc == RD_ENOMEM ? "out of memory"
                                         : "max_permits outstanding; report "
                                           "or release some");
        return;
    }
    if (res.parked)
        return; /* answered when it passes or wait_ms runs out */
    proto_pack_response_head(r->pk, r->m->msgid);
    pack_result(r->pk, k, &res);
}

static void m_report(struct req *r)
{
    static const char *const outcomes[] = {"success", "failure", "ignore",
                                           "unknown", NULL};
    static const char *const sevs[] = {"low", "medium", "high", "critical",
                                       NULL};
    const msgpack_object *err = lookup(r, r->m->params, "error");
    const msgpack_object *limit = lookup(r, r->m->params, "limit");
    const msgpack_object *lat = lookup(r, r->m->params, "latency_ms");
    const msgpack_object *ctx = lookup(r, r->m->params, "context");
    const char *name, *cls = NULL, *msg = NULL, *cid = NULL;
    size_t n, cls_n = 0, msg_n = 0, cid_n = 0;
    uint64_t permit_id, latency, attempt, venue_wait = 0, remaining = 0;
    int outcome, idempotent, transient, severity, has_latency;
    int has_remaining = 0;
    char class_z[CLASS_MAX + 1] = "";

    /* Validate everything before touching any state. */
    if (arg_key(r, "key", 1, &name, &n) < 0 ||
        arg_uint(r, "permit", 0, 0, UINT64_MAX, &permit_id) < 0 ||
        arg_enum(r, "outcome", 1, 0, outcomes, &outcome) < 0 ||
        arg_uint(r, "latency_ms", 0, 0, MAX_TTL_MS, &latency) < 0 ||
        arg_uint(r, "attempt", 1, 1, 1000000, &attempt) < 0 ||
        arg_bool(r, r->m->params, "idempotent", 1, &idempotent) < 0 ||
        arg_text(r, r->m->params, "correlation_id", OUTCOME_CID_MAX, &cid,
                 &cid_n) < 0)
        return;
    has_latency = lat && lat->type != MSGPACK_OBJECT_NIL;
    if (err && err->type != MSGPACK_OBJECT_NIL &&
        err->type != MSGPACK_OBJECT_MAP && err->type != MSGPACK_OBJECT_STR) {
        bad(r, "'error' must be a class string or a map");
        return;
    }
    if (err && err->type == MSGPACK_OBJECT_STR) {
        /* "error": "network.reset" is short for {"class": ...}. */
        cls = err->via.str.ptr;
        cls_n = err->via.str.size;
        if (cls_n > CLASS_MAX || !keys_valid(cls, cls_n)) {
            bad(r, "'error' must match [A-Za-z0-9._:-]{1,%d}", CLASS_MAX);
            return;
        }
        memcpy(class_z, cls, cls_n);
        class_z[cls_n] = '\0';
        config_classify(&r->d->cfg, class_z, &severity, &transient);
    } else if (err && err->type == MSGPACK_OBJECT_MAP) {
        static const char *const err_args[] = {"class",          "message",
                                               "severity",       "transient",
                                               "retry_after_ms", NULL};
        const msgpack_object *ra = lookup(r, err, "retry_after_ms");
        if (known_args(r, err, "error.", err_args, NULL) < 0 ||
            arg_text(r, err, "class", CLASS_MAX + 1, &cls, &cls_n) < 0 ||
            arg_text(r, err, "message", OUTCOME_MESSAGE_MAX, &msg, &msg_n) < 0)
            return;
        if (cls && (cls_n > CLASS_MAX || !keys_valid(cls, cls_n))) {
            bad(r, "'error.class' must match [A-Za-z0-9._:-]{1,%d}", CLASS_MAX);
            return;
        }
        if (cls) {
            memcpy(class_z, cls, cls_n);
            class_z[cls_n] = '\0';
        }
        if (ra && ra->type != MSGPACK_OBJECT_NIL &&
            (ra->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
             ra->via.u64 > MAX_TTL_MS)) {
            bad(r, "'error.retry_after_ms' must be an integer in 0..%llu",
                (unsigned long long)MAX_TTL_MS);
            return;
        }
        venue_wait =
            ra && ra->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? ra->via.u64 : 0;
        config_classify(&r->d->cfg, class_z, &severity, &transient);
        if (arg_enum_in(r, err, "severity", "error.severity", severity, sevs,
                        &severity) < 0)
            return;
        if (arg_bool(r, err, "transient", transient, &transient) < 0)
            return;
    } else {
        config_classify(&r->d->cfg, NULL, &severity, &transient);
    }
    if (limit && limit->type != MSGPACK_OBJECT_NIL) {
        static const char *const limit_args[] = {"remaining", "reset_ms", NULL};
        const msgpack_object *rem = lookup(r, limit, "remaining");
        const msgpack_object *reset = lookup(r, limit, "reset_ms");
        if (limit->type != MSGPACK_OBJECT_MAP || !rem ||
            rem->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            bad(r, "'limit' must be a map with an integer 'remaining'");
            return;
        }
        if (known_args(r, limit, "limit.", limit_args, NULL) < 0)
            return;
        if (reset && reset->type != MSGPACK_OBJECT_NIL &&
            reset->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            bad(r, "'limit.reset_ms' must be an integer");
            return;
        }
        remaining = rem->via.u64;
        has_remaining = 1;
    }
    if (ctx && ctx->type != MSGPACK_OBJECT_NIL &&
        ctx->type != MSGPACK_OBJECT_MAP) {
        bad(r, "'context' must be a map");
        return;
    }
    {
        struct outcome o = {
            .permit = permit_id,
            .kind = (enum outcome_kind)outcome,
            .cls = class_z,
            .severity = severity,
            .transient = transient,
            .message = msg,
            .message_len = msg_n,
            .correlation_id = cid,
            .correlation_id_len = cid_n,
            .latency_ms = has_latency ? (int64_t)latency : -1,
            .venue_wait_ms = venue_wait,
            .has_remaining = has_remaining,
            .remaining = remaining,
            .attempt = (uint32_t)attempt,
            .idempotent = idempotent,
        };
        struct report_result rr;
        char ctxbuf[OUTCOME_CONTEXT_MAX];
        struct fixbuf fb = {ctxbuf, 0, sizeof(ctxbuf), 0};
        int rc;

        if (ctx && ctx->type == MSGPACK_OBJECT_MAP) {
            /* The context as msgpack bytes for the sinks (error log,
             * analytics), at most OUTCOME_CONTEXT_MAX of them: a larger
             * one is left out, never cut into invalid msgpack. */
            msgpack_packer cp;
            msgpack_packer_init(&cp, &fb, fixbuf_write);
            msgpack_pack_object(&cp, *ctx);
            if (!fb.over) {
                o.context = ctxbuf;
                o.context_len = fb.len;
            }
        }
        rc = core_report(r->d, r->c, &o, name, n, r->now_ms, &rr);

        if (rc == RD_EINVAL) {
            bad(r, "'permit' %llu was granted for another key",
                (unsigned long long)permit_id);
            return;
        }
        if (rc < 0) {
            key_error(r, rc, name, n);
            return;
        }
        proto_pack_response_head(r->pk, r->m->msgid);
        if (rr.foreign) {
            /* Another connection's permit: nothing changed, nothing is
             * revealed. */
            msgpack_pack_map(r->pk, 2);
            proto_kv_str(r->pk, "state",
                         rr.key ? breaker_state_name(&rr.key->br) : "closed");
            proto_kv_bool(r->pk, "stale", 1);
            return;
        }
        msgpack_pack_map(r->pk, rr.advised ? 4 : 2);
        if (!pre.ready)
            pre_init();
        if (pre.ready > 0) {
            proto_pack_pre(r->pk,
                           &pre.state[breaker_visible_state(&rr.key->br)]);
            proto_pack_pre(r->pk, &pre.stale[rr.stale ? 1 : 0]);
        } else {
            proto_kv_str(r->pk, "state", breaker_state_name(&rr.key->br));
            proto_kv_bool(r->pk, "stale", rr.stale);
        }
        if (!rr.advised)
            return;
        proto_pack_cstr(r->pk, "classification");
        msgpack_pack_map(r->pk, 2);
        proto_kv_str(r->pk, "severity", config_severity_name(rr.severity));
        proto_kv_bool(r->pk, "transient", rr.transient);
        proto_pack_cstr(r->pk, "retry");
        msgpack_pack_map(r->pk, 3);
        proto_kv_bool(r->pk, "retry", rr.retry.retry);
        proto_kv_u64(r->pk, "delay_ms", rr.retry.delay_ms);
        proto_kv_str(r->pk, "reason", rr.retry.reason);
    }
}

/*
 * One page of keys in name order: `limit` (default and most
 * STATUS_PAGE_MAX) keys strictly after `after`, and `next` (the last key
 * shown) when more follow.  O(log n + page) through the name index, with
 * or without a prefix, so a status over 100k keys no longer stalls the
 * loop; `health` is over the page.
 */
static void m_status(struct req *r)
{
    struct key *sel[STATUS_PAGE_MAX];
    const char *key, *prefix, *after;
    size_t kn, pn, an, total, shown, i;
    uint64_t limit;
    int more = 0, degraded = 0, unavailable = 0;

    if (arg_key(r, "key", 0, &key, &kn) < 0 ||
        arg_key(r, "prefix", 0, &prefix, &pn) < 0 ||
        arg_key(r, "after", 0, &after, &an) < 0 ||
        arg_uint(r, "limit", STATUS_PAGE_MAX, 1, STATUS_PAGE_MAX, &limit) < 0)
        return;
    if (key && (prefix || after)) {
        bad(r, "give 'key', or 'prefix' and 'after', not both");
        return;
    }
    if (key) {
        struct key *k = keys_find(&r->d->keys, key, kn);
        total = shown = k ? 1 : 0;
        sel[0] = k;
    } else {
        shown = keys_page(&r->d->keys, prefix, pn, after, an, sel,
                          (size_t)limit, &total, &more);
    }
    for (i = 0; i < shown; i++) {
        enum key_health h;
        core_advance(r->d, sel[i], r->now_ms);
        h = core_key_health(sel[i]);
        degraded += h != HEALTH_OPERATIONAL;
        unavailable += h == HEALTH_UNAVAILABLE;
    }
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, more && shown ? 4 : 3);
    proto_kv_str(r->pk, "health",
                 shown && (size_t)unavailable == shown ? "unhealthy"
                 : degraded                            ? "degraded"
                                                       : "healthy");
    proto_kv_u64(r->pk, "total", total);
    proto_pack_cstr(r->pk, "keys");
    msgpack_pack_array(r->pk, shown);
    for (i = 0; i < shown; i++)
        pack_key_status(r->pk, sel[i], r->now_ms);
    if (more && shown) {
        proto_pack_cstr(r->pk, "next");
        proto_pack_strn(r->pk, sel[shown - 1]->name, sel[shown - 1]->len);
    }
}

static int need_admin(struct req *r)
{
    if (r->c->admin)
        return 0;
    proto_pack_error(r->pk, r->m->msgid, "forbidden",
                     "this uid/gid is not in admin_uids/admin_gids");
    return -1;
}

/* --- durable operator actions (snapshot.c's journal; core.h) --- */

/* d->durable->wait's done: the action is on disk (err 0) or is not. */
static void answer_durable(struct caller *c, uint32_t msgid, struct key *k,
                           int err, uint64_t now_ms)
{
    struct rpc_client *rc =
        (struct rpc_client *)((char *)c - offsetof(struct rpc_client, caller));

    if (err < 0) {
        proto_pack_error(rc->pk, msgid, "not_durable",
                         "applied, but it could not be written to disk (see "
                         "health components.snapshot): it will not survive a "
                         "restart");
    } else {
        proto_pack_response_head(rc->pk, msgid);
        pack_key_status(rc->pk, k, now_ms);
    }
    rc->flush(rc);
}

/* After a force or reset: 0 when the answer waits for the journal
 * (answer_durable packs it), -1 when it goes now (no journal, a
 * notification, or the wait could not be set up: then not_durable is
 * packed here and 0 returned). */
static int wait_durable(struct req *r, struct key *k)
{
    const struct durable_ops *ops = r->d->durable;

    if (!ops || r->m->type == PROTO_NOTIFY)
        return -1;
    if (ops->wait(ops->ctx, r->c, r->m->msgid, k, answer_durable) < 0)
        answer_durable(r->c, r->m->msgid, k, -1, r->now_ms);
    return 0;
}

static void m_force(struct req *r)
{
    static const char *const states[] = {"auto", "open", "closed", "disabled",
                                         NULL};
    static const enum breaker_force map[] = {BREAKER_AUTO, BREAKER_FORCE_OPEN,
                                             BREAKER_FORCE_CLOSED,
                                             BREAKER_FORCE_DISABLED};
    const char *name, *reason;
    size_t n, rn;
    uint64_t ttl;
    int st;
    struct key *k;

    if (arg_key(r, "key", 1, &name, &n) < 0 ||
        arg_enum(r, "state", 1, 0, states, &st) < 0 ||
        arg_text(r, r->m->params, "reason", SIZE_MAX, &reason, &rn) < 0 ||
        arg_uint(r, "ttl_ms", 0, 0, MAX_TTL_MS, &ttl) < 0)
        return;
    if (reason && !utf8_valid(reason, rn)) {
        bad(r, "'reason' must be valid UTF-8");
        return;
    }
    if (need_admin(r) < 0 || get_key(r, name, n, &k) < 0)
        return;
    /* Kept as given, cut on a character boundary; escaped only where it
     * is written for people (the log, resilctl). */
    rn = reason ? utf8_cut(reason, rn, KEY_REASON_MAX) : 0;
    core_force(r->d, k, map[st], reason, rn, ttl, (uint32_t)r->c->uid,
               r->now_ms);
    if (wait_durable(r, k) == 0)
        return; /* answered by answer_durable */
    proto_pack_response_head(r->pk, r->m->msgid);
    pack_key_status(r->pk, k, r->now_ms);
}

static void m_reset(struct req *r)
{
    const char *name;
    struct key *k;
    size_t n;

    if (arg_key(r, "key", 1, &name, &n) < 0 || need_admin(r) < 0 ||
        get_key(r, name, n, &k) < 0)
        return;
    core_reset(r->d, k, (uint32_t)r->c->uid, r->now_ms);
    if (wait_durable(r, k) == 0)
        return; /* answered by answer_durable */
    proto_pack_response_head(r->pk, r->m->msgid);
    pack_key_status(r->pk, k, r->now_ms);
}

static void m_cancel(struct req *r)
{
    uint64_t msgid;
    int rc;

    if (arg_uint(r, "msgid", 0, 0, UINT32_MAX, &msgid) < 0)
        return;
    if (!lookup(r, r->m->params, "msgid")) {
        bad(r, "'msgid' is required");
        return;
    }
    rc = core_cancel(r->d, r->c, (uint32_t)msgid, r->now_ms);
    if (rc)
        r->d->m.cancels++;
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 2);
    proto_kv_bool(r->pk, "cancelled", rc != 0);
    proto_kv_bool(r->pk, "released", rc == ADMIT_CANCEL_RELEASED);
}

static void m_heartbeat(struct req *r)
{
    const char *name;
    struct key *k;
    uint64_t latency;
    size_t n;

    if (arg_key(r, "key", 1, &name, &n) < 0 ||
        arg_uint(r, "latency_ms", 0, 0, MAX_TTL_MS, &latency) < 0 ||
        get_key(r, name, n, &k) < 0)
        return;
    core_heartbeat(r->d, k, r->now_ms);
    if (lookup(r, r->m->params, "latency_ms"))
        core_add_latency(r->d, k, latency);
    core_advance(r->d, k, r->now_ms);
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 2);
    proto_kv_str(r->pk, "state", breaker_state_name(&k->br));
    proto_kv_str(r->pk, "heartbeat", "ok");
}

#define HEALTH_LIST_MAX 1000 /* entries of services / open in one answer */

/*
 * health (SPEC §3): the roll-up from the core's counts (d->tot: keys by
 * health, open breakers, critical keys up and down), with the first
 * HEALTH_LIST_MAX keys that are not operational, critical keys that are,
 * and open keys listed -- never a walk over every key, nor over every
 * unwell one (issue 14: 14-17 ms at 100k open keys).  What time changed
 * is applied first for the keys it is due for (core_advance_due), as the
 * tick would.  unhealthy: a critical key is unavailable; degraded: any key
 * is not operational; else healthy.  The lists walk d->unwell and
 * d->critical only until they hold what the counts say there is, or are
 * full: O(shown), plus the keys passed on the way (forced closed or
 * disabled keys on d->unwell, which are operational; critical keys that
 * are not, listed already).
 */
static void m_health(struct req *r)
{
    struct resild *d = r->d;
    const struct core_totals *t = &d->tot;
    struct key *serv[HEALTH_LIST_MAX], *open[HEALTH_LIST_MAX], *k;
    size_t nserv, nopen, nbad, want, ns = 0, no = 0, nbad_seen = 0, i;
    int unhealthy, degraded = 0;

    for (i = 0; i < d->ncomponents; i++)
        degraded |= !d->components[i].ok;
    core_advance_due(d, r->now_ms);
    nbad = (size_t)t->health[HEALTH_DEGRADED] + t->health[HEALTH_UNAVAILABLE];
    degraded |= nbad > 0;
    unhealthy = t->crit_down > 0;
    nserv = nbad + t->crit_up;
    nopen = t->open;
    /* The lists are gathered first and packed as found, so an answer is
     * well-formed whatever the counts say; the counts say where each walk
     * may stop. */
    want = nserv < HEALTH_LIST_MAX ? nserv : HEALTH_LIST_MAX;
    for (k = d->unwell; k && ns < want && nbad_seen < nbad; k = k->unwell_next)
        if (core_key_health(k) != HEALTH_OPERATIONAL) {
            serv[ns++] = k;
            nbad_seen++;
        }
    for (k = d->critical, i = 0; k && ns < want && i < t->crit_up;
         k = k->crit_next)
        if (core_key_health(k) == HEALTH_OPERATIONAL) { /* others: above */
            serv[ns++] = k;
            i++;
        }
    want = nopen < HEALTH_LIST_MAX ? nopen : HEALTH_LIST_MAX;
    for (k = d->unwell; k && no < want; k = k->unwell_next)
        if (breaker_is_open(&k->br))
            open[no++] = k;
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 5 + (ns < nserv));
    proto_kv_str(r->pk, "overall",
                 unhealthy  ? "unhealthy"
                 : degraded ? "degraded"
                            : "healthy");
    proto_pack_cstr(r->pk, "services");
    msgpack_pack_map(r->pk, ns);
    for (i = 0; i < ns; i++) {
        enum key_health h = core_key_health(serv[i]);
        proto_pack_strn(r->pk, serv[i]->name, serv[i]->len);
        proto_pack_cstr(r->pk, core_health_name(h));
    }
    proto_pack_cstr(r->pk, "open");
    msgpack_pack_array(r->pk, no);
    for (i = 0; i < no; i++)
        proto_pack_strn(r->pk, open[i]->name, open[i]->len);
    proto_kv_u64(r->pk, "recent_errors", core_recent_errors(d, r->now_ms));
    proto_pack_cstr(r->pk, "components");
    msgpack_pack_map(r->pk, d->ncomponents);
    for (i = 0; i < d->ncomponents; i++) {
        proto_pack_cstr(r->pk, d->components[i].name);
        msgpack_pack_map(r->pk, 2);
        proto_kv_bool(r->pk, "ok", d->components[i].ok);
        proto_kv_str(r->pk, "detail", d->components[i].detail);
    }
    if (ns < nserv)
        proto_kv_bool(r->pk, "services_truncated", 1);
}

static const enum event_topic topic_order[] = {
    TOPIC_STATE, TOPIC_ERROR, TOPIC_ALERT, TOPIC_OPERATOR, TOPIC_BOUND};

/* 'topics': a non-empty list of topic names; *mask gets them.  absent:
 * *mask = all when allow_absent. */
static int arg_topics(struct req *r, int allow_absent, uint32_t *mask)
{
    const msgpack_object *o = lookup(r, r->m->params, "topics");
    uint32_t i;
    size_t j;

    *mask = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (allow_absent) {
            *mask = TOPIC_ALL;
            return 0;
        }
        return bad(r, "'topics' is required: a list of state, error, alert, "
                      "operator, bound");
    }
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0)
        return bad(r, "'topics' must be a non-empty list of state, error, "
                      "alert, operator, bound");
    for (i = 0; i < o->via.array.size; i++) {
        const msgpack_object *t = &o->via.array.ptr[i];
        for (j = 0; j < sizeof(topic_order) / sizeof(topic_order[0]); j++)
            if (proto_str_eq(t, event_topic_name(topic_order[j])))
                break;
        if (j == sizeof(topic_order) / sizeof(topic_order[0])) {
            char esc[40] = "";
            if (t->type == MSGPACK_OBJECT_STR)
                log_escape(esc, sizeof(esc), t->via.str.ptr, t->via.str.size);
            return bad(r,
                       "'topics': unknown topic '%s' (state, error, alert, "
                       "operator, bound)",
                       esc);
        }
        *mask |= (uint32_t)topic_order[j];
    }
    return 0;
}

static void pack_subscribed(struct req *r)
{
    size_t j, n = 0;

    for (j = 0; j < sizeof(topic_order) / sizeof(topic_order[0]); j++)
        n += (r->rc->topics & topic_order[j]) != 0;
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 1);
    proto_pack_cstr(r->pk, "subscribed");
    msgpack_pack_array(r->pk, n);
    for (j = 0; j < sizeof(topic_order) / sizeof(topic_order[0]); j++)
        if (r->rc->topics & topic_order[j])
            proto_pack_cstr(r->pk, event_topic_name(topic_order[j]));
}

/* Keep rc on d->subs exactly while it has topics. */
static void set_topics(struct resild *d, struct rpc_client *rc, uint32_t topics)
{
    int was = rc->topics != 0, is = topics != 0;

    rc->topics = topics;
    if (was == is)
        return;
    if (is) {
        rc->sub_prev = NULL;
        rc->sub_next = d->subs;
        if (d->subs)
            d->subs->sub_prev = rc;
        d->subs = rc;
        d->nsubs++;
    } else {
        if (rc->sub_prev)
            rc->sub_prev->sub_next = rc->sub_next;
        else
            d->subs = rc->sub_next;
        if (rc->sub_next)
            rc->sub_next->sub_prev = rc->sub_prev;
        rc->sub_prev = rc->sub_next = NULL;
        d->nsubs--;
    }
}

static void m_subscribe(struct req *r)
{
    uint32_t mask;

    if (arg_topics(r, 0, &mask) < 0)
        return;
    set_topics(r->d, r->rc, r->rc->topics | mask);
    pack_subscribed(r);
}

static void m_unsubscribe(struct req *r)
{
    uint32_t mask;

    if (arg_topics(r, 1, &mask) < 0)
        return;
    set_topics(r->d, r->rc, r->rc->topics & ~mask);
    pack_subscribed(r);
}

/* reload (admin): the configuration file again, through the hook the
 * daemon's main installed (the RPC layer reads no files). */
static void m_reload(struct req *r)
{
    char msg[512] = "";
    size_t npol = 0;

    if (need_admin(r) < 0)
        return;
    if (!r->d->reload) {
        proto_pack_error(r->pk, r->m->msgid, "bad_request",
                         "reload: not available in this daemon");
        return;
    }
    if (r->d->reload(r->d->reload_ctx, (uint32_t)r->c->uid, msg, sizeof(msg),
                     &npol) < 0) {
        char text[560];
        snprintf(text, sizeof(text),
                 "reload: %s; the running configuration stays", msg);
        r->d->m.bounds[BOUND_BAD_REQUEST]++;
        proto_pack_error(r->pk, r->m->msgid, "bad_request", text);
        return;
    }
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 3);
    proto_kv_bool(r->pk, "reloaded", 1);
    proto_kv_u64(r->pk, "policies", npol);
    proto_kv_str(r->pk, "changes", msg);
}

static void m_metrics(struct req *r)
{
    size_t len = 0;
    int rc;
    const char *text = metrics_page(r->d, r->now_ms, &len, &rc);

    /* An incomplete page is an error, never served. */
    if (!text) {
        proto_pack_error(r->pk, r->m->msgid, "busy", prom_strerror(rc));
        return;
    }
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 1);
    proto_pack_cstr(r->pk, "text");
    proto_pack_strn(r->pk, text, len);
}

/* --- errors (SPEC §6): analytics.h computes, this packs --- */

/* analytics_breaker_fn: the key's breaker if closed and judged by a
 * failure rate (ids are the daemon's struct key). */
static int errors_breaker(void *ctx, const void *id, double *rate_pct,
                          double *threshold_pct)
{
    struct req *r = ctx;
    struct key *k = (struct key *)id;

    core_advance(r->d, k, r->now_ms);
    if (breaker_visible_state(&k->br) != BREAKER_VIS_CLOSED ||
        !k->policy->breaker.failure_rate_threshold)
        return 0;
    *rate_pct = breaker_failure_rate(&k->br, r->now_ms);
    *threshold_pct = k->policy->breaker.failure_rate_threshold;
    return 1;
}

static uint64_t wall_ms(void);

static void pack_counts(msgpack_packer *pk, const char *name,
                        const struct an_count *c, size_t n)
{
    size_t i;

    proto_pack_cstr(pk, name);
    msgpack_pack_map(pk, n);
    for (i = 0; i < n; i++)
        proto_kv_u64(pk, c[i].name, c[i].n);
}

static void pack_recent(msgpack_packer *pk, const struct an_recent *e,
                        uint64_t now_ms, uint64_t wall)
{
    uint64_t age = now_ms > e->at_ms ? now_ms - e->at_ms : 0;

    msgpack_pack_map(pk, 10);
    proto_kv_u64(pk, "ts", wall > age ? wall - age : 0);
    proto_kv_str(pk, "key", e->key);
    proto_kv_str(pk, "class", e->cls);
    proto_kv_str(pk, "severity", config_severity_name(e->severity));
    proto_kv_bool(pk, "transient", e->transient);
    proto_kv_str(pk, "source", event_source_name(e->source));
    proto_kv_str(pk, "outcome", event_outcome_name(e->kind));
    proto_pack_cstr(pk, "message");
    proto_pack_strn(pk, e->message, e->message_len);
    proto_pack_cstr(pk, "correlation_id");
    proto_pack_strn(pk, e->cid, e->cid_len);
    proto_pack_cstr(pk, "context");
    if (e->context_len) /* one whole msgpack map, as reported */
        pk->callback(pk->data, (const char *)e->context, e->context_len);
    else
        msgpack_pack_nil(pk);
}

static void m_errors(struct req *r)
{
    static const char *const sevs[] = {"low", "medium", "high", "critical",
                                       NULL};
    static const char *const sev_names[] = {"low", "medium", "high",
                                            "critical"};
    struct analytics_query q = {0};
    struct analytics_result *res;
    uint64_t window_s, top, wall;
    size_t i;

    if (arg_key(r, "key", 0, &q.key, &q.key_len) < 0 ||
        arg_key(r, "prefix", 0, &q.prefix, &q.prefix_len) < 0 ||
        arg_uint(r, "window_s", 3600, 1, ANALYTICS_WINDOW_MAX_S, &window_s) <
            0 ||
        arg_enum(r, "min_severity", 0, 0, sevs, &q.min_severity) < 0 ||
        arg_uint(r, "top", 10, 1, ANALYTICS_TOP_MAX, &top) < 0)
        return;
    if (q.key && q.prefix) {
        bad(r, "give 'key' or 'prefix', not both");
        return;
    }
    q.window_s = window_s;
    q.top = (uint32_t)top;
    /* ~20 KiB: on the heap rather than the loop's stack, per call. */
    if (!(res = calloc(1, sizeof(*res)))) {
        proto_pack_error(r->pk, r->m->msgid, "busy", "out of memory");
        return;
    }
    res->window_s = window_s;
    if (r->d->analytics)
        analytics_query(r->d->analytics, &q, r->now_ms, errors_breaker, r, res);
    wall = wall_ms();
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 14); /* every entry below, always */
    proto_kv_u64(r->pk, "window_s", res->window_s);
    proto_kv_u64(r->pk, "total", res->total);
    proto_kv_f64(r->pk, "rate_per_min", res->rate_per_min);
    pack_counts(r->pk, "by_class", res->by_class, res->nby_class);
    pack_counts(r->pk, "by_key", res->by_key, res->nby_key);
    proto_kv_u64(r->pk, "keys_total", res->keys_total);
    proto_pack_cstr(r->pk, "by_severity");
    msgpack_pack_map(r->pk, 4);
    for (i = 0; i < 4; i++)
        proto_kv_u64(r->pk, sev_names[i], res->by_severity[i]);
    proto_pack_cstr(r->pk, "top");
    msgpack_pack_array(r->pk, res->ntop);
    for (i = 0; i < res->ntop; i++) {
        msgpack_pack_map(r->pk, 4);
        proto_kv_str(r->pk, "key", res->top[i].key);
        proto_kv_str(r->pk, "class", res->top[i].cls);
        proto_kv_str(r->pk, "severity",
                     config_severity_name(res->top[i].severity));
        proto_kv_u64(r->pk, "count", res->top[i].n);
    }
    proto_pack_cstr(r->pk, "recent");
    msgpack_pack_array(r->pk, res->nrecent);
    for (i = 0; i < res->nrecent; i++)
        pack_recent(r->pk, res->recent[i], r->now_ms, wall);
    proto_pack_cstr(r->pk, "trends");
    msgpack_pack_array(r->pk, res->ntop);
    for (i = 0; i < res->ntop; i++) {
        msgpack_pack_map(r->pk, 5);
        proto_kv_str(r->pk, "key", res->top[i].key);
        proto_kv_str(r->pk, "class", res->top[i].cls);
        proto_kv_str(r->pk, "direction",
                     analytics_direction_name(res->top[i].fit.dir));
        proto_kv_f64(r->pk, "strength", res->top[i].fit.r2);
        proto_kv_f64(r->pk, "slope_per_min", res->top[i].slope_per_min);
    }
    proto_pack_cstr(r->pk, "correlations");
    msgpack_pack_array(r->pk, res->ncorr);
    for (i = 0; i < res->ncorr; i++) {
        msgpack_pack_map(r->pk, 4);
        proto_kv_str(r->pk, "leader", res->corr[i].leader);
        proto_kv_str(r->pk, "follower", res->corr[i].follower);
        proto_kv_u64(r->pk, "lag_s", (uint64_t)res->corr[i].lag_s);
        proto_kv_f64(r->pk, "r", res->corr[i].r);
    }
    proto_pack_cstr(r->pk, "predictions");
    msgpack_pack_array(r->pk, res->npred);
    for (i = 0; i < res->npred; i++) {
        msgpack_pack_map(r->pk, 4);
        proto_kv_str(r->pk, "key", res->pred[i].key);
        proto_kv_f64(r->pk, "failure_rate", res->pred[i].rate_pct);
        proto_kv_f64(r->pk, "threshold", res->pred[i].threshold_pct);
        proto_kv_u64(r->pk, "eta_s", res->pred[i].eta_s);
    }
    proto_kv_u64(r->pk, "series", res->series);
    proto_kv_u64(r->pk, "evicted", res->evicted);
    free(res);
}

static const char *const errors_args[] = {"key",          "prefix", "window_s",
                                          "min_severity", "top",    NULL};

/* --- end errors --- */

/*
 * One entry per method: its handler, the named arguments it takes (any
 * other is bad_request), and whether it may come as a notification.  A
 * notification of acquire is refused: its grant would reach nobody and
 * expire as a phantom failure.  So are the reads (ping, status, health,
 * metrics): their answer is their only effect, and a stream of them with
 * no answer to slow the sender would only burn the loop.  So are ping and
 * status, whose only effect is their answer: a status notification would cost a
 * page of work (up to 1000 keys) for 10 bytes, and with no output to pace its
 * sender, 64 KiB of them stalled the loop for seconds.
 */
static const char *const no_args[] = {NULL};
static const char *const acquire_args[] = {"key", "cost", "wait_ms", "priority",
                                           NULL};
static const char *const report_args[] = {
    "key",     "permit",     "outcome",        "latency_ms", "error", "limit",
    "attempt", "idempotent", "correlation_id", "context",    NULL};
static const char *const cancel_args[] = {"msgid", NULL};
static const char *const status_args[] = {"key", "prefix", "limit", "after",
                                          NULL};
static const char *const force_args[] = {"key", "state", "reason", "ttl_ms",
                                         NULL};
static const char *const key_only[] = {"key", NULL};
static const char *const heartbeat_args[] = {"key", "latency_ms", NULL};
static const char *const topics_args[] = {"topics", NULL};

static const struct method {
    const char *name;
    void (*fn)(struct req *r);
    const char *const *args;
    int notify_ok;
} methods[] = {
    {"ping", m_ping, no_args, 0},
    {"acquire", m_acquire, acquire_args, 0},
    {"report", m_report, report_args, 1},
    {"cancel", m_cancel, cancel_args, 1},
    {"heartbeat", m_heartbeat, heartbeat_args, 1},
    {"status", m_status, status_args, 0},
    {"health", m_health, no_args, 0},
    {"force", m_force, force_args, 1},
    {"reset", m_reset, key_only, 1},
    {"subscribe", m_subscribe, topics_args, 1},
    {"unsubscribe", m_unsubscribe, topics_args, 1},
    {"metrics", m_metrics, no_args, 0},
    {"reload", m_reload, no_args, 1},
    {"errors", m_errors, errors_args, 0},
};

void methods_dispatch(struct resild *d, struct rpc_client *rc,
                      const struct proto_msg *m, msgpack_packer *pk,
                      uint64_t now_ms)
{
    struct req r = {d, rc, &rc->caller, m, pk, now_ms, NULL};
    const struct method *f = NULL;
    char esc[64];
    size_t i;

    d->m.requests++;
    for (i = 0; !f && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (m->method_len && methods[i].name[0] == m->method[0] &&
            strlen(methods[i].name) == m->method_len &&
            memcmp(methods[i].name, m->method, m->method_len) == 0)
            f = &methods[i];
    if (m->type == PROTO_NOTIFY && (!f || !f->notify_ok)) {
        /* Greetings such as nvim_set_client_info: nothing to answer. */
        d->m.notifications_ignored++;
        return;
    }
    if (!f) {
        snprintf(esc, sizeof(esc), "unknown method '%s'",
                 log_escape((char[40]){0}, 40, m->method, m->method_len));
        proto_pack_error(pk, m->msgid, "no_such_method", esc);
        return;
    }
    r.name = f->name;
    if (m->params_positional)
        bad(&r, "params must be [] or one map of named arguments, "
                "[{\"key\": ...}]; positional arguments are not accepted");
    else if (known_args(&r, m->params, "", f->args, r.vals) == 0) {
        r.allowed = f->args;
        f->fn(&r);
    }
}

/* caller->answer: a parked request was decided; pack its answer into the
 * connection's output and let the server schedule the write. */
static void answer_parked(struct caller *c, uint32_t msgid, const struct key *k,
                          const struct admit_result *res, int err)
{
    struct rpc_client *rc =
        (struct rpc_client *)((char *)c - offsetof(struct rpc_client, caller));

    if (!res)
        proto_pack_error(rc->pk, msgid, "busy",
                         err == RD_ENOMEM ? "out of memory"
                                          : "max_permits outstanding; report "
                                            "or release some");
    else {
        proto_pack_response_head(rc->pk, msgid);
        pack_result(rc->pk, k, res);
    }
    rc->flush(rc);
}

void methods_client_init(struct rpc_client *rc, msgpack_packer *pk,
                         void (*flush)(struct rpc_client *rc))
{
    memset(rc, 0, sizeof(*rc));
    rc->caller.answer = answer_parked;
    rc->pk = pk;
    rc->flush = flush;
}

void methods_client_gone(struct resild *d, struct rpc_client *rc,
                         uint64_t now_ms)
{
    set_topics(d, rc, 0);
    if (d->durable) /* answers waiting for the journal go nowhere now */
        d->durable->forget(d->durable->ctx, &rc->caller);
    core_caller_gone(d, &rc->caller, now_ms);
}

/* --- the subscriber sink --- */

/* Peer text as a str the subscriber's decoder will take: valid UTF-8 as
 * is, anything else escaped. */
static void pack_text(msgpack_packer *pk, const char *s, size_t n)
{
    char esc[4 * OUTCOME_MESSAGE_MAX + 4];

    if (!s)
        n = 0;
    if (n == 0 || utf8_valid(s, n)) {
        proto_pack_strn(pk, s ? s : "", n);
        return;
    }
    log_escape(esc, sizeof(esc), s, n);
    proto_pack_cstr(pk, esc);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* "origin": the daemon a shared change came from, "local" for ours. */
static void pack_origin(msgpack_packer *pk, const struct event *ev)
{
    proto_pack_cstr(pk, "origin");
    if (ev->origin)
        pack_text(pk, ev->origin, strlen(ev->origin)); /* a peer's text */
    else
        proto_pack_cstr(pk, "local");
}

/* [2, "event", [{topic, type, ts, key?, ...}]] for one event. */
static void pack_event(msgpack_packer *pk, const struct event *ev, uint64_t ts)
{
    size_t n = 3 + (ev->key != NULL);
    const struct outcome *o = ev->u.outcome;

    switch (ev->type) {
    case EV_TRANSITION:
        n += 4;
        break;
    case EV_OUTCOME:
        n += 9 + (o->context_len > 0);
        break;
    case EV_FORCE:
        n += 5;
        break;
    case EV_RESET:
    case EV_BOUND_HIT:
        n += 2;
        break;
    case EV_VENUE_RESYNC:
    case EV_HEARTBEAT_LOST:
    case EV_HEARTBEAT_RESTORED:
        n += 1;
        break;
    case EV_VENUE_PAUSE:
        n += 3;
        break;
    case EV_RELOAD:
        n += 5;
        break;
    case EV_ALERT:
        n += 5 + (ev->u.alert.eta_s > 0);
        break;
    }
    proto_pack_notify_head(pk, "event");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, n);
    proto_kv_str(pk, "topic", event_topic_name(event_topic_of(ev->type)));
    proto_kv_str(pk, "type", event_type_name(ev->type));
    proto_kv_u64(pk, "ts", ts);
    if (ev->key) {
        proto_pack_cstr(pk, "key");
        proto_pack_strn(pk, ev->key->name, ev->key->len);
    }
    switch (ev->type) {
    case EV_TRANSITION:
        proto_kv_str(pk, "from", breaker_visible_name(ev->u.transition.from));
        proto_kv_str(pk, "to", breaker_visible_name(ev->u.transition.to));
        proto_kv_str(pk, "cause",
                     breaker_transition_cause_name(ev->u.transition.cause));
        pack_origin(pk, ev);
        break;
    case EV_OUTCOME:
        proto_kv_str(pk, "outcome", event_outcome_name(o->kind));
        proto_kv_str(pk, "class", o->cls);
        proto_kv_str(pk, "severity", config_severity_name(o->severity));
        proto_kv_bool(pk, "transient", o->transient);
        proto_pack_cstr(pk, "message");
        pack_text(pk, o->message, o->message_len);
        proto_pack_cstr(pk, "correlation_id");
        pack_text(pk, o->correlation_id, o->correlation_id_len);
        proto_kv_str(pk, "source", event_source_name(o->source));
        proto_pack_cstr(pk, "latency_ms");
        if (o->latency_ms >= 0)
            msgpack_pack_uint64(pk, (uint64_t)o->latency_ms);
        else
            msgpack_pack_nil(pk);
        proto_kv_bool(pk, "stale", o->stale);
        if (o->context_len) {
            /* One whole msgpack map, packed from the request (bounded). */
            proto_pack_cstr(pk, "context");
            pk->callback(pk->data, o->context, o->context_len);
        }
        break;
    case EV_FORCE:
        proto_kv_str(pk, "state", ev->u.force.state);
        proto_kv_str(pk, "reason", ev->u.force.reason);
        proto_kv_u64(pk, "ttl_ms", ev->u.force.ttl_ms);
        proto_kv_u64(pk, "uid", ev->u.force.uid);
        pack_origin(pk, ev);
        break;
    case EV_RESET:
        proto_kv_u64(pk, "uid", ev->u.reset.uid);
        pack_origin(pk, ev);
        break;
    case EV_VENUE_PAUSE:
        proto_kv_u64(pk, "paused_ms", ev->u.venue_pause.paused_ms);
        proto_pack_cstr(pk, "reported_on");
        proto_pack_strn(pk, ev->u.venue_pause.reported_on->name,
                        ev->u.venue_pause.reported_on->len);
        pack_origin(pk, ev);
        break;
    case EV_VENUE_RESYNC:
        proto_kv_u64(pk, "remaining", ev->u.venue_resync.remaining);
        break;
    case EV_HEARTBEAT_LOST:
    case EV_HEARTBEAT_RESTORED:
        proto_kv_u64(pk, "silent_ms", ev->u.heartbeat.silent_ms);
        break;
    case EV_BOUND_HIT:
        proto_kv_str(pk, "bound", ev->u.bound.bound);
        proto_kv_str(pk, "detail", ev->u.bound.detail);
        break;
    case EV_RELOAD:
        proto_kv_u64(pk, "uid", ev->u.reload.uid);
        proto_kv_u64(pk, "policies", ev->u.reload.policies);
        proto_kv_u64(pk, "added", ev->u.reload.added);
        proto_kv_u64(pk, "removed", ev->u.reload.removed);
        proto_kv_u64(pk, "changed", ev->u.reload.changed);
        break;
    case EV_ALERT:
        proto_kv_str(pk, "kind", ev->u.alert.kind);
        proto_kv_str(pk, "rule", ev->u.alert.rule);
        proto_kv_f64(pk, "rate_per_min", ev->u.alert.rate_per_min);
        proto_kv_str(pk, "detail", ev->u.alert.detail);
        pack_origin(pk, ev);
        if (ev->u.alert.eta_s > 0)
            proto_kv_u64(pk, "eta_s", ev->u.alert.eta_s);
        break;
    }
}

/*
 * Each subscriber whose topics take ev gets it packed into its output.  A
 * subscriber over the output bound is marked to be dropped (the server
 * closes it once this walk is over) and gets nothing more: a subscriber
 * that does not read never slows a decision or grows without bound.
 */
static void subscriber_sink(void *ctx, const struct event *ev)
{
    struct resild *d = ctx;
    uint32_t topic = (uint32_t)event_topic_of(ev->type);
    struct rpc_client *rc;
    uint64_t ts = 0;

    if (!d->subs)
        return;
    if (ev->type == EV_OUTCOME && ev->u.outcome->kind != OUT_FAILURE &&
        ev->u.outcome->kind != OUT_UNKNOWN)
        return; /* the error topic carries failures and unknowns only */
    for (rc = d->subs; rc; rc = rc->sub_next) {
        if (!(rc->topics & topic) || rc->drop)
            continue;
        if (rc->queued && rc->queued(rc) > d->cfg.max_output_bytes) {
            rc->drop = 1;
            d->m.bounds[BOUND_SUBSCRIBER]++;
            rc->flush(rc); /* the server closes it there */
            continue;
        }
        if (!ts)
            ts = wall_ms();
        pack_event(rc->pk, ev, ts);
        rc->flush(rc);
    }
}

int methods_attach(struct resild *d)
{
    return core_add_sink(d, subscriber_sink, d);
}
