/*
 * retry.h - retry advice for a failed call (SPEC §4 "Retry advice"), pure:
 * takes the monotonic time in ms and a caller-owned PRNG state; no I/O, no
 * clock reads, no allocation.
 *
 * Delay for attempt n (the attempt that failed, 1-based) before jitter:
 *   fixed:       base
 *   linear:      base * n
 *   exponential: base * multiplier^(n-1)
 *   fibonacci:   base * fib(n)   (fib(1)=1, fib(2)=1, fib(3)=2, ...)
 * capped at max_ms.  Jitter (d = capped delay):
 *   none: d;  full: uniform [0, d];  equal: d/2 + uniform [0, d/2];
 *   decorrelated: uniform [base, min(max_ms, prev * 3)] where prev is the
 *   previous delay advised for this key (base when none).
 * Then: never sooner than the breaker could let the retry through
 * (delay = max(delay, breaker_wait_ms)).
 *
 * The host-wide retry budget: over the last 10 s, retries advised may not
 * exceed max(budget_ratio * calls, budget_min_per_s * 10), where calls are
 * the outcomes reported (retry_budget_call) and retries are the "yes"
 * advices given (each one is counted when it is given).
 *
 * Decision order: permanent error -> no ("permanent"); unknown outcome of a
 * non-idempotent call -> no ("reconcile"); attempt >= max_attempts -> no
 * ("max_attempts"); breaker open (breaker_wait_ms > 0 and the breaker is
 * open) with the wait beyond max_ms -> no ("circuit_open"); budget spent ->
 * no ("budget_exhausted"); else yes ("ok") with the delay.
 */
#ifndef RESIL_RETRY_H
#define RESIL_RETRY_H

#include <stdint.h>

enum retry_strategy {
    RETRY_FIXED,
    RETRY_LINEAR,
    RETRY_EXPONENTIAL,
    RETRY_FIBONACCI,
};

enum retry_jitter {
    RETRY_JITTER_NONE,
    RETRY_JITTER_FULL,
    RETRY_JITTER_EQUAL,
    RETRY_JITTER_DECORRELATED,
};

struct retry_conf {
    uint32_t max_attempts;        /* default 3; 1 = never retry */
    enum retry_strategy strategy; /* default exponential */
    uint64_t base_ms;             /* default 1000 */
    uint64_t max_ms;              /* default 60000 */
    uint32_t multiplier_milli;    /* multiplier * 1000, default 2000 */
    enum retry_jitter jitter;     /* default none */
    uint32_t budget_ratio_milli;  /* budget_ratio * 1000, default 200 */
    uint32_t budget_min_per_s;    /* default 10 */
};

#define RETRY_CONF_DEFAULT                                                     \
    {                                                                          \
        3, RETRY_EXPONENTIAL, 1000, 60000, 2000, RETRY_JITTER_NONE, 200, 10    \
    }

#define RETRY_BUDGET_S 10 /* seconds the budget looks back */

/* Host-wide budget: one-second buckets over the last RETRY_BUDGET_S. */
struct retry_budget {
    uint64_t sec[RETRY_BUDGET_S]; /* now_ms/1000 + 1 of bucket; 0 empty */
    uint32_t calls[RETRY_BUDGET_S];
    uint32_t retries[RETRY_BUDGET_S];
};

struct retry_advice {
    int retry;
    uint64_t delay_ms;
    const char *reason; /* ok, permanent, reconcile, max_attempts,
                           budget_exhausted, circuit_open (static text) */
};

void retry_budget_init(struct retry_budget *b);

/* Count one reported outcome as a call. */
void retry_budget_call(struct retry_budget *b, uint64_t now_ms);

/*
 * Advise on a failed (or unknown) call.  attempt >= 1 is the attempt that
 * failed; transient 0 = permanent error; unknown_non_idempotent 1 = outcome
 * unknown and the call was not idempotent; breaker_wait_ms = how long the
 * breaker would deny the key (0 = passes now); breaker_open = 1 if it is
 * open.  *prev_delay_ms (per key, in/out) feeds decorrelated jitter; *rng
 * (per key, nonzero, in/out) is an xorshift64 state.  A "yes" consumes
 * budget.
 */
void retry_advise(const struct retry_conf *c, struct retry_budget *b,
                  uint64_t now_ms, uint32_t attempt, int transient,
                  int unknown_non_idempotent, uint64_t breaker_wait_ms,
                  int breaker_open, uint64_t *prev_delay_ms, uint64_t *rng,
                  struct retry_advice *out);

#endif
