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

#include "config.h"
#include "core.h"
#include "error.h"
#include "evlog.h"
#include "http.h"
#include "log.h"
#include "memory.h"
#include "methods.h"
#include "metrics.h"
#include "server.h"
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
           "SIGHUP is logged and ignored (reload is not built yet).\n"
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
    struct prom_buf page; /* reused; http copies the text at once */
};

static const char *render_page(void *ctx, size_t *len)
{
    struct scrape *sc = ctx;

    if (metrics_render(sc->d, uv_now(sc->loop), &sc->page) < 0)
        return NULL; /* an incomplete page is a 500, never served */
    *len = sc->page.len;
    return sc->page.data;
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
    prom_init(&sc->page, METRICS_MAX_BYTES);
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
    static struct snapshot snap; /* snapshot.h: restore, interval, final */
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
    /* --- snapshot: restore before anyone can ask (SPEC §7) --- */
    if (snapshot_start(&snap, loop, &d) < 0) {
        snapshot_stop(&snap, 0);
        core_free(&d);
        return 1;
    }
    if (server_start(&srv, loop, &d, path) < 0 ||
        metrics_listen(&scrape, &srv, loop, &d) < 0) {
        server_stop(&srv);
        uv_run(loop, UV_RUN_NOWAIT); /* let closed handles finish */
        server_free(&srv);
        snapshot_stop(&snap, 0); /* the state is as restored: keep the file */
        core_free(&d);
        return 1;
    }
    snapshot_run(&snap); /* every snapshot.interval_s */
    log_msg(LOG_INFO,
            "resild %s listening on %s (pid %ld, config %s, "
            "%zu policies, max_clients %u, max_keys %u)",
            RESIL_VERSION, path, d.pid,
            config_path ? config_path : "built-in defaults", d.cfg.npolicies,
            srv.max_clients, d.cfg.max_keys);
    log_msg(LOG_INFO, "worst-case memory %s; max_memory_mb %llu", mem_line,
            (unsigned long long)d.cfg.max_memory_mb);
    uv_run(loop, UV_RUN_DEFAULT);
    snapshot_stop(&snap, 1); /* the last snapshot, then the journal emptied */
    prom_free(&scrape.page);
    log_msg(LOG_INFO, "stopped: %llu requests served",
            (unsigned long long)d.m.requests);
    server_free(&srv);
    core_free(&d);
    uv_loop_close(loop);
    return 0;
}
