/*
 * prom.h - a writer for the Prometheus text exposition format 0.0.4, pure:
 * no I/O, no clock, no globals; it appends to a growable buffer it owns,
 * bounded by a byte cap the caller gives.
 *
 * Shape of a page (what prom_* guarantees about what it writes):
 *   # HELP <family> <help, '\' and newline escaped>
 *   # TYPE <family> counter|gauge|histogram
 *   <family>{label="value",...} <value>            (counter, gauge)
 *   <family>_bucket{...,le="<bound>"} <cumulative> (histogram, ascending
 *   <family>_sum{...} <sum>                          bounds, last "+Inf",
 *   <family>_count{...} <count>                      equal to _count)
 * Each family's HELP and TYPE come once, before its samples, and its
 * samples follow as one group: a caller streams keys in order with
 *     prom_family(b, "resild_decisions_total", PROM_COUNTER, "...");
 *     for each key: prom_sample_u64(b, labels, n, value);
 *     prom_family(b, "resild_breaker_state", PROM_GAUGE, "...");  ...
 * A family name given a second time, a bad metric or label name, a
 * histogram label named "le" or unsorted bounds are caller bugs: the call
 * fails with PROM_EINVAL and the error sticks.
 *
 * Errors are sticky: the first failure is kept in b->err, every later call
 * returns it and writes nothing, and the text ends at the last call that
 * succeeded (a failed call leaves no partial line).  So a renderer writes
 * the whole page and checks prom_error() once at the end; a page cut by
 * PROM_ETOOBIG is incomplete and should be answered as an error, not
 * served (Prometheus would read the missing series as gone).
 *
 * Label values: escaped per the format (backslash, double quote, newline).
 * The format wants UTF-8; an invalid UTF-8 sequence in a value (a client
 * may send any bytes as an error class) is written as U+FFFD rather than
 * failing the whole page, and so is a control character other than tab
 * and newline (the format has no escape for a CR, which tools that split
 * lines on CRLF would cut at).  HELP text is escaped the same way.
 *
 * Per-key cardinality (metrics.max_keys): see struct prom_keycap below.
 */
#ifndef RESIL_PROM_H
#define RESIL_PROM_H

#include <stddef.h>
#include <stdint.h>

#define PROM_NAME_MAX 128     /* bytes in a metric or label name */
#define PROM_FAMILIES_MAX 256 /* families in one page */
#define PROM_OTHER_KEY "_other"

/* Errors: negative, sticky in struct prom_buf.err. */
enum {
    PROM_ETOOBIG = -1, /* the text would pass max_bytes */
    PROM_ENOMEM = -2,  /* realloc failed */
    PROM_EINVAL = -3,  /* a caller bug: bad name, order, bounds (see top) */
};

enum prom_type { PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM };

struct prom_label {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not "__..." */
    const char *value; /* any bytes, NUL-terminated; escaped when written */
};

struct prom_buf {
    char *data;       /* owned; NUL-terminated when not NULL; len bytes */
    size_t len, cap;  /* cap: bytes allocated */
    size_t max_bytes; /* len never passes this (caller's cap) */
    int err;          /* 0 or the first PROM_E* */
    /* The family being written (samples go to it) and where every family
     * begun so far has its "# HELP " line in data, so a name given twice
     * is caught without another copy of the names. */
    enum prom_type type;
    int in_family;
    size_t nfam;
    size_t fam_off[PROM_FAMILIES_MAX];
    size_t fam_len[PROM_FAMILIES_MAX];
};

/* An empty buffer whose text may grow to max_bytes; allocates nothing
 * until the first write. */
void prom_init(struct prom_buf *b, size_t max_bytes);

/* Drop the text and the families, keep the allocation (for the next
 * page) and max_bytes; clears the error. */
void prom_reset(struct prom_buf *b);

/* Free the text.  b may be reused after prom_init. */
void prom_free(struct prom_buf *b);

/* 0 or the sticky error. */
int prom_error(const struct prom_buf *b);
const char *prom_strerror(int err);

/*
 * Begin family name of type: write its HELP (help escaped) and TYPE lines.
 * Samples written after this belong to it until the next prom_family.
 * 0, or PROM_EINVAL (bad name, name already begun in this page, more than
 * PROM_FAMILIES_MAX families), PROM_ETOOBIG, PROM_ENOMEM.
 */
int prom_family(struct prom_buf *b, const char *name, enum prom_type type,
                const char *help);

/*
 * One sample of the current counter or gauge family: name{labels} value.
 * labels: nlabels entries (borrowed; NULL when 0), written in the order
 * given; no name may appear twice.  A counter's value must be >= 0 and not
 * NaN.  prom_sample_u64 writes an integer exactly (no double rounding past
 * 2^53).  0 or an error as above; PROM_EINVAL also when the current family
 * is a histogram or none was begun.
 */
int prom_sample(struct prom_buf *b, const struct prom_label *labels,
                size_t nlabels, double value);
int prom_sample_u64(struct prom_buf *b, const struct prom_label *labels,
                    size_t nlabels, uint64_t value);

/*
 * A histogram's observations: nbounds upper bounds le[] (ascending,
 * finite, borrowed) and nbounds + 1 per-bucket counts, NOT cumulative:
 * counts[i] observations v with le[i-1] < v <= le[i], counts[nbounds]
 * those above the last bound.  prom_hist_observe keeps one up to date.
 */
struct prom_hist {
    const double *le;
    size_t nbounds;
    const uint64_t *counts; /* nbounds + 1 entries */
    double sum;             /* of the observed values */
};

/* Index of the bucket v falls in: the first i with v <= le[i], nbounds
 * for above every bound (and for NaN). */
size_t prom_hist_bucket(const double *le, size_t nbounds, double v);

/*
 * One histogram series of the current histogram family: nbounds + 1
 * _bucket lines with cumulative counts (the last le="+Inf"), then _sum and
 * _count (the total of counts).  labels as for prom_sample, none named
 * "le".  0 or an error as above; PROM_EINVAL also for bounds not strictly
 * ascending or not finite, or a current family that is not a histogram.
 */
int prom_histogram(struct prom_buf *b, const struct prom_label *labels,
                   size_t nlabels, const struct prom_hist *h);

/*
 * Format v as the format wants it into out (at least PROM_VALUE_MAX
 * bytes): "+Inf", "-Inf", "NaN"; an integral value below 2^63 in
 * magnitude as an integer without exponent ("3", "-12", "0" for -0);
 * anything else in the shortest "%.{15,16,17}g" that reads back exactly.
 * Returns the length written.
 */
#define PROM_VALUE_MAX 32
size_t prom_format_value(char *out, double v);

/*
 * Per-key cardinality cap (metrics.max_keys).  For each family labelled
 * by key, the caller walks the keys in one fixed order (the registry's
 * name order, so the same keys get their own series in every family and
 * from one scrape to the next) and asks prom_keycap_take for each: 1 means
 * write the key's own sample(s); 0 means add the key's values into an
 * aggregate the caller keeps (counters and histogram buckets summed,
 * gauges summed: so a state gauge is best one-hot per state, e.g.
 * resild_breaker_state{key,state} 1/0, whose sum under _other counts the
 * keys in each state).  After the walk, if prom_keycap_other(c), write
 * the aggregate once with key="_other".  A real key named "_other" (a
 * valid key name) is always folded into the aggregate so that it cannot
 * produce a second series with that label.
 *
 *     struct prom_keycap cap;
 *     prom_keycap_init(&cap, cfg->metrics_max_keys);
 *     for (k = first; k; k = next(k))
 *         if (prom_keycap_take(&cap, k->name)) write k's sample
 *         else                                 add k into other
 *     if (prom_keycap_other(&cap)) write other with key="_other"
 */
struct prom_keycap {
    uint64_t max_keys; /* keys written with their own label */
    uint64_t taken;    /* keys given their own series so far */
    uint64_t folded;   /* keys folded into _other so far */
};

void prom_keycap_init(struct prom_keycap *c, uint64_t max_keys);
int prom_keycap_take(struct prom_keycap *c, const char *key);
/* 1 if any key was folded: the _other sample is due. */
int prom_keycap_other(const struct prom_keycap *c);

#endif
