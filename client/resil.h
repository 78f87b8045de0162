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
 * heartbeat allocate nothing once the handle is open.
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
 * the msgpack-encoded result (malloc'ed, caller frees).  On RESIL_EREMOTE
 * the error code and message are copied to code/msg (cap bytes each, may be
 * NULL).  RESIL_EINVAL (nothing sent) when r, method, result or
 * result_len is NULL, method is empty or over 64 bytes, deadline_ms < 0,
 * or params_mp is not exactly one map.  A timed-out "acquire" through
 * resil_call is cancelled like one through resil_acquire.
 */
int resil_call(resil_t *r, const char *method, const void *params_mp,
               size_t params_len, int deadline_ms, void **result,
               size_t *result_len, char *code, char *msg, size_t cap);

/* Text for a negative return code. */
const char *resil_strerror(int rc);

#ifdef __cplusplus
}
#endif
#endif
