#!/usr/bin/python3
"""test_redis_limit.py - one global limit across two daemons (issue 13,
SPEC §7), with a real redis-server on a temporary Unix socket.

Policy glim: {"limiter": {"rate": 50, "per": "second", "burst": 50},
"scope": "global"}, redis expected_hosts 2, lease_ms 100.  Both daemons
are driven for 60 s (RTEST_LOAD_S) by three connections each, about
1,000 acquires a second per daemon (20 times the whole rate), each
admitted permit reported as a success.  Admissions are counted across
both and checked against the documented bound

    total <= rate * W + burst + H * L

W the window in seconds (first request sent to last answer read), H =
expected_hosts, L = max(1, min(burst, ceil(rate * lease_ms / per_ms / H)))
the lease size; and against a floor (>= 0.5 * rate * W) so a daemon that
just denies fails.  Every 10 s sub-window is held to the same bound with
its length widened by the largest round trip (an answer read at t was
decided in [t - rtt, t]).  Denials must all be rate_limited, and with equal
demand neither host may starve (each gets at least a quarter).

The window opens with both daemons holding a lease.  A 5 s run on a cold
key is held to the bound plus one share burst (burst / H) per host, the
README's allowance for a key's first requests decided before Redis
answered.  Then a global limiter far below its rate (key sparse, 1,000/s, asked once
and then every 1.5 s) must admit every request, the first one included.
"""
import math
import os
import select
import socket
import sys
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redisutil as ru  # noqa: E402
import rpcutil  # noqa: E402

RATE, PER_MS, BURST = 50, 1000, 50
HOSTS, LEASE_MS = 2, 100
LOAD_S = float(os.environ.get("RTEST_LOAD_S", "60"))
CONNS = 3            # per daemon
PER_CONN_HZ = 333    # acquires sent per second per connection
DEPTH = 4            # requests in flight per connection
PREFIX = "tlimit%d:" % os.getpid()


def cfg(server, origin):
    return {"redis": ru.redis_cfg(server, "shared", PREFIX, origin,
                                  expected_hosts=HOSTS, lease_ms=LEASE_MS),
            "policies": {
                "*": {"breaker": {"failure_threshold": 0,
                                  "failure_rate_threshold": 0}},
                "glim": {"scope": "global",
                         "limiter": {"rate": RATE, "per": "second",
                                     "burst": BURST}},
                "cold": {"scope": "global",
                         "limiter": {"rate": RATE, "per": "second",
                                     "burst": BURST}},
                "sparse": {"scope": "global",
                           "limiter": {"rate": 1000, "per": "second",
                                       "burst": 1000}}}}


class Link:
    """One raw connection of the load: pipelined acquires, paced."""

    def __init__(self, daemon, owner):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(daemon.sock)
        self.sock.setblocking(False)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.owner = owner
        self.inflight = {}
        self.next_id = 1
        self.next_send = 0.0
        self.out = b""


def load(daemons, seconds, key="glim"):
    """Drive the daemons on key; returns a dict of figures."""
    interval = 1.0 / PER_CONN_HZ
    links = [Link(d, i) for i, d in enumerate(daemons) for _ in range(CONNS)]
    by_fd = {l.sock.fileno(): l for l in links}
    admitted = [0] * len(daemons)
    admit_t = []
    reasons = {}
    errors = []
    sent = 0
    max_rtt = 0.0
    t_first = time.monotonic()
    t_end = t_first + seconds
    t_last = t_first
    for i, l in enumerate(links):
        l.next_send = t_first + i * interval / len(links)
    while True:
        now = time.monotonic()
        sending = now < t_end
        if not sending and not any(l.inflight for l in links):
            break
        if not sending and now > t_end + 3.0:
            errors.append("%d answers missing" %
                          sum(len(l.inflight) for l in links))
            break
        for l in links:
            while (sending and len(l.inflight) < DEPTH and
                   l.next_send <= now):
                mid = l.next_id
                l.next_id += 1
                l.out += rpcutil.request_bytes(mid, "acquire",
                                               {"key": key})
                l.inflight[mid] = now
                sent += 1
                l.next_send += interval
                if l.next_send < now - 0.05:  # fell behind: no catch-up burst
                    l.next_send = now
            if l.out:
                try:
                    n = l.sock.send(l.out)
                    l.out = l.out[n:]
                except BlockingIOError:
                    pass
        wait = 0.05
        if sending:
            wait = max(0.0, min(min(l.next_send for l in links) - now, 0.05))
        r, _, _ = select.select(list(by_fd), [], [], wait)
        for fd in r:
            l = by_fd[fd]
            try:
                data = l.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                errors.append("daemon %d closed a connection" % l.owner)
                return None
            l.unpacker.feed(data)
            now = time.monotonic()
            for msg in l.unpacker:
                if not (isinstance(msg, list) and len(msg) == 4 and
                        msg[0] == 1):
                    continue
                t0 = l.inflight.pop(msg[1], None)
                if t0 is not None:
                    max_rtt = max(max_rtt, now - t0)
                t_last = now
                err, res = msg[2], msg[3]
                if err is not None:
                    errors.append(repr(err))
                    continue
                if res["allow"]:
                    admitted[l.owner] += 1
                    admit_t.append(now - t_first)
                    l.out += rpcutil.pack(
                        [2, "report", [{"key": key,
                                        "permit": res["permit"],
                                        "outcome": "success"}]])
                else:
                    reasons[res["reason"]] = reasons.get(res["reason"], 0) + 1
    for l in links:
        if l.out:
            l.sock.setblocking(True)
            l.sock.sendall(l.out)
        l.sock.close()
    return {"admitted": admitted, "admit_t": sorted(admit_t),
            "reasons": reasons, "errors": errors, "sent": sent,
            "window": t_last - t_first, "max_rtt": max_rtt}


def t_limit(tap, server):
    A = tap.start_resild(cfg(server, "A"), "A")
    B = tap.start_resild(cfg(server, "B"), "B")
    if not (A and B):
        return
    a, b = A.connect(), B.connect()
    for name, conn in (("A", a), ("B", b)):
        ok, el = ru.poll(lambda: ru.redis_ok(conn), 5.0)
        tap.check(ok, "%s: redis ok before the load (%.0f ms)"
                  % (name, el * 1000), repr(ru.redis_component(conn)))
    # Warm: each daemon holds a lease of glim before the window opens, so
    # the window sees leases only (README: a cold key decides on its share
    # until Redis answers, which the bound allows for separately, below).
    for name, conn in (("A", a), ("B", b)):
        def leased(conn=conn):
            r = conn.ok("acquire", {"key": "glim"})
            if r["allow"]:
                conn.ok("report", {"key": "glim", "permit": r["permit"],
                                   "outcome": "success"})
            return r["allow"]
        ok, _ = ru.poll(leased, 2.0)
        tap.check(ok, "%s: glim admits before the load" % name)
    time.sleep(1.1)  # the metrics page is cached for a second
    spells0 = []
    for conn in (a, b):
        f = ru.metrics(conn).get("resild_global_share_spells_total")
        spells0.append(int(f.samples[0][2]) if f and f.samples else 0)
    fig = load([A, B], LOAD_S)
    if not tap.check(fig is not None and not fig["errors"],
                     "the load ran: every acquire answered",
                     repr(fig and fig["errors"][:5])):
        if fig is None:
            return
    W = fig["window"]
    total = sum(fig["admitted"])
    L = max(1, min(BURST, math.ceil(RATE * LEASE_MS / PER_MS / HOSTS)))
    # README: each spell on the share (leasing off for a lease unanswered
    # for lease_ms/4 on a starved machine or Redis away, or a key whose
    # hold ran out while it waited for tokens) adds at most one share
    # burst: the daemons count the spells.  Those before the window (the
    # warm-up's first request is cold) are taken off.
    share = max(1, BURST // HOSTS)
    switches = 0
    time.sleep(1.1)  # the metrics page is cached for a second
    for i, conn in enumerate((a, b)):
        f = ru.metrics(conn).get("resild_global_share_spells_total")
        switches += (int(f.samples[0][2]) if f and f.samples else 0) - spells0[i]
    bound = RATE * W * 1000 / PER_MS + BURST + HOSTS * L + switches * share
    floor = 0.5 * RATE * W * 1000 / PER_MS
    tap.diag("window W = %.2f s, sent %d acquires (%.0f/s), max round trip "
             "%.1f ms" % (W, fig["sent"], fig["sent"] / W,
                          fig["max_rtt"] * 1000))
    tap.diag("admitted: A %d, B %d, total %d (%.2f/s); denied %r"
             % (fig["admitted"][0], fig["admitted"][1], total, total / W,
                fig["reasons"]))
    tap.diag("bound = rate*W + burst + H*L + switches*share = %d*%.2f + %d"
             " + %d*%d + %d*%d = %.1f; floor 0.5*rate*W = %.1f"
             % (RATE, W, BURST, HOSTS, L, switches, share, bound, floor))
    tap.check(total <= bound, "global limit: %d admitted <= bound %.1f"
              % (total, bound))
    tap.check(total >= floor, "global limit: %d admitted >= %.1f (not just "
              "denying)" % (total, floor))
    tap.check(set(fig["reasons"]) <= {"rate_limited"},
              "every denial is rate_limited", repr(fig["reasons"]))
    tap.check(min(fig["admitted"]) >= total / 4,
              "neither host starves: each of two equal loads gets at least "
              "a quarter (%r)" % fig["admitted"])
    # 10 s sub-windows, each held to the bound over its widened length.
    ts = fig["admit_t"]
    b10 = (RATE * (10 + fig["max_rtt"]) * 1000 / PER_MS + BURST + HOSTS * L
           + switches * share)
    worst = (-1, 0)  # (admitted, start s) of the fullest window
    lo = hi = 0
    for s in range(0, max(1, int(W) - 9)):
        while lo < len(ts) and ts[lo] < s:
            lo += 1
        hi = max(hi, lo)
        while hi < len(ts) and ts[hi] < s + 10:
            hi += 1
        if hi - lo > worst[0]:
            worst = (hi - lo, s)
    per10 = [sum(1 for t in ts if s <= t < s + 10)
             for s in range(0, int(W) - 9, 10)]
    tap.diag("admitted per 10 s: %r" % per10)
    tap.check(worst[0] <= b10,
              "every 10 s window within its bound (fullest: %d from %d s; "
              "bound %.1f)" % (worst[0], worst[1], b10))
    for name, conn in (("A", a), ("B", b)):
        fams = ru.metrics(conn)

        def v(n):
            f = fams.get(n)
            return f.samples[0][2] if f and f.samples else None
        tap.diag("%s: leasing %r, lease requests %r, tokens %r, returned %r, "
                 "failures %r" % (name, v("resild_redis_leasing"),
                                  v("resild_redis_lease_requests_total"),
                                  v("resild_redis_lease_tokens_total"),
                                  v("resild_redis_lease_returned_total"),
                                  v("resild_redis_lease_failures_total")))
        tap.check(v("resild_redis_leasing") == 1 and
                  (v("resild_redis_lease_tokens_total") or 0) > 0,
                  "%s: the limiter ran on leases (metrics)" % name)
    t_cold(tap, A, B)
    t_sparse(tap, a)
    tap.stop_daemon(A, "A")
    tap.stop_daemon(B, "B")


def t_cold(tap, A, B):
    """The same load for 5 s on a key nobody used: each host decides its
    first requests on its share (burst / H) until Redis answers, which the
    README's bound allows once per host: rate*W + burst + H*L + H*share."""
    fig = load([A, B], 5.0, key="cold")
    if fig is None or fig["errors"]:
        tap.check(False, "cold: the load ran", repr(fig and fig["errors"]))
        return
    W = fig["window"]
    total = sum(fig["admitted"])
    L = max(1, min(BURST, math.ceil(RATE * LEASE_MS / PER_MS / HOSTS)))
    share = max(1, BURST // HOSTS)
    bound = RATE * W * 1000 / PER_MS + BURST + HOSTS * L + HOSTS * share
    tap.diag("cold: W %.2f s, admitted A %d, B %d, total %d; bound "
             "%d*%.2f + %d + %d*%d + %d*%d = %.1f"
             % (W, fig["admitted"][0], fig["admitted"][1], total, RATE, W,
                BURST, HOSTS, L, HOSTS, share, bound))
    tap.check(total <= bound and total >= 0.5 * RATE * W,
              "cold key: %d admitted <= %.1f (the bound with one share "
              "burst per host) and not just denying" % (total, bound))


def t_sparse(tap, a):
    """A global limiter far below its rate (1,000/s, asked once, then once
    every 1.5 s) admits every request, the first one too: leases are taken
    ahead of need, and a key that is idle between orders is not over any
    limit.  A denial here is a false rate_limited a client acts on."""
    seen = []
    for i in range(5):
        if i:
            time.sleep(1.5)  # idle between requests: what is tested
        r = a.ok("acquire", {"key": "sparse"})
        seen.append((round(i * 1.5, 1), r["allow"], r["reason"],
                     r["retry_after_ms"]))
        if r["allow"]:
            a.ok("report", {"key": "sparse", "permit": r["permit"],
                            "outcome": "success"})
    tap.diag("sparse: (s, allow, reason, retry_after_ms): %r" % seen)
    tap.check(seen[0][1], "sparse: the first acquire of an unused global "
              "limiter (1,000/s) is admitted", repr(seen[0]))
    tap.check(all(x[1] for x in seen[1:]),
              "sparse: one acquire every 1.5 s is always admitted",
              repr(seen[1:]))


def main():
    tap = ru.RTap()
    t0 = time.monotonic()
    server = tap.redis("redis")
    if server:
        tap.run("global limit", t_limit, tap, server)
    tap.diag("runtime %.1f s" % (time.monotonic() - t0))
    tap.finish()


if __name__ == "__main__":
    main()
