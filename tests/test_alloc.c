/*
 * test_alloc.c - every allocation of key creation, config load and permit
 * allocation fails in turn (jansson's failing-allocator style), and the
 * daemon's state code must answer each failure cleanly: config_load
 * returns an error with a message, core_init returns RD_ENOMEM, and a
 * request that needed the memory is answered "busy: out of memory" --
 * never a wrong answer such as too_many_keys (once -KEYS_ENOMEM equalled
 * -ADMIT_EKEYS), never a crash, never a leak (run under make asan).
 *
 * The daemon's own objects are linked with -Wl,--wrap=malloc,calloc,
 * realloc (see the Makefile), so only their calls are counted.  jansson's
 * own allocations are left alone: Debian's jansson 2.14 asserts (aborts)
 * when one fails inside its lexer (load.c lex_scan_string), so failing
 * them would test jansson, not resild.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "core.h"
#include "methods.h"
#include "tap.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static long alloc_count;  /* allocations seen since the run began */
static int harness;       /* the test's own allocations: not counted */
static long fail_at = -1; /* the allocation that fails; -1: none */
static int failed_once;   /* this run did inject its failure */

static int should_fail(void)
{
    if (harness)
        return 0;
    if (alloc_count++ == fail_at) {
        failed_once = 1;
        return 1;
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}

static void flush_nothing(struct rpc_client *c)
{
    (void)c;
}

static const char *config_text =
    "{\"max_keys\": 100000, \"max_permits\": 1000, \"policies\": {"
    " \"*\": {\"breaker\": {\"window\": {\"type\": \"time\", \"size\": 30}}},"
    " \"a\": {\"limiter\": {\"rate\": 100000, \"per\": \"second\"}},"
    " \"a.*\": {\"bulkhead\": {\"max_concurrent\": 1000}},"
    " \"b.*.c\": {\"breaker\": {\"record\": [\"network.*\"]}},"
    " \"p.*\": {\"bulkhead\": {\"max_concurrent\": 1, \"queue\": 4}},"
    " \"c.*\": {\"breaker\": {\"critical_probe_per_s\": 5, \"failure_threshold\": 2}},"
    " \"s.*\": {\"shadow\": true, \"bulkhead\": {\"max_concurrent\": 1}}"
    "}}";

struct tally {
    long answers, oom, wrong, rebind_fail;
    uint64_t parked, probes, shadow; /* what the run reached */
    char wrong_text[160];
};

/* Look at every answer in sb: a result, or busy "out of memory". */
static void check_answers(msgpack_sbuffer *sb, struct tally *t)
{
    msgpack_unpacked u;
    size_t off = 0;

    msgpack_unpacked_init(&u);
    while (msgpack_unpack_next(&u, sb->data, sb->size, &off) ==
           MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *err = &u.data.via.array.ptr[2];
        char code[32] = "", msg[96] = "";
        t->answers++;
        if (err->type == MSGPACK_OBJECT_NIL)
            continue;
        proto_str_copy(proto_map_get(err, "code"), code, sizeof(code));
        proto_str_copy(proto_map_get(err, "message"), msg, sizeof(msg));
        if (!strcmp(code, "busy") && strstr(msg, "out of memory")) {
            t->oom++;
        } else if (!t->wrong++) {
            snprintf(t->wrong_text, sizeof(t->wrong_text), "%s: %s", code, msg);
        }
    }
    msgpack_unpacked_destroy(&u);
}

/* extra: NULL, or name/value pairs ending in NULL; a value "#N" is the
 * unsigned integer N. */
static void dispatch_x(struct resild *d, struct rpc_client *c,
                       msgpack_packer *pk, uint32_t msgid, const char *method,
                       const char *key, uint64_t permit,
                       const char *const *extra);

static void dispatch(struct resild *d, struct rpc_client *c, msgpack_packer *pk,
                     uint32_t msgid, const char *method, const char *key,
                     uint64_t permit)
{
    dispatch_x(d, c, pk, msgid, method, key, permit, NULL);
}

static void dispatch_x(struct resild *d, struct rpc_client *c,
                       msgpack_packer *pk, uint32_t msgid, const char *method,
                       const char *key, uint64_t permit,
                       const char *const *extra)
{
    size_t nx = 0, i;
    msgpack_sbuffer req;
    msgpack_packer rp;
    msgpack_zone zone;
    struct proto_msg m;
    const char *why;

    harness++;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&rp, &req, msgpack_sbuffer_write);
    proto_pack_request_head(&rp, msgid, method);
    msgpack_pack_array(&rp, 1);
    while (extra && extra[2 * nx])
        nx++;
    msgpack_pack_map(&rp,
                     (permit || !strcmp(method, "force") ? 3 : 1) + nx);
    proto_kv_str(&rp, "key", key);
    for (i = 0; i < nx; i++) {
        const char *v = extra[2 * i + 1];
        if (v[0] == '#')
            proto_kv_u64(&rp, extra[2 * i], strtoull(v + 1, NULL, 10));
        else
            proto_kv_str(&rp, extra[2 * i], v);
    }
    if (permit) {
        proto_kv_u64(&rp, "permit", permit);
        proto_kv_str(&rp, "outcome", "success");
    } else if (!strcmp(method, "force")) {
        proto_kv_str(&rp, "state", "open");
        proto_kv_str(&rp, "reason", "maintenance");
    }
    msgpack_zone_init(&zone, 1024);
    harness--;
    if (proto_decode(req.data, req.size, &zone, &m, &why) == 0)
        methods_dispatch(d, c, &m, pk, 1000);
    harness++;
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&req);
    harness--;
}

/* One run with allocation number fail_at failing.  Returns what was
 * counted; *stage says how far it got. */
static void run(const char *path, struct tally *t, int *config_err,
                int *init_err)
{
    struct config cfg;
    struct resild d;
    struct rpc_client c;
    msgpack_sbuffer out;
    msgpack_packer pk;
    char err[512] = "", key[32];
    int rc, i;

    rc = config_load(path, &cfg, err, sizeof(err));
    if (rc < 0) {
        *config_err = err[0] ? 1 : -1; /* -1: failed without a message */
        return;
    }
    rc = core_init(&d, &cfg, 0, 42);
    if (rc == 0)
        rc = methods_attach(&d);
    if (rc < 0) {
        *init_err = rc == RD_ENOMEM ? 1 : -1;
        core_free(&d);
        return;
    }
    /* Answers are packed into out: give it room up front, so that only
     * the daemon's own allocations meet the failures. */
    harness++;
    msgpack_sbuffer_init(&out);
    msgpack_sbuffer_write(&out, (char[1]){0}, 1);
    out.data = realloc(out.data, 1 << 20);
    out.alloc = 1 << 20;
    msgpack_sbuffer_clear(&out);
    harness--;
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    methods_client_init(&c, &pk, flush_nothing);
    c.caller.admin = 1;
    /* New keys (one below an ancestor with a limiter, which creates it),
     * then more permits than one chunk of the pool holds. */
    dispatch(&d, &c, &pk, 1, "acquire", "a.b.c", 0);
    dispatch(&d, &c, &pk, 2, "acquire", "b.x.c", 0);
    dispatch(&d, &c, &pk, 3, "force", "z", 0);
    for (i = 0; i < PERMIT_CHUNK + 20; i++) {
        snprintf(key, sizeof(key), "a.k%d", i % 7);
        dispatch(&d, &c, &pk, (uint32_t)(10 + i), "acquire", key, 0);
    }
    /* The parts of a key made on first use (keys_ext, the latency ring):
     * requests that park, critical probes through an open breaker, a
     * shadow denial, reported latencies; then a release serves the parked
     * ones. */
    {
        static const char *const wait[] = {"wait_ms", "#1000", NULL};
        static const char *const crit[] = {"priority", "critical", NULL};
        static const char *const lat[] = {"outcome", "failure",
                                          "latency_ms", "#7", NULL};
        struct permit *pp;
        dispatch(&d, &c, &pk, 5000, "acquire", "p.q", 0);
        dispatch_x(&d, &c, &pk, 5001, "acquire", "p.q", 0, wait);
        dispatch_x(&d, &c, &pk, 5002, "acquire", "p.q", 0, wait);
        dispatch(&d, &c, &pk, 5003, "acquire", "s.k", 0);
        dispatch(&d, &c, &pk, 5004, "acquire", "s.k", 0);
        dispatch_x(&d, &c, &pk, 5005, "acquire", "c.k", 0, crit);
        for (i = 0; i < 6; i++) /* failures: open c.k */
            dispatch_x(&d, &c, &pk, (uint32_t)(5010 + i), "report", "c.k", 0,
                       lat);
        dispatch_x(&d, &c, &pk, 5020, "acquire", "c.k", 0, crit);
        dispatch_x(&d, &c, &pk, 5021, "acquire", "c.k", 0, crit);
        /* Release p.q's permit: its parked requests are served. */
        for (pp = c.caller.permits; pp; pp = pp->next)
            if (!strcmp(pp->key->name, "p.q"))
                break;
        if (pp) {
            dispatch(&d, &c, &pk, 5030, "report", "p.q", pp->id);
            core_wake(&d, 1000);
        }
    }
    /* Report one: the state must still be coherent. */
    if (c.caller.permits)
        dispatch(&d, &c, &pk, 9999, "report", c.caller.permits->key->name,
                 c.caller.permits->id);
    /* Rebind to a configuration whose windows differ: every key needs
     * new window memory, all of it before anything changes. */
    {
        struct config cfg2;
        char p2[300];
        FILE *f;
        harness++;
        snprintf(p2, sizeof(p2), "%s.2", path);
        f = fopen(p2, "w");
        fputs("{\"policies\": {\"*\": {\"breaker\": {\"window\": "
              "{\"type\": \"count\", \"size\": 50}}}}}",
              f);
        fclose(f);
        rc = config_load(p2, &cfg2, err, sizeof(err));
        unlink(p2);
        harness--;
        if (rc == 0) {
            rc = core_rebind(&d, &cfg2, 1500);
            if (rc < 0) {
                t->rebind_fail += rc == RD_ENOMEM;
                t->wrong += rc != RD_ENOMEM;
                harness++;
                config_free(&cfg2);
                harness--;
            }
        }
    }
    harness++;
    check_answers(&out, t);
    harness--;
    t->parked = d.m.parked;
    t->probes = d.m.critical_probes;
    t->shadow = d.m.shadow_denied;
    methods_client_gone(&d, &c, 2000);
    msgpack_sbuffer_destroy(&out);
    core_free(&d);
}

int main(void)
{
    char dir[] = "/tmp/resild-test-alloc.XXXXXX", path[256];
    long n, runs = 0, config_fail = 0, init_fail = 0, oom_answers = 0;
    long silent = 0, wrong = 0, rebind_fail = 0;
    char wrong_text[200] = "";
    FILE *f;

    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs(config_text, f);
    fclose(f);

    for (n = 0;; n++) {
        struct tally t = {0};
        int config_err = 0, init_err = 0;

        alloc_count = 0;
        fail_at = n;
        failed_once = 0;
        run(path, &t, &config_err, &init_err);
        if (!failed_once) { /* every allocation has failed once */
            OK(t.parked == 2 && t.probes >= 1 && t.shadow == 1,
               "a run without failures parks 2, passes critical probes "
               "(%llu) and a shadow denial",
               (unsigned long long)t.probes);
            break;
        }
        runs++;
        config_fail += config_err == 1;
        init_fail += init_err == 1;
        silent += config_err == -1 || init_err == -1;
        oom_answers += t.oom;
        rebind_fail += t.rebind_fail;
        if (t.wrong && !wrong++)
            snprintf(wrong_text, sizeof(wrong_text), "run %ld: %s", n,
                     t.wrong_text);
    }
    DIAG("%ld allocations failed in turn: %ld in config_load, %ld in "
         "core_init, %ld answered out of memory",
         runs, config_fail, init_fail, oom_answers);
    OK(runs > 20, "every allocation of a run failed once (%ld runs)", runs);
    OK(config_fail > 0, "config_load met failures (%ld)", config_fail);
    OK(init_fail > 0, "core_init met failures (%ld)", init_fail);
    OK(oom_answers > 0,
       "requests met failures: key creation, permit "
       "pool growth (%ld answers)",
       oom_answers);
    OK(rebind_fail > 0,
       "core_rebind met failures and answered RD_ENOMEM "
       "(%ld)",
       rebind_fail);
    OK(silent == 0,
       "every failure in config_load and core_init is "
       "reported as such (%ld not)",
       silent);
    OK(wrong == 0,
       "no request is answered anything but its result or "
       "busy/out of memory (%s)",
       wrong ? wrong_text : "none");
    fail_at = -1;
    unlink(path);
    rmdir(dir);
    return tap_done();
}
