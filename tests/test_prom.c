/*
 * test_prom.c - the Prometheus text writer (daemon/prom.c): exact text for
 * each construct, every refusal (names, order, bounds, the size cap) with
 * the text left whole, the per-key cap, random pages checked by
 * tests/promcheck.py, and promcheck.py itself refusing each kind of bad
 * page (so that a page it passes means something).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prom.h"
#include "tap.h"

#define PYTHON "/usr/bin/python3" /* as tests/run.sh runs Python tests */

static char tmpdir[] = "/tmp/resild-test-prom.XXXXXX";

/* Run promcheck.py on text (len bytes); its output into out.  Returns its
 * exit status (0: the page passed), -1 if it could not be run. */
static int promcheck(const char *text, size_t len, char *out, size_t cap)
{
    char path[128], cmd[256];
    FILE *f, *p;
    size_t n;
    int st;

    snprintf(path, sizeof(path), "%s/page.txt", tmpdir);
    if (!(f = fopen(path, "wb")))
        return -1;
    fwrite(text, 1, len, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), PYTHON " tests/promcheck.py %s 2>&1", path);
    if (!(p = popen(cmd, "r")))
        return -1;
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_values(void)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {1, "1"},
        {-12, "-12"},
        {1e15, "1000000000000000"},
        {9007199254740993.0, "9007199254740992"},
        {-9223372036854775808.0, "-9223372036854775808"},
        {9223372036854775808.0, "9.223372036854776e+18"},
        {0.1, "0.1"},
        {0.005, "0.005"},
        {2.5, "2.5"},
        {1.0 / 3, "0.3333333333333333"},
        {1e-300, "1e-300"},
        {1e300, "1e+300"},
        {0.1 + 0.2, "0.30000000000000004"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    char out[PROM_VALUE_MAX];
    size_t i, n;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = prom_format_value(out, cases[i].v);
        OK(!strcmp(out, cases[i].want) && n == strlen(out),
           "value %zu formats as %s (got %s)", i, cases[i].want, out);
    }
    /* Every non-integral value reads back exactly. */
    for (i = 0; i < 10000; i++) {
        double v =
            ((double)rand() / RAND_MAX - 0.5) * pow(10, rand() % 40 - 20);
        prom_format_value(out, v);
        if (strtod(out, NULL) != v) {
            OK(0, "value %.17g round-trips (got %s)", v, out);
            return;
        }
    }
    OK(1, "10000 random values read back exactly");
}

static void test_page(void)
{
    struct prom_buf b;
    struct prom_label l[2] = {{"key", "binance.orders"}, {"result", "allow"}};
    static const double le[] = {0.005, 1, 2.5};
    uint64_t counts[] = {1, 0, 2, 3};
    struct prom_hist h = {le, 3, counts, 12.5};
    const char *want =
        "# HELP resild_decisions_total Decisions by key and result.\n"
        "# TYPE resild_decisions_total counter\n"
        "resild_decisions_total{key=\"binance.orders\",result=\"allow\"} "
        "18446744073709551615\n"
        "resild_decisions_total 0\n"
        "# HELP resild_uptime_seconds \n"
        "# TYPE resild_uptime_seconds gauge\n"
        "resild_uptime_seconds 1.5\n"
        "# HELP resild_latency_seconds Latency.\n"
        "# TYPE resild_latency_seconds histogram\n"
        "resild_latency_seconds_bucket{key=\"binance.orders\",le=\"0.005\"} 1\n"
        "resild_latency_seconds_bucket{key=\"binance.orders\",le=\"1\"} 1\n"
        "resild_latency_seconds_bucket{key=\"binance.orders\",le=\"2.5\"} 3\n"
        "resild_latency_seconds_bucket{key=\"binance.orders\",le=\"+Inf\"} 6\n"
        "resild_latency_seconds_sum{key=\"binance.orders\"} 12.5\n"
        "resild_latency_seconds_count{key=\"binance.orders\"} 6\n"
        "resild_latency_seconds_bucket{le=\"0.005\"} 1\n"
        "resild_latency_seconds_bucket{le=\"1\"} 1\n"
        "resild_latency_seconds_bucket{le=\"2.5\"} 3\n"
        "resild_latency_seconds_bucket{le=\"+Inf\"} 6\n"
        "resild_latency_seconds_sum 12.5\n"
        "resild_latency_seconds_count 6\n";
    char out[512];

    prom_init(&b, 1 << 20);
    OK(prom_family(&b, "resild_decisions_total", PROM_COUNTER,
                   "Decisions by key and result.") == 0,
       "counter family begins");
    OK(prom_sample_u64(&b, l, 2, UINT64_MAX) == 0, "u64 sample, two labels");
    OK(prom_sample(&b, NULL, 0, 0) == 0, "sample without labels");
    OK(prom_family(&b, "resild_uptime_seconds", PROM_GAUGE, NULL) == 0,
       "gauge family, no help");
    OK(prom_sample(&b, NULL, 0, 1.5) == 0, "gauge sample");
    OK(prom_family(&b, "resild_latency_seconds", PROM_HISTOGRAM, "Latency.") ==
           0,
       "histogram family");
    OK(prom_histogram(&b, l, 1, &h) == 0, "histogram with a key");
    OK(prom_histogram(&b, NULL, 0, &h) == 0, "histogram without labels");
    OK(b.data && !strcmp(b.data, want), "page text exact");
    if (!b.data || strcmp(b.data, want))
        DIAG("got:\n%s", b.data ? b.data : "(null)");
    IS(promcheck(b.data, b.len, out, sizeof(out)), 0, "promcheck passes it");
    prom_reset(&b);
    IS(b.len, 0, "reset empties");
    OK(prom_family(&b, "resild_uptime_seconds", PROM_GAUGE, "x") == 0,
       "after reset a family name is new again");
    prom_free(&b);
}

static void test_escapes(void)
{
    struct prom_buf b;
    struct prom_label l[3] = {
        {"key", "a\\b\"c\nd"},
        {"class", "bad\xff\xc0\x80utf8\xe2\x82\r\x7f"},
        {"ok", "\xe2\x82\xac \xf0\x9f\x92\xb0 tab\there"}};
    const char *want = "# HELP m_total back\\\\slash \"quote\" new\\nline\n"
                       "# TYPE m_total counter\n"
                       "m_total{key=\"a\\\\b\\\"c\\nd\",class=\"bad"
                       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdutf8"
                       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\","
                       "ok=\"\xe2\x82\xac "
                       "\xf0\x9f\x92\xb0 tab\there\"} 1\n";
    char out[512];

    prom_init(&b, 4096);
    prom_family(&b, "m_total", PROM_COUNTER, "back\\slash \"quote\" new\nline");
    prom_sample(&b, l, 3, 1);
    OK(!prom_error(&b) && !strcmp(b.data, want),
       "HELP escapes \\ and newline; label values \\, \" and newline; "
       "invalid UTF-8, CR and DEL become U+FFFD, valid UTF-8 and tabs "
       "stay");
    if (strcmp(b.data, want))
        DIAG("got:\n%s", b.data);
    IS(promcheck(b.data, b.len, out, sizeof(out)), 0, "promcheck passes it");
    prom_free(&b);
}

/* A refused call: PROM_EINVAL, the text unchanged, and the error sticky. */
static void refused(struct prom_buf *b, int rc, const char *what)
{
    size_t len = b->len;

    OK(rc == PROM_EINVAL && prom_error(b) == PROM_EINVAL, "%s: EINVAL", what);
    IS(prom_family(b, "other_family", PROM_GAUGE, "") == PROM_EINVAL &&
           b->len == len,
       1, "error sticks, nothing more written");
}

static void test_refusals(void)
{
    static const char *bad_names[] = {"",    "1abc", "a-b", "a b",
                                      "a.b", "é",    "a\n", NULL};
    static const char *bad_labels[] = {"", "1a", "a:b", "__name", "a-b", NULL};
    static const double unsorted[] = {1, 1}, infinite[] = {1, INFINITY};
    uint64_t counts[3] = {0};
    struct prom_hist h = {unsorted, 2, counts, 0};
    struct prom_label dup[2] = {{"k", "1"}, {"k", "2"}};
    struct prom_label le[1] = {{"le", "1"}};
    char long_name[PROM_NAME_MAX + 2];
    struct prom_buf b;
    size_t i, len;

    for (i = 0; bad_names[i]; i++) {
        prom_init(&b, 4096);
        IS(prom_family(&b, bad_names[i], PROM_GAUGE, ""), PROM_EINVAL,
           "bad metric name refused");
        prom_free(&b);
    }
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    prom_init(&b, 4096);
    IS(prom_family(&b, long_name, PROM_GAUGE, ""), PROM_EINVAL,
       "metric name over PROM_NAME_MAX refused");
    prom_free(&b);
    prom_init(&b, 4096);
    IS(prom_family(&b, "a:b_c9", PROM_GAUGE, ""), 0, "colon, digit allowed");
    prom_free(&b);
    for (i = 0; bad_labels[i]; i++) {
        struct prom_label l = {bad_labels[i], "v"};
        prom_init(&b, 4096);
        prom_family(&b, "g", PROM_GAUGE, "");
        len = b.len;
        refused(&b, prom_sample(&b, &l, 1, 1), "bad label name");
        IS(b.len, len, "nothing written for it");
        prom_free(&b);
    }

    prom_init(&b, 4096);
    refused(&b, prom_sample(&b, NULL, 0, 1), "sample before any family");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "g", PROM_GAUGE, "");
    prom_sample(&b, NULL, 0, 1);
    refused(&b, prom_family(&b, "g", PROM_COUNTER, ""), "family given twice");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "g", PROM_GAUGE, "");
    refused(&b, prom_sample(&b, dup, 2, 1), "label given twice");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "c_total", PROM_COUNTER, "");
    refused(&b, prom_sample(&b, NULL, 0, -1), "negative counter");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "c_total", PROM_COUNTER, "");
    refused(&b, prom_sample(&b, NULL, 0, NAN), "NaN counter");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "c_total", PROM_COUNTER, "");
    refused(&b, prom_histogram(&b, NULL, 0, &h), "histogram in a counter");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "h", PROM_HISTOGRAM, "");
    refused(&b, prom_sample(&b, NULL, 0, 1), "plain sample in a histogram");
    prom_free(&b);
    prom_init(&b, 4096);
    prom_family(&b, "h", PROM_HISTOGRAM, "");
    refused(&b, prom_histogram(&b, NULL, 0, &h), "bounds not ascending");
    prom_free(&b);
    h.le = infinite;
    prom_init(&b, 4096);
    prom_family(&b, "h", PROM_HISTOGRAM, "");
    refused(&b, prom_histogram(&b, NULL, 0, &h), "infinite bound");
    prom_free(&b);
    h.le = infinite;
    h.nbounds = 1;
    prom_init(&b, 4096);
    prom_family(&b, "h", PROM_HISTOGRAM, "");
    refused(&b, prom_histogram(&b, le, 1, &h), "label le on a histogram");
    prom_free(&b);

    prom_init(&b, 1 << 20);
    for (i = 0; i < PROM_FAMILIES_MAX; i++) {
        char name[32];
        snprintf(name, sizeof(name), "f%zu", i);
        if (prom_family(&b, name, PROM_GAUGE, "") < 0)
            break;
    }
    IS(i, PROM_FAMILIES_MAX, "PROM_FAMILIES_MAX families fit");
    refused(&b, prom_family(&b, "one_more", PROM_GAUGE, ""), "one family more");
    prom_free(&b);
}

/* Write a fixed page of about 2 KB into b; returns prom_error. */
static int write_page(struct prom_buf *b)
{
    static const double le[] = {1, 5, 10};
    uint64_t counts[] = {1, 2, 3, 4};
    struct prom_hist h = {le, 3, counts, 99};
    char key[32];
    int i;

    prom_family(b, "resild_decisions_total", PROM_COUNTER, "Decisions.");
    for (i = 0; i < 10; i++) {
        struct prom_label l = {"key", key};
        snprintf(key, sizeof(key), "venue%d.orders", i);
        prom_sample_u64(b, &l, 1, (uint64_t)i * 1000);
    }
    prom_family(b, "resild_report_latency_ms", PROM_HISTOGRAM, "Latency.");
    for (i = 0; i < 5; i++) {
        struct prom_label l = {"key", key};
        snprintf(key, sizeof(key), "venue%d.orders", i);
        prom_histogram(b, &l, 1, &h);
    }
    prom_family(b, "resild_uptime_seconds", PROM_GAUGE, "Uptime.");
    prom_sample(b, NULL, 0, 12.25);
    return prom_error(b);
}

/* For every cap below the page's size: PROM_ETOOBIG, and what was written
 * is a prefix of the full page made of whole lines, within the cap. */
static void test_cap(void)
{
    struct prom_buf full, b;
    size_t cap, bad = 0;

    prom_init(&full, 1 << 20);
    OK(write_page(&full) == 0 && full.len > 1000, "full page written");
    for (cap = 0; cap <= full.len; cap++) {
        int rc;
        prom_init(&b, cap);
        rc = write_page(&b);
        if (cap == full.len ? rc != 0 || strcmp(b.data, full.data)
                            : rc != PROM_ETOOBIG || b.len > cap ||
                                  (b.len && b.data[b.len - 1] != '\n') ||
                                  (b.len && memcmp(b.data, full.data, b.len)) ||
                                  (b.data && b.data[b.len] != '\0')) {
            if (!bad++)
                DIAG("cap %zu: rc %d len %zu", cap, rc, b.len);
        }
        if (b.data && b.cap > cap + 1)
            bad++;
        prom_free(&b);
    }
    IS(bad, 0,
       "every cap below the page: ETOOBIG, whole lines, a prefix, within "
       "the cap (allocation too); at the page's size: the page");
    OK(!strcmp(prom_strerror(PROM_ETOOBIG), "metrics text over its size cap"),
       "ETOOBIG says what happened");
    prom_free(&full);
}

static void test_buckets(void)
{
    static const double le[] = {1, 2, 5};

    IS(prom_hist_bucket(le, 3, -1), 0, "below the first bound: bucket 0");
    IS(prom_hist_bucket(le, 3, 1), 0, "on a bound: that bound's bucket");
    IS(prom_hist_bucket(le, 3, 1.5), 1, "between: the next bound's");
    IS(prom_hist_bucket(le, 3, 5), 2, "on the last bound");
    IS(prom_hist_bucket(le, 3, 5.01), 3, "above: +Inf");
    IS(prom_hist_bucket(le, 3, NAN), 3, "NaN: +Inf");
    IS(prom_hist_bucket(le, 0, 7), 0, "no bounds: +Inf");
}

static void test_keycap(void)
{
    struct prom_keycap c;
    static const char *keys[] = {"a", "_other", "b", "c", "d", NULL};
    int want[] = {1, 0, 1, 1, 0}, got = 0, i;

    prom_keycap_init(&c, 3);
    OK(!prom_keycap_other(&c), "nothing folded yet");
    for (i = 0; keys[i]; i++)
        got += prom_keycap_take(&c, keys[i]) == want[i];
    IS(got, 5,
       "max_keys 3: a, b, c own series; a key named _other and d folded");
    OK(prom_keycap_other(&c), "the _other sample is due");
    prom_keycap_init(&c, 0);
    OK(!prom_keycap_take(&c, "a") && prom_keycap_other(&c),
       "max_keys 0: every key folded");
    prom_keycap_init(&c, 2);
    prom_keycap_take(&c, "a");
    prom_keycap_take(&c, "b");
    OK(!prom_keycap_other(&c), "exactly max_keys keys: no _other");
}

/* Random pages with hostile label values, histograms and a key cap, each
 * checked by promcheck.py. */
static void test_random_pages(void)
{
    static const double le[] = {0.5, 1, 10, 100, 1000};
    struct prom_buf b;
    char out[1024];
    int round, failed = 0;

    for (round = 0; round < 20; round++) {
        int f, nf = 1 + rand() % 6;
        prom_init(&b, 1 << 20);
        for (f = 0; f < nf; f++) {
            char name[32];
            enum prom_type t = (enum prom_type)(rand() % 3);
            struct prom_keycap cap;
            uint64_t other[6] = {0};
            int k, nk = rand() % 12;
            snprintf(name, sizeof(name), "fam_%d_%d", round, f);
            prom_family(&b, name, t, "help \\ with\nodd \"bits\"");
            prom_keycap_init(&cap, 5);
            for (k = 0; k < nk; k++) {
                char key[32], val[16];
                struct prom_label l[2] = {{"key", key}, {"class", val}};
                uint64_t counts[6];
                struct prom_hist h = {le, 5, counts, 0};
                int j;
                snprintf(key, sizeof(key), "k%02d", k);
                for (j = 0; j < 15; j++)
                    val[j] = (char)(1 + rand() % 255);
                val[15] = '\0';
                for (j = 0; j < 6; j++) {
                    counts[j] = (uint64_t)(rand() % 100);
                    h.sum += (double)counts[j] * 3.5;
                }
                if (!prom_keycap_take(&cap, key)) {
                    for (j = 0; j < 6; j++)
                        other[j] += counts[j];
                    continue;
                }
                if (t == PROM_HISTOGRAM)
                    prom_histogram(&b, l, 2, &h);
                else if (t == PROM_COUNTER)
                    prom_sample_u64(&b, l, 2, counts[0]);
                else
                    prom_sample(&b, l, 2, (double)rand() / 7 - 1e6);
            }
            if (prom_keycap_other(&cap)) {
                struct prom_label l = {"key", PROM_OTHER_KEY};
                struct prom_hist h = {le, 5, other, 1.5};
                if (t == PROM_HISTOGRAM)
                    prom_histogram(&b, &l, 1, &h);
                else
                    prom_sample_u64(&b, &l, 1, other[0]);
            }
        }
        if (prom_error(&b) || promcheck(b.data, b.len, out, sizeof(out))) {
            if (!failed++)
                DIAG("round %d: err %d: %s", round, prom_error(&b), out);
        }
        prom_free(&b);
    }
    IS(failed, 0, "20 random pages (any byte in label values) pass promcheck");
}

/* promcheck.py refuses each kind of bad page. */
static const struct {
    const char *text;
    const char *want;
} bad_pages[] = {
    {"# HELP a x\n# TYPE a gauge\na 1", "does not end in a newline"},
    {"# HELP a x\n# TYPE a gauge\na 1\r\n", "carriage return"},
    {"a 1\n", "before its HELP and TYPE"},
    {"# HELP a x\na 1\n", "before its HELP and TYPE"},
    {"# HELP a x\n# TYPE a gauge\n# HELP a y\na 1\n", "HELP a twice"},
    {"# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n", "TYPE a twice"},
    {"# HELP a x\n# TYPE a gauge\na 1\n# TYPE a gauge\n", "after its samples"},
    {"# HELP a x\n# TYPE a bogus\n", "bad type"},
    {"# HELP a x\\t\n# TYPE a gauge\n", "bad escape in HELP"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"\\t\"} 1\n", "bad escape in label"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"v} 1\n", "unterminated"},
    {"# HELP a x\n# TYPE a gauge\na{k=v} 1\n", "expected =\""},
    {"# HELP a x\n# TYPE a gauge\na{1k=\"v\"} 1\n", "bad label name"},
    {"# HELP a x\n# TYPE a gauge\na{__k=\"v\"} 1\n", "reserved label"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"v\",k=\"w\"} 1\n", "twice"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"v\"} 1\na{k=\"v\"} 2\n", "twice"},
    {"# HELP a x\n# TYPE a gauge\na 1e\n", "bad value"},
    {"# HELP a x\n# TYPE a gauge\na inf\n", "bad value"},
    {"# HELP a x\n# TYPE a gauge\na1\n", "expected a blank"},
    {"# HELP a x\n# TYPE a gauge\na 1 2 3\n", "expected value"},
    {"# HELP a x\n# TYPE a gauge\na 1 1.5\n", "bad timestamp"},
    {"# HELP a_total x\n# TYPE a_total counter\na_total -1\n", "counter"},
    {"# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\nb 1\na 1\n",
     "not in one group"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"1\"} 1\n# HELP b x\n# TYPE b "
     "gauge\nb 1\na{k=\"2\"} 1\n",
     "not in one group"},
    {"# HELP a x\n# TYPE a gauge\nb 1\n", "before its HELP"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\n"
     "h_count 1\n",
     "not \"+Inf\""},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
     "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
     "not cumulative"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\n"
     "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
     "not above"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n"
     "h_count 3\n",
     "!= +Inf bucket"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n",
     "_sum or _count missing"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket 2\n", "bucket without le"},
    {"# HELP h x\n# TYPE h histogram\nh 2\n", "sample h in a histogram"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.5\nh_sum 1\n"
     "h_count 1.5\n",
     "is not a count"},
    {"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n"
     "h_count{le=\"1\"} 1\n",
     "le on h_count"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"\xff\"} 1\n", "not UTF-8"},
    {"# HELP a x\n# TYPE a gauge\na{k=\"v\"}1\n", "expected a blank"},
};

static void test_promcheck_refuses(void)
{
    size_t i;
    char out[1024];

    for (i = 0; i < sizeof(bad_pages) / sizeof(bad_pages[0]); i++) {
        int rc = promcheck(bad_pages[i].text, strlen(bad_pages[i].text), out,
                           sizeof(out));
        OK(rc == 1 && strstr(out, bad_pages[i].want),
           "promcheck refuses bad page %zu: %s", i, bad_pages[i].want);
        if (rc != 1 || !strstr(out, bad_pages[i].want))
            DIAG("rc %d: %s", rc, out);
    }
    IS(promcheck("", 0, out, sizeof(out)), 0, "an empty page is valid");
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    srand(42);
    test_values();
    test_page();
    test_escapes();
    test_refusals();
    test_cap();
    test_buckets();
    test_keycap();
    test_random_pages();
    test_promcheck_refuses();
    {
        char path[160];
        snprintf(path, sizeof(path), "%s/page.txt", tmpdir);
        unlink(path);
        rmdir(tmpdir);
    }
    return tap_done();
}
