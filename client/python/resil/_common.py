"""_common.py - what the sync and asyncio clients share: the socket path,
argument checks, the Decision object, the exceptions and the encoding of
requests.  No I/O here.

Caller bugs (a malformed key, an absurd cost, an unknown fail mode...) are
refused before anything is sent, and an acquire refused this way is a deny
whatever the fail mode: a fallback allow would trade unchecked on a bug
nobody sees (libresil does the same, client/resil.h).
"""

import os
import re

import msgpack

DEFAULT_TIMEOUT_MS = 5
BACKOFF_START_MS = 50  # first back-off after a connection failure
BACKOFF_MAX_MS = 1000  # doubling up to this
MAX_ANSWER_BYTES = 16 << 20  # a status page of 1000 keys, metrics text

# The daemon's own bounds (daemon/methods.c), checked here so that a caller
# bug is refused without a round trip.
KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
CLASS_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
COST_MAX = 1000000000
WAIT_MAX_MS = 3600000
TIME_MAX_MS = 86400000 * 30  # latency, retry_after, ttl
ATTEMPT_MAX = 1000000
OUTCOMES = ("success", "failure", "ignore", "unknown")
PRIORITIES = ("normal", "critical")
FAIL_MODES = ("open", "closed")
ERROR_FIELDS = ("class", "message", "severity", "transient", "retry_after_ms")
SEVERITIES = ("low", "medium", "high", "critical")

_packer_opts = {"use_bin_type": True}


def resolve_socket(explicit=None):
    """The socket path, as SPEC 8 and proto/sockpath.c resolve it: explicit,
    else $RESILD_SOCKET, else /run/resild/resild.sock when /run/resild is a
    directory, else $XDG_RUNTIME_DIR/resild.sock, else /tmp/resild.sock."""
    if explicit:
        return os.fspath(explicit)
    env = os.environ.get("RESILD_SOCKET")
    if env:
        return env
    if os.path.isdir("/run/resild"):
        return "/run/resild/resild.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "resild.sock")
    return "/tmp/resild.sock"


class ResilError(Exception):
    """Base of every exception this package raises."""


class Unavailable(ResilError):
    """The daemon could not be asked within the deadline.  cause is one of
    "timeout" (no answer in time), "connection" (no socket, refused, lost),
    "protocol" (the peer answered garbage), "backoff" (a recent connection
    failure: not tried), "stalled" (the daemon does not read: asyncio
    client, unsent requests over its bound)."""

    def __init__(self, cause, detail=""):
        self.cause = cause
        self.detail = detail
        super().__init__(cause + (": " + detail if detail else ""))


class RemoteError(ResilError):
    """The daemon answered with an error (PROTOCOL.md, Errors)."""

    def __init__(self, code, message=""):
        self.code = code
        self.message = message
        super().__init__("%s: %s" % (code, message))


class Denied(ResilError):
    """An acquire said no (raised by protect/guard/retrying).  key, reason
    (the daemon's reason, or "fallback" / "invalid_argument"),
    retry_after_ms (0: unknown), state and the whole decision."""

    def __init__(self, key, decision):
        self.key = key
        self.decision = decision
        self.reason = decision.reason
        self.retry_after_ms = decision.retry_after_ms
        self.state = decision.state
        msg = "%s denied: %s" % (key, decision.reason)
        if decision.retry_after_ms:
            msg += " (retry after %d ms)" % decision.retry_after_ms
        if decision.error:
            msg += " [%s]" % decision.error
        super().__init__(msg)


class CircuitOpen(Denied):
    """Breaker open, forced open, or half-open with its probes taken."""


class RateLimited(Denied):
    """A limiter has no tokens (or a venue pause is on)."""


class BulkheadFull(Denied):
    """No concurrency slot (and wait_ms ran out)."""


class HeartbeatLost(Denied):
    """The key's feed stopped beating."""


class FallbackDenied(Denied):
    """The daemon could not be asked and the fail mode is "closed"."""


class InvalidArgument(Denied, ValueError):
    """A caller bug: refused before sending (or the daemon's bad_request
    for an acquire).  Never a fallback allow."""


_DENIALS = {
    "circuit_open": CircuitOpen,
    "half_open_busy": CircuitOpen,
    "forced_open": CircuitOpen,
    "rate_limited": RateLimited,
    "bulkhead_full": BulkheadFull,
    "heartbeat_lost": HeartbeatLost,
    "fallback": FallbackDenied,
    "invalid_argument": InvalidArgument,
    "error": InvalidArgument,
}


def denial(key, decision):
    """The exception for a denied decision."""
    return _DENIALS.get(decision.reason, Denied)(key, decision)


class Decision:
    """What acquire decided.  Immutable; true when allowed.

    allow           go ahead
    permit          pass to report (0 when denied or a fallback)
    reason          the daemon's reason ("ok", "circuit_open", ...), or
                    "fallback" (the daemon was not consulted) or
                    "invalid_argument" (a caller bug: always a deny)
    retry_after_ms  when denied: not before this long; 0 when not known
    state           the breaker state, "unknown" for a fallback
    fallback        True when the daemon did not decide
    error           why it is a fallback or a refusal ("timeout",
                    "connection", "protocol", "backoff", "busy", the
                    argument check's text...), else None
    """

    __slots__ = ("allow", "permit", "reason", "retry_after_ms", "state",
                 "fallback", "error")

    def __init__(self, allow, permit=0, reason="ok", retry_after_ms=0,
                 state="unknown", fallback=False, error=None):
        s = object.__setattr__
        s(self, "allow", allow)
        s(self, "permit", permit)
        s(self, "reason", reason)
        s(self, "retry_after_ms", retry_after_ms)
        s(self, "state", state)
        s(self, "fallback", fallback)
        s(self, "error", error)

    def __setattr__(self, name, value):
        raise AttributeError("Decision is immutable")

    def __delattr__(self, name):
        raise AttributeError("Decision is immutable")

    def __bool__(self):
        return self.allow

    def __eq__(self, other):
        if not isinstance(other, Decision):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f)
                   for f in self.__slots__)

    def __hash__(self):
        return hash(tuple(getattr(self, f) for f in self.__slots__))

    def __repr__(self):
        return "Decision(%s)" % ", ".join(
            "%s=%r" % (f, getattr(self, f)) for f in self.__slots__)


def fallback(fail_mode, cause):
    return Decision(fail_mode == "open", 0, "fallback", 0, "unknown", True,
                    cause)


def invalid(why):
    return Decision(False, 0, "invalid_argument", 0, "unknown", True, why)


def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _ms(name, v, lo=0, hi=TIME_MAX_MS):
    """A duration in ms: an int, or a float rounded; None passes."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise InvalidArgument_("%s must be a number of ms" % name)
    v = int(round(v))
    if v < lo or v > hi:
        raise InvalidArgument_("%s must be in %d..%d" % (name, lo, hi))
    return v


class InvalidArgument_(Exception):
    """Internal: an argument check failed (message says which)."""


def check_key(key, name="key"):
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise InvalidArgument_("%s must match [A-Za-z0-9._:-]{1,128}: %r"
                               % (name, key))
    return key


def check_timeout(timeout_ms, default):
    """Seconds for a call: timeout_ms (ms, > 0) or the client's default."""
    if timeout_ms is None:
        return default
    if (isinstance(timeout_ms, bool) or
            not isinstance(timeout_ms, (int, float)) or
            not timeout_ms > 0 or timeout_ms > TIME_MAX_MS):
        raise InvalidArgument_("timeout_ms must be a number of ms > 0")
    return timeout_ms / 1000.0


def acquire_timeout(timeout_ms, wait_ms, default):
    """Seconds for an acquire: timeout_ms, or the client's default plus
    wait_ms when the acquire may park."""
    if timeout_ms is None and wait_ms:
        return default + wait_ms / 1000.0
    return check_timeout(timeout_ms, default)


def check_fail(fail, default):
    if fail is None:
        return default
    if fail not in FAIL_MODES:
        raise InvalidArgument_("fail must be 'open' or 'closed': %r" % (fail,))
    return fail


def acquire_params(key, cost, wait_ms, priority):
    check_key(key)
    if not _uint(cost) or not 1 <= cost <= COST_MAX:
        raise InvalidArgument_("cost must be an integer in 1..%d" % COST_MAX)
    if not _uint(wait_ms) or wait_ms > WAIT_MAX_MS:
        raise InvalidArgument_("wait_ms must be an integer in 0..%d"
                               % WAIT_MAX_MS)
    if priority not in PRIORITIES:
        raise InvalidArgument_("priority must be 'normal' or 'critical'")
    return {"key": key, "cost": cost, "wait_ms": wait_ms,
            "priority": priority}


def error_param(error):
    """error as report takes it: a class str or a map (SPEC 3)."""
    if isinstance(error, str):
        if not CLASS_RE.match(error):
            raise InvalidArgument_("error class must match "
                                   "[A-Za-z0-9._:-]{1,64}: %r" % error)
        return error
    if not isinstance(error, dict):
        raise InvalidArgument_("error must be a class str or a map")
    out = {}
    for k, v in error.items():
        if k not in ERROR_FIELDS:
            raise InvalidArgument_("error: unknown field %r" % (k,))
        if v is None:
            continue
        if k == "class":
            error_param(v)
        elif k == "message":
            if not isinstance(v, str):
                raise InvalidArgument_("error.message must be a str")
        elif k == "severity":
            if v not in SEVERITIES:
                raise InvalidArgument_("error.severity must be one of %s"
                                       % ", ".join(SEVERITIES))
        elif k == "transient":
            if not isinstance(v, bool):
                raise InvalidArgument_("error.transient must be a bool")
        else:
            v = _ms("error.retry_after_ms", v)
        out[k] = v
    if "class" not in out:
        raise InvalidArgument_("error: 'class' is required")
    return out


def report_params(key, permit, outcome, latency_ms, error, limit,
                  correlation_id, context, idempotent, attempt):
    check_key(key)
    p = {"key": key, "outcome": outcome}
    if outcome not in OUTCOMES:
        raise InvalidArgument_("outcome must be one of %s"
                               % ", ".join(OUTCOMES))
    if permit is not None:
        if not _uint(permit) or permit >= 1 << 64:
            raise InvalidArgument_("permit must be an unsigned integer")
        if permit:
            p["permit"] = permit
    if latency_ms is not None:
        p["latency_ms"] = _ms("latency_ms", latency_ms)
    if error is not None:
        p["error"] = error_param(error)
    if limit is not None:
        if not isinstance(limit, dict) or not limit or \
                set(limit) - {"remaining", "reset_ms"}:
            raise InvalidArgument_("limit must be a map of remaining, "
                                   "reset_ms")
        lim = {}
        for k, v in limit.items():
            if not _uint(v):
                raise InvalidArgument_("limit.%s must be an unsigned integer"
                                       % k)
            lim[k] = v
        p["limit"] = lim
    if attempt is not None:
        if not _uint(attempt) or not 1 <= attempt <= ATTEMPT_MAX:
            raise InvalidArgument_("attempt must be in 1..%d" % ATTEMPT_MAX)
        if attempt > 1:
            p["attempt"] = attempt
    if not isinstance(idempotent, bool):
        raise InvalidArgument_("idempotent must be a bool")
    if not idempotent:
        p["idempotent"] = False
    if correlation_id is not None:
        if not isinstance(correlation_id, str):
            raise InvalidArgument_("correlation_id must be a str")
        p["correlation_id"] = correlation_id
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidArgument_("context must be a map")
        p["context"] = context
    return p


def heartbeat_params(key, latency_ms):
    check_key(key)
    p = {"key": key}
    if latency_ms is not None:
        p["latency_ms"] = _ms("latency_ms", latency_ms)
    return p


def query_params(key, prefix, **more):
    """status/errors: key or prefix (not both), plus more arguments that
    are not None."""
    p = {}
    if key is not None and prefix is not None:
        raise InvalidArgument_("give key or prefix, not both")
    if key is not None:
        p["key"] = check_key(key)
    if prefix is not None:
        p["prefix"] = check_key(prefix, "prefix")
    for k, v in more.items():
        if v is not None:
            p[k] = v
    return p


def force_params(key, state, reason, ttl_ms):
    check_key(key)
    if state not in ("open", "closed", "disabled", "auto"):
        raise InvalidArgument_("state must be open, closed, disabled or auto")
    p = {"key": key, "state": state}
    if reason is not None:
        if not isinstance(reason, str):
            raise InvalidArgument_("reason must be a str")
        p["reason"] = reason
    if ttl_ms is not None:
        p["ttl_ms"] = _ms("ttl_ms", ttl_ms)
    return p


def request(msgid, method, params):
    return msgpack.packb([0, msgid, method, [params] if params else []],
                         **_packer_opts)


def notification(method, params):
    return msgpack.packb([2, method, [params] if params else []],
                         **_packer_opts)


def unpacker():
    # Strings the daemon sends are UTF-8 (peer text is escaped); a stray
    # byte must not turn an answer into garbage.
    return msgpack.Unpacker(raw=False, strict_map_key=False,
                            unicode_errors="surrogateescape",
                            max_buffer_size=MAX_ANSWER_BYTES)


class Garbage(Exception):
    """Internal: the peer sent something that is not resild's protocol."""


def classify_message(msg):
    """(msgid, error, result) for a response, None for a notification.
    Raises Garbage for anything else (the daemon sends nothing else)."""
    if type(msg) is list:
        if len(msg) == 4 and msg[0] == 1 and _uint(msg[1]):
            return msg[1], msg[2], msg[3]
        if len(msg) == 3 and msg[0] == 2:
            return None
    raise Garbage("not a response: %r" % (msg,)[:80])


def decode_decision(key, err, res, fail_mode):
    """The Decision for an acquire's answer.  Raises Garbage when it is
    not one."""
    if err is not None:
        if not isinstance(err, dict) or not isinstance(err.get("code"), str):
            raise Garbage("error is not a map with a code")
        code = err["code"]
        msg = err.get("message") or ""
        if code == "bad_request":
            # The caller's bug (a cost no limiter can grant): deny, so it
            # shows at once instead of trading unchecked.
            return Decision(False, 0, "error", 0, "unknown", False,
                            "bad_request: %s" % msg)
        # busy, too_many_keys: the daemon cannot decide.
        return fallback(fail_mode, code)
    if not isinstance(res, dict) or not isinstance(res.get("allow"), bool):
        raise Garbage("acquire result has no allow")
    permit = res.get("permit")
    retry = res.get("retry_after_ms")
    state = res.get("state")
    reason = res.get("reason")
    return Decision(res["allow"], permit if _uint(permit) else 0,
                    reason if isinstance(reason, str) else "",
                    retry if _uint(retry) else 0,
                    state if isinstance(state, str) else "", False, None)


def remote(err):
    """RemoteError for a daemon error, or Garbage."""
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        raise Garbage("error is not a map with a code")
    m = err.get("message")
    return RemoteError(err["code"], m if isinstance(m, str) else "")


# The daemon closes the connection after these errors.
CLOSING_ERRORS = ("protocol_error", "frame_too_large")
