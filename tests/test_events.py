#!/usr/bin/python3
"""test_events.py - the event stream, health, heartbeats and metrics over the
wire (issue 9), with raw MessagePack-RPC as any foreign client would:

- subscribe: a breaker's closed -> open -> half_open -> closed arrives as
  state events with their causes, the half-open one although nobody asked
  (the tick announces it); error events carry class, severity and source;
  operator events carry who and why; unsubscribe stops them;
- a subscriber that never reads is dropped at the output bound while
  another client's latency stays flat;
- health: healthy -> degraded (a key open) -> unhealthy (a critical key
  unavailable), services and open listed, recent_errors counted;
- heartbeat: a feed that stops beating is denied heartbeat_lost, both edges
  are events, the next beat restores it;
- metrics: the page passes the exposition-format checker
  (tests/promcheck.py) and its figures agree with what was done.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promcheck  # noqa: E402
import rpcutil  # noqa: E402
from rpcutil import is_error, pack  # noqa: E402

CFG = {"policies": {
    "*": {"breaker": {"failure_threshold": 2, "open_ms": 300,
                      "success_threshold": 1, "failure_rate_threshold": 0}},
    "crit": {"critical": True},
    "feed": {"heartbeat": {"timeout_ms": 200}},
    "lim": {"limiter": {"rate": 5, "per": "second"},
            "bulkhead": {"max_concurrent": 2}},
}}


def events(c, timeout=2.0, until=None):
    return c.events(timeout, until)


def t_subscribe(tap):
    d = tap.start_daemon(CFG, "subscribe")
    if not d:
        return
    sub, c = d.connect(), d.connect()
    res = sub.ok("subscribe", {"topics": ["state", "error", "operator"]})
    tap.check(res == {"subscribed": ["state", "error", "operator"]},
              "subscribe answers the topics", repr(res))
    err, _ = sub.call("subscribe", {"topics": ["nope"]})
    tap.check(is_error(err, "bad_request") and "nope" in err["message"],
              "an unknown topic is bad_request naming it", repr(err))
    for i in range(2):
        c.ok("report", {"key": "x", "outcome": "failure",
                        "error": {"class": "network.reset",
                                  "message": "ECONNRESET"},
                        "correlation_id": "ord-%d" % i,
                        "context": {"symbol": "BTCUSDT", "n": i}})
    got = events(sub, 1.0, lambda e: e.get("type") == "transition")
    errs = [e for e in got if e["topic"] == "error"]
    tr = [e for e in got if e.get("type") == "transition"]
    tap.check(len(errs) == 2 and errs[0]["class"] == "network.reset" and
              errs[0]["severity"] == "medium" and
              errs[0]["source"] == "report" and
              errs[0]["message"] == "ECONNRESET" and
              errs[1]["correlation_id"] == "ord-1" and
              errs[1].get("context") == {"symbol": "BTCUSDT", "n": 1},
              "each failure is an error event with class, severity, "
              "message, correlation id, context and source", repr(errs))
    tap.check(len(tr) == 1 and tr[0]["key"] == "x" and
              tr[0]["from"] == "closed" and tr[0]["to"] == "open" and
              tr[0]["cause"] == "failures" and tr[0]["origin"] == "local" and
              isinstance(tr[0]["ts"], int) and
              abs(tr[0]["ts"] / 1000 - time.time()) < 60,
              "closed -> open (failures) with a wall-clock ts", repr(tr))
    # Nobody looks at x: the tick must announce half-open by itself.
    got = events(sub, 2.0, lambda e: e.get("type") == "transition")
    tr = [e for e in got if e.get("type") == "transition"]
    tap.check(len(tr) == 1 and tr[0]["from"] == "open" and
              tr[0]["to"] == "half_open" and
              tr[0]["cause"] == "open_time_over",
              "open -> half_open (open_time_over) arrives unasked",
              repr(got))
    p = c.ok("acquire", {"key": "x"})
    c.ok("report", {"key": "x", "permit": p["permit"], "outcome": "success"})
    got = events(sub, 1.0, lambda e: e.get("type") == "transition")
    tr = [e for e in got if e.get("type") == "transition"]
    tap.check(len(tr) == 1 and tr[0]["to"] == "closed" and
              tr[0]["cause"] == "probe_success",
              "half_open -> closed (probe_success)", repr(got))
    tap.check(not [e for e in got if e["topic"] == "error"],
              "a success is not an error event", repr(got))
    c.ok("force", {"key": "x", "state": "open", "reason": "maint",
                   "ttl_ms": 200})
    got = events(sub, 1.5, lambda e: e.get("cause") == "force_expired")
    ops = [e for e in got if e["topic"] == "operator"]
    tr = [(e["from"], e["to"], e["cause"]) for e in got
          if e.get("type") == "transition"]
    tap.check(len(ops) == 1 and ops[0]["type"] == "force" and
              ops[0]["state"] == "open" and ops[0]["reason"] == "maint" and
              ops[0]["ttl_ms"] == 200 and isinstance(ops[0]["uid"], int),
              "force is an operator event with state, reason, ttl, uid",
              repr(ops))
    tap.check(tr == [("closed", "forced_open", "force"),
                     ("forced_open", "closed", "force_expired")],
              "forced_open (force), then closed (force_expired) at the TTL",
              repr(tr))
    res = sub.ok("unsubscribe", {"topics": ["error"]})
    tap.check(res == {"subscribed": ["state", "operator"]},
              "unsubscribe answers what remains", repr(res))
    c.ok("report", {"key": "y", "outcome": "failure"})
    got = events(sub, 0.5)
    tap.check(not [e for e in got if e["topic"] == "error"],
              "no error events after unsubscribing them", repr(got))
    tap.stop_daemon(d, "subscribe")


def t_slow_subscriber(tap):
    d = tap.start_daemon(dict(CFG, max_output_bytes=65536), "slowsub")
    if not d:
        return
    # A subscriber that never reads, with a tiny receive buffer.
    lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.connect(d.sock)
    lazy.sendall(rpcutil.request_bytes(1, "subscribe",
                                       {"topics": ["error"]}))
    time.sleep(0.2)
    c, w = d.connect(), d.connect()
    lat = []
    burst = b"".join(pack([0, 100 + i, "report",
                           [{"key": "k%d" % (i % 50), "outcome": "failure",
                             "error": {"class": "network",
                                       "message": "m" * 200}}]])
                     for i in range(200))
    for rnd in range(25):
        w.send(burst)
        for i in range(200):
            w.wait(100 + i)
        t0 = time.monotonic()
        c.ok("ping")
        lat.append(time.monotonic() - t0)
    lat.sort()
    p99 = lat[int(len(lat) * 0.99) - 1]
    dropped = False
    lazy.settimeout(0.5)
    try:
        # Drain what it has: the daemon must have closed it (EOF).
        while True:
            data = lazy.recv(1 << 20)
            if not data:
                dropped = True
                break
    except (socket.timeout, OSError):
        pass
    tap.check(dropped, "a subscriber that never reads is dropped "
              "(5,000 error events, 64 KiB bound)")
    tap.check(p99 < 0.05, "meanwhile another client's ping stays flat: "
              "p99 %.2f ms" % (p99 * 1000), repr(lat[-5:]))
    text = c.ok("metrics")["text"]
    fams = promcheck.parse(text)
    drops = [v for (n, l, v) in fams["resild_bound_hits_total"].samples
             if l.get("bound") == "subscriber_dropped"]
    tap.check(drops == [1], "metrics count the dropped subscriber",
              repr(drops))
    tap.stop_daemon(d, "slowsub")


def t_health(tap):
    d = tap.start_daemon(CFG, "health")
    if not d:
        return
    c = d.connect()
    h = c.ok("health")
    tap.check(h["overall"] == "healthy" and h["services"] == {} and
              h["open"] == [] and h["recent_errors"] == 0 and
              h["components"] == {},
              "a fresh daemon is healthy", repr(h))
    c.ok("acquire", {"key": "crit"})
    h = c.ok("health")
    tap.check(h["overall"] == "healthy" and
              h["services"] == {"crit": "operational"},
              "a critical key is listed while operational", repr(h))
    for _ in range(2):
        c.ok("report", {"key": "a.b", "outcome": "failure"})
    h = c.ok("health")
    tap.check(h["overall"] == "degraded" and
              h["services"].get("a.b") == "unavailable" and
              h["open"] == ["a.b"] and h["recent_errors"] == 2,
              "an open key: degraded, listed unavailable and open",
              repr(h))
    for _ in range(2):
        c.ok("report", {"key": "crit", "outcome": "failure"})
    h = c.ok("health")
    tap.check(h["overall"] == "unhealthy" and
              h["services"].get("crit") == "unavailable" and
              sorted(h["open"]) == ["a.b", "crit"],
              "a critical key unavailable: unhealthy", repr(h))
    time.sleep(0.45)  # open_ms 300: both half-open now
    h = c.ok("health")
    tap.check(h["overall"] == "degraded" and
              h["services"].get("crit") == "degraded" and h["open"] == [],
              "half-open: degraded, nothing open", repr(h))
    c.ok("reset", {"key": "crit"})
    c.ok("reset", {"key": "a.b"})
    h = c.ok("health")
    tap.check(h["overall"] == "healthy" and
              h["services"] == {"crit": "operational"},
              "after resets: healthy again", repr(h))
    tap.stop_daemon(d, "health")


def t_heartbeat(tap):
    d = tap.start_daemon(CFG, "heartbeat")
    if not d:
        return
    sub, c = d.connect(), d.connect()
    sub.ok("subscribe", {"topics": ["state"]})
    res = c.ok("heartbeat", {"key": "feed", "latency_ms": 3})
    tap.check(res == {"state": "closed", "heartbeat": "ok"},
              "heartbeat answers state", repr(res))
    res = c.ok("acquire", {"key": "feed"})
    tap.check(res["allow"], "a beating feed is allowed", repr(res))
    c.ok("report", {"key": "feed", "permit": res["permit"],
                    "outcome": "success"})
    got = events(sub, 1.5, lambda e: e.get("type") == "heartbeat_lost")
    lost = [e for e in got if e.get("type") == "heartbeat_lost"]
    tap.check(len(lost) == 1 and lost[0]["key"] == "feed" and
              lost[0]["silent_ms"] > 200,
              "silence past timeout_ms: one heartbeat_lost event",
              repr(got))
    res = c.ok("acquire", {"key": "feed"})
    tap.check(not res["allow"] and res["reason"] == "heartbeat_lost",
              "acquire is denied heartbeat_lost", repr(res))
    h = c.ok("health")
    tap.check(h["services"].get("feed") == "unavailable" and
              h["overall"] == "degraded",
              "health shows the feed unavailable", repr(h))
    c.ok("heartbeat", {"key": "feed"})
    got = events(sub, 1.0, lambda e: e.get("type") == "heartbeat_restored")
    tap.check([e["type"] for e in got
               if e["type"].startswith("heartbeat")] ==
              ["heartbeat_restored"],
              "the next beat restores it, one event", repr(got))
    res = c.ok("acquire", {"key": "feed"})
    tap.check(res["allow"], "and acquire passes again", repr(res))
    err, _ = c.call("heartbeat", {"key": "feed", "latency": 3})
    tap.check(is_error(err, "bad_request"), "heartbeat: unknown argument "
              "is bad_request", repr(err))
    tap.stop_daemon(d, "heartbeat")


def t_metrics(tap):
    d = tap.start_daemon(CFG, "metrics")
    if not d:
        return
    c = d.connect()
    p = c.ok("acquire", {"key": "lim"})
    c.ok("report", {"key": "lim", "permit": p["permit"], "outcome": "success",
                    "latency_ms": 42})
    for _ in range(2):
        c.ok("report", {"key": "bad.k",
                        "outcome": "failure",
                        "error": {"class": "network.reset"}})
    c.send(pack([2, "nvim_set_client_info", []]))
    text = c.ok("metrics")["text"]
    c.ok("report", {"key": "lim", "outcome": "failure"})
    again = c.ok("metrics")["text"]
    tap.check(again == text, "a second page within a second is the same "
              "page (rendered at most once a second)")
    errs = promcheck.check(text)
    tap.check(errs == [], "the page passes the exposition-format checker",
              "\n".join(errs[:10]))
    try:
        fams = promcheck.parse(text)
    except Exception as e:
        tap.check(False, "the page parses", repr(e))
        return

    def sample(name, **labels):
        for fam in fams.values():
            for (n, l, v) in fam.samples:
                if n == name and all(l.get(k) == v2
                                     for k, v2 in labels.items()):
                    return v
        return None

    tap.check(sample("resild_decisions_total", key="lim", result="allow",
                     reason="ok") == 1,
              "decisions by key, result, reason")
    tap.check(sample("resild_breaker_state", key="bad.k", state="open") == 1
              and sample("resild_breaker_state", key="bad.k",
                         state="closed") == 0,
              "breaker state as a one-hot gauge per key")
    tap.check(sample("resild_breaker_opens_total", key="bad.k") == 1,
              "opens per key")
    tap.check(sample("resild_errors_total", **{"class": "network.reset",
                                               "severity": "medium"}) == 2,
              "errors by class and severity")
    tap.check(sample("resild_report_latency_ms_bucket", key="lim",
                     le="50") == 1 and
              sample("resild_report_latency_ms_bucket", key="lim",
                     le="25") == 0 and
              sample("resild_report_latency_ms_sum", key="lim") == 42,
              "the latency histogram puts 42 ms in the 50 ms bucket")
    tap.check(sample("resild_limiter_available", key="lim") is not None and
              sample("resild_bulkhead_in_use", key="lim") == 0,
              "limiter and bulkhead gauges")
    tap.check(sample("resild_notifications_ignored_total") == 1 and
              sample("resild_connections") == 1 and
              sample("resild_uptime_seconds") >= 0,
              "host-wide counters and gauges")
    tap.stop_daemon(d, "metrics")


def t_metrics_cap(tap):
    d = tap.start_daemon(dict(CFG, max_keys=5000), "metrics-cap")
    if not d:
        return
    c = d.connect()
    c.send(b"".join(pack([0, 10 + i, "acquire", [{"key": "m%04d" % i}]])
                    for i in range(1200)))
    for i in range(1200):
        c.wait(10 + i)
    fams = promcheck.parse(c.ok("metrics")["text"])
    keys = {l["key"] for (n, l, v) in fams["resild_breaker_state"].samples}
    other = [v for (n, l, v) in fams["resild_breaker_state"].samples
             if l["key"] == "_other" and l["state"] == "closed"]
    tap.check(len(keys) == 1001 and "_other" in keys and other == [200],
              "1200 keys: 1000 with their own series, 200 summed under "
              "_other", "%d keys, other %r" % (len(keys), other))
    tap.stop_daemon(d, "metrics-cap")


def t_http_metrics(tap):
    import shutil
    import subprocess
    import tempfile
    tmp = tempfile.mkdtemp(prefix="resild-scrape.")
    path = os.path.join(tmp, "metrics.sock")
    d = tap.start_daemon(dict(CFG, metrics={"listen": path}), "http")
    if not d:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    c = d.connect()
    c.ok("acquire", {"key": "lim"})
    if not shutil.which("curl"):
        tap.check(True, "# SKIP curl not installed (scripts/deps.sh "
                  "installs it)")
    else:
        out = subprocess.run(["curl", "-s", "-i", "--max-time", "5",
                              "--unix-socket", path,
                              "http://resild/metrics"],
                             capture_output=True, timeout=10)
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        text = body.decode("utf-8", "replace")
        tap.check(out.returncode == 0 and head.startswith(b"HTTP/1.1 200")
                  and b"text/plain; version=0.0.4" in head,
                  "curl GET /metrics on metrics.listen: 200, text/plain "
                  "version 0.0.4", repr(head[:200]))
        tap.check(promcheck.check(text) == [] and
                  "resild_decisions_total{" in text,
                  "the page passes the exposition-format checker",
                  "\n".join(promcheck.check(text)[:5]))
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w",
                              "%{http_code}", "--max-time", "5",
                              "--unix-socket", path, "http://resild/x"],
                             capture_output=True, timeout=10)
        tap.check(out.stdout == b"404", "another path is 404",
                  repr(out.stdout))
    tap.stop_daemon(d, "http")
    tap.check(not os.path.exists(path),
              "the listener's socket is removed at exit")
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    tap = rpcutil.Tap()
    for name, fn in (("subscribe", t_subscribe),
                     ("slow subscriber", t_slow_subscriber),
                     ("health", t_health),
                     ("heartbeat", t_heartbeat),
                     ("metrics", t_metrics),
                     ("metrics cap", t_metrics_cap),
                     ("metrics over HTTP", t_http_metrics)):
        tap.run(name, fn, tap)
    tap.finish()


if __name__ == "__main__":
    main()
