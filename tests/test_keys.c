/*
 * test_keys.c - key registry (syntax, create on first use, max_keys,
 * prefix selection) and the permit pool (ids, reuse, owner lists).
 */
#include <string.h>

#include "keys.h"
#include "permit.h"
#include "tap.h"

static void test_keys(void)
{
    struct config c;
    struct keys ks;
    struct key *k, *k2, *sel[8];
    char long_key[200];

    config_defaults(&c);
    keys_init(&ks, 4);
    OK(keys_valid("binance.orders", 14), "dotted key valid");
    OK(keys_valid("a-b_c:d.E9", 10), "all allowed characters");
    OK(!keys_valid("bad key", 7), "space refused");
    OK(!keys_valid("", 0), "empty refused");
    memset(long_key, 'a', sizeof(long_key));
    OK(keys_valid(long_key, 128), "128 bytes allowed");
    OK(!keys_valid(long_key, 129), "129 bytes refused");
    OK(keys_find(&ks, "x", 1) == NULL, "find never creates");
    IS(keys_get(&ks, "x", 1, &c, 0, &k), 0, "get creates");
    IS(keys_get(&ks, "x", 1, &c, 0, &k2), 0, "get again");
    OK(k == k2, "same key returned");
    IS(ks.count, 1, "one key");
    IS(keys_get(&ks, "bad key", 7, &c, 0, &k), -KEYS_EINVAL, "bad name");
    keys_get(&ks, "binance", 7, &c, 0, &k);
    keys_get(&ks, "binance.orders", 14, &c, 0, &k);
    keys_get(&ks, "binancex", 8, &c, 0, &k);
    IS(ks.count, 4, "four keys");
    IS(keys_get(&ks, "y", 1, &c, 0, &k), -KEYS_EFULL, "max_keys enforced");
    IS(keys_get(&ks, "binance", 7, &c, 0, &k), 0, "existing key at max ok");
    IS(keys_select(&ks, "binance", 7, sel, 8), 2,
       "prefix selects key and children, not binancex");
    OK(!strcmp(sel[0]->name, "binance") &&
           !strcmp(sel[1]->name, "binance.orders"),
       "sorted by name");
    IS(keys_select(&ks, NULL, 0, sel, 2), 4, "total counts beyond cap");
    keys_free(&ks);
    config_free(&c);
}

static void test_permits(void)
{
    struct permits ps;
    struct permit *owner_a = NULL, *owner_b = NULL, *p, *q;
    uint64_t id;
    int i, n;

    permits_init(&ps, 16);
    p = permits_alloc(&ps, &owner_a);
    OK(p && p->id != 0, "permit granted with nonzero id");
    id = p->id;
    OK(permits_find(&ps, id) == p, "found by id");
    permits_release(&ps, p);
    OK(permits_find(&ps, id) == NULL, "released id no longer found");
    q = permits_alloc(&ps, &owner_a);
    OK(q->id != id, "reused slot gets a new id");
    OK(permits_find(&ps, id) == NULL, "old id does not match the reuse");
    permits_release(&ps, q);
    for (i = 0; i < 16; i++)
        OK(permits_alloc(&ps, i % 2 ? &owner_a : &owner_b) != NULL, "alloc %d",
           i);
    OK(permits_alloc(&ps, &owner_a) == NULL, "pool full returns NULL");
    n = 0;
    while (owner_a) {
        permits_release(&ps, owner_a);
        n++;
    }
    IS(n, 8, "owner list holds exactly its permits");
    IS(ps.used, 8, "other owner's permits untouched");
    OK(permits_find(&ps, 0) == NULL, "id 0 never found");
    permits_free(&ps);
}

int main(void)
{
    test_keys();
    test_permits();
    return tap_done();
}
