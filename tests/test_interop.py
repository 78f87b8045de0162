#!/usr/bin/python3
"""test_interop.py - resild against a client that is not ours.

Plain Python with Debian's python3-msgpack speaking raw MessagePack-RPC over
the Unix socket (SPEC §3): if this passes, any msgpack-rpc client works
unmodified.  Covers ping, the acquire/report round trip, status, pipelining
(100 requests in one write, responses matched by msgid), a half-closed
client, a request dripped one byte at a time, the breaker's closed -> open
-> half_open -> closed cycle with a short open_ms, the default open time
with the built-in defaults, a parked acquire answered after a later
request (out-of-order responses), and a large status answer after
pipelined requests.

TAP on stdout; exit 1 if anything failed (tests/run.sh counts the lines).
"""

import os
import random
import socket
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_int  # noqa: E402

BREAKER_CONFIG = {"policies": {"*": {"breaker": {
    "failure_threshold": 5, "open_ms": 300, "success_threshold": 2,
    "half_open_max_calls": 1}}}}

# One permit at a time for bh.*, so a second acquire with wait_ms parks;
# every other key gets a limiter and a bulkhead (bigger status entries).
PARK_CONFIG = {"policies": {
    "*": {"limiter": {"rate": 1000, "per": "second"},
          "bulkhead": {"max_concurrent": 100, "queue": 64}},
    "bh.*": {"bulkhead": {"max_concurrent": 1, "queue": 4}}}}

STATES = {"closed", "open", "half_open", "forced_open", "forced_closed",
          "disabled"}
REASONS = {"ok", "circuit_open", "half_open_busy", "rate_limited",
           "bulkhead_full", "forced_open", "heartbeat_lost"}
STATUS_FIELDS = ("key", "policy", "state", "health", "since_ms", "calls",
                 "failures", "failure_rate", "slow_rate", "opens",
                 "retry_after_ms")


def acquire_shape(res):
    """Problems with an acquire result, as a list of strings."""
    bad = []
    if not isinstance(res, dict):
        return ["result is not a map: %r" % (res,)]
    for f in ("allow", "permit", "state", "reason", "retry_after_ms"):
        if f not in res:
            bad.append("missing %r" % f)
    if "allow" in res and not isinstance(res["allow"], bool):
        bad.append("allow is not a bool")
    if "permit" in res and not is_int(res["permit"]):
        bad.append("permit is not an integer")
    if res.get("state") not in STATES:
        bad.append("state %r" % res.get("state"))
    if res.get("reason") not in REASONS:
        bad.append("reason %r" % res.get("reason"))
    if "retry_after_ms" in res and not is_int(res["retry_after_ms"]):
        bad.append("retry_after_ms is not an integer")
    return bad


def t_ping(tap, d):
    c = d.connect()
    err, res = c.call("ping")
    tap.check(err is None and isinstance(res, dict), "ping answers a map",
              "error=%r result=%r" % (err, res))
    res = res or {}
    tap.check(isinstance(res.get("version"), str) and res["version"],
              "ping: version is a non-empty string", repr(res))
    tap.check(res.get("pid") == d.pid, "ping: pid is the daemon's pid",
              "got %r, daemon pid %d" % (res.get("pid"), d.pid))
    tap.check(is_int(res.get("uptime_ms")) and res["uptime_ms"] >= 0,
              "ping: uptime_ms is a non-negative integer", repr(res))
    # params given as [{}] is the same as [].
    err, res2 = c.call("ping", {})
    tap.check(err is None and isinstance(res2, dict) and "version" in res2,
              "ping with params [{}] works too", "%r %r" % (err, res2))
    c.close()


def t_round_trip(tap, d):
    c = d.connect()
    err, res = c.call("acquire", {"key": "binance.orders"})
    tap.check(err is None and not acquire_shape(res),
              "acquire: result has allow/permit/state/reason/retry_after_ms",
              "error=%r result=%r" % (err, res), *acquire_shape(res))
    res = res or {}
    tap.check(res.get("allow") is True and res.get("permit", 0) > 0 and
              res.get("state") == "closed" and res.get("reason") == "ok" and
              res.get("retry_after_ms") == 0,
              "acquire on a new key: allowed, permit > 0, closed, ok",
              repr(res))
    err, rep = c.call("report", {"key": "binance.orders",
                                 "permit": res.get("permit", 0),
                                 "outcome": "success", "latency_ms": 12})
    tap.check(err is None and isinstance(rep, dict) and
              rep.get("state") == "closed" and rep.get("stale") is False,
              "report success: state closed, stale false",
              "error=%r result=%r" % (err, rep))
    # A failure report also carries classification and retry advice.
    _, res = c.call("acquire", {"key": "binance.orders", "cost": 1})
    err, rep = c.call("report", {
        "key": "binance.orders", "permit": (res or {}).get("permit", 0),
        "outcome": "failure", "latency_ms": 40,
        "error": {"class": "network.reset", "message": "ECONNRESET"}})
    ok = (err is None and isinstance(rep, dict) and
          rep.get("state") == "closed" and rep.get("stale") is False and
          isinstance(rep.get("classification"), dict) and
          isinstance(rep.get("retry"), dict) and
          isinstance(rep["retry"].get("retry"), bool) and
          is_int(rep["retry"].get("delay_ms")))
    tap.check(ok, "report failure: state, stale, classification, retry",
              "error=%r result=%r" % (err, rep))
    err, st = c.call("status", {"key": "binance.orders"})
    keys = st.get("keys") if isinstance(st, dict) else None
    tap.check(err is None and isinstance(st.get("health"), str) and
              isinstance(keys, list) and len(keys) == 1,
              "status {key}: health and a one-entry keys list",
              "error=%r result=%r" % (err, st))
    k = keys[0] if keys else {}
    missing = [f for f in STATUS_FIELDS if f not in k]
    tap.check(not missing and k.get("key") == "binance.orders" and
              k.get("policy") == "*" and k.get("calls") == 2 and
              k.get("failures") == 1 and k.get("state") == "closed",
              "status: per-key map has the SPEC fields and counts",
              "missing %r" % missing, repr(k))
    err, st = c.call("status")
    tap.check(err is None and isinstance(st, dict) and
              any(e.get("key") == "binance.orders"
                  for e in st.get("keys", [])),
              "status without params lists the key",
              "error=%r result=%r" % (err, st))
    c.close()


def t_pipeline(tap, d):
    """100 requests in one write; 100 responses with the same msgids."""
    c = d.connect()
    ids = random.sample(range(1, 1 << 31), 100)
    want = {}
    blob = b""
    for i, msgid in enumerate(ids):
        if i % 2:
            blob += rpcutil.request_bytes(msgid, "ping")
            want[msgid] = "ping"
        else:
            blob += rpcutil.request_bytes(
                msgid, "acquire", {"key": "pipe.k%d" % (i % 7)})
            want[msgid] = "acquire"
    c.send(blob)
    got, bad = {}, []
    deadline = time.monotonic() + 10
    try:
        for msgid in ids:
            err, res = c.wait(msgid, max(deadline - time.monotonic(), 0.01))
            got[msgid] = res
            if err is not None:
                bad.append("msgid %d: error %r" % (msgid, err))
            elif want[msgid] == "ping" and "version" not in res:
                bad.append("msgid %d: not a ping result: %r" % (msgid, res))
            elif want[msgid] == "acquire" and acquire_shape(res):
                bad.append("msgid %d: not an acquire result: %r"
                           % (msgid, res))
    except (TimeoutError, rpcutil.Closed) as e:
        bad.append("after %d responses: %r" % (len(got), e))
    tap.check(len(got) == 100 and not bad and not c.responses and
              not c.others,
              "pipelining: 100 requests in one write, 100 matching responses",
              *(bad[:10] + ["unexpected: %r %r" % (c.responses, c.others)]))
    c.close()


def t_half_close(tap, d):
    """Requests followed by EOF (shutdown SHUT_WR, as `nc -U` does): every
    request is answered before the daemon closes."""
    c = d.connect()
    c.send(b"".join(rpcutil.request_bytes(i, "ping") for i in (1, 2, 3)))
    c.sock.shutdown(socket.SHUT_WR)
    closed = c.wait_closed(5.0)
    tap.check(closed and sorted(c.responses) == [1, 2, 3],
              "half-close after 3 requests: 3 answers, then the daemon closes",
              "closed=%s responses=%r" % (closed, c.responses))
    c.close()


def t_drip(tap, d):
    """A request arriving one byte at a time is answered (the framing does
    not depend on how the stream is cut)."""
    c = d.connect()
    for b in rpcutil.request_bytes(77, "acquire", {"key": "drip.k"}):
        c.send(bytes([b]))
        time.sleep(0.002)
    err, res = c.wait(77, 5.0)
    tap.check(err is None and res.get("allow") is True,
              "a request sent one byte per write is answered",
              "error=%r result=%r" % (err, res))
    c.close()


def t_out_of_order(tap, d):
    """A parked acquire is answered after a later request (SPEC §3: a
    response may come out of order)."""
    c = d.connect()
    first = c.ok("acquire", {"key": "bh.one"})
    parked = c.request("acquire", {"key": "bh.one", "wait_ms": 5000})
    ping = c.request("ping")
    err, res = c.wait(ping, 5.0)
    tap.check(err is None and "version" in res and
              parked not in c.responses,
              "parked acquire: the later ping is answered first",
              "first=%r ping=%r pending=%r" % (first, res, c.responses))
    err, rep = c.call("report", {"key": "bh.one", "permit": first["permit"],
                                 "outcome": "success"})
    err, res = c.wait(parked, 5.0)
    tap.check(err is None and res.get("allow") is True and
              res.get("permit", 0) > 0,
              "parked acquire answered once the bulkhead frees up",
              "error=%r result=%r" % (err, res))
    c.close()


def t_stop_answers_parked(tap, d):
    """SIGTERM answers a parked acquire (a denial: its wait could not be
    met) before the connection closes, and the daemon exits 0."""
    c = d.connect()
    first = c.ok("acquire", {"key": "bh.stop"})
    parked = c.request("acquire", {"key": "bh.stop", "wait_ms": 30000})
    c.ok("ping")  # the parked request has been read and is waiting
    d.proc.send_signal(signal.SIGTERM)
    try:
        err, res = c.wait(parked, 5.0)
    except Exception as e:
        err, res = repr(e), None
    tap.check(err is None and isinstance(res, dict) and
              res.get("allow") is False and
              res.get("reason") == "bulkhead_full",
              "SIGTERM: a parked acquire is answered (denied, bulkhead_full)",
              "first=%r error=%r result=%r" % (first, err, res))
    try:
        d.proc.wait(10)
    except Exception:
        pass
    tap.check(d.proc.returncode == 0,
              "SIGTERM with a parked request: daemon exits 0",
              "exit code: %r" % d.proc.returncode)
    c.close()


def t_big_status(tap, d):
    """A client that reads promptly gets every answer even when one batch
    of pipelined requests produces more than the 256 KiB output cap: the
    cap is for clients that do not read (SPEC §3).  Here: 500 keys with
    128-byte names, forced open with a reason, behind a limiter and a
    bulkhead, make one status answer of ~230 KB; 1600 pings before it in
    the same write add ~62 KB."""
    c = d.connect()
    n = 500
    keys = ["k%04d." % i + "x" * 122 for i in range(n)]
    c.send(b"".join(rpcutil.request_bytes(
        i + 1, "force", {"key": keys[i], "state": "open", "reason": "r" * 128,
                         "ttl_ms": 600000}) for i in range(n)))
    errs = [c.wait(i + 1, 5.0)[0] for i in range(n)]
    bad = [e for e in errs if e is not None]
    tap.check(not bad, "500 keys forced open with a reason",
              "%d errors, first %r" % (len(bad), bad[:1]))
    c.close()
    c = d.connect()
    pings = 1600
    c.send(b"".join(rpcutil.request_bytes(i, "ping")
                    for i in range(1, pings + 1)) +
           rpcutil.request_bytes(pings + 1, "status"))
    got, why = 0, ""
    try:
        for i in range(1, pings + 2):
            err, res = c.wait(i, 5.0)
            got += err is None
    except (TimeoutError, rpcutil.Closed) as e:
        why = repr(e)
    tap.check(got == pings + 1,
              "1600 pings and a ~230 KB status in one write: all answered "
              "to a client that reads", "%d of %d answered %s"
              % (got, pings + 1, why))
    c.close()


def poll(fn, timeout, period=0.020):
    """Call fn() every period until it returns a true value or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(period)


def fail_five(c, key):
    states = []
    for _ in range(5):
        err, rep = c.call("report", {"key": key, "outcome": "failure",
                                     "error": {"class": "network.timeout"}})
        states.append(err if err is not None else rep.get("state"))
    return states


def t_breaker_cycle(tap, d):
    key = "okx.orders"  # a fresh key: no failures counted yet
    c = d.connect()
    states = fail_five(c, key)
    tap.check(states[:4] == ["closed"] * 4 and states[4] == "open",
              "five failure reports open the breaker (state after each)",
              repr(states))
    _, res = c.call("acquire", {"key": key})
    res = res or {}
    tap.check(res.get("allow") is False and res.get("permit") == 0 and
              res.get("state") == "open" and
              res.get("reason") == "circuit_open",
              "acquire on open breaker: allow false, circuit_open", repr(res))
    ra = res.get("retry_after_ms")
    tap.check(is_int(ra) and 0 < ra <= 300,
              "open breaker: 0 < retry_after_ms <= open_ms (300)", repr(ra))

    seen = []

    def probe():
        _, r = c.call("acquire", {"key": key})
        seen.append(r)
        return r if r and r.get("allow") else None
    t0 = time.monotonic()
    p1 = poll(probe, 5.0)
    waited = time.monotonic() - t0
    tap.check(p1 is not None and p1.get("state") == "half_open" and
              p1.get("permit", 0) > 0,
              "a probe is admitted in half_open after open_ms",
              "after %.3f s; last answers %r" % (waited, seen[-3:]))
    if p1 is None:
        c.close()
        return
    tap.check(waited >= 0.1,
              "breaker stayed open for most of open_ms before half_open",
              "admitted after %.3f s" % waited)
    _, busy = c.call("acquire", {"key": key})
    tap.check(busy and busy.get("allow") is False and
              busy.get("reason") == "half_open_busy",
              "second concurrent probe refused: half_open_busy",
              repr(busy))
    _, rep = c.call("report", {"key": key, "permit": p1["permit"],
                               "outcome": "success", "latency_ms": 5})
    tap.check(rep and rep.get("state") == "half_open" and
              rep.get("stale") is False,
              "first probe success: still half_open (success_threshold 2)",
              repr(rep))
    _, p2 = c.call("acquire", {"key": key})
    tap.check(p2 and p2.get("allow") is True and
              p2.get("state") == "half_open",
              "next probe admitted once the first was reported", repr(p2))
    _, rep = c.call("report", {"key": key, "permit": (p2 or {}).get("permit"),
                               "outcome": "success", "latency_ms": 5})
    tap.check(rep and rep.get("state") == "closed",
              "second probe success closes the breaker", repr(rep))
    _, st = c.call("status", {"key": key})
    k = (st or {}).get("keys", [{}])[0] if (st or {}).get("keys") else {}
    tap.check(k.get("state") == "closed" and k.get("opens") == 1 and
              k.get("retry_after_ms") == 0,
              "status after the cycle: closed, opens 1, retry_after_ms 0",
              repr(k))
    _, res = c.call("acquire", {"key": key})
    tap.check(res and res.get("allow") is True and
              res.get("state") == "closed",
              "closed breaker allows again", repr(res))
    c.close()


def t_default_open(tap, d):
    c = d.connect()
    states = fail_five(c, "zerodha.marketdata.ws")
    _, res = c.call("acquire", {"key": "zerodha.marketdata.ws"})
    res = res or {}
    ra = res.get("retry_after_ms")
    tap.check(states[4] == "open" and res.get("allow") is False and
              res.get("reason") == "circuit_open" and is_int(ra) and
              0 < ra <= 30000,
              "defaults: five failures open it, 0 < retry_after_ms <= 30000",
              "states %r, acquire %r" % (states, res))
    _, st = c.call("status", {"key": "zerodha.marketdata.ws"})
    k = (st or {}).get("keys", [{}])[0] if (st or {}).get("keys") else {}
    tap.check(k.get("state") == "open" and
              0 < k.get("retry_after_ms", 0) <= 30000 and
              k.get("health") == "unavailable",
              "defaults: status shows open, retry_after_ms, unavailable",
              repr(k))
    c.close()


def main():
    tap = rpcutil.Tap()
    d = tap.start_daemon(BREAKER_CONFIG, "interop")
    if d:
        tap.run("ping", t_ping, tap, d)
        tap.run("acquire/report round trip", t_round_trip, tap, d)
        tap.run("pipelining", t_pipeline, tap, d)
        tap.run("half-close", t_half_close, tap, d)
        tap.run("drip", t_drip, tap, d)
        tap.run("breaker cycle", t_breaker_cycle, tap, d)
        tap.check(d.alive(), "daemon still running")
        tap.stop_daemon(d, "interop")
    d = tap.start_daemon({}, "interop-defaults")
    if d:
        tap.run("default open time", t_default_open, tap, d)
        tap.stop_daemon(d, "interop-defaults")
    d = tap.start_daemon(PARK_CONFIG, "interop-park")
    if d:
        tap.run("out-of-order responses", t_out_of_order, tap, d)
        tap.run("big status after pipelined requests", t_big_status, tap, d)
        tap.run("SIGTERM with a parked request", t_stop_answers_parked,
                tap, d)
    tap.finish()


if __name__ == "__main__":
    main()
