"""Normalized events → CoinAPI V1 wire messages, for the gateway's CoinAPI-compatible endpoint
(legacy CoinAPI clients pointed at the gateway). The inverse of `normalize` where one exists.

Owns: the field mapping back to CoinAPI's names and conventions (taker sides, "size 0 means
unknown", 7-digit times). Must never: do I/O, or keep state (sequences are the caller's: a
`server.Sequencer`).

Where CoinAPI needs a value the event does not have: `time_exchange` falls back to the provider's
time, then to the gateway's; `time_coinapi` falls back to the gateway's receive time. Tickers have
no CoinAPI V1 message and are not mapped. A `Book` (a complete snapshot of its depth) becomes a
`book5`/`book20`/`book50` of its top levels, or a `book` message with `is_snapshot: true` (CoinAPI
clients must accept a new snapshot mid-stream as replacing their book).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from providers.coinapi import wire
from schemas import Book, BookLevel, Quote, Trade
from schemas.timeutil import format_iso_ns

_TAKER_SIDES: Final = {"buy": "BUY", "sell": "SELL", "unknown": "UNKNOWN"}
_ZERO: Final = Decimal(0)
#: Fixed-depth book messages and their depth.
BOOK_DEPTHS: Final = {"book5": 5, "book20": 20, "book50": 50}
_BOOK_TOPS: Final[dict[str, type[wire.BookTop]]] = {"book5": wire.Book5, "book20": wire.Book20, "book50": wire.Book50}


def _times(event: Trade | Quote | Book) -> tuple[str, str]:
    exchange = event.ts_exchange if event.ts_exchange is not None else event.ts_provider
    coinapi = event.ts_provider if event.ts_provider is not None else event.ts_gateway
    return format_iso_ns(exchange if exchange is not None else event.ts_gateway), format_iso_ns(coinapi)


def trade_message(event: Trade, symbol_id: str, sequence: int) -> wire.Trade:
    exchange_time, coinapi_time = _times(event)
    return wire.Trade(
        time_exchange=exchange_time,
        time_coinapi=coinapi_time,
        uuid=event.trade_id,
        price=event.price,
        size=event.size,
        taker_side=_TAKER_SIDES[event.side],
        symbol_id=symbol_id,
        sequence=sequence,
    )


def quote_message(event: Quote, symbol_id: str, sequence: int) -> wire.Quote:
    """An unknown size is 0 on CoinAPI's wire."""
    exchange_time, coinapi_time = _times(event)
    return wire.Quote(
        symbol_id=symbol_id,
        sequence=sequence,
        time_exchange=exchange_time,
        time_coinapi=coinapi_time,
        ask_price=event.ask_price,
        ask_size=event.ask_size if event.ask_size is not None else _ZERO,
        bid_price=event.bid_price,
        bid_size=event.bid_size if event.bid_size is not None else _ZERO,
    )


def _levels(levels: Sequence[BookLevel], depth: int | None) -> list[wire.BookLevel]:
    kept = levels if depth is None else levels[:depth]
    return [wire.BookLevel(level.price, level.size) for level in kept]


def book_message(event: Book, kind: str, symbol_id: str, sequence: int) -> wire.Book | wire.BookTop:
    """`kind` is `book5`, `book20` or `book50` (the top levels) or `book` (every level, as a snapshot)."""
    exchange_time, coinapi_time = _times(event)
    depth = BOOK_DEPTHS.get(kind)
    asks, bids = _levels(event.asks, depth), _levels(event.bids, depth)
    if depth is None:
        return wire.Book(
            symbol_id=symbol_id, sequence=sequence, time_exchange=exchange_time, time_coinapi=coinapi_time,
            is_snapshot=True, asks=asks, bids=bids,
        )
    return _BOOK_TOPS[kind](
        symbol_id=symbol_id, sequence=sequence, time_exchange=exchange_time, time_coinapi=coinapi_time, asks=asks, bids=bids
    )
