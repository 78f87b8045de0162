/*
 * flood_util.h - a connect/close flood against a daemon, and a healthy
 * client pinging through it: shared by tests/test_flood.c (CI size,
 * asserted) and tests/bench.c (10 s, printed).
 *
 * Flooders are forked processes (so the flood competes for the CPU as a
 * hostile local process would) that connect to the socket and close at
 * once, as fast as they can, until their time is up.
 */
#ifndef RESIL_FLOOD_UTIL_H
#define RESIL_FLOOD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "resil.h"

#define FLOOD_MAX_PROCS 8

struct flood {
    pid_t pid[FLOOD_MAX_PROCS];
    int count_fd[FLOOD_MAX_PROCS]; /* read end: the child's connect count */
    int n;
};

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t flood_now_ns(void);

/* Fork nprocs (<= FLOOD_MAX_PROCS) flooders against sock for duration_ms.
 * 0, or -1 (those already forked are killed and reaped). */
int flood_start(struct flood *f, const char *sock, int nprocs, int duration_ms);

/* Wait for every flooder; the connections they made in all (successful
 * connect(2) calls), or -1 if one failed to report. */
long long flood_wait(struct flood *f);

/* Ping over r until flood_now_ns() >= end_ns, each with deadline_ms; each
 * latency in ns into v (at most cap; the rest are counted, not stored).
 * Returns the number of pings made; *failed counts those that did not
 * answer (also stored, as their latency). */
size_t flood_pings(resil_t *r, uint64_t end_ns, int deadline_ms, uint64_t *v,
                   size_t cap, size_t *failed);

/* A "VmHWM:"-style field of /proc/PID/status in KiB, or -1. */
long proc_status_kib(pid_t pid, const char *field);

/* Sort v[n] and return the nearest-rank percentile (per_mille 1..1000)
 * in ms; 0 when n is 0. */
double flood_pct_ms(uint64_t *v, size_t n, unsigned per_mille);

#endif
