#!/usr/bin/env python3
"""test_force_metrics.py - issue 8, defect 14, through the real daemon: a
forced or disabled key keeps measuring (status shows its window), and back
in auto the window is kept and judged on the next report.

The breaker's unit test and reference model hold the rule itself; this
shows the operator's view (status over the wire) agrees.
"""

import rpcutil

CONFIG = {"policies": {"*": {"breaker": {
    "failure_threshold": 0, "minimum_calls": 5,
    "failure_rate_threshold": 50, "slow_call_ms": 100}}}}


def key_status(c, key):
    return c.ok("status", {"key": key})["keys"][0]


def t_disabled_measures(tap):
    d = tap.start_daemon(CONFIG, "force-metrics")
    if not d:
        return
    c = d.connect()
    c.ok("force", {"key": "k", "state": "disabled"})
    for o in ["failure"] * 3 + ["success"] * 2:
        c.ok("report", {"key": "k", "outcome": o, "latency_ms": 10})
    s = key_status(c, "k")
    tap.check(s["state"] == "disabled" and s["failure_rate"] == 60.0 and
              s["calls"] == 5 and s["failures"] == 3,
              "disabled: failure x3, success x2 shows failure_rate 60",
              "status %r" % s)
    c.ok("force", {"key": "k", "state": "auto"})
    s = key_status(c, "k")
    tap.check(s["state"] == "closed" and s["failure_rate"] == 60.0,
              "auto: closed, the window kept as recorded", "status %r" % s)
    r = c.ok("report", {"key": "k", "outcome": "success"})
    s = key_status(c, "k")
    tap.check(r["state"] == "open" and s.get("opened_by") == "failure_rate",
              "auto: the next report judges the window (3 of 6) and opens",
              "report %r status %r" % (r, s))

    # forced closed: slow calls are measured, at latency >= slow_call_ms
    c.ok("force", {"key": "s", "state": "closed"})
    c.ok("report", {"key": "s", "outcome": "success", "latency_ms": 99})
    c.ok("report", {"key": "s", "outcome": "success", "latency_ms": 100})
    s = key_status(c, "s")
    tap.check(s["state"] == "forced_closed" and s["slow_rate"] == 50.0,
              "forced closed: 99 ms fast, 100 ms slow (slow_rate 50)",
              "status %r" % s)
    c.close()
    tap.stop_daemon(d, "force-metrics")


def main():
    tap = rpcutil.Tap()
    tap.run("disabled and forced keys keep measuring", t_disabled_measures,
            tap)
    tap.finish()


if __name__ == "__main__":
    main()
