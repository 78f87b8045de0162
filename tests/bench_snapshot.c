/*
 * bench_snapshot.c - snapshot figures, printed, never asserted (not a
 * test): for 100k and 1M keys, the time the loop spends serializing (in
 * all, and per step of SNAPSHOT_CHUNK_KEYS keys: the longest stall), the
 * time the thread pool spends writing (CRC, write, fsync, rename, fsync of
 * the directory), the file size, and the time a start-up restore takes.
 * A tenth of the keys hold an open breaker, a tenth a force with a reason.
 * `make bench-snapshot`; BENCH_SNAP_DIR picks the directory (default
 * $TMPDIR or /tmp: say which disk the figures are for).
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

static int setup(struct resild *d, const char *dir, unsigned nkeys)
{
    char path[512], json[1024], err[256];
    struct config cfg;
    FILE *f;

    snprintf(path, sizeof(path), "%s/c.json", dir);
    snprintf(json, sizeof(json),
             "{\"max_keys\": %u, \"max_memory_mb\": 20000, \"snapshot\": "
             "{\"path\": \"%s/state.snap\"}, \"policies\": {\"*\": "
             "{\"breaker\": {\"failure_threshold\": 1}}}}",
             nkeys + 10, dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(json, f);
    fclose(f);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    return core_init(d, &cfg, 1000000, 7);
}

static void answer(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err)
{
    (void)c, (void)msgid, (void)k, (void)res, (void)err;
}

static void run(const char *dir, unsigned nkeys)
{
    struct resild d, d2;
    struct snapshot s, s2;
    struct caller c = {.answer = answer};
    char path[512];
    double t0, ser, wr, rs;
    unsigned i;
    struct stat st;

    snprintf(path, sizeof(path), "%s/state.snap", dir);
    unlink(path);
    if (setup(&d, dir, nkeys) < 0 ||
        snapshot_start(&s, uv_default_loop(), &d) < 0) {
        fprintf(stderr, "setup failed\n");
        exit(1);
    }
    for (i = 0; i < nkeys; i++) {
        char name[32];
        struct key *k;
        int n = snprintf(name, sizeof(name), "venue%u.orders.k%u", i % 97, i);
        if (core_key(&d, name, (size_t)n, 1000000, &k) < 0)
            break;
        if (i % 10 == 1) {
            struct outcome o = {.kind = OUT_FAILURE,
                                .cls = "network",
                                .severity = -1,
                                .transient = -1,
                                .latency_ms = 3,
                                .attempt = 1};
            struct report_result rr;
            core_report(&d, &c, &o, name, (size_t)n, 1000000, &rr);
        } else if (i % 10 == 2) {
            core_force(&d, k, BREAKER_FORCE_OPEN, "exchange maintenance", 20,
                       3600000, 0, 1000000);
        }
    }
    snapshot_serialize(&s, 1000400); /* the buffer grows once, here */
    t0 = now_s();
    snapshot_serialize(&s, 1000500);
    ser = now_s() - t0;
    t0 = now_s();
    if (snapshot_write_file(&s) < 0)
        fprintf(stderr, "write: %s: %s\n", s.w_step, strerror(s.w_err));
    wr = now_s() - t0;
    stat(path, &st);
    snapshot_stop(&s, 0);
    core_free(&d);

    setup(&d2, dir, nkeys);
    t0 = now_s();
    snapshot_start(&s2, uv_default_loop(), &d2);
    rs = now_s() - t0;
    printf("%8u keys: serialize on the loop %7.1f ms in all (%.2f ms per "
           "step of %d keys), write on the pool %7.1f ms (%.1f MB/s), file "
           "%7.1f MB (%.0f bytes/key), restore %7.1f ms (%zu keys back)\n",
           nkeys, ser * 1e3, ser * 1e3 * SNAPSHOT_CHUNK_KEYS / nkeys,
           SNAPSHOT_CHUNK_KEYS, wr * 1e3, (double)st.st_size / 1e6 / wr,
           (double)st.st_size / 1e6, (double)st.st_size / nkeys, rs * 1e3,
           d2.keys.count);
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
    run(dir, 100000);
    run(dir, 1000000);
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
