#!/usr/bin/python3
"""bench.py - Python client figures beside libresil's (issue 12).

Starts build/resild (tests/rpcutil.Daemon) and prints, never asserts:
  - Client: acquire round trip p50/p99 (one thread, one connection), and
    acquire+report (report as a notification) per second;
  - AsyncClient: decisions per second on one connection, CONCURRENCY
    coroutines at a time (pipelined), on one core.
Compare with `make bench-more` (libresil's "acquire" row).  BENCH_N sets the
count (default 20000).

    /usr/bin/python3 client/python/bench.py
"""

import asyncio
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import resil  # noqa: E402
import rpcutil  # noqa: E402

N = int(os.environ.get("BENCH_N", "20000"))
CONCURRENCY = 1000
CFG = {"policies": {"*": {"breaker": {"failure_threshold": 1000000}}}}


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def sync_bench(path):
    c = resil.Client(path, timeout_ms=1000)
    for _ in range(1000):  # warm up
        d = c.acquire("bench.sync")
        c.report("bench.sync", d.permit, "success", 1, answer=False)
    lat = []
    t0 = time.perf_counter()
    for _ in range(N):
        t = time.perf_counter()
        d = c.acquire("bench.sync")
        lat.append(time.perf_counter() - t)
        if not d.allow or d.fallback:
            raise SystemExit("bench: acquire: %r" % (d,))
        c.report("bench.sync", d.permit, "success", 1, answer=False)
    el = time.perf_counter() - t0
    print("%-34s %8d %10.0f/s  p50 %6.1f us  p99 %6.1f us"
          % ("Client acquire (+report notif.)", N, N / el,
             pct(lat, 0.5) * 1e6, pct(lat, 0.99) * 1e6))


async def async_bench(path):
    ac = resil.AsyncClient(path, timeout_ms=5000)
    await ac.ping()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i):
        async with sem:
            d = await ac.acquire("bench.k%d" % (i % 64))
            if not d.allow or d.fallback:
                raise SystemExit("bench: async acquire: %r" % (d,))
            await ac.report("bench.k%d" % (i % 64), d.permit, "success", 1)
    await asyncio.gather(*[one(i) for i in range(2000)])  # warm up
    t0 = time.perf_counter()
    for base in range(0, N, CONCURRENCY):
        await asyncio.gather(*[one(i) for i in range(base, min(N, base +
                                                               CONCURRENCY))])
    el = time.perf_counter() - t0
    await ac.ping()
    await ac.close()
    print("%-34s %8d %10.0f/s  (%d in flight, one connection)"
          % ("AsyncClient acquire+report", N, N / el, CONCURRENCY))


def main():
    d = rpcutil.Daemon(CFG, "pybench")
    if not d.start():
        print(d.log())
        raise SystemExit("bench: resild did not start")
    try:
        sync_bench(d.sock)
        asyncio.run(async_bench(d.sock))
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
