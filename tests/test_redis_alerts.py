#!/usr/bin/python3
"""test_redis_alerts.py - an incident on a shared key pages once, on the
daemon where it happened (issue 13).

Two real daemons in shared mode on one real redis-server.  A trip on A is
applied on B as a remote change; the built-in breaker_open alert (SPEC §6:
"a breaker opened by itself") must fire on A only, or every host sharing
the key would run its exec hook for the same incident.  B's subscriber
still sees the remote transition, so nothing is hidden from B's operators.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redisutil as ru  # noqa: E402

PREFIX = "talerts%d:" % os.getpid()


def cfg(server, origin):
    return {"redis": ru.redis_cfg(server, "shared", PREFIX, origin),
            "policies": {
                "*": {"breaker": {"failure_threshold": 2, "open_ms": 30000,
                                  "failure_rate_threshold": 0}},
                "g.*": {"scope": "global"}}}


def t_alert_once(tap, server):
    A = tap.start_resild(cfg(server, "hostA"), "A")
    B = tap.start_resild(cfg(server, "hostB"), "B")
    if not A or not B:
        return
    a, b = A.connect(), B.connect()
    for name, conn in (("A", a), ("B", b)):
        ok, _ = ru.poll(lambda: ru.redis_ok(conn), 5.0)
        tap.check(ok, "%s: connected to Redis" % name)
    sa, sb = A.connect(), B.connect()
    sa.ok("subscribe", {"topics": ["alert", "state"]})
    sb.ok("subscribe", {"topics": ["alert", "state"]})
    ru.trip(a, "g.venue", 2)
    got_a = sa.events(2.0, lambda e: e.get("type") == "alert")
    alerts_a = [e for e in got_a if e.get("type") == "alert"]
    tap.check(len(alerts_a) == 1 and alerts_a[0].get("kind") ==
              "breaker_open" and alerts_a[0].get("key") == "g.venue",
              "A: its own trip raises one breaker_open alert", repr(got_a))
    # B: the remote transition arrives; no alert follows it.
    got_b = sb.events(2.0)
    tr_b = [e for e in got_b if e.get("type") == "transition"]
    alerts_b = [e for e in got_b if e.get("type") == "alert"]
    tap.check(len(tr_b) == 1 and tr_b[0].get("cause") == "remote" and
              tr_b[0].get("origin") == "hostA",
              "B: sees the remote transition (cause remote, origin hostA)",
              repr(got_b))
    tap.check(not alerts_b, "B: no breaker_open alert for A's incident "
              "(it pages once, on A)", repr(alerts_b))
    tap.check("alert breaker_open" not in B.log(),
              "B: its log has no alert line for it", B.log()[-2000:])
    # B's own trip still alerts on B.
    ru.trip(b, "g.other", 2)
    got_b = sb.events(2.0, lambda e: e.get("type") == "alert")
    tap.check(any(e.get("type") == "alert" and e.get("key") == "g.other"
                  for e in got_b),
              "B: a trip of its own alerts on B", repr(got_b))
    for name, d in (("A", A), ("B", B)):
        tap.stop_daemon(d, name)


def main():
    tap = ru.RTap()
    t0 = time.monotonic()
    server = tap.redis("redis")
    if server:
        tap.run("alert once", t_alert_once, tap, server)
    tap.diag("runtime %.1f s" % (time.monotonic() - t0))
    tap.finish()


if __name__ == "__main__":
    main()
