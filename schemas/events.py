"""The normalized events: one msgspec tagged union on `type`.

Rules:
- Prices and sizes are `Decimal` end to end; encoders put them on the wire as decimal strings.
- Times are int nanoseconds since the Unix epoch: `ts_exchange` (when the exchange says it happened),
  `ts_provider` (when the provider stamped it, where it does), `ts_gateway` (when we received it).
- A field nobody told us is `None`, never a made-up 0.
- `provider` is the *configured* provider name (a key of `[providers]`), not its kind.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Literal

import msgspec

Side = Literal["buy", "sell", "unknown"]
StatusState = Literal["connected", "disconnected", "stale", "recovered", "rejected"]
GapCause = Literal["reconnect", "stale", "sequence", "client_overflow", "provider_overflow"]


class _Base(msgspec.Struct, kw_only=True, tag_field="type", frozen=True):
    provider: str
    ts_gateway: int


class MarketEvent(_Base, kw_only=True, frozen=True):
    """Fields every market event has; never sent on its own."""

    exchange: str  # canonical lower-case id, e.g. "binance"
    symbol: str  # canonical BASE/QUOTE, e.g. "BTC/USDT"
    ts_exchange: int | None = None
    ts_provider: int | None = None
    sequence: int | None = None  # the provider's own sequence number, where it has one


class Trade(MarketEvent, tag="trade", kw_only=True, frozen=True):
    price: Decimal
    size: Decimal
    side: Side = "unknown"  # the taker's side
    trade_id: str | None = None


class Quote(MarketEvent, tag="quote", kw_only=True, frozen=True):
    """Best bid and offer. A size the provider does not give is None."""

    bid_price: Decimal | None = None
    bid_size: Decimal | None = None
    ask_price: Decimal | None = None
    ask_size: Decimal | None = None


class Ticker(MarketEvent, tag="ticker", kw_only=True, frozen=True):
    """Last price, best bid/ask and rolling 24-hour statistics, each where known."""

    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    volume: Decimal | None = None  # base-asset volume over 24 h
    quote_volume: Decimal | None = None  # quote-asset volume over 24 h
    change: Decimal | None = None  # last - open
    change_percent: Decimal | None = None


class BookLevel(msgspec.Struct, array_like=True, frozen=True):
    """One price level, on the wire as `["price", "size"]`."""

    price: Decimal
    size: Decimal


class Book(MarketEvent, tag="book", kw_only=True, frozen=True):
    """The top of the order book, best level first: each event is a complete snapshot of its depth."""

    bids: tuple[BookLevel, ...] = ()
    asks: tuple[BookLevel, ...] = ()


class Status(_Base, tag="status", kw_only=True, frozen=True):
    """A provider, one of its connections, or one stream changed state."""

    state: StatusState
    stream: str | None = None  # a native channel ("trade:binance:BTC/USDT") when one stream is meant
    reason: str | None = None


class Gap(_Base, tag="gap", kw_only=True, frozen=True):
    """Data of one stream may be missing between two times (inclusive), and why."""

    datatype: str
    exchange: str
    symbol: str | None  # None: every symbol of the exchange
    from_ts: int
    to_ts: int
    cause: GapCause
    missed: int | None = None  # how many events were dropped, where counted


Event = Trade | Quote | Ticker | Book | Status | Gap

#: The market data types a client can subscribe to, by their `type` tag.
DATATYPES: Final = ("trade", "quote", "ticker", "book")

#: Module-level codecs: build them once, they are the hot path.
json_encoder: Final = msgspec.json.Encoder()
msgpack_encoder: Final = msgspec.msgpack.Encoder()
event_decoder: Final = msgspec.json.Decoder(Event)
