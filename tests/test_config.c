/*
 * test_config.c - configuration loading: defaults, inheritance from "*",
 * pattern specificity, and errors that name the file, line and column or
 * the offending key.  Data-driven: each bad case is JSON text plus a
 * fragment the error must contain.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "keys.h"
#include "memory.h"
#include "permit.h"
#include "tap.h"

static char dir[] = "/tmp/resild-test-config.XXXXXX";

static const char *write_cfg(const char *json)
{
    static char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/c.json", dir);
    f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    return path;
}

static void test_defaults(void)
{
    struct config c;
    const struct policy *p;

    OK(config_defaults(&c) == 0, "defaults load");
    p = config_match(&c, "binance.orders");
    OK(!strcmp(p->pattern, "*"), "every key matches *");
    IS(p->breaker.failure_threshold, 5, "default failure_threshold 5");
    IS(p->breaker.open_ms, 30000, "default open_ms 30000");
    IS(p->breaker.half_open_max_calls, 1, "default half_open_max_calls 1");
    IS(p->breaker.success_threshold, 2, "default success_threshold 2");
    IS(p->permit_ttl_ms, 60000, "default permit_ttl_ms 60000");
    IS(c.max_clients, 1024, "default max_clients");
    IS(c.max_keys, 100000, "default max_keys");
    IS(c.max_frame_bytes, 65536, "default max_frame_bytes");
    IS(c.socket_mode, 0660, "default socket_mode");
    IS(c.max_parked_per_client, 1024, "default max_parked_per_client");
    IS(c.partial_timeout_ms, 5000, "default partial_timeout_ms");
    IS(c.stall_timeout_ms, 5000, "default stall_timeout_ms");
    IS(c.max_output_bytes, 262144, "default max_output_bytes");
    config_free(&c);
}

/* The per-connection bounds of SPEC 3 are configurable and range-checked. */
static void test_connection_bounds(void)
{
    struct config c;
    char err[256];
    const char *path = write_cfg(
        "{\"max_parked_per_client\": 2, \"partial_timeout_ms\": 300,\n"
        " \"stall_timeout_ms\": 1500, \"max_output_bytes\": 131072}");

    OK(config_load(path, &c, err, sizeof(err)) == 0, "bounds load: %s", err);
    IS(c.max_parked_per_client, 2, "max_parked_per_client set");
    IS(c.partial_timeout_ms, 300, "partial_timeout_ms set");
    IS(c.stall_timeout_ms, 1500, "stall_timeout_ms set");
    IS(c.max_output_bytes, 131072, "max_output_bytes set");
    config_free(&c);
    path = write_cfg("{\"max_output_bytes\": 1024}");
    OK(config_load(path, &c, err, sizeof(err)) < 0 &&
           strstr(err, "max_output_bytes") && strstr(err, "out of range"),
       "max_output_bytes below one frame's answers is refused (%s)", err);
}

static void test_inheritance_and_match(void)
{
    struct config c;
    char err[256];
    const struct policy *p;
    const char *path = write_cfg(
        "{\"socket_mode\": \"0600\", \"max_keys\": 10,\n"
        " \"policies\": {\n"
        "  \"*\": {\"breaker\": {\"failure_threshold\": 3, \"open_ms\": "
        "500}},\n"
        "  \"binance.*\": {\"breaker\": {\"open_ms\": 100}},\n"
        "  \"binance\": {\"breaker\": {\"success_threshold\": 4}},\n"
        "  \"*.orders\": {\"breaker\": {\"half_open_max_calls\": 3}},\n"
        "  \"binance.orders.spot\": {\"permit_ttl_ms\": 5}}}\n");

    if (!OK(config_load(path, &c, err, sizeof(err)) == 0, "valid config loads"))
        DIAG("%s", err);
    IS(c.socket_mode, 0600, "socket_mode parsed as octal");
    IS(c.max_keys, 10, "max_keys");
    p = config_match(&c, "okx");
    OK(!strcmp(p->pattern, "*"), "unrelated key -> *");
    IS(p->breaker.failure_threshold, 3, "* overrides built-in");
    IS(p->breaker.success_threshold, 2, "* inherits unset fields");
    p = config_match(&c, "binance");
    OK(!strcmp(p->pattern, "binance"), "exact name beats binance.*");
    IS(p->breaker.success_threshold, 4, "exact policy field");
    IS(p->breaker.open_ms, 500, "exact policy inherits from *");
    p = config_match(&c, "binance.ws");
    OK(!strcmp(p->pattern, "binance.*"), "binance.ws -> binance.*");
    IS(p->breaker.open_ms, 100, "binance.* field");
    IS(p->breaker.failure_threshold, 3, "binance.* inherits from *");
    p = config_match(&c, "binance.orders");
    OK(!strcmp(p->pattern, "binance.*"),
       "binance.* beats *.orders (literal prefix first)");
    p = config_match(&c, "okx.orders");
    OK(!strcmp(p->pattern, "*.orders"), "*.orders matches okx.orders");
    p = config_match(&c, "binance.orders.spot");
    OK(!strcmp(p->pattern, "binance.orders.spot"), "exact deep key");
    IS(p->permit_ttl_ms, 5, "its own field");
    p = config_match(&c, "binance.orders.futures");
    OK(!strcmp(p->pattern, "binance.*"), "* spans several segments");
    config_free(&c);
}

static void test_breaker_options(void)
{
    struct config c;
    char err[256];
    const struct policy *p;
    const char *path = write_cfg(
        "{\"policies\": {\"*\": {\"breaker\": {\"ignore\": "
        "[\"validation.*\"]}},\n"
        " \"binance.*\": {\"shadow\": true, \"breaker\": {\n"
        "   \"window\": {\"type\": \"time\", \"size\": 60},\n"
        "   \"failure_rate_threshold\": 40, \"minimum_calls\": 20,\n"
        "   \"slow_call_ms\": 2000, \"slow_call_rate_threshold\": 80,\n"
        "   \"open_backoff\": 2, \"open_max_ms\": 300000,\n"
        "   \"open_jitter\": 0.1, \"record\": [\"network.*\", "
        "\"timeout\"]}}}}");

    if (!OK(config_load(path, &c, err, sizeof(err)) == 0,
            "breaker options load"))
        DIAG("%s", err);
    p = config_match(&c, "binance.orders");
    IS(p->breaker.window_time, 1, "time window");
    IS(p->breaker.window_size, 60, "window size");
    IS(p->breaker.failure_rate_threshold, 40, "failure_rate_threshold");
    IS(p->breaker.minimum_calls, 20, "minimum_calls");
    IS(p->breaker.slow_call_ms, 2000, "slow_call_ms");
    IS(p->breaker.slow_call_rate_threshold, 80, "slow_call_rate_threshold");
    IS(p->breaker.open_backoff_milli, 2000, "open_backoff as thousandths");
    IS(p->breaker.open_jitter_milli, 100, "open_jitter as thousandths");
    IS(p->breaker.failure_threshold, 5, "unset field from built-in");
    OK(p->shadow, "shadow");
    IS(config_failure_kind(p, "network.reset"), BREAKER_FAILURE,
       "recorded class is a failure");
    IS(config_failure_kind(p, "auth.denied"), BREAKER_SUCCESS,
       "class outside record counts as success");
    IS(config_failure_kind(p, "validation.qty"), BREAKER_IGNORE,
       "ignore inherited from *");
    IS(config_failure_kind(p, NULL), BREAKER_FAILURE, "no class: failure");
    p = config_match(&c, "okx");
    IS(config_failure_kind(p, "auth.denied"), BREAKER_FAILURE,
       "default record is *");
    IS(p->breaker.window_time, 0, "default count window");
    IS(p->breaker.window_size, 100, "default window 100 calls");
    IS(p->breaker.failure_rate_threshold, 50, "default failure rate 50");
    IS(p->breaker.minimum_calls, 10, "default minimum_calls 10");
    config_free(&c);
}

static void test_pattern_match(void)
{
    OK(config_pattern_match("*", "a"), "* matches one segment");
    OK(config_pattern_match("*", "a.b.c"), "* matches many segments");
    OK(config_pattern_match("a.*", "a.b"), "a.* matches a.b");
    OK(!config_pattern_match("a.*", "a"), "a.* needs one more segment");
    OK(!config_pattern_match("a.*", "ab.c"), "a.* does not match ab.c");
    OK(config_pattern_match("*.c", "a.b.c"), "*.c matches a.b.c");
    OK(!config_pattern_match("*.c", "c"), "*.c does not match c");
    OK(config_pattern_match("a.*.d", "a.b.c.d"), "inner star");
    OK(!config_pattern_match("a.*.d", "a.d"), "inner star needs a segment");
}

/* The first, recursive matcher: the reference model for the new one.  It
 * tries every split point of every star, so it is exponential in the
 * number of stars; fine on the small inputs the random check uses. */
static int old_match(const char *pat, const char *key)
{
    if (*pat == '\0')
        return *key == '\0';
    if (pat[0] == '*' && (pat[1] == '.' || pat[1] == '\0')) {
        const char *rest = pat[1] == '.' ? pat + 2 : pat + 1;
        const char *k = key;
        if (*key == '\0')
            return 0;
        for (;;) {
            const char *dot = strchr(k, '.');
            if (!dot)
                return *rest == '\0';
            if (*rest && old_match(rest, dot + 1))
                return 1;
            k = dot + 1;
        }
    }
    while (*pat && *pat != '.') {
        if (*pat != *key)
            return 0;
        pat++;
        key++;
    }
    if (*pat == '\0')
        return *key == '\0';
    if (*key != '.')
        return 0;
    return old_match(pat + 1, key + 1);
}

/* Random patterns and keys over a tiny alphabet (keys with empty
 * segments too): the new matcher agrees with the old one everywhere. */
static void test_pattern_model(void)
{
    static const char *const psegs[] = {"a", "b", "ab", "*", "*"};
    static const char *const ksegs[] = {"a", "b", "ab", ""};
    char pat[64], key[64];
    uint64_t rng = 0x5eed;
    long i, bad_n = 0, matches = 0;

    for (i = 0; i < 300000; i++) {
        int np, nk, j;
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        np = 1 + (int)(rng % 6);
        nk = 1 + (int)((rng >> 8) % 8);
        pat[0] = key[0] = '\0';
        for (j = 0; j < np; j++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            if (j)
                strcat(pat, ".");
            strcat(pat, psegs[rng % 5]);
        }
        for (j = 0; j < nk; j++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            if (j)
                strcat(key, ".");
            strcat(key, ksegs[rng % 4]);
        }
        if (config_pattern_match(pat, key) != old_match(pat, key)) {
            if (bad_n++ < 5)
                DIAG("'%s' vs '%s': new %d, old %d", pat, key,
                     config_pattern_match(pat, key), old_match(pat, key));
        }
        matches += old_match(pat, key);
    }
    OK(bad_n == 0,
       "matcher agrees with the recursive model on %ld random "
       "cases (%ld matches, %ld disagreements)",
       i, matches, bad_n);
}

/* Run fn in a child that gets SIGALRM after limit_s: a matcher that is
 * exponential again fails here in a minute, not at run.sh's timeout. */
static int finishes(void (*fn)(void), unsigned limit_s)
{
    int st;
    pid_t pid = fork();

    if (pid == 0) {
        alarm(limit_s);
        fn();
        _exit(0);
    }
    if (pid <= 0 || waitpid(pid, &st, 0) != pid)
        return 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 1;
    DIAG("child: %s %d", WIFEXITED(st) ? "exit" : "signal",
         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return 0;
}

static char worst_key[160], worst_key_x[160], worst_cls[80];

static void worst_case(void)
{
    static const char *const stars10 = "*.*.*.*.*.*.*.*.*.*.x";
    struct config c;
    char err[256];
    const char *path = write_cfg(
        "{\"policies\": {\"*.*.*.*.*.*.x\": {},\n"
        " \"a.*\": {\"breaker\": {\"record\": "
        "[\"*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.x\"],"
        "\"ignore\": [\"*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.y\"]}}}}");
    const struct policy *p;

    if (config_pattern_match(stars10, worst_key))
        _exit(1);
    if (!config_pattern_match(stars10, worst_key_x))
        _exit(2);
    if (config_load(path, &c, err, sizeof(err)) < 0) {
        DIAG("%s", err);
        _exit(3);
    }
    p = config_match(&c, worst_key);
    if (strcmp(p->pattern, "a.*"))
        _exit(4);
    if (strcmp(config_match(&c, worst_key_x)->pattern, "*.*.*.*.*.*.x"))
        _exit(5);
    /* A client-supplied error class against record / ignore. */
    if (config_failure_kind(p, worst_cls) != BREAKER_SUCCESS)
        _exit(6);
    config_free(&c);
    _exit(0);
}

/* The worst case of defect 2: many stars against a 64-segment key that
 * does not match (every split tried by the old matcher: C(63, 10) ~ 1e11
 * for ten stars; 4.4 s for six in the daemon) and one that does. */
static void test_pattern_worst_case(void)
{
    int i;

    worst_key[0] = worst_key_x[0] = worst_cls[0] = '\0';
    for (i = 0; i < 64; i++)
        strcat(worst_key, i ? ".a" : "a");
    for (i = 0; i < 63; i++) /* "b.": outside policy a.* */
        strcat(worst_key_x, i ? ".a" : "b");
    strcat(worst_key_x, ".x");
    for (i = 0; i < 32; i++)
        strcat(worst_cls, i ? ".a" : "a");
    IS(strlen(worst_key), 127, "worst-case key is a valid 64-segment key");
    OK(finishes(worst_case, 60),
       "10 stars vs a 64-segment key, policy *.*.*.*.*.*.x and 30-star "
       "record/ignore patterns vs a 32-segment class: right answers, "
       "polynomial time");
}

static const struct {
    const char *json;
    const char *want; /* substring of the error */
} bad[] = {
    {"{\"max_keys\": 10,,}", ":1:"},
    {"{\n  \"max_keys\": 10\n  \"x\": 1}", ":3:"},
    {"{\"max_keyz\": 10}", "max_keyz: unknown key"},
    {"{\"max_keys\": -1}", "max_keys: -1 is out of range"},
    {"{\"max_keys\": \"10\"}", "max_keys: must be an integer"},
    {"{\"max_frame_bytes\": 10}", "max_frame_bytes: 10 is out of range"},
    {"{\"socket_mode\": \"999\"}", "socket_mode: \"999\" is not an octal"},
    {"{\"socket_mode\": 660}", "socket_mode: must be an octal string"},
    {"{\"policies\": []}", "policies: must be an object"},
    {"{\"policies\": {\"bin ance\": {}}}", "policies.bin ance: bad pattern"},
    {"{\"policies\": {\"a*\": {}}}", "policies.a*: bad pattern"},
    {"{\"policies\": {\"a..b\": {}}}", "policies.a..b: bad pattern"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"open_mss\": 1}}}}",
     "policies.a.breaker.open_mss: unknown key"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"open_ms\": 0}}}}",
     "policies.a.breaker.open_ms: 0 is out of range"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"success_threshold\": 0}}}}",
     "success_threshold: 0 is out of range"},
    {"{\"policies\": {\"a\": {\"limiter\": {\"burst\": 1}}}}",
     "policies.a.limiter.rate: is required"},
    {"{\"policies\": {\"a\": {\"limiter\": {\"rate\": 1, \"per\": \"week\"}}}}",
     "policies.a.limiter.per: must be second"},
    {"{\"policies\": {\"a\": {\"bulkhead\": {\"queue\": 1}}}}",
     "policies.a.bulkhead.max_concurrent: is required"},
    {"{\"policies\": {\"a\": {\"reserve\": 2, \"bulkhead\": "
     "{\"max_concurrent\": 2}}}}",
     "policies.a.reserve: 2 leaves nothing"},
    {"{\"policies\": {\"a\": {\"retry\": {\"strategy\": \"random\"}}}}",
     "policies.a.retry.strategy: must be fixed"},
    {"{\"policies\": {\"a\": {\"retry\": {\"base_ms\": 10, \"max_ms\": 5}}}}",
     "policies.a.retry.max_ms: 5 is below base_ms 10"},
    {"{\"errors\": {\"classes\": {\"network.*\": {\"severity\": \"huge\"}}}}",
     "errors.classes.network.*.severity: must be low"},
    {"{\"errors\": {\"alerts\": {}}}",
     "errors.alerts.rate_per_min: is required"},
    {"{\"errors\": {\"alerts\": [{\"rate_per_min\": 1}, {\"rate_per_min\": "
     "0}]}}",
     "errors.alerts[1].rate_per_min: must be a number > 0"},
    {"{\"errors\": {\"alerts\": {\"rate_per_min\": 1, \"key\": \"a b\"}}}",
     "errors.alerts.key: must match"},
    {"{\"errors\": {\"alerts\": {\"rate_per_min\": 1, \"exek\": \"x\"}}}",
     "errors.alerts.exek: unknown key"},
    {"{\"errors\": {\"max_series\": 0}}",
     "errors.max_series: 0 is out of range"},
    {"{\"policies\": {\"a\": {\"heartbeat\": {}}}}",
     "policies.a.heartbeat.timeout_ms: is required"},
    {"{\"policies\": {\"a\": {\"heartbeat\": {\"timeout_ms\": 0}}}}",
     "policies.a.heartbeat.timeout_ms: 0 is out of range"},
    {"{\"policies\": {\"a\": {\"heartbeat\": {\"timeout\": 5}}}}",
     "policies.a.heartbeat.timeout: unknown key"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"window\": {\"type\": \"x\"}}}}}",
     "policies.a.breaker.window.type: must be"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"window\": {\"size\": 0}}}}}",
     "policies.a.breaker.window.size: 0 is out of range"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"window\": {\"sise\": 1}}}}}",
     "policies.a.breaker.window.sise: unknown key"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"failure_rate_threshold\": "
     "101}}}}",
     "failure_rate_threshold: 101 is out of range"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"open_backoff\": 0.5}}}}",
     "open_backoff: 0.5 is out of range"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"open_jitter\": \"x\"}}}}",
     "open_jitter: must be a number"},
    {"{\"policies\": {\"a\": {\"breaker\": {\"record\": [\"a b\"]}}}}",
     "record[0]: must be a class pattern"},
    {"{\"policies\": {\"a\": {\"shadow\": 1}}}",
     "shadow: must be true or false"},
    {"{\"redis\": {}}", "redis.url: is required"},
    {"{\"redis\": []}", "redis: must be an object"},
    {"{\"redis\": {\"url\": 6379}}", "redis.url: must be a string"},
    {"{\"redis\": {\"url\": \"redis://h:6379\"}}",
     "redis.url: \"redis://h:6379\" must be \"unix:///path\" or"},
    {"{\"redis\": {\"url\": \"unix://run/r.sock\"}}",
     "redis.url: the socket path after unix:// must be absolute"},
    {"{\"redis\": {\"url\": "
     "\"unix:///"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}",
     "redis.url: the socket path is 108 bytes; at most 107"},
    {"{\"redis\": {\"url\": \"unix:///run/\"}}",
     "redis.url: the socket path names a directory"},
    {"{\"redis\": {\"url\": \"tcp://h\"}}", "redis.url: \"h\" has no :port"},
    {"{\"redis\": {\"url\": \"tcp://:6379\"}}",
     "redis.url: the host must be 1..255 bytes"},
    {"{\"redis\": {\"url\": \"tcp://re dis:6379\"}}",
     "redis.url: host \"re dis\" must be a name"},
    {"{\"redis\": {\"url\": \"tcp://h:0\"}}",
     "redis.url: port \"0\" must be 1..65535"},
    {"{\"redis\": {\"url\": \"tcp://h:65536\"}}",
     "redis.url: port \"65536\" must be"},
    {"{\"redis\": {\"url\": \"tcp://h:06379\"}}",
     "redis.url: port \"06379\" must be"},
    {"{\"redis\": {\"url\": \"tcp://h:63x\"}}", "redis.url: port \"63x\""},
    {"{\"redis\": {\"url\": \"tcp://h:\"}}", "redis.url: port \"\" must be"},
    {"{\"redis\": {\"url\": \"tcp://[zz]:1\"}}",
     "redis.url: \"[zz]\" is not an IPv6 address"},
    {"{\"redis\": {\"url\": \"tcp://[]:1\"}}",
     "redis.url: an IPv6 host must be in brackets"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"mode\": \"both\"}}",
     "redis.mode: must be \"mirror\" or \"shared\""},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"password\": 1}}",
     "redis.password: must be a string of 0..127 bytes"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"db\": -1}}",
     "redis.db: -1 is out of range [0, 1000000]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"db\": 1000001}}",
     "redis.db: 1000001 is out of range"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"prefix\": \"\"}}",
     "redis.prefix: must be printable text without spaces of 1..63 bytes"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"prefix\": \"a b\"}}",
     "redis.prefix: must be printable ASCII without spaces"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"connect_timeout_ms\": 9}}",
     "redis.connect_timeout_ms: 9 is out of range [10, 60000]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"connect_timeout_ms\": 60001}}",
     "redis.connect_timeout_ms: 60001 is out of range"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"command_timeout_ms\": \"1\"}}",
     "redis.command_timeout_ms: must be an integer"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"command_timeout_ms\": 0}}",
     "redis.command_timeout_ms: 0 is out of range [10, 60000]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"origin\": \"a b\"}}",
     "redis.origin: must be a name of [A-Za-z0-9._:-]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"origin\": \"\"}}",
     "redis.origin: must be a name of [A-Za-z0-9._:-] of 1..63 bytes"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"expected_hosts\": 0}}",
     "redis.expected_hosts: 0 is out of range [1, 1000]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"expected_hosts\": 1001}}",
     "redis.expected_hosts: 1001 is out of range"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"lease_ms\": 9}}",
     "redis.lease_ms: 9 is out of range [10, 10000]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"lease_ms\": 10001}}",
     "redis.lease_ms: 10001 is out of range"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"queue\": 0}}",
     "redis.queue: 0 is out of range [1, 1000000]"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"queue\": 1000001}}",
     "redis.queue: 1000001 is out of range"},
    {"{\"redis\": {\"sentinels\": [], \"master_name\": \"m\"}}",
     "redis.sentinels: must be an array of 1..8 \"host:port\" strings"},
    {"{\"redis\": {\"sentinels\": \"h:1\", \"master_name\": \"m\"}}",
     "redis.sentinels: must be an array"},
    {"{\"redis\": {\"sentinels\": [\"a:1\", \"a:2\", \"a:3\", \"a:4\", "
     "\"a:5\", \"a:6\", \"a:7\", \"a:8\", \"a:9\"], \"master_name\": \"m\"}}",
     "redis.sentinels: must be an array of 1..8"},
    {"{\"redis\": {\"sentinels\": [26379], \"master_name\": \"m\"}}",
     "redis.sentinels[0]: must be a \"host:port\" string"},
    {"{\"redis\": {\"sentinels\": [\"a:1\", \"b\"], \"master_name\": \"m\"}}",
     "redis.sentinels[1]: \"b\" has no :port"},
    {"{\"redis\": {\"sentinels\": [\"a:1\", \"b:0\"], \"master_name\": \"m\"}}",
     "redis.sentinels[1]: port \"0\" must be 1..65535"},
    {"{\"redis\": {\"sentinels\": [\"a:1\"]}}",
     "redis.master_name: is required with redis.sentinels"},
    {"{\"redis\": {\"sentinels\": [\"a:1\"], \"master_name\": \"m\", "
     "\"url\": \"tcp://h:1\"}}",
     "redis.url: give url or sentinels with master_name, not both"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"master_name\": \"m\"}}",
     "redis.master_name: only with redis.sentinels"},
    {"{\"redis\": {\"sentinels\": [\"a:1\"], \"master_name\": \"m m\"}}",
     "redis.master_name: must be printable ASCII without spaces"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"budget_ms\": 2}}",
     "redis.budget_ms: no decision waits on Redis in this version (Redis is "
     "only written behind and leased ahead); remove it \xe2\x80\x94 "
     "command_timeout_ms bounds a Redis command"},
    {"{\"redis\": {\"url\": \"tcp://h:1\", \"timeout_ms\": 2}}",
     "redis.timeout_ms: unknown key"},
    {"{\"policies\": {\"a\": {\"scope\": \"regional\"}}}",
     "policies.a.scope: must be \"local\" or \"global\""},
    {"{\"policies\": {\"a\": {\"scope\": true}}}",
     "policies.a.scope: must be \"local\" or \"global\""},
    {"{\"policies\": {\"a\": {\"scope\": \"global\"}}}",
     "policies.a.scope: \"global\" needs redis.mode \"shared\""},
    {"{\"policies\": {\"a\": {\"scope\": \"global\"}}, \"redis\": {\"url\": "
     "\"tcp://h:1\", \"mode\": \"mirror\"}}",
     "policies.a.scope: \"global\" needs redis.mode \"shared\" (a global "
     "key's breaker and limiter are shared"},
    {"{\"policies\": {\"*\": {\"scope\": \"global\"}, \"b\": {}}}",
     "policies.*.scope: \"global\" needs redis.mode"},
    {"{\"allow_uids\": [1, \"x\"]}", "allow_uids[1]: must be an integer"},
    {"{\"max_keys\": 1, \"max_keys\": 2}", "duplicate"},
    {"{\"max_memory_mb\": 0}", "max_memory_mb: 0 is out of range"},
    {"[1]", "top level must be a JSON object"},
    {"{\"metrics\": []}", "metrics: must be an object"},
    {"{\"metrics\": {\"port\": 9100}}", "metrics.port: unknown key"},
    {"{\"metrics\": {\"listen\": 9100}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"9100\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \":9100\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"localhost:9100\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1:\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1:0\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1:65536\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1:09100\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1:+9100\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.1:91x\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"127.0.0.256:9100\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"[::1]:9100\"}}", "metrics.listen: must be"},
    {"{\"metrics\": {\"listen\": \"relative/m.sock\"}}",
     "metrics.listen: must be"},
    {"{\"metrics\": {\"max_keys\": -1}}",
     "metrics.max_keys: -1 is out of range"},
    {"{\"metrics\": {\"max_keys\": 10000001}}",
     "metrics.max_keys: 10000001 is out of range"},
    {"{\"metrics\": {\"max_keys\": \"5\"}}", "metrics.max_keys: must be"},
};

/* The "metrics" section: off by default, max_keys 1000; both address
 * forms load (bad ones are in bad[]). */
static void test_metrics(void)
{
    struct config c;
    char err[512], json[400], path108[120];

    OK(config_load(write_cfg("{}"), &c, err, sizeof(err)) == 0, "{} loads");
    OK(c.metrics_listen[0] == '\0', "metrics.listen off by default");
    IS(c.metrics_max_keys, 1000, "metrics.max_keys 1000 by default");
    config_free(&c);
    OK(config_load(write_cfg("{\"metrics\": {\"listen\": \"127.0.0.1:9100\", "
                             "\"max_keys\": 0}}"),
                   &c, err, sizeof(err)) == 0 &&
           !strcmp(c.metrics_listen, "127.0.0.1:9100") &&
           c.metrics_max_keys == 0,
       "metrics.listen TCP and max_keys 0 load: %s", err);
    config_free(&c);
    OK(config_load(write_cfg("{\"metrics\": {\"listen\": \"10.1.2.3:65535\"}}"),
                   &c, err, sizeof(err)) == 0 &&
           !strcmp(c.metrics_listen, "10.1.2.3:65535"),
       "another IPv4 address and port 65535 load");
    config_free(&c);
    memset(path108, 'a', sizeof(path108));
    path108[0] = '/';
    path108[107] = '\0'; /* 107 bytes: the most a sun_path holds */
    snprintf(json, sizeof(json), "{\"metrics\": {\"listen\": \"%s\"}}",
             path108);
    OK(config_load(write_cfg(json), &c, err, sizeof(err)) == 0 &&
           !strcmp(c.metrics_listen, path108),
       "a 107-byte Unix path loads");
    config_free(&c);
    path108[107] = 'a';
    path108[108] = '\0';
    snprintf(json, sizeof(json), "{\"metrics\": {\"listen\": \"%s\"}}",
             path108);
    OK(config_load(write_cfg(json), &c, err, sizeof(err)) < 0 &&
           strstr(err, "metrics.listen: must be") &&
           strstr(err, "at most 107 bytes"),
       "a 108-byte Unix path is refused (%s)", err);
    OK(config_load(write_cfg("{\n  \"metrics\": {\n    \"max_keyz\": 1}}"), &c,
                   err, sizeof(err)) < 0 &&
           strstr(err, ":3:5: metrics.max_keyz: unknown key"),
       "a bad metrics key is located (%s)", err);
}

/* The "redis" section: off without it; every key and its default; the
 * three ways to say where Redis is (bad ones are in bad[]). */
static void test_redis(void)
{
    struct config c;
    char err[512], host[256], want[64], json[600], path107[108];

    OK(config_load(write_cfg("{}"), &c, err, sizeof(err)) == 0, "{} loads");
    IS(c.redis_mode, REDIS_OFF, "no redis section: off");
    IS(c.policies[0].global, 0, "scope local by default");
    config_free(&c);

    if (!OK(config_load(write_cfg("{\"redis\": {\"url\": "
                                  "\"unix:///run/redis/redis.sock\"}}"),
                        &c, err, sizeof(err)) == 0,
            "a section with only url loads"))
        DIAG("%s", err);
    IS(c.redis_mode, REDIS_MIRROR, "mode mirror by default");
    OK(!strcmp(c.redis_url, "unix:///run/redis/redis.sock"), "url kept");
    OK(!strcmp(c.redis_prefix, "resild:"), "prefix \"resild:\" by default");
    OK(c.redis_password[0] == '\0', "no password by default");
    IS(c.redis_db, 0, "db 0 by default");
    IS(c.redis_connect_timeout_ms, 1000, "connect_timeout_ms 1000");
    IS(c.redis_command_timeout_ms, 1000, "command_timeout_ms 1000");
    IS(c.redis_expected_hosts, 1, "expected_hosts 1");
    IS(c.redis_lease_ms, 100, "lease_ms 100");
    IS(c.redis_queue, 10000, "queue 10000");
    IS(c.redis_nsentinels, 0, "no sentinels");
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    snprintf(want, sizeof(want), "%.63s", host);
    OK(!strcmp(c.redis_origin, want) && strlen(c.redis_origin) <= 63,
       "origin: the host name, at most 63 bytes (%s)", c.redis_origin);
    config_free(&c);

    if (!OK(config_load(
                write_cfg("{\"redis\": {\"url\": \"tcp://redis.internal:6380\","
                          " \"mode\": \"shared\", \"password\": \"s3cret\","
                          " \"db\": 1000000, \"prefix\": \"prod:rs{1}:\","
                          " \"connect_timeout_ms\": 10,"
                          " \"command_timeout_ms\": 60000,"
                          " \"origin\": \"host-7.dc:a_b\","
                          " \"expected_hosts\": 1000, \"lease_ms\": 10000,"
                          " \"queue\": 1000000}}"),
                &c, err, sizeof(err)) == 0,
            "every key at an edge of its range loads"))
        DIAG("%s", err);
    OK(c.redis_mode == REDIS_SHARED &&
           !strcmp(c.redis_url, "tcp://redis.internal:6380") &&
           !strcmp(c.redis_password, "s3cret") && c.redis_db == 1000000 &&
           !strcmp(c.redis_prefix, "prod:rs{1}:") &&
           c.redis_connect_timeout_ms == 10 &&
           c.redis_command_timeout_ms == 60000 &&
           !strcmp(c.redis_origin, "host-7.dc:a_b") &&
           c.redis_expected_hosts == 1000 && c.redis_lease_ms == 10000 &&
           c.redis_queue == 1000000,
       "and every value is kept");
    config_free(&c);

    OK(config_load(write_cfg("{\"redis\": {\"url\": \"tcp://10.0.0.5:1\"}}"),
                   &c, err, sizeof(err)) == 0 &&
           !strcmp(c.redis_url, "tcp://10.0.0.5:1"),
       "tcp with an IPv4 address and port 1 loads");
    config_free(&c);
    OK(config_load(write_cfg("{\"redis\": {\"url\": \"tcp://[::1]:65535\"}}"),
                   &c, err, sizeof(err)) == 0,
       "tcp with [IPv6] and port 65535 loads: %s", err);
    config_free(&c);
    memset(path107, 'a', sizeof(path107));
    path107[0] = '/';
    path107[107] = '\0';
    snprintf(json, sizeof(json), "{\"redis\": {\"url\": \"unix://%s\"}}",
             path107);
    OK(config_load(write_cfg(json), &c, err, sizeof(err)) == 0,
       "a 107-byte socket path loads: %s", err);
    config_free(&c);
    OK(config_load(write_cfg("{\"redis\": {\"url\": \"tcp://h:1\", "
                             "\"password\": \"\"}}"),
                   &c, err, sizeof(err)) == 0 &&
           c.redis_password[0] == '\0',
       "an empty password (no AUTH) loads");
    config_free(&c);

    if (!OK(config_load(write_cfg("{\"redis\": {\"sentinels\": [\"s1:26379\","
                                  " \"10.0.0.2:26379\", \"[fe80::1]:26379\"],"
                                  " \"master_name\": \"mymaster\"}}"),
                        &c, err, sizeof(err)) == 0,
            "sentinels with master_name and no url load"))
        DIAG("%s", err);
    OK(c.redis_nsentinels == 3 && !strcmp(c.redis_sentinels[0], "s1:26379") &&
           !strcmp(c.redis_sentinels[2], "[fe80::1]:26379") &&
           !strcmp(c.redis_master_name, "mymaster") && !c.redis_url[0],
       "and are kept");
    config_free(&c);

    OK(config_load(write_cfg("{\n  \"redis\": {\"url\": \"tcp://h:1\",\n"
                             "    \"lease_ms\": 1}}"),
                   &c, err, sizeof(err)) < 0 &&
           strstr(err, ":3:5: redis.lease_ms: 1 is out of range"),
       "a bad redis key is located (%s)", err);
    OK(config_load(write_cfg("{\"policies\": {\n  \"a\": {\n    \"scope\": "
                             "\"global\"}}}"),
                   &c, err, sizeof(err)) < 0 &&
           strstr(err, ":3:5: policies.a.scope: \"global\" needs"),
       "a global scope without shared mode is located (%s)", err);
}

/* scope: policy-wide, inherited from "*" like critical; and each
 * limiter's share of expected_hosts. */
static void test_scope_and_share(void)
{
    struct config c;
    char err[512];
    const struct policy *p;

    if (!OK(config_load(
                write_cfg("{\"redis\": {\"url\": \"tcp://h:1\", \"mode\": "
                          "\"shared\", \"expected_hosts\": 3},"
                          " \"policies\": {\"*\": {\"scope\": \"global\"},"
                          "  \"a\": {\"limiter\": {\"rate\": 10, \"per\": "
                          "\"second\", \"burst\": 20, \"pause_ms\": 700}},"
                          "  \"b\": {\"scope\": \"local\", \"limiter\": "
                          "{\"rate\": 1200, \"per\": \"minute\", \"burst\": "
                          "2}},"
                          "  \"c\": {\"critical\": true}}}"),
                &c, err, sizeof(err)) == 0,
            "a shared config with global scopes loads"))
        DIAG("%s", err);
    p = config_match(&c, "a");
    OK(p->global, "a inherits scope global from *");
    OK(p->limiter_share.rate == 10 && p->limiter_share.per_ms == 3000 &&
           p->limiter_share.burst == 6 && p->limiter_share.pause_ms == 700,
       "a's share: rate 10 per 3000 ms, burst 20/3 = 6, pause_ms kept");
    p = config_match(&c, "b");
    OK(!p->global, "b's own scope local wins");
    OK(p->limiter_share.rate == 1200 && p->limiter_share.per_ms == 180000 &&
           p->limiter_share.burst == 1,
       "b's share (a local limiter has one too): burst max(1, 2/3) = 1");
    p = config_match(&c, "c");
    OK(p->global && p->critical, "c: global from *, critical its own");
    OK(!p->has_limiter && p->limiter_share.rate == 0 &&
           p->limiter_share.burst == 0,
       "no limiter: no share");
    OK(config_match(&c, "zzz")->global, "an unmatched key takes * (global)");
    /* A reload keeps the running mode (main.c): config_derive drops what
     * it cannot serve and derives the shares from the kept hosts. */
    c.redis_mode = REDIS_MIRROR;
    c.redis_expected_hosts = 1;
    config_derive(&c);
    p = config_match(&c, "a");
    OK(!p->global && !c.policies[0].global,
       "config_derive under mirror: every scope local");
    OK(p->limiter_share.per_ms == 1000 && p->limiter_share.burst == 20,
       "and one host's share is the whole limit");
    config_free(&c);

    if (!OK(config_load(
                write_cfg("{\"redis\": {\"url\": \"tcp://h:1\", \"mode\": "
                          "\"shared\"}, \"policies\": {\"g\": {\"scope\": "
                          "\"global\", \"limiter\": {\"rate\": 5, \"per_ms\": "
                          "100}}}}"),
                &c, err, sizeof(err)) == 0,
            "redis after policies: the scope check waits for it"))
        DIAG("%s", err);
    p = config_match(&c, "g");
    OK(p->global && !c.policies[0].global, "only g is global");
    OK(p->limiter_share.per_ms == 100 && p->limiter_share.burst == 5,
       "expected_hosts 1: the share is the limit");
    config_free(&c);
}

static void test_errors(void)
{
    size_t i;
    char err[512];
    struct config c;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *path = write_cfg(bad[i].json);
        int rc = config_load(path, &c, err, sizeof(err));
        OK(rc < 0 && strstr(err, bad[i].want) && strstr(err, path),
           "bad config %zu names file and '%s'", i, bad[i].want);
        if (rc == 0 || !strstr(err, bad[i].want))
            DIAG("got: %s", rc < 0 ? err : "(loaded)");
    }
    OK(config_load("/nonexistent/resild.json", &c, err, sizeof(err)) < 0 &&
           strstr(err, "/nonexistent/resild.json"),
       "missing file names the file");
}

/* Errors point at the line and column of the bad key (or, for a missing
 * one, of the object that lacks it), dotted patterns included. */
static void test_error_positions(void)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\n  \"policies\": {\n    \"binance.*\": {\n      \"breaker\": "
         "{\"open_ms\": 0}\n    }\n  }\n}\n",
         ":4:19: policies.binance.*.breaker.open_ms:"},
        {"{\"policies\": {\"a\": {\"limiter\": {\"per\": \"minute\"}}}}",
         ":1:21: policies.a.limiter.rate: is required"},
        {"{\"max_keys\": 1,\n\"nope\": 2}", ":2:1: nope: unknown key"},
        {"{\"policies\": {\"a.*\": {\"b\": 1}, \"a\": {\"b\": 2}}}",
         ":1:23: policies.a.*.b: unknown key"},
        {"{\n\"max_keys\": ,}", ":2:13:"}, /* jansson's own position */
    };
    size_t i;
    char err[512];
    struct config c;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = write_cfg(cases[i].json);
        int rc = config_load(path, &c, err, sizeof(err));
        OK(rc < 0 && strstr(err, cases[i].want), "error position %zu: '%s'", i,
           cases[i].want);
        if (rc == 0 || !strstr(err, cases[i].want))
            DIAG("got: %s", rc < 0 ? err : "(loaded)");
    }
}

/* Issue 8, defect 12a: a path that cannot be a configuration says what is
 * wrong with it, and names it. */
static void test_path_errors(void)
{
    char err[1024], sub[400], file[300];
    struct config c;
    FILE *f;

    OK(config_load(dir, &c, err, sizeof(err)) < 0 && strstr(err, dir) &&
           strstr(err, "is a directory") && !strstr(err, "expected"),
       "a directory: 'is a directory' (%s)", err);
    snprintf(sub, sizeof(sub), "%s/missing.json", dir);
    OK(config_load(sub, &c, err, sizeof(err)) < 0 && strstr(err, sub) &&
           strstr(err, "No such file"),
       "a missing file: named, 'No such file' (%s)", err);
    snprintf(sub, sizeof(sub), "%s/nodir/c.json", dir);
    OK(config_load(sub, &c, err, sizeof(err)) < 0 && strstr(err, sub) &&
           strstr(err, "directory") && strstr(err, "/nodir: No such file"),
       "a missing directory on the way: the directory named (%s)", err);
    snprintf(file, sizeof(file), "%s/plain", dir);
    f = fopen(file, "w");
    fclose(f);
    OK(config_load(file, &c, err, sizeof(err)) < 0 && strstr(err, file) &&
           strstr(err, "is empty"),
       "an empty file: 'is empty' (%s)", err);
    snprintf(sub, sizeof(sub), "%s/x.json", file);
    OK(config_load(sub, &c, err, sizeof(err)) < 0 && strstr(err, sub) &&
           strstr(err, "Not a directory"),
       "a file used as a directory: 'Not a directory' (%s)", err);
    f = fopen(file, "w");
    fputs("{}", f);
    fclose(f);
    chmod(file, 0);
    f = fopen(file, "r");
    if (f) { /* root reads anything */
        fclose(f);
        OK(1, "# skip an unreadable file: running as root");
    } else {
        OK(config_load(file, &c, err, sizeof(err)) < 0 && strstr(err, file) &&
               strstr(err, "Permission denied"),
           "an unreadable file: 'Permission denied' (%s)", err);
    }
    unlink(file);
}

/* Issue 8, defect 11: the worst-case memory of a configuration, and a
 * configuration whose worst case is over max_memory_mb refused. */
#define BIG_WINDOW                                                             \
    "\"policies\": {\"binance.*\": {\"breaker\": {\"window\": "                \
    "{\"type\": \"time\", \"size\": 3600}}}, \"okx\": {}}"

static void test_memory(void)
{
    struct config c;
    struct memory_estimate m;
    char err[1024], line[512], want[128];
    const char *path;
    uint64_t figure;

    OK(config_load(NULL, &c, err, sizeof(err)) == 0,
       "defaults path loads, memory-checked");
    OK(c.max_memory_mb > 0, "default max_memory_mb %llu MiB (half of RAM)",
       (unsigned long long)c.max_memory_mb);
    memory_estimate(&c, &m);
    IS(m.key_bytes >= sizeof(struct key) + 100, 1,
       "a default key costs its struct and a 100-call window");
    IS(m.total_bytes,
       m.keys_bytes + m.permits_bytes + m.parked_bytes + m.conns_bytes +
           m.analytics_bytes,
       "the total is the sum of the parts");
    IS(m.analytics_bytes >= (uint64_t)c.errors_max_series * 7000, 1,
       "error analytics: errors.max_series full series");
    IS(m.permits_bytes >= 65536 * sizeof(struct permit), 1,
       "permits: max_permits x struct permit");
    IS(m.conns_bytes, 1024 * m.conn_bytes, "connections: max_clients x one");
    IS(m.conn_bytes >= 65536 + 262144, 1,
       "one connection: max_frame_bytes in, max_output_bytes out");
    config_free(&c);

    /* 20,000 keys of a 3600-bucket time window: ~1.1 GB (16-byte
     * buckets; 1.7 GB when a bucket took 24). */
    path = write_cfg(
        "{\"max_keys\": 20000, \"max_memory_mb\": 1073741824, " BIG_WINDOW "}");
    if (!OK(config_load(path, &c, err, sizeof(err)) == 0,
            "big window under a big limit loads"))
        DIAG("%s", err);
    memory_estimate(&c, &m);
    OK(!strcmp(m.key_policy->pattern, "binance.*"),
       "the costliest policy is the time window's (%s)", m.key_policy->pattern);
    IS(m.key_bytes >= sizeof(struct key) + 3600 * sizeof(struct breaker_bucket),
       1, "its key holds 3600 buckets");
    IS(m.biggest, MEMORY_KEYS, "keys dominate");
    OK(m.keys_bytes > 20000ull * 3600 * 16 &&
           m.keys_bytes < 20000ull * (3600 * 16 + 2000),
       "20000 keys x ~58 KB (%.1f MiB)", m.keys_bytes / 1048576.0);
    figure = memory_mib(&m);
    memory_describe(&m, &c, line, sizeof(line));
    OK(strstr(line, "20000 x") && strstr(line, "'binance.*'") &&
           strstr(line, "3600 s time window") && strstr(line, "connections"),
       "described: %s", line);
    config_free(&c);

    /* Stats blocks sit on at most max_keys keys: a metrics.max_keys far
     * above max_keys (all keys) costs nothing more (it once added 10M
     * blocks, 1.4 GB, and refused this 1000-key configuration). */
    path = write_cfg("{\"max_keys\": 1000, \"max_memory_mb\": 1000, "
                     "\"metrics\": {\"max_keys\": 10000000}}");
    if (!OK(config_load(path, &c, err, sizeof(err)) == 0,
            "metrics.max_keys above max_keys: loads under 1000 MiB"))
        DIAG("%s", err);
    else {
        uint64_t with = 0;
        memory_estimate(&c, &m);
        with = m.keys_bytes;
        c.metrics_max_keys = 999;
        memory_estimate(&c, &m);
        IS(with, m.keys_bytes,
           "metrics.max_keys 10M costs what max_keys blocks cost");
        config_free(&c);
    }

    path = write_cfg(
        "{\"max_keys\": 20000, \"max_memory_mb\": 1024, " BIG_WINDOW "}");
    snprintf(want, sizeof(want), "worst case %llu MiB (20000 keys x",
             (unsigned long long)figure);
    OK(config_load(path, &c, err, sizeof(err)) < 0 && strstr(err, path) &&
           strstr(err, want) && strstr(err, "policy 'binance.*'") &&
           strstr(err, "3600 s time window") &&
           strstr(err, "exceeds max_memory_mb 1024"),
       "over max_memory_mb: refused, naming the figure and the policy (%s)",
       err);
    path = write_cfg("{\"max_keys\": 5000, \"max_memory_mb\": 1024, " BIG_WINDOW
                     "}");
    if (!OK(config_load(path, &c, err, sizeof(err)) == 0,
            "5000 such keys fit in 1024 MiB"))
        DIAG("%s", err);
    else
        config_free(&c);
    path = write_cfg("{\"max_memory_mb\": 200}");
    OK(config_load(path, &c, err, sizeof(err)) < 0 &&
           strstr(err, "1024 clients (max_clients)") &&
           strstr(err, "exceeds max_memory_mb 200"),
       "connections the biggest part: named (%s)", err);
    path = write_cfg("{\"max_memory_mb\": 200, \"max_clients\": 64, "
                     "\"errors\": {\"max_series\": 1000}}");
    if (!OK(config_load(path, &c, err, sizeof(err)) == 0,
            "fewer clients and error series: fits in 200 MiB"))
        DIAG("%s", err);
    else
        config_free(&c);
}

/* Newlines to " | ", so a captured output fits on one TAP line. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n')
            *s = s[1] ? '|' : '\0';
}

/* resild -t prints the figure; a refused configuration exits 1. */
static void test_check_flag(void)
{
    const char *b = getenv("BUILD");
    char cmd[768], out[2048], bin[256];
    size_t n;
    FILE *f;
    const char *path;
    int st;

    snprintf(bin, sizeof(bin), "%s/resild", b ? b : "build");
    if (access(bin, X_OK) < 0) {
        OK(1, "# skip resild -t: %s not built", bin);
        return;
    }
    path = write_cfg(
        "{\"max_keys\": 20000, \"max_memory_mb\": 1073741824, " BIG_WINDOW "}");
    snprintf(cmd, sizeof(cmd), "%s -t -c %s 2>&1", bin, path);
    f = popen(cmd, "r");
    n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[n] = '\0';
    st = f ? pclose(f) : -1;
    one_line(out);
    OK(st == 0 && strstr(out, ": ok (3 policies)") &&
           strstr(out, "worst-case memory ") && strstr(out, "keys ") &&
           strstr(out, "'binance.*'") && strstr(out, "connections ") &&
           strstr(out, "max_memory_mb"),
       "resild -t prints the worst case and its parts: %s", out);
    path = write_cfg(
        "{\"max_keys\": 20000, \"max_memory_mb\": 1024, " BIG_WINDOW "}");
    snprintf(cmd, sizeof(cmd), "%s -t -c %s 2>&1", bin, path);
    f = popen(cmd, "r");
    n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[n] = '\0';
    st = f ? pclose(f) : -1;
    one_line(out);
    OK(WIFEXITED(st) && WEXITSTATUS(st) == 1 &&
           strstr(out, "exceeds max_memory_mb 1024"),
       "resild -t refuses a worst case over max_memory_mb: %s", out);
}

/* config_load_text: the same checks as a file, errors named "(text)". */
static void test_load_text(void)
{
    struct config c;
    char err[512];

    OK(config_load_text("{\"max_keys\": 7}", &c, err, sizeof(err)) == 0 &&
           c.max_keys == 7,
       "config_load_text: a JSON text loads");
    config_free(&c);
    OK(config_load_text("{\"max_keys\": 0}", &c, err, sizeof(err)) < 0 &&
           strstr(err, "(text)") && strstr(err, "max_keys"),
       "a bad value names (text) and the key: %s", err);
    OK(config_load_text("{\n \"a\": ", &c, err, sizeof(err)) < 0 &&
           strstr(err, "(text):2:"),
       "a syntax error names (text):line: %s", err);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_load_text();
    test_defaults();
    test_connection_bounds();
    test_inheritance_and_match();
    test_pattern_match();
    test_pattern_model();
    test_pattern_worst_case();
    test_breaker_options();
    test_metrics();
    test_redis();
    test_scope_and_share();
    test_errors();
    test_error_positions();
    test_path_errors();
    test_memory();
    test_check_flag();
    unlink(write_cfg("{}"));
    rmdir(dir);
    return tap_done();
}
