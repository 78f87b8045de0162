/*
 * test_totals.c - the core's host-wide totals (state.h struct core_totals)
 * against a walk of every key, through random operations under a fake
 * clock: acquires that park, reports with latencies, permit expiry, lost
 * heartbeats, forces with TTLs, resets, remote opens and closes, a
 * disconnect, reloads that change which keys have a limiter, a bulkhead or
 * a critical policy, and a snapshot restore (export, import into another
 * core).  Then what `health` and the metrics page show from them: _other
 * rows equal to the sums over the keys without their own series, and
 * health's counts and lists equal to a walk's (issue 14: both used to walk
 * every key per request).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "core.h"
#include "methods.h"
#include "metrics.h"
#include "proto.h"
#include "tap.h"

static const char *cfg_a =
    "{\"max_permits\": 256, \"max_parked\": 64, \"metrics\": {\"max_keys\": 5},"
    " \"policies\": {"
    " \"*\": {\"breaker\": {\"failure_threshold\": 2, \"open_ms\": 300,"
    "        \"failure_rate_threshold\": 0}, \"permit_ttl_ms\": 400},"
    " \"v\": {\"limiter\": {\"rate\": 20, \"per\": \"second\"}},"
    " \"v.*\": {\"limiter\": {\"rate\": 5, \"per\": \"second\"},"
    "          \"bulkhead\": {\"max_concurrent\": 2, \"queue\": 3}},"
    " \"feed.*\": {\"heartbeat\": {\"timeout_ms\": 200}},"
    " \"crit.*\": {\"critical\": true, \"bulkhead\": {\"max_concurrent\": 1}}"
    "}}";

/* Another set: bulkheads and limiters move, critical changes hands. */
static const char *cfg_b =
    "{\"max_permits\": 256, \"max_parked\": 64, \"metrics\": {\"max_keys\": 5},"
    " \"policies\": {"
    " \"*\": {\"breaker\": {\"failure_threshold\": 3, \"open_ms\": 200,"
    "        \"failure_rate_threshold\": 0}, \"permit_ttl_ms\": 300,"
    "        \"bulkhead\": {\"max_concurrent\": 3}},"
    " \"v.*\": {\"critical\": true},"
    " \"feed.*\": {\"heartbeat\": {\"timeout_ms\": 200},"
    "             \"limiter\": {\"rate\": 3, \"per\": \"second\"}}"
    "}}";

static const char *names[] = {"v.a", "v.b",     "v.c",     "feed.x", "feed.y",
                              "crit.p", "crit.q", "_other", "zz",     "aa.b",
                              "v"};
#define NNAMES (sizeof(names) / sizeof(names[0]))

static void answer(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err)
{
    (void)c, (void)msgid, (void)k, (void)res, (void)err;
}

static void load(struct config *cfg, const char *json)
{
    char err[256];

    if (config_load_text(json, cfg, err, sizeof(err)) < 0) {
        DIAG("config: %s", err);
        exit(1);
    }
}

/* The totals as a walk of every key finds them. */
static void walk_totals(const struct resild *d, struct core_totals *t)
{
    const struct key *k;
    size_t b = 0;
    unsigned i;

    memset(t, 0, sizeof(*t));
    for (k = core_key_next(d, NULL, &b); k; k = core_key_next(d, k, &b)) {
        unsigned v = (unsigned)breaker_visible_state(&k->br);
        enum key_health h = core_key_health(k);
        if (v)
            t->vis[v]++;
        if (h)
            t->health[h]++;
        t->open += (uint32_t)breaker_is_open(&k->br);
        if (k->core_ready && k->policy->critical) {
            t->crit_up += h == HEALTH_OPERATIONAL;
            t->crit_down += h == HEALTH_UNAVAILABLE;
        }
        for (i = 0; k->stats && i < ADMIT_NREASONS; i++)
            t->dec[i] += k->stats->decisions[i];
        t->opens += k->br.opens;
        for (i = 0; k->stats && i <= KEY_LATENCY_BUCKETS; i++)
            t->lat_hist[i] += k->stats->lat_hist[i];
        t->lat_sum_ms += k->stats ? k->stats->lat_sum_ms : 0;
        if (k->policy->has_limiter)
            t->nlim++;
        if (k->policy->has_bulkhead) {
            t->nbh++;
            t->bh_in_use += k->bh.in_use;
            t->bh_queued += k->q_len;
        }
    }
}

/* 1 when every key keeps a stats block (metrics.max_keys covers them
 * all): only then can a walk sum decisions and latencies. */
static int all_stats(const struct resild *d)
{
    const struct key *k;
    size_t b = 0;

    for (k = core_key_next(d, NULL, &b); k; k = core_key_next(d, k, &b))
        if (!k->stats)
            return 0;
    return 1;
}

static void no_series_sums(struct core_totals *t)
{
    memset(t->dec, 0, sizeof(t->dec));
    memset(t->lat_hist, 0, sizeof(t->lat_hist));
    t->lat_sum_ms = 0;
}

static int same_totals(const struct resild *d, const char *when)
{
    struct core_totals t, dt = d->tot;

    walk_totals(d, &t);
    if (!all_stats(d)) { /* keys past the series cap keep no stats */
        no_series_sums(&t);
        no_series_sums(&dt);
    }
    if (!memcmp(&t, &dt, sizeof(t)))
        return 1;
    DIAG("%s: totals differ from a walk: open %u/%u, crit %u,%u/%u,%u, "
         "health %u,%u/%u,%u, vis1 %u/%u, opens %llu/%llu, in_use %llu/%llu, "
         "queued %llu/%llu, nlim %u/%u, nbh %u/%u, dec0 %llu/%llu, lat %llu/%llu",
         when, d->tot.open, t.open, d->tot.crit_up, d->tot.crit_down,
         t.crit_up, t.crit_down, d->tot.health[1], d->tot.health[2],
         t.health[1], t.health[2], d->tot.vis[1], t.vis[1],
         (unsigned long long)d->tot.opens, (unsigned long long)t.opens,
         (unsigned long long)d->tot.bh_in_use, (unsigned long long)t.bh_in_use,
         (unsigned long long)d->tot.bh_queued, (unsigned long long)t.bh_queued,
         d->tot.nlim, t.nlim, d->tot.nbh, t.nbh,
         (unsigned long long)d->tot.dec[0], (unsigned long long)t.dec[0],
         (unsigned long long)d->tot.lat_sum_ms, (unsigned long long)t.lat_sum_ms);
    return 0;
}

static struct key *key(struct resild *d, unsigned i, uint64_t now)
{
    struct key *k = NULL;

    core_key(d, names[i], strlen(names[i]), now, &k);
    return k;
}

/* One random operation at now. */
static void step(struct resild *d, struct caller *c, unsigned r, uint64_t now)
{
    struct key *k = key(d, r % NNAMES, now);
    unsigned op = (r / NNAMES) % 12;
    struct admit_result res;
    const struct key *culprit;
    struct report_result rr;

    if (!k)
        return;
    switch (op) {
    case 0:
    case 1:
    case 2:
        core_acquire(d, c, k, 1, (r >> 8) % 5 == 0, (r >> 10) % 3 ? 0 : 250,
                     r, now, &res, &culprit);
        break;
    case 3:
    case 4:
    case 5: {
        struct permit *p = c->permits;
        struct outcome o = {.permit = 0,
                            .kind = (r >> 9) % 3 ? OUT_FAILURE : OUT_SUCCESS,
                            .cls = "network",
                            .severity = -1,
                            .transient = -1,
                            .latency_ms = (int)((r >> 4) % 3000),
                            .attempt = 1,
                            .idempotent = 1};
        if (p && (r >> 7) % 2) {
            o.permit = p->id;
            k = p->key;
        }
        core_report(d, c, &o, k->name, k->len, now, &rr);
        break;
    }
    case 6:
        core_force(d, k, (enum breaker_force)(1 + (r >> 8) % 3), "op", 2,
                   (r >> 11) % 2 ? 150 : 0, 0, now);
        break;
    case 7:
        core_reset(d, k, 0, now);
        break;
    case 8:
        core_heartbeat(d, k, now);
        if ((r >> 9) % 2)
            core_add_latency(d, k, (r >> 3) % 700);
        break;
    case 9: {
        struct remote_change rc = {.kind = (r >> 8) % 2 ? REMOTE_OPEN
                                                        : REMOTE_CLOSE,
                                   .open_left_ms = 100,
                                   .open_for_ms = 100,
                                   .origin = "other"};
        core_remote(d, k, &rc, now);
        break;
    }
    case 10:
        core_cancel(d, c, r - NNAMES * 12, now);
        break;
    default:
        core_advance(d, k, now);
        break;
    }
}

/* The sample line of the page starting with prefix: its value, or -1. */
static double sample(const char *page, const char *prefix)
{
    const char *p = page;
    size_t n = strlen(prefix);

    while (p && *p) {
        if (!strncmp(p, prefix, n))
            return strtod(p + n, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

/* The metrics page's _other rows against sums over the keys after the
 * first max_keys (5) in name order, "_other" itself folded. */
static void check_page(struct resild *d, uint64_t now)
{
    struct key *page[64];
    size_t total, n, i;
    int more;
    uint64_t ok = 0, closed = 0, open = 0, opens = 0, in_use = 0, lat = 0;
    uint64_t own_ok = 0, own_lat = 0;
    unsigned own = 0, own_bh = 0, nbh = 0;
    struct prom_buf b;
    char want[160];

    n = keys_page(&d->keys, NULL, 0, NULL, 0, page, 64, &total, &more);
    for (i = 0; i < n; i++) {
        const struct key *k = page[i];
        int mine = own < 5 && strcmp(k->name, "_other") != 0;
        unsigned v = (unsigned)breaker_visible_state(&k->br);
        if (mine) {
            own++;
            own_bh += k->policy->has_bulkhead;
            own_ok += k->stats ? k->stats->decisions[ADMIT_OK] : 0;
            own_lat += k->stats ? k->stats->lat_sum_ms : 0;
            continue;
        }
        closed += v == BREAKER_VIS_CLOSED;
        open += v == BREAKER_VIS_OPEN;
        opens += k->br.opens;
        if (k->policy->has_bulkhead) {
            nbh++;
            in_use += k->bh.in_use;
        }
    }
    (void)own_bh;
    /* The other keys keep no per-key figures (struct key_stats): their
     * decisions and latencies are the totals (checked against a walk by
     * the run where every key has its series) less the own keys'. */
    ok = d->tot.dec[ADMIT_OK] - own_ok;
    lat = d->tot.lat_sum_ms - own_lat;
    prom_init(&b, 1 << 20);
    IS(metrics_render(d, now, &b), 0, "the page renders");
    snprintf(want, sizeof(want), "%llu", (unsigned long long)ok);
    OK(sample(b.data, "resild_decisions_total{key=\"_other\",result=\"allow\","
                      "reason=\"ok\"} ") == (double)ok,
       "_other decisions ok = the sum over the other keys (%s)", want);
    OK(sample(b.data,
              "resild_breaker_state{key=\"_other\",state=\"closed\"} ") ==
               (double)closed &&
           sample(b.data,
                  "resild_breaker_state{key=\"_other\",state=\"open\"} ") ==
               (double)open,
       "_other states: %llu closed, %llu open", (unsigned long long)closed,
       (unsigned long long)open);
    OK(sample(b.data, "resild_breaker_opens_total{key=\"_other\"} ") ==
           (double)opens,
       "_other opens %llu", (unsigned long long)opens);
    OK(sample(b.data, "resild_report_latency_ms_sum{key=\"_other\"} ") ==
           (double)lat,
       "_other latency sum %llu", (unsigned long long)lat);
    OK(nbh ? sample(b.data, "resild_bulkhead_in_use{key=\"_other\"} ") ==
                 (double)in_use
           : sample(b.data, "resild_bulkhead_in_use{key=\"_other\"} ") == -1,
       "_other in_use %llu over %u keys", (unsigned long long)in_use, nbh);
    OK(sample(b.data, "resild_limiter_available{key=\"_other\"} ") == -1,
       "no _other row for the limiter gauge");
    prom_free(&b);
}

/* health's overall and counts against a walk. */
static void check_health(struct resild *d, struct rpc_client *rc,
                         msgpack_sbuffer *sb, uint64_t now)
{
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_zone zone;
    msgpack_unpacked u;
    struct proto_msg m;
    const char *why;
    const msgpack_object *res;
    size_t off = 0, nserv = 0, nopen = 0;
    int unhealthy = 0, degraded = 0;
    const struct key *k;
    size_t b = 0;
    char overall[16] = "";

    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 9);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "health", 6);
    msgpack_pack_array(&pk, 0);
    msgpack_zone_init(&zone, 1024);
    msgpack_sbuffer_clear(sb);
    if (proto_decode(req.data, req.size, &zone, &m, &why) == 0)
        methods_dispatch(d, rc, &m, rc->pk, now);
    /* after the call: it applied what time changed */
    for (k = core_key_next(d, NULL, &b); k; k = core_key_next(d, k, &b)) {
        enum key_health h = core_key_health(k);
        int crit = k->core_ready && k->policy->critical;
        nserv += h != HEALTH_OPERATIONAL || crit;
        nopen += breaker_is_open(&k->br);
        degraded |= h != HEALTH_OPERATIONAL;
        unhealthy |= crit && h == HEALTH_UNAVAILABLE;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, sb->data, sb->size, &off) ==
            MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 4) {
        res = &u.data.via.array.ptr[3];
        proto_str_copy(proto_map_get(res, "overall"), overall,
                       sizeof(overall));
        OK(!strcmp(overall, unhealthy  ? "unhealthy"
                            : degraded ? "degraded"
                                       : "healthy"),
           "health overall %s", overall);
        IS(proto_map_get(res, "services")->via.map.size, nserv,
           "health lists every service not operational or critical");
        IS(proto_map_get(res, "open")->via.array.size, nopen,
           "health lists every open key");
    } else {
        OK(0, "health answered");
    }
    msgpack_unpacked_destroy(&u);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&req);
}

/* 6000 random operations from *now with reloads between configs ca and
 * cb (and back) and a disconnect; the totals are checked after each.
 * Returns how many checks failed. */
static int random_run(struct resild *d, struct caller *c, uint64_t *nowp,
                      const char *ca, const char *cb)
{
    struct config cfg;
    uint64_t now = *nowp, seed = 12345;
    int i, bad = 0;

    for (i = 0; i < 6000; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        step(d, c, (unsigned)(seed >> 20), now);
        now += seed % 7;
        if (i % 50 == 0) {
            core_tick(d, now);
            core_wake(d, now);
        }
        if (i == 2000) {
            load(&cfg, cb);
            IS(core_rebind(d, &cfg, now), 0, "reload to other policies");
        }
        if (i == 4000) {
            load(&cfg, ca);
            IS(core_rebind(d, &cfg, now), 0, "and back");
        }
        if (i == 5000)
            core_caller_gone(d, c, now);
        if (!same_totals(d, "step") && bad++ > 3)
            break;
    }
    *nowp = now;
    return bad;
}

/* cfg with metrics.max_keys 100 instead of 5: every key has its series. */
static const char *wide(const char *cfg)
{
    static char buf[2][2048];
    static int n;
    char *o = buf[n++ % 2];
    const char *p = strstr(cfg, "\"max_keys\": 5");
    size_t at = p ? (size_t)(p - cfg) : 0;

    snprintf(o, sizeof(buf[0]), "%.*s\"max_keys\": 100%s", (int)at, cfg,
             p ? p + strlen("\"max_keys\": 5") : "");
    return o;
}

/* A key whose heartbeats were lost keeps that mark through a reload to a
 * policy without heartbeats (it stays unavailable until a beat comes):
 * the beat that clears it must reach the totals, or `health` goes on
 * calling the key unavailable -- the host "unhealthy" for a critical one
 * -- until something else touches the key. */
static void test_beat_after_reload(void)
{
    static const char *beats =
        "{\"policies\": {\"feed.*\": {\"critical\": true,"
        " \"heartbeat\": {\"timeout_ms\": 200}}}}";
    static const char *none = "{\"policies\": {\"feed.*\": {\"critical\": true}}}";
    struct resild d;
    struct config cfg;
    struct key *k = NULL;
    uint64_t now = 1000;

    load(&cfg, beats);
    core_init(&d, &cfg, now, 42);
    core_key(&d, "feed.x", 6, now, &k);
    core_heartbeat(&d, k, now);
    core_tick(&d, now + 300);
    OK(k->hb.lost && d.tot.crit_down == 1, "silent for 300 ms: lost");
    load(&cfg, none);
    IS(core_rebind(&d, &cfg, now + 300), 0, "reload: no heartbeat policy");
    OK(k->hb.lost && core_key_health(k) == HEALTH_UNAVAILABLE,
       "the loss is kept (unavailable)");
    core_heartbeat(&d, k, now + 400);
    OK(!k->hb.lost && core_key_health(k) == HEALTH_OPERATIONAL,
       "a beat ends it");
    OK(same_totals(&d, "beat after reload") && d.tot.crit_down == 0 &&
           d.tot.health[HEALTH_UNAVAILABLE] == 0,
       "and the totals (health's counts) see it: no critical key down");
    core_free(&d);
}

int main(void)
{
    struct resild d, d2;
    struct config cfg;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct rpc_client rc;
    struct key_export *ex = malloc(sizeof(*ex));
    uint64_t now = 1000;
    const struct key *k;
    size_t b = 0;
    int bad = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    methods_client_init(&rc, &pk, NULL);
    rc.caller.answer = answer;
    load(&cfg, cfg_a);
    core_init(&d, &cfg, now, 42);
    OK(same_totals(&d, "start"), "no keys: all totals 0");
    test_beat_after_reload();
    {
        /* With every key's series (max_keys 100 > 11 names): decisions
         * and latencies are checked key by key too. */
        struct resild df;
        uint64_t t = now;
        load(&cfg, wide(cfg_a));
        core_init(&df, &cfg, t, 42);
        IS(random_run(&df, &rc.caller, &t, wide(cfg_a), wide(cfg_b)), 0,
           "every key with its series: the totals, decisions and latencies "
           "included, equal a walk after each of 6000 random operations");
        OK(all_stats(&df) && df.tot.dec[ADMIT_OK] > 0 &&
               df.tot.lat_sum_ms > 0,
           "(every key kept its stats; %llu allowed, %llu ms reported)",
           (unsigned long long)df.tot.dec[ADMIT_OK],
           (unsigned long long)df.tot.lat_sum_ms);
        core_caller_gone(&df, &rc.caller, t);
        core_free(&df);
    }
    bad = random_run(&d, &rc.caller, &now, cfg_a, cfg_b);
    IS(bad, 0, "the totals equal a walk of every key after each of 6000 "
               "random operations");
    {
        /* Only the first max_keys (5) + 1 keys in name order keep stats,
         * and each of the first 5 has them. */
        struct key *pg[16];
        size_t tot, n, j, with = 0, firsts = 0;
        int more;
        for (k = core_key_next(&d, NULL, &b); k; k = core_key_next(&d, k, &b))
            with += k->stats != NULL;
        b = 0;
        n = keys_page(&d.keys, NULL, 0, NULL, 0, pg, 5, &tot, &more);
        for (j = 0; j < n; j++)
            firsts += pg[j]->stats != NULL;
        OK(with <= 6 && firsts == n && n == 5,
           "stats blocks: %zu of %zu keys, the first %zu in name order "
           "among them",
           with, (size_t)d.keys.count, firsts);
    }
    check_page(&d, now);
    check_health(&d, &rc, &sb, now);
    core_tick(&d, now + 5000); /* forces and opens run out */
    OK(same_totals(&d, "later"), "and after time passed");
    check_health(&d, &rc, &sb, now + 5000);

    /* Snapshot restore: every key into another core. */
    load(&cfg, cfg_a);
    core_init(&d2, &cfg, 77, 43);
    for (k = core_key_next(&d, NULL, &b); k; k = core_key_next(&d, k, &b)) {
        core_export_key(k, now + 5000, ex);
        core_import_key(&d2, ex, 77);
    }
    OK(same_totals(&d2, "restore"), "a restored core's totals equal a walk");
    IS(d2.tot.opens, d.tot.opens, "the opens came along");
    IS(d2.tot.open, d.tot.open, "and so did the open breakers");
    check_health(&d2, &rc, &sb, 77);
    core_reset(&d2, keys_find(&d2.keys, "v.a", 3), 0, 78);
    OK(same_totals(&d2, "reset"), "after a reset");
    core_caller_gone(&d, &rc.caller, now + 5000);
    core_free(&d);
    core_free(&d2);
    free(ex);
    msgpack_sbuffer_destroy(&sb);
    return tap_done();
}
