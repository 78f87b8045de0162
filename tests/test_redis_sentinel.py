#!/usr/bin/python3
"""test_redis_sentinel.py - high availability through Redis Sentinel
(issue 13, SPEC §7) with real processes on free TCP ports of 127.0.0.1:
a primary, a replica (--replicaof) and one `redis-server sentinel.conf
--sentinel` (quorum 1, down-after 1000 ms, failover-timeout 5000 ms,
resolve-hostnames no); two daemons in shared mode with
"sentinels": ["127.0.0.1:SPORT"], "master_name": "mymaster".

- both connect to the primary the sentinel names (health ok, its port in
  the detail), and a trip on A reaches B;
- kill -9 the primary: within 15 s both say redis ok again, connected to
  the promoted replica's port; decisions go on meanwhile (each acquire
  answered within 250 ms);
- a trip on A after the failover reaches B within 1 s.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redisutil as ru  # noqa: E402

PREFIX = "tsentinel%d:" % os.getpid()
MASTER = "mymaster"
FAILOVER_S = 15.0


def cfg(sport, origin):
    r = {"sentinels": ["127.0.0.1:%d" % sport], "master_name": MASTER,
         "mode": "shared", "prefix": PREFIX, "origin": origin,
         "expected_hosts": 2, "connect_timeout_ms": 500,
         "command_timeout_ms": 500}
    return {"redis": r, "policies": {
        "*": {"breaker": {"failure_threshold": 3, "open_ms": 30000,
                          "failure_rate_threshold": 0}},
        "g.*": {"scope": "global"}}}


def master_addr(sentinel):
    r = ru.call(sentinel.addr, "SENTINEL", "get-master-addr-by-name", MASTER)
    if isinstance(r, list) and len(r) == 2:
        return r[0].decode(), int(r[1])
    return None


def replica_ready(sentinel, replica_port):
    """The sentinel knows the replica, and it is up and linked."""
    rs = ru.call(sentinel.addr, "SENTINEL", "replicas", MASTER)
    if not isinstance(rs, list):
        return False
    for r in rs:
        d = dict(zip(r[0::2], r[1::2]))
        flags = d.get(b"flags", b"").decode()
        if (d.get(b"port") == str(replica_port).encode() and
                "s_down" not in flags and "disconnected" not in flags and
                d.get(b"master-link-status") == b"ok"):
            return True
    return False


def reaches(tap, b, key, what):
    t0 = time.monotonic()
    st, _ = ru.poll(lambda: ru.state_is(b, key, "open"), 2.0)
    el = time.monotonic() - t0
    tap.check(st is not None and el <= 1.0,
              "%s: a trip on A reaches B in %.0f ms" % (what, el * 1000),
              repr(ru.key_status(b, key)))


def t_sentinel(tap):
    pport, rport, sport = ru.free_port(), ru.free_port(), ru.free_port()
    while len({pport, rport, sport}) < 3:
        rport, sport = ru.free_port(), ru.free_port()
    primary = tap.redis("primary", unix=False, port=pport)
    replica = tap.redis("replica", unix=False, port=rport,
                        extra=["--replicaof", "127.0.0.1", str(pport)])
    if not (primary and replica):
        return
    sentinel = tap.redis("sentinel", start=False, unix=False, port=sport)
    sentinel.sentinel_conf = ru.sentinel_conf(sport, pport, sentinel.dir)
    tap.check(sentinel.start(), "sentinel starts and answers PING",
              sentinel.log()[-2000:])
    linked, el = ru.poll(lambda: ru.info(replica.addr, "replication").get(
        "master_link_status") == "up", 10.0)
    tap.check(linked, "the replica is linked to the primary (%.1f s)" % el)
    known, el = ru.poll(lambda: replica_ready(sentinel, rport), 15.0, 0.1)
    tap.check(known, "the sentinel knows the replica (%.1f s)" % el,
              repr(ru.call(sentinel.addr, "SENTINEL", "replicas", MASTER)))
    tap.check(master_addr(sentinel) == ("127.0.0.1", pport),
              "the sentinel names the primary", repr(master_addr(sentinel)))

    A = tap.start_resild(cfg(sport, "A"), "A")
    B = tap.start_resild(cfg(sport, "B"), "B")
    if not (A and B):
        return
    a, b = A.connect(), B.connect()
    for name, conn in (("A", a), ("B", b)):
        ok, el = ru.poll(lambda: ru.redis_ok(conn), 5.0)
        comp = ru.redis_component(conn)
        tap.check(ok and ":%d" % pport in str(comp.get("detail")),
                  "%s: connected through the sentinel to the primary :%d "
                  "(%.0f ms)" % (name, pport, el * 1000), repr(comp))
    ru.trip(a, "g.before", 3)
    reaches(tap, b, "g.before", "before the failover")

    # --- kill -9 the primary; decisions go on --------------------------------
    t_kill = time.monotonic()
    primary.kill()
    worst = 0.0
    n = 0
    moved = {"A": None, "B": None}
    promoted = None
    while time.monotonic() < t_kill + FAILOVER_S + 5 and \
            not (all(moved.values()) and promoted):
        for conn in (a, b):
            t0 = time.monotonic()
            r = conn.ok("acquire", {"key": "p.decide"})
            worst = max(worst, time.monotonic() - t0)
            n += 1
            if r["allow"]:
                conn.ok("report", {"key": "p.decide", "permit": r["permit"],
                                   "outcome": "success"})
        if promoted is None:
            try:
                if master_addr(sentinel) == ("127.0.0.1", rport):
                    promoted = time.monotonic() - t_kill
            except OSError:
                pass
        for name, conn in (("A", a), ("B", b)):
            if moved[name] is None:
                comp = ru.redis_component(conn)
                if comp and comp.get("ok") and \
                        ":%d" % rport in str(comp.get("detail")):
                    moved[name] = time.monotonic() - t_kill
        time.sleep(0.02)
    tap.diag("sentinel promoted the replica after %s s; A moved after %s s, "
             "B after %s s" % (promoted and "%.1f" % promoted,
                               moved["A"] and "%.1f" % moved["A"],
                               moved["B"] and "%.1f" % moved["B"]))
    tap.check(promoted is not None, "the sentinel promoted the replica",
              sentinel.log()[-1500:])
    for name, conn in (("A", a), ("B", b)):
        tap.check(moved[name] is not None and moved[name] <= FAILOVER_S,
                  "%s: redis ok on the promoted replica :%d within %.0f s"
                  % (name, rport, FAILOVER_S),
                  repr(ru.redis_component(conn)))
    tap.check(n > 50 and worst <= 0.25,
              "decisions went on during the failover: %d acquires, worst "
              "%.1f ms" % (n, worst * 1000))
    ru.trip(a, "g.after", 3)
    reaches(tap, b, "g.after", "after the failover")
    fail = ru.metric(a, "resild_redis_failovers_total")
    tap.diag("A: resild_redis_failovers_total %r" % fail)
    for name, d in (("A", A), ("B", B)):
        tap.stop_daemon(d, name)


def main():
    tap = ru.RTap()
    t0 = time.monotonic()
    tap.run("sentinel", t_sentinel, tap)
    tap.diag("runtime %.1f s" % (time.monotonic() - t0))
    tap.finish()


if __name__ == "__main__":
    main()
