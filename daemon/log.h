/*
 * log.h - one line per event to stderr (journald keeps it).
 *
 * Peer-supplied text must pass through log_escape() first: it is truncated
 * and non-printable bytes become \xNN, so a client cannot forge log lines.
 */
#ifndef RESIL_LOG_H
#define RESIL_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO };

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A warning about something a peer can cause at will (bad frames, refused
 * connections): at most LOG_PEER_PER_S lines per second of now_ms (the
 * caller's monotonic clock); the lines over that are counted, and the count
 * is reported on the next line that is written.
 */
#define LOG_PEER_PER_S 10
void log_peer(uint64_t now_ms, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Escape src[0..n) into dst (cap bytes, always NUL-terminated); output is
 * cut with "..." when it does not fit.  Returns dst. */
char *log_escape(char *dst, size_t cap, const char *src, size_t n);

#endif
