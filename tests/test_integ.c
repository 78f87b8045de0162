/*
 * test_integ.c - libresil and resilctl against a real resild, plus the
 * fallback paths against fake daemons this test builds itself (one that
 * never accepts, one that accepts and never answers, one that answers
 * garbage, one that hangs up).
 *
 * Deadlines are >= 2000 ms wherever the daemon is expected to answer
 * (sanitizer builds are slow); every wait for a state change polls with a
 * bound, never a fixed sleep followed by an assertion.  SIGPIPE is left at
 * its default on purpose: a send that raised it would kill this process.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"
#include "integ_util.h"
#include "proto.h"
#include "resil.h"
#include "tap.h"

#define DEADLINE_MS 2000
#define BREAKER_CONFIG                                                         \
    "{\"policies\": {\"*\": {\"breaker\": {\"failure_threshold\": 5, "         \
    "\"open_ms\": 300, \"success_threshold\": 2, "                             \
    "\"half_open_max_calls\": 1}}}}"

/*
 * Allocation counter for the "no allocation per call" promise of resil.h.
 * The executable's malloc/calloc/realloc override glibc's and count while
 * counting is on.  Not under ASan, whose own allocator must stay in charge.
 */
#ifndef __SANITIZE_ADDRESS__
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
static int alloc_counting;
static long alloc_count;

void *malloc(size_t n)
{
    if (__atomic_load_n(&alloc_counting, __ATOMIC_RELAXED))
        __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    if (__atomic_load_n(&alloc_counting, __ATOMIC_RELAXED))
        __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    if (__atomic_load_n(&alloc_counting, __ATOMIC_RELAXED))
        __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
#endif

static struct resil_report report_of(const char *key, uint64_t permit,
                                     enum resil_outcome outcome)
{
    struct resil_report rep = {0};

    rep.key = key;
    rep.permit = permit;
    rep.outcome = outcome;
    rep.latency_ms = 12;
    rep.retry_after_ms = -1;
    if (outcome == RESIL_FAILURE)
        rep.error_class = "network.reset";
    return rep;
}

static int report(resil_t *r, const char *key, uint64_t permit,
                  enum resil_outcome outcome, struct resil_report_result *rr)
{
    struct resil_report rep = report_of(key, permit, outcome);

    return resil_report(r, &rep, rr);
}

/* acquire + report failure, n times.  Returns the last report's state in
 * state (cap 16) and 0, or -1 if an acquire was denied or a call failed. */
static int fail_n(resil_t *r, const char *key, int n, char *state)
{
    struct resil_decision d;
    struct resil_report_result rr;
    int i;

    for (i = 0; i < n; i++) {
        if (acquire(r, key, &d) != 0 || !d.allow)
            return -1;
        if (report(r, key, d.permit, RESIL_FAILURE, &rr) != 0)
            return -1;
        strcpy(state, rr.state);
    }
    return 0;
}

/* Pack a params map {"key": key, "state": state[, "reason": reason]}. */
static void pack_force(msgpack_sbuffer *sb, const char *key, const char *state,
                       const char *reason)
{
    msgpack_packer pk;
    const char *kv[6] = {"key", key, "state", state, "reason", reason};
    int i, n = reason ? 3 : 2;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)n);
    for (i = 0; i < 2 * n; i++)
        proto_pack_cstr(&pk, kv[i]);
}

/* Call method with params and copy the result's "state" (if a map has one)
 * into state.  Returns resil_call's code. */
static int call_state(resil_t *r, const char *method, msgpack_sbuffer *sb,
                      char *state, size_t cap, char *code)
{
    msgpack_zone zone;
    msgpack_object obj;
    void *res = NULL;
    size_t len = 0, off = 0;
    uint32_t i;
    int rc;

    state[0] = '\0';
    rc = resil_call(r, method, sb ? sb->data : NULL, sb ? sb->size : 0,
                    DEADLINE_MS, &res, &len, code, NULL, 24);
    if (rc != 0)
        return rc;
    msgpack_zone_init(&zone, 1024);
    if (msgpack_unpack(res, len, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS &&
        obj.type == MSGPACK_OBJECT_MAP)
        for (i = 0; i < obj.via.map.size; i++) {
            msgpack_object *k = &obj.via.map.ptr[i].key;
            msgpack_object *v = &obj.via.map.ptr[i].val;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 5 &&
                !memcmp(k->via.str.ptr, "state", 5) &&
                v->type == MSGPACK_OBJECT_STR && v->via.str.size < cap) {
                memcpy(state, v->via.str.ptr, v->via.str.size);
                state[v->via.str.size] = '\0';
            }
        }
    msgpack_zone_destroy(&zone);
    free(res);
    return rc;
}

static int force(resil_t *r, const char *key, const char *state,
                 const char *reason, char *new_state)
{
    msgpack_sbuffer sb;
    char code[24];
    int rc;

    pack_force(&sb, key, state, reason);
    rc = call_state(r, "force", &sb, new_state, 16, code);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* --- tests against the real daemon ------------------------------------ */

static void test_ping(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    char version[32];
    long pid = 0;

    IS(resil_ping(r, 0, version, sizeof(version), &pid), 0, "ping answers");
    OK(version[0] != '\0', "ping gives a version ('%s')", version);
    IS(pid, d->pid, "ping gives the daemon's pid");
    resil_close(r);
}

static void test_acquire_new_key(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    int rc = acquire(r, "integ.new", &dec);

    IS(rc, 0, "acquire on a new key answers");
    OK(dec.allow && dec.permit > 0 && !dec.fallback,
       "new key: allowed with a permit (allow=%d permit=%llu fallback=%d)",
       dec.allow, (unsigned long long)dec.permit, dec.fallback);
    OK(!strcmp(dec.state, "closed"), "new key: state closed (%s)", dec.state);
    OK(!strcmp(dec.reason, "ok"), "new key: reason ok (%s)", dec.reason);
    IS(report(r, "integ.new", dec.permit, RESIL_SUCCESS, &rr), 0,
       "report success answers");
    OK(!strcmp(rr.state, "closed") && !rr.stale,
       "report: state closed, not stale (%s, %d)", rr.state, rr.stale);
    rc = report(r, "integ.new", 0, RESIL_FAILURE, &rr);
    IS(rc, 0, "report without a permit answers");
    OK(rr.severity[0] != '\0', "failure report is classified (%s)",
       rr.severity);
    resil_close(r);
}

static void test_breaker_cycle(const struct test_daemon *d)
{
    const char *key = "integ.brk";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec, dec2;
    struct resil_report_result rr;
    char state[16] = "";
    long long t0, retry0;

    OK(fail_n(r, key, 5, state) == 0, "five failures reported with permits");
    OK(!strcmp(state, "open"), "fifth failure opens the breaker (%s)", state);
    t0 = mono_ms();
    IS(acquire(r, key, &dec), 0, "acquire on an open breaker answers");
    OK(!dec.allow && !strcmp(dec.reason, "circuit_open") && !dec.fallback,
       "open breaker denies: circuit_open (allow=%d reason=%s)", dec.allow,
       dec.reason);
    OK(dec.retry_after_ms > 0 && dec.retry_after_ms <= 300,
       "retry_after_ms in (0, 300] (%llu)",
       (unsigned long long)dec.retry_after_ms);
    OK(!strcmp(dec.state, "open"), "state open (%s)", dec.state);

    retry0 = (long long)dec.retry_after_ms;
    OK(integ_wait_probe(r, key, 5000, &dec) == 0,
       "a probe is admitted after open_ms");
    OK(mono_ms() - t0 + 5 >= retry0,
       "no probe before retry_after_ms passed (%lld >= %lld ms)",
       mono_ms() - t0, retry0);
    OK(!strcmp(dec.state, "half_open"), "probe state half_open (%s)",
       dec.state);
    IS(acquire(r, key, &dec2), 0, "second acquire during the probe answers");
    OK(!dec2.allow && !strcmp(dec2.reason, "half_open_busy"),
       "second concurrent probe denied: half_open_busy (%s)", dec2.reason);
    IS(report(r, key, dec.permit, RESIL_SUCCESS, &rr), 0, "probe 1 success");
    OK(!strcmp(rr.state, "half_open"), "one success: still half_open (%s)",
       rr.state);
    IS(acquire(r, key, &dec), 0, "probe 2 acquire");
    OK(dec.allow && !strcmp(dec.state, "half_open"),
       "probe 2 admitted in half_open (%d %s)", dec.allow, dec.state);
    IS(report(r, key, dec.permit, RESIL_SUCCESS, &rr), 0, "probe 2 success");
    OK(!strcmp(rr.state, "closed"), "two probe successes close it (%s)",
       rr.state);
    IS(acquire(r, key, &dec), 0, "acquire after closing");
    OK(dec.allow && !strcmp(dec.state, "closed"), "closed again allows (%s)",
       dec.state);
    report(r, key, dec.permit, RESIL_SUCCESS, NULL);

    /* A probe failure re-opens it. */
    OK(fail_n(r, key, 5, state) == 0 && !strcmp(state, "open"),
       "five failures open it again (%s)", state);
    OK(integ_wait_probe(r, key, 5000, &dec) == 0 &&
           !strcmp(dec.state, "half_open"),
       "probe admitted again (%s)", dec.state);
    IS(report(r, key, dec.permit, RESIL_FAILURE, &rr), 0, "probe failure");
    OK(!strcmp(rr.state, "open"), "probe failure re-opens (%s)", rr.state);
    IS(acquire(r, key, &dec), 0, "acquire after re-open");
    OK(!dec.allow && !strcmp(dec.reason, "circuit_open") &&
           dec.retry_after_ms > 0 && dec.retry_after_ms <= 300,
       "re-opened: circuit_open, retry_after %llu",
       (unsigned long long)dec.retry_after_ms);
    resil_close(r);
}

static void test_force_reset(const struct test_daemon *d)
{
    const char *key = "integ.force";
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    char state[16];

    IS(force(r, key, "open", "maint", state), 0, "force open answers");
    OK(!strncmp(state, "forced_open", 11) || !strcmp(state, "open"),
       "force returns the key's status (state %s)", state);
    IS(acquire(r, key, &dec), 0, "acquire on forced-open key");
    OK(!dec.allow && !strcmp(dec.reason, "forced_open"),
       "forced open denies: forced_open (%s)", dec.reason);
    IS(force(r, key, "auto", NULL, state), 0, "force auto answers");
    IS(acquire(r, key, &dec), 0, "acquire after auto");
    OK(dec.allow && !strcmp(dec.state, "closed"), "auto: allowed again (%s)",
       dec.state);
    report(r, key, dec.permit, RESIL_SUCCESS, NULL);

    IS(force(r, key, "open", "maint", state), 0, "force open again");
    {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        char code[24];

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "key");
        proto_pack_cstr(&pk, key);
        IS(call_state(r, "reset", &sb, state, sizeof(state), code), 0,
           "reset answers");
        msgpack_sbuffer_destroy(&sb);
    }
    OK(!strcmp(state, "closed"), "reset: state closed (%s)", state);
    IS(acquire(r, key, &dec), 0, "acquire after reset");
    OK(dec.allow && !strcmp(dec.state, "closed"), "reset key allows (%s)",
       dec.state);
    report(r, key, dec.permit, RESIL_SUCCESS, NULL);
    resil_close(r);
}

static void test_remote_errors(const struct test_daemon *d)
{
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report_result rr;
    struct resil_report rep;
    char code[24], msg[128], state[16];
    void *res = NULL;
    size_t len = 0;
    int rc;

    /* A malformed key is refused by libresil itself (every malformed
     * argument: tests/test_client_args.c); the daemon's bad_request is
     * test_integ_admit's cost-over-burst case. */
    rc = acquire(r, "bad key!", &dec);
    IS(rc, RESIL_EINVAL, "bad key: RESIL_EINVAL");
    OK(!dec.allow && !strcmp(dec.reason, "invalid_argument"),
       "bad key: allow=0 (%s %d)", dec.reason, dec.allow);
    rep = report_of("bad key!", 0, RESIL_FAILURE);
    IS(resil_report(r, &rep, &rr), RESIL_EINVAL, "report bad key: EINVAL");

    rc = resil_call(r, "no.such.method", NULL, 0, DEADLINE_MS, &res, &len, code,
                    msg, sizeof(code));
    IS(rc, RESIL_EREMOTE, "unknown method: RESIL_EREMOTE");
    OK(!strcmp(code, "no_such_method"), "unknown method: no_such_method (%s)",
       code);
    OK(res == NULL && len == 0, "no result on an error");

    /* The connection stays usable after bad_request. */
    IS(acquire(r, "integ.after_error", &dec), 0, "acquire after errors");
    OK(dec.allow, "allowed after errors");
    report(r, "integ.after_error", dec.permit, RESIL_SUCCESS, NULL);

    IS(acquire(r, NULL, &dec), RESIL_EINVAL, "NULL key: RESIL_EINVAL");
    IS(acquire(r, "k", NULL), RESIL_EINVAL, "NULL out: RESIL_EINVAL");
    IS(resil_report(r, NULL, NULL), RESIL_EINVAL, "NULL report: EINVAL");
    IS(resil_call(r, "ping", "\x01", 1, 0, &res, &len, NULL, NULL, 0),
       RESIL_EINVAL, "params that are not a map: EINVAL");
    IS(call_state(r, "status", NULL, state, sizeof(state), code), 0,
       "status via resil_call");
    resil_close(r);
}

/* acquire/report/ping allocate nothing once the handle is warm. */
static void test_no_alloc(const struct test_daemon *d)
{
#ifdef COUNT_ALLOCS
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    struct resil_report rep;
    int i, errors = 0;

    /* Warm up: connect, first zone chunk. */
    acquire(r, "integ.noalloc", &dec);
    report(r, "integ.noalloc", dec.permit, RESIL_SUCCESS, NULL);
    __atomic_store_n(&alloc_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&alloc_counting, 1, __ATOMIC_RELAXED);
    for (i = 0; i < 100; i++) {
        errors += acquire(r, "integ.noalloc", &dec) != 0;
        rep = report_of("integ.noalloc", dec.permit,
                        i % 2 ? RESIL_SUCCESS : RESIL_IGNORE);
        rep.correlation_id = "ord-1";
        errors += resil_report(r, &rep, NULL) != 0;
        errors += resil_ping(r, 0, NULL, 0, NULL) != 0;
    }
    __atomic_store_n(&alloc_counting, 0, __ATOMIC_RELAXED);
    IS(errors, 0, "300 warm calls answered");
    IS(alloc_count, 0, "no allocation in 100 acquire+report+ping");
    {
        void *res = NULL;
        size_t len = 0;

        __atomic_store_n(&alloc_counting, 1, __ATOMIC_RELAXED);
        resil_call(r, "ping", NULL, 0, 0, &res, &len, NULL, NULL, 0);
        __atomic_store_n(&alloc_counting, 0, __ATOMIC_RELAXED);
        OK(res && alloc_count > 0, "the counter sees resil_call's copy");
        free(res);
    }
    resil_close(r);
#else
    (void)d;
    OK(1, "# SKIP allocation count (ASan owns malloc)");
#endif
}

/* Several threads share one handle. */
struct thr_arg {
    resil_t *r;
    int errors;
};

static void *thr_main(void *p)
{
    struct thr_arg *a = p;
    struct resil_decision dec;
    int i;

    for (i = 0; i < 200; i++) {
        if (acquire(a->r, "integ.threads", &dec) != 0 || !dec.allow) {
            a->errors++;
            continue;
        }
        if (report(a->r, "integ.threads", dec.permit, RESIL_SUCCESS, NULL))
            a->errors++;
    }
    return NULL;
}

static void test_threads(const struct test_daemon *d)
{
    struct thr_arg a[4];
    pthread_t t[4];
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    int i, errors = 0;

    for (i = 0; i < 4; i++) {
        a[i].r = r;
        a[i].errors = 0;
        pthread_create(&t[i], NULL, thr_main, &a[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        errors += a[i].errors;
    }
    IS(errors, 0, "4 threads x 200 acquire+report on one handle");
    resil_close(r);
}

/* --- resilctl ------------------------------------------------------------ */

/* s without its trailing newline, for one-line test names. */
static const char *chomp(char *s)
{
    size_t n = strlen(s);

    if (n && s[n - 1] == '\n')
        s[n - 1] = '\0';
    return s;
}

static int count_lines(const char *s)
{
    int n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_resilctl(const struct test_daemon *d)
{
    static char out[65536], err[4096];
    resil_t *r = integ_open(d->sock, DEADLINE_MS);
    struct resil_decision dec;
    json_error_t jerr;
    json_t *j;
    long long end;
    int rc, ok;

    acquire(r, "integ.ctl", &dec);
    report(r, "integ.ctl", dec.permit, RESIL_SUCCESS, NULL);

    rc = integ_run_ctl(d->dir, out, err, sizeof(err),
                       (const char *const[]){"-s", d->sock, "ping", NULL});
    IS(rc, 0, "resilctl ping exits 0");
    OK(!strncmp(out, "resild ", 7) && strstr(out, " pid ") &&
           strstr(out, " up "),
       "resilctl ping prints 'resild VERSION pid PID up DURATION'");

    rc = integ_run_ctl(d->dir, out, err, sizeof(out),
                       (const char *const[]){"-s", d->sock, "status", NULL});
    IS(rc, 0, "resilctl status exits 0");
    OK(strstr(out, "integ.ctl") != NULL, "status shows the key");
    OK(strstr(out, "KEY") && strstr(out, "STATE") && strstr(out, "FAIL%") &&
           strstr(out, "health:"),
       "status has a header and a health line");
    if (!strstr(out, "integ.ctl"))
        DIAG("stdout: %s stderr: %s", out, err);

    rc = integ_run_ctl(
        d->dir, out, err, sizeof(out),
        (const char *const[]){"-s", d->sock, "status", "integ", NULL});
    OK(rc == 0 && strstr(out, "integ.ctl"), "status PREFIX matches keys below");

    rc = integ_run_ctl(
        d->dir, out, err, sizeof(out),
        (const char *const[]){"-s", d->sock, "--json", "status", NULL});
    IS(rc, 0, "resilctl --json status exits 0");
    j = json_loads(out, 0, &jerr);
    OK(j && json_is_array(json_object_get(j, "keys")) &&
           json_is_string(json_object_get(j, "health")),
       "--json status is JSON with keys[] and health");
    json_decref(j);

    rc = integ_run_ctl(
        d->dir, out, err, sizeof(err),
        (const char *const[]){"-s", "/nonexistent/x.sock", "status", NULL});
    IS(rc, 3, "unreachable daemon: exit 3");
    ok = count_lines(err) == 1 &&
         !strncmp(err,
                  "resilctl: cannot reach resild at /nonexistent/x.sock: ", 54);
    OK(ok, "unreachable: one line naming the path (%s)", chomp(err));

    rc = integ_run_ctl(d->dir, out, err, sizeof(err),
                       (const char *const[]){"-s", d->sock, "trip",
                                             "integ.trip", "--for", "1s",
                                             "--reason", "x", NULL});
    IS(rc, 0, "resilctl trip --for 1s exits 0");
    if (rc)
        DIAG("stderr: %s", err);
    IS(acquire(r, "integ.trip", &dec), 0, "acquire tripped key");
    OK(!dec.allow && !strcmp(dec.reason, "forced_open"),
       "tripped key denied: forced_open (%s)", dec.reason);
    end = mono_ms() + 5000;
    while (acquire(r, "integ.trip", &dec) == 0 && !dec.allow && mono_ms() < end)
        sleep_ms(20);
    OK(dec.allow, "trip --for 1s expires back to auto");
    report(r, "integ.trip", dec.permit, RESIL_SUCCESS, NULL);

    rc =
        integ_run_ctl(d->dir, out, err, sizeof(err),
                      (const char *const[]){"-s", d->sock, "trip", "integ.trip",
                                            "--for", "10x", NULL});
    IS(rc, 2, "trip --for 10x: exit 2");
    ok = count_lines(err) == 1 && strstr(err, "'10x'");
    OK(ok, "bad duration: one line naming the value (%s)", chomp(err));

    rc = integ_run_ctl(d->dir, out, err, sizeof(err),
                       (const char *const[]){"-s", d->sock, "force",
                                             "integ.trip", "sideways", NULL});
    IS(rc, 2, "force with a bad state: exit 2");

    rc = integ_run_ctl(d->dir, out, err, sizeof(out),
                       (const char *const[]){"-s", d->sock, "force",
                                             "integ.trip", "open", "--reason",
                                             "a\x1b[31mb", NULL});
    IS(rc, 0, "force open with a reason exits 0");
    OK(strstr(out, "\\x1b") && !strchr(out, 0x1b),
       "peer text is escaped in the table");

    rc = integ_run_ctl(
        d->dir, out, err, sizeof(out),
        (const char *const[]){"-s", d->sock, "reset", "integ.trip", NULL});
    OK(rc == 0 && strstr(out, "closed"), "resilctl reset prints closed");

    rc = integ_run_ctl(d->dir, out, err, sizeof(out),
                       (const char *const[]){"-s", d->sock, "trip", "--",
                                             "-dash.k", "--for", "1s", NULL});
    OK(rc == 2, "after --, --for is an argument too: too many (rc %d)", rc);
    rc = integ_run_ctl(d->dir, out, err, sizeof(out),
                       (const char *const[]){"-s", d->sock, "trip", "--for",
                                             "1s", "--", "-dash.k", NULL});
    OK(rc == 0 && strstr(out, "-dash.k") && strstr(out, "forced_open"),
       "a key starting with '-' can be named after -- (rc %d)", rc);
    rc = integ_run_ctl(d->dir, out, err, sizeof(err),
                       (const char *const[]){"-s", "", "ping", NULL});
    OK(rc == 2 && count_lines(err) == 1,
       "-s '': exit 2 with one line, no silent default (rc %d)", rc);

    rc = integ_run_ctl(
        d->dir, out, err, sizeof(err),
        (const char *const[]){"-s", d->sock, "reset", "bad key!", NULL});
    IS(rc, 1, "daemon error: exit 1");
    OK(strstr(err, "bad_request") != NULL, "daemon error code printed");

    rc = integ_run_ctl(d->dir, out, err, sizeof(out),
                       (const char *const[]){"--help", NULL});
    OK(rc == 0 && strstr(out, "trip") && strstr(out, "e.g."),
       "--help lists commands with examples");
    rc = integ_run_ctl(d->dir, out, err, sizeof(err),
                       (const char *const[]){"frobnicate", NULL});
    IS(rc, 2, "unknown command: exit 2");
    resil_close(r);
}

/* --- fake daemons --------------------------------------------------------- */

enum fake_mode {
    FAKE_SILENT,  /* accepts, never answers */
    FAKE_GARBAGE, /* answers 0xc1 bytes (never valid msgpack) */
    FAKE_HOSTILE, /* answers a header declaring 4G elements */
    FAKE_HANGUP,  /* closes at once */
    FAKE_FLOOD,   /* answers nothing but a stream of notifications */
    FAKE_EVIL,    /* answers each request with a status full of escapes */
};

struct fake {
    char path[108];
    int lfd;
    int stop[2];
    enum fake_mode mode;
    pthread_t thr;
};

static int listen_at(const char *path, int backlog)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strcpy(sa.sun_path, path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, backlog) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Read one request from fd and answer it with a status whose peer text
 * holds terminal escapes and an over-long key. */
static void evil_answer(int fd)
{
    char buf[4096], longkey[300];
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t off = 0;
    ssize_t n, w;
    struct pollfd p = {.fd = fd, .events = POLLIN};

    if (poll(&p, 1, 5000) != 1 || (n = read(fd, buf, sizeof(buf))) <= 0)
        return;
    msgpack_zone_init(&zone, 1024);
    if (msgpack_unpack(buf, (size_t)n, &off, &zone, &obj) ==
            MSGPACK_UNPACK_SUCCESS &&
        obj.type == MSGPACK_OBJECT_ARRAY && obj.via.array.size == 4) {
        memset(longkey, 'k', sizeof(longkey) - 1);
        longkey[sizeof(longkey) - 1] = '\0';
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_uint64(&pk, obj.via.array.ptr[1].via.u64);
        msgpack_pack_nil(&pk);
        msgpack_pack_map(&pk, 2);
        proto_pack_cstr(&pk, "health");
        proto_pack_cstr(&pk, "ok\x1b[2J");
        proto_pack_cstr(&pk, "keys");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_map(&pk, 4);
        proto_pack_cstr(&pk, "\xff\xfe"); /* a key that is not UTF-8 */
        proto_pack_cstr(&pk, "x");
        proto_pack_cstr(&pk, "key");
        proto_pack_cstr(&pk, "evil\x1b]0;pwned\x07\r\n");
        proto_pack_cstr(&pk, "state");
        proto_pack_cstr(&pk, "open");
        proto_pack_cstr(&pk, "force_reason");
        proto_pack_cstr(&pk, "\xff\xfe\\");
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "key");
        proto_pack_cstr(&pk, longkey);
        w = write(fd, sb.data, sb.size);
        (void)w;
        msgpack_sbuffer_destroy(&sb);
    }
    msgpack_zone_destroy(&zone);
}

/* For 2 s, write notifications [2, "event", [{}]] as fast as fd takes
 * them: a client must give up at its deadline, not read for ever. */
static void flood(int fd)
{
    static const char ev[] = "\x93\x02\xa5"
                             "event\x91\x80";
    char buf[sizeof(ev) - 1];
    long long end = mono_ms() + 2000;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    size_t i;

    for (i = 0; i < sizeof(buf); i++)
        buf[i] = ev[i];
    while (mono_ms() < end) {
        if (poll(&p, 1, 10) == 1 &&
            send(fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
            errno != EAGAIN)
            return;
    }
}

/* Accept connections and misbehave as told until stop is written. */
static void *fake_main(void *p)
{
    struct fake *f = p;
    int held[64], nheld = 0, i, fd;
    struct pollfd pf[2] = {{.fd = f->lfd, .events = POLLIN},
                           {.fd = f->stop[0], .events = POLLIN}};
    ssize_t w = 0;

    while (poll(pf, 2, 10000) > 0 && !(pf[1].revents & POLLIN)) {
        if (!(pf[0].revents & POLLIN))
            continue;
        fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        switch (f->mode) {
        case FAKE_SILENT:
            break;
        case FAKE_GARBAGE:
            w = write(fd, "\xc1\xc1\xc1\xc1", 4);
            break;
        case FAKE_HOSTILE: /* array32 declaring 4G elements */
            w = write(fd, "\xdd\xff\xff\xff\xff", 5);
            break;
        case FAKE_HANGUP:
            close(fd);
            continue;
        case FAKE_EVIL:
            evil_answer(fd);
            break;
        case FAKE_FLOOD:
            flood(fd);
            break;
        }
        (void)w;
        if (nheld < 64)
            held[nheld++] = fd;
        else
            close(fd);
    }
    for (i = 0; i < nheld; i++)
        close(held[i]);
    return NULL;
}

static int fake_start(struct fake *f, const char *dir, const char *name,
                      enum fake_mode mode)
{
    snprintf(f->path, sizeof(f->path), "%s/%s", dir, name);
    f->mode = mode;
    if ((f->lfd = listen_at(f->path, 16)) < 0)
        return -1;
    if (pipe(f->stop) < 0)
        return -1;
    return pthread_create(&f->thr, NULL, fake_main, f) == 0 ? 0 : -1;
}

static void fake_stop(struct fake *f)
{
    ssize_t w = write(f->stop[1], "x", 1);

    (void)w;
    pthread_join(f->thr, NULL);
    close(f->stop[0]);
    close(f->stop[1]);
    close(f->lfd);
    unlink(f->path);
}

/* One call with a 50 ms deadline against a misbehaving peer: must return
 * well within 1 s with a fallback, and the next call must fail at once
 * (back-off) after a connection failure or garbage, or ask the peer again
 * (rc want_next, within its deadline) after a timeout on a live
 * connection. */
static void check_stalled(resil_t *r, const char *what, int want_a, int want_b,
                          int want_next)
{
    struct resil_acquire_opts o = {0};
    struct resil_decision dec;
    long long t0;
    int rc;

    o.deadline_ms = 50;
    o.fail_mode = RESIL_FAIL_CLOSED;
    t0 = mono_ms();
    rc = resil_acquire(r, "integ.stall", &o, &dec);
    t0 = mono_ms() - t0;
    OK(rc == want_a || rc == want_b, "%s: rc %d (%s)", what, rc,
       resil_strerror(rc));
    OK(t0 < 1000, "%s: returned in %lld ms", what, t0);
    OK(dec.fallback && !dec.allow && !strcmp(dec.reason, "fallback") &&
           dec.permit == 0,
       "%s: fail_closed fallback decision", what);
    t0 = mono_ms();
    rc = resil_acquire(r, "integ.stall", &o, &dec);
    t0 = mono_ms() - t0;
    OK(rc == want_next && (rc != RESIL_ECONN || t0 < 50) && t0 < 1000,
       "%s: next call %s (rc %d, %lld ms)", what,
       want_next == RESIL_ECONN ? "backs off at once" : "asks the peer again",
       rc, t0);
}

static void test_fallbacks(void)
{
    char dir[256], path[300];
    struct resil_acquire_opts o = {0};
    struct resil_decision dec;
    struct fake fk;
    resil_t *r;
    long long t0;
    int lfd, extra[64], nextra = 0, i, rc;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    if (daemon_mkdtemp(dir, sizeof(dir)) < 0) {
        OK(0, "mkdtemp");
        return;
    }

    /* No daemon at all. */
    snprintf(path, sizeof(path), "%s/none.sock", dir);
    r = integ_open(path, DEADLINE_MS);
    o.fail_mode = RESIL_FAIL_OPEN;
    t0 = mono_ms();
    rc = resil_acquire(r, "integ.none", &o, &dec);
    IS(rc, RESIL_ECONN, "no daemon: RESIL_ECONN");
    OK(dec.allow && dec.fallback && dec.permit == 0 &&
           !strcmp(dec.reason, "fallback"),
       "no daemon, fail_open: allow=1 fallback=1");
    o.fail_mode = RESIL_FAIL_CLOSED;
    rc = resil_acquire(r, "integ.none", &o, &dec);
    IS(rc, RESIL_ECONN, "no daemon again: RESIL_ECONN");
    OK(!dec.allow && dec.fallback, "no daemon, fail_closed: allow=0 "
                                   "fallback=1");
    resil_set_fail_mode(r, RESIL_FAIL_CLOSED);
    rc = resil_acquire(r, "integ.none", NULL, &dec);
    OK(rc == RESIL_ECONN && !dec.allow && dec.fallback,
       "handle fail mode closed applies with NULL opts");
    OK(mono_ms() - t0 < 200, "no daemon: fallbacks are quick (%lld ms)",
       mono_ms() - t0);
    IS(resil_ping(r, 0, NULL, 0, NULL), RESIL_ECONN, "ping: RESIL_ECONN");
    resil_close(r);

    /* Listening, backlog full, never accepting. */
    snprintf(path, sizeof(path), "%s/stalled.sock", dir);
    lfd = listen_at(path, 0);
    OK(lfd >= 0, "stalled listener created");
    strcpy(sa.sun_path, path);
    for (i = 0; i < 64; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            break;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            close(fd);
            break;
        }
        extra[nextra++] = fd;
    }
    DIAG("backlog filled with %d connections", nextra);
    r = integ_open(path, DEADLINE_MS);
    check_stalled(r, "backlog full", RESIL_ETIMEDOUT, RESIL_ECONN, RESIL_ECONN);
    resil_close(r);
    for (i = 0; i < nextra; i++)
        close(extra[i]);
    if (lfd >= 0)
        close(lfd);

    /* Accepts, never answers. */
    if (fake_start(&fk, dir, "silent.sock", FAKE_SILENT) == 0) {
        r = integ_open(fk.path, DEADLINE_MS);
        check_stalled(r, "silent peer", RESIL_ETIMEDOUT, RESIL_ETIMEDOUT,
                      RESIL_ETIMEDOUT);
        resil_close(r);
        fake_stop(&fk);
    } else {
        OK(0, "silent fake daemon");
    }
    /* Answers garbage. */
    if (fake_start(&fk, dir, "garbage.sock", FAKE_GARBAGE) == 0) {
        r = integ_open(fk.path, DEADLINE_MS);
        check_stalled(r, "garbage peer", RESIL_EPROTO, RESIL_EPROTO,
                      RESIL_ECONN);
        resil_close(r);
        fake_stop(&fk);
    } else {
        OK(0, "garbage fake daemon");
    }
    if (fake_start(&fk, dir, "hostile.sock", FAKE_HOSTILE) == 0) {
        r = integ_open(fk.path, DEADLINE_MS);
        check_stalled(r, "hostile length", RESIL_EPROTO, RESIL_EPROTO,
                      RESIL_ECONN);
        resil_close(r);
        fake_stop(&fk);
    } else {
        OK(0, "hostile fake daemon");
    }
    /* Floods notifications: the deadline holds while data keeps coming. */
    if (fake_start(&fk, dir, "flood.sock", FAKE_FLOOD) == 0) {
        r = integ_open(fk.path, DEADLINE_MS);
        check_stalled(r, "flooding peer", RESIL_ETIMEDOUT, RESIL_ETIMEDOUT,
                      RESIL_ETIMEDOUT);
        resil_close(r);
        fake_stop(&fk);
    } else {
        OK(0, "flooding fake daemon");
    }
    /* Hangs up at once: EOF, and the send must not raise SIGPIPE. */
    if (fake_start(&fk, dir, "hangup.sock", FAKE_HANGUP) == 0) {
        r = integ_open(fk.path, DEADLINE_MS);
        check_stalled(r, "hang-up peer", RESIL_ECONN, RESIL_ECONN, RESIL_ECONN);
        resil_close(r);
        fake_stop(&fk);
    } else {
        OK(0, "hang-up fake daemon");
    }
    daemon_rmtree(dir);
}

/* resilctl shows what a hostile daemon sends without letting it drive the
 * terminal: control bytes escaped, keys truncated. */
static void test_resilctl_escaping(void)
{
    static char out[65536], err[4096];
    char dir[256];
    struct fake fk;
    const char *p;
    int rc, longest = 0, run = 0;

    if (daemon_mkdtemp(dir, sizeof(dir)) < 0 ||
        fake_start(&fk, dir, "evil.sock", FAKE_EVIL) < 0) {
        OK(0, "evil fake daemon");
        return;
    }
    rc = integ_run_ctl(dir, out, err, sizeof(out),
                       (const char *const[]){"-s", fk.path, "status", NULL});
    IS(rc, 0, "resilctl status against a hostile daemon exits 0");
    OK(!strchr(out, 0x1b) && !strchr(out, '\r') && !strchr(out, 0x07) &&
           !strchr(out, (char)0xff),
       "no control or high bytes reach the terminal");
    OK(strstr(out, "evil\\x1b]0;pwned\\x07\\x0d\\x0a") != NULL,
       "control bytes shown as \\xNN");
    OK(strstr(out, "\\xff\\xfe\\") && !strstr(out, "\\xfe\\\\"),
       "bytes that are not UTF-8 escaped, a backslash shown as is");
    for (p = out; *p; p++) {
        run = *p == 'k' ? run + 1 : 0;
        if (run > longest)
            longest = run;
    }
    OK(longest == 128 && strstr(out, "k...") != NULL,
       "a 299-byte key is cut to 128 bytes (%d)", longest);
    rc = integ_run_ctl(
        dir, out, err, sizeof(out),
        (const char *const[]){"-s", fk.path, "--json", "status", NULL});
    OK(rc == 0 && strstr(out, "xff") && strstr(out, "\"evil"),
       "--json against a hostile daemon: exits 0, a non-UTF-8 map key shown "
       "escaped (rc %d)",
       rc);
    fake_stop(&fk);
    daemon_rmtree(dir);
}

/* Default config: five failures open with the 30 s default; then the
 * daemon goes away under a connected handle (SIGPIPE check). */
static void test_default_config(void)
{
    struct test_daemon d;
    struct resil_decision dec;
    char state[16] = "";
    resil_t *r;
    long long t0;
    int rc;

    if (!OK(daemon_start(&d, "{}") == 0, "resild starts with {}"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    OK(fail_n(r, "integ.dflt", 5, state) == 0 && !strcmp(state, "open"),
       "default policy: five failures open (%s)", state);
    IS(acquire(r, "integ.dflt", &dec), 0, "acquire on default-open key");
    OK(!dec.allow && !strcmp(dec.reason, "circuit_open") &&
           dec.retry_after_ms > 0 && dec.retry_after_ms <= 30000,
       "default open: circuit_open, 0 < retry_after_ms %llu <= 30000",
       (unsigned long long)dec.retry_after_ms);
    IS(resil_ping(r, 0, NULL, 0, NULL), 0, "connected before the stop");
    if (tap_failures)
        daemon_dump_log(&d);
    IS(daemon_stop(&d), 0, "resild exits 0 on SIGTERM");
    /* The handle's connection is now closed by the peer: sending on it must
     * not raise SIGPIPE (this process would die). */
    t0 = mono_ms();
    rc = resil_acquire(r, "integ.dflt", NULL, &dec);
    OK(rc == RESIL_ECONN && dec.fallback && dec.allow,
       "daemon gone: RESIL_ECONN with a fail_open fallback (rc %d)", rc);
    OK(mono_ms() - t0 < 1000, "daemon gone: quick");
    OK(1, "no SIGPIPE");
    /* The handle reconnects by itself once the daemon is back (after at
     * most one back-off step). */
    if (OK(daemon_restart(&d) == 0, "resild restarts")) {
        t0 = mono_ms();
        while ((rc = resil_ping(r, 0, NULL, 0, NULL)) != 0 &&
               mono_ms() - t0 < 5000)
            sleep_ms(20);
        OK(rc == 0, "handle reconnects by itself after a restart (%lld ms)",
           mono_ms() - t0);
        IS(daemon_stop(&d), 0, "restarted resild exits 0 on SIGTERM");
    }
    resil_close(r);
    daemon_cleanup(&d);
}

int main(void)
{
    struct test_daemon d;
    int before;

    test_fallbacks();
    test_resilctl_escaping();
    if (!OK(daemon_start(&d, BREAKER_CONFIG) == 0, "resild starts"))
        return tap_done();
    before = tap_failures;
    test_ping(&d);
    test_acquire_new_key(&d);
    test_breaker_cycle(&d);
    test_force_reset(&d);
    test_remote_errors(&d);
    test_no_alloc(&d);
    test_threads(&d);
    test_resilctl(&d);
    if (tap_failures != before)
        daemon_dump_log(&d);
    IS(daemon_stop(&d), 0, "resild exits 0 on SIGTERM");
    daemon_cleanup(&d);
    test_default_config();
    return tap_done();
}
