/*
 * msgidx.c - requests by (connection, msgid) (see msgidx.h).
 */
#include "msgidx.h"

#include <stdlib.h>

#include "error.h"

static uint32_t slot(const struct msgidx *ix, const void *owner, uint32_t msgid)
{
    /* A secret seed before a full-avalanche mixer (murmur3's fmix64): a
     * peer picks its msgids, so it must not be able to pick colliding
     * ones offline. */
    uint64_t h =
        ix->seed ^ (uint64_t)(uintptr_t)owner ^ ((uint64_t)msgid << 32 | msgid);

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return (uint32_t)h & ix->mask;
}

int msgidx_init(struct msgidx *ix, uint32_t expect, uint64_t seed)
{
    uint32_t n = 64;

    while (n < expect / 4 && n < (1u << 22))
        n <<= 1;
    ix->bucket = calloc(n, sizeof(*ix->bucket));
    if (!ix->bucket)
        return RD_ENOMEM;
    ix->mask = n - 1;
    ix->seed = seed;
    return 0;
}

void msgidx_free(struct msgidx *ix)
{
    free(ix->bucket);
    ix->bucket = NULL;
}

void msgidx_add(struct msgidx *ix, struct msgidx_node *n, const void *owner,
                uint32_t msgid)
{
    struct msgidx_node **head = &ix->bucket[slot(ix, owner, msgid)];

    n->owner = owner;
    n->msgid = msgid;
    n->prev = NULL;
    n->next = *head;
    if (*head)
        (*head)->prev = n;
    *head = n;
}

void msgidx_del(struct msgidx *ix, struct msgidx_node *n)
{
    if (!n->owner)
        return;
    if (n->prev)
        n->prev->next = n->next;
    else
        ix->bucket[slot(ix, n->owner, n->msgid)] = n->next;
    if (n->next)
        n->next->prev = n->prev;
    n->next = n->prev = NULL;
    n->owner = NULL;
}

struct msgidx_node *msgidx_find(const struct msgidx *ix, const void *owner,
                                uint32_t msgid)
{
    struct msgidx_node *n = ix->bucket[slot(ix, owner, msgid)];

    for (; n; n = n->next)
        if (n->owner == owner && n->msgid == msgid)
            return n;
    return NULL;
}
