/*
 * resilctl.c - the operator's command line for resild.
 *
 * Each command is one `const struct ctl_cmd` entry (name, arguments,
 * summary, example, handler) in the table `commands`, the way tmux lays out
 * its cmd-*.c files; main() only parses the global options, finds the entry
 * and runs it.  Everything goes through libresil's resil_call(), so the CLI
 * has the same deadline and never-hang guarantees as any client.
 *
 * Output: aligned tables for people, --json (the daemon's result converted
 * generically from msgpack with jansson) for scripts.  Text that came from
 * the daemon (keys, reasons, error messages) is escaped (non-printable bytes
 * as \xNN) and truncated before it reaches a terminal.
 *
 * Exit status: 0 ok, 1 the daemon answered an error, 2 usage error,
 * 3 the daemon could not be reached (or answered garbage, or too late).
 */
#include <errno.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "resil.h"

#define EXIT_OK 0
#define EXIT_REMOTE 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3

#define DEFAULT_DEADLINE_MS 2000
#define KEY_SHOW_MAX 128  /* bytes of a key shown before truncation */
#define TEXT_SHOW_MAX 200 /* bytes of other peer text (reasons, errors) */
#define ERR_TEXT_CAP 512  /* daemon error code/message copied */

struct ctl {
    const char *socket; /* -s PATH, or NULL to resolve */
    int json;           /* --json */
    int deadline_ms;    /* -t */
    resil_t *r;
};

struct ctl_cmd {
    const char *name;
    const char *args;    /* argument synopsis */
    const char *summary; /* one line */
    const char *example;
    int (*exec)(struct ctl *c, int argc, char **argv);
};

static const struct ctl_cmd *find_command(const char *name);
static void usage(FILE *f);

/* --- peer text: escape and truncate --------------------------------------
 * Writes at most max source bytes of s[0..n) into dst (cap bytes), with
 * bytes outside printable ASCII as \xNN and a backslash as \\, and "..."
 * when truncated.  dst must hold 4*max+4 bytes to never cut an escape. */
static const char *escape(char *dst, size_t cap, const char *s, size_t n,
                          size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;

    for (i = 0; i < n && i < max && o + 5 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = '\\';
        } else if (ch < 0x20 || ch >= 0x7f) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        } else {
            dst[o++] = (char)ch;
        }
    }
    if (i < n && o + 4 <= cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

/* Escaped text of a msgpack string, or dflt when o is not a string. */
static const char *obj_text(char *dst, size_t cap, const msgpack_object *o,
                            size_t max, const char *dflt)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return dflt;
    return escape(dst, cap, o->via.str.ptr, o->via.str.size, max);
}

static int obj_uint(const msgpack_object *o, uint64_t *v)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *v = o->via.u64;
    return 0;
}

static int obj_num(const msgpack_object *o, double *v)
{
    if (!o)
        return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = (double)o->via.i64;
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = o->via.f64;
        return 0;
    default:
        return -1;
    }
}

/* --- durations ----------------------------------------------------------- */

/* "500ms", "30s", "5m", "2h", "1d" -> milliseconds.  0 or -1. */
static int parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    uint64_t n = 0;
    const char *p = s;
    size_t i;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (n == 0 || n > UINT64_MAX / units[i].ms)
                return -1;
            *ms = n * units[i].ms;
            return 0;
        }
    }
    return -1;
}

/* Human duration: "850ms", "12.3s", "5m12s", "2h3m", "1d4h". */
static const char *fmt_duration(char *dst, size_t cap, uint64_t ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    size_t i, o = 0;
    int shown = 0;

    if (ms < 1000) {
        snprintf(dst, cap, "%llums", (unsigned long long)ms);
        return dst;
    }
    if (ms < 60000) {
        if (ms % 1000 == 0)
            snprintf(dst, cap, "%llus", (unsigned long long)(ms / 1000));
        else
            snprintf(dst, cap, "%.1fs", (double)ms / 1000.0);
        return dst;
    }
    dst[0] = '\0';
    for (i = 0; i < 4 && shown < 2; i++) {
        uint64_t q = ms / units[i].ms;
        if (q == 0 && !shown)
            continue;
        ms -= q * units[i].ms;
        if (q)
            o += (size_t)snprintf(dst + o, cap - o, "%llu%s",
                                  (unsigned long long)q, units[i].unit);
        shown++;
    }
    return dst;
}

/* --- msgpack -> JSON ------------------------------------------------------
 * Generic: any result the daemon sends prints.  Strings that are not UTF-8
 * become escaped ASCII; NaN/Inf become null (JSON has neither). */
static json_t *to_json(const msgpack_object *o)
{
    char buf[4 * TEXT_SHOW_MAX + 8];
    json_t *j;
    uint32_t i;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        j = json_real(o->via.f64);
        return j ? j : json_null();
    case MSGPACK_OBJECT_STR:
        j = json_stringn(o->via.str.ptr, o->via.str.size);
        if (!j) {
            char *big = malloc(4 * (size_t)o->via.str.size + 8);
            if (!big)
                return NULL;
            escape(big, 4 * (size_t)o->via.str.size + 8, o->via.str.ptr,
                   o->via.str.size, o->via.str.size);
            j = json_string(big);
            free(big);
        }
        return j;
    case MSGPACK_OBJECT_BIN:
        return json_string(escape(buf, sizeof(buf), o->via.bin.ptr,
                                  o->via.bin.size, TEXT_SHOW_MAX));
    case MSGPACK_OBJECT_ARRAY:
        j = json_array();
        for (i = 0; j && i < o->via.array.size; i++)
            if (json_array_append_new(j, to_json(&o->via.array.ptr[i])) < 0) {
                json_decref(j);
                return NULL;
            }
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (i = 0; j && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            json_t *v = to_json(&o->via.map.ptr[i].val);
            int rc;

            /* json_object_setn_new frees v when it fails (a key that is
             * not UTF-8): hold a reference for the escaped retry. */
            if (k->type == MSGPACK_OBJECT_STR)
                rc = json_object_setn(j, k->via.str.ptr, k->via.str.size, v);
            else
                rc = -1;
            if (rc == 0)
                json_decref(v);
            if (rc < 0) { /* non-string or non-UTF-8 key: escape it */
                if (k->type == MSGPACK_OBJECT_STR)
                    escape(buf, sizeof(buf), k->via.str.ptr, k->via.str.size,
                           TEXT_SHOW_MAX);
                else if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                    snprintf(buf, sizeof(buf), "%llu",
                             (unsigned long long)k->via.u64);
                else if (k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                    snprintf(buf, sizeof(buf), "%lld", (long long)k->via.i64);
                else
                    snprintf(buf, sizeof(buf), "?%u", (unsigned)i);
                if (json_object_set_new(j, buf, v) < 0) {
                    json_decref(j);
                    return NULL;
                }
            }
        }
        return j;
    default:
        return json_null(); /* ext types: nothing sensible to show */
    }
}

static int print_json(const msgpack_object *o)
{
    json_t *j = to_json(o);

    if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) < 0) {
        json_decref(j);
        fprintf(stderr, "resilctl: cannot convert the answer to JSON\n");
        return EXIT_UNREACHABLE;
    }
    putchar('\n');
    json_decref(j);
    return EXIT_OK;
}

/* --- calling the daemon -------------------------------------------------- */

struct answer {
    void *raw; /* msgpack result from resil_call (malloc'ed) */
    size_t len;
    msgpack_zone zone;
    msgpack_object result;
};

static void answer_free(struct answer *a)
{
    free(a->raw);
    msgpack_zone_destroy(&a->zone);
}

/*
 * Call method with params (msgpack map in sb, or NULL).  Prints the failure
 * and returns its exit status, or 0 with a->result decoded.  The result was
 * bounded by libresil's scanner (size and depth) before it got here.
 */
static int call(struct ctl *c, const char *method, const msgpack_sbuffer *sb,
                struct answer *a)
{
    char code[ERR_TEXT_CAP], msg[ERR_TEXT_CAP];
    char e1[4 * TEXT_SHOW_MAX + 8], e2[4 * TEXT_SHOW_MAX + 8];
    size_t off = 0;
    int rc, err;

    memset(a, 0, sizeof(*a));
    msgpack_zone_init(&a->zone, 4096);
    errno = 0;
    rc = resil_call(c->r, method, sb ? sb->data : NULL, sb ? sb->size : 0,
                    c->deadline_ms, &a->raw, &a->len, code, msg, sizeof(code));
    err = errno;
    switch (rc) {
    case 0:
        if (msgpack_unpack(a->raw, a->len, &off, &a->zone, &a->result) !=
            MSGPACK_UNPACK_SUCCESS) {
            fprintf(stderr,
                    "resilctl: resild at %s sent an unreadable "
                    "answer\n",
                    resil_path(c->r));
            return EXIT_UNREACHABLE;
        }
        return 0;
    case RESIL_EREMOTE:
        fprintf(stderr, "resilctl: %s: %s\n",
                escape(e1, sizeof(e1), code, strlen(code), 64),
                escape(e2, sizeof(e2), msg, strlen(msg), TEXT_SHOW_MAX));
        return EXIT_REMOTE;
    case RESIL_EINVAL:
        fprintf(stderr, "resilctl: arguments too large for one request\n");
        return EXIT_USAGE;
    case RESIL_ETIMEDOUT:
        fprintf(stderr,
                "resilctl: cannot reach resild at %s: no answer within %d ms\n",
                resil_path(c->r), c->deadline_ms);
        return EXIT_UNREACHABLE;
    case RESIL_ECONN:
        fprintf(stderr, "resilctl: cannot reach resild at %s: %s\n",
                resil_path(c->r), err ? strerror(err) : resil_strerror(rc));
        return EXIT_UNREACHABLE;
    default:
        fprintf(stderr, "resilctl: cannot reach resild at %s: %s\n",
                resil_path(c->r), resil_strerror(rc));
        return EXIT_UNREACHABLE;
    }
}

/* --- the status table ----------------------------------------------------- */

enum {
    COL_KEY,
    COL_STATE,
    COL_HEALTH,
    COL_CALLS,
    COL_FAILS,
    COL_RATE,
    COL_OPENS,
    COL_RETRY,
    COL_POLICY,
    COL_FORCED,
    NCOLS
};

static const char *const col_title[NCOLS] = {
    "KEY",   "STATE", "HEALTH",      "CALLS",  "FAILS",
    "FAIL%", "OPENS", "RETRY_AFTER", "POLICY", "FORCED"};
static const int col_right[NCOLS] = {0, 0, 0, 1, 1, 1, 1, 1, 0, 0};

struct table {
    char *(*cell)[NCOLS]; /* rows x NCOLS strdup'ed strings */
    size_t rows;
    int has_forced;
};

static int table_add(struct table *t, const msgpack_object *m)
{
    char buf[4 * TEXT_SHOW_MAX + 64], tmp[64], *row[NCOLS];
    const msgpack_object *o;
    uint64_t u;
    double d;
    int i;

    if (m->type != MSGPACK_OBJECT_MAP)
        return 0;
#define SET(col, s) row[col] = strdup(s)
    SET(COL_KEY,
        obj_text(buf, sizeof(buf), proto_map_get(m, "key"), KEY_SHOW_MAX, "?"));
    SET(COL_STATE,
        obj_text(buf, sizeof(buf), proto_map_get(m, "state"), 32, "-"));
    SET(COL_HEALTH,
        obj_text(buf, sizeof(buf), proto_map_get(m, "health"), 32, "-"));
    snprintf(tmp, sizeof(tmp), "-");
    if (obj_uint(proto_map_get(m, "calls"), &u) == 0)
        snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)u);
    SET(COL_CALLS, tmp);
    snprintf(tmp, sizeof(tmp), "-");
    if (obj_uint(proto_map_get(m, "failures"), &u) == 0)
        snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)u);
    SET(COL_FAILS, tmp);
    snprintf(tmp, sizeof(tmp), "-");
    if (obj_num(proto_map_get(m, "failure_rate"), &d) == 0 && d >= 0 &&
        d <= 100)
        snprintf(tmp, sizeof(tmp), "%.1f", d);
    SET(COL_RATE, tmp);
    snprintf(tmp, sizeof(tmp), "-");
    if (obj_uint(proto_map_get(m, "opens"), &u) == 0)
        snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)u);
    SET(COL_OPENS, tmp);
    snprintf(tmp, sizeof(tmp), "-");
    if (obj_uint(proto_map_get(m, "retry_after_ms"), &u) == 0 && u > 0)
        fmt_duration(tmp, sizeof(tmp), u);
    SET(COL_RETRY, tmp);
    SET(COL_POLICY, obj_text(buf, sizeof(buf), proto_map_get(m, "policy"),
                             KEY_SHOW_MAX, "-"));
    o = proto_map_get(m, "force_reason");
    buf[0] = '\0';
    if (o && o->type == MSGPACK_OBJECT_STR) {
        obj_text(buf, sizeof(buf) - 40, o, TEXT_SHOW_MAX, "");
        if (!buf[0])
            snprintf(buf, sizeof(buf), "(no reason)");
        t->has_forced = 1;
    }
    if (obj_uint(proto_map_get(m, "force_ttl_ms"), &u) == 0 && u > 0) {
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof(buf) - l, "%s(for %s)", l ? " " : "",
                 fmt_duration(tmp, sizeof(tmp), u));
        t->has_forced = 1;
    }
    SET(COL_FORCED, buf);
#undef SET
    for (i = 0; i < NCOLS; i++)
        if (!row[i]) {
            while (i < NCOLS)
                row[i++] = NULL;
            for (i = 0; i < NCOLS; i++)
                free(row[i]);
            return -1;
        }
    {
        char *(*p)[NCOLS] = realloc(t->cell, (t->rows + 1) * sizeof(*p));
        if (!p) {
            for (i = 0; i < NCOLS; i++)
                free(row[i]);
            return -1;
        }
        t->cell = p;
        memcpy(t->cell[t->rows++], row, sizeof(row));
    }
    return 0;
}

static void table_print(const struct table *t)
{
    size_t w[NCOLS], r;
    int i, ncols = t->has_forced ? NCOLS : NCOLS - 1;

    for (i = 0; i < ncols; i++) {
        w[i] = strlen(col_title[i]);
        for (r = 0; r < t->rows; r++)
            if (strlen(t->cell[r][i]) > w[i])
                w[i] = strlen(t->cell[r][i]);
    }
    for (r = 0; r <= t->rows; r++) {
        for (i = 0; i < ncols; i++) {
            const char *s = r == 0 ? col_title[i] : t->cell[r - 1][i];
            int last = i == ncols - 1;
            if (col_right[i])
                printf("%*s", (int)w[i], s);
            else if (last)
                printf("%s", s);
            else
                printf("%-*s", (int)w[i], s);
            printf(last ? "\n" : "  ");
        }
    }
}

static void table_free(struct table *t)
{
    size_t r;
    int i;

    for (r = 0; r < t->rows; r++)
        for (i = 0; i < NCOLS; i++)
            free(t->cell[r][i]);
    free(t->cell);
}

/* Print one key's status map (the answer of force/reset). */
static int print_one_key(const msgpack_object *m)
{
    struct table t = {0};
    int rc = table_add(&t, m);

    if (rc == 0)
        table_print(&t);
    table_free(&t);
    if (rc < 0) {
        fprintf(stderr, "resilctl: out of memory\n");
        return EXIT_UNREACHABLE;
    }
    return EXIT_OK;
}

/* --- argument helpers ------------------------------------------------------
 */

struct cmd_args {
    char *pos[4]; /* positional arguments */
    int npos;
    uint64_t for_ms;    /* --for, 0 when absent */
    const char *reason; /* --reason, NULL when absent */
};

static int cmd_usage(const struct ctl_cmd *cmd)
{
    fprintf(stderr, "usage: resilctl %s%s%s\n", cmd->name,
            cmd->args[0] ? " " : "", cmd->args);
    return EXIT_USAGE;
}

/*
 * Parse a command's arguments: positionals (between min and max), --json
 * anywhere, and --for/--reason where allowed.  Returns 0 or an exit status
 * (after printing why).
 */
static int parse_args(struct ctl *c, const struct ctl_cmd *cmd, int argc,
                      char **argv, int min, int max, int opts,
                      struct cmd_args *a)
{
    char e[4 * 64 + 8];
    int i, only_args = 0;

    memset(a, 0, sizeof(*a));
    for (i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (only_args || s[0] != '-' || s[1] == '\0') {
            if (a->npos >= max) {
                fprintf(stderr, "resilctl: %s: too many arguments\n",
                        cmd->name);
                return cmd_usage(cmd);
            }
            a->pos[a->npos++] = argv[i];
        } else if (!strcmp(s, "--")) {
            only_args = 1; /* a key may start with '-' */
        } else if (!strcmp(s, "--json")) {
            c->json = 1;
        } else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            printf("usage: resilctl %s%s%s\n  %s\n  example: %s\n", cmd->name,
                   cmd->args[0] ? " " : "", cmd->args, cmd->summary,
                   cmd->example);
            return -1; /* handled: exit 0 */
        } else if (opts && (!strcmp(s, "--for") || !strcmp(s, "--reason"))) {
            if (i + 1 >= argc) {
                fprintf(stderr, "resilctl: %s needs a value\n", s);
                return EXIT_USAGE;
            }
            if (!strcmp(s, "--reason")) {
                a->reason = argv[++i];
            } else if (parse_duration(argv[++i], &a->for_ms) < 0) {
                fprintf(stderr,
                        "resilctl: bad duration '%s' for --for (use e.g. "
                        "500ms, 30s, 5m, 2h, 1d)\n",
                        escape(e, sizeof(e), argv[i], strlen(argv[i]), 64));
                return EXIT_USAGE;
            }
        } else {
            fprintf(stderr,
                    "resilctl: %s: unknown option '%s' (a key that starts "
                    "with '-' goes after --)\n",
                    cmd->name, escape(e, sizeof(e), s, strlen(s), 64));
            return cmd_usage(cmd);
        }
    }
    if (a->npos < min) {
        fprintf(stderr, "resilctl: %s: missing argument\n", cmd->name);
        return cmd_usage(cmd);
    }
    return 0;
}

/* Pack a params map of string pairs and optional ttl_ms into sb. */
static void pack_force(msgpack_sbuffer *sb, const char *key, const char *state,
                       const struct cmd_args *a)
{
    msgpack_packer pk;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + !!a->reason + !!a->for_ms);
    proto_kv_str(&pk, "key", key);
    proto_kv_str(&pk, "state", state);
    if (a->reason)
        proto_kv_str(&pk, "reason", a->reason);
    if (a->for_ms)
        proto_kv_u64(&pk, "ttl_ms", a->for_ms);
}

/* Run method with sb, print the key status (or JSON). */
static int run_key_method(struct ctl *c, const char *method,
                          msgpack_sbuffer *sb)
{
    struct answer a;
    int rc = call(c, method, sb, &a);

    if (rc == 0)
        rc = c->json ? print_json(&a.result) : print_one_key(&a.result);
    answer_free(&a);
    return rc;
}

/* --- commands ------------------------------------------------------------- */

static int cmd_ping(struct ctl *c, int argc, char **argv)
{
    char v[4 * 32 + 8], up[64];
    struct cmd_args args;
    struct answer a;
    uint64_t pid = 0, up_ms = 0;
    int rc = parse_args(c, find_command("ping"), argc, argv, 0, 0, 0, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = call(c, "ping", NULL, &a)) == 0) {
        if (c->json) {
            rc = print_json(&a.result);
        } else {
            obj_uint(proto_map_get(&a.result, "pid"), &pid);
            obj_uint(proto_map_get(&a.result, "uptime_ms"), &up_ms);
            printf("resild %s pid %llu up %s\n",
                   obj_text(v, sizeof(v), proto_map_get(&a.result, "version"),
                            32, "?"),
                   (unsigned long long)pid,
                   fmt_duration(up, sizeof(up), up_ms));
        }
    }
    answer_free(&a);
    return rc;
}

static int cmd_status(struct ctl *c, int argc, char **argv)
{
    char h[4 * 32 + 8];
    struct cmd_args args;
    struct answer a;
    struct table t = {0};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    const msgpack_object *keys;
    uint64_t total;
    uint32_t i;
    int rc = parse_args(c, find_command("status"), argc, argv, 0, 1, 0, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    msgpack_sbuffer_init(&sb);
    if (args.npos) {
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_kv_str(&pk, "prefix", args.pos[0]);
    }
    rc = call(c, "status", args.npos ? &sb : NULL, &a);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0 && c->json) {
        rc = print_json(&a.result);
    } else if (rc == 0) {
        keys = proto_map_get(&a.result, "keys");
        if (keys && keys->type == MSGPACK_OBJECT_ARRAY)
            for (i = 0; i < keys->via.array.size && rc == 0; i++)
                if (table_add(&t, &keys->via.array.ptr[i]) < 0) {
                    fprintf(stderr, "resilctl: out of memory\n");
                    rc = EXIT_UNREACHABLE;
                }
        if (rc == 0) {
            if (t.rows)
                table_print(&t);
            else
                printf("no keys%s\n", args.npos ? " match" : " yet");
            if (obj_uint(proto_map_get(&a.result, "total"), &total) == 0 &&
                total > t.rows)
                printf("showing %zu of %llu keys\n", t.rows,
                       (unsigned long long)total);
            printf("health: %s\n",
                   obj_text(h, sizeof(h), proto_map_get(&a.result, "health"),
                            32, "?"));
        }
    }
    table_free(&t);
    answer_free(&a);
    return rc;
}

static int cmd_trip(struct ctl *c, int argc, char **argv)
{
    struct cmd_args args;
    msgpack_sbuffer sb;
    int rc = parse_args(c, find_command("trip"), argc, argv, 1, 1, 1, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    msgpack_sbuffer_init(&sb);
    pack_force(&sb, args.pos[0], "open", &args);
    rc = run_key_method(c, "force", &sb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int cmd_force(struct ctl *c, int argc, char **argv)
{
    static const char *const states[] = {"open", "closed", "disabled", "auto"};
    const struct ctl_cmd *cmd = find_command("force");
    char e[4 * 64 + 8];
    struct cmd_args args;
    msgpack_sbuffer sb;
    size_t i;
    int rc = parse_args(c, cmd, argc, argv, 2, 2, 1, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    for (i = 0; i < 4 && strcmp(args.pos[1], states[i]); i++)
        ;
    if (i == 4) {
        fprintf(stderr,
                "resilctl: bad state '%s' (use open, closed, disabled or "
                "auto)\n",
                escape(e, sizeof(e), args.pos[1], strlen(args.pos[1]), 64));
        return EXIT_USAGE;
    }
    msgpack_sbuffer_init(&sb);
    pack_force(&sb, args.pos[0], states[i], &args);
    rc = run_key_method(c, "force", &sb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int cmd_reset(struct ctl *c, int argc, char **argv)
{
    struct cmd_args args;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rc = parse_args(c, find_command("reset"), argc, argv, 1, 1, 0, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    proto_kv_str(&pk, "key", args.pos[0]);
    rc = run_key_method(c, "reset", &sb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int cmd_help(struct ctl *c, int argc, char **argv)
{
    const struct ctl_cmd *cmd;

    (void)c;
    if (argc == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!(cmd = find_command(argv[0])) || argc > 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    printf("usage: resilctl %s%s%s\n  %s\n  example: %s\n", cmd->name,
           cmd->args[0] ? " " : "", cmd->args, cmd->summary, cmd->example);
    return EXIT_OK;
}

static const struct ctl_cmd commands[] = {
    {"ping", "", "check that resild answers; print its version, pid, uptime",
     "resilctl ping", cmd_ping},
    {"status", "[KEY|PREFIX]",
     "breaker state of every key, or of KEY and the keys below it (KEY.*)",
     "resilctl status binance", cmd_status},
    {"trip", "KEY [--for DURATION] [--reason TEXT]",
     "open KEY's breaker by hand (maintenance); --for returns it to auto",
     "resilctl trip binance.orders --for 5m --reason 'venue maintenance'",
     cmd_trip},
    {"reset", "KEY", "clear any force and venue pause, close KEY's breaker",
     "resilctl reset binance.orders", cmd_reset},
    {"force", "KEY open|closed|disabled|auto [--for DURATION] [--reason TEXT]",
     "pin KEY's breaker state (disabled: always allow); auto undoes it",
     "resilctl force binance.orders closed --for 30s --reason 'false alarm'",
     cmd_force},
    {"help", "[COMMAND]", "this help, or one command's", "resilctl help trip",
     cmd_help},
};

static const struct ctl_cmd *find_command(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static void usage(FILE *f)
{
    size_t i;

    fprintf(f, "usage: resilctl [-s PATH] [-t MS] [--json] COMMAND [ARGS]\n"
               "\n"
               "Inspect and steer resild, the resilience sidecar.\n"
               "\n"
               "Commands:\n");
    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %s%s%s\n      %s\n      e.g. %s\n", commands[i].name,
                commands[i].args[0] ? " " : "", commands[i].args,
                commands[i].summary, commands[i].example);
    fprintf(
        f,
        "\n"
        "Options:\n"
        "  -s PATH     resild's socket (default: $RESILD_SOCKET, else\n"
        "              /run/resild/resild.sock if /run/resild exists, else\n"
        "              $XDG_RUNTIME_DIR/resild.sock, else /tmp/resild.sock)\n"
        "  -t MS       give up after MS milliseconds (default %d; 3s works)\n"
        "  --json      print the daemon's answer as JSON, for scripts\n"
        "  -h, --help  this help\n"
        "\n"
        "Durations: 500ms, 30s, 5m, 2h, 1d.  A KEY that starts with '-'\n"
        "goes after --.\n"
        "Exit status: 0 ok, 1 resild refused (its error is printed),\n"
        "2 usage error, 3 resild unreachable.\n",
        DEFAULT_DEADLINE_MS);
}

int main(int argc, char **argv)
{
    struct ctl c = {NULL, 0, DEFAULT_DEADLINE_MS, NULL};
    const struct ctl_cmd *cmd;
    char e[4 * 64 + 8];
    uint64_t ms;
    int i, rc;

    for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(s, "--json")) {
            c.json = 1;
        } else if (!strcmp(s, "-s") || !strcmp(s, "-t")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "resilctl: %s needs a value\n", s);
                return EXIT_USAGE;
            }
            if (s[1] == 's') {
                c.socket = argv[++i];
                if (!*c.socket) {
                    fprintf(stderr, "resilctl: -s needs a socket path, not "
                                    "an empty string\n");
                    return EXIT_USAGE;
                }
                continue;
            }
            s = argv[++i];
            if (strspn(s, "0123456789") == strlen(s) && *s && strlen(s) < 10)
                ms = strtoull(s, NULL, 10);
            else if (parse_duration(s, &ms) < 0)
                ms = 0;
            if (ms == 0 || ms > 3600000) {
                fprintf(stderr,
                        "resilctl: bad deadline '%s' for -t (milliseconds, "
                        "1..3600000, or e.g. 3s)\n",
                        escape(e, sizeof(e), s, strlen(s), 64));
                return EXIT_USAGE;
            }
            c.deadline_ms = (int)ms;
        } else if (!strcmp(s, "--")) {
            i++;
            break;
        } else {
            fprintf(stderr,
                    "resilctl: unknown option '%s' (try resilctl "
                    "--help)\n",
                    escape(e, sizeof(e), s, strlen(s), 64));
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!(cmd = find_command(argv[i]))) {
        fprintf(stderr,
                "resilctl: unknown command '%s' (try resilctl --help)\n",
                escape(e, sizeof(e), argv[i], strlen(argv[i]), 64));
        return EXIT_USAGE;
    }
    if (!(c.r = resil_open(c.socket))) {
        fprintf(stderr, "resilctl: out of memory\n");
        return EXIT_UNREACHABLE;
    }
    if (c.socket && strlen(c.socket) >= 108) {
        fprintf(stderr, "resilctl: socket path too long (max 107 bytes)\n");
        resil_close(c.r);
        return EXIT_USAGE;
    }
    rc = cmd->exec(&c, argc - i - 1, argv + i + 1);
    resil_close(c.r);
    if (fflush(stdout) != 0 && rc == EXIT_OK)
        rc = EXIT_UNREACHABLE;
    return rc;
}
