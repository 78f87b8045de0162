/*
 * proto.h - the MessagePack-RPC codec shared by resild and libresil.
 *
 * Two layers:
 *   1. proto_scan_*: a bounded, resumable walker that finds where one
 *      msgpack object ends without allocating anything.  It exists because
 *      msgpack-c 4 allocates from a declared container count before the
 *      elements arrive (5 hostile bytes "dd ff ff ff ff" ask it for tens of
 *      GiB).  Nothing reaches msgpack-c until the scanner has accepted the
 *      whole object: size <= max_bytes, every declared length or count <=
 *      the bytes that can still follow, depth <= max_depth.
 *   2. proto_decode / proto_pack_*: request, response and notification
 *      framing ([0,msgid,method,params] / [1,msgid,error,result] /
 *      [2,method,params]) over msgpack-c, plus small helpers to read named
 *      arguments out of the params map.
 *
 * Nothing here does I/O or keeps global state.
 */
#ifndef RESIL_PROTO_H
#define RESIL_PROTO_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_MAX_DEPTH 8 /* deepest nesting a peer may send */
#define PROTO_DEFAULT_MAX_FRAME                                                \
    65536 /* bytes; SPEC max_frame_bytes default                               \
           */

/* Negative results of the scanner and decoder. */
enum {
    PROTO_EINVAL = 1, /* not msgpack (0xc1), or not a valid RPC message */
    PROTO_E2BIG = 2,  /* object is, or declares itself, over max_bytes */
    PROTO_EDEPTH = 3, /* nesting deeper than max_depth */
};

enum { PROTO_REQUEST = 0, PROTO_RESPONSE = 1, PROTO_NOTIFY = 2 };

/*
 * Resumable scanner state for one object.  The caller keeps the object's
 * bytes contiguous from its first byte and calls proto_scan_next() again
 * with a longer buffer whenever more bytes arrive; work already done is not
 * repeated, so a slow-drip peer costs O(bytes), not O(bytes^2).
 */
struct proto_scan {
    size_t pos;                         /* bytes of the object accepted */
    unsigned depth;                     /* open containers */
    uint64_t left[PROTO_MAX_DEPTH + 1]; /* elements still due per level */
    uint64_t due;                       /* sum of left[1..depth] */
};

/* Reset before the first byte of each object. */
void proto_scan_init(struct proto_scan *s);

/*
 * Continue scanning the object that starts at buf[0]; buf holds len bytes
 * (the same prefix as the previous call, possibly longer).
 * Returns the object's size in bytes (>0) when it is complete, 0 when more
 * bytes are needed, or -PROTO_EINVAL / -PROTO_E2BIG / -PROTO_EDEPTH.
 * max_depth must be <= PROTO_MAX_DEPTH.  Never allocates.
 */
long proto_scan_next(struct proto_scan *s, const uint8_t *buf, size_t len,
                     size_t max_bytes, unsigned max_depth);

/* A decoded message.  Pointers borrow from the frame and the zone. */
struct proto_msg {
    int type;           /* PROTO_REQUEST / RESPONSE / NOTIFY */
    int msgid_known;    /* 1 once msgid could be read */
    uint32_t msgid;     /* request and response */
    const char *method; /* request and notify: the str or bin name's
                         * bytes; not NUL-terminated */
    size_t method_len;
    const msgpack_object *params;        /* request/notify: the map, or NULL */
    int params_positional;               /* request/notify params an array,
                                          * but not [] or [map]: answer
                                          * bad_request */
    const msgpack_object *error;         /* response: nil or map */
    const msgpack_object *result;        /* response */
    const msgpack_object *notify_params; /* notify: the params array */
};

/*
 * Decode one frame that proto_scan accepted.  Objects are allocated in
 * zone (clear it with msgpack_zone_clear after use; strings point into buf).
 * Returns 0, or -PROTO_EINVAL with *why naming what is wrong (static text).
 * On failure m->msgid_known tells whether an error response can be sent.
 * The method name may be msgpack str or bin (SPEC §3).  For requests and
 * notifications alike, params must be an array; the named arguments are
 * its one map (m->params).  Any other array (positional arguments) decodes
 * with params_positional set, so the request can be answered bad_request
 * and the connection kept.  A notification has msgid_known 0 and also
 * notify_params (the whole array, for event consumers).
 */
int proto_decode(const char *buf, size_t len, msgpack_zone *zone,
                 struct proto_msg *m, const char **why);

/* The msgid of a request (type PROTO_REQUEST) or response (PROTO_RESPONSE)
 * read from the first bytes of p[0..n), [0x94, type, uint], without
 * decoding: to name the msgid of a frame that will not decode, or to skip
 * another request's answer cheaply.  1 and *id, or 0. */
int proto_peek_msgid(const uint8_t *p, size_t n, int type, uint32_t *id);

/* Value of key `name` in a msgpack map, or NULL (also when map is NULL). */
const msgpack_object *proto_map_get(const msgpack_object *map,
                                    const char *name);

/* 1 if o is a string equal to s. */
int proto_str_eq(const msgpack_object *o, const char *s);

/* Copy a msgpack string into dst (NUL-terminated, truncated to cap-1).
 * Returns the source length, or -1 if o is not a string. */
long proto_str_copy(const msgpack_object *o, char *dst, size_t cap);

/* Packing helpers.  Each writes through a msgpack_packer. */
void proto_pack_cstr(msgpack_packer *pk, const char *s);
void proto_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* [1, msgid, nil, <caller packs the result next>] */
void proto_pack_response_head(msgpack_packer *pk, uint32_t msgid);
/* A whole error response [1, msgid, {"code","message"}, nil]. */
void proto_pack_error(msgpack_packer *pk, uint32_t msgid, const char *code,
                      const char *message);
/* [0, msgid, method, <caller packs the params array next>] */
void proto_pack_request_head(msgpack_packer *pk, uint32_t msgid,
                             const char *method);
/* [2, method, <caller packs the params array next>] */
void proto_pack_notify_head(msgpack_packer *pk, const char *method);
/* Map entries: key then value. */
void proto_kv_str(msgpack_packer *pk, const char *k, const char *v);
void proto_kv_u64(msgpack_packer *pk, const char *k, uint64_t v);
void proto_kv_i64(msgpack_packer *pk, const char *k, int64_t v);
void proto_kv_f64(msgpack_packer *pk, const char *k, double v);
void proto_kv_bool(msgpack_packer *pk, const char *k, int v);

/*
 * Pre-packed pieces for the hottest answers: what msgpack-c packs for a
 * constant key and value, packed once at start-up and written whole, one
 * call of the packer's writer instead of one per header and per body
 * (packing answers was a fifth of a decision's instructions).
 */
#define PROTO_PRE_MAX 48
struct proto_pre {
    uint8_t len;
    char bytes[PROTO_PRE_MAX];
};
/* Pack into p what pack_fn packs through a packer (k and v as given):
 * 0, or -1 when it takes more than PROTO_PRE_MAX bytes. */
int proto_pre_kv_str(struct proto_pre *p, const char *k, const char *v);
int proto_pre_kv_bool(struct proto_pre *p, const char *k, int v);
int proto_pre_str(struct proto_pre *p, const char *s);

static inline void proto_pack_pre(msgpack_packer *pk, const struct proto_pre *p)
{
    (*pk->callback)(pk->data, p->bytes, p->len);
}

#endif
