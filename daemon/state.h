/*
 * state.h - the core's state: configuration, key registry, permit pool,
 * parked requests, retry budget, event sinks and counters.  Plain data
 * shared by the core's files (core.c, admit.c); the layers above reach it
 * through core.h.  No msgpack, no uv: answers that leave later (parked
 * requests) go through the caller's `answer` callback, which the RPC layer
 * supplies.
 */
#ifndef RESIL_STATE_H
#define RESIL_STATE_H

#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "event.h"
#include "keys.h"
#include "msgidx.h"
#include "permit.h"
#include "retry.h"

struct parked;
struct admit_result;
struct lease; /* a global limiter's lease (admit.c) */

/* The two FIFOs leases are on (admit.c): keys that want tokens, and keys
 * that hold tokens by the end of their hold. */
enum { LEASE_Q_WANT, LEASE_Q_HELD, LEASE_QUEUES };
struct lease_link {
    struct lease *prev, *next;
};
struct lease_fifo {
    struct lease *head, *tail;
    uint32_t n;
};

struct rpc_client;
struct prom_buf;
struct durable_ops;

#define CORE_MAX_SINKS 8      /* event consumers registered at start */
#define CORE_ERROR_SECONDS 60 /* recent_errors: this many 1 s buckets */
#define CORE_CLASSES 64   /* error classes counted by name; the rest "_other" */
#define CORE_COMPONENTS 8 /* parts that report to health (snapshot, ...) */
#define CORE_WAKE_KEYS 64 /* keys core_wake serves alone; more: all of them */

/*
 * Host-wide running totals of per-key figures, kept where the per-key
 * figure changes, so that `health` and the metrics page's _other rows cost
 * O(1) and O(metrics.max_keys), never a walk of every key (issue 14).
 * core.c keeps them; the sums are over every key in the registry.
 */
struct core_totals {
    /* Keys by what struct key's `tally` holds them as (core.c
     * track_health): by visible breaker state (enum breaker_visible; [0]
     * closed is not kept: keys.count minus the others), by health (enum
     * key_health; [0] operational not kept), open breakers, and critical
     * keys (on resild.critical) operational and unavailable. */
    uint32_t vis[6];
    uint32_t health[3];
    uint32_t open;
    uint32_t crit_up, crit_down;
    uint64_t dec[8];                   /* Σ key.decisions */
    uint64_t opens;                    /* Σ key.br.opens */
    uint64_t lat_hist[KEY_LATENCY_BUCKETS + 1]; /* Σ key.lat_hist */
    uint64_t lat_sum_ms;                        /* Σ key.lat_sum_ms */
    /* Over the keys whose policy has a limiter / a bulkhead: how many,
     * and Σ bh.in_use and Σ q_len of the latter. */
    uint32_t nlim, nbh;
    uint64_t bh_in_use, bh_queued;
};

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
    uint64_t parked;                /* acquire requests that had to wait */
    uint64_t parked_full;           /* could not wait: queue or pool full */
    uint64_t critical_probes;       /* critical calls through an open breaker */
    uint64_t share_spells; /* a global key's takes from its local share
                            * after leased ones (or its first) */
    uint64_t venue_pauses;          /* rate_limited reports that paused */
    uint64_t notifications_ignored; /* unknown or refused notifications */
    uint64_t cancels;               /* cancel that found its request */
    uint64_t reports_foreign;       /* report of another caller's permit */
    uint64_t outcomes[4];           /* by enum outcome_kind */
    uint64_t transitions;           /* breaker transitions emitted */
    uint64_t opens;                 /* of them, to open or forced open */
    uint64_t heartbeats;            /* heartbeat calls */
    uint64_t heartbeats_lost;       /* lost edges */
    uint64_t events;                /* events emitted */
    uint64_t subscribers_dropped;   /* did not read their events */
    uint64_t bounds[BOUND_COUNT];   /* by enum core_bound */
};

struct resild {
    struct config cfg;
    struct keys keys;
    struct permits permits;
    struct retry_budget budget; /* host-wide retry budget */
    struct parked *parked_pool; /* cfg.max_parked entries */
    struct parked *parked_free; /* free list */
    uint32_t parked_used;
    struct msgidx parked_ix; /* parked requests by (caller, msgid) */
    struct key *waiting;     /* keys with parked requests */
    struct metrics m;
    struct core_totals tot;
    int stopping;   /* SIGTERM: nothing parks any more */
    int wake_dirty; /* something any parked request waits for may have
                     * changed (a force, venue news, a reload, a lease):
                     * core_wake walks every parked request after this
                     * batch */
    /* Keys whose own queue may move (a permit of theirs ended, an outcome
     * or the tick changed their breaker): core_wake serves only these,
     * O(their parked requests), unless wake_dirty.  Past CORE_WAKE_KEYS
     * keys in one batch, wake_dirty instead.  Keys are never freed, so
     * the pointers stay good. */
    struct key *wake_keys[CORE_WAKE_KEYS];
    uint32_t nwake_keys;
    int wake_rearm;     /* a park lowered wake_next_ms: re-arm the timer */
    int wake_nopermit;  /* a parked request waits for the permit pool: a
                         * release anywhere may serve it (wake_dirty) */
    uint64_t wake_next_ms; /* when a parked request may next be served or
                            * must be answered: admit_next_wake at the last
                            * walk of all, lowered by each park and each
                            * key served since; 0: nothing parked */
    /* Set only while core_remote applies another daemon's change: the
     * events it emits carry it as ev.origin (core_emit). */
    const char *emit_origin;
    /* Global limiters' leases (core.h core_lease_*, admit.c). */
    struct {
        int on;            /* core_lease_mode: leases decide */
        uint64_t clock_ms; /* the latest now_ms the core was given (the
                            * tick, a wake, an acquire, a lease entry):
                            * core_lease_wanted's "now" */
        struct lease_fifo q[LEASE_QUEUES];
        struct lease *all; /* every lease record, for core_lease_mode */
    } lease;
    uint64_t start_ms; /* monotonic, for uptime */
    long pid;
    /* Event sinks, called in order by core_emit. */
    struct {
        event_sink_fn fn;
        void *ctx;
    } sinks[CORE_MAX_SINKS];
    unsigned nsinks;
    struct key *unwell; /* keys not operational (health), linked */
    /* Keys with a time-driven change due (an open period or a force TTL
     * ending, a heartbeat going silent): a min-heap by due_ms, max_keys
     * entries allocated at start, so the tick costs O(keys due), never a
     * walk of every open breaker or every heartbeat key. */
    struct key **due;
    uint32_t ndue;
    struct key *critical; /* keys whose policy is critical */
    uint32_t nunwell;
    /* recent_errors: failure/unknown outcomes per second, a ring. */
    uint64_t err_sec[CORE_ERROR_SECONDS];
    uint32_t err_count[CORE_ERROR_SECONDS];
    /* Failure and unknown outcomes by error class and severity (metrics):
     * the first CORE_CLASSES classes seen by name, the rest together. */
    struct {
        char cls[OUTCOME_CLASS_MAX + 1];
        uint64_t n[4]; /* by enum severity */
    } classes[CORE_CLASSES];
    uint32_t nclasses;
    uint64_t classes_other[4];
    uint32_t connections; /* gauge, kept by the server */
    /* Parts of the daemon that can fail on their own and say so in health
     * (snapshot, error_log, redis): core_component. */
    struct {
        char name[16];
        int ok;
        char detail[256];
    } components[CORE_COMPONENTS];
    unsigned ncomponents;
    /* Installed by main: re-read the configuration file and core_rebind.
     * 0 with *npolicies and a summary of the changes in msg, or -1 with
     * the reason in msg (the running configuration stays). */
    int (*reload)(void *ctx, uint32_t uid, char *msg, size_t cap,
                  size_t *npolicies);
    void *reload_ctx;
    /* Owned by main (analytics.h), fed by its sink; read by the `errors`
     * method.  NULL: analytics is not running (errors answers zeros). */
    struct analytics *analytics;
    /* Operator actions wait for these before they are answered (core.h,
     * snapshot.c's journal); NULL: answered at once. */
    const struct durable_ops *durable;
    /* The last metrics page (metrics.c): served again for
     * METRICS_CACHE_MS, so a client that asks in a loop costs one page
     * per interval, not one walk of every key per request. */
    struct {
        char *data; /* malloc'ed, len bytes; NULL: none yet */
        size_t len;
        uint64_t at_ms;
    } metrics_page;
    /* More families for the metrics page from parts outside the core
     * (redis.c): called at the end of each render.  NULL: none. */
    void (*metrics_extra)(void *ctx, struct prom_buf *b);
    void *metrics_extra_ctx;
    /* Owned by the RPC layer (methods.c): connections that subscribed. */
    struct rpc_client *subs;
    uint32_t nsubs;
};

/* Who is asking: filled by the server at accept. */
struct caller {
    struct permit *permits; /* head of this connection's permit list */
    uid_t uid;
    gid_t gid;
    int admin; /* may force, reset, reload */
    /* The answer to a parked request, msgid, decided now: res is the
     * decision, or NULL with err (RD_EPERMITS, RD_ENOMEM) when no permit
     * could be had.  Set by the RPC layer; it must only queue the answer
     * (no write, no close): it runs inside the core's walk. */
    void (*answer)(struct caller *c, uint32_t msgid, const struct key *k,
                   const struct admit_result *res, int err);
    struct parked *parked; /* this connection's parked requests */
    uint32_t nparked;
};

#endif
