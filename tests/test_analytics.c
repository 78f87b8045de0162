/*
 * test_analytics.c - the error analytics module (daemon/analytics.c) under
 * a fake clock: bucket rotation and gaps, eviction at max_series, the
 * recent ring's bounds, trends (doubling is up, constant is flat), the
 * slope against a naive reference on random series, lead/lag correlation,
 * predicted trips; and the alert rules (daemon/alerts.c): cooldown per
 * rule and key.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alerts.h"
#include "analytics.h"
#include "tap.h"

/* Distinct stable ids for fake keys. */
static char ids[64];

static void fail_at(struct analytics *a, int key, const char *name,
                    const char *cls, int sev, uint64_t now_ms)
{
    struct outcome o = {0};

    o.kind = OUT_FAILURE;
    o.cls = cls;
    o.severity = sev;
    o.transient = 1;
    o.message = "boom";
    o.message_len = 4;
    analytics_outcome(a, &ids[key], name, strlen(name), &o, now_ms);
}

static void success_at(struct analytics *a, int key, const char *name,
                       uint64_t now_ms)
{
    struct outcome o = {0};

    o.kind = OUT_SUCCESS;
    o.cls = "";
    analytics_outcome(a, &ids[key], name, strlen(name), &o, now_ms);
}

static struct analytics_result res;

static void query(struct analytics *a, const char *key, uint64_t window_s,
                  uint64_t now_ms)
{
    struct analytics_query q = {0};

    q.key = key;
    q.key_len = key ? strlen(key) : 0;
    q.window_s = window_s;
    q.top = 10;
    analytics_query(a, &q, now_ms, NULL, NULL, &res);
}

static void test_rotation(void)
{
    struct analytics a;
    struct analytics_conf c = {100, 10};
    uint64_t t0 = 5000000, t, base;
    int i;

    OK(analytics_init(&a, &c, 1) == 0, "init");
    base = a.bytes;
    for (i = 0; i < 1000; i++)
        success_at(&a, 0, "quiet", t0 + (uint64_t)i);
    OK(a.bytes == base && a.nkeys == 0 && a.nseries == 0,
       "a key that never failed costs nothing (%zu bytes)", a.bytes - base);
    /* 1 failure per second for 10 s. */
    for (i = 0; i < 10; i++)
        fail_at(&a, 1, "ex.ws", "network", 1, t0 + (uint64_t)i * 1000);
    t = t0 + 9000;
    query(&a, NULL, 5, t);
    IS(res.total, 5, "window 5 s counts the last 5 seconds");
    query(&a, NULL, 60, t);
    IS(res.total, 10, "window 60 s counts all 10");
    /* 10 minutes later: out of a 5-minute window, in the hour. */
    t += 600000;
    query(&a, NULL, 300, t);
    IS(res.total, 0, "10 min later, the 5 min window is empty");
    query(&a, NULL, 3600, t);
    IS(res.total, 10, "the hour (minute buckets) still has them");
    /* A gap longer than the second ring (20 min): the new second must not
     * see stale buckets that wrapped around to the same index. */
    t += 1200000;
    fail_at(&a, 1, "ex.ws", "network", 1, t);
    query(&a, NULL, 900, t);
    IS(res.total, 1, "after a 20 min gap the 15 min window holds 1");
    query(&a, NULL, 86400, t);
    IS(res.total, 11, "the day holds all 11");
    /* A gap longer than the day: everything rotates out. */
    t += 90000000ULL;
    fail_at(&a, 1, "ex.ws", "network", 1, t);
    query(&a, NULL, 86400, t);
    IS(res.total, 1, "after a 25 h gap the day holds only the new one");
    /* Exactly one ring length later the slot is reused, not added to. */
    t += 900000;
    fail_at(&a, 1, "ex.ws", "network", 1, t);
    query(&a, NULL, 900, t);
    IS(res.total, 1, "a second exactly 900 s later reuses the slot cleanly");
    analytics_free(&a);
}

static void test_eviction_and_recent(void)
{
    struct analytics a;
    struct analytics_conf c = {3, 5};
    char msg[600], name[16];
    struct outcome o = {0};
    uint64_t t = 1000000;
    int i;

    analytics_init(&a, &c, 2);
    for (i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "k%d", i);
        fail_at(&a, i, name, "network", 1, t + (uint64_t)i * 1000);
    }
    IS(a.nseries, 3, "max_series holds");
    IS(a.evicted, 1, "one eviction counted");
    query(&a, "k0", 60, t + 4000);
    IS(res.total, 0, "the oldest idle series (k0) was evicted");
    query(&a, "k3", 60, t + 4000);
    IS(res.total, 1, "the newest is there");
    IS(a.nkeys, 3, "the evicted key's record went with its last series");
    /* k1 fails again: now k2 is the oldest idle. */
    fail_at(&a, 1, "k1", "network", 1, t + 5000);
    fail_at(&a, 4, "k4", "network", 1, t + 6000);
    query(&a, "k1", 60, t + 6000);
    IS(res.total, 2, "k1, active again, survives");
    query(&a, "k2", 60, t + 6000);
    IS(res.total, 0, "k2, idle longest, evicted");

    /* Recent ring: bounded, newest first, truncated, UTF-8 valid. */
    memset(msg, 'x', sizeof(msg));
    memcpy(msg, "bad\xff\xfe", 5);
    memcpy(msg + 255, "\xc3\xa9", 2); /* a 2-byte char across the cut */
    o.kind = OUT_FAILURE;
    o.cls = "network";
    o.severity = 1;
    o.message = msg;
    o.message_len = sizeof(msg);
    o.correlation_id = "cid-9";
    o.correlation_id_len = 5;
    for (i = 0; i < 8; i++)
        analytics_outcome(&a, &ids[1], "k1", 2, &o, t + 7000 + (uint64_t)i);
    query(&a, NULL, 60, t + 8000);
    IS(res.nrecent, 5, "recent ring bounded at its size");
    OK(res.recent[0]->at_ms == t + 7007 && res.recent[4]->at_ms == t + 7003,
       "newest first");
    OK(res.recent[0]->message_len <= OUTCOME_MESSAGE_MAX &&
           !memcmp(res.recent[0]->message, "bad??", 5),
       "message truncated and invalid bytes replaced");
    OK(res.recent[0]->message_len == 255,
       "the cut does not split a character (len %u)",
       (unsigned)res.recent[0]->message_len);
    OK(!strcmp(res.recent[0]->cid, "cid-9"), "correlation id kept");
    analytics_free(&a);
}

static void test_trends(void)
{
    struct analytics a;
    struct analytics_conf c = {100, 10};
    uint64_t t0 = 10000000, t;
    unsigned lcg = 12345;
    int m, s, j;

    analytics_init(&a, &c, 3);
    /* "up": 1, 2, 4, 8, 16 failures per second in successive minutes. */
    for (m = 0; m < 5; m++)
        for (s = 0; s < 60; s++)
            for (j = 0; j < (1 << m); j++)
                fail_at(&a, 0, "doubling", "network", 1,
                        t0 + (uint64_t)(m * 60 + s) * 1000);
    /* "flat": 3 per second throughout. */
    for (s = 0; s < 300; s++)
        for (j = 0; j < 3; j++)
            fail_at(&a, 1, "constant", "network", 1, t0 + (uint64_t)s * 1000);
    /* noise around 3 per second: 0..6 uniformly. */
    for (s = 0; s < 300; s++) {
        lcg = lcg * 1103515245u + 12345u;
        for (j = 0; j < (int)((lcg >> 16) % 7); j++)
            fail_at(&a, 2, "noisy", "network", 1, t0 + (uint64_t)s * 1000);
    }
    /* "down": 16, 8, 4, 2, 1 per second. */
    for (m = 0; m < 5; m++)
        for (s = 0; s < 60; s++)
            for (j = 0; j < (16 >> m); j++)
                fail_at(&a, 3, "decaying", "network", 1,
                        t0 + (uint64_t)(m * 60 + s) * 1000);
    t = t0 + 299000;
    query(&a, "doubling", 300, t);
    OK(res.ntop == 1 && res.top[0].fit.dir == AN_UP && res.top[0].fit.r2 > 0.5,
       "doubling every minute is up (strength %.2f)", res.top[0].fit.r2);
    query(&a, "constant", 300, t);
    OK(res.ntop == 1 && res.top[0].fit.dir == AN_FLAT, "constant is flat");
    query(&a, "noisy", 300, t);
    OK(res.ntop == 1 && res.top[0].fit.dir == AN_FLAT,
       "noise around a constant is flat (t=%.2f)", res.top[0].fit.t);
    query(&a, "decaying", 300, t);
    OK(res.ntop == 1 && res.top[0].fit.dir == AN_DOWN, "halving is down");
    /* Beyond 15 minutes the trend uses minute buckets. */
    query(&a, "doubling", 3600, t);
    OK(res.ntop == 1 && res.top[0].fit.dir == AN_UP,
       "doubling is up in minute buckets too");
    analytics_free(&a);
}

/* The slope against a naive one-pass computation in long double. */
static void test_slope_reference(void)
{
    double y[1440];
    unsigned lcg = 777;
    int iter, worst_ok = 1;
    double worst = 0;

    for (iter = 0; iter < 200; iter++) {
        size_t n = 3 + (size_t)(iter * 7 % 1438), i;
        long double sx = 0, sy = 0, sxy = 0, sxx = 0, naive;
        struct an_fit f;
        for (i = 0; i < n; i++) {
            lcg = lcg * 1103515245u + 12345u;
            y[i] = (double)((lcg >> 16) % 1000) * (iter % 3 ? 1.0 : 0.01) +
                   (double)i * (iter % 5) * 0.1;
            sx += i;
            sy += y[i];
            sxy += (long double)i * y[i];
            sxx += (long double)i * i;
        }
        naive = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        analytics_fit(y, n, &f);
        {
            double err =
                fabs(f.slope - (double)naive) /
                (fabs((double)naive) > 1e-9 ? fabs((double)naive) : 1.0);
            if (err > worst)
                worst = err;
            if (err > 1e-9)
                worst_ok = 0;
        }
    }
    OK(worst_ok,
       "slope matches the naive reference on 200 random series "
       "(worst relative error %.2e)",
       worst);
}

static void test_correlation(void)
{
    struct analytics a;
    struct analytics_conf c = {100, 10};
    uint64_t t0 = 20000000;
    unsigned lcg = 99;
    int burst[900] = {0};
    int s, j;

    analytics_init(&a, &c, 4);
    /* ws fails in random bursts; orders fails the same way 30 s later. */
    for (s = 0; s < 900; s++) {
        lcg = lcg * 1103515245u + 12345u;
        burst[s] = (lcg >> 16) % 10 == 0 ? (int)((lcg >> 8) % 5) + 1 : 0;
    }
    for (s = 0; s < 900; s++) {
        for (j = 0; j < burst[s]; j++)
            fail_at(&a, 0, "binance.ws", "network", 1, t0 + (uint64_t)s * 1000);
        if (s >= 30)
            for (j = 0; j < burst[s - 30]; j++)
                fail_at(&a, 1, "binance.orders", "timeout", 1,
                        t0 + (uint64_t)s * 1000 + 500);
        /* an unrelated key */
        lcg = lcg * 1103515245u + 12345u;
        if ((lcg >> 16) % 7 == 0)
            fail_at(&a, 2, "other.api", "network", 1, t0 + (uint64_t)s * 1000);
    }
    query(&a, NULL, 900, t0 + 899000);
    OK(res.ncorr >= 1, "a correlation found (%zu)", res.ncorr);
    if (res.ncorr >= 1) {
        OK(!strcmp(res.corr[0].leader, "binance.ws") &&
               !strcmp(res.corr[0].follower, "binance.orders"),
           "leader binance.ws, follower binance.orders (%s -> %s)",
           res.corr[0].leader, res.corr[0].follower);
        IS(res.corr[0].lag_s, 30, "by 30 s");
        OK(res.corr[0].r > 0.9, "r = %.3f", res.corr[0].r);
    }
    for (s = 0; s < (int)res.ncorr; s++)
        OK(strcmp(res.corr[s].leader, "other.api") &&
               strcmp(res.corr[s].follower, "other.api"),
           "the unrelated key is not paired (r=%.2f)", res.corr[s].r);
    analytics_free(&a);
}

/* Predictions: a breaker judged on a 10 s time window, threshold 50 %. */
struct fake_breaker {
    struct analytics *a;
    double rate; /* its window rate now */
};

static int fake_fn(void *ctx, const void *id, double *rate, double *thr)
{
    struct fake_breaker *fb = ctx;

    (void)id;
    *rate = fb->rate;
    *thr = 50;
    return 1;
}

static void test_prediction(void)
{
    struct analytics a;
    struct analytics_conf c = {100, 10};
    struct an_prediction p[4];
    struct fake_breaker fb = {&a, 0};
    uint64_t t0 = 30000000;
    int fails_at[200], s, j, cross = -1;
    size_t n;

    analytics_init(&a, &c, 5);
    /* 100 calls a second; the failure rate rises 0.5 % a second. */
    for (s = 0; s < 200; s++)
        fails_at[s] = (int)(100 * 0.005 * s);
    for (s = 0; s <= 60; s++)
        for (j = 0; j < 100; j++) {
            if (j < fails_at[s])
                fail_at(&a, 0, "exch.orders", "timeout", 1,
                        t0 + (uint64_t)s * 1000 + (uint64_t)j);
            else
                success_at(&a, 0, "exch.orders",
                           t0 + (uint64_t)s * 1000 + (uint64_t)j);
        }
    /* The breaker's rate: the mean of the last 10 seconds. */
    for (s = 9; s < 200 && cross < 0; s++) {
        double sum = 0;
        for (j = s - 9; j <= s; j++)
            sum += fails_at[j];
        if (s == 60)
            fb.rate = sum / 10.0;
        if (sum / 10.0 >= 50)
            cross = s;
    }
    n = analytics_predict(&a, t0 + 60999, fake_fn, &fb, p, 4);
    OK(n == 1, "one prediction");
    if (n == 1) {
        double truth = cross - 60;
        OK(fabs((double)p[0].eta_s - truth) <= 0.2 * truth,
           "predicted trip in %llu s, true %.0f s (within 20%%)",
           (unsigned long long)p[0].eta_s, truth);
    }
    /* A flat failure rate predicts nothing. */
    analytics_free(&a);
    analytics_init(&a, &c, 5);
    for (s = 0; s <= 60; s++)
        for (j = 0; j < 100; j++) {
            if (j < 20)
                fail_at(&a, 0, "exch.orders", "timeout", 1,
                        t0 + (uint64_t)s * 1000 + (uint64_t)j);
            else
                success_at(&a, 0, "exch.orders",
                           t0 + (uint64_t)s * 1000 + (uint64_t)j);
        }
    fb.rate = 20;
    n = analytics_predict(&a, t0 + 60999, fake_fn, &fb, p, 4);
    IS(n, 0, "a flat failure rate predicts no trip");
    analytics_free(&a);
}

/* Alerts collected by emit. */
static struct {
    int n;
    char rule[8][64], key[8][64];
} got;

static void collect(void *ctx, const struct alert *a)
{
    (void)ctx;
    if (got.n < 8) {
        snprintf(got.rule[got.n], 64, "%s", a->rule_name);
        snprintf(got.key[got.n], 64, "%.*s", (int)a->key_len, a->key);
    }
    got.n++;
}

static void test_alerts(void)
{
    struct analytics a;
    struct analytics_conf c = {100, 10};
    struct alert_rule rules[2];
    struct alerts al;
    struct alert out;
    uint64_t t = 40000000;
    int i;

    analytics_init(&a, &c, 6);
    alerts_init(&al, 7);
    memset(rules, 0, sizeof(rules));
    strcpy(rules[0].name, "any5");
    rules[0].rate_per_min = 5;
    rules[0].cooldown_s = 60;
    strcpy(rules[1].name, "ex3");
    rules[1].rate_per_min = 3;
    rules[1].cooldown_s = 10;
    strcpy(rules[1].prefix, "ex");
    for (i = 0; i < 4; i++)
        fail_at(&a, 0, "ex.ws", "network", 1, t + (uint64_t)i * 100);
    got.n = 0;
    alerts_eval(&al, rules, 2, &a, NULL, NULL, t + 1000, collect, NULL);
    OK(got.n == 1 && !strcmp(got.rule[0], "ex3") &&
           !strcmp(got.key[0], "ex.ws"),
       "4 failures/min: only the 3/min rule in scope fires (%d)", got.n);
    got.n = 0;
    alerts_eval(&al, rules, 2, &a, NULL, NULL, t + 2000, collect, NULL);
    IS(got.n, 0, "within its cooldown the rule stays quiet");
    fail_at(&a, 0, "ex.ws", "network", 1, t + 2500);
    fail_at(&a, 1, "other", "network", 1, t + 2500);
    got.n = 0;
    alerts_eval(&al, rules, 2, &a, NULL, NULL, t + 3000, collect, NULL);
    OK(got.n == 1 && !strcmp(got.rule[0], "any5"),
       "the 5/min rule fires at 5, its own cooldown (%d)", got.n);
    for (i = 0; i < 6; i++)
        fail_at(&a, 1, "other", "network", 1, t + 3100 + (uint64_t)i);
    got.n = 0;
    alerts_eval(&al, rules, 2, &a, NULL, NULL, t + 4000, collect, NULL);
    OK(got.n == 1 && !strcmp(got.key[0], "other") &&
           !strcmp(got.rule[0], "any5"),
       "the same rule fires for another key: cooldown is per key (%d)", got.n);
    got.n = 0;
    alerts_eval(&al, rules, 2, &a, NULL, NULL, t + 11500, collect, NULL);
    OK(got.n == 1 && !strcmp(got.rule[0], "ex3"),
       "after its 10 s cooldown the 3/min rule fires again (%d)", got.n);
    got.n = 0;
    alerts_eval(&al, rules, 2, &a, NULL, NULL, t + 75000, collect, NULL);
    IS(got.n, 0, "a minute later the rate is gone: nothing fires");
    OK(alerts_breaker_opened(&al, &ids[0], "ex.ws", 5, t, &out) == 1 &&
           alerts_breaker_opened(&al, &ids[0], "ex.ws", 5, t + 30000, &out) ==
               0 &&
           alerts_breaker_opened(&al, &ids[0], "ex.ws", 5,
                                 t + ALERTS_OPEN_COOLDOWN_MS, &out) == 1,
       "breaker_open alerts have their own cooldown");
    alerts_free(&al);
    analytics_free(&a);
}

int main(void)
{
    test_rotation();
    test_eviction_and_recent();
    test_trends();
    test_slope_reference();
    test_correlation();
    test_prediction();
    test_alerts();
    return tap_done();
}
