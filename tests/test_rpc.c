/*
 * test_rpc.c - MessagePack-RPC framing (proto/rpc.c) over the scanner.
 *
 * Round trips: requests, responses, error responses and notifications built
 * with proto_pack_* are walked by proto_scan_next and read back by
 * proto_decode, alone and pipelined back to back.  The params helpers
 * (proto_map_get, proto_str_eq, proto_str_copy) on hits, misses, non-string
 * keys and truncation.  Every decode error returns -PROTO_EINVAL with a
 * reason and says whether the msgid was known, since that decides whether
 * the daemon can send an error response.
 */
#include "proto.h"
#include "tap.h"

#include <string.h>

/* A packer writing into its own buffer. */
struct frame {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void frame_init(struct frame *f)
{
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
}

static void frame_done(struct frame *f)
{
    msgpack_sbuffer_destroy(&f->sb);
}

/*
 * Scan then decode f's bytes as the daemon does.  The scanner must accept
 * exactly the whole buffer; returns proto_decode's result.
 */
static int scan_decode(const struct frame *f, msgpack_zone *zone,
                       struct proto_msg *m, const char **why)
{
    struct proto_scan s;
    long n;

    proto_scan_init(&s);
    n = proto_scan_next(&s, (const uint8_t *)f->sb.data, f->sb.size,
                        PROTO_DEFAULT_MAX_FRAME, PROTO_MAX_DEPTH);
    if (n != (long)f->sb.size) {
        DIAG("scanner returned %ld for a %zu-byte frame", n, f->sb.size);
        return -100;
    }
    *why = NULL;
    return proto_decode(f->sb.data, f->sb.size, zone, m, why);
}

static int method_is(const struct proto_msg *m, const char *s)
{
    return m->method && m->method_len == strlen(s) &&
           memcmp(m->method, s, m->method_len) == 0;
}

/* --- round trips ---------------------------------------------------------- */

static void test_request(msgpack_zone *zone)
{
    struct frame f;
    struct proto_msg m;
    const char *why;
    const msgpack_object *o;
    char buf[64];

    frame_init(&f);
    proto_pack_request_head(&f.pk, 7, "acquire");
    msgpack_pack_array(&f.pk, 1);
    msgpack_pack_map(&f.pk, 6);
    proto_kv_str(&f.pk, "key", "binance.orders");
    proto_kv_u64(&f.pk, "cost", 3);
    proto_kv_i64(&f.pk, "delta", -5);
    proto_kv_f64(&f.pk, "ratio", 0.25);
    proto_kv_bool(&f.pk, "critical", 1);
    proto_kv_bool(&f.pk, "shadow", 0);

    IS(scan_decode(&f, zone, &m, &why), 0, "request: decodes");
    IS(m.type, PROTO_REQUEST, "request: type 0");
    IS(m.msgid_known, 1, "request: msgid known");
    IS(m.msgid, 7, "request: msgid");
    OK(method_is(&m, "acquire"), "request: method");
    OK(m.method >= f.sb.data &&
           m.method + m.method_len <= f.sb.data + f.sb.size,
       "request: method borrows from the frame");
    OK(m.params && m.params->type == MSGPACK_OBJECT_MAP &&
           m.params->via.map.size == 6,
       "request: params is the map");
    o = proto_map_get(m.params, "key");
    OK(proto_str_eq(o, "binance.orders"), "request: key");
    IS(proto_str_copy(o, buf, sizeof(buf)), 14, "request: key length");
    OK(strcmp(buf, "binance.orders") == 0, "request: key copied");
    o = proto_map_get(m.params, "cost");
    OK(o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == 3,
       "request: cost");
    o = proto_map_get(m.params, "delta");
    OK(o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 == -5,
       "request: delta");
    o = proto_map_get(m.params, "ratio");
    OK(o && o->type == MSGPACK_OBJECT_FLOAT64 && o->via.f64 == 0.25,
       "request: ratio");
    o = proto_map_get(m.params, "critical");
    OK(o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean,
       "request: critical true");
    o = proto_map_get(m.params, "shadow");
    OK(o && o->type == MSGPACK_OBJECT_BOOLEAN && !o->via.boolean,
       "request: shadow false");
    OK(m.error == NULL && m.result == NULL && m.notify_params == NULL,
       "request: response and notify fields unset");
    msgpack_zone_clear(zone);
    frame_done(&f);

    /* No arguments: an empty params array. */
    frame_init(&f);
    proto_pack_request_head(&f.pk, UINT32_MAX, "ping");
    msgpack_pack_array(&f.pk, 0);
    IS(scan_decode(&f, zone, &m, &why), 0, "request, no params: decodes");
    IS(m.msgid, UINT32_MAX, "request: msgid UINT32_MAX survives");
    OK(method_is(&m, "ping"), "request, no params: method");
    OK(m.params == NULL, "request, no params: params NULL");
    OK(proto_map_get(m.params, "key") == NULL,
       "request, no params: map_get on NULL is NULL");
    msgpack_zone_clear(zone);
    frame_done(&f);

    /* msgid 0 and an empty map. */
    frame_init(&f);
    proto_pack_request_head(&f.pk, 0, "status");
    msgpack_pack_array(&f.pk, 1);
    msgpack_pack_map(&f.pk, 0);
    IS(scan_decode(&f, zone, &m, &why), 0, "request, empty map: decodes");
    OK(m.msgid_known && m.msgid == 0, "request: msgid 0 is known");
    OK(m.params && m.params->via.map.size == 0,
       "request, empty map: params is the empty map");
    msgpack_zone_clear(zone);
    frame_done(&f);
}

static void test_response(msgpack_zone *zone)
{
    struct frame f;
    struct proto_msg m;
    const char *why;
    const msgpack_object *o;

    frame_init(&f);
    proto_pack_response_head(&f.pk, 4097);
    msgpack_pack_map(&f.pk, 3);
    proto_kv_bool(&f.pk, "allow", 1);
    proto_kv_u64(&f.pk, "permit", 4097);
    proto_kv_str(&f.pk, "state", "closed");
    IS(scan_decode(&f, zone, &m, &why), 0, "response: decodes");
    IS(m.type, PROTO_RESPONSE, "response: type 1");
    OK(m.msgid_known && m.msgid == 4097, "response: msgid");
    OK(m.error && m.error->type == MSGPACK_OBJECT_NIL, "response: error nil");
    OK(m.result && m.result->type == MSGPACK_OBJECT_MAP, "response: result");
    o = proto_map_get(m.result, "permit");
    OK(o && o->via.u64 == 4097, "response: result.permit");
    OK(proto_str_eq(proto_map_get(m.result, "state"), "closed"),
       "response: result.state");
    OK(m.method == NULL && m.params == NULL, "response: no method, params");
    msgpack_zone_clear(zone);
    frame_done(&f);

    frame_init(&f);
    proto_pack_error(&f.pk, 12, "bad_request", "cost: must be >= 1");
    IS(scan_decode(&f, zone, &m, &why), 0, "error response: decodes");
    OK(m.type == PROTO_RESPONSE && m.msgid == 12, "error response: msgid");
    OK(m.error && m.error->type == MSGPACK_OBJECT_MAP &&
           m.error->via.map.size == 2,
       "error response: error is a 2-entry map");
    OK(proto_str_eq(proto_map_get(m.error, "code"), "bad_request"),
       "error response: code");
    OK(proto_str_eq(proto_map_get(m.error, "message"), "cost: must be >= 1"),
       "error response: message");
    OK(m.result && m.result->type == MSGPACK_OBJECT_NIL,
       "error response: result nil");
    msgpack_zone_clear(zone);
    frame_done(&f);
}

static void test_notify(msgpack_zone *zone)
{
    struct frame f;
    struct proto_msg m;
    const char *why;
    const msgpack_object *ev;

    frame_init(&f);
    proto_pack_notify_head(&f.pk, "event");
    msgpack_pack_array(&f.pk, 1);
    msgpack_pack_map(&f.pk, 2);
    proto_kv_str(&f.pk, "topic", "state");
    proto_kv_str(&f.pk, "key", "binance.orders");
    IS(scan_decode(&f, zone, &m, &why), 0, "notify: decodes");
    IS(m.type, PROTO_NOTIFY, "notify: type 2");
    IS(m.msgid_known, 0, "notify: no msgid");
    OK(method_is(&m, "event"), "notify: method");
    OK(m.notify_params && m.notify_params->type == MSGPACK_OBJECT_ARRAY &&
           m.notify_params->via.array.size == 1,
       "notify: params array");
    ev = m.notify_params ? &m.notify_params->via.array.ptr[0] : NULL;
    OK(proto_str_eq(proto_map_get(ev, "topic"), "state"), "notify: topic");
    OK(m.params == ev && !m.params_positional,
       "notify: named params filled as for a request");
    msgpack_zone_clear(zone);
    frame_done(&f);
}

/* SPEC §3: a method name may be msgpack bin (older "raw"), in requests and
 * in notifications.  Debian's pynvim opens every session with
 * [2, bin "nvim_set_client_info", [name, version, type, methods, attrs]]:
 * it must decode (and, positional, be flagged) rather than be refused. */
static void test_bin_names(msgpack_zone *zone)
{
    struct frame f;
    struct proto_msg m;
    const char *why;

    frame_init(&f);
    msgpack_pack_array(&f.pk, 4);
    msgpack_pack_int(&f.pk, 0);
    msgpack_pack_int(&f.pk, 41);
    msgpack_pack_bin(&f.pk, 4);
    msgpack_pack_bin_body(&f.pk, "ping", 4);
    msgpack_pack_array(&f.pk, 0);
    IS(scan_decode(&f, zone, &m, &why), 0, "bin request: decodes");
    OK(m.type == PROTO_REQUEST && m.msgid_known && m.msgid == 41,
       "bin request: type and msgid");
    OK(method_is(&m, "ping"), "bin request: method name read from bin");
    OK(m.params == NULL && !m.params_positional, "bin request: no params");
    msgpack_zone_clear(zone);
    frame_done(&f);

    frame_init(&f);
    msgpack_pack_array(&f.pk, 3);
    msgpack_pack_int(&f.pk, 2);
    msgpack_pack_bin(&f.pk, 20);
    msgpack_pack_bin_body(&f.pk, "nvim_set_client_info", 20);
    msgpack_pack_array(&f.pk, 5);
    proto_pack_cstr(&f.pk, "client");
    msgpack_pack_map(&f.pk, 0);
    proto_pack_cstr(&f.pk, "remote");
    msgpack_pack_map(&f.pk, 0);
    msgpack_pack_map(&f.pk, 0);
    IS(scan_decode(&f, zone, &m, &why), 0, "pynvim greeting: decodes");
    OK(m.type == PROTO_NOTIFY && !m.msgid_known, "pynvim greeting: notify");
    OK(method_is(&m, "nvim_set_client_info"),
       "pynvim greeting: bin method name");
    OK(m.params_positional && m.params == NULL,
       "pynvim greeting: positional params flagged");
    msgpack_zone_clear(zone);
    frame_done(&f);

    frame_init(&f);
    msgpack_pack_array(&f.pk, 3);
    msgpack_pack_int(&f.pk, 2);
    msgpack_pack_bin(&f.pk, 6);
    msgpack_pack_bin_body(&f.pk, "report", 6);
    msgpack_pack_array(&f.pk, 1);
    msgpack_pack_map(&f.pk, 1);
    proto_kv_str(&f.pk, "key", "nv");
    IS(scan_decode(&f, zone, &m, &why), 0, "bin notify with a map: decodes");
    OK(method_is(&m, "report") && m.params &&
           proto_str_eq(proto_map_get(m.params, "key"), "nv"),
       "bin notify: method and named params");
    msgpack_zone_clear(zone);
    frame_done(&f);

    frame_init(&f);
    proto_pack_notify_head(&f.pk, "report");
    msgpack_pack_array(&f.pk, 0);
    IS(scan_decode(&f, zone, &m, &why), 0, "notify with []: decodes");
    OK(m.params == NULL && !m.params_positional, "notify []: no params");
    msgpack_zone_clear(zone);
    frame_done(&f);
}

/* Several frames in one buffer, as a pipelining client sends them. */
static void test_pipelined(msgpack_zone *zone)
{
    struct frame f;
    size_t off = 0;
    uint32_t i, got = 0;
    int bad = 0;

    frame_init(&f);
    for (i = 1; i <= 50; i++) {
        proto_pack_request_head(&f.pk, i * 3, i % 2 ? "acquire" : "report");
        msgpack_pack_array(&f.pk, 1);
        msgpack_pack_map(&f.pk, 1);
        proto_kv_u64(&f.pk, "n", i);
    }
    while (off < f.sb.size) {
        struct proto_scan s;
        struct proto_msg m;
        const char *why;
        const msgpack_object *n;
        long len;

        proto_scan_init(&s);
        len = proto_scan_next(&s, (const uint8_t *)f.sb.data + off,
                              f.sb.size - off, PROTO_DEFAULT_MAX_FRAME,
                              PROTO_MAX_DEPTH);
        if (len <= 0) {
            bad++;
            break;
        }
        got++;
        n = NULL;
        if (proto_decode(f.sb.data + off, (size_t)len, zone, &m, &why) != 0 ||
            m.msgid != got * 3 ||
            !method_is(&m, got % 2 ? "acquire" : "report") ||
            !(n = proto_map_get(m.params, "n")) || n->via.u64 != got)
            bad++;
        msgpack_zone_clear(zone);
        off += (size_t)len;
    }
    IS(got, 50, "pipelined: 50 frames found");
    IS(bad, 0, "pipelined: each decodes in order with its own msgid");
    frame_done(&f);
}

/* --- params helpers ------------------------------------------------------- */

static void test_helpers(msgpack_zone *zone)
{
    struct frame f;
    msgpack_object map, i7;
    const msgpack_object *o;
    size_t off = 0;
    char buf[8];

    /* {"ke": 1, 5: "int key", "key": "first", "key": "second",
     *  "bin": <bin "x">, "": "empty", "nul": "a\0b"} */
    frame_init(&f);
    msgpack_pack_map(&f.pk, 7);
    proto_kv_u64(&f.pk, "ke", 1);
    msgpack_pack_int(&f.pk, 5);
    proto_pack_cstr(&f.pk, "int key");
    proto_kv_str(&f.pk, "key", "first");
    proto_kv_str(&f.pk, "key", "second");
    proto_pack_cstr(&f.pk, "bin");
    msgpack_pack_bin(&f.pk, 1);
    msgpack_pack_bin_body(&f.pk, "x", 1);
    proto_kv_str(&f.pk, "", "empty");
    proto_pack_cstr(&f.pk, "nul");
    proto_pack_strn(&f.pk, "a\0b", 3);
    if (!OK(msgpack_unpack(f.sb.data, f.sb.size, &off, zone, &map) ==
                MSGPACK_UNPACK_SUCCESS,
            "helpers: test map unpacks"))
        return;

    OK(proto_str_eq(proto_map_get(&map, "key"), "first"),
       "map_get: first of duplicate keys");
    o = proto_map_get(&map, "ke");
    OK(o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == 1,
       "map_get: a key that is a prefix of another is its own");
    OK(proto_map_get(&map, "k") == NULL, "map_get: prefix of a key misses");
    OK(proto_map_get(&map, "keys") == NULL, "map_get: longer name misses");
    OK(proto_map_get(&map, "5") == NULL, "map_get: integer keys never match");
    OK(proto_str_eq(proto_map_get(&map, ""), "empty"), "map_get: empty name");
    OK(proto_map_get(&map, "missing") == NULL, "map_get: missing is NULL");
    OK(proto_map_get(NULL, "key") == NULL, "map_get: NULL map is NULL");
    i7.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    i7.via.u64 = 7;
    OK(proto_map_get(&i7, "key") == NULL, "map_get: non-map is NULL");

    o = proto_map_get(&map, "bin");
    OK(o && !proto_str_eq(o, "x"), "str_eq: bin is not a string");
    OK(!proto_str_eq(NULL, "x"), "str_eq: NULL is not a string");
    OK(!proto_str_eq(&i7, "7"), "str_eq: integer is not a string");
    o = proto_map_get(&map, "nul");
    OK(!proto_str_eq(o, "a"), "str_eq: embedded NUL: length counts");
    OK(proto_str_eq(proto_map_get(&map, "key"), "first") &&
           !proto_str_eq(proto_map_get(&map, "key"), "firs") &&
           !proto_str_eq(proto_map_get(&map, "key"), "firstx"),
       "str_eq: exact length only");

    /* str_copy: fits, truncates, cap 1, cap 0, not a string. */
    o = proto_map_get(&map, "key");
    memset(buf, 'Z', sizeof(buf));
    IS(proto_str_copy(o, buf, sizeof(buf)), 5, "str_copy: returns length");
    OK(strcmp(buf, "first") == 0, "str_copy: copied whole");
    {
        struct frame g;
        msgpack_object s;
        size_t goff = 0;

        frame_init(&g);
        proto_pack_cstr(&g.pk, "binance.orders");
        msgpack_unpack(g.sb.data, g.sb.size, &goff, zone, &s);
        memset(buf, 'Z', sizeof(buf));
        IS(proto_str_copy(&s, buf, sizeof(buf)), 14,
           "str_copy: truncated copy still returns the full length");
        OK(memcmp(buf, "binance\0", 8) == 0,
           "str_copy: truncated to cap-1 and NUL-terminated");
        memset(buf, 'Z', sizeof(buf));
        IS(proto_str_copy(&s, buf, 1), 14, "str_copy: cap 1 returns length");
        OK(buf[0] == '\0' && buf[1] == 'Z', "str_copy: cap 1 writes only NUL");
        memset(buf, 'Z', sizeof(buf));
        IS(proto_str_copy(&s, buf, 0), 14, "str_copy: cap 0 returns length");
        OK(buf[0] == 'Z', "str_copy: cap 0 writes nothing");
        frame_done(&g);
    }
    memset(buf, 'Z', sizeof(buf));
    IS(proto_str_copy(&i7, buf, sizeof(buf)), -1, "str_copy: integer is -1");
    OK(buf[0] == '\0', "str_copy: not a string leaves an empty string");
    IS(proto_str_copy(NULL, buf, sizeof(buf)), -1, "str_copy: NULL is -1");
    o = proto_map_get(&map, "nul");
    IS(proto_str_copy(o, buf, sizeof(buf)), 3, "str_copy: embedded NUL");
    OK(memcmp(buf, "a\0b\0", 4) == 0, "str_copy: copies bytes past a NUL");
    msgpack_zone_clear(zone);
    frame_done(&f);
}

/* --- decode errors -------------------------------------------------------- */

/* Pack an arbitrary message shape: how each case builds its frame. */
typedef void (*build_fn)(msgpack_packer *pk);

static void b_map(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    proto_kv_u64(pk, "a", 1);
}
static void b_int(msgpack_packer *pk)
{
    msgpack_pack_int(pk, 0);
}
static void b_str(msgpack_packer *pk)
{
    proto_pack_cstr(pk, "ping");
}
static void b_short(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, 1);
}
static void b_type3(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 3);
    msgpack_pack_int(pk, 1);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_type_neg(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, -1);
    msgpack_pack_int(pk, 1);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_type_str(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    proto_pack_cstr(pk, "0");
    msgpack_pack_int(pk, 1);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_req3(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, 1);
    proto_pack_cstr(pk, "ping");
}
static void b_msgid_big(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_uint64(pk, (uint64_t)UINT32_MAX + 1);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_msgid_neg(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, -7);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_msgid_str(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    proto_pack_cstr(pk, "7");
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_msgid_float(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_double(pk, 7.0);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_method_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, 41);
    msgpack_pack_int(pk, 5);
    msgpack_pack_array(pk, 0);
}
static void b_method_array(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, 41);
    msgpack_pack_array(pk, 1);
    proto_pack_cstr(pk, "ping");
    msgpack_pack_array(pk, 0);
}
static void b_notify_method_nil(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 2);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 0);
}
static void b_method_nil(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_int(pk, 41);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 0);
}
static void b_params_map(msgpack_packer *pk)
{
    proto_pack_request_head(pk, 42, "acquire");
    b_map(pk);
}
static void b_params_nil(msgpack_packer *pk)
{
    proto_pack_request_head(pk, 42, "acquire");
    msgpack_pack_nil(pk);
}
static void b_params_two_maps(msgpack_packer *pk)
{
    proto_pack_request_head(pk, 42, "acquire");
    msgpack_pack_array(pk, 2);
    b_map(pk);
    b_map(pk);
}
static void b_params_int(msgpack_packer *pk)
{
    proto_pack_request_head(pk, 42, "acquire");
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 1);
}
static void b_params_positional(msgpack_packer *pk)
{
    proto_pack_request_head(pk, 42, "acquire");
    msgpack_pack_array(pk, 1);
    proto_pack_cstr(pk, "binance.orders");
}
static void b_notify_method_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 2);
    msgpack_pack_int(pk, 5);
    msgpack_pack_array(pk, 0);
}
static void b_notify_params_map(msgpack_packer *pk)
{
    proto_pack_notify_head(pk, "event");
    b_map(pk);
}
static void b_notify4(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 2);
    proto_pack_cstr(pk, "event");
    msgpack_pack_array(pk, 0);
    msgpack_pack_nil(pk);
}
static void b_response3(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 1);
    msgpack_pack_int(pk, 9);
    msgpack_pack_nil(pk);
}
static void b_response_msgid_big(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 1);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_nil(pk);
    msgpack_pack_nil(pk);
}

struct bad_case {
    const char *name;
    build_fn build;
    int msgid_known;
    uint32_t msgid;
};

/* proto_peek_msgid reads the msgid of every uint width, and nothing else. */
static void test_peek_msgid(void)
{
    static const uint8_t fix[] = {0x94, 0x01, 0x7f},
                         u8[] = {0x94, 0x01, 0xcc, 0xc8},
                         u16[] = {0x94, 0x00, 0xcd, 0x12, 0x34},
                         u32[] = {0x94, 0x01, 0xce, 0xde, 0xad, 0xbe, 0xef},
                         cut[] = {0x94, 0x01, 0xce, 0xde},
                         neg[] = {0x94, 0x01, 0xff}, req[] = {0x94, 0x00, 0x05};
    uint32_t id = 0;

    OK(proto_peek_msgid(fix, sizeof(fix), PROTO_RESPONSE, &id) && id == 127,
       "peek: fixint msgid");
    OK(proto_peek_msgid(u8, sizeof(u8), PROTO_RESPONSE, &id) && id == 200,
       "peek: uint8 msgid");
    OK(proto_peek_msgid(u16, sizeof(u16), PROTO_REQUEST, &id) && id == 0x1234,
       "peek: uint16 msgid of a request");
    OK(proto_peek_msgid(u32, sizeof(u32), PROTO_RESPONSE, &id) &&
           id == 0xdeadbeef,
       "peek: uint32 msgid");
    OK(!proto_peek_msgid(cut, sizeof(cut), PROTO_RESPONSE, &id),
       "peek: a cut uint32 is not read");
    OK(!proto_peek_msgid(neg, sizeof(neg), PROTO_RESPONSE, &id),
       "peek: a negative msgid is not read");
    OK(!proto_peek_msgid(req, sizeof(req), PROTO_RESPONSE, &id),
       "peek: a request is not a response");
}

/* Positional params decode (the request is well formed) and are flagged,
 * so the daemon can answer bad_request and keep the connection. */
static void test_positional(msgpack_zone *zone)
{
    static const struct {
        const char *name;
        build_fn build;
    } cases[] = {
        {"params two maps", b_params_two_maps},
        {"params [int]", b_params_int},
        {"params positional [str]", b_params_positional},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct frame f;
        struct proto_msg m;
        const char *why = NULL;

        frame_init(&f);
        cases[i].build(&f.pk);
        OK(scan_decode(&f, zone, &m, &why) == 0, "%s: decodes (%s)",
           cases[i].name, why ? why : "ok");
        OK(m.params_positional && m.params == NULL && m.msgid == 42,
           "%s: flagged positional, msgid %u", cases[i].name,
           (unsigned)m.msgid);
        msgpack_zone_clear(zone);
        frame_done(&f);
    }
}

static void test_decode_errors(msgpack_zone *zone)
{
    static const struct bad_case cases[] = {
        {"not an array (map)", b_map, 0, 0},
        {"not an array (int)", b_int, 0, 0},
        {"not an array (str)", b_str, 0, 0},
        {"array of 2", b_short, 0, 0},
        {"type 3", b_type3, 0, 0},
        {"type -1", b_type_neg, 0, 0},
        {"type is a string", b_type_str, 0, 0},
        {"request of 3 elements", b_req3, 0, 0},
        {"msgid 2^32", b_msgid_big, 0, 0},
        {"msgid negative", b_msgid_neg, 0, 0},
        {"msgid a string", b_msgid_str, 0, 0},
        {"msgid a float", b_msgid_float, 0, 0},
        {"method an integer", b_method_int, 1, 41},
        {"method an array", b_method_array, 1, 41},
        {"method nil", b_method_nil, 1, 41},
        {"params a bare map", b_params_map, 1, 42},
        {"params nil", b_params_nil, 1, 42},
        {"notify method an integer", b_notify_method_int, 0, 0},
        {"notify method nil", b_notify_method_nil, 0, 0},
        {"notify params a map", b_notify_params_map, 0, 0},
        {"notify of 4 elements", b_notify4, 0, 0},
        {"response of 3 elements", b_response3, 0, 0},
        {"response msgid 2^64-1", b_response_msgid_big, 0, 0},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct bad_case *c = &cases[i];
        struct frame f;
        struct proto_msg m;
        const char *why = NULL;
        int r;

        frame_init(&f);
        c->build(&f.pk);
        r = scan_decode(&f, zone, &m, &why);
        IS(r, -PROTO_EINVAL, c->name);
        OK(why && *why, "%s: reason \"%s\"", c->name, why ? why : "(null)");
        IS(m.msgid_known, c->msgid_known, "msgid_known");
        if (c->msgid_known)
            IS(m.msgid, c->msgid, "msgid for the error response");
        msgpack_zone_clear(zone);
        frame_done(&f);
    }

    /* Two objects in one frame, and bytes that are not one object, are
     * refused by the decoder itself. */
    {
        struct frame f;
        struct proto_msg m;
        const char *why = NULL;
        static const char c1[] = {(char)0xc1};
        static const char trunc[] = {(char)0x94, 0x00, 0x01};

        frame_init(&f);
        proto_pack_request_head(&f.pk, 5, "ping");
        msgpack_pack_array(&f.pk, 0);
        msgpack_pack_nil(&f.pk);
        IS(proto_decode(f.sb.data, f.sb.size, zone, &m, &why), -PROTO_EINVAL,
           "decode: trailing bytes after the object");
        OK(why != NULL && !m.msgid_known, "decode: trailing bytes: no msgid");
        msgpack_zone_clear(zone);
        IS(proto_decode(c1, sizeof(c1), zone, &m, &why), -PROTO_EINVAL,
           "decode: 0xc1");
        msgpack_zone_clear(zone);
        IS(proto_decode(trunc, sizeof(trunc), zone, &m, &why), -PROTO_EINVAL,
           "decode: truncated object");
        OK(!m.msgid_known, "decode: truncated: no msgid");
        msgpack_zone_clear(zone);
        frame_done(&f);
    }
}

/* Pre-packed pieces: the very bytes msgpack-c packs for the same key and
 * value, and a refusal (not a cut) past PROTO_PRE_MAX. */
static void test_pre(void)
{
    static const char *const vals[] = {"closed", "forced_open", "ok",
                                       "bulkhead_full", ""};
    struct proto_pre p;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char big[64];
    size_t i;
    int same = 1;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        msgpack_sbuffer_clear(&sb);
        proto_kv_str(&pk, "state", vals[i]);
        same &= proto_pre_kv_str(&p, "state", vals[i]) == 0 &&
                p.len == sb.size && !memcmp(p.bytes, sb.data, sb.size);
    }
    for (i = 0; i < 2; i++) {
        msgpack_sbuffer_clear(&sb);
        proto_kv_bool(&pk, "allow", (int)i);
        same &= proto_pre_kv_bool(&p, "allow", (int)i) == 0 &&
                p.len == sb.size && !memcmp(p.bytes, sb.data, sb.size);
    }
    msgpack_sbuffer_clear(&sb);
    proto_pack_cstr(&pk, "retry_after_ms");
    same &= proto_pre_str(&p, "retry_after_ms") == 0 && p.len == sb.size &&
            !memcmp(p.bytes, sb.data, sb.size);
    OK(same, "pre-packed key/value pieces are msgpack-c's own bytes");
    msgpack_sbuffer_clear(&sb);
    proto_pack_pre(&pk, &p);
    OK(sb.size == p.len && !memcmp(sb.data, p.bytes, p.len),
       "proto_pack_pre writes them whole");
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    OK(proto_pre_str(&p, big) < 0 && proto_pre_kv_str(&p, "k", big) < 0,
       "a piece past %d bytes is refused", PROTO_PRE_MAX);
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    msgpack_zone zone;

    msgpack_zone_init(&zone, 4096);
    test_request(&zone);
    test_pre();
    test_response(&zone);
    test_notify(&zone);
    test_bin_names(&zone);
    test_pipelined(&zone);
    test_helpers(&zone);
    test_decode_errors(&zone);
    test_positional(&zone);
    test_peek_msgid();
    msgpack_zone_destroy(&zone);
    return tap_done();
}
