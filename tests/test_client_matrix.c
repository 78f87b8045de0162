/*
 * test_client_matrix.c - libresil against every way the daemon can fail
 * (issue 8, "client failure matrix").
 *
 * Each scenario runs in fail-open and fail-closed, two acquires on a fresh
 * handle (the first meets the failure, the second the handle's state after
 * it: back-off, or a live connection asked again), and must show:
 *   - each call returns within its deadline (20 ms) + 1 ms, measured on
 *     CLOCK_MONOTONIC around the call;
 *   - no SIGPIPE: the disposition stays SIG_DFL, so one would kill this
 *     process and the run would count a failure;
 *   - no descriptor leak: /proc/self/fd counted before resil_open and after
 *     resil_close (the fake peers are forked children, so their
 *     descriptors are not ours);
 *   - the fallback decision of the mode: allow in fail-open, deny in
 *     fail-closed, fallback set, no permit (a garbage answer included).
 * The daemon-stopped scenario uses a real build/resild, SIGSTOPped for
 * the scenario and continued afterwards.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon_util.h"
#include "fake_peer.h"
#include "integ_util.h"
#include "resil.h"
#include "tap.h"

#define MATRIX_DEADLINE_MS 20
#define SLACK_NS 1000000LL /* the call may overrun its deadline by 1 ms */
#define LATE_MS 40         /* the late peer answers this long after */

static long long worst_ns; /* slowest call seen, for the closing line */

static long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One scenario in one fail mode: first call rc want1 (or want1b), second
 * call rc want2. */
static void run_case(const char *name, const char *path, int fail_mode,
                     int want1, int want1b, int want2)
{
    const char *mode = fail_mode == RESIL_FAIL_OPEN ? "open" : "closed";
    struct resil_acquire_opts o = {0};
    struct resil_decision d;
    long long t0, el;
    int before, after, call, rc, want_allow = fail_mode == RESIL_FAIL_OPEN;
    resil_t *r;

    before = count_fds();
    r = resil_open(path);
    if (!OK(r != NULL, "%s/%s: resil_open", name, mode))
        return;
    resil_set_deadline(r, MATRIX_DEADLINE_MS);
    o.fail_mode = fail_mode;
    for (call = 1; call <= 2; call++) {
        t0 = now_ns();
        rc = resil_acquire(r, "matrix.key", &o, &d);
        el = now_ns() - t0;
        if (el > worst_ns)
            worst_ns = el;
        OK(call == 1 ? rc == want1 || rc == want1b : rc == want2,
           "%s/%s: call %d rc %d (%s)", name, mode, call, rc,
           resil_strerror(rc));
        OK(el <= MATRIX_DEADLINE_MS * 1000000LL + SLACK_NS,
           "%s/%s: call %d returns within %d ms + 1 ms (%.3f ms)", name, mode,
           call, MATRIX_DEADLINE_MS, (double)el / 1e6);
        OK(d.fallback && d.allow == want_allow && d.permit == 0 &&
               !strcmp(d.reason, "fallback"),
           "%s/%s: call %d fallback %s (allow %d fallback %d reason %s)", name,
           mode, call, want_allow ? "allows" : "denies", d.allow, d.fallback,
           d.reason);
    }
    resil_close(r);
    after = count_fds();
    OK(before > 0 && after == before, "%s/%s: no fd leak (%d before, %d after)",
       name, mode, before, after);
}

static void both_modes(const char *name, const char *path, int want1,
                       int want1b, int want2)
{
    run_case(name, path, RESIL_FAIL_OPEN, want1, want1b, want2);
    run_case(name, path, RESIL_FAIL_CLOSED, want1, want1b, want2);
}

/* A fake peer in mode m for both fail modes. */
static void fake_case(const char *dir, const char *name, enum peer_mode m,
                      int want1, int want1b, int want2)
{
    struct peer_opts o = {.mode = m, .late_ms = LATE_MS};
    char path[300];
    static struct peer p; /* 64 KiB log: not on the stack */
    int fail_mode;

    snprintf(path, sizeof(path), "%s/%s.sock", dir, name);
    /* A fresh peer per fail mode: a peer that dies mid-reply is gone. */
    for (fail_mode = RESIL_FAIL_OPEN; fail_mode <= RESIL_FAIL_CLOSED;
         fail_mode++) {
        if (!OK(peer_start(&p, path, &o) == 0, "%s: fake peer starts", name))
            return;
        run_case(name, path, fail_mode, want1, want1b, want2);
        peer_stop(&p);
    }
}

int main(void)
{
    struct test_daemon d;
    char dir[256], path[300];

    /* A SIGPIPE must kill this test, not be ignored. */
    signal(SIGPIPE, SIG_DFL);
    if (!OK(daemon_mkdtemp(dir, sizeof(dir)) == 0, "temporary directory"))
        return tap_done();

    snprintf(path, sizeof(path), "%s/missing.sock", dir);
    both_modes("socket missing", path, RESIL_ECONN, RESIL_ECONN, RESIL_ECONN);

    snprintf(path, sizeof(path), "%s/stale.sock", dir);
    if (OK(peer_make_stale(path) == 0, "stale socket file made"))
        both_modes("stale socket", path, RESIL_ECONN, RESIL_ECONN, RESIL_ECONN);

    /* Backlog full: connect says EAGAIN (or, were it to block, the
     * deadline ends it); either way the handle backs off. */
    fake_case(dir, "backlog", PEER_BACKLOG, RESIL_ECONN, RESIL_ETIMEDOUT,
              RESIL_ECONN);

    /* A live connection that does not answer: each call times out and the
     * second asks again (no back-off on a read timeout). */
    if (OK(daemon_start(&d, "{}") == 0, "resild starts")) {
        kill(d.pid, SIGSTOP);
        both_modes("daemon SIGSTOPped", d.sock, RESIL_ETIMEDOUT,
                   RESIL_ETIMEDOUT, RESIL_ETIMEDOUT);
        kill(d.pid, SIGCONT);
        OK(daemon_stop(&d) == 0, "resild exits 0 after SIGCONT");
        daemon_cleanup(&d);
    }

    fake_case(dir, "close", PEER_CLOSE, RESIL_ECONN, RESIL_ECONN, RESIL_ECONN);
    fake_case(dir, "half", PEER_HALF, RESIL_ECONN, RESIL_ECONN, RESIL_ECONN);
    fake_case(dir, "garbage", PEER_GARBAGE, RESIL_EPROTO, RESIL_EPROTO,
              RESIL_ECONN);
    fake_case(dir, "late", PEER_LATE, RESIL_ETIMEDOUT, RESIL_ETIMEDOUT,
              RESIL_ETIMEDOUT);

    DIAG("slowest call: %.3f ms (deadline %d ms)", (double)worst_ns / 1e6,
         MATRIX_DEADLINE_MS);
    OK(1, "no SIGPIPE killed the test");
    daemon_rmtree(dir);
    return tap_done();
}
