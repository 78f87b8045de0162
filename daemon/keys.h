/*
 * keys.h - the key registry: every protected dependency ("binance.orders")
 * with its policy and breaker.  Keys are created on first use by acquire,
 * report, force and reset, bounded by max_keys; lookups are O(1) by hash.
 * Every key is also in an ordered index by name (an AVL tree with subtree
 * sizes, intrusive in struct key), so that status can page through keys
 * and count a prefix in O(log n + page), never O(keys).
 * No I/O; memory is allocated when a key is created, and for the parts
 * few keys use (latency ring, struct key_ext, struct key_stats) on their
 * first use.
 */
#ifndef RESIL_KEYS_H
#define RESIL_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "bulkhead.h"
#include "config.h"
#include "heartbeat.h"
#include "error.h"
#include "limiter.h"

#define KEY_MAX 128             /* bytes in a key name */
#define KEY_REASON_MAX 128      /* bytes of an operator's force reason kept */
#define KEY_LATENCY_SAMPLES 128 /* latencies kept for p50/p99 */
#define KEY_MAX_ANCESTORS 8     /* ancestor limiters checked per acquire */
#define KEY_LATENCY_BUCKETS 13  /* metrics histogram bounds, see keys.c */

struct parked;
struct lease;

/*
 * The parts of a key few keys use, allocated on first use (keys_ext) and
 * freed with the key: the queue of a key that parks requests, an
 * operator's force reason, the limiter of critical probes through an open
 * breaker (policies with critical_probe_per_s), a shadow policy's count.
 */
struct key_ext {
    struct parked *q_head, *q_tail;    /* FIFO of parked acquires */
    struct key *wait_prev, *wait_next; /* on resild.waiting while q_len */
    struct limiter crit_lim;           /* critical_probe_per_s through open */
    uint64_t shadow_denied; /* shadow policy: denials turned allows */
    uint8_t crit_ready;     /* crit_lim set up (admit_prepare) */
    char force_reason[KEY_REASON_MAX + 1]; /* "" when none */
};

/*
 * A key: what every key needs for every decision, ordered by size so the
 * struct has no holes (a host may hold a million: see README, "Memory").
 */
struct key {
    struct key *next;            /* hash chain */
    const struct policy *policy; /* borrowed from the live config */
    struct lease *lease; /* a global limiter's tokens (admit.c); NULL unless
                          * its policy was ever global with a limiter;
                          * freed with the key */
    struct key *up; /* the nearest ancestor with a limiter (borrowed);
                     * its up the next: nanc of them in all */
    /* Name index (keys.c): AVL tree in byte order of name. */
    struct key *ord_l, *ord_r; /* smaller / larger names */
    uint64_t retry_prev_ms;    /* last advised delay (decorrelated) */
    uint64_t rng;              /* xorshift state for retry jitter */
    uint8_t *lat_ms; /* last KEY_LATENCY_SAMPLES latencies as one-byte
                      * codes (keys_latency_code): a ring allocated on the
                      * first reported latency */
    /* The core's bookkeeping (core.c). */
    struct key *unwell_prev, *unwell_next; /* on resild.unwell */
    uint64_t due_ms;         /* next time-driven change (core.c); 0: none */
    struct key *crit_next;   /* on resild.critical */
    struct key_ext *x;       /* the rare parts, or NULL (above) */
    struct key_stats *stats; /* per-key metrics series, or NULL (below) */
    struct breaker br;
    /* Admission (admit.c).  lim is used when the policy has a limiter;
     * otherwise only its pause (a 429 on a key with no limiter). */
    struct limiter lim;
    struct heartbeat hb;  /* policy with a heartbeat */
    uint32_t outstanding; /* permits granted, not yet released */
    struct bulkhead bh;
    uint32_t q_len;          /* parked acquires on x->q_head */
    uint32_t ord_size;       /* keys in this subtree, self included */
    uint32_t due_pos;        /* index + 1 in resild.due, 0: not there */
    uint16_t lat_pos, lat_n; /* ring position, samples held */
    uint8_t nanc;
    uint8_t admit_ready; /* ancestors resolved */
    uint8_t ord_h;       /* height of this subtree, leaf = 1 */
    uint8_t unwell;      /* on resild.unwell */
    uint8_t core_ready;  /* lists joined */
    uint8_t tally;       /* what resild.tot counts k as (core.c) */
    uint8_t window_own;  /* the breaker's window memory was allocated on
                          * its own by a rebind whose layout differed (0:
                          * it follows the name, as allocated at creation) */
    uint8_t len;
    /* The name, NUL-terminated, stored once: the allocation is as long
     * as the name.  The breaker's window memory follows it (same
     * allocation, aligned; see keys_get). */
    char name[];
};

/* k's force reason ("" when none). */
static inline const char *key_force_reason(const struct key *k)
{
    return k->x ? k->x->force_reason : "";
}

/* k's rare parts, allocated (zeroed) now if it has none; NULL when no
 * memory can be had. */
struct key_ext *keys_ext(struct key *k);

/*
 * What a key's own metrics series count.  Only keys that can have their
 * own series -- the first metrics.max_keys in name order -- keep one (the
 * metrics page shows every other key in one "_other" row, from the core's
 * running totals): a key gets it when it is made among the first ones
 * (keys_get), and gives it up when a new key pushes it past them.  Keys
 * are never removed, so a key past them never comes back; one that gains
 * a series on a reload that raised metrics.max_keys gets its block then
 * (keys_stats), counting from then.  A million keys keep a thousand of
 * these, not a million.
 */
struct key_stats {
    uint64_t decisions[8]; /* acquire answers by enum admit_reason */
    /* Reported latencies for the metrics histogram: counts per bucket of
     * KEY_LATENCY_BOUNDS (the last: above every bound), and their sum. */
    uint32_t lat_hist[KEY_LATENCY_BUCKETS + 1];
    uint64_t lat_sum_ms;
};

struct keys {
    struct key **buckets; /* nbuckets chains */
    size_t nbuckets;      /* power of two */
    struct key *root;     /* name index (see struct key's ord_*) */
    size_t count;
    size_t max; /* max_keys */
    /* The last key that keeps a stats block (position stats_cap in name
     * order; NULL while fewer keys exist), and metrics.max_keys it was
     * found for (keys.c stats_on_insert). */
    struct key *stats_edge;
    size_t stats_cap;
};

int keys_init(struct keys *ks, size_t max_keys);
void keys_free(struct keys *ks);

/* 1 if name[0..len) is a valid key: [A-Za-z0-9._:-]{1,128}. */
int keys_valid(const char *name, size_t len);

/* Existing key or NULL.  Never creates. */
struct key *keys_find(const struct keys *ks, const char *name, size_t len);

/*
 * Existing key, or a new one bound to its policy in c with a closed breaker.
 * Returns 0 and *out, or RD_EINVAL (bad name), RD_EKEYS (max_keys),
 * RD_ENOMEM.
 */
int keys_get(struct keys *ks, const char *name, size_t len,
             const struct config *c, uint64_t now_ms, struct key **out);

/*
 * One page of keys, in name order (byte order: memcmp, then the shorter
 * first).  A key matches prefix[0..plen) when it equals it or starts with
 * "prefix." (all keys when prefix is NULL).  Writes to out[0..cap) the
 * matching keys strictly after after[0..alen) (NULL: from the first; need
 * not be an existing key) and returns how many were written.  *total gets
 * the number of keys matching prefix over all pages; *more is 1 when a
 * matching key follows out[n-1] (with n == 0: follows after), else 0.
 * prefix and after are any bytes (no NUL needed).  Keys are borrowed.
 * O(log n + cap), no allocation; a prefix never scans non-matching keys.
 */
size_t keys_page(const struct keys *ks, const char *prefix, size_t plen,
                 const char *after, size_t alen, struct key **out, size_t cap,
                 size_t *total, int *more);

/*
 * Checks the name index (order, sizes, heights, AVL balance, one entry per
 * key) and gives its height (0 when empty).  Returns 0 when sound, -1 if
 * not.  O(n): for tests only.
 */
int keys_index_check(const struct keys *ks, unsigned *height);

/* Upper bounds (ms) of the latency histogram's buckets. */
extern const double keys_latency_bounds[KEY_LATENCY_BUCKETS];

/* The metrics histogram bucket of a latency: the first of
 * keys_latency_bounds it does not exceed (KEY_LATENCY_BUCKETS: above all). */
unsigned keys_latency_bucket(uint64_t latency_ms);

/* Remember one reported latency (ring for p50/p99, histogram).  The ring
 * is allocated on the first one; when that fails the sample is only in
 * the histogram. */
void keys_add_latency(struct key *k, uint64_t latency_ms);

/* Keep reason[0..n) (cut to KEY_REASON_MAX; NULL or n == 0: none) as k's
 * force reason (in k->x).  When no memory can be had the reason is lost:
 * the force itself never depends on it.  Returns 0 or RD_ENOMEM. */
int keys_set_reason(struct key *k, const char *reason, size_t n);

/* Bytes from a key's start to the end of a name of len bytes (its NUL
 * included), rounded up to 8: where its breaker window starts. */
size_t keys_name_end(size_t len);

/* k's stats block, allocated now if it has none (a key that gained its
 * own metrics series); NULL when no memory can be had. */
struct key_stats *keys_stats(struct key *k);

/* Free a key and what it owns (lease, window, ring, rare parts, stats). */
void keys_free_key(struct key *k);

/* A latency in ms as kept in the ring: exact below 32 ms, within 1/32
 * above, saturated at 65535 ms; order-preserving.  keys_latency_value
 * gives a code's value back (the middle of its step). */
uint8_t keys_latency_code(uint64_t ms);
uint64_t keys_latency_value(uint8_t code);

/* The p1-th and p2-th percentiles (0..100, p1 <= p2) of the kept
 * latencies (as keys_latency_value gives them back), nearest rank; 0
 * when none.  O(samples + 256), no sort. */
void keys_latency_percentiles(const struct key *k, unsigned p1, unsigned p2,
                              uint64_t *v1, uint64_t *v2);

#endif
