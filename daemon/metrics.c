/*
 * metrics.c - the `metrics` page (see metrics.h).
 *
 * Must not: change any state (it reads counters and per-key state as they
 * are; a breaker whose open time ran out shows open until it is next
 * looked at or the tick announces it), allocate beyond the page buffer, or
 * read a clock (now_ms comes from the caller).
 */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "core.h"
#include "keys.h"

#define PAGE 256 /* keys fetched from the name index at a time */

static uint64_t max_keys_of(const struct resild *d)
{
    return d->cfg.metrics_max_keys;
}

/*
 * Call fn for each key with its own series: the first max_keys keys in
 * name order, but a key named "_other" (folded, so that it cannot make a
 * second series with that label; see prom.h).  Chunks of PAGE from the
 * name index: O(max_keys + log n), no list of keys is built.
 */
static void each_own_key(struct resild *d, void (*fn)(void *ctx, struct key *k),
                         void *ctx)
{
    struct key *page[PAGE];
    const char *after = NULL;
    size_t alen = 0, n, i, total;
    uint64_t left = max_keys_of(d);
    int more = 1;

    while (more && left) {
        n = keys_page(&d->keys, NULL, 0, after, alen, page,
                      left < PAGE ? (size_t)left + 1 : PAGE, &total, &more);
        for (i = 0; i < n && left; i++) {
            if (page[i]->len == sizeof(PROM_OTHER_KEY) - 1 &&
                !memcmp(page[i]->name, PROM_OTHER_KEY, page[i]->len))
                continue;
            fn(ctx, page[i]);
            left--;
        }
        if (n == 0)
            break;
        after = page[n - 1]->name;
        alen = page[n - 1]->len;
    }
}

/* --- per-key families: own series for the first max_keys, _other ---
 *
 * The _other row is the host-wide total the core keeps (d->tot, updated
 * where the per-key figure changes) minus what the keys with their own
 * series hold, so a page costs O(max_keys), whatever the number of keys
 * (issue 14: a walk of every key took 35 ms at 100k keys).  Every family
 * gives its own series to the same keys (those of the first max_keys a
 * family describes: resild_limiter_available only keys with a limiter,
 * the bulkhead gauges only keys with a bulkhead).  _other is written when
 * the family describes more keys than those.  resild_limiter_available has
 * no _other row: the tokens of a bucket refill with time, so their sum
 * over every other key cannot be kept without visiting each.
 */

struct walk {
    struct resild *d;
    struct prom_buf *b;
    uint64_t now_ms;
    int which;   /* the family being written */
    uint64_t nown; /* keys given their own series that the family describes */
    /* What those keys hold, to take from the totals */
    uint64_t dec[ADMIT_NREASONS];
    uint64_t states[6];
    uint64_t u1;
    uint64_t hist[KEY_LATENCY_BUCKETS + 1];
    uint64_t hist_sum;
};

enum {
    F_DECISIONS,
    F_STATE,
    F_OPENS,
    F_LIMITER,
    F_IN_USE,
    F_QUEUED,
    F_LATENCY,
};

static const char *const state_names[6] = {
    "closed", "open", "half_open", "forced_open", "forced_closed", "disabled"};

_Static_assert(BREAKER_VIS_CLOSED == 0 && BREAKER_VIS_OPEN == 1 &&
                   BREAKER_VIS_HALF_OPEN == 2 && BREAKER_VIS_FORCED_OPEN == 3 &&
                   BREAKER_VIS_FORCED_CLOSED == 4 && BREAKER_VIS_DISABLED == 5,
               "state_names follow enum breaker_visible");

static void write_decisions(struct prom_buf *b, const char *key,
                            const uint64_t *dec)
{
    unsigned r;

    for (r = 0; r < ADMIT_NREASONS; r++) {
        struct prom_label l[3] = {
            {"key", key},
            {"result", r == ADMIT_OK ? "allow" : "deny"},
            {"reason", admit_reason_name((enum admit_reason)r)}};
        if (dec[r] || r == ADMIT_OK)
            prom_sample_u64(b, l, 3, dec[r]);
    }
}

static void write_states(struct prom_buf *b, const char *key,
                         const uint64_t *states)
{
    unsigned i;

    for (i = 0; i < 6; i++) {
        struct prom_label l[2] = {{"key", key}, {"state", state_names[i]}};
        prom_sample_u64(b, l, 2, states[i]);
    }
}

static void write_hist(struct prom_buf *b, const char *key,
                       const uint64_t *counts, uint64_t sum)
{
    struct prom_label l[1] = {{"key", key}};
    struct prom_hist h = {keys_latency_bounds, KEY_LATENCY_BUCKETS, counts,
                          (double)sum};

    prom_histogram(b, l, 1, &h);
}

static void key_sample(void *ctx, struct key *k)
{
    struct walk *w = ctx;
    struct prom_label l[1] = {{"key", k->name}};
    uint64_t v = 0, c[KEY_LATENCY_BUCKETS + 1], one[6] = {0};
    static const struct key_stats none; /* no memory for a block */
    const struct key_stats *st;
    unsigned i;

    /* Keys a family does not describe have no series in it. */
    if ((w->which == F_LIMITER && !k->policy->has_limiter) ||
        ((w->which == F_IN_USE || w->which == F_QUEUED) &&
         !k->policy->has_bulkhead))
        return;
    w->nown++;
    switch (w->which) {
    case F_DECISIONS:
        /* A key that gained its series on a reload (a bigger max_keys)
         * starts counting now (keys.h, struct key_stats). */
        st = k->stats ? k->stats : keys_stats(k);
        if (!st)
            st = &none;
        write_decisions(w->b, k->name, st->decisions);
        for (i = 0; i < ADMIT_NREASONS; i++)
            w->dec[i] += st->decisions[i];
        return;
    case F_STATE:
        one[breaker_visible_state(&k->br)] = 1;
        write_states(w->b, k->name, one);
        w->states[k->tally & 7]++; /* as the totals count it */
        return;
    case F_LATENCY:
        st = k->stats ? k->stats : keys_stats(k);
        if (!st)
            st = &none;
        for (i = 0; i <= KEY_LATENCY_BUCKETS; i++) {
            c[i] = st->lat_hist[i];
            w->hist[i] += c[i];
        }
        w->hist_sum += st->lat_sum_ms;
        write_hist(w->b, k->name, c, st->lat_sum_ms);
        return;
    case F_OPENS:
        v = k->br.opens;
        break;
    case F_LIMITER:
        v = admit_available(k, w->now_ms);
        break;
    case F_IN_USE:
        v = k->bh.in_use;
        break;
    case F_QUEUED:
        v = k->q_len;
        break;
    }
    w->u1 += v;
    prom_sample_u64(w->b, l, 1, v);
}

/* total - own, never below 0 (the totals hold every key's figure). */
static uint64_t rest(uint64_t total, uint64_t own)
{
    return total > own ? total - own : 0;
}

static void per_key(struct walk *w, int which, const char *name,
                    enum prom_type type, const char *help)
{
    const struct core_totals *t = &w->d->tot;
    struct prom_label other[1] = {{"key", PROM_OTHER_KEY}};
    uint64_t described, v[ADMIT_NREASONS], h[KEY_LATENCY_BUCKETS + 1];
    unsigned i;

    prom_family(w->b, name, type, help);
    w->which = which;
    w->nown = 0;
    memset(w->dec, 0, sizeof(w->dec));
    memset(w->states, 0, sizeof(w->states));
    memset(w->hist, 0, sizeof(w->hist));
    w->u1 = w->hist_sum = 0;
    each_own_key(w->d, key_sample, w);
    described = which == F_LIMITER                      ? t->nlim
                : which == F_IN_USE || which == F_QUEUED ? t->nbh
                                                         : w->d->keys.count;
    if (described <= w->nown || which == F_LIMITER)
        return;
    switch (which) {
    case F_DECISIONS:
        for (i = 0; i < ADMIT_NREASONS; i++)
            v[i] = rest(t->dec[i], w->dec[i]);
        write_decisions(w->b, PROM_OTHER_KEY, v);
        break;
    case F_STATE: {
        uint64_t s[6], sum = 0;
        for (i = 1; i < 6; i++) {
            s[i] = rest(t->vis[i], w->states[i]);
            sum += t->vis[i];
        }
        /* closed is what the other states leave */
        s[0] = rest(rest(w->d->keys.count, sum), w->states[0]);
        write_states(w->b, PROM_OTHER_KEY, s);
        break;
    }
    case F_LATENCY:
        for (i = 0; i <= KEY_LATENCY_BUCKETS; i++)
            h[i] = rest(t->lat_hist[i], w->hist[i]);
        write_hist(w->b, PROM_OTHER_KEY, h, rest(t->lat_sum_ms, w->hist_sum));
        break;
    case F_OPENS:
        prom_sample_u64(w->b, other, 1, rest(t->opens, w->u1));
        break;
    case F_IN_USE:
        prom_sample_u64(w->b, other, 1, rest(t->bh_in_use, w->u1));
        break;
    case F_QUEUED:
        prom_sample_u64(w->b, other, 1, rest(t->bh_queued, w->u1));
        break;
    }
}

/* --- host-wide families --- */

static void counter(struct prom_buf *b, const char *name, const char *help,
                    uint64_t v)
{
    prom_family(b, name, PROM_COUNTER, help);
    prom_sample_u64(b, NULL, 0, v);
}

static void gauge(struct prom_buf *b, const char *name, const char *help,
                  double v)
{
    prom_family(b, name, PROM_GAUGE, help);
    prom_sample(b, NULL, 0, v);
}

int metrics_render(struct resild *d, uint64_t now_ms, struct prom_buf *b)
{
    static const char *const sevs[4] = {"low", "medium", "high", "critical"};
    const struct metrics *m = &d->m;
    struct walk w;
    unsigned i, s;

    prom_reset(b);
    memset(&w, 0, sizeof(w));
    w.d = d;
    w.b = b;
    w.now_ms = now_ms;

    gauge(b, "resild_uptime_seconds", "Seconds since the daemon started.",
          (double)(now_ms - d->start_ms) / 1000.0);
    gauge(b, "resild_connections", "Client connections open.", d->connections);
    gauge(b, "resild_subscribers", "Connections subscribed to events.",
          d->nsubs);
    gauge(b, "resild_keys", "Keys in the registry.", (double)d->keys.count);
    gauge(b, "resild_permits_outstanding", "Permits granted, not yet ended.",
          d->permits.used);
    gauge(b, "resild_parked", "Acquire requests waiting (wait_ms).",
          d->parked_used);
    counter(b, "resild_requests_total", "Requests and notifications read.",
            m->requests);
    counter(b, "resild_notifications_ignored_total",
            "Notifications of unknown methods or of acquire, ignored.",
            m->notifications_ignored);
    counter(b, "resild_transitions_total", "Breaker state changes.",
            m->transitions);
    counter(b, "resild_events_total", "Events emitted to the sinks.",
            m->events);
    counter(b, "resild_permits_expired_total",
            "Permits that reached permit_ttl_ms unreported (timeouts).",
            m->permits_expired);
    counter(b, "resild_probes_lost_total",
            "Half-open probes lost with their connection.", m->probes_lost);
    counter(b, "resild_cancels_total", "Cancels that found their acquire.",
            m->cancels);
    counter(b, "resild_venue_pauses_total",
            "rate_limited reports that paused a limiter.", m->venue_pauses);
    counter(b, "resild_shadow_denied_total",
            "Denials a shadow policy turned into allows.", m->shadow_denied);
    counter(b, "resild_global_share_spells_total",
            "Spells of a global limiter deciding from this host's share "
            "instead of leased tokens.",
            m->share_spells);
    counter(b, "resild_heartbeats_lost_total",
            "Keys whose heartbeats stopped (lost edges).", m->heartbeats_lost);

    prom_family(b, "resild_bound_hits_total", PROM_COUNTER,
                "Times a bound was hit, by bound.");
    for (i = 0; i < BOUND_COUNT; i++) {
        struct prom_label l[1] = {{"bound", core_bound_name(i)}};
        prom_sample_u64(b, l, 1, m->bounds[i]);
    }
    prom_family(b, "resild_outcomes_total", PROM_COUNTER,
                "Reported and implied outcomes, by outcome.");
    {
        static const char *const kinds[4] = {"success", "failure", "ignore",
                                             "unknown"};
        for (i = 0; i < 4; i++) {
            struct prom_label l[1] = {{"outcome", kinds[i]}};
            prom_sample_u64(b, l, 1, m->outcomes[i]);
        }
    }
    prom_family(b, "resild_errors_total", PROM_COUNTER,
                "Failure and unknown outcomes by error class and severity "
                "(the first 64 classes by name, the rest as _other).");
    for (i = 0; i < d->nclasses; i++)
        for (s = 0; s < 4; s++)
            if (d->classes[i].n[s]) {
                struct prom_label l[2] = {{"class", d->classes[i].cls},
                                          {"severity", sevs[s]}};
                prom_sample_u64(b, l, 2, d->classes[i].n[s]);
            }
    for (s = 0; s < 4; s++)
        if (d->classes_other[s]) {
            struct prom_label l[2] = {{"class", PROM_OTHER_KEY},
                                      {"severity", sevs[s]}};
            prom_sample_u64(b, l, 2, d->classes_other[s]);
        }

    per_key(&w, F_DECISIONS, "resild_decisions_total", PROM_COUNTER,
            "Acquire answers by key, result and reason.");
    per_key(&w, F_STATE, "resild_breaker_state", PROM_GAUGE,
            "Breaker state by key: 1 for the state it is in.");
    per_key(&w, F_OPENS, "resild_breaker_opens_total", PROM_COUNTER,
            "Times the key's breaker opened.");
    per_key(&w, F_LIMITER, "resild_limiter_available", PROM_GAUGE,
            "Tokens available in the key's own limiter.");
    per_key(&w, F_IN_USE, "resild_bulkhead_in_use", PROM_GAUGE,
            "Bulkhead slots in use.");
    per_key(&w, F_QUEUED, "resild_bulkhead_queued", PROM_GAUGE,
            "Acquire requests parked on the key.");
    per_key(&w, F_LATENCY, "resild_report_latency_ms", PROM_HISTOGRAM,
            "Latency of reported calls in milliseconds.");
    if (d->metrics_extra)
        d->metrics_extra(d->metrics_extra_ctx, b);
    return prom_error(b);
}

const char *metrics_page(struct resild *d, uint64_t now_ms, size_t *len,
                         int *err)
{
    struct prom_buf b;
    int rc;

    *err = 0;
    if (d->metrics_page.data && now_ms >= d->metrics_page.at_ms &&
        now_ms - d->metrics_page.at_ms < METRICS_CACHE_MS) {
        *len = d->metrics_page.len;
        return d->metrics_page.data;
    }
    prom_init(&b, METRICS_MAX_BYTES);
    if ((rc = metrics_render(d, now_ms, &b)) < 0 || !b.data) {
        prom_free(&b);
        *err = rc < 0 ? rc : PROM_ENOMEM;
        return NULL;
    }
    free(d->metrics_page.data);
    d->metrics_page.data = b.data; /* taken from b */
    d->metrics_page.len = b.len;
    d->metrics_page.at_ms = now_ms;
    *len = b.len;
    return b.data;
}

void metrics_free(struct resild *d)
{
    free(d->metrics_page.data);
    d->metrics_page.data = NULL;
}
