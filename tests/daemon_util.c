/*
 * daemon_util.c - start, probe and stop a real resild for the integration
 * tests (contract in daemon_util.h).  Test-only code: it may allocate and
 * block, but every wait is bounded so a broken daemon fails a test instead
 * of hanging it.
 */
#include "daemon_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_STEP_MS 10
#define READY_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 10000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *daemon_build_dir(void)
{
    const char *b = getenv("BUILD");

    return b && *b ? b : "build";
}

int daemon_mkdtemp(char *dir, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    int n;

    if (!tmp || !*tmp)
        tmp = "/tmp";
    n = snprintf(dir, cap, "%s/resild-test.XXXXXX", tmp);
    if (n < 0 || (size_t)n >= cap || !mkdtemp(dir))
        return -1;
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int daemon_rmtree(const char *dir)
{
    return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int daemon_wait_ready(const char *path, pid_t pid, int timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    long long end = mono_ms() + timeout_ms;
    int fd, status;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        /* A blocking connect to a not-yet-listening path fails at once
         * (ENOENT / ECONNREFUSED), so this cannot hang. */
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(fd);
            return 0;
        }
        close(fd);
        if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid)
            return -1; /* the daemon died during start-up */
        if (mono_ms() >= end)
            return -1;
        sleep_ms(POLL_STEP_MS);
    }
}

static int spawn(struct test_daemon *d)
{
    char bin[512];
    pid_t pid;
    int fd;

    snprintf(bin, sizeof(bin), "%s/resild", daemon_build_dir());
    if (access(bin, X_OK) < 0) {
        fprintf(stderr, "# daemon_util: %s is not executable\n", bin);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Die with the test: a test killed by its time-out must not leave
         * a daemon behind (a hung one spins on a CPU the next tests need;
         * seven were once found still running an hour later). */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(127); /* the test is already gone */
        fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
        }
        execl(bin, bin, "-s", d->sock, "-c", d->config, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    d->pid = pid;
    if (daemon_wait_ready(d->sock, pid, READY_TIMEOUT_MS) < 0) {
        fprintf(stderr, "# daemon_util: resild did not become ready at %s\n",
                d->sock);
        daemon_dump_log(d);
        if (kill(pid, 0) == 0 || errno != ESRCH) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        d->pid = 0;
        return -1;
    }
    return 0;
}

int daemon_start(struct test_daemon *d, const char *config_json)
{
    FILE *f;

    memset(d, 0, sizeof(*d));
    if (daemon_mkdtemp(d->dir, sizeof(d->dir)) < 0)
        return -1;
    if ((size_t)snprintf(d->sock, sizeof(d->sock), "%s/resild.sock", d->dir) >=
        sizeof(d->sock))
        goto fail;
    snprintf(d->config, sizeof(d->config), "%s/config.json", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/resild.log", d->dir);
    if (!(f = fopen(d->config, "w")))
        goto fail;
    fputs(config_json ? config_json : "{}", f);
    if (fclose(f) != 0)
        goto fail;
    if (spawn(d) < 0)
        goto fail;
    return 0;
fail:
    daemon_rmtree(d->dir);
    d->dir[0] = '\0';
    return -1;
}

int daemon_restart(struct test_daemon *d)
{
    if (d->pid > 0 || !d->dir[0])
        return -1;
    return spawn(d);
}

int daemon_stop(struct test_daemon *d)
{
    long long end;
    int status;
    pid_t w;

    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    end = mono_ms() + STOP_TIMEOUT_MS;
    for (;;) {
        w = waitpid(d->pid, &status, WNOHANG);
        if (w == d->pid)
            break;
        if (w < 0 && errno != EINTR) {
            d->pid = 0;
            return -1;
        }
        if (mono_ms() >= end) {
            fprintf(stderr, "# daemon_util: resild ignored SIGTERM for 10 s; "
                            "killing it\n");
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            break;
        }
        sleep_ms(POLL_STEP_MS);
    }
    d->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

void daemon_cleanup(struct test_daemon *d)
{
    if (d->pid > 0)
        daemon_stop(d);
    if (d->dir[0])
        daemon_rmtree(d->dir);
    d->dir[0] = '\0';
}

void daemon_dump_log(const struct test_daemon *d)
{
    char line[1024];
    FILE *f = fopen(d->log, "r");

    if (!f) {
        fprintf(stderr, "# resild: (no log at %s)\n", d->log);
        return;
    }
    while (fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        fprintf(stderr, "# resild: %s%s", line,
                n && line[n - 1] == '\n' ? "" : "\n");
    }
    fclose(f);
}
