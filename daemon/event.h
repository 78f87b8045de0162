/*
 * event.h - what the core tells the rest of the daemon: one outcome record
 * that every source of an outcome builds (a report, a permit that expired,
 * a half-open probe lost with its connection, a disconnect, a cancel), and
 * typed events emitted from one place in the core (core_emit) to the sinks
 * registered at start (the log, subscribers; analytics, the error log,
 * snapshots and Redis later).
 *
 * Plain data: no msgpack, no uv, no I/O.  Pointers in an event are borrowed
 * for the duration of the sink call only; a sink that keeps anything copies
 * it.  A sink must not block and must not call back into the core.
 */
#ifndef RESIL_EVENT_H
#define RESIL_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "breaker.h"

struct key;

/* Where an outcome came from. */
enum outcome_source {
    SRC_REPORT,         /* a client's report */
    SRC_PERMIT_EXPIRED, /* permit_ttl_ms passed unreported: a timeout */
    SRC_PROBE_LOST,     /* a half-open probe's connection closed */
    SRC_DISCONNECT,     /* a permit's connection closed (not a probe) */
    SRC_CANCEL,         /* the client cancelled the acquire */
};

enum outcome_kind { OUT_SUCCESS, OUT_FAILURE, OUT_IGNORE, OUT_UNKNOWN };

#define OUTCOME_CLASS_MAX 64     /* bytes of an error class */
#define OUTCOME_MESSAGE_MAX 256  /* bytes of an error message kept */
#define OUTCOME_CID_MAX 128      /* bytes of a correlation id */
#define OUTCOME_CONTEXT_MAX 1024 /* bytes of the context, as sent (msgpack) */

/*
 * One outcome of one call.  The RPC layer fills it from a report (strings
 * borrowed from the request, bounded by the *_MAX above); the core fills it
 * for the other sources.  The core completes severity/transient from the
 * class when the report did not give them, and `stale` once it knows.
 */
struct outcome {
    struct key *key;
    uint64_t permit; /* 0: a report without a permit */
    enum outcome_kind kind;
    enum outcome_source source;
    const char *cls; /* NUL-terminated error class; "" = none */
    int severity;    /* enum severity (config.h); -1 = from the class */
    int transient;   /* 0/1; -1 = from the class */
    const char *message;
    size_t message_len;
    const char *correlation_id;
    size_t correlation_id_len;
    const void *context; /* the context map as msgpack bytes, or NULL */
    size_t context_len;
    int64_t latency_ms;     /* < 0: not given */
    uint64_t venue_wait_ms; /* error.retry_after_ms, 0 = none */
    int has_remaining;      /* limit.remaining was given */
    uint64_t remaining;     /* the venue's remaining count */
    uint32_t attempt;       /* 1 = first try */
    int idempotent;         /* 0: an unknown outcome must be reconciled */
    int stale;              /* set by the core */
    uint32_t uid;           /* who reported */
};

/* The bounds of SPEC §3 (and a few more), counted when hit. */
enum core_bound {
    BOUND_MAX_CLIENTS,     /* refused at connect: busy */
    BOUND_NOT_ALLOWED,     /* refused at connect: forbidden */
    BOUND_MAX_KEYS,        /* too_many_keys */
    BOUND_MAX_PERMITS,     /* busy on acquire */
    BOUND_MAX_PARKED,      /* could not wait: queue or pool full */
    BOUND_MAX_FRAME,       /* frame_too_large */
    BOUND_PROTOCOL,        /* protocol_error */
    BOUND_PARTIAL_TIMEOUT, /* slowloris closed */
    BOUND_OUTPUT,          /* a client that does not read, closed */
    BOUND_SUBSCRIBER,      /* a subscriber that does not read, dropped */
    BOUND_BAD_REQUEST,     /* bad_request answers */
    BOUND_COUNT
};

enum event_type {
    EV_TRANSITION,
    EV_OUTCOME,
    EV_FORCE,
    EV_RESET,
    EV_VENUE_PAUSE,
    EV_VENUE_RESYNC,
    EV_HEARTBEAT_LOST,
    EV_HEARTBEAT_RESTORED,
    EV_BOUND_HIT,
    EV_RELOAD, /* the configuration was re-read (operator topic) */
    EV_ALERT,  /* an analytics alert (alerts.h; alert topic) */
};

/* Subscription topics (bit masks), SPEC §3 subscribe. */
enum event_topic {
    TOPIC_STATE = 1 << 0,    /* transitions, venue pauses, heartbeats */
    TOPIC_ERROR = 1 << 1,    /* failure and unknown outcomes */
    TOPIC_ALERT = 1 << 2,    /* analytics alerts (EV_ALERT) */
    TOPIC_OPERATOR = 1 << 3, /* force, reset */
    TOPIC_BOUND = 1 << 4,    /* a bound was hit */
};
#define TOPIC_ALL 0x1f

struct event {
    enum event_type type;
    const struct key *key; /* NULL for host-wide events */
    uint64_t now_ms;       /* monotonic, set by core_emit */
    const char *origin;    /* NULL: this daemon; else the daemon a shared
                            * change came from (core_remote) */
    union {
        struct breaker_transition transition; /* from, to, cause */
        const struct outcome *outcome;
        struct {
            const char *state; /* open, closed, disabled, auto */
            const char *reason;
            uint64_t ttl_ms;
            uint32_t uid;
        } force;
        struct {
            uint32_t uid;
            uint64_t paused_ms_cleared; /* venue pause it ended */
        } reset;
        struct {
            uint64_t paused_ms;
            const struct key *reported_on;
        } venue_pause;
        struct {
            uint64_t remaining;
        } venue_resync;
        struct {
            uint64_t silent_ms;
        } heartbeat;
        struct {
            uint32_t uid; /* who asked (0 for SIGHUP: root's signal) */
            uint32_t policies, added, removed, changed;
        } reload;
        struct {
            const char *kind;    /* rate, breaker_open, predicted_trip */
            const char *rule;    /* the rule's name, or the kind */
            int rule_index;      /* errors.alerts index; -1: built-in kind */
            double rate_per_min; /* the key's failures over the last 60 s */
            uint64_t eta_s;      /* predicted_trip: seconds to the trip */
            const char *detail;  /* a line for people */
        } alert;
        struct {
            enum core_bound kind;
            const char *bound; /* its name: max_keys, max_permits, ... */
            const char *detail;
        } bound;
    } u;
};

/* A consumer of events.  Called in emission order, on the loop. */
typedef void (*event_sink_fn)(void *ctx, const struct event *ev);

/* The topic an event belongs to. */
enum event_topic event_topic_of(enum event_type t);

const char *event_type_name(enum event_type t);
const char *event_topic_name(enum event_topic t);
const char *event_source_name(enum outcome_source s);
const char *event_outcome_name(enum outcome_kind k);

#endif
