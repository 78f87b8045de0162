/*
 * evlog.c - the log sink (see evlog.h).  Peer-supplied text (a force
 * reason, another daemon's name) is escaped here, where it is written for
 * people.  A change made on another daemon (core_remote) ends its line
 * with " origin=<name>".
 */
#include "evlog.h"

#include <stdio.h>
#include <string.h>

#include "keys.h"
#include "log.h"

/* Bytes of another daemon's name shown (redis.origin holds at most 63). */
#define EVLOG_ORIGIN_MAX 63

void evlog_sink(void *ctx, const struct event *ev)
{
    const char *key = ev->key ? ev->key->name : "-";
    char esc[4 * KEY_REASON_MAX + 4];
    char org[4 * EVLOG_ORIGIN_MAX + 16] = "";

    (void)ctx;
    if (ev->origin) {
        char e[4 * EVLOG_ORIGIN_MAX + 4];
        size_t n = strlen(ev->origin);
        log_escape(e, sizeof(e), ev->origin,
                   n > EVLOG_ORIGIN_MAX ? EVLOG_ORIGIN_MAX : n);
        snprintf(org, sizeof(org), " origin=%s", e);
    }
    switch (ev->type) {
    case EV_TRANSITION:
        log_msg(LOG_INFO, "key %s: %s -> %s (%s)%s", key,
                breaker_visible_name(ev->u.transition.from),
                breaker_visible_name(ev->u.transition.to),
                breaker_transition_cause_name(ev->u.transition.cause), org);
        break;
    case EV_FORCE:
        log_escape(esc, sizeof(esc), ev->u.force.reason,
                   strlen(ev->u.force.reason));
        log_msg(LOG_INFO,
                "key %s: forced %s by uid %u (ttl %llu ms, reason \"%s\")%s",
                key, ev->u.force.state, (unsigned)ev->u.force.uid,
                (unsigned long long)ev->u.force.ttl_ms, esc, org);
        break;
    case EV_RESET:
        log_msg(LOG_INFO, "key %s: reset by uid %u%s%s", key,
                (unsigned)ev->u.reset.uid,
                ev->u.reset.paused_ms_cleared ? "; venue pause cleared" : "",
                org);
        break;
    case EV_VENUE_PAUSE:
        log_msg(LOG_INFO,
                "key %s: venue rate limit reported on %s; pausing %llu ms%s",
                key, ev->u.venue_pause.reported_on->name,
                (unsigned long long)ev->u.venue_pause.paused_ms, org);
        break;
    case EV_HEARTBEAT_LOST:
        log_msg(LOG_WARN, "key %s: heartbeat lost (silent %llu ms)", key,
                (unsigned long long)ev->u.heartbeat.silent_ms);
        break;
    case EV_HEARTBEAT_RESTORED:
        log_msg(LOG_INFO, "key %s: heartbeat restored after %llu ms", key,
                (unsigned long long)ev->u.heartbeat.silent_ms);
        break;
    case EV_BOUND_HIT:
        /* Connection-level bounds are logged by the server with the
         * client's uid; the others here, rate-limited. */
        if (ev->u.bound.kind == BOUND_MAX_KEYS ||
            ev->u.bound.kind == BOUND_MAX_PERMITS ||
            ev->u.bound.kind == BOUND_MAX_PARKED)
            log_peer(ev->now_ms, "bound %s hit%s%s: %s", ev->u.bound.bound,
                     ev->key ? " on key " : "", ev->key ? key : "",
                     ev->u.bound.detail);
        break;
    case EV_RELOAD:
        log_msg(LOG_INFO,
                "configuration reloaded by uid %u: %u policies (%u added, "
                "%u removed, %u changed)",
                (unsigned)ev->u.reload.uid, (unsigned)ev->u.reload.policies,
                (unsigned)ev->u.reload.added, (unsigned)ev->u.reload.removed,
                (unsigned)ev->u.reload.changed);
        break;
    case EV_ALERT:
        log_msg(LOG_WARN, "alert %s on key %s: %s", ev->u.alert.rule, key,
                ev->u.alert.detail);
        break;
    case EV_OUTCOME:
    case EV_VENUE_RESYNC:
        break;
    }
}
