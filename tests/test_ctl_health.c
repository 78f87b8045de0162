/*
 * test_ctl_health.c - resilctl's issue 9 commands against fake peers and
 * the real daemon: `health` (exit status per overall value, 3 when it
 * cannot tell), `metrics` (the text as is, control characters escaped)
 * and `watch` (one escaped line per event, JSON Lines with --json,
 * --topics parsed and sent, exit 0 on SIGINT/SIGTERM/EOF of a piped
 * stdin, 3 when the daemon is or goes away).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_util.h"
#include "fake_peer.h"
#include "integ_util.h"
#include "proto.h"
#include "tap.h"

static char dir[256];
static char out[4 << 20], err[1 << 16];

static int run(const char *const *args)
{
    return integ_run_ctl(dir, out, err, sizeof(out), args);
}

static int start(struct peer *p, const char *name, struct peer_opts *o)
{
    char path[300];

    snprintf(path, sizeof(path), "%s/%s.sock", dir, name);
    return peer_start(p, path, o);
}

/* --- health ------------------------------------------------------------------
 */

static void test_health(void)
{
    static const struct {
        const char *overall;
        int code;
    } cases[] = {
        {"healthy", 0}, {"degraded", 1}, {"unhealthy", 2}, {"splendid", 3}};
    static struct peer p;
    struct peer_opts po = {.mode = PEER_ANSWER};
    char none[300];
    json_error_t jerr;
    json_t *j;
    size_t i;
    int rc;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        po.overall = cases[i].overall;
        if (!OK(start(&p, "health", &po) == 0, "health: fake peer starts"))
            return;
        rc = run((const char *const[]){"-s", p.path, "health", NULL});
        OK(rc == cases[i].code, "health: overall %s exits %d (got %d)",
           cases[i].overall, cases[i].code, rc);
        rc = run((const char *const[]){"-s", p.path, "--json", "health", NULL});
        j = json_loads(out, 0, &jerr);
        OK(rc == cases[i].code && j &&
               !strcmp(json_string_value(json_object_get(j, "overall")),
                       cases[i].overall),
           "health --json: overall %s, valid JSON, exits %d (got %d)",
           cases[i].overall, cases[i].code, rc);
        json_decref(j);
        peer_stop(&p);
    }
    po.overall = "degraded";
    if (!OK(start(&p, "health", &po) == 0, "health: fake peer starts"))
        return;
    rc = run((const char *const[]){"-s", p.path, "health", NULL});
    OK(strstr(out, "overall: degraded\n") &&
           strstr(out, "open (1): binance.orders\n") &&
           strstr(out, "not operational (2):\n") &&
           strstr(out, "  binance.orders  unavailable\n") &&
           strstr(out, "  okx\\x1b[31m.ws  degraded\n") &&
           !strstr(out, "kraken.rest") &&
           strstr(out, "recent errors (60 s): 12\n") &&
           strstr(out, "  redis  FAIL  connection refused\\x07\n"),
       "health: overall, open keys, services not operational, recent errors, "
       "components; peer text escaped");
    OK(!strchr(out, 0x1b) && !strchr(out, 0x07),
       "health: no control character reaches the terminal");
    IS(run((const char *const[]){"-s", p.path, "health", "extra", NULL}), 3,
       "health: a usage error exits 3 (cannot tell), never 2 (unhealthy)");
    peer_stop(&p);

    snprintf(none, sizeof(none), "%s/nobody.sock", dir);
    IS(run((const char *const[]){"-s", none, "health", NULL}), 3,
       "health: daemon unreachable exits 3");
    po.mode = PEER_GARBAGE;
    if (OK(start(&p, "hgarbage", &po) == 0, "health: garbage peer starts")) {
        IS(run((const char *const[]){"-s", p.path, "health", NULL}), 3,
           "health: a garbage answer exits 3");
        peer_stop(&p);
    }
    po.mode = PEER_SILENT;
    if (OK(start(&p, "hsilent", &po) == 0, "health: silent peer starts")) {
        IS(run((const char *const[]){"-s", p.path, "-t", "200", "health",
                                     NULL}),
           3, "health: no answer in time exits 3");
        peer_stop(&p);
    }
}

/* --- metrics -----------------------------------------------------------------
 */

static void test_metrics(void)
{
    static struct peer p;
    struct peer_opts po = {.mode = PEER_ANSWER};
    json_error_t jerr;
    json_t *j;
    int rc;

    if (!OK(start(&p, "metrics", &po) == 0, "metrics: fake peer starts"))
        return;
    rc = run((const char *const[]){"-s", p.path, "metrics", NULL});
    OK(rc == 0 &&
           !strcmp(out,
                   "# HELP resild_uptime_seconds Time since start.\n"
                   "# TYPE resild_uptime_seconds gauge\n"
                   "resild_uptime_seconds 12.5\n"
                   "resild_decisions_total{key=\"a.b\",result=\"allow\"} 3\n"
                   "resild_odd{x=\"\\x1b[2J\"} 1\n"),
       "metrics: the text as is, a raw ESC escaped (rc %d)", rc);
    rc = run((const char *const[]){"-s", p.path, "--json", "metrics", NULL});
    j = json_loads(out, 0, &jerr);
    OK(rc == 0 && j &&
           strstr(json_string_value(json_object_get(j, "text")),
                  "resild_uptime_seconds 12.5\n"),
       "metrics --json: {\"text\": ...}");
    json_decref(j);
    peer_stop(&p);
}

/* --- watch -------------------------------------------------------------------
 */

/* A resilctl watch running in the background: stdout to a file, stdin a
 * pipe the test holds. */
struct bg {
    pid_t pid;
    int in; /* write end of its stdin, -1 when closed */
    char outp[300];
};

static int bg_start(struct bg *b, const char *const *args)
{
    char bin[512], errp[300];
    const char *argv[16];
    int pfd[2], i, fd, efd;

    snprintf(bin, sizeof(bin), "%s/resilctl", daemon_build_dir());
    snprintf(b->outp, sizeof(b->outp), "%s/watch.out", dir);
    snprintf(errp, sizeof(errp), "%s/watch.err", dir);
    argv[0] = bin;
    for (i = 0; args[i] && i < 14; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    /* Truncated here, not in the child: the test must never read the
     * previous run's output as this one's. */
    fd = open(b->outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    efd = open(errp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || efd < 0 || pipe(pfd) < 0)
        return -1;
    fflush(stdout);
    b->pid = fork();
    if (b->pid < 0)
        return -1;
    if (b->pid == 0) {
        dup2(pfd[0], 0);
        close(pfd[0]);
        close(pfd[1]);
        dup2(fd, 1);
        dup2(efd, 2);
        execv(bin, (char *const *)argv);
        _exit(126);
    }
    close(fd);
    close(efd);
    close(pfd[0]);
    b->in = pfd[1];
    return 0;
}

/* Read its output so far into out. */
static void bg_read(struct bg *b)
{
    FILE *f = fopen(b->outp, "r");

    out[0] = '\0';
    if (f) {
        out[fread(out, 1, sizeof(out) - 1, f)] = '\0';
        fclose(f);
    }
}

static int count_lines(const char *s)
{
    int n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Wait up to 10 s for n lines of output (or the exit). */
static void bg_wait_lines(struct bg *b, int n)
{
    long long end = mono_ms() + 10000;

    siginfo_t si;

    for (;;) {
        bg_read(b);
        memset(&si, 0, sizeof(si));
        if (count_lines(out) >= n || mono_ms() > end ||
            waitid(P_PID, (id_t)b->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
            si.si_pid != 0) /* exited: nothing more will come */
            return;
        sleep_ms(10);
    }
}

/* Wait up to 10 s until its stderr holds needle. */
static void bg_wait_err(struct bg *b, const char *needle)
{
    long long end = mono_ms() + 10000;
    char path[300];
    FILE *f;

    (void)b;
    snprintf(path, sizeof(path), "%s/watch.err", dir);
    while (mono_ms() < end) {
        err[0] = '\0';
        if ((f = fopen(path, "r"))) {
            err[fread(err, 1, sizeof(err) - 1, f)] = '\0';
            fclose(f);
        }
        if (strstr(err, needle))
            return;
        sleep_ms(10);
    }
}

/* Send sig (0: none), wait up to 10 s for the exit; its status or -1. */
static int bg_finish(struct bg *b, int sig)
{
    long long end = mono_ms() + 10000;
    int status;
    pid_t w;

    if (sig)
        kill(b->pid, sig);
    while ((w = waitpid(b->pid, &status, WNOHANG)) == 0 && mono_ms() < end)
        sleep_ms(10);
    if (w != b->pid) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, &status, 0);
        status = -1;
    }
    if (b->in >= 0)
        close(b->in);
    b->in = -1;
    bg_read(b);
    if (status == -1)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The scripted events: one of each type, with hostile text. */
static void pack_events(msgpack_sbuffer *sb)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    proto_pack_notify_head(&pk, "event");
    msgpack_pack_array(&pk, 8);
    msgpack_pack_map(&pk, 8);
    proto_kv_str(&pk, "topic", "state");
    proto_kv_str(&pk, "type", "transition");
    proto_kv_str(&pk, "key", "binance.orders");
    proto_kv_u64(&pk, "ts", 1700000000123ULL);
    proto_kv_str(&pk, "from", "closed");
    proto_kv_str(&pk, "to", "open");
    proto_kv_str(&pk, "cause", "failure_rate");
    proto_kv_str(&pk, "origin", "local");
    msgpack_pack_map(&pk, 12);
    proto_kv_str(&pk, "topic", "error");
    proto_kv_str(&pk, "type", "outcome");
    proto_kv_str(&pk, "key", "binance.orders");
    proto_kv_u64(&pk, "ts", 1700000001000ULL);
    proto_kv_str(&pk, "outcome", "failure");
    proto_kv_str(&pk, "class", "network.reset");
    proto_kv_str(&pk, "severity", "high");
    proto_kv_bool(&pk, "transient", 1);
    proto_kv_str(&pk, "message", "peer reset \x1b[2J\xff");
    proto_kv_str(&pk, "correlation_id", "ord-7");
    proto_kv_str(&pk, "source", "report");
    proto_kv_u64(&pk, "latency_ms", 35);
    msgpack_pack_map(&pk, 8);
    proto_kv_str(&pk, "topic", "operator");
    proto_kv_str(&pk, "type", "force");
    proto_kv_str(&pk, "key", "kraken.rest");
    proto_kv_u64(&pk, "ts", 1700000002000ULL);
    proto_kv_str(&pk, "state", "open");
    proto_kv_str(&pk, "reason", "maint\x07");
    proto_kv_u64(&pk, "ttl_ms", 300000);
    proto_kv_u64(&pk, "uid", 1000);
    msgpack_pack_map(&pk, 5);
    proto_kv_str(&pk, "topic", "operator");
    proto_kv_str(&pk, "type", "reset");
    proto_kv_str(&pk, "key", "kraken.rest");
    proto_kv_u64(&pk, "ts", 1700000003000ULL);
    proto_kv_u64(&pk, "uid", 0);
    msgpack_pack_map(&pk, 5);
    proto_kv_str(&pk, "topic", "bound");
    proto_kv_str(&pk, "type", "bound_hit");
    proto_kv_u64(&pk, "ts", 1700000004000ULL);
    proto_kv_str(&pk, "bound", "max_clients");
    proto_kv_str(&pk, "detail", "1024 clients");
    msgpack_pack_map(&pk, 6);
    proto_kv_str(&pk, "topic", "state");
    proto_kv_str(&pk, "type", "venue_pause");
    proto_kv_str(&pk, "key", "binance");
    proto_kv_u64(&pk, "ts", 1700000005000ULL);
    proto_kv_u64(&pk, "paused_ms", 1500);
    proto_kv_str(&pk, "reported_on", "binance.orders");
    msgpack_pack_map(&pk, 5);
    proto_kv_str(&pk, "topic", "state");
    proto_kv_str(&pk, "type", "heartbeat_lost");
    proto_kv_str(&pk, "key", "feed.ws");
    proto_kv_u64(&pk, "ts", 1700000006000ULL);
    proto_kv_u64(&pk, "silent_ms", 5200);
    msgpack_pack_map(&pk, 5);
    proto_kv_str(&pk, "topic", "alert");
    proto_kv_str(&pk, "type", "new\x1b[1mthing");
    proto_kv_str(&pk, "key", "x");
    proto_kv_u64(&pk, "ts", 1700000007000ULL);
    proto_kv_u64(&pk, "rate_per_min", 42);
}

static const char *const want_lines[] = {
    "2023-11-14T22:13:20.123Z  state     binance.orders  closed -> open "
    "(failure_rate)\n",
    "2023-11-14T22:13:21.000Z  error     binance.orders  failure network.reset "
    "high transient via report 35ms: peer reset \\x1b[2J\\xff [ord-7]\n",
    "2023-11-14T22:13:22.000Z  operator  kraken.rest  forced open for 5m by "
    "uid 1000: maint\\x07\n",
    "2023-11-14T22:13:23.000Z  operator  kraken.rest  reset by uid 0\n",
    "2023-11-14T22:13:24.000Z  bound     -  bound max_clients hit: 1024 "
    "clients\n",
    "2023-11-14T22:13:25.000Z  state     binance  venue paused 1.5s (429 "
    "reported on binance.orders)\n",
    "2023-11-14T22:13:26.000Z  state     feed.ws  heartbeat lost (silent "
    "5.2s)\n",
    "2023-11-14T22:13:27.000Z  alert     x  new\\x1b[1mthing rate_per_min=42\n",
};
#define NWANT ((int)(sizeof(want_lines) / sizeof(want_lines[0])))

static void test_watch(void)
{
    static struct peer p;
    struct peer_opts po = {.mode = PEER_ANSWER, .log_hex = 1};
    msgpack_sbuffer sb;
    json_error_t jerr;
    struct bg b;
    char *line, *save, none[300];
    int rc, i, all, valid;

    msgpack_sbuffer_init(&sb);
    pack_events(&sb);
    po.events_raw = sb.data;
    po.events_raw_len = sb.size;
    setenv("LC_ALL", "C", 1);
    if (!OK(start(&p, "watch", &po) == 0, "watch: fake peer starts"))
        return;
    bg_start(&b, (const char *const[]){"-s", p.path, "watch", NULL});
    bg_wait_lines(&b, NWANT);
    rc = bg_finish(&b, SIGINT);
    IS(rc, 0, "watch: SIGINT ends it with 0");
    all = 1;
    for (i = 0; i < NWANT; i++)
        if (!strstr(out, want_lines[i])) {
            DIAG("missing: %s", want_lines[i]);
            all = 0;
        }
    if (!OK(all && count_lines(out) == NWANT,
            "watch: one line per event: time, topic, key, what happened"))
        DIAG("watch printed: [%s] err [%s]", out, err);
    OK(!strchr(out, 0x1b) && !strchr(out, 0x07) && !strchr(out, 0xff),
       "watch: no control character or bad byte reaches the terminal");
    peer_wait_log(&p, "\n#never#", 0);
    OK(strstr(p.log, "HEX 940001a9737562736372696265" /* subscribe */
                     "9181a6746f70696373"             /* [{"topics": */
                     "95a57374617465a56572726f72a5616c657274a86f70657261746f72"
                     "a5626f756e64\n"),
       "watch: subscribes to all five topics by default");

    /* --json: JSON Lines, each line one event object. */
    bg_start(&b, (const char *const[]){"-s", p.path, "--json", "watch",
                                       "--topics", "state,operator", NULL});
    bg_wait_lines(&b, NWANT);
    rc = bg_finish(&b, SIGTERM);
    IS(rc, 0, "watch --json: SIGTERM ends it with 0");
    valid = count_lines(out) == NWANT;
    for (line = strtok_r(out, "\n", &save), i = 0; line;
         line = strtok_r(NULL, "\n", &save), i++) {
        json_t *j = json_loads(line, 0, &jerr);
        if (!j || !json_is_object(j) ||
            !json_string_value(json_object_get(j, "topic")) ||
            !json_string_value(json_object_get(j, "type")))
            valid = 0;
        if (i == 1 && (!j || strcmp(json_string_value(
                                        json_object_get(j, "correlation_id")),
                                    "ord-7")))
            valid = 0;
        json_decref(j);
    }
    OK(valid && i == NWANT,
       "watch --json: %d lines, each a JSON object with topic and type", i);
    peer_wait_log(&p, "\n#never#", 0);
    OK(strstr(p.log, "9181a6746f7069637392a57374617465a86f70657261746f72\n") !=
           NULL,
       "watch --topics state,operator sends exactly those");

    /* EOF on a piped stdin ends it with 0. */
    bg_start(&b, (const char *const[]){"-s", p.path, "watch", NULL});
    bg_wait_lines(&b, NWANT);
    close(b.in);
    b.in = -1;
    IS(bg_finish(&b, 0), 0, "watch: EOF on a piped stdin ends it with 0");

    /* --topics errors: usage, exit 2, nothing sent. */
    OK(run((const char *const[]){"-s", p.path, "watch", "--topics", "",
                                 NULL}) == 2 &&
           run((const char *const[]){"-s", p.path, "watch", "--topics",
                                     "state,,error", NULL}) == 2 &&
           run((const char *const[]){"-s", p.path, "watch", "--topics",
                                     "state,bogus", NULL}) == 2 &&
           strstr(err, "bad topic list 'state,bogus'") &&
           run((const char *const[]){"-s", p.path, "watch", "--topics",
                                     NULL}) == 2 &&
           run((const char *const[]){"-s", p.path, "watch", "--topics",
                                     "state,", NULL}) == 2,
       "watch: --topics '', 'state,,error', 'state,bogus', missing, 'state,' "
       "are usage errors");
    peer_stop(&p);

    /* The daemon goes away: the events it sent, then exit 3. */
    po.close_after_events = 1;
    if (OK(start(&p, "wgone", &po) == 0, "watch: closing peer starts")) {
        bg_start(&b, (const char *const[]){"-s", p.path, "watch", NULL});
        rc = bg_finish(&b, 0);
        OK(rc == 3 && count_lines(out) == NWANT,
           "watch: the daemon going away exits 3 after its events (rc %d, "
           "%d lines)",
           rc, count_lines(out));
        peer_stop(&p);
    }
    snprintf(none, sizeof(none), "%s/nobody.sock", dir);
    IS(run((const char *const[]){"-s", none, "watch", NULL}), 3,
       "watch: daemon unreachable exits 3");
    msgpack_sbuffer_destroy(&sb);
}

/* --- the real daemon ---------------------------------------------------------
 */

static void test_real(void)
{
    static struct test_daemon d;
    struct reply rep;
    char code[24] = "";
    resil_t *r;
    struct bg b;
    int rc;

    if (!OK(daemon_start(&d, "{\"policies\": {\"crit.*\": "
                             "{\"critical\": true}}}") == 0,
            "real: resild starts"))
        return;
    r = integ_open(d.sock, 2000);
    rc = integ_call(r, "health", NULL, 2000, &rep, code);
    reply_free(&rep);
    if (rc == RESIL_EREMOTE && !strcmp(code, "no_such_method")) {
        OK(1, "real: health # SKIP resild has no health yet");
    } else {
        rc = run((const char *const[]){"-s", d.sock, "health", NULL});
        OK(rc == 0 && strstr(out, "overall: healthy\n"),
           "real: health of a fresh daemon: healthy, exit 0 (rc %d)", rc);
    }
    if (strcmp(code, "no_such_method")) {
        /* degraded: a key forced open; unhealthy: a critical key too. */
        run((const char *const[]){"-s", d.sock, "trip", "plain", NULL});
        rc = run((const char *const[]){"-s", d.sock, "health", NULL});
        OK(rc == 1 && strstr(out, "overall: degraded\n") &&
               strstr(out, "open (1): plain\n") &&
               strstr(out, "  plain  unavailable\n"),
           "real: a key forced open: degraded, exit 1 (rc %d)", rc);
        run((const char *const[]){"-s", d.sock, "trip", "crit.a", NULL});
        rc = run((const char *const[]){"-s", d.sock, "health", NULL});
        OK(rc == 2 && strstr(out, "overall: unhealthy\n"),
           "real: a critical key forced open: unhealthy, exit 2 (rc %d)", rc);
        rc = run((const char *const[]){"-s", d.sock, "--json", "health", NULL});
        {
            json_error_t jerr;
            json_t *j = json_loads(out, 0, &jerr);
            OK(rc == 2 && j &&
                   !strcmp(json_string_value(json_object_get(j, "overall")),
                           "unhealthy") &&
                   json_array_size(json_object_get(j, "open")) == 2,
               "real: health --json: unhealthy, both keys open, exit 2");
            json_decref(j);
        }
        run((const char *const[]){"-s", d.sock, "reset", "plain", NULL});
        run((const char *const[]){"-s", d.sock, "reset", "crit.a", NULL});
        rc = run((const char *const[]){"-s", d.sock, "health", NULL});
        IS(rc, 0, "real: reset both: healthy again, exit 0");
    }
    rc = integ_call(r, "metrics", NULL, 2000, &rep, code);
    reply_free(&rep);
    if (rc == RESIL_EREMOTE && !strcmp(code, "no_such_method")) {
        OK(1, "real: metrics # SKIP resild has no metrics yet");
    } else {
        rc = run((const char *const[]){"-s", d.sock, "metrics", NULL});
        OK(rc == 0 && strstr(out, "# TYPE "),
           "real: metrics prints exposition text (rc %d)", rc);
        /* 1000 keys with outcomes: about 1.6 MB of text, over the 1 MiB
         * libresil's resil_call used to take. */
        {
            struct resil_report rp = {.outcome = RESIL_FAILURE,
                                      .latency_ms = 5,
                                      .retry_after_ms = -1,
                                      .error_class = "network.reset"};
            struct resil_decision dec;
            char key[32];
            int i;
            for (i = 0; i < 1000; i++) {
                snprintf(key, sizeof(key), "venue%04d.orders", i);
                acquire(r, key, &dec);
                rp.key = key;
                rp.permit = dec.permit;
                resil_report(r, &rp, NULL);
            }
        }
        /* The page is rendered at most once a second (metrics.h): wait
         * out the one served above. */
        usleep(1100 * 1000);
        rc = run((const char *const[]){"-s", d.sock, "metrics", NULL});
        OK(rc == 0 && strlen(out) > (1u << 20) &&
               strstr(out, "venue0990.orders"),
           "real: metrics of 1000 keys (%zu bytes) prints whole (rc %d)",
           strlen(out), rc);
    }
    rc = integ_call(r, "subscribe", NULL, 2000, &rep, code);
    reply_free(&rep);
    if (rc == RESIL_EREMOTE && !strcmp(code, "no_such_method")) {
        OK(1, "real: watch # SKIP resild has no subscribe yet");
    } else {
        bg_start(&b, (const char *const[]){"-s", d.sock, "watch", "--topics",
                                           "state,operator", NULL});
        bg_wait_err(&b, "watching");
        run((const char *const[]){"-s", d.sock, "trip", "w.key", NULL});
        bg_wait_lines(&b, 2);
        rc = bg_finish(&b, SIGINT);
        OK(rc == 0 && strstr(out, "w.key  forced open") &&
               strstr(out, "w.key  closed -> forced_open (force)"),
           "real: watch shows a trip as force and transition (rc %d)", rc);
        if (!strstr(out, "w.key"))
            DIAG("watch printed: %s", out);
    }
    resil_close(r);
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (daemon_mkdtemp(dir, sizeof(dir)) < 0) {
        OK(0, "temporary directory");
        return tap_done();
    }
    test_health();
    test_metrics();
    test_watch();
    test_real();
    daemon_rmtree(dir);
    return tap_done();
}
