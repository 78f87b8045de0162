/*
 * heartbeat.h - the heartbeat of one key, pure: every function takes the
 * monotonic time in milliseconds, does no I/O, reads no clock, allocates
 * nothing and holds no globals.
 *
 * A key with a heartbeat policy is lost when it has been silent for longer
 * than timeout_ms: strictly longer, so silence == timeout_ms is still
 * alive and timeout_ms + 1 is lost.  Silence counts from the last beat, or
 * from heartbeat_init if no beat came yet.  Once lost it stays lost until
 * the next beat, whatever timeout_ms later calls pass (a reload that
 * raises the timeout does not revive it; only a beat does).
 *
 * Edges.  Each loss is reported exactly once (HEARTBEAT_LOST) and each
 * recovery exactly once (HEARTBEAT_RESTORED), strictly alternating, lost
 * first.  heartbeat_check reports the lost edge from the timer or from an
 * acquire; a beat that ends a silence no check reported as lost reports
 * both edges at once, so the pair is never broken by a check that came
 * too late.
 *
 * A now_ms older than the last beat (callers mixing clocks) counts as no
 * time passed, never as a wrap; the last beat never moves back.
 */
#ifndef RESIL_HEARTBEAT_H
#define RESIL_HEARTBEAT_H

#include <stdint.h>

struct heartbeat {
    uint64_t last_ms; /* last beat, or heartbeat_init's now_ms if none */
    uint64_t beats;   /* beats received (lifetime) */
    uint64_t losses;  /* lost edges reported (lifetime) */
    uint8_t lost;     /* a lost edge was reported and no beat followed */
};

/* Edges one call reported: bit flags. */
#define HEARTBEAT_LOST 1u
#define HEARTBEAT_RESTORED 2u

/* Start the silence at now_ms: alive, nothing reported. */
void heartbeat_init(struct heartbeat *h, uint64_t now_ms);

/*
 * Look at now_ms with timeout_ms (>= 1 from config; 0 means any silence of
 * 1 ms or more is too long).  Returns HEARTBEAT_LOST on the first look that
 * finds the silence longer than timeout_ms, and 0 on every other look.
 * *lost_now (may be NULL): lost after this look.  *silent_ms (may be NULL):
 * the silence at now_ms.
 */
unsigned heartbeat_check(struct heartbeat *h, uint64_t now_ms,
                         uint64_t timeout_ms, int *lost_now,
                         uint64_t *silent_ms);

/*
 * A beat at now_ms.  Returns HEARTBEAT_RESTORED if the key was lost before
 * this beat, with HEARTBEAT_LOST too if no check had reported that loss
 * yet (the silence was longer than timeout_ms); 0 if it was alive.
 * *silent_ms (may be NULL): the silence this beat ended.
 */
unsigned heartbeat_beat(struct heartbeat *h, uint64_t now_ms,
                        uint64_t timeout_ms, uint64_t *silent_ms);

/* Silence at now_ms: time since the last beat (or init), 0 if now_ms is
 * older. */
uint64_t heartbeat_silent_ms(const struct heartbeat *h, uint64_t now_ms);

/* Lost at now_ms: reported lost, or silent for longer than timeout_ms
 * (a loss the next check will report).  Changes nothing. */
int heartbeat_is_lost(const struct heartbeat *h, uint64_t now_ms,
                      uint64_t timeout_ms);

/* First instant at which heartbeat_check would report the lost edge
 * (last beat + timeout_ms + 1, UINT64_MAX if that overflows), for the
 * caller's timer; 0 if the key is lost already (nothing more is due). */
uint64_t heartbeat_due_ms(const struct heartbeat *h, uint64_t timeout_ms);

/*
 * Export and import (snapshots): the silence at the export and the lost
 * flag, restored under the importer's clock (time the daemon was down
 * does not count).  A silence longer than the importer's clock has run
 * (a reboot) starts at the clock's 0 instead; the lost flag is kept
 * either way, so a lost key stays lost until its next beat.
 */
struct heartbeat_export {
    uint64_t silent_ms;
    uint64_t beats, losses;
    uint8_t lost; /* 0 or 1 */
};

void heartbeat_export(const struct heartbeat *h, uint64_t now_ms,
                      struct heartbeat_export *ex);
void heartbeat_import(struct heartbeat *h, uint64_t now_ms,
                      const struct heartbeat_export *ex);

#endif
