/*
 * snapshot.c - the state snapshot and the operator journal (see
 * snapshot.h).
 *
 * Threads: everything here runs on the loop except snapshot_write_file and
 * journal_work, which run on libuv's thread pool and touch only what the
 * loop handed them (s->buf while s->busy, s->jwrite and s->jfd while
 * s->jbusy) plus their result fields; the loop reads those only in the
 * after-work callbacks.  Nothing else is shared.
 *
 * Must not: block the loop on a disk (only the start-up restore and the
 * final snapshot at exit do file I/O on the loop's thread, when no
 * request is being served), or let a file's contents decide how much it
 * allocates.
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

/* Test-only fault injection bits (RESILD_TEST_SNAPSHOT_FAIL). */
enum {
    FAIL_WRITE = 1,
    FAIL_FSYNC = 2,
    FAIL_RENAME = 4,
    FAIL_DIRSYNC = 8,
    FAIL_JOURNAL = 16,
};

/* One force or reset answer waiting for the journal. */
struct snapshot_waiter {
    struct snapshot_waiter *next;
    struct caller *c; /* NULL once forgotten (connection closed) */
    uint32_t msgid;
    struct key *k;
    durable_done_fn done;
    uint64_t seq; /* the journal record it waits for */
};

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

/* "2026-11-29T20:31:02Z" */
static void fmt_wall(char *out, size_t cap, uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* --- health --------------------------------------------------------------- */

static void report_health(struct snapshot *s)
{
    char detail[256], when[32];

    if (!s->on)
        return;
    if (s->failed_since_ok) {
        snprintf(detail, sizeof(detail), "error: %s (%llu failures in a row)",
                 s->last_err, (unsigned long long)s->failed_since_ok);
        core_component(s->d, "snapshot", 0, detail);
        return;
    }
    if (s->jfailed && s->last_err[0]) {
        snprintf(detail, sizeof(detail), "journal error: %s", s->last_err);
        core_component(s->d, "snapshot", 0, detail);
        return;
    }
    if (!s->written) {
        core_component(s->d, "snapshot", 1, "no snapshot written yet");
        return;
    }
    fmt_wall(when, sizeof(when), s->last_ok_wall_ms);
    snprintf(
        detail, sizeof(detail),
        "last success %s: %llu keys, %llu bytes, serialized in %llu "
        "steps (longest %llu.%llu ms), written in %llu ms; %llu skipped",
        when, (unsigned long long)s->last_keys,
        (unsigned long long)s->last_bytes, (unsigned long long)s->last_steps,
        (unsigned long long)(s->last_max_step_us / 1000),
        (unsigned long long)(s->last_max_step_us % 1000 / 100),
        (unsigned long long)s->last_write_ms, (unsigned long long)s->skipped);
    core_component(s->d, "snapshot", 1, detail);
}

/* A failure: counted always, logged at most once a minute (a full disk
 * must not flood the log at one line a second). */
static void failure(struct snapshot *s, const char *what, const char *step,
                    int err)
{
    uint64_t now = uv_now(s->loop);

    snprintf(s->last_err, sizeof(s->last_err), "%s %s: %s", what, step,
             strerror(err));
    if (s->logged_ms && now - s->logged_ms < SNAPSHOT_LOG_EVERY_MS) {
        s->unlogged++;
        return;
    }
    log_msg(LOG_ERR,
            "snapshot: %s (%s); the previous snapshot is kept, decisions go "
            "on (%llu more failures not logged)",
            s->last_err, s->path, (unsigned long long)s->unlogged);
    s->logged_ms = now ? now : 1;
    s->unlogged = 0;
}

/* --- serializing ---------------------------------------------------------- */

/*
 * Serializing runs in steps, one per loop turn, each bounded by loop time
 * (s->step_us) and keys (s->step_keys), so the loop never stalls for more
 * than one step whatever the number of keys or the size of their windows.
 * The cursor is the last serialized key's name: each step asks the name
 * index for the keys after it (keys_page, O(log n + page)), so a key
 * created behind the cursor waits for the next snapshot, one created ahead
 * of it is in this one, one gone is simply not met, and no pointer to a
 * key outlives the step that got it.  The journal sequence covered is S0,
 * the one at the walk's start (snapshot.h says why that keeps every
 * operator action).
 */
int snapshot_begin(struct snapshot *s, uint64_t now_ms)
{
    struct budget_export be;

    s->buf.len = 0;
    s->buf.oom = 0;
    if (snapbuf_reserve(&s->buf, SNAPFILE_HEADER_BYTES) < 0) {
        s->buf.oom = 0;
        return RD_ENOMEM;
    }
    s->buf.len = SNAPFILE_HEADER_BYTES;
    core_export_budget(s->d, now_ms, &be);
    snapfile_put_budget(&s->buf, &be);
    s->ser_alen = 0;
    s->ser_nkeys = 0;
    s->ser_seq = s->seq; /* S0: before any key is exported */
    s->ser_us = 0;
    s->ser_steps = 0;
    s->ser_max_us = 0;
    return 0;
}

int snapshot_step(struct snapshot *s, uint64_t now_ms, uint64_t max_keys,
                  uint64_t budget_us)
{
    struct key *page[SNAPSHOT_PAGE_KEYS];
    uint64_t t0 = mono_us(), n = 0, took;
    size_t got = 0, i = 0, total;
    int more = 1, done = 0;

    while (!done && !s->buf.oom) {
        got = keys_page(&s->d->keys, NULL, 0, s->ser_alen ? s->ser_after : NULL,
                        s->ser_alen, page, SNAPSHOT_PAGE_KEYS, &total, &more);
        for (i = 0; i < got; i++) {
            const struct key *k = page[i];
            core_export_key(k, now_ms, s->ex);
            snapfile_put_key(&s->buf, s->ex);
            s->ser_nkeys++;
            memcpy(s->ser_after, k->name, k->len);
            s->ser_alen = k->len;
            if (++n >= max_keys ||
                (budget_us != UINT64_MAX && mono_us() - t0 >= budget_us))
                break;
        }
        if (i < got) /* stopped by a bound: done only if that was the last */
            break;
        done = !more;
    }
    done = done || (i + 1 == got && !more) || s->buf.oom;
    took = mono_us() - t0;
    s->ser_us += took;
    s->ser_steps++;
    if (took > s->ser_max_us)
        s->ser_max_us = took;
    return done;
}

int snapshot_finish(struct snapshot *s)
{
    struct snapfile_header h = {SNAPFILE_VERSION, s->ser_nkeys, s->ser_seq, 0,
                                0};

    if (s->buf.oom) {
        s->buf.len = 0;
        s->buf.oom = 0;
        return RD_ENOMEM;
    }
    h.payload_bytes = s->buf.len - SNAPFILE_HEADER_BYTES;
    snapfile_header_encode(&h, s->buf.p);
    s->buf_seq = s->ser_seq;
    s->last_keys = s->ser_nkeys;
    s->last_serialize_us = s->ser_us;
    s->last_steps = s->ser_steps;
    s->last_max_step_us = s->ser_max_us;
    return 0;
}

int snapshot_serialize(struct snapshot *s, uint64_t now_ms)
{
    int rc = snapshot_begin(s, now_ms);

    if (rc < 0)
        return rc;
    (void)snapshot_step(s, now_ms, UINT64_MAX, UINT64_MAX);
    return snapshot_finish(s);
}

/* Payload CRC into the header, then the header's own CRC. */
static void seal(struct snapbuf *b)
{
    struct snapfile_header h;
    uint8_t *p = b->p;

    h.version = snapfile_u32(p + 8);
    h.nkeys = (uint64_t)snapfile_u32(p + 16) | (uint64_t)snapfile_u32(p + 20)
                                                   << 32;
    h.journal_seq =
        (uint64_t)snapfile_u32(p + 24) | (uint64_t)snapfile_u32(p + 28) << 32;
    h.payload_bytes = b->len - SNAPFILE_HEADER_BYTES;
    h.payload_crc = snapfile_crc32(0, p + SNAPFILE_HEADER_BYTES,
                                   b->len - SNAPFILE_HEADER_BYTES);
    snapfile_header_encode(&h, p);
}

/* --- writing (thread pool) ------------------------------------------------ */

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fail_step(struct snapshot *s, const char *step, int err)
{
    s->w_step = step;
    s->w_err = err ? err : EIO;
    return -1;
}

int snapshot_write_file(struct snapshot *s)
{
    int fd, dfd;

    s->w_err = 0;
    s->w_step = NULL;
    seal(&s->buf);
    fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_step(s, "open", errno);
    if ((s->fail & FAIL_WRITE) || write_all(fd, s->buf.p, s->buf.len) < 0) {
        int e = s->fail & FAIL_WRITE ? ENOSPC : errno;
        close(fd);
        unlink(s->tmp);
        return fail_step(s, "write", e);
    }
    if ((s->fail & FAIL_FSYNC) || fsync(fd) < 0) {
        int e = s->fail & FAIL_FSYNC ? EIO : errno;
        close(fd);
        unlink(s->tmp);
        return fail_step(s, "fsync", e);
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(s->tmp);
        return fail_step(s, "close", e);
    }
    if (s->delay_ms) /* test-only: a window for kill -9 mid-write */
        usleep((useconds_t)(s->delay_ms * 1000));
    if ((s->fail & FAIL_RENAME) || rename(s->tmp, s->path) < 0) {
        int e = s->fail & FAIL_RENAME ? EIO : errno;
        unlink(s->tmp);
        return fail_step(s, "rename", e);
    }
    /* The rename is durable once the directory is. */
    dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return fail_step(s, "open directory", errno);
    if ((s->fail & FAIL_DIRSYNC) || fsync(dfd) < 0) {
        int e = s->fail & FAIL_DIRSYNC ? EIO : errno;
        close(dfd);
        return fail_step(s, "fsync directory", e);
    }
    close(dfd);
    return 0;
}

static void write_work(uv_work_t *w)
{
    (void)snapshot_write_file(w->data);
}

static void journal_kick(struct snapshot *s);

/* The journal's records up to covered_seq are in a durable snapshot: the
 * file may be emptied, by the journal's own worker (never two writers). */
static void journal_maybe_truncate(struct snapshot *s)
{
    if (s->jfd >= 0 && s->jfile_seq && s->jfile_seq <= s->covered_seq &&
        !s->jbusy)
        journal_kick(s);
}

static void write_done(uv_work_t *w, int status)
{
    struct snapshot *s = w->data;

    (void)status;
    s->busy = s->wbusy = 0;
    s->last_write_ms = uv_now(s->loop) - s->w_start_ms;
    if (s->w_err) {
        s->failed++;
        s->failed_since_ok++;
        failure(s, "write", s->w_step, s->w_err);
    } else {
        s->written++;
        s->failed_since_ok = 0;
        s->last_ok_wall_ms = wall_ms();
        s->last_bytes = s->buf.len;
        s->covered_seq = s->buf_seq;
        journal_maybe_truncate(s);
    }
    report_health(s);
}

/* A serialization failed (out of memory): counted, logged, shown. */
static void ser_failed(struct snapshot *s)
{
    s->busy = 0;
    s->failed++;
    s->failed_since_ok++;
    failure(s, "serialize", "buffer", ENOMEM);
    report_health(s);
}

/*
 * One step of the walk per loop turn, on an idle handle: libuv runs it
 * once per iteration, before the poll, which does not wait while it is
 * active, so the I/O that came in meanwhile is served between two steps.
 * (Not a 0 ms timer: libuv 1.44 runs a timer re-armed from its own
 * callback again in the same turn, as its due time is not after the
 * loop's cached now, and the whole walk would be one turn.)  The write is
 * queued after the last step.
 */
static void on_step(uv_idle_t *h)
{
    struct snapshot *s = h->data;

    if (!snapshot_step(s, uv_now(s->loop), s->step_keys, s->step_us))
        return; /* the next turn */
    uv_idle_stop(&s->step);
    if (snapshot_finish(s) < 0) {
        ser_failed(s);
        return;
    }
    s->w_start_ms = uv_now(s->loop);
    s->work.data = s;
    s->wbusy = 1;
    if (uv_queue_work(s->loop, &s->work, write_work, write_done) < 0) {
        s->wbusy = 0;
        s->busy = 0;
        s->failed++;
        s->failed_since_ok++;
        failure(s, "write", "queue", EAGAIN);
    }
}

int snapshot_now(struct snapshot *s)
{
    if (!s->on || !s->timer_on)
        return -1;
    if (s->busy) {
        s->skipped++; /* the last one is still being made or written */
        report_health(s);
        return -1;
    }
    s->busy = 1; /* from the first step until the write is done */
    if (snapshot_begin(s, uv_now(s->loop)) < 0) {
        ser_failed(s);
        return 0;
    }
    uv_idle_start(&s->step, on_step);
    on_step(&s->step); /* the first step now */
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    (void)snapshot_now(t->data);
}

/* --- the journal ---------------------------------------------------------- */

static void journal_work(uv_work_t *w)
{
    struct snapshot *s = w->data;
    struct stat st;

    s->jw_err = 0;
    s->jw_step = NULL;
    if (s->fail & FAIL_JOURNAL) {
        s->jw_err = ENOSPC;
        s->jw_step = "write";
        return;
    }
    if (s->jtruncate && ftruncate(s->jfd, 0) < 0) {
        s->jw_err = errno;
        s->jw_step = "truncate";
        return;
    }
    if (fstat(s->jfd, &st) < 0) {
        s->jw_err = errno;
        s->jw_step = "stat";
        return;
    }
    if (st.st_size == 0 &&
        write_all(s->jfd, (const uint8_t *)snapfile_journal_magic,
                  SNAPFILE_JOURNAL_MAGIC_BYTES) < 0) {
        s->jw_err = errno;
        s->jw_step = "write";
        return;
    }
    if (s->jwrite.len && write_all(s->jfd, s->jwrite.p, s->jwrite.len) < 0) {
        s->jw_err = errno;
        s->jw_step = "write";
        return;
    }
    if (fdatasync(s->jfd) < 0) {
        s->jw_err = errno;
        s->jw_step = "fsync";
    }
}

static void journal_done(uv_work_t *w, int status);

/* Hand what is pending to the worker, if it is idle. */
static void journal_kick(struct snapshot *s)
{
    struct snapbuf t;

    if (s->jbusy || s->jfd < 0)
        return;
    /* Every record in the file is in a durable snapshot: start over. */
    s->jtruncate = s->jfile_seq && s->jfile_seq <= s->covered_seq;
    if (!s->jpend.len && !s->jtruncate)
        return;
    t = s->jwrite; /* swap: jwrite's memory is reused for the next batch */
    s->jwrite = s->jpend;
    s->jpend = t;
    s->jpend.len = 0;
    s->jwrite_seq = s->seq;
    s->jbusy = 1;
    s->jwork.data = s;
    if (uv_queue_work(s->loop, &s->jwork, journal_work, journal_done) < 0) {
        s->jw_err = EAGAIN;
        s->jw_step = "queue";
        journal_done(&s->jwork, 0);
    }
}

static void journal_done(uv_work_t *w, int status)
{
    struct snapshot *s = w->data;
    uint64_t now = uv_now(s->loop);
    int err = s->jw_err;

    (void)status;
    s->jbusy = 0;
    if (err) {
        s->jfailed++;
        failure(s, "journal", s->jw_step, err);
    } else {
        if (s->jtruncate)
            s->jfile_seq = 0;
        if (s->jwrite.len) {
            s->jfile_seq = s->jwrite_seq;
            s->jwritten++;
        }
    }
    s->jwrite.len = 0;
    /* Answer everything this batch carried, in order.  A failed batch's
     * records are lost with it: their actions stay applied in memory and
     * the clients are told they are not on disk. */
    while (s->wq_head && s->wq_head->seq <= s->jwrite_seq) {
        struct snapshot_waiter *q = s->wq_head;
        s->wq_head = q->next;
        if (!s->wq_head)
            s->wq_tail = NULL;
        if (q->c)
            q->done(q->c, q->msgid, q->k, err ? RD_EINVAL : 0, now);
        free(q);
    }
    report_health(s);
    journal_kick(s);
}

/* The sink: a force or reset appends the key's state as it is now. */
static void journal_sink(void *ctx, const struct event *ev)
{
    struct snapshot *s = ctx;

    if ((ev->type != EV_FORCE && ev->type != EV_RESET) || !ev->key ||
        s->jfd < 0)
        return;
    core_export_key(ev->key, ev->now_ms, s->ex);
    if (snapfile_put_journal(&s->jpend, ++s->seq, s->ex) < 0) {
        /* Out of memory: the record is lost; its waiter (if any) gets an
         * error from the next batch like a failed write. */
        s->jpend.oom = 0;
        s->jlost_seq = s->seq;
        s->jfailed++;
        failure(s, "journal", "buffer", ENOMEM);
        return;
    }
    journal_kick(s);
}

static int durable_wait(void *ctx, struct caller *c, uint32_t msgid,
                        struct key *k, durable_done_fn done)
{
    struct snapshot *s = ctx;
    struct snapshot_waiter *q;

    if (s->jfd < 0)
        return RD_EINVAL;
    if (s->jlost_seq == s->seq)
        return RD_ENOMEM; /* its record was lost (see journal_sink) */
    if (!(q = calloc(1, sizeof(*q))))
        return RD_ENOMEM;
    q->c = c;
    q->msgid = msgid;
    q->k = k;
    q->done = done;
    q->seq = s->seq;
    if (s->wq_tail)
        s->wq_tail->next = q;
    else
        s->wq_head = q;
    s->wq_tail = q;
    return 0;
}

static void durable_forget(void *ctx, struct caller *c)
{
    struct snapshot *s = ctx;
    struct snapshot_waiter *q;

    for (q = s->wq_head; q; q = q->next)
        if (q->c == c)
            q->c = NULL;
}

/* --- restoring ------------------------------------------------------------ */

/* Rename a file we will not read to PATH.corrupt-<unix time>. */
static void set_aside(const char *path, const char *why)
{
    char aside[SNAPSHOT_PATH_MAX + 40];

    snprintf(aside, sizeof(aside), "%s.corrupt-%llu", path,
             (unsigned long long)(wall_ms() / 1000));
    if (rename(path, aside) < 0)
        log_msg(LOG_ERR,
                "snapshot: %s: %s; cannot move it aside (%s); starting clean",
                path, why, strerror(errno));
    else
        log_msg(LOG_ERR, "snapshot: %s: %s; moved to %s; starting clean", path,
                why, aside);
}

static int read_full(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n ? 0 : -1;
}

/*
 * One pass over the payload: every record read, checked and decoded;
 * imported too when apply.  Returns 0, or -1 with *why set.  Memory: rec
 * (SNAPFILE_REC_MAX bytes) and s->ex, whatever the file says.
 */
static int payload_pass(struct snapshot *s, FILE *f,
                        const struct snapfile_header *h, uint8_t *rec,
                        int apply, uint64_t now_ms, const char **why,
                        uint64_t *skipped)
{
    uint64_t left = h->payload_bytes, i;
    uint32_t crc = 0;
    struct budget_export be;

    for (i = 0; i <= h->nkeys; i++) {
        uint8_t lenb[4];
        uint32_t len;
        if (left < 4 || read_full(f, lenb, 4) < 0)
            return *why = "truncated", -1;
        len = snapfile_u32(lenb);
        if (len > SNAPFILE_REC_MAX || len > left - 4)
            return *why = "a record is longer than allowed", -1;
        if (read_full(f, rec, len) < 0)
            return *why = "truncated", -1;
        left -= 4 + (uint64_t)len;
        if (!apply) {
            crc = snapfile_crc32(crc, lenb, 4);
            crc = snapfile_crc32(crc, rec, len);
        }
        if (i == 0) {
            if (snapfile_get_budget(rec, len, &be) < 0)
                return *why = "bad budget record", -1;
            if (apply)
                core_import_budget(s->d, now_ms, &be);
            continue;
        }
        if (snapfile_get_key(rec, len, s->ex) < 0)
            return *why = "bad key record", -1;
        if (apply && core_import_key(s->d, s->ex, now_ms) < 0)
            (*skipped)++;
    }
    if (left)
        return *why = "bytes after the last record", -1;
    if (!apply && crc != h->payload_crc)
        return *why = "checksum mismatch", -1;
    return 0;
}

/* The snapshot file: 0 (restored or none), -1 (set aside). *seq gets the
 * journal sequence it covers. */
static int restore_snapshot(struct snapshot *s, uint64_t now_ms, uint64_t *seq)
{
    uint8_t hb[SNAPFILE_HEADER_BYTES];
    struct snapfile_header h;
    const char *why = NULL;
    uint64_t skipped = 0, t0 = mono_us();
    uint8_t *rec = NULL;
    struct stat st;
    FILE *f;
    int rc;

    *seq = 0;
    if (!(f = fopen(s->path, "rb"))) {
        if (errno == ENOENT) {
            log_msg(LOG_INFO, "snapshot: no %s: starting clean", s->path);
            return 0;
        }
        log_msg(LOG_ERR, "snapshot: cannot read %s: %s; starting clean",
                s->path, strerror(errno));
        return 0;
    }
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        why = "not a regular file";
        goto aside;
    }
    if (read_full(f, hb, sizeof(hb)) < 0) {
        why = "truncated header";
        goto aside;
    }
    rc = snapfile_header_decode(hb, &h);
    if (rc == SNAPFILE_EFUTURE) {
        why = "written by a newer resild (format version unknown here)";
        goto aside;
    }
    if (rc < 0) {
        why = "bad header (magic or checksum)";
        goto aside;
    }
    if ((uint64_t)st.st_size != SNAPFILE_HEADER_BYTES + h.payload_bytes) {
        why = "truncated (size differs from the header's)";
        goto aside;
    }
    if (!(rec = malloc(SNAPFILE_REC_MAX))) {
        fclose(f);
        log_msg(LOG_ERR, "snapshot: out of memory reading %s; starting clean",
                s->path);
        return 0;
    }
    /* Pass 1 checks everything, pass 2 imports: a bad file changes
     * nothing. */
    if (payload_pass(s, f, &h, rec, 0, now_ms, &why, &skipped) < 0)
        goto aside;
    if (fseek(f, SNAPFILE_HEADER_BYTES, SEEK_SET) < 0 ||
        payload_pass(s, f, &h, rec, 1, now_ms, &why, &skipped) < 0) {
        /* Checked a moment ago: the file changed under us. */
        log_msg(LOG_ERR, "snapshot: %s changed while read (%s)", s->path,
                why ? why : "seek");
    }
    free(rec);
    fclose(f);
    *seq = h.journal_seq;
    log_msg(LOG_INFO,
            "snapshot: restored %llu keys from %s in %llu ms (%llu bytes)%s",
            (unsigned long long)(h.nkeys - skipped), s->path,
            (unsigned long long)((mono_us() - t0) / 1000),
            (unsigned long long)st.st_size,
            skipped ? "; some keys skipped (max_keys)" : "");
    if (skipped)
        log_msg(LOG_WARN, "snapshot: %llu keys not restored: max_keys %u",
                (unsigned long long)skipped, s->d->cfg.max_keys);
    return 0;
aside:
    free(rec);
    fclose(f);
    set_aside(s->path, why);
    return -1;
}

/* The journal (fd: open read-write, locked): replay records newer than
 * seq, leave the file holding exactly its good records, keep fd for
 * appending as s->jfd.  0, or -1 (fd closed). */
static int restore_journal(struct snapshot *s, int fd, uint64_t now_ms,
                           uint64_t seq)
{
    uint8_t *buf = NULL;
    size_t have = 0, at = 0;
    uint64_t replayed = 0, rseq, maxseq = seq, inseq = 0;
    struct stat st;
    const char *why = NULL;
    char magic[SNAPFILE_JOURNAL_MAGIC_BYTES];

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        log_msg(LOG_ERR, "snapshot: %s is not a regular file", s->jpath);
        close(fd);
        return -1;
    }
    if (st.st_size > 0 &&
        (pread(fd, magic, sizeof(magic), 0) != (ssize_t)sizeof(magic) ||
         memcmp(magic, snapfile_journal_magic, sizeof(magic)) != 0)) {
        /* Not ours: keep a copy for people, start an empty one. */
        char aside[SNAPSHOT_PATH_MAX + 40];
        int cfd;
        snprintf(aside, sizeof(aside), "%s.corrupt-%llu", s->jpath,
                 (unsigned long long)(wall_ms() / 1000));
        cfd = open(aside, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (cfd >= 0) {
            uint8_t tmp[65536];
            ssize_t r;
            off_t o = 0;
            while ((r = pread(fd, tmp, sizeof(tmp), o)) > 0 &&
                   write_all(cfd, tmp, (size_t)r) == 0)
                o += r;
            close(cfd);
        }
        log_msg(LOG_ERR,
                "snapshot: %s is not a resild journal; copied to %s, "
                "emptied",
                s->jpath, aside);
        if (ftruncate(fd, 0) < 0) {
            close(fd);
            return -1;
        }
        st.st_size = 0;
    }
    /* Records are small (one key each) and the journal is emptied after
     * every snapshot; still, it is read in bounded pieces. */
    if (st.st_size > 0) {
        size_t cap = 1u << 20;
        uint64_t off = SNAPFILE_JOURNAL_MAGIC_BYTES;
        ssize_t r;
        if (!(buf = malloc(cap))) {
            close(fd);
            return -1;
        }
        for (;;) {
            size_t used;
            int rc;
            if (have - at < SNAPFILE_REC_MAX + 8 &&
                off < (uint64_t)st.st_size) {
                memmove(buf, buf + at, have - at);
                have -= at;
                at = 0;
                r = pread(fd, buf + have, cap - have, (off_t)off);
                if (r < 0) {
                    why = strerror(errno);
                    break;
                }
                have += (size_t)r;
                off += (uint64_t)r;
            }
            rc = snapfile_get_journal(buf + at, have - at, &rseq, s->ex, &used);
            if (rc <= 0) {
                if (rc < 0 || have - at)
                    why = rc < 0 ? "a corrupt record" : "a torn last record";
                break;
            }
            at += used;
            inseq = inseq > rseq ? inseq : rseq;
            if (rseq > seq) {
                if (core_import_key(s->d, s->ex, now_ms) == 0)
                    replayed++;
                if (rseq > maxseq)
                    maxseq = rseq;
            }
        }
        /* What follows the last good record was never acknowledged: cut
         * it off, or new records would land behind it, unreadable. */
        if (why) {
            off_t good = (off_t)(off - (have - at));
            log_msg(LOG_WARN,
                    "snapshot: journal %s ends with %s (never "
                    "acknowledged); cut at byte %lld",
                    s->jpath, why, (long long)good);
            if (ftruncate(fd, good) < 0 || fsync(fd) < 0)
                log_msg(LOG_ERR, "snapshot: cannot cut %s: %s", s->jpath,
                        strerror(errno));
        }
        free(buf);
    }
    if (replayed)
        log_msg(LOG_INFO,
                "snapshot: replayed %llu operator actions from the journal",
                (unsigned long long)replayed);
    s->seq = maxseq;
    s->jfile_seq = inseq;
    if (fcntl(fd, F_SETFL, O_APPEND) < 0) {
        close(fd);
        return -1;
    }
    s->jfd = fd;
    return 0;
}

int snapshot_restore(struct snapshot *s, uint64_t now_ms)
{
    uint64_t seq = 0;
    int fd, rc;

    /* The journal first: its lock says this daemon alone owns the files
     * (a second resild with the same path must neither read a journal
     * being appended to nor overwrite the snapshot). */
    fd = open(s->jpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_msg(LOG_ERR, "snapshot: cannot open the journal %s: %s", s->jpath,
                strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        log_msg(LOG_ERR, "snapshot: %s is locked: another resild uses it",
                s->jpath);
        close(fd);
        return -1;
    }
    rc = restore_snapshot(s, now_ms, &seq);
    if (restore_journal(s, fd, now_ms, seq) < 0)
        return -1;
    return rc;
}

/* --- start and stop --------------------------------------------------------
 */

/* s->path from the config, $STATE_DIRECTORY or the default directory.
 * 1 = a path to use (*explicit: failures must stop the start), 0 = off. */
static int resolve_path(struct snapshot *s, int *explicit)
{
    const struct config *c = &s->d->cfg;
    const char *sd = getenv("STATE_DIRECTORY");
    struct stat st;
    int n;

    *explicit = 1;
    if (!c->snapshot_enabled) {
        log_msg(LOG_INFO, "snapshot: off (snapshot.enabled is false): state "
                          "will not survive a restart");
        return 0;
    }
    if (c->snapshot_path[0]) {
        n = snprintf(s->path, sizeof(s->path), "%s", c->snapshot_path);
    } else if (sd && sd[0] == '/') {
        /* systemd's StateDirectory=: the first of its colon list. */
        size_t len = strcspn(sd, ":");
        n = snprintf(s->path, sizeof(s->path), "%.*s/%s", (int)len, sd,
                     SNAPSHOT_FILE);
    } else if (stat(SNAPSHOT_DEFAULT_DIR, &st) == 0 && S_ISDIR(st.st_mode)) {
        *explicit = 0;
        n = snprintf(s->path, sizeof(s->path), "%s/%s", SNAPSHOT_DEFAULT_DIR,
                     SNAPSHOT_FILE);
    } else {
        log_msg(LOG_WARN,
                "snapshot: off: no snapshot.path, no $STATE_DIRECTORY and "
                "no %s; state will not survive a restart",
                SNAPSHOT_DEFAULT_DIR);
        return 0;
    }
    if (n < 0 || (size_t)n >= sizeof(s->path)) {
        log_msg(LOG_ERR, "snapshot: path too long");
        return -1;
    }
    return 1;
}

static unsigned parse_fail(const char *v)
{
    unsigned bits = 0;

    if (!v)
        return 0;
    if (strstr(v, "write"))
        bits |= FAIL_WRITE;
    if (strstr(v, "fsync"))
        bits |= FAIL_FSYNC;
    if (strstr(v, "rename"))
        bits |= FAIL_RENAME;
    if (strstr(v, "dirsync"))
        bits |= FAIL_DIRSYNC;
    if (strstr(v, "journal"))
        bits |= FAIL_JOURNAL;
    return bits;
}

int snapshot_start(struct snapshot *s, uv_loop_t *loop, struct resild *d)
{
    const char *delay = getenv("RESILD_TEST_SNAPSHOT_DELAY_MS");
    char *slash;
    int explicit, rc;

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->d = d;
    s->jfd = -1;
    snapbuf_init(&s->buf);
    snapbuf_init(&s->jpend);
    snapbuf_init(&s->jwrite);
    rc = resolve_path(s, &explicit);
    if (rc <= 0)
        return rc;
    snprintf(s->tmp, sizeof(s->tmp), "%s.tmp", s->path);
    snprintf(s->jpath, sizeof(s->jpath), "%s.journal", s->path);
    snprintf(s->dir, sizeof(s->dir), "%s", s->path);
    slash = strrchr(s->dir, '/');
    if (slash == s->dir)
        slash[1] = '\0'; /* "/state.snap": the root */
    else
        *slash = '\0';
    s->fail = parse_fail(getenv("RESILD_TEST_SNAPSHOT_FAIL"));
    s->delay_ms = delay ? strtoull(delay, NULL, 10) : 0;
    if (s->fail || s->delay_ms)
        log_msg(LOG_WARN, "snapshot: TEST HOOKS ON (fail %#x, delay %llu ms)",
                s->fail, (unsigned long long)s->delay_ms);
    s->interval_ms = (uint64_t)d->cfg.snapshot_interval_s * 1000;
    s->step_us = SNAPSHOT_STEP_US;
    s->step_keys = SNAPSHOT_STEP_KEYS;
    if (!(s->ex = malloc(sizeof(*s->ex)))) {
        log_msg(LOG_ERR, "snapshot: out of memory");
        return -1;
    }
    uv_update_time(loop);
    /* A snapshot set aside still lets the journal be replayed (every
     * record of it, as no snapshot says which are older). */
    (void)snapshot_restore(s, uv_now(loop));
    if (s->jfd < 0) {
        /* The directory is not writable (or not there). */
        free(s->ex);
        s->ex = NULL;
        if (explicit) {
            log_msg(LOG_ERR,
                    "snapshot: %s cannot be used (see above); refusing to "
                    "start without the state file configured",
                    s->path);
            return -1;
        }
        log_msg(LOG_WARN,
                "snapshot: off: %s cannot be written; state will "
                "not survive a restart",
                s->path);
        return 0;
    }
    s->on = 1;
    s->ops.wait = durable_wait;
    s->ops.forget = durable_forget;
    s->ops.ctx = s;
    if (core_add_sink(d, journal_sink, s) < 0) {
        log_msg(LOG_ERR, "snapshot: no room for the journal sink");
        return -1;
    }
    core_set_durable(d, &s->ops);
    log_msg(LOG_INFO, "snapshot: %s every %u s (journal %s)", s->path,
            d->cfg.snapshot_interval_s, s->jpath);
    report_health(s);
    return 0;
}

void snapshot_run(struct snapshot *s)
{
    if (!s->on)
        return;
    uv_timer_init(s->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_timer, s->interval_ms, s->interval_ms);
    uv_unref((uv_handle_t *)&s->timer);
    uv_idle_init(s->loop, &s->step);
    s->step.data = s;
    uv_unref((uv_handle_t *)&s->step); /* a stop need not wait for it */
    s->timer_on = 1;
}

int snapshot_stop(struct snapshot *s, int final)
{
    int rc = 0;

    if (s->timer_on) {
        uv_close((uv_handle_t *)&s->timer, NULL);
        uv_close((uv_handle_t *)&s->step, NULL);
        uv_run(s->loop, UV_RUN_NOWAIT);
        s->timer_on = 0;
    }
    /* A worker still running owns buf, jwrite and jfd: let it finish
     * (and its after-callback run) before anything is closed or reused.
     * After the daemon's loop has ended nothing is in flight; a caller
     * that never ran the loop (tests, the benchmark) may have queued a
     * journal write through the sink. */
    while (s->wbusy || s->jbusy)
        uv_run(s->loop, UV_RUN_ONCE);
    s->busy = 0; /* a walk cut short is simply dropped */
    if (s->on && final) {
        /* The loop has ended: no write is in flight (a walk cut short by
         * the stop is simply started over), nothing changes any more. */
        uv_update_time(s->loop);
        if (snapshot_serialize(s, uv_now(s->loop)) < 0) {
            log_msg(LOG_ERR, "snapshot: final snapshot: out of memory");
            rc = -1;
        } else if (snapshot_write_file(s) < 0) {
            log_msg(LOG_ERR, "snapshot: final snapshot: %s: %s", s->w_step,
                    strerror(s->w_err));
            rc = -1;
        } else {
            log_msg(LOG_INFO, "snapshot: final snapshot of %llu keys in %s",
                    (unsigned long long)s->last_keys, s->path);
            /* Everything journalled is in it now. */
            if (s->jfd >= 0 && s->jfile_seq && ftruncate(s->jfd, 0) == 0)
                (void)fsync(s->jfd);
        }
    }
    if (s->jfd >= 0)
        close(s->jfd);
    s->jfd = -1;
    while (s->wq_head) {
        struct snapshot_waiter *q = s->wq_head;
        s->wq_head = q->next;
        free(q);
    }
    s->wq_tail = NULL;
    snapbuf_free(&s->buf);
    snapbuf_free(&s->jpend);
    snapbuf_free(&s->jwrite);
    free(s->ex);
    s->ex = NULL;
    s->on = 0;
    return rc;
}
