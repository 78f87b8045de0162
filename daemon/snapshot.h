/*
 * snapshot.h - the embedded state snapshot and the operator journal
 * (SPEC §7): the I/O half of persistence, on the server's side of the
 * layers (it may include uv and write log lines); the format is
 * snapfile.h's and the state comes from the core's export block (core.h).
 *
 * - Every snapshot.interval_s the loop serializes every key into one
 *   buffer, SNAPSHOT_CHUNK_KEYS keys per loop turn (no I/O, no stall
 *   longer than a step), and libuv's thread pool writes it: a temporary
 *   file in the same directory, write, fsync, rename over the snapshot,
 *   fsync the directory.  One write at a time: a snapshot due while one is
 *   in flight is skipped and counted.  A failure (full disk, ...) leaves
 *   the previous snapshot as it was, is counted, logged at most once a
 *   minute and shown in health.components.snapshot; decisions go on.
 * - force and reset are journalled: the sink appends the key's state after
 *   the action to a journal file, the thread pool writes and fsyncs it
 *   (group commit: one write in flight, everything queued meanwhile goes
 *   in the next), and only then does the RPC layer answer (struct
 *   durable_ops in core.h).  A snapshot that covers the journal lets it be
 *   emptied.
 * - At start, before the socket listens: the snapshot, then the journal
 *   records newer than it, are imported with their remaining times.  No
 *   file: a clean start.  A corrupt, truncated or future-version file is
 *   renamed to PATH.corrupt-<unix time>, logged, and the daemon starts
 *   clean; nothing in a file can crash it or make it allocate beyond one
 *   record (SNAPFILE_REC_MAX).
 * - At shutdown (after the loop ends) one last snapshot is written
 *   synchronously.
 *
 * What a kill -9 loses: at most one interval of counters and timers (the
 * state since the last snapshot), never an acknowledged force or reset.
 * A force replayed from the journal restarts with the TTL it had when it
 * was set (at most one interval longer than it had left).
 *
 * Test-only hooks, read once at start (never set them in production):
 * RESILD_TEST_SNAPSHOT_FAIL = a comma list of write, fsync, rename,
 * dirsync, journal: that step fails as with EIO/ENOSPC;
 * RESILD_TEST_SNAPSHOT_DELAY_MS = N: each snapshot write sleeps N ms on
 * the thread pool between writing the temporary file and renaming it (for
 * kill -9 during a write).
 */
#ifndef RESIL_SNAPSHOT_H
#define RESIL_SNAPSHOT_H

#include <stdint.h>
#include <uv.h>

#include "core.h"
#include "snapfile.h"

#define SNAPSHOT_PATH_MAX 300
#define SNAPSHOT_DEFAULT_DIR "/var/lib/resild"
#define SNAPSHOT_FILE "state.snap"
#define SNAPSHOT_LOG_EVERY_MS 60000 /* failures: one log line a minute */
#define SNAPSHOT_CHUNK_KEYS 1024    /* keys serialized per loop turn (~1 ms) */

struct snapshot_waiter;

struct snapshot {
    uv_loop_t *loop;
    struct resild *d; /* borrowed */
    int on;           /* a path is in use (else everything is a no-op) */
    char path[SNAPSHOT_PATH_MAX];      /* the snapshot */
    char tmp[SNAPSHOT_PATH_MAX + 8];   /* path.tmp, same directory */
    char jpath[SNAPSHOT_PATH_MAX + 8]; /* path.journal */
    char dir[SNAPSHOT_PATH_MAX];       /* its directory, for fsync */
    uint64_t interval_ms;
    uv_timer_t timer;
    uv_timer_t chunk; /* the next step of a serialization, next turn */
    int timer_on;
    struct key_export *ex; /* scratch for one key (large), owned */
    /* The snapshot: busy from the first serialization step until the
     * write is done; buf (header + payload) belongs to the worker while
     * the write is in flight. */
    uv_work_t work;
    int busy;
    int wbusy;           /* the write is queued or running on the thread pool */
    struct key *ser_key; /* the walk's cursor: last key serialized */
    size_t ser_bucket;   /* and its hash bucket */
    uint64_t ser_nkeys;  /* keys in buf so far */
    uint64_t ser_seq;    /* journal sequence at the walk's start */
    uint64_t ser_us;     /* loop time spent in the walk so far */
    struct snapbuf buf;
    uint64_t buf_seq; /* journal sequence the buffer covers */
    int w_err;        /* worker: errno of the failed step, 0 if none */
    const char *w_step;
    uint64_t w_start_ms; /* loop time the write was queued */
    /* Figures (health, the benchmark). */
    uint64_t written, skipped, failed, failed_since_ok;
    uint64_t last_ok_wall_ms; /* wall clock of the last success, for people */
    uint64_t last_bytes, last_keys;
    uint64_t last_serialize_us, last_write_ms;
    uint64_t logged_ms; /* last failure log line (loop time) */
    uint64_t unlogged;  /* failures since then, not logged */
    char last_err[96];
    /* The journal. */
    int jfd; /* open for append, -1 when none */
    uv_work_t jwork;
    int jbusy;
    struct snapbuf jpend;  /* records not yet handed to the worker */
    struct snapbuf jwrite; /* records the worker is writing */
    uint64_t jwrite_seq;   /* highest sequence in jwrite */
    int jtruncate;         /* worker: empty the file first */
    int jw_err;
    const char *jw_step;
    uint64_t seq;         /* last sequence given to a record */
    uint64_t jlost_seq;   /* a record that could not be buffered (oom) */
    uint64_t jfile_seq;   /* highest sequence in the file, 0 if none */
    uint64_t covered_seq; /* highest sequence a durable snapshot covers */
    struct snapshot_waiter *wq_head, *wq_tail; /* answers waiting, by seq */
    uint64_t jwritten, jfailed;
    struct durable_ops ops;
    /* Test-only fault injection (see above). */
    unsigned fail;
    uint64_t delay_ms;
};

/*
 * Resolve the path (config, $STATE_DIRECTORY, /var/lib/resild, or off),
 * restore what the files hold into d at now_ms, open the journal, and
 * register the journal sink and the durable hook with d.  Call after
 * core_init and before the server listens.  0, or -1 (logged) when a path
 * given explicitly cannot be used: the daemon must not run believing its
 * state is kept.
 */
int snapshot_start(struct snapshot *s, uv_loop_t *loop, struct resild *d);

/* Start the interval timer (unreferenced: it does not keep the loop
 * alive).  After snapshot_start succeeded. */
void snapshot_run(struct snapshot *s);

/* After uv_run returned (every write finished): with final, the last
 * snapshot, written synchronously; then everything closed and freed (safe
 * after a failed or skipped snapshot_start).  0 when the final snapshot is
 * on disk (or none was asked for), -1 (logged) if not. */
int snapshot_stop(struct snapshot *s, int final);

/* Serialize d at now_ms into s->buf (header filled but for its CRCs,
 * which snapshot_seal adds).  0, or RD_ENOMEM. */
int snapshot_serialize(struct snapshot *s, uint64_t now_ms);

/* Restore from s->path (and the journal) into s->d; for snapshot_start
 * and the benchmark.  0, or -1 when the file was set aside. */
int snapshot_restore(struct snapshot *s, uint64_t now_ms);

/* Write s->buf to s->path the atomic way, on the calling thread (the
 * worker's body; the final snapshot and the benchmark call it directly).
 * 0, or -1 with s->w_err and s->w_step set. */
int snapshot_write_file(struct snapshot *s);

#endif
