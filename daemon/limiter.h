/*
 * limiter.h - one rate limiter (token bucket, equivalent to GCRA), pure:
 * takes the monotonic time in ms, no I/O, no clock reads, no allocation.
 *
 * `rate` tokens are added every `per_ms` milliseconds, continuously, up to
 * `burst`.  All arithmetic is integer and exact: the level is kept in
 * "token-milliseconds" (tokens * per_ms), to which each elapsed ms adds
 * `rate`; a cost of c needs c * per_ms.  Hence over any interval of T ms
 * the cost taken never exceeds burst + rate * T / per_ms, and the wait
 * reported is the exact number of ms until the cost fits (rounded up).
 *
 * `reserve` tokens are kept for critical requests: a normal request may
 * only take tokens while at least `reserve` remain afterwards.
 *
 * A venue's 429 pauses the limiter (nothing passes until the pause ends,
 * tokens still refill); a venue's own rate-limit headers re-sync the level
 * down to what the venue says remains.
 */
#ifndef RESIL_LIMITER_H
#define RESIL_LIMITER_H

#include <stdint.h>

#define LIMITER_NEVER UINT64_MAX /* wait: the cost can never fit */

struct limiter_conf {
    uint64_t rate;     /* tokens per per_ms, >= 1 */
    uint64_t per_ms;   /* >= 1 (second 1000, minute 60000, ...) */
    uint64_t burst;    /* bucket size in tokens, >= 1 (default = rate) */
    uint64_t pause_ms; /* pause on a 429 without retry_after (default 1000) */
};

struct limiter {
    uint64_t level;           /* token-ms: tokens * per_ms, <= burst*per_ms */
    uint64_t updated_ms;      /* time level was last brought up to date */
    uint64_t paused_until_ms; /* 0 or end of a venue-imposed pause */
};

/* Full bucket at now_ms. */
void limiter_init(struct limiter *l, const struct limiter_conf *c,
                  uint64_t now_ms);

/*
 * ms until `cost` could be taken (0 = now), honouring the pause and, for a
 * normal request, keeping `reserve` tokens; LIMITER_NEVER if cost (plus
 * reserve for a normal request) exceeds burst.  Takes nothing.
 */
uint64_t limiter_wait(struct limiter *l, const struct limiter_conf *c,
                      uint64_t now_ms, uint64_t cost, uint64_t reserve,
                      int critical);

/* Take cost tokens; only after limiter_wait() said 0 at the same now_ms. */
void limiter_take(struct limiter *l, const struct limiter_conf *c,
                  uint64_t now_ms, uint64_t cost);

/* Whole tokens available now (ignores the pause). */
uint64_t limiter_available(struct limiter *l, const struct limiter_conf *c,
                           uint64_t now_ms);

/* Venue said 429: nothing passes for ms (0 = conf pause_ms).  A shorter
 * pause never cuts a longer one short. */
void limiter_pause(struct limiter *l, const struct limiter_conf *c,
                   uint64_t now_ms, uint64_t ms);

/* An operator's reset: end a venue pause now. */
void limiter_unpause(struct limiter *l);

/* ms left of the pause, 0 if none. */
uint64_t limiter_paused_ms(const struct limiter *l, uint64_t now_ms);

/* Venue says `remaining` requests are left: never hold more than that. */
void limiter_sync(struct limiter *l, const struct limiter_conf *c,
                  uint64_t now_ms, uint64_t remaining);

/*
 * Export and import (snapshots), in remaining-time form: the level brought
 * up to now_ms (in token-ms of the exporter's per_ms) and the pause left.
 * The importer's clock may be another one (a reboot): the pause ends
 * exactly paused_left_ms after the import, and the level refills from
 * there.  A level for another per_ms is converted; one above the
 * importer's burst is cut to it (an import never refills a bucket beyond
 * what it held).
 */
struct limiter_export {
    uint64_t level;          /* token-ms at the export */
    uint64_t per_ms;         /* the exporter's per_ms (the level's unit) */
    uint64_t paused_left_ms; /* venue pause left, 0 if none */
};

void limiter_export(const struct limiter *l, const struct limiter_conf *c,
                    uint64_t now_ms, struct limiter_export *ex);

/* Any values are safe: the level is clamped, a per_ms of 0 counts as 1. */
void limiter_import(struct limiter *l, const struct limiter_conf *c,
                    uint64_t now_ms, const struct limiter_export *ex);

#endif
