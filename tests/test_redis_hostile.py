#!/usr/bin/python3
"""test_redis_hostile.py - what is written into Redis is not trusted, and a
Redis that answers with errors is not a Redis that works (issue 13, SPEC
§7).  One real redis-server on a temporary Unix socket, real daemons.

- messages on <prefix>events with absurd times (a venue pause or a force
  TTL near 2^64 ms, as a bug or another version could send) are rejected
  and counted, never applied: applied, they paused or forced the key for
  ever; a sane one behind them is applied (pub/sub keeps order);
- the lease script takes whatever <prefix>gcra:<key> holds (a word, nan,
  inf, 1e300, a list) as an empty or full bucket, never as an error: a
  global key keeps being admitted and no lease fails;
- a Redis out of memory (maxmemory 1, noeviction) answers the lease script
  and the record writes with errors: a global key that had leases keeps
  deciding on this host's share (before: every request denied
  rate_limited, health ok), health names the failure, and once Redis takes
  writes again health is ok and the record written meanwhile is there;
- a change that is a no-op on a key this daemon does not have (a close, a
  reset, a force auto: hundreds, for names it never used), and a closed
  record read back after a reconnect, make no key: before, each made one,
  so a flood of them (or a mirror holding many hosts' keys) filled
  max_keys and refused the daemon's own new keys;
- a 70 MiB value and a list under <prefix>key:* are skipped (counted as
  rejected) by the read-back, while the good records beside them load:
  before, the read-back's MGET reply passed the link's 64 MiB limit, the
  connection dropped, the reconnect read it back again, and the command
  link flapped for ever (22 reconnects in 4 s);
- a change published while only the subscriber connection was away
  (CLIENT KILL TYPE pubsub, as a pubsub output-buffer limit does) reaches
  the other daemon once its subscriber is back, from the mirror: before,
  only a reconnect of the command link read the mirror back, and the
  change was lost until the next one;
- a message with this daemon's origin but another start's epoch comes
  from another daemon with the same name (redis.origin defaults to the
  host name): it is applied and health says so; before, it was dropped as
  an echo of our own, and the two daemons never heard each other;
- a Redis that loses its data (FLUSHALL; restarted empty) gets the mirror
  written again within seconds: before, records came back only as keys
  changed, so a replaced host started without the open breakers;
- a server that is not Redis (or a broken proxy) sends replies no command
  asked for, pub/sub replies of the wrong shape, an unsubscribe never
  asked for: the daemon drops the connection and keeps deciding.  Before,
  hiredis 0.14 asserted and the daemon aborted on the first of them.
"""
import os
import socket
import sys
import tempfile
import threading
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redisutil as ru  # noqa: E402
import rpcutil  # noqa: E402

PREFIX = "thostile%d:" % os.getpid()
U64 = 2 ** 64 - 1


def cfg(server, mode="shared"):
    c = {"redis": ru.redis_cfg(server, mode, PREFIX, "A",
                               expected_hosts=2, lease_ms=100),
         "policies": {
                "*": {"breaker": {"failure_threshold": 3, "open_ms": 30000,
                                  "failure_rate_threshold": 0}},
                "g.*": {"scope": "global",
                        "limiter": {"rate": 100, "per": "second",
                                    "burst": 100}}}}
    if mode != "shared":
        del c["policies"]["g.*"]["scope"]
    return c


def publish(server, seq, kind, key, open_left=0, open_for=0, force=0,
            force_left=0, last="", origin="B"):
    """A shared change as another daemon ("B") would send it."""
    m = msgpack.packb([1, origin, 777, seq, kind, key, open_left, open_for,
                       force, force_left, last], use_bin_type=True)
    return server.call("PUBLISH", PREFIX + "events", m)


def admitted(c, key, n, gap=0.02):
    """n acquires of key, gap s apart (well under its share of the rate),
    each permit reported; how many were admitted."""
    a = 0
    for _ in range(n):
        r = c.ok("acquire", {"key": key})
        if r["allow"]:
            a += 1
            c.ok("report", {"key": key, "permit": r["permit"],
                            "outcome": "success"})
        time.sleep(gap)
    return a


def t_absurd_times(tap, server):
    d = tap.start_resild(cfg(server), "A")
    if not d:
        return
    c = d.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    tap.check(ok, "A: redis ok")
    c.ok("acquire", {"key": "g.p"})
    c.ok("acquire", {"key": "g.f"})
    rej0 = ru.metric(c, "resild_redis_rejected_total", 0)
    publish(server, 1, 4, "g.p", last=U64)                   # PAUSE
    publish(server, 2, 2, "g.f", force=1, force_left=2 ** 63)  # FORCE open
    publish(server, 3, 2, "g.f", force=1, force_left=U64 - 5)
    publish(server, 4, 0, "g.f", open_left=1000, open_for=U64)  # OPEN
    publish(server, 5, 4, "g.s", last=2000)                  # a sane pause
    st, _ = ru.poll(lambda: (ru.key_status(c, "g.s") or {}).get(
        "limiter", {}).get("paused_ms"), 2.0)
    tap.check(st and 0 < st <= 2000,
              "a sane pause from B is applied (%r ms)" % st)
    p = ru.key_status(c, "g.p")
    tap.check(p and p["limiter"]["paused_ms"] == 0,
              "a pause of 2^64-1 ms is not applied",
              repr(p and p["limiter"]))
    f = ru.key_status(c, "g.f")
    tap.check(f and f["state"] == "closed",
              "forces with TTLs near 2^63 and 2^64 and an open for 2^64 ms "
              "are not applied", repr(f))
    # The metrics page is cached for a moment: poll.
    rej, _ = ru.poll(lambda: ru.metric(c, "resild_redis_rejected_total",
                                       0) - rej0 >= 4 and
                     ru.metric(c, "resild_redis_rejected_total", 0) - rej0,
                     3.0)
    tap.check(rej == 4, "the four are counted as rejected (%r)" % rej)
    r = c.ok("acquire", {"key": "g.p"})
    tap.check(r["allow"], "g.p admits", repr(r))
    tap.stop_daemon(d, "A")


def t_garbage_bucket(tap, server):
    d = tap.start_resild(cfg(server), "A2")
    if not d:
        return
    c = d.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    tap.check(ok, "A2: redis ok")
    n = admitted(c, "g.l", 10)
    tap.check(n == 10, "g.l: 10 of 10 admitted before (%d)" % n)
    gk = PREFIX + "gcra:g.l"
    fail0 = ru.metric(c, "resild_redis_lease_failures_total", 0)
    for val in ("garbage", "nan", "inf", "-inf", "1e300", "list"):
        if val == "list":
            server.call("DEL", gk)
            server.call("RPUSH", gk, "x")
        else:
            server.call("SET", gk, val)
        n = admitted(c, "g.l", 15)
        tap.check(n == 15, "bucket holding %s: 15 of 15 admitted (%d)"
                  % (val, n), repr(server.call("GET", gk)))
    time.sleep(1.2)  # the metrics page is cached for a moment
    fails = ru.metric(c, "resild_redis_lease_failures_total", 0) - fail0
    tap.check(fails == 0, "no lease failed (%d)" % fails)
    tap.stop_daemon(d, "A2")


def t_out_of_memory(tap, server):
    d = tap.start_resild(cfg(server), "A3")
    if not d:
        return
    c = d.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    tap.check(ok, "A3: redis ok")
    n = admitted(c, "g.m", 10)
    tap.check(n == 10, "g.m: 10 of 10 admitted on leases (%d)" % n)
    server.call("CONFIG", "SET", "maxmemory", "1")
    try:
        n = admitted(c, "g.m", 40)
        # 40 requests over about 1 s at 1/20 of the rate: the share (50 a
        # second, burst 50) covers them all.
        tap.check(n == 40, "Redis out of memory: g.m keeps deciding on "
                  "this host's share: %d of 40 admitted" % n)
        comp = ru.redis_component(c)
        tap.check(comp and comp["ok"] is False and
                  "lease" in comp["detail"] and "OOM" in comp["detail"],
                  "health says the lease script fails", repr(comp))
        ru.trip(c, "g.t", 3)
        fails, _ = ru.poll(lambda: ru.metric(
            c, "resild_redis_writes_failed_total", 0), 2.0)
        tap.check(fails and fails >= 1,
                  "the failed record write is counted (%r)" % fails)
    finally:
        server.call("CONFIG", "SET", "maxmemory", "0")
    ok, el = ru.poll(lambda: ru.redis_ok(c) and server.call(
        "EXISTS", PREFIX + "key:g.t") == 1, 5.0)
    tap.check(ok, "Redis takes writes again: health ok and the record "
              "that failed is written (%.1f s)" % el,
              repr(ru.redis_component(c)))
    n = admitted(c, "g.m", 10)
    tap.check(n == 10, "g.m: 10 of 10 admitted after (%d)" % n)
    tap.stop_daemon(d, "A3")


def t_mirror_out_of_memory(tap, server):
    d = tap.start_resild(cfg(server, "mirror"), "M")
    if not d:
        return
    c = d.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    tap.check(ok, "M: redis ok")
    server.call("CONFIG", "SET", "maxmemory", "1")
    try:
        ru.trip(c, "m.t", 3)
        comp, _ = ru.poll(lambda: ru.redis_not_ok(c), 2.0)
        tap.check(comp and "writes failing" in comp["detail"],
                  "mirror, Redis out of memory: health says writes fail",
                  repr(ru.redis_component(c)))
    finally:
        server.call("CONFIG", "SET", "maxmemory", "0")
    ok, el = ru.poll(lambda: ru.redis_ok(c) and server.call(
        "EXISTS", PREFIX + "key:m.t") == 1, 5.0)
    tap.check(ok, "then ok, and the lost record is written (%.1f s)" % el,
              repr(ru.redis_component(c)))
    tap.stop_daemon(d, "M")


def keys_now(c):
    time.sleep(1.1)  # the metrics page is cached for a moment
    return ru.metric(c, "resild_keys", 0)


def t_no_keys_for_noops(tap, server):
    d = tap.start_resild(cfg(server), "A4")
    w_cfg = cfg(server)
    w_cfg["redis"]["origin"] = "W"
    w = tap.start_resild(w_cfg, "W")
    if not d or not w:
        return
    c, cw = d.connect(), w.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c) and ru.redis_ok(cw), 5.0)
    tap.check(ok, "A4, W: redis ok")
    k0 = keys_now(c)
    seq = 1
    for i in range(100):
        for kind, force in ((1, 0), (3, 0), (2, 0)):  # close, reset, auto
            publish(server, seq, kind, "g.n%d" % i, force=force)
            seq += 1
    publish(server, seq, 0, "g.sentinel", open_left=60000, open_for=60000)
    st, _ = ru.poll(lambda: ru.state_is(c, "g.sentinel", "open"), 3.0)
    tap.check(st, "the OPEN behind 300 no-op changes is applied")
    k1 = keys_now(c)
    tap.check(k1 == k0 + 1, "300 closes, resets and forces auto for new "
              "names make no key (%d keys, were %d)" % (k1, k0))
    for i in range(100):
        cw.ok("reset", {"key": "g.r%d" % i})
    n, _ = ru.poll(lambda: len(server.call(
        "KEYS", PREFIX + "key:g.r*")) >= 100, 5.0)
    tap.check(n, "W wrote 100 closed records")
    server.call("CLIENT", "KILL", "TYPE", "normal")
    ok, _ = ru.poll(lambda: ru.redis_component(c)["ok"] is False, 2.0)
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    time.sleep(0.5)  # the read-back after the reconnect
    k2 = keys_now(c)
    tap.check(ok and k2 == k1, "closed records read back after a "
              "reconnect make no key (%d keys, were %d)" % (k2, k1))
    tap.stop_daemon(d, "A4")
    tap.stop_daemon(w, "W")


def t_oversized_record(tap, server):
    prefix = PREFIX + "big:"
    c1 = cfg(server)
    c1["redis"]["prefix"] = prefix
    w = tap.start_resild(c1, "W2")
    if not w:
        return
    cw = w.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(cw), 5.0)
    ru.trip(cw, "g.good", 3)
    ok, _ = ru.poll(lambda: server.call("EXISTS", prefix + "key:g.good"), 3.0)
    tap.check(ok, "W2 wrote g.good's record (open)")
    tap.stop_daemon(w, "W2")
    server.call("SET", prefix + "key:g.huge", b"x" * (70 << 20), timeout=30)
    server.call("RPUSH", prefix + "key:g.list", "x")
    c2 = cfg(server)
    c2["redis"]["prefix"] = prefix
    c2["redis"]["origin"] = "A5"
    d = tap.start_resild(c2, "A5")
    if not d:
        return
    c = d.connect()
    st, _ = ru.poll(lambda: ru.state_is(c, "g.good", "open"), 3.0)
    tap.check(st, "A5 reads g.good back beside a 70 MiB value and a list",
              repr(ru.key_status(c, "g.good")))
    time.sleep(2.0)
    disc = ru.metric(c, "resild_redis_disconnects_total", 0)
    rej = ru.metric(c, "resild_redis_rejected_total", 0)
    tap.check(disc == 0 and ru.redis_ok(c),
              "and stays connected (%d disconnects), health ok" % disc,
              repr(ru.redis_component(c)))
    # Read back twice at a start with no state: the warm start, then the
    # catch-up once the subscriber is up too.
    tap.check(rej and rej >= 2 and rej % 2 == 0,
              "the two are counted as rejected at each read-back (%r)" % rej)
    server.call("DEL", prefix + "key:g.huge")
    tap.stop_daemon(d, "A5")


def t_subscriber_gap(tap, server):
    prefix = PREFIX + "gap:"
    daemons = []
    for o in ("GA", "GB"):
        c1 = cfg(server)
        c1["redis"]["prefix"] = prefix
        c1["redis"]["origin"] = o
        daemons.append(tap.start_resild(c1, o))
    if not all(daemons):
        return
    a, b = daemons[0].connect(), daemons[1].connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(a) and ru.redis_ok(b), 5.0)
    tap.check(ok, "GA, GB: redis ok")
    server.call("CLIENT", "KILL", "TYPE", "pubsub")
    ru.trip(a, "g.gap", 3)  # published while the subscribers reconnect
    st, el = ru.poll(lambda: ru.state_is(b, "g.gap", "open"), 3.0)
    tap.check(st, "GB learns g.gap opened on GA although it was published "
              "while its subscriber was away (%.1f s)" % el,
              repr(ru.key_status(b, "g.gap")))
    for d, name in zip(daemons, ("GA", "GB")):
        tap.stop_daemon(d, name)


def t_origin_clash(tap, server):
    d = tap.start_resild(cfg(server), "A6")  # origin "A"
    if not d:
        return
    c = d.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    tap.check(ok, "A6: redis ok")
    ru.trip(c, "g.own", 3)  # its own echo: ignored
    publish(server, 1, 0, "g.twin", open_left=30000, open_for=30000,
            origin="A")
    st, _ = ru.poll(lambda: ru.state_is(c, "g.twin", "open"), 2.0)
    tap.check(st, "a change from another daemon also named \"A\" is "
              "applied", repr(ru.key_status(c, "g.twin")))
    comp = ru.redis_component(c)
    tap.check(comp and comp["ok"] is False and "origin" in comp["detail"],
              "health says two daemons share the origin", repr(comp))
    time.sleep(1.1)
    tap.check(ru.metric(c, "resild_redis_echoes_total", 0) >= 1,
              "its own echoes are still ignored as such")
    tap.stop_daemon(d, "A6")


def t_flushed(tap):
    server = tap.redis("flush")
    if not server:
        return
    d = tap.start_resild(cfg(server, "mirror"), "M3")
    if not d:
        return
    c = d.connect()
    ok, _ = ru.poll(lambda: ru.redis_ok(c), 5.0)
    tap.check(ok, "M3: redis ok")
    ru.trip(c, "m.k", 3)
    rk = PREFIX + "key:m.k"
    ok, _ = ru.poll(lambda: server.call("EXISTS", rk) == 1, 3.0)
    tap.check(ok, "m.k's record is written")
    time.sleep(1.2)  # the marker is checked once a second
    server.call("FLUSHALL")
    ok, el = ru.poll(lambda: server.call("EXISTS", rk) == 1, 5.0)
    tap.check(ok, "after FLUSHALL the record is written again (%.1f s)" % el)
    server.kill()
    server.start()
    ok, el = ru.poll(lambda: server.call("EXISTS", rk) == 1, 10.0)
    tap.check(ok, "after a restart with no data, again (%.1f s)" % el)
    tap.stop_daemon(d, "M3")


# Each connection to the fake server: its answer to what the daemon sends
# first (PING), then to what it sends next (SUBSCRIBE on the subscriber).
BAD = [
    (b"+PONG\r\n+PONG\r\n+PONG\r\n", b""),          # unsolicited replies
    (b"+PONG\r\n:1\r\n*2\r\n$1\r\na\r\n:2\r\n", b""),
    (b"+PONG\r\n", b"*3\r\n$9\r\nsubscribe\r\n$CH\r\n:1\r\n"
                     b"*1\r\n:1\r\n"),                # array of one
    (b"+PONG\r\n", b"*3\r\n$9\r\nsubscribe\r\n$CH\r\n:1\r\n"
                     b"*3\r\n:7\r\n$1\r\nx\r\n$1\r\ny\r\n"),  # not a string
    (b"+PONG\r\n", b"*3\r\n$9\r\nsubscribe\r\n$CH\r\n:1\r\n"
                     b"*2\r\n$11\r\nunsubscribe\r\n$CH\r\n"),   # no count
    (b"+PONG\r\n", b"*3\r\n$9\r\nsubscribe\r\n$CH\r\n:1\r\n"
                     b"*3\r\n$11\r\nunsubscribe\r\n$CH\r\n:0\r\n"
                     b"*3\r\n$7\r\nmessage\r\n$CH\r\n$1\r\nz\r\n"),
    (b"*-5\r\n", b""),                                  # protocol error
]


class FakeRedis:
    """A Unix socket that answers like BAD, one entry per connection."""

    def __init__(self, channel):
        self.dir = tempfile.mkdtemp(prefix="resild-fake.")
        self.path = os.path.join(self.dir, "fake.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(64)
        ch = channel.encode()
        self.bad = [(a, b.replace(b"$CH", b"$%d\r\n%s" % (len(ch), ch)))
                    for a, b in BAD]
        self.served = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            a, b = self.bad[self.served % len(self.bad)]
            self.served += 1
            threading.Thread(target=self.one, args=(c, a, b),
                             daemon=True).start()

    @staticmethod
    def one(c, a, b):
        try:
            c.settimeout(1.0)
            c.recv(65536)
            c.sendall(a)
            if b:
                c.recv(65536)
                c.sendall(b)
            time.sleep(0.5)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


def t_bad_resp(tap):
    fake = FakeRedis("fake:events")
    conf = {"redis": {"url": "unix://" + fake.path, "mode": "shared",
                      "prefix": "fake:", "origin": "A7",
                      "connect_timeout_ms": 300, "command_timeout_ms": 300},
            "policies": {"g.*": {"scope": "global", "limiter": {
                "rate": 100, "per": "second", "burst": 100}}}}
    d = tap.start_resild(conf, "A7")
    if not d:
        fake.close()
        return
    c = d.connect()
    t0, n, worst = time.monotonic(), 0, 0.0
    try:
        while time.monotonic() - t0 < 15 and fake.served < 4 * len(BAD):
            s = time.monotonic()
            r = c.ok("acquire", {"key": "g.x"})
            worst = max(worst, time.monotonic() - s)
            if r["allow"]:
                n += 1
                c.ok("report", {"key": "g.x", "permit": r["permit"],
                                "outcome": "success"})
            time.sleep(0.02)
    except (OSError, rpcutil.Closed) as e:
        tap.diag("daemon gone: %r" % e)
    tap.check(d.alive() and fake.served >= 2 * len(BAD),
              "%d connections to a server sending bad replies: the daemon "
              "lives" % fake.served)
    tap.check(n > 100 and worst < 0.1,
              "and keeps deciding (%d admitted, slowest answer %.1f ms)"
              % (n, worst * 1000))
    comp = ru.redis_component(c) if d.alive() else None
    tap.check(comp and comp["ok"] is False,
              "health: redis not ok (%r)" % (comp and comp["detail"]))
    tap.stop_daemon(d, "A7")
    fake.close()


def main():
    tap = ru.RTap()
    server = tap.redis()
    if server:
        tap.run("absurd times", t_absurd_times, tap, server)
        tap.run("garbage bucket", t_garbage_bucket, tap, server)
        tap.run("out of memory", t_out_of_memory, tap, server)
        tap.run("mirror out of memory", t_mirror_out_of_memory, tap, server)
        tap.run("no keys for no-ops", t_no_keys_for_noops, tap, server)
        tap.run("oversized record", t_oversized_record, tap, server)
        tap.run("subscriber gap", t_subscriber_gap, tap, server)
        tap.run("origin clash", t_origin_clash, tap, server)
    tap.run("flushed", t_flushed, tap)
    tap.run("bad resp", t_bad_resp, tap)
    tap.finish()


if __name__ == "__main__":
    main()
