/*
 * test_shared.c - shared mode in the core (SPEC §7), under a fake clock
 * through the public API (no Redis, no sockets): another daemon's breaker
 * changes applied by core_remote (each kind, onto each state, announced
 * once with cause "remote" and the origin, on the deadline heap so the
 * tick ends an open period on time, parked requests looking again), and
 * global limiters fed by leases (core_lease_*): denied and wanted once
 * without tokens, admitted up to the tokens granted, wanted again below
 * half, the local share while leasing is off, holds that hand unused
 * tokens back exactly once, ancestors, the critical reserve, and a
 * randomized check that nothing is admitted beyond what was granted.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admit.h"
#include "core.h"
#include "evlog.h"
#include "methods.h"
#include "tap.h"

#define MAXEV 4096

/* What the sink saw, copied (pointers in events are borrowed). */
struct rec {
    enum event_type type;
    char key[KEY_MAX + 1];
    char origin[64]; /* "" = local */
    enum breaker_visible from, to;
    enum breaker_transition_cause cause;
    uint64_t n; /* paused_ms, ttl_ms */
    uint32_t uid;
    char text[KEY_REASON_MAX + 1]; /* force state, reported_on */
    char reason[KEY_REASON_MAX + 1];
};

static struct rec ev[MAXEV];
static int nev;

static void sink(void *ctx, const struct event *e)
{
    struct rec *r = &ev[nev < MAXEV ? nev++ : MAXEV - 1];

    (void)ctx;
    memset(r, 0, sizeof(*r));
    r->type = e->type;
    if (e->key)
        snprintf(r->key, sizeof(r->key), "%s", e->key->name);
    if (e->origin)
        snprintf(r->origin, sizeof(r->origin), "%s", e->origin);
    switch (e->type) {
    case EV_TRANSITION:
        r->from = e->u.transition.from;
        r->to = e->u.transition.to;
        r->cause = e->u.transition.cause;
        break;
    case EV_VENUE_PAUSE:
        r->n = e->u.venue_pause.paused_ms;
        snprintf(r->text, sizeof(r->text), "%s",
                 e->u.venue_pause.reported_on->name);
        break;
    case EV_FORCE:
        r->n = e->u.force.ttl_ms;
        r->uid = e->u.force.uid;
        snprintf(r->text, sizeof(r->text), "%s", e->u.force.state);
        snprintf(r->reason, sizeof(r->reason), "%s", e->u.force.reason);
        break;
    case EV_RESET:
        r->uid = e->u.reset.uid;
        r->n = e->u.reset.paused_ms_cleared;
        break;
    default:
        break;
    }
}

/* The first event of type t since index from, or NULL. */
static const struct rec *first(int from, enum event_type t)
{
    int i;

    for (i = from; i < nev; i++)
        if (ev[i].type == t)
            return &ev[i];
    return NULL;
}

static int count(int from, enum event_type t)
{
    int i, n = 0;

    for (i = from; i < nev; i++)
        n += ev[i].type == t;
    return n;
}

/* A caller that records the answers to its parked requests. */
struct fake {
    struct caller c; /* first: the answer callback finds us */
    int n;
    struct {
        uint32_t msgid;
        int allow, err;
        enum admit_reason reason;
        uint64_t permit;
    } a[64];
};

static void answer(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err)
{
    struct fake *f = (struct fake *)c;

    (void)k;
    if (f->n == 64)
        return;
    f->a[f->n].msgid = msgid;
    f->a[f->n].err = err;
    f->a[f->n].allow = res ? res->allow : 0;
    f->a[f->n].reason = res ? res->reason : ADMIT_OK;
    f->a[f->n].permit = res ? res->permit : 0;
    f->n++;
}

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof(*f));
    f->c.answer = answer;
}

static char dir[] = "/tmp/resild-test-shared.XXXXXX";

static void start(struct resild *d, const char *json)
{
    char err[512];
    struct config cfg;

    if (config_load_text(json, &cfg, err, sizeof(err)) < 0) {
        DIAG("config: %s", err);
        exit(1);
    }
    if (core_init(d, &cfg, 0, 42) < 0)
        exit(1);
    core_add_sink(d, sink, NULL);
    nev = 0;
}

static struct key *key(struct resild *d, const char *name, uint64_t now)
{
    struct key *k = NULL;

    if (core_key(d, name, strlen(name), now, &k) < 0)
        return NULL;
    return k;
}

/* acquire cost; *res filled.  wait_ms > 0 may park. */
static struct admit_result acq(struct resild *d, struct fake *f, struct key *k,
                               uint64_t cost, int critical, uint64_t wait_ms,
                               uint32_t msgid, uint64_t now)
{
    struct admit_result res;
    const struct key *culprit;

    memset(&res, 0, sizeof(res));
    if (core_acquire(d, &f->c, k, cost, critical, wait_ms, msgid, now, &res,
                     &culprit) < 0)
        res.err = -1;
    return res;
}

static void report(struct resild *d, struct fake *f, struct key *k,
                   uint64_t permit, enum outcome_kind kind, const char *cls,
                   uint64_t now)
{
    struct outcome o = {.permit = permit,
                        .kind = kind,
                        .cls = cls,
                        .severity = -1,
                        .transient = -1,
                        .latency_ms = 5,
                        .attempt = 1,
                        .idempotent = 1};
    struct report_result rr;

    core_report(d, &f->c, &o, k->name, k->len, now, &rr);
}

static void remote(struct resild *d, struct key *k, enum remote_kind kind,
                   uint64_t left_ms, uint64_t now)
{
    struct remote_change rc = {.kind = kind, .origin = "hostB"};

    rc.open_left_ms = left_ms;
    rc.open_for_ms = left_ms;
    rc.paused_ms = left_ms;
    core_remote(d, k, &rc, now);
}

/* The transition since from is exactly one, from -> to, cause, origin. */
static int one_transition(int from, enum breaker_visible f,
                          enum breaker_visible t,
                          enum breaker_transition_cause cause,
                          const char *origin)
{
    const struct rec *r = first(from, EV_TRANSITION);

    return count(from, EV_TRANSITION) == 1 && r->from == f && r->to == t &&
           r->cause == cause && !strcmp(r->origin, origin);
}

static const char *remote_cfg =
    "{\"redis\": {\"url\": \"tcp://127.0.0.1:6379\", \"mode\": \"shared\"},"
    " \"policies\": {\"*\": {\"scope\": \"global\","
    "  \"breaker\": {\"failure_threshold\": 2, \"open_ms\": 1000,"
    "  \"success_threshold\": 1, \"failure_rate_threshold\": 0,"
    "  \"half_open_max_calls\": 2}},"
    " \"venue\": {\"limiter\": {\"rate\": 1, \"per\": \"second\"}},"
    " \"lim\": {\"limiter\": {\"rate\": 1, \"per\": \"second\"},"
    "  \"breaker\": {\"open_ms\": 500}}}}";

/* A remote open onto a closed breaker: announced once with cause remote
 * and the origin; on the health list and the deadline heap; denied with
 * the exact time left; half-open by the tick at exactly that end, as
 * local news. */
static void test_remote_open_closed(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    struct admit_result r;
    int mark;

    fake_init(&f);
    start(&d, remote_cfg);
    k = key(&d, "x", 0);
    remote(&d, k, REMOTE_OPEN, 700, 100);
    OK(one_transition(0, BREAKER_VIS_CLOSED, BREAKER_VIS_OPEN,
                      BREAKER_TC_REMOTE, "hostB"),
       "closed -> open, once, cause remote, origin hostB");
    OK(!strcmp(breaker_transition_cause_name(BREAKER_TC_REMOTE), "remote") &&
           !strcmp(breaker_cause_name(k->br.cause), "remote"),
       "named \"remote\" (transition cause and opened_by)");
    IS(k->br.opens, 1, "counted as an open");
    OK(d.nunwell == 1 && k->unwell, "on the health list");
    OK(k->due_pos && k->due_ms == 800, "due on the heap at 100 + 700");
    IS(core_wake_due(&d), 1, "parked requests will look again");
    r = acq(&d, &f, k, 1, 0, 0, 1, 300);
    OK(!r.allow && r.reason == ADMIT_CIRCUIT_OPEN && r.retry_after_ms == 500,
       "acquire at 300: circuit_open, retry_after 500");
    mark = nev;
    core_tick(&d, 799);
    IS(count(mark, EV_TRANSITION), 0, "tick at 799: still open");
    core_tick(&d, 800);
    OK(one_transition(mark, BREAKER_VIS_OPEN, BREAKER_VIS_HALF_OPEN,
                      BREAKER_TC_OPEN_TIME_OVER, ""),
       "tick at 800: half_open (open_time_over), no origin: local news");
    OK(k->br.since_ms == 800, "half-open since exactly 800");
    core_free(&d);
}

/* Onto half-open: probes in flight become stale; open again until now +
 * left.  Onto open: the later end wins, nothing announced. */
static void test_remote_open_half_open_and_open(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    struct admit_result r;
    int mark;

    fake_init(&f);
    start(&d, remote_cfg);
    k = key(&d, "x", 0);
    report(&d, &f, k, 0, OUT_FAILURE, "", 1);
    report(&d, &f, k, 0, OUT_FAILURE, "", 2); /* open until 1002 */
    core_tick(&d, 1002);
    OK(k->br.state == BREAKER_HALF_OPEN, "locally half-open at 1002");
    r = acq(&d, &f, k, 1, 0, 0, 1, 1010);
    OK(r.allow && r.permit, "a probe is admitted");
    mark = nev;
    remote(&d, k, REMOTE_OPEN, 300, 1020);
    OK(one_transition(mark, BREAKER_VIS_HALF_OPEN, BREAKER_VIS_OPEN,
                      BREAKER_TC_REMOTE, "hostB"),
       "half_open -> open (remote, hostB)");
    OK(k->br.open_until_ms == 1320 && k->br.probes_in_flight == 0,
       "open until 1320, probes forgotten");
    mark = nev;
    report(&d, &f, k, r.permit, OUT_SUCCESS, "", 1030);
    IS(count(mark, EV_TRANSITION), 0, "the old probe's report is stale");

    mark = nev;
    remote(&d, k, REMOTE_OPEN, 100, 1100);
    OK(count(mark, EV_TRANSITION) == 0 && k->br.open_until_ms == 1320,
       "already open longer: nothing changes, nothing announced");
    remote(&d, k, REMOTE_OPEN, 900, 1200);
    OK(count(mark, EV_TRANSITION) == 0 && k->br.open_until_ms == 2100 &&
           k->due_ms == 2100,
       "open shorter here: the remote end wins, unannounced, heap moved");
    core_tick(&d, 1320);
    OK(k->br.state == BREAKER_OPEN, "still open at the old end (1320)");
    core_tick(&d, 2100);
    OK(one_transition(mark, BREAKER_VIS_OPEN, BREAKER_VIS_HALF_OPEN,
                      BREAKER_TC_OPEN_TIME_OVER, ""),
       "half-open by the tick at the remote end, 2100");
    IS(k->br.opens, 2, "two opens: the local trip and the remote one");
    core_free(&d);
}

/* Under a force the state below moves unseen; the force's end reveals
 * it, and the tick still ends the open period on time. */
static void test_remote_open_forced(void)
{
    struct resild d;
    struct key *k;
    int mark;

    start(&d, remote_cfg);
    k = key(&d, "x", 0);
    core_force(&d, k, BREAKER_FORCE_CLOSED, "drill", 5, 500, 1000, 10);
    mark = nev;
    remote(&d, k, REMOTE_OPEN, 1000, 100);
    OK(count(mark, EV_TRANSITION) == 0 && k->br.state == BREAKER_OPEN &&
           k->br.force == BREAKER_FORCE_CLOSED && k->br.since_ms == 10,
       "forced closed: open below, unannounced, since kept");
    mark = nev;
    core_tick(&d, 510);
    OK(one_transition(mark, BREAKER_VIS_FORCED_CLOSED, BREAKER_VIS_OPEN,
                      BREAKER_TC_FORCE_EXPIRED, ""),
       "the force's TTL ends at 510: forced_closed -> open (local news)");
    mark = nev;
    core_tick(&d, 1100);
    OK(one_transition(mark, BREAKER_VIS_OPEN, BREAKER_VIS_HALF_OPEN,
                      BREAKER_TC_OPEN_TIME_OVER, ""),
       "and half-open at 100 + 1000");
    mark = nev;
    remote(&d, k, REMOTE_CLOSE, 0, 1200);
    OK(one_transition(mark, BREAKER_VIS_HALF_OPEN, BREAKER_VIS_CLOSED,
                      BREAKER_TC_REMOTE, "hostB"),
       "remote close: half_open -> closed (remote)");
    OK(d.nunwell == 0 && !k->due_pos, "off the health list and the heap");
    mark = nev;
    remote(&d, k, REMOTE_CLOSE, 0, 1300);
    IS(count(mark, EV_TRANSITION), 0, "close of a closed one: nothing");
    core_free(&d);
}

/* A remote close of an open breaker; what time did first comes first,
 * without the origin. */
static void test_remote_close_open(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    int mark;

    fake_init(&f);
    start(&d, remote_cfg);
    k = key(&d, "x", 0);
    report(&d, &f, k, 0, OUT_FAILURE, "", 1);
    report(&d, &f, k, 0, OUT_FAILURE, "", 2);
    mark = nev;
    remote(&d, k, REMOTE_CLOSE, 0, 500);
    OK(one_transition(mark, BREAKER_VIS_OPEN, BREAKER_VIS_CLOSED,
                      BREAKER_TC_REMOTE, "hostB"),
       "open -> closed (remote, hostB)");
    OK(k->br.reopens == 0 && k->br.cause == BREAKER_CAUSE_NONE && !k->due_pos &&
           !k->unwell,
       "backoff step reset; off the heap and the health list");
    report(&d, &f, k, 0, OUT_FAILURE, "", 600);
    report(&d, &f, k, 0, OUT_FAILURE, "", 601); /* open until 1601 */
    mark = nev;
    remote(&d, k, REMOTE_CLOSE, 0, 2000);
    OK(count(mark, EV_TRANSITION) == 2 && ev[mark].type == EV_TRANSITION &&
           ev[mark].to == BREAKER_VIS_HALF_OPEN && !ev[mark].origin[0] &&
           ev[mark + 1].to == BREAKER_VIS_CLOSED &&
           ev[mark + 1].cause == BREAKER_TC_REMOTE &&
           !strcmp(ev[mark + 1].origin, "hostB"),
       "open time over first (local), then closed (remote, hostB)");
    core_free(&d);
}

/* Force and reset from another daemon: the operator events and the
 * transitions carry the origin, uid 0, cause remote; a TTL ends here. */
static void test_remote_force_reset(void)
{
    struct resild d;
    struct key *k, *v;
    struct remote_change rc = {.kind = REMOTE_FORCE, .origin = "hostC"};
    char longr[300];
    const struct rec *r;
    int mark;

    start(&d, remote_cfg);
    k = key(&d, "x", 0);
    rc.force = BREAKER_FORCE_OPEN;
    rc.force_left_ms = 400;
    rc.reason = "exchange maintenance";
    rc.reason_len = 8; /* "exchange" */
    core_remote(&d, k, &rc, 100);
    r = first(0, EV_FORCE);
    OK(r && !strcmp(r->origin, "hostC") && r->uid == 0 &&
           !strcmp(r->text, "open") && r->n == 400 &&
           !strcmp(r->reason, "exchange"),
       "EV_FORCE: origin hostC, uid 0, open, ttl 400, reason as given");
    OK(one_transition(0, BREAKER_VIS_CLOSED, BREAKER_VIS_FORCED_OPEN,
                      BREAKER_TC_REMOTE, "hostC"),
       "closed -> forced_open (remote, hostC)");
    OK(k->due_pos && k->due_ms == 500, "the TTL's end is on the heap");
    mark = nev;
    core_tick(&d, 500);
    OK(one_transition(mark, BREAKER_VIS_FORCED_OPEN, BREAKER_VIS_CLOSED,
                      BREAKER_TC_FORCE_EXPIRED, ""),
       "the TTL ends here at 500 (force_expired, local)");
    /* A reason over KEY_REASON_MAX is cut on a character boundary. */
    memset(longr, 'a', sizeof(longr));
    longr[KEY_REASON_MAX - 1] = (char)0xc3; /* "é" straddling the cut */
    longr[KEY_REASON_MAX] = (char)0xa9;
    rc.force = BREAKER_FORCE_DISABLED;
    rc.force_left_ms = 0;
    rc.reason = longr;
    rc.reason_len = sizeof(longr);
    core_remote(&d, k, &rc, 600);
    IS(strlen(key_force_reason(k)), KEY_REASON_MAX - 1,
       "a long reason is cut before a split character");
    rc.force = (enum breaker_force)9;
    mark = nev;
    core_remote(&d, k, &rc, 610);
    OK(count(mark, EV_FORCE) == 0 && k->br.force == BREAKER_FORCE_DISABLED,
       "a force out of range changes nothing");

    v = key(&d, "venue", 0);
    {
        struct fake f;
        fake_init(&f);
        report(&d, &f, v, 0, OUT_FAILURE, "rate_limited", 700);
    }
    mark = nev;
    rc.kind = REMOTE_RESET;
    core_remote(&d, v, &rc, 800);
    r = first(mark, EV_RESET);
    OK(r && !strcmp(r->origin, "hostC") && r->uid == 0 && r->n == 900,
       "EV_RESET: origin hostC, uid 0, the venue pause's 900 ms cleared");
    OK(limiter_paused_ms(&v->lim, 800) == 0, "and the pause is gone");
    mark = nev;
    core_remote(&d, k, &rc, 900);
    OK(one_transition(mark, BREAKER_VIS_DISABLED, BREAKER_VIS_CLOSED,
                      BREAKER_TC_REMOTE, "hostC"),
       "reset: disabled -> closed (remote, hostC)");
    IS(d.nunwell, 0, "nothing left unwell");
    core_free(&d);
}

/* A remote 429 pauses the nearest limiter like a local one: acquires
 * are denied with the pause as their wait. */
static void test_remote_pause(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    struct admit_result r;
    const struct rec *p;

    fake_init(&f);
    start(&d, remote_cfg);
    k = key(&d, "venue.orders", 0);
    remote(&d, k, REMOTE_PAUSE, 2500, 100);
    p = first(0, EV_VENUE_PAUSE);
    OK(p && !strcmp(p->key, "venue") && !strcmp(p->text, "venue.orders") &&
           p->n == 2500 && !strcmp(p->origin, "hostB"),
       "EV_VENUE_PAUSE on venue, reported on venue.orders, 2500 ms, "
       "origin hostB");
    IS(d.m.venue_pauses, 1, "counted as a venue pause");
    r = acq(&d, &f, k, 1, 0, 0, 1, 600);
    OK(!r.allow && r.reason == ADMIT_RATE_LIMITED && r.retry_after_ms == 2000,
       "acquire denied: rate_limited, retry_after 2000");
    r = acq(&d, &f, k, 1, 1, 0, 2, 700);
    OK(!r.allow, "critical requests too: the venue said stop");
    r = acq(&d, &f, k, 1, 0, 0, 3, 2600);
    OK(r.allow, "allowed once the pause is over");
    core_free(&d);
}

/* Parked requests look again after a remote change. */
static void test_remote_parked(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    struct admit_result r;

    fake_init(&f);
    start(&d, remote_cfg);
    k = key(&d, "lim", 0);
    r = acq(&d, &f, k, 1, 0, 0, 1, 10);
    OK(r.allow, "lim: its one token");
    r = acq(&d, &f, k, 1, 0, 5000, 2, 20);
    OK(r.parked, "the next one parks (rate_limited)");
    core_wake(&d, 30);
    remote(&d, k, REMOTE_OPEN, 5000, 40);
    IS(core_wake_due(&d), 1, "a remote open wakes the parked");
    core_wake(&d, 40);
    OK(f.n == 1 && f.a[0].msgid == 2 && !f.a[0].allow &&
           f.a[0].reason == ADMIT_CIRCUIT_OPEN,
       "the parked request is answered circuit_open at once");
    IS(k->q_len, 0, "nothing parked any more");

    /* Half-open, the limiter empty: one parks as a would-be probe; a
     * remote close and the refill serve it as a plain call. */
    remote(&d, k, REMOTE_CLOSE, 0, 50);
    r = acq(&d, &f, k, 1, 0, 0, 3, 1100);
    OK(r.allow, "closed again: a token at 1100");
    report(&d, &f, k, 0, OUT_FAILURE, "", 1101);
    report(&d, &f, k, 0, OUT_FAILURE, "", 1102); /* open until 1602 */
    core_tick(&d, 1602);
    OK(k->br.state == BREAKER_HALF_OPEN, "half-open at 1602");
    r = acq(&d, &f, k, 1, 0, 0, 4, 2100);
    OK(r.allow && r.permit, "a probe takes the token at 2100");
    r = acq(&d, &f, k, 1, 0, 5000, 5, 2110);
    OK(r.parked && k->br.probes_in_flight == 1,
       "the next waits for the limiter, holding no probe slot");
    remote(&d, k, REMOTE_CLOSE, 0, 3100);
    IS(core_wake_due(&d), 1, "the remote close wakes it");
    core_wake(&d, 3100);
    OK(f.n == 2 && f.a[1].msgid == 5 && f.a[1].allow &&
           k->br.state == BREAKER_CLOSED && k->br.probes_in_flight == 0,
       "served at the refill after the close, as a plain call");
    core_free(&d);
}

/* --- global limiters' leases -------------------------------------------- */

static const char *lease_cfg =
    "{\"redis\": {\"url\": \"tcp://127.0.0.1:6379\", \"mode\": \"shared\","
    "  \"expected_hosts\": 2, \"lease_ms\": 100},"
    " \"policies\": {"
    "  \"g\": {\"scope\": \"global\", \"reserve\": 2,"
    "   \"limiter\": {\"rate\": 100, \"per\": \"second\", \"burst\": 40}},"
    "  \"s\": {\"scope\": \"global\","
    "   \"limiter\": {\"rate\": 100, \"per\": \"second\", \"burst\": 40}},"
    "  \"ex\": {\"scope\": \"global\","
    "   \"limiter\": {\"rate\": 1000, \"per\": \"second\", \"burst\": 100}},"
    "  \"ex.fut\": {\"scope\": \"global\","
    "   \"limiter\": {\"rate\": 10, \"per\": \"second\", \"burst\": 10}},"
    "  \"ex.orders\": {\"limiter\": {\"rate\": 5, \"per\": \"second\"}},"
    "  \"loc\": {\"limiter\": {\"rate\": 100, \"per\": \"second\"}}}}";

/* No tokens: denied with the global limit's time for the cost, wanted
 * once; a grant admits up to the tokens; below half it is wanted again;
 * the critical reserve; parked requests served by a grant. */
static void test_lease_basics(void)
{
    struct resild d;
    struct fake f;
    struct key *k, *w;
    struct admit_result r;
    uint64_t want = 0;
    int i, n;

    fake_init(&f);
    start(&d, lease_cfg);
    k = key(&d, "g", 0);
    IS(core_lease_size(&d, k), 5,
       "lease size: ceil(100/s x 100 ms / 2 hosts) = 5");
    IS(core_lease_size(&d, key(&d, "loc", 0)), 0, "a local limiter: 0");
    IS(core_lease_size(&d, key(&d, "other", 0)), 0, "no limiter: 0");
    core_lease_mode(&d, 1, 0);
    OK(core_lease_wanted(&d, &want) == NULL, "nothing wanted yet");
    /* Cold (no answer from Redis for g yet): the share decides, so the
     * first request is not denied for a lease one round trip away. */
    r = acq(&d, &f, k, 1, 0, 0, 100, 5);
    OK(r.allow && core_lease_tokens(k) == 0,
       "cold: the first request passes on the share");
    report(&d, &f, k, r.permit, OUT_SUCCESS, "", 5);
    w = core_lease_wanted(&d, &want);
    OK(w == k && want == 5, "and g asks for a lease at once");
    core_lease_grant(&d, k, 0, 0, 6); /* Redis: none free */
    r = acq(&d, &f, k, 3, 0, 0, 1, 10);
    OK(!r.allow && r.reason == ADMIT_RATE_LIMITED && r.retry_after_ms == 30,
       "no tokens: rate_limited, retry_after 30 (3 x 1000 / 100)");
    r = acq(&d, &f, k, 1, 0, 0, 2, 11);
    OK(!r.allow && r.retry_after_ms == 10, "cost 1: 10 ms");
    w = core_lease_wanted(&d, &want);
    OK(w == k && want == 5, "wanted: g, 5 (max(size 5, 3 + reserve 2))");
    OK(core_lease_wanted(&d, &want) == NULL, "once");
    r = acq(&d, &f, k, 1, 0, 0, 3, 12);
    OK(!r.allow && core_lease_wanted(&d, &want) == NULL,
       "still short while asked: not wanted again");
    core_wake(&d, 12);
    core_lease_grant(&d, k, 5, 0, 20);
    IS(core_lease_tokens(k), 5, "granted 5");
    IS(core_wake_due(&d), 1, "a grant wakes parked requests");
    for (n = 0, i = 0; i < 10; i++)
        n += acq(&d, &f, k, 1, 0, 0, (uint32_t)(10 + i), 21).allow;
    IS(n, 3, "normal requests: 3 (each must leave the reserve of 2)");
    IS(core_lease_tokens(k), 2, "2 left: the reserve");
    w = core_lease_wanted(&d, &want);
    OK(w == k && want == 3, "below half (2 < 5/2): wanted for 3 more");
    r = acq(&d, &f, k, 2, 1, 0, 30, 22);
    OK(r.allow && core_lease_tokens(k) == 0, "a critical request takes the "
                                             "reserve");
    r = acq(&d, &f, k, 1, 1, 0, 31, 23);
    OK(!r.allow && r.reason == ADMIT_RATE_LIMITED, "then none is left");
    r = acq(&d, &f, k, 1, 0, 2000, 32, 24);
    OK(r.parked, "a normal request parks for a grant");
    core_wake(&d, 24);
    core_lease_grant(&d, k, 3, 0, 30);
    IS(core_wake_due(&d), 1, "the grant wakes it");
    core_wake(&d, 30);
    OK(f.n == 1 && f.a[0].msgid == 32 && f.a[0].allow,
       "the parked request is served by the grant");
    IS(core_lease_tokens(k), 2, "3 granted, 1 taken");
    OK(core_lease_wanted(&d, &want) == k && want == 3,
       "after a grant a key short again is wanted again (its next need)");
    core_free(&d);
}

/* A hold ends CORE_LEASE_HOLD_MS after the latest grant: unused tokens
 * leave exactly once, and serve nothing after the end. */
static void test_lease_hold(void)
{
    struct resild d;
    struct fake f;
    struct key *k, *s;
    struct admit_result r;
    uint64_t unused = 99, want;

    fake_init(&f);
    start(&d, lease_cfg);
    k = key(&d, "g", 0);
    s = key(&d, "s", 0);
    core_lease_mode(&d, 1, 0);
    core_lease_grant(&d, k, 5, 0, 100);
    core_lease_grant(&d, s, 4, 0, 200);
    OK(core_lease_expired(&d, 1099, &unused) == NULL, "nothing at 1099");
    core_lease_grant(&d, k, 3, 0, 300); /* renews k's hold to 1300 */
    IS(core_lease_tokens(k), 8, "8 held");
    OK(core_lease_expired(&d, 1100, &unused) == NULL,
       "k's renewed hold has not ended at 1100");
    OK(core_lease_expired(&d, 1200, &unused) == s && unused == 4,
       "s first (held FIFO by hold end): 4 unused");
    OK(core_lease_expired(&d, 1200, &unused) == NULL, "and s only once");
    r = acq(&d, &f, k, 1, 0, 0, 1, 1299);
    OK(r.allow && core_lease_tokens(k) == 7, "k's tokens serve until 1299");
    /* That use came with under half the hold left: it renewed the hold
     * (a key in use is never left short by its hold's end). */
    OK(core_lease_expired(&d, 1300, &unused) == NULL,
       "in use at 1299: the hold was renewed to 2299");
    r = acq(&d, &f, k, 1, 0, 0, 2, 2299);
    OK(r.allow && core_lease_tokens(k) == 7,
       "not from the tokens at 2299: the renewed hold ended (no use since); "
       "the share decides until Redis answers");
    OK(core_lease_expired(&d, 2299, &unused) == k && unused == 7,
       "k at 2299: 7 unused");
    OK(core_lease_expired(&d, 5000, &unused) == NULL,
       "nothing is handed back twice");
    IS(core_lease_tokens(k), 0, "k holds nothing");
    /* k took tokens during its hold: it wants a fresh lease at once (the
     * short request at 1300 had wanted it already: still once). */
    OK(core_lease_wanted(&d, &want) == k &&
           core_lease_wanted(&d, &want) == NULL,
       "k wanted again, once");
    OK(core_lease_expired(&d, 6000, &unused) == NULL, "held FIFO empty");
    core_lease_grant(&d, s, 0, 0, 6000);
    OK(core_lease_expired(&d, 9000, &unused) == NULL,
       "a grant of 0 holds nothing");

    /* A hold that ended but was not collected yet: its tokens serve
     * nothing, the key asks as if they were gone, a grant renews them. */
    core_lease_grant(&d, s, 4, 0, 10000);
    r = acq(&d, &f, s, 1, 0, 0, 3, 11500);
    OK(r.allow && core_lease_tokens(s) == 4,
       "at 11500 the 4 held since 10000 serve nothing (the share does)");
    OK(core_lease_wanted(&d, &want) == s && want == 5,
       "s is asked for a whole lease (5), not 5 - 4");
    core_lease_grant(&d, s, 5, 0, 11600);
    IS(core_lease_tokens(s), 9, "9 held, all until 12600");
    r = acq(&d, &f, s, 1, 0, 0, 4, 11601);
    OK(r.allow && core_lease_expired(&d, 12599, &unused) == NULL,
       "they serve again; nothing handed back before 12600");
    OK(core_lease_expired(&d, 12600, &unused) == s && unused == 8,
       "8 handed back at 12600, once");
    core_free(&d);
}

/* A key idle through a whole hold is cold again: its next request, seconds
 * later, decides on the share and asks for a lease, instead of being denied
 * for a lease a round trip away (a key used every few seconds was denied
 * every time).  A key in use is not: its tokens decide. */
static void test_lease_idle(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    struct admit_result r;
    uint64_t unused = 0, want = 0;

    fake_init(&f);
    start(&d, lease_cfg);
    k = key(&d, "s", 0);
    core_lease_mode(&d, 1, 0);
    r = acq(&d, &f, k, 1, 0, 0, 1, 5);
    OK(r.allow, "cold: the first request passes on the share");
    report(&d, &f, k, r.permit, OUT_SUCCESS, "", 5);
    OK(core_lease_wanted(&d, &want) == k, "and asks for a lease");
    core_lease_grant(&d, k, 5, 0, 10);
    r = acq(&d, &f, k, 1, 0, 0, 2, 20);
    OK(r.allow && core_lease_tokens(k) == 4, "then the lease serves");
    report(&d, &f, k, r.permit, OUT_SUCCESS, "", 20);
    OK(core_lease_expired(&d, 1010, &unused) == k && unused == 4,
       "the hold ends at 1010: 4 unused");
    OK(core_lease_wanted(&d, &want) == k, "used during it: a fresh lease");
    core_lease_grant(&d, k, 5, 0, 1020);
    OK(core_lease_expired(&d, 2020, &unused) == k && unused == 5,
       "idle through the next hold: 5 handed back at 2020");
    OK(core_lease_wanted(&d, &want) == NULL, "and nothing asked for");
    r = acq(&d, &f, k, 1, 0, 0, 3, 5000);
    OK(r.allow, "seconds later, the next request passes on the share "
                "(allow %d, reason %d, retry %llu)",
       r.allow, (int)r.reason, (unsigned long long)r.retry_after_ms);
    report(&d, &f, k, r.permit, OUT_SUCCESS, "", 5000);
    OK(core_lease_wanted(&d, &want) == k && want == 5, "and asks for 5");
    core_lease_grant(&d, k, 0, 100, 5010);
    r = acq(&d, &f, k, 1, 0, 0, 4, 5011);
    OK(!r.allow && r.reason == ADMIT_RATE_LIMITED,
       "Redis answered none free: denied (no longer cold)");
    /* Between a hold's end and the timer collecting it (up to its period
     * later), the tokens serve nothing and the share decides. */
    core_lease_grant(&d, k, 5, 0, 6000);
    r = acq(&d, &f, k, 1, 0, 0, 5, 7010);
    OK(r.allow && core_lease_tokens(k) == 5,
       "hold ended at 7000, not yet collected: the share decides, the 5 "
       "stay to be handed back");
    core_free(&d);
}

/* Not before: after a grant of 0 or a failure the key is offered again
 * only after retry_ms; too-early keys go to the back, a bounded few per
 * call. */
static void test_lease_not_before(void)
{
    struct resild d;
    struct fake f;
    struct key *k, *ks[12], *got;
    uint64_t want;
    char name[16];
    int i, seen, calls;

    fake_init(&f);
    start(&d, lease_cfg);
    k = key(&d, "g", 0);
    core_lease_mode(&d, 1, 0);
    acq(&d, &f, k, 1, 0, 0, 1, 10);
    OK(core_lease_wanted(&d, &want) == k, "wanted");
    core_lease_grant(&d, k, 0, 50, 20);
    OK(core_lease_wanted(&d, &want) == NULL,
       "granted 0, retry 50: not offered at 20");
    core_tick(&d, 69);
    OK(core_lease_wanted(&d, &want) == NULL, "nor at 69");
    core_tick(&d, 70);
    OK(core_lease_wanted(&d, &want) == k && want == 5,
       "offered again at 70, still for 5 (queued again: still short)");
    core_lease_failed(&d, k, 0, 80);
    OK(core_lease_wanted(&d, &want) == NULL, "failed, retry 0: not at 80");
    core_tick(&d, 81);
    OK(core_lease_wanted(&d, &want) == k, "offered at 81 (at least 1 ms)");
    core_lease_grant(&d, k, 5, 0, 90);
    OK(core_lease_wanted(&d, &want) == NULL, "granted: nothing wanted");
    core_free(&d);
    fake_init(&f); /* its permit list pointed into the daemon just freed */

    /* Twelve keys, eleven deferred ahead of one ready: each call passes
     * over at most 8, so the ready one comes within a few calls. */
    start(&d, "{\"redis\": {\"url\": \"tcp://h:1\", \"mode\": \"shared\"},"
              " \"policies\": {\"*\": {\"scope\": \"global\","
              " \"limiter\": {\"rate\": 10, \"per\": \"second\"}}}}");
    core_lease_mode(&d, 1, 0);
    for (i = 0; i < 12; i++) {
        snprintf(name, sizeof(name), "k%d", i);
        ks[i] = key(&d, name, 0);
        acq(&d, &f, ks[i], 1, 0, 0, (uint32_t)(100 + i), 1);
    }
    for (i = 0; i < 12; i++)
        if (core_lease_wanted(&d, &want) != ks[i])
            break;
    IS(i, 12, "all twelve wanted, in order");
    for (i = 0; i < 11; i++)
        core_lease_failed(&d, ks[i], 1000, 2);
    core_lease_failed(&d, ks[11], 5, 2);
    core_tick(&d, 10);
    for (seen = 0, calls = 0; calls < 4 && !seen; calls++)
        while ((got = core_lease_wanted(&d, &want)))
            seen += got == ks[11] ? 1 : 100;
    OK(seen == 1 && calls <= 2,
       "the ready key comes out within 2 calls, alone (%d calls)", calls);
    core_free(&d);
}

/* Leasing off: tokens still held serve first, then the local share, which
 * admits exactly burst/hosts + rate/hosts over simulated minutes. */
static void test_lease_off_share(void)
{
    struct resild d;
    struct fake f;
    struct key *k;
    struct admit_result r;
    uint64_t t, admitted = 0, msgid = 1, want;
    int ok = 1, i;

    fake_init(&f);
    start(&d, lease_cfg);
    k = key(&d, "s", 0); /* share: 100 per 2000 ms, burst 20 */
    IS(admit_available(k, 0), 20, "status: the share's 20 while off");
    core_lease_mode(&d, 1, 0);
    IS(admit_available(k, 0), 0, "0 while on (the share does not serve)");
    core_lease_grant(&d, k, 5, 0, 0);
    IS(admit_available(k, 0), 5, "the 5 leased");
    core_lease_mode(&d, 0, 0);
    IS(admit_available(k, 0), 25, "off: 5 held + the share's 20");
    OK(core_lease_wanted(&d, &want) == NULL, "nothing is asked while off");
    for (i = 0; i < 5; i++)
        r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, 0);
    /* Leased use debits the share too (admit.c own_take), so the share
     * holds what this host has not been using: 20 - 5. */
    OK(r.allow && core_lease_tokens(k) == 0 &&
           limiter_available(&k->lim, &k->policy->limiter_share, 0) == 15,
       "held tokens serve first; the share is debited by their use");
    IS(d.m.share_spells, 0, "no spell on the share yet: all leased");
    r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, 0);
    r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, 0);
    IS(d.m.share_spells, 1, "two takes from the share: one spell");
    core_lease_mode(&d, 1, 0);
    core_lease_grant(&d, k, 2, 0, 0);
    r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, 0);
    IS(d.m.share_spells, 1, "a leased take ends the spell");
    core_lease_mode(&d, 0, 0);
    r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, 0); /* the held one */
    r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, 0);
    IS(d.m.share_spells, 2, "the next take from the share: a second");
    /* The share's 15: 3 taken by the spells, 2 debited by leased takes. */
    /* Five simulated minutes, as many as pass every ms. */
    for (t = 0; t <= 300000; t++) {
        for (i = 0; i < 100; i++) { /* 100: a runaway bucket, not a hang */
            r = acq(&d, &f, k, 1, 0, 0, (uint32_t)msgid++, t);
            if (!r.allow)
                break;
            admitted++;
            report(&d, &f, k, r.permit, OUT_SUCCESS, "", t);
        }
        if (t % 60000 == 0 && admitted > 20 + t / 20)
            ok = 0;
    }
    OK(ok, "never above 20 + 100 x t / 2000 at each minute");
    IS(admitted, 10 + 300000 / 20,
       "exactly 10 + 15000 in 300 s: the rate over 2 hosts (the share "
       "starts 10 down: 7 leased takes debit it, 3 took from it)");
    core_free(&d);
}

/* A global key's own limiter runs under its share: exported and imported
 * in whole tokens under that conf (another host count converts). */
static void test_lease_export(void)
{
    struct resild a, b;
    struct fake f;
    struct key *k;
    struct key_export *ex = malloc(sizeof(*ex));
    int i;

    fake_init(&f);
    start(&a, lease_cfg);
    k = key(&a, "s", 0);
    for (i = 0; i < 5; i++)
        acq(&a, &f, k, 1, 0, 0, (uint32_t)(i + 1), 0);
    IS(admit_available(k, 0), 15, "the share (burst 20) after 5: 15");
    core_export_key(k, 0, ex);
    OK(ex->lim.per_ms == 2000, "exported in the share's unit (2000 ms)");
    start(&b, lease_cfg);
    IS(core_import_key(&b, ex, 5000), 0, "imported into the same config");
    k = keys_find(&b.keys, "s", 1);
    IS(admit_available(k, 5000), 15, "15 tokens again, not 15 x 2 hosts");
    core_free(&b);
    start(&b, "{\"redis\": {\"url\": \"tcp://h:1\", \"mode\": \"shared\","
              " \"expected_hosts\": 4}, \"policies\": {\"s\": {\"scope\":"
              " \"global\", \"limiter\": {\"rate\": 100, \"per\": \"second\","
              " \"burst\": 40}}}}");
    IS(core_import_key(&b, ex, 0), 0, "imported where 4 hosts share it");
    k = keys_find(&b.keys, "s", 1);
    IS(admit_available(k, 0), 10, "cut to that share's burst, 10");
    core_free(&b);
    core_free(&a);
    free(ex);
}

/* Ancestors that are global are leased in the chain, all or nothing. */
static void test_lease_ancestors(void)
{
    struct resild d;
    struct fake f;
    struct key *o, *fu, *ex, *w1, *w2;
    struct admit_result r;
    uint64_t want, wa, wb;
    int i, n;

    fake_init(&f);
    start(&d, lease_cfg);
    o = key(&d, "ex.orders", 0); /* own limiter local, 5/s */
    fu = key(&d, "ex.fut", 0);   /* own limiter global too */
    ex = key(&d, "ex", 0);
    IS(core_lease_size(&d, ex), 50, "ex's lease size: 1000 x 100 / 1000 / 2");
    IS(core_lease_size(&d, fu), 1, "ex.fut's: ceil(0.5) = 1");
    core_lease_mode(&d, 1, 0);
    /* Redis answered for both once (none free): no longer cold. */
    core_lease_grant(&d, ex, 0, 0, 0);
    core_lease_grant(&d, fu, 0, 0, 0);
    r = acq(&d, &f, o, 1, 0, 0, 1, 10);
    OK(!r.allow && r.reason == ADMIT_RATE_LIMITED && r.retry_after_ms == 1,
       "ex.orders: its ancestor ex has no tokens (1 ms at 1000/s)");
    OK(core_lease_wanted(&d, &want) == ex && want == 50 &&
           core_lease_wanted(&d, &wa) == fu && wa == 1 &&
           core_lease_wanted(&d, &want) == NULL,
       "ex is wanted, for 50, and ex.fut (answered none), for 1; "
       "ex.orders (local) is not");
    core_lease_grant(&d, ex, 50, 0, 20);
    for (n = 0, i = 0; i < 8; i++)
        n += acq(&d, &f, o, 1, 0, 0, (uint32_t)(10 + i), 21).allow;
    OK(n == 5 && core_lease_tokens(ex) == 45,
       "ex.orders: 5 (its own burst); ex gave exactly those 5");
    r = acq(&d, &f, fu, 1, 0, 0, 30, 22);
    OK(!r.allow && r.retry_after_ms == 100 && core_lease_tokens(ex) == 45,
       "ex.fut short of its own tokens: denied (100 ms at 10/s), "
       "nothing taken from ex");
    w1 = core_lease_wanted(&d, &wa);
    w2 = core_lease_wanted(&d, &wb);
    OK(w1 == NULL && w2 == NULL, "ex.fut is asked for already: not twice");
    core_lease_grant(&d, fu, 1, 0, 23);
    r = acq(&d, &f, fu, 1, 0, 0, 31, 24);
    OK(r.allow && core_lease_tokens(fu) == 0 && core_lease_tokens(ex) == 44,
       "both leases pay for ex.fut");
    core_free(&d);
}

/* Used while off, asked for as soon as leasing is on; a rebind that
 * makes a key global or local leaves nothing dangling. */
static void test_lease_mode_and_rebind(void)
{
    struct resild d;
    struct fake f;
    struct key *k, *l;
    struct config cfg;
    char path[256], err[512];
    uint64_t want, unused;
    FILE *fp;

    fake_init(&f);
    start(&d, lease_cfg);
    k = key(&d, "g", 0);
    l = key(&d, "loc", 0);
    OK(acq(&d, &f, k, 1, 0, 0, 1, 10).allow, "g under its share while off");
    core_lease_mode(&d, 1, 20);
    OK(core_lease_wanted(&d, &want) == k && want == 5 &&
           core_lease_wanted(&d, &want) == NULL,
       "leasing on: g, used while off, is asked for at once");
    core_lease_grant(&d, k, 5, 0, 30);
    acq(&d, &f, k, 3, 0, 0, 2, 31); /* 2 left: below half, wanted */

    /* Reload: g local, loc global. */
    snprintf(path, sizeof(path), "%s/c.json", dir);
    fp = fopen(path, "w");
    fputs("{\"redis\": {\"url\": \"tcp://127.0.0.1:6379\", \"mode\": "
          "\"shared\", \"expected_hosts\": 2, \"lease_ms\": 100},"
          " \"policies\": {"
          "  \"g\": {\"limiter\": {\"rate\": 100, \"per\": \"second\","
          "   \"burst\": 40}},"
          "  \"loc\": {\"scope\": \"global\","
          "   \"limiter\": {\"rate\": 100, \"per\": \"second\"}}}}",
          fp);
    fclose(fp);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        DIAG("%s", err);
        return;
    }
    OK(l->lease == NULL, "loc has no lease record while local");
    IS(core_rebind(&d, &cfg, 40), 0, "rebind");
    OK(l->lease != NULL && core_lease_size(&d, l) == 5,
       "loc got its lease record; size 5");
    OK(core_lease_wanted(&d, &want) == NULL,
       "g, local now, left the wanted FIFO");
    IS(core_lease_size(&d, k), 0, "g is not leased any more");
    OK(acq(&d, &f, k, 1, 0, 0, 3, 50).allow,
       "g decides on its own limiter again");
    core_lease_grant(&d, l, 0, 0, 40); /* Redis answered: none free */
    OK(!acq(&d, &f, l, 1, 0, 0, 4, 50).allow &&
           core_lease_wanted(&d, &want) == l,
       "loc decides on leases: short, wanted");
    OK(core_lease_expired(&d, 1030, &unused) == k && unused == 2,
       "g's held tokens are handed back at its hold's end, once");
    OK(core_lease_expired(&d, 1030, &unused) == NULL, "nothing else held");
    core_free(&d);
}

/*
 * Random model check: keys with global limiters in chains, leasing on,
 * random acquires (costs, critical, some parked), grants of random size
 * to what was asked, failures, expiries, the tick and wakes.  For every
 * global key the cost admitted never exceeds the tokens granted, tokens
 * are conserved (granted = admitted + handed back + held), and a key is
 * never asked for while a request for it is in flight.
 */
static struct {
    uint32_t msgid;
    struct key *k;
    uint64_t cost;
} pend[4096];
static int npend;

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(uint64_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state % n;
}

static void test_lease_model(void)
{
    enum { NK = 4, OPS = 40000 };
    static const char *const names[NK] = {"r", "r.a", "r.b", "q"};
    struct resild d;
    struct fake f;
    struct key *k[NK], *w;
    uint64_t granted[NK] = {0}, admitted[NK] = {0}, back[NK] = {0};
    uint64_t asked[NK] = {0}, t = 0, want, unused, before[NK];
    uint64_t leased[NK] = {0};
    int inflight[NK] = {0}, i, j, op, answered = 0;
    int ok_bound = 1, ok_conserve = 1, ok_once = 1, nallow = 0, ngrant = 0;
    uint32_t msgid = 1;

    fake_init(&f);
    start(&d, "{\"redis\": {\"url\": \"tcp://h:1\", \"mode\": \"shared\","
              "  \"expected_hosts\": 3, \"lease_ms\": 200},"
              " \"max_permits\": 100000, \"policies\": {"
              "  \"*\": {\"breaker\": {\"failure_threshold\": 0,"
              "   \"failure_rate_threshold\": 0}},"
              "  \"r\": {\"scope\": \"global\", \"reserve\": 1, \"limiter\":"
              "   {\"rate\": 50, \"per\": \"second\", \"burst\": 20}},"
              "  \"r.a\": {\"scope\": \"global\", \"limiter\":"
              "   {\"rate\": 30, \"per\": \"second\", \"burst\": 10}},"
              "  \"r.b\": {\"bulkhead\": {\"max_concurrent\": 1000}},"
              "  \"q\": {\"scope\": \"global\", \"reserve\": 2, \"limiter\":"
              "   {\"rate\": 7, \"per\": \"second\", \"burst\": 9}}}}");
    for (i = 0; i < NK; i++)
        k[i] = key(&d, names[i], 0);
    core_lease_mode(&d, 1, 0);
    /* Redis answered once for each (none free), so no key is cold: the
     * model checks the leased path alone (the cold share has its test). */
    for (i = 0; i < NK; i++)
        core_lease_grant(&d, k[i], 0, 0, 0);
    for (op = 0; op < OPS; op++) {
        int which = (int)rnd(100);
        for (i = 0; i < NK; i++)
            before[i] = core_lease_tokens(k[i]);
        if (which < 45) { /* acquire */
            struct admit_result r;
            int ki = (int)rnd(NK), crit = rnd(10) == 0;
            uint64_t cost = 1 + rnd(3), wait = rnd(5) == 0 ? 50 : 0;
            r = acq(&d, &f, k[ki], cost, crit, wait, msgid, t);
            if (r.parked && npend < 4096) {
                pend[npend].msgid = msgid;
                pend[npend].k = k[ki];
                pend[npend].cost = cost;
                npend++;
            }
            if (r.allow) {
                nallow++;
                admitted[ki] += cost;
                if (ki == 1 || ki == 2)
                    admitted[0] += cost; /* r.a and r.b under r */
                report(&d, &f, k[ki], r.permit, OUT_SUCCESS, "", t);
            }
            msgid++;
        } else if (which < 65) { /* redis.c asks */
            while ((w = core_lease_wanted(&d, &want))) {
                for (i = 0; i < NK && k[i] != w; i++)
                    ;
                if (i == NK || inflight[i] || want == 0)
                    ok_once = 0;
                if (i < NK) {
                    inflight[i] = 1;
                    asked[i] = want;
                }
            }
        } else if (which < 85) { /* an answer */
            i = (int)rnd(NK);
            if (inflight[i]) {
                inflight[i] = 0;
                if (rnd(6) == 0) {
                    core_lease_failed(&d, k[i], rnd(30), t);
                } else {
                    uint64_t n = rnd(asked[i] + 1);
                    granted[i] += n;
                    ngrant += n > 0;
                    core_lease_grant(&d, k[i], n, rnd(30), t);
                }
            }
        } else if (which < 92) { /* holds that ended */
            while ((w = core_lease_expired(&d, t, &unused))) {
                for (i = 0; i < NK && k[i] != w; i++)
                    ;
                if (i < NK)
                    back[i] += unused;
            }
        } else if (which < 96) { /* time passes */
            t += 1 + rnd(rnd(8) == 0 ? 900 : 20);
            core_tick(&d, t);
        } else { /* parked requests */
            core_wake(&d, t);
        }
        /* Parked requests answered (by a wake or by the tick). */
        {
            for (j = 0; j < f.n; j++) {
                int p;
                answered++;
                for (p = 0; p < npend && pend[p].msgid != f.a[j].msgid; p++)
                    ;
                if (p == npend || !f.a[j].allow)
                    continue;
                for (i = 0; i < NK && k[i] != pend[p].k; i++)
                    ;
                nallow++;
                admitted[i] += pend[p].cost;
                if (i == 1 || i == 2)
                    admitted[0] += pend[p].cost;
                report(&d, &f, pend[p].k, f.a[j].permit, OUT_SUCCESS, "", t);
            }
            f.n = 0;
        }
        /* Tokens that left a key in an acquire, a tick or a wake served
         * requests; the rest of what was admitted came from the share (a
         * key idle through a hold is cold until Redis answers again). */
        if (which < 45 || which >= 92)
            for (i = 0; i < NK; i++)
                if (core_lease_tokens(k[i]) < before[i])
                    leased[i] += before[i] - core_lease_tokens(k[i]);
        for (i = 0; i < NK; i++) {
            if (i == 2)
                continue; /* r.b: no limiter of its own */
            if (leased[i] > admitted[i] || leased[i] > granted[i])
                ok_bound = 0;
            if (granted[i] != leased[i] + back[i] + core_lease_tokens(k[i]))
                ok_conserve = 0;
        }
    }
    OK(ok_bound,
       "%d operations: leased tokens taken never above granted nor "
       "admitted, per key and per ancestor",
       OPS);
    OK(ok_conserve, "granted = taken + handed back + held, always");
    OK(ok_once, "never asked for twice, never for 0");
    OK(nallow > 500 && ngrant > 500 && answered > 50,
       "and it did something: %d admitted, %d grants, %d parked answers",
       nallow, ngrant, answered);
    core_free(&d);
}

/* --- origin on the wire and in the log ---------------------------------- */

struct sub {
    struct rpc_client rc;
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void sub_flush(struct rpc_client *rc)
{
    (void)rc;
}

/* Send one request {method, params map of one string array} to rc. */
static void dispatch_topics(struct resild *d, struct sub *s, uint64_t now)
{
    msgpack_sbuffer req;
    msgpack_packer rp;
    msgpack_zone zone;
    struct proto_msg m;
    const char *why;

    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&rp, &req, msgpack_sbuffer_write);
    proto_pack_request_head(&rp, 1, "subscribe");
    msgpack_pack_array(&rp, 1);
    msgpack_pack_map(&rp, 1);
    proto_pack_cstr(&rp, "topics");
    msgpack_pack_array(&rp, 3);
    proto_pack_cstr(&rp, "state");
    proto_pack_cstr(&rp, "operator");
    proto_pack_cstr(&rp, "alert");
    msgpack_zone_init(&zone, 1024);
    if (proto_decode(req.data, req.size, &zone, &m, &why) == 0)
        methods_dispatch(d, &s->rc, &m, &s->pk, now);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&req);
}

/* The origin of each event notification in s's output, in order, as
 * "type:origin " (no origin field: "type:- "). */
static void sub_origins(struct sub *s, char *out, size_t cap)
{
    msgpack_unpacked u;
    size_t off = 0, n = 0;

    out[0] = '\0';
    msgpack_unpacked_init(&u);
    while (msgpack_unpack_next(&u, s->sb.data, s->sb.size, &off) ==
           MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *a = &u.data, *e, *t, *o;
        if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != 3)
            continue; /* the subscribe answer */
        e = &a->via.array.ptr[2].via.array.ptr[0];
        t = proto_map_get(e, "type");
        o = proto_map_get(e, "origin");
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%.*s:%.*s ",
                              (int)t->via.str.size, t->via.str.ptr,
                              o ? (int)o->via.str.size : 1,
                              o ? o->via.str.ptr : "-");
    }
    msgpack_unpacked_destroy(&u);
}

static void test_origin_wire_and_log(void)
{
    struct resild d;
    struct sub s;
    struct key *k, *v;
    struct remote_change rc = {.kind = REMOTE_OPEN, .origin = "hostB"};
    char got[1024], path[300], logbuf[4096];
    int saved, fd;
    ssize_t n;

    start(&d, remote_cfg);
    methods_attach(&d);
    memset(&s, 0, sizeof(s));
    msgpack_sbuffer_init(&s.sb);
    msgpack_packer_init(&s.pk, &s.sb, msgpack_sbuffer_write);
    methods_client_init(&s.rc, &s.pk, sub_flush);
    s.rc.caller.answer = answer;
    dispatch_topics(&d, &s, 0);
    k = key(&d, "x", 0);
    v = key(&d, "venue", 0);

    /* The log sink, its stderr into a file for the length of the test. */
    snprintf(path, sizeof(path), "%s/log", dir);
    fflush(stderr);
    saved = dup(2);
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    dup2(fd, 2);
    core_add_sink(&d, evlog_sink, NULL);

    rc.open_left_ms = 1000;
    core_remote(&d, k, &rc, 10); /* transition, remote */
    core_tick(&d, 1010);         /* transition, local */
    rc.kind = REMOTE_FORCE;
    rc.force = BREAKER_FORCE_OPEN;
    rc.reason = "m";
    rc.reason_len = 1;
    core_remote(&d, k, &rc, 1100); /* force + transition */
    rc.kind = REMOTE_RESET;
    core_remote(&d, k, &rc, 1200); /* reset + transition */
    rc.kind = REMOTE_PAUSE;
    rc.paused_ms = 300;
    rc.origin = "bad\x01name";     /* a peer's bytes, escaped in the log */
    core_remote(&d, v, &rc, 1300); /* venue pause */
    core_force(&d, k, BREAKER_FORCE_CLOSED, NULL, 0, 0, 7, 1400);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    sub_origins(&s, got, sizeof(got));
    OK(!strcmp(got, "transition:hostB transition:local force:hostB "
                    "transition:hostB reset:hostB transition:hostB "
                    "venue_pause:bad\x01name force:local transition:local "),
       "subscribers: each event's origin, \"local\" for this daemon's");
    if (strcmp(got, "transition:hostB transition:local force:hostB "
                    "transition:hostB reset:hostB transition:hostB "
                    "venue_pause:bad\x01name force:local transition:local "))
        DIAG("got %s", got);
    fd = open(path, O_RDONLY);
    n = read(fd, logbuf, sizeof(logbuf) - 1);
    close(fd);
    unlink(path);
    logbuf[n > 0 ? n : 0] = '\0';
    OK(strstr(logbuf, "key x: closed -> open (remote) origin=hostB\n") &&
           strstr(logbuf, "key x: open -> half_open (open_time_over)\n") &&
           strstr(logbuf, "reason \"m\") origin=hostB\n") &&
           strstr(logbuf, "key x: reset by uid 0 origin=hostB\n") &&
           strstr(logbuf, "pausing 300 ms origin=bad\\x01name\n") &&
           strstr(logbuf, "forced closed by uid 7 (ttl 0 ms, reason \"\")\n"),
       "the log: origin=<name> on remote lines only, escaped");
    if (!strstr(logbuf, "origin=hostB"))
        DIAG("log: %s", logbuf);
    msgpack_sbuffer_destroy(&s.sb);
    methods_client_gone(&d, &s.rc, 2000);
    core_free(&d);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_remote_open_closed();
    test_remote_open_half_open_and_open();
    test_remote_open_forced();
    test_remote_close_open();
    test_remote_force_reset();
    test_remote_pause();
    test_remote_parked();
    test_origin_wire_and_log();
    test_lease_basics();
    test_lease_hold();
    test_lease_idle();
    test_lease_not_before();
    test_lease_off_share();
    test_lease_export();
    test_lease_ancestors();
    test_lease_mode_and_rebind();
    test_lease_model();
    {
        char path[300];
        snprintf(path, sizeof(path), "%s/c.json", dir);
        unlink(path);
        rmdir(dir);
    }
    return tap_done();
}
