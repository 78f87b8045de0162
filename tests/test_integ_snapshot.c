/*
 * test_integ_snapshot.c - snapshots and the journal against the real
 * daemon (SPEC §7): an open breaker, a force and a venue pause survive a
 * SIGTERM and a restart with the right remaining times; a kill -9 under
 * traffic loses at most one interval; a force (and a reset) acknowledged
 * and then killed -9 at once survives; injected write / fsync / rename /
 * journal failures keep the old snapshot intact, show in health and let
 * decisions go on; a corrupt file at start is set aside and the daemon
 * starts clean.
 *
 * Each daemon gets its own state directory through $STATE_DIRECTORY (what
 * systemd's StateDirectory= sets), inherited by the child.  The failure
 * hooks are the test-only RESILD_TEST_SNAPSHOT_FAIL (snapshot.h).
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_util.h"
#include "integ_util.h"
#include "proto.h"
#include "tap.h"

#define DEADLINE_MS 2000
#define SLACK_MS 50 /* remaining-time comparisons: scheduling noise */

#define POLICIES                                                               \
    "\"policies\": {"                                                          \
    "\"svc.*\": {\"breaker\": {\"failure_threshold\": 1, \"open_ms\": "        \
    "60000}},"                                                                 \
    "\"venue\": {\"limiter\": {\"rate\": 100, \"per\": \"second\"}}"           \
    "}"

static char sdir[256]; /* the current state directory */

static void new_state_dir(void)
{
    if (sdir[0])
        daemon_rmtree(sdir);
    daemon_mkdtemp(sdir, sizeof(sdir));
    setenv("STATE_DIRECTORY", sdir, 1);
}

static void snap_file(char *out, size_t cap, const char *suffix)
{
    snprintf(out, cap, "%s/state.snap%s", sdir, suffix);
}

/* kill -9 and reap. */
static void kill9(struct test_daemon *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
}

/* An admin method with {key[, state, reason, ttl_ms]}; code gets the
 * daemon's error code ("" on success). */
static int op(resil_t *r, const char *method, const char *key,
              const char *state, const char *reason, long long ttl_ms,
              char *code)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct reply rep;
    int rc;

    code[0] = '\0';
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk,
                     1 + (state != NULL) + (reason != NULL) + (ttl_ms > 0));
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, key);
    if (state) {
        proto_pack_cstr(&pk, "state");
        proto_pack_cstr(&pk, state);
    }
    if (reason) {
        proto_pack_cstr(&pk, "reason");
        proto_pack_cstr(&pk, reason);
    }
    if (ttl_ms > 0) {
        proto_pack_cstr(&pk, "ttl_ms");
        msgpack_pack_uint64(&pk, (uint64_t)ttl_ms);
    }
    rc = integ_call(r, method, &sb, DEADLINE_MS, &rep, code);
    msgpack_sbuffer_destroy(&sb);
    reply_free(&rep);
    return rc;
}

static int report_fail(resil_t *r, const char *key, const char *cls,
                       int64_t retry_after_ms)
{
    struct resil_report rep = {0};
    struct resil_report_result rr;

    rep.key = key;
    rep.outcome = RESIL_FAILURE;
    rep.latency_ms = 3;
    rep.error_class = cls;
    rep.retry_after_ms = retry_after_ms;
    return resil_report(r, &rep, &rr);
}

/* health.components.snapshot: ok (-1 when absent) and its detail. */
static int snap_health(resil_t *r, char *detail, size_t cap)
{
    struct reply rep;
    char code[24];
    const msgpack_object *c, *s, *ok, *det;
    int res = -1;

    detail[0] = '\0';
    if (integ_call(r, "health", NULL, DEADLINE_MS, &rep, code) == 0 &&
        (c = proto_map_get(&rep.obj, "components")) &&
        (s = proto_map_get(c, "snapshot")) && (ok = proto_map_get(s, "ok"))) {
        res = ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
        if ((det = proto_map_get(s, "detail")))
            proto_str_copy(det, detail, cap);
    }
    reply_free(&rep);
    return res;
}

/* --- an open breaker, a force and a pause across SIGTERM ------------------ */

static void test_sigterm_restart(void)
{
    struct test_daemon d;
    struct kstat a1, b1, v1, a2, b2, v2;
    long long t1, t2;
    char code[24];
    resil_t *r;

    new_state_dir();
    if (!OK(daemon_start(&d, "{" POLICIES "}") == 0, "resild starts"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    report_fail(r, "svc.a", "network.reset", -1);
    op(r, "force", "svc.b", "open", "exchange maintenance", 120000, code);
    report_fail(r, "venue", "rate_limited", 90000);
    integ_get_status(r, "svc.a", DEADLINE_MS, &a1);
    integ_get_status(r, "svc.b", DEADLINE_MS, &b1);
    integ_get_status(r, "venue", DEADLINE_MS, &v1);
    t1 = mono_ms();
    resil_close(r);
    OK(!strcmp(a1.state, "open") && !strcmp(b1.state, "forced_open") &&
           v1.lim_paused_ms > 80000,
       "before: open, forced_open, paused %lld ms", v1.lim_paused_ms);
    IS(daemon_stop(&d), 0, "SIGTERM: exit 0");
    if (!OK(daemon_restart(&d) == 0, "restarts"))
        goto out;
    r = integ_open(d.sock, DEADLINE_MS);
    integ_get_status(r, "svc.a", DEADLINE_MS, &a2);
    integ_get_status(r, "svc.b", DEADLINE_MS, &b2);
    integ_get_status(r, "venue", DEADLINE_MS, &v2);
    t2 = mono_ms();
    resil_close(r);
    OK(!strcmp(a2.state, "open"), "open breaker still open (%s)", a2.state);
    OK(a1.retry_after_ms - a2.retry_after_ms >= 0 &&
           a1.retry_after_ms - a2.retry_after_ms <= t2 - t1 + SLACK_MS,
       "open time left: %lld then %lld (%lld ms apart)", a1.retry_after_ms,
       a2.retry_after_ms, t2 - t1);
    IS(a2.opens, 1, "opens kept");
    OK(!strcmp(b2.state, "forced_open") &&
           !strcmp(b2.force_reason, "exchange maintenance"),
       "force kept with its reason (%s, '%s')", b2.state, b2.force_reason);
    OK(b1.force_ttl_ms - b2.force_ttl_ms >= 0 &&
           b1.force_ttl_ms - b2.force_ttl_ms <= t2 - t1 + SLACK_MS,
       "force TTL left: %lld then %lld", b1.force_ttl_ms, b2.force_ttl_ms);
    OK(v1.lim_paused_ms - v2.lim_paused_ms >= 0 &&
           v1.lim_paused_ms - v2.lim_paused_ms <= t2 - t1 + SLACK_MS,
       "venue pause left: %lld then %lld", v1.lim_paused_ms, v2.lim_paused_ms);
    IS(daemon_stop(&d), 0, "exit 0 again");
out:
    daemon_cleanup(&d);
}

/* --- acknowledged operator actions survive kill -9 ------------------------ */

static void test_ack_then_kill9(void)
{
    struct test_daemon d;
    struct kstat s;
    char code[24];
    resil_t *r;
    int rc;

    new_state_dir();
    /* No periodic snapshot in the test's time: only the journal can
     * carry the actions. */
    if (!OK(daemon_start(&d, "{\"snapshot\": {\"interval_s\": 3600}}") == 0,
            "resild starts (interval 3600 s)"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    rc = op(r, "force", "k.f", "open", "trip before kill", 600000, code);
    kill9(&d); /* at once, after the answer */
    resil_close(r);
    IS(rc, 0, "force acknowledged");
    if (!OK(daemon_restart(&d) == 0, "restarts after kill -9"))
        goto out;
    r = integ_open(d.sock, DEADLINE_MS);
    integ_get_status(r, "k.f", DEADLINE_MS, &s);
    OK(!strcmp(s.state, "forced_open") &&
           !strcmp(s.force_reason, "trip before kill"),
       "the acknowledged force survived kill -9 (%s, '%s')", s.state,
       s.force_reason);
    OK(s.force_ttl_ms > 590000 && s.force_ttl_ms <= 600000,
       "with its TTL (%lld ms)", s.force_ttl_ms);
    rc = op(r, "reset", "k.f", NULL, NULL, 0, code);
    kill9(&d);
    resil_close(r);
    IS(rc, 0, "reset acknowledged");
    if (!OK(daemon_restart(&d) == 0, "restarts after the second kill -9"))
        goto out;
    r = integ_open(d.sock, DEADLINE_MS);
    integ_get_status(r, "k.f", DEADLINE_MS, &s);
    OK(!strcmp(s.state, "closed") && !s.has_force_reason,
       "the acknowledged reset survived kill -9 (%s)", s.state);
    resil_close(r);
    IS(daemon_stop(&d), 0, "exit 0");
out:
    daemon_cleanup(&d);
}

/* --- kill -9 under traffic -------------------------------------------------
 */

#define TRAFFIC_MS 2500
#define MAX_SENT 400000

static void test_kill9_traffic(void)
{
    static long long sent_at[MAX_SENT];
    struct test_daemon d;
    struct resil_report rep = {0};
    struct resil_report_result rr;
    struct kstat s;
    long long end, t_kill, lost_ms;
    long n = 0;
    resil_t *r;

    new_state_dir();
    if (!OK(daemon_start(&d, "{}") == 0, "resild starts (interval 1 s)"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    rep.key = "traffic.k";
    rep.outcome = RESIL_SUCCESS;
    rep.latency_ms = 1;
    rep.retry_after_ms = -1;
    end = mono_ms() + TRAFFIC_MS;
    while (n < MAX_SENT && mono_ms() < end)
        if (resil_report(r, &rep, &rr) == 0)
            sent_at[n++] = mono_ms(); /* counted by the daemon by now */
    t_kill = mono_ms();
    kill9(&d);
    resil_close(r);
    if (!OK(daemon_restart(&d) == 0, "restarts after kill -9 under traffic"))
        goto out;
    r = integ_open(d.sock, DEADLINE_MS);
    integ_get_status(r, "traffic.k", DEADLINE_MS, &s);
    resil_close(r);
    OK(s.calls > 0 && s.calls <= n, "restored %lld of %ld calls", s.calls, n);
    /* The restored count is what was sent by some instant: how long
     * before the kill was that? */
    lost_ms = s.calls > 0 && s.calls <= n ? t_kill - sent_at[s.calls - 1]
                                          : TRAFFIC_MS;
    DIAG("kill -9 lost the last %lld ms of traffic (interval 1000 ms)",
         lost_ms);
    OK(lost_ms <= 1000 + 500,
       "at most one interval lost (%lld ms; 500 ms allowed for the write)",
       lost_ms);
    IS(daemon_stop(&d), 0, "exit 0");
out:
    daemon_cleanup(&d);
}

/* --- injected failures ------------------------------------------------------
 */

static uint8_t *slurp(const char *path, size_t *n)
{
    struct stat st;
    uint8_t *p = NULL;
    int fd = open(path, O_RDONLY);

    *n = 0;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) == 0 && (p = malloc((size_t)st.st_size + 1)))
        *n = (size_t)read(fd, p, (size_t)st.st_size);
    close(fd);
    return p;
}

static void test_injected(const char *step)
{
    struct test_daemon d;
    struct kstat s;
    struct resil_decision dec;
    char code[24], detail[256], path[300], tmp[300];
    uint8_t *before, *after;
    size_t nb, na;
    long long end;
    int ok = 1;
    resil_t *r;

    new_state_dir();
    snap_file(path, sizeof(path), "");
    snap_file(tmp, sizeof(tmp), ".tmp");
    if (!OK(daemon_start(&d, "{}") == 0, "%s: resild starts", step))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    op(r, "force", "inj.k", "open", "kept", 0, code);
    resil_close(r);
    daemon_stop(&d); /* the final snapshot holds the force */
    before = slurp(path, &nb);
    setenv("RESILD_TEST_SNAPSHOT_FAIL", step, 1);
    if (!OK(daemon_restart(&d) == 0, "%s: restarts with the failure", step))
        goto out;
    unsetenv("RESILD_TEST_SNAPSHOT_FAIL");
    r = integ_open(d.sock, DEADLINE_MS);
    op(r, "force", "inj.other", "open", NULL, 0, code);
    end = mono_ms() + 5000;
    while (mono_ms() < end && (ok = snap_health(r, detail, sizeof(detail))))
        sleep_ms(50);
    IS(ok, 0, "health shows the snapshot failing");
    OK(strstr(detail, step) != NULL, "%s: named in health ('%s')", step,
       detail);
    OK(acquire(r, "inj.free", &dec) == 0 && dec.allow, "%s: decisions go on",
       step);
    after = slurp(path, &na);
    OK(before && after && nb == na && !memcmp(before, after, nb),
       "%s: the old snapshot is intact (%zu bytes)", step, nb);
    OK(access(tmp, F_OK) < 0, "%s: no temporary file left", step);
    free(before);
    free(after);
    resil_close(r);
    kill9(&d);
    if (!OK(daemon_restart(&d) == 0, "%s: restarts without it", step))
        goto out;
    r = integ_open(d.sock, DEADLINE_MS);
    integ_get_status(r, "inj.k", DEADLINE_MS, &s);
    OK(!strcmp(s.state, "forced_open"), "%s: the old state is back (%s)", step,
       s.state);
    resil_close(r);
    daemon_stop(&d);
out:
    unsetenv("RESILD_TEST_SNAPSHOT_FAIL");
    daemon_cleanup(&d);
}

static void test_journal_failure(void)
{
    struct test_daemon d;
    char code[24], detail[256];
    resil_t *r;
    int rc;

    new_state_dir();
    setenv("RESILD_TEST_SNAPSHOT_FAIL", "journal", 1);
    rc = daemon_start(&d, "{}");
    unsetenv("RESILD_TEST_SNAPSHOT_FAIL");
    if (!OK(rc == 0, "journal failing: resild starts"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    rc = op(r, "force", "j.k", "open", NULL, 0, code);
    OK(rc != 0 && !strcmp(code, "not_durable"),
       "a force that cannot be journalled is not acknowledged (%s)", code);
    OK(snap_health(r, detail, sizeof(detail)) == 0 && strstr(detail, "journal"),
       "health says why ('%s')", detail);
    resil_close(r);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

/* --- a corrupt file at start -----------------------------------------------
 */

static void test_corrupt_start(void)
{
    struct test_daemon d;
    char path[300];
    struct kstat s;
    DIR *dd;
    struct dirent *e;
    int aside = 0, fd;
    resil_t *r;

    new_state_dir();
    snap_file(path, sizeof(path), "");
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    if (write(fd, "RESILDSN garbage, not a snapshot at all", 39) != 39)
        DIAG("write failed");
    close(fd);
    if (!OK(daemon_start(&d, "{}") == 0, "corrupt snapshot: resild starts"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    integ_get_status(r, "any.key", DEADLINE_MS, &s);
    OK(!s.found, "started clean");
    resil_close(r);
    dd = opendir(sdir);
    while ((e = readdir(dd)))
        aside += strstr(e->d_name, "state.snap.corrupt-") != NULL;
    closedir(dd);
    IS(aside, 1, "the corrupt file was moved aside");
    IS(daemon_stop(&d), 0, "exit 0");
    daemon_cleanup(&d);
}

/* --- kill -9 during a snapshot write ----------------------------------- */

/* Every snapshot write sleeps DELAY ms between writing the temporary file
 * and renaming it (test-only hook), so a kill at a random instant in
 * [1000, 1000 + DELAY] ms after start lands inside the first write.  Every
 * restart must be clean: nothing set aside, the force there.
 * RESILD_CRASH_ITER sets the count (the crash-safety benchmark: 200). */
#define CRASH_DELAY_MS 600

static void test_kill9_mid_write(void)
{
    const char *it = getenv("RESILD_CRASH_ITER");
    int iters = it ? atoi(it) : 50, i, clean = 0, kept = 0, aside = 0;
    int midwrite = 0;
    char tmp[300];
    unsigned seed = (unsigned)getpid();
    char code[24], delay[16];
    struct test_daemon d;
    struct kstat s;
    DIR *dd;
    struct dirent *e;
    resil_t *r;

    new_state_dir();
    snap_file(tmp, sizeof(tmp), ".tmp");
    snprintf(delay, sizeof(delay), "%d", CRASH_DELAY_MS);
    if (!OK(daemon_start(&d, "{}") == 0, "mid-write: resild starts"))
        return;
    r = integ_open(d.sock, DEADLINE_MS);
    op(r, "force", "crash.k", "open", "kept", 0, code);
    resil_close(r);
    daemon_stop(&d);
    setenv("RESILD_TEST_SNAPSHOT_DELAY_MS", delay, 1);
    for (i = 0; i < iters; i++) {
        if (daemon_restart(&d) < 0)
            break;
        clean++;
        r = integ_open(d.sock, DEADLINE_MS);
        integ_get_status(r, "crash.k", DEADLINE_MS, &s);
        kept += !strcmp(s.state, "forced_open");
        resil_close(r);
        sleep_ms(1000 + (int)(rand_r(&seed) % CRASH_DELAY_MS));
        kill9(&d);
        midwrite += access(tmp, F_OK) == 0; /* killed inside a write */
    }
    DIAG("kill -9 landed inside a write %d times of %d", midwrite, iters);
    unsetenv("RESILD_TEST_SNAPSHOT_DELAY_MS");
    IS(clean, iters, "mid-write: every restart came up");
    IS(kept, iters, "mid-write: the state was there every time");
    dd = opendir(sdir);
    while ((e = readdir(dd)))
        aside += strstr(e->d_name, ".corrupt-") != NULL;
    closedir(dd);
    IS(aside, 0, "mid-write: no file ever set aside");
    daemon_cleanup(&d);
}

int main(void)
{
    test_sigterm_restart();
    test_ack_then_kill9();
    test_kill9_traffic();
    test_injected("write");
    test_injected("fsync");
    test_injected("rename");
    test_journal_failure();
    test_corrupt_start();
    test_kill9_mid_write();
    if (sdir[0])
        daemon_rmtree(sdir);
    return tap_done();
}
