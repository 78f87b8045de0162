/*
 * scan.c - the bounded, resumable msgpack object walker (see proto.h).
 *
 * What it does: finds where the one msgpack object starting at buf[0] ends,
 * checking on the way that the object fits in max_bytes and nests no deeper
 * than max_depth.  Every declared length or count is checked against
 * max_bytes as soon as its header is readable, before the payload or the
 * elements arrive, so a 5-byte header declaring 4 G elements is rejected
 * after 5 bytes.  Only then may msgpack-c, which allocates eagerly from
 * declared counts, see the object.
 *
 * What it must not do: recurse, allocate, keep globals, read buf[i] for any
 * i >= len, or overflow an integer on any input.  It never re-walks bytes it
 * has accepted: a slow-drip peer costs O(bytes * depth), not O(bytes^2).
 *
 * State (struct proto_scan):
 *   pos         bytes accepted.  pos only moves over a whole element header
 *               together with its payload (scalars, str, bin, ext) or over
 *               a whole container header.  A header or payload that is only
 *               partly in buf is not accepted; the next call re-reads it
 *               from pos (at most 9 header bytes, O(1)).
 *   depth       open containers, 0..max_depth.  The top-level container is
 *               depth 1.
 *   left[d]     elements of the container at depth d (1..depth) that have
 *               not been started yet; a map of N pairs holds 2N elements.
 *               An element is "started" when its header is accepted, so
 *               left[d] is decremented then.  left[0] is unused.
 *   due         sum(left[1..depth]), kept as left[] changes so that an
 *               element costs O(1), not a sum over the levels.
 *
 * Invariants, after every accepted element:
 *   I1  depth == 0 && pos > 0  <=>  the object is complete (size == pos).
 *   I2  depth > 0  =>  left[depth] > 0: a level whose elements have all
 *       ended is closed at once.  A lower level d < depth may have
 *       left[d] == 0: its last element is the open container at d + 1.
 *   I3  pos + due <= max_bytes, where due = sum(left[1..depth]) is the
 *       least number of bytes still to come (every element is >= 1 byte).
 *       Any header whose size, payload or element count would break I3 is
 *       rejected with -PROTO_E2BIG, so an incomplete object never grows
 *       past max_bytes and "0, need more" is only returned while the object
 *       could still complete within max_bytes.
 *
 * Errors change no state, so calling again after one returns it again.
 *
 * Arithmetic: all sizes are formed in uint64_t.  pos <= max_bytes <=
 * LONG_MAX < 2^63, a declared length is < 2^32, a header is <= 18 bytes and
 * due <= 8 levels * 2 * (2^32 - 1) < 2^36, so no sum below can wrap.
 */
#include "proto.h"

#include <limits.h>
#include <string.h>

void proto_scan_init(struct proto_scan *s)
{
    memset(s, 0, sizeof(*s));
}

/* Kinds of element header. */
enum scan_kind {
    K_FIXED, /* whole element is `fixed` bytes (header included) */
    K_BLOB,  /* str/bin/ext: `fixed` header bytes (the n-byte length field
                and ext's type byte included), then `length` payload bytes */
    K_ARRAY, /* `fixed` header bytes; element count in the first byte
                (n == 0) or in an n-byte field after it */
    K_MAP,   /* likewise, count of key/value pairs */
    K_BAD,   /* 0xc1: never used by msgpack */
};

struct scan_head {
    enum scan_kind kind;
    unsigned fixed;        /* header bytes (K_FIXED: the whole element) */
    unsigned n;            /* width of the big-endian length/count field */
    uint64_t inline_count; /* fixarray/fixmap/fixstr value when n == 0 */
};

static struct scan_head head(enum scan_kind kind, unsigned fixed, unsigned n,
                             uint64_t inline_count)
{
    struct scan_head h;

    h.kind = kind;
    h.fixed = fixed;
    h.n = n;
    h.inline_count = inline_count;
    return h;
}

/*
 * Classify the first byte of an element.  For K_BLOB and containers with
 * n > 0 the length/count field occupies bytes [1, 1 + n).
 */
static struct scan_head classify(uint8_t b)
{
    if (b <= 0x7f || b >= 0xe0) /* positive / negative fixint */
        return head(K_FIXED, 1, 0, 0);
    if (b <= 0x8f)
        return head(K_MAP, 1, 0, b & 0x0f);
    if (b <= 0x9f)
        return head(K_ARRAY, 1, 0, b & 0x0f);
    if (b <= 0xbf) /* fixstr */
        return head(K_BLOB, 1, 0, b & 0x1f);
    switch (b) {
    case 0xc0: /* nil */
    case 0xc2: /* false */
    case 0xc3: /* true */
        return head(K_FIXED, 1, 0, 0);
    case 0xc1: /* never used */
        return head(K_BAD, 1, 0, 0);
    case 0xc4: /* bin8 */
    case 0xd9: /* str8 */
        return head(K_BLOB, 2, 1, 0);
    case 0xc5: /* bin16 */
    case 0xda: /* str16 */
        return head(K_BLOB, 3, 2, 0);
    case 0xc6: /* bin32 */
    case 0xdb: /* str32 */
        return head(K_BLOB, 5, 4, 0);
    case 0xc7: /* ext8: length, type, data */
        return head(K_BLOB, 3, 1, 0);
    case 0xc8: /* ext16 */
        return head(K_BLOB, 4, 2, 0);
    case 0xc9: /* ext32 */
        return head(K_BLOB, 6, 4, 0);
    case 0xcc: /* uint8 */
    case 0xd0: /* int8 */
        return head(K_FIXED, 2, 0, 0);
    case 0xcd: /* uint16 */
    case 0xd1: /* int16 */
        return head(K_FIXED, 3, 0, 0);
    case 0xca: /* float32 */
    case 0xce: /* uint32 */
    case 0xd2: /* int32 */
        return head(K_FIXED, 5, 0, 0);
    case 0xcb: /* float64 */
    case 0xcf: /* uint64 */
    case 0xd3: /* int64 */
        return head(K_FIXED, 9, 0, 0);
    case 0xd4: /* fixext1: type byte + 1 */
        return head(K_FIXED, 3, 0, 0);
    case 0xd5: /* fixext2 */
        return head(K_FIXED, 4, 0, 0);
    case 0xd6: /* fixext4 */
        return head(K_FIXED, 6, 0, 0);
    case 0xd7: /* fixext8 */
        return head(K_FIXED, 10, 0, 0);
    case 0xd8: /* fixext16 */
        return head(K_FIXED, 18, 0, 0);
    case 0xdc: /* array16 */
        return head(K_ARRAY, 3, 2, 0);
    case 0xdd: /* array32 */
        return head(K_ARRAY, 5, 4, 0);
    case 0xde: /* map16 */
        return head(K_MAP, 3, 2, 0);
    default: /* 0xdf: map32 */
        return head(K_MAP, 5, 4, 0);
    }
}

/* Big-endian unsigned field of n (0..4) bytes. */
static uint64_t read_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Accept the element header at s->pos, which ends at new_pos: count the
 * element as started at its level. */
static void start_element(struct proto_scan *s, uint64_t new_pos)
{
    if (s->depth > 0) {
        s->left[s->depth]--;
        s->due--;
    }
    s->pos = (size_t)new_pos;
}

/* An element has ended: close every container whose last element it was
 * (restores I2). */
static void end_element(struct proto_scan *s)
{
    while (s->depth > 0 && s->left[s->depth] == 0)
        s->depth--;
}

long proto_scan_next(struct proto_scan *s, const uint8_t *buf, size_t len,
                     size_t max_bytes, unsigned max_depth)
{
    /* Keep the size representable as the long we return, and the level
     * index inside left[] whatever the caller passed. */
    if (max_bytes > LONG_MAX)
        max_bytes = LONG_MAX;
    if (max_depth > PROTO_MAX_DEPTH)
        max_depth = PROTO_MAX_DEPTH;

    for (;;) {
        uint64_t pos = s->pos, rest, size, count;
        struct scan_head h;

        if (s->depth == 0 && pos > 0) /* I1: complete (also on a re-call) */
            return (long)pos;

        /* rest: elements due after the one at pos, each >= 1 byte.  The
         * element at pos is one of left[depth] (or the top-level object). */
        rest = s->due - (s->depth > 0);
        /* By I3 this fails only for max_bytes == 0 at the first byte, or a
         * caller that lowered max_bytes between calls. */
        if (pos + 1 + rest > max_bytes)
            return -PROTO_E2BIG;
        if (pos >= len)
            return 0;

        h = classify(buf[pos]);
        if (h.kind == K_BAD)
            return -PROTO_EINVAL;

        /* The header (with any length/count field) must fit, then be here. */
        if (pos + h.fixed + rest > max_bytes)
            return -PROTO_E2BIG;
        if (h.n > 0 && pos + 1 + h.n > len)
            return 0;
        count = h.n > 0 ? read_be(buf + pos + 1, h.n) : h.inline_count;

        if (h.kind == K_ARRAY || h.kind == K_MAP) {
            if (h.kind == K_MAP)
                count *= 2; /* < 2^33: keys and values */
            if (s->depth >= max_depth)
                return -PROTO_EDEPTH;
            /* I3: every declared element needs at least one more byte. */
            if (pos + h.fixed + count + rest > max_bytes)
                return -PROTO_E2BIG;
            /* The whole header is here: h.fixed == 1 + h.n, checked above. */
            start_element(s, pos + h.fixed);
            if (count > 0) {
                s->left[++s->depth] = count; /* depth < max_depth <= 8 */
                s->due += count;
            } else
                end_element(s);
            continue;
        }

        /* Scalar or blob: accept header and payload together. */
        size = h.fixed + (h.kind == K_BLOB ? count : 0);
        if (pos + size + rest > max_bytes)
            return -PROTO_E2BIG;
        if (pos + size > len)
            return 0;
        start_element(s, pos + size);
        end_element(s);
    }
}
