/*
 * hooks.h - alert delivery at the server layer (SPEC §6): the once-a-second
 * evaluation (alerts.h over analytics.h), each alert emitted as an EV_ALERT
 * event (subscribers, the log, the error log's alert file), and the rules'
 * exec hooks.  This is I/O (uv timers, uv_spawn); the decisions it reads
 * are pure (alerts.c, analytics.c).
 *
 * exec: the rule's command runs as /bin/sh -c COMMAND in its own process
 * group, the alert as one JSON object on stdin, stdout discarded, stderr
 * the daemon's.  At most HOOKS_RUNNING run at once; the rest wait in a
 * queue of HOOKS_QUEUE_MAX (one more is dropped, logged and counted).  A
 * hook still running after its rule's timeout (default 5 s) has its
 * process group killed (SIGKILL).  A hook that fails (spawn error, exit
 * status not 0, killed) is logged and counted; nothing here ever waits for
 * a hook, so decisions never do.  The counts show in health.components as
 * "alert_hooks" once a rule has an exec.
 */
#ifndef RESIL_HOOKS_H
#define RESIL_HOOKS_H

#include <uv.h>

#include "alerts.h"
#include "analytics.h"
#include "state.h"

#define HOOKS_RUNNING 4       /* hooks running at once */
#define HOOKS_QUEUE_MAX 64    /* hooks waiting to run */
#define HOOKS_PENDING_MAX 256 /* breaker openings waiting for the flush */
#define HOOKS_TICK_MS 1000    /* rule evaluation period */

struct hook_job;

struct hooks {
    uv_loop_t *loop;
    struct resild *d;     /* borrowed */
    struct analytics *an; /* borrowed */
    struct alerts al;
    uv_timer_t tick;  /* every HOOKS_TICK_MS: alerts_eval */
    uv_timer_t flush; /* soon: breaker openings noticed by the sink */
    const void *pending[HOOKS_PENDING_MAX]; /* keys whose breaker opened */
    size_t npending;
    struct hook_job *queue_head, *queue_tail; /* waiting */
    size_t queued;
    struct hook_job *running; /* list */
    size_t nrunning;
    int stopping;
    uint64_t run, failed, timed_out, dropped; /* hooks */
};

/* Start the timers and register the sink (before any event).  0, or a
 * negative error (logged). */
int hooks_start(struct hooks *h, uv_loop_t *loop, struct resild *d,
                struct analytics *an);

/* Shutdown: stop the timers, kill running hooks, drop the queue.  The
 * caller runs the loop once more to let the handles close. */
void hooks_stop(struct hooks *h);

#endif
