/*
 * methods.c - RPC method handlers (see methods.h).
 *
 * Each handler validates its named arguments first and answers bad_request
 * naming the argument before it touches any state, so a bad request changes
 * nothing.  Handlers pack their result straight into the connection's output
 * buffer: nothing here allocates per request except creating a new key.
 */
#include "methods.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "admit.h"
#include "error.h"
#include "log.h"

#define MAX_COST 1000000000ULL /* a cost above this is surely a bug */
#define MAX_WAIT_MS 3600000ULL /* parking longer than an hour: no */
#define MAX_TTL_MS (86400000ULL * 30)
#define CLASS_MAX 64 /* bytes of an error class */

struct req {
    struct resild *d;
    struct caller *c;
    const struct proto_msg *m;
    msgpack_packer *pk;
    uint64_t now_ms;
    const char *name; /* method name, NUL-terminated, for messages */
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
    r->d->m.bad_requests++;
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
static int known_args(struct req *r, const msgpack_object *map,
                      const char *where, const char *const *allowed)
{
    uint32_t i, seen = 0;
    size_t j;

    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return 0;
    for (i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        char esc[48];
        if (k->type != MSGPACK_OBJECT_STR)
            return bad(r, "argument names must be strings");
        for (j = 0; allowed[j]; j++)
            if (proto_str_eq(k, allowed[j]))
                break;
        if (!allowed[j])
            return bad(
                r, "unknown argument '%s%s'", where,
                log_escape(esc, sizeof(esc), k->via.str.ptr, k->via.str.size));
        if (seen & (1u << j))
            return bad(r, "argument '%s%s' given twice", where, allowed[j]);
        seen |= 1u << j;
    }
    return 0;
}

static int arg_key(struct req *r, const char *name, int required,
                   const char **s, size_t *n)
{
    const msgpack_object *o = proto_map_get(r->m->params, name);

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
    const msgpack_object *o = proto_map_get(r->m->params, name);

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
    const msgpack_object *o = proto_map_get(r->m->params, name);
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
    const msgpack_object *o = proto_map_get(map, name);
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
    const msgpack_object *o = proto_map_get(map, name);

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
    const msgpack_object *o = proto_map_get(map, name);

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
        r->d->m.keys_full++;
        proto_pack_error(r->pk, r->m->msgid, "too_many_keys",
                         "max_keys reached; no new key can be created");
        return -1;
    }
    if (rc == RD_EINVAL)
        return bad(r, "bad key '%s'", log_escape(esc, sizeof(esc), name, n));
    proto_pack_error(r->pk, r->m->msgid, "busy", "out of memory");
    return -1;
}

/* keys_get plus admission set-up (ancestor limiters); errors packed. */
static int get_key(struct req *r, const char *name, size_t n, struct key **k)
{
    int rc = keys_get(&r->d->keys, name, n, &r->d->cfg, r->now_ms, k);
    char esc[64];

    if (rc == 0 && (rc = admit_prepare(r->d, *k, r->now_ms)) == RD_EDEEP)
        return bad(r,
                   "key '%s' lies below more than %d keys with rate "
                   "limiters; not every limit could be applied",
                   log_escape(esc, sizeof(esc), name, n), KEY_MAX_ANCESTORS);
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

/* --- status maps --- */

static const char *key_health(const struct key *k)
{
    if (breaker_is_open(&k->br))
        return "unavailable";
    if (k->br.force == BREAKER_AUTO && k->br.state == BREAKER_HALF_OPEN)
        return "degraded";
    return "operational";
}

static void pack_key_status(msgpack_packer *pk, struct key *k, uint64_t now)
{
    uint64_t p50, p99;
    const struct breaker *b = &k->br;
    int forced, n;

    breaker_advance(&k->br, &k->policy->breaker, now);
    forced = b->force != BREAKER_AUTO;
    n = 15 + (forced ? 2 : 0) + (k->policy->shadow ? 1 : 0) +
        admit_status_entries(k);
    msgpack_pack_map(pk, (size_t)n);
    proto_pack_cstr(pk, "key");
    proto_pack_strn(pk, k->name, k->len);
    proto_kv_str(pk, "policy", k->policy->pattern);
    proto_kv_str(pk, "state", breaker_state_name(b));
    proto_kv_str(pk, "health", key_health(k));
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
        proto_kv_u64(pk, "shadow_denied", k->shadow_denied);
    admit_pack_status(pk, k, now);
    if (forced) {
        proto_kv_str(pk, "force_reason", k->force_reason);
        proto_kv_u64(pk, "force_ttl_ms",
                     b->force_until_ms > now ? b->force_until_ms - now : 0);
    }
}

/* Log a visible state change of k (rare; one line each). */
static void note_transition(struct key *k, const char *before, const char *why)
{
    const char *after = breaker_state_name(&k->br);

    if (strcmp(before, after) != 0)
        log_msg(LOG_INFO, "key %s: %s -> %s (%s)", k->name, before, after, why);
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
    const char *name, *before;
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
    before = breaker_state_name(&k->br);
    rc = admit_acquire(r->d, r->c, k, cost, critical, wait_ms, r->m->msgid,
                       r->now_ms, &res, &culprit);
    note_transition(k, before,
                    !strcmp(before, "open") ? "open time over"
                                            : "operator force expired");
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
        r->d->m.permits_full++;
        proto_pack_error(r->pk, r->m->msgid, "busy",
                         rc == RD_ENOMEM ? "out of memory"
                                         : "max_permits outstanding; report "
                                           "or release some");
        return;
    }
    if (res.parked)
        return; /* answered when it passes or wait_ms runs out */
    proto_pack_response_head(r->pk, r->m->msgid);
    admit_pack_result(r->pk, k, &res);
}

/* 1 if cls is "rate_limited" or below it. */
static int is_rate_limited(const char *cls)
{
    return cls && strncmp(cls, "rate_limited", 12) == 0 &&
           (cls[12] == '\0' || cls[12] == '.');
}

static void m_report(struct req *r)
{
    static const char *const outcomes[] = {"success", "failure", "ignore",
                                           "unknown", NULL};
    static const char *const sevs[] = {"low", "medium", "high", "critical",
                                       NULL};
    const msgpack_object *err = proto_map_get(r->m->params, "error");
    const msgpack_object *limit = proto_map_get(r->m->params, "limit");
    const msgpack_object *lat = proto_map_get(r->m->params, "latency_ms");
    const msgpack_object *ctx = proto_map_get(r->m->params, "context");
    const char *name, *cls = NULL, *msg, *cid, *before;
    size_t n, cls_n = 0, msg_n, cid_n;
    uint64_t permit_id, latency, attempt, venue_wait = 0, remaining = 0;
    int outcome, idempotent, transient, severity, stale = 1, has_latency;
    int has_remaining = 0, failed;
    char class_z[CLASS_MAX + 1] = "";
    struct retry_advice adv;
    struct permit *p = NULL;
    enum breaker_outcome bo;
    struct key *k;

    /* Validate everything before touching any state. */
    if (arg_key(r, "key", 1, &name, &n) < 0 ||
        arg_uint(r, "permit", 0, 0, UINT64_MAX, &permit_id) < 0 ||
        arg_enum(r, "outcome", 1, 0, outcomes, &outcome) < 0 ||
        arg_uint(r, "latency_ms", 0, 0, MAX_TTL_MS, &latency) < 0 ||
        arg_uint(r, "attempt", 1, 1, 1000000, &attempt) < 0 ||
        arg_bool(r, r->m->params, "idempotent", 1, &idempotent) < 0 ||
        arg_text(r, r->m->params, "correlation_id", 128, &cid, &cid_n) < 0)
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
        const msgpack_object *ra = proto_map_get(err, "retry_after_ms");
        if (known_args(r, err, "error.", err_args) < 0 ||
            arg_text(r, err, "class", CLASS_MAX + 1, &cls, &cls_n) < 0 ||
            arg_text(r, err, "message", 1024, &msg, &msg_n) < 0)
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
        const msgpack_object *rem = proto_map_get(limit, "remaining");
        const msgpack_object *reset = proto_map_get(limit, "reset_ms");
        if (limit->type != MSGPACK_OBJECT_MAP || !rem ||
            rem->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            bad(r, "'limit' must be a map with an integer 'remaining'");
            return;
        }
        if (known_args(r, limit, "limit.", limit_args) < 0)
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
    if (permit_id) {
        p = permits_find(&r->d->permits, permit_id);
        if (p && !permits_owned(p, &r->c->permits)) {
            /* Another connection's permit: only its holder may end it.
             * Nothing changes, nothing is revealed. */
            const struct key *named = keys_find(&r->d->keys, name, n);
            r->d->m.reports_foreign++;
            proto_pack_response_head(r->pk, r->m->msgid);
            msgpack_pack_map(r->pk, 2);
            proto_kv_str(r->pk, "state",
                         named ? breaker_state_name(&named->br) : "closed");
            proto_kv_bool(r->pk, "stale", 1);
            return;
        }
        if (p && (p->key->len != n || memcmp(p->key->name, name, n) != 0)) {
            bad(r, "'permit' %llu was granted for another key",
                (unsigned long long)permit_id);
            return;
        }
    }
    if (p)
        k = p->key;
    else if (get_key(r, name, n, &k) < 0)
        return;

    failed = outcome == 1 || outcome == 3;
    if (!failed)
        bo = outcome == 0 ? BREAKER_SUCCESS : BREAKER_IGNORE;
    else /* failure or unknown: the policy's record/ignore lists decide */
        bo = config_failure_kind(k->policy, cls ? class_z : NULL);
    if (has_latency)
        keys_add_latency(k, latency);
    before = breaker_state_name(&k->br);
    if (p) {
        stale = breaker_record(&k->br, &k->policy->breaker, r->now_ms,
                               p->generation, p->probe, bo,
                               has_latency ? (int64_t)latency : -1) ==
                BREAKER_REC_STALE;
        admit_permit_done(r->d, p, r->now_ms, 1, 0);
    } else if (!permit_id) {
        /* No permit: the report is about now, so never stale. */
        breaker_advance(&k->br, &k->policy->breaker, r->now_ms);
        stale = breaker_record(&k->br, &k->policy->breaker, r->now_ms,
                               k->br.generation, 0, bo,
                               has_latency ? (int64_t)latency : -1) ==
                BREAKER_REC_STALE;
    }
    /* else: a permit already reported, expired or never granted counts
     * once, the first time; this report drives nothing and says stale. */
    note_transition(k, before,
                    breaker_is_open(&k->br) ? breaker_cause_name(k->br.cause)
                                            : "probe successes");
    /* Venue feedback reaches every client of the limiter at once. */
    if (failed && is_rate_limited(class_z))
        admit_venue_pause(r->d, k, r->now_ms, venue_wait);
    if (has_remaining)
        admit_venue_sync(r->d, k, r->now_ms, remaining);
    if (bo != BREAKER_IGNORE)
        retry_budget_call(&r->d->budget, r->now_ms);

    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, failed ? 4 : 2);
    proto_kv_str(r->pk, "state", breaker_state_name(&k->br));
    proto_kv_bool(r->pk, "stale", stale);
    if (!failed)
        return;
    proto_pack_cstr(r->pk, "classification");
    msgpack_pack_map(r->pk, 2);
    proto_kv_str(r->pk, "severity", config_severity_name(severity));
    proto_kv_bool(r->pk, "transient", transient);
    {
        /* Never advise a retry sooner than the key could pass: the breaker
         * and a venue pause both count. */
        uint64_t wait = breaker_retry_after(&k->br, r->now_ms);
        uint64_t lw = k->policy->has_limiter || !k->nanc
                          ? limiter_paused_ms(&k->lim, r->now_ms)
                          : limiter_paused_ms(&k->anc[0]->lim, r->now_ms);
        if (lw > wait)
            wait = lw;
        retry_advise(&k->policy->retry, &r->d->budget, r->now_ms,
                     (uint32_t)attempt, transient, outcome == 3 && !idempotent,
                     wait, breaker_is_open(&k->br), &k->retry_prev_ms, &k->rng,
                     &adv);
    }
    proto_pack_cstr(r->pk, "retry");
    msgpack_pack_map(r->pk, 3);
    proto_kv_bool(r->pk, "retry", adv.retry);
    proto_kv_u64(r->pk, "delay_ms", adv.delay_ms);
    proto_kv_str(r->pk, "reason", adv.reason);
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
        const char *h;
        breaker_advance(&sel[i]->br, &sel[i]->policy->breaker, r->now_ms);
        h = key_health(sel[i]);
        degraded += strcmp(h, "operational") != 0;
        unavailable += strcmp(h, "unavailable") == 0;
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

static void m_force(struct req *r)
{
    static const char *const states[] = {"auto", "open", "closed", "disabled",
                                         NULL};
    static const enum breaker_force map[] = {BREAKER_AUTO, BREAKER_FORCE_OPEN,
                                             BREAKER_FORCE_CLOSED,
                                             BREAKER_FORCE_DISABLED};
    const char *name, *reason, *before;
    size_t n, rn;
    uint64_t ttl;
    int st;
    struct key *k;
    char esc[4 * KEY_REASON_MAX + 4];

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
    before = breaker_state_name(&k->br);
    breaker_force(&k->br, &k->policy->breaker, r->now_ms, map[st], ttl);
    r->d->wake_dirty = 1; /* parked requests see the new state */
    /* Kept as given, cut on a character boundary; escaped only where it
     * is written for people (the log line below, resilctl). */
    rn = reason ? utf8_cut(reason, rn, KEY_REASON_MAX) : 0;
    memcpy(k->force_reason, reason ? reason : "", rn);
    k->force_reason[rn] = '\0';
    log_escape(esc, sizeof(esc), k->force_reason, rn);
    log_msg(LOG_INFO,
            "key %s: forced %s by uid %u (%s -> %s, ttl %llu ms, "
            "reason \"%s\")",
            k->name, states[st], (unsigned)r->c->uid, before,
            breaker_state_name(&k->br), (unsigned long long)ttl, esc);
    proto_pack_response_head(r->pk, r->m->msgid);
    pack_key_status(r->pk, k, r->now_ms);
}

static void m_reset(struct req *r)
{
    const char *name, *before;
    struct key *k;
    uint64_t paused;
    size_t n;

    if (arg_key(r, "key", 1, &name, &n) < 0 || need_admin(r) < 0 ||
        get_key(r, name, n, &k) < 0)
        return;
    before = breaker_state_name(&k->br);
    breaker_reset(&k->br, r->now_ms);
    paused = limiter_paused_ms(&k->lim, r->now_ms);
    limiter_unpause(&k->lim); /* a mistaken 429 must not block for hours */
    r->d->wake_dirty = 1;
    k->force_reason[0] = '\0';
    log_msg(LOG_INFO, "key %s: reset by uid %u (%s -> closed%s)", k->name,
            (unsigned)r->c->uid, before, paused ? "; venue pause cleared" : "");
    proto_pack_response_head(r->pk, r->m->msgid);
    pack_key_status(r->pk, k, r->now_ms);
}

static void m_cancel(struct req *r)
{
    uint64_t msgid;
    int rc;

    if (arg_uint(r, "msgid", 0, 0, UINT32_MAX, &msgid) < 0)
        return;
    if (!proto_map_get(r->m->params, "msgid")) {
        bad(r, "'msgid' is required");
        return;
    }
    rc = admit_cancel(r->d, r->c, (uint32_t)msgid, r->now_ms);
    if (rc)
        r->d->m.cancels++;
    proto_pack_response_head(r->pk, r->m->msgid);
    msgpack_pack_map(r->pk, 2);
    proto_kv_bool(r->pk, "cancelled", rc != 0);
    proto_kv_bool(r->pk, "released", rc == ADMIT_CANCEL_RELEASED);
}

/*
 * One entry per method: its handler, the named arguments it takes (any
 * other is bad_request), and whether it may come as a notification.  A
 * notification of acquire is refused: its grant would reach nobody and
 * expire as a phantom failure.  So are ping and status, whose only effect
 * is their answer: a status notification would cost a page of work (up to
 * 1000 keys) for 10 bytes, and with no output to pace its sender, 64 KiB
 * of them stalled the loop for seconds.
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
static const char *const reset_args[] = {"key", NULL};

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
    {"status", m_status, status_args, 0},
    {"force", m_force, force_args, 1},
    {"reset", m_reset, reset_args, 1},
};

void methods_dispatch(struct resild *d, struct caller *c,
                      const struct proto_msg *m, msgpack_packer *pk,
                      uint64_t now_ms)
{
    struct req r = {d, c, m, pk, now_ms, NULL};
    const struct method *f = NULL;
    char esc[64];
    size_t i;

    d->m.requests++;
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i].name) == m->method_len &&
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
    else if (known_args(&r, m->params, "", f->args) == 0)
        f->fn(&r);
}

/* Give back one permit that ended without a report. */
static void end_permit(struct resild *d, struct permit *p, uint64_t now_ms,
                       int count_failure, const char *why)
{
    struct key *k = p->key;
    const char *before = breaker_state_name(&k->br);

    admit_permit_done(d, p, now_ms, 0, count_failure);
    note_transition(k, before, why);
}

void methods_caller_gone(struct resild *d, struct caller *c, uint64_t now_ms)
{
    /* A caller that held nothing frees nothing anyone waits for: waking
     * would walk every parked request of every key, per close, and make a
     * connect/close flood cost O(parked) per connection. */
    if (!c->parked && !c->permits)
        return;
    admit_caller_gone(d, c);
    while (c->permits) {
        struct permit *p = c->permits;
        if (p->probe)
            d->m.probes_lost++;
        end_permit(d, p, now_ms, p->probe,
                   "half-open probe lost with its "
                   "connection");
    }
    admit_wake(d, now_ms);
}

void methods_cron(struct resild *d, uint64_t now_ms)
{
    struct permit *p;

    /* Earliest expiry first: O(log n) per expired permit, nothing for the
     * rest. */
    while ((p = permits_expired(&d->permits, now_ms))) {
        d->m.permits_expired++;
        end_permit(d, p, now_ms, 1, "permit expired unreported (timeout)");
    }
    admit_wake(d, now_ms);
}

int methods_init(struct resild *d, struct config *cfg, uint64_t now_ms,
                 uint64_t seed)
{
    int rc;

    memset(d, 0, sizeof(*d));
    d->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    d->start_ms = now_ms;
    d->pid = (long)getpid();
    if ((rc = keys_init(&d->keys, d->cfg.max_keys)) < 0 ||
        (rc = permits_init(&d->permits, d->cfg.max_permits, seed)) < 0)
        return rc;
    retry_budget_init(&d->budget);
    return admit_init(d, seed ^ 0x5bd1e995u);
}

void methods_free(struct resild *d)
{
    keys_free(&d->keys);
    permits_free(&d->permits);
    admit_free(d);
    config_free(&d->cfg);
}
