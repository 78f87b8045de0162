#!/usr/bin/python3
"""test_reload.py - hot reload (issue 10, part 3): the `reload` method and
SIGHUP re-read the configuration file and rebind every key to its new
policy, with nothing lost.

- a changed limit applies at once, and never as a fresh burst;
- a breaker's state and an operator force survive, and so do the
  connection and its permits;
- a new policy pattern takes the keys it now matches best;
- an invalid file is refused with its error, and the old configuration
  keeps deciding;
- what cannot change live (socket, pools, bounds, the redis section) is
  kept and named;
- SIGHUP does the same; both are an operator event.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_error  # noqa: E402

BASE = {"policies": {
    "*": {"breaker": {"failure_threshold": 2, "open_ms": 60000,
                      "failure_rate_threshold": 0}},
    "lim": {"limiter": {"rate": 1, "per": "hour", "burst": 100}},
}}


def write(d, cfg):
    with open(d.config_path, "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))


def events(c, timeout=1.0):
    """The reload events that arrive within timeout (others dropped)."""
    return [e for e in c.events(timeout, lambda e: e.get("type") == "reload")
            if e.get("type") == "reload"]


def t_reload(tap):
    d = tap.start_daemon(BASE, "reload")
    if not d:
        return
    c, sub = d.connect(), d.connect()
    sub.ok("subscribe", {"topics": ["operator"]})
    for _ in range(3):
        tap.check(c.ok("acquire", {"key": "lim"})["allow"], "lim: a token")
    for _ in range(2):
        c.ok("report", {"key": "x", "outcome": "failure"})
    held = c.ok("acquire", {"key": "other"})
    c.ok("force", {"key": "f", "state": "open", "reason": "maint"})

    cfg = json.loads(json.dumps(BASE))
    cfg["policies"]["lim"]["limiter"]["burst"] = 2
    cfg["policies"]["y.*"] = {"bulkhead": {"max_concurrent": 1}}
    cfg["max_keys"] = 5  # cannot change live
    write(d, cfg)
    res = c.ok("reload")
    tap.check(res["reloaded"] is True and res["policies"] == 3 and
              "1 added" in res["changes"] and "1 changed" in res["changes"]
              and "max_keys" in res["changes"],
              "reload answers the policies and what changed, naming what "
              "waits for a restart", repr(res))
    ev = events(sub)
    tap.check(len(ev) == 1 and ev[0]["type"] == "reload" and
              ev[0]["added"] == 1 and ev[0]["changed"] == 1,
              "an operator event says so", repr(ev))
    st = c.ok("status", {"key": "lim"})["keys"][0]
    tap.check(st["limiter"]["burst"] == 2 and
              st["limiter"]["available"] == 2,
              "the new burst applies at once; the bucket is cut to it, not "
              "refilled", repr(st["limiter"]))
    oks = [c.ok("acquire", {"key": "lim"})["allow"] for _ in range(3)]
    tap.check(oks == [True, True, False],
              "two tokens, then rate_limited under the new limit", repr(oks))
    st = c.ok("status", {"key": "x"})["keys"][0]
    tap.check(st["state"] == "open", "an open breaker stays open",
              repr(st["state"]))
    st = c.ok("status", {"key": "f"})["keys"][0]
    tap.check(st["state"] == "forced_open" and st["force_reason"] == "maint",
              "an operator force survives", repr(st))
    res = c.ok("report", {"key": "other", "permit": held["permit"],
                          "outcome": "success"})
    tap.check(res["stale"] is False,
              "a permit granted before the reload is still the "
              "connection's", repr(res))
    a = c.ok("acquire", {"key": "y.1"})
    b = c.ok("acquire", {"key": "y.1"})
    tap.check(a["allow"] and not b["allow"] and
              b["reason"] == "bulkhead_full",
              "a new pattern takes the keys it matches", repr((a, b)))
    for i in range(10):
        c.ok("acquire", {"key": "k%d" % i})
    tap.check(True, "max_keys stayed what it was (10 more keys were made)")

    write(d, '{"policies": {"lim": {"limiter": {"rate": 0}}')
    err, _ = c.call("reload")
    tap.check(is_error(err, "bad_request") and "config.json" in
              err["message"] and "stays" in err["message"],
              "an invalid file is refused with its error", repr(err))
    st = c.ok("status", {"key": "lim"})["keys"][0]
    tap.check(st["limiter"]["burst"] == 2,
              "and the running configuration keeps deciding",
              repr(st["limiter"]))

    cfg["policies"]["lim"]["limiter"]["burst"] = 7
    write(d, cfg)
    os.kill(d.pid, signal.SIGHUP)
    ev = events(sub, 3.0)
    st = c.ok("status", {"key": "lim"})["keys"][0]
    tap.check(ev and ev[0]["type"] == "reload" and ev[0]["uid"] == 0 and
              st["limiter"]["burst"] == 7,
              "SIGHUP reloads the same way", repr((ev, st["limiter"])))
    tap.check("configuration reloaded" in d.log(),
              "and the log says so")
    ctl = os.path.join(rpcutil.build_dir(), "resilctl")
    import subprocess
    out = subprocess.run([ctl, "-s", d.sock, "reload"], capture_output=True,
                         text=True, timeout=10)
    tap.check(out.returncode == 0 and out.stdout.startswith("reloaded: 3"),
              "resilctl reload", repr((out.returncode, out.stdout,
                                       out.stderr)))
    write(d, "[1, 2]")
    out = subprocess.run([ctl, "-s", d.sock, "reload"], capture_output=True,
                         text=True, timeout=10)
    tap.check(out.returncode == 1 and "stays" in out.stderr,
              "resilctl reload of a bad file: exit 1 and the error",
              repr((out.returncode, out.stdout, out.stderr)))
    tap.check("version" in c.ok("ping"), "the connection survived it all")
    tap.stop_daemon(d, "reload")


def t_reload_redis(tap):
    # Nothing listens at the socket: the daemon decides locally meanwhile.
    cfg = {"redis": {"url": "unix:///nonexistent/resild-test/redis.sock",
                     "mode": "shared"},
           "policies": {"g": {"scope": "global",
                              "limiter": {"rate": 4, "per": "hour"}}}}
    d = tap.start_daemon(cfg, "reload-redis")
    if not d:
        return
    c = d.connect()
    tap.check(c.ok("acquire", {"key": "g"})["allow"], "g: a token")
    cfg = json.loads(json.dumps(cfg))
    cfg["redis"].update({"url": "tcp://127.0.0.1:1", "lease_ms": 500,
                         "expected_hosts": 4})
    write(d, cfg)
    res = c.ok("reload")
    tap.check(res["reloaded"] is True and all(
        n in res["changes"] for n in ("redis.url", "redis.lease_ms",
                                      "redis.expected_hosts")),
              "a reload keeps the redis section as started, naming what "
              "changed", repr(res))
    st = c.ok("status", {"key": "g"})["keys"][0]
    tap.check(st["limiter"]["rate"] == 4 and
              st["limiter"]["available"] == 3,
              "a global limiter's share follows the kept expected_hosts "
              "(1: 3 of 4 tokens left), not the file's (4: cut to 1)",
              repr(st["limiter"]))
    tap.stop_daemon(d, "reload-redis")


def main():
    tap = rpcutil.Tap()
    tap.run("reload", t_reload, tap)
    tap.run("reload-redis", t_reload_redis, tap)
    tap.finish()


if __name__ == "__main__":
    main()
