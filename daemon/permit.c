/*
 * permit.c - the permit pool (see permit.h).
 *
 * Growing: when the free list is empty and fewer than max slots exist, one
 * more chunk of min(PERMIT_CHUNK, max - nslots) slots is allocated and the
 * heap array is grown to match, so the pool never holds more than
 * max_permits permits and the heap never has to grow on a grant that the
 * pool could serve.
 */
#include "permit.h"

#include <stddef.h>
#include <stdlib.h>

#include "error.h"

int permits_init(struct permits *ps, uint32_t max_permits, uint64_t seed)
{
    uint32_t bits = 4;
    int rc;

    *ps = (struct permits){0};
    if (max_permits == 0 || max_permits > PERMIT_MAX)
        return RD_EINVAL;
    while ((1u << bits) < max_permits)
        bits++;
    ps->chunk = calloc((max_permits + PERMIT_CHUNK - 1) / PERMIT_CHUNK,
                       sizeof(*ps->chunk));
    if (!ps->chunk)
        return RD_ENOMEM;
    if ((rc = msgidx_init(&ps->by_msgid, max_permits, seed)) < 0) {
        free(ps->chunk);
        ps->chunk = NULL;
        return rc;
    }
    ps->max = max_permits;
    ps->bits = bits;
    ps->seq = 1;
    return 0;
}

void permits_free(struct permits *ps)
{
    uint32_t i;

    for (i = 0; ps->chunk && i < ps->nchunks; i++)
        free(ps->chunk[i]);
    free(ps->chunk);
    free(ps->heap);
    msgidx_free(&ps->by_msgid);
    *ps = (struct permits){0};
}

static struct permit *slot_at(const struct permits *ps, uint32_t i)
{
    return &ps->chunk[i / PERMIT_CHUNK][i % PERMIT_CHUNK];
}

/* One more chunk; 0 or RD_ENOMEM. */
static int grow(struct permits *ps)
{
    uint32_t n = ps->max - ps->nslots, i;
    struct permit *c, **heap;

    if (n > PERMIT_CHUNK)
        n = PERMIT_CHUNK;
    heap = realloc(ps->heap, (size_t)(ps->nslots + n) * sizeof(*heap));
    if (!heap)
        return RD_ENOMEM;
    ps->heap = heap;
    c = calloc(PERMIT_CHUNK, sizeof(*c));
    if (!c)
        return RD_ENOMEM;
    ps->chunk[ps->nchunks++] = c;
    for (i = n; i-- > 0;) {
        c[i].slot = ps->nslots + i;
        c[i].next = ps->free;
        ps->free = &c[i];
    }
    ps->nslots += n;
    return 0;
}

/* --- the expiry heap: heap[0] expires first --- */

static void heap_set(struct permits *ps, uint32_t i, struct permit *p)
{
    ps->heap[i] = p;
    p->heap_pos = i;
}

static void heap_up(struct permits *ps, uint32_t i)
{
    struct permit *p = ps->heap[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (ps->heap[parent]->expires_ms <= p->expires_ms)
            break;
        heap_set(ps, i, ps->heap[parent]);
        i = parent;
    }
    heap_set(ps, i, p);
}

static void heap_down(struct permits *ps, uint32_t i)
{
    struct permit *p = ps->heap[i];
    uint32_t n = ps->used;

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ps->heap[c + 1]->expires_ms < ps->heap[c]->expires_ms)
            c++;
        if (p->expires_ms <= ps->heap[c]->expires_ms)
            break;
        heap_set(ps, i, ps->heap[c]);
        i = c;
    }
    heap_set(ps, i, p);
}

struct permit *permits_alloc(struct permits *ps, struct permit **owner,
                             uint32_t msgid, uint64_t expires_ms, int *err)
{
    struct permit *p;

    if (!ps->free) {
        if (ps->nslots >= ps->max) {
            *err = RD_EPERMITS;
            return NULL;
        }
        if ((*err = grow(ps)) < 0)
            return NULL;
    }
    p = ps->free;
    ps->free = p->next;
    p->id = (ps->seq++ << ps->bits) | p->slot;
    p->expires_ms = expires_ms;
    p->owner = owner;
    p->prev = NULL;
    p->next = *owner;
    if (*owner)
        (*owner)->prev = p;
    *owner = p;
    msgidx_add(&ps->by_msgid, &p->by_msgid, owner, msgid);
    ps->heap[ps->used] = p;
    p->heap_pos = ps->used;
    ps->used++;
    heap_up(ps, p->heap_pos);
    return p;
}

struct permit *permits_find(const struct permits *ps, uint64_t id)
{
    uint64_t slot = id & ((1ull << ps->bits) - 1);
    struct permit *p;

    if (id == 0 || slot >= ps->nslots)
        return NULL;
    p = slot_at(ps, (uint32_t)slot);
    return p->id == id ? p : NULL;
}

struct permit *permits_find_msgid(const struct permits *ps,
                                  struct permit *const *owner, uint32_t msgid)
{
    struct msgidx_node *n = msgidx_find(&ps->by_msgid, owner, msgid);

    return n ? (struct permit *)((char *)n - offsetof(struct permit, by_msgid))
             : NULL;
}

struct permit *permits_expired(const struct permits *ps, uint64_t now_ms)
{
    if (ps->used == 0 || ps->heap[0]->expires_ms > now_ms)
        return NULL;
    return ps->heap[0];
}

void permits_release(struct permits *ps, struct permit *p)
{
    uint32_t i = p->heap_pos;

    /* Out of the heap: the last entry takes p's place, then settles down
     * or up (up is a no-op once it went down). */
    ps->used--;
    if (i != ps->used) {
        struct permit *m = ps->heap[ps->used];
        heap_set(ps, i, m);
        heap_down(ps, i);
        heap_up(ps, m->heap_pos);
    }
    msgidx_del(&ps->by_msgid, &p->by_msgid);
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
}
