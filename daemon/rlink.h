/*
 * rlink.h - one Redis connection on the daemon's libuv loop: hiredis's
 * async API driven through the public redisAsyncContext `ev` hooks by this
 * file's own glue (SPEC §7), not Debian's hiredis 0.14 libuv adapter, which
 * swallows socket errors and has no timers (a dead Redis would never call
 * back).  The server's side of the layers: it includes uv and hiredis and
 * may write log lines; nothing in the core includes it.
 *
 * What it guarantees:
 * - Every command's callback runs exactly once: with the reply, or with
 *   NULL when no reply will come (command timeout, connection lost, link
 *   closed).  Never after rlink_close's own callback.
 * - A connect (TCP or Unix connect, then AUTH and SELECT when configured,
 *   ROLE with sentinels, else a PING, so that up means Redis answered)
 *   that has not completed within connect_timeout_ms fails.  A command
 *   unanswered for command_timeout_ms drops the connection (replies come in
 *   order: the oldest one late means the connection is stuck, as with a
 *   SIGSTOPped or DEBUG SLEEPing Redis), and every pending command is
 *   answered NULL.
 * - After a failure or a loss it reconnects by itself with exponential
 *   back-off from backoff_min_ms to backoff_max_ms, each delay jittered
 *   (uniform in [delay/2, delay]) so a fleet does not reconnect in step.
 * - hiredis frees its own context on a connect failure and on a
 *   disconnect; the link forgets its pointer in those callbacks and never
 *   touches a freed context.
 * - Sentinel (nsentinels > 0): the primary's address comes from
 *   `SENTINEL get-master-addr-by-name master_name`, asking each sentinel in
 *   turn; a separate connection to a sentinel subscribes to +switch-master
 *   and, when master_name moves, the link reconnects to the new primary
 *   (the address the message names; pending commands are answered NULL).
 *   Every other reconnect asks the sentinels again.  A primary is only
 *   taken when its ROLE says master (a sentinel's answer may be stale).
 * - A subscriber link (rlink_subscribe) re-subscribes after every
 *   reconnect and sends a keepalive every command_timeout_ms so a dead
 *   connection is found even when nothing is published: a repeated
 *   SUBSCRIBE, not a PING, whose reply hiredis 0.14 misroutes on a
 *   subscribed connection.  The sentinel watch does the same.
 * - Repeated connect failures are logged once, then at most once a
 *   minute, and once more when the link is back.
 * - Nothing here blocks: no call waits on the network.
 */
#ifndef RESIL_RLINK_H
#define RESIL_RLINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define RLINK_HOST_MAX 255
#define RLINK_PATH_MAX 107
#define RLINK_SENTINELS 8
#define RLINK_CHANNELS 4
#define RLINK_CHANNEL_MAX 127
/* Commands one link may have sent and not yet had answered; more are
 * refused with RD_EFULL (the command timeout bounds how long they wait,
 * this bounds how many). */
#define RLINK_MAX_PENDING 65536

/* One address: a Unix socket path, or host and port. */
struct rlink_addr {
    int is_unix;
    char path[RLINK_PATH_MAX + 1]; /* is_unix */
    char host[RLINK_HOST_MAX + 1]; /* !is_unix: a name or an IP literal */
    int port;                      /* !is_unix: 1..65535 */
};

/* A field left 0 takes its default: both timeouts 1000 ms, back-off 100
 * to 10000 ms (a max below the min is raised to the min). */
struct rlink_conf {
    struct rlink_addr addr; /* the server (unused with sentinels) */
    char password[128];     /* "" = no AUTH */
    uint32_t db;            /* SELECT db when != 0 */
    /* Name resolution (uv_getaddrinfo), connect, AUTH, SELECT, ROLE (with
     * sentinels) and, for a subscriber, SUBSCRIBE; also each sentinel
     * query on its own. */
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms; /* also a subscriber's keepalive period */
    uint32_t backoff_min_ms;     /* first reconnect delay (before jitter) */
    uint32_t backoff_max_ms;     /* the delay doubles up to this */
    size_t nsentinels;           /* 0: connect to addr */
    struct rlink_addr sentinels[RLINK_SENTINELS]; /* no AUTH to these */
    char master_name[64];
    const char *name; /* for log lines and details: "redis", "redis-sub";
                       * copied (at most 31 bytes) by rlink_init */
};

struct rlink;

/* A command's answer: reply is a redisReply * (hiredis.h), valid during
 * the call only, or NULL when no reply will come. */
typedef void (*rlink_reply_fn)(struct rlink *l, void *reply, void *priv);

struct rlink_ops {
    /* Connected (and authenticated, and on db): commands may be sent. */
    void (*up)(struct rlink *l, void *ctx);
    /* Lost, or a connect attempt failed; why is a line for people.  The
     * link retries by itself.  Pending commands were answered NULL
     * before this runs. */
    void (*down)(struct rlink *l, void *ctx, const char *why);
    /* A subscriber link: a message published on one of its channels. */
    void (*message)(struct rlink *l, void *ctx, const char *channel,
                    const char *data, size_t len);
    void *ctx;
};

struct rlink_stats {
    uint64_t connects;         /* connections made (up) */
    uint64_t connect_failures; /* attempts that failed or timed out */
    uint64_t disconnects;      /* connections lost after up */
    uint64_t timeouts;         /* commands, keepalives out of time */
    uint64_t commands;         /* commands sent */
    uint64_t errors;           /* error replies */
    uint64_t failovers;        /* +switch-master followed */
};

/* The link's private state (rlink.c); callers treat it as opaque. */
struct rlink {
    uv_loop_t *loop;
    struct rlink_conf conf;
    struct rlink_ops ops;
    struct rlink_stats stats;
    void *impl; /* rlink.c's state */
};

/* Ready l on loop (nothing connects yet).  seed: for the jitter.  0, or
 * RD_ENOMEM / RD_EINVAL (an address that cannot be used, more than
 * RLINK_SENTINELS sentinels, sentinels without a master_name).  Host names
 * are resolved with uv_getaddrinfo on libuv's thread pool, never on the
 * loop; IP literals and Unix paths need no resolving.  After a failure l
 * holds nothing (no rlink_close). */
int rlink_init(struct rlink *l, uv_loop_t *loop, const struct rlink_conf *c,
               const struct rlink_ops *ops, uint64_t seed);

/* Start connecting; from now on the link keeps itself connected. */
void rlink_start(struct rlink *l);

/* 1 when connected and ready for commands. */
int rlink_is_up(const struct rlink *l);

/*
 * Send a command (hiredis format string, as redisAsyncCommand) or one
 * given as argv.  fn (may be NULL) is called exactly once, later, never
 * from inside this call.  0, or RD_EDOWN when the link is not up (nothing
 * is sent and fn is not called).  Other failures, also with nothing sent
 * and fn not called: RD_EINVAL (a subscriber link; a bad format; SUBSCRIBE,
 * UNSUBSCRIBE, their P forms and MONITOR, which would break the one reply
 * per command rule), RD_EFULL (RLINK_MAX_PENDING), RD_ENOMEM.
 */
int rlink_command(struct rlink *l, rlink_reply_fn fn, void *priv,
                  const char *fmt, ...);
int rlink_command_argv(struct rlink *l, rlink_reply_fn fn, void *priv, int argc,
                       const char **argv, const size_t *argvlen);

/* Commands sent and not yet answered. */
size_t rlink_pending(const struct rlink *l);

/* Make l a subscriber of channel (at most RLINK_CHANNELS): subscribed now
 * if up, and again after every reconnect; `up` runs once the server has
 * confirmed every channel.  Such a link takes no other commands.  0 (also
 * for a channel already there) or RD_EINVAL (too many, empty or over
 * RLINK_CHANNEL_MAX, or commands still pending). */
int rlink_subscribe(struct rlink *l, const char *channel);

/* A line for health: "connected to unix:/run/redis.sock",
 * "connecting to tcp:10.0.0.5:6379 (attempt 3): connection refused", ... */
void rlink_describe(const struct rlink *l, char *buf, size_t cap);

/* The address now in use or being tried, "unix:/path" or "tcp:host:port". */
void rlink_addr_str(const struct rlink *l, char *buf, size_t cap);

/* Close (once; also from inside any of l's callbacks): pending commands
 * answered NULL (on a later turn of the loop, before done), handles
 * closed, no up, down or message call any more; done(l) (may be NULL)
 * runs on the loop once nothing of l remains (then l may be freed).  A
 * name still being resolved holds done back until getaddrinfo returns. */
void rlink_close(struct rlink *l, void (*done)(struct rlink *l));

/* The reconnect delay after n consecutive failures (n = 0 after a loss):
 * backoff_min_ms << n capped at backoff_max_ms, drawn uniformly from
 * [delay/2, delay] with the splitmix64 state *rng.  Pure; exposed for
 * tests. */
uint32_t rlink_backoff_ms(const struct rlink_conf *c, unsigned n,
                          uint64_t *rng);

/* Parse "unix:///path", "tcp://host:port" or "host:port" (a sentinel)
 * into a.  0, or RD_EINVAL with the reason in err. */
int rlink_parse_addr(const char *s, int allow_bare, struct rlink_addr *a,
                     char *err, size_t errcap);

#endif
