/*
 * metrics.h - the `metrics` page: the core's counters and per-key state in
 * the Prometheus text exposition format 0.0.4 (through prom.h), for the
 * RPC method and the optional HTTP listener (metrics.listen).
 *
 * Counters are read on demand: nothing here runs on the decision path.
 * Per-key series are capped at metrics.max_keys keys (the first in name
 * order; a family shows those of them it describes); the rest are summed
 * under key="_other", from the host-wide totals the core keeps (state.h
 * struct core_totals) minus the keys shown, so a page costs
 * O(metrics.max_keys + families), whatever the number of keys.  The
 * limiter gauge has no _other row (see metrics.c).
 */
#ifndef RESIL_METRICS_H
#define RESIL_METRICS_H

#include <stdint.h>

#include "prom.h"
#include "state.h"

#define METRICS_MAX_BYTES (64u << 20) /* a page never grows past this */

#define METRICS_CACHE_MS 1000 /* a page is rendered at most this often */

/* Render the page into b (prom_init'ed by the caller, reset here).
 * 0, or a PROM_E* error (the page is then incomplete: do not serve it). */
int metrics_render(struct resild *d, uint64_t now_ms, struct prom_buf *b);

/* The page, rendered at most once per METRICS_CACHE_MS (a page of the
 * default 1000 keys costs ~1 ms: a client asking in a loop must not turn
 * that into a cost per request).  Borrowed until the next call; NULL
 * with *err (PROM_E*) when it could not be rendered. */
const char *metrics_page(struct resild *d, uint64_t now_ms, size_t *len,
                         int *err);

/* Free the cached page (at shutdown). */
void metrics_free(struct resild *d);

#endif
