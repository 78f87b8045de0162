/*
 * test_retry.c - retry advice under a fake clock: each strategy's delays and
 * caps, each jitter's bounds over many draws, the decision order (one test
 * per reason), the breaker floor on the delay, and the host-wide retry
 * budget with its 10 s ageing.
 */
#include "retry.h"
#include "tap.h"

#include <string.h>

/* A budget large enough never to interfere (1e6/s * 10 s). */
#define NO_BUDGET_LIMIT 1000000

static struct retry_conf conf_of(enum retry_strategy s, enum retry_jitter j,
                                 uint64_t max_ms)
{
    struct retry_conf c = RETRY_CONF_DEFAULT;

    c.max_attempts = UINT32_MAX;
    c.strategy = s;
    c.jitter = j;
    c.max_ms = max_ms;
    c.budget_min_per_s = NO_BUDGET_LIMIT;
    return c;
}

/* Advice for a transient failure with a closed breaker, fresh budget. */
static uint64_t delay_for(const struct retry_conf *c, uint32_t attempt)
{
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    retry_budget_init(&b);
    retry_advise(c, &b, 0, attempt, 1, 0, 0, 0, &prev, &rng, &a);
    return a.retry ? a.delay_ms : UINT64_MAX;
}

static void check_series(const char *name, const struct retry_conf *c,
                         const uint64_t want[6])
{
    char what[100];
    uint32_t n;

    for (n = 1; n <= 6; n++) {
        snprintf(what, sizeof(what), "%s: attempt %u -> %llu ms", name, n,
                 (unsigned long long)want[n - 1]);
        IS(delay_for(c, n), want[n - 1], what);
    }
}

/* --- strategies ----------------------------------------------------------- */

static void test_strategies(void)
{
    static const uint64_t fixed[6] = {1000, 1000, 1000, 1000, 1000, 1000};
    static const uint64_t lin[6] = {1000, 2000, 3000, 4000, 5000, 6000};
    static const uint64_t lin_cap[6] = {1000, 2000, 3000, 3500, 3500, 3500};
    static const uint64_t expo[6] = {1000, 2000, 4000, 8000, 16000, 32000};
    static const uint64_t expo_cap[6] = {1000, 2000, 4000, 8000, 10000, 10000};
    static const uint64_t expo15[6] = {1000, 1500, 2250, 3375, 5062, 7593};
    static const uint64_t fib[6] = {1000, 1000, 2000, 3000, 5000, 8000};
    static const uint64_t fib_cap[6] = {1000, 1000, 2000, 3000, 4000, 4000};
    static const uint64_t fixed_cap[6] = {700, 700, 700, 700, 700, 700};
    struct retry_conf c;

    c = conf_of(RETRY_FIXED, RETRY_JITTER_NONE, 60000);
    check_series("fixed", &c, fixed);
    c.max_ms = 700;
    check_series("fixed, base above max_ms", &c, fixed_cap);
    c = conf_of(RETRY_LINEAR, RETRY_JITTER_NONE, 60000);
    check_series("linear", &c, lin);
    c.max_ms = 3500;
    check_series("linear capped at 3500", &c, lin_cap);
    c = conf_of(RETRY_EXPONENTIAL, RETRY_JITTER_NONE, 60000);
    check_series("exponential x2", &c, expo);
    c.max_ms = 10000;
    check_series("exponential x2 capped at 10000", &c, expo_cap);
    c = conf_of(RETRY_EXPONENTIAL, RETRY_JITTER_NONE, 60000);
    c.multiplier_milli = 1500;
    check_series("exponential x1.5", &c, expo15);
    c = conf_of(RETRY_FIBONACCI, RETRY_JITTER_NONE, 60000);
    check_series("fibonacci", &c, fib);
    c.max_ms = 4000;
    check_series("fibonacci capped at 4000", &c, fib_cap);

    /* Huge attempt numbers and multipliers: capped, no overflow, quick. */
    c = conf_of(RETRY_EXPONENTIAL, RETRY_JITTER_NONE, 86400000);
    c.multiplier_milli = 100000;
    IS(delay_for(&c, 1000000), 86400000, "exponential x100, attempt 1e6: cap");
    c.multiplier_milli = 1000;
    IS(delay_for(&c, 1000000), 1000, "exponential x1, attempt 1e6: base");
    c.multiplier_milli = 1001;
    c.base_ms = 1;
    IS(delay_for(&c, 1000000), 86400000, "exponential x1.001, base 1: cap");
    c = conf_of(RETRY_FIBONACCI, RETRY_JITTER_NONE, 86400000);
    IS(delay_for(&c, 1000000), 86400000, "fibonacci attempt 1e6: cap");
    c = conf_of(RETRY_LINEAR, RETRY_JITTER_NONE, 86400000);
    c.base_ms = 86400000;
    IS(delay_for(&c, 4000000000u), 86400000, "linear attempt 4e9: cap");
}

/* --- jitter --------------------------------------------------------------- */

#define DRAWS 20000

/* Draws for attempt 4 of exponential (d = 8000 ms before jitter). */
static void check_jitter(const char *name, enum retry_jitter j, uint64_t lo,
                         uint64_t hi, int must_vary)
{
    struct retry_conf c = conf_of(RETRY_EXPONENTIAL, j, 60000);
    struct retry_budget b;
    struct retry_advice a;
    uint64_t rng = 0x853c49e6748fea9bULL, prev, min = UINT64_MAX, max = 0;
    int i, out_of_range = 0;

    retry_budget_init(&b);
    for (i = 0; i < DRAWS; i++) {
        prev = 0;
        retry_advise(&c, &b, 0, 4, 1, 0, 0, 0, &prev, &rng, &a);
        if (!a.retry || a.delay_ms < lo || a.delay_ms > hi)
            out_of_range++;
        if (a.delay_ms < min)
            min = a.delay_ms;
        if (a.delay_ms > max)
            max = a.delay_ms;
    }
    OK(out_of_range == 0, "%s: %d draws all in [%llu, %llu] (%d outside)", name,
       DRAWS, (unsigned long long)lo, (unsigned long long)hi, out_of_range);
    if (must_vary)
        OK(min < lo + (hi - lo) / 20 && max > hi - (hi - lo) / 20,
           "%s: varies across the range (min %llu, max %llu)", name,
           (unsigned long long)min, (unsigned long long)max);
    else
        OK(min == max, "%s: constant", name);
}

static void test_jitter_bounds(void)
{
    check_jitter("jitter none", RETRY_JITTER_NONE, 8000, 8000, 0);
    check_jitter("jitter full", RETRY_JITTER_FULL, 0, 8000, 1);
    check_jitter("jitter equal", RETRY_JITTER_EQUAL, 4000, 8000, 1);
}

static void test_jitter_equal_odd(void)
{
    struct retry_conf c = conf_of(RETRY_FIXED, RETRY_JITTER_EQUAL, 60000);
    struct retry_budget b;
    struct retry_advice a;
    uint64_t rng = 7, prev = 0, min = UINT64_MAX, max = 0;
    int i;

    c.base_ms = 3;
    retry_budget_init(&b);
    for (i = 0; i < 1000; i++) {
        retry_advise(&c, &b, 0, 1, 1, 0, 0, 0, &prev, &rng, &a);
        min = a.delay_ms < min ? a.delay_ms : min;
        max = a.delay_ms > max ? a.delay_ms : max;
    }
    IS(min, 1, "equal jitter, d=3: lowest is d/2 = 1");
    IS(max, 3, "equal jitter, d=3: highest is d");
}

/*
 * Decorrelated: each delay is in [base, min(max_ms, prev * 3)] where prev is
 * the previous delay advised (base for a first attempt).
 */
static void test_jitter_decorrelated(void)
{
    struct retry_conf c =
        conf_of(RETRY_EXPONENTIAL, RETRY_JITTER_DECORRELATED, 20000);
    struct retry_budget b;
    struct retry_advice a;
    uint64_t rng = 12345, prev = 0, before, hi, min = UINT64_MAX, max = 0;
    int i, bad = 0, hit_cap = 0;

    retry_budget_init(&b);
    for (i = 0; i < DRAWS; i++) {
        uint32_t attempt = (uint32_t)(i % 8) + 1;
        before = attempt == 1 ? 1000 : prev;
        hi = before * 3 < 20000 ? before * 3 : 20000;
        retry_advise(&c, &b, 0, attempt, 1, 0, 0, 0, &prev, &rng, &a);
        if (!a.retry || a.delay_ms < 1000 || a.delay_ms > hi ||
            prev != a.delay_ms)
            bad++;
        hit_cap += a.delay_ms > 18000;
        min = a.delay_ms < min ? a.delay_ms : min;
        max = a.delay_ms > max ? a.delay_ms : max;
    }
    IS(bad, 0, "decorrelated: every delay in [base, min(max, prev*3)]");
    OK(min < 1100 && hit_cap > 0,
       "decorrelated: varies from base up to near max_ms (%llu..%llu)",
       (unsigned long long)min, (unsigned long long)max);

    /* First attempt ignores a stale prev: [base, 3 * base]. */
    prev = 19000;
    for (i = 0, bad = 0; i < 1000; i++) {
        uint64_t p = 19000;
        retry_advise(&c, &b, 0, 1, 1, 0, 0, 0, &p, &rng, &a);
        bad += a.delay_ms < 1000 || a.delay_ms > 3000;
    }
    IS(bad, 0, "decorrelated: attempt 1 starts again from base");
}

static void test_rng_zero_state(void)
{
    struct retry_conf c = conf_of(RETRY_FIXED, RETRY_JITTER_FULL, 60000);
    struct retry_budget b;
    struct retry_advice a;
    uint64_t rng = 0, prev = 0, first;
    int i, differ = 0;

    retry_budget_init(&b);
    retry_advise(&c, &b, 0, 1, 1, 0, 0, 0, &prev, &rng, &a);
    OK(rng != 0, "a zero rng state is replaced, not kept");
    first = a.delay_ms;
    for (i = 0; i < 100; i++) {
        retry_advise(&c, &b, 0, 1, 1, 0, 0, 0, &prev, &rng, &a);
        differ += a.delay_ms != first;
    }
    OK(differ > 0, "and the draws still vary");
}

/* --- decision order: one test per reason ---------------------------------- */

static struct retry_conf order_conf(void)
{
    struct retry_conf c = RETRY_CONF_DEFAULT; /* max 3 attempts, 60 s */

    c.budget_min_per_s = 1; /* 10 retries per 10 s */
    c.budget_ratio_milli = 0;
    return c;
}

/* A budget with no room left at t=0. */
static void spent_budget(const struct retry_conf *c, struct retry_budget *b)
{
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;
    int i;

    retry_budget_init(b);
    for (i = 0; i < 10; i++)
        retry_advise(c, b, 0, 1, 1, 0, 0, 0, &prev, &rng, &a);
}

static void test_reason_permanent(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    spent_budget(&c, &b);
    /* Everything else would also say no: permanent is checked first. */
    retry_advise(&c, &b, 0, 5, 0, 1, 999999, 1, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "permanent"),
       "permanent: first of all reasons (%s)", a.reason);
    retry_budget_init(&b);
    retry_advise(&c, &b, 0, 1, 0, 0, 0, 0, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "permanent") && a.delay_ms == 0,
       "permanent: alone, no retry, no delay");
}

static void test_reason_reconcile(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    spent_budget(&c, &b);
    retry_advise(&c, &b, 0, 5, 1, 1, 999999, 1, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "reconcile"),
       "reconcile: before max_attempts, circuit and budget (%s)", a.reason);
    retry_budget_init(&b);
    retry_advise(&c, &b, 0, 1, 1, 1, 0, 0, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "reconcile"),
       "reconcile: unknown outcome of a non-idempotent call, first attempt");
}

static void test_reason_max_attempts(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    spent_budget(&c, &b);
    retry_advise(&c, &b, 0, 3, 1, 0, 999999, 1, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "max_attempts"),
       "max_attempts: before circuit and budget (%s)", a.reason);
    retry_budget_init(&b);
    retry_advise(&c, &b, 0, 2, 1, 0, 0, 0, &prev, &rng, &a);
    OK(a.retry, "max_attempts 3: attempt 2 may retry");
    retry_advise(&c, &b, 0, 3, 1, 0, 0, 0, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "max_attempts"),
       "max_attempts 3: attempt 3 may not");
    c.max_attempts = 1;
    retry_advise(&c, &b, 0, 1, 1, 0, 0, 0, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "max_attempts"),
       "max_attempts 1: never retry");
}

static void test_reason_circuit_open(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    spent_budget(&c, &b);
    retry_advise(&c, &b, 0, 1, 1, 0, 60001, 1, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "circuit_open"),
       "circuit_open: open beyond max_ms, before the budget (%s)", a.reason);
    retry_budget_init(&b);
    retry_advise(&c, &b, 0, 1, 1, 0, 60000, 1, &prev, &rng, &a);
    OK(a.retry && a.delay_ms == 60000,
       "circuit open exactly max_ms: retry after the open time");
    retry_advise(&c, &b, 0, 1, 1, 0, 90000, 0, &prev, &rng, &a);
    OK(a.retry && a.delay_ms == 90000,
       "a long wait without an open breaker (pause): retry after it");
}

static void test_reason_budget_exhausted(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    spent_budget(&c, &b);
    retry_advise(&c, &b, 0, 1, 1, 0, 0, 0, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "budget_exhausted") && a.delay_ms == 0,
       "budget_exhausted: when the budget is spent (%s)", a.reason);
}

static void test_reason_ok(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;

    retry_budget_init(&b);
    retry_advise(&c, &b, 0, 2, 1, 0, 0, 0, &prev, &rng, &a);
    OK(a.retry && !strcmp(a.reason, "ok") && a.delay_ms == 2000,
       "ok: attempt 2, exponential default -> 2000 ms (%s, %llu)", a.reason,
       (unsigned long long)a.delay_ms);
    IS(prev, 2000, "ok: the delay is remembered for the key");
}

static void test_no_consumes_nothing(void)
{
    struct retry_conf c = order_conf();
    struct retry_budget b, before;
    struct retry_advice a;
    uint64_t prev = 1234, rng = 99;

    retry_budget_init(&b);
    before = b;
    retry_advise(&c, &b, 0, 1, 0, 0, 0, 0, &prev, &rng, &a);
    retry_advise(&c, &b, 0, 1, 1, 1, 0, 0, &prev, &rng, &a);
    retry_advise(&c, &b, 0, 3, 1, 0, 0, 0, &prev, &rng, &a);
    retry_advise(&c, &b, 0, 1, 1, 0, 70000, 1, &prev, &rng, &a);
    OK(!memcmp(&b, &before, sizeof(b)) && prev == 1234 && rng == 99,
       "a 'no' consumes no budget, rng or prev delay");
}

/* --- breaker floor -------------------------------------------------------- */

static void test_breaker_floor(void)
{
    static const enum retry_jitter js[] = {RETRY_JITTER_NONE, RETRY_JITTER_FULL,
                                           RETRY_JITTER_EQUAL,
                                           RETRY_JITTER_DECORRELATED};
    struct retry_budget b;
    struct retry_advice a;
    uint64_t rng = 4242, prev = 0;
    size_t j;
    int i, bad = 0, raised = 0;

    retry_budget_init(&b);
    for (j = 0; j < sizeof(js) / sizeof(js[0]); j++) {
        struct retry_conf c = conf_of(RETRY_EXPONENTIAL, js[j], 60000);
        for (i = 0; i < 5000; i++) {
            uint64_t wait = (uint64_t)(i % 50) * 1000;
            int open = i % 3 == 0;
            retry_advise(&c, &b, 0, (uint32_t)(i % 6) + 1, 1, 0, wait, open,
                         &prev, &rng, &a);
            bad += !a.retry || a.delay_ms < wait;
            raised += a.delay_ms == wait && wait > 0;
        }
    }
    IS(bad, 0, "delay is never below breaker_wait_ms, for every jitter");
    OK(raised > 0, "and the floor does raise short delays");
}

/* --- budget --------------------------------------------------------------- */

/* Count "yes" advices out of n tries at now_ms. */
static int yes_count(const struct retry_conf *c, struct retry_budget *b,
                     uint64_t now_ms, int n)
{
    struct retry_advice a;
    uint64_t prev = 0, rng = 1;
    int i, yes = 0;

    for (i = 0; i < n; i++) {
        retry_advise(c, b, now_ms, 1, 1, 0, 0, 0, &prev, &rng, &a);
        yes += a.retry;
    }
    return yes;
}

static void test_budget_floor(void)
{
    struct retry_conf c = RETRY_CONF_DEFAULT; /* ratio 0.2, min 10/s */
    struct retry_budget b;
    struct retry_advice a;
    uint64_t prev = 0, rng = 1, t;
    int yes = 0;

    retry_budget_init(&b);
    /* 100 retries spread over 10 s, no calls: the floor of 10/s. */
    for (t = 0; t < 10000; t += 100)
        yes += yes_count(&c, &b, t, 1);
    IS(yes, 100, "budget: 0 calls, 100 retries allowed in 10 s");
    retry_advise(&c, &b, 9999, 1, 1, 0, 0, 0, &prev, &rng, &a);
    OK(!a.retry && !strcmp(a.reason, "budget_exhausted"),
       "budget: the 101st is refused");
}

static void test_budget_ratio(void)
{
    struct retry_conf c = RETRY_CONF_DEFAULT;
    struct retry_budget b;
    int i;

    retry_budget_init(&b);
    for (i = 0; i < 1000; i++)
        retry_budget_call(&b, (uint64_t)i * 5); /* over 5 s */
    IS(yes_count(&c, &b, 5000, 300), 200,
       "budget: 1000 calls, ratio 0.2: 200 retries allowed");
    retry_budget_call(&b, 5000);
    retry_budget_call(&b, 5000);
    retry_budget_call(&b, 5000);
    retry_budget_call(&b, 5000);
    IS(yes_count(&c, &b, 5000, 10), 0, "4 more calls: still 200 (0.8)");
    retry_budget_call(&b, 5000);
    IS(yes_count(&c, &b, 5000, 10), 1, "the 5th: one more retry");
}

static void test_budget_ageing(void)
{
    struct retry_conf c = RETRY_CONF_DEFAULT;
    struct retry_budget b;
    int i;

    retry_budget_init(&b);
    IS(yes_count(&c, &b, 500, 150), 100, "ageing: 100 retries in second 0");
    IS(yes_count(&c, &b, 9999, 1), 0, "ageing: still spent at 9999 ms");
    IS(yes_count(&c, &b, 10000, 150), 100,
       "ageing: at 10 s second 0 ages out, 100 more");
    IS(yes_count(&c, &b, 19999, 1), 0, "ageing: spent again at 19999 ms");

    /* Calls age out too: 1000 calls at t=20 s lift the budget to 200 for
     * 10 s only. */
    for (i = 0; i < 1000; i++)
        retry_budget_call(&b, 20000);
    IS(yes_count(&c, &b, 20000, 300), 200, "ageing: 1000 calls -> 200");
    IS(yes_count(&c, &b, 29999, 1), 0, "ageing: spent until 30 s");
    IS(yes_count(&c, &b, 30000, 300), 100,
       "ageing: calls and retries gone at 30 s -> floor of 100");

    /* A long idle gap reuses every bucket cleanly. */
    IS(yes_count(&c, &b, 1000000000, 300), 100,
       "ageing: after a long gap, the floor again");
    /* A clock step back does not free budget. */
    IS(yes_count(&c, &b, 999990000, 10), 0, "a clock step back frees nothing");
}

int main(void)
{
    test_strategies();
    test_jitter_bounds();
    test_jitter_equal_odd();
    test_jitter_decorrelated();
    test_rng_zero_state();
    test_reason_permanent();
    test_reason_reconcile();
    test_reason_max_attempts();
    test_reason_circuit_open();
    test_reason_budget_exhausted();
    test_reason_ok();
    test_no_consumes_nothing();
    test_breaker_floor();
    test_budget_floor();
    test_budget_ratio();
    test_budget_ageing();
    return tap_done();
}
