/*
 * event.c - names of the event vocabulary (see event.h).  These strings are
 * the wire protocol of `subscribe` and the words of the log: change them
 * only with PROTOCOL.md.
 */
#include "event.h"

enum event_topic event_topic_of(enum event_type t)
{
    switch (t) {
    case EV_OUTCOME:
        return TOPIC_ERROR;
    case EV_FORCE:
    case EV_RESET:
    case EV_RELOAD:
        return TOPIC_OPERATOR;
    case EV_BOUND_HIT:
        return TOPIC_BOUND;
    case EV_ALERT:
        return TOPIC_ALERT;
    case EV_TRANSITION:
    case EV_VENUE_PAUSE:
    case EV_VENUE_RESYNC:
    case EV_HEARTBEAT_LOST:
    case EV_HEARTBEAT_RESTORED:
        break;
    }
    return TOPIC_STATE;
}

const char *event_type_name(enum event_type t)
{
    static const char *const names[] = {
        "transition",  "outcome",      "force",          "reset",
        "venue_pause", "venue_resync", "heartbeat_lost", "heartbeat_restored",
        "bound_hit",   "reload",       "alert"};

    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

const char *event_topic_name(enum event_topic t)
{
    switch (t) {
    case TOPIC_STATE:
        return "state";
    case TOPIC_ERROR:
        return "error";
    case TOPIC_ALERT:
        return "alert";
    case TOPIC_OPERATOR:
        return "operator";
    case TOPIC_BOUND:
        return "bound";
    }
    return "?";
}

const char *event_source_name(enum outcome_source s)
{
    static const char *const names[] = {"report", "permit_expired",
                                        "probe_lost", "disconnect", "cancel"};

    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

const char *event_outcome_name(enum outcome_kind k)
{
    static const char *const names[] = {"success", "failure", "ignore",
                                        "unknown"};

    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}
