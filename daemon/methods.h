/*
 * methods.h - the RPC methods of SPEC §3 and the daemon state they act on.
 *
 * This is the decision layer between the socket server and the pure core
 * (breaker, keys, permits): it validates named arguments, applies them and
 * packs exactly one response.  It does no I/O and reads no clock: the
 * server passes the loop's monotonic time.  Logging a breaker transition is
 * its only side effect.
 */
#ifndef RESIL_METHODS_H
#define RESIL_METHODS_H

#include <msgpack.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"
#include "state.h"

#define STATUS_PAGE_MAX 1000 /* keys in one status answer (its `limit`) */

/* Build the state from a loaded config (taken: d owns cfg afterwards).
 * seed: a random secret (hash seeds).  0, or RD_ENOMEM / RD_EINVAL. */
int methods_init(struct resild *d, struct config *cfg, uint64_t now_ms,
                 uint64_t seed);
void methods_free(struct resild *d);

/* Answer one request m from c into pk (exactly one response).  A
 * notification (m->type PROTO_NOTIFY) of a method that allows it runs the
 * same way and the caller discards what was packed; any other is counted
 * and ignored. */
void methods_dispatch(struct resild *d, struct caller *c,
                      const struct proto_msg *m, msgpack_packer *pk,
                      uint64_t now_ms);

/* The caller's connection closed: release its permits; a lost half-open
 * probe counts as a failure. */
void methods_caller_gone(struct resild *d, struct caller *c, uint64_t now_ms);

/* Housekeeping from the cron timer: expire permits past their TTL (each
 * counts as a `timeout` failure). */
void methods_cron(struct resild *d, uint64_t now_ms);

#endif
