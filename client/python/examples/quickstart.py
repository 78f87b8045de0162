import resil

client = resil.Client()  # socket as resild resolves it; 5 ms deadline, fail open


@client.protect("binance.orders")
def place_order(symbol, qty):
    return {"symbol": symbol, "qty": qty}  # your exchange call here


try:
    print(place_order("BTC/USDT", 0.01))
except resil.Denied as e:  # CircuitOpen, RateLimited, BulkheadFull, ...
    print("not now:", e.reason, "- retry in", e.retry_after_ms, "ms")
