/*
 * bulkhead.h - concurrency limit for one key: at most max_concurrent
 * permits outstanding, of which `reserve` only critical requests may use.
 * Pure: no I/O, no clock, no allocation.  The queue of parked requests is
 * kept by the caller (methods.c); `queue` here is only its bound.
 */
#ifndef RESIL_BULKHEAD_H
#define RESIL_BULKHEAD_H

#include <stdint.h>

struct bulkhead_conf {
    uint32_t max_concurrent; /* outstanding permits, >= 1 */
    uint32_t queue;          /* parked requests allowed to wait, default 0 */
};

struct bulkhead {
    uint32_t in_use; /* permits outstanding */
};

/* 1 if one more permit fits: a normal request must leave `reserve` free. */
int bulkhead_fits(const struct bulkhead *b, const struct bulkhead_conf *c,
                  uint32_t reserve, int critical);

void bulkhead_take(struct bulkhead *b);
void bulkhead_give(struct bulkhead *b);

#endif
