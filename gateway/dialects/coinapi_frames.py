"""CoinAPI V1 frames of normalized events, shared by every CoinAPI client of one gateway. Pure.

Owns: the CoinAPI symbol id of each canonical instrument (cached), the `sequence` numbers — one
`providers.coinapi.server.Sequencer` for the endpoint's life, so one counter per (type, symbol_id)
— and each event's frames. Each event becomes each CoinAPI message at most once, however many
clients take it (the last event's frames are kept), so every client of a stream sees the same,
consecutive numbers unless the gateway dropped something for it (its overflow policy, its
`subscribe_update_limit_ms_*`): the jump is CoinAPI's only loss signal, which is why a number is
only taken for a frame a client is about to receive (or to hold for its update limit).
This is the sessions' delivery step's shared state, not a hub `Codec`: codecs are pure, and
numbering is not.
Must never: do I/O, or keep per-client state (that is the session's).
"""

from __future__ import annotations

from typing import Final

from gateway.wsframe import text_frame
from providers.coinapi import denormalize, wire
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.server import Sequencer
from schemas import Book, Quote, Trade
from schemas.instruments import InstrumentError

#: Symbol ids cached per endpoint; beyond this many the cache starts over (it only guards
#: against an unbounded stream of instruments).
_CACHE_LIMIT: Final = 65_536


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
        self.sequencer = Sequencer()
        self.built = 0  # frames encoded (each event × message kind once): what sharing saves shows here
        self._ids: dict[tuple[str, str], str | None] = {}
        self._event: object = None
        self._made: dict[str, bytes | None] = {}

    def symbol_id(self, exchange: str, symbol: str) -> str | None:
        """`binance`, `BTC/USDT` → `BINANCE_SPOT_BTC_USDT` (None for a symbol with no canonical form)."""
        key = (exchange, symbol)
        if key in self._ids:
            return self._ids[key]
        if len(self._ids) >= _CACHE_LIMIT:
            self._ids.clear()
        try:
            found: str | None = self.mapper.symbol_id(exchange, symbol)
        except InstrumentError:
            found = None
        self._ids[key] = found
        return found

    def frame(self, event: Trade | Quote | Book, kind: str) -> bytes | None:
        """The frame of `event` as CoinAPI message `kind`; built (and numbered) once per event."""
        if event is not self._event:
            self._event, self._made = event, {}
        if kind not in self._made:
            self._made[kind] = self._build(event, kind)
        return self._made[kind]

    def books(self, event: Book, kinds: tuple[str, ...]) -> bytes | None:
        """The frames of every book message in `kinds`, back to back (the caller checked the depth)."""
        frames = [self.frame(event, kind) for kind in kinds]
        return b"".join(f for f in frames if f is not None) or None

    def _build(self, event: Trade | Quote | Book, kind: str) -> bytes | None:
        symbol_id = self.symbol_id(event.exchange, event.symbol)
        if symbol_id is None:
            return None
        sequence = self.sequencer.next(kind, symbol_id)
        message: wire.ServerMessage
        if isinstance(event, Trade):
            message = denormalize.trade_message(event, symbol_id, sequence)
        elif isinstance(event, Quote):
            message = denormalize.quote_message(event, symbol_id, sequence)
        else:
            message = denormalize.book_message(event, kind, symbol_id, sequence)
        self.built += 1
        return text_frame(wire.encode_server_bytes(message))
