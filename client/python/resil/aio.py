"""aio.py - resil.AsyncClient, the asyncio client of resild.

One connection is shared by every coroutine of the client.  Requests are
pipelined: each gets a msgid and a future, its bytes are queued and written
together once per loop iteration, and the protocol's data_received matches
answers to futures by msgid, in whatever order the daemon sends them (a
parked acquire does not hold the others).  Every call is bounded by
asyncio.timeout at its deadline.  The rules are libresil's (client/resil.h):

  - connection failures (no socket, refused, lost, EOF) and garbage fail
    every call in flight to its fallback and start a back-off (50 ms
    doubling to 1 s); calls during the back-off fall back at once;
  - a deadline that passes on a live connection keeps it; an acquire given
    up on (deadline, or its task cancelled) is withdrawn with a "cancel"
    notification, so a late grant is released instead of expiring into a
    timeout failure; its late answer is dropped by msgid;
  - a daemon that stops reading (SIGSTOP) cannot make the client buffer
    without bound: past WRITE_BOUND bytes unsent, calls fall back at once
    ("stalled") and a cancel that cannot be queued drops the connection,
    which releases every permit of the connection.

report and heartbeat are notifications (fire and forget) unless answer=True.
An AsyncClient belongs to the event loop that first uses it.
"""

import asyncio
import os
import time

from . import _common as C
from ._common import InvalidArgument, Unavailable

WRITE_BOUND = 256 * 1024  # bytes queued to an unreading daemon, at most
CONNECT_TIMEOUT_S = 1.0  # a connect in progress, whoever waits for it


class _Fail(Exception):
    def __init__(self, cause, detail=""):
        super().__init__(cause)
        self.cause = cause
        self.detail = detail


def _bad(key, why):
    return InvalidArgument(key, C.invalid(why))


class _Conn(asyncio.Protocol):
    """One connection: the futures waiting for answers, by msgid."""

    def __init__(self, owner):
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.pending = {}  # msgid -> future of (error, result)
        self.unpacker = C.unpacker()
        self.out = []  # frames queued for the next flush
        self.out_bytes = 0
        self.flush_scheduled = False
        self.dead = False
        self.next = 1

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.unpacker.feed(data)
            for msg in self.unpacker:
                r = C.classify_message(msg)
                if r is None:
                    # A notification: an event, if subscribed.
                    if (msg[1] == "event" and type(msg[2]) is list
                            and msg[2] and isinstance(msg[2][0], dict)):
                        self.owner._event(msg[2][0])
                    continue
                fut = self.pending.pop(r[0], None)
                if fut is not None and not fut.done():
                    fut.set_result((r[1], r[2]))
                # else: a late answer to a call given up on
        except Exception as e:  # Garbage, msgpack errors, BufferFull
            self.fail("protocol", "%s: %s" % (type(e).__name__, e))

    def eof_received(self):
        self.fail("connection", "the daemon closed the connection")
        return False

    def connection_lost(self, exc):
        self.fail("connection", str(exc) if exc else "closed")

    def fail(self, cause, detail, back_off=True):
        """The connection is unusable: close it, fail every call in flight
        and (for a connection failure or garbage) back off."""
        if self.dead:
            return
        self.dead = True
        if self.transport is not None:
            self.transport.abort()
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(_Fail(cause, detail))
        self.owner._lost(self, cause, detail, back_off)

    def next_id(self):
        while True:
            i = self.next
            self.next = i + 1 if i < 0xFFFFFFFF else 1
            if i not in self.pending:
                return i

    def queued(self):
        return self.out_bytes + self.transport.get_write_buffer_size()

    def write(self, frame):
        self.out.append(frame)
        self.out_bytes += len(frame)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self):
        self.flush_scheduled = False
        if self.dead or not self.out:
            return
        data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
        self.out = []
        self.out_bytes = 0
        self.transport.write(data)

    def cancel(self, msgid):
        """Withdraw an acquire given up on; drop the connection when the
        cancel cannot be queued (the daemon stopped reading)."""
        if self.dead:
            return
        frame = C.notification("cancel", {"msgid": msgid})
        if self.queued() + len(frame) > WRITE_BOUND:
            self.fail("stalled", "cancel could not be sent", back_off=False)
        else:
            # At once, not at the next flush: the loop may stop first.
            self.write(frame)
            self.flush()


class AsyncClient:
    """asyncio client: the same arguments and methods as resil.Client, as
    coroutines.  One connection for every coroutine that uses it."""

    def __init__(self, socket=None, timeout_ms=C.DEFAULT_TIMEOUT_MS,
                 fail="open"):
        try:
            self._timeout = C.check_timeout(timeout_ms, None)
            self.fail = C.check_fail(fail, None)
        except C.InvalidArgument_ as e:
            raise ValueError(str(e)) from None
        self.path = C.resolve_socket(socket)
        self.timeout_ms = timeout_ms
        self._conn = None
        self._connecting = None  # task opening the connection
        self._backoff_ms = 0
        self._backoff_until = 0.0
        self._backoff_cause = ""
        self._pid = os.getpid()
        self._events = None  # asyncio.Queue once subscribed
        self.events_dropped = 0

    # -- connection ------------------------------------------------------

    async def close(self):
        """Close the connection (the daemon takes back its permits)."""
        c, self._conn = self._conn, None
        if c is not None:
            c.flush()
            c.fail("connection", "closed by the client", back_off=False)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def _lost(self, conn, cause, detail, back_off):
        if self._conn is conn:
            self._conn = None
        if back_off:
            self._back_off("%s: %s" % (cause, detail))

    def _back_off(self, cause):
        self._backoff_ms = min(self._backoff_ms * 2 or C.BACKOFF_START_MS,
                               C.BACKOFF_MAX_MS)
        self._backoff_until = time.monotonic() + self._backoff_ms / 1000.0
        self._backoff_cause = cause

    async def _open(self):
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, conn = await loop.create_unix_connection(
                    lambda: _Conn(self), self.path)
        except (OSError, TimeoutError, ValueError) as e:
            self._back_off("connection: %s" % e)
            raise _Fail("connection", str(e)) from None
        self._conn = conn
        return conn

    async def _connection(self):
        c = self._conn
        loop = asyncio.get_running_loop()
        if c is not None and not c.dead and self._pid == os.getpid() and \
                c.loop is loop:
            return c
        if c is not None and c.loop is not loop:
            # Used from another loop now (asyncio.run twice): the old
            # connection belongs to the old loop; forget it.
            self._conn = c = None
            self._connecting = None
        if self._backoff_until:
            if time.monotonic() < self._backoff_until:
                raise _Fail("backoff", self._backoff_cause)
        if self._connecting is None or self._connecting.done():
            self._pid = os.getpid()
            self._connecting = asyncio.ensure_future(self._open())
            # A failed connect nobody waits for any more must not warn.
            self._connecting.add_done_callback(
                lambda t: t.cancelled() or t.exception())
        # shield: a caller whose deadline passes leaves the connect running
        # for the others (bounded by CONNECT_TIMEOUT_S).
        return await asyncio.shield(self._connecting)

    async def _roundtrip(self, method, params, timeout_s, is_acquire=False,
                         notify=False):
        """(error, result) of the answer, or (None, None) for a
        notification.  Raises _Fail when the daemon could not be asked."""
        loop = asyncio.get_running_loop()
        conn = msgid = fut = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await self._connection()
                if conn.queued() > WRITE_BOUND:
                    raise _Fail("stalled", "%d bytes unsent" % conn.queued())
                if notify:
                    conn.write(C.notification(method, params))
                    return None, None
                msgid = conn.next_id()
                fut = loop.create_future()
                conn.pending[msgid] = fut
                conn.write(C.request(msgid, method, params))
                err, res = await fut
        except TimeoutError:
            raise _Fail("timeout", method) from None
        finally:
            # Given up on (deadline or the caller's task cancelled; either
            # cancels fut too): still pending means unanswered, so forget
            # the msgid and withdraw an acquire.
            if fut is not None and conn.pending.get(msgid) is fut:
                del conn.pending[msgid]
                if is_acquire:
                    conn.cancel(msgid)
                fut.cancel()
        self._backoff_ms, self._backoff_until = 0, 0.0
        if isinstance(err, dict) and err.get("code") in C.CLOSING_ERRORS:
            conn.fail("protocol", err["code"], back_off=False)
        return err, res

    def _garbage(self, conn_detail):
        c = self._conn
        if c is not None:
            c.fail("protocol", conn_detail)

    async def _call(self, method, params, timeout_ms, key=None):
        try:
            timeout_s = C.check_timeout(timeout_ms, self._timeout)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        try:
            err, res = await self._roundtrip(method, params, timeout_s)
        except _Fail as f:
            raise Unavailable(f.cause, f.detail) from None
        if err is not None:
            try:
                raise C.remote(err)
            except C.Garbage as g:
                self._garbage(str(g))
                raise Unavailable("protocol", str(g)) from None
        return res

    # -- events ----------------------------------------------------------

    EVENT_QUEUE = 10000  # events kept for a reader that falls behind

    def _event(self, ev):
        q = self._events
        if q is None:
            return
        if q.full():  # a reader that falls behind loses the oldest
            q.get_nowait()
            self.events_dropped += 1
        q.put_nowait(ev)

    async def subscribe(self, topics=("state", "error", "operator"),
                        timeout_ms=None):
        """Subscribe this client's connection to topics (state, error,
        alert, operator, bound); returns what the daemon subscribed.  The
        events arrive through next_event() / `async for ev in
        client.events()` as dicts (PROTOCOL.md, "subscribe").  The
        connection's calls go on as usual.  A subscription lives as long as
        the connection: after Unavailable, subscribe again.  At most
        EVENT_QUEUE events wait for the reader; beyond that the oldest are
        dropped and counted in events_dropped."""
        if self._events is None:
            self._events = asyncio.Queue(self.EVENT_QUEUE)
        res = await self._call("subscribe", {"topics": list(topics)},
                               timeout_ms)
        return res.get("subscribed", []) if isinstance(res, dict) else []

    async def next_event(self, timeout=None):
        """The next event (a dict); None after timeout seconds without
        one.  Raises ValueError when not subscribed."""
        if self._events is None:
            raise ValueError("subscribe() first")
        try:
            async with asyncio.timeout(timeout):
                return await self._events.get()
        except TimeoutError:
            return None

    async def events(self):
        """Every event, as they come (an async iterator)."""
        while True:
            yield await self.next_event()

    # -- the methods -----------------------------------------------------

    async def acquire(self, key, cost=1, wait_ms=0, priority="normal",
                      timeout_ms=None, fail=None):
        """As Client.acquire: always a Decision, never raises (a cancelled
        task excepted: its acquire is withdrawn with a cancel)."""
        try:
            params = C.acquire_params(key, cost, wait_ms, priority)
            fail = C.check_fail(fail, self.fail)
            timeout_s = C.acquire_timeout(timeout_ms, wait_ms, self._timeout)
        except C.InvalidArgument_ as e:
            return C.invalid(str(e))
        try:
            err, res = await self._roundtrip("acquire", params, timeout_s,
                                             True)
        except _Fail as f:
            return C.fallback(fail, f.cause)
        try:
            return C.decode_decision(key, err, res, fail)
        except C.Garbage as g:
            self._garbage(str(g))
            return C.fallback(fail, "protocol")

    async def report(self, key, permit, outcome, latency_ms=None, error=None,
                     limit=None, correlation_id=None, context=None,
                     idempotent=True, *, attempt=None, timeout_ms=None,
                     answer=False):
        """As Client.report, but sent as a notification (fire and forget,
        returns None) unless answer=True, which waits for the daemon's
        result (retry advice) and returns it, or None when the daemon
        could not be asked."""
        try:
            params = C.report_params(key, permit, outcome, latency_ms, error,
                                     limit, correlation_id, context,
                                     idempotent, attempt)
            timeout_s = C.check_timeout(timeout_ms, self._timeout)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return await self._fire("report", params, timeout_s, answer)

    async def _fire(self, method, params, timeout_s, answer):
        try:
            err, res = await self._roundtrip(method, params, timeout_s,
                                             notify=not answer)
        except _Fail:
            return None
        if err is not None:
            raise C.remote(err)
        return res

    async def cancel(self, msgid, timeout_ms=None):
        if not C._uint(msgid) or msgid > 0xFFFFFFFF:
            raise _bad(None, "msgid must be an unsigned 32-bit integer")
        return await self._call("cancel", {"msgid": msgid}, timeout_ms)

    async def heartbeat(self, key, latency_ms=None, timeout_ms=None,
                        answer=False):
        """A notification (None) unless answer=True."""
        try:
            params = C.heartbeat_params(key, latency_ms)
            timeout_s = C.check_timeout(timeout_ms, self._timeout)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return await self._fire("heartbeat", params, timeout_s, answer)

    async def status(self, key=None, prefix=None, limit=None, after=None,
                     timeout_ms=None):
        try:
            params = C.query_params(key, prefix, limit=limit, after=after)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return await self._call("status", params, timeout_ms, key)

    async def health(self, timeout_ms=None):
        return await self._call("health", None, timeout_ms)

    async def errors(self, key=None, prefix=None, window_s=None,
                     min_severity=None, top=None, timeout_ms=None):
        try:
            params = C.query_params(key, prefix, window_s=window_s,
                                    min_severity=min_severity, top=top)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return await self._call("errors", params, timeout_ms, key)

    async def force(self, key, state, reason=None, ttl_ms=None,
                    timeout_ms=None):
        try:
            params = C.force_params(key, state, reason, ttl_ms)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return await self._call("force", params, timeout_ms, key)

    async def reset(self, key, timeout_ms=None):
        try:
            C.check_key(key)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return await self._call("reset", {"key": key}, timeout_ms, key)

    async def ping(self, timeout_ms=None):
        return await self._call("ping", None, timeout_ms)

    async def call(self, method, params=None, timeout_ms=None):
        if not isinstance(method, str) or not 0 < len(method) <= 64:
            raise _bad(None, "method must be a name of 1..64 bytes")
        if params is not None and not isinstance(params, dict):
            raise _bad(None, "params must be a dict")
        if method == "acquire":
            raise _bad(None, "use acquire() (it cancels on timeout)")
        return await self._call(method, params, timeout_ms)

    # -- decorators ------------------------------------------------------

    def protect(self, key, cost=1, priority="normal", wait_ms=0, **kw):
        """Decorator for coroutine functions: see resil.guard.protect."""
        from .guard import protect
        return protect(self, key, cost=cost, priority=priority,
                       wait_ms=wait_ms, **kw)

    def guard(self, key, cost=1, priority="normal", wait_ms=0, **kw):
        """async with client.guard(key) as call: see resil.guard.Guard."""
        from .guard import Guard
        return Guard(self, key, cost=cost, priority=priority, wait_ms=wait_ms,
                     **kw)
