/*
 * main.c - resild entry point: arguments, configuration, the loop.
 *
 * resild runs in the foreground and logs to stderr; systemd (or a
 * terminal) supervises it.  Exit status: 0 after a graceful stop (SIGTERM,
 * SIGINT), 1 when it cannot start (bad config, socket in use, ...), 2 on a
 * usage error.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uv.h>

#include "analytics.h"
#include "config.h"
#include "core.h"
#include "errlog.h"
#include "error.h"
#include "evlog.h"
#include "hooks.h"
#include "http.h"
#include "log.h"
#include "memory.h"
#include "methods.h"
#include "metrics.h"
#include "sdnotify.h"
#include "server.h"
#include "redis.h"
#include "snapshot.h"
#include "sockpath.h"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: resild [-c CONFIG] [-s SOCKET]\n"
           "\n"
           "The resilience sidecar: one daemon per host owns the circuit\n"
           "breakers, rate limiters, bulkheads and retry advice for the\n"
           "services on it.  Runs in the foreground and logs one line per\n"
           "event to stderr.\n"
           "\n"
           "  -c, --config FILE   JSON configuration (every key optional;\n"
           "                      without it the built-in defaults apply)\n"
           "  -s, --socket PATH   Unix socket to listen on; else the config's\n"
           "                      \"socket\", else $RESILD_SOCKET, else\n"
           "                      /run/resild/resild.sock if /run/resild\n"
           "                      exists, else $XDG_RUNTIME_DIR/resild.sock,\n"
           "                      else /tmp/resild.sock\n"
           "  -t, --check         validate the configuration, print its\n"
           "                      worst-case memory and exit\n"
           "  -V, --version       print the version and exit\n"
           "  -h, --help          this text\n"
           "\n"
           "Signals: SIGTERM/SIGINT stop accepting, answer what was read\n"
           "(waiting acquires get their decision now), flush, exit 0.\n"
           "SIGHUP re-reads the configuration file (an invalid one is\n"
           "refused and the running configuration stays).\n"
           "Exit status: 0 stopped cleanly, 1 could not start (bad\n"
           "configuration, socket taken), 2 usage error.\n"
           "Inspect and steer it with resilctl (resilctl --help).\n");
}

/* The optional HTTP /metrics listener (metrics.listen): the one TCP
 * listener resild may have, off by default. */
struct scrape {
    struct http http;
    struct resild *d;
    uv_loop_t *loop;
};

static const char *render_page(void *ctx, size_t *len)
{
    struct scrape *sc = ctx;
    int err;

    /* NULL: an incomplete page is a 500, never served. */
    return metrics_page(sc->d, uv_now(sc->loop), len, &err);
}

static void stop_scrape(void *ctx)
{
    http_stop(&((struct scrape *)ctx)->http);
}

/* Start the listener when configured; the server stops it with itself.
 * 0, or -1 with a message logged. */
static int metrics_listen(struct scrape *sc, struct server *srv,
                          uv_loop_t *loop, struct resild *d)
{
    struct http_conf conf = {0};
    char err[256];

    memset(sc, 0, sizeof(*sc));
    sc->d = d;
    sc->loop = loop;
    if (!d->cfg.metrics_listen[0])
        return 0;
    conf.unix_mode = d->cfg.socket_mode;
    if (http_start(&sc->http, loop, d->cfg.metrics_listen, &conf, render_page,
                   sc, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR, "metrics.listen: %s", err);
        return -1;
    }
    srv->on_stop = stop_scrape;
    srv->on_stop_ctx = sc;
    log_msg(LOG_INFO, "serving GET /metrics on %s", d->cfg.metrics_listen);
    return 0;
}

/* --- reload: SIGHUP and the reload method --- */

struct reloader {
    const char *path; /* the -c file; NULL: the built-in defaults */
    struct resild *d;
    uv_loop_t *loop;
};

/* What a running daemon cannot change: its socket, its pools and bounds
 * (sized at start), its listeners.  Kept from the running configuration,
 * and named in *msg when the file changed them. */
static void keep_fixed(const struct config *run, struct config *next, char *msg,
                       size_t cap)
{
    size_t n = strlen(msg);
#define KEEP(field, name)                                                      \
    do {                                                                       \
        if (memcmp(&run->field, &next->field, sizeof(run->field)) != 0) {      \
            n += (size_t)snprintf(msg + n, n < cap ? cap - n : 0, "%s%s",      \
                                  n ? ", " : "", name);                        \
            memcpy(&next->field, &run->field, sizeof(run->field));             \
        }                                                                      \
    } while (0)
    KEEP(socket, "socket");
    KEEP(socket_mode, "socket_mode");
    KEEP(max_clients, "max_clients");
    KEEP(max_keys, "max_keys");
    KEEP(max_frame_bytes, "max_frame_bytes");
    KEEP(max_permits, "max_permits");
    KEEP(max_parked, "max_parked");
    KEEP(max_parked_per_client, "max_parked_per_client");
    KEEP(metrics_listen, "metrics.listen");
    KEEP(snapshot_path, "snapshot.path");
    KEEP(snapshot_interval_s, "snapshot.interval_s");
    KEEP(snapshot_enabled, "snapshot.enabled");
    KEEP(error_log_dir, "error_log.dir");
    KEEP(error_log_retention_days, "error_log.retention_days");
    KEEP(errors_max_series, "errors.max_series");
    KEEP(errors_recent, "errors.recent");
    /* The Redis link and what was shared under it: redis.c is started
     * once (core_rebind drops a scope "global" the kept mode cannot
     * serve, and derives each limiter share from the kept hosts). */
    KEEP(redis_mode, "redis.mode");
    KEEP(redis_url, "redis.url");
    KEEP(redis_password, "redis.password");
    KEEP(redis_db, "redis.db");
    KEEP(redis_prefix, "redis.prefix");
    KEEP(redis_connect_timeout_ms, "redis.connect_timeout_ms");
    KEEP(redis_command_timeout_ms, "redis.command_timeout_ms");
    KEEP(redis_origin, "redis.origin");
    KEEP(redis_expected_hosts, "redis.expected_hosts");
    KEEP(redis_lease_ms, "redis.lease_ms");
    KEEP(redis_queue, "redis.queue");
    KEEP(redis_sentinels, "redis.sentinels");
    /* Differs only when the array above does (entries past it are 0). */
    next->redis_nsentinels = run->redis_nsentinels;
    KEEP(redis_master_name, "redis.master_name");
#undef KEEP
}

/* Policies added, removed and changed from run to next. */
static void diff_policies(const struct config *run, const struct config *next,
                          uint32_t *added, uint32_t *removed, uint32_t *changed)
{
    size_t i, j;

    *added = *removed = *changed = 0;
    for (i = 0; i < next->npolicies; i++) {
        for (j = 0; j < run->npolicies; j++)
            if (!strcmp(next->policies[i].pattern, run->policies[j].pattern))
                break;
        if (j == run->npolicies)
            (*added)++;
        else if (memcmp(&next->policies[i], &run->policies[j],
                        sizeof(struct policy)) != 0)
            (*changed)++;
    }
    for (j = 0; j < run->npolicies; j++) {
        for (i = 0; i < next->npolicies; i++)
            if (!strcmp(next->policies[i].pattern, run->policies[j].pattern))
                break;
        *removed += i == next->npolicies;
    }
}

/*
 * Re-read the file, keep what cannot change live, rebind every key.  An
 * invalid file changes nothing.  0 or -1, with a line for people in msg.
 */
static int reload(void *ctx, uint32_t uid, char *msg, size_t cap,
                  size_t *npolicies)
{
    struct reloader *rl = ctx;
    struct resild *d = rl->d;
    struct config next;
    char err[512], fixed[256] = "";
    struct event ev = {.type = EV_RELOAD};
    int rc;

    uv_update_time(rl->loop);
    /* systemd 252: RELOADING=1 now, READY=1 when over, applied or not. */
    sdnotify_reloading("reloading the configuration");
    if (config_load(rl->path, &next, err, sizeof(err)) < 0) {
        log_msg(LOG_WARN, "reload refused: %s; the running configuration stays",
                err);
        snprintf(msg, cap, "%s", err);
        sdnotify_ready("reload refused: the running configuration stays");
        return -1;
    }
    keep_fixed(&d->cfg, &next, fixed, sizeof(fixed));
    diff_policies(&d->cfg, &next, &ev.u.reload.added, &ev.u.reload.removed,
                  &ev.u.reload.changed);
    ev.u.reload.policies = (uint32_t)next.npolicies;
    ev.u.reload.uid = uid;
    if ((rc = core_rebind(d, &next, uv_now(rl->loop))) < 0) {
        config_free(&next);
        log_msg(LOG_WARN, "reload failed: %s; the running configuration stays",
                rd_strerror(rc));
        snprintf(msg, cap, "%s", rd_strerror(rc));
        sdnotify_ready("reload failed: the running configuration stays");
        return -1;
    }
    if (fixed[0])
        log_msg(LOG_WARN,
                "reload: %s changed in the file; they take effect at the "
                "next restart",
                fixed);
    core_emit(d, &ev, uv_now(rl->loop));
    sdnotify_ready("configuration reloaded");
    *npolicies = ev.u.reload.policies;
    snprintf(msg, cap, "%u added, %u removed, %u changed%s%s%s",
             (unsigned)ev.u.reload.added, (unsigned)ev.u.reload.removed,
             (unsigned)ev.u.reload.changed,
             fixed[0] ? "; at the next restart: " : "", fixed, "");
    return 0;
}

static void on_sighup(void *ctx)
{
    char msg[512];
    size_t n;

    log_msg(LOG_INFO, "SIGHUP: re-reading the configuration");
    reload(ctx, 0, msg, sizeof(msg), &n);
}

/* --- systemd notify (sdnotify.h) -----------------------------------------
 * READY=1 once the socket listens, STATUS= lines, WATCHDOG=1 from a loop
 * timer at half of WATCHDOG_USEC (a hung loop stops the pings, and systemd
 * restarts the unit), STOPPING=1 when a drain begins.  Nothing is sent, and
 * no timer runs, without $NOTIFY_SOCKET.  The timer is unreferenced: it
 * never keeps the loop alive after a drain. */
#define SD_STATUS_MS 5000 /* STATUS= refreshed at most this often */

static struct {
    uv_timer_t timer;
    int running;
    struct server *srv;        /* borrowed */
    struct resild *d;          /* borrowed */
    uint64_t watchdog_ms;      /* WATCHDOG=1 period; 0: no watchdog */
    uint64_t status_due_ms;    /* next STATUS= refresh */
    char status[256];          /* last STATUS= sent */
    void (*next_stop)(void *); /* the server's on_stop before ours */
    void *next_stop_ctx;
} sdn;

static void sd_status_text(char *buf, size_t cap)
{
    snprintf(buf, cap, "serving %s: %u connection(s), %llu request(s)",
             sdn.srv->path, sdn.srv->nconns,
             (unsigned long long)sdn.d->m.requests);
}

static void on_sd_timer(uv_timer_t *t)
{
    char status[sizeof(sdn.status)];
    uint64_t now = uv_now(t->loop);

    if (sdn.watchdog_ms)
        sdnotify_watchdog();
    if (now >= sdn.status_due_ms) {
        sdn.status_due_ms = now + SD_STATUS_MS;
        sd_status_text(status, sizeof(status));
        if (strcmp(status, sdn.status) != 0) {
            memcpy(sdn.status, status, sizeof(status));
            sdnotify_status(status);
        }
    }
}

/* SIGTERM/SIGINT: the server begins its drain. */
static void on_sd_stop(void *ctx)
{
    char status[128];

    (void)ctx;
    snprintf(status, sizeof(status), "draining %u connection(s)",
             sdn.srv->nconns);
    sdnotify_stopping(status);
    sdn.status_due_ms = UINT64_MAX; /* the timer keeps only the watchdog */
    if (sdn.next_stop)
        sdn.next_stop(sdn.next_stop_ctx);
}

/* After server_start: READY=1, then the timer.  Chains the server's
 * on_stop hook (install any other hook before calling this). */
static void sd_start(uv_loop_t *loop, struct server *srv, struct resild *d)
{
    uint64_t period;

    if (sdnotify_init() <= 0)
        return;
    sdn.srv = srv;
    sdn.d = d;
    sdn.next_stop = srv->on_stop;
    sdn.next_stop_ctx = srv->on_stop_ctx;
    srv->on_stop = on_sd_stop;
    srv->on_stop_ctx = NULL;
    sd_status_text(sdn.status, sizeof(sdn.status));
    sdnotify_ready(sdn.status);
    /* Half the interval, at least 1 ms; the status needs no watchdog. */
    sdn.watchdog_ms = sdnotify_watchdog_usec() / 2000;
    if (sdnotify_watchdog_usec() && sdn.watchdog_ms == 0)
        sdn.watchdog_ms = 1;
    period = sdn.watchdog_ms && sdn.watchdog_ms < SD_STATUS_MS ? sdn.watchdog_ms
                                                               : SD_STATUS_MS;
    sdn.status_due_ms = uv_now(loop) + SD_STATUS_MS;
    if (sdn.watchdog_ms) {
        sdnotify_watchdog();
        log_msg(LOG_INFO, "systemd watchdog: WATCHDOG=1 every %llu ms",
                (unsigned long long)sdn.watchdog_ms);
    }
    uv_timer_init(loop, &sdn.timer);
    uv_timer_start(&sdn.timer, on_sd_timer, period, period);
    uv_unref((uv_handle_t *)&sdn.timer);
    sdn.running = 1;
}

/* After uv_run: close the timer so the loop closes clean. */
static void sd_close(uv_loop_t *loop)
{
    if (!sdn.running)
        return;
    sdn.running = 0;
    uv_close((uv_handle_t *)&sdn.timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}
/* --- end systemd notify --- */

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"socket", required_argument, NULL, 's'},
        {"check", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *sock_arg = NULL;
    char err[512], path[SOCKPATH_MAX], mem_line[512];
    struct memory_estimate mem;
    struct config cfg;
    struct resild d;
    struct server srv;
    static struct scrape scrape;
    static struct reloader reloader;
    struct errlog *errlog = NULL;
    static struct analytics analytics;
    static struct hooks hooks;
    static struct snapshot snap; /* snapshot.h: restore, interval, final */
    struct redis *redis = NULL;  /* redis.h: mirror and shared state */
    uv_loop_t *loop = uv_default_loop();
    int ch, check_only = 0, rc;
    uint64_t seed;

    while ((ch = getopt_long(argc, argv, "c:s:tVh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            sock_arg = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case 'V':
            printf("resild %s\n", RESIL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "usage: resild [-c CONFIG] [-s SOCKET] [-t] "
                            "[-V]; resild --help explains\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr,
                "resild: unexpected argument '%s' (options only; "
                "resild --help explains)\n",
                argv[optind]);
        return 2;
    }
    /* NULL: the built-in defaults, memory-checked like a file. */
    if (config_load(config_path, &cfg, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR, "config: %s", err);
        return 1;
    }
    memory_estimate(&cfg, &mem);
    memory_describe(&mem, &cfg, mem_line, sizeof(mem_line));
    if (check_only) {
        printf("%s: ok (%zu policies)\n"
               "worst-case memory %s; max_memory_mb %llu\n",
               config_path ? config_path : "built-in defaults", cfg.npolicies,
               mem_line, (unsigned long long)cfg.max_memory_mb);
        config_free(&cfg);
        return 0;
    }
    if (sockpath_resolve(sock_arg        ? sock_arg
                         : cfg.socket[0] ? cfg.socket
                                         : NULL,
                         path, sizeof(path)) < 0) {
        log_msg(LOG_ERR, "socket path too long (max %d bytes)",
                SOCKPATH_MAX - 1);
        config_free(&cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_update_time(loop);
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
        seed = (uint64_t)uv_hrtime() ^ ((uint64_t)getpid() << 32);
    if ((rc = core_init(&d, &cfg, uv_now(loop), seed)) < 0 ||
        (rc = core_add_sink(&d, evlog_sink, NULL)) < 0 ||
        (rc = methods_attach(&d)) < 0) {
        log_msg(LOG_ERR, "cannot start: %s", rd_strerror(rc));
        return 1;
    }
    /* --- error log (errlog.h): a sink, drained by its own unref'd
     * handles; errlog_detach writes the rest after the loop ends. --- */
    if (errlog_attach(&d, loop, &errlog) < 0)
        return 1;
    /* --- end error log --- */
    /* --- analytics (issue 11): a sink of outcomes, read by `errors` --- */
    {
        struct analytics_conf ac = {d.cfg.errors_max_series,
                                    d.cfg.errors_recent};
        if (analytics_init(&analytics, &ac, seed ^ 0x5a5a5a5a5a5a5a5aULL) < 0 ||
            (rc = core_add_sink(&d, analytics_sink, &analytics)) < 0) {
            log_msg(LOG_ERR, "cannot start: analytics: out of memory");
            return 1;
        }
        d.analytics = &analytics;
        if ((rc = hooks_start(&hooks, loop, &d, &analytics)) < 0) {
            log_msg(LOG_ERR, "cannot start: alerts: %s", rd_strerror(rc));
            return 1;
        }
    }
    /* --- end analytics --- */
    /* --- snapshot: restore before anyone can ask (SPEC §7) --- */
    if (snapshot_start(&snap, loop, &d) < 0) {
        snapshot_stop(&snap, 0);
        core_free(&d);
        return 1;
    }
    /* --- Redis (SPEC §7): after the restore (a daemon that restored
     * nothing reads the mirror back), before anyone can ask --- */
    if ((rc = redis_start(&redis, loop, &d, &srv, seed ^ 0x7265646973ULL,
                          d.keys.count == 0)) < 0) {
        log_msg(LOG_ERR, "cannot start: redis: %s", rd_strerror(rc));
        snapshot_stop(&snap, 0);
        core_free(&d);
        return 1;
    }
    if (server_start(&srv, loop, &d, path) < 0 ||
        metrics_listen(&scrape, &srv, loop, &d) < 0) {
        server_stop(&srv);
        uv_run(loop, UV_RUN_NOWAIT); /* let closed handles finish */
        errlog_detach(errlog, loop);
        server_free(&srv);
        redis_free(redis);
        snapshot_stop(&snap, 0); /* the state is as restored: keep the file */
        core_free(&d);
        return 1;
    }
    redis_hook_stop(redis, &srv);
    reloader.path = config_path;
    reloader.d = &d;
    reloader.loop = loop;
    d.reload = reload;
    d.reload_ctx = &reloader;
    srv.on_reload = on_sighup;
    srv.on_reload_ctx = &reloader;
    snapshot_run(&snap); /* every snapshot.interval_s */
    log_msg(LOG_INFO,
            "resild %s listening on %s (pid %ld, config %s, "
            "%zu policies, max_clients %u, max_keys %u)",
            RESIL_VERSION, srv.path, d.pid,
            config_path ? config_path : "built-in defaults", d.cfg.npolicies,
            srv.max_clients, d.cfg.max_keys);
    log_msg(LOG_INFO, "worst-case memory %s; max_memory_mb %llu", mem_line,
            (unsigned long long)d.cfg.max_memory_mb);
    sd_start(loop, &srv, &d); /* systemd: READY=1, watchdog; last hook */
    uv_run(loop, UV_RUN_DEFAULT);
    sd_close(loop);
    hooks_stop(&hooks); /* analytics: running hooks killed, timers closed */
    uv_run(loop, UV_RUN_NOWAIT);
    snapshot_stop(&snap, 1); /* the last snapshot, then the journal emptied */
    errlog_detach(errlog, loop); /* error log: the last lines, fdatasync */
    redis_free(redis); /* its links closed with the loop */
    metrics_free(&d);
    log_msg(LOG_INFO, "stopped: %llu requests served",
            (unsigned long long)d.m.requests);
    server_free(&srv);
    core_free(&d);
    analytics_free(&analytics); /* after the last event */
    uv_loop_close(loop);
    return 0;
}
