/*
 * permit.h - outstanding permits: what acquire granted and report (or a
 * closed connection, or the TTL) must give back.
 *
 * A fixed pool allocated once at start (max_permits slots, a power of two),
 * so granting a permit allocates nothing.  A permit id is
 * (sequence << bits) | slot, never 0: lookup is one array index plus a
 * compare, and an id that was already reported (its slot since reused)
 * simply does not match.  Each permit is also on its owner's list so a
 * closing connection can release all of its permits.  No I/O.
 */
#ifndef RESIL_PERMIT_H
#define RESIL_PERMIT_H

#include <stddef.h>
#include <stdint.h>

struct key;

struct permit {
    uint64_t id;                /* 0 = free slot */
    struct key *key;            /* borrowed; keys are never freed */
    uint64_t expires_ms;        /* monotonic; granted + permit_ttl_ms */
    uint32_t generation;        /* breaker generation at grant */
    uint8_t probe;              /* granted as a half-open probe */
    uint8_t holds_slot;         /* took a bulkhead slot of key */
    struct permit **owner;      /* head of the owner's list */
    struct permit *prev, *next; /* owner's list, or free list (next) */
};

struct permits {
    struct permit *slot;
    uint32_t cap;  /* power of two */
    uint32_t bits; /* log2(cap) */
    uint32_t used;
    uint64_t seq; /* next sequence number */
    struct permit *free;
};

int permits_init(struct permits *ps, uint32_t max_permits);
void permits_free(struct permits *ps);

/* A free permit linked at the head of *owner, or NULL if the pool is full.
 * The caller fills key, expires_ms, generation, probe. */
struct permit *permits_alloc(struct permits *ps, struct permit **owner);

/* The outstanding permit with this id, or NULL. */
struct permit *permits_find(const struct permits *ps, uint64_t id);

/* Return p to the pool (unlinks it from its owner). */
void permits_release(struct permits *ps, struct permit *p);

#endif
