/*
 * tap.h - the smallest TAP producer that serves resild's tests.
 *
 * Each test binary prints "ok N - name" / "not ok N - name" lines and a
 * "1..N" plan at the end; tests/run.sh adds them up across binaries and
 * prints the final "N passed, N failed" line.  Header-only so every test is
 * one .c file; a test binary includes it exactly once.
 */
#ifndef RESIL_TAP_H
#define RESIL_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_count;
static int tap_failures;

/* Record one check.  Returns cond so callers can bail out early. */
static int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), unused));
static int tap_ok(int cond, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    tap_count++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (!cond) {
        printf(" # at %s:%d", file, line);
        tap_failures++;
    }
    printf("\n");
    fflush(stdout);
    return cond;
}

#define OK(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define IS(got, want, name)                                                    \
    do {                                                                       \
        long long got_ = (long long)(got), want_ = (long long)(want);          \
        if (!OK(got_ == want_, "%s", name))                                    \
            printf("#   got %lld, want %lld\n", got_, want_);                  \
    } while (0)

/* Diagnostic line; ignored by the counter. */
#define DIAG(...) (printf("# "), printf(__VA_ARGS__), printf("\n"))

static int tap_done(void) __attribute__((unused));
static int tap_done(void)
{
    printf("1..%d\n", tap_count);
    return tap_failures ? 1 : 0;
}

#endif
