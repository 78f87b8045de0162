#!/usr/bin/python3
"""test_redis_mirror.py - mirror mode with a real redis-server on a
temporary Unix socket (issue 13, SPEC §7): a replaced daemon starts warm.

- daemon M1 (mode mirror) trips key k (open_ms 30000) and forces key f
  open, and is stopped with SIGTERM: it writes what is queued before it
  exits (exit 0);
- Redis holds <prefix>key:k and <prefix>key:f (read with a raw RESP
  client);
- daemon M2, with an EMPTY state directory (its own snapshot path, no file)
  and the same prefix, shows within 2 s k open with 20 s < time left <= 30
  s, and f forced_open with its reason;
- hostile records beside them (random, truncated, a flipped byte) are
  rejected and counted, the good ones still taken;
- a daemon with another prefix takes that prefix's records, not these;
- mirror mode publishes nothing on <prefix>events;
- records are written behind while the daemon runs: after kill -9 a new
  daemon starts warm; a reset overwrites the open record; SIGTERM with
  Redis SIGSTOPped still exits promptly;
- redis.url tcp://, redis.password and redis.db: records land in that
  database; a wrong password shows in health and decisions go on.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redisutil as ru  # noqa: E402

PREFIX = "tmirror%d:" % os.getpid()
OTHER = "tmirror%d-other:" % os.getpid()
OPEN_MS = 30000
POLICIES = {"*": {"breaker": {"failure_threshold": 3, "open_ms": OPEN_MS,
                              "failure_rate_threshold": 0}}}


def cfg(server, origin, prefix=PREFIX):
    return {"redis": ru.redis_cfg(server, "mirror", prefix, origin),
            "policies": POLICIES}


def t_mirror(tap, server):
    M0 = tap.start_resild(cfg(server, "M0", OTHER), "M0")
    if not M0:
        return
    c0 = M0.connect()
    ru.poll(lambda: ru.redis_ok(c0), 5.0)
    ru.trip(c0, "marker", 3)
    tap.stop_daemon(M0, "M0")
    M1 = tap.start_resild(cfg(server, "M1"), "M1")
    if not M1:
        return
    c = M1.connect()
    ok, el = ru.poll(lambda: ru.redis_ok(c), 5.0)
    comp = ru.redis_component(c)
    tap.check(ok, "M1: health components.redis ok (%.0f ms)" % (el * 1000),
              repr(comp))
    tap.check(comp and "mirror" in str(comp.get("detail")),
              "M1: the detail says mirror", repr(comp))
    # Listen to the events channel: mirror mode must publish nothing.
    listener = ru.RespConn(server.addr, timeout=0.2)
    listener.call("SUBSCRIBE", PREFIX + "events")
    ru.trip(c, "k", 3)
    st = ru.key_status(c, "k")
    tap.check(st and st["state"] == "open", "M1: k open after 3 failures",
              repr(st))
    c.ok("force", {"key": "f", "state": "open", "reason": "venue maint"})
    c.ok("acquire", {"key": "quiet"})  # a key with nothing to say
    t_trip = time.monotonic()
    tap.stop_daemon(M1, "M1")  # SIGTERM: the queue is written first
    for key in ("k", "f"):
        n = ru.call(server.addr, "EXISTS", PREFIX + "key:" + key)
        tap.check(n == 1, "Redis holds %skey:%s after M1's SIGTERM"
                  % (PREFIX, key), repr(n))
    val = ru.call(server.addr, "GET", PREFIX + "key:k")
    tap.check(isinstance(val, bytes) and len(val) > 16,
              "the record is a value of %d bytes"
              % (len(val) if isinstance(val, bytes) else -1), repr(val)[:200])
    got = []
    try:
        while True:
            got.append(listener.read())
    except OSError:
        pass
    listener.close()
    tap.check(not got, "mirror mode publishes nothing on %sevents" % PREFIX,
              repr(got)[:300])

    # Hostile records beside the good ones: never trusted, counted.
    junk = {"junk": os.urandom(300), "short": b"RSM1",
            "cut": val[:len(val) // 2] if isinstance(val, bytes) else b"x",
            "flipped": (val[:-1] + bytes([val[-1] ^ 0xff]))
            if isinstance(val, bytes) else b"y"}
    for name, v in junk.items():
        server.call("SET", PREFIX + "key:" + name, v)

    M2 = tap.start_resild(cfg(server, "M2"), "M2")
    if not M2:
        return
    c2 = M2.connect()
    st, el = ru.poll(lambda: ru.state_is(c2, "k", "open"), 2.0)
    tap.check(st is not None, "M2 starts warm: k open within 2 s "
              "(%.0f ms)" % (el * 1000), repr(ru.key_status(c2, "k")))
    if st:
        left = st.get("retry_after_ms", 0)
        since = (time.monotonic() - t_trip) * 1000
        tap.check(20000 < left <= OPEN_MS and left <= OPEN_MS - since + 500,
                  "M2: k's time left is M1's, shortened by the time since "
                  "(%d ms left, %.0f ms since the trip)" % (left, since),
                  repr(st))
        r = c2.ok("acquire", {"key": "k"})
        tap.check(not r["allow"] and r["reason"] == "circuit_open",
                  "M2: acquire k denied circuit_open", repr(r))
    st, _ = ru.poll(lambda: ru.state_is(c2, "f", "forced_open"), 2.0)
    tap.check(st is not None and st.get("force_reason") == "venue maint",
              "M2: f forced_open with its reason", repr(ru.key_status(c2, "f")))
    ok, _ = ru.poll(lambda: ru.redis_ok(c2), 5.0)
    tap.check(ok, "M2: health components.redis ok",
              repr(ru.redis_component(c2)))
    rej, _ = ru.poll(lambda: (ru.metric(c2, "resild_redis_rejected_total",
                                        0) or 0) >= 4, 2.0, 0.1)
    tap.check(rej, "M2: the four hostile records are rejected and counted "
              "(%r)" % ru.metric(c2, "resild_redis_rejected_total"))
    tap.check(c2.ok("ping").get("pid") == M2.pid,
              "M2: still answering after reading them")
    loaded = ru.metric(c2, "resild_redis_loaded_total")
    tap.check(loaded is not None and loaded >= 2,
              "M2: metrics count the keys taken from Redis (%r)" % loaded)

    # Another prefix is another mirror: M3 reads OTHER's records (the
    # marker M0 left there), never M1's.
    M3 = tap.start_resild(cfg(server, "M3", OTHER), "M3")
    if M3:
        c3 = M3.connect()
        st, _ = ru.poll(lambda: ru.state_is(c3, "marker", "open"), 2.0)
        tap.check(st is not None, "M3 (prefix %s) starts warm from its "
                  "prefix's records" % OTHER,
                  repr(ru.key_status(c3, "marker")))
        st = ru.key_status(c3, "k")
        tap.check(st is None, "M3 does not take the keys of prefix %s"
                  % PREFIX, repr(st))
        tap.stop_daemon(M3, "M3")
    tap.stop_daemon(M2, "M2")


def t_write_behind(tap, server):
    """Records are written while the daemon runs (a host that dies with
    kill -9 has its state in Redis already), a reset overwrites the open
    record, and a SIGTERM with Redis stopped does not hang on it."""
    prefix = PREFIX + "wb:"
    W1 = tap.start_resild(cfg(server, "W1", prefix), "W1")
    if not W1:
        return
    c = W1.connect()
    ru.poll(lambda: ru.redis_ok(c), 5.0)
    ru.trip(c, "dead", 3)
    ru.trip(c, "healed", 3)
    c.ok("reset", {"key": "healed"})
    # Written in the order marked, on one connection: once the marker's
    # record is there, so is the reset's.
    c.ok("force", {"key": "marker", "state": "open"})
    got, el = ru.poll(lambda: server.call("EXISTS", prefix + "key:dead") == 1
                      and server.call("EXISTS", prefix + "key:marker") == 1,
                      2.0)
    tap.check(got, "W1 writes behind while running: records in Redis "
              "within %.0f ms" % (el * 1000))
    W1.proc.kill()  # SIGKILL: no drain, no final snapshot
    W1.proc.wait()
    W2 = tap.start_resild(cfg(server, "W2", prefix), "W2")
    if not W2:
        return
    c2 = W2.connect()
    st, el = ru.poll(lambda: ru.state_is(c2, "dead", "open"), 2.0)
    tap.check(st is not None, "after W1's kill -9, W2 starts warm: dead is "
              "open (%.0f ms)" % (el * 1000), repr(ru.key_status(c2, "dead")))
    st = ru.key_status(c2, "healed")
    tap.check(st is None or st["state"] == "closed",
              "W2: healed (tripped then reset on W1) is not open: the reset "
              "overwrote the record", repr(st))
    # SIGTERM while Redis is stopped: the queue gets its second, not more.
    ru.trip(c2, "late", 3)
    server.pause()
    try:
        t0 = time.monotonic()
        W2.proc.terminate()
        try:
            rc = W2.proc.wait(10)
        except Exception:  # noqa: BLE001
            rc = None
        el = time.monotonic() - t0
    finally:
        server.resume()
    tap.check(rc == 0 and el <= 3.0,
              "W2: SIGTERM with Redis stopped exits 0 in %.1f s (<= 3 s)"
              % el, "exit %r" % rc)
    ok = server.wait_ready(5.0)
    tap.check(ok, "redis answers again after SIGCONT")


def t_auth_db(tap):
    """redis.url tcp://, redis.password and redis.db: the records land in
    that database of a server that requires the password; a wrong password
    is a health detail, not a silent failure."""
    server = tap.redis("authdb", unix=False, port=ru.free_port(),
                       password="s3cret")
    if not server:
        return
    prefix = PREFIX + "auth:"
    good = {"redis": ru.redis_cfg(server, "mirror", prefix, "T1",
                                  password="s3cret", db=5),
            "policies": POLICIES}
    T1 = tap.start_resild(good, "T1")
    if not T1:
        return
    c = T1.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    comp = ru.redis_component(c)
    tap.check(ok and "tcp:127.0.0.1:%d" % server.port in str(comp.get(
        "detail")), "T1: connected over tcp:// with the password (%r)"
        % (comp and comp.get("detail")))
    ru.trip(c, "k", 3)

    found, el = ru.poll(lambda: server.call(
        "EXISTS", prefix + "key:k", db=5) == 1, 2.0)
    tap.check(found, "T1's record of k is in db 5 (%.0f ms)" % (el * 1000))
    n0 = server.call("EXISTS", prefix + "key:k")
    tap.check(n0 == 0, "and not in db 0", repr(n0))
    tap.stop_daemon(T1, "T1")

    bad = {"redis": ru.redis_cfg(server, "mirror", prefix, "T2",
                                 password="wrong", db=5),
           "policies": POLICIES}
    T2 = tap.start_resild(bad, "T2")
    if not T2:
        return
    c = T2.connect()
    comp, _ = ru.poll(lambda: ru.redis_not_ok(c), 3.0)
    tap.check(comp is not None and comp.get("detail"),
              "T2 (wrong password): health redis not ok, detail %r"
              % (comp and comp.get("detail")), repr(ru.redis_component(c)))

    # The first not-ok detail may be "connecting (attempt 1)", before the
    # AUTH answer is in: wait for the reason, as an operator would look.
    def says_password():
        x = ru.redis_not_ok(c)
        d = str(x and x.get("detail")).lower()
        return x if ("wrongpass" in d or "password" in d) else None
    comp2, _ = ru.poll(says_password, 3.0)
    comp = comp2 or comp
    det = str(comp and comp.get("detail")).lower()
    tap.check("wrongpass" in det or "password" in det,
              "T2: the detail says what is wrong (the password)", det)
    time.sleep(1.0)  # several attempts: none may come up
    tap.check(ru.redis_not_ok(c) is not None and
              c.ok("acquire", {"key": "x"})["allow"],
              "T2: still not ok a second later, and deciding")
    tap.stop_daemon(T2, "T2")


def main():
    tap = ru.RTap()
    t0 = time.monotonic()
    server = tap.redis("redis")
    if server:
        tap.run("mirror", t_mirror, tap, server)
        tap.run("write-behind", t_write_behind, tap, server)
    tap.run("password and db", t_auth_db, tap)
    tap.diag("runtime %.1f s" % (time.monotonic() - t0))
    tap.finish()


if __name__ == "__main__":
    main()
