/*
 * bench.c - `make bench-more` (and, pinned to one CPU without the flood,
 * a section of `make bench`): what a call to resild costs, printed next to the
 * bare Unix-socket round trip measured on the same machine in the same run.
 *
 * What it measures (N operations per row; N is argv[1], else $BENCH_N, else
 * 20000):
 *   acquire+report   N sequential acquire + report pairs on one key through
 *                    one libresil handle.  N and ops/s count pairs; the
 *                    latency columns count each call (2N samples).
 *   ping             N sequential resil_ping calls, same handle.
 *   echo reference   a forked child of this program that echoes with
 *                    blocking read/write (no libuv, no msgpack); the client
 *                    sends as many bytes as libresil's acquire request and
 *                    reads as many back.  This is the floor: two context
 *                    switches and two socket copies per round trip.
 *   pipelined acq    a raw socket and msgpack-c: batches of 64 requests
 *                    [0, msgid, "acquire", [{"key": "bench.p"}]] written at
 *                    once, then all 64 answers read and checked (matched by
 *                    msgid).  Only the acquire batches are timed; the
 *                    reports that hand the permits back are sent, checked
 *                    and left out of the clock between batches, so the
 *                    permit pool never fills whatever N is.
 *   pipelined echo   the same batches of bytes against the echo child.
 *   flood            issue 8, defect 1: a fresh daemon; FLOOD_PROCS (2)
 *                    forked processes connect and close as fast as they
 *                    can for $BENCH_FLOOD_S seconds (default 10; 0 skips
 *                    the section) while a libresil client that connected
 *                    before pings in a loop.  Prints the flood's
 *                    connections, the pings' p50/p99/max and the daemon's
 *                    peak RSS (VmHWM).  `bench flood` runs this section
 *                    alone; with BUILD=<dir> it measures <dir>/resild (an
 *                    older build, for a before/after).
 *
 * How to read it: latencies are per call in microseconds, nearest-rank
 * percentiles over every sample; ops/s is operations over the wall time of
 * the timed sections.  The last line divides the daemon's p50 by the echo
 * p50: what resild adds on top of the unavoidable socket round trip.  The
 * rows run interleaved in ROUNDS rounds (after WARMUP untimed operations
 * each), so a burst of noise on this shared machine lands on every row
 * rather than on one.
 *
 * Where the scheduler puts the three processes can matter more than resild
 * itself: on the 2-core VM this was written on, a round trip between two
 * CPUs cost ~85 us (echo and daemon alike) against ~7-10 us on one CPU, so
 * an unpinned run can show the echo child sharing the bench's CPU and the
 * daemon not (a ratio of 10x and more) or the reverse.  `taskset -c 0 make
 * bench` puts all three on one CPU (children inherit it) and shows
 * resild's own cost.
 *
 * Nothing here is asserted against a time: the exit status is 1 only when
 * something broke (the daemon or the echo child did not start, a call
 * failed, an answer was wrong, the daemon did not exit cleanly), 2 on a
 * bad N.
 *
 * Not a test: its name does not start with test_, so tests/run.sh skips it.
 */
#include <errno.h>
#include <msgpack.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"
#include "flood_util.h"
#include "resil.h"

#define DEFAULT_N 20000
#define MAX_N 10000000    /* 80 MB of samples per row at most */
#define BATCH 64          /* requests per pipelined write */
#define ROUNDS 10         /* interleaved rounds over the rows */
#define WARMUP 1000       /* untimed operations per row before round 0 */
#define DEADLINE_MS 10000 /* a libresil call slower than this is broken */
#define KEY_SEQ "bench.seq"
#define KEY_PIPE "bench.p"
#define IO_BUF_BYTES 65536
#define FLOOD_PROCS 2
#define FLOOD_DEFAULT_S 10
#define FLOOD_SAMPLES (1u << 22) /* pings kept for the percentiles */

/* One row of the table.  samples_ns holds per-call latencies (cap entries,
 * NULL for the pipelined rows, which have none). */
struct row {
    const char *name;
    uint64_t *samples_ns;
    size_t nsamples, cap;
    uint64_t ops;      /* operations counted in ops/s and N */
    uint64_t timed_ns; /* wall time of the timed sections */
};

/* A raw MessagePack-RPC connection to the daemon for the pipelined rows. */
struct rpc_conn {
    int fd;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacker up;
    msgpack_unpacked res;
    uint32_t next_id;
    uint64_t permits[BATCH]; /* the last acquire batch's permits, by slot */
    int live;                /* buffers initialised: rpc_close frees them */
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void record(struct row *rw, uint64_t ns)
{
    if (rw->samples_ns && rw->nsamples < rw->cap)
        rw->samples_ns[rw->nsamples++] = ns;
}

/* --- sockets ------------------------------------------------------------ */

static int unix_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return -1;
    strcpy(sa->sun_path, path);
    return 0;
}

/* A blocking, close-on-exec connection to path.  fd or -1. */
static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    int fd;

    if (unix_addr(&sa, path) < 0)
        return -1;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    ssize_t n;

    while (len > 0) {
        n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes.  0, or -1 on error or end of stream. */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    ssize_t n;

    while (len > 0) {
        n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* --- the echo reference ------------------------------------------------- */

/* The child: serve connections one after the other (the bench opens one
 * and keeps it), echoing every byte, until killed or orphaned. */
static void echo_serve(int lfd, pid_t parent)
{
    static char buf[IO_BUF_BYTES];
    ssize_t n;
    int fd;

    /* Die with the bench, however it ends; best effort, hence unchecked. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    for (;;) {
        fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        while ((n = read(fd, buf, sizeof(buf))) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 || write_all(fd, buf, (size_t)n) < 0)
                break;
        }
        close(fd);
    }
}

/* Listen on path and fork the echo child.  The socket listens before the
 * fork, so a connect() right after this returns cannot miss it.  Returns
 * the child's pid, or -1. */
static pid_t echo_start(const char *path)
{
    struct sockaddr_un sa;
    pid_t pid, parent = getpid();
    int lfd;

    if (unix_addr(&sa, path) < 0)
        return -1;
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -1;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(lfd, 8) < 0) {
        close(lfd);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0)
        echo_serve(lfd, parent); /* never returns */
    close(lfd);
    return pid;
}

static void echo_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* --- msgpack helpers for the raw connection ----------------------------- */

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);

    return msgpack_pack_str(pk, len) | msgpack_pack_str_body(pk, s, len);
}

/* [0, id, "acquire", [{"key": key}]] */
static int pack_acquire(msgpack_packer *pk, uint32_t id, const char *key)
{
    return msgpack_pack_array(pk, 4) | msgpack_pack_int(pk, 0) |
           msgpack_pack_uint32(pk, id) | pack_str(pk, "acquire") |
           msgpack_pack_array(pk, 1) | msgpack_pack_map(pk, 1) |
           pack_str(pk, "key") | pack_str(pk, key);
}

/* [0, id, "report", [{"key": key, "permit": permit, "outcome": "success"}]] */
static int pack_report(msgpack_packer *pk, uint32_t id, const char *key,
                       uint64_t permit)
{
    return msgpack_pack_array(pk, 4) | msgpack_pack_int(pk, 0) |
           msgpack_pack_uint32(pk, id) | pack_str(pk, "report") |
           msgpack_pack_array(pk, 1) | msgpack_pack_map(pk, 3) |
           pack_str(pk, "key") | pack_str(pk, key) | pack_str(pk, "permit") |
           msgpack_pack_uint64(pk, permit) | pack_str(pk, "outcome") |
           pack_str(pk, "success");
}

/* The size of an acquire request as libresil sends it (see resil_acquire),
 * for a msgid in the range this run uses.  0 on failure. */
static size_t libresil_acquire_bytes(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t n;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rc = msgpack_pack_array(&pk, 4) | msgpack_pack_int(&pk, 0) |
         msgpack_pack_uint32(&pk, 1000) | pack_str(&pk, "acquire") |
         msgpack_pack_array(&pk, 1) | msgpack_pack_map(&pk, 4) |
         pack_str(&pk, "key") | pack_str(&pk, KEY_SEQ) | pack_str(&pk, "cost") |
         msgpack_pack_uint64(&pk, 1) | pack_str(&pk, "wait_ms") |
         msgpack_pack_uint64(&pk, 0) | pack_str(&pk, "priority") |
         pack_str(&pk, "normal");
    n = rc == 0 ? sb.size : 0;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    size_t len = strlen(key);
    uint32_t i;

    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == len &&
            memcmp(kv->key.via.str.ptr, key, len) == 0)
            return &kv->val;
    }
    return NULL;
}

/* Connect c to path.  0 or -1; either way rpc_close(c) is safe after. */
static int rpc_open(struct rpc_conn *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->next_id = 1;
    if (!msgpack_unpacker_init(&c->up, IO_BUF_BYTES))
        return -1;
    msgpack_sbuffer_init(&c->sb);
    msgpack_packer_init(&c->pk, &c->sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&c->res);
    c->live = 1;
    c->fd = connect_unix(path);
    return c->fd < 0 ? -1 : 0;
}

static void rpc_close(struct rpc_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (!c->live)
        return;
    msgpack_unpacked_destroy(&c->res);
    msgpack_unpacker_destroy(&c->up);
    msgpack_sbuffer_destroy(&c->sb);
    c->live = 0;
}

/* Check one answer [1, msgid, nil, result] to a request of batch [base,
 * base+k): msgid in range and not seen yet; an acquire must be allowed with
 * a permit (kept in c->permits), a report must not be stale.  0 or -1. */
static int check_answer(struct rpc_conn *c, const msgpack_object *o,
                        uint32_t base, size_t k, int is_acquire,
                        unsigned char *seen)
{
    const msgpack_object *a, *v;
    uint64_t id;

    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
        return -1;
    a = o->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != 1 ||
        a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    id = a[1].via.u64;
    if (id < base || id - base >= k || seen[id - base])
        return -1;
    seen[id - base] = 1;
    if (a[2].type != MSGPACK_OBJECT_NIL || a[3].type != MSGPACK_OBJECT_MAP)
        return -1;
    if (is_acquire) {
        v = map_get(&a[3], "allow");
        if (!v || v->type != MSGPACK_OBJECT_BOOLEAN || !v->via.boolean)
            return -1;
        v = map_get(&a[3], "permit");
        if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || !v->via.u64)
            return -1;
        c->permits[id - base] = v->via.u64;
    } else {
        v = map_get(&a[3], "stale");
        if (!v || v->type != MSGPACK_OBJECT_BOOLEAN || v->via.boolean)
            return -1;
    }
    return 0;
}

/* Write k (<= BATCH) acquires, or reports of c->permits, in one send and
 * read back all k answers, in whatever order they come.  0 or -1. */
static int rpc_batch(struct rpc_conn *c, size_t k, int is_acquire)
{
    unsigned char seen[BATCH] = {0};
    uint32_t base = c->next_id;
    size_t i, got = 0;
    msgpack_unpack_return ur;
    ssize_t n;
    int rc = 0;

    msgpack_sbuffer_clear(&c->sb);
    for (i = 0; i < k; i++)
        rc |= is_acquire
                  ? pack_acquire(&c->pk, c->next_id++, KEY_PIPE)
                  : pack_report(&c->pk, c->next_id++, KEY_PIPE, c->permits[i]);
    if (rc != 0 || write_all(c->fd, c->sb.data, c->sb.size) < 0)
        return -1;
    while (got < k) {
        ur = msgpack_unpacker_next(&c->up, &c->res);
        if (ur == MSGPACK_UNPACK_SUCCESS) {
            if (check_answer(c, &c->res.data, base, k, is_acquire, seen) < 0)
                return -1;
            got++;
            continue;
        }
        if (ur != MSGPACK_UNPACK_CONTINUE) /* parse error, out of memory */
            return -1;
        if (!msgpack_unpacker_reserve_buffer(&c->up, IO_BUF_BYTES))
            return -1;
        do
            n = read(c->fd, msgpack_unpacker_buffer(&c->up),
                     msgpack_unpacker_buffer_capacity(&c->up));
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return -1;
        msgpack_unpacker_buffer_consumed(&c->up, (size_t)n);
    }
    return 0;
}

/* --- the measured loops -------------------------------------------------- */

static int run_acquire_report(resil_t *r, struct row *rw, size_t pairs)
{
    struct resil_report rep = {.key = KEY_SEQ,
                               .outcome = RESIL_SUCCESS,
                               .latency_ms = 1,
                               .retry_after_ms = -1};
    struct resil_report_result rr;
    struct resil_decision d;
    uint64_t t0, t1, t2, start = now_ns();
    size_t i;
    int rc;

    for (i = 0; i < pairs; i++) {
        t0 = now_ns();
        rc = resil_acquire(r, KEY_SEQ, NULL, &d);
        t1 = now_ns();
        if (rc != 0 || !d.allow || d.fallback || !d.permit) {
            fprintf(stderr, "bench: acquire: %s (allow %d, reason %s)\n",
                    resil_strerror(rc), d.allow, d.reason);
            return -1;
        }
        rep.permit = d.permit;
        rc = resil_report(r, &rep, &rr);
        t2 = now_ns();
        if (rc != 0 || rr.stale) {
            fprintf(stderr, "bench: report: %s (stale %d)\n",
                    resil_strerror(rc), rc == 0 ? rr.stale : 0);
            return -1;
        }
        record(rw, t1 - t0);
        record(rw, t2 - t1);
    }
    rw->timed_ns += now_ns() - start;
    rw->ops += pairs;
    return 0;
}

static int run_ping(resil_t *r, struct row *rw, size_t n)
{
    uint64_t t0, start = now_ns();
    size_t i;
    int rc;

    for (i = 0; i < n; i++) {
        t0 = now_ns();
        rc = resil_ping(r, 0, NULL, 0, NULL);
        record(rw, now_ns() - t0);
        if (rc != 0) {
            fprintf(stderr, "bench: ping: %s\n", resil_strerror(rc));
            return -1;
        }
    }
    rw->timed_ns += now_ns() - start;
    rw->ops += n;
    return 0;
}

/* Round trips of len bytes; back must hold len bytes. */
static int run_echo(int fd, const char *msg, char *back, size_t len,
                    struct row *rw, size_t n)
{
    uint64_t t0, start = now_ns();
    size_t i;

    for (i = 0; i < n; i++) {
        t0 = now_ns();
        if (write_all(fd, msg, len) < 0 || read_full(fd, back, len) < 0 ||
            memcmp(msg, back, len) != 0) {
            fprintf(stderr, "bench: echo round trip failed\n");
            return -1;
        }
        record(rw, now_ns() - t0);
    }
    rw->timed_ns += now_ns() - start;
    rw->ops += n;
    return 0;
}

static int run_pipe_acquire(struct rpc_conn *c, struct row *rw, size_t n)
{
    uint64_t t0;
    size_t k;

    while (n > 0) {
        k = n < BATCH ? n : BATCH;
        t0 = now_ns();
        if (rpc_batch(c, k, 1) < 0) {
            fprintf(stderr, "bench: pipelined acquire batch failed\n");
            return -1;
        }
        rw->timed_ns += now_ns() - t0;
        rw->ops += k;
        if (rpc_batch(c, k, 0) < 0) { /* untimed: return the permits */
            fprintf(stderr, "bench: pipelined report batch failed\n");
            return -1;
        }
        n -= k;
    }
    return 0;
}

/* batch holds BATCH messages of msg_len bytes each; back as many. */
static int run_pipe_echo(int fd, const char *batch, char *back, size_t msg_len,
                         struct row *rw, size_t n)
{
    uint64_t t0;
    size_t k;

    while (n > 0) {
        k = n < BATCH ? n : BATCH;
        t0 = now_ns();
        if (write_all(fd, batch, k * msg_len) < 0 ||
            read_full(fd, back, k * msg_len) < 0 ||
            memcmp(batch, back, k * msg_len) != 0) {
            fprintf(stderr, "bench: pipelined echo failed\n");
            return -1;
        }
        rw->timed_ns += now_ns() - t0;
        rw->ops += k;
        n -= k;
    }
    return 0;
}

/* --- report -------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[n], per_mille in 1..1000, in us. */
static double pct_us(const uint64_t *v, size_t n, unsigned per_mille)
{
    size_t rank = (n * per_mille + 999) / 1000;

    return (double)v[rank ? rank - 1 : 0] / 1000.0;
}

static void print_row(struct row *rw, double *p50_us)
{
    double ops_s =
        rw->timed_ns ? (double)rw->ops * 1e9 / (double)rw->timed_ns : 0.0;

    printf("%-28s %8llu %10.0f", rw->name, (unsigned long long)rw->ops, ops_s);
    if (!rw->samples_ns || rw->nsamples == 0) {
        printf(" %9s %9s %9s %9s\n", "-", "-", "-", "-");
        return;
    }
    qsort(rw->samples_ns, rw->nsamples, sizeof(uint64_t), cmp_u64);
    *p50_us = pct_us(rw->samples_ns, rw->nsamples, 500);
    printf(" %9.1f %9.1f %9.1f %9.1f\n", *p50_us,
           pct_us(rw->samples_ns, rw->nsamples, 990),
           pct_us(rw->samples_ns, rw->nsamples, 999),
           (double)rw->samples_ns[rw->nsamples - 1] / 1000.0);
}

/* Round i's share of total, in whole units where possible; the remainder
 * of total / unit goes to the last round. */
static size_t share(size_t total, size_t unit, unsigned i)
{
    size_t units = total / unit;
    size_t n = (units / ROUNDS + (i < units % ROUNDS)) * unit;

    return i == ROUNDS - 1 ? n + total % unit : n;
}

static long parse_n(int argc, char **argv)
{
    const char *s = argc > 1 ? argv[1] : getenv("BENCH_N");
    char *end;
    long n;

    if (!s || !*s)
        return DEFAULT_N;
    errno = 0;
    n = strtol(s, &end, 10);
    if (errno || *end || n < 1 || n > MAX_N)
        return -1;
    return n;
}

/*
 * The flood section (see the top): its own daemon, so VmHWM is the flood's.
 * 0, or -1 when something broke (daemon, flooders, the daemon's exit).
 */
static int run_flood(void)
{
    const char *env = getenv("BENCH_FLOOD_S");
    long secs = env && *env ? strtol(env, NULL, 10) : FLOOD_DEFAULT_S;
    struct test_daemon d = {.pid = 0};
    uint64_t *v = NULL;
    size_t n, failed, kept;
    long long connects;
    long rss0, hwm;
    double p50, p99;
    resil_t *r = NULL;
    struct flood f;
    int ok = 0, st;

    if (secs <= 0)
        return 0;
    if (secs > 3600 || !(v = malloc(FLOOD_SAMPLES * sizeof(*v))))
        return -1;
    if (daemon_start(&d, "{}") < 0) {
        fprintf(stderr, "bench: resild did not start\n");
        goto out;
    }
    if (!(r = resil_open(d.sock)))
        goto out;
    resil_set_deadline(r, DEADLINE_MS);
    n = flood_pings(r, flood_now_ns() + 200000000u, DEADLINE_MS, v,
                    FLOOD_SAMPLES, &failed); /* warm-up */
    rss0 = proc_status_kib(d.pid, "VmRSS:");
    if (failed || flood_start(&f, d.sock, FLOOD_PROCS, (int)secs * 1000) < 0)
        goto out;
    n = flood_pings(r, flood_now_ns() + (uint64_t)secs * 1000000000u,
                    DEADLINE_MS, v, FLOOD_SAMPLES, &failed);
    connects = flood_wait(&f);
    hwm = proc_status_kib(d.pid, "VmHWM:");
    kept = n < FLOOD_SAMPLES ? n : FLOOD_SAMPLES;
    printf("\nconnect/close flood: %s/resild, %d processes x %ld s, "
           "%lld connections (%.0f/s)\n",
           daemon_build_dir(), FLOOD_PROCS, secs, connects,
           (double)connects / (double)secs);
    p50 = flood_pct_ms(v, kept, 500); /* sorts v */
    p99 = flood_pct_ms(v, kept, 990);
    printf("ping during the flood: %zu pings, %zu failed, p50 %.3f ms, "
           "p99 %.3f ms, max %.3f ms\n",
           n, failed, p50, p99, kept ? (double)v[kept - 1] / 1e6 : 0.0);
    printf("daemon RSS: %ld KiB before the flood, peak (VmHWM) %ld KiB "
           "(%.1f MiB)\n",
           rss0, hwm, (double)hwm / 1024.0);
    ok = failed == 0 && connects >= 0;
out:
    resil_close(r);
    if (d.pid > 0 && (st = daemon_stop(&d)) != 0) {
        fprintf(stderr, "bench: resild exited with status %d\n", st);
        ok = 0;
    }
    if (!ok && d.dir[0])
        daemon_dump_log(&d);
    daemon_cleanup(&d);
    free(v);
    return ok ? 0 : -1;
}

enum { ROW_AR, ROW_PING, ROW_ECHO, ROW_PIPE, ROW_PIPE_ECHO, NROWS };

/*
 * `bench pairs SOCKET N`: N acquire + report pairs on bench.seq through
 * libresil against a daemon that is already running (tests/bench_redis.py
 * drives it under each Redis condition, tests/bench_table.py under
 * callgrind); prints each call's latency in
 * nanoseconds, one per line, for the caller to merge and rank.
 */
static int run_pairs(const char *sock, const char *count)
{
    struct row rw = {.name = "pairs"};
    long n = strtol(count, NULL, 10);
    resil_t *r;
    size_t i;
    int rc;

    if (n < 1 || n > MAX_N) {
        fprintf(stderr, "bench pairs: N must be 1..%d\n", MAX_N);
        return 2;
    }
    if (!(r = resil_open(sock))) {
        fprintf(stderr, "bench pairs: cannot open %s\n", sock);
        return 1;
    }
    /* A daemon under valgrind (tests/bench_table.py's callgrind section)
     * answers in milliseconds, past libresil's default deadline. */
    resil_set_deadline(r, DEADLINE_MS);
    rw.cap = 2 * (size_t)n;
    if (!(rw.samples_ns = malloc(rw.cap * sizeof(uint64_t)))) {
        resil_close(r);
        return 1;
    }
    rc = run_acquire_report(r, &rw, (size_t)n);
    for (i = 0; rc == 0 && i < rw.nsamples; i++)
        printf("%llu\n", (unsigned long long)rw.samples_ns[i]);
    free(rw.samples_ns);
    resil_close(r);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct row rows[NROWS] = {
        [ROW_AR] = {.name = "acquire+report (libresil)"},
        [ROW_PING] = {.name = "ping (libresil)"},
        [ROW_ECHO] = {.name = "echo reference round trip"},
        [ROW_PIPE] = {.name = "pipelined acquire x64"},
        [ROW_PIPE_ECHO] = {.name = "pipelined echo x64"},
    };
    struct row warm = {.name = "warm-up"};
    struct test_daemon d = {.pid = 0};
    struct rpc_conn rc_pipe = {.fd = -1};
    double p50[NROWS] = {0};
    char echo_path[sizeof(d.dir) + 16];
    char *msg = NULL, *back = NULL, *pipe_msgs = NULL;
    size_t msg_len, pipe_len, n, i;
    int echo_fd = -1, ok = 0, st;
    pid_t echo_pid = -1;
    resil_t *r = NULL;
    long nl = parse_n(argc, argv);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    unsigned round;

    if (argc > 1 && strcmp(argv[1], "flood") == 0)
        return run_flood() == 0 ? 0 : 1;
    if (argc == 4 && strcmp(argv[1], "pairs") == 0)
        return run_pairs(argv[2], argv[3]);
    if (nl < 0) {
        fprintf(stderr,
                "usage: bench [N]   (or BENCH_N=N; 1..%d, default "
                "%d)\n",
                MAX_N, DEFAULT_N);
        return 2;
    }
    n = (size_t)nl;

    /* Message sizes: libresil's acquire for the serial echo, the raw
     * pipelined acquire for the pipelined echo. */
    msg_len = libresil_acquire_bytes();
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (pack_acquire(&pk, 1000, KEY_PIPE) != 0)
        sb.size = 0;
    pipe_len = sb.size;
    msgpack_sbuffer_destroy(&sb);

    rows[ROW_AR].cap = 2 * n;
    rows[ROW_PING].cap = rows[ROW_ECHO].cap = n;
    warm.cap = 2 * WARMUP;
    for (i = 0; i < NROWS; i++)
        if (rows[i].cap &&
            !(rows[i].samples_ns = malloc(rows[i].cap * sizeof(uint64_t))))
            goto out;
    warm.samples_ns = malloc(warm.cap * sizeof(uint64_t));
    msg = malloc(msg_len ? msg_len : 1);
    back = malloc(BATCH * (msg_len > pipe_len ? msg_len : pipe_len) + 1);
    pipe_msgs = malloc(BATCH * pipe_len + 1);
    if (!msg_len || !pipe_len || !warm.samples_ns || !msg || !back ||
        !pipe_msgs)
        goto out;
    for (i = 0; i < msg_len; i++)
        msg[i] = (char)('a' + i % 26);
    for (i = 0; i < BATCH * pipe_len; i++)
        pipe_msgs[i] = (char)('A' + i % 26);

    if (daemon_start(&d, "{}") < 0) {
        fprintf(stderr, "bench: resild did not start\n");
        goto out;
    }
    snprintf(echo_path, sizeof(echo_path), "%s/echo.sock", d.dir);
    /* Fork the echo child before any connection exists, so it holds none. */
    if ((echo_pid = echo_start(echo_path)) < 0) {
        fprintf(stderr, "bench: echo server: %s\n", strerror(errno));
        goto out;
    }
    if (!(r = resil_open(d.sock)))
        goto out;
    resil_set_deadline(r, DEADLINE_MS);
    if (rpc_open(&rc_pipe, d.sock) < 0 ||
        (echo_fd = connect_unix(echo_path)) < 0) {
        fprintf(stderr, "bench: connect: %s\n", strerror(errno));
        goto out;
    }

    /* Warm-up: connections made, key created, caches and branch predictors
     * in their steady state.  Recorded into a scratch row and dropped. */
    if (run_acquire_report(r, &warm, WARMUP) < 0 ||
        run_ping(r, &warm, WARMUP) < 0 ||
        run_echo(echo_fd, msg, back, msg_len, &warm, WARMUP) < 0 ||
        run_pipe_acquire(&rc_pipe, &warm, WARMUP) < 0 ||
        run_pipe_echo(echo_fd, pipe_msgs, back, pipe_len, &warm, WARMUP) < 0)
        goto out;

    for (round = 0; round < ROUNDS; round++) {
        if (run_acquire_report(r, &rows[ROW_AR], share(n, 1, round)) < 0 ||
            run_ping(r, &rows[ROW_PING], share(n, 1, round)) < 0 ||
            run_echo(echo_fd, msg, back, msg_len, &rows[ROW_ECHO],
                     share(n, 1, round)) < 0 ||
            run_pipe_acquire(&rc_pipe, &rows[ROW_PIPE],
                             share(n, BATCH, round)) < 0 ||
            run_pipe_echo(echo_fd, pipe_msgs, back, pipe_len,
                          &rows[ROW_PIPE_ECHO], share(n, BATCH, round)) < 0)
            goto out;
    }
    ok = 1;

    printf("resild bench: N=%zu per row in %d interleaved rounds after %d "
           "warm-up ops; echo %zu B/msg (libresil's acquire), pipelined "
           "%zu B/msg\n",
           n, ROUNDS, WARMUP, msg_len, pipe_len);
    printf("acquire+report: N and ops/s count pairs, latencies each call; "
           "pipelined: only throughput\n");
    printf("%-28s %8s %10s %9s %9s %9s %9s\n", "row", "N", "ops/s", "p50 us",
           "p99 us", "p99.9 us", "max us");
    for (i = 0; i < NROWS; i++)
        print_row(&rows[i], &p50[i]);
    printf("daemon p50 / echo p50: acquire|report call %.1fx, ping %.1fx; "
           "pipelined acquire / echo throughput %.2fx\n",
           p50[ROW_AR] / p50[ROW_ECHO], p50[ROW_PING] / p50[ROW_ECHO],
           (double)rows[ROW_PIPE].ops * (double)rows[ROW_PIPE_ECHO].timed_ns /
               ((double)rows[ROW_PIPE].timed_ns *
                (double)rows[ROW_PIPE_ECHO].ops));

out:
    if (echo_fd >= 0)
        close(echo_fd);
    rpc_close(&rc_pipe);
    resil_close(r);
    echo_stop(echo_pid);
    /* A daemon that crashed or hung during the run is a failure even when
     * every answer looked right. */
    if (d.pid > 0 && (st = daemon_stop(&d)) != 0) {
        fprintf(stderr, "bench: resild exited with status %d\n", st);
        ok = 0;
    }
    if (!ok && d.dir[0])
        daemon_dump_log(&d);
    daemon_cleanup(&d);
    for (i = 0; i < NROWS; i++)
        free(rows[i].samples_ns);
    free(warm.samples_ns);
    free(msg);
    free(back);
    free(pipe_msgs);
    if (ok && run_flood() < 0)
        ok = 0;
    return ok ? 0 : 1;
}
