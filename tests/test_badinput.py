#!/usr/bin/python3
"""test_badinput.py - hostile and broken clients against a real resild.

SPEC §3: bad input never crashes the daemon, never blocks other clients and
never loses state.  A malformed frame, a frame over max_frame_bytes, nesting
deeper than 8 or a non-request message gets an error response where a msgid
is known (protocol_error / frame_too_large) and the connection is closed; a
well-formed request with bad arguments gets bad_request naming the argument
and the connection stays open; an unknown method gets no_such_method.  A
partial object older than 5 s is closed (slowloris), and a client that never
reads cannot make the daemon queue without bound.

Every case is followed by a ping on a second client that stays connected the
whole time; it must be answered within 2 s.  A slowloris connection runs in
a background thread from the start so its 5 s deadline overlaps the rest.
A second daemon with small limits covers max_clients (busy), max_keys
(too_many_keys) and, when run as root, the SO_PEERCRED checks (allow_uids,
admin-only force/reset) from processes switched to other uids.

TAP on stdout; exit 1 if anything failed.
"""

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_error, pack, request_bytes  # noqa: E402

MAX_FRAME = 65536            # SPEC default max_frame_bytes
CLOSE_WAIT_S = 5.0           # how long a bad connection may stay open
ANSWER_S = 2.0               # the second client's answers must be this prompt
RSS_GROWTH_MAX_KIB = 8 * 1024
GARBAGE = bytes(range(256)) * 4


class Case:
    """Shared state: the tap, the daemon and the watching second client."""

    def __init__(self, tap, d):
        self.tap = tap
        self.d = d
        self.watch = d.connect()

    def still_serving(self, after):
        """The second client gets a prompt answer after case `after`."""
        t0 = time.monotonic()
        try:
            err, res = self.watch.call("ping", timeout=ANSWER_S)
            ok = err is None and isinstance(res, dict) and "version" in res
            why = "error=%r result=%r" % (err, res)
        except Exception as e:  # timeout or the daemon closed it
            ok, why = False, repr(e)
        dt = time.monotonic() - t0
        self.tap.check(ok and self.d.alive(),
                       "second client still served after %s" % after,
                       "%s after %.3f s; daemon alive: %s"
                       % (why, dt, self.d.alive()))

    def expect_closed(self, data, name, msgid=None, codes=()):
        """Send data on a fresh connection; the daemon must close it within
        CLOSE_WAIT_S.  Any response must be an error whose code is in codes,
        for msgid (when a msgid is readable).  Returns the responses seen,
        {msgid: (error, result)}."""
        c = self.d.connect()
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before we finished writing: also a close
        closed = c.wait_closed(CLOSE_WAIT_S)
        got = dict(c.responses)
        bad = []
        for mid, (err, _) in got.items():
            if msgid is None or mid != msgid or \
                    not any(is_error(err, k) for k in codes):
                bad.append("unexpected response msgid %r: %r" % (mid, err))
        if c.others:
            bad.append("unexpected messages: %r" % (c.others[:3],))
        self.tap.check(closed and not bad,
                       "%s: connection closed by the daemon" % name,
                       "closed=%s" % closed, *bad)
        c.close()
        return got


def t_hostile_headers(k):
    """(a) container/str headers declaring gigabytes; RSS stays flat."""
    frames = [
        ("array32 dd ff 00 00 00 + garbage",
         b"\xdd\xff\x00\x00\x00" + GARBAGE),
        ("array32 dd 00 ff ff ff", b"\xdd\x00\xff\xff\xff"),
        ("map32 df ff ff ff ff", b"\xdf\xff\xff\xff\xff"),
        ("str32 db ff ff ff ff", b"\xdb\xff\xff\xff\xff"),
        ("bin32 c6 ff ff ff ff", b"\xc6\xff\xff\xff\xff"),
        ("never-used byte c1", b"\xc1" + GARBAGE),
        ("request whose params map declares 2^32-1 pairs",
         b"\x94\x00\x0b\xa7acquire\x91\xdf\xff\xff\xff\xff"),
    ]
    for name, data in frames:
        # The last one has a readable msgid (11): an error may name it.
        k.expect_closed(data, name, 11, ("protocol_error", "frame_too_large"))
        k.still_serving(name)

    rss0 = k.d.rss_kib()
    hostile = b"\xdd\xff\x00\x00\x00" + GARBAGE
    not_closed = 0
    for _ in range(20):
        conns = [k.d.connect() for _ in range(10)]
        for c in conns:
            try:
                c.send(hostile)
            except (BrokenPipeError, ConnectionResetError):
                pass
        for c in conns:
            if not c.wait_closed(CLOSE_WAIT_S):
                not_closed += 1
            c.close()
    rss1 = k.d.rss_kib()
    k.tap.check(not_closed == 0,
                "200 fresh connections with dd ff 00 00 00: all closed",
                "%d left open" % not_closed)
    k.tap.check(rss1 - rss0 < RSS_GROWTH_MAX_KIB,
                "daemon RSS grew < 8 MiB over 200 hostile connections",
                "VmRSS %d kB -> %d kB" % (rss0, rss1))
    k.still_serving("200 hostile connections")


def t_too_large(k):
    """(b) frames over max_frame_bytes, with and without a readable msgid."""
    big = request_bytes(7, "acquire", {"key": "big.frame",
                                       "pad": "x" * 70000})
    got = k.expect_closed(big, "70,000-byte string in params", 7,
                          ("frame_too_large",))
    k.tap.check(not got or is_error(got.get(7, (None,))[0], "frame_too_large"),
                "oversized request: error is frame_too_large (msgid 7) "
                "or none", repr(got))
    k.still_serving("an oversized request")
    # An oversized object with no msgid in sight: just closed.
    k.expect_closed(pack("y" * 70000), "70,000-byte bare string")
    k.still_serving("an oversized bare string")
    # Just under the limit is fine, even arriving in several reads.
    c = k.d.connect()
    near = request_bytes(8, "report", {"key": "near.limit", "outcome": "ignore",
                                       "context": {"pad": "z" * (MAX_FRAME - 1000)}})
    c.send(near)
    try:
        err, res = c.wait(8, 5.0)
    except Exception as e:
        err, res = e, None
    k.tap.check(err is None and isinstance(res, dict),
                "a %d-byte request (under max_frame_bytes) is answered"
                % len(near), "error=%r" % (err,))
    c.close()


def t_depth(k):
    """(c) nesting: 8 levels pass, 9 are refused."""
    # Levels: message array 1, params array 2, map 3, context map 4, then
    # the arrays in x.
    deep8 = pack([0, 8, "report", [{"key": "deep", "outcome": "ignore",
                                    "context": {"x": [[[[1]]]]}}]])
    c = k.d.connect()
    c.send(deep8)
    try:
        err, res = c.wait(8, 5.0)
    except Exception as e:
        err, res = e, None
    k.tap.check(err is None and isinstance(res, dict),
                "nesting depth 8 is accepted", "error=%r" % (err,))
    c.close()
    deep9 = pack([0, 9, "acquire", [{"key": "deep", "x": [[[[[[1]]]]]]}]])
    k.expect_closed(deep9, "nesting depth 9", 9, ("protocol_error",))
    k.still_serving("nesting depth 9")


def t_not_a_list(k):
    """(d) params that is not an array: protocol_error naming msgid 5;
    an array that is not [] or [map]: bad_request, connection kept."""
    got = k.expect_closed(pack([0, 5, "acquire", "notalist"]),
                          "[0, 5, \"acquire\", \"notalist\"]", 5,
                          ("protocol_error",))
    k.tap.check(is_error(got.get(5, (None,))[0], "protocol_error"),
                "params \"notalist\": protocol_error response for msgid 5",
                repr(got))
    # An array of the wrong shape is a well-formed request with bad
    # arguments: bad_request, and the connection stays open.
    c = k.d.connect()
    for msgid, params in ((6, [{"key": "a"}, {}]), (7, ["a"]), (8, [1, 2])):
        c.send(pack([0, msgid, "acquire", params]))
        try:
            err, res = c.wait(msgid, 5.0)
        except Exception as e:
            err, res = e, None
        k.tap.check(is_error(err, "bad_request") and
                    "params" in err.get("message", ""),
                    "positional params %r: bad_request naming params" %
                    (params,), "error=%r result=%r" % (err, res))
    try:
        alive = "version" in c.ok("ping")
    except Exception as e:
        alive = False
    k.tap.check(alive, "positional params: the connection stays open")
    c.close()
    k.still_serving("a malformed params array")


def bad_request(k, c, params, arg, name, method="acquire"):
    """A request that must get bad_request whose message names arg (when
    arg is given); the connection stays open."""
    try:
        err, res = c.call(method, params, timeout=5.0)
    except Exception as e:
        err, res = e, None
    msg = err.get("message", "") if isinstance(err, dict) else ""
    k.tap.check(is_error(err, "bad_request") and
                (arg is None or arg in msg),
                "%s: bad_request%s"
                % (name, " naming %r" % arg if arg else ""),
                "error=%r result=%r" % (err, res))


def t_bad_arguments(k):
    """(e) wrong types and (f) missing or malformed keys, on one
    connection that must stay open throughout."""
    c = k.d.connect()
    bad_request(k, c, {"key": 42}, "key", "acquire key 42")
    bad_request(k, c, {"key": "a.b", "cost": "x"}, "cost",
                "acquire cost \"x\"")
    bad_request(k, c, {"key": "a.b", "cost": -1}, "cost", "acquire cost -1")
    bad_request(k, c, {}, "key", "acquire without key")
    bad_request(k, c, None, "key", "acquire with params []")
    bad_request(k, c, {"key": "bad key!"}, "key", "acquire key \"bad key!\"")
    bad_request(k, c, {"key": "k" * 200}, "key", "acquire 200-char key")
    bad_request(k, c, {"key": ""}, "key", "acquire empty key")
    bad_request(k, c, {"key": "a.b", "outcome": "maybe"}, "outcome",
                "report outcome \"maybe\"", "report")
    bad_request(k, c, {"key": "a.b"}, "outcome", "report without outcome",
                "report")
    res = None
    try:
        res = c.ok("acquire", {"key": "k" * 128})
    except Exception as e:
        res = e
    k.tap.check(isinstance(res, dict) and res.get("allow") is True,
                "a 128-char key is valid", repr(res))
    try:
        res = c.ok("ping")
    except Exception as e:
        res = e
    k.tap.check(isinstance(res, dict) and "version" in res,
                "connection stays open after bad_request answers", repr(res))
    # Bad requests create no keys.
    try:
        st = c.ok("status", {"prefix": "a"})
        names = [e.get("key") for e in st.get("keys", [])]
    except Exception as e:
        names = [repr(e)]
    k.tap.check(not any(n in ("a.b",) for n in names),
                "rejected requests created no key", repr(names))
    c.close()
    k.still_serving("bad arguments")


def t_unknown_method(k):
    """(g) unknown method: no_such_method, connection stays open."""
    c = k.d.connect()
    try:
        err, _ = c.call("frobnicate", {"key": "a"})
    except Exception as e:
        err = e
    k.tap.check(is_error(err, "no_such_method"),
                "unknown method: no_such_method", repr(err))
    try:
        res = c.ok("ping")
    except Exception as e:
        res = e
    k.tap.check(isinstance(res, dict) and "version" in res,
                "connection stays open after no_such_method", repr(res))
    c.close()
    k.still_serving("an unknown method")


def t_not_requests(k):
    """(h) responses and malformed notifications sent to the daemon (a
    well-formed notification is served: tests/test_foreign.py)."""
    k.expect_closed(pack([1, 3, None, {"allow": True}]),
                    "a response [1, 3, nil, {...}] sent to the daemon", 3,
                    ("protocol_error",))
    k.expect_closed(pack([2, 5, []]), "a notification [2, 5, []]")
    k.expect_closed(pack([3, 1, "ping", []]), "message type 3", 1,
                    ("protocol_error",))
    k.expect_closed(pack({"not": "an array"}), "a map instead of an array")
    k.still_serving("non-request messages")


class Slowloris(threading.Thread):
    """Sends one byte of an object, then waits for the daemon to close."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.c = d.connect()
        self.elapsed = None
        self.closed = False

    def run(self):
        t0 = time.monotonic()
        self.c.send(b"\x94")
        self.closed = self.c.wait_closed(10.0)
        self.elapsed = time.monotonic() - t0
        self.c.close()


def t_slowloris_result(k, slow):
    """(i) the partial object deadline (5 s)."""
    slow.join(12.0)
    k.tap.check(slow.closed and slow.elapsed is not None and
                4.0 <= slow.elapsed <= 10.0,
                "slowloris (one byte, then silence) closed after ~5 s",
                "closed=%s after %s s" % (slow.closed, slow.elapsed))
    k.still_serving("slowloris")


def t_never_reads(k):
    """(j) a client that sends ~2 MiB of pings and never reads."""
    ping = request_bytes(1, "ping")
    chunk = ping * (65536 // len(ping))
    target = 2 * 1024 * 1024
    rss0 = k.d.rss_kib()
    c = k.d.connect()
    c.sock.setblocking(False)
    sent, blocked, closed, slow = 0, False, False, []
    next_check = 64 * 1024
    while sent < target:
        _, w, _ = select.select([], [c.sock], [], 1.0)
        if not w:
            blocked = True
            break
        try:
            sent += c.sock.send(chunk)
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if sent >= next_check:
            next_check += 64 * 1024
            t0 = time.monotonic()
            try:
                k.watch.call("ping", timeout=ANSWER_S)
            except Exception as e:
                slow.append("at %d bytes: %r" % (sent, e))
            if time.monotonic() - t0 > ANSWER_S:
                slow.append("at %d bytes: %.3f s" % (sent,
                                                     time.monotonic() - t0))
    if not closed and not blocked:
        # Everything was accepted: the daemon must have closed it by now
        # (output cap) or must be refusing more input.
        # If another 256 KiB goes in within 2 s, input is unbounded.
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(2.0)
            c.sock.sendall(chunk * 4)
        except socket.timeout:
            blocked = True
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    rss1 = k.d.rss_kib()
    k.tap.check(closed or blocked,
                "never-reading client: daemon closes it or stops reading",
                "sent %d bytes, blocked=%s closed=%s"
                % (sent, blocked, closed))
    # Stopped reading is not enough: the client holds buffers (and could
    # hold permits) forever.  Its output has not moved, so the daemon
    # closes it once the stall deadline (5 s) passes.
    t0 = time.monotonic()
    c.sock.setblocking(False)
    while not closed and time.monotonic() - t0 < 12.0:
        select.select([], [c.sock], [], 0.5)
        try:
            c.sock.send(ping)
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    k.tap.check(closed, "never-reading client is closed by the daemon "
                        "within 12 s", "still open after %.1f s"
                % (time.monotonic() - t0))
    k.tap.check("not reading its answers" in k.d.log(),
                "the daemon logs why it closed the never-reading client")
    tap_note = "never-reading client: %s after %d bytes" % (
        "closed" if closed else "writes blocked", sent)
    k.tap.diag(tap_note)
    k.tap.check(not slow, "second client answered within 2 s throughout",
                *slow)
    k.tap.check(rss1 - rss0 < RSS_GROWTH_MAX_KIB,
                "daemon RSS grew < 8 MiB while the client did not read",
                "VmRSS %d kB -> %d kB" % (rss0, rss1))
    k.still_serving("a client that never reads (still connected)")
    c.close()
    k.still_serving("a client that never read, after it went away")


LIMITS_CONFIG = {"max_clients": 4, "max_keys": 3, "socket_mode": "0666",
                 "allow_uids": [65534]}

CHILD = rpcutil.PEER_CHILD


def as_uid(d, uid, reqs):
    """Run CHILD as uid (and gid) against d; returns its stdout lines."""
    r = subprocess.run([sys.executable, "-c", CHILD, d.sock,
                        json.dumps(reqs)], user=uid, group=uid,
                       extra_groups=[], capture_output=True, text=True,
                       timeout=10)
    return r.stdout.splitlines() + ["stderr: " + l
                                    for l in r.stderr.splitlines()]


def t_max_clients(k):
    """(k) one connection over max_clients gets busy and is closed; a freed
    slot can be used again."""
    # One at a time, each answered before the next, so the daemon has also
    # reaped the readiness probe's connection: with k.watch, 4 = max.
    k.watch.ok("ping", timeout=ANSWER_S)
    conns, answered = [], 0
    for _ in range(3):
        c = k.d.connect()
        conns.append(c)
        try:
            c.ok("ping", timeout=ANSWER_S)
            answered += 1
        except Exception:
            pass
    k.tap.check(answered == 3, "max_clients 4: four connections served",
                "%d of 3 answered" % answered)
    extra = k.d.connect()
    closed = extra.wait_closed(CLOSE_WAIT_S)
    errs = [e for e, _ in extra.responses.values()]
    k.tap.check(closed and all(is_error(e, "busy") for e in errs),
                "max_clients 4: the fifth connection gets busy and is closed",
                "closed=%s responses=%r" % (closed, extra.responses))
    extra.close()
    conns.pop().close()
    deadline, ok = time.monotonic() + 2.0, False
    while not ok and time.monotonic() < deadline:
        c = k.d.connect()
        try:
            ok = "version" in c.ok("ping", timeout=ANSWER_S)
        except Exception:
            time.sleep(0.02)
        c.close()
    k.tap.check(ok, "max_clients: a freed slot takes a new connection")
    for c in conns:
        c.close()
    k.still_serving("max_clients")


def t_max_keys(k):
    """(l) beyond max_keys acquire answers too_many_keys; nothing else is
    disturbed."""
    c = k.d.connect()
    got = [c.call("acquire", {"key": n})[0] for n in ("lim.a", "lim.b",
                                                       "lim.c")]
    k.tap.check(got == [None] * 3, "max_keys 3: three keys created", repr(got))
    err, _ = c.call("acquire", {"key": "lim.d"})
    k.tap.check(is_error(err, "too_many_keys"),
                "max_keys 3: a fourth key gets too_many_keys", repr(err))
    err, res = c.call("acquire", {"key": "lim.a"})
    k.tap.check(err is None and res.get("allow") is True,
                "max_keys: existing keys still served", repr((err, res)))
    st = c.ok("status")
    k.tap.check(st.get("total", len(st["keys"])) == 3 and
                len(st["keys"]) == 3, "max_keys: status lists three keys",
                repr(st))
    c.close()
    k.still_serving("max_keys")


def t_credentials(k):
    """(m) SO_PEERCRED: admin-only methods and the allow list."""
    if os.geteuid() != 0:
        k.tap.check(True, "peer credentials # SKIP needs root to switch uid")
        return
    out = as_uid(k.d, 65534, [["ping", None],
                              ["force", {"key": "lim.a", "state": "open"}],
                              ["reset", {"key": "lim.a"}],
                              ["status", {"key": "lim.a"}]])
    if any("Permission denied" in line for line in out):
        # e.g. $TMPDIR is a private directory: other uids cannot reach it.
        k.tap.check(True, "peer credentials # SKIP other uids cannot reach "
                          "the socket under %s" % os.path.dirname(k.d.dir))
        return
    rows = {}
    for line in out:
        if line.startswith("["):
            mid, err = json.loads(line)
            rows[mid] = err
    k.tap.check(rows.get(1, "x") is None and rows.get(4, "x") is None,
                "uid 65534 (in allow_uids): ping and status served", *out)
    k.tap.check(is_error(rows.get(2), "forbidden") and
                is_error(rows.get(3), "forbidden"),
                "uid 65534 (not admin): force and reset are forbidden", *out)
    st = k.watch.ok("status", {"key": "lim.a"})
    k.tap.check(st["keys"] and st["keys"][0]["state"] == "closed",
                "a forbidden force changed nothing", repr(st))
    out = as_uid(k.d, 65533, [["ping", None]])
    refused = "closed" in out and not any(l.startswith("[1,") for l in out) \
        and all(is_error(json.loads(l)[1], "forbidden")
                for l in out if l.startswith("["))
    k.tap.check(refused, "uid 65533 (not in allow_uids): refused and closed",
                *out)
    k.still_serving("peer credential checks")


def main():
    tap = rpcutil.Tap()
    d = tap.start_daemon({}, "badinput")
    if not d:
        tap.finish()
    k = Case(tap, d)
    slow = Slowloris(d)
    slow.start()
    # State created before the attacks must survive them.
    for _ in range(2):
        k.watch.ok("report", {"key": "state.keep", "outcome": "failure"})
    k.still_serving("set-up")
    for name, fn in (("hostile headers", t_hostile_headers),
                     ("frame too large", t_too_large),
                     ("nesting depth", t_depth),
                     ("params not a list", t_not_a_list),
                     ("bad arguments", t_bad_arguments),
                     ("unknown method", t_unknown_method),
                     ("non-request messages", t_not_requests),
                     ("never-reading client", t_never_reads)):
        tap.run(name, fn, k)
    tap.run("slowloris", t_slowloris_result, k, slow)
    try:
        st = k.watch.ok("status", {"key": "state.keep"}, timeout=ANSWER_S)
        keep = st["keys"][0]
    except Exception as e:
        keep = repr(e)
    tap.check(isinstance(keep, dict) and keep.get("failures") == 2 and
              keep.get("calls") == 2,
              "state from before the attacks is intact", repr(keep))
    k.watch.close()
    tap.stop_daemon(d, "badinput")

    d = rpcutil.Daemon(LIMITS_CONFIG, "badinput-limits")
    tap.daemons.append(d)
    os.chmod(d.dir, 0o755)  # other uids must reach the socket
    up = d.start()
    if not up:
        tap.implicated.add(d)
    if tap.check(up, "badinput-limits: daemon starts and accepts "
                     "connections"):
        k = Case(tap, d)
        for name, fn in (("max_clients", t_max_clients),
                         ("max_keys", t_max_keys),
                         ("peer credentials", t_credentials)):
            tap.run(name, fn, k)
        k.watch.close()
        tap.stop_daemon(d, "badinput-limits")
    tap.finish()


if __name__ == "__main__":
    main()
