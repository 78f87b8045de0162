/*
 * test_errlog.c - the error log (daemon/errlog.c): the calendar, the line
 * (hostile bytes, invalid UTF-8, contexts: always one line of valid JSON),
 * the queue bound and drop counting, rotation at midnight and retention
 * under a fake wall clock, write failures in health, and the config
 * section.  A real loop and thread pool; no sleeps (the loop runs until
 * the batch is written).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "core.h"
#include "errlog.h"
#include "keys.h"
#include "tap.h"

#define DAY_MS 86400000ull
/* 2024-05-01T00:00:00Z */
#define MAY1 1714521600000ull

static uint64_t fake_wall;

static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_wall;
}

static char tmp[] = "/tmp/resild-test-errlog.XXXXXX";

static struct key *mkkey(const char *name)
{
    struct key *k = calloc(1, sizeof(*k) + KEY_MAX + 1);

    k->len = (uint8_t)strlen(name);
    memcpy(k->name, name, k->len);
    return k;
}

/* A failure outcome event for k with message msg[0..n). */
static void mkev(struct event *ev, struct outcome *o, struct key *k,
                 const char *msg, size_t n)
{
    memset(o, 0, sizeof(*o));
    memset(ev, 0, sizeof(*ev));
    o->key = k;
    o->kind = OUT_FAILURE;
    o->source = SRC_REPORT;
    o->cls = "network.reset";
    o->severity = SEV_HIGH;
    o->transient = 1;
    o->message = msg;
    o->message_len = n;
    o->latency_ms = -1;
    o->attempt = 1;
    o->idempotent = 1;
    o->uid = 1000;
    ev->type = EV_OUTCOME;
    ev->key = k;
    ev->u.outcome = o;
}

/* Parse buf[0..n) as one JSON object line: exactly one '\n', at the end,
 * and nothing but printable ASCII before it. */
static json_t *parse_line(const char *buf, int n)
{
    json_error_t e;
    int i;

    if (n <= 0 || buf[n - 1] != '\n')
        return NULL;
    for (i = 0; i < n - 1; i++)
        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e)
            return NULL;
    return json_loadb(buf, (size_t)n - 1, JSON_REJECT_DUPLICATES, &e);
}

static void test_calendar(void)
{
    char iso[32];

    IS(errlog_day(0), 19700101, "day of the epoch");
    IS(errlog_day(MAY1 - 1), 20240430, "the last ms of April 30");
    IS(errlog_day(MAY1), 20240501, "midnight is the new day");
    errlog_iso8601(iso, sizeof(iso),
                   MAY1 + 12 * 3600000ull + 34 * 60000 + 56789);
    OK(!strcmp(iso, "2024-05-01T12:34:56.789Z"), "ISO 8601 UTC: %s", iso);
    errlog_iso8601(iso, sizeof(iso), 1709164800000ull); /* 2024-02-29 */
    OK(!strcmp(iso, "2024-02-29T00:00:00.000Z"), "a leap day: %s", iso);
    IS(errlog_day_number(19700101), 0, "day number of the epoch");
    IS(errlog_day_number(20240501), (int64_t)(MAY1 / DAY_MS),
       "day number of 2024-05-01");
    IS(errlog_day_number(20230229), -1, "2023-02-29 is no date");
    IS(errlog_day_number(20241301), -1, "month 13 is no date");
}

static void test_expired(void)
{
    OK(!errlog_expired("errors-20240501.jsonl", 20240501, 30), "today stays");
    OK(!errlog_expired("errors-20240401.jsonl", 20240501, 30),
       "30 days before today stays (retention 30)");
    OK(errlog_expired("errors-20240331.jsonl", 20240501, 30),
       "31 days before today goes");
    OK(errlog_expired("errors-20230101.jsonl", 20240501, 30), "last year goes");
    OK(errlog_expired("alerts-20240331.jsonl", 20240501, 30) &&
           !errlog_expired("alerts-20240401.jsonl", 20240501, 30),
       "alert files: the same retention");
    OK(!errlog_expired("errors-20240430.jsonl", 20240501, 1),
       "retention 1 keeps yesterday");
    OK(errlog_expired("errors-20240429.jsonl", 20240501, 1),
       "retention 1 drops the day before");
    OK(!errlog_expired("errors-20240229.jsonl", 20240301, 1),
       "across a leap day");
    OK(!errlog_expired("errors-2024040.jsonl", 20240501, 1) &&
           !errlog_expired("errors-20200101.jsonl.bak", 20240501, 1) &&
           !errlog_expired("errors-20201301.jsonl", 20240501, 1) &&
           !errlog_expired("errors-2020010a.jsonl", 20240501, 1) &&
           !errlog_expired("config.json", 20240501, 1) &&
           !errlog_expired("xerrors-20200101.jsonl", 20240501, 1) &&
           !errlog_expired("alerts-2020010.jsonl", 20240501, 1) &&
           !errlog_expired("alert-20200101.jsonl", 20240501, 1),
       "other names are never deleted");
}

static void test_line(void)
{
    static const char hostile[] = "\x1b[31mred\x1b[0m \"q\" \\ \n\r\t"
                                  "nul\0after \xff\xfe \xc0\x80 \xed\xa0\x80 "
                                  "\xe2\x80\xae rtl \xc3\xa9 \xf0\x9f\x92\xa5 "
                                  "\xe2\x82";
    struct key *k = mkkey("binance.orders");
    struct outcome o;
    struct event ev;
    char buf[ERRLOG_LINE_MAX], *s;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    json_t *j, *c;
    int n;

    mkev(&ev, &o, k, hostile, sizeof(hostile) - 1);
    o.correlation_id = "cid-\x01\xff";
    o.correlation_id_len = 6;
    o.latency_ms = 12;
    o.permit = 17;
    n = errlog_format(buf, sizeof(buf), &ev, MAY1 + 1234);
    j = parse_line(buf, n);
    if (!j)
        DIAG("%.*s", n, buf);
    OK(j != NULL, "hostile bytes: one line of printable-ASCII, valid JSON");
    if (j) {
        const char *m = json_string_value(json_object_get(j, "message"));
        size_t ml = json_string_length(json_object_get(j, "message"));
        OK(m && ml > 20 && !memcmp(m, "\x1b[31mred", 8),
           "the message comes back as given (escape kept as \\u001b)");
        OK(m && memmem(m, ml,
                       "nul\xef\xbf\xbd"
                       "after",
                       11) != NULL,
           "an embedded NUL becomes U+FFFD");
        OK(m && memmem(m, ml, "\xef\xbf\xbd\xef\xbf\xbd", 6) != NULL &&
               !memmem(m, ml, "\xff", 1) && !memmem(m, ml, "\xc0\x80", 2) &&
               !memmem(m, ml, "\xed\xa0\x80", 3),
           "invalid UTF-8 (bytes, overlong, surrogate) becomes U+FFFD");
        OK(m && memmem(m, ml, "\xc3\xa9", 2) &&
               memmem(m, ml, "\xf0\x9f\x92\xa5", 4),
           "valid UTF-8 survives");
        OK(m && ml >= 3 && !memcmp(m + ml - 3, "\xef\xbf\xbd", 3),
           "a truncated sequence at the end becomes U+FFFD");
        s = (char *)json_string_value(json_object_get(j, "correlation_id"));
        OK(s && !strcmp(s, "cid-\x01\xef\xbf\xbd"), "correlation id cleaned");
        OK(!strcmp(json_string_value(json_object_get(j, "time")),
                   "2024-05-01T00:00:01.234Z"),
           "time");
        IS(json_integer_value(json_object_get(j, "ts_ms")), MAY1 + 1234,
           "ts_ms");
        OK(!strcmp(json_string_value(json_object_get(j, "key")),
                   "binance.orders") &&
               !strcmp(json_string_value(json_object_get(j, "class")),
                       "network.reset") &&
               !strcmp(json_string_value(json_object_get(j, "severity")),
                       "high") &&
               json_is_true(json_object_get(j, "transient")) &&
               !strcmp(json_string_value(json_object_get(j, "outcome")),
                       "failure") &&
               !strcmp(json_string_value(json_object_get(j, "source")),
                       "report") &&
               json_is_false(json_object_get(j, "stale")) &&
               json_integer_value(json_object_get(j, "latency_ms")) == 12 &&
               json_integer_value(json_object_get(j, "permit")) == 17 &&
               json_integer_value(json_object_get(j, "uid")) == 1000,
           "key, class, severity, transient, outcome, source, stale, "
           "latency, permit, uid");
        OK(!json_object_get(j, "context") &&
               !json_object_get(j, "context_omitted"),
           "no context given: none shown");
        json_decref(j);
    }

    /* An unknown outcome of an expired permit: no class, no message. */
    mkev(&ev, &o, k, NULL, 0);
    o.kind = OUT_UNKNOWN;
    o.source = SRC_PERMIT_EXPIRED;
    o.cls = "";
    o.stale = 1;
    n = errlog_format(buf, sizeof(buf), &ev, MAY1);
    j = parse_line(buf, n);
    OK(j && json_is_null(json_object_get(j, "class")) &&
           json_is_null(json_object_get(j, "message")) &&
           json_is_null(json_object_get(j, "correlation_id")) &&
           json_is_null(json_object_get(j, "latency_ms")) &&
           json_is_true(json_object_get(j, "stale")) &&
           !strcmp(json_string_value(json_object_get(j, "source")),
                   "permit_expired") &&
           !strcmp(json_string_value(json_object_get(j, "outcome")), "unknown"),
       "unknown outcome, expired permit: nulls where nothing was given");
    json_decref(j);
    o.kind = OUT_SUCCESS;
    OK(errlog_format(buf, sizeof(buf), &ev, MAY1) < 0, "success: no line");
    o.kind = OUT_IGNORE;
    OK(errlog_format(buf, sizeof(buf), &ev, MAY1) < 0, "ignore: no line");

    /* A context map: strings cleaned, big integers as strings, floats. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "order", 5);
    msgpack_pack_str_with_body(&pk, "x\xff\x1b", 3);
    msgpack_pack_str_with_body(&pk, "qty", 3);
    msgpack_pack_int64(&pk, -5);
    msgpack_pack_str_with_body(&pk, "big", 3);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_str_with_body(&pk, "k\xfe", 2);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_double(&pk, 2.5);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_double(&pk, 1.0 / 0.0);
    msgpack_pack_str_with_body(&pk, "m", 1);
    msgpack_pack_map(&pk, 0);
    mkev(&ev, &o, k, "m", 1);
    o.context = sb.data;
    o.context_len = sb.size;
    n = errlog_format(buf, sizeof(buf), &ev, MAY1);
    j = parse_line(buf, n);
    c = j ? json_object_get(j, "context") : NULL;
    OK(json_is_object(c) &&
           !strcmp(json_string_value(json_object_get(c, "order")),
                   "x\xef\xbf\xbd\x1b") &&
           json_integer_value(json_object_get(c, "qty")) == -5 &&
           !strcmp(json_string_value(json_object_get(c, "big")),
                   "18446744073709551615") &&
           json_array_size(json_object_get(c, "k\xef\xbf\xbd")) == 4 &&
           json_is_null(
               json_array_get(json_object_get(c, "k\xef\xbf\xbd"), 3)) &&
           json_is_object(json_object_get(c, "m")),
       "context decoded: cleaned strings and keys, uint64 as string, "
       "infinity as null");
    json_decref(j);

    /* Contexts that are not shown, with the reason. */
    {
        static const struct {
            const char *bytes;
            size_t n;
            const char *why;
        } bad[] = {
            {"\x81\x01\x02", 3, "not a string"}, /* {1: 2} */
            {"\x81\xa1"
             "a\xc4\x01z",
             6, "binary"}, /* bin value */
            {"\x81\xa1"
             "a\xd4\x01\x02",
             6, "binary"}, /* fixext 1 */
            {"\x82\xa1"
             "a\x01",
             4, "not a msgpack map"},                     /* truncated */
            {"\x93\x01\x02\x03", 4, "not a msgpack map"}, /* an array */
            {"\x81\xa1"
             "a\x01\x00",
             5, "not a msgpack map"}, /* trailing */
            {"\x81\xa1"
             "a\x91\x91\x91\x91\x91\x91\x91\x91\x91\x01",
             13, "nested too deep"},
        };
        size_t i;
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            const char *w;
            o.context = bad[i].bytes;
            o.context_len = bad[i].n;
            n = errlog_format(buf, sizeof(buf), &ev, MAY1);
            j = parse_line(buf, n);
            w = j ? json_string_value(json_object_get(j, "context_omitted"))
                  : NULL;
            OK(j && !json_object_get(j, "context") && w &&
                   strstr(w, bad[i].why),
               "context case %zu omitted: %s", i, w ? w : "(no line)");
            json_decref(j);
        }
    }
    /* Too long with the context: the line without it. */
    o.context = sb.data;
    o.context_len = sb.size;
    n = errlog_format(buf, sizeof(buf), &ev, MAY1);
    DIAG("with context %d bytes", n);
    n = errlog_format(buf, (size_t)n - 1, &ev, MAY1);
    j = parse_line(buf, n);
    if (!j)
        DIAG("%d %.*s", n, n > 0 ? n : 0, buf);
    OK(j && !json_object_get(j, "context") &&
           !strcmp(json_string_value(json_object_get(j, "context_omitted")),
                   "too long"),
       "a line too long with its context is written without it");
    json_decref(j);
    OK(errlog_format(buf, 64, &ev, MAY1) < 0, "a line that never fits: -1");
    msgpack_sbuffer_destroy(&sb);
    free(k);
}

/* --- on a loop --------------------------------------------------------- */

static void path_of(char *p, size_t cap, const char *dir, const char *name)
{
    snprintf(p, cap, "%s/%s", dir, name);
}

/* Hand the queue over and run the loop until it is written. */
static void flush(struct errlog *el, uv_loop_t *loop)
{
    struct errlog_stats st;
    int i;

    for (i = 0; i < 20; i++) {
        uv_update_time(loop);
        errlog_drain(el, uv_now(loop));
        uv_run(loop, UV_RUN_DEFAULT);
        errlog_get_stats(el, &st);
        if (!st.queue_bytes)
            return;
    }
}

/* Lines of dir/name parsed into arr (a new array), or NULL if absent. */
static json_t *read_lines(const char *dir, const char *name)
{
    char path[512], *line = NULL;
    size_t cap = 0;
    ssize_t n;
    json_t *arr;
    FILE *f;

    path_of(path, sizeof(path), dir, name);
    if (!(f = fopen(path, "r")))
        return NULL;
    arr = json_array();
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = parse_line(line, (int)n);
        json_array_append_new(arr, j ? j : json_string("UNPARSED"));
    }
    free(line);
    fclose(f);
    return arr;
}

static int exists(const char *dir, const char *name)
{
    char path[512];

    path_of(path, sizeof(path), dir, name);
    return access(path, F_OK) == 0;
}

static void touch(const char *dir, const char *name, const char *content)
{
    char path[512];
    FILE *f;

    path_of(path, sizeof(path), dir, name);
    f = fopen(path, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

static void emit_n(struct errlog *el, struct key *k, int n, const char *msg)
{
    struct outcome o;
    struct event ev;
    int i;

    for (i = 0; i < n; i++) {
        mkev(&ev, &o, k, msg, strlen(msg));
        errlog_sink(el, &ev);
    }
}

static struct errlog *mk(const char *dir, uint32_t retention, size_t qbytes)
{
    struct errlog_conf c = {0};

    c.dir = dir;
    c.retention_days = retention;
    c.queue_bytes = qbytes;
    c.wall_ms = fake_clock;
    return errlog_new(&c);
}

static void done(struct errlog *el, uv_loop_t *loop)
{
    errlog_stop(el);
    uv_run(loop, UV_RUN_DEFAULT);
    errlog_free(el);
}

static void test_rotation(uv_loop_t *loop)
{
    char dir[300];
    struct key *k = mkkey("venue.a");
    struct errlog *el;
    struct errlog_stats st;
    json_t *a, *b;
    size_t i;
    int ok = 1;

    snprintf(dir, sizeof(dir), "%s/rot", tmp);
    mkdir(dir, 0700);
    el = mk(dir, 30, 0);
    fake_wall = MAY1 - 500; /* 2024-04-30T23:59:59.500Z */
    OK(errlog_start(el, loop, NULL) == 0, "start");
    emit_n(el, k, 3, "before midnight");
    fake_wall = MAY1 + 100; /* 2024-05-01T00:00:00.100Z */
    emit_n(el, k, 2, "after midnight");
    flush(el, loop); /* one batch spanning midnight */
    a = read_lines(dir, "errors-20240430.jsonl");
    b = read_lines(dir, "errors-20240501.jsonl");
    OK(a && json_array_size(a) == 3, "3 lines in the file of Apr 30");
    OK(b && json_array_size(b) == 2, "2 lines in the file of May 1");
    for (i = 0; a && i < json_array_size(a); i++)
        ok &= !strncmp(
            json_string_value(json_object_get(json_array_get(a, i), "time"))
                ?: "",
            "2024-04-30T23:59:59.500Z", 24);
    for (i = 0; b && i < json_array_size(b); i++)
        ok &= !strncmp(
            json_string_value(json_object_get(json_array_get(b, i), "time"))
                ?: "",
            "2024-05-01T00:00:00.100Z", 24);
    OK(ok, "each line's time is in its file's day");
    json_decref(a);
    json_decref(b);
    /* Next day, separate batches: the open file is switched. */
    fake_wall = MAY1 + DAY_MS - 1;
    emit_n(el, k, 1, "last ms of May 1");
    flush(el, loop);
    fake_wall = MAY1 + DAY_MS;
    emit_n(el, k, 1, "first ms of May 2");
    flush(el, loop);
    a = read_lines(dir, "errors-20240501.jsonl");
    b = read_lines(dir, "errors-20240502.jsonl");
    OK(a && json_array_size(a) == 3 && b && json_array_size(b) == 1,
       "a later batch goes to the new day's file");
    json_decref(a);
    json_decref(b);
    errlog_get_stats(el, &st);
    IS(st.written, 7, "7 lines written");
    IS(st.dropped + st.lost, 0, "nothing dropped or lost");
    done(el, loop);
    free(k);
}

/* An alert event (the fields hooks.c's emit_alert sets). */
static void mkalert(struct event *ev, struct key *k, const char *kind,
                    uint64_t eta_s)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = EV_ALERT;
    ev->key = k;
    ev->u.alert.kind = kind;
    ev->u.alert.rule = "fast";
    ev->u.alert.rule_index = 0;
    ev->u.alert.rate_per_min = 12.5;
    ev->u.alert.eta_s = eta_s;
    ev->u.alert.detail = "12.5 failures/min >= 10";
}

/* Alerts go to alerts-YYYYMMDD.jsonl beside the error file, through the
 * same queue (interleaved with errors in one batch), rotated by the same
 * UTC day and pruned by the same retention. */
static void test_alerts(uv_loop_t *loop)
{
    char dir[300], buf[ERRLOG_LINE_MAX];
    struct key *k = mkkey("venue.\xffws");
    struct errlog_stats st;
    struct errlog *el;
    struct event ev;
    json_t *a, *e, *j;
    int n;

    mkalert(&ev, k, "predicted_trip", 40);
    n = errlog_format_alert(buf, sizeof(buf), &ev, MAY1 + 1);
    j = parse_line(buf, n);
    OK(j != NULL, "an alert line is one line of ASCII JSON");
    OK(j &&
           !strcmp(json_string_value(json_object_get(j, "kind")) ?: "",
                   "predicted_trip") &&
           !strcmp(json_string_value(json_object_get(j, "rule")) ?: "",
                   "fast") &&
           !strcmp(json_string_value(json_object_get(j, "key")) ?: "",
                   "venue.\xef\xbf\xbdws") &&
           json_real_value(json_object_get(j, "rate_per_min")) == 12.5 &&
           json_integer_value(json_object_get(j, "eta_s")) == 40 &&
           !strcmp(json_string_value(json_object_get(j, "time")) ?: "",
                   "2024-05-01T00:00:00.001Z"),
       "its fields: kind, rule, key (cleaned), rate, eta, time");
    json_decref(j);
    mkalert(&ev, k, "rate", 0);
    j = parse_line(buf, errlog_format_alert(buf, sizeof(buf), &ev, MAY1));
    OK(j && json_is_null(json_object_get(j, "eta_s")), "no eta: null");
    json_decref(j);
    OK(errlog_format(buf, sizeof(buf), &ev, MAY1) < 0,
       "an alert is no error line");

    snprintf(dir, sizeof(dir), "%s/alerts", tmp);
    mkdir(dir, 0700);
    touch(dir, "alerts-20240330.jsonl", "{}\n");
    touch(dir, "alerts-20240401.jsonl", "{}\n");
    el = mk(dir, 30, 0);
    fake_wall = MAY1 + 1000;
    OK(errlog_start(el, loop, NULL) == 0, "start");
    emit_n(el, k, 2, "before");
    mkalert(&ev, k, "rate", 0);
    errlog_sink(el, &ev);
    emit_n(el, k, 1, "after");
    mkalert(&ev, k, "breaker_open", 0);
    errlog_sink(el, &ev);
    flush(el, loop); /* one batch: error, error, alert, error, alert */
    a = read_lines(dir, "alerts-20240501.jsonl");
    e = read_lines(dir, "errors-20240501.jsonl");
    OK(a && json_array_size(a) == 2, "2 lines in the alert file");
    OK(a &&
           !strcmp(
               json_string_value(json_object_get(json_array_get(a, 0), "kind"))
                   ?: "",
               "rate") &&
           !strcmp(
               json_string_value(json_object_get(json_array_get(a, 1), "kind"))
                   ?: "",
               "breaker_open"),
       "in the order they came");
    OK(e && json_array_size(e) == 3, "the 3 errors in the error file");
    json_decref(a);
    json_decref(e);
    OK(!exists(dir, "alerts-20240330.jsonl") &&
           exists(dir, "alerts-20240401.jsonl"),
       "retention: alert files older than 30 days deleted, the rest kept");
    /* The next day: a new alert file, yesterday's closed. */
    fake_wall = MAY1 + DAY_MS + 5;
    errlog_sink(el, &ev);
    flush(el, loop);
    a = read_lines(dir, "alerts-20240502.jsonl");
    OK(a && json_array_size(a) == 1, "after midnight: the new day's file");
    json_decref(a);
    errlog_get_stats(el, &st);
    IS(st.written, 6, "6 lines written");
    IS(st.dropped + st.lost + (uint64_t)st.last_errno, 0, "no loss, no error");
    done(el, loop);
    free(k);
}

static void test_retention(uv_loop_t *loop)
{
    char dir[300];
    struct errlog *el;
    struct errlog_stats st;

    snprintf(dir, sizeof(dir), "%s/ret", tmp);
    mkdir(dir, 0700);
    touch(dir, "errors-20240330.jsonl", "{}\n");
    touch(dir, "errors-20240331.jsonl", "{}\n");
    touch(dir, "errors-20240401.jsonl", "{}\n");
    touch(dir, "errors-20240402.jsonl", "{}\n");
    touch(dir, "errors-20240501.jsonl", "{}\n");
    touch(dir, "errors-2024033.jsonl", "{}\n");
    touch(dir, "notes.txt", "keep\n");
    el = mk(dir, 30, 0);
    fake_wall = MAY1 + 3600000; /* 2024-05-01T01:00Z */
    OK(errlog_start(el, loop, NULL) == 0, "start");
    flush(el, loop);
    OK(!exists(dir, "errors-20240330.jsonl") &&
           !exists(dir, "errors-20240331.jsonl"),
       "at start: files older than 30 days deleted");
    OK(exists(dir, "errors-20240401.jsonl") &&
           exists(dir, "errors-20240402.jsonl") &&
           exists(dir, "errors-20240501.jsonl"),
       "at start: the last 30 days and today kept");
    OK(exists(dir, "errors-2024033.jsonl") && exists(dir, "notes.txt"),
       "other files untouched");
    /* Later the same day: nothing more to do. */
    fake_wall = MAY1 + 23 * 3600000ull;
    flush(el, loop);
    OK(exists(dir, "errors-20240401.jsonl"), "same day: no second pass");
    /* The day turns: the next drain (the 1 s timer) applies it. */
    fake_wall = MAY1 + DAY_MS + 1000;
    flush(el, loop);
    OK(!exists(dir, "errors-20240401.jsonl") &&
           exists(dir, "errors-20240402.jsonl"),
       "after midnight: the day that fell out is deleted");
    errlog_get_stats(el, &st);
    IS(st.pruned, 3, "3 files deleted in all");
    IS(st.last_errno, 0, "no error");
    done(el, loop);
}

static void test_bound(uv_loop_t *loop)
{
    char dir[300];
    struct key *k = mkkey("venue.b");
    struct errlog *el;
    struct errlog_stats st;
    json_t *a;
    size_t i, n = 0;
    uint64_t dropped_lines = 0;

    snprintf(dir, sizeof(dir), "%s/bound", tmp);
    mkdir(dir, 0700);
    el = mk(dir, 30, 4096);
    fake_wall = MAY1;
    /* Not started: nothing drains, as with a disk that hangs. */
    emit_n(el, k, 100, "fill");
    errlog_get_stats(el, &st);
    OK(st.queued > 0 && st.queued < 100, "some lines queued (%llu)",
       (unsigned long long)st.queued);
    IS(st.queued + st.dropped, 100, "every line queued or counted dropped");
    OK(st.queue_bytes <= 4096, "queue within its bound (%zu bytes)",
       st.queue_bytes);
    OK(errlog_start(el, loop, NULL) == 0, "start");
    flush(el, loop);
    errlog_get_stats(el, &st);
    a = read_lines(dir, "errors-20240501.jsonl");
    for (i = 0; a && i < json_array_size(a); i++) {
        json_t *j = json_array_get(a, i);
        const char *ev = json_string_value(json_object_get(j, "event"));
        if (ev && !strcmp(ev, "dropped"))
            dropped_lines +=
                (uint64_t)json_integer_value(json_object_get(j, "lines"));
        else if (json_object_get(j, "key"))
            n++;
    }
    IS(n, st.queued, "every queued line written");
    IS(dropped_lines, st.dropped, "a \"dropped\" line says how many");
    IS(st.queue_bytes, 0, "queue empty");
    json_decref(a);
    done(el, loop);
    free(k);
}

/* health.components.error_log of d, or NULL. */
static const char *component(const struct resild *d, int *ok)
{
    unsigned i;

    for (i = 0; i < d->ncomponents; i++)
        if (!strcmp(d->components[i].name, "error_log")) {
            *ok = d->components[i].ok;
            return d->components[i].detail;
        }
    return NULL;
}

static void test_failures(uv_loop_t *loop)
{
    char dir[300], path[512];
    struct key *k = mkkey("venue.c");
    struct errlog *el;
    struct errlog_stats st;
    struct config cfg;
    struct resild d;
    json_t *a;

    config_defaults(&cfg);
    if (core_init(&d, &cfg, 0, 1) < 0) {
        OK(0, "core_init");
        return;
    }
    /* The directory is missing: the lines are lost, counted, in health. */
    snprintf(dir, sizeof(dir), "%s/missing", tmp);
    el = mk(dir, 30, 0);
    fake_wall = MAY1;
    OK(errlog_start(el, loop, &d) == 0, "start");
    emit_n(el, k, 4, "into the void");
    flush(el, loop);
    errlog_get_stats(el, &st);
    IS(st.lost, 4, "4 lines lost");
    OK(st.last_errno == ENOENT && strstr(st.last_error, "errors-20240501"),
       "the error names the file: %s", st.last_error);
    {
        int ok = 1;
        const char *det = component(&d, &ok);
        OK(det && !ok && strstr(det, "No such file") && strstr(det, "4 lost"),
           "health: error_log not ok, says why: %s", det ? det : "absent");
    }
    /* Now make it: with no line to write, the probe finds it (every
     * ERRLOG_PROBE_MS) and health recovers. */
    mkdir(dir, 0700);
    uv_update_time(loop);
    errlog_drain(el, uv_now(loop) + 2 * ERRLOG_PROBE_MS);
    uv_run(loop, UV_RUN_DEFAULT);
    errlog_get_stats(el, &st);
    {
        int ok = 0;
        const char *det = component(&d, &ok);
        OK(st.last_errno == 0 && det && ok,
           "the disk back, no line written: the probe clears health: %s",
           det ? det : "absent");
    }
    emit_n(el, k, 1, "back");
    flush(el, loop);
    errlog_get_stats(el, &st);
    IS(st.written, 1, "written once the directory exists");
    IS(st.last_errno, 0, "error cleared");

    /* The open file is deleted under us: a new one is made. */
    path_of(path, sizeof(path), dir, "errors-20240501.jsonl");
    unlink(path);
    emit_n(el, k, 1, "after unlink");
    flush(el, loop);
    a = read_lines(dir, "errors-20240501.jsonl");
    OK(a && json_array_size(a) == 1, "a deleted file is created again");
    json_decref(a);

    /* A torn last line (a crash mid-write) is ended first. */
    fake_wall = MAY1 + DAY_MS;
    touch(dir, "errors-20240502.jsonl", "{\"torn\":");
    emit_n(el, k, 1, "after a torn line");
    flush(el, loop);
    a = read_lines(dir, "errors-20240502.jsonl");
    OK(a && json_array_size(a) == 2 && json_is_string(json_array_get(a, 0)) &&
           json_is_object(json_array_get(a, 1)),
       "a torn line costs only itself");
    json_decref(a);

    /* A FIFO or a symlink where the file goes: refused, never hangs. */
    fake_wall = MAY1 + 2 * DAY_MS;
    path_of(path, sizeof(path), dir, "errors-20240503.jsonl");
    OK(mkfifo(path, 0600) == 0, "a FIFO planted");
    emit_n(el, k, 1, "fifo");
    flush(el, loop);
    errlog_get_stats(el, &st);
    OK(st.last_errno != 0 && st.lost == 5, "a FIFO is refused (%s)",
       st.last_error);
    fake_wall = MAY1 + 3 * DAY_MS;
    path_of(path, sizeof(path), dir, "errors-20240504.jsonl");
    OK(symlink("/dev/null", path) == 0, "a symlink planted");
    emit_n(el, k, 1, "symlink");
    flush(el, loop);
    errlog_get_stats(el, &st);
    OK(st.last_errno == ELOOP && st.lost == 6, "a symlink is refused (%s)",
       st.last_error);
    done(el, loop);
    core_free(&d);
    free(k);
}

/* Health: not ok after a failed write and after drops; detail says why. */
static void test_health(uv_loop_t *loop)
{
    char dir[300];
    struct key *k = mkkey("venue.d");
    struct errlog *el;
    struct config cfg;
    struct resild d;

    config_defaults(&cfg);
    if (core_init(&d, &cfg, 0, 1) < 0) {
        OK(0, "core_init");
        return;
    }
    snprintf(dir, sizeof(dir), "%s/health", tmp);
    mkdir(dir, 0700);
    el = mk(dir, 30, 2048);
    fake_wall = MAY1;
    const char *det;
    int ok = 0;

    errlog_start(el, loop, &d);
    det = component(&d, &ok);
    OK(det && ok, "ok at start: %s", det ? det : "absent");
    emit_n(el, k, 100, "storm");
    flush(el, loop);
    det = component(&d, &ok);
    OK(det && !ok && strstr(det, "dropped") && !strstr(det, " 0 dropped"),
       "after drops: not ok, counted: %s", det ? det : "absent");
    /* A minute without drops: ok again (the 1 s timer's call, by hand). */
    emit_n(el, k, 1, "calm");
    uv_update_time(loop);
    errlog_drain(el, uv_now(loop) + 61000);
    uv_run(loop, UV_RUN_DEFAULT);
    det = component(&d, &ok);
    OK(det && ok, "a minute later without drops: ok again: %s",
       det ? det : "absent");
    done(el, loop);
    core_free(&d);
    free(k);
}

static void test_config(void)
{
    static const struct {
        const char *json, *err;
    } bad[] = {
        {"{\"error_log\": []}", "error_log: must be an object"},
        {"{\"error_log\": {}}", "error_log.dir: is required"},
        {"{\"error_log\": {\"dir\": \"\"}}", "error_log.dir: must be"},
        {"{\"error_log\": {\"dir\": 5}}", "error_log.dir: must be"},
        {"{\"error_log\": {\"dir\": \"/x\", \"retention_days\": 0}}",
         "error_log.retention_days: 0 is out of range"},
        {"{\"error_log\": {\"dir\": \"/x\", \"retention_days\": \"7\"}}",
         "error_log.retention_days: must be an integer"},
        {"{\"error_log\": {\"dir\": \"/x\", \"rotate\": 1}}",
         "error_log.rotate: unknown key"},
    };
    char path[400], err[512];
    struct config c;
    size_t i;
    FILE *f;

    snprintf(path, sizeof(path), "%s/c.json", tmp);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]) + 2; i++) {
        const char *json =
            i < sizeof(bad) / sizeof(bad[0]) ? bad[i].json
            : i == sizeof(bad) / sizeof(bad[0])
                ? "{\"error_log\": {\"dir\": \"/var/log/resild\"}}"
                : "{\"error_log\": {\"dir\": \"/l\", \"retention_days\": 7}}";
        f = fopen(path, "w");
        fputs(json, f);
        fclose(f);
        if (i < sizeof(bad) / sizeof(bad[0])) {
            OK(config_load(path, &c, err, sizeof(err)) < 0 &&
                   strstr(err, bad[i].err),
               "config refused: %s", err);
        } else if (i == sizeof(bad) / sizeof(bad[0])) {
            OK(config_load(path, &c, err, sizeof(err)) == 0 &&
                   !strcmp(c.error_log_dir, "/var/log/resild") &&
                   c.error_log_retention_days == 30,
               "error_log.dir loads; retention_days 30 by default");
            config_free(&c);
        } else {
            OK(config_load(path, &c, err, sizeof(err)) == 0 &&
                   !strcmp(c.error_log_dir, "/l") &&
                   c.error_log_retention_days == 7,
               "retention_days 7 loads");
            config_free(&c);
        }
    }
    OK(config_defaults(&c) == 0 && !c.error_log_dir[0],
       "no section: no error log");
    config_free(&c);
    unlink(path);
}

int main(void)
{
    uv_loop_t loop;
    char cmd[400];

    if (!mkdtemp(tmp) || uv_loop_init(&loop) < 0)
        return 1;
    test_calendar();
    test_expired();
    test_line();
    test_config();
    test_rotation(&loop);
    test_retention(&loop);
    test_alerts(&loop);
    test_bound(&loop);
    test_failures(&loop);
    test_health(&loop);
    uv_loop_close(&loop);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        DIAG("could not remove %s", tmp);
    return tap_done();
}
