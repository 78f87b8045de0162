/*
 * alerts.h - alert rules (SPEC §6 errors.alerts), pure: which alerts fire
 * now, and the cooldown per rule and key.  Takes now_ms; no I/O, no uv;
 * delivery (subscribers, the alert log, exec hooks) is the caller's: the
 * server-side glue (hooks.c) turns each alert into an EV_ALERT event.
 *
 * Three kinds:
 *  - rate: a rule's rate_per_min reached by a key's failures over the
 *    last 60 s (of the rule's min_severity or worse, in its key/prefix
 *    scope), at most once per cooldown_s per rule and key;
 *  - breaker_open: a key's breaker opened by itself (not a force), at most
 *    once per ALERTS_OPEN_COOLDOWN_MS per key;
 *  - predicted_trip: analytics_predict says a closed breaker will open
 *    within ANALYTICS_PRED_HORIZON_S, at most once per
 *    ALERTS_PREDICT_COOLDOWN_MS per key.
 *
 * Cooldowns live in a bounded table (ALERTS_COOLDOWNS_MAX entries, about
 * 48 bytes each); when it is full, entries whose cooldown is over are
 * dropped, and an alert that still finds no room is not sent (counted in
 * `dropped`): a flood of keys cannot grow memory or flood the hooks.
 */
#ifndef RESIL_ALERTS_H
#define RESIL_ALERTS_H

#include <stddef.h>
#include <stdint.h>

#include "analytics.h"
#include "config.h"

#define ALERTS_OPEN_COOLDOWN_MS 60000
#define ALERTS_PREDICT_COOLDOWN_MS 300000
#define ALERTS_COOLDOWNS_MAX 65536
#define ALERTS_RATE_SPAN_S 60 /* the rate is over this many seconds */

enum alert_kind { ALERT_RATE, ALERT_BREAKER_OPEN, ALERT_PREDICTED_TRIP };

struct alert {
    enum alert_kind kind;
    int rule;              /* index in the rules for ALERT_RATE, else -1 */
    const char *rule_name; /* the rule's name, or the kind's name */
    const void *id;        /* the key (the daemon's struct key) */
    const char *key;       /* borrowed for the emit call */
    size_t key_len;
    double rate_per_min; /* failures over the last 60 s */
    uint64_t eta_s;      /* predicted_trip: seconds to the trip */
    double failure_rate; /* predicted_trip: now, percent */
    double threshold;    /* predicted_trip: the breaker's, percent */
    char detail[192];    /* a line for people */
};

struct alerts_cd; /* one cooldown entry */

struct alerts {
    struct alerts_cd **tab; /* ALERTS_COOLDOWNS_MAX / 4 chains */
    size_t ntab, count;
    uint64_t seed;
    uint64_t fired, suppressed, dropped; /* sent, in cooldown, no room */
};

/* 0 or -1 (out of memory). */
int alerts_init(struct alerts *al, uint64_t seed);
void alerts_free(struct alerts *al);

const char *alerts_kind_name(enum alert_kind k);

/* 1 if key id may fire in slot (a rule index, or CONFIG_ALERT_RULES +
 * kind for the built-in kinds) at now_ms, and then the slot's cooldown
 * starts; 0 in cooldown (or no room: dropped). */
int alerts_may_fire(struct alerts *al, int slot, const void *id,
                    uint64_t cooldown_ms, uint64_t now_ms);

/* 1 if rule r covers key name[0..len). */
int alerts_rule_covers(const struct alert_rule *r, const char *name,
                       size_t len);

typedef void (*alerts_emit_fn)(void *ctx, const struct alert *a);

/*
 * The once-a-second evaluation: every rule over every key that failed in
 * the last ALERTS_RATE_SPAN_S, then predicted trips (fn may be NULL: none).
 * emit is called for each alert that fires.  O(rules x active keys x
 * their series x 60) + analytics_predict.
 */
void alerts_eval(struct alerts *al, const struct alert_rule *rules,
                 size_t nrules, const struct analytics *a,
                 analytics_breaker_fn fn, void *fn_ctx, uint64_t now_ms,
                 alerts_emit_fn emit, void *ctx);

/* A breaker opened: fills *out and returns 1 unless in cooldown. */
int alerts_breaker_opened(struct alerts *al, const void *id, const char *name,
                          size_t len, uint64_t now_ms, struct alert *out);

#endif
