#!/usr/bin/python3
"""bench_redis.py - `make bench-more`, last part: decision latency with Redis
healthy, slow and stopped, side by side in one run (issue 13).

A real redis-server on a temporary Unix socket and a real resild in shared
mode whose key bench.seq is global, with a limiter (so every decision
spends leased tokens and the daemon keeps leasing from Redis) and a shared
breaker.  The C bench (`build/tests/bench pairs SOCKET N`) runs acquire +
report pairs through libresil and prints every call's latency; this script
merges them per condition and ranks them.

Conditions, interleaved in ROUNDS rounds so noise on this shared machine
lands on all three:
  healthy   Redis answers at once.
  slow      another client keeps Redis busy with DEBUG SLEEP 0.2 in a loop:
            every command the daemon sends waits up to 200 ms.
  stopped   redis-server is SIGSTOPped: nothing is answered; the daemon's
            commands time out (command_timeout_ms), it reconnects, falls
            back to the local share.
It prints p50/p99/p99.9/max per condition and each one's p99 over the
healthy p99: no decision waits on Redis, so they should match within
noise.  Never asserted (a benchmark, not a test); exit 1 only when
something broke.

BENCH_REDIS_N=pairs per condition (default 50000), BENCH_REDIS_ROUNDS
(default 10); the daemon and the bench run pinned to one CPU, Redis and
this script to another, unless BENCH_REDIS_PIN=0 (or one CPU only).
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
import redisutil  # noqa: E402

N = int(os.environ.get("BENCH_REDIS_N", "50000"))
ROUNDS = int(os.environ.get("BENCH_REDIS_ROUNDS", "10"))
PIN = os.environ.get("BENCH_REDIS_PIN", "1") != "0"


def pct(v, per_mille):
    if not v:
        return 0.0
    i = max(0, min(len(v) - 1, (len(v) * per_mille + 999) // 1000 - 1))
    return v[i] / 1000.0


def redis_up(c):
    _, h = c.call("health")
    comp = (h or {}).get("components", {}).get("redis", {})
    return comp.get("ok") is True


def wait_for(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Sleeper(threading.Thread):
    """Keeps Redis busy: DEBUG SLEEP 0.2 back to back until stopped."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock = sock
        self.stop_ev = threading.Event()

    def run(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        while not self.stop_ev.is_set():
            s.sendall(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n0.2\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                buf += s.recv(64)
        s.close()


def main():
    bench = os.path.join(rpcutil.build_dir(), "tests", "bench")
    # The daemon and the bench on one CPU, Redis and this script (its
    # DEBUG SLEEP thread, its health polls) on another: where the scheduler
    # puts the processes moves p50 by 5-10x (see bench.c), and Redis
    # sharing the daemon's CPU would measure the scheduler, not whether a
    # decision waits on Redis.
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(
        os, "sched_setaffinity") else []
    pin = PIN and len(cpus) >= 2
    if pin:
        os.sched_setaffinity(0, {cpus[1]})  # redis-server inherits it

    def on_cpu0():
        if pin:
            os.sched_setaffinity(0, {cpus[0]})
    tmp = tempfile.mkdtemp(prefix="bench-redis.")
    red = redisutil.Redis("bench-redis",
                          extra=["--enable-debug-command", "yes"])
    if not red.start():
        print("bench_redis: redis-server did not start", file=sys.stderr)
        return 1
    cfg = {
        "snapshot": {"path": os.path.join(tmp, "state.snap")},
        "redis": {"mode": "shared",
                  "prefix": "bench:", "origin": "bench",
                  "url": red.url,
                  # short, so a stopped Redis times out and the daemon
                  # reconnects inside each measured phase; a small lease,
                  # so the key goes back to Redis every few ms
                  "command_timeout_ms": 150, "connect_timeout_ms": 150,
                  "lease_ms": 10},
        "policies": {"bench.*": {
            "scope": "global",
            "limiter": {"rate": 200000, "per": "second", "burst": 200000}}},
    }
    d = rpcutil.Daemon(cfg, "bench-redis")
    samples = {"healthy": [], "slow": [], "stopped": []}
    counters = {}
    ok = False
    try:
        if not d.start():
            pass
        elif pin:
            os.sched_setaffinity(d.pid, {cpus[0]})
        if not d.alive():
            print("bench_redis: resild did not start:\n" + d.log(),
                  file=sys.stderr)
            return 1
        c = d.connect()
        if not wait_for(lambda: redis_up(c), 10):
            print("bench_redis: resild never connected to Redis",
                  file=sys.stderr)
            return 1
        per = max(1, N // ROUNDS)
        for rnd in range(ROUNDS):
            for cond in ("healthy", "slow", "stopped"):
                sl = None
                if cond == "slow":
                    sl = Sleeper(red.sock)
                    sl.start()
                elif cond == "stopped":
                    red.pause()
                time.sleep(0.1)  # the condition is on before the clock
                out = subprocess.run([bench, "pairs", d.sock, str(per)],
                                     capture_output=True, text=True,
                                     timeout=300, preexec_fn=on_cpu0)
                if out.returncode != 0:
                    print("bench_redis: bench pairs failed (%s): %s"
                          % (cond, out.stderr), file=sys.stderr)
                    return 1
                samples[cond] += [int(x) for x in out.stdout.split()]
                if sl:
                    sl.stop_ev.set()
                    sl.join()
                elif cond == "stopped":
                    red.resume()
                if not wait_for(lambda: redis_up(c), 15):
                    print("bench_redis: Redis did not come back after %s"
                          % cond, file=sys.stderr)
                    return 1
        page = c.ok("metrics")
        if isinstance(page, dict):
            page = page.get("text", "")
        if isinstance(page, bytes):
            page = page.decode()
        for line in page.splitlines():
            if line.startswith("resild_redis_") and " " in line:
                k, v = line.split(" ", 1)
                counters[k] = v
        ok = True
    finally:
        d.stop()
        red.stop()
        red.cleanup()
    print("Decisions with Redis healthy, slow and stopped "
          "(acquire+report through libresil, %d rounds interleaved; us):"
          % ROUNDS)
    print("%-10s %8s %9s %9s %9s %9s %12s" % (
        "redis", "calls", "p50", "p99", "p99.9", "max", "p99/healthy"))
    base = None
    for cond in ("healthy", "slow", "stopped"):
        v = sorted(samples[cond])
        p99 = pct(v, 990)
        if base is None:
            base = p99 or 1.0
        print("%-10s %8d %9.1f %9.1f %9.1f %9.1f %11.2fx" % (
            cond, len(v), pct(v, 500), p99, pct(v, 999),
            v[-1] / 1000.0 if v else 0, p99 / base))
    keep = ("resild_redis_lease_requests_total", "resild_redis_timeouts_total",
            "resild_redis_disconnects_total", "resild_redis_connects_total",
            "resild_redis_lease_failures_total")
    print("daemon's Redis counters over the run: " + ", ".join(
        "%s %s" % (k[len("resild_redis_"):], counters.get(k, "?"))
        for k in keep))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
