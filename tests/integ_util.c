/*
 * integ_util.c - helpers shared by the integration tests (integ_util.h).
 */
#include "integ_util.h"

#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_util.h"

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

int acquire(resil_t *r, const char *key, struct resil_decision *d)
{
    return resil_acquire(r, key, NULL, d);
}

int integ_wait_probe(resil_t *r, const char *key, int timeout_ms,
                     struct resil_decision *d)
{
    long long end = mono_ms() + timeout_ms;

    for (;;) {
        if (acquire(r, key, d) != 0)
            return -1;
        if (d->allow)
            return 0;
        if (strcmp(d->reason, "circuit_open") != 0 || mono_ms() >= end)
            return -1;
        sleep_ms(20);
    }
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

void kstat_fill(const msgpack_object *m, struct kstat *s)
{
    const msgpack_object *l, *b;

    memset(s, 0, sizeof(*s));
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return;
    s->found = 1;
    proto_str_copy(proto_map_get(m, "state"), s->state, sizeof(s->state));
    proto_str_copy(proto_map_get(m, "opened_by"), s->opened_by,
                   sizeof(s->opened_by));
    s->has_force_reason = proto_map_get(m, "force_reason") != NULL;
    proto_str_copy(proto_map_get(m, "force_reason"), s->force_reason,
                   sizeof(s->force_reason));
    s->has_force_ttl = proto_map_get(m, "force_ttl_ms") != NULL;
    s->force_ttl_ms = obj_int(proto_map_get(m, "force_ttl_ms"), -1);
    s->has_shadow = proto_map_get(m, "shadow_denied") != NULL;
    s->shadow_denied = obj_int(proto_map_get(m, "shadow_denied"), -1);
    s->calls = obj_int(proto_map_get(m, "calls"), -1);
    s->failures = obj_int(proto_map_get(m, "failures"), -1);
    s->opens = obj_int(proto_map_get(m, "opens"), -1);
    s->retry_after_ms = obj_int(proto_map_get(m, "retry_after_ms"), -1);
    s->outstanding = obj_int(proto_map_get(m, "outstanding"), -1);
    s->probes_in_flight = obj_int(proto_map_get(m, "probes_in_flight"), -1);
    s->failure_rate = obj_num(proto_map_get(m, "failure_rate"), -1);
    s->slow_rate = obj_num(proto_map_get(m, "slow_rate"), -1);
    l = proto_map_get(m, "limiter");
    s->has_limiter = l && l->type == MSGPACK_OBJECT_MAP;
    s->lim_rate = obj_int(proto_map_get(l, "rate"), -1);
    s->lim_per_ms = obj_int(proto_map_get(l, "per_ms"), -1);
    s->lim_burst = obj_int(proto_map_get(l, "burst"), -1);
    s->lim_available = obj_int(proto_map_get(l, "available"), -1);
    s->lim_paused_ms = obj_int(proto_map_get(l, "paused_ms"), -1);
    b = proto_map_get(m, "bulkhead");
    s->has_bulkhead = b && b->type == MSGPACK_OBJECT_MAP;
    s->bh_in_use = obj_int(proto_map_get(b, "in_use"), -1);
    s->bh_max = obj_int(proto_map_get(b, "max"), -1);
    s->bh_queued = obj_int(proto_map_get(b, "queued"), -1);
}

int integ_get_status(resil_t *r, const char *key, int deadline_ms,
                     struct kstat *s)
{
    struct reply rep;
    const msgpack_object *m;
    int rc = integ_key_status(r, key, deadline_ms, &rep, &m);

    kstat_fill(m, s);
    reply_free(&rep);
    return rc;
}

/* Read the file at path into buf (cap bytes, NUL-terminated). */
static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");

    buf[0] = '\0';
    if (f) {
        buf[fread(buf, 1, cap - 1, f)] = '\0';
        fclose(f);
    }
}

int integ_run_ctl(const char *dir, char *out, char *err, size_t cap,
                  const char *const *args)
{
    char bin[512], outp[300], errp[300];
    const char *argv[16];
    long long end;
    int status, i, fd;
    pid_t pid, w;

    snprintf(bin, sizeof(bin), "%s/resilctl", daemon_build_dir());
    snprintf(outp, sizeof(outp), "%s/ctl.out", dir);
    snprintf(errp, sizeof(errp), "%s/ctl.err", dir);
    argv[0] = bin;
    for (i = 0; args[i] && i < 14; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        fd = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(126);
    }
    end = mono_ms() + 10000;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && mono_ms() < end)
        sleep_ms(10);
    if (w != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    slurp(outp, out, cap);
    slurp(errp, err, cap);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
