/*
 * msgidx.h - an intrusive hash index of a connection's requests by msgid,
 * so that `cancel {msgid}` finds the parked request or the permit it names
 * in O(1), whatever a peer has outstanding.
 *
 * A node lives inside the indexed object (a permit, a parked request); the
 * index owns no memory but its bucket array, allocated once at init.  The
 * owner is an opaque pointer naming the connection.  A msgid a client
 * reuses while the older request is still indexed finds the newest.  No
 * I/O, no clock.
 */
#ifndef RESIL_MSGIDX_H
#define RESIL_MSGIDX_H

#include <stdint.h>

struct msgidx_node {
    struct msgidx_node *next, *prev; /* bucket chain; prev NULL at head */
    const void *owner;               /* NULL: not in the index */
    uint32_t msgid;
};

struct msgidx {
    struct msgidx_node **bucket;
    uint32_t mask; /* buckets - 1, a power of two minus one */
    uint64_t seed; /* secret: chains a peer cannot lengthen at will */
};

/* Room for about `expect` entries (chains stay short up to 4x that); seed
 * is a random secret (the caller reads it: this module does no I/O).
 * Returns 0 or RD_ENOMEM. */
int msgidx_init(struct msgidx *ix, uint32_t expect, uint64_t seed);
void msgidx_free(struct msgidx *ix);

/* Index n under (owner, msgid); n must not be in an index. */
void msgidx_add(struct msgidx *ix, struct msgidx_node *n, const void *owner,
                uint32_t msgid);

/* Take n out; a node that is not indexed is left alone. */
void msgidx_del(struct msgidx *ix, struct msgidx_node *n);

/* The newest node indexed under (owner, msgid), or NULL. */
struct msgidx_node *msgidx_find(const struct msgidx *ix, const void *owner,
                                uint32_t msgid);

#endif
