"""guard.py - protect a call with one decorator or context manager.

    @client.protect("binance.orders")
    def place(order): ...

    with client.guard("binance.orders") as call:
        place(order)

acquire (raising a resil.Denied subclass when denied), time the call,
report success, or on an exception map it to an error class, report a
failure and re-raise.  The same objects work with resil.Client (sync, and
on coroutine functions with sync calls bounded by the client's deadline)
and resil.AsyncClient (async with, coroutine functions).

Exception mapping (classify_exception): the caller's errors= map first (by
class or class name, along the MRO), then classify=, then an HTTP status on
the exception (429 -> rate_limited with Retry-After, 5xx ->
exchange.unavailable), then the built-in table by class name along the MRO
(duck typing: ccxt, aiohttp and requests need not be installed).  An
exception nothing maps is "unclassified".  BaseExceptions that are not
Exceptions (task cancelled, KeyboardInterrupt, SystemExit) report "ignore":
the dependency did not fail.
"""

import email.utils
import functools
import inspect
import logging
import time

from . import _common as C
from ._common import Denied, RemoteError, Unavailable, denial

log = logging.getLogger("resil")

# By class name, most specific first along the MRO (SPEC 5 classes).
DEFAULT_ERRORS = {
    # ccxt
    "RateLimitExceeded": "rate_limited",
    "DDoSProtection": "rate_limited",
    "OnMaintenance": "exchange.maintenance",
    "ExchangeNotAvailable": "exchange.maintenance",
    "InvalidOrder": "order.rejected",
    "InsufficientFunds": "order.rejected",
    "AuthenticationError": "auth.denied",
    "PermissionDenied": "auth.denied",
    "RequestTimeout": "network.timeout",
    "NetworkError": "network",
    # aiohttp / requests / httpx
    "ServerTimeoutError": "network.timeout",
    "ConnectTimeout": "network.timeout",
    "ReadTimeout": "network.timeout",
    "ClientConnectionError": "network",
    "ClientConnectorError": "network.refused",
    "ConnectTimeoutError": "network.timeout",
    "TimeoutException": "network.timeout",
    # builtins (asyncio.TimeoutError and socket.timeout are TimeoutError)
    "TimeoutError": "network.timeout",
    "ConnectionResetError": "network.reset",
    "BrokenPipeError": "network.reset",
    "ConnectionAbortedError": "network.reset",
    "ConnectionRefusedError": "network.refused",
    "gaierror": "network.dns",
    "ConnectionError": "network",
}
UNCLASSIFIED = "unclassified"
MESSAGE_MAX = 256  # characters of str(exc) sent as the error message


def _header(headers, name):
    if headers is None:
        return None
    try:
        v = headers.get(name)
        if v is None:
            v = headers.get(name.lower())
        return v
    except Exception:
        return None


def retry_after_ms(value):
    """Retry-After (seconds, or an HTTP date) in ms, or None."""
    if value is None:
        return None
    try:
        s = float(str(value).strip())
        return max(0, min(int(s * 1000), C.TIME_MAX_MS))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
        ms = int((when.timestamp() - time.time()) * 1000)
        return max(0, min(ms, C.TIME_MAX_MS))
    except (TypeError, ValueError, OverflowError):
        return None


def _http_status(exc):
    """(status, headers) of an HTTP error, duck-typed: aiohttp
    (.status, .headers), requests/httpx (.response.status_code,
    .response.headers), urllib (.code, .headers)."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status", "status_code", "code"):
            st = getattr(holder, attr, None)
            if isinstance(st, int) and not isinstance(st, bool) and \
                    100 <= st <= 599:
                return st, getattr(holder, "headers", None)
    return None, None


def _as_error(cls, exc):
    """A report error map from a class and the exception."""
    if isinstance(cls, dict):
        e = dict(cls)
        if "class" not in e or not C.CLASS_RE.match(str(e["class"])):
            e["class"] = UNCLASSIFIED
    else:
        e = {"class": cls if isinstance(cls, str) and C.CLASS_RE.match(cls)
             else UNCLASSIFIED}
    if "message" not in e:
        text = "%s: %s" % (type(exc).__name__, exc)
        e["message"] = text[:MESSAGE_MAX]
    return e


def classify_exception(exc, errors=None, classify=None):
    """The report error map for exc: {"class": ..., "message": ...,
    "retry_after_ms"?}.  errors: {ExceptionClass or "ClassName": class};
    classify: a function exc -> class str, error map or None (None: go on
    with the defaults)."""
    mro = type(exc).__mro__
    if errors:
        for t in mro:
            cls = errors.get(t, errors.get(t.__name__))
            if cls is not None:
                return _as_error(cls, exc)
    if classify is not None:
        cls = classify(exc)
        if cls is not None:
            return _as_error(cls, exc)
    status, headers = _http_status(exc)
    if status == 429:
        e = _as_error("rate_limited", exc)
        ra = retry_after_ms(_header(headers, "Retry-After"))
        if ra is not None:
            e["retry_after_ms"] = ra
        return e
    if status is not None and status >= 500:
        return _as_error("exchange.unavailable", exc)
    for t in mro:
        cls = DEFAULT_ERRORS.get(t.__name__)
        if cls is not None:
            return _as_error(cls, exc)
    return _as_error(UNCLASSIFIED, exc)


class Call:
    """What the body of a guard sees: the decision, and ways to say how the
    call ended when an exception does not say it.

    call.decision      the Decision (allow, permit, ...)
    call.unknown()     the outcome is unknown (an order that may or may not
                       have reached the venue): reported "unknown" with
                       idempotent=False, so no blind retry is advised
    call.fail(cls, retry_after_ms=None, message=None)
                       report a failure of class cls at exit even though
                       no exception came out (e.g. an error code in a
                       response body)
    call.ignore()      report "ignore" (the call does not count)
    call.limit(remaining, reset_ms)
                       the venue's rate-limit headers, sent with the report
    """

    __slots__ = ("key", "decision", "outcome", "error", "idempotent",
                 "limit_", "context", "correlation_id", "start")

    def __init__(self, key, decision, context, correlation_id):
        self.key = key
        self.decision = decision
        self.outcome = None  # None: decided by how the body ends
        self.error = None
        self.idempotent = True
        self.limit_ = None
        self.context = context
        self.correlation_id = correlation_id
        self.start = None

    @property
    def permit(self):
        return self.decision.permit

    def unknown(self, error=None):
        self.outcome = "unknown"
        self.idempotent = False
        if error is not None:
            self.error = error

    def fail(self, cls, retry_after_ms=None, message=None):
        self.outcome = "failure"
        e = {"class": cls}
        if retry_after_ms is not None:
            e["retry_after_ms"] = retry_after_ms
        if message is not None:
            e["message"] = message
        try:  # a malformed class raises now, not at exit
            C.error_param(e)
        except C.InvalidArgument_ as x:
            raise ValueError(str(x)) from None
        self.error = e

    def ignore(self):
        self.outcome = "ignore"

    def limit(self, remaining, reset_ms):
        self.limit_ = {"remaining": remaining, "reset_ms": reset_ms}


class Guard:
    """with client.guard(key) as call: / async with client.guard(key) as
    call:.  Raises a resil.Denied subclass on a denial (raise_denied=False:
    the body runs anyway; check call.decision.allow).  Options:

    cost, priority, wait_ms, timeout_ms, fail   as for acquire
    errors, classify                            as for classify_exception
    correlation_id, context                     sent with the report
    """

    def __init__(self, client, key, cost=1, priority="normal", wait_ms=0,
                 timeout_ms=None, fail=None, errors=None, classify=None,
                 raise_denied=True, correlation_id=None, context=None):
        try:
            C.acquire_params(key, cost, wait_ms, priority)
            C.check_fail(fail, "open")
            C.check_timeout(timeout_ms, 0)
        except C.InvalidArgument_ as e:
            raise ValueError(str(e)) from None
        try:
            for cls in (errors or {}).values():
                C.error_param(cls if isinstance(cls, (str, dict)) else 0)
        except C.InvalidArgument_ as e:
            raise ValueError("errors=: %s" % e) from None
        self.client = client
        self.key = key
        self.acq = {"cost": cost, "wait_ms": wait_ms, "priority": priority,
                    "timeout_ms": timeout_ms, "fail": fail}
        self.errors = errors
        self.classify = classify
        self.raise_denied = raise_denied
        self.correlation_id = correlation_id
        self.context = context
        self._call = None

    # -- shared --------------------------------------------------------

    def _start(self, decision):
        call = Call(self.key, decision, self.context, self.correlation_id)
        if not decision.allow and self.raise_denied:
            raise denial(self.key, decision)
        call.start = time.monotonic()
        return call

    def _report_args(self, call, exc):
        """(outcome, kwargs) for report, or None when nothing is sent."""
        latency = (time.monotonic() - call.start) * 1000.0
        outcome, error = call.outcome, call.error
        if outcome is None:
            if exc is None:
                outcome = "success"
            elif not isinstance(exc, Exception):
                outcome = "ignore"  # cancelled, interrupted
            else:
                outcome = "failure"
        if exc is not None and isinstance(exc, Exception) and error is None \
                and outcome in ("failure", "unknown"):
            error = classify_exception(exc, self.errors, self.classify)
        if not call.decision.allow:
            return None  # denied and run anyway: nothing was granted
        return {"key": self.key, "permit": call.decision.permit,
                "outcome": outcome, "latency_ms": latency, "error": error,
                "limit": call.limit_, "correlation_id": call.correlation_id,
                "context": call.context, "idempotent": call.idempotent}

    # -- sync ------------------------------------------------------------

    def __enter__(self):
        if inspect.iscoroutinefunction(self.client.acquire):
            raise TypeError("an AsyncClient guard needs async with")
        d = self.client.acquire(self.key, **self.acq)
        self._call = self._start(d)
        return self._call

    def __exit__(self, et, exc, tb):
        args = self._report_args(self._call, exc)
        if args is not None:
            try:
                self.client.report(answer=False, **args)
            except (Unavailable, RemoteError, ValueError) as e:
                log.warning("resil: report of %s failed: %s", self.key, e)
        return False

    # -- async -----------------------------------------------------------

    async def __aenter__(self):
        d = self.client.acquire(self.key, **self.acq)
        if inspect.isawaitable(d):
            d = await d
        self._call = self._start(d)
        return self._call

    async def __aexit__(self, et, exc, tb):
        args = self._report_args(self._call, exc)
        if args is not None:
            try:
                r = self.client.report(answer=False, **args)
                if inspect.isawaitable(r):
                    await r
            except (Unavailable, RemoteError, ValueError) as e:
                log.warning("resil: report of %s failed: %s", self.key, e)
        return False


def protect(client, key, cost=1, priority="normal", wait_ms=0, **kw):
    """Decorator: every call of the function runs inside client.guard(key,
    ...) (same options).  Works on functions and coroutine functions; with
    an AsyncClient only on coroutine functions."""
    Guard(client, key, cost=cost, priority=priority, wait_ms=wait_ms,
          **kw)  # check the options now, at decoration time
    is_async_client = inspect.iscoroutinefunction(client.acquire)

    def deco(fn):
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*a, **k):
                async with Guard(client, key, cost=cost, priority=priority,
                                 wait_ms=wait_ms, **kw):
                    return await fn(*a, **k)
            return awrapper
        if is_async_client:
            raise TypeError("AsyncClient.protect needs a coroutine function")

        @functools.wraps(fn)
        def wrapper(*a, **k):
            with Guard(client, key, cost=cost, priority=priority,
                       wait_ms=wait_ms, **kw):
                return fn(*a, **k)
        return wrapper
    return deco


__all__ = ["Guard", "Call", "protect", "classify_exception",
           "DEFAULT_ERRORS", "retry_after_ms", "Denied"]
