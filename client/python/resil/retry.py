"""retry.py - retries under the daemon's advice, and heartbeats for feeds.

retrying(client, key, fn, *args, **kwargs) runs fn under key: acquire,
call, report.  On an exception the failure is reported with its attempt
number and the daemon answers whether to retry and after how long (SPEC
3, report: retry {retry, delay_ms, reason}).  It sleeps delay_ms and tries
again, and stops, re-raising the last error, when the advice is no retry
(permanent, reconcile, budget_exhausted, max_attempts, circuit_open), when
the daemon gives no advice (unreachable: no blind retries), or after
max_attempts.  A denied acquire raises its resil.Denied subclass (chained
to the last error, if any).

heartbeat_task(client, key, every_ms) beats for a feed: a thread for a
Client (returns a Heartbeat with stop()), an asyncio task for an
AsyncClient (cancel it to stop).  check, when given, is called before each
beat and the beat is skipped when it returns false (e.g. "a message came
in the last second"), so the daemon sees the feed's silence, not just the
process being alive.
"""

import asyncio
import inspect
import threading
import time

from ._common import denial
from .guard import classify_exception

_OPTS = ("cost", "priority", "wait_ms", "timeout_ms", "fail")


def _is_async(client):
    return inspect.iscoroutinefunction(client.acquire)


def _failure(client, key, d, start, exc, n, errors, classify, idempotent):
    return dict(key=key, permit=d.permit, outcome="failure",
                latency_ms=(time.monotonic() - start) * 1000.0,
                error=classify_exception(exc, errors, classify), attempt=n,
                idempotent=idempotent, answer=True)


def _advice(res, n, max_attempts):
    """Seconds to sleep before the next attempt, or None to stop."""
    adv = res.get("retry") if isinstance(res, dict) else None
    if not isinstance(adv, dict) or adv.get("retry") is not True or \
            n >= max_attempts:
        return None
    delay = adv.get("delay_ms")
    return (delay if isinstance(delay, int) and delay > 0 else 0) / 1000.0


def retrying(client, key, fn, *args, cost=1, priority="normal", wait_ms=0,
             timeout_ms=None, fail=None, errors=None, classify=None,
             idempotent=True, max_attempts=10, **kwargs):
    """Call fn(*args, **kwargs) under key with the daemon's retry advice;
    return its result or raise its last error.  With an AsyncClient it
    returns a coroutine (fn may be a coroutine function).  The keyword
    names above are this function's own, not fn's."""
    acq = dict(cost=cost, priority=priority, wait_ms=wait_ms,
               timeout_ms=timeout_ms, fail=fail)
    common = (errors, classify, idempotent)
    if _is_async(client):
        return _aretrying(client, key, fn, args, kwargs, acq, common,
                          max_attempts)
    last = None
    for n in range(1, max_attempts + 1):
        d = client.acquire(key, **acq)
        if not d.allow:
            raise denial(key, d) from last
        start = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            last = e
            res = client.report(**_failure(client, key, d, start, e, n,
                                           *common))
            delay = _advice(res, n, max_attempts)
            if delay is None:
                raise
            time.sleep(delay)
            continue
        client.report(key, d.permit, "success",
                      (time.monotonic() - start) * 1000.0, attempt=n,
                      answer=False)
        return result
    raise last  # not reached: the last attempt re-raises


async def _aretrying(client, key, fn, args, kwargs, acq, common,
                     max_attempts):
    last = None
    for n in range(1, max_attempts + 1):
        d = await client.acquire(key, **acq)
        if not d.allow:
            raise denial(key, d) from last
        start = time.monotonic()
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as e:
            last = e
            res = await client.report(**_failure(client, key, d, start, e, n,
                                                 *common))
            delay = _advice(res, n, max_attempts)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            continue
        await client.report(key, d.permit, "success",
                            (time.monotonic() - start) * 1000.0, attempt=n)
        return result
    raise last


class Heartbeat:
    """A thread beating for key every every_ms; stop() ends it."""

    def __init__(self, client, key, every_ms, check=None):
        self.client, self.key, self.check = client, key, check
        self.every_s = every_ms / 1000.0
        self.beats = 0  # beats sent (not necessarily received)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="resil-heartbeat-" + key)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.check is None or self.check():
                self.client.heartbeat(self.key, answer=False)
                self.beats += 1
            self._stop.wait(self.every_s)

    def stop(self, timeout=None):
        self._stop.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


async def _abeat(client, key, every_s, check):
    while True:
        if check is None or check():
            await client.heartbeat(key)
        await asyncio.sleep(every_s)


def heartbeat_task(client, key, every_ms, check=None):
    """Beat for key every every_ms ms: a Heartbeat thread for a Client, an
    asyncio.Task for an AsyncClient (call from a running loop)."""
    from ._common import check_key
    check_key(key)
    if not (isinstance(every_ms, (int, float)) and every_ms > 0):
        raise ValueError("every_ms must be > 0")
    if _is_async(client):
        return asyncio.ensure_future(_abeat(client, key, every_ms / 1000.0,
                                            check))
    return Heartbeat(client, key, every_ms, check)
