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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
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
    char path[256], err[512];
    struct config cfg;
    FILE *f;

    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
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
    IS(strlen(k->force_reason), KEY_REASON_MAX - 1,
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
    {
        char path[300];
        snprintf(path, sizeof(path), "%s/c.json", dir);
        unlink(path);
        rmdir(dir);
    }
    return tap_done();
}
