/*
 * resil.h - libresil, the C client of resild.  The only public header.
 *
 * A trading service asks resild before calling an exchange ("may I?") and
 * reports what happened afterwards.  Every call has a deadline (default
 * 5 ms) and never blocks past it: connect is non-blocking, I/O is polled.
 * When the daemon is unreachable, stalled or answers garbage, the call
 * returns a *fallback* decision chosen by the fail mode (RESIL_FAIL_OPEN
 * allows, RESIL_FAIL_CLOSED denies) with `fallback` set.  After a
 * connection failure (no socket, connection refused, backlog full,
 * connection lost, EOF) or a garbage answer the handle reconnects by
 * itself after a short back-off (50 ms doubling to 1 s); calls during the
 * back-off fall back at once, without touching the socket.  A call that
 * merely runs out of time on a live connection starts no back-off: the
 * next call asks the daemon again.

 * A handle is safe to share between threads: calls are serialised by a
 * mutex inside, and a call holds the handle for its whole round trip, a
 * parked acquire (wait_ms) included.  Give a thread that parks, or whose
 * calls must never queue behind others (order cancels), its own handle.
 * Do not fork while another thread is inside a call on a handle the child
 * will use (the child would find the mutex held); a handle used in a child
 * opens its own connection.  No call raises SIGPIPE.  acquire/report/
 * heartbeat/status allocate nothing once the handle is open.  Events
 * (resil_subscribe) take a handle of their own: see "live events" below.
 *
 * A call whose deadline passes after its request went out keeps the
 * connection (a connection's permits go back to the daemon when it
 * closes, other threads' included); the late answer is skipped.  An
 * acquire given up on is cancelled at once (a "cancel" notification,
 * written without waiting): the daemon denies it if it was still parked
 * and takes back a permit it already granted, so a late grant never
 * expires into a timeout failure.  If the socket cannot take the cancel,
 * the connection is dropped instead, which releases all its permits.
 *
 * Return values: 0 on an answer from the daemon; a negative RESIL_E* code
 * otherwise (the out-struct then holds the fallback decision).  Two
 * exceptions deny whatever the fail mode, because they are the caller's
 * bugs and a fallback allow would trade unchecked:
 *   - RESIL_EINVAL: an argument is malformed (NULL handle, NULL or malformed
 *     key, cost or wait_ms over its bound, bad fail mode...).  Nothing is
 *     sent; the decision is allow 0, fallback 1 (the daemon was not
 *     consulted), reason "invalid_argument".  Each call lists its checks.
 *   - RESIL_EREMOTE with error_code "bad_request": the daemon refused the
 *     acquire (e.g. a cost no limiter can ever grant); allow 0, fallback
 *     0, reason "error".
 */
#ifndef RESIL_H
#define RESIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct resil resil_t;

/* What a call decides when the daemon cannot (unreachable, too slow,
 * garbage, busy): allow or deny.  DEFAULT (0, what a zeroed opts struct
 * holds) means the handle's mode; the handle's own default is OPEN. */
enum resil_fail_mode {
    RESIL_FAIL_DEFAULT = 0,
    RESIL_FAIL_OPEN = 1,
    RESIL_FAIL_CLOSED = 2
};

enum resil_outcome {
    RESIL_SUCCESS = 0,
    RESIL_FAILURE = 1,
    RESIL_IGNORE = 2,
    RESIL_UNKNOWN = 3,
};

/* Negative return codes. */
enum {
    RESIL_ETIMEDOUT = -1, /* deadline passed before the answer */
    RESIL_ECONN = -2,     /* cannot connect / connection lost / in back-off */
    RESIL_EPROTO = -3,    /* daemon answered something unreadable */
    RESIL_EREMOTE = -4,   /* daemon answered with an error (see error_code) */
    RESIL_EINVAL = -5,    /* bad argument from the caller */
    RESIL_ENOMEM = -6,
};

/* Open a handle.  path NULL resolves like the daemon does: $RESILD_SOCKET,
 * /run/resild/resild.sock when /run/resild exists, $XDG_RUNTIME_DIR/
 * resild.sock, /tmp/resild.sock.  Does not connect yet (the first call
 * does), so it succeeds while the daemon is down.  NULL only on ENOMEM. */
resil_t *resil_open(const char *path);
void resil_close(resil_t *r);

/* Defaults for calls that pass deadline_ms = 0 / no fail mode.  A value
 * out of range (deadline_ms <= 0, another fail mode) is ignored. */
void resil_set_deadline(resil_t *r, int deadline_ms);         /* default 5 */
void resil_set_fail_mode(resil_t *r, enum resil_fail_mode m); /* default open */
/* The socket path in use (borrowed). */
const char *resil_path(const resil_t *r);

struct resil_acquire_opts {
    uint32_t cost;    /* 0 means 1; over 1,000,000,000: RESIL_EINVAL */
    uint32_t wait_ms; /* park server-side up to this long; 0 = answer now;
                       * over 3,600,000: RESIL_EINVAL */
    int critical;     /* priority "critical" */
    int deadline_ms;  /* 0 = handle default; < 0: RESIL_EINVAL; should
                       * exceed wait_ms */
    int fail_mode;    /* enum resil_fail_mode; 0 = the handle's.  Any other
                       * value: RESIL_EINVAL with a deny */
};

struct resil_decision {
    int allow;               /* 1 = go ahead */
    uint64_t permit;         /* pass to resil_report; 0 when denied/fallback */
    char state[16];          /* "closed", "open", "half_open", ... */
    char reason[24];         /* "ok", "circuit_open", ..., "fallback",
                              * "invalid_argument" (RESIL_EINVAL) */
    uint64_t retry_after_ms; /* when denied: not before this long; 0 unknown */
    int fallback;            /* 1 = daemon not consulted (see return code) */
    char error_code[24];     /* daemon's error code on RESIL_EREMOTE */
};

/* Ask whether `key` may be called.  opts may be NULL.  RESIL_EINVAL with a
 * deny (nothing sent) when r is NULL, key is NULL or not
 * [A-Za-z0-9._:-]{1,128}, or opts breaks a bound above; out NULL is
 * RESIL_EINVAL with nothing filled. */
int resil_acquire(resil_t *r, const char *key,
                  const struct resil_acquire_opts *opts,
                  struct resil_decision *out);

struct resil_report {
    const char *key; /* required */
    uint64_t permit; /* from resil_acquire; 0 = none */
    enum resil_outcome outcome;
    int64_t latency_ms;         /* < 0 = not given */
    const char *error_class;    /* e.g. "network.reset"; NULL = none */
    const char *error_message;  /* NULL = none */
    int64_t retry_after_ms;     /* venue's Retry-After; < 0 = not given */
    uint32_t attempt;           /* 0 means 1 */
    int non_idempotent;         /* 1 = idempotent: false */
    const char *correlation_id; /* NULL = none */
    int deadline_ms;            /* 0 = handle default */
};

struct resil_report_result {
    char state[16];
    int stale;         /* permit predates the breaker's last change */
    char severity[12]; /* classification, when the daemon gave one */
    int transient;
    int retry; /* retry advice (failure/unknown outcomes) */
    uint64_t retry_delay_ms;
    char retry_reason[20];
    char error_code[24]; /* daemon's error code on RESIL_EREMOTE */
};

/* Report the outcome of a call.  out may be NULL.  RESIL_EINVAL (nothing
 * sent) when r or rep is NULL, rep->key is not a valid key, outcome is
 * not a resil_outcome, deadline_ms < 0, latency_ms or retry_after_ms is
 * over 30 days, attempt over 1,000,000, error_class not
 * [A-Za-z0-9._:-]{1,64}, or the request exceeds 64 KiB. */
int resil_report(resil_t *r, const struct resil_report *rep,
                 struct resil_report_result *out);

/* ping: fills version (cap bytes) and pid; either may be NULL.
 * RESIL_EINVAL when r is NULL or deadline_ms < 0. */
int resil_ping(resil_t *r, int deadline_ms, char *version, size_t cap,
               long *pid);

/*
 * Generic call for status, force, reset and anything else: params_mp is a
 * msgpack-encoded map (or NULL for none).  On 0, *result and *result_len hold
 * the msgpack-encoded result (malloc'ed, caller frees; answers up to
 * 16 MiB, a larger one is RESIL_EPROTO with errno EMSGSIZE).  On RESIL_EREMOTE
 * the error code and message are copied to code/msg (cap bytes each, may be
 * NULL).  RESIL_EINVAL (nothing sent) when r, method, result or
 * result_len is NULL, method is empty or over 64 bytes, deadline_ms < 0,
 * or params_mp is not exactly one map.  A timed-out "acquire" through
 * resil_call is cancelled like one through resil_acquire.
 */
int resil_call(resil_t *r, const char *method, const void *params_mp,
               size_t params_len, int deadline_ms, void **result,
               size_t *result_len, char *code, char *msg, size_t cap);

/* --- heartbeat ------------------------------------------------------------ */

struct resil_heartbeat_result {
    char state[16];      /* the key's breaker state after the beat */
    char error_code[24]; /* daemon's error code on RESIL_EREMOTE */
};

/*
 * Tell the daemon that `key` (a data feed, a websocket...) is alive.  A key
 * whose policy has heartbeat.timeout_ms and whose beats stop for longer is
 * denied by acquire with reason "heartbeat_lost" until the next beat.
 * latency_ms < 0 sends none.  out may be NULL.  RESIL_EINVAL (nothing
 * sent) when r is NULL, key is not a valid key, latency_ms is over 30
 * days or deadline_ms < 0 (0 = handle default).  Allocates nothing once
 * the handle is open.  Unlike acquire there is no fallback decision: a
 * beat that fails (RESIL_ECONN/ETIMEDOUT) simply did not count.
 */
int resil_heartbeat(resil_t *r, const char *key, int64_t latency_ms,
                    int deadline_ms, struct resil_heartbeat_result *out);

/* --- one key's status ----------------------------------------------------- */

/*
 * One key's status (the daemon's per-key status map, SPEC 3), decoded into
 * fixed-size fields for a service that shows or checks a key.  Strings are
 * the daemon's bytes, NUL-terminated and cut to their buffer (the daemon
 * sends printable names; escape them yourself before a terminal if you do
 * not trust it).  A number the daemon did not send is 0; a string "".
 */
struct resil_key_status {
    int found;           /* 0: the daemon has no such key yet (all else 0) */
    char key[129];       /* the key */
    char policy[129];    /* the policy pattern that matched, e.g. "binance.*" */
    char state[16];      /* closed, open, half_open, forced_open, ... */
    char health[16];     /* operational, degraded, unavailable */
    char opened_by[24];  /* cause of the last open: failures, ... */
    uint64_t since_ms;   /* time in the current state */
    uint64_t calls;      /* lifetime */
    uint64_t failures;   /* lifetime */
    double failure_rate; /* percent, over the breaker's window */
    double slow_rate;    /* percent, over the breaker's window */
    uint64_t opens;      /* times opened */
    uint64_t retry_after_ms; /* while open: until the next probe */
    uint64_t outstanding;    /* permits not yet reported */
    uint64_t latency_p50_ms, latency_p99_ms;
    int has_limiter; /* the limiter fields below are meaningful */
    uint64_t limiter_rate, limiter_per_ms, limiter_burst, limiter_available,
        limiter_paused_ms; /* paused_ms: a venue pause (429) left */
    int has_bulkhead;      /* the bulkhead fields below are meaningful */
    uint64_t bulkhead_in_use, bulkhead_max, bulkhead_queued;
    int forced;             /* an operator pinned the state (force/trip) */
    char force_reason[128]; /* cut to 127 bytes */
    uint64_t force_ttl_ms;  /* 0: until undone */
    char error_code[24];    /* daemon's error code on RESIL_EREMOTE */
};

/*
 * Fetch one key's status ("status" {"key": key}).  0 with out filled
 * (out->found 0 when the daemon does not know the key yet: it makes keys
 * on first use).  RESIL_EINVAL (nothing sent, out zeroed) when r or out
 * is NULL, key is not a valid key or deadline_ms < 0.  Allocates nothing
 * once the handle is open; a status map over 64 KiB is RESIL_EPROTO.
 */
int resil_status(resil_t *r, const char *key, int deadline_ms,
                 struct resil_key_status *out);

/* --- live events ----------------------------------------------------------
 *
 * A handle that subscribes becomes an *event handle* for the rest of its
 * life: open one with resil_open just for events.  Trading calls on an
 * event handle (acquire, report, heartbeat, status, ping, resil_call) are
 * refused with RESIL_EINVAL (acquire denies), because events share the
 * connection: a trading call would queue behind a burst of events, and a
 * thread parked in a trading call would leave events unread until the
 * daemon drops the connection (it closes a subscriber whose unread output
 * passes its output bound; the daemon never slows down for a reader).
 *
 * Delivery.  Events are read only when the application asks: in
 * resil_poll_events (never blocks) and, for events read together with the
 * daemon's answer, in resil_subscribe/resil_unsubscribe.  Each event is
 * handed to the callback as a struct resil_event that borrows from the
 * handle's receive buffer: everything in it (raw included) is valid only
 * until the callback returns; copy what you keep.  Events come in the
 * order the daemon sent them.  No allocation per event (an event over the
 * handle's 8 KiB decode chunk costs one, freed before the next).  A
 * callback must not call libresil on the same handle (RESIL_EINVAL); it
 * may on other handles, but a trading thread should not run callbacks.
 *
 * Event loops (epoll, libuv, poll): add resil_fd() after resil_subscribe
 * returns 0, wait for readability (level-triggered: epoll without
 * EPOLLET, libuv uv_poll, poll), and call resil_poll_events(r, max).  It
 * delivers at most max events and returns how many; when it returns max,
 * more may already be buffered inside the handle where the fd does not
 * show them: call it again (e.g. from an idle/prepare hook) until it
 * returns less than max.  Whenever resil_subscribe, resil_unsubscribe or
 * resil_poll_events returns otherwise, no complete event is left inside
 * the handle, so waiting for the fd loses nothing.  It reads at most
 * 256 KiB from the socket per call, so a flooding daemon cannot hold the
 * caller (the socket then stays readable).
 *
 * Loss.  When the daemon closes the connection (it went away, or dropped
 * this subscriber for not reading), resil_poll_events returns RESIL_ECONN
 * (RESIL_EPROTO for garbage) and keeps returning it; the fd stays open
 * (EOF, so it stays readable) so that an event loop can stop watching it
 * before it is closed.  Then call resil_subscribe again (it closes the
 * old fd and connects anew: take resil_fd() again) and re-read state
 * (resil_status or "health"): events in between are lost.
 *
 * Thread safety: like every call, these take the handle's mutex; one
 * thread polling a handle is the intended use.
 */

/* Topics, a bit mask (SPEC 3 subscribe). */
enum {
    RESIL_TOPIC_STATE = 1u << 0,    /* transitions, venue pause/resync,
                                     * heartbeat lost/restored */
    RESIL_TOPIC_ERROR = 1u << 1,    /* failure and unknown outcomes */
    RESIL_TOPIC_ALERT = 1u << 2,    /* analytics alerts (reserved) */
    RESIL_TOPIC_OPERATOR = 1u << 3, /* force, reset */
    RESIL_TOPIC_BOUND = 1u << 4,    /* a daemon bound was hit */
    RESIL_TOPIC_ALL = (1u << 5) - 1
};

/*
 * One event.  The decoded fields are "" / 0 when the event does not carry
 * them; strings are the daemon's bytes, NUL-terminated, cut to their
 * buffer.  `raw` is the event map exactly as the daemon sent it (msgpack);
 * resil_event_str/uint/bool read any other field from it.
 */
struct resil_event {
    unsigned topic;      /* one RESIL_TOPIC_* bit; 0: a topic unknown here */
    char topic_name[16]; /* "state", "error", ... as sent */
    char type[24];       /* "transition", "outcome", "force", "bound_hit"... */
    char key[129];       /* the key it concerns, "" when none */
    uint64_t ts_ms;      /* wall-clock ms since the epoch (daemon's clock) */
    /* type "transition": */
    char from[16], to[16]; /* state names */
    char cause[24];        /* failures, failure_rate, ..., force, remote */
    /* type "outcome": */
    char outcome[12];     /* failure, unknown */
    char error_class[65]; /* "" when none */
    char severity[12];    /* low, medium, high, critical */
    const void *raw;      /* the event map (msgpack), borrowed */
    size_t raw_len;
    const void *priv; /* for resil_event_*; do not touch */
};

typedef void (*resil_event_fn)(const struct resil_event *ev, void *arg);

/* What (un)subscribe answered. */
struct resil_topics_result {
    unsigned subscribed; /* RESIL_TOPIC_* bits subscribed now, per the
                          * daemon (names unknown here are left out) */
    char error_code[24]; /* daemon's error code on RESIL_EREMOTE */
};

/*
 * Subscribe this handle to `topics` (RESIL_TOPIC_* bits; adds to those
 * already subscribed on the connection) and make it an event handle.  fn
 * (required) is called with arg for every event, from inside
 * resil_poll_events (and resil_subscribe/resil_unsubscribe, see above);
 * a later resil_subscribe replaces fn and arg.  out may be NULL; on 0,
 * out->subscribed holds every topic now subscribed, as the daemon says.
 * RESIL_EINVAL (nothing sent) when r or fn is NULL, topics is 0 or has a
 * bit outside RESIL_TOPIC_ALL, deadline_ms < 0, or called from this
 * handle's callback.  After a lost connection it reconnects (new fd).
 */
int resil_subscribe(resil_t *r, unsigned topics, resil_event_fn fn, void *arg,
                    int deadline_ms, struct resil_topics_result *out);

/* Drop `topics` (0: all) from this connection's subscription; the handle
 * stays an event handle.  out (may be NULL) gets what remains.
 * RESIL_EINVAL as for resil_subscribe; RESIL_ECONN (nothing sent) when
 * the event connection is not up. */
int resil_unsubscribe(resil_t *r, unsigned topics, int deadline_ms,
                      struct resil_topics_result *out);

/* The event handle's socket, for an event loop (readable: call
 * resil_poll_events), or -1 when r is NULL, not an event handle or not
 * connected.  It changes when resil_subscribe reconnects. */
int resil_fd(const resil_t *r);

/*
 * Deliver the events already received, reading what the socket holds
 * without waiting: at most max_events (1..65536) callbacks.  Returns the
 * number delivered (0: nothing pending), RESIL_ECONN when the connection
 * is gone (see "Loss" above), RESIL_EPROTO for garbage (an event over
 * 64 KiB included), RESIL_EINVAL when r is NULL, not an event handle,
 * max_events is out of range, or called from this handle's callback.
 * Never blocks (the handle's mutex is waited for at most its default
 * deadline: RESIL_ETIMEDOUT) and never raises SIGPIPE.
 */
int resil_poll_events(resil_t *r, int max_events);

/* Read field `name` of the event map: a string into dst (cap bytes,
 * NUL-terminated, cut) returning its full length, an unsigned integer, or
 * a boolean (0/1).  -1 when absent or of another type.  Only inside the
 * callback. */
long resil_event_str(const struct resil_event *ev, const char *name, char *dst,
                     size_t cap);
int resil_event_uint(const struct resil_event *ev, const char *name,
                     uint64_t *v);
int resil_event_bool(const struct resil_event *ev, const char *name, int *v);

/* Text for a negative return code. */
const char *resil_strerror(int rc);

#ifdef __cplusplus
}
#endif
#endif
