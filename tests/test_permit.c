/*
 * test_permit.c - the permit pool: ids and reuse, owner lists, growth up to
 * exactly max_permits, the expiry heap against a naive reference model, and
 * the msgid index that `cancel` uses.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "permit.h"
#include "tap.h"

static struct permit *get(struct permits *ps, struct permit **owner,
                          uint32_t msgid, uint64_t exp)
{
    int err = 0;

    return permits_alloc(ps, owner, msgid, exp, &err);
}

static void test_basics(void)
{
    struct permits ps;
    struct permit *owner_a = NULL, *owner_b = NULL, *p, *q;
    uint64_t id;
    int i, n, err = 0;

    IS(permits_init(&ps, 0, 1), RD_EINVAL, "max_permits 0 refused");
    IS(permits_init(&ps, PERMIT_MAX + 1, 1), RD_EINVAL,
       "max_permits over PERMIT_MAX refused");
    IS(permits_init(&ps, 16, 1), 0, "init");
    IS(ps.nslots, 0, "nothing allocated before the first grant");
    p = get(&ps, &owner_a, 1, 100);
    OK(p && p->id != 0, "permit granted with nonzero id");
    id = p->id;
    OK(permits_find(&ps, id) == p, "found by id");
    OK(permits_owned(p, &owner_a) && !permits_owned(p, &owner_b),
       "owned by its connection only");
    permits_release(&ps, p);
    OK(permits_find(&ps, id) == NULL, "released id no longer found");
    q = get(&ps, &owner_a, 2, 100);
    OK(q->id != id, "reused slot gets a new id");
    OK(permits_find(&ps, id) == NULL, "old id does not match the reuse");
    permits_release(&ps, q);
    for (i = 0; i < 16; i++)
        OK(get(&ps, i % 2 ? &owner_a : &owner_b, (uint32_t)i, 100) != NULL,
           "alloc %d", i);
    OK(permits_alloc(&ps, &owner_a, 99, 100, &err) == NULL &&
           err == RD_EPERMITS,
       "pool full: NULL and RD_EPERMITS");
    n = 0;
    while (owner_a) {
        permits_release(&ps, owner_a);
        n++;
    }
    IS(n, 8, "owner list holds exactly its permits");
    IS(ps.used, 8, "other owner's permits untouched");
    OK(permits_find(&ps, 0) == NULL, "id 0 never found");
    OK(permits_find(&ps, UINT64_MAX) == NULL, "a wild id is not found");
    permits_free(&ps);

    /* A large max_permits costs nothing until used. */
    permits_init(&ps, PERMIT_MAX, 1);
    get(&ps, &owner_a, 1, 100);
    OK(ps.nslots == PERMIT_CHUNK,
       "max_permits %u: one chunk allocated for one permit (%u slots)",
       PERMIT_MAX, ps.nslots);
    permits_free(&ps);
}

/* max_permits is exact, not rounded up to a power of two (20 once gave 32),
 * and the pool grows a chunk at a time. */
static void test_exact_max(void)
{
    static const uint32_t maxes[] = {1, 20, 255, 256, 257, 1000};
    size_t t;

    for (t = 0; t < sizeof(maxes) / sizeof(maxes[0]); t++) {
        struct permits ps;
        struct permit *owner = NULL;
        uint32_t i, got = 0;
        int err = 0;

        permits_init(&ps, maxes[t], 7);
        for (i = 0; i < maxes[t] + 10; i++)
            if (permits_alloc(&ps, &owner, i, 5, &err))
                got++;
        OK(got == maxes[t], "max_permits %u grants exactly %u (got %u)",
           maxes[t], maxes[t], got);
        OK(ps.nslots == maxes[t], "max_permits %u: %u slots allocated",
           maxes[t], ps.nslots);
        permits_free(&ps);
    }
}

/* Random grants and releases; permits_expired must always name a permit
 * with the smallest expiry among the live ones (reference: a scan). */
static void test_heap_model(void)
{
    enum { N = 600, OPS = 60000 };
    static struct permit *live[N];
    struct permits ps;
    struct permit *owner = NULL;
    size_t nlive = 0, i, bad = 0, op;
    uint64_t now = 0, seed = 12345;

    permits_init(&ps, N, 3);
    for (op = 0; op < OPS; op++) {
        uint64_t rnd;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        rnd = seed;
        if (nlive < N && (rnd % 3 != 0 || nlive == 0)) {
            struct permit *p =
                get(&ps, &owner, (uint32_t)op, now + 1 + (rnd >> 8) % 5000);
            if (!p) {
                bad++;
                continue;
            }
            live[nlive++] = p;
        } else {
            size_t j = (rnd >> 16) % nlive;
            permits_release(&ps, live[j]);
            live[j] = live[--nlive];
        }
        if (rnd % 7 == 0)
            now += (rnd >> 20) % 50;
        /* Expire like the cron does, checking each against the model. */
        for (;;) {
            struct permit *e = permits_expired(&ps, now), *min = NULL;
            for (i = 0; i < nlive; i++)
                if (!min || live[i]->expires_ms < min->expires_ms)
                    min = live[i];
            if (!e) {
                if (min && min->expires_ms <= now)
                    bad++;
                break;
            }
            if (e->expires_ms != min->expires_ms || e->expires_ms > now)
                bad++;
            for (i = 0; i < nlive && live[i] != e; i++)
                ;
            if (i == nlive) {
                bad++;
                break;
            }
            permits_release(&ps, e);
            live[i] = live[--nlive];
        }
    }
    OK(bad == 0, "expiry heap agrees with a scan over %d operations (%zu off)",
       OPS, bad);
    IS(ps.used, nlive, "pool count matches the model");
    permits_free(&ps);
}

static void test_msgid(void)
{
    struct permits ps;
    struct permit *a = NULL, *b = NULL, *p1, *p2, *p3;

    permits_init(&ps, 64, 9);
    p1 = get(&ps, &a, 7, 10);
    p2 = get(&ps, &b, 7, 10);
    p3 = get(&ps, &a, 8, 10);
    OK(permits_find_msgid(&ps, &a, 7) == p1, "msgid 7 of a");
    OK(permits_find_msgid(&ps, &b, 7) == p2, "msgid 7 of b is b's own");
    OK(permits_find_msgid(&ps, &a, 8) == p3, "msgid 8 of a");
    OK(permits_find_msgid(&ps, &b, 8) == NULL, "b never asked with msgid 8");
    permits_release(&ps, p1);
    OK(permits_find_msgid(&ps, &a, 7) == NULL, "released: gone from index");
    OK(permits_find_msgid(&ps, &b, 7) == p2, "the other owner's stays");
    permits_free(&ps);
}

int main(void)
{
    test_basics();
    test_exact_max();
    test_heap_model();
    test_msgid();
    return tap_done();
}
