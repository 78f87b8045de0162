/*
 * keys.c - key registry: chained hash table with a fixed bucket count
 * chosen from max_keys, so it never rehashes on the request path.
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
    ks->count = 0;
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
            free(k);
        }
    }
    free(ks->buckets);
    ks->buckets = NULL;
}

int keys_valid(const char *name, size_t len)
{
    size_t i;

    if (len == 0 || len > KEY_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
              ch == '-'))
            return 0;
    }
    return 1;
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

/* name[0..len) as a C string (len <= KEY_MAX is checked by the caller). */
static const char *name_z(const char *name, size_t len)
{
    static char buf[KEY_MAX + 1];

    memcpy(buf, name, len);
    buf[len] = '\0';
    return buf;
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
    k = calloc(1, sizeof(*k) + breaker_window_bytes(&pol->breaker));
    if (!k)
        return RD_ENOMEM;
    memcpy(k->name, name, len);
    k->len = (uint8_t)len;
    k->policy = pol;
    breaker_init(&k->br, &pol->breaker, k + 1, hash(name, len) ^ now_ms,
                 now_ms);
    b = hash(name, len) & (ks->nbuckets - 1);
    k->next = ks->buckets[b];
    ks->buckets[b] = k;
    ks->count++;
    *out = k;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    const struct key *x = *(struct key *const *)a;
    const struct key *y = *(struct key *const *)b;

    return strcmp(x->name, y->name);
}

size_t keys_select(const struct keys *ks, const char *prefix, size_t plen,
                   struct key **out, size_t cap)
{
    size_t i, total = 0, n = 0;

    for (i = 0; i < ks->nbuckets; i++) {
        struct key *k;
        for (k = ks->buckets[i]; k; k = k->next) {
            if (prefix &&
                !(k->len >= plen && memcmp(k->name, prefix, plen) == 0 &&
                  (k->len == plen || k->name[plen] == '.')))
                continue;
            total++;
            if (n < cap)
                out[n++] = k;
        }
    }
    qsort(out, n, sizeof(*out), by_name);
    return total;
}

void keys_add_latency(struct key *k, uint64_t latency_ms)
{
    k->lat_ms[k->lat_pos] =
        latency_ms > UINT16_MAX ? UINT16_MAX : (uint16_t)latency_ms;
    k->lat_pos = (uint16_t)((k->lat_pos + 1) % KEY_LATENCY_SAMPLES);
    if (k->lat_n < KEY_LATENCY_SAMPLES)
        k->lat_n++;
}

static int by_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

uint64_t keys_latency_percentile(const struct key *k, unsigned p)
{
    uint16_t v[KEY_LATENCY_SAMPLES];
    size_t i;

    if (k->lat_n == 0)
        return 0;
    memcpy(v, k->lat_ms, sizeof(v[0]) * k->lat_n);
    qsort(v, k->lat_n, sizeof(v[0]), by_u16);
    /* Nearest rank: the smallest sample >= p% of the samples. */
    i = ((size_t)p * k->lat_n + 99) / 100;
    return v[i ? i - 1 : 0];
}
