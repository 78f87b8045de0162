"""client.py - resil.Client, the synchronous client of resild.

One Client owns at most one connection.  A call packs its request, sends
it with non-blocking I/O bounded by poll(), and reads until the answer with
its msgid arrives.  Every wait is bounded by the call's deadline on the
monotonic clock, the wait for the client's lock included, so a caller never
blocks longer than it asked for, whatever the daemon does.  It follows
libresil (client/resil.h):

  - connect is non-blocking: a blocking AF_UNIX connect to a live daemon
    whose backlog is full hangs forever;
  - connection failures (no socket, refused, backlog full, lost, EOF, a
    send error) and garbage answers close the socket and start a back-off
    (50 ms doubling to 1 s, reset by the next answer); calls during the
    back-off fall back at once, without a syscall;
  - a deadline that passes on a live connection keeps the socket and
    starts no back-off (closing it would return every permit of every
    thread's calls; the next call asks the daemon again); only a request
    cut in half by its deadline closes the socket (the stream would be out
    of step), without a back-off;
  - an acquire given up on after its request went out is cancelled at once
    with a "cancel" notification (one non-blocking send), so a late grant
    is released instead of expiring into a timeout failure; when the
    socket cannot take it whole the connection is dropped, which releases
    every permit of the connection;
  - late answers to calls given up on are skipped by msgid.

Thread safety: calls are serialised by a lock and a call holds the
connection for its whole round trip, a parked acquire (wait_ms) included.
Give a thread that parks, or whose calls must never queue behind others,
its own Client.  After fork() the child drops the parent's connection and
opens its own.
"""

import errno
import os
import select
import socket
import threading
import time
import weakref

from . import _common as C
from ._common import (Decision, InvalidArgument, RemoteError, Unavailable)

_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_RECV_BYTES = 65536

_clients = weakref.WeakSet()


def _after_fork():
    # The child must not use the parent's connection (answers would go to
    # either process) nor a lock some other parent thread held.
    for c in list(_clients):
        c._lock = threading.Lock()
        c._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _Fail(Exception):
    """Internal: the daemon could not be asked (cause as in Unavailable)."""

    def __init__(self, cause, detail=""):
        super().__init__(cause)
        self.cause = cause
        self.detail = detail


def _bad(key, why):
    return InvalidArgument(key, C.invalid(why))


class Client:
    """Synchronous client.  socket: the path (None: resolved as SPEC 8
    says); timeout_ms: the default deadline of every call (ms, > 0);
    fail: what acquire decides when the daemon cannot ("open" allows,
    "closed" denies; the decision then says fallback=True)."""

    def __init__(self, socket=None, timeout_ms=C.DEFAULT_TIMEOUT_MS,
                 fail="open"):
        try:
            self._timeout = C.check_timeout(timeout_ms, None)
            self.fail = C.check_fail(fail, None)
        except C.InvalidArgument_ as e:
            raise ValueError(str(e)) from None
        self.path = C.resolve_socket(socket)
        self.timeout_ms = timeout_ms
        self._lock = threading.Lock()
        self._sock = None
        self._poll_in = self._poll_out = None
        self._unpacker = None
        self._next = 1
        self._backoff_ms = 0
        self._backoff_until = 0.0
        self._backoff_cause = ""
        _clients.add(self)

    # -- lifecycle -------------------------------------------------------

    def close(self):
        """Close the connection (the daemon takes back its permits).  The
        client stays usable: the next call connects again."""
        with self._lock:
            self._forget()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._forget()
        except Exception:
            pass

    def _forget(self):
        s, self._sock = self._sock, None
        self._unpacker = None
        self._poll_in = self._poll_out = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _back_off(self, cause):
        self._forget()
        self._backoff_ms = min(self._backoff_ms * 2 or C.BACKOFF_START_MS,
                               C.BACKOFF_MAX_MS)
        self._backoff_until = time.monotonic() + self._backoff_ms / 1000.0
        self._backoff_cause = cause

    # -- I/O -------------------------------------------------------------

    @staticmethod
    def _wait(poller, deadline):
        """Poll until deadline; True when the fd is ready."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                # poll takes ms and rounds up: never early.
                if poller.poll(left * 1000.0):
                    return True
            except InterruptedError:
                continue

    def _connect(self, deadline):
        s = socket.socket(socket.AF_UNIX,
                          socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.setblocking(False)
        try:
            rc = s.connect_ex(self.path)
        except (OSError, ValueError) as e:  # e.g. path too long
            s.close()
            raise _Fail("connection", str(e))
        self._sock = s
        self._unpacker = C.unpacker()
        self._poll_in = select.poll()
        self._poll_in.register(s, _POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(s, _POLLOUT)
        self._pid = os.getpid()
        if rc == 0:
            return
        # EAGAIN: the listener's backlog is full (a stalled daemon).
        if rc not in (errno.EINPROGRESS, errno.EINTR):
            raise _Fail("connection", os.strerror(rc))
        if not self._wait(self._poll_out, deadline):
            raise _Fail("timeout", "connect")
        rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc:
            raise _Fail("connection", os.strerror(rc))

    def _send(self, data, deadline):
        """Send data whole.  Returns the bytes that left; raises _Fail
        with that count in .sent."""
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            try:
                sent += self._sock.send(view[sent:], _SEND_FLAGS)
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                f = _Fail("connection", str(e))
                f.sent = sent
                raise f
            if not self._wait(self._poll_out, deadline):
                f = _Fail("timeout", "send")
                f.sent = sent
                raise f
        return sent

    def _read(self, msgid, deadline):
        """(error, result) of the answer to msgid.  Other answers (late
        ones to calls given up on) and notifications are skipped."""
        up = self._unpacker
        while True:
            try:
                for msg in up:
                    r = C.classify_message(msg)
                    if r is not None and r[0] == msgid:
                        return r[1], r[2]
            except C.Garbage as e:
                raise _Fail("protocol", str(e))
            except Exception as e:  # msgpack's FormatError, StackError...
                raise _Fail("protocol", "%s: %s" % (type(e).__name__, e))
            if time.monotonic() >= deadline:
                raise _Fail("timeout", "answer")
            try:
                data = self._sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                if not self._wait(self._poll_in, deadline):
                    raise _Fail("timeout", "answer")
                continue
            except OSError as e:
                raise _Fail("connection", str(e))
            if not data:
                raise _Fail("connection", "the daemon closed the connection")
            try:
                up.feed(data)
            except Exception as e:  # BufferFull: an answer over 16 MiB
                raise _Fail("protocol", "%s: %s" % (type(e).__name__, e))

    def _cancel(self, msgid):
        """[2, "cancel", [{"msgid": msgid}]] with one non-blocking send;
        the connection is dropped when the socket cannot take it whole."""
        data = C.notification("cancel", {"msgid": msgid})
        try:
            n = self._sock.send(data, _SEND_FLAGS)
        except OSError:
            n = -1
        if n != len(data):
            self._forget()

    def _next_id(self):
        i = self._next
        self._next = i + 1 if i < 0xFFFFFFFF else 1  # 0: the daemon's "none"
        return i

    def _roundtrip(self, method, params, timeout_s, is_acquire=False,
                   notify=False):
        """Send one request and return (error, result) of its answer; for
        notify, send a notification and return (None, None).  Raises
        _Fail when the daemon could not be asked."""
        deadline = time.monotonic() + timeout_s
        left = deadline - time.monotonic()
        if not self._lock.acquire(timeout=max(left, 0)):
            raise _Fail("timeout", "lock")
        try:
            if self._backoff_until:
                if time.monotonic() < self._backoff_until:
                    raise _Fail("backoff", self._backoff_cause)
            if self._sock is not None and self._pid != os.getpid():
                self._forget()
            if notify:
                msgid, data = 0, C.notification(method, params)
            else:
                msgid = self._next_id()
                data = C.request(msgid, method, params)
            for attempt in (0, 1):
                reused = self._sock is not None
                try:
                    if not reused:
                        self._connect(deadline)
                    self._send(data, deadline)
                    break
                except _Fail as f:
                    sent = getattr(f, "sent", 0)
                    if f.cause == "timeout" and reused:
                        # A live daemon that does not read fast enough.
                        if sent:
                            self._forget()
                        raise
                    if reused and not sent and attempt == 0:
                        # A reused connection found closed before anything
                        # went out (a restarted daemon): once more.
                        self._forget()
                        continue
                    self._back_off(f.cause + ": " + f.detail)
                    raise
            if notify:
                self._backoff_ms, self._backoff_until = 0, 0.0
                return None, None
            try:
                err, res = self._read(msgid, deadline)
            except _Fail as f:
                if f.cause == "timeout":
                    if is_acquire:
                        self._cancel(msgid)
                    raise
                self._back_off(f.cause + ": " + f.detail)
                raise
            self._backoff_ms, self._backoff_until = 0, 0.0
            if err is not None and isinstance(err, dict) and \
                    err.get("code") in C.CLOSING_ERRORS:
                self._forget()
            return err, res
        finally:
            self._lock.release()

    def _call(self, method, params, timeout_ms, key=None):
        """A method whose answer is its result: raises Unavailable,
        RemoteError or InvalidArgument."""
        try:
            timeout_s = C.check_timeout(timeout_ms, self._timeout)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        try:
            err, res = self._roundtrip(method, params, timeout_s)
        except _Fail as f:
            raise Unavailable(f.cause, f.detail) from None
        if err is not None:
            try:
                raise C.remote(err)
            except C.Garbage as g:
                with self._lock:
                    self._back_off("protocol")
                raise Unavailable("protocol", str(g)) from None
        return res

    # -- the methods -----------------------------------------------------

    def acquire(self, key, cost=1, wait_ms=0, priority="normal",
                timeout_ms=None, fail=None):
        """May a call to key go ahead?  Always returns a Decision, never
        raises.  timeout_ms defaults to the client's, plus wait_ms when the
        acquire may park.  When the daemon cannot decide in time the
        decision is the fail mode's, with fallback=True.  A malformed
        argument (or the daemon's bad_request) is a deny whatever the
        fail mode."""
        try:
            params = C.acquire_params(key, cost, wait_ms, priority)
            fail = C.check_fail(fail, self.fail)
            timeout_s = C.acquire_timeout(timeout_ms, wait_ms, self._timeout)
        except C.InvalidArgument_ as e:
            return C.invalid(str(e))
        try:
            err, res = self._roundtrip("acquire", params, timeout_s, True)
        except _Fail as f:
            return C.fallback(fail, f.cause)
        try:
            return C.decode_decision(key, err, res, fail)
        except C.Garbage:
            with self._lock:
                self._back_off("protocol")
            return C.fallback(fail, "protocol")

    def report(self, key, permit, outcome, latency_ms=None, error=None,
               limit=None, correlation_id=None, context=None,
               idempotent=True, *, attempt=None, timeout_ms=None,
               answer=True):
        """Report the outcome of a call (permit from acquire; None or 0
        for a call never acquired).  error: a class str ("network.reset")
        or a map {class, message?, severity?, transient?,
        retry_after_ms?}; limit: {remaining, reset_ms} from the venue's
        rate-limit headers.  Returns the daemon's result (state, stale,
        and for failure/unknown classification and retry advice), or None
        when the daemon could not be asked in time (the report did not
        count).  answer=False sends a notification and returns None at
        once.  Raises InvalidArgument (nothing sent) or RemoteError."""
        try:
            params = C.report_params(key, permit, outcome, latency_ms, error,
                                     limit, correlation_id, context,
                                     idempotent, attempt)
            timeout_s = C.check_timeout(timeout_ms, self._timeout)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return self._fire("report", params, timeout_s, answer)

    def _fire(self, method, params, timeout_s, answer):
        try:
            err, res = self._roundtrip(method, params, timeout_s,
                                       notify=not answer)
        except _Fail:
            return None
        if err is not None:
            raise C.remote(err)
        return res

    def cancel(self, msgid, timeout_ms=None):
        """Withdraw an earlier acquire of this connection by msgid (the
        client does this itself for an acquire it gave up on).  Returns
        {cancelled, released}."""
        if not C._uint(msgid) or msgid > 0xFFFFFFFF:
            raise _bad(None, "msgid must be an unsigned 32-bit integer")
        return self._call("cancel", {"msgid": msgid}, timeout_ms)

    def heartbeat(self, key, latency_ms=None, timeout_ms=None, answer=True):
        """Tell the daemon that the feed key is alive.  Returns {state,
        heartbeat}, or None when the daemon could not be asked (the beat
        did not count).  answer=False: a notification, None at once."""
        try:
            params = C.heartbeat_params(key, latency_ms)
            timeout_s = C.check_timeout(timeout_ms, self._timeout)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return self._fire("heartbeat", params, timeout_s, answer)

    def status(self, key=None, prefix=None, limit=None, after=None,
               timeout_ms=None):
        """The status page (PROTOCOL.md, status): {health, total, keys,
        next?}.  Raises Unavailable, RemoteError, InvalidArgument."""
        try:
            params = C.query_params(key, prefix, limit=limit, after=after)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return self._call("status", params, timeout_ms, key)

    def health(self, timeout_ms=None):
        """{overall, services, open, recent_errors, components}."""
        return self._call("health", None, timeout_ms)

    def errors(self, key=None, prefix=None, window_s=None, min_severity=None,
               top=None, timeout_ms=None):
        """Error analytics (SPEC 6).  A daemon without it raises
        RemoteError("no_such_method")."""
        try:
            params = C.query_params(key, prefix, window_s=window_s,
                                    min_severity=min_severity, top=top)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return self._call("errors", params, timeout_ms, key)

    def force(self, key, state, reason=None, ttl_ms=None, timeout_ms=None):
        """Admin: pin key's breaker (open, closed, disabled) or return it
        to auto.  Returns the key's status map."""
        try:
            params = C.force_params(key, state, reason, ttl_ms)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return self._call("force", params, timeout_ms, key)

    def reset(self, key, timeout_ms=None):
        """Admin: close key's breaker with a fresh window."""
        try:
            C.check_key(key)
        except C.InvalidArgument_ as e:
            raise _bad(key, str(e)) from None
        return self._call("reset", {"key": key}, timeout_ms, key)

    def ping(self, timeout_ms=None):
        """{version, pid, uptime_ms}."""
        return self._call("ping", None, timeout_ms)

    def call(self, method, params=None, timeout_ms=None):
        """Any other method (metrics, reload...): params a dict or None.
        Raises Unavailable or RemoteError."""
        if not isinstance(method, str) or not 0 < len(method) <= 64:
            raise _bad(None, "method must be a name of 1..64 bytes")
        if params is not None and not isinstance(params, dict):
            raise _bad(None, "params must be a dict")
        if method == "acquire":
            raise _bad(None, "use acquire() (it cancels on timeout)")
        return self._call(method, params, timeout_ms)

    # -- decorators ------------------------------------------------------

    def protect(self, key, cost=1, priority="normal", wait_ms=0, **kw):
        """Decorator: see resil.guard.protect."""
        from .guard import protect
        return protect(self, key, cost=cost, priority=priority,
                       wait_ms=wait_ms, **kw)

    def guard(self, key, cost=1, priority="normal", wait_ms=0, **kw):
        """Context manager: see resil.guard.Guard."""
        from .guard import Guard
        return Guard(self, key, cost=cost, priority=priority, wait_ms=wait_ms,
                     **kw)


__all__ = ["Client", "Decision", "Unavailable", "RemoteError"]
