/*
 * test_snapshot.c - snapshots under a fake clock, no daemon: export at t1
 * on clock A, import at t2 on clock B, and the remaining durations are the
 * same (breaker open time, force TTL, venue pause, tokens, heartbeat
 * silence, window ages, retry budget); the file format round-trips and
 * every corruption (truncation at every byte, a flipped bit in every byte,
 * a future version, huge declared counts, hostile records) is refused with
 * the daemon starting clean and the file set aside; the journal replays
 * exactly its complete records whatever its torn tail; the config section.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "snapfile.h"
#include "snapshot.h"
#include "tap.h"

static char dir[] = "/tmp/resild-test-snap.XXXXXX";

static void answer(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err)
{
    (void)c, (void)msgid, (void)k, (void)res, (void)err;
}

static const char *CONF =
    "{\"policies\": {"
    "\"svc.*\": {\"breaker\": {\"failure_threshold\": 1, \"open_ms\": 60000}},"
    "\"tw.*\": {\"breaker\": {\"failure_threshold\": 0, \"minimum_calls\": "
    "1000, \"window\": {\"type\": \"time\", \"size\": 60}}},"
    "\"venue\": {\"limiter\": {\"rate\": 10, \"per\": \"second\"}},"
    "\"beat.*\": {\"heartbeat\": {\"timeout_ms\": 5000}}"
    "}}";

/* A config from json (with the snapshot section of path, if any). */
static int load(struct config *cfg, const char *json, char *err, size_t cap)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    return config_load(path, cfg, err, cap);
}

static void start(struct resild *d, const char *json, uint64_t now)
{
    struct config cfg;
    char err[256];

    if (load(&cfg, json, err, sizeof(err)) < 0) {
        DIAG("config: %s", err);
        exit(1);
    }
    if (core_init(d, &cfg, now, 42) < 0)
        exit(1);
}

static struct key *key(struct resild *d, const char *name, uint64_t now)
{
    struct key *k = NULL;

    if (core_key(d, name, strlen(name), now, &k) < 0)
        return NULL;
    return k;
}

static void fail_report(struct resild *d, struct caller *c, const char *name,
                        const char *cls, int64_t venue_wait, uint64_t now)
{
    struct outcome o = {.kind = OUT_FAILURE,
                        .severity = -1,
                        .transient = -1,
                        .latency_ms = 5,
                        .attempt = 1,
                        .idempotent = 1,
                        .venue_wait_ms = venue_wait};
    struct report_result rr;

    o.cls = cls;
    core_report(d, c, &o, name, strlen(name), now, &rr);
}

static struct key_export ex; /* large: one, static */

/* Export every key of a at now_a, import into b at now_b. */
static void copy_state(struct resild *a, uint64_t now_a, struct resild *b,
                       uint64_t now_b)
{
    struct budget_export be;
    struct key *k = NULL;
    size_t bucket = 0;

    core_export_budget(a, now_a, &be);
    core_import_budget(b, now_b, &be);
    while ((k = core_key_next(a, k, &bucket))) {
        core_export_key(k, now_a, &ex);
        if (core_import_key(b, &ex, now_b) < 0)
            DIAG("import %s failed", ex.name);
    }
}

/* --- remaining time under two clocks ------------------------------------- */

static void test_remaining_time(void)
{
    /* Clock A: a host up for days; clock B: just rebooted (small), or
     * far ahead: the remaining durations must not care. */
    const uint64_t A = 900000000, clocks_b[] = {7, 5000000000000ULL};
    struct resild a, b;
    struct caller c = {.answer = answer};
    struct key *k;
    size_t i;

    start(&a, CONF, A);
    fail_report(&a, &c, "svc.a", "network", -1, A); /* opens: 60 s */
    core_force(&a, key(&a, "svc.b", A), BREAKER_FORCE_OPEN, "maint", 5, 120000,
               0, A);
    fail_report(&a, &c, "venue", "rate_limited", 90000, A); /* 90 s pause */
    k = key(&a, "venue", A);
    {
        struct admit_result res;
        const struct key *cul;
        /* take 4 of the 10 tokens (the pause stops acquire: take directly) */
        limiter_take(&k->lim, &k->policy->limiter, A, 4);
        (void)res, (void)cul;
    }
    key(&a, "beat.x", A);
    core_heartbeat(&a, key(&a, "beat.x", A), A);
    /* A time window with failures at ages 0, 10 and 30 s at export. */
    for (i = 0; i < 3; i++) {
        uint64_t t = A + 30000 * (i == 2) + 20000 * (i >= 1);
        (void)t;
    }
    fail_report(&a, &c, "tw.k", "network", -1, A + 1000);
    fail_report(&a, &c, "tw.k", "network", -1, A + 21000);
    fail_report(&a, &c, "tw.k", "network", -1, A + 31000);
    core_heartbeat(&a, key(&a, "beat.x", A + 31000), A + 31000);

    for (i = 0; i < 2; i++) {
        uint64_t t1 = A + 31000, B = clocks_b[i];
        struct key *kb;
        char name[64];

        start(&b, CONF, B);
        copy_state(&a, t1, &b, B);
        snprintf(name, sizeof(name), "clock B = %llu", (unsigned long long)B);
        kb = keys_find(&b.keys, "svc.a", 5);
        IS(breaker_retry_after(&kb->br, B), 60000 - 31000,
           "open breaker: the same time left");
        core_advance(&b, kb, B + 29000 - 1);
        IS(kb->br.state, BREAKER_OPEN, "still open 1 ms before the end");
        core_advance(&b, kb, B + 29000);
        IS(kb->br.state, BREAKER_HALF_OPEN, "half-open exactly at the end");
        IS(kb->br.reopens, 1, "backoff step kept");
        IS(kb->br.opens, 1, "opens kept");
        kb = keys_find(&b.keys, "svc.b", 5);
        IS(kb->br.force, BREAKER_FORCE_OPEN, "force kept");
        OK(!strcmp(key_force_reason(kb), "maint"), "force reason kept");
        IS(breaker_retry_after(&kb->br, B), 120000 - 31000,
           "force: the same TTL left");
        core_advance(&b, kb, B + 89000 - 1);
        IS(kb->br.force, BREAKER_FORCE_OPEN, "forced 1 ms before its TTL");
        core_advance(&b, kb, B + 89000);
        IS(kb->br.force, BREAKER_AUTO, "force over exactly at its TTL");
        kb = keys_find(&b.keys, "venue", 5);
        IS(limiter_paused_ms(&kb->lim, B), 90000 - 31000,
           "venue pause: the same time left");
        IS(limiter_available(&kb->lim, &kb->policy->limiter, B), 10,
           "tokens as at the export (refilled over the 31 s before it)");
        kb = keys_find(&b.keys, "beat.x", 6);
        IS(heartbeat_silent_ms(&kb->hb, B), 0,
           "heartbeat silence kept (0: a beat at the export)");
        kb = keys_find(&b.keys, "tw.k", 4);
        IS(kb->br.failures, 3, "lifetime failures kept");
        /* A clock younger than a bucket's age (7 ms after a reboot)
         * cannot place it: only the buckets it can hold come back. */
        IS((long long)breaker_failure_rate(&kb->br, B), 100,
           "time window: rate kept");
        {
            /* The oldest failure (age 30 s) leaves a 60 s window 30 s
             * after the import, not earlier or later. */
            uint32_t nwin;
            struct key_export *e = &ex;
            core_export_key(kb, B + 29000, e);
            nwin = e->br.nwin;
            IS(nwin, B >= 31000 ? 3 : 1, "3 buckets 29 s later");
            core_export_key(kb, B + 30000, e);
            IS(e->br.nwin, B >= 31000 ? 2 : 1,
               "the oldest bucket leaves on time");
        }
        DIAG("%s done", name);
        core_free(&b);
    }
    core_free(&a);
}

static void test_heartbeat_lost_kept(void)
{
    const uint64_t A = 1000000, B = 50;
    struct resild a, b;
    struct key *k;

    start(&a, CONF, A);
    k = key(&a, "beat.y", A);
    core_heartbeat(&a, k, A);
    IS(core_beat_lost(&a, k, A + 5001), 1, "lost after 5001 ms");
    start(&b, CONF, B);
    copy_state(&a, A + 6000, &b, B);
    k = keys_find(&b.keys, "beat.y", 6);
    IS(k->hb.lost, 1, "lost flag survives");
    IS(core_key_health(k), HEALTH_UNAVAILABLE, "and health says so");
    OK(b.nunwell == 1 && b.unwell == k, "on the health list after import");
    core_free(&a);
    core_free(&b);
}

static void test_pure_modules(void)
{
    struct breaker_conf c = BREAKER_CONF_DEFAULT;
    struct breaker br, br2;
    uint8_t win[100], win2[100], calls[BREAKER_MAX_COUNT_WINDOW];
    struct breaker_export e;
    struct limiter l, l2;
    struct limiter_conf lc = {10, 1000, 10, 1000}, lc2 = {5, 100, 3, 1000};
    struct limiter_export le;
    int i;

    breaker_init(&br, &c, win, 1, 1000);
    for (i = 0; i < 4; i++)
        breaker_record(&br, &c, 1000, br.generation, 0, BREAKER_FAILURE, 1);
    breaker_record(&br, &c, 1000, br.generation, 0, BREAKER_SUCCESS, 1);
    breaker_export(&br, 2000, &e, calls, NULL);
    IS(e.nwin, 5, "count window: 5 entries");
    c.window_size = 3;
    breaker_init(&br2, &c, win2, 1, 10);
    breaker_import(&br2, &c, 10, &e, calls, NULL);
    IS(br2.win_fill, 3, "a smaller window keeps the newest 3");
    IS(br2.win_failures, 2, "of them 2 failures");
    IS(br2.consecutive_failures, 0, "consecutive run kept");
    e.nwin = BREAKER_MAX_COUNT_WINDOW + 1;
    IS(breaker_export_check(&e, calls, NULL), -1, "too many entries refused");
    e.nwin = 1;
    calls[0] = 4;
    IS(breaker_export_check(&e, calls, NULL), -1, "entry > 3 refused");
    calls[0] = 1;
    e.state = 3;
    IS(breaker_export_check(&e, calls, NULL), -1, "state out of range");

    limiter_init(&l, &lc, 5000);
    limiter_take(&l, &lc, 5000, 7);
    limiter_pause(&l, &lc, 5000, 2500);
    limiter_export(&l, &lc, 5100, &le);
    limiter_init(&l2, &lc, 3);
    limiter_import(&l2, &lc, 3, &le);
    IS(limiter_available(&l2, &lc, 3), 4, "tokens: 3 + 1 refilled in 100 ms");
    IS(limiter_paused_ms(&l2, 3), 2400, "pause: the time left");
    limiter_import(&l2, &lc2, 3, &le);
    IS(limiter_available(&l2, &lc2, 3), 3, "another burst: cut to it");
    le.level = UINT64_MAX;
    le.per_ms = 0;
    limiter_import(&l2, &lc, 3, &le);
    IS(limiter_available(&l2, &lc, 3), 10, "hostile level: clamped");
}

/* --- files -----------------------------------------------------------------
 */

static char snap_path[300];

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd < 0 || write(fd, p, n) != (ssize_t)n)
        DIAG("write %s failed", path);
    close(fd);
}

static uint8_t *read_file(const char *path, size_t *n)
{
    struct stat st;
    uint8_t *p;
    int fd = open(path, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    p = malloc((size_t)st.st_size + 1);
    *n = (size_t)read(fd, p, (size_t)st.st_size);
    close(fd);
    return p;
}

/* Remove every file in dir but c.json. */
static void clean_dir(void)
{
    DIR *dd = opendir(dir);
    struct dirent *e;
    char p[600];

    while ((e = readdir(dd)))
        if (e->d_name[0] != '.' && strcmp(e->d_name, "c.json")) {
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(dd);
}

static int count_aside(void)
{
    DIR *dd = opendir(dir);
    struct dirent *e;
    int n = 0;

    while ((e = readdir(dd)))
        n += strstr(e->d_name, ".corrupt-") != NULL;
    closedir(dd);
    return n;
}

static char conf_with_path[1024];

/* Start a daemon's state with the snapshot module on dir: restore, and
 * say how many keys came back (-1 if the start failed). */
static long restore_keys(struct resild *d, struct snapshot *s, uint64_t now)
{
    start(d, conf_with_path, now);
    if (snapshot_start(s, uv_default_loop(), d) < 0)
        return -1;
    return (long)d->keys.count;
}

/* A small snapshot of a state with an open breaker, a force, a pause. */
static uint8_t *make_snapshot(size_t *n)
{
    struct resild d;
    struct snapshot s;
    struct caller c = {.answer = answer};
    uint8_t *p;

    clean_dir();
    if (restore_keys(&d, &s, 1000) != 0)
        DIAG("not a clean start");
    fail_report(&d, &c, "svc.a", "network", -1, 1000);
    core_force(&d, key(&d, "svc.b", 1000), BREAKER_FORCE_OPEN, "m", 1, 0, 0,
               1000);
    snapshot_stop(&s, 1);
    core_free(&d);
    p = read_file(snap_path, n);
    return p;
}

static void test_round_trip(void)
{
    struct resild d;
    struct snapshot s;
    struct key *k;
    size_t n;
    uint8_t *p = make_snapshot(&n);

    OK(p && n > SNAPFILE_HEADER_BYTES, "snapshot written (%zu bytes)", n);
    IS(restore_keys(&d, &s, 77), 2, "round trip: 2 keys back");
    k = keys_find(&d.keys, "svc.a", 5);
    OK(k && k->br.state == BREAKER_OPEN, "svc.a open");
    k = keys_find(&d.keys, "svc.b", 5);
    OK(k && k->br.force == BREAKER_FORCE_OPEN && !strcmp(key_force_reason(k), "m"),
       "svc.b forced with its reason");
    IS(count_aside(), 0, "nothing set aside");
    snapshot_stop(&s, 0);
    core_free(&d);
    free(p);
}

/* Write bytes as the snapshot, restore: a clean start with the file set
 * aside, never a crash.  Returns 1 when so. */
static int refused(const uint8_t *p, size_t n)
{
    struct resild d;
    struct snapshot s;
    long keys;
    int ok;

    clean_dir();
    write_file(snap_path, p, n);
    keys = restore_keys(&d, &s, 5);
    ok = keys == 0 && count_aside() == 1 && access(snap_path, F_OK) < 0;
    snapshot_stop(&s, 0);
    core_free(&d);
    return ok;
}

static void test_corruption(void)
{
    size_t n, i, bad = 0;
    uint8_t *p = make_snapshot(&n), *q = malloc(n);
    struct snapfile_header h;

    for (i = 0; i < n; i++)
        if (!refused(p, i))
            bad++;
    IS(bad, 0, "truncated at every byte boundary: all refused");
    bad = 0;
    for (i = 0; i < n; i++) {
        memcpy(q, p, n);
        q[i] ^= (uint8_t)(1u << (i % 8));
        if (!refused(q, n))
            bad++;
    }
    IS(bad, 0, "a bit flipped in every byte: all refused");
    /* Future version, with a header checksum that matches. */
    memcpy(q, p, n);
    IS(snapfile_header_decode(q, &h), 0, "header decodes");
    h.version = SNAPFILE_VERSION + 1;
    snapfile_header_encode(&h, q);
    IS(snapfile_header_decode(q, &h), SNAPFILE_EFUTURE, "future version seen");
    OK(refused(q, n), "future version: set aside, clean start");
    /* Huge declared key count, checksum right. */
    snapfile_header_decode(p, &h);
    h.nkeys = 1ULL << 40;
    snapfile_header_encode(&h, q);
    IS(snapfile_header_decode(q, &h), SNAPFILE_ECORRUPT, "2^40 keys refused");
    OK(refused(q, n), "huge count: set aside");
    /* Garbage after the records, sizes agreeing. */
    {
        uint8_t *r = malloc(n + 16);
        memcpy(r, p, n);
        memset(r + n, 0, 16);
        snapfile_header_decode(p, &h);
        h.payload_bytes += 16;
        h.payload_crc =
            snapfile_crc32(0, r + SNAPFILE_HEADER_BYTES, h.payload_bytes);
        snapfile_header_encode(&h, r);
        OK(refused(r, n + 16), "bytes after the last record: set aside");
        free(r);
    }
    OK(refused((const uint8_t *)"", 0), "empty file: set aside");
    free(p);
    free(q);
}

/* Hostile record bodies, straight into the decoder. */
static void test_hostile_records(void)
{
    struct snapbuf b;
    struct key_export e;
    uint32_t len;
    size_t i, bad = 0;

    memset(&e, 0, sizeof(e));
    snprintf(e.name, sizeof(e.name), "a.b");
    e.len = 3;
    e.br.window_time = 1;
    e.br.nwin = 2;
    e.win_buckets[0].age_s = 3;
    e.win_buckets[0].calls = 5;
    e.win_buckets[1].age_s = 1;
    e.win_buckets[1].calls = 1;
    snapbuf_init(&b);
    snapfile_put_key(&b, &e);
    len = snapfile_u32(b.p);
    IS(snapfile_get_key(b.p + 4, len, &ex), 0, "a good record decodes");
    for (i = 0; i < len; i++)
        if (snapfile_get_key(b.p + 4, i, &ex) == 0)
            bad++;
    IS(bad, 0, "every truncated body refused");
    /* nwin = 2^31 declared in a body: the bound refuses it before any
     * entry is read (offset of nwin: 1+3+1 + 4 + 8*4 + 4*4 + 8*5 + 1). */
    {
        size_t at = 4 + 1 + 3 + 1 + 4 + 32 + 16 + 40 + 1;
        uint8_t *c = malloc(len + 4);
        memcpy(c, b.p, len + 4);
        c[at] = 0, c[at + 1] = 0, c[at + 2] = 0, c[at + 3] = 0x80;
        IS(snapfile_get_key(c + 4, len, &ex), SNAPFILE_ECORRUPT,
           "a window of 2^31 entries refused");
        c[at] = 2, c[at + 3] = 0;
        c[4] = 200; /* name length > KEY_MAX */
        IS(snapfile_get_key(c + 4, len, &ex), SNAPFILE_ECORRUPT,
           "a 200-byte name refused");
        free(c);
    }
    e.win_buckets[0].failures = 6; /* more failures than calls */
    b.len = 0;
    snapfile_put_key(&b, &e);
    IS(snapfile_get_key(b.p + 4, snapfile_u32(b.p), &ex), SNAPFILE_ECORRUPT,
       "a bucket with failures > calls refused");
    e.win_buckets[0].failures = 0;
    e.name[1] = ' ';
    b.len = 0;
    snapfile_put_key(&b, &e);
    IS(snapfile_get_key(b.p + 4, snapfile_u32(b.p), &ex), SNAPFILE_ECORRUPT,
       "an invalid key name refused");
    snapbuf_free(&b);
    IS(snapfile_crc32(0, "123456789", 9), 0xCBF43926u, "CRC-32 check value");
}

/* The journal: two forces after the snapshot, the file cut at every byte:
 * exactly the complete records come back, and the tail is cut off. */
static void test_journal(void)
{
    char jpath[320];
    struct resild d;
    struct snapshot s;
    struct snapbuf b;
    size_t full, i, bad = 0;
    struct key_export e;
    uint8_t *p;

    snprintf(jpath, sizeof(jpath), "%s.journal", snap_path);
    memset(&e, 0, sizeof(e));
    snapbuf_init(&b);
    b.len = 0;
    snapbuf_reserve(&b, 8);
    memcpy(b.p, snapfile_journal_magic, 8);
    b.len = 8;
    e.len = 5;
    memcpy(e.name, "svc.x", 6);
    e.br.force = BREAKER_FORCE_OPEN;
    e.br.generation = 2;
    e.lim.per_ms = e.crit.per_ms = 1;
    snapfile_put_journal(&b, 1, &e);
    full = b.len;
    memcpy(e.name, "svc.y", 6);
    snapfile_put_journal(&b, 2, &e);
    for (i = 8; i <= b.len; i++) {
        long want = i == b.len ? 2 : i >= full ? 1 : 0;
        size_t after;
        clean_dir();
        write_file(jpath, b.p, i);
        if (restore_keys(&d, &s, 9) != want)
            bad++;
        snapshot_stop(&s, 0);
        core_free(&d);
        p = read_file(jpath, &after);
        if (after != (want == 2   ? b.len
                      : want == 1 ? full
                                  : 8) &&
            !(want == 0 && after == 8) && !(i == 8 && after == 8))
            bad++;
        free(p);
    }
    IS(bad, 0,
       "journal cut at every byte: the complete records replayed, "
       "the torn tail cut");
    /* Records the snapshot covers are not replayed over it. */
    clean_dir();
    {
        struct caller c = {.answer = answer};
        restore_keys(&d, &s, 100);
        core_force(&d, key(&d, "svc.z", 100), BREAKER_FORCE_OPEN, "x", 1, 0, 0,
                   100);
        /* The journal record of the force is pending (no loop run):
         * write it as the worker would, then a snapshot after a reset. */
        (void)c;
        snapshot_stop(&s, 1);
        core_free(&d);
    }
    IS(restore_keys(&d, &s, 5), 1, "snapshot of a forced key restored");
    OK(keys_find(&d.keys, "svc.z", 5)->br.force == BREAKER_FORCE_OPEN,
       "forced");
    snapshot_stop(&s, 0);
    core_free(&d);
    snapbuf_free(&b);
}

/* A buffer past SNAPBUF_MAP_BYTES becomes a mapping and keeps growing
 * with its bytes intact. */
static void test_snapbuf_growth(void)
{
    struct snapbuf b;
    uint8_t chunk[1000];
    size_t i, j, bad = 0, n = 0;

    snapbuf_init(&b);
    for (i = 0; n < 3 * SNAPBUF_MAP_BYTES + 7; i++) {
        for (j = 0; j < sizeof(chunk); j++)
            chunk[j] = (uint8_t)((n + j) * 31 >> 3);
        if (snapbuf_reserve(&b, sizeof(chunk)) < 0)
            break;
        memcpy(b.p + b.len, chunk, sizeof(chunk));
        b.len += sizeof(chunk);
        n += sizeof(chunk);
    }
    IS(b.len, n, "3 MB appended");
    OK(b.mapped && b.cap >= n, "the buffer is a mapping now");
    for (j = 0; j < b.len; j++)
        bad += b.p[j] != (uint8_t)(j * 31 >> 3);
    IS(bad, 0, "every byte kept across the growths");
    snapbuf_free(&b);
    OK(!b.p && !b.cap && !b.mapped, "freed");
}

/* --- the walk in steps (snapshot.h: consistency) ------------------------- */

static void noop_idle(uv_idle_t *h)
{
    (void)h;
}

/* The loop until the snapshot (walk and write) and the journal are idle,
 * 30 s at most (a disk busy with fsyncs is slow, not broken).  While a
 * walk is under way an idle handle of ours keeps the loop alive (the
 * module's handles are unreferenced); a write or journal append on the
 * thread pool keeps it alive by itself, and uv_run waits for it. */
static void settle(struct snapshot *s)
{
    uv_idle_t h;
    uint64_t end = uv_hrtime() + 30000000000ULL;

    uv_idle_init(uv_default_loop(), &h);
    while ((s->busy || s->jbusy) && uv_hrtime() < end) {
        if (s->busy && !s->wbusy)
            uv_idle_start(&h, noop_idle);
        else
            uv_idle_stop(&h);
        uv_run(uv_default_loop(), UV_RUN_ONCE);
    }
    if (s->busy || s->jbusy)
        DIAG("the snapshot did not settle in 30 s");
    uv_close((uv_handle_t *)&h, NULL);
    uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}

static void make_keys(struct resild *d, unsigned n, uint64_t now)
{
    char name[32];
    unsigned i;

    for (i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "svc.k%03u", i);
        key(d, name, now);
    }
}

/* The u64 little-endian at p. */
static uint64_t u64_at(const uint8_t *p)
{
    return (uint64_t)snapfile_u32(p) | (uint64_t)snapfile_u32(p + 4) << 32;
}

/* Steps of any size, ended by the key count or by the time budget, make
 * exactly the bytes one go makes (name order, pages of SNAPSHOT_PAGE_KEYS
 * crossed anywhere), and a step ends right after the last key. */
static void test_steps_same_bytes(void)
{
    static const uint64_t sizes[] = {1, 2, 3, 63, 64, 65, 127, 128, 150, 10000};
    struct resild d;
    struct snapshot s;
    uint8_t *one;
    size_t n1, i, bad = 0, badsteps = 0;
    const uint64_t T = 5000000;

    clean_dir();
    restore_keys(&d, &s, T);
    make_keys(&d, 150, T);
    core_force(&d, key(&d, "svc.k100", T), BREAKER_FORCE_OPEN, "r", 1, 0, 0, T);
    snapshot_serialize(&s, T + 10);
    n1 = s.buf.len;
    one = malloc(n1);
    memcpy(one, s.buf.p, n1);
    IS(s.last_keys, 150, "one go: 150 keys");
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t steps = 0, want = (150 + sizes[i] - 1) / sizes[i];
        snapshot_begin(&s, T + 10);
        while (!snapshot_step(&s, T + 10, sizes[i], UINT64_MAX) && steps < 1000)
            steps++;
        steps++;
        snapshot_finish(&s);
        if (s.buf.len != n1 || memcmp(s.buf.p, one, n1))
            bad++;
        if (steps != want)
            badsteps++,
                DIAG("%llu keys a step: %llu steps, want %llu",
                     (unsigned long long)sizes[i], (unsigned long long)steps,
                     (unsigned long long)want);
    }
    IS(bad, 0, "steps of 1..10000 keys: the same bytes as one go");
    IS(badsteps, 0, "and the walk ends with the step that takes the last key");
    /* A budget of 0 us: every step ends after its first key. */
    {
        uint64_t steps = 0;
        snapshot_begin(&s, T + 10);
        while (!snapshot_step(&s, T + 10, UINT64_MAX, 0) && steps < 1000)
            steps++;
        snapshot_finish(&s);
        IS(steps + 1, 150, "time budget spent: one key a step");
        OK(s.buf.len == n1 && !memcmp(s.buf.p, one, n1), "same bytes");
    }
    free(one);
    snapshot_stop(&s, 0);
    core_free(&d);
}

/* The daemon's path (snapshot_now, then the loop): one step per loop turn;
 * keys created behind the cursor wait for the next snapshot, those ahead
 * are in this one. */
static void test_steps_on_the_loop(void)
{
    struct resild d, d2;
    struct snapshot s, s2;
    uv_idle_t h;
    const uint64_t T = 7000;

    clean_dir();
    restore_keys(&d, &s, T);
    make_keys(&d, 20, T);
    snapshot_run(&s);
    uv_timer_stop(&s.timer); /* only the snapshots asked for here */
    s.step_keys = 3;
    s.step_us = UINT64_MAX;
    IS(snapshot_now(&s), 0, "snapshot started");
    IS(s.ser_steps, 1, "its first step at once");
    IS(s.ser_nkeys, 3, "3 keys in it");
    IS(snapshot_now(&s), -1, "a second one while it runs: refused");
    IS(s.skipped, 1, "and counted as skipped");
    key(&d, "svc.a", T); /* behind the cursor (svc.k002) */
    key(&d, "svc.z", T); /* ahead of it */
    uv_idle_init(uv_default_loop(), &h);
    uv_idle_start(&h, noop_idle);
    uv_run(uv_default_loop(), UV_RUN_ONCE);
    IS(s.ser_steps, 2, "one loop turn: exactly one more step");
    uv_run(uv_default_loop(), UV_RUN_ONCE);
    IS(s.ser_steps, 3, "and one more the next turn");
    uv_close((uv_handle_t *)&h, NULL);
    settle(&s);
    IS(s.written, 1, "written");
    IS(s.last_keys, 21, "21 keys: the 20, and svc.z created ahead");
    IS(s.last_steps, 7, "in 7 steps of 3");
    snapshot_stop(&s, 0); /* as a kill -9: no final snapshot */
    core_free(&d);
    IS(restore_keys(&d2, &s2, T), 21, "21 keys restored");
    OK(keys_find(&d2.keys, "svc.z", 5) && !keys_find(&d2.keys, "svc.a", 5),
       "svc.z in it, svc.a (created behind the cursor) waits for the next");
    snapshot_stop(&s2, 0);
    core_free(&d2);
}

/*
 * The consistency rule (snapshot.h): a force on a key the walk has already
 * exported, acknowledged, then kill -9 after that snapshot is on disk: the
 * force survives, as its journal record is newer than the snapshot's S0
 * and so neither emptied by it nor skipped at restore.  The next snapshot
 * (begun after the force) covers it and empties the journal.
 */
static void test_force_during_walk(void)
{
    struct resild d, d2, d3;
    struct snapshot s, s2, s3;
    char jpath[320];
    struct key *k;
    uint8_t *p;
    size_t n = 0;
    uint64_t seq_at_start;
    const uint64_t T = 9000;
    struct stat st;

    snprintf(jpath, sizeof(jpath), "%s.journal", snap_path);
    clean_dir();
    restore_keys(&d, &s, T);
    make_keys(&d, 20, T);
    /* An earlier force, journalled and then covered: the walk's S0. */
    core_force(&d, key(&d, "svc.k015", T), BREAKER_FORCE_OPEN, "old", 3, 0, 0,
               T);
    settle(&s);
    seq_at_start = s.seq;
    snapshot_run(&s);
    uv_timer_stop(&s.timer);
    s.step_keys = 3;
    s.step_us = UINT64_MAX;
    snapshot_now(&s); /* svc.k000..k002 exported */
    k = keys_find(&d.keys, "svc.k001", 8);
    core_force(&d, k, BREAKER_FORCE_OPEN, "late", 4, 0, 0, T);
    core_reset(&d, keys_find(&d.keys, "svc.k015", 8), 0, T); /* ahead */
    settle(&s); /* the walk, the write, the journal, any emptying */
    IS(s.written, 1, "the snapshot is on disk");
    IS(s.covered_seq, seq_at_start, "it covers S0, the walk's start");
    OK(s.seq > seq_at_start, "the force's record is newer than S0");
    p = read_file(snap_path, &n);
    OK(p && n > 32 && u64_at(p + 24) == seq_at_start,
       "the file's header says S0");
    free(p);
    OK(stat(jpath, &st) == 0 && st.st_size > 8,
       "the journal still holds the force made mid-walk");
    snapshot_stop(&s, 0); /* kill -9: no final snapshot */
    core_free(&d);

    restore_keys(&d2, &s2, T + 5);
    k = keys_find(&d2.keys, "svc.k001", 8);
    OK(k && k->br.force == BREAKER_FORCE_OPEN &&
           !strcmp(key_force_reason(k), "late"),
       "after a kill -9: the force on a key exported before it survives");
    k = keys_find(&d2.keys, "svc.k015", 8);
    OK(k && k->br.force == BREAKER_AUTO, "and the reset after it");
    /* The next snapshot begins after them: it covers and empties. */
    snapshot_run(&s2);
    uv_timer_stop(&s2.timer);
    snapshot_now(&s2);
    settle(&s2);
    IS(s2.written, 1, "the next snapshot is on disk");
    IS(s2.covered_seq, s2.seq, "it covers every record");
    OK(stat(jpath, &st) == 0 && st.st_size <= 8, "the journal is emptied");
    snapshot_stop(&s2, 0);
    core_free(&d2);
    restore_keys(&d3, &s3, T + 9);
    k = keys_find(&d3.keys, "svc.k001", 8);
    OK(k && k->br.force == BREAKER_FORCE_OPEN &&
           !strcmp(key_force_reason(k), "late"),
       "still forced, now from the snapshot alone");
    snapshot_stop(&s3, 0);
    core_free(&d3);
}

static void test_config(void)
{
    struct config cfg;
    char err[256];
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"snapshot\": {\"path\": \"rel/x\"}}", "snapshot.path: must be"},
        {"{\"snapshot\": {\"path\": \"/x/\"}}", "snapshot.path: must be"},
        {"{\"snapshot\": {\"path\": 5}}", "snapshot.path: must be"},
        {"{\"snapshot\": {\"interval_s\": 0}}", "interval_s: 0 is out of"},
        {"{\"snapshot\": {\"interval_s\": 3601}}", "out of range"},
        {"{\"snapshot\": {\"enabled\": 1}}", "must be true or false"},
        {"{\"snapshot\": {\"every\": 1}}", "snapshot.every: unknown key"},
        {"{\"snapshot\": []}", "snapshot: must be an object"},
    };
    size_t i;

    IS(load(&cfg,
            "{\"snapshot\": {\"path\": \"/a/b.snap\", \"interval_s\": "
            "5, \"enabled\": false}}",
            err, sizeof(err)),
       0, "snapshot section accepted");
    OK(!strcmp(cfg.snapshot_path, "/a/b.snap") &&
           cfg.snapshot_interval_s == 5 && !cfg.snapshot_enabled,
       "its values");
    config_free(&cfg);
    load(&cfg, "{}", err, sizeof(err));
    OK(cfg.snapshot_interval_s == 1 && cfg.snapshot_enabled &&
           !cfg.snapshot_path[0],
       "defaults: every 1 s, on, path chosen at start");
    config_free(&cfg);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = load(&cfg, bad[i].json, err, sizeof(err));
        if (!OK(rc < 0 && strstr(err, bad[i].want), "refused: %s", bad[i].json))
            DIAG("got: %s", rc < 0 ? err : "accepted");
        if (rc == 0)
            config_free(&cfg);
    }
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    snprintf(snap_path, sizeof(snap_path), "%s/state.snap", dir);
    /* CONF with the snapshot section pointing into dir. */
    snprintf(conf_with_path, sizeof(conf_with_path),
             "%.*s, \"snapshot\": "
             "{\"path\": \"%s\"}}",
             (int)strlen(CONF) - 1, CONF, snap_path);
    unsetenv("RESILD_TEST_SNAPSHOT_FAIL");
    unsetenv("RESILD_TEST_SNAPSHOT_DELAY_MS");
    test_pure_modules();
    test_remaining_time();
    test_heartbeat_lost_kept();
    test_config();
    test_round_trip();
    test_corruption();
    test_hostile_records();
    test_journal();
    test_snapbuf_growth();
    test_steps_same_bytes();
    test_steps_on_the_loop();
    test_force_during_walk();
    clean_dir();
    unlink(conf_with_path[0] ? "" : "");
    {
        char p[300];
        snprintf(p, sizeof(p), "%s/c.json", dir);
        unlink(p);
    }
    rmdir(dir);
    return tap_done();
}
