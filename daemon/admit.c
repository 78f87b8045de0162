/*
 * admit.c - the admission pipeline (see admit.h).
 *
 * Order (SPEC §4): forced state and breaker, bulkhead, limiters (the key's
 * own and every ancestor's, all or nothing).  Nothing is taken until every
 * check has passed, so a denial takes nothing; the one thing the breaker
 * hands out while checking, a half-open probe slot, is given back when a
 * later check denies.
 *
 * Parked requests wait in a FIFO per key.  While a key has parked requests,
 * a new normal request for it does not overtake them: it waits behind them
 * or is denied with the reason they wait for.  Critical requests are not
 * queued behind normal ones.
 *
 * Global limiters (scope "global" with a limiter, shared mode) take their
 * tokens from a lease: a small record per such key (struct lease below,
 * allocated once when the key is prepared or rebound, freed with it) holds
 * the tokens Redis granted and until when, and links the key into two
 * FIFOs of the core: keys that want tokens, and keys that hold some, by
 * the end of their hold.  Every hold is now + CORE_LEASE_HOLD_MS when
 * granted, so appending keeps the held FIFO sorted.  Per request the lease
 * costs O(1) and allocates nothing.  While leasing is on, a leased limiter
 * decides from its tokens only (so nothing is admitted beyond what was
 * granted); while it is off, from its tokens still held, then from its
 * local share (k->lim under policy.limiter_share).
 */
#include "admit.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "error.h"

/* A global limiter's lease (see the top).  tokens are whole tokens of the
 * global limit; they serve requests only before hold_until_ms. */
struct lease {
    struct key *key;        /* its key (the FIFOs link leases) */
    uint64_t tokens;        /* held: granted, not yet taken or handed back */
    uint64_t hold_until_ms; /* usable before this; 0: nothing held */
    uint64_t not_before_ms; /* core_lease_wanted skips it before this */
    uint64_t need;          /* the most a short request needed (cost plus
                             * reserve) since the last grant */
    struct lease_link link[LEASE_QUEUES]; /* on the wanted / held FIFO */
    struct lease *all_next;               /* resild.lease.all */
    uint8_t flags;                        /* LEASE_* below */
    uint8_t on;                           /* leasing on (status reads it) */
};

#define LEASE_WANTED 1   /* on the wanted FIFO */
#define LEASE_INFLIGHT 2 /* handed out by core_lease_wanted, unanswered */
#define LEASE_HELD 4     /* on the held FIFO */
#define LEASE_USED 8     /* took tokens since it last asked for some */
#define LEASE_COLD 16    /* no answer from Redis since the key was made or
                          * leasing came on: it decides from its share */
#define LEASE_ON_SHARE 32 /* its last take was from its share */

/* Too-early keys core_lease_wanted moves to the tail in one call before
 * it answers NULL: bounded work per call, never a walk of the FIFO. */
#define LEASE_SKIP_MAX 8

struct parked {
    struct parked *qprev, *qnext; /* key FIFO; qnext is the free list */
    struct parked *cprev, *cnext; /* caller's list */
    struct msgidx_node by_msgid;  /* (caller, msgid): for cancel */
    struct key *key;
    struct caller *caller;
    uint64_t cost;
    uint64_t deadline_ms;
    uint32_t msgid;
    uint8_t critical;
};

/* Limiter conf for a key whose policy has none: only its pause is used. */
static const struct limiter_conf no_limiter = {1, 1000, 1, 1000};

enum verdict { V_NOPERMIT = -1, V_ALLOW, V_DENY, V_WAITABLE };

int admit_init(struct resild *d, uint64_t seed)
{
    uint32_t i, n = d->cfg.max_parked;
    int rc;

    d->parked_pool = calloc(n, sizeof(*d->parked_pool));
    if (!d->parked_pool)
        return RD_ENOMEM;
    if ((rc = msgidx_init(&d->parked_ix, n, seed)) < 0) {
        free(d->parked_pool);
        d->parked_pool = NULL;
        return rc;
    }
    for (i = n; i-- > 0;) {
        d->parked_pool[i].qnext = d->parked_free;
        d->parked_free = &d->parked_pool[i];
    }
    return 0;
}

void admit_free(struct resild *d)
{
    free(d->parked_pool);
    d->parked_pool = NULL;
    msgidx_free(&d->parked_ix);
}

const char *admit_reason_name(enum admit_reason r)
{
    switch (r) {
    case ADMIT_OK:
        return "ok";
    case ADMIT_CIRCUIT_OPEN:
        return "circuit_open";
    case ADMIT_HALF_OPEN_BUSY:
        return "half_open_busy";
    case ADMIT_FORCED_OPEN:
        return "forced_open";
    case ADMIT_RATE_LIMITED:
        return "rate_limited";
    case ADMIT_BULKHEAD_FULL:
        return "bulkhead_full";
    case ADMIT_CANCELLED:
        return "cancelled";
    case ADMIT_HEARTBEAT_LOST:
        return "heartbeat_lost";
    }
    return "ok";
}

const struct limiter_conf *admit_policy_lim_conf(const struct policy *p)
{
    if (!p->has_limiter)
        return &no_limiter;
    return p->global ? &p->limiter_share : &p->limiter;
}

const struct limiter_conf *admit_lim_conf(const struct key *k)
{
    return admit_policy_lim_conf(k->policy);
}

static const struct limiter_conf *lim_conf(const struct key *k)
{
    return admit_policy_lim_conf(k->policy);
}

/* --- leases (global limiters) ------------------------------------------- */

int admit_policy_leased(const struct policy *p)
{
    return p->global && p->has_limiter;
}

/* k's lease when its own limiter is a global one now, else NULL. */
static struct lease *leased(const struct key *k)
{
    return k->lease && admit_policy_leased(k->policy) ? k->lease : NULL;
}

static uint64_t lease_usable(const struct lease *l, uint64_t now_ms)
{
    return l->hold_until_ms > now_ms ? l->tokens : 0;
}

/* Tokens a request must find: its cost, and the reserve unless critical
 * (saturating: a peer gives cost). */
static uint64_t lease_need(const struct key *k, uint64_t cost, int critical)
{
    uint64_t r = critical ? 0 : k->policy->reserve;

    return cost > UINT64_MAX - r ? UINT64_MAX : cost + r;
}

/* When a short request could pass, as far as the daemon can tell without
 * Redis: the time the global limit takes to make cost, at least 1 ms. */
static uint64_t lease_estimate(const struct policy *p, uint64_t cost)
{
    uint64_t rate = p->limiter.rate ? p->limiter.rate : 1, w;

    if (cost > UINT64_MAX / p->limiter.per_ms)
        return UINT64_MAX - 1; /* long, but not LIMITER_NEVER */
    w = cost * p->limiter.per_ms;
    w = w / rate + (w % rate != 0);
    return w ? w : 1;
}

uint64_t admit_lease_size(const struct resild *d, const struct key *k)
{
    const struct policy *p = k->policy;
    uint64_t hosts =
        d->cfg.redis_expected_hosts ? d->cfg.redis_expected_hosts : 1;
    uint64_t div, n;

    if (!leased(k))
        return 0;
    /* rate <= 1e9 and lease_ms <= 1e4: the product fits; per_ms <= 8.64e7
     * and hosts <= 1000 likewise. */
    n = p->limiter.rate * d->cfg.redis_lease_ms;
    div = p->limiter.per_ms * hosts;
    n = n / div + (n % div != 0);
    if (n > p->limiter.burst)
        n = p->limiter.burst;
    return n ? n : 1;
}

static void lq_push(struct resild *d, int q, struct lease *l)
{
    struct lease_link *n = &l->link[q];

    n->prev = d->lease.q[q].tail;
    n->next = NULL;
    if (n->prev)
        n->prev->link[q].next = l;
    else
        d->lease.q[q].head = l;
    d->lease.q[q].tail = l;
    d->lease.q[q].n++;
}

static void lq_unlink(struct resild *d, int q, struct lease *l)
{
    struct lease_link *n = &l->link[q];

    if (n->prev)
        n->prev->link[q].next = n->next;
    else
        d->lease.q[q].head = n->next;
    if (n->next)
        n->next->link[q].prev = n->prev;
    else
        d->lease.q[q].tail = n->prev;
    n->prev = n->next = NULL;
    d->lease.q[q].n--;
}

/* k wants tokens (need: what a short request needed, 0 for "below half").
 * Once per need: a key already wanted or asked for is not queued again. */
static void lease_want(struct resild *d, struct lease *l, uint64_t need)
{
    if (need > l->need)
        l->need = need;
    if (l->flags & (LEASE_WANTED | LEASE_INFLIGHT))
        return;
    l->flags = (uint8_t)((l->flags | LEASE_WANTED) & ~LEASE_USED);
    lq_push(d, LEASE_Q_WANT, l);
}

/* Still short after an answer: wanted again (not before not_before_ms). */
static void lease_rewant(struct resild *d, struct key *k, struct lease *l,
                         uint64_t now_ms)
{
    uint64_t size = admit_lease_size(d, k);

    if (d->lease.on && leased(k) &&
        (lease_usable(l, now_ms) * 2 < size || l->need > 0))
        lease_want(d, l, 0);
}

struct lease *admit_lease_new(void)
{
    return calloc(1, sizeof(struct lease));
}

void admit_lease_attach(struct resild *d, struct key *k, struct lease *l)
{
    l->key = k;
    l->flags |= LEASE_COLD;
    l->on = (uint8_t)d->lease.on;
    l->all_next = d->lease.all;
    d->lease.all = l;
    k->lease = l;
}

void admit_lease_rebound(struct resild *d, struct key *k)
{
    struct lease *l = k->lease;

    if (!l || leased(k))
        return;
    /* No longer global: asked for nothing more.  Tokens held and a request
     * in flight stay until the hold ends and are handed back then. */
    if (l->flags & LEASE_WANTED)
        lq_unlink(d, LEASE_Q_WANT, l);
    l->flags &= (uint8_t) ~(LEASE_WANTED | LEASE_USED);
    l->need = 0;
}

void admit_lease_mode(struct resild *d, int on)
{
    struct lease *l;

    on = !!on;
    if (on == d->lease.on)
        return;
    d->lease.on = on;
    /* O(global keys), once per change of Redis's state, never per
     * request: each lease learns the mode (status reads it), and a key
     * used while leasing was off asks for a lease at once, ahead of need. */
    for (l = d->lease.all; l; l = l->all_next) {
        l->on = (uint8_t)on;
        if (on)
            l->flags |= LEASE_COLD;
        if (on && (l->flags & LEASE_USED) && leased(l->key))
            lease_want(d, l, 0);
    }
    d->wake_dirty = 1; /* parked requests decide under the other source */
}

struct key *admit_lease_wanted(struct resild *d, uint64_t *want)
{
    struct lease *l;
    unsigned skipped = 0;

    if (!d->lease.on)
        return NULL;
    while ((l = d->lease.q[LEASE_Q_WANT].head)) {
        uint64_t size, target, held;
        if (l->not_before_ms > d->lease.clock_ms) {
            /* Too early: to the tail, a bounded number of times. */
            if (++skipped > LEASE_SKIP_MAX || d->lease.q[LEASE_Q_WANT].n == 1)
                return NULL;
            lq_unlink(d, LEASE_Q_WANT, l);
            lq_push(d, LEASE_Q_WANT, l);
            continue;
        }
        lq_unlink(d, LEASE_Q_WANT, l);
        l->flags &= (uint8_t)~LEASE_WANTED;
        if (!leased(l->key))
            continue;
        /* Tokens whose hold ended (not yet handed back) serve nothing:
         * ask as if they were gone; the grant renews their hold. */
        size = admit_lease_size(d, l->key);
        target = l->need > size ? l->need : size;
        held = lease_usable(l, d->lease.clock_ms);
        if (target <= held)
            continue; /* a grant came meanwhile: nothing to ask */
        *want = target - held;
        l->flags |= LEASE_INFLIGHT;
        return l->key;
    }
    return NULL;
}

void admit_lease_grant(struct resild *d, struct key *k, uint64_t n,
                       uint64_t retry_ms, uint64_t now_ms)
{
    struct lease *l = k->lease;
    uint64_t cap, size;

    if (!l)
        return;
    l->flags &= (uint8_t) ~(LEASE_INFLIGHT | LEASE_COLD);
    d->wake_dirty = 1; /* parked requests look at the tokens */
    if (!n) {
        /* Redis had none: ask again after its wait, not before. */
        l->not_before_ms = now_ms + (retry_ms ? retry_ms : 1);
        lease_rewant(d, k, l, now_ms);
        return;
    }
    /* Held at most max(lease size, burst): what a request may need, plus
     * tokens whose hold had ended (asked for as if gone; their hold is
     * renewed).  A key no longer global keeps all of it, to hand it back.
     * So nothing Redis counts as leased is dropped unless it gave more
     * than was asked. */
    size = admit_lease_size(d, k);
    cap = !leased(k)                        ? UINT64_MAX
          : k->policy->limiter.burst > size ? k->policy->limiter.burst
                                            : size;
    if (l->hold_until_ms <= now_ms)
        cap = cap > UINT64_MAX - l->tokens ? UINT64_MAX : cap + l->tokens;
    if (cap < l->tokens) /* the policy shrank under it */
        cap = l->tokens;
    l->tokens = n > cap - l->tokens ? cap : l->tokens + n;
    l->hold_until_ms = now_ms + CORE_LEASE_HOLD_MS;
    l->not_before_ms = 0;
    l->need = 0;
    if (l->flags & LEASE_HELD)
        lq_unlink(d, LEASE_Q_HELD, l);
    l->flags |= LEASE_HELD;
    lq_push(d, LEASE_Q_HELD, l); /* the latest hold: the tail */
}

void admit_lease_failed(struct resild *d, struct key *k, uint64_t retry_ms,
                        uint64_t now_ms)
{
    struct lease *l = k->lease;

    if (!l)
        return;
    l->flags &= (uint8_t)~LEASE_INFLIGHT;
    l->not_before_ms = now_ms + (retry_ms ? retry_ms : 1);
    lease_rewant(d, k, l, now_ms);
}

struct key *admit_lease_expired(struct resild *d, uint64_t now_ms,
                                uint64_t *unused)
{
    struct lease *l = d->lease.q[LEASE_Q_HELD].head;

    if (!l || l->hold_until_ms > now_ms)
        return NULL;
    lq_unlink(d, LEASE_Q_HELD, l);
    l->flags &= (uint8_t)~LEASE_HELD;
    *unused = l->tokens;
    l->tokens = 0;
    l->hold_until_ms = 0;
    /* In use during the hold: a fresh lease at once, so a steady user is
     * not left short after each hold.  Idle through it: cold again, so the
     * key's next request decides on its share (and asks for a lease)
     * instead of being denied for a lease a round trip away -- a key used
     * every few seconds would otherwise be denied every time. */
    if (d->lease.on && (l->flags & LEASE_USED) && leased(l->key))
        lease_want(d, l, 0);
    else
        l->flags |= LEASE_COLD;
    return l->key;
}

uint64_t admit_lease_tokens(const struct key *k)
{
    return k->lease ? k->lease->tokens : 0;
}

size_t admit_lease_bytes(void)
{
    return sizeof(struct lease);
}

uint64_t admit_available(struct key *k, uint64_t now_ms)
{
    struct lease *l = leased(k);
    uint64_t n = l ? lease_usable(l, now_ms) : 0;

    if (!l || !l->on)
        n += limiter_available(&k->lim, lim_conf(k), now_ms);
    return n;
}

static struct limiter_conf crit_conf(const struct key *k)
{
    uint64_t rate = k->policy->critical_probe_per_s;
    struct limiter_conf c = {rate ? rate : 1, 1000, rate ? rate : 1, 1000};

    return c;
}

int admit_prepare(struct resild *d, struct key *k, uint64_t now_ms)
{
    char prefix[KEY_MAX + 1];
    size_t i;
    int rc;

    if (k->admit_ready == ADMIT_READY)
        return 0;
    if (k->admit_ready == 0) {
        /* First use; after a rebind (ADMIT_REBOUND) the limiters keep
         * their state and only the ancestors are found again (core_rebind
         * gave a key that became global its lease). */
        if (admit_policy_leased(k->policy) && !k->lease) {
            struct lease *l = admit_lease_new();
            if (!l)
                return RD_ENOMEM;
            admit_lease_attach(d, k, l);
        }
        limiter_init(&k->lim, lim_conf(k), now_ms);
        k->rng = ((uint64_t)(uintptr_t)k * 0x9e3779b97f4a7c15ULL) ^ now_ms;
        if (!k->rng)
            k->rng = 1;
    }
    k->nanc = 0;
    k->up = NULL;
    /* The nearest ancestor with a limiter: "a.b.c" -> "a.b", "a".  Its
     * own chain (prepared first) holds the farther ones, so the chain
     * from k is every ancestor with a limiter, nearest first, and costs
     * a key one pointer.  One more than KEY_MAX_ANCESTORS is refused,
     * never skipped: the farthest is usually the account-wide bucket. */
    for (i = k->len; i-- > 0;) {
        const struct policy *pol;
        struct key *a;
        size_t had = d->keys.count;
        if (k->name[i] != '.')
            continue;
        memcpy(prefix, k->name, i);
        prefix[i] = '\0';
        pol = config_match(&d->cfg, prefix);
        if (!pol->has_limiter)
            continue;
        if ((rc = keys_get(&d->keys, prefix, i, &d->cfg, now_ms, &a)) < 0)
            return rc;
        if (d->keys.count != had)
            core_key_created(d, a);
        if ((rc = admit_prepare(d, a, now_ms)) < 0)
            return rc;
        if (a->nanc + 1 > KEY_MAX_ANCESTORS)
            return RD_EDEEP;
        k->up = a;
        k->nanc = (uint8_t)(a->nanc + 1);
        break;
    }
    k->admit_ready = ADMIT_READY;
    return 0;
}

/* k's critical-probe limiter, set up (full) on the first probe that needs
 * it: 1, or 0 when its block cannot be had -- then the breaker's answer
 * stands, as if no probe were left (never a deny a closed breaker would
 * not give). */
static int crit_ready(struct key *k, const struct limiter_conf *cc,
                      uint64_t now_ms)
{
    if (k->x && k->x->crit_ready)
        return 1;
    if (!keys_ext(k))
        return 0;
    limiter_init(&k->x->crit_lim, cc, now_ms);
    k->x->crit_ready = 1;
    return 1;
}

static enum admit_reason from_breaker(enum breaker_reason r)
{
    switch (r) {
    case BREAKER_CIRCUIT_OPEN:
        return ADMIT_CIRCUIT_OPEN;
    case BREAKER_HALF_OPEN_BUSY:
        return ADMIT_HALF_OPEN_BUSY;
    case BREAKER_FORCED_OPEN:
        return ADMIT_FORCED_OPEN;
    case BREAKER_OK:
        break;
    }
    return ADMIT_OK;
}

/*
 * ms until k's own limiter would pass cost (0: now; LIMITER_NEVER: never
 * under the conf it runs under).  A key without a limiter has only its
 * venue pause.  A leased one passes on tokens still held (the venue pause
 * still applies); short of them, it waits on its local share while
 * leasing is off, else for a grant: the time the global limit takes to
 * make cost, and with wd (the decision path; NULL when only estimating)
 * it joins the wanted FIFO.
 */
static uint64_t own_wait(const struct resild *d, struct resild *wd,
                         struct key *k, uint64_t cost, int critical,
                         uint64_t now_ms)
{
    const struct policy *pol = k->policy;
    struct lease *l = leased(k);
    uint64_t need, paused, w;

    if (!pol->has_limiter)
        return limiter_paused_ms(&k->lim, now_ms);
    if (!l)
        return limiter_wait(&k->lim, lim_conf(k), now_ms, cost, pol->reserve,
                            critical);
    need = lease_need(k, cost, critical);
    paused = limiter_paused_ms(&k->lim, now_ms);
    if (lease_usable(l, now_ms) >= need)
        return paused;
    /* Off, or on but not yet answered for this key (just made, or Redis
     * just came back, or idle through its last hold), or its hold just
     * ended (the give-back timer has not collected it yet; a key in use
     * renews its hold, so only an idle one gets here): the share decides,
     * so a key's first request is not denied for want of a lease that is
     * a round trip away.  The share is debited by leased use too
     * (own_take), so this adds at most what the share holds, per host,
     * once per idle period. */
    if (!d->lease.on || (l->flags & LEASE_COLD) ||
        (l->hold_until_ms && l->hold_until_ms <= now_ms)) {
        if (wd && d->lease.on)
            lease_want(wd, l, need);
        return limiter_wait(&k->lim, &pol->limiter_share, now_ms, cost,
                            pol->reserve, critical);
    }
    if (wd)
        lease_want(wd, l, need);
    w = lease_estimate(pol, cost);
    return paused > w ? paused : w;
}

/* Take cost from k's own limiter: what own_wait said passes at the same
 * now_ms (held tokens first, else the share), never more. */
static void own_take(struct resild *d, struct key *k, uint64_t cost,
                     int critical, uint64_t now_ms)
{
    struct lease *l = leased(k);

    if (!k->policy->has_limiter)
        return;
    if (!l) {
        limiter_take(&k->lim, lim_conf(k), now_ms, cost);
        return;
    }
    l->flags |= LEASE_USED;
    if (lease_usable(l, now_ms) >= lease_need(k, cost, critical)) {
        const struct limiter_conf *sc = &k->policy->limiter_share;
        l->flags &= (uint8_t)~LEASE_ON_SHARE;
        l->tokens -= cost;
        if (d->lease.on && l->tokens * 2 < admit_lease_size(d, k))
            lease_want(d, l, 0); /* below half: ask ahead of need */
        /* A key in use keeps what it holds: its hold is renewed once half
         * gone, so the hold never ends under traffic and leaves it short
         * while a new lease is a round trip away (a slow Redis would turn
         * that round trip into denials).  Safe for the bound, which counts
         * tokens held, not their age; an idle key's hold still ends and
         * its tokens go back. */
        if ((l->flags & LEASE_HELD) &&
            l->hold_until_ms - now_ms < CORE_LEASE_HOLD_MS / 2) {
            l->hold_until_ms = now_ms + CORE_LEASE_HOLD_MS;
            lq_unlink(d, LEASE_Q_HELD, l);
            lq_push(d, LEASE_Q_HELD, l); /* the latest hold: the tail */
        }
        /* The local share is debited too (down to empty), so a switch to
         * it when Redis stalls starts from what this host has not been
         * using, not from a full bucket each time. */
        if (limiter_available(&k->lim, sc, now_ms) >= cost)
            limiter_take(&k->lim, sc, now_ms, cost);
        else
            limiter_sync(&k->lim, sc, now_ms, 0);
        return;
    }
    /* On the share (Redis away or slow, the key cold or its hold over):
     * each spell adds at most what the share holds to the global bound
     * (README), so the spells are counted. */
    if (!(l->flags & LEASE_ON_SHARE)) {
        l->flags |= LEASE_ON_SHARE;
        d->m.share_spells++;
    }
    limiter_take(&k->lim, &k->policy->limiter_share, now_ms, cost);
}

/* Longest wait over k's own limiter (or pause) and its ancestors'; every
 * leased one that is short is wanted when wd is given. */
static uint64_t limiter_chain_wait(const struct resild *d, struct resild *wd,
                                   struct key *k, uint64_t cost, int critical,
                                   uint64_t now_ms, const struct key **culprit)
{
    uint64_t w, worst;
    struct key *a;

    worst = own_wait(d, wd, k, cost, critical, now_ms);
    if (culprit)
        *culprit = k;
    for (a = k->up; a; a = a->up) {
        w = own_wait(d, wd, a, cost, critical, now_ms);
        if (w > worst) {
            worst = w;
            if (culprit)
                *culprit = a;
        }
    }
    return worst;
}

/*
 * Every check, then (on V_ALLOW) every take and the permit.  from_queue: k's
 * queue head being served, so the queue itself does not block it.
 */
static enum verdict decide(struct resild *d, struct caller *c, struct key *k,
                           uint64_t cost, int critical, int from_queue,
                           uint32_t msgid, uint64_t now_ms,
                           struct admit_result *res)
{
    const struct policy *pol = k->policy;
    struct breaker_verdict v;
    struct limiter_conf cc = crit_conf(k);
    struct permit *p;
    int crit_pass = 0, shadow = 0;
    enum verdict out = V_ALLOW;
    uint64_t wait;
    struct key *a;

    memset(res, 0, sizeof(*res));
    if (k->admit_ready != ADMIT_READY && admit_prepare(d, k, now_ms) < 0) {
        /* After a reload that could not resolve k's ancestor limiters
         * (max_keys): deny rather than skip a limit. */
        res->reason = ADMIT_RATE_LIMITED;
        return V_DENY;
    }
    breaker_acquire(&k->br, &pol->breaker, now_ms, &v);
    if (v.reason != BREAKER_FORCED_OPEN && k->br.force == BREAKER_AUTO &&
        pol->has_heartbeat && core_beat_lost(d, k, now_ms)) {
        /* A feed that stopped beating is not called, whatever the breaker
         * says; only an operator's force overrides it.  Not worth a wait:
         * nobody knows when the feed comes back. */
        res->reason = ADMIT_HEARTBEAT_LOST;
        out = V_DENY;
    } else if (!v.allow) {
        if (critical && pol->critical_probe_per_s &&
            v.reason != BREAKER_FORCED_OPEN && crit_ready(k, &cc, now_ms) &&
            limiter_wait(&k->x->crit_lim, &cc, now_ms, 1, 0, 1) == 0) {
            crit_pass = 1; /* risk-reducing call through an open breaker */
        } else {
            res->reason = from_breaker(v.reason);
            res->retry_after_ms = v.retry_after_ms;
            out = V_DENY;
        }
    }
    if (out == V_ALLOW && !from_queue && !critical && k->q_len) {
        /* Others are already waiting: do not overtake them. */
        res->reason =
            k->x->q_head && pol->has_bulkhead &&
                    !bulkhead_fits(&k->bh, &pol->bulkhead, pol->reserve, 0)
                ? ADMIT_BULKHEAD_FULL
                : ADMIT_RATE_LIMITED;
        out = V_WAITABLE;
    }
    if (out == V_ALLOW && pol->has_bulkhead &&
        !bulkhead_fits(&k->bh, &pol->bulkhead, pol->reserve, critical)) {
        res->reason = ADMIT_BULKHEAD_FULL;
        out = V_WAITABLE;
    }
    if (out == V_ALLOW && (wait = limiter_chain_wait(d, d, k, cost, critical,
                                                     now_ms, NULL)) > 0) {
        res->reason = ADMIT_RATE_LIMITED;
        /* Never: a local share smaller than cost plus reserve. */
        res->retry_after_ms = wait == LIMITER_NEVER ? 0 : wait;
        out = V_WAITABLE;
    }
    if (out != V_ALLOW && pol->shadow) {
        /* Shadow: decide as usual, count the denial, allow anyway. */
        shadow = 1;
        res->shadow = 1;
        res->shadow_reason = res->reason;
        if (keys_ext(k)) /* else only the host-wide count */
            k->x->shadow_denied++;
        d->m.shadow_denied++;
    } else if (out != V_ALLOW) {
        if (v.allow)
            breaker_release(&k->br, v.generation, v.probe);
        return out;
    }
    p = permits_alloc(&d->permits, &c->permits, msgid,
                      now_ms + pol->permit_ttl_ms, &res->err);
    if (!p) {
        if (v.allow)
            breaker_release(&k->br, v.generation, v.probe);
        return V_NOPERMIT;
    }
    if (!shadow) {
        own_take(d, k, cost, critical, now_ms);
        for (a = k->up; a; a = a->up)
            own_take(d, a, cost, critical, now_ms);
        if (crit_pass) {
            limiter_take(&k->x->crit_lim, &cc, now_ms, 1);
            d->m.critical_probes++;
        }
    }
    if (pol->has_bulkhead) {
        bulkhead_take(&k->bh);
        d->tot.bh_in_use++;
        p->holds_slot = 1;
    } else {
        p->holds_slot = 0;
    }
    p->key = k;
    p->generation = v.allow ? v.generation : k->br.generation;
    p->probe = (uint8_t)(v.allow && v.probe);
    k->outstanding++;
    res->allow = 1;
    res->reason = ADMIT_OK;
    res->retry_after_ms = 0;
    res->permit = p->id;
    return V_ALLOW;
}

static void key_queue_unlink(struct resild *d, struct parked *p)
{
    struct key *k = p->key;

    if (p->qprev)
        p->qprev->qnext = p->qnext;
    else
        k->x->q_head = p->qnext;
    if (p->qnext)
        p->qnext->qprev = p->qprev;
    else
        k->x->q_tail = p->qprev;
    if (k->policy->has_bulkhead)
        d->tot.bh_queued--;
    if (--k->q_len == 0) {
        if (k->x->wait_prev)
            k->x->wait_prev->x->wait_next = k->x->wait_next;
        else
            d->waiting = k->x->wait_next;
        if (k->x->wait_next)
            k->x->wait_next->x->wait_prev = k->x->wait_prev;
        k->x->wait_prev = k->x->wait_next = NULL;
    }
}

/* Remove p from its key and caller, back to the free pool. */
static void unpark(struct resild *d, struct parked *p)
{
    struct caller *c = p->caller;

    key_queue_unlink(d, p);
    msgidx_del(&d->parked_ix, &p->by_msgid);
    if (p->cprev)
        p->cprev->cnext = p->cnext;
    else
        c->parked = p->cnext;
    if (p->cnext)
        p->cnext->cprev = p->cprev;
    c->nparked--;
    memset(p, 0, sizeof(*p));
    p->qnext = d->parked_free;
    d->parked_free = p;
    d->parked_used--;
}

static uint64_t key_next_wake(const struct resild *d, const struct key *k,
                              uint64_t now_ms, uint64_t best);

static int park(struct resild *d, struct caller *c, struct key *k,
                uint64_t cost, int critical, uint64_t deadline_ms,
                uint32_t msgid, uint64_t now_ms)
{
    uint32_t bound = k->policy->has_bulkhead ? k->policy->bulkhead.queue
                                             : ADMIT_DEFAULT_QUEUE;
    struct parked *p = d->parked_free;

    if (!p || k->q_len >= bound || c->nparked >= d->cfg.max_parked_per_client) {
        d->m.bounds[BOUND_MAX_PARKED]++;
        return -1;
    }
    if (!keys_ext(k))
        return -1; /* no memory for the queue: answered now, not parked */
    d->parked_free = p->qnext;
    d->parked_used++;
    memset(p, 0, sizeof(*p));
    p->key = k;
    p->caller = c;
    p->cost = cost;
    p->critical = (uint8_t)critical;
    p->deadline_ms = deadline_ms;
    p->msgid = msgid;
    p->qprev = k->x->q_tail;
    if (k->x->q_tail)
        k->x->q_tail->qnext = p;
    else
        k->x->q_head = p;
    k->x->q_tail = p;
    if (k->policy->has_bulkhead)
        d->tot.bh_queued++;
    if (k->q_len++ == 0) {
        k->x->wait_prev = NULL;
        k->x->wait_next = d->waiting;
        if (d->waiting)
            d->waiting->x->wait_prev = k;
        d->waiting = k;
    }
    p->cnext = c->parked;
    if (c->parked)
        c->parked->cprev = p;
    c->parked = p;
    c->nparked++;
    msgidx_add(&d->parked_ix, &p->by_msgid, c, msgid);
    d->m.parked++;
    /* Arm the timer for its deadline (and, at the head or critical, its
     * refill): nothing else changed, so no walk of the others. */
    d->wake_next_ms = key_next_wake(d, k, now_ms, d->wake_next_ms);
    d->wake_rearm = 1;
    return 0;
}

/* Whether k's own limiter could ever grant cost to this priority. */
static int fits_ever(const struct key *k, uint64_t cost, int critical)
{
    uint64_t burst = k->policy->limiter.burst;
    uint64_t keep = critical ? 0 : k->policy->reserve;

    return keep < burst && cost <= burst - keep;
}

int admit_acquire(struct resild *d, struct caller *c, struct key *k,
                  uint64_t cost, int critical, uint64_t wait_ms, uint32_t msgid,
                  uint64_t now_ms, struct admit_result *res,
                  const struct key **culprit)
{
    enum verdict vd;
    struct key *a;

    /* A cost no limiter in the chain can ever hold is a bad request.  A
     * normal request may not take a limiter's reserve. */
    if (k->policy->has_limiter && !fits_ever(k, cost, critical)) {
        *culprit = k;
        return RD_E2BIG;
    }
    for (a = k->up; a; a = a->up)
        if (!fits_ever(a, cost, critical)) {
            *culprit = a;
            return RD_E2BIG;
        }
    vd = decide(d, c, k, cost, critical, 0, msgid, now_ms, res);
    if (vd == V_NOPERMIT)
        return res->err;
    if (vd == V_WAITABLE && wait_ms > 0 && !d->stopping &&
        park(d, c, k, cost, critical, now_ms + wait_ms, msgid, now_ms) == 0) {
        res->parked = 1;
    }
    return 0;
}

/* Answer p with the decision vd/res (V_NOPERMIT: res->err) and free it.
 * The caller's answer callback only queues the answer, so nothing here can
 * close a connection or unpark another entry. */
static void answer_parked(struct resild *d, struct parked *p, enum verdict vd,
                          const struct admit_result *res)
{
    struct caller *c = p->caller;
    uint32_t msgid = p->msgid;
    struct key *k = p->key;

    unpark(d, p);
    if (vd == V_NOPERMIT) {
        d->m.bounds[BOUND_MAX_PERMITS]++;
        c->answer(c, msgid, k, NULL, res->err);
    } else {
        if (k->stats)
            k->stats->decisions[res->reason]++;
        d->tot.dec[res->reason]++;
        c->answer(c, msgid, k, res, 0);
    }
}

/*
 * Serve k's queue.  The head goes first (FIFO); once an entry has to keep
 * waiting, normal entries behind it keep their place, but critical ones may
 * pass it (a cancel must not wait behind new orders).  An entry whose wait
 * has run out gets the decision of this moment, whatever it is.
 */
static void wake_key(struct resild *d, struct key *k, uint64_t now_ms)
{
    struct admit_result res;
    struct parked *p, *next;
    int blocked = 0; /* an earlier entry is still waiting */

    for (p = k->x->q_head; p; p = next) {
        enum verdict vd;
        next = p->qnext; /* answer_parked frees p and nothing else */
        if (blocked && !p->critical && now_ms < p->deadline_ms)
            continue;
        vd = decide(d, p->caller, k, p->cost, p->critical, 1, p->msgid, now_ms,
                    &res);
        if ((vd == V_WAITABLE || vd == V_NOPERMIT) && now_ms < p->deadline_ms) {
            blocked = 1;
            if (vd == V_NOPERMIT)
                d->wake_nopermit = 1; /* any release may serve it */
            continue;
        }
        answer_parked(d, p, vd, &res);
    }
    core_sync(d, k, now_ms); /* what the decisions revealed */
}

void admit_wake(struct resild *d, uint64_t now_ms)
{
    struct key *k, *next;

    d->nwake_keys = 0; /* all of them now */
    d->wake_nopermit = 0; /* set again by whoever still waits for one */
    for (k = d->waiting; k; k = next) {
        next = k->x->wait_next; /* k may leave the list */
        wake_key(d, k, now_ms);
    }
    d->wake_next_ms = admit_next_wake(d, now_ms);
}

void admit_wake_later(struct resild *d, struct key *k)
{
    uint32_t i;

    if (d->wake_nopermit) {
        d->wake_dirty = 1; /* a permit of the pool is free again */
        return;
    }
    if (!k->q_len || d->wake_dirty)
        return;
    for (i = 0; i < d->nwake_keys; i++)
        if (d->wake_keys[i] == k)
            return;
    if (d->nwake_keys == CORE_WAKE_KEYS) {
        d->wake_dirty = 1;
        return;
    }
    d->wake_keys[d->nwake_keys++] = k;
}

void admit_wake_keys(struct resild *d, uint64_t now_ms)
{
    /* wake_key answers and decides; nothing in it ends a permit, so
     * nothing joins the list meanwhile.  Popped first all the same. */
    while (d->nwake_keys) {
        struct key *k = d->wake_keys[--d->nwake_keys];
        if (!k->q_len)
            continue;
        wake_key(d, k, now_ms);
        /* Its new head may pass sooner than anything the timer is set
         * for; the other keys' queues did not move. */
        if (k->q_len)
            d->wake_next_ms = key_next_wake(d, k, now_ms, d->wake_next_ms);
    }
}

void admit_wake_all_now(struct resild *d, uint64_t now_ms)
{
    struct key *k;
    struct parked *p;

    for (k = d->waiting; k; k = k->x->wait_next)
        for (p = k->x->q_head; p; p = p->qnext)
            p->deadline_ms = now_ms;
    admit_wake(d, now_ms);
}

/* The earlier of best (0: none) and when k's queue may next move: an
 * entry's deadline, or the refill its head or a critical entry waits
 * for.  O(k's parked requests). */
static uint64_t key_next_wake(const struct resild *d, const struct key *k,
                              uint64_t now_ms, uint64_t best)
{
    const struct parked *p;
    uint64_t w;

    for (p = k->x->q_head; p; p = p->qnext)
        if (!best || p->deadline_ms < best)
            best = p->deadline_ms;
    /* The head, and critical entries, may pass once the limiters
     * refill. */
    for (p = k->x->q_head; p; p = p->qnext) {
        if (p != k->x->q_head && !p->critical)
            continue;
        w = limiter_chain_wait(d, NULL, (struct key *)k, p->cost, p->critical,
                               now_ms, NULL);
        if (w && w != LIMITER_NEVER && now_ms + w < best)
            best = now_ms + w;
    }
    return best;
}

uint64_t admit_next_wake(const struct resild *d, uint64_t now_ms)
{
    uint64_t best = 0;
    const struct key *k;

    for (k = d->waiting; k; k = k->x->wait_next)
        best = key_next_wake(d, k, now_ms, best);
    return best;
}

void admit_caller_gone(struct resild *d, struct caller *c)
{
    while (c->parked) {
        struct key *k = c->parked->key;
        unpark(d, c->parked);
        /* Those behind it on k may pass now (it may have been the head
         * the FIFO kept them behind): k's queue is served at the next
         * core_wake, not at the timer the old head set. */
        admit_wake_later(d, k);
    }
}

void admit_permit_done(struct resild *d, struct permit *p)
{
    struct key *k = p->key;

    if (p->holds_slot && k->bh.in_use) {
        bulkhead_give(&k->bh);
        if (k->policy->has_bulkhead) /* counted (core.c policy_count) */
            d->tot.bh_in_use--;
    }
    k->outstanding--;
    permits_release(&d->permits, p);
    admit_wake_later(d, k); /* a slot, a probe: k's queue only */
}

/* Self if it has a limiter, else the nearest ancestor with one, else
 * self (its own pause only). */
static struct key *nearest_limiter(struct key *k)
{
    if (k->policy->has_limiter || !k->up)
        return k;
    return k->up;
}

struct key *admit_venue_pause(struct resild *d, struct key *k, uint64_t now_ms,
                              uint64_t ms)
{
    struct key *t = nearest_limiter(k);

    d->m.venue_pauses++;
    /* No wake: a pause lets no parked request through sooner (a walk of
     * every one per rate_limited report was O(parked) per request); the
     * timer set for an earlier refill finds them still waiting. */
    limiter_pause(&t->lim, lim_conf(t), now_ms, ms);
    return t;
}

struct key *admit_venue_sync(struct resild *d, struct key *k, uint64_t now_ms,
                             uint64_t remaining)
{
    struct key *t = nearest_limiter(k);

    (void)d; /* no wake: fewer tokens let no parked request through sooner */
    if (!t->policy->has_limiter)
        return NULL;
    limiter_sync(&t->lim, lim_conf(t), now_ms, remaining);
    if (leased(t) && t->lease->tokens > remaining)
        t->lease->tokens = remaining; /* the venue's count is global */
    return t;
}

int admit_cancel(struct resild *d, struct caller *c, uint32_t msgid)
{
    struct msgidx_node *n = msgidx_find(&d->parked_ix, c, msgid);
    struct parked *q;
    struct admit_result res = {0};

    if (!n)
        return 0;
    q = (struct parked *)((char *)n - offsetof(struct parked, by_msgid));
    res.reason = ADMIT_CANCELLED;
    answer_parked(d, q, V_DENY, &res);
    d->wake_dirty = 1; /* those behind it may pass now */
    return ADMIT_CANCEL_PARKED;
}

size_t admit_parked_bytes(void)
{
    return sizeof(struct parked);
}
