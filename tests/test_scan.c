/*
 * test_scan.c - the bounded msgpack scanner (proto/scan.c).
 *
 * Checked against msgpack-c as the reference: every msgpack format packed by
 * msgpack_packer scans to exactly its packed size, whole, one byte at a time
 * and in random chunks; random nested objects likewise, and msgpack_unpack
 * consumes exactly what the scanner accepted.  Then the bounds: hostile
 * headers (huge array/map counts, 4 GiB str/bin/ext) are refused after at
 * most 5 bytes so nothing reaches msgpack-c, max_bytes is exact at its edge,
 * depth 8 passes and 9 does not, 0xc1 and garbage are invalid, and a random
 * byte-string loop checks the result contract.  Buffers are malloc'd at
 * their exact length so ASan catches any read past len.
 */
#include "proto.h"
#include "tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- helpers -------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

/* xorshift64*: reproducible across runs and platforms. */
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* An exact-size heap copy of p[0..n) (n may be 0). */
static uint8_t *dup_exact(const void *p, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);

    if (!b)
        abort();
    if (n)
        memcpy(b, p, n);
    return b;
}

/* Scan p[0..n) in one call, from an exact-size copy. */
static long scan_once(const void *p, size_t n, size_t max_bytes,
                      unsigned max_depth)
{
    struct proto_scan s;
    uint8_t *b = dup_exact(p, n);
    long r;

    proto_scan_init(&s);
    r = proto_scan_next(&s, b, n, max_bytes, max_depth);
    free(b);
    return r;
}

/*
 * Feed p[0..n) in chunks (chunk 0: random sizes 1..16) through exact-size
 * buffers holding the growing prefix, as a connection would.  Returns the
 * first non-zero result, or 0 if every call said "need more".  *fed is the
 * prefix length at that call.  Fails (returns LONG_MIN) if pos ever went
 * backwards or past the prefix.
 */
static long scan_chunked(const void *p, size_t n, size_t max_bytes,
                         unsigned max_depth, size_t chunk, size_t *fed)
{
    struct proto_scan s;
    size_t have = 0, last_pos = 0;
    long r = 0;

    proto_scan_init(&s);
    *fed = 0;
    while (have < n) {
        size_t step = chunk ? chunk : 1 + (size_t)rnd_below(16);
        uint8_t *b;

        have = have + step > n ? n : have + step;
        b = dup_exact(p, have);
        r = proto_scan_next(&s, b, have, max_bytes, max_depth);
        free(b);
        if (s.pos < last_pos || s.pos > have)
            return LONG_MIN;
        { /* the running sum is the sum of the levels */
            uint64_t sum = 0;
            unsigned d;
            for (d = 1; d <= s.depth; d++)
                sum += s.left[d];
            if (sum != s.due)
                return LONG_MIN;
        }
        last_pos = s.pos;
        *fed = have;
        if (r != 0)
            return r;
    }
    return r;
}

/* Same, over one buffer without copies: for objects too big to re-copy at
 * every byte. */
static long scan_drip_inplace(const uint8_t *p, size_t n, size_t max_bytes,
                              size_t *fed)
{
    struct proto_scan s;
    size_t have;
    long r = 0;

    proto_scan_init(&s);
    *fed = 0;
    for (have = 1; have <= n; have++) {
        r = proto_scan_next(&s, p, have, max_bytes, PROTO_MAX_DEPTH);
        *fed = have;
        if (r != 0)
            return r;
    }
    return r;
}

/* msgpack_unpack must take exactly `size` bytes as one object. */
static int unpack_consumes(const void *p, size_t n, size_t size)
{
    msgpack_zone zone;
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return r;

    msgpack_zone_init(&zone, 2048);
    r = msgpack_unpack(p, n, &off, &zone, &obj);
    msgpack_zone_destroy(&zone);
    return (r == MSGPACK_UNPACK_SUCCESS || r == MSGPACK_UNPACK_EXTRA_BYTES) &&
           off == size;
}

/* Raw bytes into the packer's buffer (non-minimal encodings). */
static void raw(msgpack_sbuffer *sb, const void *p, size_t n)
{
    msgpack_sbuffer_write(sb, p, n);
}

static void raw_be(msgpack_sbuffer *sb, uint8_t tag, uint64_t v, unsigned n)
{
    uint8_t b[9];
    unsigned i;

    b[0] = tag;
    for (i = 0; i < n; i++)
        b[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    raw(sb, b, 1 + n);
}

static void fill(msgpack_sbuffer *sb, size_t n)
{
    uint8_t chunk[256];
    size_t i;

    for (i = 0; i < sizeof(chunk); i++)
        chunk[i] = (uint8_t)rnd();
    while (n) {
        size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
        raw(sb, chunk, k);
        n -= k;
    }
}

/* --- every format, packed by msgpack-c ------------------------------------ */

#define NFORMATS 37

/*
 * Pack one object of format number f and return the first byte it must
 * start with.  Body bytes are random.
 */
static uint8_t pack_format(msgpack_packer *pk, msgpack_sbuffer *sb, int f)
{
    static const char *pad = "0123456789abcdef0123456789abcdef";

    switch (f) {
    case 0:
        msgpack_pack_uint8(pk, 5);
        return 0x05;
    case 1:
        msgpack_pack_nil(pk);
        return 0xc0;
    case 2:
        msgpack_pack_false(pk);
        return 0xc2;
    case 3:
        msgpack_pack_true(pk);
        return 0xc3;
    case 4:
        msgpack_pack_bin(pk, 10);
        fill(sb, 10);
        return 0xc4;
    case 5:
        msgpack_pack_bin(pk, 300);
        fill(sb, 300);
        return 0xc5;
    case 6:
        msgpack_pack_bin(pk, 70000);
        fill(sb, 70000);
        return 0xc6;
    case 7:
        msgpack_pack_ext(pk, 3, 1);
        fill(sb, 3);
        return 0xc7;
    case 8:
        msgpack_pack_ext(pk, 300, 2);
        fill(sb, 300);
        return 0xc8;
    case 9:
        msgpack_pack_ext(pk, 70000, -3);
        fill(sb, 70000);
        return 0xc9;
    case 10:
        msgpack_pack_float(pk, 1.5f);
        return 0xca;
    case 11:
        msgpack_pack_double(pk, -2.25);
        return 0xcb;
    case 12:
        msgpack_pack_uint64(pk, 200);
        return 0xcc;
    case 13:
        msgpack_pack_uint64(pk, 60000);
        return 0xcd;
    case 14:
        msgpack_pack_uint64(pk, 4000000000U);
        return 0xce;
    case 15:
        msgpack_pack_uint64(pk, UINT64_MAX);
        return 0xcf;
    case 16:
        msgpack_pack_int64(pk, -100);
        return 0xd0;
    case 17:
        msgpack_pack_int64(pk, -30000);
        return 0xd1;
    case 18:
        msgpack_pack_int64(pk, -2000000000);
        return 0xd2;
    case 19:
        msgpack_pack_int64(pk, INT64_MIN);
        return 0xd3;
    case 20:
        msgpack_pack_ext(pk, 1, 4);
        fill(sb, 1);
        return 0xd4;
    case 21:
        msgpack_pack_ext(pk, 2, 4);
        fill(sb, 2);
        return 0xd5;
    case 22:
        msgpack_pack_ext(pk, 4, -1); /* the timestamp32 shape */
        fill(sb, 4);
        return 0xd6;
    case 23:
        msgpack_pack_ext(pk, 8, 4);
        fill(sb, 8);
        return 0xd7;
    case 24:
        msgpack_pack_ext(pk, 16, 4);
        fill(sb, 16);
        return 0xd8;
    case 25:
        msgpack_pack_str(pk, 31);
        msgpack_pack_str_body(pk, pad, 31);
        return 0xbf;
    case 26:
        msgpack_pack_str(pk, 32);
        msgpack_pack_str_body(pk, pad, 32);
        return 0xd9;
    case 27:
        msgpack_pack_str(pk, 1000);
        fill(sb, 1000);
        return 0xda;
    case 28:
        msgpack_pack_str(pk, 65536);
        fill(sb, 65536);
        return 0xdb;
    case 29: {
        int i;
        msgpack_pack_array(pk, 15);
        for (i = 0; i < 15; i++)
            msgpack_pack_int(pk, i * 1000);
        return 0x9f;
    }
    case 30: {
        int i;
        msgpack_pack_array(pk, 16);
        for (i = 0; i < 16; i++)
            msgpack_pack_int(pk, -i);
        return 0xdc;
    }
    case 31: {
        int i;
        msgpack_pack_array(pk, 65536);
        for (i = 0; i < 65536; i++)
            msgpack_pack_nil(pk);
        return 0xdd;
    }
    case 32: {
        int i;
        msgpack_pack_map(pk, 15);
        for (i = 0; i < 15; i++) {
            msgpack_pack_int(pk, i);
            msgpack_pack_str(pk, 3);
            msgpack_pack_str_body(pk, "abc", 3);
        }
        return 0x8f;
    }
    case 33: {
        int i;
        msgpack_pack_map(pk, 16);
        for (i = 0; i < 16; i++) {
            msgpack_pack_int(pk, i);
            msgpack_pack_double(pk, i / 3.0);
        }
        return 0xde;
    }
    case 34: {
        int i;
        msgpack_pack_map(pk, 65536);
        for (i = 0; i < 65536; i++) {
            msgpack_pack_int(pk, i);
            msgpack_pack_true(pk);
        }
        return 0xdf;
    }
    case 35:
        msgpack_pack_int(pk, -1);
        return 0xff;
    default:
        msgpack_pack_int(pk, -32);
        return 0xe0;
    }
}

static void test_every_format(void)
{
    int f;

    for (f = 0; f < NFORMATS; f++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        uint8_t first;
        size_t fed;
        long r;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        first = pack_format(&pk, &sb, f);
        if (!OK((uint8_t)sb.data[0] == first, "format 0x%02x: packed as such",
                first))
            DIAG("msgpack-c wrote 0x%02x", (uint8_t)sb.data[0]);
        IS(scan_once(sb.data, sb.size, 1 << 20, PROTO_MAX_DEPTH), (long)sb.size,
           "format: whole object scans to its packed size");
        if (sb.size <= 4096) {
            r = scan_chunked(sb.data, sb.size, 1 << 20, PROTO_MAX_DEPTH, 1,
                             &fed);
        } else {
            r = scan_drip_inplace((const uint8_t *)sb.data, sb.size, 1 << 20,
                                  &fed);
        }
        OK(r == (long)sb.size && fed == sb.size,
           "format 0x%02x: one byte at a time, 0 until the last byte (%zu)",
           first, sb.size);
        OK(unpack_consumes(sb.data, sb.size, sb.size),
           "format 0x%02x: msgpack_unpack takes the same %zu bytes", first,
           sb.size);
        /* One byte short can never be complete. */
        IS(scan_once(sb.data, sb.size - 1, 1 << 20, PROTO_MAX_DEPTH), 0,
           "format: one byte short needs more");
        msgpack_sbuffer_destroy(&sb);
    }
}

/* Hand-written sizes, including non-minimal headers msgpack-c never emits
 * but must accept (str32 of 1 byte, array32 of 2, map16 of 1). */
struct size_case {
    const char *name;
    const char *hex;
    long want;
};

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;

    while (*hex && n < cap) {
        unsigned v;
        if (*hex == ' ') {
            hex++;
            continue;
        }
        if (sscanf(hex, "%2x", &v) != 1)
            abort();
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
}

static void test_hand_sizes(void)
{
    static const struct size_case cases[] = {
        {"fixint 0", "00", 1},
        {"fixint 127", "7f", 1},
        {"negative fixint", "e5", 1},
        {"nil", "c0", 1},
        {"empty fixstr", "a0", 1},
        {"fixstr 3", "a3 61 62 63", 4},
        {"str8 non-minimal", "d9 01 61", 3},
        {"str16 non-minimal", "da 00 01 61", 4},
        {"str32 non-minimal", "db 00 00 00 01 61", 6},
        {"bin8 empty", "c4 00", 2},
        {"bin32 2", "c6 00 00 00 02 01 02", 7},
        {"ext8 empty", "c7 00 05", 3},
        {"ext16 1", "c8 00 01 05 aa", 5},
        {"ext32 2", "c9 00 00 00 02 05 aa bb", 8},
        {"fixext16", "d8 01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
         18},
        {"empty array", "90", 1},
        {"empty map", "80", 1},
        {"array16 empty", "dc 00 00", 3},
        {"array32 of 2", "dd 00 00 00 02 01 02", 7},
        {"map16 of 1", "de 00 01 a1 6b c3", 6},
        {"map32 empty", "df 00 00 00 00", 5},
        {"rpc request", "94 00 01 a4 70 69 6e 67 90", 9},
        {"[0,1,\"m\",[{}]]", "94 00 01 a1 6d 91 80", 7},
        {"nested closes together", "92 92 92 01 02 03 04", 7},
        {"map of maps", "82 01 81 02 80 03 90", 7},
    };
    uint8_t b[64];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = unhex(cases[i].hex, b, sizeof(b)), fed;
        long r;

        IS(scan_once(b, n, 1 << 16, PROTO_MAX_DEPTH), cases[i].want,
           cases[i].name);
        r = scan_chunked(b, n, 1 << 16, PROTO_MAX_DEPTH, 1, &fed);
        OK(r == cases[i].want && fed == n, "%s: byte by byte", cases[i].name);
    }
}

/* --- random nested objects ------------------------------------------------ */

/* Pack a random object of at most `depth` nesting levels into sb, trying to
 * stay under `budget` bytes.  Mixes msgpack-c's minimal encodings with
 * hand-written wider headers. */
static void gen(msgpack_packer *pk, msgpack_sbuffer *sb, unsigned depth,
                size_t budget)
{
    unsigned kind =
        (unsigned)rnd_below(depth > 0 && sb->size < budget ? 14 : 10);
    size_t n, i;

    switch (kind) {
    case 0:
        switch (rnd_below(3)) {
        case 0:
            msgpack_pack_nil(pk);
            break;
        case 1:
            msgpack_pack_true(pk);
            break;
        default:
            msgpack_pack_false(pk);
        }
        break;
    case 1: /* any unsigned width, minimal */
        msgpack_pack_uint64(pk, rnd() >> rnd_below(64));
        break;
    case 2: /* any signed width, minimal */
        msgpack_pack_int64(pk, (int64_t)(rnd() | 1ULL << 63) >> rnd_below(64));
        break;
    case 3: /* forced widths */
        switch (rnd_below(8)) {
        case 0:
            msgpack_pack_fix_uint8(pk, (uint8_t)rnd());
            break;
        case 1:
            msgpack_pack_fix_uint16(pk, (uint16_t)rnd());
            break;
        case 2:
            msgpack_pack_fix_uint32(pk, (uint32_t)rnd());
            break;
        case 3:
            msgpack_pack_fix_uint64(pk, rnd());
            break;
        case 4:
            msgpack_pack_fix_int8(pk, (int8_t)rnd());
            break;
        case 5:
            msgpack_pack_fix_int16(pk, (int16_t)rnd());
            break;
        case 6:
            msgpack_pack_fix_int32(pk, (int32_t)rnd());
            break;
        default:
            msgpack_pack_fix_int64(pk, (int64_t)rnd());
        }
        break;
    case 4:
        if (rnd_below(2))
            msgpack_pack_float(pk, (float)rnd_below(1000) / 7.0f);
        else
            msgpack_pack_double(pk, (double)rnd() / 3.0);
        break;
    case 5: /* str, minimal header */
        n = rnd_below(4) ? rnd_below(40) : rnd_below(700);
        msgpack_pack_str(pk, n);
        fill(sb, n);
        break;
    case 6: /* bin */
        n = rnd_below(4) ? rnd_below(40) : rnd_below(700);
        msgpack_pack_bin(pk, n);
        fill(sb, n);
        break;
    case 7: /* ext, fixext sizes included */
        n = rnd_below(2) ? (size_t)1 << rnd_below(5) : rnd_below(400);
        msgpack_pack_ext(pk, n, (int8_t)rnd());
        fill(sb, n);
        break;
    case 8: { /* wide headers for short payloads */
        static const uint8_t tags[] = {0xd9, 0xda, 0xdb, 0xc4, 0xc5,
                                       0xc6, 0xc7, 0xc8, 0xc9};
        static const unsigned widths[] = {1, 2, 4, 1, 2, 4, 1, 2, 4};
        unsigned t = (unsigned)rnd_below(9);
        n = rnd_below(20);
        raw_be(sb, tags[t], n, widths[t]);
        if (tags[t] >= 0xc7 && tags[t] <= 0xc9) {
            uint8_t type = (uint8_t)rnd();
            raw(sb, &type, 1);
        }
        fill(sb, n);
        break;
    }
    case 9: /* fixints */
        msgpack_pack_int(pk, (int)rnd_below(160) - 32);
        break;
    case 10:
    case 11: /* array, minimal header (array16 past 15) */
        n = rnd_below(4) ? rnd_below(8) : rnd_below(40);
        msgpack_pack_array(pk, n);
        for (i = 0; i < n; i++)
            gen(pk, sb, depth - 1, budget);
        break;
    case 12: /* map */
        n = rnd_below(4) ? rnd_below(6) : rnd_below(24);
        msgpack_pack_map(pk, n);
        for (i = 0; i < 2 * n; i++)
            gen(pk, sb, depth - 1, budget);
        break;
    default: { /* container with a wide header */
        static const uint8_t tags[] = {0xdc, 0xdd, 0xde, 0xdf};
        unsigned t = (unsigned)rnd_below(4);
        n = rnd_below(6);
        raw_be(sb, tags[t], n, t & 1 ? 4 : 2);
        for (i = 0; i < (tags[t] >= 0xde ? 2 * n : n); i++)
            gen(pk, sb, depth - 1, budget);
    }
    }
}

/* Nesting depth of a decoded object (top-level container = 1). */
static unsigned obj_depth(const msgpack_object *o)
{
    unsigned d = 0, i;

    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (i = 0; i < o->via.array.size; i++) {
            unsigned c = obj_depth(&o->via.array.ptr[i]);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (i = 0; i < o->via.map.size; i++) {
            unsigned k = obj_depth(&o->via.map.ptr[i].key);
            unsigned v = obj_depth(&o->via.map.ptr[i].val);
            d = k > d ? k : d;
            d = v > d ? v : d;
        }
        return d + 1;
    }
    return 0;
}

static void test_random_objects(void)
{
    int i, bad_whole = 0, bad_drip = 0, bad_chunk = 0, bad_unpack = 0;
    int bad_depth = 0, bad_pair = 0, bad_short = 0;
    unsigned deepest = 0;
    size_t total = 0, biggest = 0;

    for (i = 0; i < 1500; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_zone zone;
        msgpack_object obj;
        size_t off = 0, fed, size;
        unsigned depth;
        uint8_t *two;
        long r;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        gen(&pk, &sb, (unsigned)rnd_below(PROTO_MAX_DEPTH + 1), 3000);
        size = sb.size;
        total += size;
        biggest = size > biggest ? size : biggest;

        /* The reference: msgpack-c decodes it, and tells its depth. */
        msgpack_zone_init(&zone, 4096);
        if (msgpack_unpack(sb.data, size, &off, &zone, &obj) !=
                MSGPACK_UNPACK_SUCCESS ||
            off != size) {
            bad_unpack++;
            msgpack_zone_destroy(&zone);
            msgpack_sbuffer_destroy(&sb);
            continue;
        }
        depth = obj_depth(&obj);
        deepest = depth > deepest ? depth : deepest;
        msgpack_zone_destroy(&zone);

        if (scan_once(sb.data, size, size, PROTO_MAX_DEPTH) != (long)size)
            bad_whole++;
        r = scan_chunked(sb.data, size, size, PROTO_MAX_DEPTH, 1, &fed);
        if (r != (long)size || fed != size)
            bad_drip++;
        r = scan_chunked(sb.data, size, 1 << 16, PROTO_MAX_DEPTH, 0, &fed);
        if (r != (long)size || fed != size)
            bad_chunk++;
        /* max_bytes one short of the size: refused, never "need more". */
        if (scan_once(sb.data, size, size - 1, PROTO_MAX_DEPTH) != -PROTO_E2BIG)
            bad_short++;
        /* Depth: accepted at its own depth, refused one level lower. */
        if (scan_once(sb.data, size, size, depth) != (long)size ||
            (depth > 0 &&
             scan_once(sb.data, size, size, depth - 1) != -PROTO_EDEPTH))
            bad_depth++;
        /* Back to back: only the first object's size. */
        two = malloc(2 * size);
        if (!two)
            abort();
        memcpy(two, sb.data, size);
        memcpy(two + size, sb.data, size);
        if (scan_once(two, 2 * size, 1 << 20, PROTO_MAX_DEPTH) != (long)size)
            bad_pair++;
        free(two);
        msgpack_sbuffer_destroy(&sb);
    }
    DIAG("random objects: %zu bytes in all, biggest %zu, deepest %u", total,
         biggest, deepest);
    IS(bad_unpack, 0, "random objects: msgpack-c decodes what the test packed");
    IS(bad_whole, 0, "random objects: whole scan returns the packed size");
    IS(bad_drip, 0,
       "random objects: byte by byte, 0 until the last byte, then the size");
    IS(bad_chunk, 0, "random objects: random chunks, same size");
    IS(bad_short, 0, "random objects: max_bytes = size - 1 gives E2BIG");
    IS(bad_depth, 0,
       "random objects: ok at their depth, EDEPTH with max_depth one less");
    IS(bad_pair, 0, "random objects: two back to back return the first size");
    OK(deepest == PROTO_MAX_DEPTH, "random objects reached depth %u", deepest);
}

/* --- resumption ----------------------------------------------------------- */

static void test_resume(void)
{
    static const uint8_t u16[] = {0x92, 0xcd, 0x12, 0x34, 0x01};
    uint8_t flat[1 + 2 + 1000];
    struct proto_scan s;
    size_t i;
    int bad = 0;

    /* A header split across calls is re-read, not half-accepted. */
    proto_scan_init(&s);
    IS(proto_scan_next(&s, u16, 1, 100, 8), 0, "split: array header alone");
    IS(s.pos, 1, "split: array header accepted");
    IS(proto_scan_next(&s, u16, 2, 100, 8), 0, "split: 1 byte of uint16");
    IS(s.pos, 1, "split: partial uint16 not accepted");
    IS(proto_scan_next(&s, u16, 3, 100, 8), 0, "split: 2 bytes of uint16");
    IS(s.pos, 1, "split: still not accepted");
    IS(proto_scan_next(&s, u16, 4, 100, 8), 0, "split: uint16 whole");
    IS(s.pos, 4, "split: uint16 accepted");
    IS(proto_scan_next(&s, u16, 5, 100, 8), 5, "split: complete");
    IS(proto_scan_next(&s, u16, 5, 100, 8), 5, "re-call after complete");

    /* Progress is kept: in a flat array of 1-byte elements, pos follows
     * the bytes fed exactly, so nothing is walked twice. */
    flat[0] = 0xdc;
    flat[1] = 1000 >> 8;
    flat[2] = 1000 & 0xff;
    memset(flat + 3, 0x07, 1000);
    proto_scan_init(&s);
    for (i = 1; i < sizeof(flat); i++) {
        long r = proto_scan_next(&s, flat, i, sizeof(flat), 8);
        if (r != 0 || s.pos != (i < 3 ? 0 : i))
            bad++;
    }
    IS(bad, 0, "flat array: pos tracks every byte fed");
    IS(proto_scan_next(&s, flat, sizeof(flat), sizeof(flat), 8),
       (long)sizeof(flat), "flat array: complete at the last byte");

    /* A str payload arriving slowly keeps pos at the header. */
    {
        uint8_t str[2 + 200];
        str[0] = 0xd9;
        str[1] = 200;
        memset(str + 2, 'x', 200);
        proto_scan_init(&s);
        bad = 0;
        for (i = 1; i < sizeof(str); i++)
            if (proto_scan_next(&s, str, i, 1024, 8) != 0 || s.pos != 0)
                bad++;
        IS(bad, 0, "str8: 0 and pos 0 until the payload is whole");
        IS(proto_scan_next(&s, str, sizeof(str), 1024, 8), 202,
           "str8: complete");
    }

    /* Empty input: need more, not an error. */
    proto_scan_init(&s);
    IS(proto_scan_next(&s, NULL, 0, 100, 8), 0, "empty buffer needs more");
}

/* --- bounds --------------------------------------------------------------- */

struct bound_case {
    const char *name;
    const char *hex;
    size_t max_bytes;
    unsigned max_depth;
    long want;
    size_t by; /* the verdict must come after at most this many bytes */
};

static void test_bound_table(void)
{
    static const struct bound_case cases[] = {
        /* Hostile headers: each declares far more than 64 KiB. */
        {"array32 count 0x00ffffff", "dd 00 ff ff ff", 65536, 8, -PROTO_E2BIG,
         5},
        {"array32 count 0xff000000", "dd ff 00 00 00", 65536, 8, -PROTO_E2BIG,
         5},
        {"array32 count 0xffffffff", "dd ff ff ff ff", 65536, 8, -PROTO_E2BIG,
         5},
        {"map32 count 0xffffffff", "df ff ff ff ff", 65536, 8, -PROTO_E2BIG, 5},
        {"map32 32768 pairs = 65536 elements + 5", "df 00 00 80 00", 65536, 8,
         -PROTO_E2BIG, 5},
        {"map16 65535 pairs", "de ff ff", 65536, 8, -PROTO_E2BIG, 3},
        {"str32 4 GiB", "db ff ff ff ff", 65536, 8, -PROTO_E2BIG, 5},
        {"str32 65532 (5 + 65532 > 65536)", "db 00 00 ff fc", 65536, 8,
         -PROTO_E2BIG, 5},
        {"bin32 4 GiB", "c6 ff ff ff ff", 65536, 8, -PROTO_E2BIG, 5},
        {"ext32 4 GiB", "c9 ff ff ff ff", 65536, 8, -PROTO_E2BIG, 5},
        {"array16 65535 in a 100-byte max", "dc ff ff", 100, 8, -PROTO_E2BIG,
         3},
        {"array32 4G nested in a request", "94 00 01 a1 6d dd ff ff ff ff",
         65536, 8, -PROTO_E2BIG, 10},
        {"str16 inside a map", "81 a1 6b da ff ff", 65536, 8, -PROTO_E2BIG, 6},
        /* The edge of max_bytes, exactly. */
        {"str8 of 5 at max 7", "d9 05 68 65 6c 6c 6f", 7, 8, 7, 7},
        {"str8 of 5 at max 6: refused before the payload",
         "d9 05 68 65 6c 6c 6f", 6, 8, -PROTO_E2BIG, 2},
        {"fixmap 1 at max 3", "81 01 02", 3, 8, 3, 3},
        {"fixmap 1 at max 2: 2 elements cannot fit", "81 01 02", 2, 8,
         -PROTO_E2BIG, 1},
        {"array16 of 3 at max 6", "dc 00 03 01 02 03", 6, 8, 6, 6},
        {"array16 of 3 at max 5", "dc 00 03 01 02 03", 5, 8, -PROTO_E2BIG, 3},
        {"uint64 at max 8", "cf 00 00 00 00 00 00 00 01", 8, 8, -PROTO_E2BIG,
         1},
        {"elements still due in outer levels count",
         "93 dc 00 03 01 01 01 01 01", 8, 8, -PROTO_E2BIG, 4},
        {"same at max 9", "93 dc 00 03 01 01 01 01 01", 9, 8, 9, 9},
        {"a str's payload and the elements after it",
         "92 d9 05 68 65 6c 6c 6f 01", 8, 8, -PROTO_E2BIG, 3},
        {"same at max 9", "92 d9 05 68 65 6c 6c 6f 01", 9, 8, 9, 9},
        {"max_bytes 0", "01", 0, 8, -PROTO_E2BIG, 1},
        {"complete within max though len is longer", "92 01 02 ff ff ff", 3, 8,
         3, 3},
        /* Depth: the top-level container is depth 1. */
        {"depth 8 at max 8", "91 91 91 91 91 91 91 90", 100, 8, 8, 8},
        {"depth 9 at max 8", "91 91 91 91 91 91 91 91 90", 100, 8,
         -PROTO_EDEPTH, 9},
        {"depth 9 through maps", "81 01 81 01 81 01 81 01 91 91 91 91 80", 100,
         8, -PROTO_EDEPTH, 13},
        {"[0,1,\"m\",[{}]] is depth 3", "94 00 01 a1 6d 91 80", 100, 3, 7, 7},
        {"[0,1,\"m\",[{}]] at max 2", "94 00 01 a1 6d 91 80", 100, 2,
         -PROTO_EDEPTH, 7},
        {"scalar at max_depth 0", "a1 78", 100, 0, 2, 2},
        {"empty array at max_depth 0", "90", 100, 0, -PROTO_EDEPTH, 1},
        {"max_depth above PROTO_MAX_DEPTH acts as 8",
         "91 91 91 91 91 91 91 91 90", 100, 100, -PROTO_EDEPTH, 9},
        /* Invalid bytes and garbage. */
        {"0xc1 alone", "c1", 100, 8, -PROTO_EINVAL, 1},
        {"0xc1 nested", "92 01 c1", 100, 8, -PROTO_EINVAL, 3},
        {"0xc1 as a map key", "81 c1 01", 100, 8, -PROTO_EINVAL, 2},
        {"0xc1 after a complete object is not read", "01 c1", 100, 8, 1, 1},
        {"0xc1 deep", "91 91 91 92 a2 68 69 c1", 100, 8, -PROTO_EINVAL, 8},
        {"0xc1 in a payload is data", "a1 c1", 100, 8, 2, 2},
        {"garbage that is a fixint", "ff c1 c1", 100, 8, 1, 1},
        {"truncated request", "94 00 01 a4 70 69", 100, 8, 0, 6},
    };
    uint8_t b[64];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct bound_case *c = &cases[i];
        size_t n = unhex(c->hex, b, sizeof(b)), fed;
        long r;

        IS(scan_once(b, n, c->max_bytes, c->max_depth), c->want, c->name);
        r = scan_chunked(b, n, c->max_bytes, c->max_depth, 1, &fed);
        OK(r == c->want && fed <= c->by,
           "%s: byte by byte, verdict after %zu bytes (<= %zu)", c->name, fed,
           c->by);
    }
}

/*
 * The gate the daemon and libresil use: msgpack_unpack runs only on what
 * the scanner accepted.  Each hostile header would make msgpack-c reserve
 * count * sizeof(msgpack_object) (or a huge string) before any element
 * arrived; behind the scanner, none of them reaches it.
 */
static int gate(const uint8_t *buf, size_t len, int *unpacked)
{
    struct proto_scan s;
    long r;

    proto_scan_init(&s);
    r = proto_scan_next(&s, buf, len, PROTO_DEFAULT_MAX_FRAME, PROTO_MAX_DEPTH);
    if (r > 0) {
        msgpack_zone zone;
        msgpack_object obj;
        size_t off = 0;
        msgpack_zone_init(&zone, 2048);
        msgpack_unpack((const char *)buf, (size_t)r, &off, &zone, &obj);
        msgpack_zone_destroy(&zone);
        (*unpacked)++;
    }
    return (int)r;
}

static void test_gate(void)
{
    static const char *hostile[] = {
        "dd 00 ff ff ff",
        "dd ff 00 00 00",
        "dd ff ff ff ff",
        "df ff ff ff ff",
        "df 00 01 00 00",
        "db ff ff ff ff",
        "c6 ff ff ff ff",
        "c9 ff ff ff ff",
        "dc ff ff",
        "de ff ff",
        "94 00 01 a1 6d 91 df 7f ff ff ff",
    };
    uint8_t b[16];
    size_t i;

    for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        size_t n = unhex(hostile[i], b, sizeof(b));
        uint8_t *exact = dup_exact(b, n);
        int unpacked = 0;
        uint64_t count = 0;
        unsigned k;

        for (k = n >= 5 ? n - 4 : 1; k < n; k++)
            count = count << 8 | exact[k];
        IS(gate(exact, n, &unpacked), -PROTO_E2BIG, hostile[i]);
        OK(unpacked == 0, "%s: refused, msgpack-c never asked for ~%llu MiB",
           hostile[i],
           (unsigned long long)(count * sizeof(msgpack_object) >> 20));
        free(exact);
    }
    {
        static const uint8_t ok[] = {0x94, 0x00, 0x01, 0xa4, 'p',
                                     'i',  'n',  'g',  0x90};
        int unpacked = 0;
        IS(gate(ok, sizeof(ok), &unpacked), (int)sizeof(ok),
           "gate: a real request passes");
        IS(unpacked, 1, "gate: and reaches msgpack-c");
    }
}

/* --- random bytes --------------------------------------------------------- */

/* A random byte biased toward headers, so containers and lengths appear. */
static uint8_t rnd_byte(void)
{
    static const uint8_t heads[] = {0x90, 0x91, 0x93, 0x81, 0x82, 0xa2, 0xc1,
                                    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xd4,
                                    0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde,
                                    0xdf, 0xcb, 0xcf, 0x00, 0xff};

    switch (rnd_below(4)) {
    case 0:
        return heads[rnd_below(sizeof(heads))];
    case 1:
        return (uint8_t)rnd_below(4); /* small lengths and counts */
    default:
        return (uint8_t)rnd();
    }
}

static void test_random_bytes(void)
{
    int i, bad_range = 0, bad_zero = 0, bad_unpack = 0, bad_drip = 0;
    int seen[4] = {0, 0, 0, 0}, accepted = 0;
    uint8_t tmp[96];

    for (i = 0; i < 5000; i++) {
        size_t len = rnd_below(sizeof(tmp) + 1), j, fed;
        size_t max = rnd_below(3) ? 1 + rnd_below(100) : 65536;
        unsigned depth = (unsigned)rnd_below(PROTO_MAX_DEPTH + 1);
        long r, d;

        for (j = 0; j < len; j++)
            tmp[j] = rnd_byte();
        if (rnd_below(3) == 0 && len > 0) { /* splice in a valid object */
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            gen(&pk, &sb, 3, 40);
            j = sb.size < len ? sb.size : len;
            memcpy(tmp, sb.data, j);
            if (rnd_below(2)) /* and flip one byte of it */
                tmp[rnd_below(j)] ^= (uint8_t)(1 + rnd_below(255));
            msgpack_sbuffer_destroy(&sb);
        }
        r = scan_once(tmp, len, max, depth);
        if (r > 0) {
            accepted++;
            if ((size_t)r > len || (size_t)r > max)
                bad_range++;
            else if (!unpack_consumes(tmp, (size_t)r, (size_t)r))
                bad_unpack++;
        } else if (r == 0) {
            seen[0]++;
            /* "Need more" only while the object could still fit. */
            if (len >= max)
                bad_zero++;
        } else if (r >= -3) {
            seen[-r]++;
        } else {
            bad_range++;
        }
        /* Fed byte by byte the verdict is the same. */
        d = scan_chunked(tmp, len, max, depth, 1, &fed);
        if (d != r)
            bad_drip++;
    }
    IS(bad_range, 0, "random bytes: result is a size <= len, max, 0 or -1..-3");
    IS(bad_zero, 0, "random bytes: never 'need more' once len >= max_bytes");
    IS(bad_unpack, 0,
       "random bytes: msgpack_unpack takes exactly what was accepted");
    IS(bad_drip, 0, "random bytes: byte by byte gives the same verdict");
    DIAG("accepted %d, need more %d, EINVAL %d, E2BIG %d, EDEPTH %d", accepted,
         seen[0], seen[PROTO_EINVAL], seen[PROTO_E2BIG], seen[PROTO_EDEPTH]);
    OK(accepted && seen[0] && seen[PROTO_EINVAL] && seen[PROTO_E2BIG] &&
           seen[PROTO_EDEPTH],
       "random bytes: every kind of result occurred");
}

int main(void)
{
    const char *seed = getenv("TEST_SEED");

    if (seed && *seed)
        rng_state = strtoull(seed, NULL, 0) | 1;
    DIAG("seed 0x%llx (set TEST_SEED to replay)",
         (unsigned long long)rng_state);
    test_every_format();
    test_hand_sizes();
    test_random_objects();
    test_resume();
    test_bound_table();
    test_gate();
    test_random_bytes();
    return tap_done();
}
