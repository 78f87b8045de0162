/*
 * fake_peer.h - a scripted stand-in for resild, for the client tests.
 *
 * The peer runs in a forked child, so none of its descriptors show in the
 * test process (the client tests count /proc/self/fd), and a peer that
 * dies mid-reply dies for real.  It listens on a socket path, frames what
 * it receives with the same bounded scanner libresil uses, and writes one
 * line per message to a log pipe the test reads:
 *   REQ <method> <msgid>[ after=<key> limit=<n>][ reason=<hex>]  a request
 *   NOTE <method>[ msgid=<n>]                        a notification
 *   BAD                                              an undecodable frame
 * It answers as its mode says (below); answers are a plausible resild's:
 * ping, acquire (allow, permit 7), report, status (nkeys keys k00000...,
 * paged by `limit` and `after` like SPEC 3 says; with `key`, that key's
 * full map), force (the key's map), and issue 9's heartbeat, health,
 * metrics, subscribe (with scripted events) and unsubscribe.
 */
#ifndef RESIL_FAKE_PEER_H
#define RESIL_FAKE_PEER_H

#include <stddef.h>
#include <sys/types.h>

enum peer_mode {
    PEER_ANSWER,    /* answers every request at once */
    PEER_CLOSE,     /* accepts and closes at once, every time */
    PEER_HALF,      /* reads a request, sends half its answer, SIGKILLs
                     * itself */
    PEER_GARBAGE,   /* answers each request with bytes that are not msgpack */
    PEER_LATE,      /* answers each request late_ms after reading it */
    PEER_SLOW_ONCE, /* answers the first request late_ms late, then at once */
    PEER_BACKLOG,   /* listens with its backlog full and never accepts */
    PEER_SILENT,    /* accepts and reads, never answers */
};

struct peer_opts {
    enum peer_mode mode;
    int late_ms;              /* PEER_LATE, PEER_SLOW_ONCE */
    int nkeys;                /* keys status lists */
    const char *force_reason; /* NULL: no key is forced; else key k00000
                               * carries this force_reason (raw bytes) */
    size_t force_reason_len;
    /* Issue 9.  health answers with this `overall` (NULL: "healthy"),
     * services, open keys, recent_errors 12 and a component.  subscribe
     * answers {"subscribed": the topics asked}; after its answer (before
     * it with events_before_answer) the peer writes events_raw as is, then
     * nevents generated events [2,"event",[map...]] (events_per_frame
     * maps a frame, default 1): state transitions of keys e000000...
     * with "seq" 0, 1, ...; then it closes the connection when
     * close_after_events.  raw_with_answer: the answer and events_raw go
     * out in one write (so the client reads them together).  log_hex adds
     * "HEX <frame bytes>" lines. */
    const char *overall;
    const char *events_raw;
    size_t events_raw_len;
    int nevents, events_per_frame, events_before_answer, close_after_events;
    int log_hex, raw_with_answer;
};

struct peer {
    pid_t pid;         /* the child, 0 when none */
    int log_fd;        /* read end of the log pipe */
    char path[108];    /* the socket */
    char log[1 << 16]; /* log lines read so far (NUL-terminated) */
    size_t log_len;
};

/* Start a peer listening at path (an existing file is replaced) and wait
 * until it listens (at most 5 s).  0 or -1. */
int peer_start(struct peer *p, const char *path, const struct peer_opts *o);

/* Kill the peer (SIGKILL), reap it, close the log and unlink the socket. */
void peer_stop(struct peer *p);

/* Read log lines into p->log until needle appears or wait_ms passes
 * (wait_ms 0: only what is already there).  1 when needle is in the log. */
int peer_wait_log(struct peer *p, const char *needle, int wait_ms);

/* Lines in the log that start with prefix. */
int peer_count(const struct peer *p, const char *prefix);

/* A socket file at path with nobody listening (a daemon that died without
 * removing it).  0 or -1. */
int peer_make_stale(const char *path);

/* Open descriptors of this process (entries of /proc/self/fd). */
int count_fds(void);

#endif
