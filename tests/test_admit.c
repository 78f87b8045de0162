/*
 * test_admit.c - the admission pipeline under a fake clock, through its
 * public API with fake callers (no sockets): bulkhead, hierarchical
 * limiters all or nothing, reserve and the critical lane, parking (FIFO,
 * served on release or refill, expired at the deadline, dropped with its
 * connection), venue pauses and re-sync, shadow policies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admit.h"
#include "core.h"
#include "methods.h"
#include "tap.h"

static char dir[] = "/tmp/resild-test-admit.XXXXXX";

/* A caller whose later answers land in an sbuffer we can decode. */
struct fake {
    struct rpc_client rc; /* first: the answer callback finds us */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int flushes;
};

static void fake_flush(struct rpc_client *rc)
{
    ((struct fake *)rc)->flushes++;
}

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof(*f));
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
    methods_client_init(&f->rc, &f->pk, fake_flush);
}

static void fake_free(struct fake *f)
{
    msgpack_sbuffer_destroy(&f->sb);
}

/* Decode the n-th answer in f's buffer: allow, reason, msgid. */
static int fake_answer(struct fake *f, int nth, int *allow, char *reason,
                       uint32_t *msgid)
{
    msgpack_unpacked u;
    size_t off = 0;
    int i = 0, found = 0;

    msgpack_unpacked_init(&u);
    while (msgpack_unpack_next(&u, f->sb.data, f->sb.size, &off) ==
           MSGPACK_UNPACK_SUCCESS) {
        if (i++ == nth) {
            const msgpack_object *res = &u.data.via.array.ptr[3];
            *msgid = (uint32_t)u.data.via.array.ptr[1].via.u64;
            *allow = proto_map_get(res, "allow")->via.boolean;
            proto_str_copy(proto_map_get(res, "reason"), reason, 24);
            found = 1;
            break;
        }
    }
    msgpack_unpacked_destroy(&u);
    return found;
}

static void load(struct resild *d, const char *json)
{
    char err[256];
    struct config cfg;

    if (config_load_text(json, &cfg, err, sizeof(err)) < 0) {
        DIAG("config: %s", err);
        exit(1);
    }
    core_init(d, &cfg, 0, 42);
}

static struct key *key(struct resild *d, const char *name, uint64_t now)
{
    struct key *k;

    if (keys_get(&d->keys, name, strlen(name), &d->cfg, now, &k) < 0 ||
        admit_prepare(d, k, now) < 0)
        return NULL;
    return k;
}

static int acquire(struct resild *d, struct fake *f, struct key *k,
                   uint64_t cost, int critical, uint64_t wait_ms, uint64_t now,
                   struct admit_result *res)
{
    const struct key *culprit;

    return admit_acquire(d, &f->rc.caller, k, cost, critical, wait_ms, 7, now,
                         res, &culprit);
}

static const char *exchange =
    "{\"policies\": {"
    " \"*\": {\"breaker\": {\"failure_threshold\": 2, \"open_ms\": 1000,"
    "        \"failure_rate_threshold\": 0}},"
    " \"binance\": {\"limiter\": {\"rate\": 10, \"per\": \"second\"},"
    "              \"reserve\": 2},"
    " \"binance.*\": {\"limiter\": {\"rate\": 100, \"per\": \"second\","
    "                \"burst\": 5},"
    "              \"bulkhead\": {\"max_concurrent\": 3, \"queue\": 2}},"
    " \"okx\": {\"breaker\": {\"critical_probe_per_s\": 1}},"
    " \"shadowed\": {\"shadow\": true, \"bulkhead\": {\"max_concurrent\": 1}},"
    " \"ttl\": {\"permit_ttl_ms\": 500, \"bulkhead\": {\"max_concurrent\": 2}}"
    "}}";

static void test_hierarchy_all_or_nothing(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *orders, *ws, *acct;
    uint64_t before_orders;

    load(&d, exchange);
    fake_init(&f);
    orders = key(&d, "binance.orders", 0);
    ws = key(&d, "binance.ws", 0);
    acct = keys_find(&d.keys, "binance", 7);
    OK(acct && orders->nanc == 1 && orders->up == acct,
       "binance.orders has the account limiter as ancestor");
    /* Account burst 10, reserve 2: 8 normal tokens across endpoints. */
    acquire(&d, &f, orders, 4, 0, 0, 0, &res);
    OK(res.allow, "orders cost 4 allowed");
    acquire(&d, &f, ws, 4, 0, 0, 0, &res);
    OK(res.allow, "ws cost 4 allowed (account now at the reserve)");
    before_orders =
        limiter_available(&orders->lim, &orders->policy->limiter, 0);
    acquire(&d, &f, orders, 1, 0, 0, 0, &res);
    OK(!res.allow && res.reason == ADMIT_RATE_LIMITED,
       "account limiter denies the next normal request");
    IS(res.retry_after_ms, 100, "exact wait for one account token (10/s)");
    IS(limiter_available(&orders->lim, &orders->policy->limiter, 0),
       before_orders, "the denial took nothing from the endpoint limiter");
    acquire(&d, &f, orders, 1, 1, 0, 0, &res);
    OK(res.allow, "a critical request may use the reserve");
    IS(limiter_available(&acct->lim, &acct->policy->limiter, 0), 1,
       "critical took one reserved token");
    fake_free(&f);
    core_free(&d);
}

static void test_bulkhead_and_release(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k;
    uint64_t ids[3];
    int i;

    load(&d, exchange);
    fake_init(&f);
    k = key(&d, "binance.orders", 0);
    for (i = 0; i < 3; i++) {
        acquire(&d, &f, k, 1, 0, 0, (uint64_t)i * 1000, &res);
        ids[i] = res.permit;
    }
    OK(res.allow, "three permits fit max_concurrent 3");
    acquire(&d, &f, k, 1, 1, 0, 3000, &res);
    OK(!res.allow && res.reason == ADMIT_BULKHEAD_FULL,
       "fourth denied bulkhead_full, critical too (no bulkhead reserve)");
    admit_permit_done(&d, permits_find(&d.permits, ids[0]));
    acquire(&d, &f, k, 1, 0, 0, 3000, &res);
    OK(res.allow, "a released permit frees its slot at once");
    IS(k->bh.in_use, 3, "in_use back at 3");
    fake_free(&f);
    core_free(&d);
}

static void test_parking(void)
{
    struct resild d;
    struct fake a, b;
    struct admit_result res;
    struct key *k;
    uint64_t held[3];
    int allow, i;
    char reason[24];
    uint32_t msgid;

    load(&d, exchange);
    fake_init(&a);
    fake_init(&b);
    k = key(&d, "binance.orders", 0);
    for (i = 0; i < 3; i++) {
        acquire(&d, &a, k, 1, 0, 0, 1000, &res);
        held[i] = res.permit;
    }
    acquire(&d, &b, k, 1, 0, 500, 1000, &res);
    OK(res.parked, "a request with wait_ms parks when the bulkhead is full");
    acquire(&d, &b, k, 1, 0, 100, 1000, &res);
    OK(res.parked, "second parks (queue 2)");
    acquire(&d, &b, k, 1, 0, 500, 1000, &res);
    OK(!res.parked && !res.allow && res.reason == ADMIT_BULKHEAD_FULL,
       "third is denied: queue bound");
    acquire(&d, &a, k, 1, 0, 0, 1000, &res);
    OK(!res.allow, "a new request does not overtake parked ones");
    IS(admit_next_wake(&d, 1000), 1100, "next wake is the earliest deadline");
    admit_wake(&d, 1050);
    IS(b.flushes, 0, "nothing to answer before a release or deadline");
    admit_permit_done(&d, permits_find(&d.permits, held[0]));
    admit_wake(&d, 1060);
    OK(fake_answer(&b, 0, &allow, reason, &msgid) && allow,
       "the head is answered allow when a permit is released");
    admit_wake(&d, 1100);
    OK(fake_answer(&b, 1, &allow, reason, &msgid) && !allow &&
           !strcmp(reason, "bulkhead_full"),
       "the other is denied when its wait_ms runs out");
    IS(k->q_len, 0, "queue empty");
    IS(d.parked_used, 0, "parked pool returned");
    fake_free(&a);
    fake_free(&b);
    core_free(&d);
}

static void test_parked_served_on_refill(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k;
    int allow, i;
    char reason[24];
    uint32_t msgid;

    load(&d, exchange);
    fake_init(&f);
    /* Account: burst 10, reserve 2, so 8 normal tokens; four endpoints
     * take 2 each and leave it at the reserve. */
    for (i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof(name), "binance.ep%d", i);
        k = key(&d, name, 0);
        acquire(&d, &f, k, 2, 0, 0, 0, &res);
        OK(res.allow, "%s cost 2 allowed", name);
    }
    k = key(&d, "binance.md", 0);
    acquire(&d, &f, k, 2, 0, 1000, 0, &res);
    OK(res.parked, "parked on the account limiter");
    IS(admit_next_wake(&d, 0), 200, "wakes when two tokens have refilled");
    admit_wake(&d, 199);
    IS(f.flushes, 0, "not at 199 ms");
    admit_wake(&d, 200);
    OK(fake_answer(&f, 0, &allow, reason, &msgid) && allow && msgid == 7,
       "answered allow at 200 ms with its msgid");
    fake_free(&f);
    core_free(&d);
}

static void test_caller_gone_drops_parked(void)
{
    struct resild d;
    struct fake a, b;
    struct admit_result res;
    struct key *k;
    int i;

    load(&d, exchange);
    fake_init(&a);
    fake_init(&b);
    k = key(&d, "binance.orders", 0);
    for (i = 0; i < 3; i++)
        acquire(&d, &a, k, 1, 0, 0, 0, &res);
    acquire(&d, &b, k, 1, 0, 5000, 0, &res);
    OK(res.parked, "parked");
    core_caller_gone(&d, &b.rc.caller, 10);
    IS(k->q_len, 0, "a closed connection's parked request is dropped");
    core_caller_gone(&d, &a.rc.caller, 10);
    IS(k->bh.in_use, 0, "a closed connection's permits return at once");
    IS(k->outstanding, 0, "outstanding 0");
    fake_free(&a);
    fake_free(&b);
    core_free(&d);
}

static void test_critical_through_open_breaker(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k;

    load(&d, exchange);
    fake_init(&f);
    k = key(&d, "okx", 0);
    breaker_record(&k->br, &k->policy->breaker, 0, k->br.generation, 0,
                   BREAKER_FAILURE, -1);
    breaker_record(&k->br, &k->policy->breaker, 0, k->br.generation, 0,
                   BREAKER_FAILURE, -1);
    acquire(&d, &f, k, 1, 0, 0, 10, &res);
    OK(!res.allow && res.reason == ADMIT_CIRCUIT_OPEN, "normal denied: open");
    acquire(&d, &f, k, 1, 1, 0, 10, &res);
    OK(res.allow, "critical passes an open breaker (critical_probe_per_s 1)");
    acquire(&d, &f, k, 1, 1, 0, 20, &res);
    OK(!res.allow, "but only at critical_probe_per_s");
    acquire(&d, &f, k, 1, 1, 0, 1010, &res);
    OK(res.allow, "again a second later (half-open probe or critical)");
    fake_free(&f);
    core_free(&d);
}

static void test_venue_pause_and_sync(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *orders, *ws, *lone;

    load(&d, exchange);
    fake_init(&f);
    orders = key(&d, "binance.orders", 0);
    ws = key(&d, "binance.ws", 0);
    lone = key(&d, "kraken", 0);
    admit_venue_pause(&d, orders, 0, 700);
    acquire(&d, &f, orders, 1, 0, 0, 100, &res);
    OK(!res.allow && res.reason == ADMIT_RATE_LIMITED, "paused key denied");
    IS(res.retry_after_ms, 600, "retry_after is the pause left");
    acquire(&d, &f, ws, 1, 0, 0, 100, &res);
    OK(res.allow, "binance.orders has its own limiter: sibling unaffected");
    admit_venue_pause(&d, lone, 0, 0);
    acquire(&d, &f, lone, 1, 0, 0, 999, &res);
    OK(!res.allow && res.retry_after_ms == 1, "no limiter: own pause_ms 1000");
    admit_venue_sync(&d, ws, 1000, 0);
    acquire(&d, &f, ws, 1, 0, 0, 1000, &res);
    OK(!res.allow && res.reason == ADMIT_RATE_LIMITED,
       "venue says 0 remaining: limiter re-synced to empty");
    fake_free(&f);
    core_free(&d);
}

static void test_shadow(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k;

    load(&d, exchange);
    fake_init(&f);
    k = key(&d, "shadowed", 0);
    acquire(&d, &f, k, 1, 0, 0, 0, &res);
    acquire(&d, &f, k, 1, 0, 0, 0, &res);
    OK(res.allow && res.shadow && res.shadow_reason == ADMIT_BULKHEAD_FULL,
       "shadow allows what it would deny and says why");
    IS(k->x ? k->x->shadow_denied : 0, 1, "shadow_denied counted");
    fake_free(&f);
    core_free(&d);
}

/* An unreported permit expires at permit_ttl_ms as a timeout failure and
 * returns its bulkhead slot; two of them open the breaker (threshold 2). */
static void test_permit_ttl_expiry(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k;

    load(&d, exchange);
    fake_init(&f);
    k = key(&d, "ttl", 0);
    acquire(&d, &f, k, 1, 0, 0, 0, &res);
    acquire(&d, &f, k, 1, 0, 0, 10, &res);
    OK(res.allow && k->bh.in_use == 2, "two permits out (in_use %u)",
       (unsigned)k->bh.in_use);
    core_tick(&d, 499);
    IS(d.m.permits_expired, 0, "ttl: nothing expires before 500 ms");
    core_tick(&d, 500);
    IS(d.m.permits_expired, 1, "ttl: the first permit expires at 500 ms");
    IS(k->br.failures, 1, "ttl: it counts as a failure");
    core_tick(&d, 510);
    IS(d.m.permits_expired, 2, "ttl: the second at 510 ms");
    IS(k->bh.in_use, 0, "ttl: both bulkhead slots are back");
    OK(!strcmp(breaker_state_name(&k->br), "open"),
       "ttl: two timeouts open the breaker (%s)", breaker_state_name(&k->br));
    fake_free(&f);
    core_free(&d);
}

/* A half-open probe lost with its connection re-opens the breaker, and the
 * next open period ends in half-open again: never stuck. */
static void test_lost_probe(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k;

    load(&d, exchange);
    fake_init(&f);
    k = key(&d, "ttl", 0);
    acquire(&d, &f, k, 1, 0, 0, 0, &res);
    acquire(&d, &f, k, 1, 0, 0, 0, &res);
    core_tick(&d, 500); /* both expire: open until 1500 */
    acquire(&d, &f, k, 1, 0, 0, 1499, &res);
    OK(!res.allow && res.reason == ADMIT_CIRCUIT_OPEN &&
           res.retry_after_ms == 1,
       "lost probe: open until 1500 (retry_after %llu)",
       (unsigned long long)res.retry_after_ms);
    acquire(&d, &f, k, 1, 0, 0, 1500, &res);
    OK(res.allow && !strcmp(breaker_state_name(&k->br), "half_open"),
       "lost probe: a probe is admitted at 1500");
    acquire(&d, &f, k, 1, 0, 0, 1501, &res);
    OK(!res.allow && res.reason == ADMIT_HALF_OPEN_BUSY,
       "lost probe: a second caller waits for the probe");
    core_caller_gone(&d, &f.rc.caller, 1600);
    IS(d.m.probes_lost, 1, "lost probe: counted");
    OK(!strcmp(breaker_state_name(&k->br), "open"),
       "lost probe: the breaker re-opens (%s)", breaker_state_name(&k->br));
    IS(k->bh.in_use, 0, "lost probe: its bulkhead slot is back");
    acquire(&d, &f, k, 1, 0, 0, 2600, &res);
    OK(res.allow && !strcmp(breaker_state_name(&k->br), "half_open"),
       "lost probe: half-open again after open_ms, without an operator");
    fake_free(&f);
    core_free(&d);
}

/* Ancestor limiters as a chain (each key points at its nearest; the
 * nearest's chain holds the rest): every limited ancestor is found,
 * nearest first, up to KEY_MAX_ANCESTORS, and one more is refused rather
 * than skipped; after a reload that limits fewer prefixes the chain
 * follows the new config. */
static void test_ancestor_chain(void)
{
    struct resild d;
    struct fake f;
    struct admit_result res;
    struct key *k, *a, *cur;
    char name[64], err[256];
    struct config cfg;
    size_t n;
    int ok = 1, i;

    load(&d, "{\"policies\": {\"*\": {\"limiter\": {\"rate\": 5}}}}");
    fake_init(&f);
    k = key(&d, "a.b.c.d.e.f.g.h.i", 0); /* 8 ancestors, all limited */
    OK(k && k->nanc == KEY_MAX_ANCESTORS, "8 limited ancestors: nanc %d",
       k ? k->nanc : -1);
    /* The chain is the prefixes, nearest first. */
    snprintf(name, sizeof(name), "a.b.c.d.e.f.g.h.i");
    n = strlen(name);
    for (cur = k, i = 0; cur && ok; cur = cur->up, i++) {
        ok = cur->len == n && !memcmp(cur->name, name, n);
        while (n > 0 && name[--n] != '.')
            ;
    }
    OK(ok && i == KEY_MAX_ANCESTORS + 1, "chain: each prefix once, nearest "
                                         "first (%d keys)",
       i);
    IS(keys_get(&d.keys, "a.b.c.d.e.f.g.h.i.j", 19, &d.cfg, 0, &a), 0,
       "a 9-deep key can be made");
    IS(admit_prepare(&d, a, 0), RD_EDEEP,
       "but its 9 limited ancestors are refused, not cut");
    /* Every limiter in the chain takes the cost. */
    acquire(&d, &f, k, 5, 0, 0, 0, &res);
    OK(res.allow, "cost 5 allowed through 9 limiters");
    for (cur = k, ok = 1; cur; cur = cur->up)
        ok &= limiter_available(&cur->lim, &cur->policy->limiter, 0) == 0;
    OK(ok, "each of the 9 buckets paid 5");
    acquire(&d, &f, key(&d, "a.b.x", 0), 1, 0, 0, 0, &res);
    OK(!res.allow, "a sibling under the same ancestors is limited by them");
    /* Reload: only "a" has a limiter now. */
    if (config_load_text("{\"policies\": {\"a\": {\"limiter\": "
                         "{\"rate\": 5}}}}",
                         &cfg, err, sizeof(err)) < 0 ||
        core_rebind(&d, &cfg, 0) < 0) {
        OK(0, "rebind: %s", err);
    } else {
        k = keys_find(&d.keys, "a.b.c.d.e.f.g.h.i", 17);
        OK(k && k->nanc == 1 && k->up && k->up->len == 1 &&
               k->up->name[0] == 'a',
           "after a reload the chain is the one limited ancestor");
    }
    core_free(&d);
}

/* Issue 14: a release serves its own key's queue, not every parked
 * request (core_wake was O(parked) per report); the others wait for their
 * time (the tick) or for news they all wait for.  A request that waits
 * for the permit pool is served by a release on any key. */
static void test_wake_targeted(void)
{
    static const char *pool =
        "{\"max_permits\": 16, \"policies\": {"
        " \"*\": {\"bulkhead\": {\"max_concurrent\": 1, \"queue\": 2}},"
        " \"wide\": {\"bulkhead\": {\"max_concurrent\": 100}}}}";
    struct resild d;
    struct fake a, b;
    struct admit_result res;
    struct key *ka, *kb, *kw;
    uint64_t pa, pb, pw[16];
    int allow, i, n;
    char reason[24];
    uint32_t msgid;

    load(&d, pool);
    fake_init(&a);
    fake_init(&b);
    ka = key(&d, "a", 0);
    kb = key(&d, "b", 0);
    acquire(&d, &a, ka, 1, 0, 0, 0, &res);
    pa = res.permit;
    acquire(&d, &a, kb, 1, 0, 0, 0, &res);
    pb = res.permit;
    acquire(&d, &b, ka, 1, 0, 5000, 0, &res);
    OK(res.parked, "parked on a");
    acquire(&d, &b, kb, 1, 0, 3000, 0, &res);
    OK(res.parked, "parked on b");
    OK(core_wake_due(&d), "a park re-arms the wake timer");
    IS(core_wake(&d, 0), 3000, "the timer is for the earliest deadline");
    OK(!core_wake_due(&d), "nothing due after the wake");
    admit_permit_done(&d, permits_find(&d.permits, pa));
    OK(core_wake_due(&d) && !d.wake_dirty && d.nwake_keys == 1 &&
           d.wake_keys[0] == ka,
       "a release marks its own key, not every parked request");
    IS(core_wake(&d, 10), 3000, "served a: the timer stays");
    OK(fake_answer(&b, 0, &allow, reason, &msgid) && allow,
       "a's parked request is served by the release");
    IS(kb->q_len, 1, "b's stays parked");
    core_tick(&d, 2999);
    IS(kb->q_len, 1, "the tick before its deadline leaves it");
    core_tick(&d, 3000);
    OK(kb->q_len == 0 && fake_answer(&b, 1, &allow, reason, &msgid) &&
           !allow && !strcmp(reason, "bulkhead_full"),
       "the tick answers it at its deadline");
    IS(core_wake(&d, 3001), 0, "nothing parked: no timer");

    /* The pool: b's slot frees, but every permit is taken. */
    kw = key(&d, "wide", 0);
    acquire(&d, &b, kb, 1, 0, 5000, 3001, &res);
    OK(res.parked, "parked on b again");
    for (i = n = 0; i < 16; i++) {
        acquire(&d, &a, kw, 1, 0, 0, 3001, &res);
        pw[i] = res.permit;
        n += res.allow;
    }
    IS(n, 14, "the pool fills up (a's permit is b's and one is a's)");
    admit_permit_done(&d, permits_find(&d.permits, pb));
    acquire(&d, &a, kw, 1, 0, 0, 3002, &res);
    OK(res.allow, "another key takes the permit b's release freed");
    core_wake(&d, 3002);
    OK(kb->q_len == 1 && d.wake_nopermit,
       "b's slot is free but no permit is: it waits for the pool");
    admit_permit_done(&d, permits_find(&d.permits, pw[0]));
    OK(d.wake_dirty, "a release of another key's permit wakes it");
    core_wake(&d, 3003);
    OK(kb->q_len == 0 && fake_answer(&b, 2, &allow, reason, &msgid) && allow,
       "and it is served");
    acquire(&d, &b, kb, 1, 0, 100, 3004, &res);
    OK(res.parked, "parked on b again (its slot is taken)");
    core_wake(&d, 3004);
    admit_venue_pause(&d, ka, 3004, 500);
    OK(!core_wake_due(&d), "a venue pause wakes nobody: it lets none through");
    core_tick(&d, 3104);
    IS(kb->q_len, 0, "the parked request still ends at its deadline");
    (void)pw;
    fake_free(&a);
    fake_free(&b);
    core_free(&d);
}

/* A closed connection's parked request leaves its queue: the requests of
 * others behind it may pass now (it was the head the FIFO kept them
 * behind), so its key is served at once, not at the timer the old head
 * set (issue 14's targeted wake once forgot these keys). */
static void test_caller_gone_serves_followers(void)
{
    static const char *lim =
        "{\"policies\": {\"lim\": {\"limiter\": {\"rate\": 10,"
        " \"per\": \"second\", \"burst\": 10}}}}";
    struct resild d;
    struct fake a, b, c;
    struct admit_result res;
    struct key *k;
    int allow;
    char reason[24];
    uint32_t msgid;

    load(&d, lim);
    fake_init(&a);
    fake_init(&b);
    fake_init(&c);
    k = key(&d, "lim", 0);
    acquire(&d, &a, k, 10, 0, 0, 0, &res);
    OK(res.allow, "the bucket is emptied");
    acquire(&d, &b, k, 10, 0, 5000, 0, &res);
    OK(res.parked, "cost 10 parks (a second of refill)");
    acquire(&d, &c, k, 1, 0, 5000, 0, &res);
    OK(res.parked, "cost 1 parks behind it");
    IS(core_wake(&d, 0), 1000, "the timer is for the head's refill");
    core_caller_gone(&d, &b.rc.caller, 200);
    core_wake(&d, 200);
    OK(k->q_len == 0 && fake_answer(&c, 0, &allow, reason, &msgid) && allow,
       "the head's caller gone: the one behind passes at once (2 tokens)");
    fake_free(&a);
    fake_free(&b);
    fake_free(&c);
    core_free(&d);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_hierarchy_all_or_nothing();
    test_bulkhead_and_release();
    test_parking();
    test_parked_served_on_refill();
    test_caller_gone_drops_parked();
    test_critical_through_open_breaker();
    test_venue_pause_and_sync();
    test_shadow();
    test_permit_ttl_expiry();
    test_lost_probe();
    test_ancestor_chain();
    test_wake_targeted();
    test_caller_gone_serves_followers();
    {
        char path[256];
        snprintf(path, sizeof(path), "%s/c.json", dir);
        unlink(path);
        rmdir(dir);
    }
    return tap_done();
}
