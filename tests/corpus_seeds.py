#!/usr/bin/python3
"""corpus_seeds.py - write the hand-written seeds of the fuzz corpus.

    /usr/bin/python3 tests/corpus_seeds.py tests/corpus

Each seed is one input of tests/fuzz_dispatch.c: a sequence of
[ctl byte][one msgpack object].  ctl's low bit picks one of two callers,
bits 1-5 advance the fake clock 0..31 ms, and ctl & 0xc0 == 0xc0 means
"that caller's connection closed" (no object follows).  The keys and
policies are those of fuzz_dispatch.c's config: "a" (limiter, reserve),
"a.*" (limiter, bulkhead 2 + queue 3, permit_ttl_ms 200), "s.*" (shadow,
bulkhead 1), "*" (time-window breaker).

The seeds cover every method with valid and invalid arguments, pipelined
requests, notifications, bin method names, truncated frames, deep nesting
and huge declared counts; `make fuzz` grows the corpus from them and
`make fuzz-merge` keeps it minimal.  Seeds are named seed-<what>; the
files libFuzzer adds are named by their SHA-1.  Rerunning this script
rewrites the seeds only, deterministically.
"""

import os
import struct
import sys

import msgpack

GONE = 0xC0


def pk(obj):
    return msgpack.packb(obj, use_bin_type=True)


def ctl(who=0, dt=0):
    return bytes([(dt & 31) << 1 | (who & 1)])


def req(method, params=None, msgid=1):
    """A request object: params None = [], a dict = [dict], else as is."""
    if params is None:
        params = []
    elif isinstance(params, dict):
        params = [params]
    return pk([0, msgid, method, params])


def seq(*objs, who=0, dt=1):
    """Objects for one caller, each after dt ms."""
    return b"".join(ctl(who, dt) + o for o in objs)


def step(obj, who=0, dt=1):
    return ctl(who, dt) + obj


def gone(who=0):
    return bytes([GONE | (who & 1)])


# Values that are the wrong type for almost any argument.
BAD_VALUES = [
    -1, 0, 2**64 - 1, 2**32, 1.5, True, False, "", "x" * 200,
    b"bin", [], [1], {}, {"a": 1}, msgpack.ExtType(1, b"xy"),
]
# Key strings that keys_valid must refuse.
BAD_KEYS = ["", "a b", "k" * 129, "\xff", "a/b", "ä", "a\x00b", "*"]

METHODS = {
    "ping": {},
    "acquire": {"key": "a.b", "cost": 1, "wait_ms": 0, "priority": "normal"},
    "report": {"key": "a.b", "permit": 1, "outcome": "failure",
               "latency_ms": 5, "error": {"class": "network.reset",
                                          "message": "m", "severity": "high",
                                          "transient": True,
                                          "retry_after_ms": 10},
               "limit": {"remaining": 3, "reset_ms": 100}, "attempt": 1,
               "idempotent": True, "correlation_id": "c1",
               "context": {"venue": "x"}},
    "cancel": {"msgid": 1},
    "heartbeat": {"key": "a.hb", "latency_ms": 3},
    "status": {"key": "a.b"},
    "force": {"key": "a.f", "state": "open", "reason": "maint", "ttl_ms": 50},
    "reset": {"key": "a.f"},
    "errors": {"prefix": "a", "window_s": 60, "min_severity": "low",
               "top": 3},
    "health": {},
    "subscribe": {"topics": ["state", "alert"]},
    "unsubscribe": {"topics": ["state"]},
    "reload": {},
    "metrics": {},
}


def seeds():
    out = {}

    # Every method: valid arguments, no arguments, each argument wrong.
    for name, args in METHODS.items():
        tag = name
        out["method-%s-valid" % tag] = seq(req(name, args or None))
        out["method-%s-noargs" % tag] = seq(req(name))
        for arg in args:
            objs = []
            for i, v in enumerate(BAD_VALUES):
                a = dict(args)
                a[arg] = v
                objs.append(req(name, a, msgid=i + 2))
            out["method-%s-bad-%s" % (tag, arg)] = seq(*objs)
        unknown = dict(args)
        unknown["bogus"] = 1
        out["method-%s-unknown-arg" % tag] = seq(req(name, unknown))
        out["method-%s-positional" % tag] = seq(
            req(name, ["a.b", 1]), req(name, [args, args], msgid=2),
            req(name, [None], msgid=3))
        # A notification of the method, with good and with bad params.
        out["notify-%s" % tag] = seq(
            pk([2, name, [args] if args else []]),
            pk([2, name, [{"key": 5}]]), pk([2, name, "x"]),
            req("ping", msgid=9))
        out["bin-%s" % tag] = seq(
            pk([0, 1, name.encode(), [args] if args else []]),
            pk([2, name.encode(), [args] if args else []]))

    # Keys that keys_valid must refuse, for every key-taking method.
    for name in ("acquire", "report", "heartbeat", "status", "force",
                 "reset"):
        objs = []
        for i, k in enumerate(BAD_KEYS):
            a = dict(METHODS[name])
            a["key"] = k
            objs.append(req(name, a, msgid=i + 1))
        out["badkey-%s" % name] = seq(*objs)
    out["status-prefix"] = seq(req("acquire", {"key": "a.b"}),
                               req("status", {"prefix": "a"}, 2),
                               req("status", {"prefix": "a", "key": "a.b"},
                                   3),
                               req("status", {"limit": 1, "after": "a"}, 4),
                               req("status", {"limit": 0}, 5))

    # Acquire paths: limiter, reserve, bulkhead, parking, shadow, cost.
    out["acquire-limiter"] = seq(*[req("acquire", {"key": "a"}, i)
                                   for i in range(8)], dt=3)
    out["acquire-critical-reserve"] = seq(
        *[req("acquire", {"key": "a", "priority": "critical"}, i)
          for i in range(7)])
    out["acquire-cost-too-big"] = seq(
        req("acquire", {"key": "a", "cost": 5}),
        req("acquire", {"key": "a.c", "cost": 4}, 2),
        req("acquire", {"key": "a.c", "cost": 1000000001}, 3))
    out["acquire-park-bulkhead"] = (
        seq(*[req("acquire", {"key": "a.p", "wait_ms": 40}, i)
              for i in range(6)], dt=0)
        + seq(req("report", {"key": "a.p", "permit": 1,
                             "outcome": "success"}), dt=5)
        + step(req("ping"), dt=31) + step(req("ping"), dt=31))
    out["acquire-park-then-gone"] = (
        seq(req("acquire", {"key": "a.q"}, 1), req("acquire", {"key": "a.q"},
                                                    2), dt=0)
        + seq(req("acquire", {"key": "a.q", "wait_ms": 1000}, 3), who=1)
        + gone(0) + step(req("ping"), who=1, dt=2) + gone(1))
    out["acquire-cancel"] = seq(
        req("acquire", {"key": "a.r"}, 1), req("acquire", {"key": "a.r"}, 2),
        req("acquire", {"key": "a.r", "wait_ms": 500}, 3),
        req("cancel", {"msgid": 3}, 4), req("cancel", {"msgid": 1}, 5),
        req("cancel", {"msgid": 99}, 6), dt=0)
    out["acquire-shadow"] = seq(*[req("acquire", {"key": "s.x"}, i)
                                  for i in range(4)])
    out["permit-expiry"] = (seq(req("acquire", {"key": "a.t"}), dt=0)
                            + b"".join(step(req("ping"), dt=31)
                                       for _ in range(8)))
    out["breaker-open-probe"] = seq(
        *[req("report", {"key": "b", "outcome": "failure",
                         "error": {"class": "network.reset"}}, i)
          for i in range(4)],
        req("acquire", {"key": "b"}, 10),
        *[req("acquire", {"key": "b", "priority": "critical"}, 11 + i)
          for i in range(3)], dt=20)
    out["breaker-slow"] = seq(
        *[req("report", {"key": "c", "outcome": "success",
                         "latency_ms": 50}, i) for i in range(6)])
    out["report-other-callers-permit"] = (
        seq(req("acquire", {"key": "a.o"}), who=0)
        + seq(req("report", {"key": "a.o", "permit": 1,
                             "outcome": "success"}),
              req("report", {"key": "a.o", "permit": 1,
                             "outcome": "success"}, 2), who=1))
    out["report-rate-limited"] = seq(
        req("report", {"key": "a", "outcome": "failure",
                       "error": {"class": "rate_limited",
                                 "retry_after_ms": 30}}),
        req("report", {"key": "a.x", "outcome": "success",
                       "limit": {"remaining": 0, "reset_ms": 20}}, 2),
        req("acquire", {"key": "a.x"}, 3))
    out["report-unknown-nonidempotent"] = seq(
        req("report", {"key": "d", "outcome": "unknown",
                       "idempotent": False, "attempt": 3,
                       "error": {"class": "timeout"}}))
    out["report-deep-class"] = seq(
        req("report", {"key": "d", "outcome": "failure",
                       "error": {"class": ".".join(["a"] * 32)}}),
        req("report", {"key": "d", "outcome": "failure",
                       "error": {"class": "x" * 65}}, 2))
    out["force-all-states"] = seq(
        *[req("force", {"key": "f", "state": s, "reason": "r\\\x01",
                        "ttl_ms": 10}, i)
          for i, s in enumerate(["open", "closed", "disabled", "auto"])],
        req("acquire", {"key": "f"}, 9), req("reset", {"key": "f"}, 10))
    out["deep-key-ancestors"] = seq(
        req("acquire", {"key": ".".join(["a"] * 12)}),
        req("acquire", {"key": ".".join(["a"] * 64)}, 2))
    # Multi-star patterns: the policy "*.*.*.x" and its breaker's record
    # list "*.*.x" (fuzz_dispatch.c's config), with long keys and classes.
    out["pattern-stars"] = seq(
        req("acquire", {"key": "p.q.r.x"}),
        req("acquire", {"key": ".".join(["a"] * 40) + ".x"}, 2),
        req("acquire", {"key": ".".join(["a"] * 63) + ".b"}, 3),
        req("report", {"key": "p.q.r.x", "outcome": "failure",
                       "error": {"class": "a.b.x"}}, 4),
        req("report", {"key": "p.q.r.x", "outcome": "failure",
                       "error": {"class": ".".join(["c"] * 31) + ".x"}}, 5),
        req("report", {"key": "p.q.r.x", "outcome": "failure",
                       "error": {"class": ".".join(["c"] * 32)}}, 6))
    out["many-keys"] = seq(*[req("acquire", {"key": "k%d" % i}, i)
                             for i in range(170)], dt=0)

    # Pipelined: many requests, both callers, no time passing.
    out["pipelined"] = b"".join(
        step(req(m, a or None, i), who=i & 1, dt=0)
        for i, (m, a) in enumerate(list(METHODS.items()) * 2))

    # Message shapes the decoder must refuse.
    out["shape-not-array"] = seq(pk({"a": 1}), pk(5), pk("ping"), pk(None))
    out["shape-wrong-length"] = seq(pk([0, 1, "ping"]),
                                    pk([0, 1, "ping", [], 5]), pk([]),
                                    pk([0]))
    out["shape-response"] = seq(pk([1, 1, None, None]), pk([1, 1, "e", 5]))
    out["shape-bad-type"] = seq(pk([3, 1, "ping", []]),
                                pk([-1, 1, "ping", []]),
                                pk(["0", 1, "ping", []]))
    out["shape-bad-msgid"] = seq(pk([0, -1, "ping", []]),
                                 pk([0, 2**32, "ping", []]),
                                 pk([0, 1.0, "ping", []]),
                                 pk([0, "1", "ping", []]),
                                 pk([0, None, "ping", []]))
    out["shape-bad-method"] = seq(pk([0, 1, 5, []]), pk([0, 1, None, []]),
                                  pk([0, 1, "", []]),
                                  pk([0, 1, "x" * 300, []]),
                                  pk([0, 1, "ping\x00", []]),
                                  pk([0, 1, "PING", []]))
    out["shape-bad-params"] = seq(pk([0, 1, "ping", {}]),
                                  pk([0, 1, "ping", None]),
                                  pk([0, 1, "ping", "x"]),
                                  pk([0, 1, "acquire", [{5: "a"}]]),
                                  pk([0, 1, "acquire", [{b"key": "a"}]]))
    out["shape-dup-keys"] = seq(
        b"\x94\x00\x01\xa7acquire\x91\x82\xa3key\xa1a\xa3key\xa1b")
    out["shape-c1"] = step(b"\x94\x00\x01\xa4ping\x91\xc1")
    out["shape-ext-float"] = seq(
        pk([0, 1, "acquire", [{"key": "a", "cost": 1.0}]]),
        pk([0, 1, msgpack.ExtType(5, b"ping"), []]),
        b"\x94\x00\x01\xa4ping\x91\xca\x00\x00\x00\x00")

    # Nesting: exactly at the limit (8) and one over.
    def nest(depth):
        v = []
        for _ in range(depth):
            v = [v]
        return v
    out["nest-at-limit"] = seq(req("acquire", {"key": nest(5)}))
    out["nest-over-limit"] = seq(req("acquire", {"key": nest(7)}))
    out["nest-deep-map"] = seq(req("report", {"key": "a", "outcome":
                                              "success",
                                              "context": {"a": {"b": {
                                                  "c": {"d": {"e": 1}}}}}}))
    out["nest-very-deep"] = step(b"\x91" * 200 + b"\xc0")

    # Huge declared counts and lengths: refused from the header alone.
    out["huge-array32"] = step(b"\xdd\xff\xff\xff\xff")
    out["huge-map32"] = step(b"\x94\x00\x01\xa4ping\xdf\xff\xff\xff\xff")
    out["huge-str32"] = step(b"\x94\x00\x01\xdb\x7f\xff\xff\xff")
    out["huge-bin32"] = step(b"\x94\x00\x01\xc6\xff\xff\xff\xff")
    out["huge-ext32"] = step(b"\x94\x00\x01\xc9\xff\xff\xff\xff\x01")
    out["huge-array16-in-params"] = step(b"\x94\x00\x01\xa4ping\x91\xdc"
                                         b"\xff\xff")
    out["big-string-arg"] = seq(req("acquire", {"key": "k" * 2000}),
                                req("report", {"key": "a", "outcome":
                                               "failure", "error": {
                                                   "class": "c",
                                                   "message": "m" * 1900}},
                                    2))

    # Truncated frames: a good request cut short (the harness stops there).
    full = req("acquire", {"key": "a.b", "cost": 1})
    for cut in (1, 2, 5, len(full) // 2, len(full) - 1):
        out["truncated-%d" % cut] = (seq(req("ping"))
                                     + step(full[:cut]))
    out["truncated-ctl-only"] = ctl(0, 5)
    out["gone-both"] = seq(req("acquire", {"key": "a.g"})) + gone(0) + \
        gone(1) + gone(0)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: corpus_seeds.py DIR")
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    for name, data in sorted(seeds().items()):
        assert len(data) <= 4096, (name, len(data))
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
