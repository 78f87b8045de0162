/*
 * test_rlink.c - daemon/rlink.c against real redis-server processes (each
 * on a Unix socket and a free TCP port of 127.0.0.1, in a temporary
 * directory), a real Sentinel with a primary and a replica, and small fake
 * servers on the test's own loop for the faults Redis cannot produce: a
 * listener whose accept queue is full (SYNs dropped), one that accepts and
 * never answers, one that cuts a reply in half, one that sends a reply
 * without end.
 *
 * Every command callback is counted: each must run exactly once, NULL when
 * no reply came.  Every link is closed and its done must run once; the
 * loop must close clean (no handle left), and `make asan` runs this under
 * ASan and LeakSanitizer.  Timings are checked against generous bounds
 * (the machine is a noisy shared VM); waits poll the loop with a deadline,
 * never a bare sleep.  The redis-server children die with the test
 * (PR_SET_PDEATHSIG) and are killed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "daemon_util.h"
#include "error.h"
#include "rlink.h"
#include "tap.h"

#define REDIS_SERVER "/usr/bin/redis-server"
#define MAX_CHILDREN 16

static uv_loop_t *loop;
static char tmp[64]; /* short: socket paths must fit sun_path */
static pid_t children[MAX_CHILDREN];

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Run the loop until cond holds or ms pass; the value of cond. */
#define WAIT_FOR(cond, ms)                                                     \
    ({                                                                         \
        uint64_t end_ = mono_ms() + (ms);                                      \
        while (!(cond) && mono_ms() < end_)                                    \
            uv_run(loop, UV_RUN_ONCE);                                         \
        (cond);                                                                \
    })

/* Run the loop for ms (to see that nothing more happens). */
static void run_for(int ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;

    while (mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
}

/* A repeating timer so that UV_RUN_ONCE returns at least every 5 ms. */
static uv_timer_t tick;

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t n = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &n) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* --- redis-server processes ---------------------------------------------- */

struct redis {
    pid_t pid;
    int port;
    char sock[108];
    char log[300];
    char conf[300]; /* sentinel: its config file */
    const char *pw; /* requirepass, or NULL */
    int replicaof;  /* the primary's port, or 0 */
    int sentinel;   /* run as a sentinel of conf */
};

static void child_add(pid_t pid)
{
    int i;

    for (i = 0; i < MAX_CHILDREN; i++)
        if (!children[i]) {
            children[i] = pid;
            return;
        }
}

static void child_forget(pid_t pid)
{
    int i;

    for (i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

static void kill_children(void)
{
    int i;

    for (i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    if (tmp[0])
        daemon_rmtree(tmp);
}

/* Connect with blocking hiredis (test side only), AUTH when pw. */
static redisContext *sync_connect(int port, const char *pw)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r;

    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (pw) {
        r = redisCommand(c, "AUTH %s", pw);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

/* One command on a fresh blocking connection; the reply or NULL. */
static redisReply *sync_cmd(int port, const char *pw, const char *fmt, ...)
{
    redisContext *c = sync_connect(port, pw);
    redisReply *r;
    va_list ap;

    if (!c)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* Answers PING (or NOAUTH: it is up, it wants a password). */
static int redis_answers(int port)
{
    redisReply *r = sync_cmd(port, NULL, "PING");
    int ok =
        r &&
        ((r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) ||
         (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));

    if (r)
        freeReplyObject(r);
    return ok;
}

static int redis_start(struct redis *s)
{
    char port[16], master[16], dbfile[32];
    const char *argv[40];
    int n = 0, i;
    uint64_t end;
    pid_t pid;

    snprintf(port, sizeof(port), "%d", s->port);
    snprintf(dbfile, sizeof(dbfile), "dump-%d.rdb", s->port);
    argv[n++] = REDIS_SERVER;
    if (s->sentinel) {
        argv[n++] = s->conf;
        argv[n++] = "--sentinel";
    } else {
        argv[n++] = "--port";
        argv[n++] = port;
        argv[n++] = "--bind";
        argv[n++] = "127.0.0.1";
        argv[n++] = "--unixsocket";
        argv[n++] = s->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
        argv[n++] = "--save";
        argv[n++] = "";
        argv[n++] = "--appendonly";
        argv[n++] = "no";
        argv[n++] = "--dir";
        argv[n++] = tmp;
        argv[n++] = "--dbfilename";
        argv[n++] = dbfile;
        argv[n++] = "--protected-mode";
        argv[n++] = "no";
        if (s->pw) {
            argv[n++] = "--requirepass";
            argv[n++] = s->pw;
        }
        if (s->replicaof) {
            snprintf(master, sizeof(master), "%d", s->replicaof);
            argv[n++] = "--replicaof";
            argv[n++] = "127.0.0.1";
            argv[n++] = master;
        }
    }
    argv[n] = NULL;
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        for (i = 3; i < 1024; i++)
            close(i);
        signal(SIGPIPE, SIG_DFL);
        execv(REDIS_SERVER, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    child_add(pid);
    end = mono_ms() + 10000;
    while (mono_ms() < end) {
        if (redis_answers(s->port))
            return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            child_forget(pid);
            s->pid = 0;
            break;
        }
        sleep_ms(20);
    }
    DIAG("%s did not come up: see %s", REDIS_SERVER, s->log);
    return -1;
}

/* A plain server (not started) with its own port, socket and log. */
static void redis_prep(struct redis *s, const char *tag)
{
    memset(s, 0, sizeof(*s));
    s->port = free_port();
    snprintf(s->sock, sizeof(s->sock), "%.63s/%.20s.sock", tmp, tag);
    snprintf(s->log, sizeof(s->log), "%s/%s.log", tmp, tag);
}

static void redis_signal(struct redis *s, int sig)
{
    if (s->pid > 0)
        kill(s->pid, sig);
}

static void redis_kill(struct redis *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    child_forget(s->pid);
    s->pid = 0;
}

/* --- links under test ------------------------------------------------------
 * A tlink is an rlink (first, so done can find the rest) with what its
 * callbacks saw. */

struct tlink {
    struct rlink l;
    int ups, downs, msgs, done;
    uint64_t down_at[64]; /* mono_ms of each down (the first 64) */
    char why[256];        /* the last down's reason */
    char chan[128], msg[256];
    int close_in_up, close_in_down, close_in_msg;
};

static void done_cb(struct rlink *l)
{
    ((struct tlink *)l)->done++;
}

static void on_up(struct rlink *l, void *ctx)
{
    struct tlink *t = ctx;

    (void)l;
    t->ups++;
    if (t->close_in_up)
        rlink_close(&t->l, done_cb);
}

static void on_down(struct rlink *l, void *ctx, const char *why)
{
    struct tlink *t = ctx;

    (void)l;
    if (t->downs < 64)
        t->down_at[t->downs] = mono_ms();
    t->downs++;
    snprintf(t->why, sizeof(t->why), "%s", why);
    if (t->close_in_down)
        rlink_close(&t->l, done_cb);
}

static void on_msg(struct rlink *l, void *ctx, const char *channel,
                   const char *data, size_t len)
{
    struct tlink *t = ctx;

    (void)l;
    t->msgs++;
    snprintf(t->chan, sizeof(t->chan), "%s", channel);
    snprintf(t->msg, sizeof(t->msg), "%.*s", (int)len, data);
    if (t->close_in_msg)
        rlink_close(&t->l, done_cb);
}

static struct rlink_conf conf_base(void)
{
    struct rlink_conf c;

    memset(&c, 0, sizeof(c));
    c.connect_timeout_ms = 1000;
    c.command_timeout_ms = 1000;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 400;
    c.name = "test-redis";
    return c;
}

static struct rlink_conf conf_unix(const char *path)
{
    struct rlink_conf c = conf_base();

    c.addr.is_unix = 1;
    snprintf(c.addr.path, sizeof(c.addr.path), "%s", path);
    return c;
}

static struct rlink_conf conf_tcp(const char *host, int port)
{
    struct rlink_conf c = conf_base();

    snprintf(c.addr.host, sizeof(c.addr.host), "%s", host);
    c.addr.port = port;
    return c;
}

static int tl_init(struct tlink *t, const struct rlink_conf *c)
{
    struct rlink_ops ops = {on_up, on_down, on_msg, t};

    memset(t, 0, sizeof(*t));
    uv_update_time(loop); /* timers count from now, not the last turn */
    return rlink_init(&t->l, loop, c, &ops, 12345);
}

static int tl_start(struct tlink *t, const struct rlink_conf *c)
{
    int rc = tl_init(t, c);

    if (rc == 0)
        rlink_start(&t->l);
    return rc;
}

/* Close t and wait for done: 1 when it ran exactly once. */
static int tl_close(struct tlink *t)
{
    rlink_close(&t->l, done_cb);
    WAIT_FOR(t->done > 0, 10000);
    run_for(20);
    return t->done == 1;
}

/* --- command replies --------------------------------------------------- */

struct res {
    int calls;
    int null;
    int type;
    long long integer;
    char str[256];
    uint64_t at;
    struct tlink *close; /* close this link from the callback */
};

static int in_command; /* set around rlink_command: no callback inside */
static int called_inside;

static void reply_cb(struct rlink *l, void *reply, void *priv)
{
    struct res *r = priv;
    const redisReply *rep = reply;

    (void)l;
    if (in_command)
        called_inside++;
    r->calls++;
    r->at = mono_ms();
    r->null = rep == NULL;
    if (rep) {
        r->type = rep->type;
        r->integer = rep->integer;
        if (rep->str)
            snprintf(r->str, sizeof(r->str), "%.*s", (int)rep->len, rep->str);
    }
    if (r->close)
        rlink_close(&r->close->l, done_cb);
}

/* Send line (a hiredis format string without conversions: words split
 * at spaces). */
static int cmd(struct tlink *t, struct res *r, const char *line)
{
    int rc;

    in_command = 1;
    rc = rlink_command(&t->l, reply_cb, r, line);
    in_command = 0;
    return rc;
}

/* Send a command built from a space-separated string via the argv call
 * (values with spaces do not occur in these tests). */
static int cmdv(struct tlink *t, struct res *r, const char *line)
{
    char buf[512], *argv[16], *save = NULL, *w;
    int argc = 0, rc;

    snprintf(buf, sizeof(buf), "%s", line);
    for (w = strtok_r(buf, " ", &save); w && argc < 16;
         w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    in_command = 1;
    rc =
        rlink_command_argv(&t->l, reply_cb, r, argc, (const char **)argv, NULL);
    in_command = 0;
    return rc;
}

/* --- fake servers on the loop ----------------------------------------- */

enum fake_mode {
    FAKE_SILENT,   /* accepts, reads, never answers */
    FAKE_PONG,     /* +PONG to every command */
    FAKE_HALF,     /* +PONG to the first, half a bulk reply to the second,
                    * then closes */
    FAKE_HUGE,     /* +PONG to the first, then a bulk reply without end */
    FAKE_SENTINEL, /* a sentinel naming 127.0.0.1:answer_port as master */
};

struct fake;

struct fconn {
    uv_tcp_t h;
    struct fake *f;
    struct fconn *next;
    enum fake_mode mode;
    char buf[4096];
    size_t len;
    int ncmds;
    int closing;
    int streaming;
};

struct fake {
    uv_tcp_t srv;
    int port;
    enum fake_mode first, rest; /* the first connection's mode, the others' */
    int answer_port;            /* FAKE_SENTINEL */
    int accepted;
    int open; /* handles not yet closed */
    struct fconn *conns;
};

struct wreq {
    uv_write_t req;
    struct fconn *fc;
    int then_close;
    uv_buf_t buf;
    char data[];
};

static void fake_closed(uv_handle_t *h)
{
    struct fake *f = h->data;

    if ((uv_tcp_t *)h != &f->srv) {
        struct fconn *fc = (struct fconn *)h, **pp;

        for (pp = &f->conns; *pp; pp = &(*pp)->next)
            if (*pp == fc) {
                *pp = fc->next;
                break;
            }
        free(fc);
    }
    f->open--;
}

static void fconn_close(struct fconn *fc)
{
    if (!fc->closing) {
        fc->closing = 1;
        uv_close((uv_handle_t *)&fc->h, fake_closed);
    }
}

static void fake_write(struct fconn *fc, const char *s, size_t n,
                       int then_close);

static char huge_chunk[1 << 20];

static void wrote(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct fconn *fc = w->fc;

    if (status < 0 || w->then_close)
        fconn_close(fc);
    else if (fc->streaming && !fc->closing)
        fake_write(fc, huge_chunk, sizeof(huge_chunk), 0);
    free(w);
}

static void fake_write(struct fconn *fc, const char *s, size_t n,
                       int then_close)
{
    struct wreq *w;

    if (fc->closing)
        return;
    w = malloc(sizeof(*w) + n);
    memcpy(w->data, s, n);
    w->fc = fc;
    w->then_close = then_close;
    w->buf = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&fc->h, &w->buf, 1, wrote) < 0) {
        free(w);
        fconn_close(fc);
    }
}

/* The length of one complete RESP command at b[0..n): >0, 0 when
 * incomplete, -1 when it is not a command. */
static long resp_len(const char *b, size_t n)
{
    size_t i = 0;
    long argc, len, k;
    char *end;
    const char *nl;

    if (n == 0)
        return 0;
    if (b[0] != '*')
        return -1;
    nl = memchr(b, '\n', n);
    if (!nl)
        return 0;
    argc = strtol(b + 1, &end, 10);
    i = (size_t)(nl - b) + 1;
    for (k = 0; k < argc; k++) {
        if (i >= n)
            return 0;
        if (b[i] != '$')
            return -1;
        nl = memchr(b + i, '\n', n - i);
        if (!nl)
            return 0;
        len = strtol(b + i + 1, &end, 10);
        i = (size_t)(nl - b) + 1 + (size_t)len + 2;
        if (i > n)
            return 0;
    }
    return (long)i;
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fconn *fc = (struct fconn *)h;

    (void)hint;
    *buf =
        uv_buf_init(fc->buf + fc->len, (unsigned)(sizeof(fc->buf) - fc->len));
}

/* The command's name (its first word), from a complete command. */
static void resp_name(const char *b, char *name, size_t cap)
{
    const char *p = memchr(b, '$', 64), *nl;
    long n;

    name[0] = '\0';
    if (!p || !(nl = strchr(p, '\n')))
        return;
    n = strtol(p + 1, NULL, 10);
    if (n <= 0 || (size_t)n >= cap)
        return;
    memcpy(name, nl + 1, (size_t)n);
    name[n] = '\0';
}

static void fake_command(struct fconn *fc, const char *cmd)
{
    static const char half[] = "$10\r\nhel";
    static const char huge[] = "$1000000000\r\n";
    static const char subscribed[] =
        "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";
    char name[32], reply[128], port[8];

    fc->ncmds++;
    switch (fc->mode) {
    case FAKE_SENTINEL:
        resp_name(cmd, name, sizeof(name));
        if (strcasecmp(name, "SUBSCRIBE") == 0) {
            fake_write(fc, subscribed, sizeof(subscribed) - 1, 0);
        } else if (strcasecmp(name, "SENTINEL") == 0) {
            snprintf(port, sizeof(port), "%d", fc->f->answer_port);
            snprintf(reply, sizeof(reply),
                     "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(port),
                     port);
            fake_write(fc, reply, strlen(reply), 0);
        } else {
            fake_write(fc, "-ERR fake\r\n", 11, 0);
        }
        break;
    case FAKE_SILENT:
        break;
    case FAKE_PONG:
        fake_write(fc, "+PONG\r\n", 7, 0);
        break;
    case FAKE_HALF:
        if (fc->ncmds == 1)
            fake_write(fc, "+PONG\r\n", 7, 0);
        else
            fake_write(fc, half, sizeof(half) - 1, 1);
        break;
    case FAKE_HUGE:
        if (fc->ncmds == 1) {
            fake_write(fc, "+PONG\r\n", 7, 0);
        } else if (!fc->streaming) {
            fc->streaming = 1;
            fake_write(fc, huge, sizeof(huge) - 1, 0);
        }
        break;
    }
}

static void fake_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fconn *fc = (struct fconn *)s;
    long n = 0;

    (void)buf;
    if (nread < 0) {
        fconn_close(fc);
        return;
    }
    fc->len += (size_t)nread;
    while (!fc->closing && (n = resp_len(fc->buf, fc->len)) > 0) {
        fake_command(fc, fc->buf);
        memmove(fc->buf, fc->buf + n, fc->len - (size_t)n);
        fc->len -= (size_t)n;
    }
    if (n < 0 || fc->len == sizeof(fc->buf))
        fconn_close(fc);
}

static void fake_accept(uv_stream_t *srv, int status)
{
    struct fake *f = srv->data;
    struct fconn *fc;

    if (status < 0)
        return;
    fc = calloc(1, sizeof(*fc));
    uv_tcp_init(loop, &fc->h);
    fc->h.data = f;
    fc->f = f;
    f->open++;
    if (uv_accept(srv, (uv_stream_t *)&fc->h) < 0) {
        fconn_close(fc);
        return;
    }
    fc->mode = f->accepted++ == 0 ? f->first : f->rest;
    fc->next = f->conns;
    f->conns = fc;
    uv_read_start((uv_stream_t *)&fc->h, fake_alloc, fake_read);
}

static int fake_start(struct fake *f, enum fake_mode first, enum fake_mode rest)
{
    struct sockaddr_in sa;
    int n = sizeof(sa);

    memset(f, 0, sizeof(*f));
    f->first = first;
    f->rest = rest;
    uv_tcp_init(loop, &f->srv);
    f->srv.data = f;
    f->open = 1;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_bind(&f->srv, (struct sockaddr *)&sa, 0) < 0 ||
        uv_listen((uv_stream_t *)&f->srv, 16, fake_accept) < 0 ||
        uv_tcp_getsockname(&f->srv, (struct sockaddr *)&sa, &n) < 0)
        return -1;
    f->port = ntohs(sa.sin_port);
    return 0;
}

static void fake_stop(struct fake *f)
{
    struct fconn *fc;

    for (fc = f->conns; fc; fc = fc->next)
        fconn_close(fc);
    uv_close((uv_handle_t *)&f->srv, fake_closed);
    WAIT_FOR(f->open == 0, 5000);
}

/* A listener whose accept queue is full: the kernel drops new SYNs, so a
 * connect neither succeeds nor fails.  fds[0] listens; the rest fill. */
struct jam {
    int fds[4];
    int port;
};

static int jam_start(struct jam *j)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t n = sizeof(sa);
    int i;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    j->fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (j->fds[0] < 0 || bind(j->fds[0], (struct sockaddr *)&sa, n) < 0 ||
        listen(j->fds[0], 0) < 0 ||
        getsockname(j->fds[0], (struct sockaddr *)&sa, &n) < 0)
        return -1;
    j->port = ntohs(sa.sin_port);
    /* Backlog 0 queues one connection; the others' SYNs are dropped. */
    for (i = 1; i < 4; i++) {
        j->fds[i] =
            socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(j->fds[i], (struct sockaddr *)&sa, sizeof(sa));
        sleep_ms(20);
    }
    return 0;
}

static void jam_stop(struct jam *j)
{
    int i;

    for (i = 0; i < 4; i++)
        if (j->fds[i] >= 0)
            close(j->fds[i]);
}

/* --- 0. pure parts ------------------------------------------------------- */

static void test_parse(void)
{
    struct rlink_addr a;
    char err[128];

    IS(rlink_parse_addr("unix:///run/redis/redis.sock", 0, &a, err,
                        sizeof(err)),
       0, "parse unix:///path");
    OK(a.is_unix && strcmp(a.path, "/run/redis/redis.sock") == 0,
       "unix path kept: %s", a.path);
    IS(rlink_parse_addr("tcp://10.0.0.5:6379", 0, &a, err, sizeof(err)), 0,
       "parse tcp://host:port");
    OK(!a.is_unix && strcmp(a.host, "10.0.0.5") == 0 && a.port == 6379,
       "tcp host and port");
    IS(rlink_parse_addr("tcp://[::1]:26379", 0, &a, err, sizeof(err)), 0,
       "parse tcp://[v6]:port");
    OK(strcmp(a.host, "::1") == 0 && a.port == 26379, "v6 host unbracketed");
    IS(rlink_parse_addr("sentinel-1.example:26379", 1, &a, err, sizeof(err)), 0,
       "bare host:port for a sentinel");
    IS(rlink_parse_addr("sentinel-1.example:26379", 0, &a, err, sizeof(err)),
       RD_EINVAL, "bare host:port refused for a server url");
    OK(rlink_parse_addr("unix://run/x.sock", 0, &a, err, sizeof(err)) ==
               RD_EINVAL &&
           strstr(err, "absolute"),
       "relative unix path refused: %s", err);
    OK(rlink_parse_addr("tcp://h:0", 0, &a, err, sizeof(err)) == RD_EINVAL &&
           rlink_parse_addr("tcp://h:65536", 0, &a, err, sizeof(err)) ==
               RD_EINVAL &&
           rlink_parse_addr("tcp://h:12x", 0, &a, err, sizeof(err)) ==
               RD_EINVAL &&
           rlink_parse_addr("tcp://h", 0, &a, err, sizeof(err)) == RD_EINVAL &&
           rlink_parse_addr("tcp://:1", 0, &a, err, sizeof(err)) == RD_EINVAL &&
           rlink_parse_addr("tcp://::1:6379", 0, &a, err, sizeof(err)) ==
               RD_EINVAL &&
           rlink_parse_addr("tcp://a b:1", 0, &a, err, sizeof(err)) ==
               RD_EINVAL &&
           rlink_parse_addr("redis://h:1", 0, &a, err, sizeof(err)) ==
               RD_EINVAL,
       "bad ports, hosts and schemes refused (last: %s)", err);
    {
        char longp[200];

        memset(longp, 'a', sizeof(longp));
        memcpy(longp, "unix:///", 8);
        longp[sizeof(longp) - 1] = '\0';
        OK(rlink_parse_addr(longp, 0, &a, err, sizeof(err)) == RD_EINVAL,
           "socket path over RLINK_PATH_MAX refused: %s", err);
    }
}

static void test_backoff(void)
{
    struct rlink_conf c = conf_base();
    uint64_t rng = 42;
    unsigned n, i;
    uint32_t d, v, lo, hi;
    int in_range = 1, spread = 1;

    c.backoff_min_ms = 100;
    c.backoff_max_ms = 10000;
    for (n = 0; n < 70; n++) {
        d = (uint32_t)(n < 7 ? 100u << n : 10000);
        if (d > 10000)
            d = 10000;
        lo = UINT32_MAX;
        hi = 0;
        for (i = 0; i < 2000; i++) {
            v = rlink_backoff_ms(&c, n, &rng);
            if (v < d / 2 || v > d)
                in_range = 0;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        /* Uniform over [d/2, d]: 2000 draws come near both ends. */
        if (lo > d / 2 + d / 20 || hi < d - d / 20)
            spread = 0;
    }
    OK(in_range, "every delay in [d/2, d], d = min(100 << n, 10000), n < 70");
    OK(spread, "the draws cover [d/2, d] (jitter, not a fixed delay)");
    c.backoff_min_ms = 1;
    c.backoff_max_ms = UINT32_MAX;
    OK(rlink_backoff_ms(&c, 4000000000u, &rng) >= UINT32_MAX / 2,
       "a huge failure count neither overflows nor wraps");
}

static void test_init(void)
{
    struct rlink_conf c = conf_base();
    struct tlink t;
    struct res r = {0};
    char buf[256];

    IS(tl_init(&t, &c), RD_EINVAL, "init: no address is RD_EINVAL");
    c = conf_tcp("127.0.0.1", 0);
    IS(tl_init(&t, &c), RD_EINVAL, "init: port 0 is RD_EINVAL");
    c = conf_base();
    c.nsentinels = 1;
    snprintf(c.sentinels[0].host, sizeof(c.sentinels[0].host), "127.0.0.1");
    c.sentinels[0].port = 26379;
    IS(tl_init(&t, &c), RD_EINVAL, "init: sentinels without master_name");
    c.nsentinels = RLINK_SENTINELS + 1;
    snprintf(c.master_name, sizeof(c.master_name), "m");
    IS(tl_init(&t, &c), RD_EINVAL, "init: too many sentinels");

    c = conf_tcp("127.0.0.1", 1);
    c.connect_timeout_ms = c.command_timeout_ms = 0;
    c.backoff_min_ms = 500;
    c.backoff_max_ms = 10;
    IS(tl_init(&t, &c), 0, "init ok");
    OK(t.l.conf.connect_timeout_ms == 1000 &&
           t.l.conf.command_timeout_ms == 1000 &&
           t.l.conf.backoff_max_ms == 500,
       "defaults for 0, back-off max raised to min");
    rlink_describe(&t.l, buf, sizeof(buf));
    OK(strcmp(buf, "not started") == 0, "describe: %s", buf);
    IS(cmd(&t, &r, "PING"), RD_EDOWN, "a command before start: RD_EDOWN");
    OK(tl_close(&t), "close of a link never started: done once");
    IS(r.calls, 0, "the refused command's callback never ran");
    rlink_describe(&t.l, buf, sizeof(buf));
    OK(strcmp(buf, "closed") == 0, "describe after done: %s", buf);

    {
        char longc[RLINK_CHANNEL_MAX + 2];

        memset(longc, 'c', sizeof(longc) - 1);
        longc[sizeof(longc) - 1] = '\0';
        c = conf_tcp("127.0.0.1", 1);
        tl_init(&t, &c);
        OK(rlink_subscribe(&t.l, "a") == 0 && rlink_subscribe(&t.l, "b") == 0 &&
               rlink_subscribe(&t.l, "c") == 0 &&
               rlink_subscribe(&t.l, "d") == 0,
           "RLINK_CHANNELS (4) channels");
        IS(rlink_subscribe(&t.l, "e"), RD_EINVAL, "a fifth: RD_EINVAL");
        IS(rlink_subscribe(&t.l, longc), RD_EINVAL,
           "a channel over RLINK_CHANNEL_MAX: RD_EINVAL");
        OK(tl_close(&t), "closed");
    }
}

/* --- 1. connect, commands, AUTH and SELECT ------------------------------- */

static void test_basic(void)
{
    struct redis s, p;
    struct rlink_conf c;
    struct tlink u, t, h, wrong, noauth;
    struct res r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0}, r5 = {0}, r6 = {0};
    char buf[256];
    redisContext *sc;
    redisReply *rep;

    redis_prep(&s, "basic");
    if (!OK(redis_start(&s) == 0, "redis-server up (port %d)", s.port))
        return;

    c = conf_unix(s.sock);
    tl_start(&u, &c);
    OK(WAIT_FOR(u.ups == 1, 5000) && rlink_is_up(&u.l),
       "unix: up (connected, PING answered)");
    rlink_describe(&u.l, buf, sizeof(buf));
    OK(strncmp(buf, "connected to unix:", 18) == 0, "describe: %s", buf);
    IS(cmd(&u, &r1, "SET rlink:k hello"), 0, "unix: SET sent");
    IS(cmdv(&u, &r2, "GET rlink:k"), 0, "unix: GET sent (argv)");
    IS(rlink_pending(&u.l), 2, "two pending");
    OK(WAIT_FOR(r2.calls == 1, 5000), "unix: replies came");
    OK(r1.calls == 1 && r1.type == REDIS_REPLY_STATUS &&
           strcmp(r1.str, "OK") == 0,
       "SET answered OK once");
    OK(r2.calls == 1 && r2.type == REDIS_REPLY_STRING &&
           strcmp(r2.str, "hello") == 0,
       "GET answered hello once");
    IS(rlink_pending(&u.l), 0, "nothing pending");
    IS(cmd(&u, &r3, "SUBSCRIBE x"), RD_EINVAL,
       "SUBSCRIBE through the command call: RD_EINVAL");
    IS(cmd(&u, &r3, "monitor"), RD_EINVAL, "MONITOR: RD_EINVAL");
    IS(cmd(&u, &r3, "INCRBY rlink:e notanumber"), 0, "a command Redis refuses");
    OK(WAIT_FOR(r3.calls == 1, 5000) && r3.type == REDIS_REPLY_ERROR,
       "its error reply reaches the callback: %s", r3.str);
    OK(u.l.stats.errors == 1 && u.l.stats.commands == 3 &&
           u.l.stats.connects == 1,
       "stats: 3 commands, 1 error, 1 connect");

    c = conf_tcp("127.0.0.1", s.port);
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "tcp 127.0.0.1: up");
    rlink_addr_str(&t.l, buf, sizeof(buf));
    OK(strstr(buf, "tcp:127.0.0.1:") == buf, "addr_str: %s", buf);
    IS(cmd(&t, &r4, "GET rlink:k"), 0, "tcp: GET sent");
    OK(WAIT_FOR(r4.calls == 1, 5000) && strcmp(r4.str, "hello") == 0,
       "tcp: same data as over unix");

    c = conf_tcp("localhost", s.port);
    tl_start(&h, &c);
    OK(WAIT_FOR(h.ups == 1, 5000), "tcp localhost: resolved off the loop, up");
    IS(cmd(&h, &r5, "PING"), 0, "localhost: PING sent");
    OK(WAIT_FOR(r5.calls == 1, 5000) && strcmp(r5.str, "PONG") == 0,
       "localhost: PONG");
    OK(called_inside == 0, "no callback ran inside rlink_command");
    OK(tl_close(&u) && tl_close(&t) && tl_close(&h), "three links closed");
    redis_kill(&s);

    /* AUTH and SELECT. */
    redis_prep(&p, "auth");
    p.pw = "s3cret pass";
    if (!OK(redis_start(&p) == 0, "redis-server with requirepass up"))
        return;
    c = conf_tcp("127.0.0.1", p.port);
    snprintf(c.password, sizeof(c.password), "%s", p.pw);
    c.db = 3;
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "AUTH (a password with a space) and "
                                   "SELECT 3: up");
    memset(&r6, 0, sizeof(r6));
    IS(cmd(&t, &r6, "SET rlink:db3 three"), 0, "SET on db 3");
    OK(WAIT_FOR(r6.calls == 1, 5000) && strcmp(r6.str, "OK") == 0, "SET OK");
    sc = sync_connect(p.port, p.pw);
    rep = sc ? redisCommand(sc, "SELECT 3") : NULL;
    if (rep)
        freeReplyObject(rep);
    rep = sc ? redisCommand(sc, "GET rlink:db3") : NULL;
    OK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "three") == 0,
       "the key is in db 3");
    if (rep)
        freeReplyObject(rep);
    rep = sc ? redisCommand(sc, "SELECT 0") : NULL;
    if (rep)
        freeReplyObject(rep);
    rep = sc ? redisCommand(sc, "EXISTS rlink:db3") : NULL;
    OK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0,
       "and not in db 0");
    if (rep)
        freeReplyObject(rep);
    if (sc)
        redisFree(sc);
    OK(tl_close(&t), "closed");

    snprintf(c.password, sizeof(c.password), "wrong");
    tl_start(&wrong, &c);
    OK(WAIT_FOR(wrong.downs >= 1, 5000), "wrong password: down");
    OK(strstr(wrong.why, "AUTH") &&
           (strstr(wrong.why, "WRONGPASS") || strstr(wrong.why, "invalid")),
       "with a clear reason: %s", wrong.why);
    OK(!rlink_is_up(&wrong.l) && wrong.ups == 0 &&
           wrong.l.stats.connect_failures >= 1,
       "never up; counted as a connect failure");
    rlink_describe(&wrong.l, buf, sizeof(buf));
    OK(strstr(buf, "WRONGPASS") || strstr(buf, "invalid"), "describe: %s", buf);
    OK(tl_close(&wrong), "closed");

    c.password[0] = '\0';
    c.db = 0;
    tl_start(&noauth, &c);
    OK(WAIT_FOR(noauth.downs >= 1, 5000) && strstr(noauth.why, "NOAUTH") &&
           noauth.ups == 0,
       "no password for a server that wants one: down, %s", noauth.why);
    OK(tl_close(&noauth), "closed");
    redis_kill(&p);
}

/* --- 2. connect timeout and back-off ------------------------------------ */

static void test_connect_timeout(void)
{
    struct jam j;
    struct fake f;
    struct rlink_conf c;
    struct tlink t, s, r;
    uint64_t t0, gap, want;
    int port, i, ok;

    if (!OK(jam_start(&j) == 0, "a listener with a full accept queue"))
        return;
    c = conf_tcp("127.0.0.1", j.port);
    c.connect_timeout_ms = 300;
    c.backoff_min_ms = 200;
    c.backoff_max_ms = 400;
    t0 = mono_ms();
    tl_start(&t, &c);
    OK(WAIT_FOR(t.downs >= 1, 5000), "SYN dropped: the attempt fails");
    OK(t.downs >= 1 && t.down_at[0] - t0 >= 250 &&
           t.down_at[0] - t0 <= 300 + 2500,
       "after connect_timeout_ms (300): %llu ms",
       (unsigned long long)(t.down_at[0] - t0));
    OK(strstr(t.why, "timed out") != NULL, "reason: %s", t.why);
    OK(WAIT_FOR(t.downs >= 2, 5000), "it retried and failed again");
    gap = t.downs >= 2 ? t.down_at[1] - t.down_at[0] : 0;
    OK(gap >= 300 + 100 - 30,
       "the retry waited its back-off (>= 100) before its own 300 ms: %llu "
       "ms",
       (unsigned long long)gap);
    OK(t.l.stats.connect_failures >= 2 && t.ups == 0,
       "connect_failures counted (%llu)",
       (unsigned long long)t.l.stats.connect_failures);
    OK(tl_close(&t), "closed while connecting or waiting");
    jam_stop(&j);

    /* Connected, but the handshake is never answered: the same deadline. */
    if (!OK(fake_start(&f, FAKE_SILENT, FAKE_SILENT) == 0, "silent server"))
        return;
    c = conf_tcp("127.0.0.1", f.port);
    c.connect_timeout_ms = 300;
    t0 = mono_ms();
    tl_start(&s, &c);
    WAIT_FOR(s.downs >= 1, 5000);
    OK(s.downs >= 1 && strstr(s.why, "timed out") && s.down_at[0] - t0 >= 250 &&
           s.down_at[0] - t0 <= 2800,
       "a server that never answers the handshake: down after %llu ms: %s",
       (unsigned long long)(s.downs ? s.down_at[0] - t0 : 0), s.why);
    OK(f.accepted >= 1, "(the socket had connected)");
    OK(tl_close(&s), "closed");
    fake_stop(&f);

    /* Refused at once: the delays between attempts follow the back-off. */
    port = free_port();
    c = conf_tcp("127.0.0.1", port);
    c.backoff_min_ms = 100;
    c.backoff_max_ms = 400;
    tl_start(&r, &c);
    WAIT_FOR(r.downs >= 6, 8000);
    OK(r.downs >= 6 && strstr(r.why, "refused"),
       "refused port: %d failures, %s", r.downs, r.why);
    ok = 1;
    for (i = 1; i < r.downs && i < 6; i++) {
        gap = r.down_at[i] - r.down_at[i - 1];
        want = 100u << (i - 1);
        if (want > 400)
            want = 400;
        if (gap + 20 < want / 2 || gap > want + 1500) {
            DIAG("gap %d: %llu ms, delay %llu", i, (unsigned long long)gap,
                 (unsigned long long)want);
            ok = 0;
        }
    }
    OK(ok, "each wait in [delay/2, delay] (+ slack), delay 100, 200, 400, "
           "400...");
    OK(tl_close(&r), "closed in back-off");
}

/* --- 3. command timeout -------------------------------------------------- */

static void test_command_timeout(void)
{
    struct redis s;
    struct rlink_conf c;
    struct tlink t;
    struct res r[3], after = {0};
    uint64_t t0;
    int i, ok;

    redis_prep(&s, "stop");
    if (!OK(redis_start(&s) == 0, "redis-server up"))
        return;
    c = conf_unix(s.sock);
    c.command_timeout_ms = 500;
    c.connect_timeout_ms = 500;
    c.backoff_min_ms = 100;
    c.backoff_max_ms = 300;
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up");
    redis_signal(&s, SIGSTOP);
    memset(r, 0, sizeof(r));
    t0 = mono_ms();
    ok = 1;
    for (i = 0; i < 3; i++)
        ok &= cmd(&t, &r[i], "INCR rlink:n") == 0;
    OK(ok, "three commands sent to a stopped server");
    OK(WAIT_FOR(r[2].calls >= 1, 6000), "they were answered");
    OK(r[0].calls == 1 && r[1].calls == 1 && r[2].calls == 1 && r[0].null &&
           r[1].null && r[2].null,
       "each once, with NULL");
    OK(r[0].at - t0 >= 400 && r[0].at - t0 <= 500 + 3000,
       "after about command_timeout_ms (500): %llu ms",
       (unsigned long long)(r[0].at - t0));
    OK(r[0].at <= r[1].at && r[1].at <= r[2].at, "in the order sent");
    OK(t.downs == 1 && strstr(t.why, "no reply") && !rlink_is_up(&t.l),
       "the link went down: %s", t.why);
    OK(t.l.stats.timeouts >= 1 && t.l.stats.disconnects == 1,
       "timeouts %llu, disconnects %llu",
       (unsigned long long)t.l.stats.timeouts,
       (unsigned long long)t.l.stats.disconnects);
    OK(WAIT_FOR(t.downs >= 2, 5000),
       "reconnects to the stopped server fail (handshake unanswered): %s",
       t.why);
    redis_signal(&s, SIGCONT);
    OK(WAIT_FOR(t.ups == 2, 10000), "up again after SIGCONT");
    IS(cmd(&t, &after, "INCR rlink:n"), 0, "a command after");
    OK(WAIT_FOR(after.calls == 1, 5000) && !after.null &&
           after.type == REDIS_REPLY_INTEGER,
       "answered (%lld)", after.integer);
    run_for(50);
    OK(r[0].calls == 1 && r[1].calls == 1 && r[2].calls == 1,
       "the timed-out commands were never answered again");
    OK(tl_close(&t), "closed");
    redis_kill(&s);
}

/* --- 4. a reply cut in half; a reply without end ------------------------- */

static void test_half_reply(void)
{
    struct fake f;
    struct rlink_conf c;
    struct tlink t;
    struct res r = {0}, r2 = {0};

    if (!OK(fake_start(&f, FAKE_HALF, FAKE_PONG) == 0, "fake server"))
        return;
    c = conf_tcp("127.0.0.1", f.port);
    c.backoff_min_ms = 50;
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up (the fake answers PING)");
    IS(cmd(&t, &r, "GET x"), 0, "GET sent");
    OK(WAIT_FOR(r.calls >= 1, 5000) && r.calls == 1 && r.null,
       "half a bulk reply, then close: NULL once");
    OK(WAIT_FOR(t.downs >= 1, 2000) && strlen(t.why) > 0, "down: %s", t.why);
    OK(WAIT_FOR(t.ups == 2, 5000), "reconnected");
    IS(cmd(&t, &r2, "GET x"), 0, "GET again");
    OK(WAIT_FOR(r2.calls == 1, 5000) && strcmp(r2.str, "PONG") == 0,
       "answered by the new connection");
    run_for(50);
    IS(r.calls, 1, "the cut command: still once");
    OK(tl_close(&t), "closed");
    fake_stop(&f);

    /* A reply that never ends is cut at RLINK_MAX_INPUT_BYTES (64 MiB). */
    if (!OK(fake_start(&f, FAKE_HUGE, FAKE_PONG) == 0, "fake server (huge)"))
        return;
    c = conf_tcp("127.0.0.1", f.port);
    c.command_timeout_ms = 30000;
    memset(&r, 0, sizeof(r));
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up");
    IS(cmd(&t, &r, "GET big"), 0, "GET sent");
    OK(WAIT_FOR(r.calls >= 1, 20000) && r.calls == 1 && r.null,
       "a reply without end: NULL once");
    OK(strstr(t.why, "larger than"), "dropped at the input bound: %s", t.why);
    OK(tl_close(&t), "closed");
    fake_stop(&f);
}

/* --- 5. close ------------------------------------------------------------ */

static void test_close(void)
{
    struct redis s;
    struct rlink_conf c;
    struct tlink t;
    struct res r[4], a = {0}, b = {0}, d = {0};
    struct jam j;
    int i, ok, port;

    redis_prep(&s, "close");
    if (!OK(redis_start(&s) == 0, "redis-server up"))
        return;
    c = conf_unix(s.sock);

    /* Pending commands (a stopped server), then close. */
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up");
    redis_signal(&s, SIGSTOP);
    memset(r, 0, sizeof(r));
    ok = 1;
    for (i = 0; i < 4; i++)
        ok &= cmd(&t, &r[i], "PING") == 0;
    OK(ok && rlink_pending(&t.l) == 4, "four pending");
    rlink_close(&t.l, done_cb);
    IS(cmd(&t, &a, "PING"), RD_EDOWN, "a command after close: RD_EDOWN");
    OK(WAIT_FOR(t.done > 0, 5000), "done ran");
    ok = 1;
    for (i = 0; i < 4; i++)
        ok &= r[i].calls == 1 && r[i].null;
    OK(ok, "each pending command answered once with NULL");
    run_for(100);
    OK(t.done == 1 && t.downs == 0, "done once; no down during close");
    ok = 1;
    for (i = 0; i < 4; i++)
        ok &= r[i].calls == 1;
    OK(ok && a.calls == 0, "nothing called after done");
    redis_signal(&s, SIGCONT);

    /* Close from inside a reply callback with others still pending. */
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up");
    memset(&a, 0, sizeof(a));
    a.close = &t;
    cmd(&t, &a, "PING");
    cmd(&t, &b, "PING");
    cmd(&t, &d, "PING");
    OK(WAIT_FOR(t.done > 0, 5000), "closed from the first reply's callback");
    OK(a.calls == 1 && !a.null && strcmp(a.str, "PONG") == 0,
       "the first got its reply");
    OK(b.calls == 1 && b.null && d.calls == 1 && d.null,
       "the others NULL, once each (their replies are not delivered after "
       "close)");
    run_for(50);
    OK(t.done == 1 && b.calls == 1 && d.calls == 1, "done once");

    /* Close from inside up. */
    tl_init(&t, &c);
    t.close_in_up = 1;
    rlink_start(&t.l);
    OK(WAIT_FOR(t.done > 0, 5000) && t.ups == 1 && t.downs == 0,
       "closed from inside up: done, no down");
    run_for(50);
    IS(t.done, 1, "done once");

    /* Close from inside down (a refused port). */
    port = free_port();
    {
        struct rlink_conf rc = conf_tcp("127.0.0.1", port);

        tl_init(&t, &rc);
        t.close_in_down = 1;
        rlink_start(&t.l);
        OK(WAIT_FOR(t.done > 0, 5000) && t.downs == 1,
           "closed from inside down: done");
        run_for(200);
        OK(t.done == 1 && t.downs == 1, "no retry after that");

        /* Close while waiting for the back-off. */
        tl_start(&t, &rc);
        OK(WAIT_FOR(t.downs == 1, 5000), "refused; waiting to retry");
        OK(tl_close(&t) && t.downs == 1, "closed in back-off");

        /* Close while the name is being resolved. */
        rc = conf_tcp("localhost", port);
        tl_start(&t, &rc);
        OK(tl_close(&t) && t.downs == 0 && t.ups == 0,
           "closed while resolving localhost");
    }

    /* Close while the socket connect is in progress. */
    if (OK(jam_start(&j) == 0, "full accept queue")) {
        struct rlink_conf jc = conf_tcp("127.0.0.1", j.port);

        tl_start(&t, &jc);
        run_for(50);
        OK(tl_close(&t) && t.downs == 0, "closed while connecting");
        jam_stop(&j);
    }

    /* Close from inside a NULL answer (a command timeout). */
    c.command_timeout_ms = 300;
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up");
    redis_signal(&s, SIGSTOP);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    a.close = &t;
    cmd(&t, &a, "PING");
    cmd(&t, &b, "PING");
    OK(WAIT_FOR(t.done > 0, 5000), "closed from a NULL answer's callback");
    OK(a.calls == 1 && a.null && b.calls == 1 && b.null && t.downs == 0,
       "both answered NULL once; no down once closing");
    redis_signal(&s, SIGCONT);
    redis_kill(&s);
}

/* --- 6. kill -9 and restart ---------------------------------------------- */

static void test_restart(void)
{
    struct redis s;
    struct rlink_conf c;
    struct tlink t;
    struct res r = {0}, r2 = {0};

    redis_prep(&s, "restart");
    if (!OK(redis_start(&s) == 0, "redis-server up"))
        return;
    c = conf_tcp("127.0.0.1", s.port);
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 5000), "up");
    redis_kill(&s);
    OK(WAIT_FOR(t.downs >= 1, 5000) && strlen(t.why) > 0,
       "kill -9: down with a reason: %s", t.why);
    OK(!rlink_is_up(&t.l) && t.l.stats.disconnects == 1, "one disconnect");
    IS(cmd(&t, &r, "PING"), RD_EDOWN, "commands refused while down");
    WAIT_FOR(t.downs >= 2, 2000);
    if (!OK(redis_start(&s) == 0, "restarted on the same port"))
        return;
    OK(WAIT_FOR(t.ups == 2, 10000), "reconnected by itself");
    IS(cmd(&t, &r2, "SET rlink:after restart"), 0, "SET after restart");
    OK(WAIT_FOR(r2.calls == 1, 5000) && strcmp(r2.str, "OK") == 0,
       "works again");
    OK(r.calls == 0, "the refused command was never called back");
    OK(tl_close(&t), "closed");
    redis_kill(&s);
}

/* --- 7. subscriber ------------------------------------------------------- */

static void test_subscriber(void)
{
    struct redis s;
    struct rlink_conf c;
    struct tlink sub, pub;
    struct res r = {0}, r2 = {0}, r3 = {0}, r4 = {0};

    redis_prep(&s, "sub");
    if (!OK(redis_start(&s) == 0, "redis-server up"))
        return;
    c = conf_unix(s.sock);
    c.command_timeout_ms = 400;
    tl_init(&sub, &c);
    IS(rlink_subscribe(&sub.l, "news"), 0, "subscribe news");
    IS(rlink_subscribe(&sub.l, "alerts"), 0, "subscribe alerts");
    IS(rlink_subscribe(&sub.l, "news"), 0, "again: no-op");
    IS(rlink_subscribe(&sub.l, ""), RD_EINVAL, "empty channel refused");
    rlink_start(&sub.l);
    c.command_timeout_ms = 1000;
    tl_start(&pub, &c);
    OK(WAIT_FOR(sub.ups == 1 && pub.ups == 1, 5000),
       "subscriber up once both channels are confirmed; publisher up");
    IS(cmd(&sub, &r, "PING"), RD_EINVAL, "a subscriber takes no commands");
    IS(cmd(&pub, &r, "PUBLISH news hello"), 0, "publish");
    OK(WAIT_FOR(sub.msgs == 1, 5000) && strcmp(sub.chan, "news") == 0 &&
           strcmp(sub.msg, "hello") == 0,
       "message received: %s %s", sub.chan, sub.msg);
    OK(r.calls == 1 && r.integer == 1, "one subscriber counted by Redis");
    run_for(1000);
    OK(rlink_is_up(&sub.l) && sub.downs == 0,
       "idle for 2.5 keepalive periods: still up (keepalives answered)");

    redis_kill(&s);
    OK(WAIT_FOR(sub.downs >= 1 && pub.downs >= 1, 5000),
       "kill -9: both down (%s)", sub.why);
    if (!OK(redis_start(&s) == 0, "restarted"))
        return;
    OK(WAIT_FOR(sub.ups == 2 && pub.ups == 2, 10000),
       "both reconnected; the subscriber re-subscribed");
    IS(cmd(&pub, &r2, "PUBLISH alerts again"), 0, "publish after restart");
    OK(WAIT_FOR(sub.msgs == 2, 5000) && strcmp(sub.chan, "alerts") == 0 &&
           strcmp(sub.msg, "again") == 0,
       "received after the restart");
    OK(r2.calls == 1 && r2.integer == 1, "subscribed again at Redis");

    IS(rlink_subscribe(&sub.l, "late"), 0, "a channel added while up");
    run_for(100);
    IS(cmd(&pub, &r3, "PUBLISH late news"), 0, "publish on it");
    OK(WAIT_FOR(sub.msgs == 3, 5000) && strcmp(sub.chan, "late") == 0,
       "received on the late channel");

    /* A dead connection is found without any traffic. */
    redis_signal(&s, SIGSTOP);
    OK(WAIT_FOR(sub.downs >= 2, 5000) && strstr(sub.why, "keepalive"),
       "stopped server: the keepalive finds it: %s", sub.why);
    redis_signal(&s, SIGCONT);
    OK(WAIT_FOR(sub.ups >= 3 && rlink_is_up(&pub.l), 10000), "up again");
    sub.close_in_msg = 1;
    IS(cmd(&pub, &r4, "PUBLISH news bye"), 0, "publish");
    OK(WAIT_FOR(sub.done > 0, 5000) && sub.msgs == 4,
       "closed from inside the message callback");
    if (!sub.done)
        tl_close(&sub);
    OK(tl_close(&pub), "publisher closed");
    run_for(50);
    IS(sub.done, 1, "subscriber done once");
    redis_kill(&s);
}

/* --- 8. Sentinel --------------------------------------------------------- */

/* The sentinel knows a healthy replica of name. */
static int sentinel_sees_replica(int port, const char *name)
{
    redisReply *r = sync_cmd(port, NULL, "SENTINEL replicas %s", name);
    size_t i, k;
    int ok = 0;

    if (!r)
        return 0;
    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        int flags_ok = 0, link_ok = 0;

        for (k = 0; e->type == REDIS_REPLY_ARRAY && k + 1 < e->elements;
             k += 2) {
            const char *key = e->element[k]->str, *v = e->element[k + 1]->str;

            if (!key || !v)
                continue;
            if (strcmp(key, "flags") == 0 && strcmp(v, "slave") == 0)
                flags_ok = 1;
            if (strcmp(key, "master-link-status") == 0 && strcmp(v, "ok") == 0)
                link_ok = 1;
        }
        ok |= flags_ok && link_ok;
    }
    freeReplyObject(r);
    return ok;
}

static void test_sentinel(void)
{
    struct redis p, rep, sen;
    struct rlink_conf c, c2;
    struct tlink t, u;
    struct fake f;
    struct res r = {0}, r2 = {0};
    char buf[512], want[64];
    FILE *fp;
    redisReply *x;
    uint64_t end;
    int ok;

    redis_prep(&p, "primary");
    redis_prep(&rep, "replica");
    redis_prep(&sen, "sentinel");
    sen.sentinel = 1;
    snprintf(sen.conf, sizeof(sen.conf), "%s/sentinel.conf", tmp);
    if (!OK(redis_start(&p) == 0, "primary up"))
        return;
    rep.replicaof = p.port;
    if (!OK(redis_start(&rep) == 0, "replica up"))
        return;
    end = mono_ms() + 10000;
    ok = 0;
    while (!ok && mono_ms() < end) {
        x = sync_cmd(rep.port, NULL, "INFO replication");
        ok = x && x->str && strstr(x->str, "master_link_status:up");
        if (x)
            freeReplyObject(x);
        if (!ok)
            sleep_ms(50);
    }
    if (!OK(ok, "the replica is in sync"))
        return;
    fp = fopen(sen.conf, "w");
    if (!fp)
        return;
    fprintf(fp,
            "port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"
            "sentinel monitor rmaster 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds rmaster 1000\n"
            "sentinel failover-timeout rmaster 3000\n",
            sen.port, tmp, p.port);
    fclose(fp);
    if (!OK(redis_start(&sen) == 0, "sentinel up"))
        return;
    end = mono_ms() + 20000;
    while (!(ok = sentinel_sees_replica(sen.port, "rmaster")) &&
           mono_ms() < end)
        sleep_ms(100);
    if (!OK(ok, "the sentinel knows the replica"))
        return;

    /* The first sentinel listed is dead: the second is asked. */
    c = conf_base();
    c.nsentinels = 2;
    snprintf(c.sentinels[0].host, sizeof(c.sentinels[0].host), "127.0.0.1");
    c.sentinels[0].port = free_port();
    snprintf(c.sentinels[1].host, sizeof(c.sentinels[1].host), "127.0.0.1");
    c.sentinels[1].port = sen.port;
    snprintf(c.master_name, sizeof(c.master_name), "rmaster");
    tl_start(&t, &c);
    OK(WAIT_FOR(t.ups == 1, 10000), "up through the sentinel");
    rlink_addr_str(&t.l, buf, sizeof(buf));
    snprintf(want, sizeof(want), "tcp:127.0.0.1:%d", p.port);
    OK(strcmp(buf, want) == 0, "on the primary: %s", buf);
    IS(cmd(&t, &r, "SET rlink:sentinel before"), 0, "SET on the primary");
    OK(WAIT_FOR(r.calls == 1, 5000) && strcmp(r.str, "OK") == 0, "OK");

    /* A sentinel that does not know the name. */
    c2 = c;
    c2.nsentinels = 1;
    c2.sentinels[0] = c.sentinels[1];
    snprintf(c2.master_name, sizeof(c2.master_name), "nosuch");
    tl_start(&u, &c2);
    OK(WAIT_FOR(u.downs >= 1, 5000) && strstr(u.why, "does not know") &&
           u.ups == 0,
       "unknown master name: down, %s", u.why);
    OK(tl_close(&u), "closed");

    /* A stale sentinel naming the replica: ROLE refuses it. */
    if (OK(fake_start(&f, FAKE_SENTINEL, FAKE_SENTINEL) == 0,
           "fake sentinel")) {
        f.answer_port = rep.port;
        c2 = c;
        c2.nsentinels = 1;
        snprintf(c2.sentinels[0].host, sizeof(c2.sentinels[0].host),
                 "127.0.0.1");
        c2.sentinels[0].port = f.port;
        tl_start(&u, &c2);
        OK(WAIT_FOR(u.downs >= 1, 5000) && strstr(u.why, "ROLE") &&
               strstr(u.why, "slave") && u.ups == 0,
           "a stale answer (a replica) is refused: %s", u.why);
        OK(tl_close(&u), "closed");
        fake_stop(&f);
    }

    end = mono_ms() + 15000;
    ok = 0;
    while (!ok && mono_ms() < end) {
        x = sync_cmd(sen.port, NULL, "SENTINEL FAILOVER rmaster");
        ok = x && x->type == REDIS_REPLY_STATUS;
        if (!ok) {
            DIAG("SENTINEL FAILOVER: %s", x && x->str ? x->str : "no reply");
            run_for(500);
        }
        if (x)
            freeReplyObject(x);
    }
    if (!OK(ok, "SENTINEL FAILOVER accepted"))
        return;
    snprintf(want, sizeof(want), "tcp:127.0.0.1:%d", rep.port);
    ok = WAIT_FOR(
        t.l.stats.failovers >= 1 && rlink_is_up(&t.l) &&
            (rlink_addr_str(&t.l, buf, sizeof(buf)), strcmp(buf, want) == 0),
        30000);
    OK(ok,
       "+switch-master followed to the promoted replica: %s, failovers "
       "%llu",
       buf, (unsigned long long)t.l.stats.failovers);
    OK(t.downs >= 1, "down was reported on the way: %s", t.why);
    IS(cmd(&t, &r2, "SET rlink:sentinel after"), 0, "SET on the new primary");
    OK(WAIT_FOR(r2.calls == 1, 5000) && r2.type == REDIS_REPLY_STATUS &&
           strcmp(r2.str, "OK") == 0,
       "accepted there (not READONLY): %s", r2.str);
    rlink_describe(&t.l, buf, sizeof(buf));
    OK(strstr(buf, "connected to") == buf, "describe: %s", buf);
    OK(tl_close(&t), "closed (sentinel watch too)");
    redis_kill(&sen);
    redis_kill(&rep);
    redis_kill(&p);
}

int main(void)
{
    uv_loop_t l;

    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2) */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (daemon_mkdtemp(tmp, sizeof(tmp)) < 0) {
        printf("not ok 1 - temporary directory\n");
        return 1;
    }
    atexit(kill_children);
    uv_loop_init(&l);
    loop = &l;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);

    test_parse();
    test_backoff();
    test_init();
    if (access(REDIS_SERVER, X_OK) != 0) {
        OK(0, "%s is installed (scripts/deps.sh)", REDIS_SERVER);
        return tap_done();
    }
    test_basic();
    test_connect_timeout();
    test_command_timeout();
    test_half_reply();
    test_close();
    test_restart();
    test_subscriber();
    test_sentinel();

    uv_close((uv_handle_t *)&tick, NULL);
    run_for(20);
    IS(uv_loop_close(loop), 0, "the loop closes clean: no handle left");
    return tap_done();
}
