/*
 * test_integ_errlog.c - the error log on a real daemon: failures reported
 * land in the day's errors-YYYYMMDD.jsonl as JSON with the right fields,
 * retention runs at start, `resilctl errors --log` reads it back; a dead
 * disk shows in health while decisions go on; a slow disk (the
 * RESILD_TEST_ERRLOG_DELAY_MS hook: each batch waits 2 s in the pool)
 * costs another client's decisions nothing, and its drops are counted.
 * Every wait polls with a timeout; no sleep stands in for readiness.
 */
#include <jansson.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"
#include "integ_util.h"
#include "proto.h"
#include "resil.h"
#include "tap.h"

#define WAIT_MS 5000

static char logdir[300];
static char out[1 << 16], err[1 << 16];

static void utc_day(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y%m%d", &tm);
}

static void day_file(char *path, size_t cap, const char *day)
{
    snprintf(path, cap, "%s/errors-%s.jsonl", logdir, day);
}

/* The lines of path parsed (unparsable ones as the string "UNPARSED"). */
static json_t *read_lines(const char *path)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    json_error_t e;
    json_t *arr = json_array();
    FILE *f = fopen(path, "r");

    while (f && (n = getline(&line, &cap, f)) > 0) {
        json_t *j =
            line[n - 1] == '\n' ? json_loadb(line, (size_t)n - 1, 0, &e) : NULL;
        json_array_append_new(arr, j ? j : json_string("UNPARSED"));
    }
    free(line);
    if (f)
        fclose(f);
    return arr;
}

/* Poll until path holds at least n lines ending in '\n'; their count. */
static size_t wait_lines(const char *path, size_t n)
{
    long long end = mono_ms() + WAIT_MS;
    size_t got = 0;

    for (;;) {
        json_t *a = read_lines(path);
        got = json_array_size(a);
        json_decref(a);
        if (got >= n || mono_ms() >= end)
            return got;
        sleep_ms(10);
    }
}

/* report {key, outcome, error {class, message}, correlation_id,
 * latency_ms, context {order, venue}} through resil_call. */
static int report_raw(resil_t *r, const char *key, const char *outcome,
                      const char *msg, size_t msg_n, const char *cid)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct reply rep;
    char code[24] = "";
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    proto_kv_str(&pk, "key", key);
    proto_kv_str(&pk, "outcome", outcome);
    proto_pack_cstr(&pk, "error");
    msgpack_pack_map(&pk, 2);
    proto_kv_str(&pk, "class", "network.reset");
    proto_pack_cstr(&pk, "message");
    msgpack_pack_str_with_body(&pk, msg, msg_n);
    proto_kv_str(&pk, "correlation_id", cid);
    proto_kv_u64(&pk, "latency_ms", 7);
    proto_pack_cstr(&pk, "context");
    msgpack_pack_map(&pk, 2);
    proto_kv_str(&pk, "order", "o-1");
    proto_kv_u64(&pk, "qty", 3);
    rc = integ_call(r, "report", &sb, 2000, &rep, code);
    reply_free(&rep);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* health.components.error_log: ok (-1 when absent) and its detail. */
static int component(resil_t *r, char *detail, size_t cap, char *overall)
{
    struct reply rep;
    char code[24] = "";
    const msgpack_object *c, *el;
    int ok = -1;

    detail[0] = '\0';
    if (integ_call(r, "health", NULL, 2000, &rep, code) == 0) {
        const msgpack_object *o = proto_map_get(&rep.obj, "overall");
        if (overall && o && o->type == MSGPACK_OBJECT_STR)
            snprintf(overall, 24, "%.*s", (int)o->via.str.size, o->via.str.ptr);
        c = proto_map_get(&rep.obj, "components");
        el = c ? proto_map_get(c, "error_log") : NULL;
        if (el) {
            const msgpack_object *okv = proto_map_get(el, "ok");
            const msgpack_object *d = proto_map_get(el, "detail");
            ok = okv && okv->type == MSGPACK_OBJECT_BOOLEAN && okv->via.boolean;
            if (d && d->type == MSGPACK_OBJECT_STR)
                snprintf(detail, cap, "%.*s", (int)d->via.str.size,
                         d->via.str.ptr);
        }
    }
    reply_free(&rep);
    return ok;
}

/* Poll health until error_log's ok is want and detail holds needle. */
static int wait_component(resil_t *r, int want, const char *needle,
                          char *detail, size_t cap, char *overall)
{
    long long end = mono_ms() + WAIT_MS;

    for (;;) {
        int ok = component(r, detail, cap, overall);
        if ((ok == want && strstr(detail, needle)) || mono_ms() >= end)
            return ok == want && strstr(detail, needle);
        sleep_ms(20);
    }
}

static void test_lines(void)
{
    static const char hostile[] = "refused \x1b[2J\"\\\n\xff\xc3\xa9 end";
    static struct test_daemon d;
    char cfg[600], day[16], day2[16], path[400], old[400], detail[160];
    char overall[24] = "";
    json_t *a, *j;
    resil_t *r;
    struct resil_decision dec;
    int rc;

    if (daemon_mkdtemp(logdir, sizeof(logdir)) < 0) {
        OK(0, "mkdtemp");
        return;
    }
    /* A file far past retention, and one that is not the log's. */
    snprintf(old, sizeof(old), "%s/errors-20000101.jsonl", logdir);
    fclose(fopen(old, "w"));
    snprintf(path, sizeof(path), "%s/notes.txt", logdir);
    fclose(fopen(path, "w"));
    snprintf(cfg, sizeof(cfg),
             "{\"error_log\": {\"dir\": \"%s\", \"retention_days\": 7}}",
             logdir);
    if (!OK(daemon_start(&d, cfg) == 0, "resild starts with error_log.dir"))
        return;
    r = integ_open(d.sock, 2000);
    {
        long long end = mono_ms() + WAIT_MS;
        while (access(old, F_OK) == 0 && mono_ms() < end)
            sleep_ms(10);
    }
    OK(access(old, F_OK) != 0 && access(path, F_OK) == 0,
       "retention at start: the 2000-01-01 file deleted, others kept");

    utc_day(day, sizeof(day));
    OK(report_raw(r, "venue.a", "failure", hostile, sizeof(hostile) - 1,
                  "cid-1") == 0,
       "failure reported");
    OK(report_raw(r, "venue.a", "unknown", "timed out", 9, "cid-2") == 0,
       "unknown reported");
    OK(report_raw(r, "venue.a", "success", "", 0, "cid-3") == 0,
       "success reported");
    /* A permit that ends with its connection: a line of its own source. */
    OK(acquire(r, "venue.b", &dec) == 0 && dec.allow, "venue.b acquired");
    day_file(path, sizeof(path), day);
    wait_lines(path, 2);
    utc_day(day2, sizeof(day2));
    if (strcmp(day, day2)) {
        OK(1, "# SKIP the UTC day turned during the test");
        resil_close(r);
        daemon_cleanup(&d);
        return;
    }
    a = read_lines(path);
    IS(json_array_size(a), 2, "two lines: the failure and the unknown");
    j = json_array_get(a, 0);
    OK(json_is_object(j) &&
           !strcmp(json_string_value(json_object_get(j, "key")) ?: "",
                   "venue.a") &&
           !strcmp(json_string_value(json_object_get(j, "outcome")) ?: "",
                   "failure") &&
           !strcmp(json_string_value(json_object_get(j, "class")) ?: "",
                   "network.reset") &&
           !strcmp(json_string_value(json_object_get(j, "severity")) ?: "",
                   "medium") &&
           json_is_true(json_object_get(j, "transient")) &&
           !strcmp(json_string_value(json_object_get(j, "correlation_id"))
                       ?: "",
                   "cid-1") &&
           json_integer_value(json_object_get(j, "latency_ms")) == 7 &&
           !strcmp(json_string_value(json_object_get(j, "source")) ?: "",
                   "report") &&
           json_is_false(json_object_get(j, "stale")) &&
           !json_object_get(j, "context_omitted") &&
           !strncmp(json_string_value(json_object_get(j, "time")) ?: "", "20",
                    2) &&
           json_integer_value(json_object_get(j, "ts_ms")) > 1700000000000,
       "the failure's fields: key, outcome, class, severity, transient, "
       "correlation id, latency, source, stale, context, time");
    /* The RPC layer does not hand the report's context to the core yet
     * (struct outcome.context stays NULL); when it does, it shows here. */
    if (json_object_get(j, "context"))
        OK(!strcmp(json_string_value(
                       json_object_get(json_object_get(j, "context"), "order"))
                       ?: "",
                   "o-1"),
           "the context map");
    else
        OK(1, "# SKIP the report's context does not reach the core yet");
    {
        const char *m = json_string_value(json_object_get(j, "message"));
        OK(m && !strcmp(m, "refused \x1b[2J\"\\\n\xef\xbf\xbd\xc3\xa9 end"),
           "the hostile message comes back exactly, invalid byte as U+FFFD");
    }
    j = json_array_get(a, 1);
    OK(json_is_object(j) &&
           !strcmp(json_string_value(json_object_get(j, "outcome")) ?: "",
                   "unknown"),
       "the unknown outcome's line");
    json_decref(a);

    /* Read it back. */
    rc = integ_run_ctl(d.dir, out, err, sizeof(out),
                       (const char *const[]){"errors", "--log", "today",
                                             "--dir", logdir, NULL});
    OK(rc == 0 && strstr(out, "venue.a") && strstr(out, "network.reset") &&
           strstr(out, "cid-1") && strstr(out, "\\x1b[2J") &&
           strstr(out, "2 lines\n"),
       "resilctl errors --log today: a table, peer text escaped (rc %d)", rc);
    rc = integ_run_ctl(d.dir, out, err, sizeof(out),
                       (const char *const[]){"--json", "errors", "--log", day,
                                             "--dir", logdir, NULL});
    {
        char *p = out, *nl;
        int lines = 0, good = 0;
        json_error_t e;
        while ((nl = strchr(p, '\n'))) {
            json_t *x = json_loadb(p, (size_t)(nl - p), 0, &e);
            good += json_is_object(x);
            json_decref(x);
            lines++;
            p = nl + 1;
        }
        OK(rc == 0 && lines == 2 && good == 2,
           "resilctl --json errors --log YYYYMMDD: the JSON lines (rc %d)", rc);
    }
    OK(wait_component(r, 1, "written", detail, sizeof(detail), NULL),
       "health.components.error_log ok: %s", detail);

    /* The disk goes away: the directory removed, a file in its place. */
    daemon_rmtree(logdir);
    fclose(fopen(logdir, "w"));
    OK(report_raw(r, "venue.c", "failure", "lost", 4, "cid-4") == 0,
       "a failure reported with the log's directory gone");
    OK(wait_component(r, 0, "Not a directory", detail, sizeof(detail), overall),
       "health: error_log not ok, says why: %s", detail);
    OK(!strcmp(overall, "degraded"), "health overall degraded (%s)", overall);
    OK(acquire(r, "venue.d", &dec) == 0 && dec.allow,
       "decisions go on without the error log");
    resil_close(r);
    IS(daemon_stop(&d), 0, "resild stops cleanly with a dead error log");
    daemon_cleanup(&d);
    unlink(logdir);
}

/* --- a slow disk ------------------------------------------------------- */

struct flood {
    const char *sock;
    int n, done;
};

static void *flood_main(void *arg)
{
    struct flood *f = arg;
    char msg[300], cid[32];
    resil_t *r = integ_open(f->sock, 2000);
    int i;

    memset(msg, 'x', sizeof(msg));
    for (i = 0; r && i < f->n; i++) {
        snprintf(cid, sizeof(cid), "flood-%d", i);
        if (report_raw(r, "flood.key", "failure", msg, sizeof(msg), cid) != 0)
            break;
    }
    f->done = i;
    resil_close(r);
    return NULL;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;

    return x < y ? -1 : x > y;
}

static long long now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void test_slow_disk(void)
{
    static struct test_daemon d;
    static long long lat[200000];
    char cfg[600], detail[160], day[16], path[400];
    struct flood f = {0};
    struct resil_decision dec;
    struct resil_report rep = {0};
    pthread_t th;
    resil_t *r;
    size_t n = 0, i, dropped_lines = 0, shown = 0;
    json_t *a;

    if (daemon_mkdtemp(logdir, sizeof(logdir)) < 0) {
        OK(0, "mkdtemp");
        return;
    }
    snprintf(cfg, sizeof(cfg), "{\"error_log\": {\"dir\": \"%s\"}}", logdir);
    setenv("RESILD_TEST_ERRLOG_DELAY_MS", "2000", 1);
    if (!OK(daemon_start(&d, cfg) == 0, "resild starts with a 2 s disk")) {
        unsetenv("RESILD_TEST_ERRLOG_DELAY_MS");
        return;
    }
    unsetenv("RESILD_TEST_ERRLOG_DELAY_MS");
    r = integ_open(d.sock, 2000);
    f.sock = d.sock;
    f.n = 20000;
    pthread_create(&th, NULL, flood_main, &f);
    /* Another client's decisions while the flood fills the queue. */
    while (!f.done && n < sizeof(lat) / sizeof(lat[0])) {
        long long t0 = now_us();
        if (acquire(r, "other.key", &dec) != 0 || !dec.allow)
            break;
        rep.key = "other.key";
        rep.permit = dec.permit;
        rep.outcome = RESIL_SUCCESS;
        rep.latency_ms = -1;
        rep.retry_after_ms = -1;
        if (resil_report(r, &rep, NULL) != 0)
            break;
        lat[n++] = now_us() - t0;
    }
    pthread_join(th, NULL);
    IS(f.done, 20000, "20000 failures reported against a 2 s disk");
    qsort(lat, n, sizeof(lat[0]), cmp_ll);
    if (n) {
        DIAG("other client: %zu acquire+report pairs during the flood: "
             "p50 %lld us, p99 %lld us, max %lld us",
             n, lat[n / 2], lat[n * 99 / 100], lat[n - 1]);
        /* Generous for a loaded 2-core machine; a sink that waited for
         * the disk would show 2 000 000 us. */
        OK(lat[n - 1] < 500000,
           "no decision waited for the disk (max %lld "
           "us < 500 ms)",
           lat[n - 1]);
    } else {
        OK(0, "the other client made no calls");
    }
    OK(wait_component(r, 0, "dropped", detail, sizeof(detail), NULL) &&
           !strstr(detail, " 0 dropped"),
       "health: drops counted, error_log not ok: %s", detail);
    resil_close(r);
    IS(daemon_stop(&d), 0, "resild stops, writing what was queued");
    utc_day(day, sizeof(day));
    day_file(path, sizeof(path), day);
    a = read_lines(path);
    for (i = 0; i < json_array_size(a); i++) {
        json_t *j = json_array_get(a, i);
        const char *ev = json_string_value(json_object_get(j, "event"));
        if (ev && !strcmp(ev, "dropped"))
            dropped_lines +=
                (size_t)json_integer_value(json_object_get(j, "lines"));
        else if (json_object_get(j, "key"))
            shown++;
    }
    DIAG("%zu lines written, %zu counted dropped in the log", shown,
         dropped_lines);
    OK(shown + dropped_lines == 20000,
       "every failure is in the log or counted there as dropped (%zu + %zu)",
       shown, dropped_lines);
    json_decref(a);
    daemon_cleanup(&d);
    daemon_rmtree(logdir);
}

int main(void)
{
    test_lines();
    test_slow_disk();
    return tap_done();
}
