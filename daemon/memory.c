/*
 * memory.c - worst-case memory of a configuration (see memory.h).
 *
 * Each pool is costed from the struct the daemon really allocates, so a
 * field added to struct key or struct permit moves the figure.  What is
 * private to another module comes through a function (admit_parked_bytes)
 * or is restated here with the place it mirrors named beside it.
 */
#include "memory.h"

#include <stdio.h>

#include "admit.h"
#include "analytics.h"
#include "breaker.h"
#include "config.h"
#include "keys.h"
#include "permit.h"
#include "server.h"

/* A malloc'd block costs its size rounded up to 16 plus a 16-byte header
 * (glibc on 64-bit; an estimate elsewhere). */
#define MALLOC_OVERHEAD 16
/* server.c: READ_SLACK, input room beyond one maximal frame. */
#define CONN_READ_SLACK 4096
/* struct conn (private to server.c: libuv pipe, scanner, two output
 * buffers' headers, a write request) with its malloc header: measured
 * below 1 KiB; costed as 2 KiB. */
#define CONN_STATE_BYTES 2048
/* keys.c keys_init: hash buckets, a power of two >= max_keys, from 64 up
 * to 2^20. */
#define KEYS_MIN_BUCKETS 64
#define KEYS_MAX_BUCKETS ((uint64_t)1 << 20)

static uint64_t malloc_cost(uint64_t bytes)
{
    return ((bytes + 15) & ~(uint64_t)15) + MALLOC_OVERHEAD;
}

/* One key of policy p at its largest: the struct, a name of KEY_MAX bytes
 * and its window, one allocation (keys_get); its latency ring and rare
 * parts (keys.c) and a global limiter's lease record (admit_prepare),
 * each allocated on first use. */
static uint64_t key_cost(const struct policy *p)
{
    return malloc_cost(keys_name_end(KEY_MAX) +
                       breaker_window_bytes(&p->breaker)) +
           malloc_cost(KEY_LATENCY_SAMPLES) +
           malloc_cost(sizeof(struct key_ext)) +
           (admit_policy_leased(p) ? malloc_cost(admit_lease_bytes()) : 0);
}

static uint64_t hash_buckets(uint64_t max_keys)
{
    uint64_t n = KEYS_MIN_BUCKETS;

    while (n < max_keys && n < KEYS_MAX_BUCKETS)
        n <<= 1;
    return n;
}

void memory_estimate(const struct config *c, struct memory_estimate *m)
{
    uint64_t part[5], nstats;
    size_t i;

    m->key_policy = &c->policies[0];
    m->key_bytes = key_cost(&c->policies[0]);
    for (i = 1; i < c->npolicies; i++) {
        uint64_t b = key_cost(&c->policies[i]);
        if (b > m->key_bytes) {
            m->key_bytes = b;
            m->key_policy = &c->policies[i];
        }
    }
    /* The keys, their hash buckets, and the metrics series of the first
     * metrics.max_keys + 1 (struct key_stats, keys.c) -- of at most
     * max_keys keys: a metrics.max_keys above max_keys ("every key")
     * costs no more than max_keys blocks. */
    nstats = (uint64_t)c->metrics_max_keys + 1;
    if (nstats > c->max_keys)
        nstats = c->max_keys;
    m->keys_bytes = (uint64_t)c->max_keys * m->key_bytes +
                    malloc_cost(hash_buckets(c->max_keys) * sizeof(void *)) +
                    nstats * malloc_cost(sizeof(struct key_stats));
    /* A permit, its expiry-heap entry, and a share of the msgid index's
     * buckets (one per four permits, see msgidx_init). */
    m->permits_bytes =
        malloc_cost((uint64_t)c->max_permits *
                    (sizeof(struct permit) + sizeof(void *))) +
        malloc_cost((uint64_t)c->max_permits / 4 * sizeof(void *));
    m->parked_bytes =
        malloc_cost((uint64_t)c->max_parked * (uint64_t)admit_parked_bytes());
    /* Input: one maximal frame plus slack.  Output: what a client may
     * leave unread (max_output_bytes) plus the batch being packed while
     * that is in flight (server.c stops taking requests above
     * SERVER_OUT_HIGH). */
    m->conn_bytes =
        CONN_STATE_BYTES +
        malloc_cost((uint64_t)c->max_frame_bytes + CONN_READ_SLACK) +
        malloc_cost((uint64_t)c->max_output_bytes) +
        malloc_cost(SERVER_OUT_HIGH);
    m->conns_bytes = (uint64_t)c->max_clients * m->conn_bytes;
    part[MEMORY_KEYS] = m->keys_bytes;
    part[MEMORY_PERMITS] = m->permits_bytes;
    part[MEMORY_PARKED] = m->parked_bytes;
    part[MEMORY_CONNS] = m->conns_bytes;
    /* Error analytics: every series of errors.max_series, each on a key of
     * its own (the worst case), plus the recent-error ring. */
    m->analytics_bytes =
        (uint64_t)c->errors_max_series *
            (analytics_series_bytes() + analytics_key_bytes()) +
        (uint64_t)c->errors_recent * 2048;
    part[MEMORY_ANALYTICS] = m->analytics_bytes;
    m->total_bytes = 0;
    m->biggest = MEMORY_KEYS;
    for (i = 0; i < 5; i++) {
        m->total_bytes += part[i];
        if (part[i] > part[m->biggest])
            m->biggest = (enum memory_part)i;
    }
}

uint64_t memory_mib(const struct memory_estimate *m)
{
    return (m->total_bytes + (1u << 20) - 1) >> 20;
}

static double kib(uint64_t b)
{
    return (double)b / 1024.0;
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

/* "policy 'binance.*' with a 3600 s time window" */
static int key_words(const struct memory_estimate *m, char *buf, size_t cap)
{
    const struct breaker_conf *b = &m->key_policy->breaker;

    return snprintf(buf, cap, "policy '%s' with a %u%s window",
                    m->key_policy->pattern, b->window_size,
                    b->window_time ? " s time" : "-call count");
}

int memory_describe(const struct memory_estimate *m, const struct config *c,
                    char *buf, size_t cap)
{
    char words[256];

    key_words(m, words, sizeof(words));
    return snprintf(buf, cap,
                    "%.1f MiB: keys %.1f MiB (%u x %.1f KiB, %s), "
                    "permits %.1f MiB (%u), parked %.1f MiB (%u), "
                    "connections %.1f MiB (%u x %.1f KiB), "
                    "error analytics %.1f MiB (%u series)",
                    mib(m->total_bytes), mib(m->keys_bytes), c->max_keys,
                    kib(m->key_bytes), words, mib(m->permits_bytes),
                    c->max_permits, mib(m->parked_bytes), c->max_parked,
                    mib(m->conns_bytes), c->max_clients, kib(m->conn_bytes),
                    mib(m->analytics_bytes), c->errors_max_series);
}

int memory_check(const struct config *c, char *err, size_t cap)
{
    struct memory_estimate m;
    char why[320];
    const char *fix = "";

    memory_estimate(c, &m);
    if (memory_mib(&m) <= c->max_memory_mb)
        return 0;
    switch (m.biggest) {
    case MEMORY_KEYS: {
        char words[256];
        key_words(&m, words, sizeof(words));
        snprintf(why, sizeof(why), "%u keys x %.1f KiB for %s", c->max_keys,
                 kib(m.key_bytes), words);
        fix = "max_keys or that window";
        break;
    }
    case MEMORY_PERMITS:
        snprintf(why, sizeof(why), "%u permits (max_permits) x %zu B",
                 c->max_permits, sizeof(struct permit));
        fix = "max_permits";
        break;
    case MEMORY_PARKED:
        snprintf(why, sizeof(why), "%u parked requests (max_parked) x %zu B",
                 c->max_parked, admit_parked_bytes());
        fix = "max_parked";
        break;
    case MEMORY_CONNS:
        snprintf(why, sizeof(why),
                 "%u clients (max_clients) x %.1f KiB of buffers for "
                 "max_frame_bytes and max_output_bytes",
                 c->max_clients, kib(m.conn_bytes));
        fix = "max_clients, max_frame_bytes or max_output_bytes";
        break;
    case MEMORY_ANALYTICS:
        snprintf(why, sizeof(why),
                 "%u error series (errors.max_series) x %.1f KiB",
                 c->errors_max_series,
                 kib(analytics_series_bytes() + analytics_key_bytes()));
        fix = "errors.max_series";
        break;
    }
    snprintf(err, cap,
             "worst case %llu MiB (%s) exceeds max_memory_mb %llu; lower "
             "%s, or raise max_memory_mb",
             (unsigned long long)memory_mib(&m), why,
             (unsigned long long)c->max_memory_mb, fix);
    return -1;
}
