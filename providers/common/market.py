"""The emulated market both emulators publish: a deterministic, seeded random walk per instrument.

Each instrument walks with its own `random.Random` seeded from (seed, exchange, symbol), so what
one instrument does never depends on which others are subscribed or in what order. Prices and sizes
are Decimal on the instrument's tick and lot grid; rolling 24 h statistics start from a fixed open.
Pure: the caller passes the time in (int ns).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from decimal import Decimal

#: Start prices for assets the examples use; anything else starts at 100 in its quote currency.
_START_PRICES = {"BTC": Decimal("67000"), "ETH": Decimal("3500"), "SOL": Decimal("150"), "XRP": Decimal("0.6")}


@dataclass(frozen=True)
class Instrument:
    exchange: str  # canonical lower-case
    symbol: str  # canonical BASE/QUOTE

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]


#: The default market: every symbol the seeds' examples use, and a few more.
DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = tuple(
    Instrument(exchange, symbol)
    for exchange, symbol in [
        ("binance", "BTC/USDT"),
        ("binance", "ETH/USDT"),
        ("binance", "SOL/USDT"),
        ("coinbase", "BTC/USD"),
        ("coinbase", "ETH/USD"),
        ("coinbase", "ETH/USDT"),
        ("bitstamp", "BTC/USD"),
        ("bitfinex", "BTC/USD"),
        ("bitfinex", "BTC/LTC"),
        ("kraken", "BTC/USD"),
        ("okx", "BTC/USDT"),
    ]
)


@dataclass(frozen=True)
class Tick:
    """One market step of one instrument: a trade that moved the price, and the book top after it."""

    instrument: Instrument
    time_ns: int
    trade_id: int
    price: Decimal
    size: Decimal
    taker_buys: bool
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    open_24h: Decimal
    high_24h: Decimal
    low_24h: Decimal
    volume_24h: Decimal
    quote_volume_24h: Decimal


@dataclass
class _Walk:
    rng: random.Random
    tick_size: Decimal
    price: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    trades: int = 0


def _start_price(instrument: Instrument) -> Decimal:
    price = _START_PRICES.get(instrument.base, Decimal(100))
    if instrument.quote == "LTC":  # priced in another coin, not a dollar
        price = price / Decimal(90)
    return price.quantize(Decimal("0.01") if price > 10 else Decimal("0.000001"))


@dataclass
class Market:
    seed: int = 1
    _walks: dict[Instrument, _Walk] = field(default_factory=dict)

    def _walk(self, instrument: Instrument) -> _Walk:
        walk = self._walks.get(instrument)
        if walk is None:
            key = f"{self.seed}:{instrument.exchange}:{instrument.symbol}".encode()
            start = _start_price(instrument)
            tick_size = Decimal("0.01") if start > 10 else Decimal("0.000001")
            walk = _Walk(random.Random(zlib.crc32(key)), tick_size, start, start, start, start)
            self._walks[instrument] = walk
        return walk

    def step(self, instrument: Instrument, time_ns: int) -> Tick:
        """Advance one instrument by one trade."""
        walk = self._walk(instrument)
        rng = walk.rng
        move = rng.randint(-3, 3) * walk.tick_size
        walk.price = max(walk.tick_size, walk.price + move)
        size = Decimal(rng.randint(1, 50_000)).scaleb(-5)  # 0.00001 .. 0.5, on a 1e-5 lot grid
        walk.high, walk.low = max(walk.high, walk.price), min(walk.low, walk.price)
        walk.volume += size
        walk.quote_volume = (walk.quote_volume + size * walk.price).quantize(walk.tick_size)
        walk.trades += 1
        spread = walk.tick_size * rng.randint(1, 4)
        return Tick(
            instrument=instrument,
            time_ns=time_ns,
            trade_id=walk.trades,
            price=walk.price,
            size=size,
            taker_buys=move >= 0,
            bid=walk.price - spread if walk.price > spread else walk.price,
            bid_size=Decimal(rng.randint(1, 900_000)).scaleb(-5),
            ask=walk.price + spread,
            ask_size=Decimal(rng.randint(1, 900_000)).scaleb(-5),
            open_24h=walk.open,
            high_24h=walk.high,
            low_24h=walk.low,
            volume_24h=walk.volume,
            quote_volume_24h=walk.quote_volume,
        )
