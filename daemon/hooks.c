/*
 * hooks.c - alert delivery (see hooks.h): timers, EV_ALERT emission, exec
 * hooks with uv_spawn.  Server layer: uses uv and the core's entries, never
 * blocks.  Alerts are emitted from this file's timers only, never from
 * inside another event's sink walk (a sink must not call back into the
 * core), so a breaker opening seen by the sink waits for the flush timer.
 */
#include "hooks.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "keys.h"
#include "log.h"

/* One hook run: a process, the pipe to its stdin, its timeout timer.
 * Freed when the three handles have closed (nopen back to 0). */
struct hook_job {
    struct hook_job *next;
    struct hooks *h;
    uv_process_t proc;
    uv_pipe_t in;
    uv_timer_t timer;
    uv_write_t wr;
    int nopen;  /* handles not yet closed */
    int exited; /* exit_cb ran */
    int killed; /* the timeout fired */
    uint32_t timeout_ms;
    char rule[64];
    char *cmd;  /* owned */
    char *json; /* owned: stdin */
    size_t json_len;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void job_free(struct hook_job *j)
{
    free(j->cmd);
    free(j->json);
    free(j);
}

static void report(struct hooks *h)
{
    char line[128];

    snprintf(line, sizeof(line),
             "%llu run, %llu failed, %llu timed out, "
             "%llu dropped",
             (unsigned long long)h->run, (unsigned long long)h->failed,
             (unsigned long long)h->timed_out, (unsigned long long)h->dropped);
    core_component(h->d, "alert_hooks", 1, line);
}

static void start_queued(struct hooks *h);
static void on_flush(uv_timer_t *t);

static void on_job_closed(uv_handle_t *hd)
{
    struct hook_job *j = hd->data, **pp;
    struct hooks *h = j->h;

    if (--j->nopen > 0)
        return;
    for (pp = &h->running; *pp && *pp != j; pp = &(*pp)->next)
        ;
    if (*pp) {
        *pp = j->next;
        h->nrunning--;
    }
    job_free(j);
    start_queued(h);
}

static void close_job_handle(uv_handle_t *hd)
{
    if (!uv_is_closing(hd))
        uv_close(hd, on_job_closed);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct hook_job *j = p->data;
    struct hooks *h = j->h;

    j->exited = 1;
    if (j->killed) {
        h->timed_out++;
        h->failed++;
        log_msg(LOG_WARN, "alert hook of rule %s killed after %u ms", j->rule,
                (unsigned)j->timeout_ms);
    } else if (status != 0 || sig != 0) {
        h->failed++;
        log_msg(LOG_WARN, "alert hook of rule %s failed: %s %d", j->rule,
                sig ? "signal" : "exit status", sig ? sig : (int)status);
    }
    report(h);
    uv_timer_stop(&j->timer);
    close_job_handle((uv_handle_t *)&j->timer);
    close_job_handle((uv_handle_t *)&j->in);
    close_job_handle((uv_handle_t *)&j->proc);
}

static void on_timeout(uv_timer_t *t)
{
    struct hook_job *j = t->data;

    if (j->exited)
        return;
    j->killed = 1;
    /* Its own process group (UV_PROCESS_DETACHED): the shell and whatever
     * it started go together. */
    if (uv_kill(-j->proc.pid, SIGKILL) < 0)
        uv_process_kill(&j->proc, SIGKILL);
}

static void on_written(uv_write_t *w, int status)
{
    struct hook_job *j = w->data;

    (void)status; /* a hook that does not read its stdin is its business */
    close_job_handle((uv_handle_t *)&j->in);
}

/* Spawn j now.  On failure it is counted and freed. */
static void job_spawn(struct hooks *h, struct hook_job *j)
{
    char *args[] = {"/bin/sh", "-c", j->cmd, NULL};
    uv_stdio_container_t stdio[3];
    uv_process_options_t opt;
    uv_buf_t buf;
    int rc;

    memset(&opt, 0, sizeof(opt));
    uv_pipe_init(h->loop, &j->in, 0);
    uv_timer_init(h->loop, &j->timer);
    j->in.data = j->timer.data = j->proc.data = j->wr.data = j;
    j->nopen = 2;
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&j->in;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    opt.file = args[0];
    opt.args = args;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    opt.exit_cb = on_exit_cb;
    opt.flags = UV_PROCESS_DETACHED;
    j->next = h->running;
    h->running = j;
    h->nrunning++;
    h->run++;
    if ((rc = uv_spawn(h->loop, &j->proc, &opt)) < 0) {
        h->failed++;
        log_msg(LOG_WARN, "alert hook of rule %s: cannot start: %s", j->rule,
                uv_strerror(rc));
        report(h);
        /* uv_spawn closes nothing on failure; the process handle must
         * still be closed (libuv initialises it first). */
        j->nopen = 3;
        j->exited = 1;
        close_job_handle((uv_handle_t *)&j->proc);
        close_job_handle((uv_handle_t *)&j->timer);
        close_job_handle((uv_handle_t *)&j->in);
        return;
    }
    j->nopen = 3;
    /* A hook never keeps the daemon from stopping. */
    uv_unref((uv_handle_t *)&j->proc);
    uv_unref((uv_handle_t *)&j->timer);
    uv_unref((uv_handle_t *)&j->in);
    uv_timer_start(&j->timer, on_timeout, j->timeout_ms, 0);
    buf = uv_buf_init(j->json, (unsigned)j->json_len);
    if (uv_write(&j->wr, (uv_stream_t *)&j->in, &buf, 1, on_written) < 0)
        close_job_handle((uv_handle_t *)&j->in);
}

static void start_queued(struct hooks *h)
{
    while (!h->stopping && h->queue_head && h->nrunning < HOOKS_RUNNING) {
        struct hook_job *j = h->queue_head;
        h->queue_head = j->next;
        if (!h->queue_head)
            h->queue_tail = NULL;
        h->queued--;
        job_spawn(h, j);
    }
}

/* Queue (or start) rule r's hook with the alert's JSON. */
static void enqueue(struct hooks *h, const struct alert_rule *r,
                    const char *json)
{
    struct hook_job *j;

    if (h->queued >= HOOKS_QUEUE_MAX || !(j = calloc(1, sizeof(*j)))) {
        h->dropped++;
        log_msg(LOG_WARN, "alert hook of rule %s dropped: %u waiting already",
                r->name, (unsigned)HOOKS_QUEUE_MAX);
        report(h);
        return;
    }
    j->h = h;
    j->timeout_ms = r->timeout_ms;
    snprintf(j->rule, sizeof(j->rule), "%s", r->name);
    j->cmd = strdup(r->exec);
    j->json = strdup(json);
    if (!j->cmd || !j->json) {
        h->dropped++;
        job_free(j);
        return;
    }
    j->json_len = strlen(j->json);
    if (h->queue_tail)
        h->queue_tail->next = j;
    else
        h->queue_head = j;
    h->queue_tail = j;
    h->queued++;
    start_queued(h);
}

/* The alert as JSON for a hook's stdin (NULL when out of memory). */
static char *alert_json(const struct event *ev)
{
    json_t *o = json_object();
    char *s;

    if (!o)
        return NULL;
    json_object_set_new(o, "topic", json_string("alert"));
    json_object_set_new(o, "kind", json_string(ev->u.alert.kind));
    json_object_set_new(o, "rule", json_string(ev->u.alert.rule));
    json_object_set_new(o, "key", json_stringn(ev->key->name, ev->key->len));
    json_object_set_new(o, "rate_per_min", json_real(ev->u.alert.rate_per_min));
    json_object_set_new(o, "detail", json_string(ev->u.alert.detail));
    if (ev->u.alert.eta_s)
        json_object_set_new(o, "eta_s",
                            json_integer((json_int_t)ev->u.alert.eta_s));
    json_object_set_new(o, "ts", json_integer((json_int_t)wall_ms()));
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/*
 * The sink: a breaker that opened by itself is noted for the flush timer;
 * an alert goes to the exec of its rule (rate) or of every rule with an
 * exec that covers its key (breaker_open, predicted_trip).
 */
static void hooks_sink(void *ctx, const struct event *ev)
{
    struct hooks *h = ctx;
    const struct config *cfg = &h->d->cfg;
    char *json = NULL;
    size_t i;

    /* A breaker that opened here, by itself: one opened on another daemon
     * (origin set) alerts there, so an incident pages once, not once per
     * host sharing the key. */
    if (ev->type == EV_TRANSITION && ev->key && !ev->origin &&
        ev->u.transition.to == BREAKER_VIS_OPEN) {
        if (h->npending < HOOKS_PENDING_MAX)
            h->pending[h->npending++] = ev->key;
        if (!uv_is_active((uv_handle_t *)&h->flush))
            uv_timer_start(&h->flush, on_flush, 0, 0);
        return;
    }
    if (ev->type != EV_ALERT || !ev->key || h->stopping)
        return;
    for (i = 0; i < cfg->nalerts; i++) {
        const struct alert_rule *r = &cfg->alerts[i];
        if (!r->exec[0])
            continue;
        if (ev->u.alert.rule_index >= 0
                ? (size_t)ev->u.alert.rule_index != i
                : !alerts_rule_covers(r, ev->key->name, ev->key->len))
            continue;
        if (!json && !(json = alert_json(ev))) {
            h->dropped++;
            return;
        }
        enqueue(h, r, json);
    }
    free(json);
}

static void emit_alert(void *ctx, const struct alert *a)
{
    struct hooks *h = ctx;
    struct event ev = {.type = EV_ALERT};

    ev.key = a->id; /* the daemon's struct key (analytics ids) */
    ev.u.alert.kind = alerts_kind_name(a->kind);
    ev.u.alert.rule = a->rule_name;
    ev.u.alert.rule_index = a->rule;
    ev.u.alert.rate_per_min = a->rate_per_min;
    ev.u.alert.eta_s = a->eta_s;
    ev.u.alert.detail = a->detail;
    core_emit(h->d, &ev, uv_now(h->loop));
}

static int breaker_of(void *ctx, const void *id, double *rate_pct,
                      double *threshold_pct)
{
    struct hooks *h = ctx;
    struct key *k = (struct key *)id;
    uint64_t now = uv_now(h->loop);

    core_advance(h->d, k, now);
    if (breaker_visible_state(&k->br) != BREAKER_VIS_CLOSED ||
        !k->policy->breaker.failure_rate_threshold)
        return 0;
    *rate_pct = breaker_failure_rate(&k->br, now);
    *threshold_pct = k->policy->breaker.failure_rate_threshold;
    return 1;
}

static void on_flush(uv_timer_t *t)
{
    struct hooks *h = t->data;
    uint64_t now = uv_now(h->loop);
    struct alert a;
    size_t i;

    for (i = 0; i < h->npending; i++) {
        const struct key *k = h->pending[i];
        if (alerts_breaker_opened(&h->al, k, k->name, k->len, now, &a)) {
            snprintf(a.detail, sizeof(a.detail), "the breaker opened (%s)",
                     breaker_cause_name(k->br.cause));
            a.rate_per_min = (double)analytics_key_rate(h->an, k, 0, now);
            emit_alert(h, &a);
        }
    }
    h->npending = 0;
}

static void on_tick(uv_timer_t *t)
{
    struct hooks *h = t->data;
    const struct config *cfg = &h->d->cfg;

    alerts_eval(&h->al, cfg->alerts, cfg->nalerts, h->an, breaker_of, h,
                uv_now(h->loop), emit_alert, h);
}

int hooks_start(struct hooks *h, uv_loop_t *loop, struct resild *d,
                struct analytics *an)
{
    int rc;
    size_t i;

    memset(h, 0, sizeof(*h));
    h->loop = loop;
    h->d = d;
    h->an = an;
    if (alerts_init(&h->al, (uint64_t)uv_hrtime()) < 0)
        return RD_ENOMEM;
    if ((rc = core_add_sink(d, hooks_sink, h)) < 0) {
        alerts_free(&h->al);
        return rc;
    }
    uv_timer_init(loop, &h->tick);
    uv_timer_init(loop, &h->flush);
    h->tick.data = h->flush.data = h;
    /* Housekeeping must not keep the loop alive at shutdown. */
    uv_unref((uv_handle_t *)&h->tick);
    uv_unref((uv_handle_t *)&h->flush);
    uv_timer_start(&h->tick, on_tick, HOOKS_TICK_MS, HOOKS_TICK_MS);
    for (i = 0; i < d->cfg.nalerts; i++)
        if (d->cfg.alerts[i].exec[0]) {
            report(h);
            break;
        }
    return 0;
}

void hooks_stop(struct hooks *h)
{
    struct hook_job *j, *n;

    h->stopping = 1;
    uv_timer_stop(&h->tick);
    uv_timer_stop(&h->flush);
    uv_close((uv_handle_t *)&h->tick, NULL);
    uv_close((uv_handle_t *)&h->flush, NULL);
    for (j = h->queue_head; j; j = n) {
        n = j->next;
        job_free(j);
    }
    h->queue_head = h->queue_tail = NULL;
    h->queued = 0;
    for (j = h->running; j; j = j->next)
        if (!j->exited)
            on_timeout(&j->timer);
    alerts_free(&h->al);
}
