/*
 * test_keys.c - key registry (syntax, create on first use, max_keys,
 * prefix selection, paging against a reference model, index balance).
 *
 * The paging model is a sorted array of names, filtered linearly with
 * strcmp and strncmp: written from keys_page's contract in keys.h alone.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keys.h"
#include "tap.h"

static void test_keys(void)
{
    struct config c;
    struct keys ks;
    struct key *k, *k2, *sel[8];
    size_t total;
    int more;
    char long_key[200];

    config_defaults(&c);
    keys_init(&ks, 4);
    OK(keys_valid("binance.orders", 14), "dotted key valid");
    OK(keys_valid("a-b_c:d.E9", 10), "all allowed characters");
    OK(!keys_valid("bad key", 7), "space refused");
    OK(!keys_valid("", 0), "empty refused");
    { /* every byte, alone and after a valid one: [A-Za-z0-9._:-] only */
        int b, bad = 0;
        for (b = 0; b < 256; b++) {
            char two[2] = {'a', (char)b};
            int want = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
                       (b >= '0' && b <= '9') || b == '.' || b == '_' ||
                       b == ':' || b == '-';
            bad += keys_valid(two + 1, 1) != want || keys_valid(two, 2) != want;
        }
        OK(bad == 0, "each of the 256 bytes judged as [A-Za-z0-9._:-] (%d off)",
           bad);
    }
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
    OK(keys_page(&ks, "binance", 7, NULL, 0, sel, 8, &total, &more) == 2 &&
           total == 2 && !more,
       "prefix selects key and children, not binancex");
    OK(!strcmp(sel[0]->name, "binance") &&
           !strcmp(sel[1]->name, "binance.orders"),
       "sorted by name");
    OK(keys_page(&ks, NULL, 0, NULL, 0, sel, 2, &total, &more) == 2 &&
           total == 4 && more,
       "total counts beyond cap");
    keys_free(&ks);
    config_free(&c);
}

/* ---- keys_page against a reference model ---- */

#define MODEL_SETS 40     /* random key sets */
#define MODEL_MAX 1500    /* keys in the largest set */
#define MODEL_QUERIES 300 /* single-page queries per set */
#define MODEL_WALKS 30    /* full pagings per set */
#define NAME_BUF (KEY_MAX + 8)

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* Segments chosen so that one is often a byte prefix of another, and the
 * characters around '.' in byte order ('-' < '.' < '0'-'9' < ':' < '_')
 * appear next to it. */
static const char *const segs[] = {"a",    "ab",  "abc", "ab-c", "ab_c",
                                   "ab:c", "ab0", "b",   "0",    "9",
                                   "-",    "_",   ":",   "a-",   "ab-"};

/* A random valid name of 1..maxseg segments into buf. */
static void gen_name(char *buf, unsigned maxseg)
{
    static const char seps[] = "....-:_";
    unsigned i, n = 1 + (unsigned)rnd_below(maxseg);

    buf[0] = '\0';
    for (i = 0; i < n; i++) {
        if (i) {
            size_t l = strlen(buf);
            buf[l] = seps[rnd_below(sizeof(seps) - 1)];
            buf[l + 1] = '\0';
        }
        strcat(buf, segs[rnd_below(sizeof(segs) / sizeof(segs[0]))]);
    }
}

static int by_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The model's rule: equal to p, or p followed by '.' and anything. */
static int model_match(const char *name, const char *p)
{
    size_t pl;

    if (!p)
        return 1;
    pl = strlen(p);
    return strncmp(name, p, pl) == 0 && (name[pl] == '\0' || name[pl] == '.');
}

/* A prefix or an `after` for a query: NULL, an existing name, a truncated
 * one (often ending in a separator), a fresh random one, or one of those
 * with '.', '/' or '-' appended. */
static const char *gen_probe(char *buf, char (*names)[NAME_BUF], size_t n)
{
    size_t l;

    switch (rnd_below(8)) {
    case 0:
        return NULL;
    case 1:
    case 2:
        if (!n)
            return NULL;
        strcpy(buf, names[rnd_below(n)]);
        return buf;
    case 3:
    case 4:
        if (!n)
            return NULL;
        strcpy(buf, names[rnd_below(n)]);
        buf[1 + rnd_below(strlen(buf))] = '\0';
        return buf;
    case 5:
        gen_name(buf, 2);
        return buf;
    default:
        gen_name(buf, 3);
        l = strlen(buf);
        buf[l] = "./-"[rnd_below(3)];
        buf[l + 1] = '\0';
        return buf;
    }
}

/* Expected page: fills want[] with indexes into names; returns the count,
 * *total and *more as keys_page's contract says. */
static size_t model_page(char (*names)[NAME_BUF], size_t n, const char *p,
                         const char *after, size_t *want, size_t cap,
                         size_t *total, int *more)
{
    size_t i, got = 0;

    *total = 0;
    *more = 0;
    for (i = 0; i < n; i++) {
        if (!model_match(names[i], p))
            continue;
        ++*total;
        if (after && strcmp(names[i], after) <= 0)
            continue;
        if (got == cap)
            *more = 1;
        else
            want[got++] = i;
    }
    return got;
}

static void test_page_model(void)
{
    static char names[MODEL_MAX][NAME_BUF];
    static struct key *out[MODEL_MAX + 1];
    static size_t want[MODEL_MAX + 1];
    struct config c;
    unsigned set;

    config_defaults(&c);
    for (set = 0; set < MODEL_SETS; set++) {
        uint64_t seed = 0x9e3779b97f4a7c15ULL * (set + 1);
        struct keys ks;
        struct key *k;
        size_t n = 0, target, i, q;
        unsigned h;
        int bad = 0, walk_bad = 0;
        char pbuf[NAME_BUF], abuf[NAME_BUF];

        rng_state = seed;
        target = set == 0 ? 0 : set == 1 ? 1 : rnd_below(MODEL_MAX);
        keys_init(&ks, MODEL_MAX);
        for (i = 0; i < target; i++) {
            char nm[NAME_BUF];
            if (i % 97 == 5) { /* a long name: long prefixes */
                memset(nm, 'a', KEY_MAX);
                nm[KEY_MAX - rnd_below(3)] = '\0';
                nm[rnd_below(strlen(nm) - 1) + 1] = '.';
            } else {
                gen_name(nm, 4);
            }
            if (keys_get(&ks, nm, strlen(nm), &c, 0, &k) < 0) {
                bad = 1;
                break;
            }
            if (!keys_find(&ks, nm, strlen(nm)) || ks.count == n)
                continue; /* already there */
            strcpy(names[n++], nm);
        }
        qsort(names, n, NAME_BUF, by_str);
        bad = bad || ks.count != n || keys_index_check(&ks, &h) < 0;
        OK(!bad, "set %u (seed %llx): %zu keys indexed, height %u", set,
           (unsigned long long)seed, n, h);

        /* Single pages at random positions. */
        for (q = 0; q < MODEL_QUERIES && !bad; q++) {
            const char *p = gen_probe(pbuf, names, n);
            const char *after = gen_probe(abuf, names, n);
            size_t cap = rnd_below(4) ? rnd_below(8) : rnd_below(n + 2);
            size_t got, exp, total, etotal;
            int more, emore;

            if (p && rnd_below(4) == 0) { /* after at the range's edges */
                static const char *const tails[] = {"", ".", "-", "/", ".-"};
                snprintf(abuf, sizeof(abuf), "%s%s", p,
                         tails[rnd_below(sizeof(tails) / sizeof(tails[0]))]);
                after = abuf;
            }
            got = keys_page(&ks, p, p ? strlen(p) : 0, after,
                            after ? strlen(after) : 0, out, cap, &total, &more);
            exp = model_page(names, n, p, after, want, cap, &etotal, &emore);
            bad = got != exp || total != etotal || more != emore;
            for (i = 0; !bad && i < got; i++)
                bad = strcmp(out[i]->name, names[want[i]]) != 0;
            if (bad)
                DIAG("prefix %s after %s cap %zu: got %zu/%zu more %d, "
                     "want %zu/%zu more %d",
                     p ? p : "(null)", after ? after : "(null)", cap, got,
                     total, more, exp, etotal, emore);
        }
        OK(!bad, "set %u: %d single pages agree with the model", set,
           MODEL_QUERIES);

        /* Whole listings, page by page, continuing from the last name. */
        for (q = 0; q < MODEL_WALKS && !walk_bad; q++) {
            const char *p = gen_probe(pbuf, names, n);
            size_t cap = 1 + rnd_below(q % 3 ? 7 : 200);
            size_t all, seen = 0, pages = 0, total;
            char last[NAME_BUF];
            int more;

            all = model_page(names, n, p, NULL, want, MODEL_MAX + 1, &total,
                             &more);
            more = 1;

            while (more && !walk_bad) {
                size_t got =
                    keys_page(&ks, p, p ? strlen(p) : 0, seen ? last : NULL,
                              seen ? strlen(last) : 0, out, cap, &total, &more);
                size_t j;
                pages++;
                walk_bad = total != all || (got == 0 && more) ||
                           (got < cap && more) || seen + got > all;
                for (j = 0; !walk_bad && j < got; j++)
                    walk_bad = strcmp(out[j]->name, names[want[seen + j]]);
                seen += got;
                if (got)
                    strcpy(last, out[got - 1]->name);
            }
            walk_bad = walk_bad || seen != all ||
                       pages != (all ? (all + cap - 1) / cap : 1);
            if (walk_bad)
                DIAG("walk prefix %s cap %zu: %zu of %zu in %zu pages",
                     p ? p : "(null)", cap, seen, all, pages);
        }
        OK(!walk_bad,
           "set %u: paging through %d prefixes gives the model's "
           "listing",
           set, MODEL_WALKS);
        keys_free(&ks);
    }
    config_free(&c);
}

/* The cases named in keys.h, by hand. */
static void test_page_edges(void)
{
    static const char *const names[] = {"ab",   "ab-c", "ab.c", "ab.c.d",
                                        "ab/x", "ab0",  "ab:c", "abc",
                                        "ab.",  "ab..x"};
    struct config c;
    struct keys ks;
    struct key *k, *out[16];
    size_t i, n, total;
    int more;
    char big[2 * KEY_MAX];

    config_defaults(&c);
    keys_init(&ks, 64);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (keys_valid(names[i], strlen(names[i])))
            keys_get(&ks, names[i], strlen(names[i]), &c, 0, &k);
    n = keys_page(&ks, "ab", 2, NULL, 0, out, 16, &total, &more);
    IS(total, 5, "ab: itself, ab., ab..x, ab.c, ab.c.d");
    OK(n == 5 && !strcmp(out[0]->name, "ab") && !strcmp(out[1]->name, "ab.") &&
           !strcmp(out[2]->name, "ab..x") && !strcmp(out[3]->name, "ab.c") &&
           !strcmp(out[4]->name, "ab.c.d") && !more,
       "in byte order, skipping ab-c between ab and ab.");
    n = keys_page(&ks, "ab", 2, "ab", 2, out, 1, &total, &more);
    OK(n == 1 && !strcmp(out[0]->name, "ab.") && more && total == 5,
       "after the prefix itself: its children");
    n = keys_page(&ks, "ab", 2, "ab-zzz", 6, out, 16, &total, &more);
    OK(n == 4 && !strcmp(out[0]->name, "ab.") && !more,
       "after a non-matching name between ab and ab.");
    n = keys_page(&ks, "ab", 2, "ab.", 3, out, 16, &total, &more);
    OK(n == 3 && !strcmp(out[0]->name, "ab..x"), "after ab.: from ab..x");
    n = keys_page(&ks, "ab", 2, "ab.c.d", 6, out, 16, &total, &more);
    OK(n == 0 && !more && total == 5, "after the last: empty, no more");
    n = keys_page(&ks, "ab", 2, NULL, 0, out, 0, &total, &more);
    OK(n == 0 && more && total == 5, "cap 0 still tells more");
    n = keys_page(&ks, "ab.c", 4, NULL, 0, out, 16, &total, &more);
    OK(n == 2 && total == 2, "ab.c: itself and ab.c.d");
    n = keys_page(&ks, "a", 1, NULL, 0, out, 16, &total, &more);
    OK(n == 0 && total == 0 && !more, "a matches no ab*");
    n = keys_page(&ks, NULL, 0, "ab:c", 4, out, 16, &total, &more);
    OK(n == 1 && !strcmp(out[0]->name, "abc") && total == ks.count,
       "no prefix: after ab:c comes abc; total is every key");
    memset(big, 'a', sizeof(big));
    n = keys_page(&ks, big, sizeof(big), NULL, 0, out, 16, &total, &more);
    OK(n == 0 && total == 0 && !more, "prefix longer than any name");
    keys_free(&ks);
    config_free(&c);
}

/* Names often arrive sorted: the index stays balanced. */
static void test_balance(void)
{
    static const struct {
        size_t n;
        int ascending;
        int dotted; /* "v012.sym12345" rather than "k012345" */
    } runs[] = {{100000, 1, 0}, {30000, 0, 1}, {30000, 1, 1}};
    struct config c;
    size_t r;

    config_defaults(&c);
    for (r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        struct keys ks;
        struct key *k, *out[4];
        size_t i, total, nn = runs[r].n;
        unsigned h = 0, log2n = 0;
        int bad = 0, more;
        char nm[NAME_BUF];

        keys_init(&ks, nn);
        for (i = 0; i < nn && !bad; i++) {
            size_t j = runs[r].ascending ? i : nn - 1 - i;
            if (runs[r].dotted)
                snprintf(nm, sizeof(nm), "v%03zu.sym%05zu", j / 1000, j);
            else
                snprintf(nm, sizeof(nm), "k%06zu", j);
            bad = keys_get(&ks, nm, strlen(nm), &c, 0, &k) < 0;
        }
        while (((size_t)1 << log2n) < nn)
            log2n++;
        bad = bad || keys_index_check(&ks, &h) < 0;
        OK(!bad && h <= 2 * log2n, "%zu %s inserts: height %u <= 2 log2 n = %u",
           nn, runs[r].ascending ? "ascending" : "descending", h, 2 * log2n);
        keys_page(&ks, NULL, 0, NULL, 0, out, 4, &total, &more);
        OK(total == nn && more, "total of all keys");
        keys_free(&ks);
    }
    config_free(&c);
}

/* Not a scan: 1000 prefix pages over 100k keys cost microseconds each.  The
 * bound is CPU time, ~100x above the measurement and far below what a walk
 * of every key costs (about 6 ms a page). */
static void test_page_cost(void)
{
    struct config c;
    struct keys ks;
    struct key *k, *out[10];
    struct timespec t0, t1;
    size_t i, total = 0, got = 0, nn = 100000;
    double ms;
    int more;
    char nm[NAME_BUF];

    config_defaults(&c);
    keys_init(&ks, nn);
    for (i = 0; i < nn; i++) {
        snprintf(nm, sizeof(nm), "venue%02zu.sym%05zu", i % 50, i);
        keys_get(&ks, nm, strlen(nm), &c, 0, &k);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    for (i = 0; i < 1000; i++) {
        snprintf(nm, sizeof(nm), "venue%02zu", i % 50);
        got += keys_page(&ks, nm, strlen(nm), NULL, 0, out, 10, &total, &more);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
         (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    OK(got == 10000 && total == nn / 50, "prefix pages return 10 of 2000");
    OK(ms < 500, "1000 prefix pages over 100k keys: %.2f ms CPU", ms);
    keys_free(&ks);
    config_free(&c);
}

/* ---- latency percentiles against a sort ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The one-byte code: exact below 32 ms, within 1/32 above, saturated at
 * 65535, and in the order of the values (so ranks of codes are ranks of
 * values). */
static void test_latency_code(void)
{
    uint64_t v, worst = 0, bad = 0;
    unsigned prev = 0;

    for (v = 0; v <= 70000; v++) {
        unsigned c = keys_latency_code(v);
        uint64_t back = keys_latency_value((uint8_t)c);
        uint64_t want = v > 65535 ? 65535 : v;
        uint64_t err = back > want ? back - want : want - back;
        if (c < prev || (want < 32 && err) || err * 32 > want)
            bad++;
        if (want >= 32 && err * 1000 / want > worst)
            worst = err * 1000 / want;
        prev = c;
    }
    OK(bad == 0 && keys_latency_code(UINT64_MAX) == keys_latency_code(65535),
       "latency codes: exact below 32 ms, ordered, error <= 1/32 "
       "(worst %.1f%%, %llu off)",
       (double)worst / 10, (unsigned long long)bad);
}

static void test_percentiles(void)
{
    struct key *k = calloc(1, sizeof(*k));
    uint64_t seed = 99;
    int run, bad = 0;

    uint64_t v1, v2;

    keys_latency_percentiles(k, 50, 99, &v1, &v2);
    OK(v1 == 0 && v2 == 0, "no samples: percentiles 0");
    for (run = 0; run < 3000; run++) {
        uint64_t ref[KEY_LATENCY_SAMPLES], kept[200];
        unsigned n, i, p;
        k->lat_n = k->lat_pos = 0;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        n = 1 + (unsigned)(seed % 200); /* past the ring: it wraps */
        for (i = 0; i < n; i++) {
            uint64_t v;
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            /* small, wide, duplicated and saturated values */
            v = run % 4 == 0   ? seed % 8
                : run % 4 == 1 ? seed % 70000
                : run % 4 == 2 ? 250 + seed % 20
                               : seed % 1000;
            keys_add_latency(k, v);
            kept[i] = v;
        }
        /* The reference: the last 128 values given, as the ring gives
         * them back, sorted. */
        for (i = 0; i < k->lat_n; i++)
            ref[i] = keys_latency_value(
                keys_latency_code(kept[n - k->lat_n + i]));
        qsort(ref, k->lat_n, sizeof(ref[0]), cmp_u64);
        for (p = 0; p <= 100; p += (run % 2 ? 1 : 7)) {
            unsigned q = p + (unsigned)(seed % (101 - p));
            size_t r1 = ((size_t)p * k->lat_n + 99) / 100;
            size_t r2 = ((size_t)q * k->lat_n + 99) / 100;
            keys_latency_percentiles(k, p, q, &v1, &v2);
            if (v1 != ref[r1 ? r1 - 1 : 0] || v2 != ref[r2 ? r2 - 1 : 0])
                bad++;
        }
    }
    OK(bad == 0,
       "percentiles equal a sorted reference in 3000 sample sets "
       "(%d off)",
       bad);
    free(k->lat_ms);
    free(k);
}

/* Stats blocks (struct key_stats) sit on the first metrics.max_keys + 1
 * keys in name order and nowhere else, whatever order keys are made in:
 * ascending (each new key past the cap), descending (each new key first,
 * pushing one out) and random. */
static void test_stats_blocks(void)
{
    static const char *const how[3] = {"ascending", "descending", "random"};
    uint64_t seed = 7;
    int order;

    for (order = 0; order < 3; order++) {
        struct keys ks;
        struct config c;
        struct key *k, *page[64];
        char nm[16];
        size_t total, n, i, with = 0, wrong = 0;
        int more, j;

        config_defaults(&c);
        c.metrics_max_keys = 3;
        keys_init(&ks, 1000);
        for (j = 0; j < 200; j++) {
            int v = order == 0 ? j : order == 1 ? 199 - j : 0;
            if (order == 2) {
                seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
                v = (int)(seed % 1000);
            }
            snprintf(nm, sizeof(nm), "k%03d", v);
            keys_get(&ks, nm, strlen(nm), &c, 0, &k);
        }
        n = keys_page(&ks, NULL, 0, NULL, 0, page, 64, &total, &more);
        for (i = 0; i < n; i++) {
            with += page[i]->stats != NULL;
            wrong += (i <= 3) != (page[i]->stats != NULL);
        }
        while (more) { /* the rest: none may keep a block */
            const struct key *last = page[n - 1];
            n = keys_page(&ks, NULL, 0, last->name, last->len, page, 64,
                          &total, &more);
            for (i = 0; i < n; i++)
                wrong += page[i]->stats != NULL;
        }
        OK(wrong == 0 && with == 4,
           "%s: stats on exactly the first 4 of %zu keys (%zu off)",
           how[order], total, wrong);
        /* A reload lowers metrics.max_keys to 1: new keys keep blocks on
         * the first 2 only; blocks made before stay where they were. */
        c.metrics_max_keys = 1;
        for (j = 0; j < 100; j++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            snprintf(nm, sizeof(nm), "j%03d", (int)(seed % 1000));
            keys_get(&ks, nm, strlen(nm), &c, 0, &k);
            snprintf(nm, sizeof(nm), "a%03d", (int)(seed % 1000));
            keys_get(&ks, nm, strlen(nm), &c, 0, &k);
        }
        n = keys_page(&ks, NULL, 0, NULL, 0, page, 2, &total, &more);
        with = 0;
        for (i = 0; i < n; i++)
            with += page[i]->stats != NULL;
        OK(n == 2 && with == 2,
           "%s, then max_keys 1: the first 2 of %zu keys keep blocks",
           how[order], total);
        keys_free(&ks);
        config_free(&c);
    }
}

int main(void)
{
    test_keys();
    test_latency_code();
    test_percentiles();
    test_page_edges();
    test_page_model();
    test_balance();
    test_page_cost();
    test_stats_blocks();
    return tap_done();
}
