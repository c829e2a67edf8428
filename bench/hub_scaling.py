"""Does the cost of one event, or of one subscribe, grow with everything else that is subscribed?

Two measurements, each printed with 0 and with N (default 10,000) other streams subscribed:
1. publish: one trade on `trade:binance:BTC/USDT` (one native client on it) through `Hub.publish`
   — index look-ups, encode once, queue into the client's outbox;
2. subscribe: one client subscribes and then unsubscribes one channel, through the hub, the router
   and the real adapter of the provider routed for it (a `LuziaAdapter` for tickers, a
   `CoinApiAdapter` for trades), whose planners do their bookkeeping synchronously (the adapters
   are not running: nothing is sent, which is exactly the work in question).
Figures are medians of repeated timed batches, in microseconds per operation; the last column is
the ratio (≈1 means "does not grow"). In-process, no sockets; every loop is bounded.

    python bench/hub_scaling.py [--others 10000] [--ops 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from decimal import Decimal

from gateway.dialects.native import JsonCodec
from gateway.hub import CodecSubscriber, Hub
from gateway.outbox import Outbox
from providers.base import Source
from providers.registry import KINDS
from schemas import Trade
from schemas.streams import StreamKey

ROUTES = {"trade": ["coinapi"], "quote": ["coinapi"], "ticker": ["luzia"], "book": ["coinapi"]}
BTC_TRADES = StreamKey("trade", "binance", "BTC/USDT")


class Client(CodecSubscriber):
    def __init__(self) -> None:
        self.outbox = Outbox(limit=1 << 20)
        self.codec = JsonCodec()


def _sink(event: object) -> None:
    pass


def _hub() -> tuple[Hub, dict[str, Source]]:
    hub = Hub(ROUTES)
    sources: dict[str, Source] = {}
    for name in ("luzia", "coinapi"):
        kind = KINDS[name]
        policy = kind.policy_type()()
        sources[name] = kind.make_adapter(name, f"ws://{name}.invalid/", kind.emulator_key, hub.publish, policy)
        hub.add_source(sources[name])
    return hub, sources


def _crowd(hub: Hub, datatype: str, others: int) -> None:
    """`others` streams of `datatype`, one client each, on exchanges the measured key is not on."""
    with hub.batch():
        for i in range(others):
            hub.subscribe(Client(), StreamKey(datatype, f"ex{i % 50}", f"C{i}/USDT"))


def _median_us(run: Callable[[int], None], ops: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(ops)
        samples.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(samples)


def publish_cost(others: int, ops: int, repeats: int) -> float:
    hub, _ = _hub()
    _crowd(hub, "trade", others)
    client = Client()
    hub.subscribe(client, BTC_TRADES)
    trade = Trade(provider="coinapi", ts_gateway=1, exchange="binance", symbol="BTC/USDT",
                  price=Decimal("67000.5"), size=Decimal("0.01"), ts_exchange=1)

    def run(n: int) -> None:
        for _ in range(n):
            hub.publish(trade)
        client.outbox.take()

    return _median_us(run, ops, repeats)


def subscribe_cost(datatype: str, others: int, ops: int, repeats: int) -> float:
    hub, _ = _hub()
    _crowd(hub, datatype, others)
    client = Client()
    key = StreamKey(datatype, "binance", "BTC/USDT")

    def run(n: int) -> None:
        for _ in range(n):
            hub.subscribe(client, key)
            hub.unsubscribe(client, key)

    return _median_us(run, ops, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--others", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = [
        ("publish one trade (1 client)", lambda n: publish_cost(n, args.ops, args.repeats)),
        ("subscribe+unsubscribe, ticker → luzia", lambda n: subscribe_cost("ticker", n, args.ops // 4, args.repeats)),
        ("subscribe+unsubscribe, trade → coinapi", lambda n: subscribe_cost("trade", n, args.ops // 4, args.repeats)),
    ]
    print(f"{'µs per operation':42} {'0 others':>10} {f'{args.others:,} others':>14} {'ratio':>7}")
    for label, measure in rows:
        alone, crowded = measure(0), measure(args.others)
        print(f"{label:42} {alone:10.2f} {crowded:14.2f} {crowded / alone:7.2f}")


if __name__ == "__main__":
    main()
