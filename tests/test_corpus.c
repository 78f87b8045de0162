/*
 * test_corpus.c - replay the fuzz corpus (tests/corpus) through the
 * dispatcher, with gcc and without libFuzzer, as part of `make test` (and
 * under ASan/UBSan in `make asan`).
 *
 * It links tests/fuzz_dispatch.c's LLVMFuzzerTestOneInput unchanged and
 * feeds it every file of the corpus in name order, like libFuzzer's replay
 * of a directory.  Each file first runs in a forked child, on a copy of the
 * state the earlier files left: a crash, a sanitizer report or a hang
 * (HANG_S) there is "not ok" naming the file, and the other files still
 * run.  A file that passes is then run again in this process, so later
 * files meet the state it built (keys, permits, parked requests), as they
 * did in the fuzzer.  One TAP point per file.
 *
 * Usage: test_corpus [DIR]   (default tests/corpus, from the repo root)
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

#define HANG_S 10           /* one file taking longer is a hang */
#define FILE_MAX (1u << 20) /* bytes; corpus files are far smaller */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read path into a malloc'ed buffer; *n its size.  NULL on error. */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(FILE_MAX);

    *n = 0;
    if (!f || !buf) {
        if (f)
            fclose(f);
        free(buf);
        return NULL;
    }
    *n = fread(buf, 1, FILE_MAX, f);
    if (ferror(f) || !feof(f)) { /* unreadable or over FILE_MAX */
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    return buf;
}

/* Run one input in a child.  0 when it returned; else a description of
 * how it ended into why (cap bytes). */
static int run_child(const uint8_t *data, size_t n, char *why, size_t cap)
{
    pid_t pid;
    int st;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        snprintf(why, cap, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(HANG_S);
        LLVMFuzzerTestOneInput(data, n);
        _exit(0); /* no atexit, no leak check: the parent owns the state */
    }
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            snprintf(why, cap, "waitpid: %s", strerror(errno));
            return -1;
        }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        snprintf(why, cap, "hang: still running after %d s", HANG_S);
    else if (WIFSIGNALED(st))
        snprintf(why, cap, "crash: signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
    else
        snprintf(why, cap, "exit status %d (sanitizer report on stderr)",
                 WEXITSTATUS(st));
    return -1;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/corpus";
    struct dirent **ents = NULL;
    size_t files = 0, bytes = 0;
    int n, i;

    n = scandir(dir, &ents, NULL, alphasort);
    if (!OK(n > 0, "corpus directory %s is readable", dir)) {
        DIAG("scandir: %s", n < 0 ? strerror(errno) : "empty");
        return tap_done();
    }
    for (i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        char path[4096], why[128];
        uint8_t *data;
        size_t len;

        if (name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        data = slurp(path, &len);
        if (!data) {
            OK(0, "%s: readable, at most %u bytes", path, FILE_MAX);
            continue;
        }
        if (OK(run_child(data, len, why, sizeof(why)) == 0, "%s replays",
               path)) {
            LLVMFuzzerTestOneInput(data, len); /* keep its state */
        } else {
            DIAG("%s: %s", path, why);
        }
        files++;
        bytes += len;
        free(data);
    }
    for (i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    OK(files > 0, "corpus has files");
    DIAG("replayed %zu files, %zu bytes, from %s", files, bytes, dir);
    return tap_done();
}
