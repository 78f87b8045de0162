/*
 * evlog.h - the log as an event sink: one line per state change, operator
 * action, venue pause and heartbeat edge, to stderr through log.c.
 * Outcomes are not logged (there is one per call); bounds are rate-limited
 * like every warning a peer can cause.
 */
#ifndef RESIL_EVLOG_H
#define RESIL_EVLOG_H

#include "event.h"

/* An event_sink_fn; ctx unused. */
void evlog_sink(void *ctx, const struct event *ev);

#endif
