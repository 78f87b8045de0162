#!/usr/bin/python3
"""service.py - a small trading service protected by resild (asyncio).

  - an order placer under @client.protect: denied calls raise resil.Denied
    subclasses, exceptions are classified and reported;
  - a websocket-like feed that beats for its key on every message, so an
    acquire on it is denied with heartbeat_lost once the feed goes quiet;
  - a balance query retried under the daemon's advice (resil.retrying).

The "exchange" is simulated (ccxt-like exception names, no ccxt needed).
Start a daemon first (`resild`, or `resild -s /tmp/x.sock` and
RESILD_SOCKET=/tmp/x.sock), then: /usr/bin/python3 service.py
"""

import asyncio
import random

import resil


class NetworkError(Exception):  # ccxt's names: the mapping is by name
    pass


class RequestTimeout(NetworkError):
    pass


class InsufficientFunds(Exception):
    pass


client = resil.AsyncClient(timeout_ms=5, fail="open")


@client.protect("demo.orders", cost=1)
async def place_order(symbol, qty):
    await asyncio.sleep(0.002)  # the venue round trip
    r = random.random()
    if r < 0.1:
        raise RequestTimeout("no answer in 10 s")
    if r < 0.15:
        raise InsufficientFunds("balance too low")
    return {"id": random.randrange(1 << 30), "symbol": symbol, "qty": qty}


async def fetch_balance():
    await asyncio.sleep(0.001)
    if random.random() < 0.3:
        raise NetworkError("connection reset")
    return {"USDT": 1000}


async def feed(messages):
    """A feed: a heartbeat per message received (notification)."""
    for _ in range(messages):
        await asyncio.sleep(0.01)  # a message arrives
        await client.heartbeat("demo.ws")


async def main():
    # Connect once at start-up with a generous deadline; trading calls
    # then keep the 5 ms one.
    print("ping:", await client.ping(timeout_ms=1000))
    feed_task = asyncio.ensure_future(feed(50))
    for i in range(20):
        try:
            order = await place_order("BTC/USDT", 0.01)
            print("order placed", order["id"])
        except resil.Denied as e:  # CircuitOpen, RateLimited, ...
            print("not now:", e.reason, "retry after", e.retry_after_ms, "ms")
        except (NetworkError, InsufficientFunds) as e:
            print("order failed:", type(e).__name__, e)
    try:
        bal = await resil.retrying(client, "demo.balance", fetch_balance)
        print("balance:", bal)
    except NetworkError as e:
        print("balance failed after the advised retries:", e)
    await feed_task
    st = await client.status(key="demo.orders", timeout_ms=1000)
    print("demo.orders:", st["keys"][0]["state"])
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
