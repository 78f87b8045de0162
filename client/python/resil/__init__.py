"""resil - the Python client of resild, the resilience sidecar.

    import resil

    client = resil.Client()                 # socket resolved as SPEC 8 says

    @client.protect("binance.orders")
    def place(order):
        return exchange.create_order(**order)

Client is synchronous and thread-safe; AsyncClient is the asyncio client
(one pipelined connection for every coroutine).  Every call has a deadline
(default 5 ms); when the daemon cannot answer in time, acquire returns the
fail mode's decision ("open" allows, "closed" denies) with fallback=True.
See README.md ("Python") and the docstrings of Client, AsyncClient,
guard.Guard, guard.classify_exception and retry.retrying.
"""

from ._common import (BulkheadFull, CircuitOpen, Decision, Denied,
                      FallbackDenied, HeartbeatLost, InvalidArgument,
                      RateLimited, RemoteError, ResilError, Unavailable,
                      resolve_socket)
from .aio import AsyncClient
from .client import Client
from .guard import (DEFAULT_ERRORS, Call, Guard, classify_exception,
                    protect, retry_after_ms)
from .retry import Heartbeat, heartbeat_task, retrying

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "BulkheadFull", "Call", "CircuitOpen", "Client",
    "DEFAULT_ERRORS", "Decision", "Denied", "FallbackDenied", "Guard",
    "Heartbeat", "HeartbeatLost", "InvalidArgument", "RateLimited",
    "RemoteError", "ResilError", "Unavailable", "classify_exception",
    "heartbeat_task", "protect", "resolve_socket", "retry_after_ms",
    "retrying",
]
