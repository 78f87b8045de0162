/*
 * rlink.c - one Redis connection on the daemon's libuv loop (see rlink.h):
 * hiredis 0.14's async API speaks the protocol; this file is everything
 * around it: the poll glue on ac->ev, the timers, reconnects with
 * back-off, the handshake, Sentinel.
 *
 * Must not: block the loop (names are resolved with uv_getaddrinfo on the
 * thread pool, hiredis is handed IP literals and Unix paths only, so its
 * own getaddrinfo never waits on DNS); touch a context hiredis has freed;
 * run a caller's callback while hiredis is tearing a context down.
 *
 * Structure.  A link owns up to three connections (struct conn), each one
 * redisAsyncContext with its uv_poll_t and one uv_timer_t:
 *   data   the one commands go over (or a subscriber link's channels),
 *   query  a short-lived one asking a sentinel where the primary is,
 *   watch  one to a sentinel, subscribed to +switch-master.
 * A conn goes RESOLVING (host names only) -> CONNECTING (the socket
 * connect, then the handshake: AUTH, SELECT, ROLE with sentinels, or a
 * PING when there is none of those; a subscriber's SUBSCRIBE) -> READY,
 * and ends exactly once in conn_gone(), where the link takes its next step
 * (up, down, retry, the next sentinel).  Its timer is the connect deadline
 * until READY, then the oldest command's deadline (data) or the keepalive
 * (subscribers), and finally the safe point (below).
 *
 * hiredis 0.14.1's ownership rules (async.c) this file is built on:
 * - redisAsyncConnect* may return a context with err set (refused, no such
 *   socket).  It is ours to redisAsyncFree, before any hook is attached.
 * - Once the hooks are attached, hiredis frees the context itself on a
 *   connect failure, a read or write error or EOF, and on redisAsyncFree.
 *   Every one of those runs __redisAsyncFree: pending reply callbacks with
 *   NULL, then ev.cleanup, then onDisconnect (only if it had connected),
 *   then the free.  ev.cleanup is thus the one signal that the context is
 *   going: conn->ac is forgotten there, and in the connect-failure and
 *   disconnect callbacks, which see it first on some paths.
 * - redisAsyncFree from inside a reply callback only sets REDIS_FREEING;
 *   the free happens when the callback returns to redisProcessCallbacks,
 *   still inside redisAsyncHandleRead.  It must never be called from
 *   onConnect (not marked as a callback: hiredis touches the context after
 *   it returns) nor from onDisconnect or a NULL-reply callback (the
 *   context is already being freed).  This file calls it from timers, from
 *   non-NULL reply callbacks, from the poll callback, and from
 *   rlink_close, which a caller may call from a reply callback.
 * - Reply callbacks with NULL come only from __redisAsyncFree.  They are
 *   ignored here: the command stays in the conn's list and is answered at
 *   the safe point.
 * - On a subscribed context a non-subscribe reply may reach the last
 *   subscribe callback that ran (0.14 reuses a stale callback), so
 *   sub_cb checks the shape of everything it gets, and subscribers never
 *   PING: their keepalive is a repeated SUBSCRIBE, whose confirmation is
 *   routed properly.
 *
 * Safe point.  conn_gone() never runs inside hiredis or inside a caller's
 * callback: a dying conn arms its timer at 0 ms and conn_gone runs from
 * that timer callback.  Pending commands are answered NULL there, in the
 * order they were sent, then `down` runs, then the retry is scheduled.
 * A caller's callback may close the link; every path that calls out
 * checks li->closing before it goes on.
 *
 * Memory: a conn is freed when its last handle (timer, poll) is closed and
 * its getaddrinfo request (if any) has called back; the link's state when
 * its two timers and all its conns are gone, just before `done`.
 */
#include "rlink.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "error.h"
#include "log.h"

/* Exported by libhiredis 0.14 (and declared by later async.h) but not
 * declared by 0.14's: what redisAsyncHandleRead runs after reading. */
void redisProcessCallbacks(redisAsyncContext *ac);

/* Unparsed reply bytes one connection may buffer: a reply bigger than this
 * (the daemon's replies are a few hundred bytes) means a broken or hostile
 * peer, and the connection is dropped rather than grown without end. */
#define RLINK_MAX_INPUT_BYTES ((size_t)64 << 20)
/* Repeated connect failures are logged at most this often. */
#define RLINK_LOG_EVERY_MS 60000
/* Defaults for conf fields left 0 (rlink.h). */
#define RLINK_DEFAULT_TIMEOUT_MS 1000
#define RLINK_DEFAULT_BACKOFF_MIN_MS 100
#define RLINK_DEFAULT_BACKOFF_MAX_MS 10000
#define WHY_MAX 192
#define SWITCH_MASTER "+switch-master"

enum conn_kind { CONN_DATA, CONN_QUERY, CONN_WATCH };
enum conn_phase { PH_RESOLVING, PH_CONNECTING, PH_READY, PH_DEAD };

/* One command sent on a data conn and not answered yet. */
struct rcmd {
    struct rcmd *prev, *next;
    rlink_reply_fn fn; /* may be NULL */
    void *priv;
    uint64_t sent_ms; /* uv_now when sent */
};

struct link;

struct conn {
    struct link *li;
    enum conn_kind kind;
    enum conn_phase phase;
    struct rlink_addr addr;   /* as configured or announced */
    unsigned turn;            /* which resolved address to use */
    redisAsyncContext *ac;    /* NULL before the connect and once freed */
    uv_poll_t poll;           /* on ac's fd, open while ac is */
    uv_timer_t timer;         /* deadlines, keepalive, the safe point */
    uv_getaddrinfo_t gai;     /* PH_RESOLVING */
    int gai_busy;             /* gai has not called back yet */
    int events;               /* UV_READABLE | UV_WRITABLE polled */
    int refs;                 /* open handles + gai_busy; freed at 0 */
    int killed;               /* dying: sends nothing more */
    int was_ready;            /* reached PH_READY */
    int failover;             /* killed to follow +switch-master */
    int poll_failed;          /* uv_poll_start failed: kill at once */
    int hs_left;              /* handshake replies still to come */
    int subscriber;           /* SUBSCRIBEd: keepalive, no commands */
    int sub_wait;             /* subscribe confirmations outstanding */
    uint64_t sub_since_ms;    /* ...without one arriving since */
    redisReader *shadow;      /* checks replies before hiredis sees them */
    struct rcmd *head, *tail; /* data: sent, unanswered, oldest first */
    size_t npending;
    int found; /* query: the sentinel named the primary: master */
    struct rlink_addr master;
    char why[WHY_MAX]; /* why it ended; the first reason wins */
};

enum link_state { ST_IDLE, ST_QUERY, ST_CONNECT, ST_UP, ST_WAIT };

struct link {
    struct rlink *l;
    char name[32];
    uint64_t rng; /* splitmix64 state: back-off jitter */
    int started;
    int closing;
    void (*done)(struct rlink *l);
    int live; /* open link timers + conns not yet freed */
    enum link_state st;
    struct conn *data, *query, *watch;
    uv_timer_t retry;      /* back-off before the next data attempt */
    uv_timer_t wretry;     /* back-off before the next watch attempt */
    struct rlink_addr cur; /* the primary in use or being tried */
    int have_cur;
    unsigned fails;  /* consecutive failed attempts since last up */
    unsigned wfails; /* the same for the sentinel watch */
    size_t sfirst;   /* the sentinel asked first (the last that knew) */
    size_t sasked;   /* sentinels asked in this round */
    size_t wturn;    /* the sentinel to watch next */
    int have_hint;   /* +switch-master named the new primary: hint */
    struct rlink_addr hint;
    char why[2 * WHY_MAX + RLINK_HOST_MAX]; /* the last failure */
    /* Log rate limit for one outage: the first failure, then one line a
     * minute, then one when it is back. */
    int outage;
    uint64_t outage_ms, outage_fails, logged_ms;
    int woutage;
    uint64_t wlogged_ms;
    size_t nchannels;
    char channels[RLINK_CHANNELS][RLINK_CHANNEL_MAX + 1];
};

static void conn_timer_cb(uv_timer_t *t);
static void link_attempt(struct link *li);

static uint64_t now_ms(const struct link *li)
{
    return uv_now(li->l->loop);
}

static void addr_fmt(const struct rlink_addr *a, char *buf, size_t cap)
{
    if (a->is_unix)
        snprintf(buf, cap, "unix:%s", a->path);
    else if (strchr(a->host, ':'))
        snprintf(buf, cap, "tcp:[%s]:%d", a->host, a->port);
    else
        snprintf(buf, cap, "tcp:%s:%d", a->host, a->port);
}

static int addr_same(const struct rlink_addr *a, const struct rlink_addr *b)
{
    if (a->is_unix != b->is_unix)
        return 0;
    if (a->is_unix)
        return strcmp(a->path, b->path) == 0;
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* --- back-off ------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t rlink_backoff_ms(const struct rlink_conf *c, unsigned n, uint64_t *rng)
{
    uint64_t d = c->backoff_min_ms, span;

    /* min << n, capped: the shift stops at 32, so d stays below 2^64. */
    d <<= n < 32 ? n : 32;
    if (d > c->backoff_max_ms)
        d = c->backoff_max_ms;
    span = d - d / 2; /* uniform in [d/2, d] */
    return (uint32_t)(d / 2 + splitmix64(rng) % (span + 1));
}

/* --- the poll glue: hiredis's ev hooks ----------------------------------- */

static void poll_cb(uv_poll_t *h, int status, int events);

static void poll_update(struct conn *c)
{
    int rc = 0;

    if (c->events)
        rc = uv_poll_start(&c->poll, c->events, poll_cb);
    else
        uv_poll_stop(&c->poll);
    if (rc < 0 && !c->killed && !c->poll_failed) {
        /* Called from inside hiredis: no free here.  The timer kills it
         * on the next turn of the loop. */
        c->poll_failed = 1;
        if (!c->why[0])
            snprintf(c->why, sizeof(c->why), "uv_poll_start: %s",
                     uv_strerror(rc));
        uv_timer_start(&c->timer, conn_timer_cb, 0, 0);
    }
}

/* hiredis's ev hooks: idempotent, as it asks; the poll changes only
 * when the set of events does. */
static void ev_want(struct conn *c, int event, int on)
{
    int events = on ? c->events | event : c->events & ~event;

    if (events != c->events) {
        c->events = events;
        poll_update(c);
    }
}

static void ev_add_read(void *p)
{
    ev_want(p, UV_READABLE, 1);
}

static void ev_del_read(void *p)
{
    ev_want(p, UV_READABLE, 0);
}

static void ev_add_write(void *p)
{
    ev_want(p, UV_WRITABLE, 1);
}

static void ev_del_write(void *p)
{
    ev_want(p, UV_WRITABLE, 0);
}

static void conn_free(struct conn *c);

static void conn_unref(struct conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

static void conn_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* The conn is finished: conn_gone runs from its timer, at the safe point. */
static void conn_dead_soon(struct conn *c)
{
    c->killed = 1;
    c->phase = PH_DEAD;
    uv_timer_start(&c->timer, conn_timer_cb, 0, 0);
}

/* ev.cleanup: hiredis is freeing the context (it may still be read until
 * this returns: the error text is taken from it). */
static void ev_cleanup(void *p)
{
    struct conn *c = p;

    if (!c->why[0] && c->ac && c->ac->c.err)
        snprintf(c->why, sizeof(c->why), "%s", c->ac->c.errstr);
    c->ac = NULL;
    c->events = 0;
    uv_close((uv_handle_t *)&c->poll, conn_handle_closed);
    conn_dead_soon(c);
}

/* Connect failure: hiredis frees the context right after this returns. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;

    if (status == REDIS_OK)
        return; /* the handshake replies decide when it is ready */
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "%s",
                 ac->c.errstr[0] ? ac->c.errstr : "connect failed");
    c->ac = NULL;
}

/* Lost after connecting (or freed by us): hiredis frees it after this. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;

    if (status != REDIS_OK && !c->why[0])
        snprintf(c->why, sizeof(c->why), "%s",
                 ac->errstr ? ac->errstr : "connection lost");
    c->ac = NULL;
}

/* Drop c: no more sends; hiredis frees the context now, or when the reply
 * callback we are inside returns; conn_gone follows at the safe point.
 * The first reason given is the one reported. */
static void conn_kill(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_kill(struct conn *c, const char *fmt, ...)
{
    va_list ap;

    if (!c->why[0]) {
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof(c->why), fmt, ap);
        va_end(ap);
    }
    if (c->killed)
        return;
    c->killed = 1;
    if (c->ac)
        redisAsyncFree(c->ac); /* ev_cleanup forgets c->ac */
    if (c->gai_busy)
        uv_cancel((uv_req_t *)&c->gai); /* may be too late: harmless */
    conn_dead_soon(c);
}

/* 1 if hiredis 0.14 can take reply rep without aborting.  expect: the
 * regular callbacks still waiting (counted down).  hiredis asserts (abort:
 * the daemon gone) on a reply no command asked for on a connection that
 * is not subscribed, and on a pub/sub reply that is not an array of at
 * least two strings (or an unsubscribe without its count) on one that is;
 * a broken proxy, a man in the middle or a server that is not Redis can
 * send either. */
static int reply_takeable(const redisAsyncContext *ac, const redisReply *rep,
                          size_t *expect)
{
    const redisReply *t;

    if (*expect) {
        (*expect)--;
        return 1;
    }
    if (!(ac->c.flags & REDIS_SUBSCRIBED))
        return rep->type == REDIS_REPLY_ERROR; /* hiredis disconnects */
    if (rep->type != REDIS_REPLY_ARRAY)
        return 1; /* sub.invalid: ignored */
    if (rep->elements < 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING)
        return 0;
    t = rep->element[0];
    /* Never sent: one would make hiredis drop the channel and then abort
     * on the next message. */
    return strcasecmp(t->str, "unsubscribe") != 0 &&
           strcasecmp(t->str, "punsubscribe") != 0;
}

/* What redisAsyncHandleRead does, but every complete reply is checked by
 * a second reader (c->shadow, fed the same bytes) before hiredis processes
 * any: one it would abort on drops the connection instead. */
static void conn_read(struct conn *c)
{
    redisAsyncContext *ac = c->ac;
    redisReader *rd;
    const redisCallback *cb;
    size_t old, expect = 0;
    void *rep;

    if (!(ac->c.flags & REDIS_CONNECTED)) {
        redisAsyncHandleWrite(ac); /* completes (or fails) the connect */
        if (!c->ac || !(c->ac->c.flags & REDIS_CONNECTED))
            return;
    }
    rd = ac->c.reader;
    old = rd->len; /* redisReaderFeed appends (an empty buffer may move) */
    if (redisBufferRead(&ac->c) != REDIS_OK) {
        /* EOF or an error, now in ac->c.err: hiredis disconnects (its
         * read returns early on an error already seen). */
        redisAsyncHandleRead(ac);
        return;
    }
    if (rd->len == old)
        return;
    if (!c->shadow && !(c->shadow = redisReaderCreate())) {
        conn_kill(c, "out of memory");
        return;
    }
    if (redisReaderFeed(c->shadow, rd->buf + old, rd->len - old) !=
        REDIS_OK) {
        conn_kill(c, "out of memory");
        return;
    }
    for (cb = ac->replies.head; cb; cb = cb->next)
        expect++;
    while (redisReaderGetReply(c->shadow, &rep) == REDIS_OK && rep) {
        int ok = reply_takeable(ac, rep, &expect);
        freeReplyObject(rep);
        if (!ok) {
            conn_kill(c, "a reply no command asked for (not Redis, or a "
                         "broken proxy)");
            return;
        }
    }
    if (c->shadow->err) {
        conn_kill(c, "protocol error: %s", c->shadow->errstr);
        return;
    }
    redisProcessCallbacks(ac);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct conn *c = h->data;
    const redisReader *r;

    if (status < 0) {
        /* libuv reports POLLERR (a refused connect, a reset) as UV_EBADF
         * and stops the handle; the Debian adapter returns here and the
         * link hangs forever.  Let hiredis read the socket's own error
         * (SO_ERROR while connecting, read(2) after), so the reason is the
         * real one, and drop the connection if it found none. */
        c->events = 0;
        if (c->ac && !(c->ac->c.flags & REDIS_CONNECTED))
            redisAsyncHandleWrite(c->ac);
        else if (c->ac)
            conn_read(c);
        if (c->ac)
            conn_kill(c, "poll: %s", uv_strerror(status));
        return;
    }
    /* Each call may free the context (ev_cleanup clears c->ac); c itself
     * lives until its handles are closed, a later loop turn. */
    if (c->ac && (events & UV_READABLE))
        conn_read(c);
    if (c->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(c->ac);
    if (c->ac && !c->killed) {
        r = c->ac->c.reader;
        if (r->len - r->pos > RLINK_MAX_INPUT_BYTES)
            conn_kill(c, "reply larger than %zu bytes", RLINK_MAX_INPUT_BYTES);
    }
}

/* --- commands ------------------------------------------------------------ */

static void cmd_unlink(struct conn *c, struct rcmd *rc)
{
    if (rc->prev)
        rc->prev->next = rc->next;
    else
        c->head = rc->next;
    if (rc->next)
        rc->next->prev = rc->prev;
    else
        c->tail = rc->prev;
    c->npending--;
}

/* Data conn, READY: the timer waits for the oldest command's deadline. */
static void arm_deadline(struct conn *c)
{
    const struct rlink_conf *conf = &c->li->l->conf;
    uint64_t now = now_ms(c->li), due;

    if (!c->head) {
        uv_timer_stop(&c->timer);
        return;
    }
    due = c->head->sent_ms + conf->command_timeout_ms;
    uv_timer_start(&c->timer, conn_timer_cb, due > now ? due - now : 0, 0);
}

/* hiredis's callback for a caller's command. */
static void cmd_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct rcmd *rc = priv;
    struct conn *c = ac->data;
    struct rlink *l = c->li->l;
    const redisReply *reply = r;
    rlink_reply_fn fn;
    void *fpriv;

    if (!reply)
        return; /* teardown: answered NULL at the safe point */
    cmd_unlink(c, rc);
    if (reply->type == REDIS_REPLY_ERROR)
        l->stats.errors++;
    fn = rc->fn;
    fpriv = rc->priv;
    free(rc);
    if (c->phase == PH_READY && !c->killed)
        arm_deadline(c);
    if (fn)
        fn(l, r, fpriv);
}

/* SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE and MONITOR change how
 * hiredis routes replies: they would break the one-callback-per-command
 * rule, so the command API refuses them (rlink_subscribe subscribes). */
static int cmd_refused(const char *cmd, int len)
{
    static const char *const bad[] = {"subscribe", "psubscribe", "unsubscribe",
                                      "punsubscribe", "monitor"};
    const char *p = memchr(cmd, '$', (size_t)len), *name;
    long n;
    size_t i;

    if (!p)
        return 1;
    n = strtol(p + 1, NULL, 10);
    p = memchr(p, '\n', (size_t)(cmd + len - p));
    if (!p || n <= 0 || n > cmd + len - (p + 1))
        return 1;
    name = p + 1;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if ((size_t)n == strlen(bad[i]) &&
            strncasecmp(name, bad[i], (size_t)n) == 0)
            return 1;
    return 0;
}

static int link_send(struct rlink *l, rlink_reply_fn fn, void *priv,
                     const char *cmd, int len)
{
    struct link *li = l->impl;
    struct conn *c = li->data;
    struct rcmd *rc;

    if (cmd_refused(cmd, len))
        return RD_EINVAL;
    if (c->npending >= RLINK_MAX_PENDING)
        return RD_EFULL;
    rc = calloc(1, sizeof(*rc));
    if (!rc)
        return RD_ENOMEM;
    rc->fn = fn;
    rc->priv = priv;
    rc->sent_ms = now_ms(li);
    if (redisAsyncFormattedCommand(c->ac, cmd_cb, rc, cmd, (size_t)len) !=
        REDIS_OK) {
        free(rc);
        return RD_EDOWN;
    }
    rc->prev = c->tail;
    if (c->tail)
        c->tail->next = rc;
    else
        c->head = rc;
    c->tail = rc;
    c->npending++;
    l->stats.commands++;
    if (c->head == rc)
        arm_deadline(c);
    return 0;
}

/* 0 when l can take a command now. */
static int link_can_send(const struct rlink *l)
{
    const struct link *li = l->impl;

    if (!rlink_is_up(l))
        return RD_EDOWN;
    if (li->nchannels)
        return RD_EINVAL;
    return 0;
}

int rlink_command(struct rlink *l, rlink_reply_fn fn, void *priv,
                  const char *fmt, ...)
{
    va_list ap;
    char *cmd;
    int len, rc = link_can_send(l);

    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0)
        return len == -1 ? RD_ENOMEM : RD_EINVAL;
    rc = link_send(l, fn, priv, cmd, len);
    redisFreeCommand(cmd);
    return rc;
}

int rlink_command_argv(struct rlink *l, rlink_reply_fn fn, void *priv, int argc,
                       const char **argv, const size_t *argvlen)
{
    char *cmd;
    int len, rc = link_can_send(l);

    if (rc < 0)
        return rc;
    if (argc < 1)
        return RD_EINVAL;
    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return RD_ENOMEM;
    rc = link_send(l, fn, priv, cmd, len);
    redisFreeCommand(cmd);
    return rc;
}

size_t rlink_pending(const struct rlink *l)
{
    const struct link *li = l->impl;

    return li && li->data ? li->data->npending : 0;
}

/* --- the handshake and subscriptions ------------------------------------- */

static void link_data_up(struct link *li);
static void watch_ready(struct link *li);
static void watch_message(struct link *li, const char *data, size_t len);

static void conn_ready(struct conn *c)
{
    struct rlink_conf *conf = &c->li->l->conf;

    c->phase = PH_READY;
    c->was_ready = 1;
    uv_timer_stop(&c->timer);
    if (c->subscriber)
        uv_timer_start(&c->timer, conn_timer_cb, conf->command_timeout_ms,
                       conf->command_timeout_ms);
    if (c->kind == CONN_WATCH)
        watch_ready(c->li);
    else
        link_data_up(c->li);
}

/* SUBSCRIBE n channels on c (a keepalive, too: Redis confirms each one
 * again).  0, or -1 when hiredis refused (the context is going). */
static void sub_cb(redisAsyncContext *ac, void *r, void *priv);

static int conn_subscribe(struct conn *c, size_t n,
                          char (*chans)[RLINK_CHANNEL_MAX + 1])
{
    const char *argv[RLINK_CHANNELS + 1];
    size_t i;

    argv[0] = "SUBSCRIBE";
    for (i = 0; i < n; i++)
        argv[i + 1] = chans[i];
    if (redisAsyncCommandArgv(c->ac, sub_cb, c, (int)n + 1, argv, NULL) !=
        REDIS_OK)
        return -1;
    if (c->sub_wait == 0)
        c->sub_since_ms = now_ms(c->li);
    c->sub_wait += (int)n;
    c->subscriber = 1;
    return 0;
}

static void sub_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct conn *c = priv;
    struct rlink *l = c->li->l;
    const redisReply *reply = r, *type, *chan, *data;

    (void)ac;
    if (!reply || c->killed)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    type = reply->element[0];
    chan = reply->element[1];
    data = reply->element[2];
    if (type->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING)
        return;
    if (strcasecmp(type->str, "subscribe") == 0) {
        if (c->sub_wait > 0)
            c->sub_wait--;
        c->sub_since_ms = now_ms(c->li);
        if (c->sub_wait == 0 && c->phase == PH_CONNECTING)
            conn_ready(c);
    } else if (strcasecmp(type->str, "message") == 0 &&
               data->type == REDIS_REPLY_STRING) {
        if (c->kind == CONN_WATCH) {
            if (strcmp(chan->str, SWITCH_MASTER) == 0)
                watch_message(c->li, data->str, data->len);
        } else if (l->ops.message && !c->li->closing) {
            l->ops.message(l, l->ops.ctx, chan->str, data->str, data->len);
        }
    }
}

/* The handshake's replies: each error ends the attempt with its text. */
static void hs_step(struct conn *c, const redisReply *reply, const char *what)
{
    struct link *li = c->li;

    if (!reply || c->killed)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        conn_kill(c, "%s: %s", what, reply->str);
        return;
    }
    if (--c->hs_left > 0)
        return;
    if (li->nchannels) {
        if (conn_subscribe(c, li->nchannels, li->channels) < 0)
            conn_kill(c, "SUBSCRIBE refused");
        return;
    }
    conn_ready(c);
}

static void hs_auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    hs_step(priv, r, "AUTH");
}

static void hs_select_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    hs_step(priv, r, "SELECT");
}

static void hs_ping_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    hs_step(priv, r, "PING");
}

/* With sentinels, the address may be stale (a demoted primary): only a
 * server whose ROLE says master is taken. */
static void hs_role_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct conn *c = priv;
    const redisReply *reply = r, *role;

    (void)ac;
    if (reply && !c->killed && reply->type != REDIS_REPLY_ERROR) {
        role = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
                   ? reply->element[0]
                   : NULL;
        if (!role || role->type != REDIS_REPLY_STRING ||
            strcmp(role->str, "master") != 0) {
            conn_kill(c, "ROLE: not the master (%s)",
                      role && role->type == REDIS_REPLY_STRING ? role->str
                                                               : "?");
            return;
        }
    }
    hs_step(c, reply, "ROLE");
}

/* `SENTINEL get-master-addr-by-name`: [ip, port], or nil. */
static void query_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct conn *c = priv;
    struct rlink *l = c->li->l;
    const redisReply *reply = r, *ip, *port;
    long p;

    (void)ac;
    if (!reply || c->killed)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        conn_kill(c, "%s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        conn_kill(c, "does not know master %s", l->conf.master_name);
        return;
    }
    ip = reply->element[0];
    port = reply->element[1];
    p = port->type == REDIS_REPLY_STRING ? strtol(port->str, NULL, 10) : 0;
    if (ip->type != REDIS_REPLY_STRING || ip->len == 0 ||
        ip->len > RLINK_HOST_MAX || p < 1 || p > 65535) {
        conn_kill(c, "unusable answer for master %s", l->conf.master_name);
        return;
    }
    memset(&c->master, 0, sizeof(c->master));
    memcpy(c->master.host, ip->str, ip->len);
    c->master.port = (int)p;
    c->found = 1;
    conn_kill(c, "answered");
}

/* Queue what c says first; hiredis sends it once connected. */
static void conn_begin(struct conn *c)
{
    struct rlink_conf *conf = &c->li->l->conf;
    const char *argv[3];
    char db[16];
    int ok = 1;

    switch (c->kind) {
    case CONN_DATA:
        if (conf->password[0]) {
            argv[0] = "AUTH";
            argv[1] = conf->password;
            ok &= redisAsyncCommandArgv(c->ac, hs_auth_cb, c, 2, argv, NULL) ==
                  REDIS_OK;
            c->hs_left++;
        }
        if (conf->db) {
            snprintf(db, sizeof(db), "%u", conf->db);
            argv[0] = "SELECT";
            argv[1] = db;
            ok &= redisAsyncCommandArgv(c->ac, hs_select_cb, c, 2, argv,
                                        NULL) == REDIS_OK;
            c->hs_left++;
        }
        if (conf->nsentinels) {
            ok &= redisAsyncCommand(c->ac, hs_role_cb, c, "ROLE") == REDIS_OK;
            c->hs_left++;
        }
        if (c->hs_left == 0) {
            /* Nothing to say: PING, so that up means Redis answered (not
             * only that a socket connected: a stopped or loading server
             * accepts connections too). */
            ok &= redisAsyncCommand(c->ac, hs_ping_cb, c, "PING") == REDIS_OK;
            c->hs_left++;
        }
        break;
    case CONN_QUERY:
        argv[0] = "SENTINEL";
        argv[1] = "get-master-addr-by-name";
        argv[2] = conf->master_name;
        ok = redisAsyncCommandArgv(c->ac, query_cb, c, 3, argv, NULL) ==
             REDIS_OK;
        break;
    case CONN_WATCH: {
        char chan[1][RLINK_CHANNEL_MAX + 1] = {SWITCH_MASTER};
        ok = conn_subscribe(c, 1, chan) == 0;
        break;
    }
    }
    if (!ok)
        conn_kill(c, "hiredis refused the first command");
}

/* --- a conn's life ------------------------------------------------------- */

/* Make the context for ip (an IP literal) or the Unix path. */
static void conn_connect(struct conn *c, const char *ip)
{
    uv_loop_t *loop = c->li->l->loop;
    redisAsyncContext *ac;
    int rc;

    if (c->addr.is_unix)
        ac = redisAsyncConnectUnix(c->addr.path);
    else
        ac = redisAsyncConnect(ip, c->addr.port);
    if (!ac) {
        conn_kill(c, "out of memory");
        return;
    }
    if (ac->err) {
        /* Failed at once (refused, no such socket): no hook is attached,
         * so hiredis will not free it: we do. */
        conn_kill(c, "%s", ac->errstr);
        redisAsyncFree(ac);
        return;
    }
    rc = uv_poll_init(loop, &c->poll, ac->c.fd);
    if (rc < 0) {
        conn_kill(c, "uv_poll_init: %s", uv_strerror(rc));
        redisAsyncFree(ac);
        return;
    }
    c->poll.data = c;
    c->refs++;
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    c->phase = PH_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect); /* polls for writable */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    conn_begin(c);
}

/* IPv4 before IPv6, as hiredis itself orders them; c->turn picks. */
static int gai_pick(const struct addrinfo *res, unsigned turn, char *ip,
                    size_t cap)
{
    const struct addrinfo *p;
    unsigned n = 0, want, i = 0;
    int fam;

    for (p = res; p; p = p->ai_next)
        if (p->ai_family == AF_INET || p->ai_family == AF_INET6)
            n++;
    if (n == 0)
        return -1;
    want = turn % n;
    for (fam = 0; fam < 2; fam++)
        for (p = res; p; p = p->ai_next) {
            if (p->ai_family != (fam == 0 ? AF_INET : AF_INET6))
                continue;
            if (i++ != want)
                continue;
            if (p->ai_family == AF_INET)
                inet_ntop(AF_INET,
                          &((struct sockaddr_in *)p->ai_addr)->sin_addr, ip,
                          (socklen_t)cap);
            else
                inet_ntop(AF_INET6,
                          &((struct sockaddr_in6 *)p->ai_addr)->sin6_addr, ip,
                          (socklen_t)cap);
            return 0;
        }
    return -1;
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *c = req->data;
    char ip[INET6_ADDRSTRLEN];

    c->gai_busy = 0;
    if (!c->killed) {
        if (status < 0)
            conn_kill(c, "cannot resolve %s: %s", c->addr.host,
                      uv_strerror(status));
        else if (gai_pick(res, c->turn, ip, sizeof(ip)) < 0)
            conn_kill(c, "no address for %s", c->addr.host);
        else
            conn_connect(c, ip);
    }
    uv_freeaddrinfo(res);
    conn_unref(c);
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 ||
           inet_pton(AF_INET6, host, buf) == 1;
}

/* A new conn to a, connecting (or resolving) under the connect deadline.
 * Every failure, even an immediate one, ends in conn_gone at the safe
 * point, never in this call.  NULL only when out of memory. */
static struct conn *conn_new(struct link *li, enum conn_kind kind,
                             const struct rlink_addr *a, unsigned turn)
{
    struct addrinfo hints;
    struct conn *c = calloc(1, sizeof(*c));
    int rc;

    if (!c)
        return NULL;
    c->li = li;
    c->kind = kind;
    c->addr = *a;
    c->turn = turn;
    c->phase = PH_RESOLVING;
    uv_timer_init(li->l->loop, &c->timer);
    c->timer.data = c;
    c->refs = 1;
    li->live++;
    uv_timer_start(&c->timer, conn_timer_cb, li->l->conf.connect_timeout_ms, 0);
    if (a->is_unix || is_ip_literal(a->host)) {
        conn_connect(c, a->host);
        return c;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    rc = uv_getaddrinfo(li->l->loop, &c->gai, gai_cb, a->host, NULL, &hints);
    if (rc < 0) {
        conn_kill(c, "cannot resolve %s: %s", a->host, uv_strerror(rc));
    } else {
        c->gai_busy = 1;
        c->refs++;
    }
    return c;
}

static void link_maybe_done(struct link *li);

static void conn_free(struct conn *c)
{
    struct link *li = c->li;

    if (c->shadow)
        redisReaderFree(c->shadow);
    free(c);
    li->live--;
    link_maybe_done(li);
}

static void link_conn_gone(struct link *li, struct conn *c);

/* The safe point: c's context is gone (or never was); tell the link. */
static void conn_gone(struct conn *c)
{
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "connection closed");
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    link_conn_gone(c->li, c);
}

static void conn_timer_cb(uv_timer_t *t)
{
    struct conn *c = t->data;
    const struct rlink_conf *conf = &c->li->l->conf;
    uint64_t now = now_ms(c->li);
    struct rcmd *rc;

    if (c->poll_failed && c->phase != PH_DEAD) {
        conn_kill(c, "poll failed"); /* why was set by poll_update */
        return;
    }
    switch (c->phase) {
    case PH_DEAD:
        if (c->ac) {
            /* Cannot happen (a deferred free completes before hiredis
             * returns to the loop); never touch the conn's state then. */
            log_msg(LOG_ERR, "%s: context still alive at the safe point",
                    c->li->name);
            uv_timer_start(&c->timer, conn_timer_cb, 1, 0);
            return;
        }
        conn_gone(c);
        return;
    case PH_RESOLVING:
    case PH_CONNECTING:
        conn_kill(c, "%s timed out after %u ms",
                  c->kind == CONN_QUERY ? "sentinel query" : "connect",
                  conf->connect_timeout_ms);
        return;
    case PH_READY:
        break;
    }
    if (c->subscriber) {
        /* Keepalive: one SUBSCRIBE at a time, answered within the
         * command timeout, else the connection is dead. */
        if (c->sub_wait > 0 &&
            now - c->sub_since_ms >= conf->command_timeout_ms) {
            if (c->kind == CONN_DATA)
                c->li->l->stats.timeouts++;
            conn_kill(c, "no answer to a keepalive in %u ms",
                      conf->command_timeout_ms);
        } else if (c->sub_wait == 0) {
            char chan[1][RLINK_CHANNEL_MAX + 1];

            snprintf(chan[0], sizeof(chan[0]), "%s",
                     c->kind == CONN_WATCH ? SWITCH_MASTER
                                           : c->li->channels[0]);
            if (conn_subscribe(c, 1, chan) < 0)
                conn_kill(c, "keepalive refused");
        }
        return;
    }
    if (!c->head || c->head->sent_ms + conf->command_timeout_ms > now) {
        arm_deadline(c);
        return;
    }
    for (rc = c->head; rc; rc = rc->next)
        if (rc->sent_ms + conf->command_timeout_ms <= now)
            c->li->l->stats.timeouts++;
    conn_kill(c, "timed out: no reply in %u ms", conf->command_timeout_ms);
}

/* --- the link ------------------------------------------------------------ */

static void link_handle_closed(uv_handle_t *h)
{
    struct link *li = h->data;

    li->live--;
    link_maybe_done(li);
}

static void link_maybe_done(struct link *li)
{
    struct rlink *l = li->l;
    void (*done)(struct rlink *) = li->done;

    if (!li->closing || li->live > 0)
        return;
    free(li);
    l->impl = NULL;
    if (done)
        done(l);
}

static void link_down(struct link *li, const char *why)
{
    struct rlink *l = li->l;

    if (l->ops.down && !li->closing)
        l->ops.down(l, l->ops.ctx, why);
}

/* Log a failed attempt: the first of an outage, then once a minute. */
static void log_failure(struct link *li)
{
    uint64_t now = now_ms(li);
    char addr[RLINK_HOST_MAX + 32];

    rlink_addr_str(li->l, addr, sizeof(addr));
    li->outage_fails++;
    if (!li->outage) {
        li->outage = 1;
        li->outage_ms = now;
        li->logged_ms = now;
        log_msg(LOG_WARN,
                "%s: cannot connect to %s: %s (retrying with back-off; "
                "repeats logged once a minute)",
                li->name, addr, li->why);
    } else if (now - li->logged_ms >= RLINK_LOG_EVERY_MS) {
        li->logged_ms = now;
        log_msg(LOG_WARN,
                "%s: still cannot connect to %s after %llu attempts in "
                "%llu s: %s",
                li->name, addr, (unsigned long long)li->outage_fails,
                (unsigned long long)((now - li->outage_ms) / 1000), li->why);
    }
}

static void retry_cb(uv_timer_t *t)
{
    link_attempt(t->data);
}

static void schedule_retry(struct link *li, uint32_t delay_ms)
{
    li->st = ST_WAIT;
    uv_timer_start(&li->retry, retry_cb, delay_ms, 0);
}

/* An attempt failed (li->why says why): count, log, tell, back off. */
static void attempt_failed(struct link *li)
{
    struct rlink *l = li->l;

    l->stats.connect_failures++;
    log_failure(li);
    li->st = ST_WAIT; /* before down: describe says waiting */
    li->fails++;
    link_down(li, li->why);
    if (li->closing)
        return;
    schedule_retry(li, rlink_backoff_ms(&l->conf, li->fails - 1, &li->rng));
}

static void data_open(struct link *li)
{
    li->st = ST_CONNECT;
    li->have_cur = 1;
    li->data = conn_new(li, CONN_DATA, &li->cur, li->fails);
    if (!li->data) {
        snprintf(li->why, sizeof(li->why), "out of memory");
        attempt_failed(li);
    }
}

/* Ask the next sentinel of this round, or give up the round. */
static void query_next(struct link *li)
{
    struct rlink_conf *conf = &li->l->conf;
    size_t i;

    if (li->sasked >= conf->nsentinels) {
        attempt_failed(li);
        return;
    }
    i = (li->sfirst + li->sasked) % conf->nsentinels;
    li->st = ST_QUERY;
    li->query = conn_new(li, CONN_QUERY, &conf->sentinels[i], li->fails);
    if (!li->query) {
        snprintf(li->why, sizeof(li->why), "out of memory");
        attempt_failed(li);
    }
}

/* Start the next connect attempt now. */
static void link_attempt(struct link *li)
{
    struct rlink_conf *conf = &li->l->conf;

    if (li->closing)
        return;
    if (conf->nsentinels == 0) {
        li->cur = conf->addr;
        data_open(li);
    } else if (li->have_hint) {
        li->have_hint = 0;
        li->cur = li->hint;
        data_open(li);
    } else {
        li->sasked = 0;
        query_next(li);
    }
}

static void link_data_up(struct link *li)
{
    struct rlink *l = li->l;
    char addr[RLINK_HOST_MAX + 32];

    li->st = ST_UP;
    l->stats.connects++;
    rlink_addr_str(l, addr, sizeof(addr));
    if (li->outage)
        log_msg(LOG_INFO,
                "%s: connected to %s again after %llu s (%llu failed "
                "attempts)",
                li->name, addr,
                (unsigned long long)((now_ms(li) - li->outage_ms) / 1000),
                (unsigned long long)li->outage_fails);
    else
        log_msg(LOG_INFO, "%s: connected to %s", li->name, addr);
    li->outage = 0;
    li->outage_fails = 0;
    li->fails = 0;
    li->why[0] = '\0';
    if (l->ops.up && !li->closing)
        l->ops.up(l, l->ops.ctx);
}

static void data_gone(struct link *li, struct conn *c)
{
    struct rlink *l = li->l;
    struct rcmd *rc;
    char addr[RLINK_HOST_MAX + 32];

    li->data = NULL;
    /* Every pending command is answered, even if a callback closes the
     * link: each is owed exactly one call. */
    while ((rc = c->head) != NULL) {
        rlink_reply_fn fn = rc->fn;
        void *priv = rc->priv;

        cmd_unlink(c, rc);
        free(rc);
        if (fn)
            fn(l, NULL, priv);
    }
    if (li->closing)
        return;
    snprintf(li->why, sizeof(li->why), "%s", c->why);
    if (!c->was_ready) {
        if (c->failover) {
            link_attempt(li); /* the new primary is known: go now */
            return;
        }
        attempt_failed(li);
        return;
    }
    l->stats.disconnects++;
    rlink_addr_str(l, addr, sizeof(addr));
    log_msg(LOG_WARN, "%s: lost connection to %s: %s; reconnecting", li->name,
            addr, c->why);
    li->outage = 1;
    li->outage_ms = li->logged_ms = now_ms(li);
    li->outage_fails = 0;
    li->st = ST_WAIT;
    link_down(li, c->why);
    if (li->closing)
        return;
    if (c->failover)
        link_attempt(li);
    else
        schedule_retry(li, rlink_backoff_ms(&l->conf, 0, &li->rng));
}

static void query_gone(struct link *li, struct conn *c)
{
    struct rlink_conf *conf = &li->l->conf;
    char addr[RLINK_HOST_MAX + 32];
    size_t i = (li->sfirst + li->sasked) % conf->nsentinels;

    li->query = NULL;
    if (li->closing)
        return;
    if (c->failover) {
        link_attempt(li);
        return;
    }
    if (c->found) {
        li->sfirst = i;
        li->cur = c->master;
        data_open(li);
        return;
    }
    addr_fmt(&conf->sentinels[i], addr, sizeof(addr));
    snprintf(li->why, sizeof(li->why), "sentinel %s: %s", addr, c->why);
    li->sasked++;
    query_next(li);
}

/* --- the sentinel watch -------------------------------------------------- */

static void watch_open(struct link *li);

static void wretry_cb(uv_timer_t *t)
{
    watch_open(t->data);
}

static void watch_open(struct link *li)
{
    struct rlink_conf *conf = &li->l->conf;

    if (li->closing)
        return;
    li->watch =
        conn_new(li, CONN_WATCH, &conf->sentinels[li->wturn % conf->nsentinels],
                 li->wfails);
    if (!li->watch)
        uv_timer_start(&li->wretry, wretry_cb,
                       rlink_backoff_ms(conf, li->wfails++, &li->rng), 0);
}

static void watch_ready(struct link *li)
{
    char addr[RLINK_HOST_MAX + 32];

    addr_fmt(&li->watch->addr, addr, sizeof(addr));
    if (li->woutage)
        log_msg(LOG_INFO, "%s: watching sentinel %s again", li->name, addr);
    li->woutage = 0;
    li->wfails = 0;
}

static void watch_gone(struct link *li, struct conn *c)
{
    struct rlink_conf *conf = &li->l->conf;
    char addr[RLINK_HOST_MAX + 32];
    uint64_t now = now_ms(li);

    li->watch = NULL;
    if (li->closing)
        return;
    addr_fmt(&c->addr, addr, sizeof(addr));
    if (!li->woutage || now - li->wlogged_ms >= RLINK_LOG_EVERY_MS) {
        log_msg(LOG_WARN,
                "%s: no +switch-master watch on sentinel %s: %s (trying "
                "the next; repeats logged once a minute)",
                li->name, addr, c->why);
        li->wlogged_ms = now;
    }
    li->woutage = 1;
    li->wturn = (li->wturn + 1) % conf->nsentinels;
    uv_timer_start(&li->wretry, wretry_cb,
                   rlink_backoff_ms(conf, li->wfails++, &li->rng), 0);
}

/* Copy the next space-separated word of s[*i..n) into out (cap bytes);
 * -1 when there is none or it does not fit. */
static int next_word(const char *s, size_t n, size_t *i, char *out, size_t cap)
{
    size_t start, len;

    while (*i < n && s[*i] == ' ')
        (*i)++;
    start = *i;
    while (*i < n && s[*i] != ' ')
        (*i)++;
    len = *i - start;
    if (len == 0 || len >= cap)
        return -1;
    memcpy(out, s + start, len);
    out[len] = '\0';
    return 0;
}

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>" */
static void watch_message(struct link *li, const char *data, size_t len)
{
    struct rlink *l = li->l;
    char name[64], oip[RLINK_HOST_MAX + 1], oport[8], nip[RLINK_HOST_MAX + 1],
        nport[8], addr[RLINK_HOST_MAX + 32], *end;
    struct rlink_addr to;
    size_t i = 0;
    long port;

    if (li->closing || next_word(data, len, &i, name, sizeof(name)) < 0 ||
        strcmp(name, l->conf.master_name) != 0)
        return;
    if (next_word(data, len, &i, oip, sizeof(oip)) < 0 ||
        next_word(data, len, &i, oport, sizeof(oport)) < 0 ||
        next_word(data, len, &i, nip, sizeof(nip)) < 0 ||
        next_word(data, len, &i, nport, sizeof(nport)) < 0)
        return;
    port = strtol(nport, &end, 10);
    if (*end || port < 1 || port > 65535)
        return;
    memset(&to, 0, sizeof(to));
    snprintf(to.host, sizeof(to.host), "%s", nip);
    to.port = (int)port;
    l->stats.failovers++;
    addr_fmt(&to, addr, sizeof(addr));
    log_msg(LOG_WARN, "%s: sentinel: master %s moved from %s:%s to %s",
            li->name, name, oip, oport, addr);
    if (li->data && li->have_cur && addr_same(&li->cur, &to))
        return; /* already there (asked a sentinel that knew first) */
    li->hint = to;
    li->have_hint = 1;
    if (li->data) {
        li->data->failover = 1;
        conn_kill(li->data, "failover: master %s moved to %s", name, addr);
    } else if (li->query) {
        li->query->failover = 1;
        conn_kill(li->query, "failover: master %s moved to %s", name, addr);
    } else if (li->st == ST_WAIT) {
        uv_timer_stop(&li->retry);
        link_attempt(li);
    }
}

static void link_conn_gone(struct link *li, struct conn *c)
{
    switch (c->kind) {
    case CONN_DATA:
        data_gone(li, c);
        break;
    case CONN_QUERY:
        query_gone(li, c);
        break;
    case CONN_WATCH:
        watch_gone(li, c);
        break;
    }
}

/* --- the API ------------------------------------------------------------- */

static int addr_ok(const struct rlink_addr *a)
{
    if (a->is_unix)
        return a->path[0] == '/' &&
               memchr(a->path, '\0', sizeof(a->path)) != NULL;
    return a->host[0] && memchr(a->host, '\0', sizeof(a->host)) != NULL &&
           a->port >= 1 && a->port <= 65535;
}

int rlink_init(struct rlink *l, uv_loop_t *loop, const struct rlink_conf *c,
               const struct rlink_ops *ops, uint64_t seed)
{
    struct link *li;
    size_t i;

    memset(l, 0, sizeof(*l));
    if (c->nsentinels > RLINK_SENTINELS ||
        !memchr(c->password, '\0', sizeof(c->password)) ||
        !memchr(c->master_name, '\0', sizeof(c->master_name)))
        return RD_EINVAL;
    if (c->nsentinels == 0 && !addr_ok(&c->addr))
        return RD_EINVAL;
    if (c->nsentinels && !c->master_name[0])
        return RD_EINVAL;
    for (i = 0; i < c->nsentinels; i++)
        if (!addr_ok(&c->sentinels[i]))
            return RD_EINVAL;
    li = calloc(1, sizeof(*li));
    if (!li)
        return RD_ENOMEM;
    l->loop = loop;
    l->conf = *c;
    if (ops)
        l->ops = *ops;
    l->impl = li;
    li->l = l;
    snprintf(li->name, sizeof(li->name), "%s", c->name ? c->name : "redis");
    l->conf.name = li->name;
    if (!l->conf.connect_timeout_ms)
        l->conf.connect_timeout_ms = RLINK_DEFAULT_TIMEOUT_MS;
    if (!l->conf.command_timeout_ms)
        l->conf.command_timeout_ms = RLINK_DEFAULT_TIMEOUT_MS;
    if (!l->conf.backoff_min_ms)
        l->conf.backoff_min_ms = RLINK_DEFAULT_BACKOFF_MIN_MS;
    if (!l->conf.backoff_max_ms)
        l->conf.backoff_max_ms = RLINK_DEFAULT_BACKOFF_MAX_MS;
    if (l->conf.backoff_max_ms < l->conf.backoff_min_ms)
        l->conf.backoff_max_ms = l->conf.backoff_min_ms;
    li->rng = seed;
    uv_timer_init(loop, &li->retry);
    uv_timer_init(loop, &li->wretry);
    li->retry.data = li->wretry.data = li;
    li->live = 2;
    return 0;
}

void rlink_start(struct rlink *l)
{
    struct link *li = l->impl;

    if (!li || li->started || li->closing)
        return;
    li->started = 1;
    link_attempt(li);
    if (l->conf.nsentinels)
        watch_open(li);
}

int rlink_is_up(const struct rlink *l)
{
    const struct link *li = l->impl;

    return li && !li->closing && li->data && li->data->phase == PH_READY &&
           !li->data->killed && li->data->ac;
}

int rlink_subscribe(struct rlink *l, const char *channel)
{
    struct link *li = l->impl;
    struct conn *c;
    char chan[1][RLINK_CHANNEL_MAX + 1];
    size_t i, n = strlen(channel);

    if (!li || li->closing || n == 0 || n > RLINK_CHANNEL_MAX)
        return RD_EINVAL;
    for (i = 0; i < li->nchannels; i++)
        if (strcmp(li->channels[i], channel) == 0)
            return 0;
    if (li->nchannels == RLINK_CHANNELS || rlink_pending(l) > 0)
        return RD_EINVAL;
    memcpy(li->channels[li->nchannels++], channel, n + 1);
    c = li->data;
    /* Connected and past the handshake (up, or waiting for the first
     * confirmations): subscribe now; else the handshake will. */
    if (c && c->ac && !c->killed && (c->phase == PH_READY || c->subscriber)) {
        memcpy(chan[0], channel, n + 1);
        if (c->phase == PH_READY && !c->subscriber)
            uv_timer_start(&c->timer, conn_timer_cb, l->conf.command_timeout_ms,
                           l->conf.command_timeout_ms);
        if (conn_subscribe(c, 1, chan) < 0)
            conn_kill(c, "SUBSCRIBE refused");
    }
    return 0;
}

void rlink_addr_str(const struct rlink *l, char *buf, size_t cap)
{
    const struct link *li = l->impl;

    if (li && li->have_cur)
        addr_fmt(&li->cur, buf, cap);
    else if (l->conf.nsentinels)
        snprintf(buf, cap, "sentinel:%s", l->conf.master_name);
    else
        addr_fmt(&l->conf.addr, buf, cap);
}

void rlink_describe(const struct rlink *l, char *buf, size_t cap)
{
    const struct link *li = l->impl;
    char addr[RLINK_HOST_MAX + 32], s[RLINK_HOST_MAX + 32];
    const char *sep;

    if (!li) {
        snprintf(buf, cap, "closed");
        return;
    }
    rlink_addr_str(l, addr, sizeof(addr));
    sep = li->why[0] ? ": " : "";
    if (li->closing) {
        snprintf(buf, cap, "closing");
    } else if (!li->started) {
        snprintf(buf, cap, "not started");
    } else if (rlink_is_up(l)) {
        snprintf(buf, cap, "connected to %s", addr);
    } else if (li->st == ST_QUERY && li->query) {
        addr_fmt(&li->query->addr, s, sizeof(s));
        snprintf(buf, cap, "asking sentinel %s for master %s (attempt %u)%s%s",
                 s, l->conf.master_name, li->fails + 1, sep, li->why);
    } else if (li->st == ST_WAIT) {
        snprintf(buf, cap, "waiting to reconnect to %s (attempt %u)%s%s", addr,
                 li->fails + 1, sep, li->why);
    } else {
        snprintf(buf, cap, "connecting to %s (attempt %u)%s%s", addr,
                 li->fails + 1, sep, li->why);
    }
}

void rlink_close(struct rlink *l, void (*done)(struct rlink *l))
{
    struct link *li = l->impl;

    if (!li || li->closing)
        return;
    li->closing = 1;
    li->done = done;
    uv_close((uv_handle_t *)&li->retry, link_handle_closed);
    uv_close((uv_handle_t *)&li->wretry, link_handle_closed);
    if (li->data)
        conn_kill(li->data, "closed");
    if (li->query)
        conn_kill(li->query, "closed");
    if (li->watch)
        conn_kill(li->watch, "closed");
}

/* --- addresses ----------------------------------------------------------- */

static int parse_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int parse_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (err && cap) {
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return RD_EINVAL;
}

/* "host:port" or "[v6]:port" into a. */
static int parse_hostport(const char *s, struct rlink_addr *a, char *err,
                          size_t cap)
{
    const char *host = s, *colon, *p;
    size_t hlen;
    long port = 0;

    if (*s == '[') {
        const char *close = strchr(s, ']');

        if (!close || close[1] != ':')
            return parse_err(err, cap, "expected [ipv6]:port in \"%s\"", s);
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return parse_err(err, cap, "no port in \"%s\" (host:port)", s);
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen))
            return parse_err(err, cap,
                             "an IPv6 address needs brackets: [%.*s]:port",
                             (int)hlen, s);
    }
    if (hlen == 0 || hlen > RLINK_HOST_MAX)
        return parse_err(err, cap, "host must be 1..%d bytes", RLINK_HOST_MAX);
    for (p = host; p < host + hlen; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
            !(*p >= '0' && *p <= '9') && *p != '.' && *p != '-' && *p != '_' &&
            *p != ':')
            return parse_err(err, cap, "bad character in host \"%.*s\"",
                             (int)hlen, host);
    for (p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || port > 65535)
            return parse_err(err, cap, "bad port \"%s\" (1..65535)", colon + 1);
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
        return parse_err(err, cap, "bad port \"%s\" (1..65535)", colon + 1);
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    a->port = (int)port;
    return 0;
}

int rlink_parse_addr(const char *s, int allow_bare, struct rlink_addr *a,
                     char *err, size_t errcap)
{
    size_t n;

    memset(a, 0, sizeof(*a));
    if (strncmp(s, "unix://", 7) == 0) {
        s += 7;
        n = strlen(s);
        if (s[0] != '/')
            return parse_err(err, errcap,
                             "unix:// needs an absolute path "
                             "(unix:///run/redis/redis.sock)");
        if (n > RLINK_PATH_MAX)
            return parse_err(err, errcap, "socket path over %d bytes",
                             RLINK_PATH_MAX);
        a->is_unix = 1;
        memcpy(a->path, s, n + 1);
        return 0;
    }
    if (strncmp(s, "tcp://", 6) == 0)
        return parse_hostport(s + 6, a, err, errcap);
    if (allow_bare && !strstr(s, "://"))
        return parse_hostport(s, a, err, errcap);
    return parse_err(err, errcap,
                     allow_bare ? "expected host:port, tcp://host:port or "
                                  "unix:///path"
                                : "expected unix:///path or tcp://host:port");
}
