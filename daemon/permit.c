/*
 * permit.c - the fixed permit pool (see permit.h).
 */
#include "permit.h"

#include <stdlib.h>

int permits_init(struct permits *ps, uint32_t max_permits)
{
    uint32_t cap = 16, bits = 4, i;

    while (cap < max_permits && bits < 24) {
        cap <<= 1;
        bits++;
    }
    ps->slot = calloc(cap, sizeof(*ps->slot));
    if (!ps->slot)
        return -1;
    ps->cap = cap;
    ps->bits = bits;
    ps->used = 0;
    ps->seq = 1;
    ps->free = NULL;
    for (i = cap; i-- > 0;) {
        ps->slot[i].next = ps->free;
        ps->free = &ps->slot[i];
    }
    return 0;
}

void permits_free(struct permits *ps)
{
    free(ps->slot);
    ps->slot = NULL;
}

struct permit *permits_alloc(struct permits *ps, struct permit **owner)
{
    struct permit *p = ps->free;

    if (!p)
        return NULL;
    ps->free = p->next;
    p->id = (ps->seq++ << ps->bits) | (uint64_t)(p - ps->slot);
    p->owner = owner;
    p->prev = NULL;
    p->next = *owner;
    if (*owner)
        (*owner)->prev = p;
    *owner = p;
    ps->used++;
    return p;
}

struct permit *permits_find(const struct permits *ps, uint64_t id)
{
    struct permit *p;

    if (id == 0)
        return NULL;
    p = &ps->slot[id & (ps->cap - 1)];
    return p->id == id ? p : NULL;
}

void permits_release(struct permits *ps, struct permit *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        *p->owner = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->id = 0;
    p->key = NULL;
    p->owner = NULL;
    p->prev = NULL;
    p->next = ps->free;
    ps->free = p;
    ps->used--;
}
