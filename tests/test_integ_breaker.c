/*
 * test_integ_breaker.c - every breaker rule of SPEC §4 driven through
 * libresil against a real resild (issue #3): one named test per rule.
 *
 * One daemon serves every test; each test owns a policy pattern (cons.*,
 * rate.*, ...) so the rules do not interfere.  Deadlines are >= 2000 ms
 * where the daemon is expected to answer (sanitizer builds are slow), and
 * every wait for a time-driven change (open -> half-open, force TTL, permit
 * TTL, a time window ageing out, a lost connection) polls with a generous
 * bound instead of sleeping a fixed time: the tests assert orderings and
 * values, never speed.
 */
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"
#include "integ_util.h"
#include "proto.h"
#include "resil.h"
#include "tap.h"

#define DEADLINE_MS 2000
#define POLL_MS 5000 /* bound on every wait for a time-driven change */

#define CONFIG                                                                 \
    "{\"policies\": {"                                                         \
    "\"*\": {\"breaker\": {\"failure_threshold\": 5, \"open_ms\": 300}},"      \
    "\"cons.*\": {\"breaker\": {\"failure_threshold\": 3, "                    \
    "  \"failure_rate_threshold\": 0, \"open_ms\": 60000}},"                   \
    "\"rate.*\": {\"breaker\": {\"failure_threshold\": 0, "                    \
    "  \"window\": {\"type\": \"count\", \"size\": 10}, "                      \
    "  \"minimum_calls\": 6, \"failure_rate_threshold\": 50, "                 \
    "  \"open_ms\": 60000}},"                                                  \
    "\"twin.*\": {\"breaker\": {\"failure_threshold\": 0, "                    \
    "  \"window\": {\"type\": \"time\", \"size\": 2}, "                        \
    "  \"minimum_calls\": 4, \"failure_rate_threshold\": 50, "                 \
    "  \"open_ms\": 60000}},"                                                  \
    "\"slow.*\": {\"breaker\": {\"failure_threshold\": 0, "                    \
    "  \"failure_rate_threshold\": 0, "                                        \
    "  \"window\": {\"type\": \"count\", \"size\": 5}, \"minimum_calls\": 5, " \
    "  \"slow_call_ms\": 100, \"slow_call_rate_threshold\": 60, "              \
    "  \"open_ms\": 60000}},"                                                  \
    "\"back.*\": {\"breaker\": {\"failure_threshold\": 1, \"open_ms\": 200, "  \
    "  \"open_backoff\": 2, \"open_max_ms\": 800, \"success_threshold\": 1}}," \
    "\"half.*\": {\"breaker\": {\"failure_threshold\": 1, \"open_ms\": 200, "  \
    "  \"half_open_max_calls\": 3, \"success_threshold\": 3}},"                \
    "\"rec.*\": {\"breaker\": {\"failure_threshold\": 2, "                     \
    "  \"failure_rate_threshold\": 0, \"open_ms\": 60000, "                    \
    "  \"record\": [\"network.*\", \"timeout\"], "                             \
    "  \"ignore\": [\"validation.*\"]}},"                                      \
    "\"frc.*\": {\"breaker\": {\"failure_threshold\": 2, "                     \
    "  \"failure_rate_threshold\": 0, \"open_ms\": 60000}},"                   \
    "\"ttl.*\": {\"permit_ttl_ms\": 1000, \"breaker\": "                       \
    "  {\"failure_threshold\": 1, \"open_ms\": 60000}},"                       \
    "\"stale.*\": {\"breaker\": {\"failure_threshold\": 2, "                   \
    "  \"failure_rate_threshold\": 0, \"open_ms\": 400, "                      \
    "  \"half_open_max_calls\": 2, \"success_threshold\": 2}},"                \
    "\"kill.*\": {\"breaker\": {\"failure_threshold\": 1, \"open_ms\": 300, "  \
    "  \"success_threshold\": 2}},"                                            \
    "\"shadow.*\": {\"shadow\": true, \"breaker\": "                           \
    "  {\"failure_threshold\": 2, \"open_ms\": 60000}}"                        \
    "}}"

/* --- small helpers (same patterns as test_integ.c) ------------------------ */

/* Report outcome for permit (0 = none).  cls NULL: "network.reset" for a
 * failure, none otherwise.  latency_ms < 0: not given. */
static int report_ex(resil_t *r, const char *key, uint64_t permit,
                     enum resil_outcome outcome, const char *cls,
                     int64_t latency_ms, struct resil_report_result *rr)
{
    struct resil_report rep = {0};

    rep.key = key;
    rep.permit = permit;
    rep.outcome = outcome;
    rep.latency_ms = latency_ms;
    rep.retry_after_ms = -1;
    rep.error_class = cls;
    if (!cls && outcome == RESIL_FAILURE)
        rep.error_class = "network.reset";
    return resil_report(r, &rep, rr);
}

static int report(resil_t *r, const char *key, uint64_t permit,
                  enum resil_outcome outcome, struct resil_report_result *rr)
{
    return report_ex(r, key, permit, outcome, NULL, 12, rr);
}

/* acquire + report one outcome; the report's state lands in state (16
 * bytes).  0, or -1 when the acquire was denied or a call failed. */
static int call_once(resil_t *r, const char *key, enum resil_outcome outcome,
                     const char *cls, int64_t latency_ms, char *state)
{
    struct resil_decision d;
    struct resil_report_result rr;

    if (acquire(r, key, &d) != 0 || !d.allow)
        return -1;
    if (report_ex(r, key, d.permit, outcome, cls, latency_ms, &rr) != 0)
        return -1;
    strcpy(state, rr.state);
    return 0;
}

/* call_once n times with failures; -1 on the first problem. */
static int fail_n(resil_t *r, const char *key, int n, char *state)
{
    int i;

    for (i = 0; i < n; i++)
        if (call_once(r, key, RESIL_FAILURE, NULL, 12, state) < 0)
            return -1;
    return 0;
}

/* --- msgpack params and results ------------------------------------------ */

/* force {key, state[, reason][, ttl_ms]}; the returned status map lands in
 * s (may be NULL). */
static int force(resil_t *r, const char *key, const char *state,
                 const char *reason, long long ttl_ms, struct kstat *s)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct reply rep;
    char code[24];
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + (reason != NULL) + (ttl_ms > 0));
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, key);
    proto_pack_cstr(&pk, "state");
    proto_pack_cstr(&pk, state);
    if (reason) {
        proto_pack_cstr(&pk, "reason");
        proto_pack_cstr(&pk, reason);
    }
    if (ttl_ms > 0) {
        proto_pack_cstr(&pk, "ttl_ms");
        msgpack_pack_uint64(&pk, (uint64_t)ttl_ms);
    }
    rc = integ_call(r, "force", &sb, DEADLINE_MS, &rep, code);
    msgpack_sbuffer_destroy(&sb);
    if (s)
        kstat_fill(rc == 0 ? &rep.obj : NULL, s);
    reply_free(&rep);
    return rc;
}

/* Poll status every 20 ms for up to POLL_MS until the state is want.
 * Returns 0 (s holds the last status) or -1. */
static int wait_state(resil_t *r, const char *key, const char *want,
                      struct kstat *s)
{
    long long end = mono_ms() + POLL_MS;

    for (;;) {
        if (integ_get_status(r, key, DEADLINE_MS, s) != 0)
            return -1;
        if (!strcmp(s->state, want))
            return 0;
        if (mono_ms() >= end)
            return -1;
        sleep_ms(20);
    }
}

/* --- one test per rule --------------------------------------------------- */

/* failure_threshold consecutive failures open it; a success resets the
 * run. */
static void test_consecutive(const struct test_daemon *d)
{
    const char *key = "cons.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct kstat s;
    char state[16] = "";

    OK(fail_n(r, key, 2, state) == 0 && !strcmp(state, "closed"),
       "consecutive: two failures keep it closed (%s)", state);
    OK(call_once(r, key, RESIL_SUCCESS, NULL, 5, state) == 0 &&
           !strcmp(state, "closed"),
       "consecutive: a success (%s)", state);
    OK(fail_n(r, key, 2, state) == 0 && !strcmp(state, "closed"),
       "consecutive: the success reset the run: two more keep it closed (%s)",
       state);
    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "open"),
       "consecutive: the third in a row opens it (%s)", state);
    IS(acquire(r, key, &dec), 0, "consecutive: acquire answers");
    OK(!dec.allow && !strcmp(dec.reason, "circuit_open") &&
           dec.retry_after_ms > 0 && dec.retry_after_ms <= 60000,
       "consecutive: denied circuit_open, retry_after %llu in (0, 60000]",
       (unsigned long long)dec.retry_after_ms);
    IS(integ_get_status(r, key, DEADLINE_MS, &s), 0,
       "consecutive: status answers");
    OK(!strcmp(s.opened_by, "consecutive_failures") && s.opens == 1 &&
           s.calls == 6 && s.failures == 5,
       "consecutive: status opened_by %s opens %lld calls %lld failures %lld",
       s.opened_by, s.opens, s.calls, s.failures);
    resil_close(r);
}

/* failure_rate_threshold over a count window, judged once minimum_calls
 * are in it, opening at >= the threshold. */
static void test_failure_rate(const struct test_daemon *d)
{
    const enum resil_outcome seq_a[] = {RESIL_FAILURE, RESIL_FAILURE,
                                        RESIL_FAILURE, RESIL_SUCCESS,
                                        RESIL_SUCCESS};
    const enum resil_outcome seq_b[] = {
        RESIL_SUCCESS, RESIL_SUCCESS, RESIL_SUCCESS, RESIL_SUCCESS,
        RESIL_FAILURE, RESIL_FAILURE, RESIL_FAILURE};
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct kstat s;
    char state[16] = "";
    int i, ok = 1;

    for (i = 0; i < 5; i++)
        ok &= call_once(r, "rate.a", seq_a[i], NULL, 5, state) == 0 &&
              !strcmp(state, "closed");
    OK(ok,
       "failure rate: 3 of 5 failed (60%%) stays closed below "
       "minimum_calls 6 (%s)",
       state);
    integ_get_status(r, "rate.a", DEADLINE_MS, &s);
    OK(s.failure_rate > 59.9 && s.failure_rate < 60.1,
       "failure rate: status failure_rate 60 (%.1f)", s.failure_rate);
    OK(call_once(r, "rate.a", RESIL_SUCCESS, NULL, 5, state) == 0 &&
           !strcmp(state, "open"),
       "failure rate: sixth call (3 of 6 = 50%%) opens it at >= the "
       "threshold, even as a success (%s)",
       state);
    integ_get_status(r, "rate.a", DEADLINE_MS, &s);
    OK(!strcmp(s.opened_by, "failure_rate") && s.failure_rate > 49.9 &&
           s.failure_rate < 50.1,
       "failure rate: opened_by %s, failure_rate %.1f", s.opened_by,
       s.failure_rate);

    ok = 1;
    for (i = 0; i < 7; i++)
        ok &= call_once(r, "rate.b", seq_b[i], NULL, 5, state) == 0 &&
              !strcmp(state, "closed");
    OK(ok, "failure rate: 3 of 7 (43%%) stays closed (%s)", state);
    OK(call_once(r, "rate.b", RESIL_FAILURE, NULL, 5, state) == 0 &&
           !strcmp(state, "open"),
       "failure rate: 4 of 8 (50%%) opens it (%s)", state);
    resil_close(r);
}

/* A time window forgets calls older than its size in seconds. */
static void test_time_window(const struct test_daemon *d)
{
    const char *key = "twin.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct kstat s;
    char state[16] = "";
    long long end;

    OK(fail_n(r, key, 3, state) == 0 && !strcmp(state, "closed"),
       "time window: 3 failures stay closed below minimum_calls 4 (%s)", state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.failure_rate > 99.9, "time window: failure_rate 100 (%.1f)",
       s.failure_rate);
    /* The 2 s window lets them age out: poll until the rate reads 0. */
    end = mono_ms() + POLL_MS;
    while (integ_get_status(r, key, DEADLINE_MS, &s) == 0 &&
           s.failure_rate != 0.0 && mono_ms() < end)
        sleep_ms(50);
    OK(s.failure_rate == 0.0 && !strcmp(s.state, "closed"),
       "time window: the failures age out of the window (rate %.1f, %s)",
       s.failure_rate, s.state);
    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "closed"),
       "time window: a 4th failure does not open it: the old three no "
       "longer count (%s)",
       state);
    OK(call_once(r, key, RESIL_SUCCESS, NULL, 5, state) == 0 &&
           fail_n(r, key, 1, state) == 0 && !strcmp(state, "closed"),
       "time window: 2 of 3 failed, below minimum_calls (%s)", state);
    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "open"),
       "time window: 3 of 4 failed within the window opens it (%s)", state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(!strcmp(s.opened_by, "failure_rate"), "time window: opened_by %s",
       s.opened_by);
    resil_close(r);
}

/* slow_call_ms + slow_call_rate_threshold from reported latency_ms. */
static void test_slow_rate(const struct test_daemon *d)
{
    const int64_t lat[] = {150, 10, 200, 10};
    const char *key = "slow.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct kstat s;
    char state[16] = "";
    int i, ok = 1;

    for (i = 0; i < 4; i++)
        ok &= call_once(r, key, RESIL_SUCCESS, NULL, lat[i], state) == 0 &&
              !strcmp(state, "closed");
    OK(ok, "slow calls: 2 slow of 4 successes stay closed (%s)", state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.slow_rate > 49.9 && s.slow_rate < 50.1 && s.failure_rate == 0.0,
       "slow calls: slow_rate 50, failure_rate 0 (%.1f, %.1f)", s.slow_rate,
       s.failure_rate);
    OK(call_once(r, key, RESIL_SUCCESS, NULL, 100, state) == 0 &&
           !strcmp(state, "open"),
       "slow calls: a call of exactly slow_call_ms makes 3 of 5 (60%%) and "
       "opens it (%s)",
       state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(!strcmp(s.opened_by, "slow_call_rate") && s.failures == 0,
       "slow calls: opened_by %s with %lld failures", s.opened_by, s.failures);
    resil_close(r);
}

/* open_backoff multiplies the open time per consecutive re-open, capped by
 * open_max_ms; closing resets it. */
static void test_backoff(const struct test_daemon *d)
{
    /* open_ms 200, backoff 2, cap 800: 200, 400, 800, 800. */
    const long long lo[] = {0, 200, 400, 400}, hi[] = {200, 400, 800, 800};
    const char *key = "back.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    struct kstat s;
    char state[16] = "";
    long long ra[4] = {-1, -1, -1, -1};
    int i;
    int rc;

    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "open"),
       "backoff: first failure opens (%s)", state);
    for (i = 0; i < 4; i++) {
        if (i > 0) {
            if (integ_wait_probe(r, key, POLL_MS, &dec) != 0 ||
                report(r, key, dec.permit, RESIL_FAILURE, &rr) != 0 ||
                strcmp(rr.state, "open") != 0) {
                OK(0, "backoff: probe %d fails and re-opens (%s)", i, rr.state);
                break;
            }
        }
        if (acquire(r, key, &dec) == 0 && !dec.allow &&
            !strcmp(dec.reason, "circuit_open"))
            ra[i] = (long long)dec.retry_after_ms;
        OK(ra[i] > lo[i] && ra[i] <= hi[i],
           "backoff: open #%d retry_after_ms %lld in (%lld, %lld]", i + 1,
           ra[i], lo[i], hi[i]);
    }
    OK(ra[1] > ra[0] && ra[2] > ra[1],
       "backoff: re-opens wait longer (%lld < %lld < %lld)", ra[0], ra[1],
       ra[2]);
    OK(ra[3] <= 800, "backoff: capped by open_max_ms 800 (%lld)", ra[3]);
    OK(integ_wait_probe(r, key, POLL_MS, &dec) == 0 &&
           report(r, key, dec.permit, RESIL_SUCCESS, &rr) == 0 &&
           !strcmp(rr.state, "closed"),
       "backoff: a probe success closes it (%s)", rr.state);
    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "open"),
       "backoff: opens again (%s)", state);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && dec.retry_after_ms > 0 && dec.retry_after_ms <= 200,
       "backoff: after closing the open time is back to open_ms (%llu)",
       (unsigned long long)dec.retry_after_ms);
    integ_get_status(r, key, DEADLINE_MS, &s);
    IS(s.opens, 5, "backoff: status counts 5 opens");
    resil_close(r);
}

/* half_open_max_calls concurrent probes; success_threshold successes
 * close it. */
static void test_half_open(const struct test_daemon *d)
{
    const char *key = "half.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision p[4], dec;
    struct resil_report_result rr;
    struct kstat s;
    char state[16] = "";
    int rc;

    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "open"),
       "half-open: opened (%s)", state);
    OK(integ_wait_probe(r, key, POLL_MS, &p[0]) == 0 &&
           !strcmp(p[0].state, "half_open"),
       "half-open: first probe admitted (%s)", p[0].state);
    OK(acquire(r, key, &p[1]) == 0 && p[1].allow &&
           acquire(r, key, &p[2]) == 0 && p[2].allow &&
           !strcmp(p[2].state, "half_open"),
       "half-open: second and third concurrent probes admitted");
    OK(acquire(r, key, &dec) == 0 && !dec.allow &&
           !strcmp(dec.reason, "half_open_busy"),
       "half-open: a fourth is half_open_busy (%s)", dec.reason);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.probes_in_flight == 3 && !strcmp(s.state, "half_open"),
       "half-open: status probes_in_flight %lld, %s", s.probes_in_flight,
       s.state);
    OK(report(r, key, p[0].permit, RESIL_SUCCESS, &rr) == 0 &&
           !strcmp(rr.state, "half_open") && !rr.stale,
       "half-open: one success of 3 needed: still half_open (%s)", rr.state);
    OK(acquire(r, key, &p[3]) == 0 && p[3].allow,
       "half-open: the reported probe's slot is free again");
    OK(report(r, key, p[1].permit, RESIL_SUCCESS, &rr) == 0 &&
           !strcmp(rr.state, "half_open"),
       "half-open: two successes: still half_open (%s)", rr.state);
    OK(report(r, key, p[2].permit, RESIL_SUCCESS, &rr) == 0 &&
           !strcmp(rr.state, "closed"),
       "half-open: the third success closes it (%s)", rr.state);
    rc = report(r, key, p[3].permit, RESIL_FAILURE, &rr);
    OK(rc == 0 && rr.stale && !strcmp(rr.state, "closed"),
       "half-open: the leftover probe's failure is stale, still closed "
       "(stale %d, %s)",
       rr.stale, rr.state);
    resil_close(r);
}

/* record / ignore lists: an ignored class never counts; a class outside
 * record counts as a success. */
static void test_record_ignore(const struct test_daemon *d)
{
    const char *key = "rec.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct kstat s;
    char state[16] = "";
    int i, ok = 1;

    for (i = 0; i < 5; i++)
        ok &=
            call_once(r, key, RESIL_FAILURE, "validation.qty", 5, state) == 0 &&
            !strcmp(state, "closed");
    OK(ok,
       "record/ignore: 5 ignored failures (validation.qty) keep it "
       "closed (%s)",
       state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.calls == 0 && s.failures == 0,
       "record/ignore: ignored calls are not counted (calls %lld failures "
       "%lld)",
       s.calls, s.failures);
    ok = 1;
    for (i = 0; i < 3; i++)
        ok &= call_once(r, key, RESIL_FAILURE, "auth.denied", 5, state) == 0 &&
              !strcmp(state, "closed");
    OK(ok, "record/ignore: 3 failures outside record keep it closed (%s)",
       state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.calls == 3 && s.failures == 0,
       "record/ignore: they count as successes (calls %lld failures %lld)",
       s.calls, s.failures);
    OK(call_once(r, key, RESIL_FAILURE, "network.reset", 5, state) == 0 &&
           call_once(r, key, RESIL_FAILURE, "auth.denied", 5, state) == 0 &&
           call_once(r, key, RESIL_FAILURE, "network.reset", 5, state) == 0 &&
           !strcmp(state, "closed"),
       "record/ignore: network, unrecorded, network: the run is broken, "
       "closed (%s)",
       state);
    OK(call_once(r, key, RESIL_FAILURE, "validation.price", 5, state) == 0 &&
           !strcmp(state, "closed"),
       "record/ignore: an ignored failure in between (%s)", state);
    OK(call_once(r, key, RESIL_FAILURE, "timeout", 5, state) == 0 &&
           !strcmp(state, "open"),
       "record/ignore: ...does not break the run: timeout makes 2 in a row "
       "and opens it (%s)",
       state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    IS(s.failures, 3, "record/ignore: 3 recorded failures");
    resil_close(r);
}

/* force open / closed / disabled with a reason and a TTL. */
static void test_force(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    struct kstat s;
    char state[16] = "";
    int i, ok = 1;
    int rc;

    /* open with a TTL */
    IS(force(r, "frc.a", "open", "maint window", 1000, &s), 0,
       "force: open answers");
    OK(!strcmp(s.state, "forced_open"), "force: returns the status (%s)",
       s.state);
    integ_get_status(r, "frc.a", DEADLINE_MS, &s);
    OK(!strcmp(s.state, "forced_open") &&
           !strcmp(s.force_reason, "maint window"),
       "force open: status state %s, force_reason '%s'", s.state,
       s.force_reason);
    OK(s.force_ttl_ms > 0 && s.force_ttl_ms <= 1000,
       "force open: force_ttl_ms %lld in (0, 1000]", s.force_ttl_ms);
    rc = acquire(r, "frc.a", &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "forced_open") &&
           dec.retry_after_ms > 0 && dec.retry_after_ms <= 1000,
       "force open: denied forced_open, retry_after %llu in (0, 1000]",
       (unsigned long long)dec.retry_after_ms);
    OK(wait_state(r, "frc.a", "closed", &s) == 0,
       "force open: after the TTL it returns to auto (closed) (%s)", s.state);
    OK(!s.has_force_reason && !s.has_force_ttl,
       "force open: no force_reason / force_ttl_ms once auto");
    OK(acquire(r, "frc.a", &dec) == 0 && dec.allow,
       "force open: allowed again after the TTL");
    report(r, "frc.a", dec.permit, RESIL_SUCCESS, NULL);

    /* closed, no TTL, over a tripped breaker */
    OK(fail_n(r, "frc.b", 2, state) == 0 && !strcmp(state, "open"),
       "force closed: breaker tripped first (%s)", state);
    IS(force(r, "frc.b", "closed", "override", 0, &s), 0,
       "force closed answers");
    OK(!strcmp(s.state, "forced_closed") &&
           !strcmp(s.force_reason, "override") && s.force_ttl_ms == 0,
       "force closed: %s, reason '%s', force_ttl_ms %lld (none)", s.state,
       s.force_reason, s.force_ttl_ms);
    for (i = 0; i < 3; i++)
        ok &= call_once(r, "frc.b", RESIL_FAILURE, NULL, 5, state) == 0 &&
              !strcmp(state, "forced_closed");
    OK(ok, "force closed: allows, and failures drive nothing (%s)", state);
    IS(force(r, "frc.b", "auto", NULL, 0, &s), 0, "force auto answers");
    OK(!strcmp(s.state, "open") && !s.has_force_reason,
       "force auto: back to the automatic state, open (%s)", s.state);

    /* disabled with a TTL */
    IS(force(r, "frc.b", "disabled", "metrics only", 600, &s), 0,
       "force disabled answers");
    OK(!strcmp(s.state, "disabled") &&
           !strcmp(s.force_reason, "metrics only") && s.force_ttl_ms > 0 &&
           s.force_ttl_ms <= 600,
       "force disabled: %s, reason '%s', ttl %lld", s.state, s.force_reason,
       s.force_ttl_ms);
    OK(acquire(r, "frc.b", &dec) == 0 && dec.allow &&
           !strcmp(dec.state, "disabled"),
       "force disabled: always allows (%s)", dec.state);
    IS(report(r, "frc.b", dec.permit, RESIL_FAILURE, &rr), 0,
       "force disabled: report answers");
    OK(!rr.stale, "force disabled: a current permit's report is not stale "
                  "(the force holds the state; the permit is not old)");
    OK(wait_state(r, "frc.b", "open", &s) == 0,
       "force disabled: after the TTL back to auto: open (%s)", s.state);
    OK(acquire(r, "frc.b", &dec) == 0 && !dec.allow &&
           !strcmp(dec.reason, "circuit_open"),
       "force disabled: auto again denies circuit_open (%s)", dec.reason);
    resil_close(r);
}

/* A permit never reported expires after permit_ttl_ms and counts as a
 * (timeout) failure. */
static void test_permit_ttl(const struct test_daemon *d)
{
    const char *key = "ttl.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    struct kstat s;
    int rc;

    OK(acquire(r, key, &dec) == 0 && dec.allow, "permit ttl: acquired");
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.outstanding == 1 && !strcmp(s.state, "closed"),
       "permit ttl: one outstanding, closed (%lld, %s)", s.outstanding,
       s.state);
    OK(wait_state(r, key, "open", &s) == 0,
       "permit ttl: the unreported permit expires and opens it (%s)", s.state);
    OK(s.failures == 1 && s.outstanding == 0 &&
           !strcmp(s.opened_by, "consecutive_failures"),
       "permit ttl: counted as one failure (failures %lld outstanding %lld "
       "opened_by %s)",
       s.failures, s.outstanding, s.opened_by);
    rc = report(r, key, dec.permit, RESIL_SUCCESS, &rr);
    OK(rc == 0 && rr.stale && !strcmp(rr.state, "open"),
       "permit ttl: a late report of the expired permit is stale (%d, %s)",
       rr.stale, rr.state);
    resil_close(r);
}

/* A permit granted before a trip drives nothing afterwards. */
static void test_stale_permit(const struct test_daemon *d)
{
    const char *key = "stale.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision a1, a2, p1, p2, dec;
    struct resil_report_result rr;
    struct kstat s;
    char state[16] = "";
    long long calls;
    int rc;

    OK(acquire(r, key, &a1) == 0 && a1.allow && acquire(r, key, &a2) == 0 &&
           a2.allow,
       "stale: permits A1, A2 granted while closed");
    OK(fail_n(r, key, 2, state) == 0 && !strcmp(state, "open"),
       "stale: other calls trip it (%s)", state);
    rc = report(r, key, a1.permit, RESIL_SUCCESS, &rr);
    OK(rc == 0 && rr.stale && !strcmp(rr.state, "open"),
       "stale: A1 success after the trip: stale, still open (%d, %s)", rr.stale,
       rr.state);
    OK(acquire(r, key, &dec) == 0 && !dec.allow &&
           !strcmp(dec.reason, "circuit_open"),
       "stale: still denied circuit_open (%s)", dec.reason);
    OK(integ_wait_probe(r, key, POLL_MS, &p1) == 0 &&
           !strcmp(p1.state, "half_open"),
       "stale: half-open probe P1 admitted (%s)", p1.state);
    rc = report(r, key, a2.permit, RESIL_FAILURE, &rr);
    OK(rc == 0 && rr.stale && !strcmp(rr.state, "half_open"),
       "stale: A2 failure in half-open: stale, still half_open (%d, %s)",
       rr.stale, rr.state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(!strcmp(s.state, "half_open") && s.probes_in_flight == 1 && s.opens == 1,
       "stale: status %s, probes_in_flight %lld, opens %lld", s.state,
       s.probes_in_flight, s.opens);
    OK(acquire(r, key, &p2) == 0 && p2.allow,
       "stale: second probe P2 admitted");
    rc = report(r, key, p1.permit, RESIL_SUCCESS, &rr);
    OK(rc == 0 && !rr.stale && !strcmp(rr.state, "half_open"),
       "stale: P1 success counts (%d, %s)", rr.stale, rr.state);
    rc = report(r, key, p2.permit, RESIL_SUCCESS, &rr);
    OK(rc == 0 && !rr.stale && !strcmp(rr.state, "closed"),
       "stale: P2 success closes it (%d, %s)", rr.stale, rr.state);
    /* The same permit reported again counts once: stale, nothing moves. */
    integ_get_status(r, key, DEADLINE_MS, &s);
    calls = s.calls;
    rc = report(r, key, p2.permit, RESIL_FAILURE, &rr);
    OK(rc == 0 && rr.stale && !strcmp(rr.state, "closed"),
       "stale: P2 reported twice: the second is stale (%d, %s)", rr.stale,
       rr.state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.calls == calls && !strcmp(s.state, "closed"),
       "stale: a permit reported twice counts once (calls %lld -> %lld)", calls,
       s.calls);
    resil_close(r);
}

/* The half-open probe's client dies by SIGKILL: the lost probe re-opens
 * the breaker, which later recovers through probes with no operator. */
static void test_killed_probe(const struct test_daemon *d)
{
    const char *key = "kill.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    struct kstat s;
    struct pollfd pf;
    char state[16] = "", c = 0;
    long long end;
    int pfd[2], status;
    pid_t pid;

    OK(fail_n(r, key, 1, state) == 0 && !strcmp(state, "open"),
       "killed probe: opened (%s)", state);
    if (pipe(pfd) < 0) {
        OK(0, "killed probe: pipe");
        resil_close(r);
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        resil_t *cr = integ_open(d->sock, DEADLINE_MS);
        struct resil_decision cd;
        char ok;

        close(pfd[0]);
        ok = (cr && integ_wait_probe(cr, key, POLL_MS, &cd) == 0 &&
              !strcmp(cd.state, "half_open"))
                 ? 'y'
                 : 'n';
        if (write(pfd[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause(); /* hold the probe until killed */
    }
    close(pfd[1]);
    pf.fd = pfd[0];
    pf.events = POLLIN;
    OK(pid > 0 && poll(&pf, 1, 10000) == 1 && read(pfd[0], &c, 1) == 1 &&
           c == 'y',
       "killed probe: the child holds the half-open probe");
    OK(acquire(r, key, &dec) == 0 && !dec.allow &&
           !strcmp(dec.reason, "half_open_busy"),
       "killed probe: others get half_open_busy meanwhile (%s)", dec.reason);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    close(pfd[0]);
    end = mono_ms() + POLL_MS;
    while (acquire(r, key, &dec) == 0 &&
           !strcmp(dec.reason, "half_open_busy") && mono_ms() < end)
        sleep_ms(20);
    OK(!dec.allow && !strcmp(dec.reason, "circuit_open") &&
           !strcmp(dec.state, "open"),
       "killed probe: the lost probe re-opens it (allow=%d %s %s)", dec.allow,
       dec.reason, dec.state);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(!strcmp(s.opened_by, "probe_failed") && s.opens == 2 && s.failures == 2,
       "killed probe: counted as a probe failure (opened_by %s, opens %lld, "
       "failures %lld)",
       s.opened_by, s.opens, s.failures);
    OK(integ_wait_probe(r, key, POLL_MS, &dec) == 0 &&
           !strcmp(dec.state, "half_open"),
       "killed probe: a new probe after open_ms (%s)", dec.state);
    OK(report(r, key, dec.permit, RESIL_SUCCESS, &rr) == 0 &&
           !strcmp(rr.state, "half_open"),
       "killed probe: first success (%s)", rr.state);
    OK(acquire(r, key, &dec) == 0 && dec.allow &&
           report(r, key, dec.permit, RESIL_SUCCESS, &rr) == 0 &&
           !strcmp(rr.state, "closed"),
       "killed probe: second success closes it, no operator needed (%s)",
       rr.state);
    resil_close(r);
}

/* shadow: true allows what it would deny and counts it. */
static void test_shadow(const struct test_daemon *d)
{
    const char *key = "shadow.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct reply rep;
    struct kstat s;
    char state[16] = "", code[24] = "", sd[24] = "", st[16] = "";
    uint64_t permit = 0;
    int allow = -1, rc;

    OK(fail_n(r, key, 2, state) == 0 && !strcmp(state, "open"),
       "shadow: breaker opens as usual (%s)", state);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && dec.allow && dec.permit && !strcmp(dec.state, "open"),
       "shadow: acquire on the open breaker is allowed (allow=%d, state %s)",
       dec.allow, dec.state);
    report(r, key, dec.permit, RESIL_SUCCESS, &rr);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, key);
    rc = integ_call(r, "acquire", &sb, DEADLINE_MS, &rep, code);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0) {
        const msgpack_object *a = proto_map_get(&rep.obj, "allow");
        allow = a && a->type == MSGPACK_OBJECT_BOOLEAN ? a->via.boolean : -1;
        permit = (uint64_t)obj_int(proto_map_get(&rep.obj, "permit"), 0);
        proto_str_copy(proto_map_get(&rep.obj, "shadow_denied"), sd,
                       sizeof(sd));
        proto_str_copy(proto_map_get(&rep.obj, "state"), st, sizeof(st));
    }
    reply_free(&rep);
    OK(rc == 0 && allow == 1 && !strcmp(sd, "circuit_open") &&
           !strcmp(st, "open"),
       "shadow: the answer says shadow_denied circuit_open (rc %d allow %d "
       "'%s' %s)",
       rc, allow, sd, st);
    report(r, key, permit, RESIL_SUCCESS, NULL);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.has_shadow && s.shadow_denied == 2 && !strcmp(s.state, "open"),
       "shadow: status counts shadow_denied %lld, state %s", s.shadow_denied,
       s.state);
    OK(integ_get_status(r, "cons.a", DEADLINE_MS, &s) == 0 && !s.has_shadow,
       "shadow: a non-shadow key has no shadow_denied");
    resil_close(r);
}

int main(void)
{
    struct test_daemon d;

    if (!OK(daemon_start(&d, CONFIG) == 0, "resild starts"))
        return tap_done();
    test_consecutive(&d);
    test_failure_rate(&d);
    test_time_window(&d);
    test_slow_rate(&d);
    test_backoff(&d);
    test_half_open(&d);
    test_record_ignore(&d);
    test_force(&d);
    test_permit_ttl(&d);
    test_stale_permit(&d);
    test_killed_probe(&d);
    test_shadow(&d);
    if (tap_failures)
        daemon_dump_log(&d);
    IS(daemon_stop(&d), 0, "resild exits 0 on SIGTERM");
    daemon_cleanup(&d);
    return tap_done();
}
