/*
 * test_review.c - regressions found by the hostile review of issue 8,
 * client side (libresil against a real resild).
 *
 * Late large answer: a call that times out on a live connection keeps it
 * (issue 8, defect 10), so its answer arrives later and the next call on
 * the handle skips it.  An acquire reads with a 64 KiB bound; a late
 * status page (1000 keys: hundreds of KiB) used to be taken for garbage:
 * RESIL_EPROTO, the connection dropped with every permit of the handle
 * (other threads' included), a back-off, and a fallback decision (an
 * allow, in fail-open mode) for a call the daemon answered in time.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "daemon_util.h"
#include "integ_util.h"
#include "proto.h"
#include "resil.h"
#include "tap.h"

#define NKEYS 1000  /* one full status page */
#define SHORT_MS 20 /* the deadline that runs out (daemon stopped) */
#define LONG_MS 5000

static void test_late_big_answer(void)
{
    struct test_daemon d;
    struct resil_acquire_opts o = {.deadline_ms = LONG_MS};
    struct resil_decision dec, held;
    struct reply rep;
    char key[32], code[24] = "";
    int i, rc, made = 0;
    resil_t *r;

    if (!OK(daemon_start(&d, "{\"policies\": {\"bh\": {\"bulkhead\": "
                             "{\"max_concurrent\": 1}}}}") == 0,
            "late answer: daemon starts"))
        return;
    r = integ_open(d.sock, LONG_MS);
    for (i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "rv.k%04d", i);
        made += resil_acquire(r, key, &o, &dec) == 0 && dec.allow;
    }
    IS(made, NKEYS, "late answer: 1000 keys exist");
    /* A permit the handle holds: a dropped connection would give it up. */
    rc = resil_acquire(r, "bh", &o, &held);
    OK(rc == 0 && held.allow, "late answer: the handle holds a permit");

    /* The status page is sent whole, then its deadline passes while the
     * daemon is stopped: a timeout on a live connection. */
    kill(d.pid, SIGSTOP);
    rc = integ_call(r, "status", NULL, SHORT_MS, &rep, code);
    reply_free(&rep);
    IS(rc, RESIL_ETIMEDOUT, "late answer: status times out");
    kill(d.pid, SIGCONT);

    /* The next acquire reads the late page first, then its own answer. */
    rc = resil_acquire(r, "rv.k0000", &o, &dec);
    OK(rc == 0 && !dec.fallback && dec.allow,
       "late answer: the next acquire skips the late 300 KiB status page "
       "and gets the daemon's decision (rc %d = %s, fallback %d)",
       rc, resil_strerror(rc), dec.fallback);
    rc = resil_acquire(r, "bh", &o, &dec);
    OK(rc == 0 && !dec.allow && !strcmp(dec.reason, "bulkhead_full"),
       "late answer: the handle kept its connection and its permit "
       "(rc %d, allow %d, reason %s)",
       rc, dec.allow, dec.reason);
    resil_close(r);
    daemon_cleanup(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_late_big_answer();
    return tap_done();
}
