/*
 * test_sdnotify.c - daemon/sdnotify.c's parsers and its one datagram:
 * $NOTIFY_SOCKET paths and "@abstract" names, WATCHDOG_USEC/WATCHDOG_PID,
 * LISTEN_FDS/LISTEN_PID, and what READY/RELOADING/STOPPING/STATUS/WATCHDOG
 * put on the wire (received on a datagram socket of our own).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sdnotify.h"
#include "tap.h"

static void test_addr(void)
{
    struct sockaddr_un sa;
    socklen_t len = 0;
    char longp[200];

    OK(sdnotify_parse_addr("/run/systemd/notify", &sa, &len) == 0 &&
           strcmp(sa.sun_path, "/run/systemd/notify") == 0 &&
           len == offsetof(struct sockaddr_un, sun_path) + 20,
       "path address: copied, length counts the NUL");
    OK(sdnotify_parse_addr("@sd-notify/x", &sa, &len) == 0 &&
           sa.sun_path[0] == '\0' &&
           memcmp(sa.sun_path + 1, "sd-notify/x", 11) == 0 &&
           len == offsetof(struct sockaddr_un, sun_path) + 12,
       "abstract address: leading NUL, length is exactly the name + 1");
    OK(sdnotify_parse_addr("", &sa, &len) < 0, "empty address refused");
    OK(sdnotify_parse_addr("@", &sa, &len) < 0, "bare '@' refused");
    OK(sdnotify_parse_addr("relative/sock", &sa, &len) < 0,
       "relative path refused");
    OK(sdnotify_parse_addr(NULL, &sa, &len) < 0, "NULL refused");
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    OK(sdnotify_parse_addr(longp, &sa, &len) < 0, "path over sun_path refused");
    longp[0] = '@';
    OK(sdnotify_parse_addr(longp, &sa, &len) < 0,
       "abstract name over sun_path refused");
    longp[108] = '\0'; /* '@' + 107 bytes: exactly fills sun_path */
    OK(sdnotify_parse_addr(longp, &sa, &len) == 0 &&
           len == offsetof(struct sockaddr_un, sun_path) + 108,
       "abstract name of 107 bytes fits exactly");
}

static void test_watchdog(void)
{
    uint64_t us = 7;

    OK(sdnotify_parse_watchdog(NULL, NULL, 42, &us) == 0 && us == 0,
       "no WATCHDOG_USEC: off");
    OK(sdnotify_parse_watchdog("3000000", NULL, 42, &us) == 0 && us == 3000000,
       "WATCHDOG_USEC without WATCHDOG_PID: for us");
    OK(sdnotify_parse_watchdog("3000000", "42", 42, &us) == 0 && us == 3000000,
       "WATCHDOG_PID = self: for us");
    OK(sdnotify_parse_watchdog("3000000", "43", 42, &us) == 0 && us == 0,
       "WATCHDOG_PID of another process: off");
    OK(sdnotify_parse_watchdog("0", NULL, 42, &us) < 0, "0 refused");
    OK(sdnotify_parse_watchdog("12x", NULL, 42, &us) < 0, "junk refused");
    OK(sdnotify_parse_watchdog("-5", NULL, 42, &us) < 0, "negative refused");
    OK(sdnotify_parse_watchdog("99999999999999999999999", NULL, 42, &us) < 0,
       "overflow refused");
    OK(sdnotify_parse_watchdog("1000", "x", 42, &us) < 0,
       "malformed WATCHDOG_PID refused");
}

static void test_listen(void)
{
    int n = 9;

    OK(sdnotify_parse_listen(NULL, NULL, 42, &n) == 0 && n == 0,
       "no LISTEN_*: nothing passed");
    OK(sdnotify_parse_listen("1", "42", 42, &n) == 0 && n == 1,
       "LISTEN_FDS=1 for self");
    OK(sdnotify_parse_listen("2", "42", 42, &n) == 0 && n == 2,
       "LISTEN_FDS=2 counted (sdnotify_listen_fd refuses it)");
    OK(sdnotify_parse_listen("1", "41", 42, &n) == 0 && n == 0,
       "LISTEN_PID of another process: not ours");
    OK(sdnotify_parse_listen("0", "42", 42, &n) == 0 && n == 0,
       "LISTEN_FDS=0: nothing passed");
    OK(sdnotify_parse_listen("1", NULL, 42, &n) < 0,
       "LISTEN_FDS without LISTEN_PID refused");
    OK(sdnotify_parse_listen("x", "42", 42, &n) < 0, "junk LISTEN_FDS refused");
    OK(sdnotify_parse_listen("99999", "42", 42, &n) < 0,
       "absurd LISTEN_FDS refused");
}

/* Receive one datagram (1 s at most) into buf; its length, or -1. */
static ssize_t recv_one(int fd, char *buf, size_t cap)
{
    struct timeval tv = {1, 0};
    ssize_t n;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = recv(fd, buf, cap - 1, 0);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

static void test_wire(int abstract)
{
    struct sockaddr_un sa;
    socklen_t len;
    char name[120], buf[2048], env[120], longst[3000];
    const char *kind = abstract ? "abstract" : "path";
    unsigned long long mono = 0;
    struct timespec ts;
    int fd;

    if (abstract)
        snprintf(env, sizeof(env), "@resild-test-%ld", (long)getpid());
    else
        snprintf(env, sizeof(env), "/tmp/resild-sdn-%ld.sock", (long)getpid());
    snprintf(name, sizeof(name), "%s", env);
    if (!OK(sdnotify_parse_addr(env, &sa, &len) == 0, "%s: parse", kind))
        return;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (!abstract)
        unlink(name);
    if (!OK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, len) == 0,
            "%s: bind the receiving socket", kind))
        return;
    setenv("NOTIFY_SOCKET", env, 1);
    setenv("WATCHDOG_USEC", "2000000", 1);
    unsetenv("WATCHDOG_PID");
    OK(sdnotify_init() == 1 && sdnotify_enabled() &&
           sdnotify_watchdog_usec() == 2000000,
       "%s: init reads NOTIFY_SOCKET and WATCHDOG_USEC", kind);
    OK(!getenv("NOTIFY_SOCKET") && !getenv("WATCHDOG_USEC"),
       "%s: and unsets them", kind);

    OK(sdnotify_ready("serving x\nsecond line") == 0 &&
           recv_one(fd, buf, sizeof(buf)) > 0 &&
           strcmp(buf, "READY=1\nSTATUS=serving x second line") == 0,
       "%s: READY=1 with one STATUS line", kind);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    OK(sdnotify_reloading("reloading") == 0 &&
           recv_one(fd, buf, sizeof(buf)) > 0 &&
           sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
                  &mono) == 1 &&
           mono >= (unsigned long long)ts.tv_sec * 1000000ULL &&
           mono < (unsigned long long)(ts.tv_sec + 60) * 1000000ULL,
       "%s: RELOADING=1 + MONOTONIC_USEC of CLOCK_MONOTONIC", kind);
    OK(sdnotify_stopping(NULL) == 0 && recv_one(fd, buf, sizeof(buf)) > 0 &&
           strcmp(buf, "STOPPING=1") == 0,
       "%s: STOPPING=1 alone", kind);
    OK(sdnotify_watchdog() == 0 && recv_one(fd, buf, sizeof(buf)) > 0 &&
           strcmp(buf, "WATCHDOG=1") == 0,
       "%s: WATCHDOG=1", kind);
    memset(longst, 'x', sizeof(longst) - 1);
    longst[sizeof(longst) - 1] = '\0';
    OK(sdnotify_status(longst) == 0 &&
           recv_one(fd, buf, sizeof(buf)) == SDNOTIFY_MAX_BYTES - 1 &&
           strncmp(buf, "STATUS=xxx", 10) == 0,
       "%s: a long STATUS is cut to SDNOTIFY_MAX_BYTES", kind);
    close(fd);
    if (!abstract)
        unlink(name);
    OK(sdnotify_watchdog() == -ECONNREFUSED || sdnotify_watchdog() == -ENOENT,
       "%s: a send nobody receives fails with its errno, never blocks", kind);
}

int main(void)
{
    test_addr();
    test_watchdog();
    test_listen();
    test_wire(0);
    test_wire(1);
    return tap_done();
}
