/*
 * test_breaker.c - the breaker state machine under a fake clock: every
 * transition of the first cut (consecutive failures, open time, half-open
 * probes, success threshold, stale generations, forces, reset).
 */
#include "breaker.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

/* Consecutive rule only (rates off), 1 s open, 1 probe, 2 to close. */
static const struct breaker_conf conf = {5, 1000, 1, 2,    0,      100, 10,
                                         0, 0,    0, 1000, 300000, 0};
static uint64_t window_mem[BREAKER_MAX_TIME_WINDOW * 4];

static void init(struct breaker *b, const struct breaker_conf *c, uint64_t now)
{
    breaker_init(b, c, window_mem, 42, now);
}

static void fail_n(struct breaker *b, uint64_t now, int n)
{
    struct breaker_verdict v;
    int i;

    for (i = 0; i < n; i++) {
        breaker_acquire(b, &conf, now, &v);
        breaker_record(b, &conf, now, v.generation, v.probe, BREAKER_FAILURE,
                       -1);
    }
}

static void test_opens_after_consecutive_failures(void)
{
    struct breaker b;
    struct breaker_verdict v;

    init(&b, &conf, 0);
    fail_n(&b, 10, 4);
    IS(b.state, BREAKER_CLOSED, "4 failures keep it closed");
    /* A success resets the consecutive count. */
    breaker_acquire(&b, &conf, 10, &v);
    breaker_record(&b, &conf, 10, v.generation, 0, BREAKER_SUCCESS, -1);
    fail_n(&b, 20, 4);
    IS(b.state, BREAKER_CLOSED, "success in between resets the run");
    fail_n(&b, 20, 1);
    IS(b.state, BREAKER_OPEN, "5th consecutive failure opens");
    IS(b.opens, 1, "opens counted");
    breaker_acquire(&b, &conf, 20, &v);
    OK(!v.allow && v.reason == BREAKER_CIRCUIT_OPEN, "open denies");
    IS(v.retry_after_ms, 1000, "retry_after is the full open time");
    breaker_acquire(&b, &conf, 520, &v);
    IS(v.retry_after_ms, 500, "retry_after counts down exactly");
    breaker_acquire(&b, &conf, 1019, &v);
    IS(v.retry_after_ms, 1, "1 ms before half-open");
    OK(!v.allow, "still denied 1 ms before");
}

static void test_half_open_probe_cycle(void)
{
    struct breaker b;
    struct breaker_verdict v, p;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_acquire(&b, &conf, 1000, &p);
    OK(p.allow && p.probe, "after open_ms a probe is admitted");
    IS(b.state, BREAKER_HALF_OPEN, "state half_open");
    breaker_acquire(&b, &conf, 1000, &v);
    OK(!v.allow && v.reason == BREAKER_HALF_OPEN_BUSY,
       "second concurrent probe denied half_open_busy");
    breaker_record(&b, &conf, 1001, p.generation, 1, BREAKER_SUCCESS, -1);
    IS(b.state, BREAKER_HALF_OPEN, "one success of two keeps half-open");
    breaker_acquire(&b, &conf, 1002, &p);
    OK(p.allow && p.probe, "slot free again after the report");
    breaker_record(&b, &conf, 1003, p.generation, 1, BREAKER_SUCCESS, -1);
    IS(b.state, BREAKER_CLOSED, "success_threshold successes close it");
}

static void test_probe_failure_reopens(void)
{
    struct breaker b;
    struct breaker_verdict p, v;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_acquire(&b, &conf, 1500, &p);
    breaker_record(&b, &conf, 1600, p.generation, 1, BREAKER_FAILURE, -1);
    IS(b.state, BREAKER_OPEN, "probe failure re-opens");
    IS(b.opens, 2, "counted as a second open");
    breaker_acquire(&b, &conf, 1600, &v);
    IS(v.retry_after_ms, 1000, "open time restarts at the re-open");
}

static void test_lost_and_ignored_probe(void)
{
    struct breaker b;
    struct breaker_verdict p, v;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_acquire(&b, &conf, 1000, &p);
    breaker_record(&b, &conf, 1000, p.generation, 1, BREAKER_IGNORE, -1);
    IS(b.state, BREAKER_HALF_OPEN, "ignored probe changes nothing");
    breaker_acquire(&b, &conf, 1000, &v);
    OK(v.allow && v.probe, "ignored probe gave its slot back");
    breaker_release(&b, v.generation, 1);
    breaker_acquire(&b, &conf, 1000, &v);
    OK(v.allow && v.probe, "released probe gave its slot back");
}

static void test_stale_generation(void)
{
    struct breaker b;
    struct breaker_verdict old, p;
    int counted;

    init(&b, &conf, 0);
    breaker_acquire(&b, &conf, 0, &old); /* granted while closed */
    fail_n(&b, 0, 5);                    /* trips */
    counted =
        breaker_record(&b, &conf, 10, old.generation, 0, BREAKER_SUCCESS, -1);
    OK(!counted, "report from before the trip is stale");
    IS(b.state, BREAKER_OPEN, "stale success does not close");
    breaker_acquire(&b, &conf, 1000, &p);
    breaker_record(&b, &conf, 1000, old.generation, 0, BREAKER_FAILURE, -1);
    IS(b.state, BREAKER_HALF_OPEN, "stale failure does not re-open");
}

static void test_force(void)
{
    struct breaker b;
    struct breaker_verdict v;

    init(&b, &conf, 0);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 0);
    breaker_acquire(&b, &conf, 5, &v);
    OK(!v.allow && v.reason == BREAKER_FORCED_OPEN, "forced open denies");
    IS(v.retry_after_ms, 0, "no TTL: retry_after unknown");
    breaker_force(&b, &conf, 10, BREAKER_FORCE_OPEN, 300);
    breaker_acquire(&b, &conf, 110, &v);
    IS(v.retry_after_ms, 200, "TTL: retry_after is the time left");
    breaker_acquire(&b, &conf, 310, &v);
    OK(v.allow, "force expires after its TTL");
    OK(!strcmp(breaker_state_name(&b), "closed"), "back to closed");
    breaker_force(&b, &conf, 400, BREAKER_FORCE_CLOSED, 0);
    breaker_acquire(&b, &conf, 400, &v);
    IS(breaker_record(&b, &conf, 400, v.generation, v.probe, BREAKER_FAILURE,
                      -1),
       BREAKER_REC_FORCED, "forced: a current report is not stale");
    fail_n(&b, 400, 10);
    breaker_acquire(&b, &conf, 400, &v);
    OK(v.allow, "forced closed ignores failures");
    breaker_force(&b, &conf, 400, BREAKER_FORCE_DISABLED, 0);
    OK(!strcmp(breaker_state_name(&b), "disabled"), "disabled");
    breaker_force(&b, &conf, 400, BREAKER_AUTO, 0);
    OK(!strcmp(breaker_state_name(&b), "closed"), "auto resumes closed");
}

static void test_reset(void)
{
    struct breaker b;
    struct breaker_verdict v;
    uint32_t gen;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    gen = b.generation;
    breaker_reset(&b, 50);
    breaker_acquire(&b, &conf, 50, &v);
    OK(v.allow && b.state == BREAKER_CLOSED, "reset closes");
    OK(b.generation > gen, "reset makes older permits stale");
    IS(b.opens, 1, "reset keeps the opens count");
}

static void test_threshold_zero_never_opens(void)
{
    struct breaker_conf off = conf;
    struct breaker b;
    struct breaker_verdict v;
    int i;

    off.failure_threshold = 0;
    init(&b, &off, 0);
    for (i = 0; i < 100; i++) {
        breaker_acquire(&b, &off, 0, &v);
        breaker_record(&b, &off, 0, v.generation, 0, BREAKER_FAILURE, -1);
    }
    IS(b.state, BREAKER_CLOSED, "failure_threshold 0 is off");
}

/* Feed n outcomes (failed f of them first) at time now, closed state. */
static void feed(struct breaker *b, const struct breaker_conf *c, uint64_t now,
                 int n, int f, int64_t latency)
{
    struct breaker_verdict v;
    int i;

    for (i = 0; i < n; i++) {
        breaker_acquire(b, c, now, &v);
        breaker_record(b, c, now, v.generation, v.probe,
                       i < f ? BREAKER_FAILURE : BREAKER_SUCCESS, latency);
    }
}

static void test_failure_rate_count_window(void)
{
    struct breaker_conf c = conf;
    struct breaker b;

    c.failure_threshold = 0;
    c.window_size = 10;
    c.minimum_calls = 6;
    c.failure_rate_threshold = 50;
    init(&b, &c, 0);
    /* 2 failures then 2 successes: 50% but only 4 calls < minimum. */
    feed(&b, &c, 0, 4, 2, -1);
    IS(b.state, BREAKER_CLOSED, "below minimum_calls: rate not judged");
    feed(&b, &c, 0, 1, 0, -1);
    IS(b.state, BREAKER_CLOSED, "5 calls, 40%: closed");
    feed(&b, &c, 0, 1, 1, -1);
    IS(b.state, BREAKER_OPEN, "6 calls, 3 failures = 50% >= 50%: opens");
    IS(b.cause, BREAKER_CAUSE_FAILURE_RATE, "cause failure_rate");
}

static void test_count_window_slides(void)
{
    struct breaker_conf c = conf;
    struct breaker b;

    c.failure_threshold = 0;
    c.window_size = 4;
    c.minimum_calls = 4;
    c.failure_rate_threshold = 75;
    init(&b, &c, 0);
    feed(&b, &c, 0, 2, 2, -1); /* F F */
    feed(&b, &c, 0, 4, 0, -1); /* S S S S: the failures slide out */
    feed(&b, &c, 0, 2, 2, -1); /* window S S F F = 50% */
    IS(b.state, BREAKER_CLOSED, "old failures slid out of the window");
    OK(breaker_failure_rate(&b, 0) == 50.0, "failure_rate 50%% in window");
    feed(&b, &c, 0, 1, 1, -1); /* S F F F = 75% */
    IS(b.state, BREAKER_OPEN, "75%% of the last 4 opens");
}

static void test_time_window_expires(void)
{
    struct breaker_conf c = conf;
    struct breaker b;

    c.failure_threshold = 0;
    c.window_time = 1;
    c.window_size = 10; /* seconds */
    c.minimum_calls = 4;
    c.failure_rate_threshold = 50;
    init(&b, &c, 0);
    feed(&b, &c, 0, 3, 3, -1);     /* 3 failures at t=0 */
    feed(&b, &c, 10000, 3, 0, -1); /* t=10 s: the failures expired */
    IS(b.state, BREAKER_CLOSED, "failures older than the window expired");
    OK(breaker_failure_rate(&b, 10000) == 0.0, "rate 0 after expiry");
    feed(&b, &c, 10500, 1, 1, -1); /* 1 of 4 */
    feed(&b, &c, 11000, 1, 1, -1); /* 2 of 5 = 40% */
    IS(b.state, BREAKER_CLOSED, "40%% closed");
    feed(&b, &c, 19999, 1, 1, -1); /* 3 of 6 = 50% */
    IS(b.state, BREAKER_OPEN, "50%% within 10 s opens");
}

/* Buckets keep their second modulo 2^32 (struct breaker_bucket): the
 * second that wraps to 0 -- 0 also marks an empty bucket -- counts like any
 * other, and a window that spans the wrap sums across it. */
static void test_time_window_wrap(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    const uint64_t wrap = 4294967295ull * 1000; /* now / 1000 + 1 = 2^32 */

    c.failure_threshold = 0;
    c.window_time = 1;
    c.window_size = 10;
    c.minimum_calls = 4;
    c.failure_rate_threshold = 50;
    init(&b, &c, wrap - 5000);
    feed(&b, &c, wrap, 4, 4, -1);
    IS(b.state, BREAKER_OPEN, "4 failures in the second that wraps to 0 open");
    init(&b, &c, wrap - 5000);
    feed(&b, &c, wrap - 1000, 2, 2, -1);
    feed(&b, &c, wrap + 1000, 2, 2, -1);
    IS(b.state, BREAKER_OPEN, "failures on both sides of the wrap add up");
    init(&b, &c, wrap - 5000);
    feed(&b, &c, wrap - 1000, 2, 2, -1);
    feed(&b, &c, wrap, 1, 1, -1);
    feed(&b, &c, wrap + 1000, 1, 1, -1);
    IS(b.state, BREAKER_OPEN, "and with the wrapped second between them");
}

static void test_slow_call_rate(void)
{
    struct breaker_conf c = conf;
    struct breaker b;

    c.failure_threshold = 0;
    c.minimum_calls = 4;
    c.slow_call_ms = 200;
    c.slow_call_rate_threshold = 50;
    init(&b, &c, 0);
    feed(&b, &c, 0, 2, 0, 199);
    feed(&b, &c, 0, 1, 0, 200);
    IS(b.state, BREAKER_CLOSED, "1 slow of 3");
    feed(&b, &c, 0, 1, 0, 5000);
    IS(b.state, BREAKER_OPEN, "2 slow successes of 4 = 50%% opens");
    IS(b.cause, BREAKER_CAUSE_SLOW_RATE, "cause slow_call_rate");
    IS(b.slow_calls, 2, "slow calls counted");
}

static void test_slow_probe_reopens(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict p;

    c.slow_call_ms = 100;
    c.slow_call_rate_threshold = 50;
    init(&b, &c, 0);
    feed(&b, &c, 0, 5, 5, -1);
    breaker_acquire(&b, &c, 1000, &p);
    breaker_record(&b, &c, 1000, p.generation, 1, BREAKER_SUCCESS, 150);
    IS(b.state, BREAKER_OPEN, "a slow probe re-opens when the slow rule is on");
    IS(b.cause, BREAKER_CAUSE_PROBE_SLOW, "cause probe_slow");
}

static void test_backoff_and_cap(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict v, p;
    uint64_t now = 0, want[] = {1000, 2000, 4000, 5000, 5000};
    int i;

    c.open_backoff_milli = 2000;
    c.open_max_ms = 5000;
    init(&b, &c, 0);
    feed(&b, &c, now, 5, 5, -1);
    for (i = 0; i < 5; i++) {
        breaker_acquire(&b, &c, now, &v);
        IS(v.retry_after_ms, want[i], "open time backs off and caps");
        now += v.retry_after_ms;
        breaker_acquire(&b, &c, now, &p);
        breaker_record(&b, &c, now, p.generation, 1, BREAKER_FAILURE, -1);
    }
    /* Closing resets the back-off. */
    now += 5000;
    breaker_acquire(&b, &c, now, &p);
    breaker_record(&b, &c, now, p.generation, 1, BREAKER_SUCCESS, -1);
    breaker_acquire(&b, &c, now, &p);
    breaker_record(&b, &c, now, p.generation, 1, BREAKER_SUCCESS, -1);
    IS(b.state, BREAKER_CLOSED, "closed after probes");
    feed(&b, &c, now, 5, 5, -1);
    breaker_acquire(&b, &c, now, &v);
    IS(v.retry_after_ms, 1000, "back-off starts over after closing");
}

static void test_jitter_bounds(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict v;
    int i, ok = 1, varied = 0;
    uint64_t first = 0;

    c.open_jitter_milli = 200; /* +-20% */
    for (i = 0; i < 200; i++) {
        breaker_init(&b, &c, window_mem, (uint64_t)i + 1, 0);
        feed(&b, &c, 0, 5, 5, -1);
        breaker_acquire(&b, &c, 0, &v);
        ok &= v.retry_after_ms >= 800 && v.retry_after_ms <= 1200;
        if (i == 0)
            first = v.retry_after_ms;
        varied |= v.retry_after_ms != first;
    }
    OK(ok, "jittered open time within +-20%%");
    OK(varied, "jitter varies with the seed");
}

static void test_many_probes(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict p[3], v;
    int i;

    c.half_open_max_calls = 3;
    c.success_threshold = 3;
    init(&b, &c, 0);
    feed(&b, &c, 0, 5, 5, -1);
    for (i = 0; i < 3; i++) {
        breaker_acquire(&b, &c, 1000, &p[i]);
        OK(p[i].allow && p[i].probe, "probe %d admitted", i);
    }
    breaker_acquire(&b, &c, 1000, &v);
    OK(!v.allow && v.reason == BREAKER_HALF_OPEN_BUSY, "4th probe busy");
    for (i = 0; i < 3; i++)
        breaker_record(&b, &c, 1001, p[i].generation, 1, BREAKER_SUCCESS, -1);
    IS(b.state, BREAKER_CLOSED, "3 successes close");
}

static void test_ignore_outcome(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict v;
    int i;

    c.failure_threshold = 0;
    c.minimum_calls = 2;
    init(&b, &c, 0);
    for (i = 0; i < 10; i++) {
        breaker_acquire(&b, &c, 0, &v);
        breaker_record(&b, &c, 0, v.generation, 0, BREAKER_IGNORE, -1);
    }
    IS(b.calls, 0, "ignored outcomes are not calls");
    OK(breaker_failure_rate(&b, 0) == 0.0, "window untouched");
}

static void test_half_open_since(void)
{
    struct breaker b;
    struct breaker_verdict v;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_acquire(&b, &conf, 4000, &v); /* looked at long after */
    IS(b.since_ms, 1000, "half-open since the open time ended");
}

/* Issue 8, defect 14: a forced or disabled breaker keeps measuring (the
 * window and the consecutive run), drives nothing, and the automatic state
 * resumes with the window as recorded. */
static void test_force_measures(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict v;

    c.failure_threshold = 0;
    c.window_size = 10;
    c.minimum_calls = 5;
    c.failure_rate_threshold = 50;
    init(&b, &c, 0);
    breaker_force(&b, &c, 0, BREAKER_FORCE_DISABLED, 0);
    feed(&b, &c, 10, 5, 3, -1); /* failure x3, success x2 */
    OK(!strcmp(breaker_state_name(&b), "disabled") && b.opens == 0,
       "disabled: 60%% failures drive nothing (%s, opens %llu)",
       breaker_state_name(&b), (unsigned long long)b.opens);
    IS(breaker_failure_rate(&b, 10) * 10, 600,
       "disabled: the window records (failure_rate 60)");
    IS(b.calls, 5, "disabled: lifetime calls 5");
    breaker_force(&b, &c, 20, BREAKER_AUTO, 0);
    OK(!strcmp(breaker_state_name(&b), "closed") && b.opens == 0,
       "auto: resumes closed, the release itself trips nothing (%s)",
       breaker_state_name(&b));
    IS(breaker_failure_rate(&b, 20) * 10, 600,
       "auto: the window is kept as recorded");
    feed(&b, &c, 30, 1, 0, -1); /* 3 of 6 = 50% */
    IS(b.state, BREAKER_OPEN, "auto: the next outcome judges the window");
    IS(b.cause, BREAKER_CAUSE_FAILURE_RATE, "auto: opened by failure_rate");

    /* forced closed over an open breaker: measured, still forced_closed */
    breaker_force(&b, &c, 40, BREAKER_FORCE_CLOSED, 500);
    feed(&b, &c, 50, 4, 4, -1);
    OK(!strcmp(breaker_state_name(&b), "forced_closed") && b.opens == 1,
       "forced closed: failures drive nothing (%s)", breaker_state_name(&b));
    IS(breaker_failure_rate(&b, 50) * 10, 700,
       "forced closed over open: the window records (7 of 10)");
    /* forced open: a report without a permit is measured too */
    breaker_force(&b, &c, 60, BREAKER_FORCE_OPEN, 0);
    IS(breaker_record(&b, &c, 60, b.generation, 0, BREAKER_SUCCESS, -1),
       BREAKER_REC_FORCED, "forced open: a report is taken, not stale");
    IS(breaker_failure_rate(&b, 60) * 10, 600,
       "forced open: the window records (6 of 10)");
    breaker_force(&b, &c, 70, BREAKER_AUTO, 0);
    breaker_acquire(&b, &c, 1100, &v);
    OK(v.allow && v.probe, "auto after a force over open: half-open probe");
    breaker_record(&b, &c, 1100, v.generation, 1, BREAKER_SUCCESS, -1);
    breaker_acquire(&b, &c, 1100, &v);
    breaker_record(&b, &c, 1100, v.generation, 1, BREAKER_SUCCESS, -1);
    IS(b.state, BREAKER_CLOSED, "two probe successes close");
    IS(breaker_failure_rate(&b, 1100) * 10, 0, "closing starts a fresh window");

    /* The consecutive run is measured under a force too. */
    init(&b, &conf, 0);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_CLOSED, 0);
    fail_n(&b, 0, 4);
    breaker_force(&b, &conf, 0, BREAKER_AUTO, 0);
    IS(b.state, BREAKER_CLOSED, "4 forced failures: closed after the force");
    fail_n(&b, 0, 1);
    IS(b.state, BREAKER_OPEN, "the 5th consecutive failure opens");
    IS(b.cause, BREAKER_CAUSE_CONSECUTIVE, "opened by consecutive_failures");
}

/* A call is slow at latency >= slow_call_ms (resilience4j: strictly >). */
static void test_slow_boundary(void)
{
    struct breaker_conf c = conf;
    struct breaker b;

    c.failure_threshold = 0;
    c.slow_call_ms = 200;
    init(&b, &c, 0);
    feed(&b, &c, 0, 1, 0, 199);
    IS(b.slow_calls, 0, "199 ms with slow_call_ms 200: not slow");
    feed(&b, &c, 0, 1, 0, 200);
    IS(b.slow_calls, 1, "200 ms with slow_call_ms 200: slow");
    feed(&b, &c, 0, 1, 0, -1);
    IS(b.slow_calls, 1, "unknown latency: never slow");
}

/* ---- transitions: every visible change reported once, with its cause ---- */

/* Drain b's queue into "from>to:cause,..." ("" if empty). */
static const char *drain(struct breaker *b)
{
    static char buf[512];
    struct breaker_transition t;
    size_t len = 0;

    buf[0] = 0;
    while (breaker_next_transition(b, &t))
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s>%s:%s",
                                len ? "," : "", breaker_visible_name(t.from),
                                breaker_visible_name(t.to),
                                breaker_transition_cause_name(t.cause));
    return buf;
}

#define TR(b, want, name)                                                      \
    do {                                                                       \
        const char *got_ = drain(b);                                           \
        if (!OK(!strcmp(got_, want), "%s", name))                              \
            printf("#   got \"%s\", want \"%s\"\n", got_, want);               \
    } while (0)

static void test_transition_names(void)
{
    static const char *const causes[] = {
        "failures",      "failure_rate",  "slow_rate",  "open_time_over",
        "probe_success", "probe_failure", "probe_slow", "force",
        "force_expired", "reset",         "remote"};
    static const char *const states[] = {"closed",        "open",
                                         "half_open",     "forced_open",
                                         "forced_closed", "disabled"};
    int i, ok = 1;

    for (i = 0; i <= BREAKER_TC_REMOTE; i++)
        ok &= !strcmp(
            breaker_transition_cause_name((enum breaker_transition_cause)i),
            causes[i]);
    OK(ok && BREAKER_TC_REMOTE == 10, "the 11 cause names, in enum order");
    ok = 1;
    for (i = 0; i <= BREAKER_VIS_DISABLED; i++)
        ok &= !strcmp(breaker_visible_name((enum breaker_visible)i), states[i]);
    OK(ok, "the 6 visible state names, in enum order");
}

static void test_transition_trips(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict v;

    init(&b, &conf, 0);
    TR(&b, "", "init reports nothing");
    fail_n(&b, 0, 4);
    TR(&b, "", "4 failures: nothing");
    fail_n(&b, 0, 1);
    TR(&b, "closed>open:failures", "5th consecutive failure: failures");
    breaker_acquire(&b, &conf, 10, &v);
    breaker_record(&b, &conf, 10, b.generation, 0, BREAKER_FAILURE, -1);
    TR(&b, "", "open: acquire and a report without permit report nothing");

    c.failure_threshold = 0;
    c.minimum_calls = 4;
    c.failure_rate_threshold = 50;
    init(&b, &c, 0);
    feed(&b, &c, 0, 3, 1, -1);
    TR(&b, "", "below minimum_calls: nothing");
    feed(&b, &c, 0, 1, 1, -1);
    TR(&b, "closed>open:failure_rate", "failure rate rule: failure_rate");

    c.failure_rate_threshold = 0;
    c.slow_call_ms = 100;
    c.slow_call_rate_threshold = 50;
    init(&b, &c, 0);
    feed(&b, &c, 0, 2, 0, 10);
    feed(&b, &c, 0, 2, 0, 100);
    TR(&b, "closed>open:slow_rate", "slow rate rule: slow_rate");
}

static void test_transition_probes(void)
{
    struct breaker_conf c = conf;
    struct breaker b;
    struct breaker_verdict p;
    uint32_t gen;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    drain(&b);
    /* Only breaker_advance looks: status, the wake timer. */
    breaker_advance(&b, &conf, 999);
    TR(&b, "", "advance 1 ms before the open time ends: nothing");
    breaker_advance(&b, &conf, 4000);
    TR(&b, "open>half_open:open_time_over",
       "advance alone reveals open -> half_open");
    IS(b.since_ms, 1000, "half-open since the open period ended");
    breaker_advance(&b, &conf, 5000);
    breaker_acquire(&b, &conf, 5000, &p);
    TR(&b, "", "reported once: later looks report nothing");
    breaker_record(&b, &conf, 5000, p.generation, 1, BREAKER_SUCCESS, -1);
    TR(&b, "", "1 probe success of 2: nothing");
    breaker_acquire(&b, &conf, 5000, &p);
    breaker_record(&b, &conf, 5000, p.generation, 1, BREAKER_SUCCESS, -1);
    TR(&b, "half_open>closed:probe_success", "2nd success: probe_success");

    fail_n(&b, 6000, 5);
    drain(&b);
    breaker_acquire(&b, &conf, 7000, &p);
    TR(&b, "open>half_open:open_time_over", "acquire reveals half-open");
    gen = p.generation;
    breaker_record(&b, &conf, 7000, gen, 1, BREAKER_FAILURE, -1);
    TR(&b, "half_open>open:probe_failure", "probe failure re-opens");
    breaker_record(&b, &conf, 7000, gen, 1, BREAKER_FAILURE, -1);
    TR(&b, "", "a stale report reports nothing");

    c.slow_call_ms = 100;
    c.slow_call_rate_threshold = 50;
    init(&b, &c, 0);
    feed(&b, &c, 0, 5, 5, -1);
    drain(&b);
    breaker_acquire(&b, &c, 1000, &p);
    drain(&b);
    breaker_record(&b, &c, 1000, p.generation, 1, BREAKER_SUCCESS, 100);
    TR(&b, "half_open>open:probe_slow", "slow probe: probe_slow");
}

static void test_transition_force(void)
{
    struct breaker b;
    struct breaker_verdict v;

    /* Force while open, then back to the automatic state. */
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    drain(&b);
    breaker_force(&b, &conf, 100, BREAKER_FORCE_OPEN, 0);
    TR(&b, "open>forced_open:force", "force open while open");
    breaker_force(&b, &conf, 200, BREAKER_FORCE_OPEN, 5000);
    TR(&b, "", "same force again (TTL only): nothing");
    breaker_force(&b, &conf, 300, BREAKER_AUTO, 0);
    TR(&b, "forced_open>open:force", "auto: back to open");
    breaker_force(&b, &conf, 300, BREAKER_AUTO, 0);
    TR(&b, "", "auto while auto: nothing");

    /* The automatic state moves under a force without a word; auto
     * reveals where it stands. */
    breaker_force(&b, &conf, 400, BREAKER_FORCE_CLOSED, 0);
    TR(&b, "open>forced_closed:force", "force closed over open");
    breaker_advance(&b, &conf, 2000);
    TR(&b, "", "open period over under the force: not visible");
    IS(b.since_ms, 400, "an invisible change leaves since_ms");
    breaker_force(&b, &conf, 2100, BREAKER_FORCE_DISABLED, 0);
    TR(&b, "forced_closed>disabled:force", "forced closed -> disabled");
    breaker_force(&b, &conf, 2200, BREAKER_AUTO, 0);
    TR(&b, "disabled>half_open:force", "auto: back to half-open underneath");
    breaker_acquire(&b, &conf, 2200, &v);
    OK(v.allow && v.probe, "and it probes");

    /* Force expiry, revealed by advance alone. */
    init(&b, &conf, 0);
    breaker_force(&b, &conf, 10, BREAKER_FORCE_OPEN, 300);
    TR(&b, "closed>forced_open:force", "force open over closed");
    breaker_advance(&b, &conf, 309);
    TR(&b, "", "1 ms before the TTL: nothing");
    breaker_advance(&b, &conf, 400);
    TR(&b, "forced_open>closed:force_expired", "advance reveals force expiry");
    IS(b.since_ms, 310, "closed since the TTL ended, not since the look");
    breaker_advance(&b, &conf, 500);
    TR(&b, "", "reported once");
}

/* A force's TTL and the open period both over by one look: reported in the
 * order they happened, whoever looks when. */
static void test_transition_force_and_open_time(void)
{
    struct breaker b;

    /* The force ends first (500), the open period later (1000). */
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 500);
    drain(&b);
    breaker_advance(&b, &conf, 2000);
    TR(&b, "forced_open>open:force_expired,open>half_open:open_time_over",
       "force over first: forced_open -> open -> half_open");
    IS(b.since_ms, 1000, "half-open since the open period ended");

    /* The open period ends first (1000), the force later (1500). */
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_CLOSED, 1500);
    drain(&b);
    breaker_advance(&b, &conf, 3000);
    TR(&b, "forced_closed>half_open:force_expired",
       "open period over first: one change, forced_closed -> half_open");
    IS(b.since_ms, 1500, "half-open (visibly) since the force ended");

    /* The same, seen in two looks: the same report. */
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_CLOSED, 1500);
    drain(&b);
    breaker_advance(&b, &conf, 1200);
    TR(&b, "", "a look between the two: nothing visible yet");
    breaker_advance(&b, &conf, 3000);
    TR(&b, "forced_closed>half_open:force_expired",
       "the same single change, whoever looked in between");

    /* A tie counts as the open period ending under the force. */
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 1000);
    drain(&b);
    breaker_advance(&b, &conf, 1000);
    TR(&b, "forced_open>half_open:force_expired", "tie: one change");
}

/* The most one call can report is BREAKER_TRANSITIONS_MAX (3): a force
 * whose own advance makes two. */
static void test_transition_max_per_call(void)
{
    struct breaker b;

    IS(BREAKER_TRANSITIONS_MAX, 3, "queue sized for 3 per call");
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 500);
    drain(&b);
    breaker_force(&b, &conf, 2000, BREAKER_FORCE_CLOSED, 0);
    TR(&b,
       "forced_open>open:force_expired,open>half_open:open_time_over,"
       "half_open>forced_closed:force",
       "one breaker_force call: 3 transitions, in order");
    IS(b.transitions_dropped, 0, "none dropped when drained after each call");

    /* Reset does the same: due changes first, then the reset. */
    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_DISABLED, 500);
    drain(&b);
    breaker_reset(&b, 2000);
    TR(&b,
       "disabled>open:force_expired,open>half_open:open_time_over,"
       "half_open>closed:reset",
       "one breaker_reset call: 3 transitions, in order");
}

/* A caller that does not drain: the oldest give way, counted. */
static void test_transition_overflow(void)
{
    struct breaker b;

    init(&b, &conf, 0);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 0);   /* 1 */
    breaker_force(&b, &conf, 0, BREAKER_FORCE_CLOSED, 0); /* 2 */
    breaker_force(&b, &conf, 0, BREAKER_AUTO, 0);         /* 3 */
    IS(b.transitions_dropped, 0, "3 undrained fit");
    fail_n(&b, 0, 5);     /* 4: closed -> open */
    breaker_reset(&b, 0); /* 5: open -> closed */
    IS(b.transitions_dropped, 2, "the 4th and 5th drop the 2 oldest");
    TR(&b, "forced_closed>closed:force,closed>open:failures,open>closed:reset",
       "the newest 3 remain, oldest first");
    IS(b.state, BREAKER_CLOSED, "the breaker itself is unaffected");
}

static void test_transition_reset(void)
{
    static const struct {
        const char *setup, *want;
    } cases[] = {
        {"closed", ""},
        {"open", "open>closed:reset"},
        {"half_open", "half_open>closed:reset"},
        {"forced_open", "forced_open>closed:reset"},
        {"forced_closed", "forced_closed>closed:reset"},
        {"disabled", "disabled>closed:reset"},
    };
    struct breaker b;
    uint32_t gen;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *s = cases[i].setup;

        init(&b, &conf, 0);
        if (strcmp(s, "closed"))
            fail_n(&b, 0, 5);
        if (!strcmp(s, "half_open"))
            breaker_advance(&b, &conf, 1000);
        if (!strcmp(s, "forced_open"))
            breaker_force(&b, &conf, 500, BREAKER_FORCE_OPEN, 0);
        if (!strcmp(s, "forced_closed"))
            breaker_force(&b, &conf, 500, BREAKER_FORCE_CLOSED, 0);
        if (!strcmp(s, "disabled"))
            breaker_force(&b, &conf, 500, BREAKER_FORCE_DISABLED, 0);
        drain(&b);
        OK(!strcmp(breaker_state_name(&b), s), "set up %s", s);
        gen = b.generation;
        /* Before the open period (0..1000) ends, except for half_open. */
        breaker_reset(&b, strcmp(s, "half_open") ? 500 : 1000);
        TR(&b, cases[i].want, s);
        OK(b.generation != gen, "reset from %s moves the generation", s);
    }
    /* A force whose TTL passed before the reset: its expiry first. */
    init(&b, &conf, 0);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 100);
    drain(&b);
    breaker_reset(&b, 200);
    TR(&b, "forced_open>closed:force_expired",
       "reset after an unseen TTL end: the expiry, and nothing for the reset");
}

static void test_transition_quiet_calls(void)
{
    struct breaker b;
    struct breaker_verdict p, v;

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_acquire(&b, &conf, 1000, &p);
    drain(&b);
    breaker_acquire(&b, &conf, 1000, &v); /* busy */
    breaker_release(&b, p.generation, 1);
    breaker_record(&b, &conf, 1000, p.generation, 1, BREAKER_IGNORE, -1);
    TR(&b, "", "busy, release, ignored outcome: nothing");
    breaker_force(&b, &conf, 1000, BREAKER_FORCE_CLOSED, 0);
    drain(&b);
    fail_n(&b, 1000, 20);
    TR(&b, "", "outcomes under a force: measured, nothing reported");
}

/* Changes made on another daemon: due changes first, then at most one of
 * their own, reported with cause remote (so the queue bound holds). */
static void test_transition_remote(void)
{
    struct breaker b;
    struct breaker_verdict v;
    struct breaker_export ex;
    uint8_t calls[BREAKER_MAX_COUNT_WINDOW];

    init(&b, &conf, 0);
    fail_n(&b, 0, 5);
    breaker_force(&b, &conf, 0, BREAKER_FORCE_OPEN, 500);
    drain(&b);
    breaker_remote_open(&b, &conf, 2000, 300, 900);
    TR(&b,
       "forced_open>open:force_expired,open>half_open:open_time_over,"
       "half_open>open:remote",
       "remote open: 3 transitions in one call, the last remote");
    OK(b.open_until_ms == 2300 && b.open_for_ms == 900 &&
           b.cause == BREAKER_CAUSE_REMOTE && b.opens == 2,
       "open until 2300, the period's length 900, opened_by remote");
    breaker_acquire(&b, &conf, 2100, &v);
    OK(!v.allow && v.retry_after_ms == 200, "denied with 200 ms left");
    breaker_remote_open(&b, &conf, 2100, 100, 100);
    TR(&b, "", "open for longer already: nothing");
    IS(b.open_until_ms, 2300, "the later end stays");
    breaker_remote_close(&b, 2200);
    TR(&b, "open>closed:remote", "remote close of an open breaker");
    IS(b.reopens, 0, "the backoff step starts again");
    breaker_remote_close(&b, 2200);
    TR(&b, "", "remote close of a closed one: nothing");
    breaker_remote_open(&b, &conf, 2300, 0, 0);
    OK(b.state == BREAKER_OPEN && b.open_until_ms == 2301,
       "open_left_ms 0 counts as 1");
    TR(&b, "closed>open:remote", "reported");
    breaker_remote_force(&b, 2300, BREAKER_FORCE_DISABLED, 0);
    TR(&b, "open>disabled:remote", "a remote force");
    breaker_remote_close(&b, 2300);
    TR(&b, "", "a remote close under a force moves the state unseen");
    OK(b.state == BREAKER_CLOSED && b.force == BREAKER_FORCE_DISABLED,
       "closed below the force");
    breaker_remote_reset(&b, 2400);
    TR(&b, "disabled>closed:remote", "a remote reset");
    breaker_remote_open(&b, &conf, 2500, 50, 50);
    breaker_export(&b, 2510, &ex, calls, NULL);
    OK(breaker_export_check(&ex, calls, NULL) == 0 &&
           ex.cause == BREAKER_CAUSE_REMOTE && ex.open_left_ms == 40,
       "exported with cause remote and 40 ms left; the check takes it");
    OK(!strcmp(breaker_cause_name(BREAKER_CAUSE_REMOTE), "remote"),
       "opened_by \"remote\"");
}

int main(void)
{
    test_opens_after_consecutive_failures();
    test_half_open_probe_cycle();
    test_probe_failure_reopens();
    test_lost_and_ignored_probe();
    test_stale_generation();
    test_force();
    test_reset();
    test_threshold_zero_never_opens();
    test_failure_rate_count_window();
    test_count_window_slides();
    test_time_window_expires();
    test_time_window_wrap();
    test_slow_call_rate();
    test_slow_probe_reopens();
    test_backoff_and_cap();
    test_jitter_bounds();
    test_many_probes();
    test_ignore_outcome();
    test_half_open_since();
    test_force_measures();
    test_slow_boundary();
    test_transition_names();
    test_transition_trips();
    test_transition_probes();
    test_transition_force();
    test_transition_force_and_open_time();
    test_transition_max_per_call();
    test_transition_overflow();
    test_transition_reset();
    test_transition_quiet_calls();
    test_transition_remote();
    return tap_done();
}
