/*
 * test_integ_admit.c - admission (limiters, bulkheads, parking, the
 * critical lane, venue feedback) and retry advice through libresil against
 * a real resild (issue #4), including what only several client processes
 * can show: a 429 told to one process pauses another, a killed process's
 * permits come back at once, a critical request passes where normal ones
 * are denied.
 *
 * Deadlines are >= 2000 ms where the daemon is expected to answer (and
 * above wait_ms for parked calls); waits for a change poll with a bound.
 * Where a denial depends on a token not having refilled yet (the exchange
 * config below refills the endpoint bucket every 10 ms), the test measures
 * the time the calls took and asserts the denial only when it was short
 * enough to be certain, skipping otherwise: values and orderings, never
 * speed.
 */
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <pthread.h>
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
#define POLL_MS 5000        /* bound on every wait for a change */
#define BACKOFF_WAIT_MS 120 /* longer than libresil's first back-off step */

#define RETRY_FIXED                                                            \
    "\"strategy\": \"fixed\", \"base_ms\": 100, \"jitter\": \"none\""

#define CONFIG                                                                 \
    "{\"errors\": {\"classes\": {"                                             \
    "  \"network.*\": {\"severity\": \"high\"},"                               \
    "  \"exchange.odd\": {\"severity\": \"critical\", \"transient\": "         \
    "false}}},"                                                                \
    "\"policies\": {"                                                          \
    "\"*\": {\"breaker\": {\"failure_threshold\": 50, "                        \
    "  \"failure_rate_threshold\": 0, \"open_ms\": 1000}},"                    \
    "\"binance\": {\"limiter\": {\"rate\": 20, \"per\": \"second\", "          \
    "  \"burst\": 20}},"                                                       \
    "\"binance.*\": {\"limiter\": {\"rate\": 100, \"per\": \"second\", "       \
    "  \"burst\": 10}},"                                                       \
    "\"pool.*\": {\"bulkhead\": {\"max_concurrent\": 2, \"queue\": 4}},"       \
    "\"crit.*\": {\"limiter\": {\"rate\": 5, \"per\": \"minute\", "            \
    "  \"burst\": 5}, \"reserve\": 2},"                                        \
    "\"cprobe.*\": {\"breaker\": {\"failure_threshold\": 1, "                  \
    "  \"open_ms\": 60000, \"critical_probe_per_s\": 1}},"                     \
    "\"venue.*\": {\"limiter\": {\"rate\": 60, \"per\": \"minute\", "          \
    "  \"burst\": 60}},"                                                       \
    "\"kraken\": {\"limiter\": {\"rate\": 10, \"per\": \"second\", "           \
    "  \"pause_ms\": 800}},"                                                   \
    "\"rt.*\": {\"retry\": {\"max_attempts\": 3, " RETRY_FIXED ", "            \
    "  \"max_ms\": 10000}},"                                                   \
    "\"rtopen.*\": {\"breaker\": {\"failure_threshold\": 1, "                  \
    "  \"open_ms\": 5000}, \"retry\": {" RETRY_FIXED ", \"max_ms\": 10000}},"  \
    "\"rtlong.*\": {\"breaker\": {\"failure_threshold\": 1, "                  \
    "  \"open_ms\": 60000}, \"retry\": {" RETRY_FIXED ", \"max_ms\": 1000}},"  \
    "\"rtbudget.*\": {\"retry\": {\"budget_ratio\": 0, "                       \
    "  \"budget_min_per_s\": 0}}"                                              \
    "}}"

/* --- small helpers (same patterns as test_integ.c) ------------------------ */

/* acquire with cost, wait_ms and priority; the deadline covers wait_ms. */
static int acquire_ex(resil_t *r, const char *key, uint32_t cost,
                      uint32_t wait_ms, int critical, struct resil_decision *d)
{
    struct resil_acquire_opts o = {0};

    o.cost = cost;
    o.wait_ms = wait_ms;
    o.critical = critical;
    o.deadline_ms = (int)wait_ms + DEADLINE_MS + 1000;
    o.fail_mode = RESIL_FAIL_DEFAULT;
    return resil_acquire(r, key, &o, d);
}

/* Report outcome for permit (0 = none) with error class cls (may be NULL),
 * attempt (0 = 1), non_idempotent, venue retry_after_ms (< 0 = none). */
static int report_ex(resil_t *r, const char *key, uint64_t permit,
                     enum resil_outcome outcome, const char *cls,
                     uint32_t attempt, int non_idempotent,
                     int64_t retry_after_ms, struct resil_report_result *rr)
{
    struct resil_report rep = {0};

    rep.key = key;
    rep.permit = permit;
    rep.outcome = outcome;
    rep.latency_ms = 7;
    rep.error_class = cls;
    rep.attempt = attempt;
    rep.non_idempotent = non_idempotent;
    rep.retry_after_ms = retry_after_ms;
    return resil_report(r, &rep, rr);
}

static int report_ok(resil_t *r, const char *key, uint64_t permit)
{
    return report_ex(r, key, permit, RESIL_SUCCESS, NULL, 0, 0, -1, NULL);
}

/* --- msgpack params and results ------------------------------------------ */

/* --- other processes ----------------------------------------------------- */

/* What a child does with its own handle; it fills out (cap bytes). */
typedef void (*child_fn)(resil_t *r, const char *key, void *out);

/*
 * Fork a child that opens its own handle on sock, runs fn and sends out
 * (cap bytes) back through a pipe.  hold = 0: the child then exits (its
 * connection closes) and is reaped here.  hold = 1: it keeps its handle
 * open until killed; *pid names it.  0 when out arrived within 10 s.
 */
static int child_run(const char *sock, child_fn fn, const char *key, void *out,
                     size_t cap, int hold, pid_t *pid)
{
    struct pollfd pf;
    size_t got = 0;
    ssize_t n;
    int pfd[2], rc = -1;
    pid_t p;

    if (pipe(pfd) < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    p = fork();
    if (p < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (p == 0) {
        resil_t *cr = integ_open(sock, DEADLINE_MS);
        const char *b = out;
        size_t off = 0;

        close(pfd[0]);
        memset(out, 0, cap);
        if (cr)
            fn(cr, key, out);
        while (off < cap && (n = write(pfd[1], b + off, cap - off)) > 0)
            off += (size_t)n;
        if (hold)
            for (;;)
                pause(); /* keep the connection until killed */
        _exit(0);
    }
    close(pfd[1]);
    pf.fd = pfd[0];
    pf.events = POLLIN;
    while (got < cap && poll(&pf, 1, 10000) == 1 &&
           (n = read(pfd[0], (char *)out + got, cap - got)) > 0)
        got += (size_t)n;
    close(pfd[0]);
    if (got == cap)
        rc = 0;
    if (pid)
        *pid = p;
    if (!hold || rc < 0) {
        if (rc < 0)
            kill(p, SIGKILL);
        waitpid(p, NULL, 0);
    }
    return rc;
}

/* A parked acquire in a thread (resil_acquire blocks until answered). */
struct parked_call {
    resil_t *r;
    const char *key;
    uint32_t wait_ms;
    int rc;
    int done;
    struct resil_decision dec;
};

static void *parked_main(void *p)
{
    struct parked_call *pc = p;

    pc->rc = acquire_ex(pc->r, pc->key, 1, pc->wait_ms, 0, &pc->dec);
    __atomic_store_n(&pc->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* --- limiter ------------------------------------------------------------- */

/* Weighted cost on one endpoint (binance.* rate 100/s, burst 10). */
static void test_weighted_cost(resil_t *r)
{
    const char *key = "binance.w";
    struct resil_decision a, b, c;
    struct kstat s;
    long long t0, el1, el2;
    int rc1, rc2, rc3;

    t0 = mono_ms();
    rc1 = acquire_ex(r, key, 10, 0, 0, &a);
    rc2 = acquire_ex(r, key, 1, 0, 0, &b);
    el1 = mono_ms() - t0;
    rc3 = acquire_ex(r, key, 10, 0, 0, &c);
    el2 = mono_ms() - t0;
    OK(rc1 == 0 && a.allow && a.permit, "weighted: cost 10 allowed (rc %d)",
       rc1);
    if (rc2 == 0 && b.allow && el1 >= 10) {
        OK(1,
           "# SKIP weighted: cost 1 came %lld ms later, a token had "
           "refilled",
           el1);
    } else {
        OK(rc2 == 0 && !b.allow && !strcmp(b.reason, "rate_limited"),
           "weighted: then cost 1 is denied rate_limited (rc %d allow %d %s, "
           "%lld ms)",
           rc2, b.allow, b.reason, el1);
        OK(b.retry_after_ms > 0 && b.retry_after_ms <= 100,
           "weighted: 0 < retry_after_ms %llu <= 100",
           (unsigned long long)b.retry_after_ms);
    }
    if (rc3 == 0 && c.allow && el2 >= 100) {
        OK(1, "# SKIP weighted: cost 10 came %lld ms later", el2);
    } else {
        OK(rc3 == 0 && !c.allow && !strcmp(c.reason, "rate_limited") &&
               c.retry_after_ms > 0 && c.retry_after_ms <= 100,
           "weighted: a second cost 10 is denied, 0 < retry_after_ms %llu "
           "<= 100 (%s)",
           (unsigned long long)c.retry_after_ms, c.reason);
    }
    report_ok(r, key, a.permit);
    if (b.allow)
        report_ok(r, key, b.permit);
    if (c.allow)
        report_ok(r, key, c.permit);
    IS(integ_get_status(r, key, DEADLINE_MS, &s), 0,
       "weighted: status answers");
    OK(s.has_limiter && s.lim_rate == 100 && s.lim_per_ms == 1000 &&
           s.lim_burst == 10 && s.lim_available >= 0 && s.lim_available <= 10,
       "weighted: status limiter {rate %lld, per_ms %lld, burst %lld, "
       "available %lld}",
       s.lim_rate, s.lim_per_ms, s.lim_burst, s.lim_available);
}

/* The account limiter (binance, 20/s burst 20) caps every endpoint. */
static void test_hierarchy(resil_t *r)
{
    struct resil_decision h1, h2, h3;
    struct kstat s;
    long long t0, el, end = mono_ms() + POLL_MS;
    int rc1, rc2, rc3;

    /* Start from a full account bucket (earlier tests used some). */
    while (integ_get_status(r, "binance", DEADLINE_MS, &s) == 0 &&
           s.lim_available < 20 && mono_ms() < end)
        sleep_ms(20);
    OK(s.found && s.lim_available == 20 && s.lim_burst == 20,
       "hierarchy: the account key exists with a full bucket (%lld of "
       "%lld)",
       s.lim_available, s.lim_burst);
    t0 = mono_ms();
    rc1 = acquire_ex(r, "binance.h1", 10, 0, 0, &h1);
    rc2 = acquire_ex(r, "binance.h2", 10, 0, 0, &h2);
    rc3 = acquire_ex(r, "binance.h3", 1, 0, 0, &h3);
    el = mono_ms() - t0;
    OK(rc1 == 0 && h1.allow && rc2 == 0 && h2.allow,
       "hierarchy: cost 10 on two endpoints fills the account");
    if (rc3 == 0 && h3.allow && el >= 50) {
        OK(1, "# SKIP hierarchy: third endpoint came %lld ms later", el);
    } else {
        OK(rc3 == 0 && !h3.allow && !strcmp(h3.reason, "rate_limited"),
           "hierarchy: a third endpoint is denied rate_limited (allow %d, "
           "%s)",
           h3.allow, h3.reason);
        OK(h3.retry_after_ms > 0 && h3.retry_after_ms <= 50,
           "hierarchy: retry_after_ms %llu is the account's (0, 50]",
           (unsigned long long)h3.retry_after_ms);
    }
    integ_get_status(r, "binance.h3", DEADLINE_MS, &s);
    OK(s.lim_available == 10,
       "hierarchy: all or nothing: the denied endpoint's own bucket is "
       "untouched (%lld)",
       s.lim_available);
    report_ok(r, "binance.h1", h1.permit);
    report_ok(r, "binance.h2", h2.permit);
    if (h3.allow)
        report_ok(r, "binance.h3", h3.permit);
}

/* A cost no limiter in the chain can ever hold is a bad request. */
static void test_cost_over_burst(resil_t *r)
{
    struct resil_decision d;
    struct kstat s;
    int rc;

    rc = acquire_ex(r, "binance.big", 11, 0, 0, &d);
    OK(rc == RESIL_EREMOTE && !strcmp(d.error_code, "bad_request") &&
           !d.allow && !d.fallback,
       "cost 11 > endpoint burst 10: RESIL_EREMOTE bad_request (rc %d, %s)", rc,
       d.error_code);
    rc = acquire_ex(r, "binance.big", 21, 0, 0, &d);
    OK(rc == RESIL_EREMOTE && !strcmp(d.error_code, "bad_request"),
       "cost 21 > account burst 20: bad_request (rc %d, %s)", rc, d.error_code);
    integ_get_status(r, "binance.big", DEADLINE_MS, &s);
    OK(s.lim_available == 10, "bad cost took nothing (%lld)", s.lim_available);
    rc = acquire(r, "binance.big", &d);
    OK(rc == 0, "the connection stays usable after bad_request (rc %d)", rc);
    if (d.allow)
        report_ok(r, "binance.big", d.permit);
}

/* --- bulkhead and parking ------------------------------------------------ */

static void test_bulkhead(resil_t *r)
{
    const char *key = "pool.a";
    struct resil_decision a1, a2, a3;
    struct kstat s;
    int rc;

    OK(acquire(r, key, &a1) == 0 && a1.allow && acquire(r, key, &a2) == 0 &&
           a2.allow,
       "bulkhead: two concurrent permits (max_concurrent 2)");
    rc = acquire(r, key, &a3);
    OK(rc == 0 && !a3.allow && !strcmp(a3.reason, "bulkhead_full"),
       "bulkhead: the third is denied bulkhead_full (%s)", a3.reason);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.has_bulkhead && s.bh_in_use == 2 && s.bh_max == 2 && s.bh_queued == 0,
       "bulkhead: status in_use %lld max %lld queued %lld", s.bh_in_use,
       s.bh_max, s.bh_queued);
    report_ok(r, key, a1.permit);
    integ_get_status(r, key, DEADLINE_MS, &s);
    IS(s.bh_in_use, 1, "bulkhead: a report releases its slot");
    rc = acquire(r, key, &a3);
    OK(rc == 0 && a3.allow, "bulkhead: admitted again after the release");
    report_ok(r, key, a2.permit);
    report_ok(r, key, a3.permit);
}

/* wait_ms parks a request until another client releases, or denies it
 * when wait_ms runs out. */
static void test_parking(const struct test_daemon *d)
{
    const char *key = "pool.p";
    resil_t *a = integ_open(d->sock, DEADLINE_MS),
            *b = integ_open(d->sock, DEADLINE_MS);
    struct parked_call pc = {0};
    struct resil_decision p1, p2, dec;
    struct kstat s;
    pthread_t t;
    long long end, t0;
    int rc;

    OK(acquire(a, key, &p1) == 0 && p1.allow && acquire(a, key, &p2) == 0 &&
           p2.allow,
       "parking: client A holds both slots");
    pc.r = b;
    pc.key = key;
    pc.wait_ms = 5000;
    if (pthread_create(&t, NULL, parked_main, &pc) != 0) {
        OK(0, "parking: thread");
        goto out;
    }
    end = mono_ms() + POLL_MS;
    while (integ_get_status(a, key, DEADLINE_MS, &s) == 0 && s.bh_queued != 1 &&
           mono_ms() < end)
        sleep_ms(20);
    OK(s.bh_queued == 1 && !__atomic_load_n(&pc.done, __ATOMIC_ACQUIRE),
       "parking: client B's acquire with wait_ms is parked (queued %lld)",
       s.bh_queued);
    report_ok(a, key, p1.permit);
    pthread_join(t, NULL);
    OK(pc.rc == 0 && pc.dec.allow && pc.dec.permit &&
           !strcmp(pc.dec.reason, "ok"),
       "parking: A's release answers B's parked acquire: allow (rc %d allow "
       "%d %s)",
       pc.rc, pc.dec.allow, pc.dec.reason);
    integ_get_status(a, key, DEADLINE_MS, &s);
    OK(s.bh_in_use == 2 && s.bh_queued == 0,
       "parking: B now holds the slot (in_use %lld queued %lld)", s.bh_in_use,
       s.bh_queued);

    /* Full again: a parked request is denied when wait_ms runs out. */
    t0 = mono_ms();
    rc = acquire_ex(b, key, 1, 300, 0, &dec);
    t0 = mono_ms() - t0;
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "bulkhead_full"),
       "parking: nobody releases: denied bulkhead_full when wait_ms runs out "
       "(rc %d allow %d %s)",
       rc, dec.allow, dec.reason);
    OK(t0 >= 250, "parking: not denied before wait_ms (%lld ms)", t0);
    integ_get_status(a, key, DEADLINE_MS, &s);
    IS(s.bh_queued, 0, "parking: nothing left queued");
    report_ok(a, key, p2.permit);
    if (pc.dec.allow)
        report_ok(b, key, pc.dec.permit);

    /* Parked on a limiter: answered once a token has refilled (venue.*:
     * 60 per minute, one token a second). */
    rc = acquire_ex(a, "venue.park", 60, 0, 0, &dec);
    OK(rc == 0 && dec.allow, "parking: venue.park bucket emptied (cost 60)");
    report_ok(a, "venue.park", dec.permit);
    t0 = mono_ms();
    rc = acquire_ex(b, "venue.park", 1, 3000, 0, &dec);
    t0 = mono_ms() - t0;
    OK(rc == 0 && dec.allow && !strcmp(dec.reason, "ok"),
       "parking: a request parked on the limiter passes once it refills "
       "(rc %d allow %d %s)",
       rc, dec.allow, dec.reason);
    OK(t0 >= 900, "parking: ...not before the token is there (%lld ms)", t0);
    if (dec.allow)
        report_ok(b, "venue.park", dec.permit);
out:
    resil_close(a);
    resil_close(b);
}

/* --- two client processes ------------------------------------------------ */

struct report_out {
    int rc_acq, rc_rep;
    struct resil_report_result rr;
};

/* Child A: a call that the venue answered 429 with Retry-After 1.5 s. */
static void child_429(resil_t *r, const char *key, void *out)
{
    struct report_out *o = out;
    struct resil_decision d;

    o->rc_acq = acquire(r, key, &d);
    o->rc_rep = report_ex(r, key, d.allow ? d.permit : 0, RESIL_FAILURE,
                          "rate_limited", 0, 0, 1500, &o->rr);
}

static void test_venue_429(const struct test_daemon *d)
{
    const char *key = "binance.px";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct report_out o;
    struct resil_decision dec;
    struct kstat s;
    int rc;

    rc = child_run(d->sock, child_429, key, &o, sizeof(o), 0, NULL);
    OK(rc == 0 && o.rc_rep == 0,
       "429: process A reported rate_limited with "
       "retry_after_ms 1500 (rc %d)",
       o.rc_rep);
    OK(o.rr.retry && o.rr.retry_delay_ms >= 1500 && o.rr.transient,
       "429: A is advised a retry no sooner than the pause (retry %d, delay "
       "%llu)",
       o.rr.retry, (unsigned long long)o.rr.retry_delay_ms);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "rate_limited"),
       "429: process B's next acquire is denied rate_limited (allow %d %s)",
       dec.allow, dec.reason);
    OK(dec.retry_after_ms > 1000 && dec.retry_after_ms <= 1500,
       "429: B's retry_after_ms %llu in (1000, 1500]",
       (unsigned long long)dec.retry_after_ms);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.lim_paused_ms > 0 && s.lim_paused_ms <= 1500,
       "429: status limiter paused_ms %lld", s.lim_paused_ms);
    resil_close(r);
}

/* Child: one normal acquire of key. */
static void child_acquire(resil_t *r, const char *key, void *out)
{
    struct resil_decision *dec = out;

    if (acquire(r, key, dec) != 0)
        dec->allow = -1;
}

/* A 429 on a key without a limiter of its own pauses the nearest
 * ancestor's (kraken), with the limiter's pause_ms when the venue gave no
 * Retry-After: another process calling another kraken key backs off. */
static void test_venue_429_ancestor(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_report_result rr;
    struct resil_decision dec;
    struct kstat s;
    int rc;

    rc = report_ex(r, "kraken.spot", 0, RESIL_FAILURE, "rate_limited.ip", 0, 0,
                   -1, &rr);
    OK(rc == 0 && rr.retry && rr.retry_delay_ms >= 800,
       "429 ancestor: reported without Retry-After; retry no sooner than "
       "pause_ms 800 (delay %llu)",
       (unsigned long long)rr.retry_delay_ms);
    memset(&dec, 0, sizeof(dec));
    rc = child_run(d->sock, child_acquire, "kraken.futures", &dec, sizeof(dec),
                   0, NULL);
    OK(rc == 0 && dec.allow == 0 && !strcmp(dec.reason, "rate_limited") &&
           dec.retry_after_ms > 0 && dec.retry_after_ms <= 800,
       "429 ancestor: another process on kraken.futures is rate_limited, "
       "retry_after %llu in (0, 800] (allow %d %s)",
       (unsigned long long)dec.retry_after_ms, dec.allow, dec.reason);
    integ_get_status(r, "kraken", DEADLINE_MS, &s);
    OK(s.found && s.lim_paused_ms > 0 && s.lim_paused_ms <= 800,
       "429 ancestor: the account limiter is paused (%lld ms)",
       s.lim_paused_ms);
    resil_close(r);
}

/* A parked request whose process dies is dropped: a later release is not
 * handed to it. */
static void test_killed_parked(const struct test_daemon *d)
{
    const char *key = "pool.q";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision p1, p2, dec;
    struct kstat s;
    long long end;
    pid_t pid;
    int rc;

    OK(acquire(r, key, &p1) == 0 && p1.allow && acquire(r, key, &p2) == 0 &&
           p2.allow,
       "killed parked: both slots held");
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        resil_t *cr = integ_open(d->sock, DEADLINE_MS);
        struct resil_decision cd;

        acquire_ex(cr, key, 1, 20000, 0, &cd); /* parks until killed */
        _exit(0);
    }
    end = mono_ms() + POLL_MS;
    while (integ_get_status(r, key, DEADLINE_MS, &s) == 0 && s.bh_queued != 1 &&
           mono_ms() < end)
        sleep_ms(20);
    OK(pid > 0 && s.bh_queued == 1,
       "killed parked: the child's request is "
       "parked (queued %lld)",
       s.bh_queued);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    end = mono_ms() + POLL_MS;
    while (integ_get_status(r, key, DEADLINE_MS, &s) == 0 && s.bh_queued != 0 &&
           mono_ms() < end)
        sleep_ms(20);
    IS(s.bh_queued, 0, "killed parked: SIGKILL drops the parked request");
    report_ok(r, key, p1.permit);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.bh_in_use == 1 && s.outstanding == 1,
       "killed parked: the released slot is not granted to the dead client "
       "(in_use %lld outstanding %lld)",
       s.bh_in_use, s.outstanding);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && dec.allow, "killed parked: a live client gets it");
    report_ok(r, key, dec.permit);
    report_ok(r, key, p2.permit);
    resil_close(r);
}

struct hold_out {
    int allowed;
};

/* Child: take both bulkhead slots of key and keep them. */
static void child_hold2(resil_t *r, const char *key, void *out)
{
    struct hold_out *o = out;
    struct resil_decision d;
    int i;

    for (i = 0; i < 2; i++)
        if (acquire(r, key, &d) == 0 && d.allow)
            o->allowed++;
}

static void test_killed_client(const struct test_daemon *d)
{
    const char *key = "pool.k";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct hold_out o;
    struct kstat s;
    long long end;
    pid_t pid = 0;
    int rc;

    rc = child_run(d->sock, child_hold2, key, &o, sizeof(o), 1, &pid);
    OK(rc == 0 && o.allowed == 2,
       "killed client: the child holds both "
       "slots (%d)",
       o.allowed);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "bulkhead_full"),
       "killed client: meanwhile bulkhead_full (%s)", dec.reason);
    integ_get_status(r, key, DEADLINE_MS, &s);
    OK(s.bh_in_use == 2 && s.outstanding == 2,
       "killed client: in_use %lld outstanding %lld", s.bh_in_use,
       s.outstanding);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    end = mono_ms() + POLL_MS;
    while (integ_get_status(r, key, DEADLINE_MS, &s) == 0 && s.bh_in_use != 0 &&
           mono_ms() < end)
        sleep_ms(20);
    OK(s.bh_in_use == 0 && s.outstanding == 0,
       "killed client: SIGKILL returns its permits (in_use %lld "
       "outstanding %lld)",
       s.bh_in_use, s.outstanding);
    OK(s.failures == 0 && !strcmp(s.state, "closed"),
       "killed client: released, not counted as failures (%lld, %s)",
       s.failures, s.state);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && dec.allow, "killed client: an acquire succeeds again");
    report_ok(r, key, dec.permit);
    resil_close(r);
}

struct crit_out {
    int rc[3];
    struct resil_decision d[3];
};

/* Child: three critical acquires. */
static void child_critical3(resil_t *r, const char *key, void *out)
{
    struct crit_out *o = out;
    int i;

    for (i = 0; i < 3; i++)
        o->rc[i] = acquire_ex(r, key, 1, 0, 1, &o->d[i]);
}

/* reserve: 2 of the limiter's 5 tokens only critical requests may use. */
static void test_critical_reserve(const struct test_daemon *d)
{
    const char *key = "crit.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision n[4];
    struct crit_out o;
    struct kstat s;
    int i, rc, ok = 1;

    for (i = 0; i < 3; i++)
        ok &= acquire(r, key, &n[i]) == 0 && n[i].allow;
    OK(ok, "reserve: 3 normal requests use the unreserved 3 of 5 tokens");
    rc = acquire(r, key, &n[3]);
    OK(rc == 0 && !n[3].allow && !strcmp(n[3].reason, "rate_limited") &&
           n[3].retry_after_ms > 0,
       "reserve: a 4th normal request is denied rate_limited, retry_after "
       "%llu (%s)",
       (unsigned long long)n[3].retry_after_ms, n[3].reason);
    rc = child_run(d->sock, child_critical3, key, &o, sizeof(o), 0, NULL);
    OK(rc == 0 && o.rc[0] == 0 && o.d[0].allow && o.rc[1] == 0 && o.d[1].allow,
       "reserve: another process's critical requests pass on the reserve "
       "(%d, %d)",
       o.d[0].allow, o.d[1].allow);
    OK(o.rc[2] == 0 && !o.d[2].allow && !strcmp(o.d[2].reason, "rate_limited"),
       "reserve: a third critical request finds the reserve spent (%s)",
       o.d[2].reason);
    rc = acquire(r, key, &n[3]);
    OK(rc == 0 && !n[3].allow, "reserve: normal requests still denied");
    integ_get_status(r, key, DEADLINE_MS, &s);
    IS(s.lim_available, 0, "reserve: status available 0");
    for (i = 0; i < 3; i++)
        report_ok(r, key, n[i].permit);
    resil_close(r);
}

/* critical_probe_per_s: an open breaker still admits critical requests at
 * that rate. */
static void test_critical_probe(const struct test_daemon *d)
{
    const char *key = "cprobe.a";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec, c1, c2;
    struct resil_report_result rr;
    int rc;

    rc = report_ex(r, key, 0, RESIL_FAILURE, "network.reset", 0, 0, -1, &rr);
    OK(rc == 0 && !strcmp(rr.state, "open"), "critical probe: opened (%s)",
       rr.state);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "circuit_open"),
       "critical probe: a normal request is denied circuit_open (%s)",
       dec.reason);
    rc = acquire_ex(r, key, 1, 0, 1, &c1);
    OK(rc == 0 && c1.allow && c1.permit && !strcmp(c1.state, "open"),
       "critical probe: a critical request passes the open breaker (allow "
       "%d, %s)",
       c1.allow, c1.state);
    rc = acquire_ex(r, key, 1, 0, 1, &c2);
    OK(rc == 0 && !c2.allow && !strcmp(c2.reason, "circuit_open"),
       "critical probe: a second within the second is denied (1/s) (%s)",
       c2.reason);
    rc = report_ok(r, key, c1.permit);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.state, "open"),
       "critical probe: its success does not close the breaker (%s)",
       dec.state);
    resil_close(r);
}

/* --- venue re-sync ------------------------------------------------------- */

/* report with limit {remaining, reset_ms} through resil_call. */
static int report_limit(resil_t *r, const char *key, uint64_t remaining,
                        char *state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct reply rep;
    char code[24] = "";
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, key);
    proto_pack_cstr(&pk, "outcome");
    proto_pack_cstr(&pk, "success");
    proto_pack_cstr(&pk, "limit");
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "remaining");
    msgpack_pack_uint64(&pk, remaining);
    proto_pack_cstr(&pk, "reset_ms");
    msgpack_pack_uint64(&pk, 1000);
    rc = integ_call(r, "report", &sb, DEADLINE_MS, &rep, code);
    msgpack_sbuffer_destroy(&sb);
    state[0] = '\0';
    if (rc == 0)
        proto_str_copy(proto_map_get(&rep.obj, "state"), state, 16);
    else
        DIAG("report limit: rc %d code %s", rc, code);
    reply_free(&rep);
    return rc;
}

static void test_resync(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct kstat s;
    char state[16];
    int rc;

    rc = acquire(r, "venue.a", &dec);
    OK(rc == 0 && dec.allow, "re-sync: the venue key admits (59 of 60 left)");
    report_ok(r, "venue.a", dec.permit);
    rc = report_limit(r, "venue.a", 0, state);
    OK(rc == 0 && !strcmp(state, "closed"),
       "re-sync: report with limit {remaining: 0} answers (rc %d, %s)", rc,
       state);
    rc = acquire(r, "venue.a", &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "rate_limited") &&
           dec.retry_after_ms > 0 && dec.retry_after_ms <= 1000,
       "re-sync: the next acquire is rate_limited, retry_after %llu in "
       "(0, 1000] (%s)",
       (unsigned long long)dec.retry_after_ms, dec.reason);
    rc = report_limit(r, "venue.b", 5, state);
    integ_get_status(r, "venue.b", DEADLINE_MS, &s);
    OK(rc == 0 && s.lim_available >= 5 && s.lim_available <= 10,
       "re-sync: remaining 5 lowers a full bucket to ~5 (%lld)",
       s.lim_available);
    resil_close(r);
}

/* --- retry advice -------------------------------------------------------- */

static void test_retry_advice(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_report_result rr;
    struct resil_decision dec;
    int rc;

    rc =
        report_ex(r, "rt.a", 0, RESIL_FAILURE, "validation.qty", 0, 0, -1, &rr);
    OK(rc == 0 && !rr.retry && !strcmp(rr.retry_reason, "permanent") &&
           !rr.transient && !strcmp(rr.severity, "low"),
       "retry: validation.qty: retry false, permanent, low (%d %s %d %s)",
       rr.retry, rr.retry_reason, rr.transient, rr.severity);
    rc = report_ex(r, "rt.a", 0, RESIL_UNKNOWN, "timeout", 0, 1, -1, &rr);
    OK(rc == 0 && !rr.retry && !strcmp(rr.retry_reason, "reconcile"),
       "retry: unknown outcome, not idempotent: reconcile (%d %s)", rr.retry,
       rr.retry_reason);
    rc = report_ex(r, "rt.a", 0, RESIL_UNKNOWN, "timeout", 0, 0, -1, &rr);
    OK(rc == 0 && rr.retry && !strcmp(rr.retry_reason, "ok"),
       "retry: unknown outcome, idempotent: retry ok (%d %s)", rr.retry,
       rr.retry_reason);
    rc = report_ex(r, "rt.a", 0, RESIL_FAILURE, "network.reset", 1, 0, -1, &rr);
    OK(rc == 0 && rr.retry && rr.retry_delay_ms == 100 &&
           !strcmp(rr.retry_reason, "ok"),
       "retry: transient, attempt 1: retry after base_ms 100 (%d %llu %s)",
       rr.retry, (unsigned long long)rr.retry_delay_ms, rr.retry_reason);
    rc = report_ex(r, "rt.a", 0, RESIL_FAILURE, "network.reset", 3, 0, -1, &rr);
    OK(rc == 0 && !rr.retry && !strcmp(rr.retry_reason, "max_attempts"),
       "retry: attempt 3 of max_attempts 3: max_attempts (%d %s)", rr.retry,
       rr.retry_reason);

    /* errors.classes overrides the built-in classification. */
    rc = report_ex(r, "rt.a", 0, RESIL_FAILURE, "network.reset", 1, 0, -1, &rr);
    OK(rc == 0 && !strcmp(rr.severity, "high") && rr.transient,
       "classes: network.* configured high, still transient (%s %d)",
       rr.severity, rr.transient);
    rc = report_ex(r, "rt.a", 0, RESIL_FAILURE, "exchange.odd", 1, 0, -1, &rr);
    OK(rc == 0 && !strcmp(rr.severity, "critical") && !rr.transient &&
           !rr.retry && !strcmp(rr.retry_reason, "permanent"),
       "classes: exchange.odd configured critical, permanent: no retry (%s "
       "%d %s)",
       rr.severity, rr.transient, rr.retry_reason);
    rc = report_ex(r, "rt.a", 0, RESIL_FAILURE, "auth.expired", 1, 0, -1, &rr);
    OK(rc == 0 && !strcmp(rr.severity, "medium") && rr.transient,
       "classes: built-in auth.expired stays medium, transient (%s %d)",
       rr.severity, rr.transient);

    /* Never sooner than the breaker lets it through. */
    rc = report_ex(r, "rtopen.a", 0, RESIL_FAILURE, "network.reset", 1, 0, -1,
                   &rr);
    OK(rc == 0 && !strcmp(rr.state, "open") && rr.retry &&
           !strcmp(rr.retry_reason, "ok"),
       "retry: failure that opens the breaker: retry advised (%s %d %s)",
       rr.state, rr.retry, rr.retry_reason);
    rc = acquire(r, "rtopen.a", &dec);
    OK(rc == 0 && !dec.allow && dec.retry_after_ms > 0 &&
           rr.retry_delay_ms >= dec.retry_after_ms && rr.retry_delay_ms > 1000,
       "retry: delay_ms %llu >= the breaker's retry_after_ms %llu (base "
       "100)",
       (unsigned long long)rr.retry_delay_ms,
       (unsigned long long)dec.retry_after_ms);
    rc = report_ex(r, "rtlong.a", 0, RESIL_FAILURE, "network.reset", 1, 0, -1,
                   &rr);
    OK(rc == 0 && !rr.retry && !strcmp(rr.retry_reason, "circuit_open"),
       "retry: breaker open longer than max_ms: circuit_open (%d %s)", rr.retry,
       rr.retry_reason);
    rc = report_ex(r, "rtbudget.a", 0, RESIL_FAILURE, "network.reset", 1, 0, -1,
                   &rr);
    OK(rc == 0 && !rr.retry && !strcmp(rr.retry_reason, "budget_exhausted"),
       "retry: no budget: budget_exhausted (%d %s)", rr.retry, rr.retry_reason);
    rc = report_ex(r, "rt.a", 0, RESIL_SUCCESS, NULL, 0, 0, -1, &rr);
    OK(rc == 0 && !rr.retry && rr.retry_reason[0] == '\0',
       "retry: a success carries no advice ('%s')", rr.retry_reason);
    resil_close(r);
}

/* An operator's reset ends a venue pause (a mistaken 429 with a long
 * Retry-After must not stop trading until it runs out). */
static void test_reset_clears_pause(const struct test_daemon *d)
{
    const char *key = "venue.reset";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct reply rep;
    char code[24];
    int rc;

    report_ex(r, key, 0, RESIL_FAILURE, "rate_limited", 0, 0, 3600000, NULL);
    rc = acquire(r, key, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "rate_limited") &&
           dec.retry_after_ms > 3000000,
       "reset: a 429 with Retry-After 1 h pauses the key (retry_after %llu)",
       (unsigned long long)dec.retry_after_ms);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    proto_kv_str(&pk, "key", key);
    rc = integ_call(r, "reset", &sb, DEADLINE_MS, &rep, code);
    msgpack_sbuffer_destroy(&sb);
    reply_free(&rep);
    IS(rc, 0, "reset: answers");
    rc = acquire(r, key, &dec);
    OK(rc == 0 && dec.allow, "reset: the pause is over (%s)", dec.reason);
    report_ok(r, key, dec.permit);
    resil_close(r);
}

/*
 * A call that times out must not cost the handle its other permits: the
 * daemon takes back every permit of a connection that closes.  The daemon
 * is stopped (SIGSTOP) so that a ping with a short deadline times out
 * while the handle holds a bulkhead slot; the slot must stay held.  An
 * acquire that times out the same way and is granted late is handed back
 * (report "ignore") by the next call on the handle.
 */
static void test_timeout_keeps_permits(const struct test_daemon *d)
{
    const char *key = "pool.t";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    resil_t *other = integ_open(d->sock, DEADLINE_MS);
    struct resil_acquire_opts o = {0};
    struct resil_decision p1, p2, late, dec;
    struct resil_report_result rr;
    struct kstat s;
    long long end;
    int rc;

    OK(acquire(r, key, &p1) == 0 && p1.allow && acquire(r, key, &p2) == 0 &&
           p2.allow,
       "timeout: the handle holds both slots");
    kill(d->pid, SIGSTOP);
    rc = resil_ping(r, 20, NULL, 0, NULL);
    kill(d->pid, SIGCONT);
    OK(rc == RESIL_ETIMEDOUT,
       "timeout: a ping times out while the daemon "
       "is stopped (rc %d)",
       rc);
    sleep_ms(BACKOFF_WAIT_MS); /* let the handle's back-off pass */
    rc = acquire(other, key, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "bulkhead_full"),
       "timeout: another client still finds the bulkhead full (rc %d, %s)", rc,
       dec.reason);
    rc = report_ok(r, key, p1.permit);
    IS(rc, 0, "timeout: the held permit reports fine afterwards");
    report_ex(r, key, p2.permit, RESIL_SUCCESS, NULL, 0, 0, -1, &rr);
    OK(!rr.stale, "timeout: and is not stale (the connection was kept)");

    /* An acquire given up on, granted late. */
    o.deadline_ms = 20;
    kill(d->pid, SIGSTOP);
    rc = resil_acquire(r, key, &o, &late);
    kill(d->pid, SIGCONT);
    OK(rc == RESIL_ETIMEDOUT && late.fallback,
       "late grant: the acquire times out with a fallback (rc %d)", rc);
    sleep_ms(BACKOFF_WAIT_MS);
    IS(resil_ping(r, DEADLINE_MS, NULL, 0, NULL), 0,
       "late grant: the next call on the handle answers");
    end = mono_ms() + POLL_MS;
    while (integ_get_status(other, key, DEADLINE_MS, &s) == 0 &&
           s.bh_in_use != 0 && mono_ms() < end)
        sleep_ms(20);
    OK(s.bh_in_use == 0 && s.outstanding == 0 && s.failures == 0,
       "late grant: the permit went back as ignored (in_use %lld, "
       "outstanding %lld, failures %lld)",
       s.bh_in_use, s.outstanding, s.failures);
    resil_close(other);
    resil_close(r);
}

int main(void)
{
    struct test_daemon d;
    resil_t *r;

    if (!OK(daemon_start(&d, CONFIG) == 0, "resild starts"))
        return tap_done();
    r = integ_open(d.sock, DEADLINE_MS);
    test_weighted_cost(r);
    test_hierarchy(r);
    test_cost_over_burst(r);
    test_bulkhead(r);
    resil_close(r);
    test_parking(&d);
    test_venue_429(&d);
    test_venue_429_ancestor(&d);
    test_killed_client(&d);
    test_killed_parked(&d);
    test_critical_reserve(&d);
    test_critical_probe(&d);
    test_resync(&d);
    test_retry_advice(&d);
    test_reset_clears_pause(&d);
    test_timeout_keeps_permits(&d);
    if (tap_failures)
        daemon_dump_log(&d);
    IS(daemon_stop(&d), 0, "resild exits 0 on SIGTERM");
    daemon_cleanup(&d);
    return tap_done();
}
