#!/usr/bin/env python3
"""
test_hardening.py - regression tests for defects of issue 8 that live in
the decision layer (methods, admission, permits), each once reproduced:

- cancel: a parked acquire is answered "cancelled" at once; a grant the
  client stopped waiting for is released as "ignore" and never expires into
  a phantom failure that opens a healthy breaker (defect 3);
- unknown arguments are bad_request naming them, at every level (6);
- max_permits is exact: 20 allows 20, not 32 (5);
- only the holding connection's report ends a permit (9);
- a force reason is kept as given and must be UTF-8 (12);
- a notification of a known method runs without an answer, acquire
  notifications and unknown ones are ignored, and none closes the
  connection (8).

Each case has its own daemon; raw MessagePack-RPC through tests/rpcutil.py.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_error, pack  # noqa: E402


def status_of(c, key):
    res = c.ok("status", {"key": key})
    return res["keys"][0] if res["keys"] else None


def t_cancel(tap):
    d = tap.start_daemon({"policies": {
        "bh": {"bulkhead": {"max_concurrent": 1, "queue": 4},
               "permit_ttl_ms": 300,
               "breaker": {"failure_threshold": 1}}}}, "cancel")
    if not d:
        return
    a, b = d.connect(), d.connect()
    held = a.ok("acquire", {"key": "bh"})
    mid = b.request("acquire", {"key": "bh", "wait_ms": 5000})
    res = b.ok("cancel", {"msgid": mid})
    tap.check(res == {"cancelled": True, "released": False},
              "cancel of a parked acquire: cancelled, nothing released",
              repr(res))
    try:
        err, ans = b.wait(mid, 1.0)
    except Exception as e:
        err, ans = repr(e), None
    tap.check(err is None and ans and ans["allow"] is False and
              ans["reason"] == "cancelled",
              "the parked acquire is answered at once: allow false, reason "
              "cancelled", "error=%r result=%r" % (err, ans))
    st = status_of(a, "bh")
    tap.check(st["bulkhead"]["queued"] == 0, "nothing stays queued",
              repr(st["bulkhead"]))
    a.ok("report", {"key": "bh", "permit": held["permit"],
                    "outcome": "success"})
    # A grant that went out but was given up on: released as ignore.
    mid = b.request("acquire", {"key": "bh"})
    got = b.wait(mid)[1]
    res = b.ok("cancel", {"msgid": mid})
    tap.check(got["allow"] and res == {"cancelled": True, "released": True},
              "cancel after the grant releases the permit", repr(res))
    st = status_of(a, "bh")
    tap.check(st["bulkhead"]["in_use"] == 0 and st["outstanding"] == 0,
              "the slot is free again at once", repr(st))
    # The phantom failure: nothing may expire at permit_ttl_ms.
    time.sleep(0.5)
    st = status_of(a, "bh")
    tap.check(st["state"] == "closed" and st["failures"] == 0,
              "a cancelled grant never expires into a failure "
              "(failure_threshold 1 would open)", repr(st))
    res = b.ok("cancel", {"msgid": mid})
    tap.check(res == {"cancelled": False, "released": False},
              "a second cancel finds nothing", repr(res))
    res = b.ok("cancel", {"msgid": 424242})
    tap.check(res == {"cancelled": False, "released": False},
              "cancel of an unknown msgid finds nothing", repr(res))
    # Only the connection that asked may cancel.
    held = a.request("acquire", {"key": "bh"})
    a.wait(held)
    res = b.ok("cancel", {"msgid": held})
    st = status_of(a, "bh")
    tap.check(res["cancelled"] is False and st["bulkhead"]["in_use"] == 1,
              "another connection's cancel with the same msgid changes "
              "nothing", "%r %r" % (res, st["bulkhead"]))
    err, _ = b.call("cancel", {})
    tap.check(is_error(err, "bad_request") and "msgid" in err["message"],
              "cancel without msgid is bad_request", repr(err))
    tap.stop_daemon(d, "cancel")


def t_unknown_args(tap):
    d = tap.start_daemon({"policies": {"lim": {"limiter": {
        "rate": 100, "per": "hour", "burst": 100}}}}, "args")
    if not d:
        return
    c = d.connect()
    c.ok("acquire", {"key": "lim"})
    cases = [
        ("acquire", {"key": "lim", "costs": 10}, "costs"),
        ("status", {"keys": ["lim"]}, "keys"),
        ("ping", {"verbose": True}, "verbose"),
        ("report", {"key": "lim", "outcome": "failure",
                    "error": {"clas": "network"}}, "error.clas"),
        ("report", {"key": "lim", "outcome": "success",
                    "limit": {"remaining": 5, "reset": 3}}, "limit.reset"),
        ("force", {"key": "lim", "state": "open", "ttl": 5}, "ttl"),
        ("reset", {"key": "lim", "hard": True}, "hard"),
        ("cancel", {"msgid": 1, "id": 1}, "id"),
    ]
    for method, params, name in cases:
        err, _ = c.call(method, params)
        tap.check(is_error(err, "bad_request") and
                  ("'%s'" % name) in err["message"],
                  "%s with unknown argument %s: bad_request naming it"
                  % (method, name), repr(err))
    st = status_of(c, "lim")
    tap.check(st["limiter"]["available"] == 99,
              "the mistyped acquire took no token", repr(st["limiter"]))
    err, _ = c.call("acquire", {"key": "lim", 5: 1})
    tap.check(is_error(err, "bad_request"),
              "a non-string argument name is bad_request", repr(err))
    res = c.ok("report", {"key": "lim", "outcome": "failure",
                          "error": "network.reset", "context": {"a": 1}})
    tap.check(res["classification"]["transient"] is True,
              "error may be given as a class string; context is free-form",
              repr(res))
    tap.check("version" in c.ok("ping"), "the connection stays open")
    tap.stop_daemon(d, "args")


def t_exact_max_permits(tap):
    d = tap.start_daemon({"max_permits": 20}, "max-permits")
    if not d:
        return
    c = d.connect()
    granted = 0
    err = None
    for i in range(40):
        err, res = c.call("acquire", {"key": "k%d" % i})
        if err is None and res["allow"]:
            granted += 1
        elif err is not None:
            break
    tap.check(granted == 20 and is_error(err, "busy"),
              "max_permits 20 grants exactly 20, then busy",
              "granted %d, then %r" % (granted, err))
    tap.stop_daemon(d, "max-permits")


def t_foreign_report(tap):
    d = tap.start_daemon({"policies": {"bh": {
        "bulkhead": {"max_concurrent": 1}}}}, "foreign")
    if not d:
        return
    a, b = d.connect(), d.connect()
    held = a.ok("acquire", {"key": "bh"})
    res = b.ok("report", {"key": "bh", "permit": held["permit"],
                          "outcome": "failure", "error": "network"})
    tap.check(res.get("stale") is True and "retry" not in res,
              "a report of another connection's permit: stale, nothing "
              "more", repr(res))
    st = status_of(b, "bh")
    tap.check(st["bulkhead"]["in_use"] == 1 and st["failures"] == 0,
              "the owner's slot is still held and nothing was counted",
              repr(st))
    res = b.ok("acquire", {"key": "bh"})
    tap.check(res["allow"] is False and res["reason"] == "bulkhead_full",
              "so the thief is still refused", repr(res))
    res = a.ok("report", {"key": "bh", "permit": held["permit"],
                          "outcome": "success"})
    tap.check(res["stale"] is False, "the owner's own report counts",
              repr(res))
    tap.stop_daemon(d, "foreign")


def t_force_reason(tap):
    d = tap.start_daemon(None, "reason")
    if not d:
        return
    c = d.connect()
    reason = "C:\\temp \"quoted\" caf\u00e9 \u26a0"
    st = c.ok("force", {"key": "x", "state": "open", "reason": reason})
    tap.check(st.get("force_reason") == reason,
              "the force reason comes back exactly as given",
              repr(st.get("force_reason")))
    long_reason = "\u00e9" * 100  # 200 bytes: cut at 128 on a boundary
    st = c.ok("force", {"key": "x", "state": "open", "reason": long_reason})
    tap.check(st.get("force_reason") == "\u00e9" * 64,
              "a long reason is cut on a character boundary",
              repr(st.get("force_reason")))
    c.send(pack([0, 99, "force", [{"key": "x", "state": "open",
                                   "reason": b"\xff\xfe"}]]))
    # A bin is not a string at all; an invalid str is refused too.
    err, _ = c.wait(99)
    tap.check(is_error(err, "bad_request"), "a reason that is not text is "
              "bad_request", repr(err))
    raw = (b"\x94\x00\x64\xa5force\x91\x83\xa3key\xa1x\xa5state\xa4open"
           b"\xa6reason\xa2\xc3\x28")
    c.send(raw)
    err, _ = c.wait(100)
    tap.check(is_error(err, "bad_request") and "UTF-8" in err["message"],
              "a reason that is not valid UTF-8 is bad_request", repr(err))
    tap.check("version" in c.ok("ping"), "the connection stays open")
    tap.stop_daemon(d, "reason")


def t_notifications(tap):
    d = tap.start_daemon({"policies": {"bh": {
        "bulkhead": {"max_concurrent": 1},
        "breaker": {"failure_threshold": 2}}}}, "notify")
    if not d:
        return
    c = d.connect()
    c.send(pack([2, "nvim_set_client_info", ["x", {}, "remote", {}, {}]]))
    c.send(pack([2, b"nvim_set_client_info", ["x", {}, "remote", {}, {}]]))
    tap.check("version" in c.ok("ping"),
              "unknown notifications (str or bin name) are ignored; the "
              "connection stays")
    held = c.ok("acquire", {"key": "bh"})
    c.send(pack([2, "report", [{"key": "bh", "permit": held["permit"],
                                "outcome": "failure", "error": "network"}]]))
    st = status_of(c, "bh")
    tap.check(st["bulkhead"]["in_use"] == 0 and st["failures"] == 1,
              "a report notification runs: permit released, failure "
              "counted", repr(st))
    tap.check(not c.others and not c.responses,
              "and nothing is answered to it", repr((c.others, c.responses)))
    c.send(pack([2, "acquire", [{"key": "bh"}]]))
    st = status_of(c, "bh")
    tap.check(st["bulkhead"]["in_use"] == 0,
              "an acquire notification takes no permit (its grant would "
              "reach nobody)", repr(st))
    c.send(pack([2, "report", [{"key": "bh", "outcome": "failure",
                                "costs": 1}]]))
    st = status_of(c, "bh")
    tap.check(st["failures"] == 1 and not c.others,
              "a notification with a bad argument changes nothing and is "
              "not answered", repr(st))
    tap.stop_daemon(d, "notify")


def t_status_pages(tap):
    d = tap.start_daemon({"max_keys": 10000}, "pages")
    if not d:
        return
    c = d.connect()
    names = ["p%d.k%04d" % (i % 3, i) for i in range(2500)]
    # Pipelined: 2500 acquires in one write, then their answers.
    c.send(b"".join(pack([0, 10 + i, "acquire", [{"key": n}]])
                    for i, n in enumerate(names)))
    for i in range(len(names)):
        c.wait(10 + i)
    seen, after, pages = [], None, 0
    while True:
        params = {"after": after} if after else {}
        res = c.ok("status", params)
        pages += 1
        seen += [k["key"] for k in res["keys"]]
        if pages == 1:
            tap.check(len(res["keys"]) == 1000 and res["total"] == 2500,
                      "status pages by 1000 by default; total counts all",
                      "%d keys, total %r" % (len(res["keys"]),
                                             res.get("total")))
        if "next" not in res:
            break
        after = res["next"]
        if pages > 10:
            break
    tap.check(pages == 3 and seen == sorted(names),
              "following next lists every key once, in name order",
              "%d pages, %d keys" % (pages, len(seen)))
    seen, after = [], None
    while True:
        params = {"prefix": "p1", "limit": 300}
        if after:
            params["after"] = after
        res = c.ok("status", params)
        seen += [k["key"] for k in res["keys"]]
        if "next" not in res:
            break
        after = res["next"]
    want = sorted(n for n in names if n.startswith("p1."))
    tap.check(seen == want and res["total"] == len(want),
              "a prefix pages through its own keys only",
              "%d of %d" % (len(seen), len(want)))
    for bad_limit in (0, 1001):
        err, _ = c.call("status", {"limit": bad_limit})
        tap.check(is_error(err, "bad_request") and "limit" in err["message"],
                  "status limit %d is bad_request" % bad_limit, repr(err))
    err, _ = c.call("status", {"key": "p1.k0001", "after": "p0"})
    tap.check(is_error(err, "bad_request"), "key with after is bad_request",
              repr(err))
    tap.stop_daemon(d, "pages")


def main():
    tap = rpcutil.Tap()
    for name, fn in (("cancel", t_cancel),
                     ("unknown arguments", t_unknown_args),
                     ("exact max_permits", t_exact_max_permits),
                     ("foreign report", t_foreign_report),
                     ("force reason", t_force_reason),
                     ("status pages", t_status_pages),
                     ("notifications", t_notifications)):
        tap.run(name, fn, tap)
    tap.finish()


if __name__ == "__main__":
    main()
