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
    # resilctl errors: tables and --json.
    ctl = os.path.join(rpcutil.build_dir(), "resilctl")

    def run(*args):
        p = subprocess.run([ctl, "-s", d.sock] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10, env=dict(os.environ, LANG="C.UTF-8",
                                                LC_ALL="C.UTF-8"))
        return p.returncode, p.stdout.decode("utf-8", "replace"), \
            p.stderr.decode("utf-8", "replace")

    rc, out, err = run("errors")
    tap.check(rc == 0 and "errors over the last 1h: " in out and
              "CLASS" in out and "network.reset" in out and
              "binance.ws" in out and "recent (newest first):" in out and
              "cid=c-42" in out, "resilctl errors prints the tables",
              out + err)
    tap.check(any(a in out for a in ("\u2192 flat", "\u2191 up",
                                      "\u2193 down")),
              "trends with arrows", out)
    rc, out, err = run("errors", "--prefix", "binance", "--since", "15m",
                       "--top", "1")
    tap.check(rc == 0 and "errors over the last 15m: 5 " in out and
              "kraken" not in out, "resilctl errors --prefix --since --top",
              out + err)
    rc, out, err = run("errors", "--severity", "critical", "--json")
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    tap.check(rc == 0 and j.get("total") == 1 and
              list(j.get("by_key", {})) == ["kraken.api"],
              "resilctl errors --severity --json", out + err)
    rc, out, err = run("errors", "--severity", "huge")
    tap.check(rc == 2 and "bad severity" in err, "a bad severity is a usage "
              "error", err)
    rc, out, err = run("errors", "--key", "a", "--prefix", "b")
    tap.check(rc == 2, "--key and --prefix together: usage error", err)
    c.close()
    tap.stop_daemon(d, "errors")


def alert_events(c, timeout, until):
    """Alert events read from c until until(list) or timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        while c.others:
            m = c.others.pop(0)
            if isinstance(m, list) and len(m) == 3 and m[1] == "event" \
                    and m[2][0].get("topic") == "alert":
                got.append(m[2][0])
        if until(got):
            break
        try:
            c._pump(0.05)
        except TimeoutError:
            pass
    return got


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_alerts(tap):
    d = rpcutil.Daemon(None, "alerts")
    out = os.path.join(d.dir, "hook.out")
    pidf = os.path.join(d.dir, "hang.pid")
    d.config = {
        "policies": {"*": {"breaker": {"failure_threshold": 0,
                                       "failure_rate_threshold": 0}},
                     "brk": {"breaker": {"failure_threshold": 2,
                                         "open_ms": 60000}}},
        "errors": {"alerts": [
            {"name": "ws-burst", "rate_per_min": 3, "cooldown_s": 600,
             "prefix": "ex", "exec": "cat > '%s'" % out},
            {"name": "hang", "rate_per_min": 2, "key": "slow.hook",
             "timeout_s": 1, "exec": "echo $$ > '%s'; exec sleep 30" % pidf},
        ]}}
    tap.daemons.append(d)
    up = d.start()
    tap.check(up, "alerts: daemon starts with rules")
    if not up:
        return
    sub = d.connect()
    sub.ok("subscribe", {"topics": ["alert"]})
    c = d.connect()
    for i in range(3):
        fail(c, "ex.ws", "network", "x%d" % i)
    got = alert_events(sub, 5, lambda g: any(e["rule"] == "ws-burst"
                                             for e in g))
    a = [e for e in got if e["rule"] == "ws-burst"]
    tap.check(len(a) == 1 and a[0]["key"] == "ex.ws" and
              a[0]["kind"] == "rate" and a[0]["rate_per_min"] >= 3 and
              a[0]["detail"], "a rule's rate reached: an alert event", got)
    tap.check(wait_for(lambda: os.path.exists(out) and
                       os.path.getsize(out) > 0, 5),
              "the exec hook ran")
    try:
        with open(out) as f:
            j = json.load(f)
    except (OSError, ValueError) as e:
        j = {"error": str(e)}
    tap.check(j.get("rule") == "ws-burst" and j.get("key") == "ex.ws" and
              j.get("kind") == "rate" and j.get("topic") == "alert",
              "the hook got the alert as JSON on stdin", j)
    # Cooldown: more failures, no second alert for the same rule and key.
    for i in range(3):
        fail(c, "ex.ws", "network")
    got = alert_events(sub, 2.5, lambda g: False)
    tap.check(not [e for e in got if e["rule"] == "ws-burst"],
              "in cooldown: no second alert", got)
    # A breaker opening is an alert.
    fail(c, "brk", "network")
    fail(c, "brk", "network")
    got = alert_events(sub, 5, lambda g: any(e["kind"] == "breaker_open"
                                             for e in g))
    tap.check(any(e["kind"] == "breaker_open" and e["key"] == "brk"
                  for e in got), "a breaker opening is an alert", got)
    # A hook that hangs is killed at its timeout; decisions go on.
    fail(c, "slow.hook", "network")
    fail(c, "slow.hook", "network")
    tap.check(wait_for(lambda: os.path.exists(pidf) and
                       os.path.getsize(pidf) > 0, 5), "the hanging hook runs")
    try:
        pid = int(open(pidf).read().strip())
    except (OSError, ValueError):
        pid = None
    worst = 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        s = time.monotonic()
        g = c.ok("acquire", {"key": "live.path"})
        c.ok("report", {"key": "live.path", "permit": g["permit"],
                        "outcome": "success"})
        worst = max(worst, time.monotonic() - s)
    tap.check(worst < 0.5, "decisions continue while the hook hangs "
              "(worst acquire %.1f ms)" % (worst * 1000))
    gone = wait_for(lambda: pid is not None and
                    not os.path.exists("/proc/%d" % pid), 5)
    tap.check(gone, "the hanging hook was killed after its timeout", pid)
    tap.check(wait_for(lambda: "killed after 1000 ms" in d.log(), 3),
              "the kill is logged")
    h = c.ok("health")
    comp = h["components"].get("alert_hooks", {})
    tap.check("1 timed out" in comp.get("detail", ""),
              "health counts the timed-out hook", comp)
    sub.close()
    c.close()
    tap.stop_daemon(d, "alerts")


def main():
    tap = rpcutil.Tap()
    tap.run("errors", test_errors, tap)
    tap.run("alerts", test_alerts, tap)
    tap.finish()


if __name__ == "__main__":
    main()
