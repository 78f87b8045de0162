/*
 * limiter.c - one token-bucket rate limiter (see limiter.h).
 *
 * Pure: no I/O, no clock reads, no allocation, no globals, no floating
 * point.  Time only moves forward through the now_ms arguments; a now_ms
 * older than updated_ms (callers mixing clocks) counts as "no time passed",
 * never as a wrap, so the bound below still holds.
 *
 * Units: the level is in token-ms (tokens * per_ms); every elapsed ms adds
 * `rate` token-ms, capped at burst * per_ms.  Because refill happens in
 * whole-ms steps and a cost of c needs exactly c * per_ms, admission over any
 * [t0, t1] is at most burst * per_ms + rate * (t1 - t0) token-ms, i.e. the
 * cost never exceeds burst + rate * T / per_ms.  This is GCRA with the
 * theoretical arrival time written as (cap - level).
 *
 * Overflow: with the configured limits (rate, burst <= 1e9, per_ms <=
 * 86,400,000) the cap is <= 8.64e16 token-ms.  elapsed * rate is only
 * formed once elapsed is below the time needed to fill the bucket, so it
 * stays below the gap to the cap.  Products outside those limits saturate
 * instead of wrapping (the limiter is then merely conservative).
 */
#include "limiter.h"

/* a * b, or UINT64_MAX when it would not fit. */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    if (a && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

/* Bucket size in token-ms. */
static uint64_t cap_of(const struct limiter_conf *c)
{
    return mul_sat(c->burst, c->per_ms);
}

/* Bring the level up to date at now_ms (refill, clamp to the cap). */
static void refill(struct limiter *l, const struct limiter_conf *c,
                   uint64_t now_ms)
{
    uint64_t cap = cap_of(c), rate = c->rate ? c->rate : 1;
    uint64_t elapsed, gap, fill_ms;

    if (l->level > cap) /* burst lowered by a reload */
        l->level = cap;
    if (now_ms <= l->updated_ms)
        return; /* no time passed (or a clock from the past) */
    elapsed = now_ms - l->updated_ms;
    l->updated_ms = now_ms;
    gap = cap - l->level;
    /* ms until full, rounded up; at or beyond it the bucket is full. */
    fill_ms = gap / rate + (gap % rate != 0);
    if (elapsed >= fill_ms)
        l->level = cap;
    else
        l->level += elapsed * rate; /* elapsed < gap / rate: stays < cap */
}

void limiter_init(struct limiter *l, const struct limiter_conf *c,
                  uint64_t now_ms)
{
    l->level = cap_of(c);
    l->updated_ms = now_ms;
    l->paused_until_ms = 0;
}

uint64_t limiter_paused_ms(const struct limiter *l, uint64_t now_ms)
{
    return l->paused_until_ms > now_ms ? l->paused_until_ms - now_ms : 0;
}

uint64_t limiter_wait(struct limiter *l, const struct limiter_conf *c,
                      uint64_t now_ms, uint64_t cost, uint64_t reserve,
                      int critical)
{
    uint64_t rate = c->rate ? c->rate : 1;
    uint64_t tokens, need, short_by, w, paused;

    /* Tokens that must be present: the cost, plus the reserve for a normal
     * request (critical requests may dig into it).  Checked for overflow
     * before adding: a peer supplies cost. */
    if (!critical && reserve > 0) {
        if (reserve > c->burst || cost > c->burst - reserve)
            return LIMITER_NEVER;
        tokens = cost + reserve;
    } else {
        if (cost > c->burst)
            return LIMITER_NEVER;
        tokens = cost;
    }
    refill(l, c, now_ms);
    need = mul_sat(tokens, c->per_ms); /* <= cap, as tokens <= burst */
    if (l->level >= need) {
        w = 0;
    } else {
        /* Smallest w with level + w * rate >= need: ceil division. */
        short_by = need - l->level;
        w = short_by / rate + (short_by % rate != 0);
    }
    /* Tokens keep refilling during a pause, so the two waits overlap. */
    paused = limiter_paused_ms(l, now_ms);
    return paused > w ? paused : w;
}

void limiter_take(struct limiter *l, const struct limiter_conf *c,
                  uint64_t now_ms, uint64_t cost)
{
    uint64_t amount;

    refill(l, c, now_ms);
    amount = mul_sat(cost, c->per_ms);
    /* limiter_wait() said 0, so the level covers it; saturate regardless
     * rather than wrap to a full bucket. */
    l->level = l->level > amount ? l->level - amount : 0;
}

uint64_t limiter_available(struct limiter *l, const struct limiter_conf *c,
                           uint64_t now_ms)
{
    refill(l, c, now_ms);
    return l->level / (c->per_ms ? c->per_ms : 1);
}

void limiter_pause(struct limiter *l, const struct limiter_conf *c,
                   uint64_t now_ms, uint64_t ms)
{
    uint64_t until;

    if (ms == 0)
        ms = c->pause_ms;
    until = ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + ms;
    /* Extend only: a shorter pause never cuts a longer one short. */
    if (until > l->paused_until_ms)
        l->paused_until_ms = until;
}

void limiter_unpause(struct limiter *l)
{
    l->paused_until_ms = 0;
}

void limiter_sync(struct limiter *l, const struct limiter_conf *c,
                  uint64_t now_ms, uint64_t remaining)
{
    uint64_t ceiling;

    refill(l, c, now_ms);
    if (remaining >= c->burst)
        return; /* the venue allows at least a full bucket: no news */
    ceiling = remaining * c->per_ms; /* < cap: no overflow */
    /* Lower only: the venue's count never hands out extra tokens. */
    if (l->level > ceiling)
        l->level = ceiling;
}

void limiter_export(const struct limiter *l, const struct limiter_conf *c,
                    uint64_t now_ms, struct limiter_export *ex)
{
    struct limiter t = *l; /* brought up to date without changing l */

    refill(&t, c, now_ms);
    ex->level = t.level;
    ex->per_ms = c->per_ms ? c->per_ms : 1;
    ex->paused_left_ms = limiter_paused_ms(l, now_ms);
}

void limiter_import(struct limiter *l, const struct limiter_conf *c,
                    uint64_t now_ms, const struct limiter_export *ex)
{
    uint64_t per = c->per_ms ? c->per_ms : 1;
    uint64_t from = ex->per_ms ? ex->per_ms : 1, cap = cap_of(c);
    uint64_t level = ex->level;

    if (from != per) /* whole tokens in the new unit, rounded down */
        level = mul_sat(level / from, per);
    l->level = level < cap ? level : cap;
    l->updated_ms = now_ms;
    l->paused_until_ms = 0;
    if (ex->paused_left_ms) {
        l->paused_until_ms = ex->paused_left_ms > UINT64_MAX - now_ms
                                 ? UINT64_MAX
                                 : now_ms + ex->paused_left_ms;
    }
}
