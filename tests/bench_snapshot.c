/*
 * bench_snapshot.c - snapshot figures, printed, never asserted (not a
 * test).  For each state (small keys: 100k and 1M; keys with a 3600 s time
 * window: 10k and 100k, as 1M of them would need ~90 GB), the loop's side:
 *   - one go: the whole serialization in one call (what the loop did
 *     before it went in steps; the final snapshot at exit still does);
 *   - 1024 keys per step (the previous fixed-count steps);
 *   - SNAPSHOT_STEP_US per step (what the daemon does): steps taken, the
 *     longest step, and the longest loop turn (uv_run once, with an idle
 *     handle so the poll never waits: the step, the write's completion,
 *     the journal) over the whole snapshot, write included;
 * the thread pool's side: the write (CRC, write, fsync, rename, fsync of
 * the directory) and the file size; and the start-up restore's time.
 * A tenth of the keys hold an open breaker, a tenth a force with a reason;
 * window keys have a call in each of their last 60 seconds.
 * `make bench-snapshot`; BENCH_SNAP_DIR picks the directory (default
 * $TMPDIR or /tmp: say which disk the figures are for); BENCH_SNAP_QUICK=1
 * runs only 100k small keys and 10k window keys; 100k window keys (6 GB
 * of memory, a minute) only with BENCH_SNAP_FULL=1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "snapshot.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int setup(struct resild *d, const char *dir, unsigned nkeys, int window,
                 uint64_t now_ms)
{
    char path[512], json[1024], err[256];
    struct config cfg;
    FILE *f;

    snprintf(path, sizeof(path), "%s/c.json", dir);
    snprintf(json, sizeof(json),
             "{\"max_keys\": %u, \"max_memory_mb\": 20000, \"snapshot\": "
             "{\"path\": \"%s/state.snap\"}, \"policies\": {\"*\": "
             "{\"breaker\": {\"failure_threshold\": 1%s}}}}",
             nkeys + 10, dir,
             window ? ", \"window\": {\"type\": \"time\", \"size\": 3600}"
                    : "");
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(json, f);
    fclose(f);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    return core_init(d, &cfg, now_ms, 7);
}

static void answer(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err)
{
    (void)c, (void)msgid, (void)k, (void)res, (void)err;
}

static void noop(uv_idle_t *h)
{
    (void)h;
}

static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One snapshot the daemon's way (snapshot_now, then the loop) with steps
 * of at most step_keys keys and step_us: the longest uv_run turn (ms) in
 * wall time, and in the loop thread's CPU time (*cpu_ms: the same turn
 * without the time the thread was not running, on a busy host). */
static double walk(struct snapshot *s, uint64_t step_keys, uint64_t step_us,
                   double *cpu_ms)
{
    uv_loop_t *loop = uv_default_loop();
    uv_idle_t idle;
    double worst = 0, worst_cpu = 0, t0, c0;

    s->step_keys = step_keys;
    s->step_us = step_us;
    uv_idle_init(loop, &idle); /* the poll never waits: turns are work */
    uv_idle_start(&idle, noop);
    t0 = now_s();
    c0 = cpu_s();
    if (snapshot_now(s) < 0)
        fprintf(stderr, "snapshot_now refused: one under way\n");
    worst = now_s() - t0;
    worst_cpu = cpu_s() - c0;
    while (s->busy) {
        double w, c;
        t0 = now_s();
        c0 = cpu_s();
        uv_run(loop, UV_RUN_ONCE);
        w = now_s() - t0;
        c = cpu_s() - c0;
        worst = w > worst ? w : worst;
        worst_cpu = c > worst_cpu ? c : worst_cpu;
    }
    if (cpu_ms)
        *cpu_ms = worst_cpu * 1e3;
    uv_close((uv_handle_t *)&idle, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return worst * 1e3;
}

static void run(const char *dir, unsigned nkeys, int window)
{
    struct resild d, d2;
    struct snapshot s, s2;
    struct caller c = {.answer = answer};
    char path[512];
    double t0, one, wr, rs, old_worst, turn, turn_cpu, first, first_cpu;
    uint64_t ser_us, steps, step_us;
    unsigned i, j;
    struct stat st;
    uint64_t T; /* the loop's clock: windows are full when it walks */

    uv_update_time(uv_default_loop());
    T = uv_now(uv_default_loop());
    snprintf(path, sizeof(path), "%s/state.snap", dir);
    unlink(path);
    if (setup(&d, dir, nkeys, window, T) < 0 ||
        snapshot_start(&s, uv_default_loop(), &d) < 0) {
        fprintf(stderr, "setup failed\n");
        exit(1);
    }
    snapshot_run(&s);
    uv_timer_stop(&s.timer); /* only the snapshots asked for here */
    for (i = 0; i < nkeys; i++) {
        char name[32];
        struct key *k;
        int n = snprintf(name, sizeof(name), "venue%u.orders.k%u", i % 97, i);
        struct outcome o = {.kind = OUT_FAILURE,
                            .cls = "network",
                            .severity = -1,
                            .transient = -1,
                            .latency_ms = 3,
                            .attempt = 1};
        struct report_result rr;
        if (core_key(&d, name, (size_t)n, T, &k) < 0)
            break;
        if (window) /* a success in each of the last 60 seconds */
            for (j = 0; j < 60; j++) {
                o.kind = OUT_SUCCESS;
                core_report(&d, &c, &o, name, (size_t)n, T - 60000 + j * 1000,
                            &rr);
            }
        if (i % 10 == 1) {
            o.kind = OUT_FAILURE;
            core_report(&d, &c, &o, name, (size_t)n, T, &rr);
        } else if (i % 10 == 2) {
            core_force(&d, k, BREAKER_FORCE_OPEN, "exchange maintenance", 20,
                       3600000, 0, T);
        }
    }
    /* Forces went to the journal: let it settle first. */
    while (s.jbusy)
        uv_run(uv_default_loop(), UV_RUN_ONCE);
    /* The first snapshot: its buffer grows as it goes. */
    (void)walk(&s, SNAPSHOT_STEP_KEYS, SNAPSHOT_STEP_US, &first_cpu);
    first = (double)s.last_max_step_us / 1e3;
    uv_update_time(uv_default_loop());
    t0 = now_s();
    snapshot_serialize(&s, uv_now(uv_default_loop()));
    one = now_s() - t0;
    t0 = now_s();
    if (snapshot_write_file(&s) < 0)
        fprintf(stderr, "write: %s: %s\n", s.w_step, strerror(s.w_err));
    wr = now_s() - t0;
    stat(path, &st);
    (void)walk(&s, 1024, UINT64_MAX, NULL);
    old_worst = (double)s.last_max_step_us / 1e3;
    turn = walk(&s, SNAPSHOT_STEP_KEYS, SNAPSHOT_STEP_US, &turn_cpu);
    ser_us = s.last_serialize_us;
    steps = s.last_steps;
    step_us = s.last_max_step_us;
    snapshot_stop(&s, 0);
    core_free(&d);

    setup(&d2, dir, nkeys, window, T);
    t0 = now_s();
    snapshot_start(&s2, uv_default_loop(), &d2);
    rs = now_s() - t0;
    printf("%8u %s keys: one go %7.1f ms | 1024 keys/step: longest step "
           "%6.2f ms | %d us/step: %llu steps, %7.1f ms in all, longest "
           "step %5.2f ms, longest loop turn %5.2f ms (CPU %5.2f ms)\n"
           "%14s the first (its buffer grows): longest step %5.2f ms, "
           "longest loop turn CPU %5.2f ms\n"
           "%14s write on the pool %7.1f ms (%.1f MB/s), file %7.1f MB "
           "(%.0f bytes/key), restore %7.1f ms (%zu keys back)\n",
           nkeys, window ? "window" : "small ", one * 1e3, old_worst,
           SNAPSHOT_STEP_US, (unsigned long long)steps, ser_us / 1e3,
           step_us / 1e3, turn, turn_cpu, "", first, first_cpu, "", wr * 1e3,
           (double)st.st_size / 1e6 / wr, (double)st.st_size / 1e6,
           (double)st.st_size / nkeys, rs * 1e3, d2.keys.count);
    fflush(stdout);
    snapshot_stop(&s2, 0);
    core_free(&d2);
    unlink(path);
}

int main(void)
{
    const char *base = getenv("BENCH_SNAP_DIR");
    char dir[512];

    if (!base)
        base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof(dir), "%s/resild-bench-snap.XXXXXX", base);
    if (!mkdtemp(dir))
        return 1;
    unsetenv("STATE_DIRECTORY");
    printf("snapshot benchmark in %s (fsync included)\n", dir);
    run(dir, 100000, 0);
    run(dir, 10000, 1);
    if (!getenv("BENCH_SNAP_QUICK"))
        run(dir, 1000000, 0);
    if (getenv("BENCH_SNAP_FULL"))
        run(dir, 100000, 1);
    {
        char p[600];
        snprintf(p, sizeof(p), "%s/c.json", dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/state.snap.journal", dir);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}
