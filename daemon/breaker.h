/*
 * breaker.h - one circuit breaker, pure: every function takes the monotonic
 * time in milliseconds, does no I/O, reads no clock, allocates nothing and
 * holds no globals.  The sliding window's memory is provided by the caller
 * (breaker_window_bytes() says how much).
 *
 * Semantics (SPEC §4 "Breaker", resilience4j's plus a consecutive rule):
 *  - closed: every counted outcome goes into a sliding window, either the
 *    last N calls (count) or N one-second buckets (time).  It opens when
 *    failure_threshold consecutive failures happen, or, once the window
 *    holds minimum_calls, when the failure rate reaches
 *    failure_rate_threshold percent or the slow-call rate (latency >=
 *    slow_call_ms) reaches slow_call_rate_threshold percent.  First rule
 *    to fire wins.
 *  - open: denies (circuit_open) with the exact time left.  The open time
 *    is open_ms * open_backoff^(re-opens since last closed), capped by
 *    open_max_ms, spread by +-open_jitter (fraction) from a seeded PRNG.
 *  - half-open: admits up to half_open_max_calls concurrent probes;
 *    success_threshold probe successes close it (window cleared); a probe
 *    failure, or a slow probe when the slow rule is on, re-opens it.
 *  - an operator force (open / closed / disabled) overrides the automatic
 *    state until set back to auto or its TTL passes.  Outcomes during a
 *    force are measured as always (lifetime figures, the window and the
 *    consecutive run, whatever the automatic state underneath) but drive
 *    nothing: "disabled" is resilience4j's metrics-only state.  Back to
 *    auto, the automatic state resumes with the window as recorded; the
 *    release itself trips nothing, and a closed breaker judges its rules
 *    on the next counted outcome (so a downstream that kept failing under
 *    the force trips it then, with no fresh minimum_calls of grace).
 *  - a call is slow at latency_ms >= slow_call_ms (resilience4j: >).
 *
 * Every visible state change bumps `generation`.  A permit carries the
 * generation it was granted under; an outcome for an older generation is
 * stale: counted in the lifetime figures, no transition.
 *
 * Transitions.  Every change of the visible state (closed, open,
 * half_open, forced_open, forced_closed, disabled) is appended, with its
 * cause, to a small queue inside the breaker by the very function that
 * made it, breaker_advance included: a change that only time revealed is
 * reported like any other, exactly once.  A change of the automatic state
 * under a force is not visible and not reported; a call that leaves the
 * visible state as it was reports nothing (a reset of a closed breaker).
 * The caller drains the queue with breaker_next_transition() after every
 * call.  Within one call the transitions come in the order they happened
 * in time: when a force's TTL and the open period both ended by now_ms,
 * the one that ended first is applied first (a tie counts as the open
 * period ending under the force), so what is reported never depends on
 * when someone last looked.
 */
#ifndef RESIL_BREAKER_H
#define RESIL_BREAKER_H

#include <stddef.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

enum breaker_force {
    BREAKER_AUTO,
    BREAKER_FORCE_OPEN,
    BREAKER_FORCE_CLOSED,
    BREAKER_FORCE_DISABLED,
};

enum breaker_outcome { BREAKER_SUCCESS, BREAKER_FAILURE, BREAKER_IGNORE };

enum breaker_reason {
    BREAKER_OK,
    BREAKER_CIRCUIT_OPEN,
    BREAKER_HALF_OPEN_BUSY,
    BREAKER_FORCED_OPEN,
};

/* Why the breaker last opened (for logs and status). */
enum breaker_cause {
    BREAKER_CAUSE_NONE,
    BREAKER_CAUSE_CONSECUTIVE,
    BREAKER_CAUSE_FAILURE_RATE,
    BREAKER_CAUSE_SLOW_RATE,
    BREAKER_CAUSE_PROBE_FAILED,
    BREAKER_CAUSE_PROBE_SLOW,
    BREAKER_CAUSE_REMOTE, /* another daemon's breaker opened (shared mode) */
};

/* The visible state: the force if any, else the automatic state. */
enum breaker_visible {
    BREAKER_VIS_CLOSED,
    BREAKER_VIS_OPEN,
    BREAKER_VIS_HALF_OPEN,
    BREAKER_VIS_FORCED_OPEN,
    BREAKER_VIS_FORCED_CLOSED,
    BREAKER_VIS_DISABLED,
};

/* Why the visible state changed (names: breaker_transition_cause_name). */
enum breaker_transition_cause {
    BREAKER_TC_FAILURES,       /* closed -> open: consecutive failures */
    BREAKER_TC_FAILURE_RATE,   /* closed -> open: window failure rate */
    BREAKER_TC_SLOW_RATE,      /* closed -> open: window slow-call rate */
    BREAKER_TC_OPEN_TIME_OVER, /* open -> half_open (breaker_advance) */
    BREAKER_TC_PROBE_SUCCESS,  /* half_open -> closed: success_threshold */
    BREAKER_TC_PROBE_FAILURE,  /* half_open -> open: a failed probe */
    BREAKER_TC_PROBE_SLOW,     /* half_open -> open: a slow probe */
    BREAKER_TC_FORCE,          /* operator force, or force auto */
    BREAKER_TC_FORCE_EXPIRED,  /* a force's TTL ended (breaker_advance) */
    BREAKER_TC_RESET,          /* operator reset */
    BREAKER_TC_REMOTE,         /* a change made on another daemon
                                * (breaker_remote_*, shared mode) */
};

struct breaker_transition {
    enum breaker_visible from, to; /* from != to */
    enum breaker_transition_cause cause;
};

/*
 * Capacity of the transition queue: the most transitions one call can
 * make.  breaker_advance makes at most 2 (a force's TTL ends revealing
 * open, then the open period ends: forced_X -> open -> half_open; every
 * other order or combination makes at most 1), and every other function
 * runs breaker_advance first and then makes at most 1 change of its own
 * (record: a trip or a close; force: the new force; reset: to closed;
 * acquire and release: none).  So a queue drained after every call never
 * holds more than 3, and breaker_force reaches 3 (test_breaker checks it).
 * A caller that does not drain loses the oldest entries, counted in
 * transitions_dropped; the breaker itself is never affected.
 */
#define BREAKER_TRANSITIONS_MAX 3

#define BREAKER_MAX_COUNT_WINDOW 10000 /* calls */
#define BREAKER_MAX_TIME_WINDOW 3600   /* seconds */

struct breaker_conf {
    uint32_t failure_threshold;   /* consecutive failures that open; 0 = off */
    uint64_t open_ms;             /* base time open before half-open */
    uint32_t half_open_max_calls; /* concurrent probes while half-open, >= 1 */
    uint32_t success_threshold;   /* probe successes that close, >= 1 */
    uint8_t window_time;          /* 0: last window_size calls; 1: seconds */
    uint32_t window_size;         /* calls or seconds, >= 1 */
    uint32_t minimum_calls;       /* rates judged from this many calls */
    uint32_t failure_rate_threshold;   /* percent 1..100; 0 = off */
    uint64_t slow_call_ms;             /* a call this slow is slow; 0 = off */
    uint32_t slow_call_rate_threshold; /* percent 1..100; 0 = off */
    uint32_t open_backoff_milli;       /* open_backoff * 1000 (1000 = none) */
    uint64_t open_max_ms;              /* cap on the backed-off open time */
    uint32_t open_jitter_milli;        /* open_jitter * 1000, 0..1000 */
};

/* SPEC §4 defaults. */
#define BREAKER_CONF_DEFAULT                                                   \
    {                                                                          \
        5, 30000, 1, 2, 0, 100, 10, 50, 0, 0, 1000, 300000, 0                  \
    }

/* One second of a time window. */
struct breaker_bucket {
    uint32_t sec; /* now_ms / 1000 + 1 this bucket holds, modulo 2^32
                   * (a cleared bucket: 0, with no calls; a second that
                   * wraps to 0 is no different).  Ages are taken modulo 2^32 too, which is
                   * exact for any bucket younger than 136 years: 16
                   * bytes a bucket, not 24 */
    uint32_t calls, failures, slow;
};

/* A queued transition, packed (breaker_next_transition unpacks it). */
struct breaker_tq_entry {
    uint8_t from, to, cause;
};

/*
 * Fields are ordered by size so that the struct has no holes: a host may
 * hold a million of these.  The small enums are kept in uint8_t.
 */
struct breaker {
    uint64_t since_ms;       /* when the visible state last changed */
    uint64_t open_until_ms;  /* OPEN: first instant half-open may start */
    uint64_t open_for_ms;    /* OPEN: length of the current open period */
    uint64_t force_until_ms; /* force TTL end; 0 = until changed */
    uint64_t rng;            /* xorshift64 state for open_jitter */
    /* Lifetime figures. */
    uint64_t calls; /* outcomes counted (not ignored) */
    uint64_t failures;
    uint64_t slow_calls;
    uint64_t opens; /* times it went to open */
    /* Sliding window memory (breaker_window_bytes, owned by the caller):
     * fed while closed and while forced, cleared on entering closed;
     * otherwise frozen while open / half-open so status shows what
     * tripped it. */
    union {
        uint64_t *bits; /* count: two bitsets of window_size bits, the
                         * failures then the slow calls */
        struct breaker_bucket *buckets; /* time: window_size buckets */
    };
    uint32_t generation;           /* bumped on every visible state change */
    uint32_t consecutive_failures; /* CLOSED: failures since last success */
    uint32_t reopens;              /* opens since it was last closed */
    uint32_t probes_in_flight;     /* HALF_OPEN: admitted, not yet reported */
    uint32_t probe_successes;      /* HALF_OPEN: successes so far */
    uint32_t transitions_dropped;  /* overwritten undrained (0 if drained) */
    uint16_t window_size; /* entries attached (<= BREAKER_MAX_COUNT_WINDOW) */
    uint16_t win_pos;     /* count: next slot */
    uint16_t win_fill;    /* count: slots in use */
    uint16_t win_calls, win_failures, win_slow; /* count: totals */
    uint8_t state;       /* enum breaker_state: automatic state */
    uint8_t force;       /* enum breaker_force: override, or BREAKER_AUTO */
    uint8_t cause;       /* enum breaker_cause: why it last opened */
    uint8_t window_time; /* layout of the attached memory */
    /* Transitions not yet drained: a ring of tq_len entries from tq_head. */
    uint8_t tq_head, tq_len;
    struct breaker_tq_entry tq[BREAKER_TRANSITIONS_MAX];
};

struct breaker_verdict {
    int allow;
    int probe;           /* allowed as a half-open probe */
    uint32_t generation; /* store in the permit */
    enum breaker_reason reason;
    uint64_t retry_after_ms; /* when denied: exact wait, 0 = unknown */
};

/* Bytes of window memory a breaker with conf c needs (>= 1). */
size_t breaker_window_bytes(const struct breaker_conf *c);

/*
 * Initialise b closed at now_ms.  window points at breaker_window_bytes(c)
 * bytes owned by the caller (kept for b's life); seed feeds open_jitter.
 */
void breaker_init(struct breaker *b, const struct breaker_conf *c, void *window,
                  uint64_t seed, uint64_t now_ms);

/* 1 if a breaker configured with a and one with b lay out their window
 * the same way (type and size), so the window memory can be kept. */
int breaker_same_window(const struct breaker_conf *a,
                        const struct breaker_conf *b);

/*
 * The configuration changed (reload): take c's window layout in window
 * (breaker_window_bytes(c) bytes owned by the caller; the same memory when
 * the layout is unchanged).  A changed layout starts an empty window; the
 * state, its timers, the generation, the force and the lifetime figures
 * are kept.
 */
void breaker_rewindow(struct breaker *b, const struct breaker_conf *c,
                      void *window);

/* Apply time-driven changes (open -> half-open, force TTL end).  Every
 * other function calls it first; callers only need it before reading
 * fields directly. */
void breaker_advance(struct breaker *b, const struct breaker_conf *c,
                     uint64_t now_ms);

/* Decide one request.  An allowed probe holds a half-open slot until its
 * outcome is recorded or breaker_release() gives it back. */
void breaker_acquire(struct breaker *b, const struct breaker_conf *c,
                     uint64_t now_ms, struct breaker_verdict *v);

/*
 * Count one outcome of a call admitted under `generation` (a report without
 * a permit passes the current generation and probe = 0; while half-open it
 * drives the state like a probe's outcome).  A count window smaller than
 * minimum_calls is judged once it is full.  latency_ms < 0
 * means unknown (never slow).  Returns what the outcome did to the state:
 */
enum breaker_recorded {
    BREAKER_REC_STALE = 0,   /* permit from an older generation: nothing */
    BREAKER_REC_COUNTED = 1, /* counted toward the state */
    BREAKER_REC_FORCED = 2   /* a force holds the state: measured (window,
                              * consecutive run), no transition, and no
                              * permit is called stale for it */
};
int breaker_record(struct breaker *b, const struct breaker_conf *c,
                   uint64_t now_ms, uint32_t generation, int probe,
                   enum breaker_outcome o, int64_t latency_ms);

/* A permit ended without an outcome and must not count (its connection
 * closed while closed; an ignored call): give back a probe slot. */
void breaker_release(struct breaker *b, uint32_t generation, int probe);

/* Operator override.  ttl_ms 0 = until changed.  BREAKER_AUTO clears it.
 * Setting the force it already has only changes the TTL. */
void breaker_force(struct breaker *b, const struct breaker_conf *c,
                   uint64_t now_ms, enum breaker_force f, uint64_t ttl_ms);

/* Back to closed, window and counters cleared, force cleared; opens and
 * the lifetime figures are kept.  Time-driven changes due by now_ms are
 * applied (and reported) first. */
void breaker_reset(struct breaker *b, uint64_t now_ms);

/*
 * Changes made on another daemon that shares this breaker (scope global).
 * Each applies what time changed by now_ms first (reported with its own
 * cause), then reports its own visible change, if any, with cause
 * BREAKER_TC_REMOTE; like the local calls, each makes at most one change
 * of its own, so BREAKER_TRANSITIONS_MAX holds.
 *
 * remote_open: a closed or half-open automatic state opens until now_ms +
 * open_left_ms (0 counts as 1), as a trip would (cause
 * BREAKER_CAUSE_REMOTE, opens and the backoff step counted, generation
 * bumped, probes in flight forgotten); open_for_ms is the period's length
 * there (at least open_left_ms).  An open one stays open until the later
 * of its own end and that, with no visible change and no permit made
 * stale.  Under a force the automatic state moves unseen: nothing is
 * reported and since_ms stays, as when an open period ends under a force.
 *
 * remote_close: an open or half-open automatic state closes (window
 * cleared, backoff step reset), as a probe success would; a closed one is
 * left as it is.  Under a force likewise unseen.
 *
 * remote_force, remote_reset: breaker_force and breaker_reset, reported
 * with cause BREAKER_TC_REMOTE.
 */
void breaker_remote_open(struct breaker *b, const struct breaker_conf *c,
                         uint64_t now_ms, uint64_t open_left_ms,
                         uint64_t open_for_ms);
void breaker_remote_close(struct breaker *b, uint64_t now_ms);
void breaker_remote_force(struct breaker *b, uint64_t now_ms,
                          enum breaker_force f, uint64_t ttl_ms);
void breaker_remote_reset(struct breaker *b, uint64_t now_ms);

/* Window figures in percent (0 when the window is empty). */
double breaker_failure_rate(const struct breaker *b, uint64_t now_ms);
double breaker_slow_rate(const struct breaker *b, uint64_t now_ms);

/* Visible state name: closed, open, half_open, forced_open, forced_closed,
 * disabled.  Call breaker_advance first. */
const char *breaker_state_name(const struct breaker *b);
enum breaker_visible breaker_visible_state(const struct breaker *b);
const char *breaker_visible_name(enum breaker_visible s);

/* Take the oldest pending transition into *t: 1 if there was one, else 0
 * (and *t untouched).  Drain until 0 after every call that takes now_ms. */
int breaker_next_transition(struct breaker *b, struct breaker_transition *t);

/* failures, failure_rate, slow_rate, open_time_over, probe_success,
 * probe_failure, probe_slow, force, force_expired, reset, remote. */
const char *breaker_transition_cause_name(enum breaker_transition_cause c);
const char *breaker_reason_name(enum breaker_reason r);
const char *breaker_cause_name(enum breaker_cause c);

/* Time until a request could pass as far as the breaker knows; 0 if it
 * would pass now or the wait is unknown. */
uint64_t breaker_retry_after(const struct breaker *b, uint64_t now_ms);

/* 1 if the visible state is open or forced open. */
int breaker_is_open(const struct breaker *b);

/* --- export and import (snapshots) -------------------------------------
 *
 * A breaker leaves in remaining-time form: every instant becomes the time
 * left (or the time since) at the exporting now_ms, and comes back under
 * the importing now_ms, so an open breaker stays open exactly as long as it
 * had left whatever the two clocks are (a reboot restarts the monotonic
 * clock; wall-clock jumps never reach it).  The time the daemon was down
 * does not count.  Probes in flight do not survive (their permits did
 * not); the transition queue leaves empty.
 *
 * The window leaves as its entries in time order, so an importer whose
 * window has the same type keeps what fits: a count window its newest
 * min(fill, size) calls, a time window the buckets younger than its size.
 * A window of the other type starts empty.
 */

/* One second of a time window, by age: age_s 0 is the current second. */
struct breaker_export_bucket {
    uint32_t age_s;
    uint32_t calls, failures, slow;
};

struct breaker_export {
    uint8_t state;          /* enum breaker_state */
    uint8_t force;          /* enum breaker_force */
    uint8_t cause;          /* enum breaker_cause */
    uint8_t force_has_ttl;  /* 1: force_left_ms counts; 0: until changed */
    uint64_t force_left_ms; /* force TTL left (0: ends at the next look) */
    uint64_t open_left_ms;  /* state OPEN: time left (0: over) */
    uint64_t open_for_ms;   /* state OPEN: length of the open period */
    uint64_t since_age_ms;  /* time since the visible state changed */
    uint32_t generation;
    uint32_t consecutive_failures;
    uint32_t reopens; /* the backoff step */
    uint32_t probe_successes;
    uint64_t rng;
    uint64_t calls, failures, slow_calls, opens; /* lifetime figures */
    uint8_t window_time;                         /* window type */
    uint32_t nwin; /* entries in the window array (calls or buckets) */
};

/* Most window entries an export can hold: the larger of the two windows. */
#define BREAKER_EXPORT_WIN_MAX BREAKER_MAX_COUNT_WINDOW

/*
 * Export b at now_ms into *ex without changing it (nothing is advanced:
 * an open period already over leaves with 0 left and ends at the
 * importer's first look).  calls (count window; b->window_size bytes, oldest
 * first) or buckets (time window; b->window_size entries, oldest first)
 * receive the window; either may be NULL when b's window is of the other
 * type.
 */
void breaker_export(const struct breaker *b, uint64_t now_ms,
                    struct breaker_export *ex, uint8_t *calls,
                    struct breaker_export_bucket *buckets);

/*
 * Check an export read from outside (a file): enums in range, counts
 * within the limits above, window entries sane (a count entry <= 3, a
 * bucket's failures and slow <= calls, ages distinct is not required).
 * 0 when it may be imported, -1 if not.  Needs the window entries.
 */
int breaker_export_check(const struct breaker_export *ex, const uint8_t *calls,
                         const struct breaker_export_bucket *buckets);

/*
 * Import a checked export into b, which breaker_init set up with conf c and
 * its window memory, at now_ms: every remaining time starts again from
 * now_ms.  The window totals are recomputed from the entries, never taken
 * from the export.  Nothing is reported (no transition).
 */
void breaker_import(struct breaker *b, const struct breaker_conf *c,
                    uint64_t now_ms, const struct breaker_export *ex,
                    const uint8_t *calls,
                    const struct breaker_export_bucket *buckets);

#endif
