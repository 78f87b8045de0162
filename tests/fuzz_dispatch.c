/*
 * fuzz_dispatch.c - `make fuzz`: libFuzzer drives the whole decision core
 * (scanner, decoder, every method, admission, breaker, limiter, parking,
 * permit expiry) with arbitrary bytes, under ASan and UBSan.
 *
 * Input: a sequence of [ctl byte][one msgpack object].  ctl's low bit picks
 * one of two callers, bits 1-5 advance the fake clock 0..31 ms, and 0xc0
 * set means "that caller's connection closed" (no object follows).  Each
 * object that scans and decodes as a request is dispatched, then cron and
 * the parked-request wake run.  The daemon state lives across inputs, so
 * sequences build on what earlier ones left (keys, permits, parked
 * requests, open breakers).  Nothing asserts but the sanitizers.
 *
 * `make fuzz` runs it under libFuzzer, seeded from tests/corpus;
 * test_corpus.c links the same entry point with gcc and replays
 * tests/corpus in `make test`.  Keep it free of libFuzzer-only calls.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "methods.h"
#include "admit.h"
#include "proto.h"

static struct resild d;
static int ready;
static msgpack_sbuffer sb[2];
static msgpack_packer pk[2];
static struct rpc_client callers[2];
static msgpack_zone zone;
static uint64_t now = 1000;

static void flush(struct rpc_client *c)
{
    (void)c;
}

static void setup(void)
{
    struct config cfg;
    char err[256];
    char dir[] = "/tmp/resild-fuzz.XXXXXX", path[64];
    FILE *f;

    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs(
        "{\"max_permits\": 64, \"max_parked\": 32, \"max_keys\": 200,"
        "\"policies\": {\"*\": {\"breaker\": {\"failure_threshold\": 3, "
        "\"open_ms\": 50,"
        "\"window\": {\"type\": \"time\", \"size\": 2}, \"slow_call_ms\": 10,"
        "\"slow_call_rate_threshold\": 50, \"critical_probe_per_s\": 2}},"
        "\"a\": {\"limiter\": {\"rate\": 5, \"per_ms\": 100}, \"reserve\": 1},"
        "\"a.*\": {\"limiter\": {\"rate\": 3, \"per_ms\": 50, \"burst\": 4},"
        "\"bulkhead\": {\"max_concurrent\": 2, \"queue\": 3}, "
        "\"permit_ttl_ms\": 200},"
        "\"s.*\": {\"shadow\": true, \"bulkhead\": {\"max_concurrent\": 1}},"
        /* several stars: policy and class matching over long keys */
        "\"*.*.*.x\": {\"breaker\": {\"record\": [\"*.*.x\", "
        "\"network.*\", \"*.*.*.*.*.*.*.*.*.y\"]}},"
        /* the worst case of the once exponential matcher */
        "\"*.*.*.*.*.*.*.*.x\": {\"bulkhead\": {\"max_concurrent\": 1}}}}",
        f);
    fclose(f);
    if (config_load(path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    unlink(path);
    rmdir(dir);
    core_init(&d, &cfg, now, 42);
    methods_attach(&d);
    for (int i = 0; i < 2; i++) {
        msgpack_sbuffer_init(&sb[i]);
        msgpack_packer_init(&pk[i], &sb[i], msgpack_sbuffer_write);
        methods_client_init(&callers[i], &pk[i], flush);
        callers[i].caller.admin = 1;
    }
    msgpack_zone_init(&zone, 4096);
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    if (!ready)
        setup();
    while (off < size) {
        struct proto_scan s;
        struct proto_msg m;
        const char *why;
        uint8_t ctl = data[off++];
        long n;
        int who = ctl & 1;

        now += (ctl >> 1) & 31; /* time moves 0..31 ms */
        if ((ctl & 0xc0) == 0xc0) {
            methods_client_gone(&d, &callers[who], now);
            continue;
        }
        if (off >= size)
            break;
        proto_scan_init(&s);
        n = proto_scan_next(&s, data + off, size - off, 65536, PROTO_MAX_DEPTH);
        if (n <= 0)
            break;
        if (proto_decode((const char *)data + off, (size_t)n, &zone, &m,
                         &why) == 0 &&
            m.type != PROTO_RESPONSE)
            methods_dispatch(&d, &callers[who], &m, &pk[who], now);
        msgpack_zone_clear(&zone);
        off += (size_t)n;
        core_tick(&d, now);
        admit_wake(&d, now);
        for (int i = 0; i < 2; i++)
            msgpack_sbuffer_clear(&sb[i]);
    }
    return 0;
}
