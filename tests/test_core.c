/*
 * test_core.c - the core's event stream under a fake clock, through its
 * public API with a recording sink (no sockets): every transition is
 * emitted exactly once with its cause whatever revealed it (an acquire, a
 * report, status via core_advance, the tick, a disconnect), every outcome
 * source passes through the same entry (report, permit expiry, lost probe,
 * disconnect, cancel), operator actions and venue feedback are events,
 * heartbeats lose and restore once each, and the health list holds exactly
 * the keys that are not closed and automatic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "methods.h"
#include "tap.h"

#define MAXEV 4096

/* What the sink saw, copied (pointers in events are borrowed). */
struct rec {
    enum event_type type;
    char key[KEY_MAX + 1];
    enum breaker_visible from, to;
    enum breaker_transition_cause cause;
    enum outcome_source source;
    enum outcome_kind kind;
    int stale;
    uint64_t n; /* paused_ms, silent_ms, remaining */
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
    switch (e->type) {
    case EV_TRANSITION:
        r->from = e->u.transition.from;
        r->to = e->u.transition.to;
        r->cause = e->u.transition.cause;
        break;
    case EV_OUTCOME:
        r->source = e->u.outcome->source;
        r->kind = e->u.outcome->kind;
        r->stale = e->u.outcome->stale;
        break;
    case EV_VENUE_PAUSE:
        r->n = e->u.venue_pause.paused_ms;
        break;
    case EV_HEARTBEAT_LOST:
    case EV_HEARTBEAT_RESTORED:
        r->n = e->u.heartbeat.silent_ms;
        break;
    default:
        break;
    }
}

/* Events of type t (and key, if given) since index from. */
static int count(int from, enum event_type t, const char *key)
{
    int i, n = 0;

    for (i = from; i < nev; i++)
        if (ev[i].type == t && (!key || !strcmp(ev[i].key, key)))
            n++;
    return n;
}

/* The first transition since from, or NULL. */
static const struct rec *first_transition(int from)
{
    int i;

    for (i = from; i < nev; i++)
        if (ev[i].type == EV_TRANSITION)
            return &ev[i];
    return NULL;
}

static void answer(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err)
{
    (void)c, (void)msgid, (void)k, (void)res, (void)err;
}

static char dir[] = "/tmp/resild-test-core.XXXXXX";

static void start(struct resild *d, const char *json)
{
    char err[256];
    struct config cfg;

    if (config_load_text(json, &cfg, err, sizeof(err)) < 0) {
        DIAG("config: %s", err);
        exit(1);
    }
    core_init(d, &cfg, 0, 42);
    core_add_sink(d, sink, NULL);
    nev = 0;
}

static struct key *key(struct resild *d, const char *name, uint64_t now)
{
    struct key *k = NULL;

    core_key(d, name, strlen(name), now, &k);
    return k;
}

static uint64_t acquire(struct resild *d, struct caller *c, struct key *k,
                        uint32_t msgid, uint64_t now, int *allow)
{
    struct admit_result res;
    const struct key *culprit;

    core_acquire(d, c, k, 1, 0, 0, msgid, now, &res, &culprit);
    *allow = res.allow;
    return res.permit;
}

static void report(struct resild *d, struct caller *c, struct key *k,
                   uint64_t permit, enum outcome_kind kind, uint64_t now)
{
    struct outcome o = {.permit = permit,
                        .kind = kind,
                        .cls = "",
                        .severity = -1,
                        .transient = -1,
                        .latency_ms = 5,
                        .attempt = 1,
                        .idempotent = 1};
    struct report_result rr;

    core_report(d, c, &o, k->name, k->len, now, &rr);
}

static const char *breaker_cfg =
    "{\"policies\": {\"*\": {\"breaker\": {\"failure_threshold\": 2,"
    " \"open_ms\": 1000, \"success_threshold\": 1,"
    " \"failure_rate_threshold\": 0}, \"permit_ttl_ms\": 500},"
    " \"feed\": {\"heartbeat\": {\"timeout_ms\": 300}},"
    " \"venue\": {\"limiter\": {\"rate\": 10, \"per\": \"second\"}}}}";

/* closed -> open (failures) -> half_open revealed by status only ->
 * closed (probe success): each once, with its cause. */
static void test_cycle_via_status(void)
{
    struct resild d;
    struct caller c = {.answer = answer};
    struct key *k;
    const struct rec *t;
    int allow, mark;
    uint64_t p;

    start(&d, breaker_cfg);
    k = key(&d, "x", 0);
    report(&d, &c, k, 0, OUT_FAILURE, 10);
    IS(count(0, EV_TRANSITION, "x"), 0, "one failure: no transition");
    report(&d, &c, k, 0, OUT_FAILURE, 20);
    t = first_transition(0);
    OK(t && t->from == BREAKER_VIS_CLOSED && t->to == BREAKER_VIS_OPEN &&
           t->cause == BREAKER_TC_FAILURES,
       "two failures: closed -> open (failures)");
    IS(count(0, EV_OUTCOME, "x"), 2, "each report is one outcome event");
    mark = nev;
    core_advance(&d, k, 500);
    IS(count(mark, EV_TRANSITION, NULL), 0, "still open at 500 ms");
    core_advance(&d, k, 1020); /* what status does */
    t = first_transition(mark);
    OK(t && t->from == BREAKER_VIS_OPEN && t->to == BREAKER_VIS_HALF_OPEN &&
           t->cause == BREAKER_TC_OPEN_TIME_OVER,
       "status alone reveals open -> half_open (open_time_over)");
    mark = nev;
    core_advance(&d, k, 1030);
    core_tick(&d, 1040);
    IS(count(mark, EV_TRANSITION, NULL), 0, "and it is not announced again");
    p = acquire(&d, &c, k, 1, 1050, &allow);
    OK(allow && p, "the probe is admitted");
    mark = nev;
    report(&d, &c, k, p, OUT_SUCCESS, 1060);
    t = first_transition(mark);
    OK(t && t->from == BREAKER_VIS_HALF_OPEN && t->to == BREAKER_VIS_CLOSED &&
           t->cause == BREAKER_TC_PROBE_SUCCESS,
       "a probe success: half_open -> closed (probe_success)");
    IS(d.nunwell, 0, "closed again: off the health list");
    core_free(&d);
}

/* The tick announces open time over without anybody looking. */
static void test_tick_reveals(void)
{
    struct resild d;
    struct caller c = {.answer = answer};
    struct key *k;
    const struct rec *t;
    int mark;

    start(&d, breaker_cfg);
    k = key(&d, "y", 0);
    report(&d, &c, k, 0, OUT_FAILURE, 1);
    report(&d, &c, k, 0, OUT_FAILURE, 2);
    IS(d.nunwell, 1, "open: on the health list");
    mark = nev;
    core_tick(&d, 900);
    IS(count(mark, EV_TRANSITION, NULL), 0, "tick at 900 ms: nothing yet");
    core_tick(&d, 1100);
    t = first_transition(mark);
    OK(t && t->to == BREAKER_VIS_HALF_OPEN &&
           t->cause == BREAKER_TC_OPEN_TIME_OVER,
       "the tick announces open -> half_open when it happens");
    core_free(&d);
}

/* Forces: the operator event, the transition with cause force, and the
 * expiry with cause force_expired, revealed by the tick. */
static void test_force_events(void)
{
    struct resild d;
    struct key *k;
    const struct rec *t;
    int mark;

    start(&d, breaker_cfg);
    k = key(&d, "z", 0);
    core_force(&d, k, BREAKER_FORCE_OPEN, "maint", 5, 200, 7, 10);
    IS(count(0, EV_FORCE, "z"), 1, "force: one operator event");
    t = first_transition(0);
    OK(t && t->from == BREAKER_VIS_CLOSED && t->to == BREAKER_VIS_FORCED_OPEN &&
           t->cause == BREAKER_TC_FORCE,
       "closed -> forced_open (force)");
    OK(!strcmp(key_force_reason(k), "maint"), "the reason is kept as given");
    mark = nev;
    core_tick(&d, 250);
    t = first_transition(mark);
    OK(t && t->from == BREAKER_VIS_FORCED_OPEN && t->to == BREAKER_VIS_CLOSED &&
           t->cause == BREAKER_TC_FORCE_EXPIRED,
       "the TTL's end is announced by the tick (force_expired)");
    mark = nev;
    core_force(&d, k, BREAKER_FORCE_DISABLED, NULL, 0, 0, 7, 300);
    core_reset(&d, k, 7, 400);
    IS(count(mark, EV_RESET, "z"), 1, "reset: one operator event");
    t = first_transition(mark + 2);
    OK(t && t->from == BREAKER_VIS_DISABLED && t->to == BREAKER_VIS_CLOSED &&
           t->cause == BREAKER_TC_RESET,
       "disabled -> closed (reset)");
    IS(d.nunwell, 0, "back to closed and automatic: off the list");
    core_free(&d);
}

/* Every outcome source goes through the one entry, once. */
static void test_outcome_sources(void)
{
    struct resild d;
    struct caller a = {.answer = answer}, b = {.answer = answer};
    struct key *k;
    int allow, mark, i;
    uint64_t p;

    start(&d, "{\"policies\": {\"*\": {\"permit_ttl_ms\": 500,"
              " \"breaker\": {\"failure_threshold\": 1, \"open_ms\": 100,"
              " \"failure_rate_threshold\": 0}}}}");
    k = key(&d, "s", 0);
    /* expiry */
    acquire(&d, &a, k, 1, 0, &allow);
    mark = nev;
    core_tick(&d, 600);
    for (i = mark; i < nev && ev[i].type != EV_OUTCOME; i++)
        ;
    OK(i < nev && ev[i].source == SRC_PERMIT_EXPIRED &&
           ev[i].kind == OUT_FAILURE,
       "an expired permit is one outcome: permit_expired, failure");
    IS(count(mark, EV_OUTCOME, NULL), 1, "exactly one");
    /* a probe lost with its connection */
    core_tick(&d, 800); /* open -> half_open */
    p = acquire(&d, &b, k, 2, 800, &allow);
    OK(allow && p, "a half-open probe");
    mark = nev;
    core_caller_gone(&d, &b, 810);
    for (i = mark; i < nev && ev[i].type != EV_OUTCOME; i++)
        ;
    OK(i < nev && ev[i].source == SRC_PROBE_LOST && ev[i].kind == OUT_FAILURE,
       "a probe lost with its connection: probe_lost, failure");
    {
        const struct rec *t = first_transition(mark);
        OK(t && t->from == BREAKER_VIS_HALF_OPEN && t->to == BREAKER_VIS_OPEN &&
               t->cause == BREAKER_TC_PROBE_FAILURE,
           "and it re-opens the breaker (probe_failure)");
    }
    /* a plain disconnect and a cancel count nothing */
    core_reset(&d, k, 0, 900);
    acquire(&d, &a, k, 3, 900, &allow);
    mark = nev;
    core_caller_gone(&d, &a, 910);
    for (i = mark; i < nev && ev[i].type != EV_OUTCOME; i++)
        ;
    OK(i < nev && ev[i].source == SRC_DISCONNECT && ev[i].kind == OUT_IGNORE,
       "a closed connection's permit: disconnect, ignore");
    acquire(&d, &a, k, 4, 920, &allow);
    mark = nev;
    IS(core_cancel(&d, &a, 4, 930), ADMIT_CANCEL_RELEASED, "cancel releases");
    for (i = mark; i < nev && ev[i].type != EV_OUTCOME; i++)
        ;
    OK(i < nev && ev[i].source == SRC_CANCEL && ev[i].kind == OUT_IGNORE,
       "a cancelled grant: cancel, ignore");
    IS(count(mark, EV_TRANSITION, NULL), 0, "and no transition");
    IS(k->br.failures, 2, "only the expiry and the lost probe failed");
    core_free(&d);
}

/* Heartbeats: lost once (by the tick), restored once (by a beat); acquire
 * denied while lost. */
static void test_heartbeat(void)
{
    struct resild d;
    struct caller c = {.answer = answer};
    struct admit_result res;
    const struct key *culprit;
    struct key *k;
    int mark, allow;

    start(&d, breaker_cfg);
    k = key(&d, "feed", 0);
    core_heartbeat(&d, k, 100);
    core_tick(&d, 400);
    IS(count(0, EV_HEARTBEAT_LOST, "feed"), 0, "silent 300 ms: not lost");
    core_tick(&d, 401);
    IS(count(0, EV_HEARTBEAT_LOST, "feed"), 1, "silent 301 ms: lost, once");
    core_tick(&d, 500);
    IS(count(0, EV_HEARTBEAT_LOST, "feed"), 1, "and only once");
    core_acquire(&d, &c, k, 1, 0, 0, 1, 510, &res, &culprit);
    OK(!res.allow && res.reason == ADMIT_HEARTBEAT_LOST,
       "acquire while lost: heartbeat_lost");
    IS(core_key_health(k), HEALTH_UNAVAILABLE, "the key is unavailable");
    mark = nev;
    core_heartbeat(&d, k, 600);
    IS(count(mark, EV_HEARTBEAT_RESTORED, "feed"), 1, "a beat restores, once");
    acquire(&d, &c, k, 2, 610, &allow);
    OK(allow, "and acquire passes again");
    IS(core_key_health(k), HEALTH_OPERATIONAL, "operational again");
    core_free(&d);
}

/* A 429 is a venue pause event on the limiter that was paused. */
static void test_venue_pause(void)
{
    struct resild d;
    struct caller c = {.answer = answer};
    struct key *k;
    struct outcome o = {.kind = OUT_FAILURE,
                        .cls = "rate_limited",
                        .severity = -1,
                        .transient = -1,
                        .latency_ms = -1,
                        .venue_wait_ms = 700,
                        .attempt = 1,
                        .idempotent = 1};
    struct report_result rr;
    int i;

    start(&d, breaker_cfg);
    k = key(&d, "venue.orders", 0);
    core_report(&d, &c, &o, k->name, k->len, 10, &rr);
    for (i = 0; i < nev && ev[i].type != EV_VENUE_PAUSE; i++)
        ;
    OK(i < nev && !strcmp(ev[i].key, "venue") && ev[i].n == 700,
       "rate_limited on venue.orders pauses venue's limiter 700 ms");
    core_free(&d);
}

/* A new configuration: every key takes its new policy, keeps its state,
 * never gets a fresh burst, and finds its ancestors again. */
static void test_rebind(void)
{
    struct resild d;
    struct caller c = {.answer = answer};
    struct config cfg;
    struct key *k, *lim, *crit;
    char path[256], err[256];
    int allow, i;
    FILE *f;

    start(&d, "{\"policies\": {\"*\": {\"breaker\": {\"failure_threshold\": 0,"
              " \"failure_rate_threshold\": 50, \"minimum_calls\": 4,"
              " \"window\": {\"type\": \"count\", \"size\": 10}}},"
              " \"lim\": {\"limiter\": {\"rate\": 1, \"per\": \"hour\","
              " \"burst\": 10}}}}");
    k = key(&d, "r", 0);
    report(&d, &c, k, 0, OUT_FAILURE, 1);
    report(&d, &c, k, 0, OUT_SUCCESS, 2);
    report(&d, &c, k, 0, OUT_SUCCESS, 3);
    lim = key(&d, "lim", 0);
    for (i = 0; i < 8; i++)
        acquire(&d, &c, lim, (uint32_t)(10 + i), 10, &allow);
    IS(limiter_available(&lim->lim, &lim->policy->limiter, 10), 2,
       "two tokens left before the reload");
    crit = key(&d, "p.x", 0);

    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs("{\"policies\": {\"*\": {\"breaker\": {\"failure_threshold\": 0,"
          " \"failure_rate_threshold\": 50, \"minimum_calls\": 4,"
          " \"window\": {\"type\": \"count\", \"size\": 10}}},"
          " \"lim\": {\"limiter\": {\"rate\": 1, \"per\": \"hour\","
          " \"burst\": 100}},"
          " \"p\": {\"limiter\": {\"rate\": 1, \"per\": \"hour\","
          " \"burst\": 1}},"
          " \"p.x\": {\"critical\": true,"
          " \"heartbeat\": {\"timeout_ms\": 100}}}}",
          f);
    fclose(f);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        DIAG("config: %s", err);
        return;
    }
    IS(core_rebind(&d, &cfg, 20), 0, "rebind");
    IS(k->br.win_calls, 3, "same window layout: the window is kept");
    IS(limiter_available(&lim->lim, &lim->policy->limiter, 20), 2,
       "a bigger burst does not refill the bucket");
    OK(!strcmp(crit->policy->pattern, "p.x") && crit->policy->critical &&
           d.critical == crit,
       "p.x takes its new policy and joins the critical list");
    acquire(&d, &c, crit, 30, 30, &allow);
    OK(allow, "p.x: the new ancestor limiter of p lets the first one by");
    acquire(&d, &c, crit, 31, 31, &allow);
    OK(!allow, "and its burst of 1 holds the second: ancestors found again");
    core_tick(&d, 200);
    IS(count(0, EV_HEARTBEAT_LOST, "p.x"), 1,
       "p.x's new heartbeat part is watched");

    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs("{\"policies\": {\"*\": {\"breaker\": {"
          " \"window\": {\"type\": \"time\", \"size\": 30}}},"
          " \"lim\": {\"limiter\": {\"rate\": 1, \"per\": \"hour\","
          " \"burst\": 1}}}}",
          f);
    fclose(f);
    config_load(path, &cfg, err, sizeof(err));
    core_force(&d, k, BREAKER_FORCE_OPEN, "m", 1, 0, 0, 300);
    IS(core_rebind(&d, &cfg, 310), 0, "rebind to a time window");
    OK(k->br.window_time && k->br.win_calls == 0 &&
           breaker_failure_rate(&k->br, 310) == 0.0,
       "a changed window layout starts empty");
    OK(k->br.force == BREAKER_FORCE_OPEN, "the force is kept");
    IS(limiter_available(&lim->lim, &lim->policy->limiter, 310), 1,
       "a smaller burst cuts the bucket to it");
    OK(d.critical == NULL && crit->due_pos == 0,
       "the critical and heartbeat lists follow the new policies");
    report(&d, &c, k, 0, OUT_FAILURE, 320);
    OK(k->br.window_time && breaker_failure_rate(&k->br, 320) == 100.0,
       "the new window measures");
    core_free(&d);
}


/* The heap of due keys: every key time can change is in it exactly once,
 * in heap order, at the instant it is due; the tick takes exactly the keys
 * that are due, each at the first tick at or after its instant. */
static int heap_ok(const struct resild *d)
{
    uint32_t i;

    for (i = 0; i < d->ndue; i++) {
        if (d->due[i]->due_pos != i + 1)
            return 0;
        if (i && d->due[(i - 1) / 2]->due_ms > d->due[i]->due_ms)
            return 0;
    }
    return 1;
}

static void test_due_heap(void)
{
    enum { N = 200, F = 40 };
    struct resild d;
    struct caller c = {.answer = answer};
    struct key *k[N], *f[F];
    uint64_t opened[N], t;
    char name[32];
    int i, ok_state = 1, ok_heap = 1, lost_ok = 1;

    start(&d, "{\"policies\": {\"*\": {\"breaker\": {\"failure_threshold\": 2,"
              " \"open_ms\": 1000, \"success_threshold\": 1,"
              " \"failure_rate_threshold\": 0}},"
              " \"feed.*\": {\"heartbeat\": {\"timeout_ms\": 300}}}}");
    for (i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "k%d", i);
        k[i] = key(&d, name, 0);
    }
    for (i = 0; i < F; i++) {
        snprintf(name, sizeof(name), "feed.%d", i);
        f[i] = key(&d, name, 0);
    }
    IS(d.ndue, F, "only heartbeat keys are due at first");
    /* Open each k[i] at a scattered instant in [10, 1000). */
    for (i = 0; i < N; i++) {
        opened[i] = 10 + (uint64_t)(i * 7919) % 990;
        report(&d, &c, k[i], 0, OUT_FAILURE, opened[i] - 1);
        report(&d, &c, k[i], 0, OUT_FAILURE, opened[i]);
    }
    OK(heap_ok(&d), "heap order after opening in scattered order");
    for (i = 0; i < F; i++)
        core_heartbeat(&d, f[i], (uint64_t)i * 5); /* lost at i*5 + 300 */
    OK(heap_ok(&d), "heap order after heartbeats move keys");
    for (t = 1000; t <= 2100; t++) {
        core_tick(&d, t);
        if (!heap_ok(&d))
            ok_heap = 0;
        for (i = 0; i < N; i++)
            if ((k[i]->br.state == BREAKER_OPEN) != (t < opened[i] + 1000))
                ok_state = 0;
    }
    OK(ok_heap, "heap order kept through 1100 ticks");
    OK(ok_state, "each breaker leaves open at the first tick at its instant");
    for (i = 0; i < F; i++)
        if (!f[i]->hb.lost || count(0, EV_HEARTBEAT_LOST, f[i]->name) != 1)
            lost_ok = 0;
    OK(lost_ok, "each silent feed is lost once");
    IS(d.ndue, 0, "nothing left due: half-open and lost keys wait on a call");
    core_heartbeat(&d, f[3], 2200);
    OK(d.ndue == 1 && d.due[0] == f[3] && f[3]->due_ms == 2501,
       "a restored feed is due again just past its timeout");
    core_free(&d);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_cycle_via_status();
    test_tick_reveals();
    test_force_events();
    test_outcome_sources();
    test_heartbeat();
    test_venue_pause();
    test_rebind();
    test_due_heap();
    {
        char path[300];
        snprintf(path, sizeof(path), "%s/c.json", dir);
        unlink(path);
        rmdir(dir);
    }
    return tap_done();
}
