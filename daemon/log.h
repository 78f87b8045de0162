/*
 * log.h - one line per event to stderr (journald keeps it).
 *
 * Peer-supplied text must pass through log_escape() first: it is truncated
 * and non-printable bytes become \xNN, so a client cannot forge log lines.
 */
#ifndef RESIL_LOG_H
#define RESIL_LOG_H

#include <stddef.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO };

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Escape src[0..n) into dst (cap bytes, always NUL-terminated); output is
 * cut with "..." when it does not fit.  Returns dst. */
char *log_escape(char *dst, size_t cap, const char *src, size_t n);

#endif
