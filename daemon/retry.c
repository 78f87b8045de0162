/*
 * retry.c - retry advice: back-off delays, jitter and the host-wide retry
 * budget (see retry.h for the formulas and the decision order).
 *
 * Pure: no I/O, no clock reads, no allocation, no globals, no floating
 * point.  Randomness comes only from the caller's xorshift64 state, so a
 * test with a fixed seed is reproducible.  Time only moves forward through
 * the now_ms arguments; budget buckets from a later second than now_ms
 * (callers mixing clocks) still count, so a clock step back never frees
 * budget.
 *
 * Units: every delay is in ms.  Strategy delays are computed with saturating
 * integer arithmetic and capped at max_ms, so an attempt number of a million
 * or a multiplier of 100 cannot overflow; loops stop as soon as the cap is
 * reached.
 */
#include "retry.h"

#include <string.h>

/* xorshift64 must never hold 0; a zeroed state is replaced by this. */
#define RNG_SEED_FALLBACK 0x9e3779b97f4a7c15ULL

/* a * b, or UINT64_MAX when it would not fit. */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    if (a && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* --- strategy delays ------------------------------------------------------ */

/*
 * base * (multiplier_milli / 1000)^(attempt - 1), capped at max_ms.  Kept in
 * thousandths of a ms so fractional multipliers (1.5) compound without
 * rounding each step to whole ms.  The loop ends at the cap; with the
 * smallest multiplier above 1 (1.001) and base 1 ms that is ~18,000 steps
 * to a day-long cap, and a multiplier of exactly 1 (or a fixed point) ends
 * it at once.
 */
static uint64_t exponential_ms(const struct retry_conf *c, uint32_t attempt)
{
    uint64_t v = mul_sat(c->base_ms, 1000), cap = mul_sat(c->max_ms, 1000);
    uint64_t next;
    uint32_t i;

    for (i = 1; i < attempt && v < cap; i++) {
        next = mul_sat(v, c->multiplier_milli) / 1000;
        if (next == v)
            break; /* multiplier 1: never grows */
        v = next;
    }
    return v / 1000;
}

/* base * fib(attempt), fib(1) = fib(2) = 1; stops once the cap is passed
 * (fib grows exponentially: < 100 steps before that or overflow). */
static uint64_t fibonacci_ms(const struct retry_conf *c, uint32_t attempt)
{
    uint64_t a = 1, b = 1, t;
    uint32_t i;

    if (c->base_ms == 0)
        return 0;
    for (i = 1; i < attempt && mul_sat(c->base_ms, a) < c->max_ms; i++) {
        if (a > UINT64_MAX - b)
            return UINT64_MAX;
        t = a + b;
        a = b;
        b = t;
    }
    return mul_sat(c->base_ms, a);
}

/* Strategy delay for the attempt that failed, before jitter, <= max_ms. */
static uint64_t strategy_ms(const struct retry_conf *c, uint32_t attempt)
{
    uint64_t d;

    switch (c->strategy) {
    case RETRY_LINEAR:
        d = mul_sat(c->base_ms, attempt);
        break;
    case RETRY_EXPONENTIAL:
        d = exponential_ms(c, attempt);
        break;
    case RETRY_FIBONACCI:
        d = fibonacci_ms(c, attempt);
        break;
    case RETRY_FIXED:
    default:
        d = c->base_ms;
        break;
    }
    return min_u64(d, c->max_ms);
}

/* --- jitter --------------------------------------------------------------- */

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state ? *state : RNG_SEED_FALLBACK;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Uniform in [lo, hi] (lo <= hi).  The modulo bias is below span / 2^64,
 * i.e. under 1e-11 for any delay up to a day. */
static uint64_t uniform(uint64_t *rng, uint64_t lo, uint64_t hi)
{
    uint64_t span = hi - lo, x = xorshift64(rng);

    if (span == UINT64_MAX)
        return x;
    return lo + x % (span + 1);
}

/* d = capped strategy delay; prev = previous delay advised (0 = none). */
static uint64_t jittered_ms(const struct retry_conf *c, uint64_t d,
                            uint64_t prev, uint64_t *rng)
{
    uint64_t hi;

    switch (c->jitter) {
    case RETRY_JITTER_FULL:
        return uniform(rng, 0, d);
    case RETRY_JITTER_EQUAL:
        /* [d/2, d]: for an odd d the top is d, not 2 * (d/2). */
        return uniform(rng, d / 2, d);
    case RETRY_JITTER_DECORRELATED:
        if (prev == 0)
            prev = c->base_ms;
        hi = min_u64(c->max_ms, mul_sat(prev, 3));
        return uniform(rng, min_u64(c->base_ms, hi), hi);
    case RETRY_JITTER_NONE:
    default:
        return d;
    }
}

/* --- budget --------------------------------------------------------------- */

/* Bucket ids are now_ms / 1000 + 1, so 0 marks an empty bucket. */
static uint64_t budget_sec(uint64_t now_ms)
{
    return now_ms / 1000 + 1;
}

/* The bucket for now_ms, emptied first if it still holds an older second. */
static size_t budget_slot(struct retry_budget *b, uint64_t now_ms)
{
    uint64_t sec = budget_sec(now_ms);
    size_t i = (size_t)(sec % RETRY_BUDGET_S);

    if (b->sec[i] != sec) {
        b->sec[i] = sec;
        b->calls[i] = 0;
        b->retries[i] = 0;
    }
    return i;
}

/* Calls and retries of the seconds that end within RETRY_BUDGET_S of now. */
static void budget_totals(const struct retry_budget *b, uint64_t now_ms,
                          uint64_t *calls, uint64_t *retries)
{
    uint64_t sec = budget_sec(now_ms);
    size_t i;

    *calls = *retries = 0;
    for (i = 0; i < RETRY_BUDGET_S; i++) {
        if (b->sec[i] && b->sec[i] + RETRY_BUDGET_S > sec) {
            *calls += b->calls[i];
            *retries += b->retries[i];
        }
    }
}

/* Room for one more retry: retries < max(ratio * calls, min_per_s * 10). */
static int budget_has_room(const struct retry_conf *c,
                           const struct retry_budget *b, uint64_t now_ms)
{
    uint64_t calls, retries, by_ratio, floor_n;

    budget_totals(b, now_ms, &calls, &retries);
    by_ratio = mul_sat(calls, c->budget_ratio_milli) / 1000;
    floor_n = (uint64_t)c->budget_min_per_s * RETRY_BUDGET_S;
    return retries < (by_ratio > floor_n ? by_ratio : floor_n);
}

void retry_budget_init(struct retry_budget *b)
{
    memset(b, 0, sizeof(*b));
}

void retry_budget_call(struct retry_budget *b, uint64_t now_ms)
{
    size_t i = budget_slot(b, now_ms);

    if (b->calls[i] < UINT32_MAX)
        b->calls[i]++;
}

static void budget_retry(struct retry_budget *b, uint64_t now_ms)
{
    size_t i = budget_slot(b, now_ms);

    if (b->retries[i] < UINT32_MAX)
        b->retries[i]++;
}

/* --- advice --------------------------------------------------------------- */

static void say_no(struct retry_advice *out, const char *reason)
{
    out->retry = 0;
    out->delay_ms = 0;
    out->reason = reason;
}

void retry_advise(const struct retry_conf *c, struct retry_budget *b,
                  uint64_t now_ms, uint32_t attempt, int transient,
                  int unknown_non_idempotent, uint64_t breaker_wait_ms,
                  int breaker_open, uint64_t *prev_delay_ms, uint64_t *rng,
                  struct retry_advice *out)
{
    uint64_t d, prev;

    if (attempt == 0)
        attempt = 1;
    if (!transient) {
        say_no(out, "permanent");
    } else if (unknown_non_idempotent) {
        say_no(out, "reconcile"); /* it may have taken effect: look first */
    } else if (attempt >= c->max_attempts) {
        say_no(out, "max_attempts");
    } else if (breaker_open && breaker_wait_ms > 0 &&
               breaker_wait_ms > c->max_ms) {
        say_no(out, "circuit_open"); /* longer than we would ever wait */
    } else if (!budget_has_room(c, b, now_ms)) {
        say_no(out, "budget_exhausted");
    } else {
        /* A first attempt starts a new back-off sequence, so decorrelated
         * jitter does not inherit another call's delay. */
        prev = attempt > 1 ? *prev_delay_ms : 0;
        d = jittered_ms(c, strategy_ms(c, attempt), prev, rng);
        if (d < breaker_wait_ms)
            d = breaker_wait_ms; /* never sooner than the key can pass */
        *prev_delay_ms = d;
        budget_retry(b, now_ms);
        out->retry = 1;
        out->delay_ms = d;
        out->reason = "ok";
    }
}
