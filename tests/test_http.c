/*
 * test_http.c - the /metrics HTTP listener (daemon/http.c) on its own loop
 * in a thread, with stub render callbacks: the request-head parser on a
 * table of heads (whole and byte by byte), start-up refusals, then curl
 * and raw sockets against a TCP listener on 127.0.0.1 (a free port) and a
 * Unix one: GET, HEAD, 404, 405, 400, 505, oversized head, slowloris,
 * max_conns, a burst of connections, a client that never reads a 16 MiB
 * page while others are served, and the stop.
 *
 * No assertion on timing: short timeouts are configured and the test
 * waits for their effect under a generous deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "prom.h"
#include "tap.h"

#define PYTHON "/usr/bin/python3"
#define BIG_BYTES (16u << 20) /* the page a client never reads */
#define WAIT_MS 10000         /* generous deadline for any effect */
#define REQUEST_TIMEOUT_MS 1000
#define WRITE_TIMEOUT_MS 3000
#define MAX_CONNS 16

static char tmpdir[] = "/tmp/resild-test-http.XXXXXX";
static char unix_path[128];

/* Everything below up to the tests is touched by the loop thread only,
 * except after it has been joined. */
static uv_loop_t loop;
static uv_async_t stop_async;
static struct http tcp_srv, unix_srv;
static struct prom_buf page;
static char *big;
static int renders;
static int render_fail;

static const char *render_small(void *ctx, size_t *len)
{
    (void)ctx;
    renders++;
    if (__atomic_load_n(&render_fail, __ATOMIC_SEQ_CST))
        return NULL;
    *len = page.len;
    return page.data;
}

static const char *render_big(void *ctx, size_t *len)
{
    (void)ctx;
    renders++;
    *len = BIG_BYTES;
    return big;
}

static void on_stop(uv_async_t *a)
{
    http_stop(&tcp_srv);
    http_stop(&unix_srv);
    uv_close((uv_handle_t *)a, NULL);
}

static void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the parser ---- */

static const struct {
    const char *head;
    int want; /* > 0: complete, its length; 0: more; < 0: -status */
    int method;
    const char *path;
} heads[] = {
    {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 34, HTTP_GET, "/metrics"},
    {"GET /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 25, HTTP_GET,
     "/metrics"},
    {"HEAD /metrics HTTP/1.0\n\n", 24, HTTP_HEAD, "/metrics"},
    {"\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\n\r\n", 33, HTTP_GET, "/metrics"},
    {"GET http://h:9/metrics HTTP/1.1\r\n\r\n", 35, HTTP_GET, "/metrics"},
    {"POST /metrics HTTP/1.1\r\nA:\r\n\r\n", 30, HTTP_OTHER, "/metrics"},
    {"GET / HTTP/1.1\r\nX-Y: a\tb \x80\r\n\r\n", 30, HTTP_GET, "/"},
    {"GET /metrics HTTP/1.1\r\nHost: x\r\n", 0, 0, NULL},
    {"GET /metrics HTTP/1.1\r", 0, 0, NULL},
    {"GET /metr", 0, 0, NULL},
    {"hello\r\n\r\n", -400, 0, NULL},
    {"GET /metrics\r\n\r\n", -400, 0, NULL},
    {"GET  /metrics HTTP/1.1\r\n\r\n", -400, 0, NULL},
    {"GET metrics HTTP/1.1\r\n\r\n", -400, 0, NULL},
    {"GET * HTTP/1.1\r\n\r\n", -400, 0, NULL},
    {"GET http://host HTTP/1.1\r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/1.1 \r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/1.10\r\n\r\n", -400, 0, NULL},
    {"GET /metrics http/1.1\r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/2.0\r\n\r\n", -505, 0, NULL},
    {"GET /metrics HTTP/0.9\r\n\r\n", -505, 0, NULL},
    {"GET /metrics HTTP/1.1\r\nHost x\r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/1.1\r\nA: b\r\n c\r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n", -400, 0, NULL},
    {"GET /metrics HTTP/1.1\r\nA: \x01\r\n", -400, 0, NULL},
    {"\x16\x03\x01\x02", -400, 0, NULL},
    {"GE(T", -400, 0, NULL},
    {"GET /met\x7f", -400, 0, NULL},
};

static void test_parser(void)
{
    size_t i, k;

    for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        const char *h = heads[i].head;
        size_t len = strlen(h);
        struct http_req r, rb;
        int rc, rcb = 0;

        memset(&r, 0, sizeof(r));
        rc = http_parse_head(&r, h, len);
        /* Byte by byte: the same answer, at the latest when all is in. */
        memset(&rb, 0, sizeof(rb));
        for (k = 1; k <= len && rcb == 0; k++)
            rcb = http_parse_head(&rb, h, k);
        OK(rc == heads[i].want && rcb == rc &&
               (rc <= 0 ||
                ((int)r.method == heads[i].method &&
                 r.path_len == strlen(heads[i].path) &&
                 !memcmp(h + r.path_off, heads[i].path, r.path_len))),
           "head %zu: %d (whole %d, byte by byte %d)", i, heads[i].want, rc,
           rcb);
    }
}

/* ---- clients ---- */

static int dial_tcp(int port)
{
    struct sockaddr_in sa = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {WAIT_MS / 1000, 0};

    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int dial_unix(const char *path)
{
    struct sockaddr_un sa = {0};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {WAIT_MS / 1000, 0};

    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read until EOF (or error, or the receive timeout) into out; returns the
 * bytes read, out NUL-terminated.  *eof set if EOF or reset was seen. */
static size_t read_all(int fd, char *out, size_t cap, int *eof)
{
    size_t n = 0;

    *eof = 0;
    for (;;) {
        ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
        if (r > 0) {
            n += (size_t)r;
            if (n == cap - 1)
                break;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        *eof = r == 0 || errno == ECONNRESET;
        break;
    }
    out[n] = '\0';
    return n;
}

/* One request on a fresh TCP connection; the whole answer into out.
 * Returns the status code, or -1. */
static int request(const char *req, size_t reqlen, char *out, size_t cap)
{
    int fd = dial_tcp(tcp_srv.port), eof, status = -1;

    out[0] = '\0';
    if (fd < 0)
        return -1;
    if (send(fd, req, reqlen, MSG_NOSIGNAL) == (ssize_t)reqlen) {
        read_all(fd, out, cap, &eof);
        if (eof && sscanf(out, "HTTP/1.1 %d ", &status) != 1)
            status = -1;
    }
    close(fd);
    return status;
}

static int request_s(const char *req, char *out, size_t cap)
{
    return request(req, strlen(req), out, cap);
}

/* Run cmd; its stdout into out; returns the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    size_t n;
    int st;

    if (!p)
        return -1;
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- tests against the running listeners ---- */

static void test_curl(void)
{
    static char out[1 << 16];
    char cmd[512];
    const char *body;

    snprintf(cmd, sizeof(cmd),
             "curl -sS -i --max-time 10 http://127.0.0.1:%d/metrics",
             tcp_srv.port);
    IS(run(cmd, out, sizeof(out)), 0, "curl GET /metrics over TCP");
    body = strstr(out, "\r\n\r\n");
    OK(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17) &&
           strstr(out, "\r\nContent-Type: text/plain; version=0.0.4; "
                       "charset=utf-8\r\n") &&
           strstr(out, "\r\nConnection: close\r\n") && body &&
           !strcmp(body + 4, page.data),
       "200, the exposition content type, Connection: close, the page");
    snprintf(cmd, sizeof(cmd),
             "curl -sSf --max-time 10 http://127.0.0.1:%d/metrics | " PYTHON
             " tests/promcheck.py -",
             tcp_srv.port);
    IS(run(cmd, out, sizeof(out)), 0, "the body passes promcheck.py");
    snprintf(cmd, sizeof(cmd),
             "curl -sS -I --max-time 10 http://127.0.0.1:%d/metrics",
             tcp_srv.port);
    IS(run(cmd, out, sizeof(out)), 0, "curl HEAD");
    {
        char want[64];
        snprintf(want, sizeof(want), "\r\nContent-Length: %zu\r\n", page.len);
        body = strstr(out, "\r\n\r\n");
        OK(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17) && strstr(out, want) &&
               body && body[4] == '\0',
           "HEAD: 200, the GET's Content-Length, no body");
    }
    snprintf(cmd, sizeof(cmd),
             "curl -sS -o /dev/null -w '%%{http_code}' --max-time 10 "
             "http://127.0.0.1:%d/other",
             tcp_srv.port);
    run(cmd, out, sizeof(out));
    OK(!strcmp(out, "404"), "curl /other: 404 (%s)", out);
    snprintf(cmd, sizeof(cmd),
             "curl -sS -i -X POST -d x=1 --max-time 10 "
             "http://127.0.0.1:%d/metrics",
             tcp_srv.port);
    run(cmd, out, sizeof(out));
    OK(!strncmp(out, "HTTP/1.1 405 ", 13) &&
           strstr(out, "\r\nAllow: GET, HEAD\r\n"),
       "curl POST with a body: 405 with Allow");
}

static void test_raw(void)
{
    static char out[1 << 16];
    static char huge[HTTP_MAX_HEAD_BYTES + 1024];
    const char *body;
    size_t n;

    IS(request_s("GET /metrics HTTP/1.0\n\n", out, sizeof(out)), 200,
       "HTTP/1.0 with bare LF: 200");
    IS(request_s("GET /metrics?name[]=x HTTP/1.1\r\nHost: a\r\n\r\n", out,
                 sizeof(out)),
       200, "a query string is ignored: 200");
    IS(request_s("GET /metrics/ HTTP/1.1\r\n\r\n", out, sizeof(out)), 404,
       "/metrics/: 404");
    IS(request_s("DELETE /metrics HTTP/1.1\r\n\r\n", out, sizeof(out)), 405,
       "DELETE: 405");
    IS(request_s("hello there\r\n\r\n", out, sizeof(out)), 400, "garbage: 400");
    IS(request("\x16\x03\x01\x00\xa5\x01\x00\x00", 8, out, sizeof(out)), 400,
       "a TLS ClientHello: 400 at once");
    IS(request_s("GET /metrics HTTP/2.0\r\n\r\n", out, sizeof(out)), 505,
       "HTTP/2.0: 505");
    /* Pipelined: one answer, then a clean close (no reset losing it). */
    IS(request_s("GET /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
                 out, sizeof(out)),
       200, "two pipelined requests: the first answered");
    body = strstr(out, "\r\n\r\n");
    OK(body && !strcmp(body + 4, page.data), "... with exactly one page");

    /* A head over HTTP_MAX_HEAD_BYTES: 431, whatever follows. */
    n = (size_t)snprintf(huge, sizeof(huge), "GET /metrics HTTP/1.1\r\nX: ");
    memset(huge + n, 'a', sizeof(huge) - n);
    IS(request(huge, sizeof(huge), out, sizeof(out)), 431,
       "a head of 9 KiB: 431");
    n = (size_t)snprintf(huge, sizeof(huge), "GET /metrics HTTP/1.1\r\n");
    memset(huge + n, 'a', HTTP_MAX_HEAD_BYTES - n - 4);
    memcpy(huge + HTTP_MAX_HEAD_BYTES - 4 - 3, ": b\r\n\r\n", 7);
    IS(request(huge, HTTP_MAX_HEAD_BYTES, out, sizeof(out)), 200,
       "a head of exactly HTTP_MAX_HEAD_BYTES: 200");

    __atomic_store_n(&render_fail, 1, __ATOMIC_SEQ_CST);
    IS(request_s("GET /metrics HTTP/1.1\r\n\r\n", out, sizeof(out)), 500,
       "render fails: 500");
    __atomic_store_n(&render_fail, 0, __ATOMIC_SEQ_CST);
}

/* Trickle a head one byte per poll timeout: the answer is 408 when the
 * request timeout (from accept, not from the last byte) passes. */
static void test_slowloris(void)
{
    static char drip[4096];
    char out[1024];
    int fd = dial_tcp(tcp_srv.port), eof = 0, status = -1;
    uint64_t t0 = now_ms();
    size_t i = 0, n;

    n = (size_t)snprintf(drip, sizeof(drip), "GET /metrics HTTP/1.1\r\nX: ");
    memset(drip + n, 'b', sizeof(drip) - n);
    while (now_ms() - t0 < WAIT_MS) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 20) > 0)
            break;
        if (i < sizeof(drip))
            (void)!send(fd, drip + i++, 1, MSG_NOSIGNAL);
    }
    read_all(fd, out, sizeof(out), &eof);
    sscanf(out, "HTTP/1.1 %d ", &status);
    close(fd);
    OK(status == 408 && eof && i < sizeof(drip),
       "slowloris (%zu bytes dripped): 408 and closed", i);

    fd = dial_tcp(tcp_srv.port);
    read_all(fd, out, sizeof(out), &eof);
    close(fd);
    OK(!strncmp(out, "HTTP/1.1 408 ", 13) && eof,
       "a connection that sends nothing: 408 and closed");
}

/* max_conns idle connections: the next one gets a 503 and the listener
 * serves again once they are gone. */
static void test_max_conns(void)
{
    int fds[MAX_CONNS], fd, i, eof, status = -1;
    char out[1024];
    uint64_t t0;

    for (i = 0; i < MAX_CONNS; i++)
        fds[i] = dial_tcp(tcp_srv.port);
    fd = dial_tcp(tcp_srv.port);
    read_all(fd, out, sizeof(out), &eof);
    close(fd);
    OK(!strncmp(out, "HTTP/1.1 503 ", 13) && eof,
       "connection %d of max_conns %d: 503 and closed", MAX_CONNS + 1,
       MAX_CONNS);
    for (i = 0; i < MAX_CONNS; i++)
        close(fds[i]);
    /* The closes reach the loop at some point: retry until served. */
    for (t0 = now_ms(); now_ms() - t0 < WAIT_MS;)
        if ((status = request_s("GET /metrics HTTP/1.1\r\n\r\n", out,
                                sizeof(out))) == 200)
            break;
    IS(status, 200, "served again once they closed");
}

/* 48 clients connect and ask at once: each gets a whole 200 or a 503,
 * none hangs. */
static void test_burst(void)
{
    enum { N = 48 };
    int fds[N], i, ok = 0, busy = 0, other = 0, eof;
    static char out[1 << 16];
    static const char req[] = "GET /metrics HTTP/1.1\r\n\r\n";

    for (i = 0; i < N; i++) {
        fds[i] = dial_tcp(tcp_srv.port);
        (void)!send(fds[i], req, sizeof(req) - 1, MSG_NOSIGNAL);
    }
    for (i = 0; i < N; i++) {
        const char *body;
        read_all(fds[i], out, sizeof(out), &eof);
        close(fds[i]);
        body = strstr(out, "\r\n\r\n");
        if (!strncmp(out, "HTTP/1.1 200 ", 13) && eof && body &&
            !strcmp(body + 4, page.data))
            ok++;
        else if (!strncmp(out, "HTTP/1.1 503 ", 13) && eof)
            busy++;
        else
            other++;
    }
    OK(other == 0 && ok >= 1 && ok + busy == N,
       "burst of %d: %d whole pages, %d refused, %d other", N, ok, busy, other);
}

/* A client that asks for a 16 MiB page and never reads: others are served
 * meanwhile, and it is closed once write_timeout_ms passes. */
static void test_not_reading(void)
{
    static const char req[] = "GET /metrics HTTP/1.1\r\n\r\n";
    static char out[1 << 16];
    int small = 4096, fd = dial_unix(unix_path), eof = 0, status;
    uint64_t t0,
        before = __atomic_load_n(&unix_srv.stats.timeouts, __ATOMIC_SEQ_CST);
    size_t got = 0;

    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    OK(fd >= 0 && send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) > 0,
       "non-reading client asks for %u bytes", BIG_BYTES);
    status = request_s("GET /metrics HTTP/1.1\r\n\r\n", out, sizeof(out));
    IS(status, 200, "another client is served while it does not read");
    for (t0 = now_ms(); now_ms() - t0 < WAIT_MS;) {
        if (__atomic_load_n(&unix_srv.stats.timeouts, __ATOMIC_SEQ_CST) >
            before)
            break;
        poll(NULL, 0, 10);
    }
    OK(__atomic_load_n(&unix_srv.stats.timeouts, __ATOMIC_SEQ_CST) > before,
       "its write timed out");
    for (;;) { /* now read what is left: a cut page, then EOF */
        ssize_t r = recv(fd, out, sizeof(out), 0);
        if (r <= 0) {
            eof = r == 0 || errno == ECONNRESET;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    OK(eof && got < BIG_BYTES, "it was closed: %zu of %u bytes reached it", got,
       BIG_BYTES);
}

static void test_unix_curl(void)
{
    static char out[1 << 16];
    char cmd[512];
    struct stat st;

    OK(stat(unix_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
           (st.st_mode & 0777) == 0600,
       "Unix listener born with the mode asked (0600)");
    snprintf(cmd, sizeof(cmd),
             "curl -sS -o /dev/null -w '%%{http_code} %%{size_download}' "
             "--max-time 20 --unix-socket %s http://localhost/metrics",
             unix_path);
    IS(run(cmd, out, sizeof(out)), 0, "curl over the Unix socket");
    {
        char want[64];
        snprintf(want, sizeof(want), "200 %u", BIG_BYTES);
        OK(!strcmp(out, want), "200 and the whole 16 MiB page (%s)", out);
    }
}

/* Start-up refusals, on a scratch loop: nothing is left open. */
static void test_start_errors(void)
{
    uv_loop_t l;
    struct http h;
    char err[256], path[160];
    int fd, rc;

    uv_loop_init(&l);
    static const char *bad[] = {"localhost:9100",  "127.0.0.1", "127.0.0.1:x",
                                "127.0.0.1:65536", "rel/path",  NULL};
    for (int i = 0; bad[i]; i++) {
        rc = http_start(&h, &l, bad[i], NULL, render_small, NULL, err,
                        sizeof(err));
        OK(rc < 0 && strstr(err, "must be A.B.C.D:PORT"),
           "listen \"%s\" refused: %s", bad[i], err);
        http_stop(&h);
    }
    snprintf(path, sizeof(path), "%s/file", tmpdir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    close(fd);
    rc = http_start(&h, &l, path, NULL, render_small, NULL, err, sizeof(err));
    OK(rc < 0 && strstr(err, "not a socket") && access(path, F_OK) == 0,
       "a regular file at the path: refused, untouched (%s)", err);
    unlink(path);
    rc = http_start(&h, &l, unix_path, NULL, render_small, NULL, err,
                    sizeof(err));
    OK(rc < 0 && strstr(err, "already listening"),
       "a live listener at the path: refused (%s)", err);
    {
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", tcp_srv.port);
        rc = http_start(&h, &l, addr, NULL, render_small, NULL, err,
                        sizeof(err));
        OK(rc < 0 && strstr(err, "in use"), "a port in use: refused (%s)", err);
    }
    OK(uv_loop_close(&l) == 0, "no handle left on the scratch loop");
}

int main(void)
{
    static const double le[] = {1, 5};
    uint64_t counts[] = {1, 2, 3};
    struct prom_hist hist = {le, 2, counts, 20};
    struct prom_label l = {"key", "venue \"x\"\n"};
    struct http_conf tcp_conf = {MAX_CONNS, REQUEST_TIMEOUT_MS,
                                 WRITE_TIMEOUT_MS, 0};
    struct http_conf unix_conf = {4, REQUEST_TIMEOUT_MS, WRITE_TIMEOUT_MS,
                                  0600};
    char err[256];
    pthread_t th;
    int rc, fd;
    size_t i;

    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(tmpdir))
        return perror("mkdtemp"), 1;
    snprintf(unix_path, sizeof(unix_path), "%s/metrics.sock", tmpdir);
    test_parser();

    prom_init(&page, 1 << 20);
    prom_family(&page, "resild_test_total", PROM_COUNTER, "A test.");
    prom_sample_u64(&page, &l, 1, 7);
    prom_family(&page, "resild_test_ms", PROM_HISTOGRAM, "A histogram.");
    prom_histogram(&page, &l, 1, &hist);
    OK(prom_error(&page) == 0, "stub page rendered");
    big = malloc(BIG_BYTES);
    for (i = 0; i < BIG_BYTES; i += 64) { /* comment lines: a valid page */
        memset(big + i, 'p', 64);
        memcpy(big + i, "# ", 2);
        big[i + 63] = '\n';
    }

    /* A stale socket at the Unix path is replaced. */
    {
        struct sockaddr_un sa = {0};
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, unix_path);
        OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
           "a stale socket left at the Unix path");
        close(fd);
    }
    uv_loop_init(&loop);
    rc = http_start(&tcp_srv, &loop, "127.0.0.1:0", &tcp_conf, render_small,
                    NULL, err, sizeof(err));
    OK(rc == 0 && tcp_srv.port > 0, "TCP listener on 127.0.0.1:%d %s",
       tcp_srv.port, rc ? err : "");
    rc = http_start(&unix_srv, &loop, unix_path, &unix_conf, render_big, NULL,
                    err, sizeof(err));
    OK(rc == 0, "Unix listener over a stale socket %s", rc ? err : "");
    if (tcp_srv.port <= 0 || rc != 0)
        return tap_done();
    test_start_errors();
    uv_async_init(&loop, &stop_async, on_stop);
    pthread_create(&th, NULL, loop_main, NULL);

    test_curl();
    test_raw();
    test_slowloris();
    test_max_conns();
    test_burst();
    test_unix_curl();
    test_not_reading();

    uv_async_send(&stop_async);
    pthread_join(th, NULL);
    OK(uv_loop_close(&loop) == 0, "stopped: every handle closed");
    OK(access(unix_path, F_OK) < 0, "the Unix socket path is unlinked");
    fd = dial_tcp(tcp_srv.port);
    OK(fd < 0, "the TCP port is closed");
    if (fd >= 0)
        close(fd);
    OK(renders > 0 && tcp_srv.stats.ok > 0 && tcp_srv.stats.refused > 0 &&
           tcp_srv.stats.bad > 0 && tcp_srv.stats.timeouts > 0,
       "stats: %d renders, %llu ok, %llu refused, %llu bad, %llu timeouts",
       renders, (unsigned long long)tcp_srv.stats.ok,
       (unsigned long long)tcp_srv.stats.refused,
       (unsigned long long)tcp_srv.stats.bad,
       (unsigned long long)tcp_srv.stats.timeouts);
    prom_free(&page);
    free(big);
    rmdir(tmpdir);
    return tap_done();
}
