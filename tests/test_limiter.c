/*
 * test_limiter.c - the token-bucket limiter under a fake clock: full start,
 * cost and burst, refill per second/minute/hour/day, exact waits (rounded
 * up), reserve, venue pause and sync, chains of limiters taken
 * all-or-nothing, and a randomized run against an independent reference
 * model (GCRA over exact rational time) that also checks the rate bound
 * over a sliding history of takes.
 */
#include "limiter.h"
#include "tap.h"

#include <string.h>

/* Exact arithmetic for the model and the bound (products reach ~1e28). */
__extension__ typedef unsigned __int128 u128;

#define SEC 1000ULL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* --- fixed cases ---------------------------------------------------------- */

static void test_full_at_start(void)
{
    const struct limiter_conf c = {10, SEC, 10, 1000};
    struct limiter l;

    limiter_init(&l, &c, 5000);
    IS(limiter_available(&l, &c, 5000), 10, "start: a full bucket");
    IS(limiter_wait(&l, &c, 5000, 10, 0, 0), 0, "start: the whole burst fits");
    IS(limiter_paused_ms(&l, 5000), 0, "start: not paused");
    limiter_init(&l, &c, 0);
    IS(limiter_available(&l, &c, 0), 10, "start at t=0: a full bucket");
}

static void test_cost_and_burst(void)
{
    const struct limiter_conf c = {1, SEC, 5, 1000};
    struct limiter l;

    limiter_init(&l, &c, 0);
    limiter_take(&l, &c, 0, 3);
    IS(limiter_available(&l, &c, 0), 2, "cost 3 takes 3 of 5");
    IS(limiter_wait(&l, &c, 0, 2, 0, 0), 0, "cost 2 still fits");
    IS(limiter_wait(&l, &c, 0, 3, 0, 0), 1000, "cost 3 waits for 1 token");
    IS(limiter_wait(&l, &c, 0, 5, 0, 0), 3000, "cost 5 waits for 3 tokens");
    IS(limiter_wait(&l, &c, 0, 6, 0, 0), LIMITER_NEVER, "cost > burst: never");
    IS(limiter_wait(&l, &c, 0, 6, 0, 1), LIMITER_NEVER,
       "cost > burst: never, critical too");
    IS(limiter_wait(&l, &c, 0, UINT64_MAX, 0, 0), LIMITER_NEVER,
       "huge cost: never, no overflow");
    IS(limiter_wait(&l, &c, 0, 2, UINT64_MAX, 0), LIMITER_NEVER,
       "huge reserve: never, no overflow");
    limiter_take(&l, &c, 0, 2);
    IS(limiter_available(&l, &c, 0), 0, "bucket empty");
    IS(limiter_available(&l, &c, 999), 0, "999 ms: still no whole token");
    IS(limiter_available(&l, &c, 1000), 1, "1000 ms: one token");
    IS(limiter_available(&l, &c, 1000000), 5, "refill stops at burst");
}

/* Empty a `rate per per_ms` bucket, then check the refill of one token and
 * of the whole burst. */
static void check_refill(const char *name, uint64_t rate, uint64_t per_ms)
{
    const struct limiter_conf c = {rate, per_ms, rate, 1000};
    uint64_t one = (per_ms + rate - 1) / rate; /* ms per token, rounded up */
    struct limiter l;
    char what[100];

    limiter_init(&l, &c, 1);
    limiter_take(&l, &c, 1, rate);
    snprintf(what, sizeof(what), "%s: one token after %llu ms", name,
             (unsigned long long)one);
    IS(limiter_wait(&l, &c, 1, 1, 0, 0), one, what);
    snprintf(what, sizeof(what), "%s: not one ms earlier", name);
    IS(limiter_available(&l, &c, 1 + one - 1), 0, what);
    snprintf(what, sizeof(what), "%s: available then", name);
    IS(limiter_available(&l, &c, 1 + one), one * rate / per_ms, what);
    snprintf(what, sizeof(what), "%s: full burst after per_ms", name);
    IS(limiter_wait(&l, &c, 1 + one, rate, 0, 0), per_ms - one, what);
    snprintf(what, sizeof(what), "%s: full at per_ms", name);
    IS(limiter_available(&l, &c, 1 + per_ms), rate, what);
    snprintf(what, sizeof(what), "%s: half a period, half the tokens", name);
    limiter_take(&l, &c, 1 + per_ms, rate);
    IS(limiter_available(&l, &c, 1 + per_ms + per_ms / 2), rate / 2, what);
}

static void test_refill_rates(void)
{
    check_refill("10/second", 10, SEC);
    check_refill("120/minute", 120, MIN);
    check_refill("3600/hour", 3600, HOUR);
    check_refill("1000/day", 1000, DAY);
    check_refill("1/day", 1, DAY);
    check_refill("1e9/day", 1000000000, DAY);
}

static void test_exact_wait(void)
{
    const struct limiter_conf c = {3, SEC, 3, 1000};
    struct limiter l;

    limiter_init(&l, &c, 0);
    limiter_take(&l, &c, 0, 3);
    IS(limiter_wait(&l, &c, 0, 1, 0, 0), 334, "3/s: 1 token in 334 ms");
    IS(limiter_wait(&l, &c, 0, 2, 0, 0), 667, "3/s: 2 tokens in 667 ms");
    IS(limiter_wait(&l, &c, 0, 3, 0, 0), 1000, "3/s: 3 tokens in 1000 ms");
    IS(limiter_wait(&l, &c, 333, 1, 0, 0), 1, "3/s: at 333 ms, 1 ms left");
    IS(limiter_wait(&l, &c, 334, 1, 0, 0), 0, "3/s: at 334 ms, it fits");
    limiter_take(&l, &c, 334, 1);
    /* 334 ms gave 1002 token-ms; 2 left over count toward the next. */
    IS(limiter_wait(&l, &c, 334, 1, 0, 0), 333, "leftover carries: 333 ms");
    IS(limiter_wait(&l, &c, 500, 1, 0, 0), 167, "waits count down exactly");

    {
        /* Costs far below a ms: 1e9 per second. */
        const struct limiter_conf f = {1000000000, SEC, 1000000000, 1000};
        limiter_init(&l, &f, 0);
        limiter_take(&l, &f, 0, 1000000000);
        IS(limiter_wait(&l, &f, 0, 1, 0, 0), 1, "1e9/s: 1 token in 1 ms");
        IS(limiter_wait(&l, &f, 0, 1000001, 0, 0), 2,
           "1e9/s: 1e6+1 tokens in 2 ms");
        IS(limiter_available(&l, &f, 7), 7000000, "1e9/s: 7 ms, 7e6 tokens");
    }
    {
        /* The largest bucket: 1e9 per day; refill after years, no overflow. */
        const struct limiter_conf b = {1000000000, DAY, 1000000000, 1000};
        limiter_init(&l, &b, 0);
        limiter_take(&l, &b, 0, 1000000000);
        IS(limiter_wait(&l, &b, 0, 1000000000, 0, 0), DAY,
           "1e9/day: the whole burst in a day");
        IS(limiter_available(&l, &b, 50 * 365 * DAY), 1000000000,
           "1e9/day: 50 years later, exactly full");
        IS(limiter_available(&l, &b, UINT64_MAX), 1000000000,
           "clock at UINT64_MAX: full, no overflow");
    }
}

static void test_clock_backwards(void)
{
    const struct limiter_conf c = {1, SEC, 2, 1000};
    struct limiter l;

    limiter_init(&l, &c, 10000);
    limiter_take(&l, &c, 10000, 2);
    IS(limiter_available(&l, &c, 5000), 0, "older now: no refill, no wrap");
    IS(limiter_wait(&l, &c, 10000, 1, 0, 0), 1000,
       "older now did not move the clock back");
}

static void test_reserve(void)
{
    const struct limiter_conf c = {1, SEC, 10, 1000};
    struct limiter l;

    limiter_init(&l, &c, 0);
    IS(limiter_wait(&l, &c, 0, 7, 3, 0), 0, "normal: 7 of 10 leaves 3");
    IS(limiter_wait(&l, &c, 0, 8, 3, 0), LIMITER_NEVER,
       "normal: cost 8 + reserve 3 > burst 10: never");
    IS(limiter_wait(&l, &c, 0, 8, 3, 1), 0, "critical: 8 fits");
    IS(limiter_wait(&l, &c, 0, 10, 3, 1), 0, "critical: the whole burst fits");
    limiter_take(&l, &c, 0, 7);
    IS(limiter_wait(&l, &c, 0, 1, 3, 0), 1000,
       "normal: the last 3 tokens are the reserve");
    IS(limiter_wait(&l, &c, 0, 1, 3, 1), 0, "critical: may take them");
    IS(limiter_wait(&l, &c, 0, 3, 3, 1), 0, "critical: all 3 of them");
    limiter_take(&l, &c, 0, 3);
    IS(limiter_available(&l, &c, 0), 0, "critical emptied the bucket");
    IS(limiter_wait(&l, &c, 0, 1, 3, 1), 1000, "critical then waits too");
    IS(limiter_wait(&l, &c, 0, 1, 3, 0), 4000,
       "normal waits for cost + reserve");
}

static void test_pause(void)
{
    const struct limiter_conf c = {10, SEC, 10, 1500};
    struct limiter l;

    limiter_init(&l, &c, 0);
    limiter_pause(&l, &c, 100, 5000);
    IS(limiter_paused_ms(&l, 100), 5000, "paused 5000 ms");
    IS(limiter_wait(&l, &c, 100, 1, 0, 0), 5000, "wait is the pause");
    IS(limiter_wait(&l, &c, 100, 1, 0, 1), 5000, "critical waits too");
    IS(limiter_wait(&l, &c, 2100, 1, 0, 0), 3000, "pause counts down");
    limiter_pause(&l, &c, 2100, 1000);
    IS(limiter_paused_ms(&l, 2100), 3000,
       "a shorter pause never shortens a longer one");
    limiter_pause(&l, &c, 2100, 4000);
    IS(limiter_paused_ms(&l, 2100), 4000, "a longer pause extends it");
    IS(limiter_wait(&l, &c, 6099, 1, 0, 0), 1, "1 ms before the end");
    IS(limiter_wait(&l, &c, 6100, 1, 0, 0), 0, "at the end: passes");
    IS(limiter_paused_ms(&l, 6100), 0, "pause over");
    IS(limiter_wait(&l, &c, 6100, 11, 0, 0), LIMITER_NEVER,
       "never stays never");

    /* Pause without retry_after: conf pause_ms. */
    limiter_pause(&l, &c, 7000, 0);
    IS(limiter_paused_ms(&l, 7000), 1500, "ms 0: the configured pause_ms");

    /* Tokens refill during the pause: the waits overlap, not add. */
    limiter_init(&l, &c, 0);
    limiter_take(&l, &c, 0, 10);
    limiter_pause(&l, &c, 0, 2000);
    IS(limiter_wait(&l, &c, 0, 10, 0, 0), 2000,
       "wait = pause when the tokens come sooner");
    IS(limiter_available(&l, &c, 2000), 10, "refilled during the pause");
    IS(limiter_wait(&l, &c, 2000, 10, 0, 0), 0, "all 10 pass at its end");
    limiter_init(&l, &c, 0);
    limiter_take(&l, &c, 0, 10);
    limiter_pause(&l, &c, 0, 300);
    IS(limiter_wait(&l, &c, 0, 10, 0, 0), 1000,
       "wait = tokens when the pause ends sooner");
    IS(limiter_wait(&l, &c, 0, 1, 0, 0), 300, "max of the two: pause");
    limiter_pause(&l, &c, UINT64_MAX - 5, 100);
    IS(limiter_paused_ms(&l, UINT64_MAX - 5), 5, "saturates, no wrap");
}

static void test_sync(void)
{
    const struct limiter_conf c = {10, SEC, 10, 1000};
    struct limiter l;

    limiter_init(&l, &c, 0);
    limiter_sync(&l, &c, 0, 4);
    IS(limiter_available(&l, &c, 0), 4, "sync lowers the level to 4");
    limiter_sync(&l, &c, 0, 8);
    IS(limiter_available(&l, &c, 0), 4, "sync to 8 does not raise it");
    limiter_sync(&l, &c, 0, UINT64_MAX);
    IS(limiter_available(&l, &c, 0), 4, "sync to a huge count: no change");
    IS(limiter_available(&l, &c, 300), 7, "refill continues from 4");
    limiter_sync(&l, &c, 300, 0);
    IS(limiter_available(&l, &c, 300), 0, "sync to 0 empties");
    IS(limiter_wait(&l, &c, 300, 1, 0, 0), 100, "then a token in 100 ms");
    /* Partial tokens are dropped too: the venue counts whole requests. */
    limiter_init(&l, &c, 0);
    limiter_take(&l, &c, 0, 10);
    limiter_sync(&l, &c, 150, 1);
    IS(limiter_wait(&l, &c, 150, 2, 0, 0), 100, "sync to 1 leaves exactly 1");
}

/* --- chains: the daemon's all-or-nothing check over several limiters ------ */

/* Worst wait over n limiters; take from all only if every wait is 0. */
static uint64_t chain_admit(struct limiter *ls, const struct limiter_conf *cs,
                            size_t n, uint64_t now, uint64_t cost,
                            uint64_t reserve, int critical)
{
    uint64_t worst = 0, w;
    size_t i;

    for (i = 0; i < n; i++) {
        w = limiter_wait(&ls[i], &cs[i], now, cost, reserve, critical);
        if (w > worst)
            worst = w;
    }
    if (worst == 0)
        for (i = 0; i < n; i++)
            limiter_take(&ls[i], &cs[i], now, cost);
    return worst;
}

/* Same state as a pristine copy brought to `now` without any take. */
static int chain_untouched(struct limiter *ls, struct limiter *before,
                           const struct limiter_conf *cs, size_t n,
                           uint64_t now)
{
    size_t i;

    for (i = 0; i < n; i++) {
        (void)limiter_available(&before[i], &cs[i], now);
        (void)limiter_available(&ls[i], &cs[i], now);
        if (memcmp(&before[i], &ls[i], sizeof(ls[i])) != 0)
            return 0;
    }
    return 1;
}

static void test_chain_all_or_nothing(void)
{
    enum { N = 6 };
    const struct limiter_conf cs[N] = {
        {100, SEC, 100, 1000}, {50, SEC, 60, 1000},    {5, SEC, 5, 1000},
        {600, MIN, 600, 1000}, {1000, HOUR, 20, 1000}, {1, DAY, 1000, 1000},
    };
    struct limiter ls[N], before[N];
    size_t i;
    uint64_t w;

    for (i = 0; i < N; i++)
        limiter_init(&ls[i], &cs[i], 0);
    IS(chain_admit(ls, cs, N, 0, 3, 0, 0), 0, "chain: 3 fits everywhere");
    IS(limiter_available(&ls[2], &cs[2], 0), 2, "chain: taken from the 5/s");
    IS(limiter_available(&ls[5], &cs[5], 0), 997, "chain: and from the 1/day");

    memcpy(before, ls, sizeof(ls));
    w = chain_admit(ls, cs, N, 0, 3, 0, 0);
    IS(w, 200, "chain: denied, the 5/s limiter sets the wait");
    OK(chain_untouched(ls, before, cs, N, 0),
       "chain: a denial takes nothing from any limiter");

    memcpy(before, ls, sizeof(ls));
    IS(chain_admit(ls, cs, N, 100, 3, 1, 0), 300,
       "chain: with a reserve of 1 the wait grows");
    OK(chain_untouched(ls, before, cs, N, 100), "chain: still nothing taken");

    IS(chain_admit(ls, cs, N, 200, 3, 0, 0), 0, "chain: passes after 200 ms");
    IS(limiter_available(&ls[0], &cs[0], 200), 97,
       "chain: 100/s refilled to 100, then gave 3");
    IS(limiter_available(&ls[2], &cs[2], 200), 0, "chain: 5/s gave its 3");

    limiter_pause(&ls[3], &cs[3], 200, 700);
    memcpy(before, ls, sizeof(ls));
    IS(chain_admit(ls, cs, N, 200, 1, 0, 1), 700,
       "chain: a paused ancestor holds even a critical request");
    OK(chain_untouched(ls, before, cs, N, 200),
       "chain: the pause denial takes nothing");

    memcpy(before, ls, sizeof(ls));
    IS(chain_admit(ls, cs, N, 900, 21, 0, 0), LIMITER_NEVER,
       "chain: cost above one burst: never");
    OK(chain_untouched(ls, before, cs, N, 900), "chain: never takes nothing");
}

/* --- randomized comparison with a reference model ------------------------- */

/*
 * The model is GCRA in exact scaled time: one unit = 1/rate ms, so a token
 * is per_ms units and the bucket burst * per_ms units.  It keeps the
 * theoretical arrival time `tat`; the level at t ms is cap - (tat - t*rate)
 * when tat is ahead of t, else full.  A request of k tokens fits at t' iff
 * tat - t'*rate <= cap - k*per_ms, so the first whole ms is a ceiling.  It
 * shares no code or arithmetic with limiter.c.
 */
struct model {
    u128 tat;
    uint64_t paused_until;
};

static uint64_t model_wait(const struct model *m, const struct limiter_conf *c,
                           uint64_t t, uint64_t cost, uint64_t reserve,
                           int critical)
{
    u128 k = (u128)cost + (critical ? 0 : reserve);
    u128 cap = (u128)c->burst * c->per_ms, x;
    uint64_t w = 0, first, p;

    if (k > c->burst)
        return LIMITER_NEVER;
    /* Earliest t' (scaled): t' * rate >= tat - (cap - k * per_ms). */
    if (m->tat > cap - k * c->per_ms) {
        x = m->tat - (cap - k * c->per_ms);
        first = (uint64_t)((x + c->rate - 1) / c->rate);
        w = first > t ? first - t : 0;
    }
    p = m->paused_until > t ? m->paused_until - t : 0;
    return p > w ? p : w;
}

static void model_take(struct model *m, const struct limiter_conf *c,
                       uint64_t t, uint64_t cost)
{
    u128 now = (u128)t * c->rate;

    if (m->tat < now)
        m->tat = now;
    m->tat += (u128)cost * c->per_ms;
}

static uint64_t model_available(const struct model *m,
                                const struct limiter_conf *c, uint64_t t)
{
    u128 now = (u128)t * c->rate, cap = (u128)c->burst * c->per_ms;
    u128 owed = m->tat > now ? m->tat - now : 0;

    return (uint64_t)((cap - owed) / c->per_ms);
}

static void model_sync(struct model *m, const struct limiter_conf *c,
                       uint64_t t, uint64_t remaining)
{
    u128 cap = (u128)c->burst * c->per_ms, floor_tat;

    if (remaining >= c->burst)
        return;
    floor_tat = (u128)t * c->rate + cap - (u128)remaining * c->per_ms;
    if (m->tat < floor_tat)
        m->tat = floor_tat;
}

static uint64_t rnd_state = 0x2545f4914f6cdd1dULL;

static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* Uniform in [0, n). */
static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

#define HISTORY 200 /* takes kept for the bound check */

struct take {
    uint64_t t_ms, cost;
};

struct run_stats {
    long ops, takes, denials, nevers, waits_checked;
    long model_bad, exact_bad, bound_bad, avail_bad;
};

/*
 * The bound over every window that starts at one of the last HISTORY takes
 * and ends at the newest: cost * per_ms <= burst * per_ms + rate * T.
 */
static int bound_holds(const struct take *h, size_t n, size_t newest,
                       const struct limiter_conf *c)
{
    u128 sum = 0, cap = (u128)c->burst * c->per_ms;
    const struct take *j = &h[newest % HISTORY];
    size_t back;

    for (back = 0; back < n; back++) {
        const struct take *i = &h[(newest + HISTORY - back) % HISTORY];
        sum += i->cost;
        if (sum * c->per_ms > cap + (u128)c->rate * (j->t_ms - i->t_ms))
            return 0;
    }
    return 1;
}

static void random_run(const struct limiter_conf *c, uint64_t reserve,
                       long n_ops, struct run_stats *st)
{
    struct limiter l, probe;
    struct model m;
    struct take hist[HISTORY];
    size_t nhist = 0, newest = 0;
    uint64_t now = rnd_below(1000000), token_ms, fill_ms;
    long op;

    token_ms = c->per_ms / c->rate + 1; /* >= ms per token */
    /* ms to fill an empty bucket, rounded up */
    fill_ms = (uint64_t)(((u128)c->burst * c->per_ms + c->rate - 1) / c->rate);
    limiter_init(&l, c, now);
    m.tat = (u128)now * c->rate;
    m.paused_until = 0;

    for (op = 0; op < n_ops; op++) {
        uint64_t r = rnd_below(100), dt;

        /* Time: often still, mostly token-sized steps, sometimes long. */
        dt = rnd_below(10);
        if (dt < 3)
            dt = 0;
        else if (dt < 9)
            dt = rnd_below(2 * token_ms + 1);
        else
            dt = rnd_below(fill_ms + 2);
        now += dt;
        st->ops++;

        if (r < 72) {
            uint64_t cost, w, mw, k = rnd_below(10);
            int critical = rnd_below(5) == 0;
            if (k < 5)
                cost = 1 + rnd_below(3);
            else if (k < 9)
                cost = 1 + rnd_below(c->burst / 3 + 1);
            else
                cost = 1 + rnd_below(c->burst + 2);
            if (cost > c->burst + 1)
                cost = c->burst + 1;
            w = limiter_wait(&l, c, now, cost, reserve, critical);
            mw = model_wait(&m, c, now, cost, reserve, critical);
            if (w != mw) {
                if (st->model_bad++ == 0)
                    DIAG("op %ld t=%llu cost %llu crit %d: wait %llu, model "
                         "%llu",
                         op, (unsigned long long)now, (unsigned long long)cost,
                         critical, (unsigned long long)w,
                         (unsigned long long)mw);
                continue;
            }
            if (w == LIMITER_NEVER) {
                st->nevers++;
            } else if (w > 0) {
                /* Exact: fits at now + w, not at now + w - 1. */
                st->denials++;
                st->waits_checked++;
                probe = l;
                if (limiter_wait(&probe, c, now + w - 1, cost, reserve,
                                 critical) == 0 ||
                    limiter_wait(&probe, c, now + w, cost, reserve, critical) !=
                        0) {
                    if (st->exact_bad++ == 0)
                        DIAG("op %ld: wait %llu is not exact", op,
                             (unsigned long long)w);
                }
            } else {
                limiter_take(&l, c, now, cost);
                model_take(&m, c, now, cost);
                st->takes++;
                newest = (newest + 1) % HISTORY;
                hist[newest].t_ms = now;
                hist[newest].cost = cost;
                if (nhist < HISTORY)
                    nhist++;
                if (!bound_holds(hist, nhist, newest, c) &&
                    st->bound_bad++ == 0)
                    DIAG("op %ld: rate bound broken at t=%llu", op,
                         (unsigned long long)now);
            }
        } else if (r < 80) {
            uint64_t ms = rnd_below(4) == 0 ? 0 : rnd_below(3 * token_ms + 1);
            uint64_t until = now + (ms ? ms : c->pause_ms);
            limiter_pause(&l, c, now, ms);
            if (until > m.paused_until)
                m.paused_until = until;
        } else if (r < 88) {
            uint64_t rem = rnd_below(c->burst + 3);
            limiter_sync(&l, c, now, rem);
            model_sync(&m, c, now, rem);
        } else {
            uint64_t a = limiter_available(&l, c, now);
            if ((a != model_available(&m, c, now) ||
                 limiter_paused_ms(&l, now) !=
                     (m.paused_until > now ? m.paused_until - now : 0)) &&
                st->avail_bad++ == 0)
                DIAG("op %ld: available %llu, model %llu", op,
                     (unsigned long long)a,
                     (unsigned long long)model_available(&m, c, now));
        }
    }
}

static void test_random_against_model(void)
{
    static const struct {
        struct limiter_conf c;
        uint64_t reserve;
    } cases[] = {
        {{3, SEC, 3, 1000}, 0},
        {{3, SEC, 3, 1000}, 1},
        {{10, SEC, 25, 500}, 5},
        {{7, MIN, 20, 1000}, 2},
        {{1000, SEC, 1, 1000}, 0},
        {{1, 1, 1, 1}, 0},
        {{13, 17, 40, 50}, 7},
        {{5, HOUR, 5, 2000}, 0},
        {{86400, DAY, 100, 1000}, 10},
        {{1000000000, DAY, 1000000000, 1000}, 100000000},
        {{999999937, 86399999, 1000000000, 1000}, 3},
        {{1000000000, SEC, 7, 1000}, 0},
    };
    const long per_case = 12000;
    struct run_stats st;
    size_t i;

    memset(&st, 0, sizeof(st));
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        random_run(&cases[i].c, cases[i].reserve, per_case, &st);
    DIAG("random: %ld ops, %ld takes, %ld waits, %ld never", st.ops, st.takes,
         st.denials, st.nevers);
    OK(st.ops >= 100000, "random: at least 100,000 operations (%ld)", st.ops);
    OK(st.takes > st.ops / 10 && st.denials > st.ops / 20 && st.nevers > 0,
       "random: the mix exercises takes, waits and nevers");
    IS(st.model_bad, 0, "random: allow/deny and wait equal the model's");
    IS(st.exact_bad, 0, "random: every wait is exact to the ms");
    IS(st.avail_bad, 0, "random: available and pause equal the model's");
    IS(st.bound_bad, 0,
       "random: cost over any window <= burst + rate*T/per (last 200 takes)");
}

int main(void)
{
    test_full_at_start();
    test_cost_and_burst();
    test_refill_rates();
    test_exact_wait();
    test_clock_backwards();
    test_reserve();
    test_pause();
    test_sync();
    test_chain_all_or_nothing();
    test_random_against_model();
    return tap_done();
}
