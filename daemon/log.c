/*
 * log.c - stderr logging with a wall-clock stamp (people read these lines;
 * nothing in the daemon's decisions depends on wall time).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void log_v(enum log_level lvl, const char *fmt, va_list ap)
{
    static const char *names[] = {"error", "warn", "info"};
    char line[1024], stamp[32];
    struct timespec ts;
    struct tm tm;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line, sizeof(line), "%s.%03ldZ resild %s: ", stamp,
                 ts.tv_nsec / 1000000, names[lvl]);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_v(lvl, fmt, ap);
    va_end(ap);
}

void log_peer(uint64_t now_ms, const char *fmt, ...)
{
    static uint64_t second;  /* now_ms / 1000 of the current budget */
    static unsigned written; /* lines written in that second */
    static uint64_t dropped; /* lines not written since the last one */
    va_list ap;

    if (now_ms / 1000 != second) {
        second = now_ms / 1000;
        written = 0;
    }
    if (written >= LOG_PEER_PER_S) {
        dropped++;
        return;
    }
    written++;
    if (dropped) {
        log_msg(LOG_WARN,
                "%llu more warnings about clients were not logged "
                "(over %d per second)",
                (unsigned long long)dropped, LOG_PEER_PER_S);
        dropped = 0;
    }
    va_start(ap, fmt);
    log_v(LOG_WARN, fmt, ap);
    va_end(ap);
}

char *log_escape(char *dst, size_t cap, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;

    if (cap == 0)
        return dst;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        size_t need = (ch >= 0x20 && ch < 0x7f && ch != '\\') ? 1 : 4;
        if (o + need + 4 > cap) { /* room for "..." and NUL */
            if (o + 4 <= cap) {
                memcpy(dst + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (need == 1) {
            dst[o++] = (char)ch;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    dst[o] = '\0';
    return dst;
}
