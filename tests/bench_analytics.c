/*
 * bench_analytics.c - `make bench-analytics`: what error analytics costs
 * (issue 11), measured on the pure module with a fake clock, printed,
 * never asserted.
 *
 *   quiet keys     1,000,000 keys report a success each: the analytics
 *                  memory they cost (0 by design) and the time per outcome
 *                  (one hash probe that finds nothing: the decision path's
 *                  price for analytics).
 *   failing series 100,000 key x class series (50,000 keys x 2 classes,
 *                  max_series 100,000) fail once each: bytes held by the
 *                  module and the process's RSS growth, and the time per
 *                  failure (first and repeated).
 *   errors call    max_series 10,000 (2,500 keys x 4 classes), failures
 *                  spread over the last 15 minutes with 32 busy keys: the
 *                  `errors` computation (count, rank, trends, correlations
 *                  over the top 32 keys, predictions) for windows of 15 min,
 *                  1 h and 24 h; median and max of 21 calls.
 *
 * Not a test: its name does not start with test_, so tests/run.sh skips it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analytics.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static int breaker_fn(void *ctx, const void *id, double *rate, double *thr)
{
    (void)ctx;
    (void)id;
    *rate = 10;
    *thr = 50;
    return 1;
}

int main(void)
{
    static const char *const classes[] = {
        "network.reset", "timeout", "exchange.maintenance", "order.rejected"};
    struct analytics a;
    struct analytics_conf c;
    struct outcome o = {0};
    char *ids = malloc(1000000), name[32];
    uint64_t t0 = 100000000, i;
    double t, dt;
    long rss0, rss1;
    size_t b0;

    if (!ids)
        return 1;
    /* 1. Quiet keys. */
    c.max_series = 10000;
    c.recent = 1000;
    if (analytics_init(&a, &c, 1) < 0)
        return 1;
    b0 = a.bytes;
    o.kind = OUT_SUCCESS;
    o.cls = "";
    t = now_s();
    for (i = 0; i < 1000000; i++) {
        int n = snprintf(name, sizeof(name), "svc.%llu", (unsigned long long)i);
        analytics_outcome(&a, ids + i, name, (size_t)n, &o, t0 + i / 1000);
    }
    dt = now_s() - t;
    printf("quiet keys:     1000000 keys without errors cost %zu bytes of "
           "analytics (fixed tables %zu bytes at max_series %u); %.0f ns per "
           "success (incl. formatting the name)\n",
           a.bytes - b0, b0, c.max_series, dt * 1e9 / 1e6);
    analytics_free(&a);

    /* 2. 100,000 failing series. */
    c.max_series = 100000;
    rss0 = rss_kib();
    if (analytics_init(&a, &c, 2) < 0)
        return 1;
    o.kind = OUT_FAILURE;
    o.severity = 1;
    o.message = "connection reset by peer";
    o.message_len = strlen(o.message);
    t = now_s();
    for (i = 0; i < 100000; i++) {
        int n = snprintf(name, sizeof(name), "svc.%llu",
                         (unsigned long long)(i / 2));
        o.cls = classes[i % 2];
        analytics_outcome(&a, ids + i / 2, name, (size_t)n, &o, t0 + i / 100);
    }
    dt = now_s() - t;
    rss1 = rss_kib();
    printf("failing series: %zu series on %zu keys: %.1f MiB held (%zu B per "
           "series, %zu B per key, recent ring %u entries); RSS +%.1f MiB; "
           "%.0f ns per first failure\n",
           a.nseries, a.nkeys, (double)a.bytes / 1048576.0,
           analytics_series_bytes(), analytics_key_bytes(), c.recent,
           (double)(rss1 - rss0) / 1024.0, dt * 1e9 / 1e5);
    t = now_s();
    for (i = 0; i < 1000000; i++) {
        int n = snprintf(name, sizeof(name), "svc.%llu",
                         (unsigned long long)(i % 50000));
        o.cls = classes[i % 2];
        analytics_outcome(&a, ids + i % 50000, name, (size_t)n, &o,
                          t0 + 1000 + i / 1000);
    }
    dt = now_s() - t;
    printf("                %.0f ns per repeated failure (series exists)\n",
           dt * 1e9 / 1e6);
    analytics_free(&a);

    /* 3. errors at max_series 10,000. */
    c.max_series = 10000;
    if (analytics_init(&a, &c, 3) < 0)
        return 1;
    {
        uint64_t end = t0 + 900000, ms;
        unsigned lcg = 1;
        for (i = 0; i < 10000; i++) { /* every series fails once */
            int n = snprintf(name, sizeof(name), "svc.%llu",
                             (unsigned long long)(i / 4));
            o.cls = classes[i % 4];
            analytics_outcome(&a, ids + i / 4, name, (size_t)n, &o,
                              t0 + (i * 90) % 900000);
        }
        for (ms = t0; ms < end; ms += 1000) /* 32 busy keys, bursts */
            for (i = 0; i < 32; i++) {
                int n, k;
                lcg = lcg * 1103515245u + 12345u;
                if ((lcg >> 16) % 4)
                    continue;
                n = snprintf(name, sizeof(name), "svc.%llu",
                             (unsigned long long)i);
                o.cls = classes[i % 4];
                for (k = 0; k < 3; k++)
                    analytics_outcome(&a, ids + i, name, (size_t)n, &o, ms);
            }
        printf("errors call:    %zu series, %zu keys (max_series %u):\n",
               a.nseries, a.nkeys, c.max_series);
        {
            static const uint64_t windows[] = {900, 3600, 86400};
            static struct analytics_result r;
            size_t w;
            for (w = 0; w < 3; w++) {
                struct analytics_query q = {0};
                double ms_[21];
                int k;
                q.window_s = windows[w];
                q.top = 10;
                for (k = 0; k < 21; k++) {
                    t = now_s();
                    analytics_query(&a, &q, end - 1, breaker_fn, NULL, &r);
                    ms_[k] = (now_s() - t) * 1e3;
                }
                qsort(ms_, 21, sizeof(double), cmp_d);
                printf("                window %5llu s: median %.2f ms, max "
                       "%.2f ms (total %llu, %zu correlations)\n",
                       (unsigned long long)windows[w], ms_[10], ms_[20],
                       (unsigned long long)r.total, r.ncorr);
            }
        }
    }
    analytics_free(&a);
    free(ids);
    return 0;
}
