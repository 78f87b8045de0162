/*
 * sdnotify.c - the systemd notify datagram and socket activation (see
 * sdnotify.h).
 *
 * Must not: block (the send is MSG_DONTWAIT), link libsystemd, or touch an
 * fd it was not passed.
 */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static struct {
    int fd; /* datagram socket, -1 when notifying is off */
    struct sockaddr_un addr;
    socklen_t addr_len;
    uint64_t watchdog_usec; /* 0: off */
    int last_err;           /* last failed send's errno: log each once */
} sd = {.fd = -1};

/* A decimal integer in [1, max] filling all of s; 0, or -1. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (max - (uint64_t)(*s - '0')) / 10)
            return -1; /* would pass max */
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v == 0)
        return -1;
    *out = v;
    return 0;
}

/* A pid variable: set means "for that process only". */
static int is_for_self(const char *pid, pid_t self, int *mine)
{
    uint64_t v;

    if (!pid) {
        *mine = 1;
        return 0;
    }
    if (parse_u64(pid, (uint64_t)INT32_MAX, &v) < 0)
        return -1;
    *mine = (pid_t)v == self;
    return 0;
}

int sdnotify_parse_addr(const char *env, struct sockaddr_un *sa, socklen_t *len)
{
    size_t n;

    if (!env)
        return -1;
    n = strlen(env);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (n >= 2 && env[0] == '@') {
        if (n > sizeof(sa->sun_path)) /* '@' becomes the leading NUL */
            return -1;
        memcpy(sa->sun_path + 1, env + 1, n - 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return 0;
    }
    if (n < 2 || env[0] != '/' || n >= sizeof(sa->sun_path))
        return -1;
    memcpy(sa->sun_path, env, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int sdnotify_parse_watchdog(const char *usec, const char *pid, pid_t self,
                            uint64_t *usec_out)
{
    uint64_t v;
    int mine;

    *usec_out = 0;
    if (!usec)
        return pid && is_for_self(pid, self, &mine) < 0 ? -1 : 0;
    /* Bounded so that usec / 2000 fits a uv timer and nothing overflows:
     * about 292 years. */
    if (parse_u64(usec, UINT64_MAX / 4, &v) < 0 ||
        is_for_self(pid, self, &mine) < 0)
        return -1;
    *usec_out = mine ? v : 0;
    return 0;
}

int sdnotify_parse_listen(const char *fds, const char *pid, pid_t self, int *n)
{
    uint64_t v;
    int mine;

    *n = 0;
    if (!fds && !pid)
        return 0;
    if (!fds || !pid || is_for_self(pid, self, &mine) < 0)
        return -1;
    if (!mine || strcmp(fds, "0") == 0)
        return 0; /* !mine: inherited from a parent that was activated */
    if (parse_u64(fds, 1024, &v) < 0)
        return -1;
    *n = (int)v;
    return 0;
}

int sdnotify_init(void)
{
    const char *env = getenv("NOTIFY_SOCKET");
    const char *wd = getenv("WATCHDOG_USEC");
    const char *wd_pid = getenv("WATCHDOG_PID");
    int rc = 0;

    if (sd.fd >= 0) /* called again (tests): start over */
        close(sd.fd);
    sd.fd = -1;
    sd.last_err = 0;
    if (sdnotify_parse_watchdog(wd, wd_pid, getpid(), &sd.watchdog_usec) < 0) {
        log_msg(LOG_WARN,
                "systemd: ignoring malformed WATCHDOG_USEC/WATCHDOG_PID "
                "(%s/%s)",
                wd ? wd : "-", wd_pid ? wd_pid : "-");
        sd.watchdog_usec = 0;
    }
    if (env) {
        if (sdnotify_parse_addr(env, &sd.addr, &sd.addr_len) < 0) {
            log_msg(LOG_ERR,
                    "systemd: NOTIFY_SOCKET is not an absolute path or "
                    "@abstract name; not notifying");
            rc = -1;
        } else if ((sd.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) <
                   0) {
            log_msg(LOG_ERR, "systemd: notify socket: %s; not notifying",
                    strerror(errno));
            rc = -1;
        } else {
            rc = 1;
        }
    }
    if (sd.fd < 0)
        sd.watchdog_usec = 0; /* nobody to ping */
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    return rc;
}

int sdnotify_enabled(void)
{
    return sd.fd >= 0;
}

uint64_t sdnotify_watchdog_usec(void)
{
    return sd.watchdog_usec;
}

int sdnotify_send(const char *text)
{
    ssize_t n;
    size_t len = strlen(text);

    if (sd.fd < 0)
        return 0;
    n = sendto(sd.fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL,
               (const struct sockaddr *)&sd.addr, sd.addr_len);
    if (n == (ssize_t)len) {
        sd.last_err = 0;
        return 0;
    }
    if (n >= 0)
        errno = EMSGSIZE; /* a datagram is all or nothing; say so */
    if (errno != sd.last_err)
        log_msg(LOG_WARN, "systemd: notify send failed: %s", strerror(errno));
    sd.last_err = errno;
    return -errno;
}

/* head, then "\nSTATUS=" + status with newlines flattened, cut to fit. */
static int send_with_status(const char *head, const char *status)
{
    char buf[SDNOTIFY_MAX_BYTES];
    size_t n, i;

    n = (size_t)snprintf(buf, sizeof(buf), "%s", head);
    if (status && n + 8 < sizeof(buf)) {
        memcpy(buf + n, n ? "\nSTATUS=" : "STATUS=", n ? 8 : 7);
        n += n ? 8 : 7;
        for (i = 0; status[i] && n + 1 < sizeof(buf); i++)
            buf[n++] = status[i] == '\n' ? ' ' : status[i];
        buf[n] = '\0';
    }
    return sdnotify_send(buf);
}

int sdnotify_ready(const char *status)
{
    return send_with_status("READY=1", status);
}

int sdnotify_reloading(const char *status)
{
    struct timespec ts;
    char head[64];

    /* systemd compares this with its own CLOCK_MONOTONIC: the real clock,
     * not the loop's cached one. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL +
                 (unsigned long long)ts.tv_nsec / 1000ULL);
    return send_with_status(head, status);
}

int sdnotify_stopping(const char *status)
{
    return send_with_status("STOPPING=1", status);
}

int sdnotify_status(const char *status)
{
    return send_with_status("", status ? status : "");
}

int sdnotify_watchdog(void)
{
    return sdnotify_send("WATCHDOG=1");
}

int sdnotify_listen_fd(char *err, size_t err_cap)
{
    const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
    const int fd = SDNOTIFY_LISTEN_FDS_START;
    int n, rc, v;
    socklen_t len;
    struct stat st;

    rc = sdnotify_parse_listen(fds, pid, getpid(), &n);
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
    if (rc < 0) {
        snprintf(err, err_cap, "malformed LISTEN_FDS/LISTEN_PID (%s/%s)",
                 fds ? fds : "-", pid ? pid : "-");
        return -2;
    }
    if (n == 0)
        return -1;
    if (n != 1) {
        snprintf(err, err_cap,
                 "systemd passed %d sockets; resild serves exactly one "
                 "(one ListenStream= in resild.socket)",
                 n);
        return -2;
    }
    len = sizeof(v);
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) < 0 || v != AF_UNIX ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || v != 1) {
        snprintf(err, err_cap,
                 "the fd systemd passed is not a listening AF_UNIX stream "
                 "socket (ListenStream=/path in resild.socket)");
        return -2;
    }
    if ((v = fcntl(fd, F_GETFL)) < 0 ||
        fcntl(fd, F_SETFL, v | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, err_cap, "passed socket: fcntl: %s", strerror(errno));
        return -2;
    }
    return fd;
}
