/*
 * heartbeat.c - one key's heartbeat: silence, the lost edge and the
 * restored edge (see heartbeat.h).
 *
 * Pure: no I/O, no clock reads, no allocation.  Every comparison is on
 * the silence (now - last, never below 0) against timeout_ms, so no sum
 * of a time and a timeout can overflow, whatever timeout_ms is.
 */
#include "heartbeat.h"

#include <string.h>

void heartbeat_init(struct heartbeat *h, uint64_t now_ms)
{
    memset(h, 0, sizeof(*h));
    h->last_ms = now_ms;
}

uint64_t heartbeat_silent_ms(const struct heartbeat *h, uint64_t now_ms)
{
    return now_ms > h->last_ms ? now_ms - h->last_ms : 0;
}

/* Longer than timeout_ms: strictly greater (see heartbeat.h). */
static int overdue(const struct heartbeat *h, uint64_t now_ms,
                   uint64_t timeout_ms)
{
    return heartbeat_silent_ms(h, now_ms) > timeout_ms;
}

int heartbeat_is_lost(const struct heartbeat *h, uint64_t now_ms,
                      uint64_t timeout_ms)
{
    return h->lost || overdue(h, now_ms, timeout_ms);
}

unsigned heartbeat_check(struct heartbeat *h, uint64_t now_ms,
                         uint64_t timeout_ms, int *lost_now,
                         uint64_t *silent_ms)
{
    unsigned edges = 0;

    if (!h->lost && overdue(h, now_ms, timeout_ms)) {
        h->lost = 1;
        h->losses++;
        edges = HEARTBEAT_LOST;
    }
    if (lost_now)
        *lost_now = h->lost;
    if (silent_ms)
        *silent_ms = heartbeat_silent_ms(h, now_ms);
    return edges;
}

unsigned heartbeat_beat(struct heartbeat *h, uint64_t now_ms,
                        uint64_t timeout_ms, uint64_t *silent_ms)
{
    /* A loss no check saw is reported before its end, so edges pair. */
    unsigned edges = heartbeat_check(h, now_ms, timeout_ms, NULL, silent_ms);

    if (h->lost)
        edges |= HEARTBEAT_RESTORED;
    h->lost = 0;
    h->beats++;
    if (now_ms > h->last_ms)
        h->last_ms = now_ms;
    return edges;
}

uint64_t heartbeat_due_ms(const struct heartbeat *h, uint64_t timeout_ms)
{
    if (h->lost)
        return 0;
    if (timeout_ms >= UINT64_MAX - 1 - h->last_ms)
        return UINT64_MAX;
    return h->last_ms + timeout_ms + 1;
}

void heartbeat_export(const struct heartbeat *h, uint64_t now_ms,
                      struct heartbeat_export *ex)
{
    ex->silent_ms = heartbeat_silent_ms(h, now_ms);
    ex->beats = h->beats;
    ex->losses = h->losses;
    ex->lost = h->lost ? 1 : 0;
}

void heartbeat_import(struct heartbeat *h, uint64_t now_ms,
                      const struct heartbeat_export *ex)
{
    h->last_ms = now_ms > ex->silent_ms ? now_ms - ex->silent_ms : 0;
    h->beats = ex->beats;
    h->losses = ex->losses;
    h->lost = ex->lost ? 1 : 0;
}
