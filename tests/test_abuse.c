/*
 * test_abuse.c - the abuse test at CI size (issue 8, "Proofs"): a real
 * resild takes every kind of hostile input while a healthy libresil client
 * keeps deciding, and that client's worst latency is asserted.
 *
 * Phases, each its own TAP checks, in this order:
 *   malformed   20,000 malformed requests of every shape (bad msgpack,
 *               wrong types for every argument of every method, unknown
 *               methods and arguments, positional params, huge strings,
 *               nesting at and over the limit, frames over max_frame_bytes,
 *               huge declared counts, truncated frames, notifications, bin
 *               method names, random bytes) from 2 processes over many
 *               connections.  Each connection ends with shutdown(SHUT_WR)
 *               and must be answered and closed by the daemon.
 *   flood       2 processes connect and close in a loop for FLOOD_MS
 *               (defect 1).
 *   half-close  2 clients each hold a permit and a parked acquire on a
 *               bulkhead key, shut down their write side, then exit
 *               (defect 4): the slots and the queue must come back.  Each
 *               makes two ping round trips on other connections between
 *               its shutdown and its exit, so the daemon has seen the EOF
 *               while the peer was still there (a peer already gone at
 *               EOF is freed at once, and the defect would not show).
 *   pattern     acquires of valid 64-segment keys against the policy
 *               "*.*.*.*.*.*.*.*.x", and reports whose 32-segment
 *               error.class meets the same breaker record pattern
 *               (defect 2).  Last, because today it stalls the daemon for
 *               minutes.
 * After each phase the daemon must be alive and answer ping; at the end
 * status works, the bulkhead key admits again and SIGTERM exits 0.
 *
 * The healthy client is a separate process (forked before any abuse) that
 * loops acquire + report on its own key with a HEALTHY_DEADLINE_MS
 * deadline, 1 ms apart, and stores each call's latency in shared memory
 * under the phase that was current when the call began.  Per phase it
 * must see no fallback and a worst latency under LAT_BOUND_MS: generous
 * for ASan on a loaded 2-core machine, far below any stall.  p50/p99/max
 * are printed as TAP comments.  Each phase starts once the healthy client
 * is answered again, so one phase's aftermath is not blamed on the next.
 *
 * ABUSE_PHASES=flood,pattern (for example) runs only the phases named.
 */
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"
#include "integ_util.h"
#include "proto.h"
#include "resil.h"
#include "tap.h"

#define N_MALFORMED 20000        /* malformed requests in all */
#define MAL_WORKERS 2            /* processes sending them */
#define BATCH_MAX 40             /* requests on one connection at most */
#define CLOSE_WAIT_MS 10000      /* a connection's answers and close */
#define FLOODERS 2               /* connect/close processes */
#define FLOOD_MS 2000            /* how long they flood */
#define LAT_BOUND_MS 250         /* healthy client's worst call */
#define HEALTHY_DEADLINE_MS 1000 /* its deadline: a stall shows as this */
#define ANSWER_MS 2000           /* ping / status after a phase */
#define SLOT_BACK_MS 1000        /* half-closed clients' slots return */
#define PATTERN_KEYS 6           /* 64-segment keys acquired */
#define PATTERN_REPORTS 4        /* 32-segment error classes reported */
#define PATTERN_WAIT_MS 5000     /* the pattern client gives up after */
#define SAMPLES_MAX 65536        /* latency samples kept per phase */
#define SETTLE_CALLS 4           /* answered healthy calls before a phase */
#define SETTLE_MS 3000           /* how long a phase waits for them */

#define BH_KEY "abuse.bh"
#define CLS_KEY "abuse.cls"
#define STAR8 "*.*.*.*.*.*.*.*.x"
#define CONFIG                                                                 \
    "{\"policies\": {"                                                         \
    "\"" BH_KEY "\": {\"bulkhead\": {\"max_concurrent\": 2, \"queue\": 4}},"   \
    "\"" CLS_KEY "\": {\"breaker\": {\"record\": [\"" STAR8 "\"]}},"           \
    "\"" STAR8 "\": {\"limiter\": {\"rate\": 1000, \"per_ms\": 1000}}}}"

enum { PH_IDLE, PH_MALFORMED, PH_FLOOD, PH_HALFCLOSE, PH_PATTERN, PH_N };
static const char *const phase_names[PH_N] = {"idle", "malformed", "flood",
                                              "half-close", "pattern"};

/* Shared between this process and its children (MAP_SHARED). */
struct phase_stats {
    unsigned n;         /* samples stored (at most SAMPLES_MAX) */
    unsigned calls;     /* calls made, stored or not */
    unsigned fallbacks; /* calls libresil answered without the daemon */
    unsigned denied;    /* acquires the daemon denied */
    uint32_t lat_us[SAMPLES_MAX];
};
struct mal_stats {
    unsigned sent, conns, answers, results, hung, refused, cut;
};
struct shared {
    int phase;       /* PH_*: set by the parent, read by the healthy client */
    int stop;        /* 1: the healthy client ends */
    unsigned done;   /* healthy calls finished, all phases */
    unsigned streak; /* healthy calls answered since its last fallback */
    unsigned floods; /* connects made by the flooders */
    unsigned pattern_answered, pattern_max_ms;
    struct mal_stats mal[MAL_WORKERS];
    struct phase_stats ph[PH_N];
};
static struct shared *shm;
static struct test_daemon dmn;

static long long mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- raw connections --- */

static int raw_connect(int nonblock)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);

    if (fd < 0)
        return -1;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", dmn.sock);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && !nonblock) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Write all of p; 0, or -1 when the daemon closed the connection. */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read responses from fd until EOF or timeout_ms; count them (and those
 * without an error) into *answers / *results, stopping early once `want`
 * answers came (want 0: read to EOF).  1 at EOF, 0 when `want` answers
 * came, -1 on timeout. */
static int read_answers(int fd, int timeout_ms, unsigned want,
                        unsigned *answers, unsigned *results)
{
    msgpack_unpacker u;
    msgpack_unpacked r;
    long long end = mono_ms() + timeout_ms;
    int rc = -1;

    msgpack_unpacker_init(&u, 65536);
    msgpack_unpacked_init(&r);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long long left = end - mono_ms();
        ssize_t n;

        if (want && *answers >= want) {
            rc = 0;
            break;
        }
        if (left <= 0 || poll(&p, 1, (int)left) == 0)
            break;
        if (!msgpack_unpacker_reserve_buffer(&u, 65536))
            break;
        n = read(fd, msgpack_unpacker_buffer(&u), 65536);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = 1;
            break;
        }
        msgpack_unpacker_buffer_consumed(&u, (size_t)n);
        while (msgpack_unpacker_next(&u, &r) == MSGPACK_UNPACK_SUCCESS) {
            const msgpack_object *o = &r.data;
            if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4) {
                (*answers)++;
                *results += o->via.array.ptr[2].type == MSGPACK_OBJECT_NIL;
            }
        }
    }
    msgpack_unpacked_destroy(&r);
    msgpack_unpacker_destroy(&u);
    return rc;
}

/* One request over a fresh raw connection: 0 when answered in timeout_ms. */
static int raw_call(const msgpack_sbuffer *req, int timeout_ms)
{
    unsigned answers = 0, results = 0;
    int fd = raw_connect(0), rc;

    if (fd < 0)
        return -1;
    rc = write_all(fd, req->data, req->size) < 0
             ? -1
             : read_answers(fd, timeout_ms, 1, &answers, &results);
    close(fd);
    return rc == 0 ? 0 : -1;
}

/* --- the healthy client --- */

static void record(int phase, long long us, int fallback, int denied)
{
    struct phase_stats *s = &shm->ph[phase];

    if (s->n < SAMPLES_MAX)
        s->lat_us[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    s->calls++;
    s->fallbacks += fallback;
    s->denied += denied;
    if (fallback)
        __atomic_store_n(&shm->streak, 0, __ATOMIC_SEQ_CST);
    else
        __atomic_add_fetch(&shm->streak, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&shm->done, 1, __ATOMIC_SEQ_CST);
}

static void healthy_client(void)
{
    resil_t *r = integ_open(dmn.sock, HEALTHY_DEADLINE_MS);

    if (!r)
        _exit(1);
    while (!__atomic_load_n(&shm->stop, __ATOMIC_SEQ_CST)) {
        struct resil_decision dec;
        struct resil_report rep = {.key = "healthy.k", .latency_ms = 1};
        int phase = __atomic_load_n(&shm->phase, __ATOMIC_SEQ_CST);
        long long t0 = mono_us();
        int rc = acquire(r, "healthy.k", &dec);

        record(phase, mono_us() - t0, rc != 0, rc == 0 && !dec.allow);
        if (rc == 0 && dec.allow) {
            rep.permit = dec.permit;
            rep.outcome = RESIL_SUCCESS;
            phase = __atomic_load_n(&shm->phase, __ATOMIC_SEQ_CST);
            t0 = mono_us();
            rc = resil_report(r, &rep, NULL);
            record(phase, mono_us() - t0, rc != 0, 0);
        }
        sleep_ms(1);
    }
    resil_close(r);
    _exit(0);
}

/* Wait until the healthy client finished `calls` more calls (at most
 * timeout_ms).  0 or -1. */
static int healthy_wait(unsigned calls, int timeout_ms)
{
    unsigned start = __atomic_load_n(&shm->done, __ATOMIC_SEQ_CST);
    long long end = mono_ms() + timeout_ms;

    while (__atomic_load_n(&shm->done, __ATOMIC_SEQ_CST) - start < calls) {
        if (mono_ms() > end)
            return -1;
        sleep_ms(1);
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Start a phase once the healthy client is answered again (SETTLE_CALLS in
 * a row), so the aftermath of one phase (a client back-off, say) is not
 * blamed on the next. */
static void phase_begin(int phase)
{
    long long end = mono_ms() + SETTLE_MS;

    while (__atomic_load_n(&shm->streak, __ATOMIC_SEQ_CST) < SETTLE_CALLS &&
           mono_ms() < end)
        sleep_ms(5);
    if (__atomic_load_n(&shm->streak, __ATOMIC_SEQ_CST) < SETTLE_CALLS)
        DIAG("%s: the healthy client was not answered before it began",
             phase_names[phase]);
    __atomic_store_n(&shm->phase, phase, __ATOMIC_SEQ_CST);
}

/* End the phase: let the call in flight finish (it belongs to the phase),
 * then check the healthy client's latency and fallbacks during it. */
static void phase_end(int phase)
{
    struct phase_stats *s = &shm->ph[phase];
    uint32_t p50 = 0, p99 = 0, max = 0;
    long long end = mono_ms() + 3 * HEALTHY_DEADLINE_MS;

    /* A short phase still gets a few samples. */
    while (__atomic_load_n(&s->calls, __ATOMIC_SEQ_CST) < 4 && mono_ms() < end)
        sleep_ms(1);
    __atomic_store_n(&shm->phase, PH_IDLE, __ATOMIC_SEQ_CST);
    healthy_wait(2, 3 * HEALTHY_DEADLINE_MS);
    if (s->n) {
        qsort(s->lat_us, s->n, sizeof(s->lat_us[0]), cmp_u32);
        p50 = s->lat_us[s->n / 2];
        p99 = s->lat_us[(size_t)s->n * 99 / 100];
        max = s->lat_us[s->n - 1];
    }
    DIAG("%s: healthy client %u calls, p50 %.3f ms, p99 %.3f ms, "
         "max %.3f ms, %u fallbacks, %u denied",
         phase_names[phase], s->calls, p50 / 1000.0, p99 / 1000.0, max / 1000.0,
         s->fallbacks, s->denied);
    OK(s->n > 0 && max < LAT_BOUND_MS * 1000u && !s->fallbacks && !s->denied,
       "%s: healthy client decided throughout, worst call under %d ms, "
       "no fallback",
       phase_names[phase], LAT_BOUND_MS);
}

/* The daemon is alive and answers ping within ANSWER_MS.  Each try uses a
 * fresh handle (no client back-off): right after a flood the daemon may
 * still be refusing connections for a moment. */
static void check_alive(const char *after)
{
    long long t0 = mono_ms(), left;
    int rc = RESIL_ECONN, tries = 0;

    while ((left = t0 + ANSWER_MS - mono_ms()) > 0) {
        resil_t *r = integ_open(dmn.sock, (int)left);

        tries++;
        rc = r ? resil_ping(r, (int)left, NULL, 0, NULL) : RESIL_ENOMEM;
        if (r)
            resil_close(r);
        if (rc == 0 || kill(dmn.pid, 0) != 0)
            break;
        sleep_ms(20);
    }
    OK(kill(dmn.pid, 0) == 0 && rc == 0,
       "after %s: daemon alive and answers ping within %d ms", after,
       ANSWER_MS);
    if (rc != 0 || tries > 1)
        DIAG("ping: %s after %lld ms, %d tries", rc ? resil_strerror(rc) : "ok",
             mono_ms() - t0, tries);
}

static long daemon_rss_kib(void)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)dmn.pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* --- malformed requests --- */

struct rng {
    uint64_t s;
};

static uint32_t rnd(struct rng *g)
{
    g->s ^= g->s << 13;
    g->s ^= g->s >> 7;
    g->s ^= g->s << 17;
    return (uint32_t)(g->s >> 16);
}

static uint32_t below(struct rng *g, uint32_t n)
{
    return rnd(g) % n;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    proto_pack_cstr(pk, s);
}

static void pack_fill(msgpack_packer *pk, char c, size_t n)
{
    static char buf[70000];

    memset(buf, c, n);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, buf, n);
}

static void pack_nest(msgpack_packer *pk, int depth)
{
    for (int i = 0; i < depth; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

/* A value of the wrong type (or range) for any argument. */
#define BAD_KINDS 17
static void pack_bad(msgpack_packer *pk, struct rng *g, int kind)
{
    static const char *const bad_strs[] = {"",  "a b", "\xff\xfe", "a/b",
                                           "*", "-1",  "open!",    "\x01\x02"};

    switch (kind) {
    case 0:
        msgpack_pack_int64(pk, -1);
        break;
    case 1:
        msgpack_pack_uint64(pk, 0);
        break;
    case 2:
        msgpack_pack_uint64(pk, UINT64_MAX);
        break;
    case 3:
        msgpack_pack_uint64(pk, 1ULL << 32);
        break;
    case 4:
        msgpack_pack_double(pk, 1.5);
        break;
    case 5:
        msgpack_pack_true(pk);
        break;
    case 6:
        msgpack_pack_false(pk);
        break;
    case 7:
        pack_str(pk, bad_strs[below(g, 8)]);
        break;
    case 8:
        pack_fill(pk, 'x', 129 + below(g, 300));
        break;
    case 9:
        msgpack_pack_bin(pk, 4);
        msgpack_pack_bin_body(pk, "ping", 4);
        break;
    case 10:
        msgpack_pack_array(pk, 0);
        break;
    case 11:
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 1);
        pack_str(pk, "a");
        break;
    case 12:
        msgpack_pack_map(pk, 0);
        break;
    case 13:
        msgpack_pack_map(pk, 1);
        pack_str(pk, "a");
        msgpack_pack_int(pk, 1);
        break;
    case 14:
        msgpack_pack_ext(pk, 2, 1);
        msgpack_pack_ext_body(pk, "xy", 2);
        break;
    case 15:
        msgpack_pack_int64(pk, INT64_MIN);
        break;
    default:
        pack_nest(pk, 4);
        break; /* request depth 8: at the limit */
    }
}

/* Every method and its arguments, with a valid value for each. */
enum vt { V_STR, V_UINT, V_BOOL, V_ERR, V_LIMIT, V_TOPICS, V_CTX };
struct arg {
    const char *name;
    enum vt t;
    const char *s;
    uint64_t u;
};
struct method {
    const char *name;
    struct arg args[10];
};
static const struct method methods[] = {
    {"ping", {{0}}},
    {"acquire",
     {{"key", V_STR, "abuse.k", 0},
      {"cost", V_UINT, 0, 1},
      {"wait_ms", V_UINT, 0, 0},
      {"priority", V_STR, "normal", 0}}},
    {"report",
     {{"key", V_STR, "abuse.k", 0},
      {"permit", V_UINT, 0, 1},
      {"outcome", V_STR, "failure", 0},
      {"latency_ms", V_UINT, 0, 5},
      {"error", V_ERR, 0, 0},
      {"limit", V_LIMIT, 0, 0},
      {"attempt", V_UINT, 0, 1},
      {"idempotent", V_BOOL, 0, 1},
      {"correlation_id", V_STR, "c-1", 0},
      {"context", V_CTX, 0, 0}}},
    {"cancel", {{"msgid", V_UINT, 0, 1}}},
    {"heartbeat",
     {{"key", V_STR, "abuse.hb", 0}, {"latency_ms", V_UINT, 0, 3}}},
    {"status",
     {{"key", V_STR, "abuse.k", 0},
      {"prefix", V_STR, "abuse", 0},
      {"limit", V_UINT, 0, 10},
      {"after", V_STR, "abuse", 0}}},
    {"force",
     {{"key", V_STR, "abuse.f", 0},
      {"state", V_STR, "open", 0},
      {"reason", V_STR, "maintenance", 0},
      {"ttl_ms", V_UINT, 0, 50}}},
    {"reset", {{"key", V_STR, "abuse.f", 0}}},
    {"errors",
     {{"prefix", V_STR, "abuse", 0},
      {"window_s", V_UINT, 0, 60},
      {"min_severity", V_STR, "low", 0},
      {"top", V_UINT, 0, 3}}},
    {"health", {{0}}},
    {"subscribe", {{"topics", V_TOPICS, 0, 0}}},
    {"unsubscribe", {{"topics", V_TOPICS, 0, 0}}},
    {"reload", {{0}}},
    {"metrics", {{0}}},
};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

static int nargs(const struct method *m)
{
    int n = 0;

    while (n < 10 && m->args[n].name)
        n++;
    return n;
}

/* Nested maps: bad_sub >= 0 puts a bad value in that field. */
static void pack_err_map(msgpack_packer *pk, struct rng *g, int bad_sub)
{
    static const char *const f[] = {"class", "message", "severity", "transient",
                                    "retry_after_ms"};

    msgpack_pack_map(pk, 5);
    for (int i = 0; i < 5; i++) {
        pack_str(pk, f[i]);
        if (i == bad_sub)
            pack_bad(pk, g, (int)below(g, BAD_KINDS));
        else if (i == 0)
            pack_str(pk, "network.reset");
        else if (i == 1)
            pack_str(pk, "ECONNRESET");
        else if (i == 2)
            pack_str(pk, "high");
        else if (i == 3)
            msgpack_pack_true(pk);
        else
            msgpack_pack_uint32(pk, 5);
    }
}

static void pack_valid(msgpack_packer *pk, struct rng *g, const struct arg *a,
                       int bad_sub)
{
    switch (a->t) {
    case V_STR:
        pack_str(pk, a->s);
        break;
    case V_UINT:
        msgpack_pack_uint64(pk, a->u);
        break;
    case V_BOOL:
        a->u ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case V_ERR:
        pack_err_map(pk, g, bad_sub);
        break;
    case V_LIMIT:
        msgpack_pack_map(pk, 2);
        pack_str(pk, "remaining");
        if (bad_sub == 0)
            pack_bad(pk, g, (int)below(g, BAD_KINDS));
        else
            msgpack_pack_uint32(pk, 3);
        pack_str(pk, "reset_ms");
        if (bad_sub == 1)
            pack_bad(pk, g, (int)below(g, BAD_KINDS));
        else
            msgpack_pack_uint32(pk, 100);
        break;
    case V_TOPICS:
        msgpack_pack_array(pk, 1);
        pack_str(pk, bad_sub >= 0 ? "nonsense" : "state");
        break;
    case V_CTX:
        msgpack_pack_map(pk, 1);
        pack_str(pk, "venue");
        pack_str(pk, "x");
        break;
    }
}

static void pack_head(msgpack_packer *pk, uint32_t msgid, const char *method)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, msgid);
    pack_str(pk, method);
}

/* The method's valid arguments; arg `bad` (or its sub-field bad_sub) gets a
 * wrong value, `extra` adds an unknown argument, `skip` drops one. */
static void pack_args(msgpack_packer *pk, struct rng *g, const struct method *m,
                      int bad, int bad_sub, int kind, const char *extra,
                      int skip)
{
    int n = nargs(m);

    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, (size_t)(n - (skip >= 0 && skip < n) + !!extra));
    for (int i = 0; i < n; i++) {
        if (i == skip)
            continue;
        pack_str(pk, m->args[i].name);
        if (i == bad && bad_sub < 0)
            pack_bad(pk, g, kind);
        else
            pack_valid(pk, g, &m->args[i], i == bad ? bad_sub : -1);
    }
    if (extra) {
        pack_str(pk, extra);
        msgpack_pack_uint32(pk, 10);
    }
}

/*
 * One request the daemon answers with an error and stays connected.  seq
 * walks every (method, argument, bad kind) in turn so each argument of
 * each method gets every wrong type.
 */
static void gen_answered(msgpack_packer *pk, struct rng *g, unsigned seq,
                         uint32_t msgid)
{
    unsigned what = below(g, 100);

    if (what < 60) { /* a wrong value for one argument */
        const struct method *m = &methods[seq % N_METHODS];
        int n = nargs(m);
        int bad = n ? (int)((seq / N_METHODS) % (unsigned)n) : -1;
        int sub = -1;

        if (bad >= 0 && (m->args[bad].t == V_ERR || m->args[bad].t == V_LIMIT))
            sub = (int)below(g, m->args[bad].t == V_ERR ? 5 : 2);
        if (bad >= 0 && m->args[bad].t == V_TOPICS)
            sub = 0;
        pack_head(pk, msgid, m->name);
        if (n == 0) { /* no arguments at all: give it one */
            pack_args(pk, g, m, -1, -1, 0, "bogus", -1);
            return;
        }
        pack_args(pk, g, m, bad, sub, (int)((seq / 7) % BAD_KINDS), NULL, -1);
    } else if (what < 68) { /* unknown method */
        static const char *const names[] = {
            "pong", "ACQUIRE",    "acquire ", "report2", "nvim_get_api_info",
            "",     "status\x01", "x"};
        pack_head(pk, msgid, names[below(g, 8)]);
        msgpack_pack_array(pk, 0);
    } else if (what < 76) { /* positional params */
        pack_head(pk, msgid, methods[below(g, N_METHODS)].name);
        msgpack_pack_array(pk, 2);
        pack_str(pk, "abuse.k");
        msgpack_pack_uint32(pk, 1);
    } else if (what < 84) { /* an unknown argument (a typo) */
        static const char *const typos[] = {"costs", "keys",     "Key",
                                            "wait",  "outcomes", "ttl"};
        const struct method *m = &methods[below(g, N_METHODS)];
        pack_head(pk, msgid, m->name);
        pack_args(pk, g, m, -1, -1, 0, typos[below(g, 6)], -1);
    } else if (what < 90) { /* a required argument missing */
        const struct method *m = &methods[1 + below(g, 7)];
        pack_head(pk, msgid, m->name);
        pack_args(pk, g, m, -1, -1, 0, NULL, 0);
    } else if (what < 94) { /* a huge string argument */
        pack_head(pk, msgid, below(g, 2) ? "acquire" : "report");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pack_str(pk, "key");
        pack_fill(pk, 'k', 1000 + below(g, 59000));
        pack_str(pk, "outcome");
        pack_str(pk, "success");
    } else if (what < 97) { /* nesting exactly at the limit */
        pack_head(pk, msgid, "acquire");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 1);
        pack_str(pk, "key");
        pack_nest(pk, 5);
    } else { /* a good ping in the middle of it all */
        pack_head(pk, msgid, "ping");
        msgpack_pack_array(pk, 0);
    }
}

/* Bytes after which the daemon closes the connection (or may, today:
 * notifications and bin method names). */
static void gen_closer(msgpack_sbuffer *sb, msgpack_packer *pk, struct rng *g,
                       uint32_t msgid)
{
#define SHAPE(x)                                                               \
    {                                                                          \
        x, sizeof(x) - 1                                                       \
    }
    static const struct {
        const char *p;
        size_t n;
    } shapes[] = {
        SHAPE("\x94\x00\x01\xa4ping\x91\xc1"),             /* 0xc1 inside */
        SHAPE("\xdd\xff\xff\xff\xff"),                     /* array32 of 4G */
        SHAPE("\x94\x00\x01\xa4ping\xdf\xff\xff\xff\xff"), /* map32 */
        SHAPE("\x94\x00\x01\xdb\x7f\xff\xff\xff"),         /* str32 of 2 GB */
        SHAPE("\x94\x00\x01\xc6\xff\xff\xff\xff"),         /* bin32 of 4 GB */
        SHAPE("\x94\x00\x01\xc9\xff\xff\xff\xff\x01"),     /* ext32 of 4 GB */
        SHAPE("\xc1"),                                     /* 0xc1 alone */
        SHAPE("\x93\x00\x01\xa4ping"),                     /* 3 elements */
        SHAPE("\x95\x00\x01\xa4ping\x90\x00"),             /* 5 elements */
        SHAPE("\x94\x01\x01\xc0\xc0"),                     /* a response */
        SHAPE("\x94\x03\x01\xa4ping\x90"),                 /* type 3 */
        SHAPE("\x94\x00\xff\xa4ping\x90"),                 /* negative msgid */
        SHAPE("\x94\x00\xa1\x31\xa4ping\x90"),             /* str msgid */
        SHAPE("\x94\x00\xcf\x00\x00\x00\x01\x00\x00\x00\x00\xa4ping"
              "\x90"),                     /* msgid 2^32 */
        SHAPE("\x94\x00\x01\x05\x90"),     /* int method */
        SHAPE("\x94\x00\x01\xa4ping\x80"), /* params a map */
        SHAPE("\x94\x00\x01\xa4ping\xc0"), /* params nil */
        SHAPE("\x81\xa3key\xa1k"),         /* a map */
        SHAPE("\x2a"),                     /* an int */
    };
#undef SHAPE
    unsigned what = below(g, 100);

    if (what < 20) { /* random bytes */
        size_t n = 1 + below(g, 256);
        char buf[256];
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)rnd(g);
        msgpack_sbuffer_write(sb, buf, n);
    } else if (what < 45) { /* a fixed bad shape */
        unsigned i = below(g, sizeof(shapes) / sizeof(shapes[0]));
        msgpack_sbuffer_write(sb, shapes[i].p, shapes[i].n);
    } else if (what < 53) { /* nesting over the limit */
        pack_head(pk, msgid, "acquire");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 1);
        pack_str(pk, "key");
        pack_nest(pk, 6 + below(g, 200));
    } else if (what < 58) { /* a real frame over max_frame_bytes */
        pack_head(pk, msgid, "report");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 1);
        pack_str(pk, "key");
        pack_fill(pk, 'k', 66000 + below(g, 3000));
    } else if (what < 75) { /* a good request cut short */
        msgpack_sbuffer full;
        msgpack_packer fp;
        msgpack_sbuffer_init(&full);
        msgpack_packer_init(&fp, &full, msgpack_sbuffer_write);
        gen_answered(&fp, g, rnd(g), msgid);
        msgpack_sbuffer_write(sb, full.data, below(g, (uint32_t)full.size));
        msgpack_sbuffer_destroy(&full);
    } else if (what < 85) { /* bin method name */
        const struct method *m = &methods[below(g, N_METHODS)];
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, 0);
        msgpack_pack_uint32(pk, msgid);
        msgpack_pack_bin(pk, strlen(m->name));
        msgpack_pack_bin_body(pk, m->name, strlen(m->name));
        msgpack_pack_array(pk, 0);
    } else { /* a notification, often with bad params */
        const struct method *m = &methods[below(g, N_METHODS)];
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint32(pk, 2);
        if (below(g, 4) == 0)
            pack_str(pk, "no_such_notification");
        else
            pack_str(pk, m->name);
        if (below(g, 3) == 0) {
            pack_bad(pk, g, (int)below(g, BAD_KINDS));
        } else {
            msgpack_pack_array(pk, 1);
            msgpack_pack_map(pk, 1);
            pack_str(pk, "key");
            pack_bad(pk, g, (int)below(g, BAD_KINDS));
        }
    }
}

static void malformed_worker(int w)
{
    struct mal_stats *st = &shm->mal[w];
    struct rng g = {0x9e3779b97f4a7c15ULL * (uint64_t)(w + 1)};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    unsigned quota = N_MALFORMED / MAL_WORKERS, seq = (unsigned)w;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    while (st->sent < quota) {
        unsigned n = 0, answers = 0, results = 0;
        int fd, closer = 0;

        msgpack_sbuffer_clear(&sb);
        while (n < BATCH_MAX && st->sent + n < quota) {
            n++;
            if (below(&g, 100) < 6) { /* ~6 %: ends the connection */
                gen_closer(&sb, &pk, &g, n);
                closer = 1;
                break;
            }
            gen_answered(&pk, &g, seq, n);
            seq += MAL_WORKERS;
        }
        (void)closer;
        if ((fd = raw_connect(0)) < 0) {
            st->refused++;
            sleep_ms(5);
            continue;
        }
        st->conns++;
        if (write_all(fd, sb.data, sb.size) < 0)
            st->cut++; /* closed before it read all: a closer did it */
        shutdown(fd, SHUT_WR);
        if (read_answers(fd, CLOSE_WAIT_MS, 0, &answers, &results) < 0)
            st->hung++;
        close(fd);
        st->sent += n;
        st->answers += answers;
        st->results += results;
    }
    msgpack_sbuffer_destroy(&sb);
    _exit(0);
}

static void phase_malformed(void)
{
    pid_t pids[MAL_WORKERS];
    struct mal_stats t = {0};
    long long t0 = mono_ms();
    int w;

    phase_begin(PH_MALFORMED);
    for (w = 0; w < MAL_WORKERS; w++)
        if ((pids[w] = fork()) == 0)
            malformed_worker(w);
    for (w = 0; w < MAL_WORKERS; w++)
        if (pids[w] > 0)
            waitpid(pids[w], NULL, 0);
    phase_end(PH_MALFORMED);
    for (w = 0; w < MAL_WORKERS; w++) {
        t.sent += shm->mal[w].sent;
        t.conns += shm->mal[w].conns;
        t.answers += shm->mal[w].answers;
        t.results += shm->mal[w].results;
        t.hung += shm->mal[w].hung;
        t.refused += shm->mal[w].refused;
        t.cut += shm->mal[w].cut;
    }
    DIAG("malformed: %u requests over %u connections in %lld ms: %u "
         "answers (%u without error), %u cut short by a close, %u "
         "connects refused, %u not closed in %d ms",
         t.sent, t.conns, mono_ms() - t0, t.answers, t.results, t.cut,
         t.refused, t.hung, CLOSE_WAIT_MS);
    OK(t.sent >= N_MALFORMED && !t.hung && !t.refused,
       "malformed: %d requests sent; every connection answered and closed",
       N_MALFORMED);
    check_alive("malformed requests");
}

/* --- connect/close flood --- */

static void flooder(void)
{
    long long end = mono_ms() + FLOOD_MS;
    unsigned n = 0;

    while (mono_ms() < end) {
        int fd = raw_connect(1);
        if (fd >= 0) {
            close(fd);
            n++;
        }
    }
    __atomic_add_fetch(&shm->floods, n, __ATOMIC_SEQ_CST);
    _exit(0);
}

static void phase_flood(void)
{
    pid_t pids[FLOODERS];
    long rss0 = daemon_rss_kib(), rss1;
    int i;

    phase_begin(PH_FLOOD);
    for (i = 0; i < FLOODERS; i++)
        if ((pids[i] = fork()) == 0)
            flooder();
    for (i = 0; i < FLOODERS; i++)
        if (pids[i] > 0)
            waitpid(pids[i], NULL, 0);
    rss1 = daemon_rss_kib();
    phase_end(PH_FLOOD);
    DIAG("flood: %u connects by %d processes in %d ms; daemon RSS %ld -> "
         "%ld KiB",
         shm->floods, FLOODERS, FLOOD_MS, rss0, rss1);
    check_alive("connect/close flood");
}

/* --- half-close, then exit --- */

/* A client holding one permit on BH_KEY and one parked acquire.  Steps on
 * commands from the parent (cmd pipe), acks on ack: 'a' acquire (ack 'A'
 * allowed / 'D'), 'p' park (ack 'P'), 'x' shut down writing, make sure the
 * daemon has seen it (two round trips on other connections), exit. */
static void halfclose_client(int cmd, int ack)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    unsigned answers = 0, results = 0;
    char c;
    int fd = raw_connect(0);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    while (fd >= 0 && read(cmd, &c, 1) == 1) {
        msgpack_sbuffer_clear(&sb);
        if (c == 'a' || c == 'p') {
            pack_head(&pk, c == 'a' ? 1 : 2, "acquire");
            msgpack_pack_array(&pk, 1);
            msgpack_pack_map(&pk, c == 'p' ? 2 : 1);
            pack_str(&pk, "key");
            pack_str(&pk, BH_KEY);
            if (c == 'p') {
                pack_str(&pk, "wait_ms");
                msgpack_pack_uint32(&pk, 60000);
            }
            if (write_all(fd, sb.data, sb.size) < 0)
                break;
            if (c == 'a')
                read_answers(fd, ANSWER_MS, 1, &answers, &results);
            c = c == 'p' ? 'P' : results ? 'A' : 'D';
        } else if (c == 'x') {
            shutdown(fd, SHUT_WR);
            pack_head(&pk, 3, "ping");
            msgpack_pack_array(&pk, 0);
            raw_call(&sb, ANSWER_MS);
            raw_call(&sb, ANSWER_MS);
            _exit(0); /* fd closes with the process */
        }
        if (write(ack, &c, 1) != 1)
            break;
    }
    _exit(1);
}

/* BH_KEY's bulkhead in_use and queued (-1 when unknown). */
static void bh_state(resil_t *r, long long *in_use, long long *queued)
{
    struct kstat s;

    *in_use = *queued = -1;
    if (integ_get_status(r, BH_KEY, ANSWER_MS, &s) == 0 && s.has_bulkhead) {
        *in_use = s.bh_in_use;
        *queued = s.bh_queued;
    }
}

static void phase_halfclose(void)
{
    enum { CLIENTS = 2 };
    pid_t pids[CLIENTS] = {0};
    int cmd[CLIENTS][2] = {{-1, -1}, {-1, -1}}, ack[2] = {-1, -1};
    resil_t *r = integ_open(dmn.sock, ANSWER_MS);
    long long in_use = -1, queued = -1, t0, waited = -1, end;
    char c, acks[2 * CLIENTS + 1] = "";
    struct resil_decision dec;
    int i, ok = 1;

    phase_begin(PH_HALFCLOSE);
    if (pipe(ack) < 0)
        ok = 0;
    for (i = 0; ok && i < CLIENTS; i++) {
        if (pipe(cmd[i]) < 0 || (pids[i] = fork()) < 0) {
            ok = 0;
            break;
        }
        if (pids[i] == 0) {
            for (int j = 0; j <= i; j++) /* EOF when the parent closes */
                close(cmd[j][1]);
            close(ack[0]);
            halfclose_client(cmd[i][0], ack[1]);
        }
        close(cmd[i][0]);
    }
    if (ack[1] >= 0) /* EOF on ack[0] if every client died */
        close(ack[1]);
    /* Each takes a permit (the bulkhead is then full), then each parks. */
    for (int step = 0; ok && step < 2; step++)
        for (i = 0; i < CLIENTS; i++) {
            if (write(cmd[i][1], step ? "p" : "a", 1) != 1 ||
                read(ack[0], &c, 1) != 1) {
                ok = 0;
                break;
            }
            acks[strlen(acks)] = c;
        }
    end = mono_ms() + ANSWER_MS;
    for (;;) { /* the parked acquires reach the daemon */
        bh_state(r, &in_use, &queued);
        if (!ok || queued >= CLIENTS || mono_ms() > end)
            break;
        sleep_ms(5);
    }
    OK(ok && !strcmp(acks, "AAPP") && in_use == 2 && queued == CLIENTS,
       "half-close: %d clients hold the %s bulkhead and park behind it",
       CLIENTS, BH_KEY);
    DIAG("half-close: acks %s, in_use %lld, queued %lld", acks, in_use, queued);
    /* Now they shut down writing and exit; what they held must return. */
    for (i = 0; i < CLIENTS; i++)
        if (ok && write(cmd[i][1], "x", 1) != 1)
            ok = 0;
    for (i = 0; i < CLIENTS; i++) {
        if (cmd[i][1] >= 0)
            close(cmd[i][1]);
        if (pids[i] > 0)
            waitpid(pids[i], NULL, 0);
    }
    if (ack[0] >= 0)
        close(ack[0]);
    t0 = mono_ms();
    end = t0 + SLOT_BACK_MS;
    for (;;) {
        bh_state(r, &in_use, &queued);
        if (in_use == 0 && queued == 0) {
            waited = mono_ms() - t0;
            break;
        }
        if (mono_ms() > end)
            break;
        sleep_ms(5);
    }
    OK(waited >= 0,
       "half-close-then-exit: permits and parked requests return within "
       "%d ms",
       SLOT_BACK_MS);
    DIAG("half-close: returned after %lld ms (-1: not within %d ms); "
         "in_use %lld, queued %lld",
         waited, SLOT_BACK_MS, in_use, queued);
    OK(acquire(r, BH_KEY, &dec) == 0 && dec.allow,
       "half-close: a new acquire on %s is allowed", BH_KEY);
    if (dec.allow) {
        struct resil_report rep = {
            .key = BH_KEY, .permit = dec.permit, .outcome = RESIL_IGNORE};
        resil_report(r, &rep, NULL);
    } else {
        DIAG("acquire %s: reason %s, fallback %d", BH_KEY, dec.reason,
             dec.fallback);
    }
    resil_close(r);
    phase_end(PH_HALFCLOSE);
    check_alive("half-close-then-exit");
}

/* --- pattern worst case --- */

static void pattern_client(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char key[160], cls[80];
    int i, j;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (i = 0; i < PATTERN_KEYS + PATTERN_REPORTS; i++) {
        long long t0, ms;

        msgpack_sbuffer_clear(&sb);
        if (i < PATTERN_KEYS) { /* 64 segments, 127 bytes, never "x" */
            for (j = 0; j < 64; j++) {
                key[2 * j] = (char)('a' + (j == 0 ? i : 0));
                key[2 * j + 1] = '.';
            }
            key[127] = 0;
            pack_head(&pk, 1, "acquire");
            msgpack_pack_array(&pk, 1);
            msgpack_pack_map(&pk, 1);
            pack_str(&pk, "key");
            pack_str(&pk, key);
        } else { /* a 32-segment class, 63 bytes, against the record list */
            for (j = 0; j < 32; j++) {
                cls[2 * j] = (char)('a' + (j == 0 ? i : 0));
                cls[2 * j + 1] = '.';
            }
            cls[63] = 0;
            pack_head(&pk, 1, "report");
            msgpack_pack_array(&pk, 1);
            msgpack_pack_map(&pk, 3);
            pack_str(&pk, "key");
            pack_str(&pk, CLS_KEY);
            pack_str(&pk, "outcome");
            pack_str(&pk, "failure");
            pack_str(&pk, "error");
            msgpack_pack_map(&pk, 1);
            pack_str(&pk, "class");
            pack_str(&pk, cls);
        }
        t0 = mono_ms();
        if (raw_call(&sb, PATTERN_WAIT_MS) < 0) {
            shm->pattern_max_ms = PATTERN_WAIT_MS;
            break; /* the daemon is stuck: no point adding to it */
        }
        ms = mono_ms() - t0;
        shm->pattern_answered++;
        if (ms > shm->pattern_max_ms)
            shm->pattern_max_ms = (unsigned)ms;
    }
    _exit(0);
}

static void phase_pattern(void)
{
    pid_t pid;

    phase_begin(PH_PATTERN);
    if ((pid = fork()) == 0)
        pattern_client();
    if (pid > 0)
        waitpid(pid, NULL, 0);
    phase_end(PH_PATTERN);
    OK(shm->pattern_answered == PATTERN_KEYS + PATTERN_REPORTS &&
           shm->pattern_max_ms < LAT_BOUND_MS,
       "pattern: %d acquires of 64-segment keys against %s and %d "
       "32-segment error classes each answered within %d ms",
       PATTERN_KEYS, STAR8, PATTERN_REPORTS, LAT_BOUND_MS);
    DIAG("pattern: %u of %d answered, slowest %u ms (%d: gave up)",
         shm->pattern_answered, PATTERN_KEYS + PATTERN_REPORTS,
         shm->pattern_max_ms, PATTERN_WAIT_MS);
    check_alive("pattern worst case");
}

/* --- the end --- */

static void final_checks(void)
{
    resil_t *r = integ_open(dmn.sock, ANSWER_MS);
    struct reply rep;
    char code[24] = "";
    struct kstat s;
    struct resil_decision dec;
    int rc;

    rc =
        r ? integ_call(r, "status", NULL, ANSWER_MS, &rep, code) : RESIL_ENOMEM;
    OK(rc == 0 && proto_map_get(&rep.obj, "health") != NULL,
       "end: status answers with a health field");
    if (rc != 0)
        DIAG("status: %s %s", resil_strerror(rc), code);
    if (r)
        reply_free(&rep);
    rc = r ? integ_get_status(r, "healthy.k", ANSWER_MS, &s) : RESIL_ENOMEM;
    OK(rc == 0 && s.found && s.failures == 0 && s.outstanding == 0 &&
           !strcmp(s.state, "closed"),
       "end: the healthy key is closed, without failures or "
       "outstanding permits");
    DIAG("healthy.k: calls %lld, failures %lld, outstanding %lld, state %s",
         s.calls, s.failures, s.outstanding, s.state);
    rc = r ? acquire(r, BH_KEY, &dec) : RESIL_ENOMEM;
    OK(rc == 0 && dec.allow, "end: %s admits again (its slots came back)",
       BH_KEY);
    if (r)
        resil_close(r);
}

/* ABUSE_PHASES (comma-separated phase names) runs only those: for
 * iterating on one defect.  Unset: every phase. */
static int want_phase(const char *name)
{
    const char *only = getenv("ABUSE_PHASES");
    size_t n = strlen(name);

    for (const char *p = only; p && *p; p += strcspn(p, ","), p += *p == ',')
        if (!strncmp(p, name, n) && (p[n] == ',' || !p[n]))
            return 1;
    if (only && *only)
        DIAG("%s: skipped (ABUSE_PHASES=%s)", name, only);
    return !only || !*only;
}

int main(void)
{
    pid_t healthy;
    int rc, status;

    signal(SIGPIPE, SIG_IGN);
    shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!OK(shm != MAP_FAILED, "shared memory for the healthy client"))
        return tap_done();
    memset(shm, 0, sizeof(*shm));
    if (!OK(daemon_start(&dmn, CONFIG) == 0, "daemon starts"))
        return tap_done();
    fflush(stdout);
    if ((healthy = fork()) == 0)
        healthy_client();
    OK(healthy > 0 && healthy_wait(20, 5000) == 0,
       "healthy client is deciding");

    if (want_phase("malformed"))
        phase_malformed();
    if (want_phase("flood"))
        phase_flood();
    if (want_phase("half-close"))
        phase_halfclose();
    if (want_phase("pattern"))
        phase_pattern();

    __atomic_store_n(&shm->stop, 1, __ATOMIC_SEQ_CST);
    waitpid(healthy, &status, 0);
    OK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "healthy client ran to the end");
    final_checks();
    rc = daemon_stop(&dmn);
    OK(rc == 0, "daemon exits 0 on SIGTERM");
    if (rc != 0 || tap_failures)
        daemon_dump_log(&dmn);
    daemon_cleanup(&dmn);
    return tap_done();
}
