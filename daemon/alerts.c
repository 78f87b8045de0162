/*
 * alerts.c - alert rules and cooldowns (see alerts.h).  Pure: no I/O, no
 * clock, no uv.  Allocates one cooldown entry per (slot, key) that fired,
 * within ALERTS_COOLDOWNS_MAX.
 */
#include "alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct alerts_cd {
    struct alerts_cd *next;
    const void *id;
    int slot;
    uint64_t until_ms; /* may fire again from here */
};

#define NTAB (ALERTS_COOLDOWNS_MAX / 4)

int alerts_init(struct alerts *al, uint64_t seed)
{
    memset(al, 0, sizeof(*al));
    al->seed = seed;
    al->ntab = NTAB;
    al->tab = calloc(al->ntab, sizeof(*al->tab));
    return al->tab ? 0 : -1;
}

void alerts_free(struct alerts *al)
{
    size_t i;

    for (i = 0; i < al->ntab; i++) {
        struct alerts_cd *e = al->tab[i], *n;
        for (; e; e = n) {
            n = e->next;
            free(e);
        }
    }
    free(al->tab);
    memset(al, 0, sizeof(*al));
}

const char *alerts_kind_name(enum alert_kind k)
{
    return k == ALERT_RATE           ? "rate"
           : k == ALERT_BREAKER_OPEN ? "breaker_open"
                                     : "predicted_trip";
}

static size_t slot_hash(const struct alerts *al, int slot, const void *id)
{
    uint64_t h = ((uint64_t)(uintptr_t)id ^ al->seed ^ (uint64_t)slot << 56) *
                 0x9e3779b97f4a7c15ULL;

    return (size_t)(h >> 40) % al->ntab;
}

/* Drop every entry whose cooldown is over. */
static void sweep(struct alerts *al, uint64_t now_ms)
{
    size_t i;

    for (i = 0; i < al->ntab; i++) {
        struct alerts_cd **pp = &al->tab[i];
        while (*pp) {
            struct alerts_cd *e = *pp;
            if (e->until_ms <= now_ms) {
                *pp = e->next;
                free(e);
                al->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

int alerts_may_fire(struct alerts *al, int slot, const void *id,
                    uint64_t cooldown_ms, uint64_t now_ms)
{
    size_t h = slot_hash(al, slot, id);
    struct alerts_cd *e;

    for (e = al->tab[h]; e; e = e->next)
        if (e->id == id && e->slot == slot)
            break;
    if (e) {
        if (now_ms < e->until_ms) {
            al->suppressed++;
            return 0;
        }
        e->until_ms = now_ms + cooldown_ms;
        al->fired++;
        return 1;
    }
    if (al->count >= ALERTS_COOLDOWNS_MAX)
        sweep(al, now_ms);
    if (al->count >= ALERTS_COOLDOWNS_MAX || !(e = malloc(sizeof(*e)))) {
        al->dropped++;
        return 0;
    }
    e->id = id;
    e->slot = slot;
    e->until_ms = now_ms + cooldown_ms;
    e->next = al->tab[h];
    al->tab[h] = e;
    al->count++;
    al->fired++;
    return 1;
}

int alerts_rule_covers(const struct alert_rule *r, const char *name, size_t len)
{
    size_t pl;

    if (r->key[0])
        return strlen(r->key) == len && !memcmp(r->key, name, len);
    if (r->prefix[0]) {
        pl = strlen(r->prefix);
        return len >= pl && !memcmp(r->prefix, name, pl) &&
               (len == pl || name[pl] == '.');
    }
    return 1;
}

struct eval {
    struct alerts *al;
    const struct alert_rule *rules;
    size_t nrules;
    const struct analytics *a;
    uint64_t now_ms;
    alerts_emit_fn emit;
    void *ctx;
};

static void eval_key(void *ctx, const void *id, const char *name, size_t len)
{
    struct eval *ev = ctx;
    size_t i;

    for (i = 0; i < ev->nrules; i++) {
        const struct alert_rule *r = &ev->rules[i];
        struct alert a;
        uint64_t n;
        if (!alerts_rule_covers(r, name, len))
            continue;
        n = analytics_key_rate(ev->a, id, r->min_severity, ev->now_ms);
        if ((double)n < r->rate_per_min ||
            !alerts_may_fire(ev->al, (int)i, id, (uint64_t)r->cooldown_s * 1000,
                             ev->now_ms))
            continue;
        memset(&a, 0, sizeof(a));
        a.kind = ALERT_RATE;
        a.rule = (int)i;
        a.rule_name = r->name;
        a.id = id;
        a.key = name;
        a.key_len = len;
        a.rate_per_min = (double)n;
        snprintf(a.detail, sizeof(a.detail),
                 "%llu failures in the last %d s (%s or worse), rule %.0f/min",
                 (unsigned long long)n, ALERTS_RATE_SPAN_S,
                 config_severity_name(r->min_severity), r->rate_per_min);
        ev->emit(ev->ctx, &a);
    }
}

void alerts_eval(struct alerts *al, const struct alert_rule *rules,
                 size_t nrules, const struct analytics *a,
                 analytics_breaker_fn fn, void *fn_ctx, uint64_t now_ms,
                 alerts_emit_fn emit, void *ctx)
{
    struct eval ev = {al, rules, nrules, a, now_ms, emit, ctx};
    struct an_prediction p[ANALYTICS_PRED_MAX];
    size_t n, i;

    if (nrules)
        analytics_each_key(a, ALERTS_RATE_SPAN_S * 1000ULL, now_ms, eval_key,
                           &ev);
    if (!fn)
        return;
    n = analytics_predict(a, now_ms, fn, fn_ctx, p, ANALYTICS_PRED_MAX);
    for (i = 0; i < n; i++) {
        struct alert al_ = {0};
        if (!alerts_may_fire(al, CONFIG_ALERT_RULES + ALERT_PREDICTED_TRIP,
                             p[i].id, ALERTS_PREDICT_COOLDOWN_MS, now_ms))
            continue;
        al_.kind = ALERT_PREDICTED_TRIP;
        al_.rule = -1;
        al_.rule_name = "predicted_trip";
        al_.id = p[i].id;
        al_.key = p[i].key;
        al_.key_len = strlen(p[i].key);
        al_.rate_per_min = (double)analytics_key_rate(a, p[i].id, 0, now_ms);
        al_.eta_s = p[i].eta_s;
        al_.failure_rate = p[i].rate_pct;
        al_.threshold = p[i].threshold_pct;
        snprintf(al_.detail, sizeof(al_.detail),
                 "failure rate %.1f%% rising %.2f%%/s; the breaker "
                 "(threshold %.0f%%) trips in about %llu s",
                 p[i].rate_pct, p[i].slope_pct_per_s, p[i].threshold_pct,
                 (unsigned long long)p[i].eta_s);
        emit(ctx, &al_);
    }
}

int alerts_breaker_opened(struct alerts *al, const void *id, const char *name,
                          size_t len, uint64_t now_ms, struct alert *out)
{
    if (!alerts_may_fire(al, CONFIG_ALERT_RULES + ALERT_BREAKER_OPEN, id,
                         ALERTS_OPEN_COOLDOWN_MS, now_ms))
        return 0;
    memset(out, 0, sizeof(*out));
    out->kind = ALERT_BREAKER_OPEN;
    out->rule = -1;
    out->rule_name = "breaker_open";
    out->id = id;
    out->key = name;
    out->key_len = len;
    snprintf(out->detail, sizeof(out->detail), "the breaker opened");
    return 1;
}
