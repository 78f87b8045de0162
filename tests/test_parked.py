#!/usr/bin/env python3
"""
test_parked.py - parked acquires in the corners where a daemon hangs,
crashes or answers wrongly, each a regression test for a bug once found:

- the permit pool is full when a parked request could pass: it is answered
  (busy) at its deadline and the daemon keeps serving (it used to spin in
  its wake timer for ever);
- a client with parked requests goes away while the daemon is busy: their
  expiry must not touch freed entries (it used to crash);
- a parked critical request passes a normal one that must keep waiting;
- a key below more ancestor limiters than the daemon tracks is refused, not
  let through the account-wide limit;
- a normal cost that only the critical reserve could hold is bad_request;
- a half-closed client still gets its parked answer;
- SIGTERM answers everything a paused connection had sent, then exits 0.

Each case has its own daemon; raw MessagePack-RPC through tests/rpcutil.py.
"""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_error, pack  # noqa: E402


def t_pool_full(tap):
    """max_permits 16, all held; a parked acquire whose limiter refills
    (at 1 s) before its deadline (1.5 s) finds no permit."""
    d = tap.start_daemon({"max_permits": 16, "policies": {
        "lim": {"limiter": {"rate": 1, "per_ms": 1000, "burst": 1}}}},
        "parked-pool")
    if not d:
        return
    a, b = d.connect(), d.connect()
    a.ok("acquire", {"key": "lim"})  # the only token
    for i in range(15):
        a.ok("acquire", {"key": "free%d" % i})
    err, _ = a.call("acquire", {"key": "other"})
    tap.check(is_error(err, "busy"), "pool full: a 17th acquire is busy",
              repr(err))
    mid = b.request("acquire", {"key": "lim", "wait_ms": 1500})
    t0 = time.monotonic()
    try:
        err, res = b.wait(mid, 4.0)
    except Exception as e:
        err, res = repr(e), None
    took = time.monotonic() - t0
    tap.check(is_error(err, "busy") and 1.3 < took < 3.5,
              "pool full: the parked acquire is answered busy at its "
              "deadline", "after %.2f s: error=%r result=%r"
              % (took, err, res))
    try:
        alive = "version" in d.connect().ok("ping", timeout=2.0)
    except Exception:
        alive = False
    tap.check(alive, "pool full: the daemon still answers a new client")
    tap.stop_daemon(d, "parked-pool")


def t_gone_while_busy(tap):
    """A's two parked entries share a deadline; A closes while another
    client keeps the loop busy; the expiry pass must not touch freed
    entries."""
    # A big key table makes each status walk it (~2 ms): 200 of them keep
    # the loop busy past the parked requests' deadline.
    d = tap.start_daemon({"max_keys": 4000000, "policies": {
        "k": {"bulkhead": {"max_concurrent": 1, "queue": 10}}}},
        "parked-gone")
    if not d:
        return
    b, a, e = d.connect(), d.connect(), d.connect()
    b.ok("acquire", {"key": "k"})  # holds the only slot
    b.request("acquire", {"key": "k", "wait_ms": 60000})  # head of queue
    b.ok("ping")
    a.send(b"".join(pack([0, i, "acquire", [{"key": "k", "wait_ms": 300}]])
                    for i in (1, 2)))
    a.ok("ping")
    e.send(b"".join(pack([0, 1000 + i, "status", [{"prefix": "zz"}]])
                    for i in range(200)))
    time.sleep(0.1)
    a.close()
    try:
        e.wait(1199, 20.0)
        served = True
    except Exception:
        served = False
    time.sleep(0.5)  # the expiry pass has run by now
    tap.check(served and d.alive(),
              "client gone while its parked requests expire: daemon alive "
              "and serving", "served=%s alive=%s" % (served, d.alive()))
    try:
        alive = "version" in d.connect().ok("ping", timeout=2.0)
    except Exception:
        alive = False
    tap.check(alive, "client gone while parked: a new client is answered")
    tap.stop_daemon(d, "parked-gone")


def t_critical_passes(tap):
    """Bulkhead 2 with reserve 1: a parked normal request must wait; a
    parked critical one behind it gets the reserve slot when it frees."""
    d = tap.start_daemon({"policies": {
        "k": {"bulkhead": {"max_concurrent": 2, "queue": 10},
              "reserve": 1}}}, "parked-critical")
    if not d:
        return
    a, b, c = d.connect(), d.connect(), d.connect()
    a.ok("acquire", {"key": "k"})
    crit = a.ok("acquire", {"key": "k", "priority": "critical"})
    mb = b.request("acquire", {"key": "k", "wait_ms": 5000})
    b.ok("ping")
    mc = c.request("acquire", {"key": "k", "wait_ms": 3000,
                               "priority": "critical"})
    c.ok("ping")
    a.ok("report", {"key": "k", "permit": crit["permit"],
                    "outcome": "success"})
    try:
        err, res = c.wait(mc, 2.0)
    except Exception as e:
        err, res = repr(e), None
    tap.check(err is None and res and res.get("allow") is True,
              "a parked critical request passes the normal one waiting "
              "ahead of it", "error=%r result=%r" % (err, res))
    tap.check(mb not in b.responses,
              "the normal request keeps waiting (the free slot is the "
              "reserve)")
    tap.stop_daemon(d, "parked-critical")


def t_limits_refused(tap):
    """Deep keys and costs that could never pass are bad_request."""
    d = tap.start_daemon({"policies": {
        "binance": {"limiter": {"rate": 1, "per": "minute"}},
        "binance.*": {"limiter": {"rate": 100, "per": "second"}},
        "res": {"limiter": {"rate": 10, "per": "second"}, "reserve": 4}}},
        "parked-limits")
    if not d:
        return
    c = d.connect()
    c.ok("acquire", {"key": "binance.orders"})  # the account's one token
    err, res = c.call("acquire", {"key": "binance.a.b.c.d.e.f.g.h"})
    tap.check(err is None and res["allow"] is False and
              res["reason"] == "rate_limited",
              "8 ancestor limiters: the account-wide one still applies",
              "error=%r result=%r" % (err, res))
    err, res = c.call("acquire", {"key": "binance.a.b.c.d.e.f.g.h.i"})
    tap.check(is_error(err, "bad_request") and
              "rate limiters" in err.get("message", ""),
              "9 ancestor limiters: bad_request, never a silent bypass",
              "error=%r result=%r" % (err, res))
    err, res = c.call("acquire", {"key": "res", "cost": 7})
    tap.check(is_error(err, "bad_request") and
              "critical" in err.get("message", ""),
              "a normal cost above burst minus reserve: bad_request",
              "error=%r result=%r" % (err, res))
    err, res = c.call("acquire", {"key": "res", "cost": 7,
                                  "priority": "critical"})
    tap.check(err is None and res["allow"] is True,
              "the same cost as critical: allowed", "error=%r result=%r"
              % (err, res))
    tap.stop_daemon(d, "parked-limits")


def t_half_close(tap):
    """shutdown(SHUT_WR) after a parked acquire: it is still answered."""
    d = tap.start_daemon({"policies": {
        "k": {"bulkhead": {"max_concurrent": 1, "queue": 10}}}},
        "parked-halfclose")
    if not d:
        return
    a, b = d.connect(), d.connect()
    held = a.ok("acquire", {"key": "k"})
    mid = b.request("acquire", {"key": "k", "wait_ms": 5000})
    b.ok("ping")
    b.sock.shutdown(socket.SHUT_WR)
    time.sleep(0.2)  # the daemon has seen the EOF
    a.ok("report", {"key": "k", "permit": held["permit"],
                    "outcome": "success"})
    try:
        err, res = b.wait(mid, 3.0)
    except Exception as e:
        err, res = repr(e), None
    tap.check(err is None and res and res.get("allow") is True,
              "half-closed client: its parked acquire is answered",
              "error=%r result=%r" % (err, res))
    tap.check(b.wait_closed(3.0),
              "half-closed client: closed once nothing is left to answer")
    tap.stop_daemon(d, "parked-halfclose")


def t_stop_paused(tap):
    """A client sends 30 big status requests and a ping without reading:
    its connection pauses.  SIGTERM, then the client reads: every one is
    answered and the daemon exits 0."""
    d = tap.start_daemon({}, "parked-stop")
    if not d:
        return
    c = d.connect()
    for i in range(400):
        c.request("report", {"key": "big.%03d.%s" % (i, "y" * 100),
                             "outcome": "success"})
    c.ok("ping", timeout=10.0)
    c.responses.clear()
    # One write, so the daemon reads all 31 at once (it answers what it
    # has read; bytes still in the kernel's buffer at the stop are not).
    ids = list(range(5000, 5031))
    c.send(b"".join(pack([0, i, "status", [{"prefix": "big"}]])
                    for i in ids[:-1]) + pack([0, ids[-1], "ping", []]))
    time.sleep(0.3)  # the daemon has read them and paused
    d.proc.send_signal(signal.SIGTERM)
    got, err = 0, None
    try:
        for i in ids:
            e, _ = c.wait(i, 10.0)
            got += e is None
    except Exception as ex:
        err = repr(ex)
    tap.check(got == len(ids),
              "SIGTERM: all %d requests of a paused connection answered"
              % len(ids), "answered %d, then %s" % (got, err))
    try:
        d.proc.wait(10)
    except Exception:
        pass
    tap.check(d.proc.returncode == 0, "SIGTERM with a paused connection: "
              "exit 0", "exit code %r" % d.proc.returncode)


def t_bounds_configured(tap):
    """partial_timeout_ms and max_parked_per_client come from the config."""
    d = tap.start_daemon({"partial_timeout_ms": 300,
                          "max_parked_per_client": 2, "policies": {
                              "k": {"bulkhead": {"max_concurrent": 1,
                                                 "queue": 10}}}},
                         "parked-bounds")
    if not d:
        return
    slow = d.connect()
    slow.send(b"\x94")  # one byte of a request, then nothing
    t0 = time.monotonic()
    closed = slow.wait_closed(5.0)
    took = time.monotonic() - t0
    tap.check(closed and took < 3.0,
              "partial_timeout_ms 300: a partial request is closed in "
              "%.1f s" % took)
    a, b = d.connect(), d.connect()
    a.ok("acquire", {"key": "k"})
    ids = [b.request("acquire", {"key": "k", "wait_ms": 5000})
           for _ in range(3)]
    try:
        err, res = b.wait(ids[2], 2.0)
    except Exception as e:
        err, res = repr(e), None
    tap.check(err is None and res and res["allow"] is False and
              ids[0] not in b.responses and ids[1] not in b.responses,
              "max_parked_per_client 2: a third wait is denied at once, two "
              "stay parked", "error=%r result=%r" % (err, res))
    tap.stop_daemon(d, "parked-bounds")


def main():
    tap = rpcutil.Tap()
    for name, fn in (("permit pool full while parked", t_pool_full),
                     ("client gone while parked", t_gone_while_busy),
                     ("critical passes a waiting head", t_critical_passes),
                     ("limits that can never pass", t_limits_refused),
                     ("half-closed client", t_half_close),
                     ("SIGTERM with a paused connection", t_stop_paused),
                     ("configured bounds", t_bounds_configured)):
        tap.run(name, fn, tap)
    tap.finish()


if __name__ == "__main__":
    main()
