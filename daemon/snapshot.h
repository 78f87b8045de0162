/*
 * snapshot.h - the embedded state snapshot and the operator journal
 * (SPEC §7): the I/O half of persistence, on the server's side of the
 * layers (it may include uv and write log lines); the format is
 * snapfile.h's and the state comes from the core's export block (core.h).
 *
 * - Every snapshot.interval_s the loop serializes every key into one
 *   buffer, in steps: one step per loop turn, each ending once it has
 *   taken SNAPSHOT_STEP_US of loop time (checked after every key, so a
 *   step overruns by at most one key: ~25 us for a 3600 s time window) or
 *   SNAPSHOT_STEP_KEYS keys.  The walk goes in name order and keeps only a
 *   name as its cursor (keys_page with `after`), never a struct key *
 *   across turns, so keys created, expired or deleted between steps
 *   cannot leave it dangling.  Then libuv's thread pool writes the buffer:
 *   a temporary file in the same directory, write, fsync, rename over the
 *   snapshot, fsync the directory.  One snapshot at a time: one due while
 *   the last is still being serialized or written is skipped and counted.
 *   A failure (full disk, ...) leaves the previous snapshot as it was, is
 *   counted, logged at most once a minute and shown in
 *   health.components.snapshot; decisions go on.
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
 * Consistency of a snapshot made in steps with the journal.  The cut is
 * not one instant: each key is exported at the step that reaches it, in
 * remaining-time form (keys do not refer to each other's timers).  The
 * rule that keeps every operator action:
 *
 *   S0 = the journal sequence when the walk begins, before any key is
 *   exported; the file's header says it covers S0 (journal_seq).
 *   (1) A record with seq <= S0 was applied before the walk began, so
 *       every key the walk exports already holds its effect.
 *   (2) A record with seq > S0 came during the walk (or after): its key
 *       may have been exported before it (a force on a key already
 *       written) or never (a key created behind the cursor).  Restore
 *       replays, in order, every journal record with seq > journal_seq
 *       over the snapshot.  A record is the key's whole state right after
 *       the action, so replaying one whose key was exported after it only
 *       sets that key back to the action's instant: counters since then
 *       are lost, the action never is.
 *   (3) The journal file is emptied only when every record in it has
 *       seq <= covered_seq, the S0 of a snapshot whose write, fsync,
 *       rename and directory fsync all succeeded; never with a record the
 *       snapshot on disk may have missed.  A force made mid-walk is thus
 *       emptied by the next snapshot (whose walk begins after it), not by
 *       the one it raced.
 *   The final snapshot at exit runs in one go with the loop stopped, so
 *   it covers every record (S0 = the last sequence) and empties the file.
 *
 * What a kill -9 loses: the state since the last snapshot began (at most
 * one interval plus the walk's duration) of counters and timers, never an
 * acknowledged force or reset.  A force replayed from the journal
 * restarts with the TTL it had when it was set (at most that much longer
 * than it had left).
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
/* One serialization step (one loop turn): it ends after the key that
 * takes it past SNAPSHOT_STEP_US of loop time or makes SNAPSHOT_STEP_KEYS.
 * That is the longest a request arriving during a snapshot waits for it,
 * whatever the number of keys or the size of their windows
 * (tests/bench_snapshot.c measures it).  250 us, not 1 ms: a walk keeps
 * the loop busy for its whole CPU time (a third of each second at 20k keys
 * with 3600 s windows), so a request's wait is spread over 0..step; with
 * pings against a daemon during such snapshots the p99.9 went from 1.1 ms
 * (1 ms steps) to 0.6 ms (250 us) and 0.37 ms (100 us), the walk's total
 * time unchanged (~1 us of loop overhead per turn); below 250 us one 3600 s
 * window key (~25 us) would overrun a step by a tenth or more.  The key
 * cap only bounds a step's buffer growth should the clock check fail; it
 * is not what normally ends a step. */
#define SNAPSHOT_STEP_US 250
#define SNAPSHOT_STEP_KEYS 4096
#define SNAPSHOT_PAGE_KEYS 64 /* keys taken from the name index at a time */

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
    uv_idle_t step; /* active while a walk is under way: a step a turn */
    int timer_on;
    struct key_export *ex; /* scratch for one key (large), owned */
    /* A step's bounds (SNAPSHOT_STEP_US, SNAPSHOT_STEP_KEYS; tests and the
     * benchmark may change them before a walk). */
    uint64_t step_us, step_keys;
    /* The snapshot: busy from the first serialization step until the
     * write is done; buf (header + payload) belongs to the worker while
     * the write is in flight. */
    uv_work_t work;
    int busy;
    int wbusy; /* the write is queued or running on the thread pool */
    /* The walk's cursor: the name of the last key serialized (ser_alen 0:
     * none yet).  A name, not a pointer: see above. */
    char ser_after[KEY_MAX + 1];
    uint8_t ser_alen;
    uint64_t ser_nkeys; /* keys in buf so far */
    uint64_t ser_seq;   /* journal sequence at the walk's start (S0) */
    uint64_t ser_us;    /* loop time spent in the walk so far */
    uint64_t ser_steps, ser_max_us; /* steps so far, the longest (us) */
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
    uint64_t last_steps, last_max_step_us; /* of the last walk */
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

/* Start a snapshot now, as the interval timer does: the first step runs
 * at once, the others on the following loop turns, then the write.  0
 * (started, or failed for want of memory: counted), or -1 when one is
 * still being serialized or written (counted as skipped) or snapshot_run
 * was not called.  For tests and the benchmark. */
int snapshot_now(struct snapshot *s);

/* Serialize d at now_ms into s->buf in one go (header filled but for its
 * CRCs, which the write adds): the final snapshot and the benchmark.
 * Not while a walk is under way.  0, or RD_ENOMEM. */
int snapshot_serialize(struct snapshot *s, uint64_t now_ms);

/* The walk in steps, which snapshot_serialize and the timer are made of
 * (tests drive it under a fake clock).  begin: s->buf holds the header's
 * room and the budget record, the cursor is at the first name, S0 is
 * taken; 0 or RD_ENOMEM.  step: the keys after the cursor, in name order,
 * each exported at now_ms, until max_keys are in or budget_us of
 * monotonic time has passed (checked after each key: at least one key per
 * step; UINT64_MAX: no limit); 1 when every key is in (or the buffer ran
 * out of memory: finish says so), 0 when more remain.  finish: the header
 * (keys, S0, payload bytes); 0, or RD_ENOMEM (the buffer is emptied). */
int snapshot_begin(struct snapshot *s, uint64_t now_ms);
int snapshot_step(struct snapshot *s, uint64_t now_ms, uint64_t max_keys,
                  uint64_t budget_us);
int snapshot_finish(struct snapshot *s);

/* Restore from s->path (and the journal) into s->d; for snapshot_start
 * and the benchmark.  0, or -1 when the file was set aside. */
int snapshot_restore(struct snapshot *s, uint64_t now_ms);

/* Write s->buf to s->path the atomic way, on the calling thread (the
 * worker's body; the final snapshot and the benchmark call it directly).
 * 0, or -1 with s->w_err and s->w_step set. */
int snapshot_write_file(struct snapshot *s);

#endif
