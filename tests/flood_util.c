/*
 * flood_util.c - connect/close flooders and a pinging client (contract in
 * flood_util.h).  Test-only code: it may block and allocate.
 */
#include "flood_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t flood_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The child: connect and close until end_ns, then write the count. */
static void flooder(const char *sock, uint64_t end_ns, int out)
{
    struct sockaddr_un sa;
    long long n = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    while (flood_now_ns() < end_ns) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            n++;
        close(fd);
    }
    (void)!write(out, &n, sizeof(n));
    _exit(0);
}

int flood_start(struct flood *f, const char *sock, int nprocs, int duration_ms)
{
    uint64_t end = flood_now_ns() + (uint64_t)duration_ms * 1000000u;
    int i;

    memset(f, 0, sizeof(*f));
    if (nprocs < 1 || nprocs > FLOOD_MAX_PROCS)
        return -1;
    for (i = 0; i < nprocs; i++) {
        int p[2];
        if (pipe(p) < 0)
            goto fail;
        fflush(NULL);
        f->pid[i] = fork();
        if (f->pid[i] < 0) {
            close(p[0]);
            close(p[1]);
            goto fail;
        }
        if (f->pid[i] == 0) {
            close(p[0]);
            flooder(sock, end, p[1]);
        }
        close(p[1]);
        f->count_fd[i] = p[0];
        f->n++;
    }
    return 0;
fail:
    for (i = 0; i < f->n; i++)
        kill(f->pid[i], SIGKILL);
    flood_wait(f);
    return -1;
}

long long flood_wait(struct flood *f)
{
    long long total = 0;
    int i, bad = 0;

    for (i = 0; i < f->n; i++) {
        long long n = 0;
        if (read(f->count_fd[i], &n, sizeof(n)) != (ssize_t)sizeof(n))
            bad = 1;
        total += n;
        close(f->count_fd[i]);
        while (waitpid(f->pid[i], NULL, 0) < 0 && errno == EINTR)
            ;
    }
    f->n = 0;
    return bad ? -1 : total;
}

size_t flood_pings(resil_t *r, uint64_t end_ns, int deadline_ms, uint64_t *v,
                   size_t cap, size_t *failed)
{
    size_t n = 0;

    *failed = 0;
    while (flood_now_ns() < end_ns) {
        uint64_t t0 = flood_now_ns();
        int rc = resil_ping(r, deadline_ms, NULL, 0, NULL);
        uint64_t dt = flood_now_ns() - t0;

        if (rc != 0)
            (*failed)++;
        if (n < cap)
            v[n] = dt;
        n++;
    }
    return n;
}

long proc_status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t len = strlen(field);
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, len) == 0) {
            kib = strtol(line + len, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

double flood_pct_ms(uint64_t *v, size_t n, unsigned per_mille)
{
    size_t rank;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_u64);
    rank = (n * per_mille + 999) / 1000;
    return (double)v[rank ? rank - 1 : 0] / 1e6;
}
