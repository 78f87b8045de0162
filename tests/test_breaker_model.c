/*
 * test_breaker_model.c - the breaker against a reference model.
 *
 * A randomized differential test.  Each run applies STEPS random
 * operations under a fake clock (acquire, report, lose or expire a permit,
 * report without a permit, time steps, forces, resets) both to
 * daemon/breaker.c and to a deliberately naive model written from the
 * contract in breaker.h alone: the window is a plain list of (second,
 * failed, slow) entries and every rate is recomputed from scratch.  After
 * every operation the decisions (allow, probe, reason, retry_after_ms), the
 * visible state (state name, opens, calls, failures, slow calls, and where
 * defined the cause, retry_after and window rates) and the transitions the
 * operation reported (breaker_next_transition drained: from, to, cause,
 * in order, none dropped) must agree.  The
 * first mismatch prints the seed, the step and the last HIST operations and
 * ends that run with one "not ok".
 *
 * The permits are used the way the daemon uses them: a permit is reported
 * once (a second report never reaches the breaker), a probe lost with its
 * connection is a failure with unknown latency, any other lost permit is
 * released, an expired permit is a failure, and a permit a later admission
 * stage refuses is released at once (now and then late, after its
 * generation has passed).
 *
 * Jitter draws from the breaker's private PRNG, so the model runs with
 * open_jitter 0; test_jitter() checks jittered open times against their
 * bounds on their own.
 *
 * Where the header leaves room, the model takes these readings (a mismatch
 * there is a question about the contract, not necessarily a bug):
 *  - the generation moves exactly when the visible state name changes, and
 *    on every reset (a reset discards what came before); a force that
 *    changes nothing visible (auto while auto) leaves permits current;
 *  - a generation change leaves every outstanding permit stale, so no probe
 *    slot can come back: the model frees all half-open slots then and
 *    restarts the count of probe successes;
 *  - outcomes that are stale count in the lifetime figures only (window
 *    and consecutive count untouched);
 *  - outcomes that arrive while forced (open, closed, disabled) are
 *    measured like closed ones, into the lifetime figures, the window and
 *    the consecutive count, whatever the automatic state underneath, but
 *    judge no rule; back in auto, the window is kept as recorded and a
 *    closed breaker judges it on the next outcome (the release trips
 *    nothing by itself);
 *  - a report without a permit counts for the current state (SPEC §4
 *    "Decisions"): while half-open it drives it like a probe's outcome
 *    (without a slot); while open it changes nothing;
 *  - as in resilience4j, a count window smaller than minimum_calls is
 *    judged once full;
 *  - "the slow rule is on" means slow_call_ms and slow_call_rate_threshold
 *    are both set; slow_call_ms alone still marks calls slow;
 *  - forced open with a TTL tells the exact wait (SPEC §4 "Decisions"): until
 *    the later of the TTL end and the end of the automatic open period;
 *  - a force leaves the automatic state alone; it keeps running underneath.
 *  - transitions: one per change of the visible name, none otherwise.  When
 *    a force's TTL and the open period have both ended, the earlier ends
 *    first (a tie: the open period, under the force), so an advance
 *    reports either forced_X -> half_open (force_expired) or forced_X ->
 *    open (force_expired) then open -> half_open (open_time_over); a reset
 *    first applies what time has made due, then reports X -> closed
 *    (reset) unless it was closed already.
 */
#include "breaker.h"
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIST 20         /* operations shown on a mismatch */
#define MAX_PERMITS 128 /* outstanding permits the harness keeps */
#define DONE_RING 16    /* reported permits remembered for double reports */
#define STEPS 8000      /* operations per run */

/* ---- the test's own PRNG (splitmix64): reproducible from the seed ---- */

static uint64_t rnd_state;

static uint64_t rnd(void)
{
    uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n); 0 when n is 0. */
static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* ---- the reference model ---- */

/* What the runs exercised, printed at the end so a weak mix shows. */
static struct {
    long trips[BREAKER_CAUSE_PROBE_SLOW + 1];
    long closes, probes, busy, stale, forced, expired_entries;
    long causes[BREAKER_TC_REMOTE + 1];       /* transitions by cause */
    long per_op[BREAKER_TRANSITIONS_MAX + 1]; /* operations by count */
} cov;

#define MODEL_TQ 8 /* transitions one model operation may predict */

/* A predicted transition, by visible name. */
struct mtrans {
    const char *from, *to;
    enum breaker_transition_cause cause;
};

struct entry {
    uint64_t sec; /* now_ms / 1000 when recorded */
    int failed, slow;
};

struct model {
    const struct breaker_conf *c;
    enum breaker_state state; /* automatic state */
    enum breaker_force force;
    uint64_t force_until; /* 0: no TTL */
    uint64_t open_until;  /* OPEN: half-open from this instant */
    enum breaker_cause cause;
    uint32_t gen;
    uint32_t consecutive; /* failures since the last success */
    uint32_t reopens;     /* re-opens since last closed (exponent) */
    uint32_t probes;      /* half-open slots taken */
    uint32_t successes;   /* half-open probe successes */
    struct entry *win;    /* window, oldest first: win[0..nwin) */
    size_t nwin, capwin;
    uint64_t calls, failures, slow_calls, opens;
    struct mtrans tq[MODEL_TQ]; /* predicted since the last compare */
    int ntq;
};

static const char *m_name(const struct model *m)
{
    switch (m->force) {
    case BREAKER_FORCE_OPEN:
        return "forced_open";
    case BREAKER_FORCE_CLOSED:
        return "forced_closed";
    case BREAKER_FORCE_DISABLED:
        return "disabled";
    case BREAKER_AUTO:
        break;
    }
    switch (m->state) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "?";
}

static void m_init(struct model *m, const struct breaker_conf *c)
{
    memset(m, 0, sizeof(*m));
    m->c = c;
    m->state = BREAKER_CLOSED;
    m->force = BREAKER_AUTO;
    m->cause = BREAKER_CAUSE_NONE;
}

/* The visible name moved from `from` to the current one because of
 * `cause`: predict that transition (nothing if the name did not move). */
static void m_emit(struct model *m, const char *from,
                   enum breaker_transition_cause cause)
{
    const char *to = m_name(m);

    if (!strcmp(from, to))
        return;
    if (m->ntq == MODEL_TQ)
        abort();
    m->tq[m->ntq].from = from;
    m->tq[m->ntq].to = to;
    m->tq[m->ntq].cause = cause;
    m->ntq++;
}

/* Every outstanding permit is stale now: no probe slot can come back, and
 * a half-open period starts its count of successes afresh. */
static void m_bump(struct model *m)
{
    m->gen++;
    m->probes = 0;
    m->successes = 0;
}

/* Drop entries no longer in the window at now_ms. */
static void m_trim(struct model *m, uint64_t now_ms)
{
    size_t drop = 0;

    if (m->c->window_time) {
        while (drop < m->nwin &&
               m->win[drop].sec + m->c->window_size <= now_ms / 1000)
            drop++;
        cov.expired_entries += (long)drop;
    } else if (m->nwin > m->c->window_size) {
        drop = m->nwin - m->c->window_size;
    }
    memmove(m->win, m->win + drop, (m->nwin - drop) * sizeof(*m->win));
    m->nwin -= drop;
}

/* Window figures at now_ms, counted from scratch. */
static void m_window(const struct model *m, uint64_t now_ms, uint32_t *calls,
                     uint32_t *failed, uint32_t *slow)
{
    size_t i, from = 0;

    *calls = *failed = *slow = 0;
    if (!m->c->window_time && m->nwin > m->c->window_size)
        from = m->nwin - m->c->window_size;
    for (i = from; i < m->nwin; i++) {
        /* second s is in the window iff s > now_sec - window_size */
        if (m->c->window_time &&
            m->win[i].sec + m->c->window_size <= now_ms / 1000)
            continue;
        (*calls)++;
        *failed += m->win[i].failed;
        *slow += m->win[i].slow;
    }
}

static void m_add(struct model *m, uint64_t now_ms, int failed, int slow)
{
    if (m->nwin == m->capwin) {
        m->capwin = m->capwin ? 2 * m->capwin : 64;
        m->win = realloc(m->win, m->capwin * sizeof(*m->win));
        if (!m->win)
            abort();
    }
    m->win[m->nwin].sec = now_ms / 1000;
    m->win[m->nwin].failed = failed;
    m->win[m->nwin].slow = slow;
    m->nwin++;
    m_trim(m, now_ms);
}

/* open_ms * backoff^reopens in thousandths, capped by max(open_ms, max). */
static uint64_t m_open_time(const struct breaker_conf *c, uint32_t reopens)
{
    uint64_t cap = c->open_max_ms > c->open_ms ? c->open_max_ms : c->open_ms;
    uint64_t t = c->open_ms;
    uint32_t i;

    for (i = 0; i < reopens && t < cap; i++)
        t = t * c->open_backoff_milli / 1000;
    return t < cap ? t : cap;
}

static void m_trip(struct model *m, uint64_t now_ms, enum breaker_cause cause)
{
    static const enum breaker_transition_cause tc[] = {
        [BREAKER_CAUSE_CONSECUTIVE] = BREAKER_TC_FAILURES,
        [BREAKER_CAUSE_FAILURE_RATE] = BREAKER_TC_FAILURE_RATE,
        [BREAKER_CAUSE_SLOW_RATE] = BREAKER_TC_SLOW_RATE,
        [BREAKER_CAUSE_PROBE_FAILED] = BREAKER_TC_PROBE_FAILURE,
        [BREAKER_CAUSE_PROBE_SLOW] = BREAKER_TC_PROBE_SLOW,
    };
    const char *before = m_name(m);

    if (m->state == BREAKER_CLOSED)
        m->reopens = 0;
    else
        m->reopens++;
    m->state = BREAKER_OPEN;
    m->open_until = now_ms + m_open_time(m->c, m->reopens);
    m->cause = cause;
    m->opens++;
    cov.trips[cause]++;
    m_bump(m);
    m_emit(m, before, tc[cause]);
}

static void m_close(struct model *m)
{
    cov.closes++;
    m->state = BREAKER_CLOSED;
    m->nwin = 0;
    m->consecutive = 0;
    m->reopens = 0;
    m->successes = 0;
    m_bump(m);
}

static void m_advance(struct model *m, uint64_t now_ms)
{
    const char *before = m_name(m);
    int open_over = m->state == BREAKER_OPEN && now_ms >= m->open_until;
    int force_over =
        m->force != BREAKER_AUTO && m->force_until && now_ms >= m->force_until;

    if (open_over && force_over && m->open_until > m->force_until) {
        /* The force ended first and showed it open; then the open period
         * ended: two visible changes. */
        m->force = BREAKER_AUTO;
        m->force_until = 0;
        m_emit(m, before, BREAKER_TC_FORCE_EXPIRED);
        m->state = BREAKER_HALF_OPEN;
        m_emit(m, "open", BREAKER_TC_OPEN_TIME_OVER);
        m_bump(m);
        return;
    }
    if (open_over) {
        m->state = BREAKER_HALF_OPEN;
        m->probes = 0;
        m->successes = 0;
    }
    if (force_over) {
        m->force = BREAKER_AUTO;
        m->force_until = 0;
    }
    if (strcmp(before, m_name(m))) {
        m_emit(m, before,
               force_over ? BREAKER_TC_FORCE_EXPIRED
                          : BREAKER_TC_OPEN_TIME_OVER);
        m_bump(m);
    }
}

/* Wait until a request could pass, state already advanced to now_ms. */
static uint64_t m_retry_after(const struct model *m, uint64_t now_ms)
{
    uint64_t until;

    if (m->force == BREAKER_FORCE_OPEN) {
        if (!m->force_until)
            return 0;
        until = m->force_until;
        if (m->state == BREAKER_OPEN && m->open_until > until)
            until = m->open_until;
        return until - now_ms;
    }
    if (m->force == BREAKER_AUTO && m->state == BREAKER_OPEN)
        return m->open_until - now_ms;
    return 0;
}

static void m_acquire(struct model *m, uint64_t now_ms,
                      struct breaker_verdict *v)
{
    m_advance(m, now_ms);
    memset(v, 0, sizeof(*v));
    v->generation = m->gen;
    v->reason = BREAKER_OK;
    if (m->force == BREAKER_FORCE_OPEN) {
        v->reason = BREAKER_FORCED_OPEN;
        v->retry_after_ms = m_retry_after(m, now_ms);
        return;
    }
    if (m->force != BREAKER_AUTO || m->state == BREAKER_CLOSED) {
        v->allow = 1;
        return;
    }
    if (m->state == BREAKER_OPEN) {
        v->reason = BREAKER_CIRCUIT_OPEN;
        v->retry_after_ms = m_retry_after(m, now_ms);
        return;
    }
    if (m->probes < m->c->half_open_max_calls) {
        m->probes++;
        cov.probes++;
        v->allow = 1;
        v->probe = 1;
        return;
    }
    v->reason = BREAKER_HALF_OPEN_BUSY;
    cov.busy++;
}

static int m_slow_rule(const struct breaker_conf *c)
{
    return c->slow_call_ms && c->slow_call_rate_threshold;
}

static int m_record(struct model *m, uint64_t now_ms, uint32_t gen, int probe,
                    enum breaker_outcome o, int64_t latency_ms)
{
    const struct breaker_conf *c = m->c;
    int failed = o == BREAKER_FAILURE;
    int slow;
    uint32_t n, f, s, need = c->minimum_calls;

    /* resilience4j: a count window smaller than minimum_calls is judged
     * once full. */
    if (!c->window_time && need > c->window_size)
        need = c->window_size;
    m_advance(m, now_ms);
    if (o == BREAKER_IGNORE) {
        if (m->force != BREAKER_AUTO)
            return 2;
        if (gen != m->gen)
            return 0;
        if (probe && m->state == BREAKER_HALF_OPEN && m->probes)
            m->probes--;
        return 1;
    }
    slow = c->slow_call_ms && latency_ms >= 0 &&
           (uint64_t)latency_ms >= c->slow_call_ms;
    m->calls++;
    m->failures += failed;
    m->slow_calls += slow;
    if (m->force != BREAKER_AUTO) {
        /* Measured as always, whatever the state underneath; no rule is
         * judged until an outcome arrives in the automatic state. */
        cov.forced++;
        m_add(m, now_ms, failed, slow);
        m->consecutive = failed ? m->consecutive + 1 : 0;
        return 2;
    }
    if (gen != m->gen) {
        cov.stale++;
        return 0;
    }
    if (m->state == BREAKER_CLOSED) {
        m_add(m, now_ms, failed, slow);
        m->consecutive = failed ? m->consecutive + 1 : 0;
        m_window(m, now_ms, &n, &f, &s);
        if (c->failure_threshold && m->consecutive >= c->failure_threshold)
            m_trip(m, now_ms, BREAKER_CAUSE_CONSECUTIVE);
        else if (n && n >= need && c->failure_rate_threshold &&
                 (uint64_t)f * 100 >= (uint64_t)c->failure_rate_threshold * n)
            m_trip(m, now_ms, BREAKER_CAUSE_FAILURE_RATE);
        else if (n && n >= need && m_slow_rule(c) &&
                 (uint64_t)s * 100 >= (uint64_t)c->slow_call_rate_threshold * n)
            m_trip(m, now_ms, BREAKER_CAUSE_SLOW_RATE);
    } else if (m->state == BREAKER_HALF_OPEN) {
        /* A report without a permit counts for the current state too
         * (SPEC §4 "Decisions"); only a probe holds a slot. */
        if (probe && m->probes)
            m->probes--;
        if (failed)
            m_trip(m, now_ms, BREAKER_CAUSE_PROBE_FAILED);
        else if (slow && m_slow_rule(c))
            m_trip(m, now_ms, BREAKER_CAUSE_PROBE_SLOW);
        else if (++m->successes >= c->success_threshold) {
            m_close(m);
            m_emit(m, "half_open", BREAKER_TC_PROBE_SUCCESS);
        }
    }
    return 1;
}

static void m_release(struct model *m, uint32_t gen, int probe)
{
    if (probe && gen == m->gen && m->force == BREAKER_AUTO &&
        m->state == BREAKER_HALF_OPEN && m->probes)
        m->probes--;
}

static void m_force(struct model *m, uint64_t now_ms, enum breaker_force f,
                    uint64_t ttl_ms)
{
    const char *before;

    m_advance(m, now_ms);
    before = m_name(m);
    m->force = f;
    m->force_until = f != BREAKER_AUTO && ttl_ms ? now_ms + ttl_ms : 0;
    if (strcmp(before, m_name(m))) {
        m_bump(m);
        m_emit(m, before, BREAKER_TC_FORCE);
    }
}

static void m_reset(struct model *m, uint64_t now_ms)
{
    const char *before;

    m_advance(m, now_ms);
    before = m_name(m);
    m->force = BREAKER_AUTO;
    m->force_until = 0;
    m->probes = 0;
    m_close(m); /* window, consecutive, re-opens, successes; bumps */
    m_emit(m, before, BREAKER_TC_RESET);
}

/* ---- the harness ---- */

struct permit {
    uint32_t rgen, mgen; /* generation in the breaker / in the model */
    int probe;
};

struct run {
    const char *name;
    const struct breaker_conf *c;
    uint64_t seed;
    struct breaker b;
    void *mem;
    struct model m;
    uint64_t now_ms;
    uint64_t advanced_ms; /* both were last advanced at this time */
    struct permit out[MAX_PERMITS];
    int nout;
    struct permit done[DONE_RING];
    int ndone;
    unsigned fail_pm; /* failure probability, per mille */
    int step;
    char hist[HIST][200];
    char why[300];
};

static void hist(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void hist(struct run *r, const char *fmt, ...)
{
    char *h = r->hist[r->step % HIST];
    size_t len = strlen(h);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(h + len, sizeof(r->hist[0]) - len, fmt, ap);
    va_end(ap);
}

static int mismatch(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int mismatch(struct run *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->why, sizeof(r->why), fmt, ap);
    va_end(ap);
    return 0;
}

#define EXPECT(r, got, want, what)                                             \
    do {                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);               \
        if (g_ != w_)                                                          \
            return mismatch(r, "%s: breaker %lld, model %lld", what, g_, w_);  \
    } while (0)

static const char *outcome_name(enum breaker_outcome o)
{
    return o == BREAKER_SUCCESS   ? "success"
           : o == BREAKER_FAILURE ? "failure"
                                  : "ignore";
}

static const char *force_name(enum breaker_force f)
{
    static const char *const names[] = {"auto", "open", "closed", "disabled"};
    return names[f];
}

static int64_t pick_latency(const struct breaker_conf *c)
{
    uint64_t s = c->slow_call_ms, k = below(100);

    if (k < 15)
        return -1;
    if (!s)
        return (int64_t)below(2000);
    if (k < 55)
        return (int64_t)below(s);
    if (k < 65)
        return (int64_t)s;
    if (k < 70)
        return (int64_t)s - 1;
    return (int64_t)(s + below(3 * s + 1));
}

static enum breaker_outcome pick_outcome(const struct run *r)
{
    uint64_t k = below(1000);

    if (k < 50)
        return BREAKER_IGNORE;
    return below(1000) < r->fail_pm ? BREAKER_FAILURE : BREAKER_SUCCESS;
}

/* A time step: mostly small, sometimes exactly onto a deadline. */
static uint64_t pick_dt(const struct run *r)
{
    const struct breaker_conf *c = r->c;
    const struct model *m = &r->m;
    uint64_t k = below(100);

    if (k < 20)
        return below(4);
    if (k < 40)
        return below(60);
    if (k < 60)
        return below(2 * c->open_ms + 1);
    if (k < 75 && m->state == BREAKER_OPEN && m->open_until > r->now_ms)
        return m->open_until - r->now_ms - below(2);
    if (k < 85 && m->force != BREAKER_AUTO && m->force_until > r->now_ms)
        return m->force_until - r->now_ms - below(2);
    if (k < 92)
        return 1000 - r->now_ms % 1000 - below(2);
    if (k < 96 && c->window_time)
        return (uint64_t)c->window_size * 1000 - 1000 + below(2001);
    return below(c->open_ms / 4 + 1);
}

static struct permit take_permit(struct run *r)
{
    int i = (int)below((uint64_t)r->nout);
    struct permit p = r->out[i];

    r->out[i] = r->out[--r->nout];
    r->done[r->ndone++ % DONE_RING] = p;
    return p;
}

/* The transitions the operation reported, drained, equal the model's
 * prediction exactly, in order; none was dropped. */
static int compare_transitions(struct run *r)
{
    struct breaker_transition t;
    struct model *m = &r->m;
    int n = 0, i;

    while (breaker_next_transition(&r->b, &t)) {
        const char *from = breaker_visible_name(t.from);
        const char *to = breaker_visible_name(t.to);
        const char *why = breaker_transition_cause_name(t.cause);

        hist(r, " [%s->%s %s]", from, to, why);
        if (n >= m->ntq)
            return mismatch(r, "unpredicted transition %s -> %s (%s)", from, to,
                            why);
        if (strcmp(from, m->tq[n].from) || strcmp(to, m->tq[n].to) ||
            t.cause != m->tq[n].cause)
            return mismatch(r,
                            "transition %d: breaker %s -> %s (%s), model "
                            "%s -> %s (%s)",
                            n, from, to, why, m->tq[n].from, m->tq[n].to,
                            breaker_transition_cause_name(m->tq[n].cause));
        cov.causes[t.cause]++;
        n++;
    }
    if (n < m->ntq)
        return mismatch(r, "transition %d missing: model %s -> %s (%s)", n,
                        m->tq[n].from, m->tq[n].to,
                        breaker_transition_cause_name(m->tq[n].cause));
    EXPECT(r, r->b.transitions_dropped, 0, "transitions dropped");
    if (n > BREAKER_TRANSITIONS_MAX)
        return mismatch(r, "%d transitions in one call", n);
    cov.per_op[n]++;
    for (i = 0; i < m->ntq; i++)
        m->tq[i].from = m->tq[i].to = NULL;
    m->ntq = 0;
    return 1;
}

/* The breaker and the model after one operation agree? */
static int compare(struct run *r, uint32_t rgen0, uint32_t mgen0)
{
    struct breaker *b = &r->b;
    struct model *m = &r->m;
    const char *rn = breaker_state_name(b), *mn = m_name(m);
    uint32_t n, f, s;
    double d;

    if (!compare_transitions(r))
        return 0;
    if (strcmp(rn, mn))
        return mismatch(r, "state: breaker %s, model %s", rn, mn);
    EXPECT(r, b->opens, m->opens, "opens");
    EXPECT(r, b->calls, m->calls, "calls");
    EXPECT(r, b->failures, m->failures, "failures");
    EXPECT(r, b->slow_calls, m->slow_calls, "slow_calls");
    EXPECT(r, breaker_is_open(b),
           !strcmp(mn, "open") || !strcmp(mn, "forced_open"), "is_open");
    /* The contract: a visible change moves the generation (extra moves
     * show up through their effects, if they have any). */
    if (m->gen != mgen0 && b->generation == rgen0)
        return mismatch(r, "generation did not move on a visible change");
    if (!strcmp(mn, "open"))
        EXPECT(r, b->cause, m->cause, "cause");
    if (r->advanced_ms != r->now_ms)
        return 1;
    EXPECT(r, breaker_retry_after(b, r->now_ms), m_retry_after(m, r->now_ms),
           "breaker_retry_after");
    /* The window in every state: measured while closed or forced, frozen
     * while open or half-open, cleared on closing. */
    {
        m_window(m, r->now_ms, &n, &f, &s);
        d = breaker_failure_rate(b, r->now_ms) - (n ? f * 100.0 / n : 0.0);
        if (d > 1e-9 || d < -1e-9)
            return mismatch(r, "failure_rate: breaker %g, model %u/%u",
                            breaker_failure_rate(b, r->now_ms), f, n);
        d = breaker_slow_rate(b, r->now_ms) - (n ? s * 100.0 / n : 0.0);
        if (d > 1e-9 || d < -1e-9)
            return mismatch(r, "slow_rate: breaker %g, model %u/%u",
                            breaker_slow_rate(b, r->now_ms), s, n);
    }
    return 1;
}

static int compare_verdict(struct run *r, const struct breaker_verdict *v,
                           const struct breaker_verdict *mv)
{
    EXPECT(r, v->allow, mv->allow, "verdict allow");
    EXPECT(r, v->probe, mv->probe, "verdict probe");
    EXPECT(r, v->reason, mv->reason, "verdict reason");
    EXPECT(r, v->retry_after_ms, mv->retry_after_ms, "verdict retry_after_ms");
    return 1;
}

/* Record outcome o of permit p in both; compare what record returned. */
static int record_both(struct run *r, const struct permit *p,
                       enum breaker_outcome o, int64_t latency_ms)
{
    int got = breaker_record(&r->b, r->c, r->now_ms, p->rgen, p->probe, o,
                             latency_ms);
    int want = m_record(&r->m, r->now_ms, p->mgen, p->probe, o, latency_ms);

    r->advanced_ms = r->now_ms;
    hist(r, " -> %d", got);
    EXPECT(r, got, want, "breaker_record result");
    return 1;
}

static int op_acquire(struct run *r, int release_at_once)
{
    struct breaker_verdict v, mv;

    breaker_acquire(&r->b, r->c, r->now_ms, &v);
    m_acquire(&r->m, r->now_ms, &mv);
    r->advanced_ms = r->now_ms;
    hist(r, "acquire%s -> allow %d probe %d %s retry %llu",
         release_at_once ? "+release" : "", v.allow, v.probe,
         breaker_reason_name(v.reason), (unsigned long long)v.retry_after_ms);
    if (!compare_verdict(r, &v, &mv))
        return 0;
    if (!v.allow)
        return 1;
    if (release_at_once) { /* a later admission stage said no */
        breaker_release(&r->b, v.generation, v.probe);
        m_release(&r->m, mv.generation, mv.probe);
        return 1;
    }
    r->out[r->nout].rgen = v.generation;
    r->out[r->nout].mgen = mv.generation;
    r->out[r->nout].probe = v.probe;
    r->nout++;
    return 1;
}

static int op_report(struct run *r)
{
    struct permit p = take_permit(r);
    enum breaker_outcome o = pick_outcome(r);
    int64_t lat = pick_latency(r->c);

    hist(r, "report gen %u%s %s lat %lld", p.rgen, p.probe ? " probe" : "",
         outcome_name(o), (long long)lat);
    return record_both(r, &p, o, lat);
}

static int op_report_no_permit(struct run *r)
{
    struct permit p;
    enum breaker_outcome o = pick_outcome(r);
    int64_t lat = pick_latency(r->c);

    if (below(2)) { /* the daemon's status path advances first */
        breaker_advance(&r->b, r->c, r->now_ms);
        m_advance(&r->m, r->now_ms);
        hist(r, "advance; ");
    }
    p.rgen = r->b.generation; /* as the daemon reads it */
    p.mgen = r->m.gen;
    p.probe = 0;
    hist(r, "report-no-permit gen %u %s lat %lld", p.rgen, outcome_name(o),
         (long long)lat);
    return record_both(r, &p, o, lat);
}

/* Connection loss or permit expiry; now and then a probe given back
 * unused (what admit.c does when a later stage refuses it), possibly
 * after its generation has passed. */
static int op_lose(struct run *r)
{
    struct permit p = take_permit(r);

    if ((p.probe && below(5)) || (!p.probe && below(2))) {
        hist(r, "%s gen %u%s", p.probe ? "lose" : "expire", p.rgen,
             p.probe ? " probe" : "");
        return record_both(r, &p, BREAKER_FAILURE, -1);
    }
    hist(r, "release gen %u%s", p.rgen, p.probe ? " probe" : "");
    breaker_release(&r->b, p.rgen, p.probe);
    m_release(&r->m, p.mgen, p.probe);
    return 1;
}

static int op_time(struct run *r)
{
    uint64_t dt = pick_dt(r);

    r->now_ms += dt;
    hist(r, "time +%llu", (unsigned long long)dt);
    if (below(10) < 3) {
        breaker_advance(&r->b, r->c, r->now_ms);
        m_advance(&r->m, r->now_ms);
        r->advanced_ms = r->now_ms;
        hist(r, "; advance");
    }
    return 1;
}

static int op_force(struct run *r)
{
    enum breaker_force f = (enum breaker_force)below(4);
    uint64_t ttl = below(2) ? 0 : 1 + below(2 * r->c->open_ms);

    if (below(2))
        f = BREAKER_AUTO;
    hist(r, "force %s ttl %llu", force_name(f), (unsigned long long)ttl);
    breaker_force(&r->b, r->c, r->now_ms, f, ttl);
    m_force(&r->m, r->now_ms, f, ttl);
    r->advanced_ms = r->now_ms;
    return 1;
}

static int op_reset(struct run *r)
{
    hist(r, "reset");
    breaker_reset(&r->b, r->now_ms);
    m_reset(&r->m, r->now_ms);
    r->advanced_ms = r->now_ms;
    return 1;
}

static int one_step(struct run *r)
{
    uint32_t rgen0 = r->b.generation, mgen0 = r->m.gen;
    uint64_t k = below(1000);
    int ok;

    snprintf(r->hist[r->step % HIST], sizeof(r->hist[0]), "%5d t=%llu ",
             r->step, (unsigned long long)r->now_ms);
    if (r->step % 300 == 0) { /* a new regime: how often calls fail */
        static const unsigned pm[] = {30, 300, 500, 700, 970};
        r->fail_pm = pm[below(5)];
    }
    if (r->nout == MAX_PERMITS && k < 330)
        k = 400; /* full: report instead */
    if (!r->nout && k >= 330 && k < 660)
        k = 0;
    if (k < 300)
        ok = op_acquire(r, 0);
    else if (k < 330)
        ok = op_acquire(r, 1);
    else if (k < 600)
        ok = op_report(r);
    else if (k < 660)
        ok = op_lose(r);
    else if (k < 700)
        ok = op_report_no_permit(r);
    else if (k < 715 && r->ndone) {
        struct permit *p = &r->done[below(
            (uint64_t)(r->ndone < DONE_RING ? r->ndone : DONE_RING))];
        /* The daemon counts a permit once: nothing reaches the breaker. */
        hist(r, "double report gen %u (skipped)", p->rgen);
        ok = 1;
    } else if (k < 970)
        ok = op_time(r);
    else if (k < 995)
        ok = op_force(r);
    else
        ok = op_reset(r);
    return ok && compare(r, rgen0, mgen0);
}

/* One seeded run of `steps` operations; 1 if the breaker matched. */
static int run_one(const char *name, const struct breaker_conf *c,
                   uint64_t seed, uint64_t start_ms, int steps)
{
    static struct run r; /* large: keep it off the stack */
    size_t bytes = breaker_window_bytes(c);
    int i, ok = 1;

    memset(&r, 0, sizeof(r));
    r.name = name;
    r.c = c;
    r.seed = seed;
    r.now_ms = r.advanced_ms = start_ms;
    rnd_state = seed;
    r.mem = malloc(bytes);
    if (!r.mem)
        abort();
    memset(r.mem, 0xa5, bytes); /* init must not rely on zeroed memory */
    breaker_init(&r.b, c, r.mem, seed, start_ms);
    m_init(&r.m, c);
    for (r.step = 0; r.step < steps; r.step++) {
        if (!one_step(&r)) {
            ok = 0;
            break;
        }
    }
    if (!ok) {
        DIAG("%s seed %llu: mismatch at step %d: %s", name,
             (unsigned long long)seed, r.step, r.why);
        DIAG("last operations (breaker generations shown):");
        for (i = r.step - HIST + 1; i <= r.step; i++)
            if (i >= 0)
                DIAG("  %s", r.hist[i % HIST]);
    }
    OK(ok, "model: %s, seed %llu, clock from %llu, %d ops", name,
       (unsigned long long)seed, (unsigned long long)start_ms,
       ok ? steps : r.step + 1);
    free(r.mem);
    free(r.m.win);
    return ok ? steps : r.step + 1;
}

/* ---- configurations ---- */

struct named_conf {
    const char *name;
    struct breaker_conf c;
};

static const struct named_conf confs[] = {
    {"consecutive only",
     {.failure_threshold = 3,
      .open_ms = 1000,
      .half_open_max_calls = 1,
      .success_threshold = 2,
      .window_size = 100,
      .minimum_calls = 10,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"count window rate",
     {.failure_threshold = 0,
      .open_ms = 800,
      .half_open_max_calls = 1,
      .success_threshold = 1,
      .window_size = 10,
      .minimum_calls = 5,
      .failure_rate_threshold = 50,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"count window + consecutive",
     {.failure_threshold = 4,
      .open_ms = 500,
      .half_open_max_calls = 2,
      .success_threshold = 2,
      .window_size = 7,
      .minimum_calls = 7,
      .failure_rate_threshold = 60,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"time window rate",
     {.failure_threshold = 0,
      .open_ms = 1500,
      .half_open_max_calls = 1,
      .success_threshold = 2,
      .window_time = 1,
      .window_size = 5,
      .minimum_calls = 4,
      .failure_rate_threshold = 50,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"time window + slow + consecutive",
     {.failure_threshold = 5,
      .open_ms = 2500,
      .half_open_max_calls = 2,
      .success_threshold = 3,
      .window_time = 1,
      .window_size = 3,
      .minimum_calls = 3,
      .failure_rate_threshold = 70,
      .slow_call_ms = 200,
      .slow_call_rate_threshold = 50,
      .open_backoff_milli = 1500,
      .open_max_ms = 10000}},
    {"slow rule, count window",
     {.failure_threshold = 0,
      .open_ms = 700,
      .half_open_max_calls = 1,
      .success_threshold = 2,
      .window_size = 20,
      .minimum_calls = 8,
      .slow_call_ms = 100,
      .slow_call_rate_threshold = 40,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"backoff with cap",
     {.failure_threshold = 2,
      .open_ms = 300,
      .half_open_max_calls = 1,
      .success_threshold = 1,
      .window_size = 10,
      .minimum_calls = 10,
      .failure_rate_threshold = 50,
      .open_backoff_milli = 1500,
      .open_max_ms = 5000}},
    {"backoff, cap below open_ms",
     {.failure_threshold = 2,
      .open_ms = 1000,
      .half_open_max_calls = 1,
      .success_threshold = 2,
      .window_size = 10,
      .minimum_calls = 10,
      .open_backoff_milli = 2000,
      .open_max_ms = 500}},
    {"many probes, slow without slow rule",
     {.failure_threshold = 2,
      .open_ms = 400,
      .half_open_max_calls = 3,
      .success_threshold = 4,
      .window_size = 30,
      .minimum_calls = 10,
      .slow_call_ms = 50,
      .open_backoff_milli = 1250,
      .open_max_ms = 3000}},
    {"never opens by itself",
     {.failure_threshold = 0,
      .open_ms = 1000,
      .half_open_max_calls = 1,
      .success_threshold = 2,
      .window_size = 50,
      .minimum_calls = 10,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"long time window, everything on",
     {.failure_threshold = 6,
      .open_ms = 3000,
      .half_open_max_calls = 2,
      .success_threshold = 2,
      .window_time = 1,
      .window_size = 60,
      .minimum_calls = 20,
      .failure_rate_threshold = 30,
      .slow_call_ms = 300,
      .slow_call_rate_threshold = 20,
      .open_backoff_milli = 3000,
      .open_max_ms = 20000}},
    {"minimum_calls above the count window",
     {.failure_threshold = 0,
      .open_ms = 600,
      .half_open_max_calls = 1,
      .success_threshold = 1,
      .window_size = 5,
      .minimum_calls = 8,
      .failure_rate_threshold = 50,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
    {"minimum_calls 0, 100% rate, window 4",
     {.failure_threshold = 0,
      .open_ms = 600,
      .half_open_max_calls = 2,
      .success_threshold = 1,
      .window_size = 4,
      .minimum_calls = 0,
      .failure_rate_threshold = 100,
      .slow_call_ms = 10,
      .slow_call_rate_threshold = 100,
      .open_backoff_milli = 2000,
      .open_max_ms = 2400}},
    {"big count window",
     {.failure_threshold = 0,
      .open_ms = 900,
      .half_open_max_calls = 1,
      .success_threshold = 2,
      .window_size = 500,
      .minimum_calls = 50,
      .failure_rate_threshold = 45,
      .open_backoff_milli = 1000,
      .open_max_ms = 300000}},
};

/* ---- jitter: every open period within +-open_jitter of its base ---- */

static void test_jitter(void)
{
    static const uint32_t jitters[] = {100, 250, 500, 1000};
    struct breaker_conf c = {.failure_threshold = 1,
                             .open_ms = 1000,
                             .half_open_max_calls = 1,
                             .success_threshold = 1,
                             .window_size = 10,
                             .minimum_calls = 10,
                             .open_backoff_milli = 2000,
                             .open_max_ms = 6000};
    struct breaker b;
    struct breaker_verdict v, p;
    void *mem;
    size_t j;
    int seed, cycle, in_bounds = 1, varied;
    uint64_t now, t, first, wait;
    uint32_t reopens;

    mem = malloc(breaker_window_bytes(&c));
    if (!mem)
        abort();
    rnd_state = 7;
    for (j = 0; j < sizeof(jitters) / sizeof(jitters[0]); j++) {
        c.open_jitter_milli = jitters[j];
        varied = 0;
        first = UINT64_MAX;
        for (seed = 1; seed <= 50 && in_bounds; seed++) {
            now = 1000;
            breaker_init(&b, &c, mem, (uint64_t)seed, now);
            reopens = 0;
            breaker_acquire(&b, &c, now, &v);
            breaker_record(&b, &c, now, v.generation, v.probe, BREAKER_FAILURE,
                           -1);
            for (cycle = 0; cycle < 40 && in_bounds; cycle++) {
                /* Just tripped (or re-opened) at now. */
                t = m_open_time(&c, reopens);
                breaker_acquire(&b, &c, now, &v);
                wait = v.allow ? 0 : v.retry_after_ms;
                if (v.allow) /* a 0 ms open period: already half-open */
                    breaker_release(&b, v.generation, v.probe);
                if (wait * 1000 < t * 1000 - t * c.open_jitter_milli ||
                    wait * 1000 > t * 1000 + t * c.open_jitter_milli ||
                    (!v.allow && v.reason != BREAKER_CIRCUIT_OPEN)) {
                    DIAG("jitter %u seed %d cycle %d: open %llu ms, base %llu",
                         c.open_jitter_milli, seed, cycle,
                         (unsigned long long)wait, (unsigned long long)t);
                    in_bounds = 0;
                    break;
                }
                if (first == UINT64_MAX)
                    first = wait;
                varied |= wait != first && t == c.open_ms;
                now += wait;
                breaker_acquire(&b, &c, now, &p);
                if (!p.allow || !p.probe) {
                    DIAG("jitter %u seed %d: no probe when the period ended",
                         c.open_jitter_milli, seed);
                    in_bounds = 0;
                    break;
                }
                if (below(4) == 0) { /* close, then trip again later */
                    breaker_record(&b, &c, now, p.generation, 1,
                                   BREAKER_SUCCESS, -1);
                    now += below(500);
                    breaker_acquire(&b, &c, now, &v);
                    breaker_record(&b, &c, now, v.generation, v.probe,
                                   BREAKER_FAILURE, -1);
                    reopens = 0;
                } else {
                    now += below(3);
                    breaker_record(&b, &c, now, p.generation, 1,
                                   BREAKER_FAILURE, -1);
                    reopens++;
                }
            }
        }
        OK(in_bounds, "jitter %u/1000: every open period within bounds",
           c.open_jitter_milli);
        OK(varied, "jitter %u/1000: open periods vary", c.open_jitter_milli);
    }
    free(mem);
}

int main(void)
{
    static const uint64_t seeds[] = {1, 0x5eed, 20240601};
    size_t i, s;
    long total = 0;

    for (i = 0; i < sizeof(confs) / sizeof(confs[0]); i++)
        for (s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++)
            total += run_one(confs[i].name, &confs[i].c, seeds[s], 1000, STEPS);
    /* A clock that starts at 0: second 0 must still count in time windows. */
    total += run_one(confs[3].name, &confs[3].c, 99, 0, STEPS);
    test_jitter();
    DIAG("%ld model operations", total);
    DIAG("trips: consecutive %ld, failure rate %ld, slow rate %ld, "
         "probe failed %ld, probe slow %ld; closes %ld",
         cov.trips[BREAKER_CAUSE_CONSECUTIVE],
         cov.trips[BREAKER_CAUSE_FAILURE_RATE],
         cov.trips[BREAKER_CAUSE_SLOW_RATE],
         cov.trips[BREAKER_CAUSE_PROBE_FAILED],
         cov.trips[BREAKER_CAUSE_PROBE_SLOW], cov.closes);
    DIAG("probes %ld, half-open busy %ld, stale outcomes %ld, forced outcomes "
         "%ld, window entries expired %ld",
         cov.probes, cov.busy, cov.stale, cov.forced, cov.expired_entries);
    DIAG("operations reporting 0/1/2/3 transitions: %ld/%ld/%ld/%ld",
         cov.per_op[0], cov.per_op[1], cov.per_op[2], cov.per_op[3]);
    for (i = 0; i < BREAKER_TC_REMOTE; i++) {
        DIAG("transitions %-14s %ld",
             breaker_transition_cause_name((enum breaker_transition_cause)i),
             cov.causes[i]);
        OK(cov.causes[i] > 0, "model runs saw transitions caused by %s",
           breaker_transition_cause_name((enum breaker_transition_cause)i));
    }
    IS(cov.causes[BREAKER_TC_REMOTE], 0, "no local transition says remote");
    OK(cov.per_op[2] > 0, "some operations reported 2 transitions");
    return tap_done();
}
