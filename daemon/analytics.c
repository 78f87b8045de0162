/*
 * analytics.c - error analytics (see analytics.h).  Pure: no I/O, no clock,
 * no uv, no msgpack.  Allocation happens only when a key or a series is
 * first seen (and once for the recent ring and the query scratch); an
 * `errors` query allocates nothing.
 *
 * Invariants:
 *  I1 every series is on exactly one key's list and on the LRU list, in
 *     order of last failure (oldest at lru_head); nseries counts them and
 *     never exceeds conf.max_series;
 *  I2 a key is in the hash iff it has at least one series;
 *  I3 a ring's head is the newest bucket written; buckets older than
 *     head - size + 1 are gone, buckets after head are zero.
 */
#include "analytics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"

struct an_series {
    struct an_key *key;
    struct an_series *knext;         /* the key's series */
    struct an_series *lprev, *lnext; /* LRU by last failure */
    uint64_t total;                  /* lifetime failures */
    uint64_t last_ms;                /* monotonic, last failure */
    uint64_t sec_head, min_head;     /* absolute second / minute (I3) */
    uint64_t sec_first, min_first;   /* first bucket written since the ring
                                      * was last wholly cleared: nothing
                                      * older is non-zero (sums start here) */
    uint64_t q_n;                    /* query scratch: count in the window */
    uint16_t cls;                    /* index in analytics.classes */
    uint8_t severity;
    uint16_t sec[ANALYTICS_SECONDS]; /* failures per second, saturating */
    uint32_t min[ANALYTICS_MINUTES]; /* failures per minute, saturating */
};

struct an_key {
    const void *id;
    struct an_key *hnext;
    struct an_series *series;
    uint32_t nseries;
    uint64_t last_ms;   /* last failure */
    uint64_t pred_head; /* absolute second of calls/fails (I3) */
    uint16_t calls[ANALYTICS_PRED_SECONDS], fails[ANALYTICS_PRED_SECONDS];
    uint64_t q_n;     /* query scratch: failures in the window */
    uint32_t q_epoch; /* q_n belongs to this query */
    uint8_t len;
    char name[KEY_MAX + 1];
};

/* Correlation scratch: the candidates' second series and prefix sums. */
#define CORR_PAD 64 /* zeros before and after each series (>= max lag) */
struct an_corr_scratch {
    int16_t xs[ANALYTICS_CORR_KEYS][CORR_PAD + ANALYTICS_SECONDS + CORR_PAD];
    int64_t pre[ANALYTICS_CORR_KEYS][ANALYTICS_SECONDS + 1];
    int64_t pre2[ANALYTICS_CORR_KEYS][ANALYTICS_SECONDS + 1];
};

size_t analytics_series_bytes(void)
{
    return sizeof(struct an_series);
}

size_t analytics_key_bytes(void)
{
    return sizeof(struct an_key);
}

/* --- rings (I3) --- */

/* Move a ring's head to t, clearing what it passes (the whole ring for a
 * gap at least as long as the ring).  0, or -1 when t is older than what
 * the ring keeps. */
#define RING_ADVANCE(r, size, head, t)                                         \
    do {                                                                       \
        if ((t) > *(head)) {                                                   \
            uint64_t u_;                                                       \
            if ((t) - *(head) >= (size))                                       \
                memset((r), 0, (size) * sizeof((r)[0]));                       \
            else                                                               \
                for (u_ = *(head) + 1; u_ <= (t); u_++)                        \
                    (r)[u_ % (size)] = 0;                                      \
            *(head) = (t);                                                     \
        }                                                                      \
    } while (0)

static void ring16_add(uint16_t *r, size_t size, uint64_t *head,
                       uint64_t *first, uint64_t t, uint32_t n)
{
    uint16_t *b;

    if (t > *head && t - *head >= size)
        *first = t; /* the whole ring is about to be cleared */
    RING_ADVANCE(r, size, head, t);
    if (*head - t >= size)
        return; /* older than the ring: cannot happen on a monotonic clock */
    if (t < *first)
        *first = t; /* an out-of-order event, still inside the ring */
    b = &r[t % size];
    *b = (uint32_t)*b + n > UINT16_MAX ? UINT16_MAX : (uint16_t)(*b + n);
}

static void ring32_add(uint32_t *r, size_t size, uint64_t *head,
                       uint64_t *first, uint64_t t, uint32_t n)
{
    uint32_t *b;

    if (t > *head && t - *head >= size)
        *first = t;
    RING_ADVANCE(r, size, head, t);
    if (*head - t >= size)
        return;
    if (t < *first)
        *first = t;
    b = &r[t % size];
    *b = (uint64_t)*b + n > UINT32_MAX ? UINT32_MAX : *b + n;
}

static inline uint32_t sec_get(const struct an_series *s, uint64_t t)
{
    if (t > s->sec_head || s->sec_head - t >= ANALYTICS_SECONDS)
        return 0;
    return s->sec[t % ANALYTICS_SECONDS];
}

static inline uint32_t min_get(const struct an_series *s, uint64_t t)
{
    if (t > s->min_head || s->min_head - t >= ANALYTICS_MINUTES)
        return 0;
    return s->min[t % ANALYTICS_MINUTES];
}

/* --- text --- */

/* Copy s[0..n) into out (cap bytes, NUL-terminated): at most cap - 1
 * bytes, cut on a character boundary, each byte of an invalid UTF-8
 * sequence stored as '?'.  Returns the bytes stored. */
static size_t copy_utf8(char *out, size_t cap, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s, *end = p + n;
    size_t o = 0;

    while (p < end) {
        uint8_t c = *p;
        size_t len = 0, i;
        uint32_t cp = 0;
        if (c < 0x80)
            len = 1;
        else if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07;
        if (len > 1) {
            if ((size_t)(end - p) < len)
                len = 0;
            for (i = 1; len && i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                    len = 0;
                else
                    cp = cp << 6 | (p[i] & 0x3f);
            }
            if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
                (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                len = 0;
        }
        if (len == 0) { /* invalid: this byte becomes '?' */
            if (o + 1 >= cap)
                break;
            out[o++] = '?';
            p++;
            continue;
        }
        if (o + len >= cap)
            break;
        memcpy(out + o, p, len);
        o += len;
        p += len;
    }
    if (cap)
        out[o] = '\0';
    return o;
}

/* --- keys and series --- */

static size_t hash_id(const struct analytics *a, const void *id)
{
    uint64_t h = ((uint64_t)(uintptr_t)id ^ a->seed) * 0x9e3779b97f4a7c15ULL;

    return (size_t)(h >> 32) & (a->nkb - 1);
}

static struct an_key *key_find(const struct analytics *a, const void *id)
{
    struct an_key *k;

    for (k = a->kb[hash_id(a, id)]; k; k = k->hnext)
        if (k->id == id)
            return k;
    return NULL;
}

static void key_unlink(struct analytics *a, struct an_key *k)
{
    struct an_key **pp = &a->kb[hash_id(a, k->id)];

    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    a->nkeys--;
    a->bytes -= sizeof(*k);
    free(k);
}

static void lru_unlink(struct analytics *a, struct an_series *s)
{
    if (s->lprev)
        s->lprev->lnext = s->lnext;
    else
        a->lru_head = s->lnext;
    if (s->lnext)
        s->lnext->lprev = s->lprev;
    else
        a->lru_tail = s->lprev;
    s->lprev = s->lnext = NULL;
}

static void lru_append(struct analytics *a, struct an_series *s)
{
    s->lprev = a->lru_tail;
    s->lnext = NULL;
    if (a->lru_tail)
        a->lru_tail->lnext = s;
    else
        a->lru_head = s;
    a->lru_tail = s;
}

/* Evict the series idle the longest (I1).  Its key goes with its last
 * series (I2) unless it is keep, which the caller is about to use. */
static void evict_oldest(struct analytics *a, struct an_key *keep)
{
    struct an_series *s = a->lru_head, **pp;
    struct an_key *k;

    if (!s)
        return;
    k = s->key;
    lru_unlink(a, s);
    for (pp = &k->series; *pp != s; pp = &(*pp)->knext)
        ;
    *pp = s->knext;
    k->nseries--;
    a->nseries--;
    a->evicted++;
    a->bytes -= sizeof(*s);
    free(s);
    if (!k->series && k != keep)
        key_unlink(a, k);
}

static uint16_t class_id(struct analytics *a, const char *cls)
{
    uint32_t i;

    for (i = 0; i < a->nclasses; i++)
        if (!strcmp(a->classes[i], cls))
            return (uint16_t)i;
    if (a->nclasses < ANALYTICS_CLASSES - 1) {
        snprintf(a->classes[a->nclasses], sizeof(a->classes[0]), "%s", cls);
        return (uint16_t)a->nclasses++;
    }
    return ANALYTICS_CLASSES - 1; /* "_other" */
}

int analytics_init(struct analytics *a, const struct analytics_conf *c,
                   uint64_t seed)
{
    size_t n = 16;

    memset(a, 0, sizeof(*a));
    a->conf = *c;
    if (a->conf.max_series < 1)
        a->conf.max_series = 1;
    if (a->conf.recent < 1)
        a->conf.recent = 1;
    a->seed = seed;
    while (n < a->conf.max_series && n < ((size_t)1 << 20))
        n <<= 1;
    a->nkb = n;
    a->kb = calloc(n, sizeof(*a->kb));
    a->scratch = calloc(a->conf.max_series, sizeof(*a->scratch));
    a->kscratch = calloc(a->conf.max_series, sizeof(*a->kscratch));
    if (!a->kb || !a->scratch || !a->kscratch) {
        free(a->kb);
        free(a->scratch);
        free(a->kscratch);
        memset(a, 0, sizeof(*a));
        return -1;
    }
    a->bytes =
        n * sizeof(*a->kb) + 2 * (size_t)a->conf.max_series * sizeof(void *);
    strcpy(a->classes[ANALYTICS_CLASSES - 1], "_other");
    return 0;
}

void analytics_free(struct analytics *a)
{
    size_t i;

    for (i = 0; i < a->nkb; i++) {
        struct an_key *k = a->kb ? a->kb[i] : NULL, *kn;
        for (; k; k = kn) {
            struct an_series *s = k->series, *sn;
            for (; s; s = sn) {
                sn = s->knext;
                free(s);
            }
            kn = k->hnext;
            free(k);
        }
    }
    free(a->kb);
    free(a->scratch);
    free(a->kscratch);
    free(a->recent);
    free(a->corr);
    memset(a, 0, sizeof(*a));
}

static void pred_add(struct an_key *k, uint64_t sec, int failed)
{
    uint64_t first = 0; /* not needed for these rings */

    ring16_add(k->calls, ANALYTICS_PRED_SECONDS, &k->pred_head, &first, sec, 1);
    if (failed) /* same head: the calls ring moved it already */
        k->fails[sec % ANALYTICS_PRED_SECONDS] =
            k->fails[sec % ANALYTICS_PRED_SECONDS] == UINT16_MAX
                ? UINT16_MAX
                : k->fails[sec % ANALYTICS_PRED_SECONDS] + 1;
}

/* Clear the fails ring where the calls ring was cleared: both share
 * pred_head, so advance them together. */
static void pred_advance(struct an_key *k, uint64_t sec)
{
    uint64_t head = k->pred_head;

    RING_ADVANCE(k->fails, ANALYTICS_PRED_SECONDS, &head, sec);
}

static void recent_add(struct analytics *a, const char *name, size_t len,
                       const struct outcome *o, uint64_t now_ms)
{
    struct an_recent *e;

    if (!a->recent) {
        a->recent = calloc(a->conf.recent, sizeof(*a->recent));
        if (!a->recent) {
            a->alloc_failed++;
            return;
        }
        a->bytes += (size_t)a->conf.recent * sizeof(*a->recent);
    }
    e = &a->recent[a->recent_next++ % a->conf.recent];
    e->at_ms = now_ms;
    copy_utf8(e->key, sizeof(e->key), name, len);
    copy_utf8(e->cls, sizeof(e->cls), o->cls ? o->cls : "",
              o->cls ? strlen(o->cls) : 0);
    e->severity =
        (uint8_t)(o->severity >= 0 && o->severity <= 3 ? o->severity : 1);
    e->transient = o->transient > 0;
    e->source = (uint8_t)o->source;
    e->kind = (uint8_t)o->kind;
    e->message_len = (uint16_t)copy_utf8(e->message, sizeof(e->message),
                                         o->message, o->message_len);
    e->cid_len = (uint16_t)copy_utf8(e->cid, sizeof(e->cid), o->correlation_id,
                                     o->correlation_id_len);
    /* The context is one msgpack map: kept whole or not at all. */
    if (o->context && o->context_len <= sizeof(e->context)) {
        memcpy(e->context, o->context, o->context_len);
        e->context_len = (uint16_t)o->context_len;
    } else {
        e->context_len = 0;
    }
}

void analytics_outcome(struct analytics *a, const void *id, const char *name,
                       size_t len, const struct outcome *o, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000;
    int failed = o->kind == OUT_FAILURE || o->kind == OUT_UNKNOWN;
    struct an_key *k;
    struct an_series *s;
    uint16_t cls;
    uint8_t sev;

    if (o->kind == OUT_IGNORE)
        return;
    k = key_find(a, id);
    if (!failed) {
        if (k) { /* a call of a key that failed: its rate needs it */
            pred_advance(k, sec);
            pred_add(k, sec, 0);
        }
        return;
    }
    a->failures++;
    recent_add(a, name, len, o, now_ms);
    cls = class_id(a, o->cls ? o->cls : "");
    sev = (uint8_t)(o->severity >= 0 && o->severity <= 3 ? o->severity : 1);
    s = NULL;
    if (k)
        for (s = k->series; s; s = s->knext)
            if (s->cls == cls && s->severity == sev)
                break;
    if (!s) {
        if (a->nseries >= a->conf.max_series)
            evict_oldest(a, k);
        if (!k) {
            if (len > KEY_MAX)
                len = KEY_MAX;
            if (!(k = calloc(1, sizeof(*k)))) {
                a->alloc_failed++;
                return;
            }
            k->id = id;
            k->len = (uint8_t)len;
            memcpy(k->name, name, len);
            k->pred_head = sec;
            k->hnext = a->kb[hash_id(a, id)];
            a->kb[hash_id(a, id)] = k;
            a->nkeys++;
            a->bytes += sizeof(*k);
        }
        if (!(s = calloc(1, sizeof(*s)))) {
            a->alloc_failed++;
            if (!k->series)
                key_unlink(a, k);
            return;
        }
        s->key = k;
        s->cls = cls;
        s->severity = sev;
        s->sec_head = s->sec_first = sec;
        s->min_head = s->min_first = sec / 60;
        s->knext = k->series;
        k->series = s;
        k->nseries++;
        a->nseries++;
        a->bytes += sizeof(*s);
    } else {
        lru_unlink(a, s);
    }
    lru_append(a, s);
    ring16_add(s->sec, ANALYTICS_SECONDS, &s->sec_head, &s->sec_first, sec, 1);
    ring32_add(s->min, ANALYTICS_MINUTES, &s->min_head, &s->min_first, sec / 60,
               1);
    s->total++;
    s->last_ms = now_ms;
    k->last_ms = now_ms;
    pred_advance(k, sec);
    pred_add(k, sec, 1);
}

void analytics_sink(void *ctx, const struct event *ev)
{
    const struct key *k;

    if (ev->type != EV_OUTCOME || !ev->u.outcome->key)
        return;
    k = ev->u.outcome->key;
    analytics_outcome(ctx, k, k->name, k->len, ev->u.outcome, ev->now_ms);
}

/* --- fits --- */

const char *analytics_direction_name(enum an_direction d)
{
    return d == AN_UP ? "up" : d == AN_DOWN ? "down" : "flat";
}

/* Least squares of y on x (x NULL: 0..n-1), two-pass for accuracy. */
static void fit_xy(const double *x, const double *y, size_t n, struct an_fit *f)
{
    double mx = 0, my = 0, sxx = 0, sxy = 0, syy = 0, ssr;
    size_t i;

    memset(f, 0, sizeof(*f));
    if (n < 2)
        return;
    for (i = 0; i < n; i++) {
        mx += x ? x[i] : (double)i;
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    for (i = 0; i < n; i++) {
        double dx = (x ? x[i] : (double)i) - mx, dy = y[i] - my;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if (sxx <= 0)
        return;
    f->slope = sxy / sxx;
    f->intercept = my - f->slope * mx;
    f->r2 = syy > 0 ? f->slope * sxy / syy : 0;
    if (f->r2 > 1)
        f->r2 = 1;
    if (f->r2 < 0)
        f->r2 = 0;
    ssr = syy - f->slope * sxy;
    if (ssr < 0)
        ssr = 0;
    if (f->slope == 0)
        f->t = 0;
    else if (n < 3 || ssr <= 1e-12 * (syy > 0 ? syy : 1))
        f->t = f->slope > 0 ? 1e9 : -1e9; /* a perfect line */
    else
        f->t = f->slope / sqrt(ssr / (double)(n - 2) / sxx);
}

void analytics_fit(const double *y, size_t n, struct an_fit *f)
{
    double total = 0, mean;
    size_t i;

    fit_xy(NULL, y, n, f);
    f->dir = AN_FLAT;
    for (i = 0; i < n; i++)
        total += y[i];
    if (n < 3 || total < AN_TREND_MIN_EVENTS)
        return;
    mean = total / (double)n;
    if (fabs(f->t) >= AN_TREND_T &&
        fabs(f->slope) * (double)(n - 1) >= AN_TREND_MIN_CHANGE * mean)
        f->dir = f->slope > 0 ? AN_UP : AN_DOWN;
}

/* --- queries --- */

static int key_matches(const struct an_key *k, const struct analytics_query *q)
{
    if (q->key)
        return k->len == q->key_len && !memcmp(k->name, q->key, q->key_len);
    if (q->prefix) {
        if (k->len < q->prefix_len ||
            memcmp(k->name, q->prefix, q->prefix_len) != 0)
            return 0;
        return k->len == q->prefix_len || k->name[q->prefix_len] == '.';
    }
    return 1;
}

static int name_matches(const char *name, const struct analytics_query *q)
{
    size_t len = strlen(name);

    if (q->key)
        return len == q->key_len && !memcmp(name, q->key, q->key_len);
    if (q->prefix) {
        if (len < q->prefix_len || memcmp(name, q->prefix, q->prefix_len))
            return 0;
        return len == q->prefix_len || name[q->prefix_len] == '.';
    }
    return 1;
}

/* The window's buckets: seconds for windows up to ANALYTICS_SECONDS,
 * minutes (rounded up) beyond.  *lo is the first bucket's index. */
static size_t window_buckets(uint64_t window_s, uint64_t now_ms, int *minutes,
                             uint64_t *lo)
{
    uint64_t now_s = now_ms / 1000, n;

    if (window_s <= ANALYTICS_SECONDS) {
        *minutes = 0;
        n = window_s;
        *lo = now_s + 1 >= n ? now_s + 1 - n : 0;
        return (size_t)(now_s + 1 - *lo);
    }
    *minutes = 1;
    n = (window_s + 59) / 60;
    if (n > ANALYTICS_MINUTES)
        n = ANALYTICS_MINUTES;
    *lo = now_s / 60 + 1 >= n ? now_s / 60 + 1 - n : 0;
    return (size_t)(now_s / 60 + 1 - *lo);
}

/* Failures of s in buckets [lo, lo + n). */
static uint64_t series_sum(const struct an_series *s, int minutes, uint64_t lo,
                           size_t n)
{
    uint64_t head = minutes ? s->min_head : s->sec_head, t, hi, sum = 0;
    uint64_t first = minutes ? s->min_first : s->sec_first;
    size_t size = minutes ? ANALYTICS_MINUTES : ANALYTICS_SECONDS;

    if (head < lo || n == 0)
        return 0;
    hi = lo + n - 1;
    if (hi > head)
        hi = head;
    if (head - lo >= size) /* the ring starts after lo */
        lo = head - size + 1;
    if (first > lo) /* nothing before the first failure since a clear */
        lo = first;
    for (t = lo; t <= hi && t >= lo; t++)
        sum += minutes ? s->min[t % size] : s->sec[t % size];
    return sum;
}

static void series_buckets(const struct an_series *s, int minutes, uint64_t lo,
                           size_t n, double *y)
{
    size_t i;

    for (i = 0; i < n; i++)
        y[i] = minutes ? min_get(s, lo + i) : sec_get(s, lo + i);
}

/* Insert (item, n) into the descending list top[0..*len) of at most cap. */
#define TOPK_INSERT(top, len, cap, item, nval, field)                          \
    do {                                                                       \
        size_t j_;                                                             \
        if (*(len) == (cap) && (top)[(cap)-1]->field >= (nval))                \
            break;                                                             \
        j_ = *(len) < (cap) ? (*(len))++ : (cap)-1;                            \
        while (j_ > 0 && (top)[j_ - 1]->field < (nval)) {                      \
            (top)[j_] = (top)[j_ - 1];                                         \
            j_--;                                                              \
        }                                                                      \
        (top)[j_] = (item);                                                    \
    } while (0)

uint64_t analytics_key_rate(const struct analytics *a, const void *id,
                            int min_severity, uint64_t now_ms)
{
    const struct an_key *k = key_find(a, id);
    const struct an_series *s;
    uint64_t sum = 0, now_s = now_ms / 1000;

    if (!k || k->last_ms + 60000 <= now_ms)
        return 0;
    for (s = k->series; s; s = s->knext)
        if (s->severity >= min_severity && s->last_ms + 60000 > now_ms)
            sum += series_sum(s, 0, now_s >= 59 ? now_s - 59 : 0,
                              now_s >= 59 ? 60 : (size_t)now_s + 1);
    return sum;
}

void analytics_each_key(const struct analytics *a, uint64_t since_ms,
                        uint64_t now_ms,
                        void (*fn)(void *ctx, const void *id, const char *name,
                                   size_t len),
                        void *ctx)
{
    size_t i;
    const struct an_key *k;

    for (i = 0; i < a->nkb; i++)
        for (k = a->kb[i]; k; k = k->hnext)
            if (k->last_ms + since_ms > now_ms)
                fn(ctx, k->id, k->name, k->len);
}

/* Prediction for one key, 1 if it has one. */
static int predict_key(const struct an_key *k, uint64_t now_ms,
                       analytics_breaker_fn fn, void *ctx,
                       struct an_prediction *p)
{
    double x[ANALYTICS_PRED_SECONDS], y[ANALYTICS_PRED_SECONDS];
    double rate, thr, eta;
    uint64_t now_s = now_ms / 1000, t;
    struct an_fit f;
    size_t n = 0;

    if (k->last_ms + ANALYTICS_PRED_SECONDS * 1000ULL <= now_ms)
        return 0;
    for (t = now_s + 1 > ANALYTICS_PRED_SECONDS
                 ? now_s + 1 - ANALYTICS_PRED_SECONDS
                 : 0;
         t <= now_s; t++) {
        uint32_t c, fl;
        if (t > k->pred_head || k->pred_head - t >= ANALYTICS_PRED_SECONDS)
            continue;
        c = k->calls[t % ANALYTICS_PRED_SECONDS];
        fl = k->fails[t % ANALYTICS_PRED_SECONDS];
        if (!c)
            continue;
        x[n] = (double)t;
        y[n] = 100.0 * fl / c;
        n++;
    }
    if (n < 10)
        return 0;
    fit_xy(x, y, n, &f);
    if (f.slope <= 0 || f.t < AN_TREND_T)
        return 0;
    if (!fn(ctx, k->id, &rate, &thr) || thr <= 0 || rate >= thr)
        return 0;
    eta = (thr - rate) / f.slope;
    if (eta > ANALYTICS_PRED_HORIZON_S)
        return 0;
    p->id = k->id;
    p->key = k->name;
    p->rate_pct = rate;
    p->threshold_pct = thr;
    p->slope_pct_per_s = f.slope;
    p->eta_s = (uint64_t)(eta + 0.5);
    return 1;
}

static size_t predict(const struct analytics *a,
                      const struct analytics_query *q, uint64_t now_ms,
                      analytics_breaker_fn fn, void *ctx,
                      struct an_prediction *out, size_t max)
{
    struct an_prediction p;
    size_t i, n = 0, j;
    struct an_key *k;

    for (i = 0; i < a->nkb; i++)
        for (k = a->kb[i]; k; k = k->hnext) {
            if ((q && !key_matches(k, q)) ||
                !predict_key(k, now_ms, fn, ctx, &p))
                continue;
            if (n == max && out[max - 1].eta_s <= p.eta_s)
                continue;
            j = n < max ? n++ : max - 1;
            while (j > 0 && out[j - 1].eta_s > p.eta_s) {
                out[j] = out[j - 1];
                j--;
            }
            out[j] = p;
        }
    return n;
}

size_t analytics_predict(const struct analytics *a, uint64_t now_ms,
                         analytics_breaker_fn fn, void *ctx,
                         struct an_prediction *out, size_t max)
{
    return max ? predict(a, NULL, now_ms, fn, ctx, out, max) : 0;
}

/*
 * Correlations between the busiest keys of the query over the last L
 * seconds (L = the window, at most ANALYTICS_SECONDS): for each pair the
 * Pearson coefficient of (x[t], y[t + d]) over the overlap, for every lag
 * d in -ANALYTICS_LAG_MAX_S..+ANALYTICS_LAG_MAX_S; the best d (highest r,
 * then the smallest |d|) says who leads.  Counts are capped at 255 per
 * second (int16 storage) so the dot products stay in int32 (915 x 255^2
 * < 2^31) and vectorise (pmaddwd).
 */
#define CORR_MIN_EVENTS 5
static void correlate(struct analytics *a, const struct analytics_query *q,
                      struct an_key **keys, size_t nk, uint64_t now_ms,
                      struct analytics_result *r)
{
    static const size_t cap = ANALYTICS_CORR_KEYS;
    struct an_corr_scratch *cs = a->corr;
    int16_t(*xb)[CORR_PAD + ANALYTICS_SECONDS + CORR_PAD];
    int16_t *xs[ANALYTICS_CORR_KEYS]; /* xb[k] + CORR_PAD: series k */
    int64_t(*pre)[ANALYTICS_SECONDS + 1], (*pre2)[ANALYTICS_SECONDS + 1];
    struct an_key *cand[ANALYTICS_CORR_KEYS];
    uint64_t now_s = now_ms / 1000, lo, wl;
    size_t nc = 0, i, j, L, t;
    int d;

    if (!cs) { /* once, at the first query that needs it */
        if (!(cs = a->corr = malloc(sizeof(*cs))))
            return;
        a->bytes += sizeof(*cs);
    }
    xb = cs->xs;
    for (i = 0; i < cap; i++)
        xs[i] = xb[i] + CORR_PAD;
    pre = cs->pre;
    pre2 = cs->pre2;
    wl = q->window_s < ANALYTICS_SECONDS ? q->window_s : ANALYTICS_SECONDS;
    lo = now_s + 1 >= wl ? now_s + 1 - wl : 0;
    L = (size_t)(now_s + 1 - lo);
    if (L < 2 * ANALYTICS_LAG_MAX_S)
        return; /* too short to tell a lag */
    for (i = 0; i < nk && nc < cap; i++) {
        struct an_key *k = keys[i];
        const struct an_series *s;
        int64_t sum = 0;
        if (k->last_ms + wl * 1000 <= now_ms)
            continue;
        memset(xb[nc], 0, sizeof(xb[nc]));
        for (s = k->series; s; s = s->knext) {
            if (s->severity < q->min_severity)
                continue;
            for (t = 0; t < L; t++) {
                uint32_t v = (uint32_t)xs[nc][t] + sec_get(s, lo + t);
                xs[nc][t] = (int16_t)(v > 255 ? 255 : v);
            }
        }
        pre[nc][0] = pre2[nc][0] = 0;
        for (t = 0; t < L; t++) {
            sum += xs[nc][t];
            pre[nc][t + 1] = pre[nc][t] + xs[nc][t];
            pre2[nc][t + 1] = pre2[nc][t] + (int64_t)xs[nc][t] * xs[nc][t];
        }
        if (sum >= CORR_MIN_EVENTS)
            cand[nc++] = k;
    }
    for (i = 0; i < nc; i++)
        for (j = i + 1; j < nc; j++) {
            double best = -2;
            int best_d = 0;
            int32_t acc[2 * ANALYTICS_LAG_MAX_S + 1] = {0};
            /* Sxy for every lag at once, from x's non-zero seconds only
             * (error series are sparse): acc[d + 60] = sum over t of
             * x[t] y[t + d]; y's padding zeros stand for the seconds
             * outside the overlap. */
            for (t = 0; t < L; t++) {
                const int16_t *y = xs[j] + t - ANALYTICS_LAG_MAX_S;
                int32_t xv = xs[i][t];
                int k2;
                if (!xv)
                    continue;
                for (k2 = 0; k2 < 2 * ANALYTICS_LAG_MAX_S + 1; k2++)
                    acc[k2] += xv * y[k2];
            }
            for (d = -ANALYTICS_LAG_MAX_S; d <= ANALYTICS_LAG_MAX_S; d++) {
                /* pairs (x[t], y[t + d]), t in [t0, t1) */
                size_t t0 = d < 0 ? (size_t)-d : 0;
                size_t t1 = d > 0 ? L - (size_t)d : L;
                double m = (double)(t1 - t0), sx, sy, sxx, syy, vx, vy, rr;
                int32_t sxy = acc[d + ANALYTICS_LAG_MAX_S];
                sx = (double)(pre[i][t1] - pre[i][t0]);
                sxx = (double)(pre2[i][t1] - pre2[i][t0]);
                sy = (double)(pre[j][(ptrdiff_t)t1 + d] -
                              pre[j][(ptrdiff_t)t0 + d]);
                syy = (double)(pre2[j][(ptrdiff_t)t1 + d] -
                               pre2[j][(ptrdiff_t)t0 + d]);
                vx = m * sxx - sx * sx;
                vy = m * syy - sy * sy;
                if (vx <= 0 || vy <= 0)
                    continue;
                rr = (m * sxy - sx * sy) / sqrt(vx * vy);
                if (rr > best + 1e-12 ||
                    (fabs(rr - best) <= 1e-12 && abs(d) < abs(best_d))) {
                    best = rr;
                    best_d = d;
                }
            }
            if (best < ANALYTICS_CORR_MIN_R)
                continue;
            {
                struct an_corr c;
                size_t k2;
                /* y[t + d] follows x[t]: x leads by d (d > 0). */
                c.leader = best_d >= 0 ? cand[i]->name : cand[j]->name;
                c.follower = best_d >= 0 ? cand[j]->name : cand[i]->name;
                c.lag_s = abs(best_d);
                c.r = best;
                if (r->ncorr == ANALYTICS_CORR_MAX &&
                    r->corr[ANALYTICS_CORR_MAX - 1].r >= c.r)
                    continue;
                k2 = r->ncorr < ANALYTICS_CORR_MAX ? r->ncorr++
                                                   : ANALYTICS_CORR_MAX - 1;
                while (k2 > 0 && r->corr[k2 - 1].r < c.r) {
                    r->corr[k2] = r->corr[k2 - 1];
                    k2--;
                }
                r->corr[k2] = c;
            }
        }
}

void analytics_query(struct analytics *a, const struct analytics_query *q,
                     uint64_t now_ms, analytics_breaker_fn fn, void *ctx,
                     struct analytics_result *r)
{
    double y[ANALYTICS_MINUTES > ANALYTICS_SECONDS ? ANALYTICS_MINUTES
                                                   : ANALYTICS_SECONDS];
    uint64_t cls_n[ANALYTICS_CLASSES] = {0}, lo, win_ms;
    struct an_series *top[ANALYTICS_TOP_MAX];
    struct an_key *ktop[ANALYTICS_BY_KEY_MAX];
    size_t i, nb, ns = 0, nk = 0, ntop = 0, nktop = 0, topcap;
    int minutes;
    struct an_key *k;
    struct an_series *s;
    uint64_t e;

    memset(r, 0, offsetof(struct analytics_result, by_class));
    r->nby_class = r->nby_key = r->keys_total = r->ntop = r->nrecent = 0;
    r->ncorr = r->npred = 0;
    r->window_s = q->window_s;
    r->series = a->nseries;
    r->evicted = a->evicted;
    topcap = q->top < ANALYTICS_TOP_MAX ? q->top : ANALYTICS_TOP_MAX;
    if (!topcap)
        topcap = 1;
    nb = window_buckets(q->window_s, now_ms, &minutes, &lo);
    win_ms = q->window_s * 1000;
    a->epoch++;
    /* Count: every matching series active within the window. */
    for (i = 0; i < a->nkb; i++)
        for (k = a->kb[i]; k; k = k->hnext) {
            if (k->last_ms + win_ms <= now_ms || !key_matches(k, q))
                continue;
            for (s = k->series; s; s = s->knext) {
                if (s->severity < q->min_severity ||
                    s->last_ms + win_ms <= now_ms)
                    continue;
                s->q_n = series_sum(s, minutes, lo, nb);
                if (!s->q_n)
                    continue;
                a->scratch[ns++] = s;
                r->total += s->q_n;
                r->by_severity[s->severity] += s->q_n;
                cls_n[s->cls] += s->q_n;
                if (k->q_epoch != a->epoch) {
                    k->q_epoch = a->epoch;
                    k->q_n = 0;
                    a->kscratch[nk++] = k;
                }
                k->q_n += s->q_n;
            }
        }
    r->rate_per_min = (double)r->total * 60.0 / (double)q->window_s;
    /* Rank. */
    for (i = 0; i < ns; i++)
        TOPK_INSERT(top, &ntop, topcap, a->scratch[i], a->scratch[i]->q_n, q_n);
    for (i = 0; i < nk; i++)
        TOPK_INSERT(ktop, &nktop, ANALYTICS_BY_KEY_MAX, a->kscratch[i],
                    a->kscratch[i]->q_n, q_n);
    r->keys_total = nk;
    for (i = 0; i < nktop; i++) {
        r->by_key[i].name = ktop[i]->name;
        r->by_key[i].n = ktop[i]->q_n;
    }
    r->nby_key = nktop;
    for (i = 0; i < ANALYTICS_CLASSES; i++) {
        size_t j;
        if (!cls_n[i])
            continue;
        j = r->nby_class++;
        while (j > 0 && r->by_class[j - 1].n < cls_n[i]) {
            r->by_class[j] = r->by_class[j - 1];
            j--;
        }
        r->by_class[j].name = a->classes[i];
        r->by_class[j].n = cls_n[i];
    }
    /* Top pairs and their trends. */
    for (i = 0; i < ntop; i++) {
        struct an_pair *p = &r->top[i];
        s = top[i];
        p->key = s->key->name;
        p->cls = a->classes[s->cls];
        p->severity = s->severity;
        p->n = s->q_n;
        series_buckets(s, minutes, lo, nb, y);
        analytics_fit(y, nb, &p->fit);
        /* per bucket per bucket -> per minute per minute */
        p->slope_per_min = minutes ? p->fit.slope : p->fit.slope * 3600.0;
    }
    r->ntop = ntop;
    /* Recent errors, newest first. */
    if (a->recent) {
        uint64_t have =
            a->recent_next < a->conf.recent ? a->recent_next : a->conf.recent;
        for (e = 0; e < have && r->nrecent < topcap; e++) {
            const struct an_recent *ent =
                &a->recent[(a->recent_next - 1 - e) % a->conf.recent];
            if (ent->at_ms + win_ms <= now_ms)
                break; /* older ones are older still */
            if (ent->severity < q->min_severity || !name_matches(ent->key, q))
                continue;
            r->recent[r->nrecent++] = ent;
        }
    }
    /* Correlations over the busiest keys. */
    {
        struct an_key *busy[ANALYTICS_CORR_KEYS];
        size_t nbusy = 0;
        for (i = 0; i < nk; i++)
            TOPK_INSERT(busy, &nbusy, ANALYTICS_CORR_KEYS, a->kscratch[i],
                        a->kscratch[i]->q_n, q_n);
        correlate(a, q, busy, nbusy, now_ms, r);
    }
    if (fn)
        r->npred = predict(a, q, now_ms, fn, ctx, r->pred, ANALYTICS_PRED_MAX);
}
