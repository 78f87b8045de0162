/*
 * prom.c - Prometheus text format 0.0.4 writer (see prom.h).
 *
 * Invariants:
 *   P1  data[0..len) is whole lines: every public call either appends
 *       complete lines or, on failure, truncates back to where it started.
 *   P2  len <= max_bytes, and data[len] == '\0' whenever data != NULL.
 *   P3  fam_off[i] is the offset of family i's name in its "# HELP " line.
 * Must not: do I/O, read a clock, or keep pointers the caller gave.
 */
#include "prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROW_MIN 4096

static const char *const type_names[] = {"counter", "gauge", "histogram"};

void prom_init(struct prom_buf *b, size_t max_bytes)
{
    memset(b, 0, sizeof(*b));
    b->max_bytes = max_bytes;
}

void prom_reset(struct prom_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
    b->err = 0;
    b->in_family = 0;
    b->nfam = 0;
}

void prom_free(struct prom_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int prom_error(const struct prom_buf *b)
{
    return b->err;
}

const char *prom_strerror(int err)
{
    switch (err) {
    case 0:
        return "no error";
    case PROM_ETOOBIG:
        return "metrics text over its size cap";
    case PROM_ENOMEM:
        return "out of memory";
    case PROM_EINVAL:
        return "invalid metric, label, bounds or call order";
    }
    return "unknown error";
}

/* Room for n more bytes plus the NUL, within max_bytes; sets b->err. */
static int reserve(struct prom_buf *b, size_t n)
{
    size_t want, cap;
    char *p;

    if (b->err)
        return b->err;
    if (n > b->max_bytes - b->len)
        return b->err = PROM_ETOOBIG;
    want = b->len + n + 1;
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : GROW_MIN;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (b->max_bytes < SIZE_MAX && cap > b->max_bytes + 1)
        cap = b->max_bytes + 1; /* >= want, as len + n <= max_bytes */
    if (!(p = realloc(b->data, cap)))
        return b->err = PROM_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

static void put(struct prom_buf *b, const char *s, size_t n)
{
    if (reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(struct prom_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A failed call leaves no partial line (P1); the error stays. */
static int finish(struct prom_buf *b, size_t mark)
{
    if (b->err && b->data) {
        b->len = mark;
        b->data[mark] = '\0';
    }
    return b->err;
}

static int invalid(struct prom_buf *b)
{
    if (!b->err)
        b->err = PROM_EINVAL;
    return b->err;
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names the same without
 * ':' and not starting with "__" (reserved for Prometheus itself). */
static int name_ok(const char *s, int label)
{
    size_t i, n = s ? strlen(s) : 0;

    if (n == 0 || n > PROM_NAME_MAX)
        return 0;
    if (label && n >= 2 && s[0] == '_' && s[1] == '_')
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n, i;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

/* A control character the format has no escape for (all but tab and
 * newline): a raw CR in a line trips CRLF-minded tools, so it is written
 * as U+FFFD, like invalid UTF-8. */
static int ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f;
}

/* s escaped: '\' -> "\\", newline -> "\n", and in label values '"' ->
 * "\""; invalid UTF-8 and ctl() -> U+FFFD. */
static void put_escaped(struct prom_buf *b, const char *s, int quote)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p && !b->err) {
        size_t run = 0, n;
        /* Copy the longest run needing no escape in one go. */
        while (p[run] && p[run] != '\\' && p[run] != '\n' &&
               !(quote && p[run] == '"') && !ctl(p[run]) &&
               (n = utf8_len(p + run)) > 0)
            run += n;
        put(b, (const char *)p, run);
        p += run;
        if (!*p)
            break;
        if (*p == '\\')
            put(b, "\\\\", 2);
        else if (*p == '\n')
            put(b, "\\n", 2);
        else if (*p == '"')
            put(b, "\\\"", 2);
        else
            put(b, "\xef\xbf\xbd", 3); /* one invalid or ctl() byte */
        p++;
    }
}

size_t prom_format_value(char *out, double v)
{
    int prec;

    if (isnan(v))
        return (size_t)snprintf(out, PROM_VALUE_MAX, "NaN");
    if (isinf(v))
        return (size_t)snprintf(out, PROM_VALUE_MAX, v > 0 ? "+Inf" : "-Inf");
    /* -2^63 and 2^63 are exact in a double; within [-2^63, 2^63) the
     * conversion to long long is exact. */
    if (v == floor(v) && v >= -9223372036854775808.0 &&
        v < 9223372036854775808.0)
        return (size_t)snprintf(out, PROM_VALUE_MAX, "%lld", (long long)v);
    for (prec = 15; prec < 17; prec++) {
        snprintf(out, PROM_VALUE_MAX, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    return (size_t)snprintf(out, PROM_VALUE_MAX, "%.*g", prec, v);
}

static void put_value(struct prom_buf *b, double v)
{
    char tmp[PROM_VALUE_MAX];

    put(b, tmp, prom_format_value(tmp, v));
}

static void put_u64(struct prom_buf *b, uint64_t v)
{
    char tmp[24];

    put(b, tmp,
        (size_t)snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v));
}

/* Label names valid, none twice, and none named "le" in a histogram. */
static int labels_ok(const struct prom_label *l, size_t n, int histogram)
{
    size_t i, j;

    if (n && !l)
        return 0;
    for (i = 0; i < n; i++) {
        if (!name_ok(l[i].name, 1) || !l[i].value)
            return 0;
        if (histogram && !strcmp(l[i].name, "le"))
            return 0;
        for (j = 0; j < i; j++)
            if (!strcmp(l[i].name, l[j].name))
                return 0;
    }
    return 1;
}

/* "<family><suffix>{labels[,le="<le>"]} " (braces only when a label is
 * there). */
static void put_series(struct prom_buf *b, const char *suffix,
                       const struct prom_label *l, size_t n, const char *le)
{
    size_t i;
    size_t f = b->nfam - 1;

    /* The family name is copied from its own HELP line: reserve first, as
     * growing may move data. */
    if (reserve(b, b->fam_len[f]) < 0)
        return;
    memcpy(b->data + b->len, b->data + b->fam_off[f], b->fam_len[f]);
    b->len += b->fam_len[f];
    b->data[b->len] = '\0';
    puts_(b, suffix);
    if (n || le) {
        put(b, "{", 1);
        for (i = 0; i < n; i++) {
            if (i)
                put(b, ",", 1);
            puts_(b, l[i].name);
            put(b, "=\"", 2);
            put_escaped(b, l[i].value, 1);
            put(b, "\"", 1);
        }
        if (le) {
            if (n)
                put(b, ",", 1);
            put(b, "le=\"", 4);
            puts_(b, le);
            put(b, "\"", 1);
        }
        put(b, "}", 1);
    }
    put(b, " ", 1);
}

int prom_family(struct prom_buf *b, const char *name, enum prom_type type,
                const char *help)
{
    size_t mark = b->len, n, i;

    if (b->err)
        return b->err;
    if (!name_ok(name, 0) || (unsigned)type > PROM_HISTOGRAM ||
        b->nfam >= PROM_FAMILIES_MAX)
        return invalid(b);
    n = strlen(name);
    for (i = 0; i < b->nfam; i++)
        if (b->fam_len[i] == n && !memcmp(b->data + b->fam_off[i], name, n))
            return invalid(b);
    puts_(b, "# HELP ");
    if (b->err)
        return finish(b, mark);
    b->fam_off[b->nfam] = b->len; /* P3 */
    b->fam_len[b->nfam] = n;
    puts_(b, name);
    put(b, " ", 1);
    put_escaped(b, help ? help : "", 0);
    puts_(b, "\n# TYPE ");
    puts_(b, name);
    put(b, " ", 1);
    puts_(b, type_names[type]);
    put(b, "\n", 1);
    if (finish(b, mark))
        return b->err;
    b->nfam++;
    b->type = type;
    b->in_family = 1;
    return 0;
}

static int sample_ok(struct prom_buf *b, const struct prom_label *labels,
                     size_t nlabels)
{
    if (b->err)
        return b->err;
    if (!b->in_family || b->type == PROM_HISTOGRAM ||
        !labels_ok(labels, nlabels, 0))
        return invalid(b);
    return 0;
}

int prom_sample(struct prom_buf *b, const struct prom_label *labels,
                size_t nlabels, double value)
{
    size_t mark = b->len;

    if (sample_ok(b, labels, nlabels))
        return b->err;
    if (b->type == PROM_COUNTER && !(value >= 0))
        return invalid(b); /* negative or NaN */
    put_series(b, "", labels, nlabels, NULL);
    put_value(b, value);
    put(b, "\n", 1);
    return finish(b, mark);
}

int prom_sample_u64(struct prom_buf *b, const struct prom_label *labels,
                    size_t nlabels, uint64_t value)
{
    size_t mark = b->len;

    if (sample_ok(b, labels, nlabels))
        return b->err;
    put_series(b, "", labels, nlabels, NULL);
    put_u64(b, value);
    put(b, "\n", 1);
    return finish(b, mark);
}

size_t prom_hist_bucket(const double *le, size_t nbounds, double v)
{
    size_t lo = 0, hi = nbounds;

    if (isnan(v))
        return nbounds;
    while (lo < hi) { /* first i with v <= le[i] */
        size_t mid = lo + (hi - lo) / 2;
        if (v <= le[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int prom_histogram(struct prom_buf *b, const struct prom_label *labels,
                   size_t nlabels, const struct prom_hist *h)
{
    size_t mark = b->len, i;
    uint64_t cum = 0;
    char le[PROM_VALUE_MAX];

    if (b->err)
        return b->err;
    if (!b->in_family || b->type != PROM_HISTOGRAM ||
        !labels_ok(labels, nlabels, 1) || !h || !h->counts ||
        (h->nbounds && !h->le))
        return invalid(b);
    for (i = 0; i < h->nbounds; i++)
        if (!isfinite(h->le[i]) || (i && !(h->le[i] > h->le[i - 1])))
            return invalid(b);
    for (i = 0; i <= h->nbounds; i++) {
        /* Counts past 2^64 in total cannot happen for observations
         * counted one by one; saturate rather than wrap all the same. */
        cum = h->counts[i] > UINT64_MAX - cum ? UINT64_MAX : cum + h->counts[i];
        if (i < h->nbounds)
            prom_format_value(le, h->le[i]);
        else
            strcpy(le, "+Inf");
        put_series(b, "_bucket", labels, nlabels, le);
        put_u64(b, cum);
        put(b, "\n", 1);
    }
    put_series(b, "_sum", labels, nlabels, NULL);
    put_value(b, h->sum);
    put(b, "\n", 1);
    put_series(b, "_count", labels, nlabels, NULL);
    put_u64(b, cum);
    put(b, "\n", 1);
    return finish(b, mark);
}

void prom_keycap_init(struct prom_keycap *c, uint64_t max_keys)
{
    c->max_keys = max_keys;
    c->taken = 0;
    c->folded = 0;
}

int prom_keycap_take(struct prom_keycap *c, const char *key)
{
    if (c->taken < c->max_keys && strcmp(key, PROM_OTHER_KEY) != 0) {
        c->taken++;
        return 1;
    }
    c->folded++;
    return 0;
}

int prom_keycap_other(const struct prom_keycap *c)
{
    return c->folded > 0;
}
