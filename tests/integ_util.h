/*
 * integ_util.h - small helpers shared by the integration tests that drive
 * a real daemon through libresil: a monotonic clock, a sleep that survives
 * signals, and resil_call with its result decoded.  Map lookups and string
 * copies are proto.h's (proto_map_get, proto_str_copy, proto_pack_cstr).
 */
#ifndef RESIL_INTEG_UTIL_H
#define RESIL_INTEG_UTIL_H

#include <msgpack.h>

#include "resil.h"

/* CLOCK_MONOTONIC in milliseconds. */
long long mono_ms(void);

/* Sleep ms milliseconds, resuming after signals. */
void sleep_ms(int ms);

/* A decoded result of resil_call; free with reply_free. */
struct reply {
    void *buf;
    size_t len;
    msgpack_zone zone;
    msgpack_object obj;
};

/* resil_call(method) with params sb (NULL: none) and deadline_ms; on 0 rep
 * holds the decoded result, else code (24 bytes) may hold the daemon's
 * error code.  Call reply_free either way. */
int integ_call(resil_t *r, const char *method, const msgpack_sbuffer *sb,
               int deadline_ms, struct reply *rep, char *code);
void reply_free(struct reply *rep);

/* resil_acquire with the handle's defaults. */
int acquire(resil_t *r, const char *key, struct resil_decision *d);

/* Poll acquire every 20 ms for up to timeout_ms until it is allowed; other
 * answers must be circuit_open denials.  0 with *d admitted, or -1. */
int integ_wait_probe(resil_t *r, const char *key, int timeout_ms,
                     struct resil_decision *d);

/* resil_open with a per-call deadline; NULL on failure. */
resil_t *integ_open(const char *sock, int deadline_ms);

/* status {"key": key}: on 0, *map is the key's status map inside rep, or
 * NULL when the daemon has no such key.  Call reply_free either way. */
int integ_key_status(resil_t *r, const char *key, int deadline_ms,
                     struct reply *rep, const msgpack_object **map);

/* The parts of one key's status map the tests look at; -1 = absent. */
struct kstat {
    int found; /* the daemon has the key */
    char state[16], opened_by[32], force_reason[64];
    int has_force_reason, has_force_ttl, has_shadow;
    long long calls, failures, opens, retry_after_ms, outstanding;
    long long probes_in_flight, shadow_denied, force_ttl_ms;
    double failure_rate, slow_rate;
    int has_limiter, has_bulkhead;
    long long lim_rate, lim_per_ms, lim_burst, lim_available, lim_paused_ms;
    long long bh_in_use, bh_max, bh_queued;
};

/* Fill s from a status map (m NULL or not a map: s->found 0). */
void kstat_fill(const msgpack_object *m, struct kstat *s);

/* status {"key": key} into s.  resil_call's code. */
int integ_get_status(resil_t *r, const char *key, int deadline_ms,
                     struct kstat *s);

/* An integer (def when o is absent or not one) / a number. */
long long obj_int(const msgpack_object *o, long long def);
double obj_num(const msgpack_object *o, double def);

/* Run $BUILD/resilctl with args (NULL-terminated, at most 14); its stdout
 * and stderr land in out and err (cap bytes each, NUL-terminated), by way
 * of files in dir.  The exit status, or -1 (also after a 10 s timeout). */
int integ_run_ctl(const char *dir, char *out, char *err, size_t cap,
                  const char *const *args);

#endif
