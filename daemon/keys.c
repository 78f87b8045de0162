/*
 * keys.c - key registry: chained hash table with a fixed bucket count
 * chosen from max_keys, so it never rehashes on the request path, plus an
 * ordered index by name for status: an AVL tree whose nodes are the keys
 * themselves (ord_l, ord_r, ord_h, ord_size in struct key), so inserting
 * allocates nothing.
 *
 * Index invariants, checked by keys_index_check:
 *   I1  in-order traversal gives every key once, names strictly ascending
 *       in name_cmp order;
 *   I2  ord_size = 1 + sizes of both children, ord_h = 1 + the taller
 *       child (an empty child counts 0);
 *   I3  the heights of a node's children differ by at most 1, so the
 *       height is < 1.45 log2(n + 2): at most 46 for 2^32 keys.
 * Keys are never removed today; a delete would reuse rebalance() below.
 */
#include "keys.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int keys_init(struct keys *ks, size_t max_keys)
{
    size_t n = 64;

    while (n < max_keys && n < ((size_t)1 << 20))
        n <<= 1;
    ks->buckets = calloc(n, sizeof(*ks->buckets));
    if (!ks->buckets)
        return RD_ENOMEM;
    ks->nbuckets = n;
    ks->root = NULL;
    ks->count = 0;
    ks->stats_edge = NULL;
    ks->stats_cap = 0;
    ks->max = max_keys;
    return 0;
}

void keys_free(struct keys *ks)
{
    size_t i;

    for (i = 0; ks->buckets && i < ks->nbuckets; i++) {
        struct key *k = ks->buckets[i], *next;
        for (; k; k = next) {
            next = k->next;
            keys_free_key(k);
        }
    }
    free(ks->buckets);
    ks->buckets = NULL;
    ks->root = NULL;
}

/* The bytes a key name may hold: [A-Za-z0-9._:-]. */
#define R6(c) [c] = 1, [c + 1] = 1, [c + 2] = 1, [c + 3] = 1, [c + 4] = 1, \
              [c + 5] = 1
#define R10(c) R6(c), [c + 6] = 1, [c + 7] = 1, [c + 8] = 1, [c + 9] = 1
static const uint8_t key_byte[256] = {
    R10('0'), R10('A'), R10('K'), R6('U'), R10('a'), R10('k'), R6('u'),
    ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1};
#undef R10
#undef R6

int keys_valid(const char *name, size_t len)
{
    size_t i;
    unsigned ok = 1;

    if (len == 0 || len > KEY_MAX)
        return 0;
    for (i = 0; i < len; i++) /* no branch a byte: names are short */
        ok &= key_byte[(uint8_t)name[i]];
    return (int)ok;
}

struct key *keys_find(const struct keys *ks, const char *name, size_t len)
{
    struct key *k;

    if (len > KEY_MAX)
        return NULL;
    k = ks->buckets[hash(name, len) & (ks->nbuckets - 1)];
    for (; k; k = k->next)
        if (k->len == len && memcmp(k->name, name, len) == 0)
            return k;
    return NULL;
}

/* ---- name index ---- */

/* Deepest root-to-leaf path an iterator may stack: I3 bounds the height by
 * 46 for any count a uint32_t ord_size can hold. */
#define INDEX_DEPTH_MAX 64

/* Byte order: memcmp over the common length, then the shorter first.  For
 * names (no NUL) this is strcmp order. */
static int name_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);

    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

static unsigned ord_h(const struct key *k)
{
    return k ? k->ord_h : 0;
}

static size_t ord_size(const struct key *k)
{
    return k ? k->ord_size : 0;
}

/* Recompute k's height and size from its children (I2). */
static void fix(struct key *k)
{
    unsigned l = ord_h(k->ord_l), r = ord_h(k->ord_r);

    k->ord_h = (uint8_t)(1 + (l > r ? l : r));
    k->ord_size = (uint32_t)(1 + ord_size(k->ord_l) + ord_size(k->ord_r));
}

static struct key *rotate_right(struct key *k)
{
    struct key *l = k->ord_l;

    k->ord_l = l->ord_r;
    l->ord_r = k;
    fix(k);
    fix(l);
    return l;
}

static struct key *rotate_left(struct key *k)
{
    struct key *r = k->ord_r;

    k->ord_r = r->ord_l;
    r->ord_l = k;
    fix(r->ord_l);
    fix(r);
    return r;
}

/* Restore I2 and I3 at k, whose subtrees hold them and differ in height by
 * at most 2 (true after one insert or delete below k).  Returns the new
 * subtree root. */
static struct key *rebalance(struct key *k)
{
    unsigned l = ord_h(k->ord_l), r = ord_h(k->ord_r);

    if (l > r + 1) {
        if (ord_h(k->ord_l->ord_l) < ord_h(k->ord_l->ord_r))
            k->ord_l = rotate_left(k->ord_l);
        return rotate_right(k);
    }
    if (r > l + 1) {
        if (ord_h(k->ord_r->ord_r) < ord_h(k->ord_r->ord_l))
            k->ord_r = rotate_right(k->ord_r);
        return rotate_left(k);
    }
    fix(k);
    return k;
}

/* Insert k (name not yet in the tree) below t; returns the new root.
 * Recursion depth is the height (I3). */
static struct key *index_insert(struct key *t, struct key *k)
{
    if (!t) {
        k->ord_l = k->ord_r = NULL;
        fix(k);
        return k;
    }
    if (name_cmp(k->name, k->len, t->name, t->len) < 0)
        t->ord_l = index_insert(t->ord_l, k);
    else
        t->ord_r = index_insert(t->ord_r, k);
    return rebalance(t);
}

/* Number of keys whose name is < s[0..n).  O(height). */
static size_t index_rank(const struct key *t, const char *s, size_t n)
{
    size_t r = 0;

    while (t) {
        if (name_cmp(t->name, t->len, s, n) < 0) {
            r += ord_size(t->ord_l) + 1;
            t = t->ord_r;
        } else {
            t = t->ord_l;
        }
    }
    return r;
}

/* In-order cursor: stk holds the keys still to visit whose left subtree is
 * done, the next one on top. */
struct index_iter {
    struct key *stk[INDEX_DEPTH_MAX];
    unsigned n;
};

/* Position it at the first key > s[0..n) (strict) or >= s (not strict);
 * s NULL: at the first key. */
static void index_seek(struct index_iter *it, struct key *t, const char *s,
                       size_t n, int strict)
{
    it->n = 0;
    while (t) {
        int c = s ? name_cmp(t->name, t->len, s, n) : 1;
        if (c > 0 || (c == 0 && !strict)) {
            it->stk[it->n++] = t;
            t = t->ord_l;
        } else {
            t = t->ord_r;
        }
    }
}

/* The next key in name order, or NULL.  Amortised O(1). */
static struct key *index_next(struct index_iter *it)
{
    struct key *k, *c;

    if (it->n == 0)
        return NULL;
    k = it->stk[--it->n];
    for (c = k->ord_r; c; c = c->ord_l)
        it->stk[it->n++] = c;
    return k;
}

/* Append to out[*n..cap) the keys from the cursor on while their name is
 * < hi[0..hn) (hi NULL: no bound); *more = 1 if one is left over. */
static void index_collect(struct index_iter *it, const char *hi, size_t hn,
                          struct key **out, size_t cap, size_t *n, int *more)
{
    struct key *k;

    while ((k = index_next(it))) {
        if (hi && name_cmp(k->name, k->len, hi, hn) >= 0)
            return;
        if (*n == cap) {
            *more = 1;
            return;
        }
        out[(*n)++] = k;
    }
}

size_t keys_page(const struct keys *ks, const char *prefix, size_t plen,
                 const char *after, size_t alen, struct key **out, size_t cap,
                 size_t *total, int *more)
{
    /* The keys below prefix P are exactly the range ["P.", "P/"): '/'
     * follows '.'.  P itself sorts before that range, but not next to it:
     * "P-x" lies between. */
    char lo[KEY_MAX + 2], hi[KEY_MAX + 2];
    struct index_iter it;
    struct key *self;
    size_t n = 0;

    *more = 0;
    if (!prefix) {
        *total = ord_size(ks->root);
        index_seek(&it, ks->root, after, alen, 1);
        index_collect(&it, NULL, 0, out, cap, &n, more);
        return n;
    }
    if (plen > KEY_MAX) { /* longer than any name: nothing matches */
        *total = 0;
        return 0;
    }
    memcpy(lo, prefix, plen);
    memcpy(hi, prefix, plen);
    lo[plen] = '.';
    hi[plen] = '/';
    self = keys_find(ks, prefix, plen);
    *total = (self ? 1 : 0) + index_rank(ks->root, hi, plen + 1) -
             index_rank(ks->root, lo, plen + 1);
    if (self && (!after || name_cmp(self->name, self->len, after, alen) > 0)) {
        if (cap == 0) {
            *more = 1;
            return 0;
        }
        out[n++] = self;
    }
    if (after && name_cmp(after, alen, lo, plen + 1) >= 0)
        index_seek(&it, ks->root, after, alen, 1);
    else
        index_seek(&it, ks->root, lo, plen + 1, 0);
    index_collect(&it, hi, plen + 1, out, cap, &n, more);
    return n;
}

/* Checks the subtree t against I1-I3; *prev is the key visited last in
 * order, *seen counts keys.  Returns t's height, or -1 if unsound. */
static int check_subtree(const struct key *t, const struct key **prev,
                         size_t *seen)
{
    int l, r;

    if (!t)
        return 0;
    if ((l = check_subtree(t->ord_l, prev, seen)) < 0)
        return -1;
    if (*prev && name_cmp((*prev)->name, (*prev)->len, t->name, t->len) >= 0)
        return -1;
    *prev = t;
    ++*seen;
    if ((r = check_subtree(t->ord_r, prev, seen)) < 0)
        return -1;
    if (l > r + 1 || r > l + 1 || t->ord_h != 1 + (l > r ? l : r) ||
        t->ord_size != 1 + ord_size(t->ord_l) + ord_size(t->ord_r))
        return -1;
    return t->ord_h;
}

int keys_index_check(const struct keys *ks, unsigned *height)
{
    const struct key *prev = NULL;
    size_t seen = 0;
    int h = check_subtree(ks->root, &prev, &seen);

    *height = h < 0 ? 0 : (unsigned)h;
    return h < 0 || seen != ks->count ? -1 : 0;
}

/* name[0..len) as a C string (len <= KEY_MAX is checked by the caller). */
static const char *name_z(const char *name, size_t len)
{
    static char buf[KEY_MAX + 1];

    memcpy(buf, name, len);
    buf[len] = '\0';
    return buf;
}

size_t keys_name_end(size_t len)
{
    /* The window that follows holds uint64_t (time buckets). */
    return (offsetof(struct key, name) + len + 1 + 7) & ~(size_t)7;
}

void keys_free_key(struct key *k)
{
    if (k->window_own)
        free(k->br.bits); /* either member of the union */
    free(k->lease);
    free(k->lat_ms);
    free(k->stats);
    free(k->x);
    free(k);
}

struct key_stats *keys_stats(struct key *k)
{
    if (!k->stats)
        k->stats = calloc(1, sizeof(*k->stats));
    return k->stats;
}

/* The key at 0-based position r in name order, or NULL.  O(height). */
static struct key *index_select(struct key *t, size_t r)
{
    while (t) {
        size_t l = ord_size(t->ord_l);
        if (r < l) {
            t = t->ord_l;
        } else if (r == l) {
            return t;
        } else {
            r -= l + 1;
            t = t->ord_r;
        }
    }
    return NULL;
}

/* k was just inserted: keep stats blocks on the first `cap` + 1 keys in
 * name order only (one more than metrics.max_keys: a key named "_other"
 * among them has no series).  If k is among them it gets a block (none
 * when malloc fails: its figures then only reach the totals), and the
 * key it pushed past them gives its block up.  ks->stats_edge, the last
 * of them, makes the common case -- a new key past them -- one compare;
 * otherwise O(height). */
static void stats_on_insert(struct keys *ks, struct key *k, size_t cap)
{
    struct key *out = NULL, *e;

    if (cap != ks->stats_cap) { /* a reload changed metrics.max_keys */
        ks->stats_cap = cap;
        ks->stats_edge = NULL;
    }
    e = ks->stats_edge;
    if (ks->count > cap + 1) {
        if (e ? name_cmp(k->name, k->len, e->name, e->len) > 0
              : index_rank(ks->root, k->name, k->len) > cap) {
            if (!e)
                ks->stats_edge = index_select(ks->root, cap);
            return; /* past them */
        }
        out = index_select(ks->root, cap + 1); /* pushed past them */
    }
    k->stats = calloc(1, sizeof(*k->stats));
    if (out) {
        free(out->stats);
        out->stats = NULL;
    }
    ks->stats_edge = ks->count > cap ? index_select(ks->root, cap) : NULL;
}

struct key_ext *keys_ext(struct key *k)
{
    if (!k->x)
        k->x = calloc(1, sizeof(*k->x));
    return k->x;
}

int keys_set_reason(struct key *k, const char *reason, size_t n)
{
    if (!reason)
        n = 0;
    if (n > KEY_REASON_MAX)
        n = KEY_REASON_MAX;
    if (!n && !k->x)
        return 0; /* none, and none kept */
    if (!keys_ext(k))
        return RD_ENOMEM;
    memcpy(k->x->force_reason, reason ? reason : "", n);
    k->x->force_reason[n] = '\0';
    return 0;
}

int keys_get(struct keys *ks, const char *name, size_t len,
             const struct config *c, uint64_t now_ms, struct key **out)
{
    const struct policy *pol;
    struct key *k;
    size_t b;

    if (!keys_valid(name, len))
        return RD_EINVAL;
    if ((k = keys_find(ks, name, len))) {
        *out = k;
        return 0;
    }
    if (ks->count >= ks->max)
        return RD_EKEYS;
    pol = config_match(c, name_z(name, len));
    k = calloc(1, keys_name_end(len) + breaker_window_bytes(&pol->breaker));
    if (!k)
        return RD_ENOMEM;
    memcpy(k->name, name, len);
    k->len = (uint8_t)len;
    k->policy = pol;
    breaker_init(&k->br, &pol->breaker, (char *)k + keys_name_end(len),
                 hash(name, len) ^ now_ms, now_ms);
    b = hash(name, len) & (ks->nbuckets - 1);
    k->next = ks->buckets[b];
    ks->buckets[b] = k;
    ks->root = index_insert(ks->root, k);
    ks->count++;
    stats_on_insert(ks, k, c->metrics_max_keys);
    *out = k;
    return 0;
}

const double keys_latency_bounds[KEY_LATENCY_BUCKETS] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

/*
 * A latency in one byte: below 32 ms exactly, above as 16 steps per power
 * of two (an error under 1/32 of the value), up to the 65535 ms the ring
 * has always saturated at.  The code keeps the order of the values, so a
 * percentile of codes is the code of the percentile.
 */
uint8_t keys_latency_code(uint64_t ms)
{
    unsigned e;

    if (ms > UINT16_MAX)
        ms = UINT16_MAX;
    if (ms < 32)
        return (uint8_t)ms;
    e = 63 - (unsigned)__builtin_clzll(ms); /* 5..15 */
    return (uint8_t)(32 + (e - 5) * 16 + ((ms >> (e - 4)) & 15));
}

uint64_t keys_latency_value(uint8_t code)
{
    unsigned e, m;
    uint64_t w;

    if (code < 32)
        return code;
    e = (unsigned)(code - 32) / 16 + 5;
    m = (unsigned)(code - 32) % 16;
    w = (uint64_t)1 << (e - 4); /* the step's width */
    return (16 + m) * w + (w - 1) / 2; /* its middle */
}

unsigned keys_latency_bucket(uint64_t latency_ms)
{
    unsigned i = 0;

    while (i < KEY_LATENCY_BUCKETS &&
           (double)latency_ms > keys_latency_bounds[i])
        i++;
    return i;
}

void keys_add_latency(struct key *k, uint64_t latency_ms)
{
    if (!k->lat_ms)
        k->lat_ms = malloc(KEY_LATENCY_SAMPLES);
    if (k->lat_ms) {
        k->lat_ms[k->lat_pos] = keys_latency_code(latency_ms);
        k->lat_pos = (uint16_t)((k->lat_pos + 1) % KEY_LATENCY_SAMPLES);
        if (k->lat_n < KEY_LATENCY_SAMPLES)
            k->lat_n++;
    }
    if (!k->stats)
        return;
    k->stats->lat_hist[keys_latency_bucket(latency_ms)]++;
    k->stats->lat_sum_ms += latency_ms;
}

_Static_assert(KEY_LATENCY_SAMPLES <= 255, "codes are counted in uint8_t");

void keys_latency_percentiles(const struct key *k, unsigned p1, unsigned p2,
                              uint64_t *v1, uint64_t *v2)
{
    uint8_t cnt[256];
    size_t r[2], acc = 0, i;
    unsigned c = 0, j;
    uint64_t *out[2] = {v1, v2};

    *v1 = *v2 = 0;
    if (k->lat_n == 0)
        return;
    /* Nearest rank: the smallest sample >= p% of the samples.  One count
     * of the codes serves both ranks: O(samples + 256), no sort (two
     * qsorts per key once made a status page of 1000 keys cost 12 ms). */
    r[0] = ((size_t)p1 * k->lat_n + 99) / 100;
    r[1] = ((size_t)p2 * k->lat_n + 99) / 100;
    memset(cnt, 0, sizeof(cnt));
    for (i = 0; i < k->lat_n; i++)
        cnt[k->lat_ms[i]]++;
    for (j = 0; j < 2; j++) {
        size_t want = r[j] ? r[j] : 1;
        while (c < 255 && acc + cnt[c] < want)
            acc += cnt[c++];
        *out[j] = keys_latency_value((uint8_t)c);
    }
}
