#!/usr/bin/python3
"""bench_table.py - `make bench` (issue 14): resild beside Redis and a bare
socket, printed as one table from one run; figures only, never asserted.

What runs, all on this machine, each server on its own temporary Unix
socket (the binaries from $BUILD, default build/):

  table     at (c=1, P=1), (c=50, P=1) and (c=50, P=16) (c connections,
            each keeping P requests in flight), with tests/loadgen.c for
            every row, so only the server differs:
              resild acquire   one decision: `acquire` on a key with a
                               breaker and a limiter, its `report` sent as
                               a notification with the slot's next acquire
              Redis INCR       the cheapest Redis command
              Redis EVALSHA    a GCRA limiter in Lua (GCRA_LUA below): what
                               a user would otherwise write
              echo             `loadgen serve-echo`: a single-threaded
                               epoll server that echoes bytes of the size
                               of the acquire request: the floor
            plus `redis-benchmark -t incr` at the same setting (p99.9 is
            not in its --csv).  The rows of a setting run interleaved in
            ROUNDS rounds, each after a tenth of its count as warm-up, so
            noise lands on all of them; latencies are merged over the
            rounds (nearest rank over every sample) and req/s is all
            requests over all timed seconds.  The ratio columns divide
            resild's req/s by the row's, and resild's p99 by the row's.
  pinned    tests/bench.c (libresil acquire+report one call at a time, and
            pipelined acquires in batches of 64) with everything on one
            CPU (taskset -c 0), beside its echo child.
  memory    a daemon whose `m.*` keys have a breaker and a limiter, keys
            created by traffic (acquire, then report success with
            latency_ms) with the pipelined load generator: VmRSS empty, at
            100,000 and at 1,000,000 keys; beside a redis-server holding as
            many hashes of 5 fields (state, failures, tokens, updated_ms,
            opened_ms), loaded pipelined (HSET).
  snapshot  tests/bench_snapshot.c: write and restore at 100k and 1M keys.
  callgrind instructions (Ir) per acquire+report pair (libresil, one call
            at a time: `bench pairs`) of a resild under valgrind
            --tool=callgrind, per acquire with its report as a
            notification (loadgen c=1 P=1), and per INCR and per GCRA
            EVALSHA of a redis-server under it (loadgen c=1 P=1):
            (Ir after N2 - Ir after N1) / (N2 - N1) between two runs, so
            start-up and exit cancel out.  Deterministic where wall-clock
            figures are not.

Environment: BENCH_ROUNDS (5), BENCH_SCALE (1.0: multiplies every count),
BENCH_SKIP (comma-separated sections to leave out: table, pinned, memory,
snapshot, callgrind; callgrind is skipped with a note when valgrind is not
installed: it is not among scripts/deps.sh's packages).  Exit 1 when something broke (a server did not
start, a request failed or was denied, a tool is missing), else 0.
"""
import array
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redisutil  # noqa: E402
import rpcutil  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))

# (c, P, requests per row per round): about half a second of resild each.
SETTINGS = [(1, 1, 40000), (50, 1, 60000), (50, 16, 200000)]
MEM_KEYS = (100000, 1000000)
CG_PAIRS = (2000, 12000)  # callgrind: N1, N2

# The resild rows' key: a breaker (every key has one) and a limiter that
# never denies, so a decision does the GCRA work the Lua script does.
TABLE_CFG = {"policies": {"t.*": {"limiter": {
    "rate": 1000000000, "per": "second", "burst": 1000000000}}}}
MEM_CFG = {"max_keys": 1100000, "max_memory_mb": 4096,
           "policies": {"m.*": {
               "limiter": {"rate": 1000, "per": "second"},
               "breaker": {"failure_threshold": 5}}}}

# GCRA as a Redis user writes it: KEYS[1] the bucket's theoretical arrival
# time (us), ARGV[1] the emission interval (us per request), ARGV[2] the
# burst tolerance (us).  1 = allowed, 0 = denied.  The bench passes 1 us
# and 1000 s: it never denies.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
if new_tat - now > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
           'PX', math.ceil(tonumber(ARGV[2]) / 1000) + 1)
return 1
"""


class Broke(Exception):
    """Something failed: the bench exits 1 with this message."""


def build(*p):
    return os.path.join(rpcutil.build_dir(), *p)


def pct(v, per_mille):
    """Nearest rank of sorted v (ns), in us."""
    if not v:
        return 0.0
    i = max(0, min(len(v) - 1, (len(v) * per_mille + 999) // 1000 - 1))
    return v[i] / 1000.0


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(argv, timeout=300, **kw):
    out = subprocess.run(argv, capture_output=True, text=True,
                         timeout=timeout, **kw)
    if out.returncode != 0:
        raise Broke("%s exited %d:\n%s%s" % (" ".join(argv), out.returncode,
                                             out.stdout[-2000:],
                                             out.stderr[-2000:]))
    return out.stdout


def loadgen(proto, sock, c, p, n, tmp, extra=()):
    """One loadgen run; returns (n, secs, sorted samples in ns)."""
    path = os.path.join(tmp, "samples")
    out = run([build("tests", "loadgen"), proto, sock, "-c", str(c),
               "-P", str(p), "-n", str(n), "-q", "-o", path] + list(extra))
    m = re.search(r"secs=([0-9.]+)", out)
    v = array.array("Q")
    with open(path, "rb") as f:
        v.frombytes(f.read())
    return n, float(m.group(1)), v


def redis_benchmark(sock, c, p, n):
    """redis-benchmark INCR --csv: (rps, p50 us, p99 us)."""
    out = run(["redis-benchmark", "-s", sock, "-c", str(c), "-P", str(p),
               "-n", str(n), "-t", "incr", "--csv"])
    lines = [x for x in out.splitlines() if x.startswith('"INCR"')]
    if not lines:
        raise Broke("redis-benchmark: no INCR line in:\n" + out)
    f = [float(x.strip('"')) for x in lines[0].split(",")[1:]]
    # rps, avg, min, p50, p95, p99, max (ms)
    return f[0], f[3] * 1000, f[5] * 1000


class Row:
    def __init__(self, name):
        self.name = name
        self.n = 0
        self.secs = 0.0
        self.samples = array.array("Q")
        self.rb = []  # redis-benchmark: (rps, p50, p99) per round

    def add(self, res):
        n, secs, v = res
        self.n += n
        self.secs += secs
        self.samples.extend(v)

    def figures(self):
        """(rps, p50, p99, p99.9 or None) in req/s and us."""
        if self.rb:
            rps = len(self.rb) / sum(1.0 / r[0] for r in self.rb)
            med = sorted(self.rb, key=lambda r: r[2])[len(self.rb) // 2]
            return rps, sorted(r[1] for r in self.rb)[len(self.rb) // 2], \
                med[2], None
        v = sorted(self.samples)
        return self.n / self.secs, pct(v, 500), pct(v, 990), pct(v, 999)


def section_table(tmp, rsock, redsock, echosock, sha):
    print("One table: %d interleaved rounds per setting; every row but "
          "redis-benchmark's by tests/loadgen.c; latencies in us\n"
          "(redis-benchmark: p50 and p99 of its median round, no p99.9 in "
          "its --csv); ratios: resild's req/s / the row's, resild's p99 / "
          "the row's" % ROUNDS)
    hdr = "%-8s %-30s %10s %8s %8s %8s %9s %9s" % (
        "c,P", "row", "req/s", "p50", "p99", "p99.9", "rps ratio",
        "p99 ratio")
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for c, p, n in SETTINGS:
        n = max(1000, int(n * SCALE))
        rows = [Row("resild acquire+report"), Row("Redis INCR"),
                Row("Redis INCR (redis-benchmark)"),
                Row("Redis EVALSHA GCRA"), Row("echo (AF_UNIX ping-pong)")]
        for _ in range(ROUNDS):
            rows[0].add(loadgen("resild", rsock, c, p, n, tmp,
                                ["-k", "t.k"]))
            rows[1].add(loadgen("incr", redsock, c, p, n, tmp,
                                ["-k", "t.k"]))
            rows[2].rb.append(redis_benchmark(redsock, c, p, n))
            rows[3].add(loadgen("gcra", redsock, c, p, n, tmp,
                                ["-k", "g.k", "-S", sha]))
            rows[4].add(loadgen("echo", echosock, c, p, n, tmp))
        base = rows[0].figures()
        for i, r in enumerate(rows):
            f = r.figures()
            summary[(c, p, r.name)] = f
            ratio = "" if i == 0 else "%8.2fx %8.2fx" % (
                base[0] / f[0], base[2] / f[2])
            print("%-8s %-30s %10.0f %8.1f %8.1f %8s %s" % (
                "%d,%d" % (c, p), r.name, f[0], f[1], f[2],
                "-" if f[3] is None else "%.1f" % f[3], ratio))
    return summary


def section_pinned():
    """tests/bench.c on CPU 0 (children inherit it): its table, and
    (libresil p50 / echo p50, pipelined acquire / echo throughput)."""
    env = dict(os.environ, BENCH_FLOOD_S="0")
    n = str(max(1000, int(20000 * SCALE)))
    out = run(["taskset", "-c", "0", build("tests", "bench"), n], env=env)
    print("\nlibresil on one CPU (taskset -c 0 %s %s; all processes on "
          "CPU 0):" % (build("tests", "bench"), n))
    for line in out.splitlines():
        print("  " + line)
    m = re.search(r"acquire\|report call ([0-9.]+)x.*throughput ([0-9.]+)x",
                  out)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def section_memory(tmp):
    print("\nMemory (VmRSS), keys created by traffic: resild `m.*` keys "
          "with a breaker and a limiter (acquire, report success with "
          "latency_ms, c=4 P=64); Redis: HSET of 5 fields per key:")
    d = rpcutil.Daemon(MEM_CFG, "bench-mem")
    red = redisutil.Redis("bench-mem")
    res = {}
    try:
        if not d.start():
            raise Broke("resild (memory) did not start:\n" + d.log())
        if not red.start():
            raise Broke("redis-server (memory) did not start")
        res[0] = (rss_kib(d.pid), rss_kib(red.pid))
        done = 0
        for k in MEM_KEYS:
            n = k - done
            run([build("tests", "loadgen"), "resild", d.sock, "-K", "m.",
                 "-s", str(done), "-n", str(n), "-w", "0", "-c", "4",
                 "-P", "64", "-q"])
            run([build("tests", "loadgen"), "hset", red.sock, "-K", "h:",
                 "-s", str(done), "-n", str(n), "-w", "0", "-c", "4",
                 "-P", "64", "-q"])
            done = k
            res[k] = (rss_kib(d.pid), rss_kib(red.pid))
        dbsize = redisutil.check(red.sock, "DBSIZE")
        if dbsize != MEM_KEYS[-1]:
            raise Broke("redis holds %r keys" % dbsize)
    finally:
        st = d.stop()
        red.stop()
        red.cleanup()
        d.cleanup()
    if st != 0:
        raise Broke("resild (memory) exited %r" % st)
    print("%-10s %14s %14s %10s" % ("keys", "resild MiB", "Redis MiB",
                                    "ratio"))
    for k in (0,) + MEM_KEYS:
        a, b = res[k]
        print("%-10d %14.1f %14.1f %9.2fx" % (k, a / 1024, b / 1024,
                                              a / b))
    return res


def section_snapshot():
    out = run([build("tests", "bench_snapshot")])
    print("\nSnapshot (tests/bench_snapshot.c, in process):")
    for line in out.splitlines():
        print("  " + line)
    # One block a state: "N small keys: ..." (or "window"), then lines
    # with the write and the restore.
    m = re.findall(r"(\d+) (small|window)\s+keys:.*?write on the pool\s+"
                   r"([0-9.]+) ms.*?restore\s+([0-9.]+) ms", out, re.S)
    return {int(k): (float(w), float(r)) for k, kind, w, r in m
            if kind == "small"}


def cg_total(path):
    """The Ir total of a callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise Broke("no totals in " + path)


def cg_resild(tmp, n, libresil):
    """Ir of a resild run that served n decisions: acquire+report pairs
    through libresil (`bench pairs`), or loadgen's acquires at c=1 P=1
    with their reports as notifications."""
    out = os.path.join(tmp, "cg.resild.%d.%d" % (n, libresil))
    cfg = os.path.join(tmp, "cg.json")
    sock = os.path.join(tmp, "cg.sock")
    with open(cfg, "w") as f:
        json.dump(TABLE_CFG, f)
    with open(os.path.join(tmp, "cg.log"), "ab") as log:
        p = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
             build("resild"), "-s", sock, "-c", cfg],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            preexec_fn=redisutil._pdeathsig)
    try:
        if not redisutil.poll(lambda: sock_ready(p, sock), 60)[0]:
            raise Broke("resild under valgrind did not start")
        if libresil:
            run([build("tests", "bench"), "pairs", sock, str(n)])
        else:
            run([build("tests", "loadgen"), "resild", sock, "-n", str(n),
                 "-w", "0", "-q", "-k", "t.k"])
    finally:
        p.terminate()
        p.wait(60)
    if p.returncode != 0:
        raise Broke("resild under valgrind exited %d" % p.returncode)
    return cg_total(out)


def sock_ready(proc, sock):
    """sock accepts a connection (poll() retries); raises if proc died."""
    if proc.poll() is not None:
        raise Broke("exited %r before listening" % proc.returncode)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock)
        return True
    finally:
        s.close()


def cg_redis(tmp, n, proto):
    """Ir of a redis-server run that served n INCR or GCRA EVALSHA."""
    out = os.path.join(tmp, "cg.redis.%d.%s" % (n, proto))
    red = redisutil.Redis("bench-cg")
    argv = red.argv
    red.argv = lambda: ["valgrind", "--tool=callgrind",
                        "--callgrind-out-file=" + out] + argv()
    try:
        if not red.start():
            raise Broke("redis-server under valgrind did not start")
        extra = []
        if proto == "gcra":
            extra = ["-S", redisutil.check(red.sock, "SCRIPT", "LOAD",
                                           GCRA_LUA).decode()]
        run([build("tests", "loadgen"), proto, red.sock, "-n", str(n),
             "-w", "0", "-q", "-k", "t.k"] + extra)
    finally:
        if red.proc:
            red.proc.terminate()
            red.proc.wait(60)
        red.cleanup()
    return cg_total(out)


def section_callgrind(tmp):
    n1, n2 = CG_PAIRS
    pair = (cg_resild(tmp, n2, 1) - cg_resild(tmp, n1, 1)) / (n2 - n1)
    notif = (cg_resild(tmp, n2, 0) - cg_resild(tmp, n1, 0)) / (n2 - n1)
    incr = (cg_redis(tmp, n2, "incr") - cg_redis(tmp, n1, "incr")) / (n2 - n1)
    gcra = (cg_redis(tmp, n2, "gcra") - cg_redis(tmp, n1, "gcra")) / (n2 - n1)
    print("\nInstructions in the server per request, ratio to Redis INCR (valgrind --tool=callgrind, "
          "(Ir at %d - Ir at %d) / %d; the kernel's share not counted):"
          % (n2, n1, n2 - n1))
    print("  %-62s %7.0f Ir  %5.2fx" % (
        "resild acquire+report pair (libresil: two requests)", pair,
        pair / incr))
    print("  %-62s %7.0f Ir  %5.2fx" % (
        "resild acquire + report notification (loadgen c=1 P=1)", notif,
        notif / incr))
    print("  %-62s %7.0f Ir  %5.2fx" % (
        "redis-server INCR (loadgen c=1 P=1)", incr, 1.0))
    print("  %-62s %7.0f Ir  %5.2fx" % (
        "redis-server EVALSHA GCRA (loadgen c=1 P=1)", gcra, gcra / incr))
    return pair, incr


def main():
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bench-table.")
    d = rpcutil.Daemon(TABLE_CFG, "bench-table")
    red = redisutil.Redis("bench-table")
    echo = None
    summary, pinned, mem, snap, cg = {}, (None, None), {}, {}, None
    ok = False
    try:
        for tool in ("redis-benchmark", "taskset"):  # redis-tools, util-linux
            if not shutil.which(tool):
                raise Broke("%s is not installed (make deps)" % tool)
        if "table" not in SKIP:
            echosock = os.path.join(tmp, "echo.sock")
            echo = subprocess.Popen([build("tests", "loadgen"),
                                     "serve-echo", echosock],
                                    preexec_fn=redisutil._pdeathsig)
            if not d.start():
                raise Broke("resild did not start:\n" + d.log())
            if not red.start():
                raise Broke("redis-server did not start")
            if not redisutil.poll(lambda: os.path.exists(echosock), 10)[0]:
                raise Broke("the echo server did not start")
            sha = redisutil.check(red.sock, "SCRIPT", "LOAD",
                                  GCRA_LUA).decode()
            summary = section_table(tmp, d.sock, red.sock, echosock, sha)
            st = d.stop()
            if st != 0:
                raise Broke("resild exited %r:\n%s" % (st, d.log()))
            red.stop()
            echo.kill()
            echo.wait()
            echo = None
        if "pinned" not in SKIP:
            pinned = section_pinned()
        if "memory" not in SKIP:
            mem = section_memory(tmp)
        if "snapshot" not in SKIP:
            snap = section_snapshot()
        if "callgrind" not in SKIP and not shutil.which("valgrind"):
            print("\nInstructions: skipped, valgrind is not installed "
                  "(apt-get install valgrind)")
        elif "callgrind" not in SKIP:
            cg = section_callgrind(tmp)
        ok = True
    except (Broke, subprocess.TimeoutExpired) as e:
        print("bench_table: %s" % e, file=sys.stderr)
    finally:
        if echo:
            echo.kill()
            echo.wait()
        d.stop()
        d.cleanup()
        red.stop()
        red.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        return 1
    targets(summary, pinned, mem, snap, cg)
    print("\nbench_table: %.0f s" % (time.monotonic() - t0))
    return 0


def targets(summary, pinned, mem, snap, cg):
    """Issue 14's targets beside the figures of this run (never asserted)."""
    print("\nTargets (issue 14), this run's figures:")

    def line(what, fig, goal, met):
        print("  %-58s %-14s goal %-8s %s" % (what, fig, goal,
                                             "met" if met else "NOT met"))
    for c, p, _ in SETTINGS:
        a = summary.get((c, p, "resild acquire+report"))
        b = summary.get((c, p, "Redis INCR"))
        if a and b:
            line("decisions/s / Redis INCR req/s at c=%d P=%d" % (c, p),
                 "%.2fx" % (a[0] / b[0]), ">= 1.5x", a[0] / b[0] >= 1.5)
    a = summary.get((50, 1, "resild acquire+report"))
    b = summary.get((50, 1, "Redis INCR"))
    if a and b:
        line("p99 / Redis INCR p99 at c=50 P=1", "%.2fx" % (a[2] / b[2]),
             "<= 1.0x", a[2] / b[2] <= 1.0)
    if pinned[0] is not None:
        line("libresil round trip p50 / ping-pong p50, one CPU",
             "%.2fx" % pinned[0], "<= 1.3x", pinned[0] <= 1.3)
        line("pipelined acquire / pipelined echo throughput",
             "%.2fx" % pinned[1], ">= 0.6x", pinned[1] >= 0.6)
    if 1000000 in mem:
        mib = mem[1000000][0] / 1024
        line("RSS at 1M keys", "%.0f MiB" % mib, "<= 200", mib <= 200)
    if 100000 in mem:
        mib = mem[100000][0] / 1024
        line("RSS at 100k keys", "%.0f MiB" % mib, "<= 24", mib <= 24)
    if 1000000 in snap:
        s = snap[1000000][1] / 1000
        line("1M-key snapshot restored", "%.2f s" % s, "<= 2 s", s <= 2)
    if cg:
        r = cg[0] / cg[1]
        line("callgrind Ir per acquire+report / per Redis INCR",
             "%.2fx" % r, "<= 2x", r <= 2)


if __name__ == "__main__":
    sys.exit(main())
