/*
 * analytics.h - error analytics (SPEC §6), pure: failure counters per key
 * and error class in one-second buckets over 15 minutes and one-minute
 * buckets over 24 hours, a ring of recent errors, and what the `errors`
 * method computes from them (totals, top pairs, trends, lead/lag
 * correlations, predicted breaker trips).  Every function takes the
 * monotonic now_ms; no I/O, no clock reads, no uv, no msgpack, no globals.
 *
 * Series.  A series is one (key, class, severity): a class always reported
 * with one severity makes one series per key (the usual case); a report
 * overriding the severity makes a second one.  A series is created at the
 * first failure of its key and class, so a key that never failed costs
 * nothing here (a success costs one hash probe that finds nothing).  At
 * max_series the series whose last failure is the oldest is evicted (and
 * counted) to make room; a key whose last series goes is forgotten.
 *
 * Memory, worst case (x86-64; analytics_series_bytes() and
 * analytics_key_bytes() give the exact figures): one series is its two
 * rings, 900 x 2 bytes (seconds, a count saturates at 65535 per second) +
 * 1440 x 4 bytes (minutes), about 7.6 KiB; one key adds about 0.5 KiB (its
 * name and 60 s of calls/failures for predictions).  So max_series 10,000
 * costs at most about 80 MiB, plus the recent ring (recent x about 1.6 KiB,
 * allocated at the first failure).
 *
 * Rings rotate lazily: a bucket is cleared when time first moves past it,
 * and a gap longer than the ring clears the whole ring at once, so an idle
 * series costs no work.
 */
#ifndef RESIL_ANALYTICS_H
#define RESIL_ANALYTICS_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define ANALYTICS_SECONDS 900     /* 1 s buckets: 15 minutes */
#define ANALYTICS_MINUTES 1440    /* 1 min buckets: 24 hours */
#define ANALYTICS_PRED_SECONDS 60 /* per-key calls/failures for predictions */
#define ANALYTICS_MAX_SERIES_DEFAULT 10000
#define ANALYTICS_MAX_SERIES_MAX 1000000
#define ANALYTICS_RECENT_DEFAULT 1000
#define ANALYTICS_RECENT_MAX 100000
#define ANALYTICS_CLASSES 256    /* class names interned; the rest "_other" */
#define ANALYTICS_TOP_MAX 100    /* `top` (and recent, trends) per call */
#define ANALYTICS_BY_KEY_MAX 100 /* by_key entries per answer */
#define ANALYTICS_CORR_KEYS 32   /* keys correlated per call (the busiest) */
#define ANALYTICS_CORR_MAX 10    /* pairs reported */
#define ANALYTICS_CORR_MIN_R 0.5 /* weaker pairs are not reported */
#define ANALYTICS_LAG_MAX_S 60   /* lags tried: -60..+60 s */
#define ANALYTICS_PRED_MAX 32    /* predictions per answer */
#define ANALYTICS_PRED_HORIZON_S 900 /* trips further out are not predicted */
#define ANALYTICS_WINDOW_MAX_S 86400
#define ANALYTICS_RECENT_CONTEXT_MAX OUTCOME_CONTEXT_MAX

struct an_key;
struct an_series;
struct an_corr_scratch;

/* One entry of the recent-error ring: copies, bounded, UTF-8 valid text
 * (an invalid byte is stored as '?'; a cut never splits a character). */
struct an_recent {
    uint64_t at_ms; /* monotonic */
    char key[129];
    char cls[OUTCOME_CLASS_MAX + 1];
    uint8_t severity, transient, source, kind;
    uint16_t message_len, cid_len, context_len;
    char message[OUTCOME_MESSAGE_MAX + 1];
    char cid[OUTCOME_CID_MAX + 1];
    uint8_t context[ANALYTICS_RECENT_CONTEXT_MAX]; /* one msgpack map */
};

struct analytics_conf {
    uint32_t max_series; /* key x class series kept (>= 1) */
    uint32_t recent;     /* recent-error ring entries (>= 1) */
};

struct analytics {
    struct analytics_conf conf;
    uint64_t seed;
    struct an_key **kb; /* key hash: nkb chains, by id */
    size_t nkb;
    size_t nkeys;
    size_t nseries;
    struct an_series *lru_head, *lru_tail; /* by last failure, oldest first */
    char classes[ANALYTICS_CLASSES][OUTCOME_CLASS_MAX + 1];
    uint32_t nclasses;
    struct an_recent *recent; /* conf.recent entries, at the first failure */
    uint64_t recent_next;     /* entries ever written */
    uint64_t evicted;         /* series evicted at max_series */
    uint64_t failures;        /* failure and unknown outcomes seen */
    uint64_t alloc_failed;    /* failures not counted: out of memory */
    size_t bytes;             /* allocated now, all of it */
    /* Query scratch, sized max_series at init (no allocation per call). */
    struct an_series **scratch;
    struct an_key **kscratch;
    struct an_corr_scratch *corr; /* ~0.6 MiB, at the first query */
    uint32_t epoch; /* query generation for the keys' scratch sums */
};

/* 0, or -1 when out of memory (nothing to free then). */
int analytics_init(struct analytics *a, const struct analytics_conf *c,
                   uint64_t seed);
void analytics_free(struct analytics *a);

/*
 * One outcome of key id (any stable pointer: the daemon passes its struct
 * key, which lives as long as the daemon) named name[0..len).  Failures and
 * unknowns are counted in their series and copied to the recent ring;
 * successes and failures count as calls of a key that has a series
 * (predictions need the rate).  Everything else is ignored.
 */
void analytics_outcome(struct analytics *a, const void *id, const char *name,
                       size_t len, const struct outcome *o, uint64_t now_ms);

/* The sink for core_add_sink (ctx: the struct analytics): EV_OUTCOME. */
void analytics_sink(void *ctx, const struct event *ev);

size_t analytics_series_bytes(void);
size_t analytics_key_bytes(void);

/* Trend direction. */
enum an_direction { AN_FLAT, AN_UP, AN_DOWN };
const char *analytics_direction_name(enum an_direction d);

/*
 * Least-squares fit of y[0..n) against 0..n-1: slope per bucket, r2 (the
 * fraction of variance explained, 0..1), and the direction by the
 * significance rule: flat unless n >= 3, the series holds at least
 * AN_TREND_MIN_EVENTS events, the slope's t statistic (slope / its
 * standard error) is at least AN_TREND_T in size, and the fitted change
 * across the window is at least AN_TREND_MIN_CHANGE of the mean level.
 * So noise around a constant rate is flat (|t| >= 3 happens by chance
 * about 0.3% of the time), and so is a statistically real but negligible
 * drift.  O(n).
 */
#define AN_TREND_MIN_EVENTS 5
#define AN_TREND_T 3.0
#define AN_TREND_MIN_CHANGE 0.2
struct an_fit {
    double slope, intercept, r2, t;
    enum an_direction dir;
};
void analytics_fit(const double *y, size_t n, struct an_fit *f);

/*
 * The breaker of key id, for predictions: 1 with its failure rate now and
 * its failure_rate_threshold (both percent) if it is closed and judged by
 * a rate; 0 otherwise (open, forced, no rate rule).
 */
typedef int (*analytics_breaker_fn)(void *ctx, const void *id, double *rate_pct,
                                    double *threshold_pct);

struct an_prediction {
    const void *id;
    const char *key; /* borrowed until the next analytics_outcome */
    double rate_pct, threshold_pct;
    double slope_pct_per_s;
    uint64_t eta_s; /* seconds until the rate crosses the threshold */
};

/*
 * Keys whose failure rate rises and will cross their breaker's threshold
 * within ANALYTICS_PRED_HORIZON_S: the slope is fitted over the key's
 * failure rate per second (failures / calls, seconds with calls) for the
 * last ANALYTICS_PRED_SECONDS, needs at least 10 such seconds and a
 * significant rise (t >= AN_TREND_T); eta = (threshold - rate) / slope,
 * from the breaker's own rate.  Only keys that failed in that span are
 * looked at.  Up to max into out, soonest first; returns the count.
 * O(keys x ANALYTICS_PRED_SECONDS).
 */
size_t analytics_predict(const struct analytics *a, uint64_t now_ms,
                         analytics_breaker_fn fn, void *ctx,
                         struct an_prediction *out, size_t max);

/* Failures of key id over the last 60 s with severity >= min_severity
 * (the alert rate).  O(series of the key x 60). */
uint64_t analytics_key_rate(const struct analytics *a, const void *id,
                            int min_severity, uint64_t now_ms);

/* Call fn for each key that failed within the last since_ms, with its id
 * and name (borrowed for the call).  fn must not change a. */
void analytics_each_key(const struct analytics *a, uint64_t since_ms,
                        uint64_t now_ms,
                        void (*fn)(void *ctx, const void *id, const char *name,
                                   size_t len),
                        void *ctx);

/* --- the `errors` query --- */

struct analytics_query {
    const char *key; /* exact key, or NULL */
    size_t key_len;
    const char *prefix; /* the key itself and keys below "prefix.", or NULL */
    size_t prefix_len;
    uint64_t window_s; /* 1..ANALYTICS_WINDOW_MAX_S */
    int min_severity;  /* enum severity; 0 = all */
    uint32_t top;      /* 1..ANALYTICS_TOP_MAX */
};

struct an_count {
    const char *name; /* key or class, borrowed */
    uint64_t n;
};

struct an_pair {
    const char *key, *cls; /* borrowed */
    int severity;
    uint64_t n;
    struct an_fit fit;    /* over the window's buckets (trends) */
    double slope_per_min; /* failures per minute, per minute */
};

struct an_corr {
    const char *leader, *follower; /* borrowed; lag 0: in key order */
    int lag_s;                     /* follower's errors come lag_s later */
    double r;                      /* Pearson at that lag */
};

struct analytics_result {
    uint64_t window_s;
    uint64_t total;
    double rate_per_min;
    uint64_t by_severity[4];
    struct an_count by_class[ANALYTICS_CLASSES + 1];
    size_t nby_class;
    struct an_count by_key[ANALYTICS_BY_KEY_MAX];
    size_t nby_key, keys_total; /* shown, matched */
    struct an_pair top[ANALYTICS_TOP_MAX];
    size_t ntop;
    const struct an_recent *recent[ANALYTICS_TOP_MAX]; /* newest first */
    size_t nrecent;
    struct an_corr corr[ANALYTICS_CORR_MAX];
    size_t ncorr;
    struct an_prediction pred[ANALYTICS_PRED_MAX];
    size_t npred;
    uint64_t series, evicted; /* totals, for the reader */
};

/*
 * The `errors` answer for q at now_ms into *r (pointers borrowed until the
 * next analytics_outcome).  Cost, with S series, K keys matched: O(S x B)
 * to count (B: the buckets of the window a series was active in, at most
 * 900 or 1440), O(S x top) to rank, O(top x B) for trends, O(N^2 x 121 x
 * L) for correlations (N <= ANALYTICS_CORR_KEYS busiest keys, L <= 900
 * seconds of the window), O(K x 60) for predictions (fn may be NULL: none).
 */
void analytics_query(struct analytics *a, const struct analytics_query *q,
                     uint64_t now_ms, analytics_breaker_fn fn, void *ctx,
                     struct analytics_result *r);

#endif
