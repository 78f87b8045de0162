/*
 * redis.h - Redis as a sink of the event stream and a source of shared
 * state (SPEC §7).  The server's side of the layers: it includes uv,
 * hiredis (through rlink.h) and msgpack, and writes log lines; the core
 * knows nothing of it and never waits on it.
 *
 * Modes (config "redis.mode"):
 * - mirror: every state change (a transition, a force, a reset, a venue
 *   pause, a heartbeat edge) marks its key; marked keys are written behind
 *   to `<prefix>key:<name>` in the snapshot's export form with the wall
 *   time of the write.  The queue of marked keys is bounded (redis.queue)
 *   and coalesces per key; a key that finds it full is dropped and counted,
 *   and a full re-write of every key follows once Redis can take it.  A
 *   daemon that starts with no state (no snapshot restored) reads every
 *   record back once Redis answers, and takes the keys it does not have,
 *   their remaining times shortened by the wall time since the write.
 * - shared: mirror, plus, for keys whose policy has scope "global":
 *   breaker changes made here (a trip, a probe that closed it, a force, a
 *   reset, a venue pause) are published on `<prefix>events` with this
 *   daemon's origin, a per-start epoch and a sequence; the other daemons
 *   apply them as `remote` changes (core_remote), ignoring their own
 *   echoes and anything older than what they already had from that
 *   origin.  Their global limiters take leases of tokens from a GCRA
 *   bucket kept by a Lua script on the Redis clock (`<prefix>gcra:<name>`)
 *   and give back what they did not use; while Redis is away each falls
 *   back to its share of the rate (1/expected_hosts).  After every
 *   (re)connect the records of global keys are read back and what is more
 *   cautious than the local state (an open breaker, a force) is applied.
 *
 * Never on a decision path: commands are queued on the loop and answered
 * later; a Redis that is slow, stopped or gone costs the decisions
 * nothing.  health.components.redis says what is wrong; metrics count it.
 */
#ifndef RESIL_REDIS_H
#define RESIL_REDIS_H

#include <stdint.h>
#include <uv.h>

struct resild;
struct server;
struct prom_buf;

/* Counters and gauges, shown by metrics (redis_metrics). */
struct redis_stats {
    int mode;                 /* enum redis_mode */
    int up;                   /* the command link is connected */
    int sub_up;               /* shared: the subscriber link is connected */
    int leasing;              /* shared: global limiters on leases */
    uint64_t queued;          /* mirror: keys waiting to be written */
    uint64_t writes;          /* key records written */
    uint64_t writes_failed;   /* write commands that got no OK */
    uint64_t writes_dropped;  /* keys not queued: the queue was full */
    uint64_t resyncs;         /* full re-writes after drops */
    uint64_t loaded;          /* keys taken from Redis at a warm start */
    uint64_t readbacks;       /* walks of the records (warm start, and in
                               * shared mode every reconnect of a link) */
    uint64_t published;       /* shared changes sent */
    uint64_t publish_dropped; /* changes not sent (Redis away or busy) */
    uint64_t received;        /* messages from the other daemons */
    uint64_t applied;         /* of them, applied here */
    uint64_t echoes;          /* our own messages back */
    uint64_t stale;           /* older than what we had from that origin */
    uint64_t rejected;        /* malformed, or for a key not global here */
    uint64_t lease_requests;  /* lease scripts run */
    uint64_t lease_tokens;    /* tokens leased */
    uint64_t lease_returned;  /* unused tokens given back */
    uint64_t lease_failures;  /* lease requests with no answer */
    uint64_t share_switches;  /* leasing went off: global limits on this
                               * host's share (Redis slow, away, failing) */
    uint64_t connects, disconnects, connect_failures, timeouts, failovers;
};

struct redis;

/*
 * Start (cfg.redis_mode != REDIS_OFF): register the sink with d, ready the
 * links and start connecting.  warm: the daemon restored no state, so the
 * mirror is read back once Redis answers.  Call after snapshot_start and
 * before the server listens.  0 and *out, or RD_ENOMEM / RD_EINVAL
 * (logged).
 */
int redis_start(struct redis **out, uv_loop_t *loop, struct resild *d,
                struct server *srv, uint64_t seed, int warm);

/* The server is stopping: write what is queued (for at most a second),
 * then close the links.  The loop ends once they are closed. */
void redis_drain(struct redis *r);

/* After server_start (and any other on_stop hook but systemd's): drain
 * when the server stops (chains the hook it finds). */
void redis_hook_stop(struct redis *r, struct server *srv);

/* After the loop ended: free everything. */
void redis_free(struct redis *r);

const struct redis_stats *redis_stats(const struct redis *r);

/* Append the redis families to a metrics page. */
void redis_metrics(const struct redis_stats *st, struct prom_buf *b);

#endif
