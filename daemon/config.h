/*
 * config.h - resild's configuration: one JSON file (SPEC §2), every key
 * optional, unknown keys an error that names them.  Loading does file I/O
 * (jansson) and nothing else; the result is a plain struct the rest of the
 * daemon reads.  Policies are resolved at load time: each policy's breaker
 * fields are filled from the "*" policy, then from the built-in defaults,
 * so matching a key yields a complete policy with no further lookups.
 */
#ifndef RESIL_CONFIG_H
#define RESIL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "breaker.h"
#include "bulkhead.h"
#include "limiter.h"
#include "retry.h"

#define CONFIG_MAX_IDS 64      /* entries in each uid/gid list */
#define CONFIG_PATTERN_MAX 128 /* bytes in a policy pattern */
#define CONFIG_CLASS_MAX 64    /* bytes in an error-class pattern */
#define CONFIG_CLASSES 16      /* patterns in breaker record / ignore */
#define CONFIG_MAX_MEMORY_MB ((uint64_t)1 << 30) /* max_memory_mb's top */

struct class_list {
    size_t n;
    char pat[CONFIG_CLASSES][CONFIG_CLASS_MAX + 1];
};

struct policy {
    char pattern[CONFIG_PATTERN_MAX + 1]; /* "*", "binance.*", "binance" */
    struct breaker_conf breaker;
    struct class_list record; /* failure classes that count (default "*") */
    struct class_list ignore; /* failure classes ignored entirely */
    int critical;             /* policy-wide "critical" flag */
    int shadow;               /* decide, record denials, allow everything */
    uint64_t permit_ttl_ms;   /* outstanding permit lifetime */
    uint32_t reserve;         /* limiter/bulkhead units for critical calls */
    uint32_t critical_probe_per_s; /* critical calls through an open breaker */
    /* Parts other than the breaker are taken whole: from this policy when
     * it gives them, else from "*", else the built-in default (none for
     * limiter and bulkhead). */
    int has_limiter;
    struct limiter_conf limiter;
    int has_bulkhead;
    struct bulkhead_conf bulkhead;
    struct retry_conf retry;
    int has_heartbeat;             /* a heartbeat part: taken whole, too */
    uint64_t heartbeat_timeout_ms; /* silence longer than this: lost */
    /* "scope": "local" (default) or "global" (only with redis.mode
     * "shared"): the key's breaker changes are shared with the other
     * daemons and its limiter, if any, is one limit across all of them
     * (SPEC §7, redis.h).  Policy-wide, inherited from "*" like critical. */
    int global;
    /* With a limiter: this host's share of it, {rate, per_ms *
     * redis.expected_hosts, max(1, burst / expected_hosts), pause_ms}
     * (all zero without a limiter).  A global key's own limiter (k->lim)
     * runs under it, and decides while no lease can be had (Redis down).
     * Filled by config_derive. */
    struct limiter_conf limiter_share;
};

/* errors.classes: class pattern -> severity / transient overrides. */
#define CONFIG_CLASS_RULES 64
enum severity { SEV_LOW, SEV_MEDIUM, SEV_HIGH, SEV_CRITICAL };

struct class_rule {
    char pat[CONFIG_CLASS_MAX + 1];
    int severity;  /* enum severity, or -1 = not set */
    int transient; /* 0/1, or -1 = not set */
};

/* errors.alerts (SPEC §6): one rule object or an array of them. */
#define CONFIG_ALERT_RULES 16
#define CONFIG_EXEC_MAX 1024           /* bytes of a rule's exec command line */
#define CONFIG_ERRORS_MAX_SERIES 10000 /* errors.max_series default */
#define CONFIG_ERRORS_RECENT 1000      /* errors.recent default */
struct alert_rule {
    char name[64];       /* default "rule<N>" (N from 1) */
    double rate_per_min; /* fires when a key's failures over the last 60 s
                          * (of min_severity or worse) reach this; > 0 */
    int min_severity;    /* enum severity, default low */
    uint32_t cooldown_s; /* per key, default 300 */
    char key[129];       /* "" = any key */
    char prefix[129];    /* "" = any key; else the key and keys below it */
    char exec[CONFIG_EXEC_MAX + 1]; /* "" = none; run with /bin/sh -c */
    uint32_t timeout_ms;            /* exec is killed after it, default 5000 */
};

struct id_list {
    size_t n;
    uint32_t id[CONFIG_MAX_IDS];
};

struct config {
    char socket[108];         /* "" = resolve per SPEC §8 */
    unsigned socket_mode;     /* permission bits of the socket */
    uint32_t max_clients;     /* concurrent connections */
    uint32_t max_keys;        /* keys in the registry */
    uint32_t max_frame_bytes; /* largest request object */
    uint32_t max_permits;     /* outstanding permits, all clients */
    struct id_list allow_uids, allow_gids, admin_uids, admin_gids;
    int admin_ids_given;     /* admin_uids or admin_gids was configured */
    struct policy *policies; /* npolicies entries; [0] is always "*" */
    size_t npolicies;
    struct class_rule classes[CONFIG_CLASS_RULES]; /* errors.classes */
    size_t nclasses;
    uint32_t max_parked;            /* parked acquire requests, all clients */
    uint32_t max_parked_per_client; /* requests in flight per connection */
    uint32_t partial_timeout_ms;    /* a partial object older: closed */
    uint32_t stall_timeout_ms;      /* output not taken this long: closed */
    uint32_t max_output_bytes;      /* unread output over this for 1 s */
    uint64_t max_memory_mb; /* refuse a worst case above this (memory.h);
                             * default half of physical RAM */
    /* "metrics" section.  metrics_listen: "" (default: no HTTP listener),
     * "A.B.C.D:PORT" (an IPv4 literal, port 1..65535; the daemon's one TCP
     * listener, bound to exactly that address) or an absolute Unix socket
     * path; served by http.h. */
    char metrics_listen[108];
    uint32_t metrics_max_keys; /* keys with their own series; the rest are
                                * summed under key="_other" (prom.h) */
    /* "error_log" section (errlog.h).  error_log_dir: "" (default, no
     * section: no error log) or the directory of the errors-YYYYMMDD.jsonl
     * files; error_log_retention_days: a day's file is deleted once that
     * day ended more than this many days ago (1..3650, default 30). */
    char error_log_dir[256];
    uint32_t error_log_retention_days;
    /* "errors" section, analytics (analytics.h) and alerts (alerts.h).
     * max_series and recent are sized at start (a reload keeps them). */
    uint32_t errors_max_series; /* key x class series kept */
    uint32_t errors_recent;     /* recent-error ring entries */
    struct alert_rule alerts[CONFIG_ALERT_RULES];
    size_t nalerts;
    /* "snapshot" section (snapshot.h, SPEC §7): {"path": str,
     * "interval_s": 1..3600, "enabled": bool}.  snapshot_path "" = not
     * given: snapshot.c picks $STATE_DIRECTORY/state.snap or
     * /var/lib/resild/state.snap when that directory exists, else runs
     * without one (and says so).  A path given must work at start-up. */
    char snapshot_path[256];
    uint32_t snapshot_interval_s; /* default 1 */
    uint8_t snapshot_enabled;     /* default 1; 0: no snapshot, no journal */
    /* "redis" section (redis.h, SPEC §7).  No section: REDIS_OFF and the
     * rest unused; a section is mode "mirror" unless it says "shared".
     * url "unix:///abs/path" (<= 107 bytes of path) or "tcp://host:port"
     * (a name, IPv4 or [IPv6], port 1..65535), or instead sentinels (1..8
     * "host:port") with master_name (then no url); password "" = no AUTH;
     * db 0..1000000 (Redis has 16 unless told more: a missing one fails
     * at SELECT); prefix default "resild:" (1..63 printable, no space);
     * connect and command timeouts 10..60000, default 1000 ms; origin
     * 1..63 of [A-Za-z0-9._:-], default the host name cut to 63 bytes (it
     * tells this daemon's messages from the others'); expected_hosts
     * 1..1000, default 1 (global limiters fall back to 1/expected_hosts of
     * their rate while Redis is away); lease_ms 10..10000, default 100 (a
     * lease is this much of the host's share of a global rate); queue
     * 1..1000000, default 10000 (mirror writes waiting, coalesced per key;
     * more are dropped and counted).  A reload keeps all of it as started
     * (main.c). */
    int redis_mode; /* enum redis_mode */
    char redis_url[256];
    char redis_password[128];
    uint32_t redis_db;
    char redis_prefix[64];
    uint32_t redis_connect_timeout_ms;
    uint32_t redis_command_timeout_ms;
    char redis_origin[64];
    uint32_t redis_expected_hosts;
    uint32_t redis_lease_ms;
    uint32_t redis_queue;
    size_t redis_nsentinels;
    char redis_sentinels[8][272]; /* "host:port" each */
    char redis_master_name[64];
};

enum redis_mode { REDIS_OFF, REDIS_MIRROR, REDIS_SHARED };

/* Fill c with the built-in defaults (the "*" policy only), unchecked:
 * the daemon starts from config_load(NULL, ...), which also checks the
 * worst-case memory.  Returns -1 only when out of memory. */
int config_defaults(struct config *c);

/*
 * Load path into c (defaults for everything absent); path NULL: the
 * built-in defaults alone.  Either way the worst-case memory (memory.h) is
 * checked against max_memory_mb.  On error returns -1 and writes one line
 * naming the file (or "built-in defaults") and either line:column (JSON
 * syntax), the offending key path, or what is wrong with the file itself
 * (missing, a directory, unreadable, empty) to err; c is then left freed.
 */
int config_load(const char *path, struct config *c, char *err, size_t errcap);

/* The same from JSON text (tests; errors name "(text)" and line:column). */
int config_load_text(const char *json, struct config *c, char *err,
                     size_t errcap);

void config_free(struct config *c);

/*
 * The fields derived from the redis section, again: each policy's
 * limiter_share from redis_expected_hosts, and scope "global" dropped
 * unless redis_mode is REDIS_SHARED.  config_load calls it; core_rebind
 * calls it again because a reload keeps the running redis section (a
 * scope the running mode cannot serve waits for the restart, like the
 * section itself).  Idempotent.
 */
void config_derive(struct config *c);

/* The most specific policy whose pattern matches key (never NULL: "*"). */
const struct policy *config_match(const struct config *c, const char *key);

/* How a failure of error class cls (NULL: none given) counts under p:
 * ignored (BREAKER_IGNORE), recorded (BREAKER_FAILURE) or, when it matches
 * no record pattern, as a success. */
enum breaker_outcome config_failure_kind(const struct policy *p,
                                         const char *cls);

/* Severity (enum severity) and transient for an error class: the built-in
 * table (SPEC §5), overridden by errors.classes.  cls NULL or "" gives the
 * unknown-class default (medium, transient). */
void config_classify(const struct config *c, const char *cls, int *severity,
                     int *transient);
const char *config_severity_name(int severity);

/* 1 if pattern (segments of key characters, or "*" meaning one or more
 * segments) matches key.  O(key segments x pattern segments) time for any
 * number of stars, no allocation: key may be client-supplied (an acquire's
 * key, a report's error.class). */
int config_pattern_match(const char *pattern, const char *key);

#endif
