/*
 * daemon_util.h - run a real resild for integration tests.
 *
 * Each daemon lives in its own temporary directory (mkdtemp under $TMPDIR,
 * else /tmp) holding resild.sock, config.json and resild.log, so tests use
 * no fixed path and can run in parallel.  Readiness is a connect() to the
 * socket polled every 10 ms for at most 10 s, never a bare sleep.  The
 * binary is $BUILD/resild (BUILD defaults to "build").
 */
#ifndef RESIL_DAEMON_UTIL_H
#define RESIL_DAEMON_UTIL_H

#include <stddef.h>
#include <sys/types.h>

struct test_daemon {
    char dir[256];    /* the temporary directory */
    char sock[108];   /* dir/resild.sock (fits sun_path) */
    char config[300]; /* dir/config.json */
    char log[300];    /* dir/resild.log: the daemon's stderr */
    pid_t pid;        /* running daemon, 0 when none */
};

/* Directory holding the binaries: $BUILD or "build" (borrowed). */
const char *daemon_build_dir(void);

/* Make a fresh temporary directory into dir (cap bytes).  0 or -1. */
int daemon_mkdtemp(char *dir, size_t cap);

/* Remove dir and everything in it.  0 or -1. */
int daemon_rmtree(const char *dir);

/* Create the directory, write config_json (NULL: "{}") to config.json,
 * start resild and wait until its socket accepts connections.
 * 0 on success; -1 (with the log dumped to stderr, the daemon killed and
 * the directory removed) when it did not come up within 10 s. */
int daemon_start(struct test_daemon *d, const char *config_json);

/* Start again with the same directory (after daemon_stop), e.g. to test a
 * restart.  0 or -1 like daemon_start, but the directory is kept. */
int daemon_restart(struct test_daemon *d);

/* SIGTERM, wait up to 10 s, then SIGKILL.  Returns the exit status (0..255),
 * 128+signal if it died by a signal, or -1 if it was not running. */
int daemon_stop(struct test_daemon *d);

/* daemon_stop (if running) and remove the directory. */
void daemon_cleanup(struct test_daemon *d);

/* Copy the daemon's log to stderr, each line prefixed "# resild: ". */
void daemon_dump_log(const struct test_daemon *d);

/* Wait until path accepts a connect(), polling every 10 ms for up to
 * timeout_ms.  0 when ready, -1 on timeout or if pid (when > 0) exits. */
int daemon_wait_ready(const char *path, pid_t pid, int timeout_ms);

#endif
