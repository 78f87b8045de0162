/*
 * bench_scale.c - issue 14's "flat costs": what each operation costs
 * against the number of keys (10k, 100k, 1M), callers (1, 100, 1,000) and
 * parked requests (0, 10k).  Printed, never asserted (not a test): the
 * machine is shared and timings are noisy.  `make bench-scale`.
 *
 * The real core runs in this process under a fake clock, as tests/test_core.c
 * drives it: no sockets, no loop, so the figures are the core's own cost
 * (the decision, the page, the walk), not the transport's.  The policy has
 * a breaker and a limiter; key names are "venueV.kI" (V = I % 97), so each
 * key also has one ancestor with a limiter, as an exchange-wide bucket
 * would.  A tenth of the keys hold an open breaker (open for an hour), so
 * 1M keys mean 100k keys on the health list.
 *
 * Figures, ns per operation, p50 and p99 over batches (clock_gettime
 * around each batch of BATCH operations, divided by BATCH):
 *   acquire, report   on 1000 hot keys and on keys drawn uniformly from
 *                     all of them (cache misses at 1M keys); acquire looks
 *                     the key up by name first, as the method does
 *   acq+rep N callers the same through N callers (round robin)
 *   status page       the `status` method, one page of 1000 keys from the
 *                     middle of the name order (methods_dispatch)
 *   health            the `health` method
 *   tick idle         core_tick with nothing due
 *   tick expire       core_tick expiring 10k permits, per permit
 *   tick, 10k parked  core_tick with 10k parked requests none of which
 *                     can be served (one per key, each key's bulkhead full)
 *   report+wake       a report on a hot key and the core_wake the server
 *                     runs after that batch (a release marks it dirty),
 *                     with 0 and with 10k parked requests
 *   metrics           metrics_render of the whole page (not cached)
 *   snapshot          snapshot_serialize of every key (ms)
 *   reload            core_rebind to the same configuration (ms)
 * Clients over real sockets are not measured here: tests/bench.c and
 * tests/loadgen.c do that; in the core a caller is a struct with its own
 * permit list and nothing walks every caller.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admit.h"
#include "core.h"
#include "methods.h"
#include "metrics.h"
#include "proto.h"
#include "snapshot.h"

#define BATCH 8        /* operations timed together */
#define HOT 1000       /* keys in the hot set */
#define PARKED 10000   /* parked requests in the parked runs */
#define MAXCALLERS 1000
#define MAXSAMPLES 40000

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Samples of one figure: ns per operation. */
struct fig {
    double v[MAXSAMPLES];
    size_t n;
};

static void fig_add(struct fig *f, uint64_t ns, unsigned ops)
{
    if (f->n < MAXSAMPLES)
        f->v[f->n++] = (double)ns / ops;
}

static void fig_pct(struct fig *f, double *p50, double *p99)
{
    if (!f->n) {
        *p50 = *p99 = 0;
        return;
    }
    qsort(f->v, f->n, sizeof(f->v[0]), cmp_d);
    *p50 = f->v[f->n / 2];
    *p99 = f->v[(size_t)((double)(f->n - 1) * 0.99)];
}

/* The daemon under test. */
static struct resild d;
static struct snapshot snap;
static struct rpc_client cl[MAXCALLERS];
static msgpack_sbuffer csb[MAXCALLERS];
static msgpack_packer cpk[MAXCALLERS];
static uint64_t now = 1000000;
static unsigned nkeys;
static struct key **keyv; /* the keys made, by index */
static char dir[256];

static void flush(struct rpc_client *rc)
{
    (void)rc;
}

static char json[2048]; /* the configuration, for the reload */

static int setup(unsigned n)
{
    char path[512], err[256];
    struct config cfg;
    FILE *f;
    unsigned i;

    snprintf(path, sizeof(path), "%s/c.json", dir);
    snprintf(
        json, sizeof(json),
        "{\"max_keys\": %u, \"max_memory_mb\": 20000, \"max_permits\": "
        "100000, \"max_parked\": %u, \"max_parked_per_client\": %u, "
        "\"snapshot\": {\"path\": \"%s/state.snap\"}, \"policies\": {"
        "\"*\": {\"breaker\": {\"failure_threshold\": 1, \"open_ms\": "
        "3600000}, \"limiter\": {\"rate\": 1000000, \"per_ms\": 1000}, "
        "\"permit_ttl_ms\": 60000},"
        "\"park.*\": {\"breaker\": {\"failure_threshold\": 1}, \"bulkhead\": "
        "{\"max_concurrent\": 1, \"queue\": 10}, \"permit_ttl_ms\": "
        "3600000}}}",
        n + PARKED + 200, PARKED + 100, PARKED + 100, dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(json, f);
    fclose(f);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    unlink(path);
    if (core_init(&d, &cfg, now, 7) < 0 || methods_attach(&d) < 0 ||
        snapshot_start(&snap, uv_default_loop(), &d) < 0)
        return -1;
    for (i = 0; i < MAXCALLERS; i++) {
        msgpack_sbuffer_init(&csb[i]);
        msgpack_packer_init(&cpk[i], &csb[i], msgpack_sbuffer_write);
        methods_client_init(&cl[i], &cpk[i], flush);
        cl[i].caller.admin = 1;
    }
    return 0;
}

static void teardown(void)
{
    unsigned i;

    for (i = 0; i < MAXCALLERS; i++) {
        methods_client_gone(&d, &cl[i], now);
        msgpack_sbuffer_destroy(&csb[i]);
    }
    snapshot_stop(&snap, 0);
    metrics_free(&d);
    core_free(&d);
    free(keyv);
    keyv = NULL;
}

static unsigned long denied; /* acquires not allowed: should stay 0 */
static int counting = 1;     /* expire_10k's may fail: not counted */
static unsigned long denied_by[ADMIT_NREASONS + 1];

/* What the acquire method does: the key by name (hash), then decide. */
static uint64_t acquire(struct caller *c, struct key *k)
{
    struct admit_result res;
    const struct key *culprit;
    int rc = core_key(&d, k->name, k->len, now, &k);

    if (rc == 0)
        rc = core_acquire(&d, c, k, 1, 0, 0, 1, now, &res, &culprit);

    if (rc < 0 || !res.allow) {
        denied += counting;
        denied_by[rc < 0 ? ADMIT_NREASONS : res.reason] += counting;
        return 0;
    }
    return res.permit;
}

static void report(struct caller *c, struct key *k, uint64_t permit,
                   enum outcome_kind kind, int latency)
{
    struct outcome o = {.permit = permit,
                        .kind = kind,
                        .cls = kind == OUT_FAILURE ? "network" : "",
                        .severity = -1,
                        .transient = -1,
                        .latency_ms = latency,
                        .attempt = 1,
                        .idempotent = 1};
    struct report_result rr;

    core_report(&d, c, &o, k->name, k->len, now, &rr);
}

/* Time moves 1 ms; the server's cron (every 100 ms) runs when due. */
static void step(void)
{
    now++;
    if (now % 100 == 0)
        core_tick(&d, now);
}

static int make_keys(unsigned n)
{
    unsigned i;

    if (!(keyv = calloc(n, sizeof(*keyv))))
        return -1;
    for (i = 0; i < n; i++) {
        char name[48];
        int len = snprintf(name, sizeof(name), "venue%u.k%07u", i % 97, i);
        struct key *k;
        uint64_t p;
        if (core_key(&d, name, (size_t)len, now, &k) < 0)
            return -1;
        keyv[i] = k;
        if (i % 10 == 1) { /* open for an hour */
            report(&cl[0].caller, k, 0, OUT_FAILURE, 3);
            continue;
        }
        if ((p = acquire(&cl[0].caller, k)))
            report(&cl[0].caller, k, p, OUT_SUCCESS, (int)(i % 200));
    }
    nkeys = n;
    return 0;
}

/* A key whose breaker is closed: hot (the first HOT of them) or any. */
static struct key *pick(int hot, uint64_t *rng)
{
    unsigned i;

    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    i = (unsigned)(*rng % (hot ? HOT : nkeys));
    if (i % 10 == 1)
        i = (i + 1) % nkeys;
    return keyv[i];
}

/* acquire and report, BATCH at a time, through ncallers callers. */
static void bench_decide(int hot, unsigned ncallers, unsigned batches,
                         int wake, struct fig *acq, struct fig *rep)
{
    uint64_t rng = 88172645463325252ull, t;
    struct key *ks[BATCH];
    uint64_t ps[BATCH];
    unsigned b, j, who = 0;

    acq->n = rep->n = 0;
    for (b = 0; b < batches; b++) {
        for (j = 0; j < BATCH; j++)
            ks[j] = pick(hot, &rng);
        t = now_ns();
        for (j = 0; j < BATCH; j++)
            ps[j] = acquire(&cl[(who + j) % ncallers].caller, ks[j]);
        fig_add(acq, now_ns() - t, BATCH);
        t = now_ns();
        for (j = 0; j < BATCH; j++) {
            report(&cl[(who + j) % ncallers].caller, ks[j], ps[j], OUT_SUCCESS,
                   (int)(j * 7));
            if (wake && core_wake_due(&d))
                core_wake(&d, now);
        }
        fig_add(rep, now_ns() - t, BATCH);
        who = (who + BATCH) % ncallers;
        step();
    }
}

/* One request through the RPC layer; returns ns. */
static uint64_t rpc(const char *method, const char *after)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_zone zone;
    struct proto_msg m;
    const char *why;
    uint64_t t;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_uint32(&pk, 7);
    msgpack_pack_str(&pk, strlen(method));
    msgpack_pack_str_body(&pk, method, strlen(method));
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, after ? 2 : 0);
    if (after) {
        msgpack_pack_str(&pk, 5);
        msgpack_pack_str_body(&pk, "limit", 5);
        msgpack_pack_uint32(&pk, 1000);
        msgpack_pack_str(&pk, 5);
        msgpack_pack_str_body(&pk, "after", 5);
        msgpack_pack_str(&pk, strlen(after));
        msgpack_pack_str_body(&pk, after, strlen(after));
    }
    msgpack_zone_init(&zone, 4096);
    if (proto_decode(sb.data, sb.size, &zone, &m, &why) < 0) {
        fprintf(stderr, "decode: %s\n", why);
        exit(1);
    }
    t = now_ns();
    methods_dispatch(&d, &cl[0], &m, &cpk[0], now);
    t = now_ns() - t;
    msgpack_sbuffer_clear(&csb[0]);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
    return t;
}

/* Repeat fn until budget_ms of measured time or max reps (at least 3). */
#define REPEAT(f, max, budget_ms, expr)                                        \
    do {                                                                       \
        uint64_t spent_ = 0;                                                   \
        unsigned r_;                                                           \
        (f)->n = 0;                                                            \
        for (r_ = 0; r_ < (max) &&                                             \
                     (r_ < 3 || spent_ < (uint64_t)(budget_ms) * 1000000u);    \
             r_++) {                                                           \
            uint64_t ns_ = (expr);                                             \
            spent_ += ns_;                                                     \
            fig_add((f), ns_, 1);                                              \
        }                                                                      \
    } while (0)

static uint64_t timed_tick(void)
{
    uint64_t t = now_ns();

    core_tick(&d, now);
    t = now_ns() - t;
    now++;
    return t;
}

static uint64_t timed_render(void)
{
    struct prom_buf b;
    uint64_t t;

    prom_init(&b, METRICS_MAX_BYTES);
    t = now_ns();
    if (metrics_render(&d, now, &b) < 0)
        fprintf(stderr, "metrics_render failed\n");
    t = now_ns() - t;
    prom_free(&b);
    return t;
}

/* A reload of the same configuration: core_rebind, every key once. */
static uint64_t timed_reload(void)
{
    struct config cfg;
    char err[256];
    uint64_t t;

    if (config_load_text(json, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        exit(1);
    }
    t = now_ns();
    if (core_rebind(&d, &cfg, now) < 0)
        fprintf(stderr, "core_rebind failed\n");
    t = now_ns() - t;
    config_free(&cfg);
    return t;
}

static uint64_t timed_serialize(void)
{
    uint64_t t = now_ns();

    snapshot_serialize(&snap, now);
    return now_ns() - t;
}

/* Expire 10k permits in one tick: ns per permit. */
static double expire_10k(void)
{
    uint64_t rng = 1, t;
    unsigned i, got = 0;

    counting = 0;
    for (i = 0; i < 10000; i++)
        got += acquire(&cl[1].caller, pick(0, &rng)) != 0;
    now += 60001; /* permit_ttl_ms */
    t = now_ns();
    core_tick(&d, now);
    t = now_ns() - t;
    return got ? (double)t / got : 0;
}

/* PARKED requests, one per key "park.kI", each behind a full bulkhead. */
static int park_10k(void)
{
    unsigned i;

    for (i = 0; i < PARKED; i++) {
        char name[32];
        int len = snprintf(name, sizeof(name), "park.k%05u", i);
        struct admit_result res;
        const struct key *culprit;
        struct key *k;
        if (core_key(&d, name, (size_t)len, now, &k) < 0 ||
            !acquire(&cl[2].caller, k) ||
            core_acquire(&d, &cl[3].caller, k, 1, 0, 3600000, 100 + i, now,
                         &res, &culprit) < 0 ||
            !res.parked)
            return -1;
    }
    core_wake(&d, now);
    return 0;
}

static void row(const char *what, struct fig *f, const char *unit,
                double scale)
{
    double p50, p99;

    fig_pct(f, &p50, &p99);
    printf("  %-34s %12.1f %12.1f  %s\n", what, p50 / scale, p99 / scale,
           unit);
}

static struct fig fa, fr;

static void run(unsigned n)
{
    static const unsigned callers[] = {1, 100, 1000};
    char what[64];
    uint64_t t0 = now_ns();
    unsigned i;
    double pe;

    if (setup(n) < 0 || make_keys(n) < 0) {
        fprintf(stderr, "setup of %u keys failed\n", n);
        exit(1);
    }
    printf("\n%u keys (%u open), set up in %.1f s; ns per operation unless "
           "said\n  %-34s %12s %12s\n",
           n, (unsigned)d.nunwell, (double)(now_ns() - t0) / 1e9, "", "p50",
           "p99");
    denied = 0;
    counting = 1;
    bench_decide(1, 1, 20000, 0, &fa, &fr);
    row("acquire, hot keys", &fa, "ns", 1);
    row("report, hot keys", &fr, "ns", 1);
    bench_decide(0, 1, 20000, 0, &fa, &fr);
    row("acquire, any key", &fa, "ns", 1);
    row("report, any key", &fr, "ns", 1);
    for (i = 0; i < sizeof(callers) / sizeof(callers[0]); i++) {
        bench_decide(1, callers[i], 5000, 0, &fa, &fr);
        snprintf(what, sizeof(what), "acquire, %u callers", callers[i]);
        row(what, &fa, "ns", 1);
        snprintf(what, sizeof(what), "report, %u callers", callers[i]);
        row(what, &fr, "ns", 1);
    }
    REPEAT(&fa, 2000, 300, rpc("status", "venue50"));
    row("status, one page of 1000", &fa, "us", 1e3);
    REPEAT(&fa, 2000, 300, rpc("health", NULL));
    row("health", &fa, "us", 1e3);
    REPEAT(&fa, 20000, 100, timed_tick());
    row("tick, nothing due, 0 parked", &fa, "ns", 1);
    bench_decide(1, 1, 5000, 1, &fa, &fr);
    row("report+wake, 0 parked", &fr, "ns", 1);
    REPEAT(&fa, 20, 1000, timed_render());
    row("metrics page", &fa, "ms", 1e6);
    REPEAT(&fa, 5, 1000, timed_serialize());
    row("snapshot serialize", &fa, "ms", 1e6);
    REPEAT(&fa, 5, 1000, timed_reload());
    row("reload (core_rebind)", &fa, "ms", 1e6);
    if (park_10k() < 0) {
        fprintf(stderr, "parking failed\n");
        exit(1);
    }
    REPEAT(&fa, 2000, 300, timed_tick());
    row("tick, 10k parked", &fa, "ns", 1);
    bench_decide(1, 1, 2000, 1, &fa, &fr);
    row("acquire, 10k parked", &fa, "ns", 1);
    row("report+wake, 10k parked", &fr, "ns", 1);
    pe = expire_10k(); /* last: the timeouts open breakers */
    printf("  %-34s %12.1f %12s  ns per permit\n", "tick expiring 10k permits",
           pe, "");
    if (denied)
        printf("  (%lu acquires were denied: figures are off; rate %lu, "
               "other %lu)\n",
               denied, denied_by[ADMIT_RATE_LIMITED],
               denied - denied_by[ADMIT_RATE_LIMITED]);
    fflush(stdout);
    teardown();
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    uint64_t t0 = now_ns();
    int i;

    snprintf(dir, sizeof(dir), "%s/resild-bench-scale.XXXXXX", base);
    if (!mkdtemp(dir))
        return 1;
    unsetenv("STATE_DIRECTORY");
    printf("bench_scale: the core in-process under a fake clock "
           "(tests/bench_scale.c)\n");
    if (argc > 1) {
        for (i = 1; i < argc; i++)
            run((unsigned)strtoul(argv[i], NULL, 10));
    } else {
        run(10000);
        run(100000);
        run(1000000);
    }
    {
        char p[600];
        snprintf(p, sizeof(p), "%s/state.snap.journal", dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/state.snap", dir);
        unlink(p);
    }
    rmdir(dir);
    printf("\nin all %.1f s\n", (double)(now_ns() - t0) / 1e9);
    return 0;
}
