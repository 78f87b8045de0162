/*
 * errlog.c - the error log (see errlog.h for the design and the line).
 *
 * Threads: everything here runs on the loop except work_cb (a thread-pool
 * thread).  The two share only the batch in flight and the worker's file
 * state (struct errlog's w_* fields); the loop touches neither while
 * el->inflight is set, and uv_queue_work / after_work order the hand-over
 * (libuv's pool takes a mutex on both sides).  So there is no lock.
 *
 * The queue: records of [uint32 day][uint32 len][len bytes of line], in the
 * order the sink was called; REC_ALERT in day marks an alert line (the
 * alerts-YYYYMMDD.jsonl file), so both files share one queue, one bound
 * and one worker, each with its own open file (w[0] errors, w[1] alerts).  The
 * batch in flight is the previous queue buffer; the bound (conf.queue_bytes)
 * covers both, so the memory the error log can hold is bounded by it whatever
 * the disk does.
 *
 * This file includes msgpack (only to show a report's context map) besides
 * uv and jansson: a sink may decode what the RPC layer handed the core as
 * opaque bytes, and the core stays free of both.
 */
#include "errlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "core.h"
#include "error.h"
#include "keys.h"
#include "log.h"

#define REC_HEAD 8 /* uint32 day + uint32 len */
/* In a record's day: the line goes to the alert file.  Days (YYYYMMDD)
 * stay far below it. */
#define REC_ALERT 0x80000000u
#define REC_FILE(day) ((day) >> 31) /* index of w[] and file_prefix[] */

static const char *const file_prefix[2] = {"errors", "alerts"};
#define QUEUE_INITIAL (64u << 10)

struct qbuf {
    char *data;
    size_t len, cap;
    uint64_t lines;
};

struct errlog {
    char dir[ERRLOG_DIR_MAX];
    uint32_t retention_days;
    size_t max_bytes; /* bound of queue.len + batch.len */
    errlog_clock_fn wall_ms;
    void *clock_ctx;
    uint32_t delay_ms;

    /* Loop side. */
    uv_loop_t *loop;
    struct resild *d;
    uv_check_t check;
    uv_timer_t timer;
    int started, stopping, handles_open;
    struct qbuf queue;         /* filled by the sink */
    uint64_t dropped_unlogged; /* dropped since the last "dropped" line */
    uint64_t last_marker_ms;   /* monotonic: last "dropped" line queued */
    uint64_t last_drop_ms;     /* monotonic: last drop seen by drain (0) */
    uint64_t last_drop_log_ms; /* monotonic: last drop warning on stderr */
    uint64_t drop_logged;      /* dropped count at that warning */
    uint64_t last_sync_ms;     /* monotonic: last batch asked to sync */
    uint32_t pruned_day;       /* YYYYMMDD retention last ran for (0) */
    uint64_t now_ms;           /* monotonic: the latest errlog_drain's */
    uint64_t last_probe_ms;    /* monotonic: last probe batch */
    int reported_err;          /* last_errno we logged (0: ok) */
    struct errlog_stats st;

    /* The batch: owned by the worker while inflight. */
    int inflight;
    uv_work_t req;
    struct qbuf batch;
    int b_sync, b_close;
    uint32_t b_probe; /* after a failure: open this day's file, no lines */
    uint32_t b_prune; /* today's YYYYMMDD: delete expired files; 0: no */
    /* results, read by after_work */
    int b_errno;
    char b_error[96];
    uint64_t b_written, b_lost, b_pruned;

    /* Worker's files, [0] errors, [1] alerts: touched only by work_cb
     * (and errlog_free). */
    struct wfile {
        int fd;       /* -1: none open */
        uint32_t day; /* the open file's day (YYYYMMDD) */
        int torn;     /* the open file may end without '\n' */
    } w[2];
};

/* --- pure helpers: calendar -------------------------------------------- */

/* Days since 1970-01-01 of y-m-d (proleptic Gregorian; H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

uint32_t errlog_day(uint64_t wall_ms)
{
    int64_t y;
    unsigned m, d;

    civil_from_days((int64_t)(wall_ms / 86400000), &y, &m, &d);
    return (uint32_t)(y * 10000 + m * 100 + d);
}

int64_t errlog_day_number(uint32_t ymd)
{
    unsigned y = ymd / 10000, m = ymd / 100 % 100, d = ymd % 100;
    int64_t z;
    int64_t yy;
    unsigned mm, dd;

    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31)
        return -1;
    z = days_from_civil(y, m, d);
    civil_from_days(z, &yy, &mm, &dd); /* Feb 30 comes back as Mar 2 */
    return yy == y && mm == m && dd == d ? z : -1;
}

void errlog_iso8601(char *buf, size_t cap, uint64_t wall_ms)
{
    uint64_t ms_of_day = wall_ms % 86400000;
    int64_t y;
    unsigned m, d;

    civil_from_days((int64_t)(wall_ms / 86400000), &y, &m, &d);
    snprintf(buf, cap, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, m,
             d, (unsigned)(ms_of_day / 3600000),
             (unsigned)(ms_of_day / 60000 % 60),
             (unsigned)(ms_of_day / 1000 % 60), (unsigned)(ms_of_day % 1000));
}

int errlog_expired(const char *name, uint32_t today, uint32_t retention_days)
{
    uint32_t day = 0;
    int64_t dn, tn;
    int i;

    if ((strncmp(name, "errors-", 7) != 0 &&
         strncmp(name, "alerts-", 7) != 0) ||
        strlen(name) != 21 || strcmp(name + 15, ".jsonl") != 0)
        return 0;
    for (i = 7; i < 15; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        day = day * 10 + (uint32_t)(name[i] - '0');
    }
    if ((dn = errlog_day_number(day)) < 0 ||
        (tn = errlog_day_number(today)) < 0)
        return 0;
    return dn < tn - (int64_t)retention_days;
}

/* --- pure helpers: the line -------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n) (no overlongs, no
 * surrogates, at most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len, i;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) ||  /* overlong */
        (s[0] == 0xed && s[1] >= 0xa0) || /* surrogate */
        (s[0] == 0xf0 && s[1] < 0x90) ||  /* overlong */
        (s[0] == 0xf4 && s[1] >= 0x90))   /* above U+10FFFF */
        return 0;
    return len;
}

/* A JSON string of s[0..n): valid UTF-8 kept, each invalid byte and each
 * NUL replaced by U+FFFD (jansson wants UTF-8; "\u0000" is valid JSON but
 * breaks readers that keep C strings, jansson's own included).  NULL when
 * out of memory. */
static json_t *clean_string(const char *s, size_t n)
{
    char stackbuf[1024], *out = stackbuf;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0, l;
    json_t *j;

    if (n == 0)
        return json_string("");
    if (n > sizeof(stackbuf) / 3 && !(out = malloc(n * 3)))
        return NULL;
    while (i < n) {
        if (u[i] == 0 || (l = utf8_len(u + i, n - i)) == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, s + i, l);
        o += l;
        i += l;
    }
    j = json_stringn(out, o);
    if (out != stackbuf)
        free(out);
    return j;
}

/* msgpack -> JSON for a context.  NULL with *why set when not shown. */
static json_t *ctx_json(const msgpack_object *o, int depth, const char **why)
{
    json_t *j, *v;
    uint32_t i;
    char num[24];

    if (depth > ERRLOG_CONTEXT_DEPTH) {
        *why = "nested too deep";
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 <= INT64_MAX)
            return json_integer((json_int_t)o->via.u64);
        snprintf(num, sizeof(num), "%llu", (unsigned long long)o->via.u64);
        return json_string(num);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR:
        return clean_string(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
        if (!(j = json_array()))
            return NULL;
        for (i = 0; i < o->via.array.size; i++)
            if (!(v = ctx_json(&o->via.array.ptr[i], depth + 1, why)) ||
                json_array_append_new(j, v) < 0) {
                json_decref(j);
                return NULL;
            }
        return j;
    case MSGPACK_OBJECT_MAP:
        if (!(j = json_object()))
            return NULL;
        for (i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            json_t *ks;
            if (k->type != MSGPACK_OBJECT_STR) {
                *why = "a key that is not a string";
                json_decref(j);
                return NULL;
            }
            /* The key cleaned like any string (jansson wants UTF-8). */
            if (!(ks = clean_string(k->via.str.ptr, k->via.str.size)) ||
                !(v = ctx_json(&o->via.map.ptr[i].val, depth + 1, why))) {
                json_decref(ks);
                json_decref(j);
                return NULL;
            }
            if (json_object_setn_new(j, json_string_value(ks),
                                     json_string_length(ks), v) < 0) {
                json_decref(ks);
                json_decref(j);
                return NULL;
            }
            json_decref(ks);
        }
        return j;
    default: /* bin, ext */
        *why = "binary or extension values";
        return NULL;
    }
}

/* The context bytes (a msgpack map) as a JSON object, or NULL with *why. */
static json_t *context_json(const void *buf, size_t len, const char **why)
{
    msgpack_unpacked u;
    size_t off = 0;
    json_t *j = NULL;

    *why = "not a msgpack map";
    if (len > OUTCOME_CONTEXT_MAX) {
        *why = "too large";
        return NULL;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        off == len && u.data.type == MSGPACK_OBJECT_MAP) {
        *why = "out of memory";
        j = ctx_json(&u.data, 0, why);
    }
    msgpack_unpacked_destroy(&u);
    return j;
}

static json_t *opt_text(const char *s, size_t n)
{
    return s ? clean_string(s, n) : json_null();
}

/* Dump j compact and ASCII-only into buf with a '\n'; length or -1. */
static int dump_line(json_t *j, char *buf, size_t cap)
{
    size_t n = json_dumpb(j, buf, cap, JSON_COMPACT | JSON_ENSURE_ASCII);

    if (n == 0 || n + 1 > cap)
        return -1;
    buf[n] = '\n';
    return (int)(n + 1);
}

int errlog_format(char *buf, size_t cap, const struct event *ev,
                  uint64_t wall_ms)
{
    const struct outcome *o;
    const struct key *k;
    json_t *j, *ctx = NULL;
    const char *why = NULL;
    char iso[32];
    int n = -1;

    if (ev->type != EV_OUTCOME || !(o = ev->u.outcome) ||
        (o->kind != OUT_FAILURE && o->kind != OUT_UNKNOWN))
        return -1;
    k = ev->key ? ev->key : o->key;
    errlog_iso8601(iso, sizeof(iso), wall_ms);
    if (!(j = json_object()))
        return -1;
    /* json_object_set_new takes (and on failure frees) each value; a
     * failed allocation shows as a missing field, caught by the count. */
    json_object_set_new(j, "time", json_string(iso));
    json_object_set_new(j, "ts_ms", json_integer((json_int_t)wall_ms));
    json_object_set_new(j, "key",
                        k ? clean_string(k->name, k->len) : json_null());
    json_object_set_new(j, "outcome", json_string(event_outcome_name(o->kind)));
    json_object_set_new(j, "class",
                        o->cls && o->cls[0]
                            ? clean_string(o->cls, strlen(o->cls))
                            : json_null());
    json_object_set_new(j, "severity",
                        json_string(config_severity_name(o->severity)));
    json_object_set_new(j, "transient", json_boolean(o->transient > 0));
    json_object_set_new(j, "message", opt_text(o->message, o->message_len));
    json_object_set_new(j, "correlation_id",
                        opt_text(o->correlation_id, o->correlation_id_len));
    if (o->context && o->context_len) {
        if ((ctx = context_json(o->context, o->context_len, &why)))
            json_object_set_new(j, "context", ctx);
        else
            json_object_set_new(j, "context_omitted", json_string(why));
    }
    json_object_set_new(j, "latency_ms",
                        o->latency_ms >= 0 ? json_integer(o->latency_ms)
                                           : json_null());
    json_object_set_new(j, "source", json_string(event_source_name(o->source)));
    json_object_set_new(j, "stale", json_boolean(o->stale));
    json_object_set_new(j, "permit",
                        o->permit <= INT64_MAX
                            ? json_integer((json_int_t)o->permit)
                            : json_null());
    json_object_set_new(j, "attempt", json_integer(o->attempt));
    json_object_set_new(j, "idempotent", json_boolean(o->idempotent));
    json_object_set_new(j, "uid", json_integer(o->uid));
    if (json_object_size(j) == 16u + !!(o->context && o->context_len)) {
        n = dump_line(j, buf, cap);
        if (n < 0 && ctx) { /* too long: the same line without context */
            json_object_del(j, "context");
            json_object_set_new(j, "context_omitted", json_string("too long"));
            n = dump_line(j, buf, cap);
        }
    }
    json_decref(j);
    return n;
}

int errlog_format_alert(char *buf, size_t cap, const struct event *ev,
                        uint64_t wall_ms)
{
    const char *detail = ev->u.alert.detail;
    const char *kind = ev->u.alert.kind, *rule = ev->u.alert.rule;
    double rate = ev->u.alert.rate_per_min;
    json_t *j;
    char iso[32];
    int n = -1;

    if (ev->type != EV_ALERT || !(j = json_object()))
        return -1;
    errlog_iso8601(iso, sizeof(iso), wall_ms);
    /* The fields of the exec hook's JSON (hooks.c), with the error log's
     * time fields; peer text (the key) cleaned like an error line's. */
    json_object_set_new(j, "time", json_string(iso));
    json_object_set_new(j, "ts_ms", json_integer((json_int_t)wall_ms));
    json_object_set_new(j, "topic", json_string("alert"));
    json_object_set_new(j, "kind",
                        kind ? clean_string(kind, strlen(kind)) : json_null());
    json_object_set_new(j, "rule",
                        rule ? clean_string(rule, strlen(rule)) : json_null());
    json_object_set_new(j, "key",
                        ev->key ? clean_string(ev->key->name, ev->key->len)
                                : json_null());
    json_object_set_new(j, "rate_per_min",
                        isfinite(rate) ? json_real(rate) : json_null());
    json_object_set_new(j, "eta_s",
                        ev->u.alert.eta_s
                            ? json_integer((json_int_t)ev->u.alert.eta_s)
                            : json_null());
    json_object_set_new(j, "detail",
                        detail ? clean_string(detail, strlen(detail))
                               : json_null());
    if (json_object_size(j) == 9)
        n = dump_line(j, buf, cap);
    json_decref(j);
    return n;
}

/* The "dropped" line. */
static int format_dropped(char *buf, size_t cap, uint64_t wall_ms,
                          uint64_t lines)
{
    json_t *j = json_object();
    char iso[32];
    int n = -1;

    if (!j)
        return -1;
    errlog_iso8601(iso, sizeof(iso), wall_ms);
    json_object_set_new(j, "time", json_string(iso));
    json_object_set_new(j, "ts_ms", json_integer((json_int_t)wall_ms));
    json_object_set_new(j, "event", json_string("dropped"));
    json_object_set_new(j, "lines", json_integer((json_int_t)lines));
    json_object_set_new(j, "reason", json_string("queue full"));
    if (json_object_size(j) == 5)
        n = dump_line(j, buf, cap);
    json_decref(j);
    return n;
}

/* --- the queue (loop side) --------------------------------------------- */

static uint64_t realtime_ms(void *ctx)
{
    struct timespec ts;

    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec < 0
               ? 0
               : (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Append one record, or 0 when it does not fit the bound (or memory). */
static int enqueue(struct errlog *el, uint32_t day, const char *line, size_t n)
{
    struct qbuf *q = &el->queue;
    size_t need = REC_HEAD + n;
    uint32_t len32 = (uint32_t)n;

    if (q->len + el->batch.len + need > el->max_bytes)
        return 0;
    if (q->len + need > q->cap) {
        size_t cap = q->cap ? q->cap : QUEUE_INITIAL;
        char *p;
        while (cap < q->len + need)
            cap *= 2;
        if (cap > el->max_bytes)
            cap = el->max_bytes;
        if (!(p = realloc(q->data, cap)))
            return 0;
        q->data = p;
        q->cap = cap;
    }
    memcpy(q->data + q->len, &day, 4);
    memcpy(q->data + q->len + 4, &len32, 4);
    memcpy(q->data + q->len + REC_HEAD, line, n);
    q->len += need;
    q->lines++;
    return 1;
}

void errlog_sink(void *ctx, const struct event *ev)
{
    struct errlog *el = ctx;
    char line[ERRLOG_LINE_MAX];
    uint32_t flag = 0;
    uint64_t wall;
    int n;

    if (ev->type == EV_ALERT) {
        flag = REC_ALERT;
    } else if (ev->type != EV_OUTCOME || (ev->u.outcome->kind != OUT_FAILURE &&
                                          ev->u.outcome->kind != OUT_UNKNOWN)) {
        return;
    }
    wall = el->wall_ms(el->clock_ctx);
    n = flag ? errlog_format_alert(line, sizeof(line), ev, wall)
             : errlog_format(line, sizeof(line), ev, wall);
    if (n < 0 || !enqueue(el, errlog_day(wall) | flag, line, (size_t)n)) {
        el->st.dropped++;
        el->dropped_unlogged++;
        return;
    }
    el->st.queued++;
}

/* --- the worker (thread pool) ------------------------------------------ */

/* day: a record's day (REC_ALERT names the alert file), or 0 (the dir). */
static void worker_fail(struct errlog *el, const char *op, uint32_t day, int e)
{
    if (el->b_errno)
        return; /* the first error of a batch is the one shown */
    el->b_errno = e;
    if (day)
        snprintf(el->b_error, sizeof(el->b_error), "%s %s-%08u.jsonl: %s", op,
                 file_prefix[REC_FILE(day)], (unsigned)(day & ~REC_ALERT),
                 strerror(e));
    else
        snprintf(el->b_error, sizeof(el->b_error), "%s %s: %s", op, "dir",
                 strerror(e));
}

static void worker_close(struct errlog *el, unsigned file)
{
    struct wfile *f = &el->w[file];

    if (f->fd < 0)
        return;
    if (fdatasync(f->fd) < 0)
        worker_fail(el, "fdatasync", f->day | (file ? REC_ALERT : 0), errno);
    close(f->fd);
    f->fd = -1;
    f->day = 0;
}

/* fsync the directory so a new file's entry is durable. */
static void worker_sync_dir(struct errlog *el)
{
    int fd = open(el->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* The file of rday (a record's day: REC_ALERT picks the alert file) open
 * for appending (reopened when it was deleted or renamed under us).  0 or
 * -1 (error recorded). */
static int worker_open(struct errlog *el, uint32_t rday)
{
    struct wfile *f = &el->w[REC_FILE(rday)];
    uint32_t day = rday & ~REC_ALERT;
    char path[ERRLOG_DIR_MAX + 32];
    struct stat st;
    char last;
    int fd, created = 0;

    if (f->fd >= 0 && f->day == day) {
        if (fstat(f->fd, &st) == 0 && st.st_nlink > 0)
            return 0;
        close(f->fd); /* unlinked (an operator, a test): start anew */
        f->fd = -1;
    } else {
        worker_close(el, REC_FILE(rday));
    }
    snprintf(path, sizeof(path), "%s/%s-%08u.jsonl", el->dir,
             file_prefix[REC_FILE(rday)], (unsigned)day);
    /* O_NOFOLLOW: never append through a symlink planted in the dir;
     * O_NONBLOCK: a FIFO planted there cannot hang the worker (refused
     * below, only regular files are written). */
    fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path,
                  O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC |
                      O_NOFOLLOW | O_NONBLOCK,
                  0640);
        created = fd >= 0;
    }
    if (fd < 0) {
        worker_fail(el, "open", rday, errno);
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        worker_fail(el, "open", rday, EINVAL);
        close(fd);
        return -1;
    }
    if (created)
        worker_sync_dir(el);
    /* A crash mid-line left a torn last line: end it, so only that one
     * line is unreadable. */
    f->torn = st.st_size > 0 &&
              (pread(fd, &last, 1, st.st_size - 1) != 1 || last != '\n');
    f->fd = fd;
    f->day = day;
    return 0;
}

static int write_all(int fd, const char *p, size_t n, size_t *done)
{
    ssize_t w;

    *done = 0;
    while (*done < n) {
        w = write(fd, p + *done, n - *done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        *done += (size_t)w;
    }
    return 0;
}

/* Lines in p[0..n) (each ends in '\n'). */
static uint64_t lines_in(const char *p, size_t n)
{
    const char *end = p + n, *q;
    uint64_t c = 0;

    while (p < end && (q = memchr(p, '\n', (size_t)(end - p)))) {
        c++;
        p = q + 1;
    }
    return c;
}

/* Write one day's lines p[0..n) (day: a record's, REC_ALERT included). */
static void worker_write(struct errlog *el, uint32_t day, const char *p,
                         size_t n)
{
    struct wfile *f = &el->w[REC_FILE(day)];
    size_t done = 0;

    if (worker_open(el, day) < 0) {
        el->b_lost += lines_in(p, n);
        return;
    }
    if (f->torn) {
        if (write_all(f->fd, "\n", 1, &done) < 0) {
            worker_fail(el, "write", day, errno);
            el->b_lost += lines_in(p, n);
            return;
        }
        f->torn = 0;
    }
    if (write_all(f->fd, p, n, &done) < 0) {
        worker_fail(el, "write", day, errno);
        el->b_written += lines_in(p, done);
        el->b_lost += lines_in(p + done, n - done);
        f->torn = done > 0; /* part of a line may be on disk */
        return;
    }
    el->b_written += lines_in(p, n);
}

static void worker_prune(struct errlog *el, uint32_t today)
{
    DIR *dir = opendir(el->dir);
    struct dirent *de;

    if (!dir) {
        worker_fail(el, "retention: opendir", 0, errno);
        return;
    }
    while ((de = readdir(dir)))
        if (errlog_expired(de->d_name, today, el->retention_days)) {
            if (unlinkat(dirfd(dir), de->d_name, 0) == 0)
                el->b_pruned++;
            else
                worker_fail(el, "retention: unlink", 0, errno);
        }
    closedir(dir);
}

static void work_cb(uv_work_t *req)
{
    struct errlog *el = req->data;
    char *p = el->batch.data, *end = p + el->batch.len, *out;
    uint32_t day, len, gday = 0;
    char *gstart = NULL;
    unsigned i;

    if (el->delay_ms) {
        struct timespec ts = {el->delay_ms / 1000,
                              (long)(el->delay_ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    /* Compact each run of same-day same-file records in place (dropping the
     * record heads: the output never overtakes the input) and write it. */
    out = p;
    while (p < end) {
        memcpy(&day, p, 4);
        memcpy(&len, p + 4, 4);
        if (gstart && day != gday) {
            worker_write(el, gday, gstart, (size_t)(out - gstart));
            out = gstart; /* reuse: written */
            gstart = NULL;
        }
        if (!gstart) {
            gstart = out;
            gday = day;
        }
        memmove(out, p + REC_HEAD, len);
        out += len;
        p += REC_HEAD + len;
    }
    if (gstart)
        worker_write(el, gday, gstart, (size_t)(out - gstart));
    else if (el->b_probe)
        (void)worker_open(el, el->b_probe); /* records its error */
    for (i = 0; i < 2; i++) {
        struct wfile *f = &el->w[i];
        if (el->b_sync && f->fd >= 0 && fdatasync(f->fd) < 0)
            worker_fail(el, "fdatasync", f->day | (i ? REC_ALERT : 0), errno);
        /* Yesterday's files are done with: close them at the turn of the
         * day. */
        if ((el->b_prune && f->fd >= 0 && f->day < el->b_prune) || el->b_close)
            worker_close(el, i);
    }
    if (el->b_prune)
        worker_prune(el, el->b_prune);
}

/* --- draining (loop side) ---------------------------------------------- */

static void submit(struct errlog *el, uint64_t now_ms, int final);

static void report_health(struct errlog *el, uint64_t now_ms)
{
    char detail[128];
    int ok;

    if (el->st.dropped > el->drop_logged &&
        (!el->last_drop_log_ms ||
         now_ms - el->last_drop_log_ms >= ERRLOG_DROP_LOG_MS)) {
        log_msg(LOG_WARN,
                "error log: %llu lines dropped (queue of %zu bytes full: "
                "the disk is slower than the errors come)",
                (unsigned long long)(el->st.dropped - el->drop_logged),
                el->max_bytes);
        el->drop_logged = el->st.dropped;
        el->last_drop_log_ms = now_ms;
    }
    if (!el->d)
        return;
    ok = !el->st.last_errno &&
         (!el->last_drop_ms || now_ms - el->last_drop_ms >= 60000);
    if (el->st.last_errno)
        snprintf(detail, sizeof(detail), "%s; %llu lost, %llu dropped",
                 el->st.last_error, (unsigned long long)el->st.lost,
                 (unsigned long long)el->st.dropped);
    else
        snprintf(detail, sizeof(detail),
                 "%llu written, %llu dropped, %llu lost, queue %zu bytes",
                 (unsigned long long)el->st.written,
                 (unsigned long long)el->st.dropped,
                 (unsigned long long)el->st.lost,
                 el->queue.len + el->batch.len);
    core_component(el->d, "error_log", ok, detail);
}

static void after_work_cb(uv_work_t *req, int status)
{
    struct errlog *el = req->data;

    (void)status; /* never cancelled */
    el->inflight = 0;
    el->st.written += el->b_written;
    el->st.lost += el->b_lost;
    el->st.pruned += el->b_pruned;
    el->st.batches++;
    el->st.last_errno = el->b_errno;
    snprintf(el->st.last_error, sizeof(el->st.last_error), "%s", el->b_error);
    if (el->b_errno && el->b_errno != el->reported_err)
        log_msg(LOG_ERR, "error log: %s (%llu lines lost so far)", el->b_error,
                (unsigned long long)el->st.lost);
    else if (!el->b_errno && el->reported_err)
        log_msg(LOG_INFO, "error log: writing again");
    el->reported_err = el->b_errno;
    el->batch.len = 0;
    el->batch.lines = 0;
    if (el->stopping) {
        submit(el, el->last_sync_ms, 1); /* the rest, if any */
        return;
    }
    report_health(el, el->now_ms > uv_now(el->loop) ? el->now_ms
                                                    : uv_now(el->loop));
    /* More may have queued meanwhile: the next check hands it over. */
}

/* Hand the queue (and the chores due) to the worker. */
static void submit(struct errlog *el, uint64_t now_ms, int final)
{
    struct qbuf tmp;
    uint32_t today;
    int rc;

    if (el->inflight)
        return;
    today = errlog_day(el->wall_ms(el->clock_ctx));
    el->b_prune = 0;
    el->b_probe = 0;
    if (today != el->pruned_day && !final) {
        el->b_prune = today;
        el->pruned_day = today;
    }
    /* After a failed batch, try the file again now and then even with no
     * line to write, so health recovers when the disk does. */
    if (el->st.last_errno && !final &&
        now_ms - el->last_probe_ms >= ERRLOG_PROBE_MS) {
        el->b_probe = today;
        el->last_probe_ms = now_ms;
    }
    if (!el->queue.len && !el->b_prune && !el->b_probe && !final)
        return;
    if (final && !el->queue.len && el->b_close)
        return;      /* the closing batch already ran */
    tmp = el->batch; /* empty; its buffer is reused */
    el->batch = el->queue;
    el->queue = tmp;
    el->b_sync = final || now_ms - el->last_sync_ms >= ERRLOG_SYNC_MS;
    if (el->b_sync)
        el->last_sync_ms = now_ms;
    el->b_close = final;
    el->b_errno = 0;
    el->b_error[0] = '\0';
    el->b_written = el->b_lost = el->b_pruned = 0;
    el->req.data = el;
    if ((rc = uv_queue_work(el->loop, &el->req, work_cb, after_work_cb)) < 0) {
        /* Cannot happen with a valid loop; keep the lines for next time. */
        tmp = el->queue;
        el->queue = el->batch;
        el->batch = tmp;
        return;
    }
    el->inflight = 1;
}

void errlog_drain(struct errlog *el, uint64_t now_ms)
{
    char line[256];
    int n;

    el->now_ms = now_ms;
    if (el->dropped_unlogged) {
        el->last_drop_ms = now_ms ? now_ms : 1;
        /* One "dropped" line per second at most, when there is room. */
        if (!el->last_marker_ms || now_ms - el->last_marker_ms >= 1000) {
            uint64_t wall = el->wall_ms(el->clock_ctx);
            if ((n = format_dropped(line, sizeof(line), wall,
                                    el->dropped_unlogged)) > 0 &&
                enqueue(el, errlog_day(wall), line, (size_t)n)) {
                el->dropped_unlogged = 0;
                el->last_marker_ms = now_ms ? now_ms : 1;
            }
        }
    }
    submit(el, now_ms, 0);
}

static void check_cb(uv_check_t *h)
{
    struct errlog *el = h->data;

    if (el->queue.len && !el->inflight)
        errlog_drain(el, uv_now(el->loop));
}

static void timer_cb(uv_timer_t *h)
{
    struct errlog *el = h->data;
    uint64_t now = uv_now(el->loop);

    errlog_drain(el, now); /* sync, the day's retention, drop line */
    report_health(el, now);
}

/* --- lifecycle --------------------------------------------------------- */

struct errlog *errlog_new(const struct errlog_conf *c)
{
    struct errlog *el;

    if (!c->dir || strlen(c->dir) >= ERRLOG_DIR_MAX || !c->retention_days)
        return NULL;
    if (!(el = calloc(1, sizeof(*el))))
        return NULL;
    snprintf(el->dir, sizeof(el->dir), "%s", c->dir);
    el->retention_days = c->retention_days;
    el->max_bytes = c->queue_bytes ? c->queue_bytes : ERRLOG_QUEUE_BYTES;
    el->wall_ms = c->wall_ms ? c->wall_ms : realtime_ms;
    el->clock_ctx = c->clock_ctx;
    el->delay_ms = c->delay_ms;
    el->w[0].fd = el->w[1].fd = -1;
    return el;
}

int errlog_start(struct errlog *el, uv_loop_t *loop, struct resild *d)
{
    int rc;

    el->loop = loop;
    el->d = d;
    if ((rc = uv_check_init(loop, &el->check)) < 0)
        return rc;
    if ((rc = uv_timer_init(loop, &el->timer)) < 0) {
        uv_close((uv_handle_t *)&el->check, NULL);
        return rc;
    }
    el->check.data = el->timer.data = el;
    el->handles_open = 1;
    uv_check_start(&el->check, check_cb);
    uv_timer_start(&el->timer, timer_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&el->check);
    uv_unref((uv_handle_t *)&el->timer);
    el->started = 1;
    errlog_drain(el, uv_now(loop)); /* retention at start */
    report_health(el, uv_now(loop));
    return 0;
}

void errlog_stop(struct errlog *el)
{
    if (!el || !el->started || el->stopping)
        return;
    el->stopping = 1;
    if (el->handles_open) {
        uv_close((uv_handle_t *)&el->check, NULL);
        uv_close((uv_handle_t *)&el->timer, NULL);
        el->handles_open = 0;
    }
    errlog_drain(el, uv_now(el->loop)); /* a last "dropped" line */
    submit(el, uv_now(el->loop), 1);    /* else after_work submits it */
}

void errlog_free(struct errlog *el)
{
    if (!el)
        return;
    if (el->w[0].fd >= 0)
        close(el->w[0].fd);
    if (el->w[1].fd >= 0)
        close(el->w[1].fd);
    free(el->queue.data);
    free(el->batch.data);
    free(el);
}

void errlog_get_stats(const struct errlog *el, struct errlog_stats *st)
{
    *st = el->st;
    st->queue_bytes = el->queue.len + el->batch.len;
}

int errlog_attach(struct resild *d, uv_loop_t *loop, struct errlog **out)
{
    struct errlog_conf c = {0};
    const char *delay = getenv("RESILD_TEST_ERRLOG_DELAY_MS");
    struct errlog *el;
    struct stat st;
    int rc;

    *out = NULL;
    if (!d->cfg.error_log_dir[0])
        return 0;
    c.dir = d->cfg.error_log_dir;
    c.retention_days = d->cfg.error_log_retention_days;
    if (delay)
        c.delay_ms = (uint32_t)strtoul(delay, NULL, 10);
    /* A missing directory is made (one level, like LogsDirectory=); any
     * other problem is not fatal: decisions matter more than their log,
     * and health says so from the first batch on. */
    if (mkdir(c.dir, 0750) == 0)
        log_msg(LOG_INFO, "error log: created %s", c.dir);
    else if (errno != EEXIST)
        log_msg(LOG_WARN, "error log: cannot create %s: %s", c.dir,
                strerror(errno));
    if (stat(c.dir, &st) == 0 && !S_ISDIR(st.st_mode))
        log_msg(LOG_WARN, "error log: %s is not a directory", c.dir);
    if (!(el = errlog_new(&c))) {
        log_msg(LOG_ERR, "error log: out of memory");
        return RD_ENOMEM;
    }
    if ((rc = errlog_start(el, loop, d)) < 0) {
        log_msg(LOG_ERR, "error log: %s", uv_strerror(rc));
        errlog_free(el);
        return rc;
    }
    if ((rc = core_add_sink(d, errlog_sink, el)) < 0) {
        log_msg(LOG_ERR, "error log: %s", rd_strerror(rc));
        errlog_detach(el, loop);
        return rc;
    }
    log_msg(LOG_INFO,
            "error log in %s (errors-YYYYMMDD.jsonl and "
            "alerts-YYYYMMDD.jsonl by UTC day, kept %u days)",
            c.dir, (unsigned)c.retention_days);
    *out = el;
    return 0;
}

void errlog_detach(struct errlog *el, uv_loop_t *loop)
{
    if (!el)
        return;
    errlog_stop(el);
    uv_run(loop, UV_RUN_DEFAULT);
    errlog_free(el);
}
