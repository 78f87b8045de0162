/*
 * rpc.c - MessagePack-RPC message decode and pack helpers over msgpack-c.
 *
 * proto_decode() must only be given a frame that proto_scan_next() accepted:
 * the scanner is what makes msgpack-c's eager allocation safe.  No I/O, no
 * globals; the zone passed in owns every object decoded.
 */
#include "proto.h"

#include <string.h>

/* The method name: msgpack str, or bin (older msgpack "raw"; Debian's
 * pynvim sends its greeting's name as bin).  0, or -1 for any other type. */
static int method_name(const msgpack_object *o, struct proto_msg *m)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        m->method = o->via.str.ptr;
        m->method_len = o->via.str.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        m->method = o->via.bin.ptr;
        m->method_len = o->via.bin.size;
        return 0;
    }
    return -1;
}

/* Named arguments out of a params array, the same for requests and
 * notifications: [] (none), [map] (the map), anything else positional. */
static void named_params(const msgpack_object *arr, struct proto_msg *m)
{
    if (arr->via.array.size == 1 &&
        arr->via.array.ptr[0].type == MSGPACK_OBJECT_MAP)
        m->params = &arr->via.array.ptr[0];
    else if (arr->via.array.size > 0)
        m->params_positional = 1;
}

int proto_decode(const char *buf, size_t len, msgpack_zone *zone,
                 struct proto_msg *m, const char **why)
{
    msgpack_object obj;
    size_t off = 0;
    const msgpack_object *a;
    uint32_t n;

    memset(m, 0, sizeof(*m));
    if (msgpack_unpack(buf, len, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
        off != len) {
        *why = "frame is not one msgpack object";
        return -PROTO_EINVAL;
    }
    if (obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size < 3) {
        *why = "message is not a msgpack-rpc array";
        return -PROTO_EINVAL;
    }
    a = obj.via.array.ptr;
    n = obj.via.array.size;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > 2) {
        *why = "message type is not 0, 1 or 2";
        return -PROTO_EINVAL;
    }
    m->type = (int)a[0].via.u64;
    if (m->type == PROTO_NOTIFY) {
        /* Each way a notification can be wrong has its own text, so a log
         * line names what the client got wrong (12d: a bin name used to
         * be reported as a bad frame shape). */
        if (n != 3) {
            *why = "notification is not [2, method, params] (3 elements)";
            return -PROTO_EINVAL;
        }
        if (method_name(&a[1], m) < 0) {
            *why = "notification method is neither str nor bin";
            return -PROTO_EINVAL;
        }
        if (a[2].type != MSGPACK_OBJECT_ARRAY) {
            *why = "notification params is not an array";
            return -PROTO_EINVAL;
        }
        m->notify_params = &a[2];
        named_params(&a[2], m);
        return 0;
    }
    if (n != 4 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        a[1].via.u64 > UINT32_MAX) {
        *why = "message is not [type, msgid(uint32), x, y]";
        return -PROTO_EINVAL;
    }
    m->msgid = (uint32_t)a[1].via.u64;
    m->msgid_known = 1;
    if (m->type == PROTO_RESPONSE) {
        m->error = &a[2];
        m->result = &a[3];
        return 0;
    }
    if (method_name(&a[2], m) < 0) {
        *why = "method is neither str nor bin";
        return -PROTO_EINVAL;
    }
    if (a[3].type != MSGPACK_OBJECT_ARRAY) {
        *why = "params is not an array";
        return -PROTO_EINVAL;
    }
    named_params(&a[3], m);
    return 0;
}

int proto_peek_msgid(const uint8_t *p, size_t n, int type, uint32_t *id)
{
    if (n < 3 || p[0] != 0x94 || p[1] != (uint8_t)type)
        return 0;
    if (p[2] <= 0x7f)
        *id = p[2];
    else if (p[2] == 0xcc && n >= 4)
        *id = p[3];
    else if (p[2] == 0xcd && n >= 5)
        *id = (uint32_t)p[3] << 8 | p[4];
    else if (p[2] == 0xce && n >= 7)
        *id = (uint32_t)p[3] << 24 | (uint32_t)p[4] << 16 |
              (uint32_t)p[5] << 8 | p[6];
    else
        return 0;
    return 1;
}

const msgpack_object *proto_map_get(const msgpack_object *map, const char *name)
{
    uint32_t i;

    size_t n;

    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    /* The name's length once, then a size compare per entry: most
     * entries are rejected without touching their bytes. */
    n = strlen(name);
    for (i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, name, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int proto_str_eq(const msgpack_object *o, const char *s)
{
    const char *p;
    uint32_t i, n;

    if (!o || o->type != MSGPACK_OBJECT_STR)
        return 0;
    /* One pass, stopping at the first difference: no strlen of s per
     * comparison (argument lookups compare every name of a map, and this
     * once took a fifth of a decision's instructions).  s is read only up
     * to its NUL. */
    p = o->via.str.ptr;
    n = o->via.str.size;
    for (i = 0; i < n; i++)
        if (s[i] != p[i] || s[i] == '\0')
            return 0;
    return s[n] == '\0';
}

long proto_str_copy(const msgpack_object *o, char *dst, size_t cap)
{
    size_t n;

    if (!o || o->type != MSGPACK_OBJECT_STR) {
        if (cap)
            dst[0] = '\0';
        return -1;
    }
    n = o->via.str.size;
    if (cap) {
        size_t c = n < cap - 1 ? n : cap - 1;
        memcpy(dst, o->via.str.ptr, c);
        dst[c] = '\0';
    }
    return (long)n;
}

void proto_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void proto_pack_cstr(msgpack_packer *pk, const char *s)
{
    proto_pack_strn(pk, s, strlen(s));
}

static int pre_write(void *data, const char *buf, size_t len);

void proto_pack_response_head(msgpack_packer *pk, uint32_t msgid)
{
    struct proto_pre h = {0};
    msgpack_packer hp;

    /* Gathered on the stack (at most 8 bytes), then one write through pk:
     * a head per answer, once four writes. */
    msgpack_packer_init(&hp, &h, pre_write);
    msgpack_pack_array(&hp, 4);
    msgpack_pack_uint8(&hp, PROTO_RESPONSE);
    msgpack_pack_uint32(&hp, msgid);
    msgpack_pack_nil(&hp);
    (*pk->callback)(pk->data, h.bytes, h.len);
}

void proto_pack_error(msgpack_packer *pk, uint32_t msgid, const char *code,
                      const char *message)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint8(pk, PROTO_RESPONSE);
    msgpack_pack_uint32(pk, msgid);
    msgpack_pack_map(pk, 2);
    proto_kv_str(pk, "code", code);
    proto_kv_str(pk, "message", message);
    msgpack_pack_nil(pk);
}

void proto_pack_request_head(msgpack_packer *pk, uint32_t msgid,
                             const char *method)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint8(pk, PROTO_REQUEST);
    msgpack_pack_uint32(pk, msgid);
    proto_pack_cstr(pk, method);
}

void proto_pack_notify_head(msgpack_packer *pk, const char *method)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, PROTO_NOTIFY);
    proto_pack_cstr(pk, method);
}

void proto_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    proto_pack_cstr(pk, k);
    proto_pack_cstr(pk, v);
}

void proto_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    proto_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

void proto_kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
    proto_pack_cstr(pk, k);
    msgpack_pack_int64(pk, v);
}

void proto_kv_f64(msgpack_packer *pk, const char *k, double v)
{
    proto_pack_cstr(pk, k);
    msgpack_pack_double(pk, v);
}

void proto_kv_bool(msgpack_packer *pk, const char *k, int v)
{
    proto_pack_cstr(pk, k);
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* --- pre-packed pieces --- */

static int pre_write(void *data, const char *buf, size_t len)
{
    struct proto_pre *p = data;

    if (len > PROTO_PRE_MAX - (size_t)p->len)
        return -1;
    memcpy(p->bytes + p->len, buf, len);
    p->len = (uint8_t)(p->len + len);
    return 0;
}

static int pre_done(struct proto_pre *p, const char *a, const char *b)
{
    /* Whether everything fit: the writer drops what does not. */
    size_t want = (a ? strlen(a) + 1 : 0) + (b ? strlen(b) + 1 : 0);

    return p->len >= want ? 0 : -1;
}

int proto_pre_kv_str(struct proto_pre *p, const char *k, const char *v)
{
    msgpack_packer pk;

    p->len = 0;
    msgpack_packer_init(&pk, p, pre_write);
    proto_kv_str(&pk, k, v);
    return pre_done(p, k, v);
}

int proto_pre_kv_bool(struct proto_pre *p, const char *k, int v)
{
    msgpack_packer pk;

    p->len = 0;
    msgpack_packer_init(&pk, p, pre_write);
    proto_kv_bool(&pk, k, v);
    return p->len >= strlen(k) + 2 ? pre_done(p, k, NULL) : -1;
}

int proto_pre_str(struct proto_pre *p, const char *s)
{
    msgpack_packer pk;

    p->len = 0;
    msgpack_packer_init(&pk, p, pre_write);
    proto_pack_cstr(&pk, s);
    return pre_done(p, s, NULL);
}
