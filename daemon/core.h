/*
 * core.h - the decision core: owns the host's state (keys, permits, parked
 * requests, budgets) and the decision order, and is the one place where
 * every outcome lands and every state change is announced.
 *
 * Layering (ARCHITECTURE.md): the server moves bytes and calls the RPC
 * layer (methods.c) and the core's lifecycle; the RPC layer validates
 * arguments, calls the entries below and packs answers; the core decides
 * and emits typed events (event.h) to the sinks registered at start.  The
 * core and everything under it (admit, breaker, limiter, bulkhead, retry,
 * keys, permits) include no msgpack and no uv, read no clock (every entry
 * takes the monotonic now_ms) and write no logs: the log is a sink.
 *
 * Every outcome -- a report, a permit that expired, a probe lost with its
 * connection, a disconnect, a cancel -- goes through one entry (outcome()
 * in core.c), and every breaker transition is announced exactly once with
 * its cause, whatever revealed it (an acquire, a report, status, the tick).
 */
#ifndef RESIL_CORE_H
#define RESIL_CORE_H

#include <stdint.h>

#include "admit.h"
#include "event.h"
#include "retry.h"
#include "state.h"

/* Build the state from a loaded config (taken: d owns cfg afterwards).
 * seed: a random secret (hash seeds).  0, RD_ENOMEM or RD_EINVAL. */
int core_init(struct resild *d, struct config *cfg, uint64_t now_ms,
              uint64_t seed);
void core_free(struct resild *d);

/* Register a sink (at start, before any event).  0, or RD_ENOMEM when
 * CORE_MAX_SINKS are registered. */
int core_add_sink(struct resild *d, event_sink_fn fn, void *ctx);

/* Hand ev to every sink, in registration order. */
void core_emit(struct resild *d, struct event *ev, uint64_t now_ms);

/* A bound was hit: counted (metrics) and emitted.  k may be NULL. */
void core_bound(struct resild *d, enum core_bound b, const struct key *k,
                const char *detail, uint64_t now_ms);
const char *core_bound_name(enum core_bound b);

/*
 * A new configuration (reload): every key is matched again and takes its
 * new policy -- breaker options (a changed window layout starts an empty
 * window; state, timers and forces are kept), limiter (the tokens it has
 * are kept, cut to the new burst: a reload never refills a bucket; a
 * global limiter's bucket is its local share), bulkhead, heartbeat,
 * critical, scope (a key that becomes global gets its lease record; one
 * that stops being global asks for no more tokens and hands back what it
 * holds when its hold ends); ancestor limiters are resolved again on the
 * key's next use.  cfg's shares and scopes are derived again from the
 * redis section it carries (config_derive: main.c keeps the running one).
 * Takes cfg on success (d owns it; the old one is freed) and leaves it
 * with the caller on failure.  0, or RD_ENOMEM with nothing changed.
 * O(keys): for a reload, never a request.
 */
int core_rebind(struct resild *d, struct config *cfg, uint64_t now_ms);

/* A component's state for health (name <= 15 bytes, registered on first
 * call, at most CORE_COMPONENTS): ok, and a line for people.  A component
 * that is not ok makes health at least degraded. */
void core_component(struct resild *d, const char *name, int ok,
                    const char *detail);

/* --- lifecycle, for the server --- */

/* The server's connection count (a gauge for metrics and health). */
void core_set_connections(struct resild *d, uint32_t n);

/* 1 if something parked requests wait for changed since the last
 * core_wake (a release, a park, a force, venue news, a restored beat). */
int core_wake_due(const struct resild *d);

/* Serve or expire parked requests that can be answered now; returns when
 * the next one could be (a limiter refill or a deadline), 0 when nothing
 * is parked. */
uint64_t core_wake(struct resild *d, uint64_t now_ms);

/* Shutdown: nothing parks any more; every parked request is answered now
 * as if its wait had run out. */
void core_stop(struct resild *d, uint64_t now_ms);

/* A connection failed mid-stream (protocol error): its parked requests are
 * dropped unanswered now; its permits go when it closes. */
void core_caller_failed(struct resild *d, struct caller *c);

/*
 * The key name[0..n), created on first use and ready for admission.  0 and
 * *k, or RD_EINVAL (bad name), RD_EKEYS (max_keys), RD_ENOMEM, RD_EDEEP
 * (more ancestors with limiters than a key may have).
 */
int core_key(struct resild *d, const char *name, size_t n, uint64_t now_ms,
             struct key **k);

/* Apply what time changed for k (open -> half_open, force expiry) and
 * announce it.  Call before reading k's breaker. */
void core_advance(struct resild *d, struct key *k, uint64_t now_ms);

/* Announce k's breaker transitions since the last call (the admission
 * code calls it after each breaker decision). */
void core_sync(struct resild *d, struct key *k, uint64_t now_ms);

/* acquire: admit_acquire (see admit.h for the arguments and errors), with
 * transitions announced and the decision counted per key. */
int core_acquire(struct resild *d, struct caller *c, struct key *k,
                 uint64_t cost, int critical, uint64_t wait_ms, uint32_t msgid,
                 uint64_t now_ms, struct admit_result *res,
                 const struct key **culprit);

/* What core_report tells the RPC layer to answer. */
struct report_result {
    struct key *key; /* the key reported (NULL: foreign, unknown key) */
    int foreign;     /* another connection's permit: nothing changed */
    int stale;       /* counted in analytics only */
    int severity;    /* enum severity used */
    int transient;   /* used */
    int advised;     /* retry below is set (failure and unknown) */
    struct retry_advice retry;
};

/*
 * A client's report.  o is filled by the RPC layer (source SRC_REPORT,
 * strings borrowed); name[0..n) is the key it names.  A permit of another
 * connection changes nothing (rr->foreign).  0, RD_EINVAL when o->permit
 * is this connection's but was granted for another key, or a core_key
 * error.
 */
int core_report(struct resild *d, struct caller *c, struct outcome *o,
                const char *name, size_t n, uint64_t now_ms,
                struct report_result *rr);

/* cancel {msgid} (see admit_cancel): a parked acquire is answered
 * "cancelled"; a grant is released as an outcome of source SRC_CANCEL.
 * ADMIT_CANCEL_PARKED, ADMIT_CANCEL_RELEASED or 0. */
int core_cancel(struct resild *d, struct caller *c, uint32_t msgid,
                uint64_t now_ms);

/* Operator force of k (reason[0..rn) as given, cut to KEY_REASON_MAX on a
 * character boundary by the caller), by uid. */
void core_force(struct resild *d, struct key *k, enum breaker_force f,
                const char *reason, size_t rn, uint64_t ttl_ms, uint32_t uid,
                uint64_t now_ms);

/* Operator reset of k: breaker closed, force and venue pause cleared. */
void core_reset(struct resild *d, struct key *k, uint32_t uid, uint64_t now_ms);

/* A heartbeat for k: restores a lost heartbeat (announced). */
void core_heartbeat(struct resild *d, struct key *k, uint64_t now_ms);

/* 1 if k's heartbeat is lost now (announcing the edge once). */
int core_beat_lost(struct resild *d, struct key *k, uint64_t now_ms);

/* The caller's connection closed: its parked requests are dropped, its
 * permits end (a half-open probe as a failure, SRC_PROBE_LOST; the others
 * SRC_DISCONNECT). */
void core_caller_gone(struct resild *d, struct caller *c, uint64_t now_ms);

/* Housekeeping from the server's cron: expire permits (a timeout failure
 * each), announce what time changed (open time over, force expiry, lost
 * heartbeats), serve or expire parked requests. */
void core_tick(struct resild *d, uint64_t now_ms);

/* What core_tick does for the keys time changed (open time over, force
 * expiry, heartbeats lost), alone: O(keys due), for `health`. */
void core_advance_due(struct resild *d, uint64_t now_ms);

/* A report's or heartbeat's latency for k (keys_add_latency), counted in
 * d->tot as well. */
void core_add_latency(struct resild *d, struct key *k, uint64_t latency_ms);

/* k was just created (keys_get): counted in d->tot's per-policy totals.
 * Every creator calls it (core_key, admit_prepare's ancestors). */
void core_key_created(struct resild *d, const struct key *k);

/* Key health (SPEC §3 health). */
enum key_health { HEALTH_OPERATIONAL, HEALTH_DEGRADED, HEALTH_UNAVAILABLE };
enum key_health core_key_health(const struct key *k);
const char *core_health_name(enum key_health h);

/* Failure and unknown outcomes over the last CORE_ERROR_SECONDS. */
uint64_t core_recent_errors(const struct resild *d, uint64_t now_ms);

/* --- shared mode (redis.c; SPEC §7) -------------------------------------
 *
 * Breaker changes from another daemon, received through Redis pub/sub,
 * and global limiters fed by token leases.  The core knows nothing of
 * Redis: these entries are how redis.c hands it news and takes tokens
 * from it.
 */

enum remote_kind {
    REMOTE_OPEN,  /* the breaker opened there: open here for open_left_ms */
    REMOTE_CLOSE, /* a probe closed it there: the incident is over */
    REMOTE_FORCE, /* an operator forced it there (force auto included) */
    REMOTE_RESET, /* an operator reset it there */
    REMOTE_PAUSE, /* a venue 429 paused it there for paused_ms */
};

struct remote_change {
    enum remote_kind kind;
    uint64_t open_left_ms; /* REMOTE_OPEN: >= 1 */
    uint64_t open_for_ms;  /* REMOTE_OPEN: the open period's length */
    enum breaker_force force;
    uint64_t force_left_ms; /* REMOTE_FORCE: TTL left, 0 = until changed */
    const char *reason;     /* REMOTE_FORCE: as given, reason_len bytes */
    size_t reason_len;
    uint64_t paused_ms; /* REMOTE_PAUSE */
    const char *origin; /* the daemon it came from (NUL-terminated) */
};

/*
 * Apply a change made on another daemon to k, as that daemon's operator
 * or breaker would have, and announce it: transitions with cause
 * BREAKER_TC_REMOTE, EV_FORCE / EV_RESET / EV_VENUE_PAUSE as for a local
 * action; every event the change emits carries ev.origin = rc->origin (a
 * sink that shares changes must not send those back).  What time alone
 * had changed for k by now_ms (an open period over, a force expired) is
 * announced first, as local news without an origin.
 * - OPEN: an automatic breaker that is closed or half-open opens until
 *   now + open_left_ms (0 counts as 1), as a trip would (status
 *   opened_by "remote", the backoff step counted); one already open stays
 *   open until the later of its own end and that, announcing nothing.  A
 *   force stays on top (the state below it moves, unseen).  The key is
 *   on the deadline heap, so the tick takes it to half-open at that end.
 * - CLOSE: an automatic breaker that is open or half-open closes.
 * - FORCE: as core_force by uid 0 with ttl force_left_ms; the reason is
 *   cut to KEY_REASON_MAX bytes on a UTF-8 boundary.  Not journaled (a
 *   local force is, by the RPC layer); the next snapshot has it.
 * - RESET: as core_reset by uid 0 (the venue pause is cleared too).
 * - PAUSE: as a 429 reported on k: the nearest limiter (k's, an
 *   ancestor's, or k's own pause) stops everything for paused_ms (0: its
 *   pause_ms), announced on the key paused.
 * k's scope is not checked: redis.c applies what it shares.  Parked
 * requests see the new state at the next core_wake (wake_dirty is set).
 * O(1).
 */
void core_remote(struct resild *d, struct key *k,
                 const struct remote_change *rc, uint64_t now_ms);

/*
 * Global limiters.  A key whose policy is global and has a limiter takes
 * its tokens from a lease while leasing is on (core_lease_mode 1), and
 * from its local share (policy.limiter_share, k->lim) while it is off.
 * Leased tokens are held at most CORE_LEASE_HOLD_MS; what is left then is
 * handed back through core_lease_expired (for the Redis bucket).  Ancestor
 * keys that are global are leased the same way, each on its own.
 *
 * While leasing is on, a request passes a leased limiter when the tokens
 * held cover its cost (plus the policy's reserve unless it is critical)
 * and takes them; the venue pause still applies.  Short of tokens it is
 * denied, or parked, with retry_after_ms the time the global limit takes
 * to make its cost (at least 1 ms), and the key wants tokens; so does a
 * key whose tokens fell below half its lease size after a take.  Nothing
 * is ever admitted beyond what was granted.  While leasing is off, tokens
 * still held serve first, then the local share.  Every entry is O(1) but
 * core_lease_mode; nothing is allocated per request.
 */
#define CORE_LEASE_HOLD_MS 1000

/* Leasing on (Redis up, script ready) or off (fallback to the share).
 * Turning it off keeps the tokens held until their hold ends.  Turning it
 * on makes each key that took tokens since it last asked want a lease at
 * once (a walk of the global keys, once per change).  Parked requests
 * look again. */
void core_lease_mode(struct resild *d, int on, uint64_t now_ms);

/*
 * The next global key that wants tokens (its tokens fell below half its
 * lease size, or a request waits for more than it holds), with *want the
 * number to ask for: max(lease size, the most a short request needed
 * since the last grant) minus the tokens held.  NULL when none, and
 * always while leasing is off.  Each key is returned once per need: it is
 * asked again only after core_lease_grant or core_lease_failed.  A key
 * not to be asked before a time (a grant of 0, a failure) that is still
 * ahead of the latest now_ms the core was given (the tick, a wake, an
 * acquire, any core_lease_* entry: from a timer, call core_lease_expired
 * first) goes to the back; after a few of those in one call (8), NULL.
 */
struct key *core_lease_wanted(struct resild *d, uint64_t *want);

/* n tokens (possibly 0) granted for k at now_ms, held until now_ms +
 * CORE_LEASE_HOLD_MS (a grant renews the hold of all k holds; the tokens
 * held are capped at max(lease size, burst)); parked requests are looked
 * at again (wake_dirty).  retry_ms: when n is 0, Redis's wait until a
 * token frees (k asks again then, not before: it is queued again at once
 * if still short, and a grant of 0 renews no hold).  A key no longer
 * global keeps what it is granted until the hold ends, to hand it back. */
void core_lease_grant(struct resild *d, struct key *k, uint64_t n,
                      uint64_t retry_ms, uint64_t now_ms);

/* The request for k got no answer (Redis away): k may be asked for again
 * after retry_ms (at least 1; queued again at once if still short). */
void core_lease_failed(struct resild *d, struct key *k, uint64_t retry_ms,
                       uint64_t now_ms);

/* The next key whose hold ended by now_ms: its unused tokens leave the key
 * into *unused (to give back; may be 0).  NULL when none.  O(1) each.  A
 * key that took tokens during the hold wants a fresh lease at once; one
 * that did not is cold again (its next request decides on its share and
 * asks for a lease, as a new key's does). */
struct key *core_lease_expired(struct resild *d, uint64_t now_ms,
                               uint64_t *unused);

/* Tokens k holds now (a hold that ended counts until core_lease_expired
 * takes them), and its lease size: max(1, min(burst, ceil(rate x
 * redis.lease_ms / per_ms / redis.expected_hosts))); 0 when k is not a
 * global limiter. */
uint64_t core_lease_tokens(const struct key *k);
uint64_t core_lease_size(const struct resild *d, const struct key *k);

/* --- export and import (snapshot.c; SPEC §7) ---------------------------
 *
 * A key leaves in remaining-time form (breaker.h, limiter.h, heartbeat.h
 * say how each part does) and comes back under another monotonic clock
 * with the same remaining durations.  What does not survive: permits,
 * parked requests, probes in flight, latency samples, per-key decision
 * counters; the breaker's lifetime figures do.
 */

struct key_export {
    uint8_t len;
    char name[KEY_MAX + 1];
    uint8_t reason_len;
    char reason[KEY_REASON_MAX + 1]; /* force reason, as given */
    struct breaker_export br;
    /* The window, oldest first (br.window_time says which; br.nwin). */
    uint8_t win_calls[BREAKER_MAX_COUNT_WINDOW];
    struct breaker_export_bucket win_buckets[BREAKER_MAX_TIME_WINDOW];
    struct limiter_export lim;  /* the key's limiter (or its venue pause) */
    struct limiter_export crit; /* critical_probe_per_s through open */
    struct heartbeat_export hb;
    uint64_t retry_prev_ms; /* decorrelated jitter's last delay */
};

/* The host-wide retry budget by age (age_s 0: the current second). */
struct budget_export {
    uint32_t n;
    struct {
        uint32_t age_s, calls, retries;
    } b[RETRY_BUDGET_S];
};

/* Every key once, in no particular order: start with prev NULL and
 * *bucket 0, pass back what it returned.  NULL at the end.  Keys must not
 * be created or freed during the walk. */
struct key *core_key_next(const struct resild *d, const struct key *prev,
                          size_t *bucket);

/* k at now_ms into ex (a large struct: allocate it once).  Changes
 * nothing. */
void core_export_key(const struct key *k, uint64_t now_ms,
                     struct key_export *ex);

/* 0 if ex, read from outside, may be imported (valid name, enums and
 * counts in range), else RD_EINVAL. */
int core_export_check(const struct key_export *ex);

/*
 * The key ex names, created (or taken as it is) under the current
 * configuration, takes ex's state at now_ms; nothing is announced (the
 * health list follows).  ex must have passed core_export_check.  0, or a
 * core_key error (RD_EKEYS when max_keys is reached, ...).
 */
int core_import_key(struct resild *d, const struct key_export *ex,
                    uint64_t now_ms);

void core_export_budget(const struct resild *d, uint64_t now_ms,
                        struct budget_export *ex);
/* Any values are safe (ages out of range are dropped). */
void core_import_budget(struct resild *d, uint64_t now_ms,
                        const struct budget_export *ex);

/*
 * Durable operator actions (SPEC §7: force and reset are on disk before
 * they are acknowledged).  The snapshot module registers these; the RPC
 * layer, after core_force or core_reset for request msgid of c, calls
 * wait() and, when it returns 0, answers only in done() (err 0: on disk;
 * < 0: applied but not on disk).  done runs on the loop, later, outside
 * any request; like caller->answer it must only queue the answer.  forget
 * is called when c's connection closes: its waits end without done.
 */
typedef void (*durable_done_fn)(struct caller *c, uint32_t msgid, struct key *k,
                                int err, uint64_t now_ms);
struct durable_ops {
    int (*wait)(void *ctx, struct caller *c, uint32_t msgid, struct key *k,
                durable_done_fn done);
    void (*forget)(void *ctx, struct caller *c);
    void *ctx;
};

/* ops (borrowed, NULL: answers at once) for the RPC layer. */
void core_set_durable(struct resild *d, const struct durable_ops *ops);

#endif
