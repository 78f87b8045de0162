#!/usr/bin/python3
"""test_errors.py - error analytics and alerts over the wire (issue 11),
with raw MessagePack-RPC as any foreign client would:

- errors: totals, by_class/by_key/by_severity, top, recent (newest first,
  with message, correlation id and context), and the key/prefix/
  min_severity/window_s/top filters; bad arguments are bad_request;
- alerts: a rule's rate reached -> an `alert` event to subscribers, once
  per cooldown per key; a breaker opening is an alert too;
- exec: the hook gets the alert as JSON on stdin; a hook that hangs is
  killed at its timeout while decisions continue;
- resilctl errors: tables and --json.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_error  # noqa: E402

CFG = {"policies": {"*": {"breaker": {"failure_threshold": 0,
                                      "failure_rate_threshold": 0}}}}


def fail(c, key, cls, msg="boom", sev=None, cid=None, ctx=None):
    err = {"class": cls, "message": msg}
    if sev:
        err["severity"] = sev
    p = {"key": key, "outcome": "failure", "error": err}
    if cid:
        p["correlation_id"] = cid
    if ctx is not None:
        p["context"] = ctx
    return c.ok("report", p)


def test_errors(tap):
    d = tap.start_daemon(CFG, "errors")
    if not d:
        return
    c = d.connect()
    r = c.ok("errors")
    tap.check(r["total"] == 0 and r["top"] == [] and r["recent"] == [],
              "no failures: an empty answer", r)
    for i in range(3):
        fail(c, "binance.ws", "network.reset", "reset %d" % i)
    for i in range(2):
        fail(c, "binance.orders", "timeout", "slow %d" % i)
    fail(c, "kraken.api", "auth.denied", "no", sev="critical", cid="c-42",
         ctx={"order": 17, "venue": "kraken"})
    c.ok("report", {"key": "binance.ws", "outcome": "success"})
    r = c.ok("errors")
    tap.check(r["total"] == 6, "total counts failures only", r["total"])
    tap.check(r["by_class"] == {"network.reset": 3, "timeout": 2,
                                "auth.denied": 1}, "by_class", r["by_class"])
    tap.check(r["by_key"] == {"binance.ws": 3, "binance.orders": 2,
                              "kraken.api": 1}, "by_key", r["by_key"])
    tap.check(r["by_severity"]["critical"] == 1 and
              sum(r["by_severity"].values()) == 6, "by_severity",
              r["by_severity"])
    tap.check(abs(r["rate_per_min"] - 6 / 60.0) < 1e-9,
              "rate_per_min over the default hour", r["rate_per_min"])
    tap.check([(t["key"], t["count"]) for t in r["top"]][:2] ==
              [("binance.ws", 3), ("binance.orders", 2)], "top pairs",
              r["top"])
    rec = r["recent"]
    tap.check(len(rec) == 6 and rec[0]["key"] == "kraken.api" and
              rec[0]["correlation_id"] == "c-42" and
              rec[0]["context"] == {"order": 17, "venue": "kraken"} and
              rec[0]["message"] == "no" and rec[-1]["message"] == "reset 0",
              "recent: newest first with message, correlation id, context",
              rec[:2])
    tap.check(abs(rec[0]["ts"] / 1000.0 - time.time()) < 60,
              "recent ts is wall-clock ms", rec[0]["ts"])
    tap.check(len(r["trends"]) == len(r["top"]) and
              all(t["direction"] in ("up", "down", "flat") and
                  0 <= t["strength"] <= 1 for t in r["trends"]),
              "a trend per top pair", r["trends"])
    for k in ("correlations", "predictions", "series", "evicted"):
        tap.check(k in r, "answer has %s" % k)
    # Filters.
    r = c.ok("errors", {"key": "binance.ws"})
    tap.check(r["total"] == 3 and list(r["by_key"]) == ["binance.ws"] and
              all(e["key"] == "binance.ws" for e in r["recent"]),
              "key filter", r["by_key"])
    r = c.ok("errors", {"prefix": "binance"})
    tap.check(r["total"] == 5 and "kraken.api" not in r["by_key"],
              "prefix filter", r["by_key"])
    r = c.ok("errors", {"prefix": "binance.w"})
    tap.check(r["total"] == 0, "prefix is by dotted segment", r["by_key"])
    r = c.ok("errors", {"min_severity": "critical"})
    tap.check(r["total"] == 1 and list(r["by_key"]) == ["kraken.api"],
              "min_severity filter", r["by_key"])
    r = c.ok("errors", {"top": 1})
    tap.check(len(r["top"]) == 1 and len(r["recent"]) == 1,
              "top limits pairs and recent", r["top"])
    r = c.ok("errors", {"window_s": 60})
    tap.check(r["total"] == 6 and abs(r["rate_per_min"] - 6.0) < 1e-9,
              "window_s 60 (second buckets)", r["rate_per_min"])
    for bad in ({"window_s": 0}, {"window_s": 86401}, {"top": 0},
                {"min_severity": "huge"}, {"key": "a b"},
                {"key": "a", "prefix": "b"}, {"windows": 5}):
        err, _ = c.call("errors", bad)
        tap.check(is_error(err, "bad_request"), "bad_request for %r" % bad,
                  err)
    # A non-UTF-8 message is stored as valid text.
    fail(c, "bad.text", "network", msg=b"ab\xff\xfecd".decode("latin-1"))
    c.send(rpcutil.pack([0, 9001, "report", [{
        "key": "bad.text", "outcome": "failure",
        "error": {"class": "network", "message": b"x\xffy"}}]]))
    c.wait(9001)
    r = c.ok("errors", {"key": "bad.text"})
    tap.check(all(isinstance(e["message"], str) for e in r["recent"]),
              "recent messages are valid UTF-8", r["recent"])
    c.close()
    tap.stop_daemon(d, "errors")


def main():
    tap = rpcutil.Tap()
    tap.run("errors", test_errors, tap)
    tap.finish()


if __name__ == "__main__":
    main()
