#!/usr/bin/python3
"""test_redis_shared.py - shared mode across three real daemons and one
real redis-server on a temporary Unix socket (issue 13, SPEC §7):

- configuration: redis.budget_ms is refused naming it; scope "global" is
  refused without redis.mode "shared";
- a breaker trip (failure_threshold reports) on A reaches B and C within
  one second: their status shows it open with about the same time left,
  and their subscribers get a transition with cause "remote" and origin
  "hostA"; their logs name hostA;
- a key whose policy is local is not shared (checked in order behind a
  global trip that does arrive: pub/sub keeps order);
- an operator force on B reaches A (forced_open, with its reason; A's
  log names hostB), force auto undoes it everywhere; a force with a TTL
  ends on every daemon; a reset on C closes the key on A and B;
- a half-open probe that succeeds on A closes the key on B;
- a replayed old message is stale everywhere, and malformed messages are
  rejected (counted) with nothing changed;
- a failure of class rate_limited with retry_after_ms on A pauses the key
  on B and C (acquire denied rate_limited with about the time left), also
  when the limiter paused is an ancestor's (v for v.orders);
- metrics: the redis families are on the page and count what was done;
- reload: a policy made global is shared from then on (an existing key
  too); a changed redis section is kept and named for the next restart.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promcheck  # noqa: E402
import redisutil as ru  # noqa: E402
import rpcutil  # noqa: E402

PREFIX = "tshared%d:" % os.getpid()
OPEN_MS = 30000
REACH_S = 1.0  # SPEC: a trip on one host reaches the others within 1 s


def policies():
    return {
        "*": {"breaker": {"failure_threshold": 3, "open_ms": OPEN_MS,
                          "failure_rate_threshold": 0}},
        "g.*": {"scope": "global"},
        "h.*": {"scope": "global",
                "breaker": {"failure_threshold": 3, "open_ms": 400,
                            "success_threshold": 1,
                            "failure_rate_threshold": 0}},
        "loc.*": {"scope": "local"},
        "v": {"scope": "global",
              "limiter": {"rate": 1000, "per": "second", "burst": 1000}},
        "v.*": {"scope": "global"},
    }


def cfg(server, origin):
    return {"redis": ru.redis_cfg(server, "shared", PREFIX, origin,
                                  expected_hosts=3),
            "policies": policies()}


def config_refused(tap, cfg_obj, word, name):
    d = rpcutil.Daemon(cfg_obj, "cfgcheck")
    try:
        with open(d.config_path, "w") as f:
            json.dump(cfg_obj, f)
        rc = subprocess.run([d.binary, "-t", "-c", d.config_path],
                            capture_output=True, text=True, timeout=10)
        out = rc.stdout + rc.stderr
        tap.check(rc.returncode != 0 and word in out, name,
                  "exit %d: %s" % (rc.returncode, out.strip()[-400:]))
    finally:
        d.cleanup()


def t_config(tap, server):
    base = {"redis": ru.redis_cfg(server, "shared", PREFIX, "X")}
    good = dict(base, policies=policies())
    d = rpcutil.Daemon(good, "cfgcheck")
    try:
        with open(d.config_path, "w") as f:
            json.dump(good, f)
        rc = subprocess.run([d.binary, "-t", "-c", d.config_path],
                            capture_output=True, text=True, timeout=10)
        tap.check(rc.returncode == 0,
                  "config: a shared redis section with global policies is "
                  "valid (resild -t)", (rc.stdout + rc.stderr)[-400:])
    finally:
        d.cleanup()
    bad = json.loads(json.dumps(base))
    bad["redis"]["budget_ms"] = 2
    config_refused(tap, bad, "budget_ms",
                   "config: redis.budget_ms is refused, naming it")
    mirror = {"redis": ru.redis_cfg(server, "mirror", PREFIX, "X"),
              "policies": {"g": {"scope": "global"}}}
    config_refused(tap, mirror, "scope",
                   "config: scope global with mode mirror is refused, "
                   "naming scope")
    config_refused(tap, {"policies": {"g": {"scope": "global"}}}, "scope",
                   "config: scope global without redis is refused, naming "
                   "scope")


def reaches(tap, conns, key, states, what, timeout=REACH_S + 1.0):
    """Poll each daemon until key is in one of states; check each arrived
    within REACH_S (polled up to timeout to tell late from never).
    Returns the status maps."""
    out = []
    t0 = time.monotonic()
    for name, c in conns:
        st, _ = ru.poll(lambda: ru.state_is(c, key, *states),
                        max(0.0, t0 + timeout - time.monotonic()))
        el = time.monotonic() - t0
        tap.check(st is not None and el <= REACH_S,
                  "%s reaches %s within %.1f s (%.0f ms)"
                  % (what, name, REACH_S, el * 1000),
                  "status: %r" % (ru.key_status(c, key),))
        out.append(st)
    return out


def remote_events(sub, key, to, timeout=1.0):
    got = sub.events(timeout, lambda e: e.get("type") == "transition" and
                     e.get("key") == key and e.get("to") == to)
    got += sub.events(0.1)  # what the same change emitted after it
    return ru.transitions(got, key), got


def t_shared(tap, server):
    # Origins that cannot be mistaken for anything else in a log line.
    A = tap.start_resild(cfg(server, "hostA"), "A")
    B = tap.start_resild(cfg(server, "hostB"), "B")
    C = tap.start_resild(cfg(server, "hostC"), "C")
    if not (A and B and C):
        return
    a, b, c = A.connect(), B.connect(), C.connect()
    for name, conn in (("A", a), ("B", b), ("C", c)):
        ok, el = ru.poll(lambda: ru.redis_ok(conn), 5.0)
        tap.check(ok, "%s: health components.redis ok (%.0f ms)"
                  % (name, el * 1000), repr(ru.redis_component(conn)))
    comp = ru.redis_component(a) or {}
    tap.check(isinstance(comp.get("detail"), str) and comp["detail"] and
              "shared" in comp["detail"],
              "A: the redis component's detail says shared and where",
              repr(comp))
    subs = {}
    for name, d in (("A", A), ("B", B), ("C", C)):
        s = d.connect()
        s.ok("subscribe", {"topics": ["state", "operator"]})
        subs[name] = s

    # A plain Redis subscriber hears what the daemons publish.
    listener = ru.RespConn(server.addr, timeout=2.0)
    listener.call("SUBSCRIBE", PREFIX + "events")

    # --- a trip on A reaches B and C ---------------------------------------
    ru.trip(a, "g.trip", 3)
    try:
        msg = listener.read()  # [b"message", channel, payload]
    except OSError:
        msg = None
    listener.close()
    tap.check(isinstance(msg, list) and len(msg) == 3 and
              msg[0] == b"message" and isinstance(msg[2], bytes) and
              b"hostA" in msg[2] and b"g.trip" in msg[2],
              "A's trip is published on %sevents, naming hostA and g.trip"
              % PREFIX, repr(msg)[:300])
    trip_msg = msg[2] if isinstance(msg, list) and len(msg) == 3 else None
    st = ru.key_status(a, "g.trip")
    tap.check(st and st["state"] == "open", "A: g.trip open after 3 failures",
              repr(st))
    sts = reaches(tap, [("B", b), ("C", c)], "g.trip", ("open",),
                  "a trip on A")
    for name, s in zip("BC", sts):
        if s:
            left = s.get("retry_after_ms", -1)
            tap.check(OPEN_MS - 3000 < left <= OPEN_MS,
                      "%s: g.trip open for A's remaining time (%d ms)"
                      % (name, left), repr(s))
    for name in "BC":
        tr, got = remote_events(subs[name], "g.trip", "open")
        tap.check(len(tr) == 1 and tr[0]["from"] == "closed" and
                  tr[0].get("cause") == "remote" and
                  tr[0].get("origin") == "hostA",
                  "%s: subscriber gets closed -> open, cause remote, "
                  "origin hostA" % name, repr(got))
    tr, got = remote_events(subs["A"], "g.trip", "open", 0.2)
    tap.check(len(tr) == 1 and tr[0].get("cause") == "failures" and
              tr[0].get("origin") == "local",
              "A: its own trip is local (cause failures, origin local), "
              "never an echo", repr(got))
    tr, got = remote_events(subs["A"], "g.trip", "open", 0.5)
    tap.check(not tr, "A: no second transition from its own echo",
              repr(got))

    # --- a local key is not shared ----------------------------------------
    ru.trip(a, "loc.x", 3)
    ru.trip(a, "g.marker", 3)  # published after loc.x would have been
    reaches(tap, [("B", b)], "g.marker", ("open",), "a trip on A (marker)")
    st = ru.key_status(b, "loc.x")
    tap.check(st is None or st["state"] == "closed",
              "B: a key whose policy is local is not shared (loc.x)",
              repr(st))
    ru.trip(a, "plain", 3)  # the "*" policy: local by default
    ru.trip(a, "g.marker2", 3)
    reaches(tap, [("C", c)], "g.marker2", ("open",), "a trip on A (marker 2)")
    st = ru.key_status(c, "plain")
    tap.check(st is None or st["state"] == "closed",
              "C: a key under the default (local) policy is not shared",
              repr(st))

    # --- an operator force on B reaches A and C ---------------------------
    for s in subs.values():
        s.events(0.05)  # drop what is left
    res = b.ok("force", {"key": "g.force", "state": "open",
                         "reason": "maint window"})
    tap.check(res.get("state") == "forced_open", "B: force open answers "
              "forced_open", repr(res))
    sts = reaches(tap, [("A", a), ("C", c)], "g.force", ("forced_open",),
                  "a force on B")
    tap.check(sts[0] and sts[0].get("force_reason") == "maint window",
              "A: the force carries B's reason", repr(sts[0]))
    tr, got = remote_events(subs["A"], "g.force", "forced_open")
    tap.check(len(tr) == 1 and tr[0].get("cause") == "remote" and
              tr[0].get("origin") == "hostB",
              "A: subscriber gets -> forced_open, cause remote, origin hostB",
              repr(got))
    ops = [e for e in got if e.get("topic") == "operator"]
    tap.check(ops and ops[0].get("type") == "force" and
              ops[0].get("state") == "open",
              "A: and an operator event for the force", repr(got))
    if ops:
        tap.diag("A: the remote force's operator event: %r" % ops[0])
    b.ok("force", {"key": "g.force", "state": "auto"})
    reaches(tap, [("A", a), ("C", c)], "g.force", ("closed",),
            "force auto on B")
    acq = a.ok("acquire", {"key": "g.force"})
    tap.check(acq["allow"], "A: g.force allows again", repr(acq))
    if acq.get("permit"):
        a.ok("report", {"key": "g.force", "permit": acq["permit"],
                        "outcome": "success"})

    # --- a force with a TTL ends everywhere --------------------------------
    a.ok("force", {"key": "g.ttl", "state": "open", "reason": "short",
                   "ttl_ms": 1500})
    sts = reaches(tap, [("B", b)], "g.ttl", ("forced_open",),
                  "a force with a TTL on A")
    if sts[0]:
        tap.check(0 < sts[0].get("force_ttl_ms", 0) <= 1500,
                  "B: with the TTL left (%r ms)" % sts[0].get("force_ttl_ms"),
                  repr(sts[0]))
    st, el = ru.poll(lambda: ru.state_is(b, "g.ttl", "closed"), 3.0)
    tap.check(st is not None, "B: the forced TTL ends there too (%.1f s)"
              % el, repr(ru.key_status(b, "g.ttl")))

    # --- a reset on C closes it on A and B ---------------------------------
    ru.trip(a, "g.reset", 3)
    reaches(tap, [("B", b), ("C", c)], "g.reset", ("open",), "a trip on A")
    res = c.ok("reset", {"key": "g.reset"})
    tap.check(res.get("state") == "closed", "C: reset answers closed",
              repr(res))
    reaches(tap, [("A", a), ("B", b)], "g.reset", ("closed",),
            "a reset on C")

    # --- a probe that closes it on A closes it on B ----------------------------
    ru.trip(a, "h.heal", 3)
    reaches(tap, [("B", b)], "h.heal", ("open",), "a trip on A (open 400 ms)")
    subs["B"].events(0.05)
    p, _ = ru.poll(lambda: (lambda r: r if r["allow"] else None)(
        a.ok("acquire", {"key": "h.heal"})), 2.0)
    tap.check(p is not None, "A: h.heal half-open admits a probe", repr(p))
    if p:
        a.ok("report", {"key": "h.heal", "permit": p["permit"],
                        "outcome": "success"})
        t0 = time.monotonic()
        tr, got = remote_events(subs["B"], "h.heal", "closed", 1.5)
        el = time.monotonic() - t0
        st = ru.key_status(b, "h.heal")
        tap.check(st and st["state"] == "closed" and tr and
                  tr[-1].get("origin") == "hostA" and el <= REACH_S,
                  "B: A's successful probe closes h.heal here (cause remote, "
                  "origin hostA) in %.0f ms" % (el * 1000),
                  repr(st), repr(got))

    # --- a replayed (stale) message and garbage change nothing -----------------
    if trip_msg:
        st0 = ru.metric(b, "resild_redis_stale_total", 0)
        c.ok("reset", {"key": "g.trip"})
        reaches(tap, [("A", a), ("B", b)], "g.trip", ("closed",),
                "a reset on C (before the replay)")
        n = ru.call(server.addr, "PUBLISH", PREFIX + "events", trip_msg)
        tap.check(n == 3, "the old trip message is replayed to the three "
                  "daemons", repr(n))
        # Garbage behind it: its rejection shows the replay was handled.
        rej0 = ru.metric(b, "resild_redis_rejected_total", 0)
        for junk in (b"", b"\xc1", b"\x93\x01\x02", b"x" * 5000,
                     trip_msg[:len(trip_msg) // 2],
                     b"\xdd\xff\xff\xff\xff"):
            ru.call(server.addr, "PUBLISH", PREFIX + "events", junk)
        ok, _ = ru.poll(lambda: ru.metric(b, "resild_redis_rejected_total",
                                          0) >= rej0 + 6, 3.0, 0.1)
        tap.check(ok, "B rejects six malformed messages (metrics)",
                  repr(ru.metric(b, "resild_redis_rejected_total")))
        for name, conn in (("A", a), ("B", b), ("C", c)):
            st = ru.key_status(conn, "g.trip")
            tap.check(st and st["state"] == "closed",
                      "%s: the replayed trip is stale: g.trip stays closed"
                      % name, repr(st))
        tap.check(ru.metric(b, "resild_redis_stale_total", 0) > st0,
                  "B counts the replay as stale")
        tap.check(all(conn.ok("ping").get("pid") for conn in (a, b, c)),
                  "all three still answer")

    # --- a venue 429 on A pauses the key on B and C -------------------------
    for name, conn in (("B", b), ("C", c)):
        r = conn.ok("acquire", {"key": "g.venue"})
        tap.check(r["allow"], "%s: g.venue allows before the 429" % name,
                  repr(r))
        if r.get("permit"):
            conn.ok("report", {"key": "g.venue", "permit": r["permit"],
                               "outcome": "success"})
    a.ok("report", {"key": "g.venue", "outcome": "failure",
                    "error": {"class": "rate_limited",
                              "retry_after_ms": 5000}})
    r = a.ok("acquire", {"key": "g.venue"})
    tap.check(not r["allow"] and r["reason"] == "rate_limited",
              "A: g.venue paused by the 429", repr(r))
    t0 = time.monotonic()
    for name, conn in (("B", b), ("C", c)):
        def denied(conn=conn):
            r = conn.ok("acquire", {"key": "g.venue"})
            if r["allow"]:
                conn.ok("report", {"key": "g.venue", "permit": r["permit"],
                                   "outcome": "ignore"})
                return None
            return r
        r, _ = ru.poll(denied, max(0.0, t0 + REACH_S + 1 - time.monotonic()))
        el = time.monotonic() - t0
        tap.check(r is not None and r["reason"] == "rate_limited" and
                  el <= REACH_S,
                  "%s: the 429 on A pauses g.venue here within 1 s "
                  "(%.0f ms)" % (name, el * 1000), repr(r))
        if r:
            tap.check(3000 < r.get("retry_after_ms", 0) <= 5000,
                      "%s: retry_after_ms is the pause left (%r)"
                      % (name, r.get("retry_after_ms")), repr(r))

    # --- the logs say where a change came from --------------------------------
    def lines(d, *words):
        return [l for l in d.log().splitlines() if all(w in l for w in words)]
    tr = lines(B, "g.trip", "open")
    tap.check(tr and any("hostA" in l for l in tr),
              "B's log names hostA as where g.trip's trip came from",
              "\n".join(tr))
    fo = lines(A, "g.force", "forced")
    tap.check(fo and any("hostB" in l for l in fo),
              "A's log names hostB as where g.force's force came from",
              "\n".join(fo))

    # --- ... and on an ancestor's global limiter ------------------------------
    def allows(conn, key):
        r = conn.ok("acquire", {"key": key})
        if r["allow"]:
            conn.ok("report", {"key": key, "permit": r["permit"],
                               "outcome": "success"})
            return r
        return None
    for name, conn in (("A", a), ("B", b)):
        r, el = ru.poll(lambda: allows(conn, "v.orders"), 2.0)
        tap.check(r is not None, "%s: v.orders admits under v's global "
                  "limiter (%.0f ms)" % (name, el * 1000))
    a.ok("report", {"key": "v.orders", "outcome": "failure",
                    "error": {"class": "rate_limited",
                              "retry_after_ms": 4000}})
    t0 = time.monotonic()

    def paused():
        r = b.ok("acquire", {"key": "v.orders"})
        if r["allow"]:
            b.ok("report", {"key": "v.orders", "permit": r["permit"],
                            "outcome": "ignore"})
            return None
        return r
    r, _ = ru.poll(paused, REACH_S + 1)
    el = time.monotonic() - t0
    tap.check(r is not None and r["reason"] == "rate_limited" and
              el <= REACH_S and 2000 < r.get("retry_after_ms", 0) <= 4000,
              "B: a 429 on A's v.orders pauses v (the limiter) here within "
              "1 s (%.0f ms), v.orders denied" % (el * 1000), repr(r))
    st = ru.key_status(b, "v")
    tap.check(st and st.get("limiter") and
              2000 < st["limiter"].get("paused_ms", 0) <= 4000,
              "B: status of v shows the pause", repr(st and st.get("limiter")))

    # --- metrics -------------------------------------------------------------
    text = a.ok("metrics")["text"]
    errs = promcheck.check(text)
    tap.check(not errs, "A: the metrics page with the redis families "
              "passes promcheck", "\n".join(errs[:5]))
    fa = ru.metrics(a)
    fb = ru.metrics(b)

    def v(fams, n):
        f = fams.get(n)
        return f.samples[0][2] if f and f.samples else None
    tap.check(v(fa, "resild_redis_up") == 1 and v(fb, "resild_redis_up") == 1,
              "resild_redis_up is 1 on A and B",
              repr((v(fa, "resild_redis_up"), v(fb, "resild_redis_up"))))
    pa = v(fa, "resild_redis_published_total")
    ab = v(fb, "resild_redis_applied_total")
    ea = v(fa, "resild_redis_echoes_total")
    tap.check(pa is not None and pa >= 5,
              "A counts what it published (%r)" % pa)
    tap.check(ab is not None and ab >= 5,
              "B counts what it applied (%r)" % ab)
    tap.check(ea is not None and ea >= 1,
              "A counts its own echoes, ignored (%r)" % ea)
    # --- reload: a policy made global is shared from then on; the redis
    # section itself waits for a restart, and says so ---------------------
    a.ok("acquire", {"key": "late.x"})  # exists, local, before the reload
    for name, d, conn in (("A", A, a), ("B", B, b)):
        cfg2 = json.loads(json.dumps(d.config))
        cfg2["policies"]["late.*"] = {"scope": "global"}
        cfg2["redis"]["prefix"] = PREFIX + "moved:"
        with open(d.config_path, "w") as f:
            json.dump(cfg2, f)
        res = conn.ok("reload")
        tap.check(res.get("reloaded") is True and
                  "redis.prefix" in res.get("changes", ""),
                  "%s: reload applies the policy and names redis.prefix as "
                  "waiting for a restart" % name, repr(res))
    ru.trip(a, "late.x", 3)
    reaches(tap, [("B", b)], "late.x", ("open",),
            "after the reload, a trip of a key made global on A")
    ru.trip(a, "g.afterreload", 3)
    reaches(tap, [("B", b)], "g.afterreload", ("open",),
            "after the reload (old prefix kept), a trip on A")
    for name, d in (("A", A), ("B", B), ("C", C)):
        tap.stop_daemon(d, name)


def main():
    tap = ru.RTap()
    t0 = time.monotonic()
    server = tap.redis("redis")
    if server:
        tap.run("config", t_config, tap, server)
        tap.run("shared", t_shared, tap, server)
    tap.diag("runtime %.1f s" % (time.monotonic() - t0))
    tap.finish()


if __name__ == "__main__":
    main()
