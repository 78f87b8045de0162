/*
 * metrics.h - the `metrics` page: the core's counters and per-key state in
 * the Prometheus text exposition format 0.0.4 (through prom.h), for the
 * RPC method and the optional HTTP listener (metrics.listen).
 *
 * Counters are read on demand: nothing here runs on the decision path.
 * Per-key series are capped at metrics.max_keys keys (the first in name
 * order); the rest are summed under key="_other".  A page walks every key
 * once per per-key family: O(keys), on a scrape, never per request.
 */
#ifndef RESIL_METRICS_H
#define RESIL_METRICS_H

#include <stdint.h>

#include "prom.h"
#include "state.h"

#define METRICS_MAX_BYTES (64u << 20) /* a page never grows past this */

/* Render the page into b (prom_init'ed by the caller, reset here).
 * 0, or a PROM_E* error (the page is then incomplete: do not serve it). */
int metrics_render(struct resild *d, uint64_t now_ms, struct prom_buf *b);

#endif
