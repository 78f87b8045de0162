/*
 * state.h - the daemon's state, shared by the method handlers (methods.c)
 * and the admission pipeline (admit.c): configuration, key registry,
 * permit pool, parked requests, retry budget and counters.  Plain data; the
 * server owns the one instance.
 */
#ifndef RESIL_STATE_H
#define RESIL_STATE_H

#include <msgpack.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "keys.h"
#include "permit.h"
#include "retry.h"

struct parked;

/* Counters shown by `metrics` (issue: metrics method) and in logs. */
struct metrics {
    uint64_t requests;
    uint64_t protocol_errors;
    uint64_t frames_too_large;
    uint64_t bad_requests;
    uint64_t clients_rejected;    /* over max_clients or not allowed */
    uint64_t slow_clients_closed; /* partial object past the deadline */
    uint64_t slow_readers_closed; /* did not read their answers */
    uint64_t inflight_limited;    /* connection paused at the in-flight cap */
    uint64_t keys_full;
    uint64_t permits_full;
    uint64_t permits_expired;
    uint64_t probes_lost;
    uint64_t shadow_denied;
    uint64_t parked;          /* acquire requests that had to wait */
    uint64_t parked_full;     /* could not wait: queue or pool full */
    uint64_t critical_probes; /* critical calls through an open breaker */
    uint64_t venue_pauses;    /* rate_limited reports that paused */
    /* Notifications of unknown methods, ignored (SPEC §3). */
    uint64_t notifications_ignored;
};

struct resild {
    struct config cfg;
    struct keys keys;
    struct permits permits;
    struct retry_budget budget; /* host-wide retry budget */
    struct parked *parked_pool; /* cfg.max_parked entries */
    struct parked *parked_free; /* free list */
    uint32_t parked_used;
    struct key *waiting; /* keys with parked requests */
    struct metrics m;
    int stopping;      /* SIGTERM: nothing parks any more */
    int wake_dirty;    /* something a parked request waits for may have
                        * changed (a release, a park, a force, venue news):
                        * the server runs admit_wake after this batch */
    uint64_t start_ms; /* monotonic, for uptime */
    long pid;
};

/* Who is asking: filled by the server at accept. */
struct caller {
    struct permit *permits; /* head of this connection's permit list */
    uid_t uid;
    gid_t gid;
    int admin; /* may force, reset, reload */
    /* For answers sent later (parked requests): pack into *pk, then call
     * flush(caller).  Set by the server; valid until the caller is gone. */
    msgpack_packer *pk;
    void (*flush)(struct caller *c);
    struct parked *parked; /* this connection's parked requests */
    uint32_t nparked;
};

#endif
