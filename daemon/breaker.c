/*
 * breaker.c - circuit breaker state machine (see breaker.h).
 *
 * Pure: no I/O, no clock reads, no allocation.  Time only moves forward
 * through the now_ms arguments; a now_ms older than a stored instant
 * (callers mixing clocks) is treated as "no time passed", never as a wrap.
 */
#include "breaker.h"

#include <string.h>

/* --- sliding window ---------------------------------------------------- */

_Static_assert(BREAKER_MAX_COUNT_WINDOW <= UINT16_MAX &&
                   BREAKER_MAX_TIME_WINDOW <= UINT16_MAX,
               "window sizes and counts are kept in uint16_t");

/* 64-bit words in one bitset of a count window of n calls. */
static size_t bit_words(uint32_t n)
{
    return ((size_t)n + 63) / 64;
}

size_t breaker_window_bytes(const struct breaker_conf *c)
{
    uint32_t n = c->window_size ? c->window_size : 1;

    if (c->window_time)
        return (size_t)n * sizeof(struct breaker_bucket);
    return 2 * bit_words(n) * sizeof(uint64_t);
}

static void window_clear(struct breaker *b)
{
    b->win_pos = b->win_fill = 0;
    b->win_calls = b->win_failures = b->win_slow = 0;
    if (b->window_time)
        memset(b->buckets, 0, (size_t)b->window_size * sizeof(*b->buckets));
    else
        memset(b->bits, 0, 2 * bit_words(b->window_size) * sizeof(uint64_t));
}

/* Slot i of a count window: bit 0 failure, bit 1 slow. */
static unsigned slot_get(const struct breaker *b, uint32_t i)
{
    const uint64_t *slow = b->bits + bit_words(b->window_size);

    return (unsigned)((b->bits[i / 64] >> (i % 64)) & 1) |
           (unsigned)((slow[i / 64] >> (i % 64)) & 1) << 1;
}

static void slot_set(struct breaker *b, uint32_t i, unsigned v)
{
    uint64_t *slow = b->bits + bit_words(b->window_size);
    uint64_t m = (uint64_t)1 << (i % 64);

    b->bits[i / 64] = (b->bits[i / 64] & ~m) | ((v & 1) ? m : 0);
    slow[i / 64] = (slow[i / 64] & ~m) | ((v & 2) ? m : 0);
}

/* Totals of the time window as seen at now_ms. */
static void time_totals(const struct breaker *b, uint64_t now_ms,
                        uint32_t *calls, uint32_t *failures, uint32_t *slow)
{
    /* Modulo 2^32: see struct breaker_bucket. */
    uint32_t sec = (uint32_t)(now_ms / 1000 + 1);
    uint32_t i;

    *calls = *failures = *slow = 0;
    for (i = 0; i < b->window_size; i++) {
        const struct breaker_bucket *k = &b->buckets[i];
        /* No test of k->sec against 0: a cleared bucket counts nothing
         * anyway, and the second that wraps to 0 holds calls like any
         * other. */
        if ((uint32_t)(sec - k->sec) < b->window_size) {
            *calls += k->calls;
            *failures += k->failures;
            *slow += k->slow;
        }
    }
}

static void window_totals(const struct breaker *b, uint64_t now_ms,
                          uint32_t *calls, uint32_t *failures, uint32_t *slow)
{
    if (b->window_time) {
        time_totals(b, now_ms, calls, failures, slow);
    } else {
        *calls = b->win_calls;
        *failures = b->win_failures;
        *slow = b->win_slow;
    }
}

static void window_add(struct breaker *b, uint64_t now_ms, int failed, int slow)
{
    if (b->window_time) {
        uint64_t sec = now_ms / 1000 + 1;
        struct breaker_bucket *k = &b->buckets[sec % b->window_size];
        if (k->sec != (uint32_t)sec) {
            memset(k, 0, sizeof(*k));
            k->sec = (uint32_t)sec;
        }
        k->calls++;
        k->failures += (uint32_t)failed;
        k->slow += (uint32_t)slow;
        return;
    }
    if (b->win_fill == b->window_size) {
        unsigned old = slot_get(b, b->win_pos);
        b->win_calls--;
        b->win_failures = (uint16_t)(b->win_failures - (old & 1));
        b->win_slow = (uint16_t)(b->win_slow - ((old >> 1) & 1));
    } else {
        b->win_fill++;
    }
    slot_set(b, b->win_pos, (unsigned)(failed | slow << 1));
    b->win_pos = (uint16_t)((b->win_pos + 1) % b->window_size);
    b->win_calls++;
    b->win_failures = (uint16_t)(b->win_failures + failed);
    b->win_slow = (uint16_t)(b->win_slow + slow);
}

/* --- transitions -------------------------------------------------------- */

/* Append from -> (visible state now) with its cause, unless nothing visible
 * changed.  Full only if the caller skipped draining (BREAKER_TRANSITIONS_MAX
 * bounds one call): the oldest entry gives way, counted. */
static void report(struct breaker *b, enum breaker_visible from,
                   enum breaker_transition_cause cause)
{
    struct breaker_tq_entry *t;
    enum breaker_visible to = breaker_visible_state(b);

    if (from == to)
        return;
    if (b->tq_len == BREAKER_TRANSITIONS_MAX) {
        b->tq_head = (uint8_t)((b->tq_head + 1) % BREAKER_TRANSITIONS_MAX);
        b->tq_len--;
        b->transitions_dropped++;
    }
    t = &b->tq[(b->tq_head + b->tq_len) % BREAKER_TRANSITIONS_MAX];
    t->from = (uint8_t)from;
    t->to = (uint8_t)to;
    t->cause = (uint8_t)cause;
    b->tq_len++;
}

int breaker_next_transition(struct breaker *b, struct breaker_transition *t)
{
    if (!b->tq_len)
        return 0;
    t->from = (enum breaker_visible)b->tq[b->tq_head].from;
    t->to = (enum breaker_visible)b->tq[b->tq_head].to;
    t->cause = (enum breaker_transition_cause)b->tq[b->tq_head].cause;
    b->tq_head = (uint8_t)((b->tq_head + 1) % BREAKER_TRANSITIONS_MAX);
    b->tq_len--;
    return 1;
}

static enum breaker_transition_cause trip_cause(enum breaker_cause c)
{
    switch (c) {
    case BREAKER_CAUSE_CONSECUTIVE:
        return BREAKER_TC_FAILURES;
    case BREAKER_CAUSE_FAILURE_RATE:
        return BREAKER_TC_FAILURE_RATE;
    case BREAKER_CAUSE_SLOW_RATE:
        return BREAKER_TC_SLOW_RATE;
    case BREAKER_CAUSE_PROBE_FAILED:
        return BREAKER_TC_PROBE_FAILURE;
    case BREAKER_CAUSE_PROBE_SLOW:
    case BREAKER_CAUSE_NONE:   /* not reached: every trip has a cause */
    case BREAKER_CAUSE_REMOTE: /* not reached: breaker_remote_open */
        break;
    }
    return BREAKER_TC_PROBE_SLOW;
}

static void set_state(struct breaker *b, enum breaker_state s, uint64_t now_ms)
{
    b->state = s;
    b->since_ms = now_ms;
    b->generation++;
    b->consecutive_failures = 0;
    b->probes_in_flight = 0;
    b->probe_successes = 0;
    /* Entering closed starts a fresh window; while open or half-open the
     * window keeps the figures that tripped it, for status. */
    if (s == BREAKER_CLOSED)
        window_clear(b);
}

static uint64_t next_random(struct breaker *b)
{
    uint64_t x = b->rng; /* xorshift64; never zero */

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return b->rng = x;
}

/* open_ms * backoff^reopens, capped, jittered. */
static uint64_t open_time(struct breaker *b, const struct breaker_conf *c)
{
    uint64_t cap = c->open_max_ms > c->open_ms ? c->open_max_ms : c->open_ms;
    uint64_t t = c->open_ms;
    uint32_t i;

    for (i = 0; i < b->reopens && t < cap; i++)
        t = t * c->open_backoff_milli / 1000;
    if (t > cap)
        t = cap;
    if (c->open_jitter_milli) {
        /* Uniform in [t - t*j, t + t*j], never below 1 ms. */
        uint64_t span = t * c->open_jitter_milli / 1000;
        uint64_t r = next_random(b) % (2 * span + 1);
        t = t - span + r;
        if (t == 0)
            t = 1;
    }
    return t;
}

/* Only ever called in the automatic state (a force drives nothing). */
static void trip(struct breaker *b, const struct breaker_conf *c,
                 uint64_t now_ms, enum breaker_cause cause)
{
    enum breaker_visible from = breaker_visible_state(b);
    uint64_t t = open_time(b, c);

    set_state(b, BREAKER_OPEN, now_ms);
    b->open_for_ms = t;
    b->open_until_ms = now_ms + t;
    b->cause = cause;
    b->reopens++;
    b->opens++;
    report(b, from, trip_cause(cause));
}

void breaker_init(struct breaker *b, const struct breaker_conf *c, void *window,
                  uint64_t seed, uint64_t now_ms)
{
    memset(b, 0, sizeof(*b));
    b->state = BREAKER_CLOSED;
    b->since_ms = now_ms;
    b->generation = 1;
    /* splitmix64 of the seed, so nearby seeds give unrelated sequences. */
    seed += 0x9e3779b97f4a7c15ULL;
    seed = (seed ^ (seed >> 30)) * 0xbf58476d1ce4e5b9ULL;
    seed = (seed ^ (seed >> 27)) * 0x94d049bb133111ebULL;
    seed ^= seed >> 31;
    b->rng = seed ? seed : 1;
    b->window_time = c->window_time;
    b->window_size = (uint16_t)(c->window_size ? c->window_size : 1);
    if (b->window_time)
        b->buckets = window;
    else
        b->bits = window;
    window_clear(b);
}

int breaker_same_window(const struct breaker_conf *a,
                        const struct breaker_conf *b)
{
    return a->window_time == b->window_time &&
           (a->window_size ? a->window_size : 1) ==
               (b->window_size ? b->window_size : 1);
}

void breaker_rewindow(struct breaker *b, const struct breaker_conf *c,
                      void *window)
{
    int same = b->window_time == c->window_time &&
               b->window_size == (c->window_size ? c->window_size : 1);

    b->window_time = c->window_time;
    b->window_size = (uint16_t)(c->window_size ? c->window_size : 1);
    if (b->window_time)
        b->buckets = window;
    else
        b->bits = window;
    if (!same)
        window_clear(b);
}

/* The open period is over: half-open.  Under a force the change is not
 * visible, so neither since_ms nor the queue hears of it. */
static void open_time_over(struct breaker *b, uint64_t now_ms)
{
    enum breaker_visible from = breaker_visible_state(b);
    uint64_t since = b->since_ms;

    set_state(b, BREAKER_HALF_OPEN, now_ms);
    if (b->force != BREAKER_AUTO) {
        b->since_ms = since;
        return;
    }
    /* Half-open began when the open time ended, whoever looks later. */
    b->since_ms = b->open_until_ms;
    report(b, from, BREAKER_TC_OPEN_TIME_OVER);
}

/* breaker_advance without the (unused) conf, so reset can run it. */
static void advance(struct breaker *b, uint64_t now_ms)
{
    int force_over = b->force != BREAKER_AUTO && b->force_until_ms &&
                     now_ms >= b->force_until_ms;

    /* In time order: an open period that ended no later than the force (or
     * under a force without TTL, or with no force) ends first. */
    if (b->state == BREAKER_OPEN && now_ms >= b->open_until_ms &&
        (!force_over || b->open_until_ms <= b->force_until_ms))
        open_time_over(b, now_ms);
    if (force_over) {
        enum breaker_visible from = breaker_visible_state(b);

        b->force = BREAKER_AUTO;
        /* The force ended at its TTL, whoever looks later. */
        b->since_ms = b->force_until_ms;
        b->force_until_ms = 0;
        b->generation++;
        b->probes_in_flight = 0;
        b->probe_successes = 0;
        report(b, from, BREAKER_TC_FORCE_EXPIRED);
    }
    /* Reached only when the force ended first and revealed it open. */
    if (b->state == BREAKER_OPEN && now_ms >= b->open_until_ms)
        open_time_over(b, now_ms);
}

void breaker_advance(struct breaker *b, const struct breaker_conf *c,
                     uint64_t now_ms)
{
    (void)c;
    advance(b, now_ms);
}

void breaker_acquire(struct breaker *b, const struct breaker_conf *c,
                     uint64_t now_ms, struct breaker_verdict *v)
{
    breaker_advance(b, c, now_ms);
    memset(v, 0, sizeof(*v));
    v->generation = b->generation;
    switch (b->force) {
    case BREAKER_FORCE_OPEN:
        v->reason = BREAKER_FORCED_OPEN;
        v->retry_after_ms = breaker_retry_after(b, now_ms);
        return;
    case BREAKER_FORCE_CLOSED:
    case BREAKER_FORCE_DISABLED:
        v->allow = 1;
        return;
    case BREAKER_AUTO:
        break;
    }
    switch (b->state) {
    case BREAKER_CLOSED:
        v->allow = 1;
        return;
    case BREAKER_OPEN:
        v->reason = BREAKER_CIRCUIT_OPEN;
        v->retry_after_ms = b->open_until_ms - now_ms;
        return;
    case BREAKER_HALF_OPEN:
        if (b->probes_in_flight >= c->half_open_max_calls) {
            v->reason = BREAKER_HALF_OPEN_BUSY;
            return;
        }
        b->probes_in_flight++;
        v->allow = 1;
        v->probe = 1;
        return;
    }
}

/* CLOSED: does the window or the consecutive run say open? */
static enum breaker_cause should_open(const struct breaker *b,
                                      const struct breaker_conf *c,
                                      uint64_t now_ms)
{
    uint32_t calls, failures, slow, need = c->minimum_calls;

    if (c->failure_threshold && b->consecutive_failures >= c->failure_threshold)
        return BREAKER_CAUSE_CONSECUTIVE;
    window_totals(b, now_ms, &calls, &failures, &slow);
    /* A count window smaller than minimum_calls is judged when full. */
    if (!c->window_time && need > b->window_size)
        need = b->window_size;
    if (calls == 0 || calls < need)
        return BREAKER_CAUSE_NONE;
    if (c->failure_rate_threshold &&
        (uint64_t)failures * 100 >= (uint64_t)c->failure_rate_threshold * calls)
        return BREAKER_CAUSE_FAILURE_RATE;
    if (c->slow_call_ms && c->slow_call_rate_threshold &&
        (uint64_t)slow * 100 >= (uint64_t)c->slow_call_rate_threshold * calls)
        return BREAKER_CAUSE_SLOW_RATE;
    return BREAKER_CAUSE_NONE;
}

int breaker_record(struct breaker *b, const struct breaker_conf *c,
                   uint64_t now_ms, uint32_t generation, int probe,
                   enum breaker_outcome o, int64_t latency_ms)
{
    int failed = o == BREAKER_FAILURE;
    int slow = o != BREAKER_IGNORE && c->slow_call_ms && latency_ms >= 0 &&
               (uint64_t)latency_ms >= c->slow_call_ms;
    enum breaker_cause cause;

    breaker_advance(b, c, now_ms);
    if (o != BREAKER_IGNORE) {
        b->calls++;
        b->failures += (uint64_t)failed;
        b->slow_calls += (uint64_t)slow;
    }
    if (b->force != BREAKER_AUTO) {
        /* Forced or disabled: keep measuring (window and consecutive run,
         * whatever the automatic state underneath), drive nothing.  Every
         * call reported now is measured, permit old or new: a force makes
         * no permit stale. */
        if (o != BREAKER_IGNORE) {
            b->consecutive_failures = failed ? b->consecutive_failures + 1 : 0;
            window_add(b, now_ms, failed, slow);
        }
        return BREAKER_REC_FORCED;
    }
    if (generation != b->generation)
        return BREAKER_REC_STALE;
    switch (b->state) {
    case BREAKER_CLOSED:
        if (o == BREAKER_IGNORE)
            return BREAKER_REC_COUNTED;
        b->consecutive_failures = failed ? b->consecutive_failures + 1 : 0;
        window_add(b, now_ms, failed, slow);
        cause = should_open(b, c, now_ms);
        if (cause != BREAKER_CAUSE_NONE)
            trip(b, c, now_ms, cause);
        return BREAKER_REC_COUNTED;
    case BREAKER_OPEN:
        /* Only reports without a permit land here with the current
         * generation: counted above, they change nothing. */
        return BREAKER_REC_COUNTED;
    case BREAKER_HALF_OPEN:
        if (probe && b->probes_in_flight > 0)
            b->probes_in_flight--;
        if (failed) {
            trip(b, c, now_ms, BREAKER_CAUSE_PROBE_FAILED);
        } else if (slow && c->slow_call_rate_threshold) {
            trip(b, c, now_ms, BREAKER_CAUSE_PROBE_SLOW);
        } else if (o == BREAKER_SUCCESS &&
                   ++b->probe_successes >= c->success_threshold) {
            set_state(b, BREAKER_CLOSED, now_ms);
            b->reopens = 0;
            b->cause = BREAKER_CAUSE_NONE;
            report(b, BREAKER_VIS_HALF_OPEN, BREAKER_TC_PROBE_SUCCESS);
        }
        return BREAKER_REC_COUNTED;
    }
    return BREAKER_REC_STALE; /* not reached */
}

void breaker_release(struct breaker *b, uint32_t generation, int probe)
{
    if (probe && generation == b->generation && b->state == BREAKER_HALF_OPEN &&
        b->probes_in_flight > 0)
        b->probes_in_flight--;
}

/* An operator's force, here or on another daemon (cause says which). */
static void force_with(struct breaker *b, uint64_t now_ms, enum breaker_force f,
                       uint64_t ttl_ms, enum breaker_transition_cause cause)
{
    enum breaker_visible from;

    advance(b, now_ms);
    if (f == b->force) {
        /* Same visible state: only the TTL changes; permits stay valid. */
        b->force_until_ms = (f != BREAKER_AUTO && ttl_ms) ? now_ms + ttl_ms : 0;
        return;
    }
    from = breaker_visible_state(b);
    b->force = f;
    b->force_until_ms = (f != BREAKER_AUTO && ttl_ms) ? now_ms + ttl_ms : 0;
    b->since_ms = now_ms;
    b->generation++;
    b->probes_in_flight = 0;
    b->probe_successes = 0;
    report(b, from, cause); /* f differs: always visible */
}

void breaker_force(struct breaker *b, const struct breaker_conf *c,
                   uint64_t now_ms, enum breaker_force f, uint64_t ttl_ms)
{
    (void)c;
    force_with(b, now_ms, f, ttl_ms, BREAKER_TC_FORCE);
}

/* An operator's reset, here or on another daemon. */
static void reset_with(struct breaker *b, uint64_t now_ms,
                       enum breaker_transition_cause cause)
{
    enum breaker_visible from;

    advance(b, now_ms);
    from = breaker_visible_state(b);
    b->force = BREAKER_AUTO;
    b->force_until_ms = 0;
    b->reopens = 0;
    b->cause = BREAKER_CAUSE_NONE;
    set_state(b, BREAKER_CLOSED, now_ms);
    report(b, from, cause);
}

void breaker_reset(struct breaker *b, uint64_t now_ms)
{
    reset_with(b, now_ms, BREAKER_TC_RESET);
}

/* --- changes made on another daemon (shared mode) ----------------------- */

/* The automatic state moves to s; under a force that is not visible, so
 * since_ms (the visible state's age) stays. */
static void remote_state(struct breaker *b, enum breaker_state s,
                         uint64_t now_ms)
{
    uint64_t since = b->since_ms;

    set_state(b, s, now_ms);
    if (b->force != BREAKER_AUTO)
        b->since_ms = since;
}

void breaker_remote_open(struct breaker *b, const struct breaker_conf *c,
                         uint64_t now_ms, uint64_t open_left_ms,
                         uint64_t open_for_ms)
{
    enum breaker_visible from;
    uint64_t until;

    (void)c;
    advance(b, now_ms);
    if (!open_left_ms)
        open_left_ms = 1;
    until =
        open_left_ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + open_left_ms;
    if (open_for_ms < open_left_ms)
        open_for_ms = open_left_ms;
    if (b->state == BREAKER_OPEN) {
        /* Open here too (advance: open_until_ms > now_ms): the later end
         * wins; nothing visible changes, no permit goes stale. */
        if (until > b->open_until_ms) {
            b->open_until_ms = until;
            if (open_for_ms > b->open_for_ms)
                b->open_for_ms = open_for_ms;
        }
        return;
    }
    from = breaker_visible_state(b);
    remote_state(b, BREAKER_OPEN, now_ms);
    b->open_until_ms = until;
    b->open_for_ms = open_for_ms;
    b->cause = BREAKER_CAUSE_REMOTE;
    b->reopens++; /* as a trip here: the next open backs off from it */
    b->opens++;
    report(b, from, BREAKER_TC_REMOTE);
}

void breaker_remote_close(struct breaker *b, uint64_t now_ms)
{
    enum breaker_visible from;

    advance(b, now_ms);
    if (b->state == BREAKER_CLOSED)
        return;
    from = breaker_visible_state(b);
    remote_state(b, BREAKER_CLOSED, now_ms);
    b->reopens = 0;
    b->cause = BREAKER_CAUSE_NONE;
    report(b, from, BREAKER_TC_REMOTE);
}

void breaker_remote_force(struct breaker *b, uint64_t now_ms,
                          enum breaker_force f, uint64_t ttl_ms)
{
    force_with(b, now_ms, f, ttl_ms, BREAKER_TC_REMOTE);
}

void breaker_remote_reset(struct breaker *b, uint64_t now_ms)
{
    reset_with(b, now_ms, BREAKER_TC_REMOTE);
}

double breaker_failure_rate(const struct breaker *b, uint64_t now_ms)
{
    uint32_t calls, failures, slow;

    window_totals(b, now_ms, &calls, &failures, &slow);
    return calls ? 100.0 * failures / calls : 0.0;
}

double breaker_slow_rate(const struct breaker *b, uint64_t now_ms)
{
    uint32_t calls, failures, slow;

    window_totals(b, now_ms, &calls, &failures, &slow);
    return calls ? 100.0 * slow / calls : 0.0;
}

enum breaker_visible breaker_visible_state(const struct breaker *b)
{
    switch (b->force) {
    case BREAKER_FORCE_OPEN:
        return BREAKER_VIS_FORCED_OPEN;
    case BREAKER_FORCE_CLOSED:
        return BREAKER_VIS_FORCED_CLOSED;
    case BREAKER_FORCE_DISABLED:
        return BREAKER_VIS_DISABLED;
    case BREAKER_AUTO:
        break;
    }
    switch (b->state) {
    case BREAKER_CLOSED:
        return BREAKER_VIS_CLOSED;
    case BREAKER_OPEN:
        return BREAKER_VIS_OPEN;
    case BREAKER_HALF_OPEN:
        return BREAKER_VIS_HALF_OPEN;
    }
    return BREAKER_VIS_CLOSED;
}

const char *breaker_visible_name(enum breaker_visible s)
{
    switch (s) {
    case BREAKER_VIS_CLOSED:
        return "closed";
    case BREAKER_VIS_OPEN:
        return "open";
    case BREAKER_VIS_HALF_OPEN:
        return "half_open";
    case BREAKER_VIS_FORCED_OPEN:
        return "forced_open";
    case BREAKER_VIS_FORCED_CLOSED:
        return "forced_closed";
    case BREAKER_VIS_DISABLED:
        return "disabled";
    }
    return "closed";
}

const char *breaker_state_name(const struct breaker *b)
{
    return breaker_visible_name(breaker_visible_state(b));
}

const char *breaker_transition_cause_name(enum breaker_transition_cause c)
{
    switch (c) {
    case BREAKER_TC_FAILURES:
        return "failures";
    case BREAKER_TC_FAILURE_RATE:
        return "failure_rate";
    case BREAKER_TC_SLOW_RATE:
        return "slow_rate";
    case BREAKER_TC_OPEN_TIME_OVER:
        return "open_time_over";
    case BREAKER_TC_PROBE_SUCCESS:
        return "probe_success";
    case BREAKER_TC_PROBE_FAILURE:
        return "probe_failure";
    case BREAKER_TC_PROBE_SLOW:
        return "probe_slow";
    case BREAKER_TC_FORCE:
        return "force";
    case BREAKER_TC_FORCE_EXPIRED:
        return "force_expired";
    case BREAKER_TC_RESET:
        return "reset";
    case BREAKER_TC_REMOTE:
        return "remote";
    }
    return "unknown";
}

const char *breaker_reason_name(enum breaker_reason r)
{
    switch (r) {
    case BREAKER_OK:
        return "ok";
    case BREAKER_CIRCUIT_OPEN:
        return "circuit_open";
    case BREAKER_HALF_OPEN_BUSY:
        return "half_open_busy";
    case BREAKER_FORCED_OPEN:
        return "forced_open";
    }
    return "ok";
}

const char *breaker_cause_name(enum breaker_cause c)
{
    switch (c) {
    case BREAKER_CAUSE_NONE:
        return "none";
    case BREAKER_CAUSE_CONSECUTIVE:
        return "consecutive_failures";
    case BREAKER_CAUSE_FAILURE_RATE:
        return "failure_rate";
    case BREAKER_CAUSE_SLOW_RATE:
        return "slow_call_rate";
    case BREAKER_CAUSE_PROBE_FAILED:
        return "probe_failed";
    case BREAKER_CAUSE_PROBE_SLOW:
        return "probe_slow";
    case BREAKER_CAUSE_REMOTE:
        return "remote";
    }
    return "none";
}

uint64_t breaker_retry_after(const struct breaker *b, uint64_t now_ms)
{
    if (b->force == BREAKER_FORCE_OPEN) {
        /* Until the force ends, then until the breaker itself would pass:
         * whichever is later.  Unknown while the force has no TTL. */
        uint64_t end = b->force_until_ms;
        if (!end)
            return 0;
        if (b->state == BREAKER_OPEN && b->open_until_ms > end)
            end = b->open_until_ms;
        return end > now_ms ? end - now_ms : 0;
    }
    if (b->force == BREAKER_AUTO && b->state == BREAKER_OPEN &&
        b->open_until_ms > now_ms)
        return b->open_until_ms - now_ms;
    return 0;
}

int breaker_is_open(const struct breaker *b)
{
    return b->force == BREAKER_FORCE_OPEN ||
           (b->force == BREAKER_AUTO && b->state == BREAKER_OPEN);
}

/* --- export and import -------------------------------------------------- */

void breaker_export(const struct breaker *b, uint64_t now_ms,
                    struct breaker_export *ex, uint8_t *calls,
                    struct breaker_export_bucket *buckets)
{
    uint32_t i, n = 0;

    memset(ex, 0, sizeof(*ex));
    ex->state = (uint8_t)b->state;
    ex->force = (uint8_t)b->force;
    ex->cause = (uint8_t)b->cause;
    if (b->force != BREAKER_AUTO && b->force_until_ms) {
        ex->force_has_ttl = 1;
        ex->force_left_ms =
            b->force_until_ms > now_ms ? b->force_until_ms - now_ms : 0;
    }
    if (b->state == BREAKER_OPEN) {
        ex->open_left_ms =
            b->open_until_ms > now_ms ? b->open_until_ms - now_ms : 0;
        ex->open_for_ms = b->open_for_ms;
    }
    ex->since_age_ms = now_ms > b->since_ms ? now_ms - b->since_ms : 0;
    ex->generation = b->generation;
    ex->consecutive_failures = b->consecutive_failures;
    ex->reopens = b->reopens;
    ex->probe_successes = b->probe_successes;
    ex->rng = b->rng;
    ex->calls = b->calls;
    ex->failures = b->failures;
    ex->slow_calls = b->slow_calls;
    ex->opens = b->opens;
    ex->window_time = b->window_time;
    if (!b->window_time) {
        /* Oldest first: the fill entries that end just before win_pos. */
        uint32_t start =
            (b->win_pos + b->window_size - b->win_fill) % b->window_size;
        for (i = 0; i < b->win_fill; i++)
            calls[n++] = (uint8_t)slot_get(b, (start + i) % b->window_size);
    } else {
        /* Buckets still inside the window, oldest first. */
        uint64_t cur = now_ms / 1000 + 1;
        uint32_t age;
        for (age = b->window_size; age-- > 0;) {
            const struct breaker_bucket *k;
            if (age >= cur)
                continue; /* before the clock's second 1: cannot exist */
            k = &b->buckets[(cur - age) % b->window_size];
            if (k->sec != (uint32_t)(cur - age) || !k->calls)
                continue;
            buckets[n].age_s = age;
            buckets[n].calls = k->calls;
            buckets[n].failures = k->failures;
            buckets[n].slow = k->slow;
            n++;
        }
    }
    ex->nwin = n;
}

int breaker_export_check(const struct breaker_export *ex, const uint8_t *calls,
                         const struct breaker_export_bucket *buckets)
{
    uint32_t i;

    if (ex->state > BREAKER_HALF_OPEN || ex->force > BREAKER_FORCE_DISABLED ||
        ex->cause > BREAKER_CAUSE_REMOTE || ex->force_has_ttl > 1 ||
        ex->window_time > 1)
        return -1;
    if (ex->nwin >
        (ex->window_time ? BREAKER_MAX_TIME_WINDOW : BREAKER_MAX_COUNT_WINDOW))
        return -1;
    for (i = 0; i < ex->nwin; i++) {
        if (!ex->window_time && calls[i] > 3)
            return -1;
        if (ex->window_time && (buckets[i].age_s >= BREAKER_MAX_TIME_WINDOW ||
                                buckets[i].failures > buckets[i].calls ||
                                buckets[i].slow > buckets[i].calls))
            return -1;
    }
    return 0;
}

/* An instant d ms after now_ms that is never 0 (0 means "none" in the
 * fields it feeds), saturating. */
static uint64_t after(uint64_t now_ms, uint64_t d)
{
    uint64_t t = d > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + d;

    return t ? t : 1;
}

void breaker_import(struct breaker *b, const struct breaker_conf *c,
                    uint64_t now_ms, const struct breaker_export *ex,
                    const uint8_t *calls,
                    const struct breaker_export_bucket *buckets)
{
    uint32_t i;

    (void)c;
    b->state = (enum breaker_state)ex->state;
    b->force = (enum breaker_force)ex->force;
    b->cause = (enum breaker_cause)ex->cause;
    b->force_until_ms = 0;
    if (b->force != BREAKER_AUTO && ex->force_has_ttl)
        b->force_until_ms = after(now_ms, ex->force_left_ms);
    b->open_until_ms = b->open_for_ms = 0;
    if (b->state == BREAKER_OPEN) {
        b->open_until_ms = after(now_ms, ex->open_left_ms);
        if (!ex->open_left_ms)
            b->open_until_ms = now_ms; /* over: half-open at the next look */
        b->open_for_ms = ex->open_for_ms;
    }
    b->since_ms = now_ms > ex->since_age_ms ? now_ms - ex->since_age_ms : 0;
    b->generation = ex->generation;
    b->consecutive_failures = ex->consecutive_failures;
    b->reopens = ex->reopens;
    b->probes_in_flight = 0; /* their permits did not survive */
    b->probe_successes = ex->probe_successes;
    b->rng = ex->rng ? ex->rng : 1;
    b->calls = ex->calls;
    b->failures = ex->failures;
    b->slow_calls = ex->slow_calls;
    b->opens = ex->opens;
    b->tq_head = b->tq_len = 0;
    window_clear(b);
    if (ex->window_time != b->window_time)
        return;
    if (!b->window_time) {
        /* The newest entries that fit, oldest first. */
        uint32_t skip =
            ex->nwin > b->window_size ? ex->nwin - b->window_size : 0;
        for (i = skip; i < ex->nwin; i++)
            window_add(b, now_ms, calls[i] & 1, (calls[i] >> 1) & 1);
    } else {
        uint64_t cur = now_ms / 1000 + 1;
        for (i = 0; i < ex->nwin; i++) {
            const struct breaker_export_bucket *e = &buckets[i];
            struct breaker_bucket *k;
            if (e->age_s >= b->window_size || e->age_s >= cur)
                continue; /* older than this window, or than this clock */
            k = &b->buckets[(cur - e->age_s) % b->window_size];
            k->sec = (uint32_t)(cur - e->age_s);
            k->calls = e->calls;
            k->failures = e->failures;
            k->slow = e->slow;
        }
    }
}
