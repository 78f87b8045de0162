/*
 * errlog.h - the error log (SPEC §7): one JSON object per line for every
 * failure and unknown outcome, one file per UTC day (errors-YYYYMMDD.jsonl)
 * in error_log.dir, files older than retention_days deleted.  The alert
 * log beside it: one line per alert (EV_ALERT, SPEC §6) in
 * alerts-YYYYMMDD.jsonl, through the same queue, worker and retention.
 *
 * Layer: a sink on the event stream (server side: it uses libuv's thread
 * pool).  The decision path pays only for formatting the line:
 *
 *   errlog_sink (on the loop, called by the core)
 *       formats the line and appends it to a bytes-bounded queue; nothing
 *       else: no uv, no I/O, no allocation past the queue's growth.  A line
 *       that does not fit is dropped and counted, never waited for.
 *   a uv_check handle (each loop iteration) and a 1 s uv_timer
 *       hand the queue to the thread pool as one batch when none is in
 *       flight (uv_queue_work), decide fdatasync (at most once per second),
 *       retention (at start and when the UTC day changes), a "dropped" line
 *       in the log after drops, a retry of the file every 10 s after a
 *       failure (so health recovers with the disk, lines or not), and
 *       report health.components.error_log: not ok while the last batch
 *       failed or lines were dropped in the last 60 s.
 *   the worker (a thread-pool thread, one batch at a time)
 *       appends each day's lines to that day's file, fdatasyncs when asked,
 *       deletes expired files.  A slow or dead disk holds one pool thread
 *       and fills the queue; the loop never waits for it.
 *
 * The wall clock is injected (errlog_conf.wall_ms) so rotation at midnight
 * and retention are tested under a fake clock; a line's file is the UTC day
 * of its own "time" field.  Lines are pure ASCII (JSON_ENSURE_ASCII): peer
 * text is made valid UTF-8 first (an invalid byte becomes U+FFFD) and then
 * escaped, so every line is valid JSON and safe to cat on a terminal.
 *
 * Line (fields always present unless said; null when not given):
 *   {"time": "2024-05-01T12:34:56.789Z", "ts_ms": 1714566896789,
 *    "key": "binance.orders", "outcome": "failure"|"unknown",
 *    "class": "network.reset"|null, "severity": "high",
 *    "transient": true, "message": "..."|null,
 *    "correlation_id": "..."|null, "context": {...} (only when given and
 *    decodable, see below), "latency_ms": 12|null, "source": "report"|
 *    "permit_expired"|"probe_lost"|"disconnect"|"cancel", "stale": false,
 *    "permit": 17 (0: none), "attempt": 1, "idempotent": true, "uid": 1000}
 * After drops, one line (at most one per second):
 *   {"time": ..., "ts_ms": ..., "event": "dropped", "lines": N,
 *    "reason": "queue full"}
 * Alert line (alerts-YYYYMMDD.jsonl; the exec hook's fields):
 *   {"time": ..., "ts_ms": ..., "topic": "alert", "kind": "rate"|
 *    "breaker_open"|"predicted_trip", "rule": "name", "key": "...",
 *    "rate_per_min": 12.0, "eta_s": 40|null, "detail": "..."}
 * context: the report's context map (msgpack, <= OUTCOME_CONTEXT_MAX bytes,
 * already bounded by the scanner) as a JSON object; strings cleaned like
 * the message, integers above 2^63-1 as decimal strings, NaN/inf as null.
 * A map with a non-string key, a bin or an ext value, or deeper than
 * ERRLOG_CONTEXT_DEPTH is not shown: "context_omitted": "why" instead.
 */
#ifndef RESIL_ERRLOG_H
#define RESIL_ERRLOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "event.h"

struct resild;
struct errlog;

#define ERRLOG_QUEUE_BYTES (4u << 20) /* default queue bound (bytes) */
#define ERRLOG_LINE_MAX 16384         /* bytes of one line, '\n' included */
#define ERRLOG_CONTEXT_DEPTH 8        /* nesting of a context shown */
#define ERRLOG_SYNC_MS 1000           /* fdatasync at most this often */
#define ERRLOG_DROP_LOG_MS 60000      /* a drop warning on stderr per ... */
#define ERRLOG_PROBE_MS 10000 /* after a failure: retry the file this often */

/* Wall-clock milliseconds since the Unix epoch (UTC). */
typedef uint64_t (*errlog_clock_fn)(void *ctx);

struct errlog_conf {
    const char *dir;         /* copied; must fit ERRLOG_DIR_MAX */
    uint32_t retention_days; /* >= 1 */
    size_t queue_bytes;      /* 0: ERRLOG_QUEUE_BYTES */
    errlog_clock_fn wall_ms; /* NULL: CLOCK_REALTIME */
    void *clock_ctx;
    uint32_t delay_ms; /* test hook: the worker sleeps this long before
                        * each batch (a slow disk); 0 in production */
};
#define ERRLOG_DIR_MAX 256

/* Counters since start (loop side; read any time on the loop). */
struct errlog_stats {
    uint64_t queued;     /* lines accepted into the queue */
    uint64_t written;    /* lines the worker wrote */
    uint64_t dropped;    /* lines refused: queue full or line too long */
    uint64_t lost;       /* lines of batches whose write failed */
    uint64_t batches;    /* batches completed */
    uint64_t pruned;     /* expired files deleted */
    size_t queue_bytes;  /* bytes waiting now (queue + batch in flight) */
    int last_errno;      /* of the last batch; 0 = it succeeded */
    char last_error[96]; /* "open errors-20240501.jsonl: ..." or "" */
};

/* A new error log (no I/O yet).  NULL when out of memory or c->dir is too
 * long. */
struct errlog *errlog_new(const struct errlog_conf *c);

/* An event_sink_fn (ctx: the errlog).  EV_OUTCOME failure and unknown
 * (the error file) and EV_ALERT (the alert file) only; the rest is
 * ignored.  On the loop, never blocks, no uv calls. */
void errlog_sink(void *ctx, const struct event *ev);

/* Start draining on loop: a uv_check and a 1 s uv_timer, both unref'd (they
 * keep no loop alive; a batch in flight does).  d (borrowed, may be NULL in
 * tests) receives health.components.error_log.  Retention runs with the
 * first batch.  0 or a negative UV_E* code. */
int errlog_start(struct errlog *el, uv_loop_t *loop, struct resild *d);

/* Hand what is queued to the worker now if none is in flight (also done
 * by the handles errlog_start starts).  now_ms: the loop's monotonic
 * time.  For tests; safe any time after errlog_start. */
void errlog_drain(struct errlog *el, uint64_t now_ms);

/* Stop: close the handles and write what is queued (fdatasync, close the
 * file).  Returns at once; run the loop until it has no more work
 * (uv_run(loop, UV_RUN_DEFAULT)) before errlog_free. */
void errlog_stop(struct errlog *el);

/* Free (after errlog_stop and the loop ran dry, or if never started). */
void errlog_free(struct errlog *el);

void errlog_get_stats(const struct errlog *el, struct errlog_stats *st);

/* --- for main.c: the whole wiring in two calls --- */

/* When d->cfg has an error_log section: create the error log, register
 * its sink with d and start it on loop (RESILD_TEST_ERRLOG_DELAY_MS in the
 * environment sets the test hook delay_ms).  *el is NULL when there is no
 * section.  0, or a negative code (RD_ENOMEM, UV_E*) with a line logged. */
int errlog_attach(struct resild *d, uv_loop_t *loop, struct errlog **el);

/* After the loop returned: stop, run the loop dry, free.  el may be NULL. */
void errlog_detach(struct errlog *el, uv_loop_t *loop);

/* --- pure helpers (tested directly) --- */

/* UTC day of wall_ms as a number YYYYMMDD (e.g. 20240501). */
uint32_t errlog_day(uint64_t wall_ms);

/* wall_ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 25 bytes). */
void errlog_iso8601(char *buf, size_t cap, uint64_t wall_ms);

/* Days since 1970-01-01 of day YYYYMMDD, or -1 when it is no valid date. */
int64_t errlog_day_number(uint32_t yyyymmdd);

/* 1 when name is "errors-YYYYMMDD.jsonl" or "alerts-YYYYMMDD.jsonl" for a
 * day that ended more than retention_days days before today (YYYYMMDD):
 * days older than today - retention_days; today and the retention_days
 * before it stay.  0 for any other name. */
int errlog_expired(const char *name, uint32_t today, uint32_t retention_days);

/* Format ev (an EV_OUTCOME) as one line ending in '\n' into buf.  Its
 * length, or -1 when it is not a failure/unknown outcome or does not fit
 * cap even without its context. */
int errlog_format(char *buf, size_t cap, const struct event *ev,
                  uint64_t wall_ms);

/* Format ev (an EV_ALERT) as one alert line ending in '\n' into buf.  Its
 * length, or -1 when it is no alert or does not fit cap. */
int errlog_format_alert(char *buf, size_t cap, const struct event *ev,
                        uint64_t wall_ms);

#endif
