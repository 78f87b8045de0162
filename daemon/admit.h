/*
 * admit.h - the admission pipeline of `acquire` (SPEC §4 "Decisions"):
 * forced state and breaker, bulkhead, then the key's limiter and every
 * ancestor limiter, all or nothing; parking of requests that may wait; the
 * critical lane; venue feedback (429 pauses, rate-limit re-sync).
 *
 * Part of the core (core.h): no I/O, no msgpack, no clock reads (the
 * caller passes the monotonic now_ms).  Answers to parked requests leave
 * through caller->answer.  Nothing is allocated per request but the
 * permit pool's growth, up to max_permits.
 */
#ifndef RESIL_ADMIT_H
#define RESIL_ADMIT_H

#include <stdint.h>

#include "state.h"

#define ADMIT_DEFAULT_QUEUE 64 /* parked per key when no bulkhead queue */

/* key.admit_ready: 0 never prepared; ADMIT_READY prepared; ADMIT_REBOUND
 * the configuration changed, ancestors to find again. */
#define ADMIT_READY 1
#define ADMIT_REBOUND 2

enum admit_reason {
    ADMIT_OK,
    ADMIT_CIRCUIT_OPEN,
    ADMIT_HALF_OPEN_BUSY,
    ADMIT_FORCED_OPEN,
    ADMIT_RATE_LIMITED,
    ADMIT_BULKHEAD_FULL,
    ADMIT_CANCELLED,      /* the client sent cancel for it */
    ADMIT_HEARTBEAT_LOST, /* the key's heartbeats stopped */
};
#define ADMIT_NREASONS 8

struct admit_result {
    int allow;
    int parked; /* the answer will come later */
    enum admit_reason reason;
    uint64_t retry_after_ms; /* exact when known, else 0 */
    uint64_t permit;         /* id when allowed */
    int shadow;              /* allowed only because of shadow: true */
    enum admit_reason shadow_reason;
    int err; /* no permit: RD_EPERMITS or RD_ENOMEM */
};

/* Pools; called once the config is in d.  seed: a random secret for the
 * msgid index.  0, or RD_ENOMEM. */
int admit_init(struct resild *d, uint64_t seed);
void admit_free(struct resild *d);

/*
 * Make k ready for admission: its limiter and bulkhead state and its chain
 * of ancestor keys that have limiters (created when missing).  Idempotent.
 * Returns 0, a keys_get error when an ancestor cannot be created (RD_EKEYS,
 * RD_ENOMEM), or RD_EDEEP when more ancestors have limiters than
 * KEY_MAX_ANCESTORS.
 */
int admit_prepare(struct resild *d, struct key *k, uint64_t now_ms);

/*
 * Decide an acquire of cost for k by caller c.  wait_ms > 0 lets a request
 * denied by the bulkhead or a limiter wait, parked, for up to wait_ms (it is
 * then answered through the caller with msgid; a grant is indexed under
 * msgid for admit_cancel).  Returns 0 with *res, or RD_E2BIG (cost can never
 * fit: over a limiter's burst, or, for a normal request, over burst minus
 * reserve; *culprit names the limiter's key), RD_EPERMITS (max_permits
 * outstanding) or RD_ENOMEM.  While d->stopping nothing parks.
 */
int admit_acquire(struct resild *d, struct caller *c, struct key *k,
                  uint64_t cost, int critical, uint64_t wait_ms, uint32_t msgid,
                  uint64_t now_ms, struct admit_result *res,
                  const struct key **culprit);

const char *admit_reason_name(enum admit_reason r);

/* A permit ended (its outcome is the core's business): its bulkhead slot
 * and the permit go back. */
void admit_permit_done(struct resild *d, struct permit *p);

/* Serve or expire parked requests that can be answered now: every
 * parked request, O(parked); sets d->wake_next_ms (admit_next_wake). */
void admit_wake(struct resild *d, uint64_t now_ms);

/* Something k's own parked requests wait for changed (a slot, a probe,
 * its breaker): k goes on d->wake_keys for the next core_wake (every key,
 * wake_dirty, when a request waits for the permit pool or the list is
 * full).  Nothing when k has none parked.  O(CORE_WAKE_KEYS). */
void admit_wake_later(struct resild *d, struct key *k);

/* Serve the keys on d->wake_keys (emptied) and lower d->wake_next_ms by
 * when their queues may next move: O(their parked requests). */
void admit_wake_keys(struct resild *d, uint64_t now_ms);

/* Shutdown: answer every parked request now, as if its wait had run out. */
void admit_wake_all_now(struct resild *d, uint64_t now_ms);

/* When admit_wake next has something to do: 0 = nothing parked. */
uint64_t admit_next_wake(const struct resild *d, uint64_t now_ms);

/* The caller's connection closed: drop its parked requests unanswered. */
void admit_caller_gone(struct resild *d, struct caller *c);

/*
 * cancel {msgid} from c, the parked half: a parked acquire with that msgid
 * is answered at once (allow false, reason "cancelled").  Returns
 * ADMIT_CANCEL_PARKED, or 0 (the core then looks for a grant).  O(1).
 */
enum { ADMIT_CANCEL_PARKED = 1, ADMIT_CANCEL_RELEASED = 2 };
int admit_cancel(struct resild *d, struct caller *c, uint32_t msgid);

/* Venue feedback for k: a 429 pauses the nearest limiter (self, else the
 * nearest ancestor with one, else k's own pause) for ms (0 = pause_ms) and
 * returns the key paused; `remaining` from the venue's headers re-syncs
 * that limiter and returns its key, or NULL when it has no limiter. */
struct key *admit_venue_pause(struct resild *d, struct key *k, uint64_t now_ms,
                              uint64_t ms);
struct key *admit_venue_sync(struct resild *d, struct key *k, uint64_t now_ms,
                             uint64_t remaining);

/* Bytes of one parked-request entry (struct parked is private here):
 * for the worst-case memory figure (memory.c). */
size_t admit_parked_bytes(void);

/* The conf k->lim runs under for policy p: its limiter; for a global one,
 * its local share (policy.limiter_share); without a limiter, a stand-in
 * whose only use is the venue pause.  Snapshots export and import k->lim
 * under it, and a rebind converts between the old and the new one. */
const struct limiter_conf *admit_policy_lim_conf(const struct policy *p);
const struct limiter_conf *admit_lim_conf(const struct key *k);

/* Whole tokens k's own limiter could hand out now (status, metrics): a
 * global one's leased tokens still held, plus, while leasing is off, its
 * local share's. */
uint64_t admit_available(struct key *k, uint64_t now_ms);

/*
 * Global limiters' leases: the workings of core.h's core_lease_* (see
 * there; the core stamps d->lease.clock_ms before calling).  A key is
 * leased while its policy is global with a limiter and it has a lease
 * record: allocated by admit_prepare on first use, or by core_rebind
 * (admit_lease_new, phase 1, then admit_lease_attach) for a key that
 * becomes global; freed with the key (keys_free).  admit_lease_rebound:
 * k's policy changed; a key no longer global leaves the wanted FIFO (what
 * it holds is handed back when its hold ends).
 */
int admit_policy_leased(const struct policy *p);
struct lease *admit_lease_new(void); /* NULL: out of memory */
void admit_lease_attach(struct resild *d, struct key *k, struct lease *l);
void admit_lease_rebound(struct resild *d, struct key *k);
void admit_lease_mode(struct resild *d, int on);
struct key *admit_lease_wanted(struct resild *d, uint64_t *want);
void admit_lease_grant(struct resild *d, struct key *k, uint64_t n,
                       uint64_t retry_ms, uint64_t now_ms);
void admit_lease_failed(struct resild *d, struct key *k, uint64_t retry_ms,
                        uint64_t now_ms);
struct key *admit_lease_expired(struct resild *d, uint64_t now_ms,
                                uint64_t *unused);
uint64_t admit_lease_tokens(const struct key *k);
uint64_t admit_lease_size(const struct resild *d, const struct key *k);
/* Bytes of one lease record (memory.c). */
size_t admit_lease_bytes(void);

#endif
