/*
 * bulkhead.c - per-key concurrency limit (see bulkhead.h).
 */
#include "bulkhead.h"

int bulkhead_fits(const struct bulkhead *b, const struct bulkhead_conf *c,
                  uint32_t reserve, int critical)
{
    uint64_t limit = c->max_concurrent;

    if (!critical)
        limit = limit > reserve ? limit - reserve : 0;
    return (uint64_t)b->in_use + 1 <= limit;
}

void bulkhead_take(struct bulkhead *b)
{
    b->in_use++;
}

void bulkhead_give(struct bulkhead *b)
{
    if (b->in_use > 0)
        b->in_use--;
}
