/*
 * snapfile.c - snapshot and journal formats (see snapfile.h).
 *
 * Pure: no I/O, no clock.  Decoding reads through a cursor that refuses
 * any read past the end, checks every count against a fixed bound before
 * it is used, and ends with core_export_check, so nothing a file says can
 * make it read out of bounds, allocate, or import a value the core would
 * not have made.  The one shared object is the CRC table, built once
 * (pthread_once) and read-only after: the writer computes CRCs on the
 * thread pool.
 */
#include "snapfile.h"

#include <endian.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "error.h"

const char snapfile_magic[8] = {'R', 'E', 'S', 'I', 'L', 'D', 'S', 'N'};
const char snapfile_journal_magic[8] = {'R', 'E', 'S', 'I', 'L', 'D', 'J', '1'};

/* --- buffer ------------------------------------------------------------- */

void snapbuf_init(struct snapbuf *b)
{
    memset(b, 0, sizeof(*b));
}

void snapbuf_free(struct snapbuf *b)
{
    if (b->mapped)
        munmap(b->p, b->cap);
    else
        free(b->p);
    snapbuf_init(b);
}

/* A buffer of SNAPBUF_MAP_BYTES or more is its own anonymous mapping and
 * grows with mremap, which moves page tables, never bytes: a snapshot
 * buffer of hundreds of MB grows in a step of the loop's walk without a
 * copy (realloc copies a heap block, and glibc keeps blocks of up to
 * 32 MB on the heap once it has raised its mmap threshold).  The one
 * copy is the move from the heap, of less than SNAPBUF_MAP_BYTES. */
static uint8_t *grow(struct snapbuf *b, size_t cap)
{
    void *p;

    if (cap < SNAPBUF_MAP_BYTES)
        return realloc(b->p, cap);
    if (b->mapped) {
        p = mremap(b->p, b->cap, cap, MREMAP_MAYMOVE);
        return p == MAP_FAILED ? NULL : p;
    }
    p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
             0);
    if (p == MAP_FAILED)
        return NULL;
    if (b->len)
        memcpy(p, b->p, b->len);
    free(b->p);
    b->mapped = 1;
    return p;
}

int snapbuf_reserve(struct snapbuf *b, size_t n)
{
    size_t cap;
    uint8_t *p;

    if (b->oom)
        return -1;
    if (n <= b->cap - b->len)
        return 0;
    cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    if (!(p = grow(b, cap))) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put(struct snapbuf *b, const void *p, size_t n)
{
    if (snapbuf_reserve(b, n) == 0) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

static void put8(struct snapbuf *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put32(struct snapbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void put64(struct snapbuf *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}

/* Write v at b->p[at] (room already there). */
static void poke32(struct snapbuf *b, size_t at, uint32_t v)
{
    b->p[at] = (uint8_t)v;
    b->p[at + 1] = (uint8_t)(v >> 8);
    b->p[at + 2] = (uint8_t)(v >> 16);
    b->p[at + 3] = (uint8_t)(v >> 24);
}

/* Little-endian fields: one unaligned load each (restore reads tens of
 * them a key). */
uint32_t snapfile_u32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

static uint64_t u64_at(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

/* --- CRC-32, slice by 8 -------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    uint32_t i, j, c;

    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (j = 1; j < 8; j++)
            crc_table[j][i] = crc_table[0][crc_table[j - 1][i] & 0xff] ^
                              (crc_table[j - 1][i] >> 8);
}

uint32_t snapfile_crc32(uint32_t crc, const void *data, size_t n)
{
    const uint8_t *p = data;

    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (n >= 8) {
        uint32_t a = crc ^ snapfile_u32(p), b = snapfile_u32(p + 4);
        crc = crc_table[7][a & 0xff] ^ crc_table[6][(a >> 8) & 0xff] ^
              crc_table[5][(a >> 16) & 0xff] ^ crc_table[4][a >> 24] ^
              crc_table[3][b & 0xff] ^ crc_table[2][(b >> 8) & 0xff] ^
              crc_table[1][(b >> 16) & 0xff] ^ crc_table[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* --- header -------------------------------------------------------------- */

void snapfile_header_encode(const struct snapfile_header *h,
                            uint8_t out[SNAPFILE_HEADER_BYTES])
{
    struct snapbuf b = {out, 0, SNAPFILE_HEADER_BYTES, 0};

    put(&b, snapfile_magic, 8);
    put32(&b, h->version);
    put32(&b, SNAPFILE_HEADER_BYTES);
    put64(&b, h->nkeys);
    put64(&b, h->journal_seq);
    put64(&b, h->payload_bytes);
    put32(&b, h->payload_crc);
    put32(&b, snapfile_crc32(0, out, 44));
}

int snapfile_header_decode(const uint8_t in[SNAPFILE_HEADER_BYTES],
                           struct snapfile_header *h)
{
    if (memcmp(in, snapfile_magic, 8) != 0 ||
        snapfile_u32(in + 44) != snapfile_crc32(0, in, 44))
        return SNAPFILE_ECORRUPT;
    h->version = snapfile_u32(in + 8);
    if (h->version > SNAPFILE_VERSION)
        return SNAPFILE_EFUTURE; /* checked before its layout is trusted */
    if (h->version < 1 || snapfile_u32(in + 12) != SNAPFILE_HEADER_BYTES)
        return SNAPFILE_ECORRUPT;
    h->nkeys = u64_at(in + 16);
    h->journal_seq = u64_at(in + 24);
    h->payload_bytes = u64_at(in + 32);
    h->payload_crc = snapfile_u32(in + 40);
    /* Every key record takes at least 4 + 1 bytes. */
    if (h->nkeys > SNAPFILE_KEYS_MAX || h->nkeys > h->payload_bytes / 5)
        return SNAPFILE_ECORRUPT;
    return 0;
}

/* --- records -------------------------------------------------------------- */

/* A record: reserve its length, write the body, fill the length in. */
static size_t rec_begin(struct snapbuf *b)
{
    size_t at = b->len;

    put32(b, 0);
    return at;
}

static int rec_end(struct snapbuf *b, size_t at)
{
    if (b->oom)
        return -1;
    poke32(b, at, (uint32_t)(b->len - at - 4));
    return 0;
}

int snapfile_put_budget(struct snapbuf *b, const struct budget_export *ex)
{
    size_t at = rec_begin(b);
    uint32_t i;

    put8(b, (uint8_t)ex->n);
    for (i = 0; i < ex->n; i++) {
        put32(b, ex->b[i].age_s);
        put32(b, ex->b[i].calls);
        put32(b, ex->b[i].retries);
    }
    return rec_end(b, at);
}

static void put_limiter(struct snapbuf *b, const struct limiter_export *l)
{
    put64(b, l->level);
    put64(b, l->per_ms);
    put64(b, l->paused_left_ms);
}

static void put_key_body(struct snapbuf *b, const struct key_export *ex)
{
    const struct breaker_export *br = &ex->br;
    uint32_t i;

    put8(b, ex->len);
    put(b, ex->name, ex->len);
    put8(b, ex->reason_len);
    put(b, ex->reason, ex->reason_len);
    put8(b, br->state);
    put8(b, br->force);
    put8(b, br->cause);
    put8(b, br->force_has_ttl);
    put64(b, br->force_left_ms);
    put64(b, br->open_left_ms);
    put64(b, br->open_for_ms);
    put64(b, br->since_age_ms);
    put32(b, br->generation);
    put32(b, br->consecutive_failures);
    put32(b, br->reopens);
    put32(b, br->probe_successes);
    put64(b, br->rng);
    put64(b, br->calls);
    put64(b, br->failures);
    put64(b, br->slow_calls);
    put64(b, br->opens);
    put8(b, br->window_time);
    put32(b, br->nwin);
    if (!br->window_time) {
        put(b, ex->win_calls, br->nwin);
    } else {
        for (i = 0; i < br->nwin; i++) {
            put32(b, ex->win_buckets[i].age_s);
            put32(b, ex->win_buckets[i].calls);
            put32(b, ex->win_buckets[i].failures);
            put32(b, ex->win_buckets[i].slow);
        }
    }
    put_limiter(b, &ex->lim);
    put_limiter(b, &ex->crit);
    put64(b, ex->hb.silent_ms);
    put64(b, ex->hb.beats);
    put64(b, ex->hb.losses);
    put8(b, ex->hb.lost);
    put64(b, ex->retry_prev_ms);
}

int snapfile_put_key(struct snapbuf *b, const struct key_export *ex)
{
    size_t at = rec_begin(b);

    put_key_body(b, ex);
    return rec_end(b, at);
}

int snapfile_put_journal(struct snapbuf *b, uint64_t seq,
                         const struct key_export *ex)
{
    size_t at = b->len;

    put32(b, 0);
    put32(b, 0);
    put64(b, seq);
    put_key_body(b, ex);
    if (b->oom)
        return -1;
    poke32(b, at, (uint32_t)(b->len - at - 8));
    poke32(b, at + 4, snapfile_crc32(0, b->p + at + 8, b->len - at - 8));
    return 0;
}

/* --- decoding --------------------------------------------------------------
 */

/* A read cursor: bad is set by any read past the end, which then reads
 * zeros. */
struct cur {
    const uint8_t *p;
    size_t n, at;
    int bad;
};

static const uint8_t *take(struct cur *c, size_t n)
{
    const uint8_t *p;

    if (c->bad || n > c->n - c->at) {
        c->bad = 1;
        return NULL;
    }
    p = c->p + c->at;
    c->at += n;
    return p;
}

static uint8_t get8(struct cur *c)
{
    const uint8_t *p = take(c, 1);
    return p ? *p : 0;
}

static uint32_t get32(struct cur *c)
{
    const uint8_t *p = take(c, 4);
    return p ? snapfile_u32(p) : 0;
}

static uint64_t get64(struct cur *c)
{
    const uint8_t *p = take(c, 8);
    return p ? u64_at(p) : 0;
}

static void get_bytes(struct cur *c, void *out, size_t n)
{
    const uint8_t *p = take(c, n);

    if (p)
        memcpy(out, p, n);
}

int snapfile_get_budget(const uint8_t *p, size_t n, struct budget_export *ex)
{
    struct cur c = {p, n, 0, 0};
    uint32_t i;

    memset(ex, 0, sizeof(*ex));
    ex->n = get8(&c);
    if (ex->n > RETRY_BUDGET_S)
        return SNAPFILE_ECORRUPT;
    for (i = 0; i < ex->n; i++) {
        ex->b[i].age_s = get32(&c);
        ex->b[i].calls = get32(&c);
        ex->b[i].retries = get32(&c);
    }
    return c.bad || c.at != n ? SNAPFILE_ECORRUPT : 0;
}

static void get_limiter(struct cur *c, struct limiter_export *l)
{
    l->level = get64(c);
    l->per_ms = get64(c);
    l->paused_left_ms = get64(c);
}

static int get_key_body(struct cur *c, struct key_export *ex)
{
    struct breaker_export *br = &ex->br;
    uint32_t i;

    ex->len = get8(c);
    if (ex->len > KEY_MAX)
        return SNAPFILE_ECORRUPT;
    get_bytes(c, ex->name, ex->len);
    ex->name[ex->len] = '\0';
    ex->reason_len = get8(c);
    if (ex->reason_len > KEY_REASON_MAX)
        return SNAPFILE_ECORRUPT;
    get_bytes(c, ex->reason, ex->reason_len);
    ex->reason[ex->reason_len] = '\0';
    memset(br, 0, sizeof(*br));
    br->state = get8(c);
    br->force = get8(c);
    br->cause = get8(c);
    br->force_has_ttl = get8(c);
    br->force_left_ms = get64(c);
    br->open_left_ms = get64(c);
    br->open_for_ms = get64(c);
    br->since_age_ms = get64(c);
    br->generation = get32(c);
    br->consecutive_failures = get32(c);
    br->reopens = get32(c);
    br->probe_successes = get32(c);
    br->rng = get64(c);
    br->calls = get64(c);
    br->failures = get64(c);
    br->slow_calls = get64(c);
    br->opens = get64(c);
    br->window_time = get8(c);
    br->nwin = get32(c);
    /* The count is bounded before a single entry is read. */
    if (br->window_time > 1 ||
        br->nwin > (br->window_time ? BREAKER_MAX_TIME_WINDOW
                                    : BREAKER_MAX_COUNT_WINDOW))
        return SNAPFILE_ECORRUPT;
    if (!br->window_time) {
        get_bytes(c, ex->win_calls, br->nwin);
    } else {
        for (i = 0; i < br->nwin && !c->bad; i++) {
            ex->win_buckets[i].age_s = get32(c);
            ex->win_buckets[i].calls = get32(c);
            ex->win_buckets[i].failures = get32(c);
            ex->win_buckets[i].slow = get32(c);
        }
    }
    get_limiter(c, &ex->lim);
    get_limiter(c, &ex->crit);
    ex->hb.silent_ms = get64(c);
    ex->hb.beats = get64(c);
    ex->hb.losses = get64(c);
    ex->hb.lost = get8(c);
    ex->retry_prev_ms = get64(c);
    if (c->bad || core_export_check(ex) < 0)
        return SNAPFILE_ECORRUPT;
    return 0;
}

int snapfile_get_key(const uint8_t *p, size_t n, struct key_export *ex)
{
    struct cur c = {p, n, 0, 0};

    if (get_key_body(&c, ex) < 0 || c.at != n)
        return SNAPFILE_ECORRUPT;
    return 0;
}

int snapfile_get_journal(const uint8_t *p, size_t n, uint64_t *seq,
                         struct key_export *ex, size_t *used)
{
    struct cur c;
    uint32_t len;

    if (n < 8)
        return 0;
    len = snapfile_u32(p);
    if (len < 8 + 5 || len > SNAPFILE_REC_MAX)
        return SNAPFILE_ECORRUPT;
    if (n - 8 < len)
        return 0;
    if (snapfile_crc32(0, p + 8, len) != snapfile_u32(p + 4))
        return SNAPFILE_ECORRUPT;
    c = (struct cur){p + 8, len, 0, 0};
    *seq = get64(&c);
    if (get_key_body(&c, ex) < 0 || c.at != len)
        return SNAPFILE_ECORRUPT;
    *used = 8 + (size_t)len;
    return 1;
}
