/*
 * core.c - the decision core (see core.h).
 *
 * Must not: include msgpack or uv, read a clock, write a log line, or
 * block.  What the outside world hears of a decision leaves through
 * core_emit (events) and the caller's answer callback (parked requests).
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

int core_init(struct resild *d, struct config *cfg, uint64_t now_ms,
              uint64_t seed)
{
    int rc;

    memset(d, 0, sizeof(*d));
    d->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    d->start_ms = now_ms;
    d->pid = (long)getpid();
    if ((rc = keys_init(&d->keys, d->cfg.max_keys)) < 0 ||
        (rc = permits_init(&d->permits, d->cfg.max_permits, seed)) < 0)
        return rc;
    if (!(d->due =
              calloc(d->cfg.max_keys ? d->cfg.max_keys : 1, sizeof(*d->due))))
        return RD_ENOMEM;
    retry_budget_init(&d->budget);
    return admit_init(d, seed ^ 0x5bd1e995u);
}

void core_free(struct resild *d)
{
    free(d->due);
    d->due = NULL;
    keys_free(&d->keys);
    permits_free(&d->permits);
    admit_free(d);
    config_free(&d->cfg);
}

int core_add_sink(struct resild *d, event_sink_fn fn, void *ctx)
{
    if (d->nsinks == CORE_MAX_SINKS)
        return RD_ENOMEM;
    d->sinks[d->nsinks].fn = fn;
    d->sinks[d->nsinks].ctx = ctx;
    d->nsinks++;
    return 0;
}

void core_emit(struct resild *d, struct event *ev, uint64_t now_ms)
{
    unsigned i;

    ev->now_ms = now_ms;
    if (!ev->origin)
        ev->origin = d->emit_origin; /* NULL but inside core_remote */
    d->m.events++;
    for (i = 0; i < d->nsinks; i++)
        d->sinks[i].fn(d->sinks[i].ctx, ev);
}

const char *core_bound_name(enum core_bound b)
{
    static const char *const names[BOUND_COUNT] = {
        "max_clients",        "not_allowed",     "max_keys",
        "max_permits",        "max_parked",      "max_frame_bytes",
        "protocol_error",     "partial_timeout", "output",
        "subscriber_dropped", "bad_request"};

    return (unsigned)b < BOUND_COUNT ? names[b] : "?";
}

void core_bound(struct resild *d, enum core_bound b, const struct key *k,
                const char *detail, uint64_t now_ms)
{
    struct event ev = {.type = EV_BOUND_HIT, .key = k};

    d->m.bounds[b]++;
    ev.u.bound.kind = b;
    ev.u.bound.bound = core_bound_name(b);
    ev.u.bound.detail = detail;
    core_emit(d, &ev, now_ms);
}

void core_component(struct resild *d, const char *name, int ok,
                    const char *detail)
{
    unsigned i;

    for (i = 0; i < d->ncomponents; i++)
        if (!strcmp(d->components[i].name, name))
            break;
    if (i == d->ncomponents) {
        if (i == CORE_COMPONENTS)
            return;
        snprintf(d->components[i].name, sizeof(d->components[i].name), "%s",
                 name);
        d->ncomponents++;
    }
    d->components[i].ok = ok;
    snprintf(d->components[i].detail, sizeof(d->components[i].detail), "%s",
             detail ? detail : "");
}

void core_set_connections(struct resild *d, uint32_t n)
{
    d->connections = n;
}

int core_wake_due(const struct resild *d)
{
    return d->wake_dirty || d->nwake_keys || d->wake_rearm;
}

/* The latest now_ms seen, for core_lease_wanted (which takes none). */
static void lease_clock(struct resild *d, uint64_t now_ms)
{
    if (now_ms > d->lease.clock_ms)
        d->lease.clock_ms = now_ms;
}

/* Every parked request is looked at only when something they all may wait
 * for changed (wake_dirty) or when the time one was waiting for came
 * (wake_next_ms); a release serves its own key's queue alone.  So a report
 * costs O(that key's parked requests), never O(parked). */
uint64_t core_wake(struct resild *d, uint64_t now_ms)
{
    lease_clock(d, now_ms);
    d->wake_rearm = 0;
    if (!d->waiting) {
        d->wake_dirty = 0;
        d->nwake_keys = 0;
        d->wake_next_ms = 0;
        return 0;
    }
    if (d->wake_dirty || !d->wake_next_ms || now_ms >= d->wake_next_ms) {
        d->wake_dirty = 0;
        admit_wake(d, now_ms); /* sets wake_next_ms */
    } else {
        admit_wake_keys(d, now_ms);
    }
    if (!d->waiting)
        d->wake_next_ms = 0;
    return d->wake_next_ms;
}

void core_stop(struct resild *d, uint64_t now_ms)
{
    d->stopping = 1;
    admit_wake_all_now(d, now_ms);
}

void core_caller_failed(struct resild *d, struct caller *c)
{
    admit_caller_gone(d, c);
}

/* --- health bookkeeping --- */

enum key_health core_key_health(const struct key *k)
{
    if (breaker_is_open(&k->br) || k->hb.lost)
        return HEALTH_UNAVAILABLE;
    if (k->br.force == BREAKER_AUTO && k->br.state == BREAKER_HALF_OPEN)
        return HEALTH_DEGRADED;
    return HEALTH_OPERATIONAL;
}

const char *core_health_name(enum key_health h)
{
    return h == HEALTH_UNAVAILABLE ? "unavailable"
           : h == HEALTH_DEGRADED  ? "degraded"
                                   : "operational";
}

/* --- what time will change: a min-heap of keys by due_ms --- */

static void due_swap_in(struct resild *d, uint32_t i, struct key *k)
{
    d->due[i] = k;
    k->due_pos = i + 1;
}

static void due_up(struct resild *d, uint32_t i)
{
    struct key *k = d->due[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (d->due[parent]->due_ms <= k->due_ms)
            break;
        due_swap_in(d, i, d->due[parent]);
        i = parent;
    }
    due_swap_in(d, i, k);
}

static void due_down(struct resild *d, uint32_t i)
{
    struct key *k = d->due[i];

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= d->ndue)
            break;
        if (c + 1 < d->ndue && d->due[c + 1]->due_ms < d->due[c]->due_ms)
            c++;
        if (k->due_ms <= d->due[c]->due_ms)
            break;
        due_swap_in(d, i, d->due[c]);
        i = c;
    }
    due_swap_in(d, i, k);
}

/* Put k in the heap at due (0: take it out). */
static void due_set(struct resild *d, struct key *k, uint64_t due)
{
    if (k->due_pos && due == k->due_ms)
        return;
    if (!due) {
        uint32_t i;
        struct key *last;
        if (!k->due_pos)
            return;
        i = k->due_pos - 1;
        last = d->due[--d->ndue];
        k->due_pos = 0;
        k->due_ms = 0;
        if (last != k) {
            due_swap_in(d, i, last);
            due_down(d, i);
            due_up(d, last->due_pos - 1);
        }
        return;
    }
    k->due_ms = due;
    if (!k->due_pos) {
        /* Never more keys than max_keys: the array has room. */
        due_swap_in(d, d->ndue++, k);
        due_up(d, k->due_pos - 1);
    } else {
        due_down(d, k->due_pos - 1);
        due_up(d, k->due_pos - 1);
    }
}

/* The next instant time alone changes k: its open period ends, its force
 * expires, its heartbeat goes silent too long.  0: nothing is due. */
static uint64_t key_due(const struct key *k)
{
    uint64_t due = 0, t;

    if (k->br.force != BREAKER_AUTO && k->br.force_until_ms)
        due = k->br.force_until_ms;
    if (k->br.state == BREAKER_OPEN && k->br.open_until_ms &&
        (!due || k->br.open_until_ms < due))
        due = k->br.open_until_ms;
    if (k->core_ready && k->policy->has_heartbeat &&
        (t = heartbeat_due_ms(&k->hb, k->policy->heartbeat_timeout_ms)) &&
        (!due || t < due))
        due = t;
    return due;
}

static void schedule(struct resild *d, struct key *k)
{
    due_set(d, k, key_due(k));
}

/* --- host-wide totals (state.h struct core_totals) --- */

_Static_assert(ADMIT_NREASONS == sizeof(((struct core_totals *)0)->dec) /
                                     sizeof(uint64_t),
               "one total per admit_reason");

/* What k counts as: visible state (bits 0-2), health (3-4), open (5),
 * critical, i.e. on d->critical (6).  A key never looked at is 0: closed,
 * operational, none of the lists. */
static uint8_t tally_of(const struct key *k)
{
    unsigned t = (unsigned)breaker_visible_state(&k->br);

    t |= (unsigned)core_key_health(k) << 3;
    t |= (unsigned)breaker_is_open(&k->br) << 5;
    t |= (unsigned)(k->core_ready && k->policy->critical) << 6;
    return (uint8_t)t;
}

/* Add (one = 1) or take out (one = (uint32_t)-1) a key counted as t. */
static void tally_count(struct core_totals *tot, unsigned t, uint32_t one)
{
    unsigned h = (t >> 3) & 3;

    if (t & 7)
        tot->vis[t & 7] += one;
    if (h)
        tot->health[h] += one;
    if (t & 32)
        tot->open += one;
    if ((t & 64) && h == HEALTH_OPERATIONAL)
        tot->crit_up += one;
    if ((t & 64) && h == HEALTH_UNAVAILABLE)
        tot->crit_down += one;
}

static void tally(struct resild *d, struct key *k)
{
    uint8_t t = tally_of(k);

    if (t == k->tally)
        return;
    tally_count(&d->tot, k->tally, (uint32_t)-1);
    tally_count(&d->tot, t, 1);
    k->tally = t;
}

/* k's policy counted in (one = 1) or out ((uint64_t)-1) of the limiter
 * and bulkhead totals, with what its bulkhead holds. */
static void policy_count(struct resild *d, const struct key *k, uint64_t one)
{
    if (k->policy->has_limiter)
        d->tot.nlim += (uint32_t)one;
    if (k->policy->has_bulkhead) {
        d->tot.nbh += (uint32_t)one;
        d->tot.bh_in_use += one * k->bh.in_use;
        d->tot.bh_queued += one * k->q_len;
    }
}

void core_key_created(struct resild *d, const struct key *k)
{
    policy_count(d, k, 1);
}

void core_add_latency(struct resild *d, struct key *k, uint64_t latency_ms)
{
    keys_add_latency(k, latency_ms);
    d->tot.lat_hist[keys_latency_bucket(latency_ms)]++;
    d->tot.lat_sum_ms += latency_ms;
}

/* Keep k on d->unwell exactly while it is not closed and automatic with
 * a live heartbeat: every key that is not operational, and every key that
 * time can change (an open breaker, a force with or without a TTL).  Health
 * and the tick look only at those keys. */
static void track_health(struct resild *d, struct key *k)
{
    int unwell;

    schedule(d, k); /* every state change passes here */
    tally(d, k);
    unwell = k->br.force != BREAKER_AUTO || k->br.state != BREAKER_CLOSED ||
             k->hb.lost;

    if (unwell == k->unwell)
        return;
    if (unwell) {
        k->unwell_prev = NULL;
        k->unwell_next = d->unwell;
        if (d->unwell)
            d->unwell->unwell_prev = k;
        d->unwell = k;
        d->nunwell++;
    } else {
        if (k->unwell_prev)
            k->unwell_prev->unwell_next = k->unwell_next;
        else
            d->unwell = k->unwell_next;
        if (k->unwell_next)
            k->unwell_next->unwell_prev = k->unwell_prev;
        k->unwell_prev = k->unwell_next = NULL;
        d->nunwell--;
    }
    k->unwell = (uint8_t)unwell;
}

/* --- transitions --- */

/* Announce what k's breaker reported since the last call: every visible
 * change once, with its cause, in order (breaker.h keeps them), then keep
 * the health list right. */
static void announce(struct resild *d, struct key *k, uint64_t now_ms)
{
    struct event ev = {.type = EV_TRANSITION, .key = k};

    while (breaker_next_transition(&k->br, &ev.u.transition)) {
        d->m.transitions++;
        if (ev.u.transition.to == BREAKER_VIS_OPEN ||
            ev.u.transition.to == BREAKER_VIS_FORCED_OPEN)
            d->m.opens++;
        core_emit(d, &ev, now_ms);
    }
    track_health(d, k);
}

void core_sync(struct resild *d, struct key *k, uint64_t now_ms)
{
    announce(d, k, now_ms);
}

void core_advance(struct resild *d, struct key *k, uint64_t now_ms)
{
    breaker_advance(&k->br, &k->policy->breaker, now_ms);
    announce(d, k, now_ms);
}

/* --- keys --- */

int core_key(struct resild *d, const char *name, size_t n, uint64_t now_ms,
             struct key **out)
{
    struct key *k;
    size_t had = d->keys.count;
    int rc = keys_get(&d->keys, name, n, &d->cfg, now_ms, &k);

    if (rc == 0 && d->keys.count != had)
        core_key_created(d, k);
    if (rc == 0)
        rc = admit_prepare(d, k, now_ms);
    if (rc < 0)
        return rc;
    if (!k->core_ready) {
        /* First use: join the lists the tick and health walk. */
        k->core_ready = 1;
        heartbeat_init(&k->hb, now_ms);
        if (k->policy->critical) {
            k->crit_next = d->critical;
            d->critical = k;
        }
        track_health(d, k); /* a heartbeat is due from now; counted */
    }
    *out = k;
    return 0;
}

/* --- heartbeats --- */

static void beat_event(struct resild *d, struct key *k, enum event_type t,
                       uint64_t silent_ms, uint64_t now_ms)
{
    struct event ev = {.type = t, .key = k};

    if (t == EV_HEARTBEAT_LOST)
        d->m.heartbeats_lost++;
    ev.u.heartbeat.silent_ms = silent_ms;
    core_emit(d, &ev, now_ms);
}

int core_beat_lost(struct resild *d, struct key *k, uint64_t now_ms)
{
    uint64_t silent;
    int lost;

    if (!k->policy->has_heartbeat)
        return 0;
    if (heartbeat_check(&k->hb, now_ms, k->policy->heartbeat_timeout_ms, &lost,
                        &silent) &
        HEARTBEAT_LOST) {
        beat_event(d, k, EV_HEARTBEAT_LOST, silent, now_ms);
        track_health(d, k);
    }
    return lost;
}

void core_heartbeat(struct resild *d, struct key *k, uint64_t now_ms)
{
    uint64_t silent;
    unsigned edges;

    d->m.heartbeats++;
    if (!k->policy->has_heartbeat) {
        /* A loss marked under an earlier policy (kept by a reload) ends
         * here: the key's health changes, so its counts must too (d->tot:
         * health answers from them). */
        if (heartbeat_beat(&k->hb, now_ms, UINT64_MAX, &silent) &
            HEARTBEAT_RESTORED)
            track_health(d, k);
        return;
    }
    edges = heartbeat_beat(&k->hb, now_ms, k->policy->heartbeat_timeout_ms,
                           &silent);
    if (edges & HEARTBEAT_LOST)
        beat_event(d, k, EV_HEARTBEAT_LOST, silent, now_ms);
    if (edges & HEARTBEAT_RESTORED) {
        d->wake_dirty = 1;
        beat_event(d, k, EV_HEARTBEAT_RESTORED, silent, now_ms);
    }
    if (edges)
        track_health(d, k);
    else
        schedule(d, k); /* the next silence is due later now */
}

/* --- acquire --- */

int core_acquire(struct resild *d, struct caller *c, struct key *k,
                 uint64_t cost, int critical, uint64_t wait_ms, uint32_t msgid,
                 uint64_t now_ms, struct admit_result *res,
                 const struct key **culprit)
{
    int rc;

    lease_clock(d, now_ms);
    rc = admit_acquire(d, c, k, cost, critical, wait_ms, msgid, now_ms, res,
                       culprit);

    core_sync(d, k, now_ms);
    if (rc == 0 && !res->parked) {
        if (k->stats)
            k->stats->decisions[res->reason]++;
        d->tot.dec[res->reason]++;
    }
    return rc;
}

/* --- outcomes: every source comes through here --- */

static int is_rate_limited(const char *cls)
{
    return strncmp(cls, "rate_limited", 12) == 0 &&
           (cls[12] == '\0' || cls[12] == '.');
}

static void count_error(struct resild *d, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000;
    unsigned i = (unsigned)(sec % CORE_ERROR_SECONDS);

    if (d->err_sec[i] != sec) {
        d->err_sec[i] = sec;
        d->err_count[i] = 0;
    }
    d->err_count[i]++;
}

/* Count a failure or unknown outcome by class and severity.  O(classes
 * seen), at most CORE_CLASSES string compares. */
static void count_class(struct resild *d, const char *cls, int severity)
{
    uint32_t i;
    unsigned sev = severity >= 0 && severity <= 3 ? (unsigned)severity : 1;

    for (i = 0; i < d->nclasses; i++)
        if (!strcmp(d->classes[i].cls, cls)) {
            d->classes[i].n[sev]++;
            return;
        }
    if (d->nclasses < CORE_CLASSES && strlen(cls) <= OUTCOME_CLASS_MAX) {
        strcpy(d->classes[d->nclasses].cls, cls);
        d->classes[d->nclasses++].n[sev]++;
        return;
    }
    d->classes_other[sev]++;
}

uint64_t core_recent_errors(const struct resild *d, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000, n = 0;
    unsigned i;

    for (i = 0; i < CORE_ERROR_SECONDS; i++)
        if (d->err_sec[i] && d->err_sec[i] + CORE_ERROR_SECONDS > sec)
            n += d->err_count[i];
    return n;
}

/* A 429 on k (here, or on another daemon): the nearest limiter pauses
 * for ms (0: its pause_ms), announced on the key paused. */
static void venue_pause(struct resild *d, struct key *k, uint64_t ms,
                        uint64_t now_ms)
{
    struct key *t = admit_venue_pause(d, k, now_ms, ms);
    struct event vp = {.type = EV_VENUE_PAUSE, .key = t};

    vp.u.venue_pause.paused_ms = limiter_paused_ms(&t->lim, now_ms);
    vp.u.venue_pause.reported_on = k;
    core_emit(d, &vp, now_ms);
}

/*
 * The one entry for an outcome of key o->key, from any source.  p: the
 * permit it ends (owned by the reporter), or NULL.  Drives the breaker
 * (unless stale or ignored), ends the permit, announces transitions, emits
 * the outcome, and applies venue feedback.
 */
static void outcome(struct resild *d, struct outcome *o, struct permit *p,
                    uint64_t now_ms)
{
    struct key *k = o->key;
    const struct breaker_conf *bc = &k->policy->breaker;
    int failed = o->kind == OUT_FAILURE || o->kind == OUT_UNKNOWN;
    enum breaker_outcome bo;
    struct event ev = {.type = EV_OUTCOME, .key = k};
    uint64_t opens = k->br.opens;

    if (o->severity < 0 || o->transient < 0) {
        int sev, tr;
        config_classify(&d->cfg, o->cls[0] ? o->cls : NULL, &sev, &tr);
        if (o->severity < 0)
            o->severity = sev;
        if (o->transient < 0)
            o->transient = tr;
    }
    if (!failed)
        bo = o->kind == OUT_SUCCESS ? BREAKER_SUCCESS : BREAKER_IGNORE;
    else /* failure or unknown: the policy's record/ignore lists decide */
        bo = config_failure_kind(k->policy, o->cls[0] ? o->cls : NULL);
    if (o->latency_ms >= 0)
        core_add_latency(d, k, (uint64_t)o->latency_ms);
    if (p && o->source != SRC_REPORT && bo == BREAKER_IGNORE) {
        /* Ended without an outcome that counts (a disconnect, a cancel):
         * give back a probe slot, count nothing. */
        breaker_release(&k->br, p->generation, p->probe);
        o->stale = 0;
    } else if (p) {
        o->stale = breaker_record(&k->br, bc, now_ms, p->generation, p->probe,
                                  bo, o->latency_ms) == BREAKER_REC_STALE;
    } else if (!o->permit) {
        /* No permit: the report is about now, so never stale. */
        breaker_advance(&k->br, bc, now_ms);
        o->stale = breaker_record(&k->br, bc, now_ms, k->br.generation, 0, bo,
                                  o->latency_ms) == BREAKER_REC_STALE;
    } else {
        /* A permit already reported, expired or never granted counts once,
         * the first time; this report drives nothing. */
        o->stale = 1;
    }
    d->tot.opens += k->br.opens - opens; /* a trip counts one */
    if (p)
        admit_permit_done(d, p);
    d->m.outcomes[o->kind]++;
    if (failed) {
        count_error(d, now_ms);
        count_class(d, o->cls, o->severity);
    }
    /* The outcome first, then what it did to the breaker. */
    ev.u.outcome = o;
    core_emit(d, &ev, now_ms);
    announce(d, k, now_ms);
    admit_wake_later(d, k); /* its breaker may have changed */
    /* Venue feedback reaches every client of the limiter at once. */
    if (failed && is_rate_limited(o->cls))
        venue_pause(d, k, o->venue_wait_ms, now_ms);
    if (o->has_remaining) {
        struct key *t = admit_venue_sync(d, k, now_ms, o->remaining);
        if (t) {
            struct event vs = {.type = EV_VENUE_RESYNC, .key = t};
            vs.u.venue_resync.remaining = o->remaining;
            core_emit(d, &vs, now_ms);
        }
    }
    if (bo != BREAKER_IGNORE && o->source == SRC_REPORT)
        retry_budget_call(&d->budget, now_ms);
}

int core_report(struct resild *d, struct caller *c, struct outcome *o,
                const char *name, size_t n, uint64_t now_ms,
                struct report_result *rr)
{
    struct permit *p = NULL;
    struct key *k;
    int rc, failed = o->kind == OUT_FAILURE || o->kind == OUT_UNKNOWN;

    memset(rr, 0, sizeof(*rr));
    if (o->permit) {
        p = permits_find(&d->permits, o->permit);
        if (p && !permits_owned(p, &c->permits)) {
            /* Another connection's permit: only its holder may end it.
             * Nothing changes, nothing is revealed. */
            d->m.reports_foreign++;
            rr->foreign = 1;
            rr->key = keys_find(&d->keys, name, n);
            rr->stale = 1;
            return 0;
        }
        if (p && (p->key->len != n || memcmp(p->key->name, name, n) != 0))
            return RD_EINVAL;
    }
    if (p)
        k = p->key;
    else if ((rc = core_key(d, name, n, now_ms, &k)) < 0)
        return rc;
    o->key = k;
    o->source = SRC_REPORT;
    o->uid = (uint32_t)c->uid;
    outcome(d, o, p, now_ms);
    rr->key = k;
    rr->stale = o->stale;
    rr->severity = o->severity;
    rr->transient = o->transient;
    if (failed) {
        /* Never advise a retry sooner than the key could pass: the breaker
         * and a venue pause both count. */
        uint64_t wait = breaker_retry_after(&k->br, now_ms);
        uint64_t lw = k->policy->has_limiter || !k->nanc
                          ? limiter_paused_ms(&k->lim, now_ms)
                          : limiter_paused_ms(&k->up->lim, now_ms);
        if (lw > wait)
            wait = lw;
        retry_advise(&k->policy->retry, &d->budget, now_ms, o->attempt,
                     o->transient, o->kind == OUT_UNKNOWN && !o->idempotent,
                     wait, breaker_is_open(&k->br), &k->retry_prev_ms, &k->rng,
                     &rr->retry);
        rr->advised = 1;
    }
    return 0;
}

/* A permit ended without a report: source says how.  An expired permit or
 * a lost probe is a failure of class "timeout" (the policy's record/ignore
 * lists still apply); a disconnect or a cancel counts nothing. */
static void end_permit(struct resild *d, struct permit *p,
                       enum outcome_source source, uint64_t now_ms)
{
    int fails = source == SRC_PERMIT_EXPIRED || source == SRC_PROBE_LOST;
    struct outcome o = {
        .key = p->key,
        .permit = p->id,
        .kind = fails ? OUT_FAILURE : OUT_IGNORE,
        .source = source,
        .cls = fails ? "timeout" : "",
        .severity = -1,
        .transient = -1,
        .latency_ms = -1,
        .attempt = 1,
        .idempotent = 1,
    };

    outcome(d, &o, p, now_ms);
}

int core_cancel(struct resild *d, struct caller *c, uint32_t msgid,
                uint64_t now_ms)
{
    struct permit *p;

    if (admit_cancel(d, c, msgid) == ADMIT_CANCEL_PARKED)
        return ADMIT_CANCEL_PARKED;
    p = permits_find_msgid(&d->permits, &c->permits, msgid);
    if (!p)
        return 0;
    /* Granted, but the client stopped waiting for the answer: give it
     * back as if reported "ignore" -- never an expiry that counts. */
    end_permit(d, p, SRC_CANCEL, now_ms);
    return ADMIT_CANCEL_RELEASED;
}

void core_caller_gone(struct resild *d, struct caller *c, uint64_t now_ms)
{
    /* A caller that held nothing frees nothing anyone waits for: waking
     * would walk every parked request of every key, per close, and make a
     * connect/close flood cost O(parked) per connection. */
    if (!c->parked && !c->permits)
        return;
    admit_caller_gone(d, c);
    while (c->permits) {
        struct permit *p = c->permits;
        if (p->probe)
            d->m.probes_lost++;
        end_permit(d, p, p->probe ? SRC_PROBE_LOST : SRC_DISCONNECT, now_ms);
    }
    /* The keys whose permits ended; the server re-arms its timer. */
    core_wake(d, now_ms);
    d->wake_rearm = 1;
}

/* --- operators --- */

/* An operator's force, here or (remote) on another daemon. */
static void force(struct resild *d, struct key *k, enum breaker_force f,
                  const char *reason, size_t rn, uint64_t ttl_ms, uint32_t uid,
                  int remote, uint64_t now_ms)
{
    static const char *const names[] = {"auto", "open", "closed", "disabled"};
    struct event ev = {.type = EV_FORCE, .key = k};

    core_advance(d, k, now_ms); /* what time did first is its own news */
    if (remote)
        breaker_remote_force(&k->br, now_ms, f, ttl_ms);
    else
        breaker_force(&k->br, &k->policy->breaker, now_ms, f, ttl_ms);
    d->wake_dirty = 1; /* parked requests see the new state */
    keys_set_reason(k, reason, rn); /* only the reason can be lost */
    ev.u.force.state = names[f];
    ev.u.force.reason = key_force_reason(k);
    ev.u.force.ttl_ms = ttl_ms;
    ev.u.force.uid = uid;
    core_emit(d, &ev, now_ms);
    announce(d, k, now_ms);
}

void core_force(struct resild *d, struct key *k, enum breaker_force f,
                const char *reason, size_t rn, uint64_t ttl_ms, uint32_t uid,
                uint64_t now_ms)
{
    force(d, k, f, reason, rn, ttl_ms, uid, 0, now_ms);
}

static void reset(struct resild *d, struct key *k, uint32_t uid, int remote,
                  uint64_t now_ms)
{
    struct event ev = {.type = EV_RESET, .key = k};

    core_advance(d, k, now_ms);
    ev.u.reset.uid = uid;
    ev.u.reset.paused_ms_cleared = limiter_paused_ms(&k->lim, now_ms);
    if (remote)
        breaker_remote_reset(&k->br, now_ms);
    else
        breaker_reset(&k->br, now_ms);
    limiter_unpause(&k->lim); /* a mistaken 429 must not block for hours */
    d->wake_dirty = 1;
    keys_set_reason(k, NULL, 0);
    core_emit(d, &ev, now_ms);
    announce(d, k, now_ms);
}

void core_reset(struct resild *d, struct key *k, uint32_t uid, uint64_t now_ms)
{
    reset(d, k, uid, 0, now_ms);
}

/* --- shared mode: changes made on another daemon ------------------------ */

/* The longest prefix of s[0..n) that is at most max bytes and does not end
 * inside a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

void core_remote(struct resild *d, struct key *k,
                 const struct remote_change *rc, uint64_t now_ms)
{
    size_t rn;
    uint64_t opens = k->br.opens;

    /* What time changed first is local news: announced without origin. */
    core_advance(d, k, now_ms);
    d->emit_origin = rc->origin;
    switch (rc->kind) {
    case REMOTE_OPEN:
        breaker_remote_open(&k->br, &k->policy->breaker, now_ms,
                            rc->open_left_ms, rc->open_for_ms);
        announce(d, k, now_ms);
        break;
    case REMOTE_CLOSE:
        breaker_remote_close(&k->br, now_ms);
        announce(d, k, now_ms);
        break;
    case REMOTE_FORCE:
        if ((unsigned)rc->force > BREAKER_FORCE_DISABLED)
            break; /* not a force: redis.c checks, this guards names[] */
        rn = rc->reason ? utf8_cut(rc->reason, rc->reason_len, KEY_REASON_MAX)
                        : 0;
        force(d, k, rc->force, rc->reason, rn, rc->force_left_ms, 0, 1, now_ms);
        break;
    case REMOTE_RESET:
        reset(d, k, 0, 1, now_ms);
        break;
    case REMOTE_PAUSE:
        venue_pause(d, k, rc->paused_ms, now_ms);
        break;
    }
    d->emit_origin = NULL;
    d->tot.opens += k->br.opens - opens; /* a remote open counts one */
    d->wake_dirty = 1; /* parked requests see the new state */
}

/* --- global limiters' leases (admit.c does the work) --- */

void core_lease_mode(struct resild *d, int on, uint64_t now_ms)
{
    lease_clock(d, now_ms);
    admit_lease_mode(d, on);
}

struct key *core_lease_wanted(struct resild *d, uint64_t *want)
{
    return admit_lease_wanted(d, want);
}

void core_lease_grant(struct resild *d, struct key *k, uint64_t n,
                      uint64_t retry_ms, uint64_t now_ms)
{
    lease_clock(d, now_ms);
    admit_lease_grant(d, k, n, retry_ms, now_ms);
}

void core_lease_failed(struct resild *d, struct key *k, uint64_t retry_ms,
                       uint64_t now_ms)
{
    lease_clock(d, now_ms);
    admit_lease_failed(d, k, retry_ms, now_ms);
}

struct key *core_lease_expired(struct resild *d, uint64_t now_ms,
                               uint64_t *unused)
{
    lease_clock(d, now_ms);
    return admit_lease_expired(d, now_ms, unused);
}

uint64_t core_lease_tokens(const struct key *k)
{
    return admit_lease_tokens(k);
}

uint64_t core_lease_size(const struct resild *d, const struct key *k)
{
    return admit_lease_size(d, k);
}

/* --- time --- */

void core_advance_due(struct resild *d, uint64_t now_ms)
{
    struct key *k;

    /* What time alone changes is announced when it happens, not when
     * somebody next looks: open time over, force expiry, a heartbeat lost.
     * Only the keys that are due: the heap's top, O(log n) each. */
    while (d->ndue && (k = d->due[0])->due_ms <= now_ms) {
        core_advance(d, k, now_ms);
        if (core_beat_lost(d, k, now_ms))
            d->wake_dirty = 1;
        admit_wake_later(d, k); /* its parked see the new state */
        schedule(d, k);
        if (k->due_pos && k->due_ms <= now_ms)
            due_set(d, k, now_ms + 1); /* no progress: the next tick */
    }
}

void core_tick(struct resild *d, uint64_t now_ms)
{
    struct permit *p;

    lease_clock(d, now_ms);
    /* Earliest expiry first: O(log n) per expired permit, nothing for the
     * rest. */
    while ((p = permits_expired(&d->permits, now_ms))) {
        d->m.permits_expired++;
        end_permit(d, p, SRC_PERMIT_EXPIRED, now_ms);
    }
    core_advance_due(d, now_ms);
    /* Parked requests: all of them only when one's time came or something
     * they all wait for changed (core_wake); nothing when none can move. */
    core_wake(d, now_ms);
    d->wake_rearm = 1; /* the caller (cron) re-arms the wake timer */
}

/* --- rebinding to a new configuration --- */

/* Every key, in no particular order: the hash chains. */
#define FOR_EACH_KEY(d, i, k)                                                  \
    for ((i) = 0; (i) < (d)->keys.nbuckets; (i)++)                             \
        for ((k) = (d)->keys.buckets[(i)]; (k); (k) = (k)->next)

/* k, prepared, needs a lease record under pol and has none. */
static int needs_lease(const struct key *k, const struct policy *pol)
{
    return k->admit_ready && !k->lease && admit_policy_leased(pol);
}

int core_rebind(struct resild *d, struct config *cfg, uint64_t now_ms)
{
    struct config old;
    struct key *k;
    size_t i, nwin = 0, w = 0, nlease = 0, ln = 0;
    void **wins = NULL;
    struct lease **leases = NULL;
    int rc = 0;

    /* A reload keeps the running redis section (main.c): derive the
     * shares and the scopes from it, not from the file's. */
    config_derive(cfg);
    /* Phase 1: every allocation, before anything changes. */
    FOR_EACH_KEY(d, i, k)
    {
        const struct policy *pol = config_match(cfg, k->name);
        if (!breaker_same_window(&pol->breaker, &k->policy->breaker))
            nwin++;
        nlease += needs_lease(k, pol);
    }
    if ((nwin && !(wins = calloc(nwin, sizeof(*wins)))) ||
        (nlease && !(leases = calloc(nlease, sizeof(*leases))))) {
        free(wins);
        return RD_ENOMEM;
    }
    FOR_EACH_KEY(d, i, k)
    {
        const struct policy *pol = config_match(cfg, k->name);
        if (needs_lease(k, pol) && !(leases[ln++] = admit_lease_new())) {
            rc = RD_ENOMEM;
            break;
        }
        if (breaker_same_window(&pol->breaker, &k->policy->breaker))
            continue;
        if (!(wins[w++] = calloc(1, breaker_window_bytes(&pol->breaker)))) {
            rc = RD_ENOMEM;
            break;
        }
    }
    if (rc < 0) {
        while (w-- > 0)
            free(wins[w]);
        while (ln-- > 0)
            free(leases[ln]);
        free(wins);
        free(leases);
        return rc;
    }

    /* Phase 2: nothing can fail from here. */
    old = d->cfg;
    d->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    d->critical = NULL;
    w = ln = 0;
    FOR_EACH_KEY(d, i, k)
    {
        const struct policy *was = k->policy;
        const struct policy *pol = config_match(&d->cfg, k->name);

        policy_count(d, k, (uint64_t)-1); /* counted again under pol */
        breaker_advance(&k->br, &was->breaker, now_ms);
        if (!breaker_same_window(&pol->breaker, &was->breaker)) {
            if (k->window_own)
                free(k->br.bits); /* either member of the union */
            k->window_own = 1;
            breaker_rewindow(&k->br, &pol->breaker, wins[w++]);
        }
        if (needs_lease(k, pol))
            admit_lease_attach(d, k, leases[ln++]);
        if (k->admit_ready && pol->has_limiter) {
            /* Keep what the bucket holds, never more than the new burst:
             * a reload must not hand out a fresh burst of exchange
             * weight.  Each conf is the one k->lim runs under: a global
             * limiter's is its local share. */
            const struct limiter_conf *oc = admit_policy_lim_conf(was);
            const struct limiter_conf *nc = admit_policy_lim_conf(pol);
            uint64_t avail = was->has_limiter
                                 ? limiter_available(&k->lim, oc, now_ms)
                                 : nc->burst;
            uint64_t paused = limiter_paused_ms(&k->lim, now_ms);
            limiter_init(&k->lim, nc, now_ms);
            limiter_sync(&k->lim, nc, now_ms,
                         avail < nc->burst ? avail : nc->burst);
            if (paused)
                limiter_pause(&k->lim, nc, now_ms, paused);
        }
        k->policy = pol;
        policy_count(d, k, 1);
        admit_lease_rebound(d, k);
        if (k->admit_ready)
            k->admit_ready = ADMIT_REBOUND; /* ancestors on the next use */
        k->nanc = 0;
        k->up = NULL;
        if (k->core_ready && pol->critical) {
            k->crit_next = d->critical;
            d->critical = k;
        }
        announce(d, k, now_ms);
    }
    free(wins);
    free(leases);
    /* Ancestor limiters now, so parked requests are decided under every
     * limit; one that cannot be resolved (max_keys) is denied until it
     * can (see decide in admit.c). */
    FOR_EACH_KEY(d, i, k)
    if (k->admit_ready == ADMIT_REBOUND)
        (void)admit_prepare(d, k, now_ms);
    d->wake_dirty = 1; /* limits changed under the parked requests */
    config_free(&old);
    return 0;
}

/* --- export and import (snapshot.c) ------------------------------------
 * One block, kept together: state in remaining-time form, out and in.
 * Nothing here announces anything; an import keeps the health list right.
 */

/* The conf k->lim runs under (a global limiter's local share; a stand-in
 * without a limiter).  Leased tokens are not exported: they are Redis's,
 * and a restarted daemon leases afresh. */
static const struct limiter_conf *export_lim_conf(const struct key *k)
{
    return admit_lim_conf(k);
}

/* admit.c's crit_conf. */
static struct limiter_conf export_crit_conf(const struct key *k)
{
    uint64_t rate = k->policy->critical_probe_per_s;
    struct limiter_conf c = {rate ? rate : 1, 1000, rate ? rate : 1, 1000};

    return c;
}

struct key *core_key_next(const struct resild *d, const struct key *prev,
                          size_t *bucket)
{
    size_t i = *bucket;

    if (prev) {
        if (prev->next)
            return prev->next;
        i++;
    }
    for (; i < d->keys.nbuckets; i++)
        if (d->keys.buckets[i]) {
            *bucket = i;
            return d->keys.buckets[i];
        }
    *bucket = i;
    return NULL;
}

void core_export_key(const struct key *k, uint64_t now_ms,
                     struct key_export *ex)
{
    struct limiter_conf cc = export_crit_conf(k);
    size_t rn = strlen(key_force_reason(k));

    ex->len = k->len;
    memcpy(ex->name, k->name, k->len);
    ex->name[k->len] = '\0';
    ex->reason_len = (uint8_t)rn;
    memcpy(ex->reason, key_force_reason(k), rn + 1);
    breaker_export(&k->br, now_ms, &ex->br, ex->win_calls, ex->win_buckets);
    memset(&ex->lim, 0, sizeof(ex->lim));
    memset(&ex->crit, 0, sizeof(ex->crit));
    memset(&ex->hb, 0, sizeof(ex->hb));
    ex->crit.per_ms = 1;
    ex->crit.level = UINT64_MAX; /* full: no critical probes taken */
    if (k->admit_ready) { /* limiters set up (admit_prepare) */
        limiter_export(&k->lim, export_lim_conf(k), now_ms, &ex->lim);
        if (k->x && k->x->crit_ready)
            limiter_export(&k->x->crit_lim, &cc, now_ms, &ex->crit);
    } else {
        ex->lim.per_ms = 1;
        ex->lim.level = UINT64_MAX; /* full */
    }
    if (k->core_ready) /* heartbeat started (core_key) */
        heartbeat_export(&k->hb, now_ms, &ex->hb);
    ex->retry_prev_ms = k->retry_prev_ms;
}

int core_export_check(const struct key_export *ex)
{
    if (!keys_valid(ex->name, ex->len) || ex->reason_len > KEY_REASON_MAX ||
        memchr(ex->reason, '\0', ex->reason_len) || ex->hb.lost > 1 ||
        breaker_export_check(&ex->br, ex->win_calls, ex->win_buckets) < 0)
        return RD_EINVAL;
    return 0;
}

int core_import_key(struct resild *d, const struct key_export *ex,
                    uint64_t now_ms)
{
    struct limiter_conf cc;
    struct key *k;
    int rc;

    if ((rc = core_key(d, ex->name, ex->len, now_ms, &k)) < 0)
        return rc;
    cc = export_crit_conf(k);
    d->tot.opens -= k->br.opens; /* the lifetime figure is the file's */
    breaker_import(&k->br, &k->policy->breaker, now_ms, &ex->br, ex->win_calls,
                   ex->win_buckets);
    d->tot.opens += k->br.opens;
    limiter_import(&k->lim, export_lim_conf(k), now_ms, &ex->lim);
    if (k->policy->critical_probe_per_s && keys_ext(k)) {
        /* The probes the file says were taken (a failed block: full) */
        limiter_import(&k->x->crit_lim, &cc, now_ms, &ex->crit);
        k->x->crit_ready = 1;
    }
    heartbeat_import(&k->hb, now_ms, &ex->hb);
    keys_set_reason(k, ex->reason, ex->reason_len);
    k->retry_prev_ms = ex->retry_prev_ms;
    track_health(d, k);
    d->wake_dirty = 1;
    return 0;
}

void core_export_budget(const struct resild *d, uint64_t now_ms,
                        struct budget_export *ex)
{
    uint64_t cur = now_ms / 1000 + 1; /* retry.c's bucket ids */
    size_t i;

    ex->n = 0;
    for (i = 0; i < RETRY_BUDGET_S; i++) {
        uint64_t sec = d->budget.sec[i];
        if (!sec || sec > cur || cur - sec >= RETRY_BUDGET_S)
            continue;
        ex->b[ex->n].age_s = (uint32_t)(cur - sec);
        ex->b[ex->n].calls = d->budget.calls[i];
        ex->b[ex->n].retries = d->budget.retries[i];
        ex->n++;
    }
}

void core_import_budget(struct resild *d, uint64_t now_ms,
                        const struct budget_export *ex)
{
    uint64_t cur = now_ms / 1000 + 1;
    uint32_t i;

    retry_budget_init(&d->budget);
    for (i = 0; i < ex->n && i < RETRY_BUDGET_S; i++) {
        uint64_t sec;
        size_t j;
        if (ex->b[i].age_s >= RETRY_BUDGET_S || ex->b[i].age_s >= cur)
            continue;
        sec = cur - ex->b[i].age_s;
        j = (size_t)(sec % RETRY_BUDGET_S);
        d->budget.sec[j] = sec;
        d->budget.calls[j] = ex->b[i].calls;
        d->budget.retries[j] = ex->b[i].retries;
    }
}

void core_set_durable(struct resild *d, const struct durable_ops *ops)
{
    d->durable = ops;
}
