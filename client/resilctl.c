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
 * the daemon (keys, reasons, error messages) is escaped (control
 * characters and invalid UTF-8 as \xNN or \uNNNN, see escape()) and
 * truncated before it reaches a terminal.  `status` follows the daemon's
 * pages (`next`) until every key is listed, --limit N keys or
 * STATUS_MAX_KEYS.
 *
 * Exit status: 0 ok, 1 the daemon answered an error, 2 usage error,
 * 3 the daemon could not be reached (or answered garbage, or too late).
 * Two commands differ, for monitoring: `health` exits with the daemon's
 * verdict (0 healthy, 1 degraded, 2 unhealthy) and 3 whenever it cannot
 * tell (unreachable, an error answer, its own usage error), like a Nagios
 * check; `watch` exits 0 when stopped (SIGINT, SIGTERM, EOF on a piped
 * stdin, or its reader gone) and 3 when the daemon is or goes away.
 */
#include <curses.h>
#include <errno.h>
#include <jansson.h>
#include <langinfo.h>
#include <locale.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
/* status pages: keys asked per page (the daemon's default page), and the
 * most keys one `resilctl status` lists (the daemon's default max_keys;
 * a table of them takes tens of MB).  Narrow with a PREFIX or --limit. */
#define STATUS_PAGE_KEYS 1000
#define STATUS_MAX_KEYS 100000
#define NEXT_KEY_MAX 256 /* bytes of a `next` key name accepted */

struct ctl {
    const char *socket; /* -s PATH, or NULL to resolve */
    int json;           /* --json */
    int deadline_ms;    /* -t */
    resil_t *r;
    int reader_gone; /* stdout's reader closed it (EPIPE): not an error */
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
 * Text that came from the daemon or the command line is shown as given, as
 * far as that is safe on a terminal: printable ASCII and (when the locale
 * is UTF-8) printable non-ASCII characters pass; control characters (C0,
 * DEL, C1), Unicode format and bidi controls (which reorder what follows)
 * and bytes that are not valid UTF-8 are shown as \xNN (bytes) or \uNNNN
 * (code points).  A backslash is not doubled: a force reason C:\temp shows
 * as typed (the price: a reason that spells "\x1b" looks like an escape).
 * --json output needs none of this: jansson escapes (JSON_ENSURE_ASCII). */

static int term_utf8; /* 1 when the locale's codeset is UTF-8 (main) */

/* Length of the valid UTF-8 sequence at s[0..n) (no overlongs, no
 * surrogates, at most U+10FFFF) with its code point in *cp, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len, i;
    uint32_t c;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        c = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        c = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        c = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || c > 0x10ffff ||
        (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* 1 for a code point that must not reach a terminal raw: controls, and the
 * invisible format characters that reorder or hide text. */
static int cp_unsafe(uint32_t c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0xad ||
           (c >= 0x200b && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) ||
           (c >= 0x2060 && c <= 0x206f) || c == 0xfeff ||
           (c >= 0xfff9 && c <= 0xfffb);
}

/*
 * Write at most max source bytes of s[0..n) into dst (cap bytes, at least
 * 4), escaped as above, with "..." when cut (never inside a character or
 * an escape).  dst must hold 4*max+8 bytes to show all of max bytes.
 */
static const char *escape(char *dst, size_t cap, const char *s, size_t n,
                          size_t max)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    char unit[16];
    size_t i = 0, o = 0, len, ulen;
    uint32_t cp;

    while (i < n) {
        len = utf8_seq(u + i, n - i, &cp);
        if (len == 0) { /* a byte that is not UTF-8 */
            len = 1;
            ulen = 4;
            unit[0] = '\\';
            unit[1] = 'x';
            unit[2] = hex[u[i] >> 4];
            unit[3] = hex[u[i] & 15];
        } else if (cp_unsafe(cp) && cp < 0x80) {
            ulen = 4;
            unit[0] = '\\';
            unit[1] = 'x';
            unit[2] = hex[cp >> 4];
            unit[3] = hex[cp & 15];
        } else if (cp_unsafe(cp) || (cp >= 0x80 && !term_utf8)) {
            ulen = (size_t)snprintf(unit, sizeof(unit),
                                    cp > 0xffff ? "\\U%08x" : "\\u%04x",
                                    (unsigned)cp);
        } else {
            ulen = len;
            memcpy(unit, u + i, len);
        }
        if (i + len > max || o + ulen + 4 > cap)
            break;
        memcpy(dst + o, unit, ulen);
        o += ulen;
        i += len;
    }
    if (i < n && o + 4 <= cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

/* Columns a string escape() made takes on a terminal: one per character
 * (wide characters are not measured). */
static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
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

/* Print j (borrowed; NULL: a conversion that failed). */
static int print_json_value(json_t *j)
{
    if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) < 0) {
        fprintf(stderr, "resilctl: cannot convert the answer to JSON\n");
        return EXIT_UNREACHABLE;
    }
    putchar('\n');
    return EXIT_OK;
}

static int print_json(const msgpack_object *o)
{
    json_t *j = to_json(o);
    int rc = print_json_value(j);

    json_decref(j);
    return rc;
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
                resil_path(c->r),
                err == EMSGSIZE ? "its answer is too large"
                                : resil_strerror(rc));
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
    size_t rows, cap;     /* rows used / allocated */
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
        if (!row[i])
            goto fail;
    if (t->rows == t->cap) { /* doubling: 100k rows cost O(rows) copies */
        size_t cap = t->cap ? t->cap * 2 : 64;
        char *(*p)[NCOLS] = realloc(t->cell, cap * sizeof(*p));
        if (!p)
            goto fail;
        t->cell = p;
        t->cap = cap;
    }
    memcpy(t->cell[t->rows++], row, sizeof(row));
    return 0;
fail:
    for (i = 0; i < NCOLS; i++)
        free(row[i]); /* free(NULL) for the ones that failed */
    return -1;
}

static void table_print(const struct table *t)
{
    size_t w[NCOLS], r, cw;
    int i, ncols = t->has_forced ? NCOLS : NCOLS - 1;

    for (i = 0; i < ncols; i++) {
        w[i] = strlen(col_title[i]);
        for (r = 0; r < t->rows; r++)
            if ((cw = text_width(t->cell[r][i])) > w[i])
                w[i] = cw;
    }
    for (r = 0; r <= t->rows; r++) {
        for (i = 0; i < ncols; i++) {
            const char *s = r == 0 ? col_title[i] : t->cell[r - 1][i];
            int last = i == ncols - 1;
            size_t pad = w[i] - text_width(s);

            if (col_right[i])
                printf("%*s%s", (int)pad, "", s);
            else if (last)
                printf("%s", s);
            else
                printf("%s%*s", s, (int)pad, "");
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
    uint64_t for_ms;     /* --for, 0 when absent */
    const char *reason;  /* --reason, NULL when absent */
    uint64_t limit;      /* --limit, 0 when absent */
    unsigned topics;     /* --topics, RESIL_TOPIC_* bits; 0 when absent */
    const char *log_day; /* errors --log DAY, NULL when absent */
    const char *log_dir; /* errors --dir DIR, NULL when absent */
};

/* Options a command accepts besides --json (parse_args' opts). */
#define OPT_FORCE 1  /* --for DURATION, --reason TEXT */
#define OPT_LIMIT 2  /* --limit N */
#define OPT_TOPICS 4 /* --topics LIST */
#define OPT_LOG 8    /* --log DAY, --dir DIR */

static const char *const topic_names[] = {"state", "error", "alert", "operator",
                                          "bound"};
#define NTOPICS (sizeof(topic_names) / sizeof(topic_names[0]))

/* "state,error" -> RESIL_TOPIC_* bits ("all": every topic).  0 when the
 * list is empty, has an empty item or an unknown name. */
static unsigned parse_topics(const char *list)
{
    unsigned mask = 0;
    const char *p = list, *end;
    size_t i, n;

    for (;;) {
        end = strchr(p, ',');
        n = end ? (size_t)(end - p) : strlen(p);
        if (n == 3 && !strncmp(p, "all", 3)) {
            mask |= RESIL_TOPIC_ALL;
        } else {
            for (i = 0; i < NTOPICS; i++)
                if (strlen(topic_names[i]) == n &&
                    !strncmp(p, topic_names[i], n))
                    break;
            if (i == NTOPICS)
                return 0; /* empty or unknown */
            mask |= 1u << i;
        }
        if (!end)
            return mask;
        p = end + 1;
    }
}

static int cmd_usage(const struct ctl_cmd *cmd)
{
    fprintf(stderr, "usage: resilctl %s%s%s\n", cmd->name,
            cmd->args[0] ? " " : "", cmd->args);
    return EXIT_USAGE;
}

/*
 * Parse a command's arguments: positionals (between min and max), --json
 * anywhere, and the options in opts (OPT_*).  Returns 0 or an exit status
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
        } else if ((opts & OPT_LIMIT) && !strcmp(s, "--limit")) {
            const char *v = i + 1 < argc ? argv[++i] : "";
            if (strspn(v, "0123456789") != strlen(v) || !*v || strlen(v) > 7 ||
                (a->limit = strtoull(v, NULL, 10)) == 0 ||
                a->limit > STATUS_MAX_KEYS) {
                fprintf(
                    stderr, "resilctl: bad count '%s' for --limit (1..%d)\n",
                    escape(e, sizeof(e), v, strlen(v), 64), STATUS_MAX_KEYS);
                return EXIT_USAGE;
            }
        } else if ((opts & OPT_TOPICS) && !strcmp(s, "--topics")) {
            const char *v = i + 1 < argc ? argv[++i] : "";
            if (!(a->topics = parse_topics(v))) {
                fprintf(stderr,
                        "resilctl: bad topic list '%s' for --topics (comma-"
                        "separated: state, error, alert, operator, bound; or "
                        "all)\n",
                        escape(e, sizeof(e), v, strlen(v), 64));
                return EXIT_USAGE;
            }
        } else if ((opts & OPT_LOG) &&
                   (!strcmp(s, "--log") || !strcmp(s, "--dir"))) {
            if (i + 1 >= argc || !*argv[i + 1]) {
                fprintf(stderr, "resilctl: %s needs a value\n", s);
                return EXIT_USAGE;
            }
            if (s[2] == 'l')
                a->log_day = argv[++i];
            else
                a->log_dir = argv[++i];
        } else if ((opts & OPT_FORCE) &&
                   (!strcmp(s, "--for") || !strcmp(s, "--reason"))) {
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

/*
 * status pages through the keys: each call asks for up to STATUS_PAGE_KEYS
 * keys after the last one seen (`after`, from the previous page's `next`)
 * until a page has no `next`, the wanted count (--limit, or
 * STATUS_MAX_KEYS) is listed, or the daemon misbehaves (a page without
 * keys, or a `next` that does not move forward: stop rather than loop).
 * The count printed is the daemon's `total` from the last page.  --json
 * prints one object: the first page's, with every page's keys, `total`
 * and `health` from the last page, and `next` only when keys were left.
 */
struct status_run {
    struct table t; /* table output */
    json_t *json;   /* --json: the merged result, or NULL */
    size_t shown;   /* keys taken so far */
    uint64_t total; /* the last page's `total` */
    int has_total;
    char health[4 * 32 + 8];
    char next[NEXT_KEY_MAX + 1]; /* `after` of the next page; "" = done */
};

/* Take one page's result.  0, or an exit status (after printing why). */
static int status_page(struct ctl *c, struct status_run *st,
                       const msgpack_object *res, size_t want)
{
    const msgpack_object *keys = proto_map_get(res, "keys");
    const msgpack_object *next = proto_map_get(res, "next");
    char prev[NEXT_KEY_MAX + 1];
    size_t i, n = 0;
    json_t *jk, *all, *one;

    if (keys && keys->type == MSGPACK_OBJECT_ARRAY)
        n = keys->via.array.size;
    if (n > want - st->shown)
        n = want - st->shown; /* a daemon that ignores `limit` */
    if (obj_uint(proto_map_get(res, "total"), &st->total) == 0)
        st->has_total = 1;
    obj_text(st->health, sizeof(st->health), proto_map_get(res, "health"), 32,
             "?");
    if (c->json) {
        if (!(one = to_json(res)))
            goto nomem;
        if (!st->json) {
            st->json = one;
            all = json_object_get(one, "keys");
            while (json_is_array(all) && json_array_size(all) > n)
                json_array_remove(all, json_array_size(all) - 1);
        } else {
            all = json_object_get(st->json, "keys");
            jk = json_object_get(one, "keys");
            for (i = 0; json_is_array(all) && i < n; i++)
                if (json_array_append(all, json_array_get(jk, i)) < 0) {
                    json_decref(one);
                    goto nomem;
                }
            json_object_set(st->json, "total", json_object_get(one, "total"));
            json_object_set(st->json, "health", json_object_get(one, "health"));
            json_decref(one);
        }
    } else {
        for (i = 0; i < n; i++)
            if (table_add(&st->t, &keys->via.array.ptr[i]) < 0)
                goto nomem;
    }
    st->shown += n;
    memcpy(prev, st->next, sizeof(prev));
    st->next[0] = '\0';
    if (!next || next->type == MSGPACK_OBJECT_NIL)
        return 0; /* the last page */
    if (next->type != MSGPACK_OBJECT_STR || n == 0 || next->via.str.size == 0 ||
        next->via.str.size > NEXT_KEY_MAX ||
        memchr(next->via.str.ptr, '\0', next->via.str.size)) {
        fprintf(stderr, "resilctl: resild sent an unusable 'next'; "
                        "listing stopped\n");
        return 0;
    }
    memcpy(st->next, next->via.str.ptr, next->via.str.size);
    st->next[next->via.str.size] = '\0';
    if (prev[0] && strcmp(st->next, prev) <= 0) {
        fprintf(stderr, "resilctl: resild sent a page that does not "
                        "advance; listing stopped\n");
        st->next[0] = '\0';
    }
    return 0;
nomem:
    fprintf(stderr, "resilctl: out of memory\n");
    return EXIT_UNREACHABLE;
}

static int cmd_status(struct ctl *c, int argc, char **argv)
{
    struct status_run st;
    struct cmd_args args;
    struct answer a;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t want, page;
    int rc = parse_args(c, find_command("status"), argc, argv, 0, 1, OPT_LIMIT,
                        &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    memset(&st, 0, sizeof(st));
    want = args.limit ? (size_t)args.limit : STATUS_MAX_KEYS;
    do {
        page = want - st.shown < STATUS_PAGE_KEYS ? want - st.shown
                                                  : STATUS_PAGE_KEYS;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1 + !!args.npos + !!st.next[0]);
        if (args.npos)
            proto_kv_str(&pk, "prefix", args.pos[0]);
        if (st.next[0])
            proto_kv_str(&pk, "after", st.next);
        proto_kv_u64(&pk, "limit", page);
        rc = call(c, "status", &sb, &a);
        msgpack_sbuffer_destroy(&sb);
        if (rc == 0)
            rc = status_page(c, &st, &a.result, want);
        answer_free(&a);
    } while (rc == 0 && st.next[0] && st.shown < want);

    if (rc == 0 && c->json) {
        json_object_del(st.json, "next");
        if (st.next[0])
            json_object_set_new(st.json, "next", json_string(st.next));
        rc = print_json_value(st.json);
    } else if (rc == 0) {
        if (st.t.rows)
            table_print(&st.t);
        else
            printf("no keys%s\n", args.npos ? " match" : " yet");
        if (st.has_total && st.total > st.shown)
            printf("showing %zu of %llu keys%s\n", st.shown,
                   (unsigned long long)st.total,
                   args.limit ? "" : " (narrow with a PREFIX or --limit)");
        printf("health: %s\n", st.health);
    }
    json_decref(st.json);
    table_free(&st.t);
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

/*
 * health exits with the daemon's verdict so that a monitoring system can
 * run it as a check: 0 healthy, 1 degraded, 2 unhealthy, 3 when it cannot
 * tell (unreachable, an error answer, an overall it does not know, or its
 * own usage error -- never 2, which would read as unhealthy).
 */
#define HEALTH_UNKNOWN 3

static int health_code(const msgpack_object *overall)
{
    if (proto_str_eq(overall, "healthy"))
        return 0;
    if (proto_str_eq(overall, "degraded"))
        return 1;
    if (proto_str_eq(overall, "unhealthy"))
        return 2;
    return HEALTH_UNKNOWN;
}

/* Print the health map for people. */
static void print_health(const msgpack_object *h)
{
    char b1[4 * TEXT_SHOW_MAX + 8], b2[4 * TEXT_SHOW_MAX + 8];
    const msgpack_object *o = proto_map_get(h, "open");
    const msgpack_object *sv = proto_map_get(h, "services");
    const msgpack_object *cp = proto_map_get(h, "components");
    size_t w = 3, n = 0, cw;
    uint64_t u;
    uint32_t i;

    printf("overall: %s\n",
           obj_text(b1, sizeof(b1), proto_map_get(h, "overall"), 32, "?"));
    if (o && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size) {
        printf("open (%u):", (unsigned)o->via.array.size);
        for (i = 0; i < o->via.array.size; i++)
            printf(" %s", obj_text(b1, sizeof(b1), &o->via.array.ptr[i],
                                   KEY_SHOW_MAX, "?"));
        printf("\n");
    } else {
        printf("open: none\n");
    }
    /* Services that are not operational (critical keys that are fine are
     * in the map too: left out here, shown by --json). */
    if (sv && sv->type == MSGPACK_OBJECT_MAP)
        for (i = 0; i < sv->via.map.size; i++)
            if (!proto_str_eq(&sv->via.map.ptr[i].val, "operational")) {
                n++;
                cw =
                    text_width(obj_text(b1, sizeof(b1), &sv->via.map.ptr[i].key,
                                        KEY_SHOW_MAX, "?"));
                w = cw > w ? cw : w;
            }
    if (n) {
        printf("not operational (%zu):\n", n);
        for (i = 0; i < sv->via.map.size; i++) {
            if (proto_str_eq(&sv->via.map.ptr[i].val, "operational"))
                continue;
            obj_text(b1, sizeof(b1), &sv->via.map.ptr[i].key, KEY_SHOW_MAX,
                     "?");
            printf("  %s%*s  %s\n", b1, (int)(w - text_width(b1)), "",
                   obj_text(b2, sizeof(b2), &sv->via.map.ptr[i].val, 32, "?"));
        }
    } else {
        printf("not operational: none\n");
    }
    if (proto_map_get(h, "services_truncated"))
        printf("  (more: resild lists at most 1000)\n");
    if (obj_uint(proto_map_get(h, "recent_errors"), &u) == 0)
        printf("recent errors (60 s): %llu\n", (unsigned long long)u);
    if (cp && cp->type == MSGPACK_OBJECT_MAP && cp->via.map.size) {
        printf("components:\n");
        for (i = 0; i < cp->via.map.size; i++) {
            const msgpack_object *c = &cp->via.map.ptr[i].val;
            const msgpack_object *ok = proto_map_get(c, "ok");
            printf("  %s  %s  %s\n",
                   obj_text(b1, sizeof(b1), &cp->via.map.ptr[i].key, 64, "?"),
                   ok && ok->type == MSGPACK_OBJECT_BOOLEAN
                       ? (ok->via.boolean ? "ok" : "FAIL")
                       : "?",
                   obj_text(b2, sizeof(b2), proto_map_get(c, "detail"),
                            TEXT_SHOW_MAX, ""));
        }
    } else {
        printf("components: none\n");
    }
}

static int cmd_health(struct ctl *c, int argc, char **argv)
{
    char e[4 * 32 + 8];
    struct cmd_args args;
    struct answer a;
    int code,
        rc = parse_args(c, find_command("health"), argc, argv, 0, 0, 0, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : HEALTH_UNKNOWN;
    if (call(c, "health", NULL, &a) != 0) {
        answer_free(&a);
        return HEALTH_UNKNOWN;
    }
    code = health_code(proto_map_get(&a.result, "overall"));
    if (c->json) {
        if (print_json(&a.result) != EXIT_OK)
            code = HEALTH_UNKNOWN;
    } else {
        print_health(&a.result);
    }
    if (code == HEALTH_UNKNOWN)
        fprintf(stderr,
                "resilctl: resild sent an unknown overall health "
                "'%s'\n",
                obj_text(e, sizeof(e), proto_map_get(&a.result, "overall"), 32,
                         "(none)"));
    answer_free(&a);
    return code;
}

/* metrics prints the exposition text as is; a line that holds a control
 * character or invalid UTF-8 is escaped like any peer text. */
/* reload: the daemon re-reads its configuration file (admin only). */
static int cmd_reload(struct ctl *c, int argc, char **argv)
{
    char ch[4 * 256 + 8];
    struct cmd_args args;
    struct answer a;
    uint64_t n = 0;
    int rc = parse_args(c, find_command("reload"), argc, argv, 0, 0, 0, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = call(c, "reload", NULL, &a)) == 0) {
        if (c->json) {
            rc = print_json(&a.result);
        } else {
            obj_uint(proto_map_get(&a.result, "policies"), &n);
            printf("reloaded: %llu policies (%s)\n", (unsigned long long)n,
                   obj_text(ch, sizeof(ch), proto_map_get(&a.result, "changes"),
                            256, "?"));
        }
    }
    answer_free(&a);
    return rc;
}

static int cmd_metrics(struct ctl *c, int argc, char **argv)
{
    struct cmd_args args;
    struct answer a;
    const msgpack_object *t;
    const char *p, *end, *nl;
    char *buf = NULL;
    int rc = parse_args(c, find_command("metrics"), argc, argv, 0, 0, 0, &args);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = call(c, "metrics", NULL, &a)) != 0) {
        answer_free(&a);
        return rc;
    }
    t = proto_map_get(&a.result, "text");
    if (c->json) {
        rc = print_json(&a.result);
    } else if (!t || t->type != MSGPACK_OBJECT_STR) {
        fprintf(stderr, "resilctl: resild sent metrics without text\n");
        rc = EXIT_UNREACHABLE;
    } else if (!(buf = malloc(4 * (size_t)t->via.str.size + 8))) {
        fprintf(stderr, "resilctl: out of memory\n");
        rc = EXIT_UNREACHABLE;
    } else {
        p = t->via.str.ptr;
        end = p + t->via.str.size;
        while (p < end) {
            nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                nl = end;
            escape(buf, 4 * (size_t)t->via.str.size + 8, p, (size_t)(nl - p),
                   (size_t)(nl - p));
            printf("%s\n", buf);
            p = nl + 1;
        }
    }
    free(buf);
    answer_free(&a);
    return rc;
}

/* --- watch ---------------------------------------------------------------
 * One line per event, flushed at once: UTC time, topic, key, what
 * happened; --json prints each event map as one line of JSON (JSON Lines).
 * The loop waits in ppoll() with SIGINT/SIGTERM unblocked only there, so a
 * signal is never lost between the check and the wait. */

static volatile sig_atomic_t watch_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

struct line {
    char b[8192];
    size_t n;
};

static void line_add(struct line *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void line_add(struct line *l, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (l->n >= sizeof(l->b) - 1)
        return;
    va_start(ap, fmt);
    k = vsnprintf(l->b + l->n, sizeof(l->b) - l->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        l->n += (size_t)k < sizeof(l->b) - l->n ? (size_t)k
                                                : sizeof(l->b) - 1 - l->n;
}

/* Escaped string field `name` of map m into dst, or dflt. */
static const char *ev_text(char *dst, size_t cap, const msgpack_object *m,
                           const char *name, size_t max, const char *dflt)
{
    return obj_text(dst, cap, proto_map_get(m, name), max, dflt);
}

/* What an event says, in words (m is the event map). */
static void describe_event(struct line *l, const msgpack_object *m)
{
    char a[4 * TEXT_SHOW_MAX + 8], b[4 * TEXT_SHOW_MAX + 8];
    char c3[4 * TEXT_SHOW_MAX + 8], d[64];
    const msgpack_object *type = proto_map_get(m, "type");
    const msgpack_object *o;
    uint64_t u;
    uint32_t i;

    if (proto_str_eq(type, "transition")) {
        line_add(l, "%s -> %s (%s)", ev_text(a, sizeof(a), m, "from", 32, "?"),
                 ev_text(b, sizeof(b), m, "to", 32, "?"),
                 ev_text(c3, sizeof(c3), m, "cause", 32, "?"));
        o = proto_map_get(m, "origin");
        if (o && !proto_str_eq(o, "local"))
            line_add(l, " from %s", obj_text(a, sizeof(a), o, 64, "?"));
    } else if (proto_str_eq(type, "venue_pause")) {
        u = 0;
        obj_uint(proto_map_get(m, "paused_ms"), &u);
        line_add(l, "venue paused %s (429 reported on %s)",
                 fmt_duration(d, sizeof(d), u),
                 ev_text(a, sizeof(a), m, "reported_on", KEY_SHOW_MAX, "?"));
    } else if (proto_str_eq(type, "venue_resync")) {
        u = 0;
        obj_uint(proto_map_get(m, "remaining"), &u);
        line_add(l, "venue resync, %llu remaining", (unsigned long long)u);
    } else if (proto_str_eq(type, "heartbeat_lost") ||
               proto_str_eq(type, "heartbeat_restored")) {
        u = 0;
        obj_uint(proto_map_get(m, "silent_ms"), &u);
        line_add(l, "heartbeat %s (silent %s)",
                 proto_str_eq(type, "heartbeat_lost") ? "lost" : "restored",
                 fmt_duration(d, sizeof(d), u));
    } else if (proto_str_eq(type, "outcome")) {
        line_add(l, "%s", ev_text(a, sizeof(a), m, "outcome", 32, "?"));
        ev_text(a, sizeof(a), m, "class", 64, "");
        if (a[0])
            line_add(l, " %s", a);
        line_add(l, " %s", ev_text(a, sizeof(a), m, "severity", 32, "?"));
        o = proto_map_get(m, "transient");
        if (o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean)
            line_add(l, " transient");
        o = proto_map_get(m, "stale");
        if (o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean)
            line_add(l, " stale");
        line_add(l, " via %s", ev_text(a, sizeof(a), m, "source", 32, "?"));
        if (obj_uint(proto_map_get(m, "latency_ms"), &u) == 0)
            line_add(l, " %llums", (unsigned long long)u);
        ev_text(a, sizeof(a), m, "message", TEXT_SHOW_MAX, "");
        if (a[0])
            line_add(l, ": %s", a);
        ev_text(a, sizeof(a), m, "correlation_id", 64, "");
        if (a[0])
            line_add(l, " [%s]", a);
    } else if (proto_str_eq(type, "force")) {
        line_add(l, "forced %s", ev_text(a, sizeof(a), m, "state", 32, "?"));
        if (obj_uint(proto_map_get(m, "ttl_ms"), &u) == 0 && u > 0)
            line_add(l, " for %s", fmt_duration(d, sizeof(d), u));
        if (obj_uint(proto_map_get(m, "uid"), &u) == 0)
            line_add(l, " by uid %llu", (unsigned long long)u);
        ev_text(a, sizeof(a), m, "reason", TEXT_SHOW_MAX, "");
        if (a[0])
            line_add(l, ": %s", a);
    } else if (proto_str_eq(type, "reset")) {
        line_add(l, "reset");
        if (obj_uint(proto_map_get(m, "uid"), &u) == 0)
            line_add(l, " by uid %llu", (unsigned long long)u);
    } else if (proto_str_eq(type, "bound_hit")) {
        line_add(l, "bound %s hit", ev_text(a, sizeof(a), m, "bound", 64, "?"));
        ev_text(a, sizeof(a), m, "detail", TEXT_SHOW_MAX, "");
        if (a[0])
            line_add(l, ": %s", a);
    } else {
        /* A type this resilctl does not know: its name and the other
         * scalar fields as name=value. */
        line_add(l, "%s", obj_text(a, sizeof(a), type, 64, "?"));
        for (i = 0; i < m->via.map.size; i++) {
            const msgpack_object *k = &m->via.map.ptr[i].key;
            const msgpack_object *v = &m->via.map.ptr[i].val;
            if (proto_str_eq(k, "topic") || proto_str_eq(k, "type") ||
                proto_str_eq(k, "key") || proto_str_eq(k, "ts"))
                continue;
            obj_text(a, sizeof(a), k, 64, "?");
            if (v->type == MSGPACK_OBJECT_STR)
                line_add(l, " %s=%s", a,
                         obj_text(b, sizeof(b), v, TEXT_SHOW_MAX, ""));
            else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                line_add(l, " %s=%llu", a, (unsigned long long)v->via.u64);
            else if (v->type == MSGPACK_OBJECT_BOOLEAN)
                line_add(l, " %s=%s", a, v->via.boolean ? "true" : "false");
        }
    }
}

struct watch {
    struct ctl *c;
    msgpack_zone zone; /* decoded event, cleared after each */
    int failed;        /* stdout failed: stop */
};

/* The event callback: one line per event, flushed. */
static void watch_event(const struct resil_event *ev, void *arg)
{
    struct watch *w = arg;
    char a[4 * TEXT_SHOW_MAX + 8], b[4 * KEY_SHOW_MAX + 8];
    struct line l = {.n = 0};
    msgpack_object m;
    struct tm tm;
    time_t sec;
    size_t off = 0;
    uint64_t ts = ev->ts_ms;

    if (w->failed)
        return;
    if (msgpack_unpack(ev->raw, ev->raw_len, &off, &w->zone, &m) !=
            MSGPACK_UNPACK_SUCCESS ||
        m.type != MSGPACK_OBJECT_MAP) {
        msgpack_zone_clear(&w->zone);
        return; /* libresil hands over maps only */
    }
    if (w->c->json) {
        json_t *j = to_json(&m);
        if (!j || json_dumpf(j, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) < 0)
            w->failed = 1;
        json_decref(j);
        putchar('\n');
    } else {
        if (!ts) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            ts = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
        }
        sec = (time_t)(ts / 1000);
        gmtime_r(&sec, &tm);
        line_add(&l, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ  %-8s  %s  ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, (unsigned)(ts % 1000),
                 ev_text(a, sizeof(a), &m, "topic", 16, "?"),
                 ev_text(b, sizeof(b), &m, "key", KEY_SHOW_MAX, "-"));
        describe_event(&l, &m);
        printf("%s\n", l.b);
    }
    msgpack_zone_clear(&w->zone);
    if (fflush(stdout) != 0) {
        w->failed = 1;
        w->c->reader_gone = errno == EPIPE;
    }
}

/* 1 when stdin is a pipe or socket: its EOF stops watch (a terminal's
 * stdin is never read, so a background watch is not stopped by SIGTTIN). */
static int stdin_is_pipe(void)
{
    struct stat st;

    return fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

#define WATCH_BATCH 256 /* events handed over per resil_poll_events */

static int cmd_watch(struct ctl *c, int argc, char **argv)
{
    char e1[4 * 64 + 8];
    struct resil_topics_result tr;
    struct cmd_args args;
    struct watch w = {.c = c};
    struct sigaction sa;
    struct pollfd pf[2];
    sigset_t block, waitmask;
    char junk[512];
    int rc, n, npf, use_stdin = stdin_is_pipe();

    rc = parse_args(c, find_command("watch"), argc, argv, 0, 0, OPT_TOPICS,
                    &args);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    /* SIGINT/SIGTERM only interrupt the wait (ppoll); a stopped reader of
     * stdout is an EPIPE, not a kill. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGTERM);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    msgpack_zone_init(&w.zone, 4096);

    errno = 0;
    rc = resil_subscribe(c->r, args.topics ? args.topics : RESIL_TOPIC_ALL,
                         watch_event, &w, c->deadline_ms, &tr);
    if (rc == RESIL_EREMOTE) {
        fprintf(
            stderr, "resilctl: resild refused to subscribe: %s\n",
            escape(e1, sizeof(e1), tr.error_code, strlen(tr.error_code), 64));
        rc = EXIT_REMOTE;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "resilctl: cannot reach resild at %s: %s\n",
                resil_path(c->r),
                rc == RESIL_ETIMEDOUT ? "no answer in time"
                : errno               ? strerror(errno)
                                      : resil_strerror(rc));
        rc = EXIT_UNREACHABLE;
        goto out;
    }
    /* Said once the subscription stands (tests wait for it), on stderr
     * so that stdout stays events only. */
    fprintf(stderr, "resilctl: watching resild at %s; Ctrl-C stops\n",
            resil_path(c->r));
    rc = EXIT_OK;
    while (!watch_stop && !w.failed) {
        npf = 1;
        pf[0].fd = resil_fd(c->r);
        pf[0].events = POLLIN;
        pf[0].revents = 0;
        if (use_stdin) {
            pf[1].fd = 0;
            pf[1].events = POLLIN;
            pf[1].revents = 0;
            npf = 2;
        }
        n = ppoll(pf, (nfds_t)npf, NULL, &waitmask);
        if (n < 0) {
            if (errno == EINTR)
                continue; /* watch_stop says whether to go on */
            fprintf(stderr, "resilctl: poll: %s\n", strerror(errno));
            rc = EXIT_UNREACHABLE;
            break;
        }
        if (npf == 2 && pf[1].revents) {
            ssize_t k = read(0, junk, sizeof(junk));
            if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
                break; /* EOF on stdin: stop, exit 0 */
        }
        if (!pf[0].revents)
            continue;
        do
            n = resil_poll_events(c->r, WATCH_BATCH);
        while (n == WATCH_BATCH && !w.failed);
        if (n < 0) {
            fprintf(stderr, "resilctl: lost resild at %s: %s\n",
                    resil_path(c->r),
                    n == RESIL_ECONN ? "connection closed" : resil_strerror(n));
            rc = EXIT_UNREACHABLE;
            break;
        }
    }
    if (w.failed && !c->reader_gone) {
        fprintf(stderr, "resilctl: cannot write the events\n");
        rc = EXIT_UNREACHABLE;
    }
out:
    msgpack_zone_destroy(&w.zone);
    return rc;
}

/* --- errors --log: the error log, read from its directory ------------
 * The daemon writes one JSON object per line to DIR/errors-YYYYMMDD.jsonl
 * (daemon/errlog.h); this reads a day's file directly, so it works with
 * the daemon down.  --json passes every line that is a JSON object through
 * as written (JSON Lines); a torn or foreign line is skipped and counted
 * on stderr either way. */

#define ERRLOG_DEFAULT_DIR "/var/log/resild" /* the unit's LogsDirectory */

/* "today", "yesterday" (UTC), YYYYMMDD or YYYY-MM-DD into *ymd. */
static int parse_day(const char *s, unsigned *ymd)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, m, d;
    char digits[9];
    size_t i, n = 0;

    if (!strcmp(s, "today") || !strcmp(s, "yesterday")) {
        time_t t = time(NULL) - (s[0] == 'y' ? 86400 : 0);
        struct tm tm;
        gmtime_r(&t, &tm);
        *ymd = (unsigned)(tm.tm_year + 1900) * 10000 +
               (unsigned)(tm.tm_mon + 1) * 100 + (unsigned)tm.tm_mday;
        return 0;
    }
    if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') {
        for (i = 0; i < 10; i++)
            if (i != 4 && i != 7)
                digits[n++] = s[i];
    } else if (strlen(s) == 8) {
        memcpy(digits, s, 8);
        n = 8;
    }
    if (n != 8)
        return -1;
    digits[8] = '\0';
    if (strspn(digits, "0123456789") != 8)
        return -1;
    *ymd = (unsigned)strtoul(digits, NULL, 10);
    y = *ymd / 10000;
    m = *ymd / 100 % 100;
    d = *ymd % 100;
    if (y < 1970 || m < 1 || m > 12 || d < 1 || (int)d > mdays[m - 1] ||
        (m == 2 && d == 29 && (y % 4 || (y % 100 == 0 && y % 400))))
        return -1;
    return 0;
}

/* A string member of j escaped for the table (max source bytes), or "-". */
static const char *jtext(char *buf, size_t cap, json_t *j, const char *name,
                         size_t max)
{
    json_t *v = json_object_get(j, name);

    if (!json_is_string(v))
        return "-";
    return escape(buf, cap, json_string_value(v), json_string_length(v), max);
}

static void errlog_row(json_t *j)
{
    char key[4 * 40 + 8], cls[4 * 32 + 8], cid[4 * 24 + 8];
    char msg[4 * TEXT_SHOW_MAX + 8], lat[24] = "-", when[16] = "?";
    const char *t = json_string_value(json_object_get(j, "time"));
    const char *ev = json_string_value(json_object_get(j, "event"));
    json_t *l = json_object_get(j, "latency_ms");

    /* "2024-05-01T12:34:56.789Z": the day is the file's, show the time. */
    if (t && strlen(t) == 24 && t[10] == 'T')
        snprintf(when, sizeof(when), "%.12s", t + 11);
    if (ev && !strcmp(ev, "dropped")) {
        printf("%-12s  -- %lld lines dropped here (%s) --\n", when,
               (long long)json_integer_value(json_object_get(j, "lines")),
               jtext(msg, sizeof(msg), j, "reason", 64));
        return;
    }
    if (json_is_integer(l))
        snprintf(lat, sizeof(lat), "%lld", (long long)json_integer_value(l));
    jtext(key, sizeof(key), j, "key", 40);
    jtext(cls, sizeof(cls), j, "class", 32);
    jtext(cid, sizeof(cid), j, "correlation_id", 24);
    jtext(msg, sizeof(msg), j, "message", TEXT_SHOW_MAX);
    printf("%-12s  %-*s  %-*s  %-8s  %-7s  %-14s  %7s  %-*s  %s\n", when,
           (int)(24 + strlen(key) - text_width(key)), key,
           (int)(20 + strlen(cls) - text_width(cls)), cls,
           jtext((char[32]){0}, 32, j, "severity", 8),
           jtext((char[32]){0}, 32, j, "outcome", 8),
           jtext((char[64]){0}, 64, j, "source", 14), lat,
           (int)(16 + strlen(cid) - text_width(cid)), cid, msg);
}

/* --- errors (issue 11): the live analytics view; --log reads a day ------- */

static const msgpack_object *arr_at(const msgpack_object *a, size_t i)
{
    return a && a->type == MSGPACK_OBJECT_ARRAY && i < a->via.array.size
               ? &a->via.array.ptr[i]
               : NULL;
}

static size_t arr_len(const msgpack_object *a)
{
    return a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
}

/* A {name: count} map as a two-column table under title. */
static void print_counts(const char *title, const msgpack_object *m)
{
    char e[4 * KEY_SHOW_MAX + 8];
    uint32_t i;

    if (!m || m->type != MSGPACK_OBJECT_MAP || m->via.map.size == 0)
        return;
    printf("\n%-40s %10s\n", title, "COUNT");
    for (i = 0; i < m->via.map.size; i++) {
        uint64_t n = 0;
        obj_uint(&m->via.map.ptr[i].val, &n);
        printf(
            "%-40s %10llu\n",
            obj_text(e, sizeof(e), &m->via.map.ptr[i].key, KEY_SHOW_MAX, "?"),
            (unsigned long long)n);
    }
}

/* The arrow of a trend direction. */
static const char *trend_arrow(const char *dir)
{
    if (!strcmp(dir, "up"))
        return term_utf8 ? "\xe2\x86\x91" : "^";
    if (!strcmp(dir, "down"))
        return term_utf8 ? "\xe2\x86\x93" : "v";
    return term_utf8 ? "\xe2\x86\x92" : "-";
}

static void print_errors(const msgpack_object *r, const char *since)
{
    const msgpack_object *top = proto_map_get(r, "top");
    const msgpack_object *trends = proto_map_get(r, "trends");
    const msgpack_object *corr = proto_map_get(r, "correlations");
    const msgpack_object *pred = proto_map_get(r, "predictions");
    const msgpack_object *rec = proto_map_get(r, "recent");
    const msgpack_object *sev = proto_map_get(r, "by_severity");
    char k[4 * KEY_SHOW_MAX + 8], k2[4 * KEY_SHOW_MAX + 8];
    char cl[4 * 64 + 8], s[64], msg[4 * TEXT_SHOW_MAX + 8];
    uint64_t total = 0, series = 0, evicted = 0, n;
    double rate = 0, x, y;
    size_t i;

    obj_uint(proto_map_get(r, "total"), &total);
    obj_num(proto_map_get(r, "rate_per_min"), &rate);
    obj_uint(proto_map_get(r, "series"), &series);
    obj_uint(proto_map_get(r, "evicted"), &evicted);
    printf("errors over the last %s: %llu (%.2f/min); %llu series, %llu "
           "evicted\n",
           since, (unsigned long long)total, rate, (unsigned long long)series,
           (unsigned long long)evicted);
    if (sev && sev->type == MSGPACK_OBJECT_MAP) {
        printf("by severity:");
        for (i = 0; i < sev->via.map.size; i++) {
            n = 0;
            obj_uint(&sev->via.map.ptr[i].val, &n);
            printf("  %s %llu",
                   obj_text(s, sizeof(s), &sev->via.map.ptr[i].key, 16, "?"),
                   (unsigned long long)n);
        }
        printf("\n");
    }
    print_counts("CLASS", proto_map_get(r, "by_class"));
    print_counts("KEY", proto_map_get(r, "by_key"));
    if (arr_len(top)) {
        printf("\n%-28s %-22s %-9s %8s  %s\n", "KEY", "CLASS", "SEVERITY",
               "COUNT", "TREND");
        for (i = 0; i < arr_len(top); i++) {
            const msgpack_object *t = arr_at(top, i), *tr = arr_at(trends, i);
            char dir[16];
            n = 0;
            x = y = 0;
            obj_uint(proto_map_get(t, "count"), &n);
            obj_text(dir, sizeof(dir), proto_map_get(tr, "direction"), 8,
                     "flat");
            obj_num(proto_map_get(tr, "strength"), &x);
            obj_num(proto_map_get(tr, "slope_per_min"), &y);
            printf(
                "%-28s %-22s %-9s %8llu  %s %s (strength %.2f, %+.2f/min "
                "per min)\n",
                obj_text(k, sizeof(k), proto_map_get(t, "key"), KEY_SHOW_MAX,
                         "?"),
                obj_text(cl, sizeof(cl), proto_map_get(t, "class"), 64, "?"),
                obj_text(s, sizeof(s), proto_map_get(t, "severity"), 16, "?"),
                (unsigned long long)n, trend_arrow(dir), dir, x, y);
        }
    }
    if (arr_len(corr)) {
        printf("\ncorrelations (root-cause hints):\n");
        for (i = 0; i < arr_len(corr); i++) {
            const msgpack_object *o = arr_at(corr, i);
            n = 0;
            x = 0;
            obj_uint(proto_map_get(o, "lag_s"), &n);
            obj_num(proto_map_get(o, "r"), &x);
            obj_text(k, sizeof(k), proto_map_get(o, "leader"), KEY_SHOW_MAX,
                     "?");
            obj_text(k2, sizeof(k2), proto_map_get(o, "follower"), KEY_SHOW_MAX,
                     "?");
            if (n)
                printf("  %s leads %s by %llu s (r=%.2f)\n", k, k2,
                       (unsigned long long)n, x);
            else
                printf("  %s and %s fail together (r=%.2f)\n", k, k2, x);
        }
    }
    if (arr_len(pred)) {
        printf("\npredicted trips:\n");
        for (i = 0; i < arr_len(pred); i++) {
            const msgpack_object *o = arr_at(pred, i);
            n = 0;
            x = y = 0;
            obj_uint(proto_map_get(o, "eta_s"), &n);
            obj_num(proto_map_get(o, "failure_rate"), &x);
            obj_num(proto_map_get(o, "threshold"), &y);
            printf("  %s: failure rate %.1f%% rising toward %.0f%%; opens "
                   "in about %llu s\n",
                   obj_text(k, sizeof(k), proto_map_get(o, "key"), KEY_SHOW_MAX,
                            "?"),
                   x, y, (unsigned long long)n);
        }
    }
    if (arr_len(rec)) {
        printf("\nrecent (newest first):\n");
        for (i = 0; i < arr_len(rec); i++) {
            const msgpack_object *o = arr_at(rec, i);
            char when[32] = "?", cid[4 * 64 + 8];
            uint64_t ts = 0;
            if (obj_uint(proto_map_get(o, "ts"), &ts) == 0) {
                time_t tt = (time_t)(ts / 1000);
                struct tm tm;
                if (localtime_r(&tt, &tm))
                    snprintf(when, sizeof(when), "%02d:%02d:%02d.%03u",
                             tm.tm_hour, tm.tm_min, tm.tm_sec,
                             (unsigned)(ts % 1000));
            }
            obj_text(cid, sizeof(cid), proto_map_get(o, "correlation_id"), 64,
                     "");
            printf(
                "  %s  %s  %s  %s  \"%s\"%s%s\n", when,
                obj_text(k, sizeof(k), proto_map_get(o, "key"), KEY_SHOW_MAX,
                         "?"),
                obj_text(cl, sizeof(cl), proto_map_get(o, "class"), 64, "?"),
                obj_text(s, sizeof(s), proto_map_get(o, "severity"), 16, "?"),
                obj_text(msg, sizeof(msg), proto_map_get(o, "message"),
                         TEXT_SHOW_MAX, ""),
                cid[0] ? "  cid=" : "", cid);
        }
    }
}

/* errors --log DAY [--dir DIR]: a day of the error log, read from its
 * file (works with the daemon down). */
static int errors_log(struct ctl *c, const char *log_day, const char *dir)
{
    char path[4200], e[4 * 64 + 8], *line = NULL;
    size_t cap = 0, shown = 0, bad = 0;
    struct stat st;
    unsigned day;
    ssize_t n;
    FILE *f;

    if (parse_day(log_day, &day) < 0) {
        fprintf(stderr,
                "resilctl: bad day '%s' for --log (YYYY-MM-DD, YYYYMMDD, "
                "today or yesterday; days are UTC)\n",
                escape(e, sizeof(e), log_day, strlen(log_day), 64));
        return EXIT_USAGE;
    }
    if (!dir)
        dir = ERRLOG_DEFAULT_DIR;
    if (strlen(dir) > 4096) {
        fprintf(stderr, "resilctl: --dir too long\n");
        return EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "%s/errors-%08u.jsonl", dir, day);
    /* Never block on a FIFO planted where the file goes: only a regular
     * file is read. */
    if (!(f = fopen(path, "re")) || fstat(fileno(f), &st) < 0 ||
        !S_ISREG(st.st_mode)) {
        int err = f ? EINVAL : errno;
        if (f)
            fclose(f);
        escape(e, sizeof(e), path, strlen(path), 64);
        if (err == ENOENT)
            fprintf(stderr,
                    "resilctl: no error log for %04u-%02u-%02u in %s (no "
                    "failures that day, or the log is in another --dir)\n",
                    day / 10000, day / 100 % 100, day % 100,
                    escape(e, sizeof(e), dir, strlen(dir), 200));
        else
            fprintf(stderr, "resilctl: cannot read %s: %s\n", e, strerror(err));
        return EXIT_REMOTE;
    }
    if (!c->json)
        printf("%-12s  %-24s  %-20s  %-8s  %-7s  %-14s  %7s  %-16s  %s\n",
               "TIME (UTC)", "KEY", "CLASS", "SEVERITY", "OUTCOME", "SOURCE",
               "LAT_MS", "CORRELATION", "MESSAGE");
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t jerr;
        size_t len = (size_t)n;
        json_t *j;
        if (line[len - 1] == '\n')
            len--;
        j = json_loadb(line, len, 0, &jerr);
        if (!json_is_object(j)) {
            bad++;
            json_decref(j);
            continue;
        }
        if (c->json) {
            fwrite(line, 1, len, stdout);
            putchar('\n');
        } else {
            errlog_row(j);
        }
        shown++;
        json_decref(j);
        if (ferror(stdout)) {
            if (errno == EPIPE)
                c->reader_gone = 1;
            break;
        }
    }
    free(line);
    fclose(f);
    if (!c->json)
        printf("%zu lines\n", shown);
    if (bad)
        fprintf(stderr,
                "resilctl: %zu lines of %s are not JSON objects (torn by a "
                "crash, or not resild's): skipped\n",
                bad, escape(e, sizeof(e), path, strlen(path), 64));
    return EXIT_OK;
}

static int cmd_errors(struct ctl *c, int argc, char **argv)
{
    static const char *const sevs[] = {"low", "medium", "high", "critical"};
    const struct ctl_cmd *cmd = find_command("errors");
    const char *key = NULL, *prefix = NULL, *sev = NULL, *day = NULL;
    const char *logdir = NULL;
    char e[4 * 64 + 8], since_txt[64] = "1h";
    uint64_t since_ms = 3600000, top = 10;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct answer a;
    int i, rc;
    size_t j;

    for (i = 0; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "--json")) {
            c->json = 1;
            continue;
        }
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            printf("usage: resilctl %s %s\n  %s\n  example: %s\n", cmd->name,
                   cmd->args, cmd->summary, cmd->example);
            return EXIT_OK;
        }
        if (strcmp(s, "--key") && strcmp(s, "--prefix") &&
            strcmp(s, "--since") && strcmp(s, "--severity") &&
            strcmp(s, "--top") && strcmp(s, "--log") && strcmp(s, "--dir")) {
            fprintf(stderr, "resilctl: errors: unknown argument '%s'\n",
                    escape(e, sizeof(e), s, strlen(s), 64));
            return cmd_usage(cmd);
        }
        if (!v) {
            fprintf(stderr, "resilctl: %s needs a value\n", s);
            return EXIT_USAGE;
        }
        i++;
        if (!strcmp(s, "--key"))
            key = v;
        else if (!strcmp(s, "--prefix"))
            prefix = v;
        else if (!strcmp(s, "--severity"))
            sev = v;
        else if (!strcmp(s, "--log"))
            day = v;
        else if (!strcmp(s, "--dir"))
            logdir = v;
        else if (!strcmp(s, "--since")) {
            if (parse_duration(v, &since_ms) < 0 || since_ms < 1000 ||
                since_ms > 86400000) {
                fprintf(stderr,
                        "resilctl: bad duration '%s' for --since (1s..1d, "
                        "e.g. 15m)\n",
                        escape(e, sizeof(e), v, strlen(v), 64));
                return EXIT_USAGE;
            }
            snprintf(since_txt, sizeof(since_txt), "%s", v);
        } else if (strspn(v, "0123456789") != strlen(v) || !*v ||
                   strlen(v) > 3 || (top = strtoull(v, NULL, 10)) < 1 ||
                   top > 100) {
            fprintf(stderr, "resilctl: bad count '%s' for --top (1..100)\n",
                    escape(e, sizeof(e), v, strlen(v), 64));
            return EXIT_USAGE;
        }
    }
    if (key && prefix) {
        fprintf(stderr, "resilctl: errors: give --key or --prefix, not both\n");
        return EXIT_USAGE;
    }
    if (sev) {
        for (j = 0; j < 4 && strcmp(sev, sevs[j]); j++)
            ;
        if (j == 4) {
            fprintf(stderr,
                    "resilctl: bad severity '%s' (low, medium, high, "
                    "critical)\n",
                    escape(e, sizeof(e), sev, strlen(sev), 64));
            return EXIT_USAGE;
        }
    }
    if (logdir && !day) {
        fprintf(stderr, "resilctl: errors: --dir goes with --log DAY\n");
        return EXIT_USAGE;
    }
    if (day)
        return errors_log(c, day, logdir);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2 + !!key + !!prefix + !!sev);
    if (key)
        proto_kv_str(&pk, "key", key);
    if (prefix)
        proto_kv_str(&pk, "prefix", prefix);
    if (sev)
        proto_kv_str(&pk, "min_severity", sev);
    proto_kv_u64(&pk, "window_s", (since_ms + 999) / 1000);
    proto_kv_u64(&pk, "top", top);
    if ((rc = call(c, "errors", &sb, &a)) == 0) {
        if (c->json)
            rc = print_json(&a.result);
        else
            print_errors(&a.result, since_txt);
    }
    answer_free(&a);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* --- end errors ----------------------------------------------------------- */

/* --- top (issue 11): the live full-screen view ----------------------------
 * `resilctl top` redraws every TOP_TICK_MS, worst trouble first, as many
 * keys as fit on the screen.  Each refresh asks, all bounded:
 *   health                      the keys not operational (<= 1000)
 *   errors {window_s 60, top 1} failures per key over the last 60 s
 *                               (by_key, the 100 busiest)
 *   status {key K}              per shown key: state, failures, limiter,
 *                               bulkhead (<= screen rows calls)
 *   status {limit N}            the first N keys by name, to fill the rest
 *                               of the screen when little is in trouble
 * so a refresh costs O(screen rows + troubled keys), never a walk of
 * every key.  Order: unavailable, then degraded, then failures in the
 * last 60 s (most first), then name.
 *
 * The sparkline is failures per refresh (about per second) over the last
 * TOP_SPARK_S refreshes, from the change of the key's lifetime `failures`
 * (status) between refreshes: the daemon keeps no per-key series on the
 * wire, and asking `errors` for 60 windows each second would cost the
 * daemon's loop ~60 analytics walks.  So it fills from the moment top
 * started (and from the moment a key is first shown).  Rows are scaled to
 * their own peak, the peak shown as the ERR/60S figure is the daemon's.
 *
 * ncurses (ncursesw, Debian's libncurses-dev) owns the terminal: it knows
 * the terminal's sequences from terminfo and restores it in endwin(),
 * which every exit path after initscr() passes through (one cleanup
 * label; SIGINT/SIGTERM/SIGHUP only set a flag the loop checks).  With
 * stdin or stdout not a terminal (or a TERM terminfo does not know), top
 * prints one plain snapshot (--limit N rows, default TOP_SNAPSHOT_ROWS)
 * and exits. */

#define TOP_TICK_MS 1000
#define TOP_SPARK_S 60          /* sparkline samples, one per refresh */
#define TOP_ROWS_MAX 500        /* rows shown at most (a very tall screen) */
#define TOP_SNAPSHOT_ROWS 50    /* rows of the plain snapshot by default */
#define TOP_TRACK_MAX 1024      /* keys whose sparkline history is kept */
#define TOP_CANDIDATES_MAX 2200 /* health (<= 1000) + by_key (<= 100) ... */

struct top_row {
    char key[NEXT_KEY_MAX + 1]; /* raw key name (NUL-free, checked) */
    int rank;                   /* 2 unavailable, 1 degraded, 0 operational */
    uint64_t err60;             /* failures in the last 60 s (errors by_key) */
    int have_status;            /* the fields below are set */
    char state[32 + 1];         /* breaker state name */
    uint64_t failures;          /* lifetime failures (status) */
    int lim_pct;                /* limiter fill: % of burst used; -1 none */
    int lim_paused;             /* the venue paused the limiter */
    int bh_in_use, bh_max, bh_queued; /* bulkhead; bh_max -1 none */
};

/* A key's sparkline history: failures per refresh, oldest first in ring
 * order from `head`. */
struct top_hist {
    char key[NEXT_KEY_MAX + 1];
    uint64_t last_failures; /* the lifetime count at the last refresh */
    uint64_t seen_tick;     /* last refresh that showed the key; 0 = free */
    uint32_t n[TOP_SPARK_S];
    unsigned head, len;
};

struct top {
    struct ctl *c;
    struct top_row *rows; /* candidates, then the shown rows first */
    size_t nrows, caprows;
    struct top_hist *hist; /* TOP_TRACK_MAX entries */
    uint64_t tick;
    char health[32 + 1];
    uint64_t total_keys, err60_all;
    char err[ERR_TEXT_CAP]; /* why the last refresh failed; "" = fine */
};

static volatile sig_atomic_t top_stop;

static void top_on_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

/* A string object as a NUL-terminated raw key in dst; -1 when it is not a
 * string, too long or holds a NUL (never shown, never asked about). */
static int top_key_of(const msgpack_object *o, char *dst)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
        o->via.str.size > NEXT_KEY_MAX ||
        memchr(o->via.str.ptr, '\0', o->via.str.size))
        return -1;
    memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = '\0';
    return 0;
}

/* Call without printing (the screen owns the terminal): 0 with a->result,
 * or -1 with t->err set.  a is always answer_free'able. */
static int top_call(struct top *t, const char *method,
                    const msgpack_sbuffer *sb, struct answer *a)
{
    char code[ERR_TEXT_CAP], msg[ERR_TEXT_CAP], e[4 * 64 + 8];
    size_t off = 0;
    int rc;

    memset(a, 0, sizeof(*a));
    msgpack_zone_init(&a->zone, 4096);
    errno = 0;
    rc = resil_call(t->c->r, method, sb ? sb->data : NULL, sb ? sb->size : 0,
                    t->c->deadline_ms, &a->raw, &a->len, code, msg,
                    sizeof(code));
    if (rc == 0 && msgpack_unpack(a->raw, a->len, &off, &a->zone, &a->result) ==
                       MSGPACK_UNPACK_SUCCESS)
        return 0;
    if (rc == RESIL_EREMOTE)
        snprintf(t->err, sizeof(t->err), "%s: %s refused: %s", method,
                 resil_path(t->c->r),
                 escape(e, sizeof(e), code, strlen(code), 64));
    else
        snprintf(t->err, sizeof(t->err), "cannot reach resild at %s: %s",
                 resil_path(t->c->r),
                 rc == 0                 ? "unreadable answer"
                 : rc == RESIL_ETIMEDOUT ? "no answer in time"
                 : errno                 ? strerror(errno)
                                         : resil_strerror(rc));
    return -1;
}

static int top_rank(const msgpack_object *health)
{
    if (proto_str_eq(health, "unavailable"))
        return 2;
    return proto_str_eq(health, "degraded") ? 1 : 0;
}

/* The row of key, added when absent (NULL when full or out of memory). */
static struct top_row *top_row_get(struct top *t, const char *key)
{
    size_t i;

    for (i = 0; i < t->nrows; i++)
        if (!strcmp(t->rows[i].key, key))
            return &t->rows[i];
    if (t->nrows == TOP_CANDIDATES_MAX)
        return NULL;
    if (t->nrows == t->caprows) {
        size_t cap = t->caprows ? t->caprows * 2 : 64;
        struct top_row *p = realloc(t->rows, cap * sizeof(*p));
        if (!p)
            return NULL;
        t->rows = p;
        t->caprows = cap;
    }
    memset(&t->rows[t->nrows], 0, sizeof(t->rows[0]));
    snprintf(t->rows[t->nrows].key, sizeof(t->rows[0].key), "%s", key);
    t->rows[t->nrows].bh_max = -1;
    t->rows[t->nrows].lim_pct = -1;
    return &t->rows[t->nrows++];
}

/* Take one per-key status map into its row. */
static void top_take_status(struct top *t, const msgpack_object *m)
{
    const msgpack_object *lim = proto_map_get(m, "limiter");
    const msgpack_object *bh = proto_map_get(m, "bulkhead");
    char key[NEXT_KEY_MAX + 1], e[4 * 32 + 8];
    struct top_row *r;
    uint64_t burst, avail, u;

    if (!m || m->type != MSGPACK_OBJECT_MAP ||
        top_key_of(proto_map_get(m, "key"), key) < 0 ||
        !(r = top_row_get(t, key)))
        return;
    r->have_status = 1;
    r->rank = top_rank(proto_map_get(m, "health"));
    snprintf(r->state, sizeof(r->state), "%s",
             obj_text(e, sizeof(e), proto_map_get(m, "state"), 32, "?"));
    r->failures = 0;
    obj_uint(proto_map_get(m, "failures"), &r->failures);
    r->lim_pct = -1;
    if (lim && lim->type == MSGPACK_OBJECT_MAP &&
        obj_uint(proto_map_get(lim, "burst"), &burst) == 0 && burst > 0 &&
        obj_uint(proto_map_get(lim, "available"), &avail) == 0) {
        r->lim_pct = avail >= burst ? 0 : (int)((burst - avail) * 100 / burst);
        r->lim_paused =
            obj_uint(proto_map_get(lim, "paused_ms"), &u) == 0 && u > 0;
    }
    r->bh_max = -1;
    if (bh && bh->type == MSGPACK_OBJECT_MAP &&
        obj_uint(proto_map_get(bh, "max"), &u) == 0 && u < 1000000) {
        r->bh_max = (int)u;
        r->bh_in_use =
            obj_uint(proto_map_get(bh, "in_use"), &u) == 0 && u < 1000000
                ? (int)u
                : 0;
        r->bh_queued =
            obj_uint(proto_map_get(bh, "queued"), &u) == 0 && u < 1000000
                ? (int)u
                : 0;
    }
}

static int top_cmp(const void *pa, const void *pb)
{
    const struct top_row *a = pa, *b = pb;

    if (a->rank != b->rank)
        return b->rank - a->rank;
    if (a->err60 != b->err60)
        return a->err60 < b->err60 ? 1 : -1;
    return strcmp(a->key, b->key);
}

/* Status pages of the first `limit` keys (by name) into rows. */
static int top_status_page(struct top *t, size_t limit)
{
    const msgpack_object *keys;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct answer a;
    size_t i;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    proto_kv_u64(&pk, "limit", limit);
    if ((rc = top_call(t, "status", &sb, &a)) == 0) {
        keys = proto_map_get(&a.result, "keys");
        for (i = 0; i < arr_len(keys) && i < limit; i++)
            top_take_status(t, arr_at(keys, i));
        t->total_keys = 0;
        obj_uint(proto_map_get(&a.result, "total"), &t->total_keys);
    }
    answer_free(&a);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/*
 * One refresh: the `want` most troubled keys into t->rows[0..nrows), in
 * order, with their status.  0, or -1 with t->err set.
 */
static int top_refresh(struct top *t, size_t want)
{
    char key[NEXT_KEY_MAX + 1];
    const msgpack_object *m;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct answer a;
    uint64_t u;
    uint32_t i;
    size_t j;
    int rc;

    t->nrows = 0;
    t->err[0] = '\0';
    /* The keys not operational. */
    if (top_call(t, "health", NULL, &a) < 0)
        goto fail;
    obj_text(t->health, sizeof(t->health), proto_map_get(&a.result, "overall"),
             32, "?");
    m = proto_map_get(&a.result, "services");
    for (i = 0; m && m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size;
         i++) {
        struct top_row *r;
        if (top_key_of(&m->via.map.ptr[i].key, key) == 0 &&
            (r = top_row_get(t, key)))
            r->rank = top_rank(&m->via.map.ptr[i].val);
    }
    answer_free(&a);
    /* Failures per key over the last 60 s. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    proto_kv_u64(&pk, "window_s", 60);
    proto_kv_u64(&pk, "top", 1);
    rc = top_call(t, "errors", &sb, &a);
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0)
        goto fail;
    t->err60_all = 0;
    obj_uint(proto_map_get(&a.result, "total"), &t->err60_all);
    m = proto_map_get(&a.result, "by_key");
    for (i = 0; m && m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size;
         i++) {
        struct top_row *r;
        if (top_key_of(&m->via.map.ptr[i].key, key) == 0 &&
            obj_uint(&m->via.map.ptr[i].val, &u) == 0 &&
            (r = top_row_get(t, key)))
            r->err60 = u;
    }
    answer_free(&a);
    /* The most troubled first; the rest are not asked about. */
    qsort(t->rows, t->nrows, sizeof(t->rows[0]), top_cmp);
    if (t->nrows > want)
        t->nrows = want;
    /* Fill a screen with little trouble from the first keys by name
     * (this also gives the key count). */
    if (top_status_page(t, want) < 0)
        return -1;
    for (j = 0; j < t->nrows; j++) {
        if (t->rows[j].have_status)
            continue;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_kv_str(&pk, "key", t->rows[j].key);
        rc = top_call(t, "status", &sb, &a);
        msgpack_sbuffer_destroy(&sb);
        if (rc == 0)
            top_take_status(t, arr_at(proto_map_get(&a.result, "keys"), 0));
        answer_free(&a);
        if (rc < 0)
            return -1;
    }
    /* A key gone since health/errors named it has no status: drop it. */
    for (j = 0; j < t->nrows;)
        if (!t->rows[j].have_status)
            t->rows[j] = t->rows[--t->nrows];
        else
            j++;
    qsort(t->rows, t->nrows, sizeof(t->rows[0]), top_cmp);
    if (t->nrows > want)
        t->nrows = want;
    return 0;
fail:
    answer_free(&a);
    return -1;
}

/* Record this refresh's failures of each shown key in its history. */
static void top_history(struct top *t)
{
    size_t i, h, free_h, oldest;

    t->tick++;
    for (i = 0; i < t->nrows; i++) {
        struct top_row *r = &t->rows[i];
        struct top_hist *x = NULL;
        free_h = oldest = TOP_TRACK_MAX;
        for (h = 0; h < TOP_TRACK_MAX; h++) {
            if (!t->hist[h].seen_tick) {
                if (free_h == TOP_TRACK_MAX)
                    free_h = h;
            } else if (!strcmp(t->hist[h].key, r->key)) {
                x = &t->hist[h];
                break;
            } else if (oldest == TOP_TRACK_MAX ||
                       t->hist[h].seen_tick < t->hist[oldest].seen_tick) {
                oldest = h;
            }
        }
        if (!x) { /* new: reuse a free slot, else the longest unseen */
            x = &t->hist[free_h < TOP_TRACK_MAX ? free_h : oldest];
            memset(x, 0, sizeof(*x));
            snprintf(x->key, sizeof(x->key), "%s", r->key);
            x->last_failures = r->failures;
        } else {
            /* A reset key's count can go down: count nothing, rebase. */
            uint64_t d = r->failures >= x->last_failures
                             ? r->failures - x->last_failures
                             : 0;
            x->n[(x->head + x->len) % TOP_SPARK_S] =
                d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
            if (x->len < TOP_SPARK_S)
                x->len++;
            else
                x->head = (x->head + 1) % TOP_SPARK_S;
            x->last_failures = r->failures;
        }
        x->seen_tick = t->tick;
    }
}

static const struct top_hist *top_hist_of(const struct top *t, const char *k)
{
    size_t h;

    for (h = 0; h < TOP_TRACK_MAX; h++)
        if (t->hist[h].seen_tick && !strcmp(t->hist[h].key, k))
            return &t->hist[h];
    return NULL;
}

/* The limiter and bulkhead cells of a row. */
static void top_cells(const struct top_row *r, char *lim, size_t lcap, char *bh,
                      size_t bcap)
{
    if (r->lim_pct < 0)
        snprintf(lim, lcap, "-");
    else if (r->lim_paused)
        snprintf(lim, lcap, "paused");
    else
        snprintf(lim, lcap, "%d%%", r->lim_pct);
    if (r->bh_max < 0)
        snprintf(bh, bcap, "-");
    else if (r->bh_queued)
        snprintf(bh, bcap, "%d/%d+%d", r->bh_in_use, r->bh_max, r->bh_queued);
    else
        snprintf(bh, bcap, "%d/%d", r->bh_in_use, r->bh_max);
}

/* The plain snapshot (stdout not a terminal). */
static int top_snapshot(struct top *t, size_t want)
{
    char k[4 * KEY_SHOW_MAX + 8], lim[32], bh[48];
    size_t i;

    if (top_refresh(t, want) < 0) {
        fprintf(stderr, "resilctl: %s\n", t->err);
        return EXIT_UNREACHABLE;
    }
    printf("resild top: %llu keys, health %s, %llu failures in the last "
           "60 s\n",
           (unsigned long long)t->total_keys, t->health,
           (unsigned long long)t->err60_all);
    printf("%-40s  %-13s  %8s  %9s  %7s  %-12s\n", "KEY", "STATE", "ERR/60S",
           "FAILURES", "LIMITER", "BULKHEAD");
    for (i = 0; i < t->nrows; i++) {
        const struct top_row *r = &t->rows[i];
        top_cells(r, lim, sizeof(lim), bh, sizeof(bh));
        escape(k, sizeof(k), r->key, strlen(r->key), KEY_SHOW_MAX);
        printf("%s%*s  %-13s  %8llu  %9llu  %7s  %-12s\n", k,
               text_width(k) < 40 ? (int)(40 - text_width(k)) : 0, "", r->state,
               (unsigned long long)r->err60, (unsigned long long)r->failures,
               lim, bh);
    }
    if (t->total_keys > t->nrows)
        printf("showing %zu of %llu keys, most troubled first\n", t->nrows,
               (unsigned long long)t->total_keys);
    return EXIT_OK;
}

enum { TOP_C_BAD = 1, TOP_C_WARN, TOP_C_OK, TOP_C_FORCED };

static int top_state_colour(const char *state)
{
    if (strstr(state, "open") && !strstr(state, "half"))
        return TOP_C_BAD; /* open, forced_open */
    if (strstr(state, "half"))
        return TOP_C_WARN;
    if (!strcmp(state, "closed"))
        return TOP_C_OK;
    return TOP_C_FORCED; /* forced_closed, disabled */
}

/* The row's sparkline at (y, x), width w: the last w samples. */
static void top_spark(const struct top_hist *x, int y, int xpos, int w)
{
    static const char *const utf8[] = {
        "\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83", "\xe2\x96\x84",
        "\xe2\x96\x85", "\xe2\x96\x86", "\xe2\x96\x87", "\xe2\x96\x88"};
    static const char ascii[] = "_.-:=+*#";
    uint32_t peak = 0, v;
    unsigned i, n, from;

    if (!x || w <= 0)
        return;
    n = x->len < (unsigned)w ? x->len : (unsigned)w;
    from = x->len - n;
    for (i = 0; i < n; i++)
        if ((v = x->n[(x->head + from + i) % TOP_SPARK_S]) > peak)
            peak = v;
    /* Right-aligned: the newest sample in the last column. */
    move(y, xpos + w - (int)n);
    for (i = 0; i < n; i++) {
        v = x->n[(x->head + from + i) % TOP_SPARK_S];
        if (!v) { /* no failures: blank, so any failure stands out */
            addch(' ');
            continue;
        }
        v = peak ? (uint32_t)(((uint64_t)v * 7 + peak - 1) / peak) : 0;
        if (term_utf8)
            addstr(utf8[v > 7 ? 7 : v]);
        else
            addch((chtype)(unsigned char)ascii[v > 7 ? 7 : v]);
    }
}

static void top_draw(struct top *t)
{
    char k[4 * KEY_SHOW_MAX + 8], lim[32], bh[48], num[32], now[16];
    int y, keyw, sx, sw, x;
    time_t sec = time(NULL);
    struct tm tm;
    size_t i;

    gmtime_r(&sec, &tm);
    strftime(now, sizeof(now), "%H:%M:%S", &tm);
    erase();
    attron(A_BOLD);
    mvprintw(0, 0,
             "resild top  %s UTC  %llu keys  health %s  %llu failures "
             "/60s  (q quits)",
             now, (unsigned long long)t->total_keys, t->health,
             (unsigned long long)t->err60_all);
    attroff(A_BOLD);
    if (t->err[0]) {
        attron(COLOR_PAIR(TOP_C_BAD) | A_BOLD);
        mvprintw(1, 0, "%.*s", COLS > 0 ? COLS - 1 : 0, t->err);
        attroff(COLOR_PAIR(TOP_C_BAD) | A_BOLD);
    }
    /* KEY | STATE | ERR/60S | LIMITER | BULKHEAD | sparkline */
    keyw = COLS - (14 + 9 + 8 + 13 + 2 + TOP_SPARK_S);
    keyw = keyw < 16 ? 16 : keyw > 48 ? 48 : keyw;
    sx = keyw + 14 + 9 + 8 + 13 + 2;
    sw = COLS - sx - 1 < TOP_SPARK_S ? COLS - sx - 1 : TOP_SPARK_S;
    attron(A_REVERSE);
    mvprintw(2, 0, "%-*s%-14s%8s %-8s%-13s  %-*s", keyw, "KEY", "STATE",
             "ERR/60S", "LIMITER", "BULKHEAD", sw > 0 ? sw : 0,
             sw >= 20 ? "failures/s, last 60 s" : "");
    attroff(A_REVERSE);
    for (i = 0, y = 3; i < t->nrows && y < LINES; i++, y++) {
        const struct top_row *r = &t->rows[i];
        escape(k, sizeof(k), r->key, strlen(r->key),
               (size_t)(keyw - 2 > 8 ? keyw - 2 : 8));
        mvaddnstr(y, 0, k, (int)sizeof(k));
        x = keyw;
        move(y, x);
        clrtoeol(); /* a long key's tail under the columns */
        attron(COLOR_PAIR(top_state_colour(r->state)) | A_BOLD);
        mvprintw(y, x, "%-13.13s", r->state);
        attroff(COLOR_PAIR(top_state_colour(r->state)) | A_BOLD);
        snprintf(num, sizeof(num), "%llu", (unsigned long long)r->err60);
        top_cells(r, lim, sizeof(lim), bh, sizeof(bh));
        mvprintw(y, x + 14, "%8s %-8s%-13s", num, lim, bh);
        top_spark(top_hist_of(t, r->key), y, sx, sw);
    }
    refresh();
}

/* SIGINT, SIGTERM, SIGHUP to handler (without SA_RESTART). */
static void top_signals(void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static int cmd_top(struct ctl *c, int argc, char **argv)
{
    struct cmd_args args;
    SCREEN *scr = NULL;
    struct top t;
    int rc, ch, rows;

    rc = parse_args(c, find_command("top"), argc, argv, 0, 0, OPT_LIMIT, &args);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    memset(&t, 0, sizeof(t));
    t.c = c;
    snprintf(t.health, sizeof(t.health), "?");
    /* Ours before newterm(): ncurses then leaves SIGINT/SIGTERM alone.
     * No SA_RESTART, so the wait in getch() ends at once.  The snapshot
     * keeps the default actions. */
    if (isatty(STDOUT_FILENO) && isatty(STDIN_FILENO) &&
        (t.hist = calloc(TOP_TRACK_MAX, sizeof(*t.hist)))) {
        top_signals(top_on_signal);
        /* newterm, not initscr: with a TERM terminfo does not know it
         * returns NULL (initscr would exit); the snapshot is printed. */
        if (!(scr = newterm(NULL, stdout, stdin)))
            top_signals(SIG_DFL);
    }
    if (!scr) {
        rc = top_snapshot(&t,
                          args.limit ? (size_t)args.limit : TOP_SNAPSHOT_ROWS);
        free(t.rows);
        free(t.hist);
        return rc;
    }
    cbreak();
    noecho();
    curs_set(0);
    keypad(stdscr, TRUE);
    if (has_colors()) {
        start_color();
        use_default_colors();
        init_pair(TOP_C_BAD, COLOR_RED, -1);
        init_pair(TOP_C_WARN, COLOR_YELLOW, -1);
        init_pair(TOP_C_OK, COLOR_GREEN, -1);
        init_pair(TOP_C_FORCED, COLOR_CYAN, -1);
    }
    rc = EXIT_OK;
    while (!top_stop) {
        rows = LINES - 3;
        rows = rows < 1 ? 1 : rows > TOP_ROWS_MAX ? TOP_ROWS_MAX : rows;
        /* A failed refresh shows why and no rows; top goes on (the
         * daemon may be restarting). */
        if (top_refresh(&t, (size_t)rows) == 0)
            top_history(&t);
        else
            t.nrows = 0; /* the error line says why */
        top_draw(&t);
        timeout(TOP_TICK_MS);
        ch = getch(); /* a key, a resize, a signal or the tick */
        if (ch == 'q' || ch == 'Q')
            break;
    }
    endwin(); /* the one exit after newterm: the terminal restored */
    delscreen(scr);
    free(t.rows);
    free(t.hist);
    return rc;
}

/* --- end top -------------------------------------------------------------- */

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
    {"status", "[KEY|PREFIX] [--limit N]",
     "breaker state of every key, or of KEY and the keys below it (KEY.*); "
     "--limit lists at most N",
     "resilctl status binance --limit 50", cmd_status},
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
    {"health", "",
     "overall health, open keys, services not operational, recent errors, "
     "components; exit 0 healthy, 1 degraded, 2 unhealthy, 3 unknown",
     "resilctl health || page-oncall", cmd_health},
    {"watch", "[--topics LIST]",
     "print live events, one line each, until Ctrl-C; LIST is any of "
     "state,error,alert,operator,bound (default all); --json: JSON Lines",
     "resilctl watch --topics state,operator", cmd_watch},
    {"errors", "--log DAY [--dir DIR]",
     "the error log of DAY (YYYY-MM-DD, today, yesterday; UTC), read from "
     "DIR (default " ERRLOG_DEFAULT_DIR "): one row per failure; --json: "
     "its JSON Lines",
     "resilctl errors --log today --dir /var/log/resild", cmd_errors},
    {"metrics", "", "print the Prometheus metrics text",
     "resilctl metrics | grep resild_breaker_state", cmd_metrics},
    {"reload", "",
     "re-read the daemon's configuration file (like SIGHUP); an invalid file "
     "is refused and the running configuration stays",
     "resilctl reload", cmd_reload},
    {"errors",
     "[--key K|--prefix P] [--since 15m] [--severity high] [--top N] "
     "[--log DAY]",
     "error analytics: by class, by key, top pairs with trends, "
     "correlations (who fails first), predicted trips, recent errors",
     "resilctl errors --prefix binance --since 15m", cmd_errors},
    {"top", "[--limit N]",
     "live full-screen view refreshed each second: keys by trouble, state "
     "in colour, failures/s over the last 60 s, limiter fill, bulkhead use; "
     "q quits; not on a terminal: one plain snapshot of N keys (default 50)",
     "resilctl top", cmd_top},
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
        "2 usage error, 3 resild unreachable.  health: 0 healthy,\n"
        "1 degraded, 2 unhealthy, 3 cannot tell.  watch: 0 when stopped,\n"
        "3 when resild is or goes away.\n",
        DEFAULT_DEADLINE_MS);
}

int main(int argc, char **argv)
{
    struct ctl c = {NULL, 0, DEFAULT_DEADLINE_MS, NULL, 0};
    const struct ctl_cmd *cmd;
    char e[4 * 64 + 8];
    uint64_t ms;
    int i, rc;

    /* Only the character type: numbers keep printing the C way. */
    setlocale(LC_CTYPE, "");
    term_utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
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
    if (fflush(stdout) != 0 && rc == EXIT_OK && !c.reader_gone)
        rc = EXIT_UNREACHABLE;
    return rc;
}
