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
    IS(keys_get(&ks, "bad key", 7, &c, 0, &k), RD_EINVAL, "bad name");
    keys_get(&ks, "binance", 7, &c, 0, &k);
    keys_get(&ks, "binance.orders", 14, &c, 0, &k);
    keys_get(&ks, "binancex", 8, &c, 0, &k);
    IS(ks.count, 4, "four keys");
    IS(keys_get(&ks, "y", 1, &c, 0, &k), RD_EKEYS, "max_keys enforced");
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

int main(void)
{
    test_keys();
    return tap_done();
}
