/*
 * sdnotify.h - the systemd service protocol, without libsystemd: the notify
 * datagram (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and the socket a
 * .socket unit passes (LISTEN_FDS/LISTEN_PID).  The server layer: main.c
 * and server.c call it; it knows neither uv nor the core.
 *
 * Why no libsystemd: sd_notify is one sendto(2) of "KEY=VALUE\n..." on an
 * AF_UNIX datagram socket named by $NOTIFY_SOCKET (a path, or "@name" for
 * the abstract namespace), and sd_listen_fds is three environment variables
 * and fd 3.  Writing both here is about 150 lines and keeps the daemon's
 * dependencies to libuv, msgpack-c and jansson (libsystemd would also pull
 * liblzma, libzstd, liblz4, libgcrypt and libcap into the sidecar of every
 * trading host).
 *
 * Without $NOTIFY_SOCKET every send is a no-op that returns 0, so the same
 * binary runs under a terminal, a test harness or Type=simple.
 *
 * A send never blocks the loop (MSG_DONTWAIT): if systemd's queue is full
 * the datagram is dropped and a warning logged (once per distinct error).
 * One process-wide state: sd_notify is a per-process protocol and resild is
 * one thread.
 */
#ifndef RESIL_SDNOTIFY_H
#define RESIL_SDNOTIFY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define SDNOTIFY_LISTEN_FDS_START 3 /* the first passed fd (sd-daemon.h) */
#define SDNOTIFY_MAX_BYTES 1024     /* one datagram's text, bounded */

/*
 * Read $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, unset them (so
 * nothing resild might start inherits them) and open the datagram socket.
 * Returns 1 when systemd listens, 0 when it does not (every send is then a
 * no-op), or -1 with a message logged for a malformed $NOTIFY_SOCKET (the
 * daemon then runs without notifying; systemd will time out on a
 * Type=notify unit and say so).
 */
int sdnotify_init(void);

/* 1 when $NOTIFY_SOCKET was valid at sdnotify_init. */
int sdnotify_enabled(void);

/* The watchdog interval systemd asked for, in microseconds; 0 when off
 * (no $WATCHDOG_USEC, or $WATCHDOG_PID names another process).  Send
 * WATCHDOG=1 at half of it. */
uint64_t sdnotify_watchdog_usec(void);

/* Send text (one or more "KEY=VALUE" lines) as one datagram.  0 when sent
 * or when notifying is off; a negative errno when the send failed. */
int sdnotify_send(const char *text);

/* The messages resild sends.  status may be NULL (no STATUS= line); it is
 * one line of text, cut to fit SDNOTIFY_MAX_BYTES, newlines replaced.
 *   ready:     "READY=1" (after the socket listens, and after a reload)
 *   reloading: "RELOADING=1" + "MONOTONIC_USEC=<CLOCK_MONOTONIC now>";
 *              send sdnotify_ready() when the reload is over, applied or
 *              refused (systemd 252 waits for READY=1 again)
 *   stopping:  "STOPPING=1" (SIGTERM/SIGINT: the drain begins)
 *   status:    "STATUS=..." alone
 *   watchdog:  "WATCHDOG=1" (from a loop timer: proves the loop turns)
 * Each returns what sdnotify_send returns. */
int sdnotify_ready(const char *status);
int sdnotify_reloading(const char *status);
int sdnotify_stopping(const char *status);
int sdnotify_status(const char *status);
int sdnotify_watchdog(void);

/* Pure parsers, exposed for tests/test_sdnotify.c. */

/*
 * $NOTIFY_SOCKET to an address: an absolute path, or "@name" for the
 * abstract namespace (the '@' becomes the leading NUL and the length counts
 * exactly the name: an abstract address is not NUL-terminated).  0, or -1
 * for anything else (empty, relative, too long).
 */
int sdnotify_parse_addr(const char *env, struct sockaddr_un *sa,
                        socklen_t *len);

/*
 * $WATCHDOG_USEC and $WATCHDOG_PID (either may be NULL): the interval in
 * *usec, 0 when the watchdog is not for self (a WATCHDOG_PID that is not
 * self) or absent.  0, or -1 when usec is set but not a positive decimal
 * integer, or pid is set but not one.
 */
int sdnotify_parse_watchdog(const char *usec, const char *pid, pid_t self,
                            uint64_t *usec_out);

/*
 * $LISTEN_FDS and $LISTEN_PID: how many fds (from
 * SDNOTIFY_LISTEN_FDS_START) are ours, in *n; 0 when absent or meant for
 * another process (LISTEN_PID is not self).  0, or -1 when malformed.
 */
int sdnotify_parse_listen(const char *fds, const char *pid, pid_t self, int *n);

/*
 * The listening socket systemd passed: reads and unsets LISTEN_FDS,
 * LISTEN_PID and LISTEN_FDNAMES; checks that exactly one fd was passed and
 * that it is a listening AF_UNIX stream socket; makes it non-blocking and
 * close-on-exec.  Returns the fd (the caller owns it, and must never unlink
 * its path: systemd created it and keeps it), -1 when nothing was passed,
 * or -2 with the reason in err (err_cap bytes) when something was passed
 * that resild cannot serve.
 */
int sdnotify_listen_fd(char *err, size_t err_cap);

#endif
