"""CoinAPI V1 frames of normalized events, shared by every CoinAPI client of one gateway. Pure.

Owns: the CoinAPI symbol id of each canonical instrument (cached), the `sequence` numbers — one
counter per (type, symbol_id) for the endpoint's life — and the codecs the hub encodes with.
Each event becomes each CoinAPI message at most once, however many codecs ask (the last event's
frames are kept), so every client of a stream sees the same, consecutive numbers unless the
gateway dropped something for it (its overflow policy, its `subscribe_update_limit_ms_*`): the
jump is CoinAPI's only loss signal, which is why a number is only taken for a frame a client is
about to receive.
Must never: do I/O, or keep per-client state (that is the session's).

Codecs: the hub caches one frame per event per codec name. `CoinApiCodec` serves every client
whose book data types share one filter (always the case after one `hello`); its name says which
book messages it writes. A client that asked for different book depths on different symbols gets a
`ScopedCodec` of its own, which picks the book messages per symbol (the frames still come from
the shared cache, so nothing is encoded twice).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Final

from gateway.wsframe import text_frame
from providers.coinapi import denormalize, wire
from providers.coinapi.symbols import SymbolMapper
from schemas import Book, Event, Quote, Trade
from schemas.instruments import InstrumentError

#: Symbol ids cached per endpoint; beyond this many the cache starts over (it only guards
#: against an unbounded stream of instruments).
_CACHE_LIMIT: Final = 65_536
_MISSING: Final = object()
_codec_serials = count(1)


def control_frame(message: wire.ServerMessage) -> bytes:
    """A complete text frame of a message that carries no sequence (heartbeat, error, reconnect)."""
    return text_frame(wire.encode_server_bytes(message))


HEARTBEAT_FRAME: Final = control_frame(wire.Hearbeat())


def producible(event: Book, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The book messages `event` has the depth for: `bookN` needs N levels on a side; `book` (every
    level, as a snapshot) is always producible."""
    depth = max(len(event.bids), len(event.asks))
    return tuple(kind for kind in kinds if denormalize.BOOK_DEPTHS.get(kind, 0) <= depth)


class CoinApiFrames:
    def __init__(self, mapper: SymbolMapper) -> None:
        self.mapper = mapper
        self._ids: dict[tuple[str, str], str | None] = {}
        self._sequences: dict[tuple[str, str], int] = {}
        self._event: Event | None = None
        self._made: dict[str, bytes | None] = {}

    def symbol_id(self, exchange: str, symbol: str) -> str | None:
        """`binance`, `BTC/USDT` → `BINANCE_SPOT_BTC_USDT` (None for a symbol with no canonical form)."""
        found = self._ids.get((exchange, symbol), _MISSING)
        if found is _MISSING:
            if len(self._ids) >= _CACHE_LIMIT:
                self._ids.clear()
            try:
                found = self.mapper.symbol_id(exchange, symbol)
            except InstrumentError:
                found = None
            self._ids[(exchange, symbol)] = found
        return found  # type: ignore[return-value]

    def frame(self, event: Trade | Quote | Book, kind: str) -> bytes | None:
        """The frame of `event` as CoinAPI message `kind`; built (and numbered) once per event."""
        if event is not self._event:
            self._event, self._made = event, {}
        made = self._made.get(kind, _MISSING)
        if made is _MISSING:
            made = self._made[kind] = self._build(event, kind)
        return made  # type: ignore[return-value]

    def books(self, event: Book, kinds: tuple[str, ...]) -> bytes | None:
        """The frames of every book message in `kinds` the event has the depth for, back to back."""
        frames = [self.frame(event, kind) for kind in producible(event, kinds)]
        return b"".join(f for f in frames if f is not None) or None

    def next_sequence(self, kind: str, symbol_id: str) -> int:
        number = self._sequences[(kind, symbol_id)] = self._sequences.get((kind, symbol_id), 0) + 1
        return number

    def _build(self, event: Trade | Quote | Book, kind: str) -> bytes | None:
        symbol_id = self.symbol_id(event.exchange, event.symbol)
        if symbol_id is None:
            return None
        sequence = self.next_sequence(kind, symbol_id)
        if kind == "trade":
            message = denormalize.trade_message(event, symbol_id, sequence)  # type: ignore[arg-type]
        elif kind == "quote":
            message = denormalize.quote_message(event, symbol_id, sequence)  # type: ignore[arg-type]
        else:
            message = denormalize.book_message(event, kind, symbol_id, sequence)  # type: ignore[arg-type]
        return text_frame(wire.encode_server_bytes(message))


class CoinApiCodec:
    """The codec of the clients whose book data types (`book_kinds`) share one filter."""

    def __init__(self, frames: CoinApiFrames, book_kinds: tuple[str, ...] = ()) -> None:
        self.name = "coinapi" + (":" + "+".join(book_kinds) if book_kinds else "")
        self.book_kinds = book_kinds
        self._frames = frames

    def frame(self, event: Event) -> bytes | None:
        cls = event.__class__
        if cls is Trade:
            return self._frames.frame(event, "trade")  # type: ignore[arg-type]
        if cls is Quote:
            return self._frames.frame(event, "quote")  # type: ignore[arg-type]
        if cls is Book:
            return self._frames.books(event, self.book_kinds)  # type: ignore[arg-type]
        return None  # tickers, statuses and gaps have no CoinAPI V1 message


class ScopedCodec(CoinApiCodec):
    """One client's codec when its book depths differ by symbol: `kinds_of(event)` says which."""

    def __init__(self, frames: CoinApiFrames, kinds_of: Callable[[Book], tuple[str, ...]]) -> None:
        super().__init__(frames)
        self.name = f"coinapi#{next(_codec_serials)}"
        self._kinds_of = kinds_of

    def frame(self, event: Event) -> bytes | None:
        if event.__class__ is Book:
            return self._frames.books(event, self._kinds_of(event))  # type: ignore[arg-type]
        return super().frame(event)
