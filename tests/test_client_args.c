/*
 * test_client_args.c - every malformed argument of every public libresil
 * call is refused without a round trip (issue 8, defect 7).
 *
 * resil.h promises a deny for caller bugs whatever the fail mode: a NULL
 * or malformed key used to get a fallback *allow* in fail-open.  The table
 * below runs each bad acquire in fail-open and fail-closed (set on the
 * handle and per call) and checks RESIL_EINVAL, allow 0, fallback 1,
 * reason "invalid_argument", no permit.  Report, ping and resil_call get
 * their own tables.  A fake peer logs every message it receives: between
 * two good pings it must have received nothing.  Boundary values that are
 * valid (a 128-byte key, the largest cost and wait) must still reach it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_util.h"
#include "fake_peer.h"
#include "integ_util.h"
#include "resil.h"
#include "tap.h"

#define DEADLINE_MS 1000

static char key129[130], key128[129], key70k[70001], class65[66], msg70k[70001];

/* A bad acquire: handle (0: NULL), key, opts (NULL allowed). */
struct acq_case {
    const char *name;
    int null_handle;
    const char *key;
    int has_opts;
    struct resil_acquire_opts o; /* fail_mode 0: the table's mode */
};

static const struct acq_case acq_cases[] = {
    {"NULL handle", 1, "good.key", 0, {0}},
    {"NULL key", 0, NULL, 0, {0}},
    {"empty key", 0, "", 0, {0}},
    {"key with a space", 0, "bad key", 0, {0}},
    {"key with a slash", 0, "a/b", 0, {0}},
    {"key with a newline", 0, "a\nb", 0, {0}},
    {"key with UTF-8", 0, "cl\xc3\xa9", 0, {0}},
    {"key of 129 bytes", 0, key129, 0, {0}},
    {"key of 70,000 bytes", 0, key70k, 0, {0}},
    {"cost 1,000,000,001", 0, "good.key", 1, {.cost = 1000000001u}},
    {"cost UINT32_MAX", 0, "good.key", 1, {.cost = UINT32_MAX}},
    {"wait_ms 3,600,001", 0, "good.key", 1, {.wait_ms = 3600001u}},
    {"wait_ms UINT32_MAX", 0, "good.key", 1, {.wait_ms = UINT32_MAX}},
    {"deadline_ms -1", 0, "good.key", 1, {.deadline_ms = -1}},
    {"fail_mode 3", 0, "good.key", 1, {.fail_mode = 3}},
    {"fail_mode -1", 0, "good.key", 1, {.fail_mode = -1}},
};

static void acquire_table(resil_t *r, int mode)
{
    const char *mname = mode == RESIL_FAIL_OPEN ? "open" : "closed";
    struct resil_decision d;
    size_t i;
    int rc;

    resil_set_fail_mode(r, mode);
    for (i = 0; i < sizeof(acq_cases) / sizeof(acq_cases[0]); i++) {
        const struct acq_case *c = &acq_cases[i];
        struct resil_acquire_opts o = c->o;
        int per_call;

        /* The mode on the handle (NULL opts where the case allows), then
         * per call. */
        for (per_call = 0; per_call <= 1; per_call++) {
            const struct resil_acquire_opts *op = c->has_opts ? &o : NULL;
            if (per_call) {
                if (!o.fail_mode)
                    o.fail_mode = mode;
                op = &o;
            }
            memset(&d, 0x5a, sizeof(d));
            rc = resil_acquire(c->null_handle ? NULL : r, c->key, op, &d);
            OK(rc == RESIL_EINVAL && d.allow == 0 && d.fallback == 1 &&
                   d.permit == 0 && !strcmp(d.reason, "invalid_argument"),
               "acquire, %s, fail-%s %s: RESIL_EINVAL and a deny (rc %d "
               "allow %d fallback %d reason %.24s)",
               c->name, mname, per_call ? "per call" : "on the handle", rc,
               d.allow, d.fallback, d.reason);
        }
    }
    IS(resil_acquire(r, "good.key", NULL, NULL), RESIL_EINVAL,
       "acquire with a NULL out: RESIL_EINVAL");
}

static struct resil_report good_report(void)
{
    struct resil_report rep;

    memset(&rep, 0, sizeof(rep));
    rep.key = "good.key";
    rep.outcome = RESIL_FAILURE;
    rep.latency_ms = 10;
    rep.retry_after_ms = -1;
    rep.error_class = "network.reset";
    return rep;
}

static void report_table(resil_t *r)
{
    struct resil_report_result rr;
    struct resil_report rep;
    int i, rc;

    for (i = 0; i < 17; i++) {
        const char *name = "";
        resil_t *h = r;
        rep = good_report();
        switch (i) {
        case 0:
            name = "NULL handle";
            h = NULL;
            break;
        case 1:
            name = "NULL key";
            rep.key = NULL;
            break;
        case 2:
            name = "empty key";
            rep.key = "";
            break;
        case 3:
            name = "key with a space";
            rep.key = "bad key";
            break;
        case 4:
            name = "key of 129 bytes";
            rep.key = key129;
            break;
        case 5:
            name = "key of 70,000 bytes";
            rep.key = key70k;
            break;
        case 6:
            name = "outcome 4";
            rep.outcome = (enum resil_outcome)4;
            break;
        case 7:
            name = "outcome -1";
            rep.outcome = (enum resil_outcome) - 1;
            break;
        case 8:
            name = "deadline_ms -1";
            rep.deadline_ms = -1;
            break;
        case 9:
            name = "latency_ms over 30 days";
            rep.latency_ms = 86400000LL * 30 + 1;
            break;
        case 10:
            name = "retry_after_ms over 30 days";
            rep.retry_after_ms = INT64_MAX;
            break;
        case 11:
            name = "attempt 1,000,001";
            rep.attempt = 1000001;
            break;
        case 12:
            name = "error_class with a space";
            rep.error_class = "network reset";
            break;
        case 13:
            name = "error_class of 65 bytes";
            rep.error_class = class65;
            break;
        case 14:
            name = "empty error_class";
            rep.error_class = "";
            break;
        case 15:
            name = "error_message of 70,000 bytes";
            rep.error_message = msg70k;
            break;
        case 16:
            name = "NULL report";
            break;
        }
        memset(&rr, 0x5a, sizeof(rr));
        rc = resil_report(h, i == 16 ? NULL : &rep, &rr);
        OK(rc == RESIL_EINVAL && rr.state[0] == '\0' && !rr.retry,
           "report, %s: RESIL_EINVAL (rc %d)", name, rc);
    }
}

static void ping_and_call_table(resil_t *r)
{
    void *res = (void *)1;
    size_t len = 1;
    char code[24], msg[24];
    int rc;

    IS(resil_ping(NULL, 0, NULL, 0, NULL), RESIL_EINVAL,
       "ping, NULL handle: RESIL_EINVAL");
    IS(resil_ping(r, -1, NULL, 0, NULL), RESIL_EINVAL,
       "ping, deadline_ms -1: RESIL_EINVAL");
    IS(resil_call(NULL, "ping", NULL, 0, 0, &res, &len, code, msg, 24),
       RESIL_EINVAL, "call, NULL handle: RESIL_EINVAL");
    IS(resil_call(r, NULL, NULL, 0, 0, &res, &len, code, msg, 24), RESIL_EINVAL,
       "call, NULL method: RESIL_EINVAL");
    IS(resil_call(r, "", NULL, 0, 0, &res, &len, code, msg, 24), RESIL_EINVAL,
       "call, empty method: RESIL_EINVAL");
    IS(resil_call(r, class65, NULL, 0, 0, &res, &len, code, msg, 24),
       RESIL_EINVAL, "call, method of 65 bytes: RESIL_EINVAL");
    IS(resil_call(r, "ping", NULL, 0, 0, NULL, &len, code, msg, 24),
       RESIL_EINVAL, "call, NULL result: RESIL_EINVAL");
    IS(resil_call(r, "ping", NULL, 0, 0, &res, NULL, code, msg, 24),
       RESIL_EINVAL, "call, NULL result_len: RESIL_EINVAL");
    IS(resil_call(r, "ping", NULL, 0, -1, &res, &len, code, msg, 24),
       RESIL_EINVAL, "call, deadline_ms -1: RESIL_EINVAL");
    IS(resil_call(r, "status", "\x91\x01", 2, 0, &res, &len, code, msg, 24),
       RESIL_EINVAL, "call, params an array: RESIL_EINVAL");
    IS(resil_call(r, "status", "\x80\x01", 2, 0, &res, &len, code, msg, 24),
       RESIL_EINVAL, "call, params a map and a trailing byte: RESIL_EINVAL");
    IS(resil_call(r, "status", "\x81\xa1", 2, 0, &res, &len, code, msg, 24),
       RESIL_EINVAL, "call, params a truncated map: RESIL_EINVAL");
    rc = resil_call(r, "status", NULL, 5, 0, &res, &len, code, msg, 24);
    IS(rc, RESIL_EINVAL, "call, NULL params with a length: RESIL_EINVAL");
    OK(res == NULL && len == 0, "call: result cleared on RESIL_EINVAL");
}

int main(void)
{
    static struct peer p;
    struct peer_opts po = {.mode = PEER_ANSWER};
    struct resil_acquire_opts o = {0};
    struct resil_decision d;
    char dir[256], path[300];
    resil_t *r;
    int rc;

    memset(key129, 'k', 129);
    memset(key128, 'k', 128);
    memset(key70k, 'k', 70000);
    memset(class65, 'c', 65);
    memset(msg70k, 'm', 70000);
    if (!OK(daemon_mkdtemp(dir, sizeof(dir)) == 0, "temporary directory"))
        return tap_done();
    snprintf(path, sizeof(path), "%s/peer.sock", dir);
    if (!OK(peer_start(&p, path, &po) == 0, "fake peer starts"))
        return tap_done();
    r = resil_open(path);
    resil_set_deadline(r, DEADLINE_MS);
    IS(resil_ping(r, 0, NULL, 0, NULL), 0, "a good ping connects");

    acquire_table(r, RESIL_FAIL_OPEN);
    acquire_table(r, RESIL_FAIL_CLOSED);
    report_table(r);
    ping_and_call_table(r);

    IS(resil_ping(r, 0, NULL, 0, NULL), 0, "a good ping after the tables");
    /* The peer logs a request before answering it: all is in the pipe. */
    peer_wait_log(&p, "\n#never#", 0);
    IS(peer_count(&p, "REQ ") + peer_count(&p, "NOTE ") + peer_count(&p, "BAD"),
       2, "the peer received nothing but the two pings");
    OK(peer_count(&p, "REQ ping") == 2, "both pings arrived");

    /* The bounds are inclusive: these reach the peer. */
    OK(resil_acquire(r, key128, NULL, &d) == 0 && d.allow && !d.fallback,
       "a 128-byte key is sent");
    o.cost = 1000000000u;
    o.wait_ms = 3600000u;
    rc = resil_acquire(r, "good.key", &o, &d);
    OK(rc == 0 && d.allow,
       "cost 1,000,000,000 and wait_ms 3,600,000 are "
       "sent (rc %d)",
       rc);
    o.cost = 0; /* 0 means 1 */
    o.wait_ms = 0;
    OK(resil_acquire(r, "Az09._:-", &o, &d) == 0 && d.allow,
       "cost 0 (means 1) and every key character class are sent");
    peer_wait_log(&p, "\n#never#", 0);
    IS(peer_count(&p, "REQ acquire"), 3, "three acquires arrived");

    /* Bad setter values are ignored: the handle keeps fail-closed. */
    resil_set_fail_mode(r, RESIL_FAIL_CLOSED);
    resil_set_fail_mode(r, (enum resil_fail_mode)7);
    resil_set_deadline(r, -5);
    peer_stop(&p);
    rc = resil_acquire(r, "good.key", NULL, &d);
    OK(rc < 0 && rc != RESIL_EINVAL && d.fallback && !d.allow,
       "resil_set_fail_mode(7) is ignored: still fail-closed (rc %d)", rc);
    resil_close(r);
    daemon_rmtree(dir);
    return tap_done();
}
