/*
 * permit.h - outstanding permits: what acquire granted and report (or a
 * closed connection, a cancel, or the TTL) must give back.
 *
 * The pool grows on demand, PERMIT_CHUNK slots at a time, up to exactly
 * max_permits, and never shrinks; slots never move, so pointers to them
 * stay valid.  A permit id is (sequence << bits) | slot, never 0: lookup is
 * one index plus a compare, and an id that was already reported (its slot
 * since reused) simply does not match.  Ids are guessable; what stops a
 * peer from reporting another connection's permit is the owner check
 * (permits_owned).
 *
 * Each permit is also
 *   - on its owner's list, so a closing connection releases all of its
 *     permits;
 *   - in a min-heap by expiry, so expiring permits costs O(log n) each and
 *     nothing for the ones that do not expire (no scan of the pool);
 *   - in a msgid index, so `cancel` finds the grant of a given acquire.
 * No I/O, no clock: callers pass the monotonic time.
 */
#ifndef RESIL_PERMIT_H
#define RESIL_PERMIT_H

#include <stddef.h>
#include <stdint.h>

#include "msgidx.h"

#define PERMIT_CHUNK 256      /* slots allocated at a time */
#define PERMIT_MAX (1u << 24) /* largest max_permits */

struct key;

struct permit {
    uint64_t id;                 /* 0 = free slot */
    struct key *key;             /* borrowed; keys are never freed */
    uint64_t expires_ms;         /* monotonic; granted + permit_ttl_ms */
    uint32_t generation;         /* breaker generation at grant */
    uint32_t heap_pos;           /* index in the expiry heap */
    uint32_t slot;               /* index in the pool, fixed at growth */
    uint8_t probe;               /* granted as a half-open probe */
    uint8_t holds_slot;          /* took a bulkhead slot of key */
    struct permit **owner;       /* head of the owner's list */
    struct permit *prev, *next;  /* owner's list, or free list (next) */
    struct msgidx_node by_msgid; /* (owner, msgid of the acquire) */
};

struct permits {
    struct permit **chunk; /* nchunks of PERMIT_CHUNK slots */
    uint32_t nchunks;
    uint32_t nslots; /* slots allocated: <= max */
    uint32_t max;    /* max_permits, exactly */
    uint32_t bits;   /* slot bits of an id */
    uint32_t used;
    uint64_t seq; /* next sequence number */
    struct permit *free;
    struct permit **heap; /* nslots entries; used of them in use */
    struct msgidx by_msgid;
};

/* Returns 0, RD_EINVAL (max_permits 0 or over PERMIT_MAX) or RD_ENOMEM.
 * seed: a random secret for the msgid index. */
int permits_init(struct permits *ps, uint32_t max_permits, uint64_t seed);
void permits_free(struct permits *ps);

/*
 * A new permit, linked at the head of *owner, indexed by (owner, msgid) and
 * by expires_ms.  The caller fills key, generation, probe, holds_slot.
 * NULL with *err = RD_EPERMITS (max_permits outstanding) or RD_ENOMEM.
 */
struct permit *permits_alloc(struct permits *ps, struct permit **owner,
                             uint32_t msgid, uint64_t expires_ms, int *err);

/* The outstanding permit with this id, or NULL. */
struct permit *permits_find(const struct permits *ps, uint64_t id);

/* The outstanding permit *owner got for the acquire msgid, or NULL. */
struct permit *permits_find_msgid(const struct permits *ps,
                                  struct permit *const *owner, uint32_t msgid);

/* 1 if p is on the list whose head is *owner. */
static inline int permits_owned(const struct permit *p,
                                struct permit *const *owner)
{
    return p->owner == owner;
}

/* The permit that expires first if it has expired by now_ms, else NULL. */
struct permit *permits_expired(const struct permits *ps, uint64_t now_ms);

/* Return p to the pool (unlinks it from its owner and the indexes). */
void permits_release(struct permits *ps, struct permit *p);

#endif
