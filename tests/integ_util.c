/*
 * integ_util.c - helpers shared by the integration tests (integ_util.h).
 */
#include "integ_util.h"

#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int integ_call(resil_t *r, const char *method, const msgpack_sbuffer *sb,
               int deadline_ms, struct reply *rep, char *code)
{
    size_t off = 0;
    int rc;

    memset(rep, 0, sizeof(*rep));
    msgpack_zone_init(&rep->zone, 2048);
    rc = resil_call(r, method, sb ? sb->data : NULL, sb ? sb->size : 0,
                    deadline_ms, &rep->buf, &rep->len, code, NULL, 24);
    if (rc == 0 && msgpack_unpack(rep->buf, rep->len, &off, &rep->zone,
                                  &rep->obj) != MSGPACK_UNPACK_SUCCESS)
        rc = RESIL_EPROTO;
    return rc;
}

void reply_free(struct reply *rep)
{
    msgpack_zone_destroy(&rep->zone);
    free(rep->buf);
    rep->buf = NULL;
}

resil_t *integ_open(const char *sock, int deadline_ms)
{
    resil_t *r = resil_open(sock);

    if (r)
        resil_set_deadline(r, deadline_ms);
    return r;
}

int integ_key_status(resil_t *r, const char *key, int deadline_ms,
                     struct reply *rep, const msgpack_object **map)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    const msgpack_object *keys;
    char code[24];
    int rc;

    *map = NULL;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "key");
    proto_pack_cstr(&pk, key);
    rc = integ_call(r, "status", &sb, deadline_ms, rep, code);
    msgpack_sbuffer_destroy(&sb);
    keys = rc == 0 ? proto_map_get(&rep->obj, "keys") : NULL;
    if (keys && keys->type == MSGPACK_OBJECT_ARRAY && keys->via.array.size)
        *map = &keys->via.array.ptr[0];
    return rc;
}

long long obj_int(const msgpack_object *o, long long def)
{
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (long long)o->via.u64;
    if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    return def;
}

double obj_num(const msgpack_object *o, double def)
{
    if (o && (o->type == MSGPACK_OBJECT_FLOAT64 ||
              o->type == MSGPACK_OBJECT_FLOAT32))
        return o->via.f64;
    return (double)obj_int(o, (long long)def);
}
