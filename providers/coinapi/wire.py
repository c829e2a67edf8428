"""CoinAPI WebSocket V1 messages as msgspec Structs, with CoinAPI's own field names.

Owns: the shapes of every server→client and client→server message, one module-level decoder per
direction, and the encoders (the emulator's output puts `type` last, like the live server).
Must never: normalize (that is `normalize.py`), do I/O, or reject a frame for fields it does not
know (no `forbid_unknown_fields`: CoinAPI adds fields). The one convention of every provider
package (`providers.common.errors`): a decoder *returns* `UnknownMessage` for a well-formed message
of a type we do not know (count it, skip it) and *raises* `MalformedFrame` for anything else that
does not fit.

Prices and sizes are `Decimal`: msgspec parses a JSON number into a Decimal from its text, so
`95495.96` becomes `Decimal('95495.96')` exactly (never via float). Times stay the wire's
ISO-8601 strings here; `normalize` converts them to int ns exactly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from providers.common.errors import MalformedFrame, UnknownMessage

# ---------------------------------------------------------------------------- server → client


class _ServerMessage(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of every server message; `omit_defaults` keeps the emulator's frames compact."""


class Trade(_ServerMessage, tag="trade", kw_only=True, omit_defaults=True):
    # Field order is the live server's, so the emulator's frames look like captured ones.
    time_exchange: str
    time_coinapi: str
    uuid: str | None = None
    price: Decimal
    size: Decimal  # 0 marks an index tick, not a trade
    taker_side: str = "UNKNOWN"  # BUY | SELL | BUY_ESTIMATED | SELL_ESTIMATED | UNKNOWN
    symbol_id: str
    sequence: int | None = None


class Quote(_ServerMessage, tag="quote", kw_only=True, omit_defaults=True):
    symbol_id: str
    sequence: int | None = None
    time_exchange: str
    time_coinapi: str
    ask_price: Decimal | None = None
    ask_size: Decimal | None = None  # 0 means unknown
    bid_price: Decimal | None = None
    bid_size: Decimal | None = None


class BookLevel(msgspec.Struct):
    price: Decimal
    size: Decimal  # in a delta, 0 removes the level


class Book(_ServerMessage, tag="book", kw_only=True, omit_defaults=False):
    """Full L2: a snapshot, then deltas (`is_snapshot` false) carrying changed levels. Books are
    encoded with every field (`omit_defaults=False`): an empty side is `[]`, never left out."""

    symbol_id: str
    sequence: int | None = None
    time_exchange: str
    time_coinapi: str
    is_snapshot: bool | None = None  # None only if a server left it out (never omitted when set)
    asks: list[BookLevel] = []
    bids: list[BookLevel] = []


class _BookTop(_ServerMessage, kw_only=True, omit_defaults=False):
    """The top N levels, always complete (no deltas); an empty side is encoded as `[]`."""

    symbol_id: str
    sequence: int | None = None
    time_exchange: str
    time_coinapi: str
    asks: list[BookLevel] = []
    bids: list[BookLevel] = []


class Book5(_BookTop, tag="book5", kw_only=True, omit_defaults=False):
    pass


class Book20(_BookTop, tag="book20", kw_only=True, omit_defaults=False):
    pass


class Book50(_BookTop, tag="book50", kw_only=True, omit_defaults=False):
    pass


class Ohlcv(_ServerMessage, tag="ohlcv", kw_only=True, omit_defaults=True):
    """One OHLCV period, sent when it closes and every 5 s while it is open."""

    symbol_id: str
    sequence: int | None = None
    period_id: str | None = None  # may be absent; the period length then tells
    time_period_start: str
    time_period_end: str
    time_open: str | None = None
    time_close: str | None = None
    price_open: Decimal | None = None
    price_high: Decimal | None = None
    price_low: Decimal | None = None
    price_close: Decimal | None = None
    volume_traded: Decimal | None = None
    trades_count: int | None = None


class Hearbeat(_ServerMessage, tag="hearbeat", kw_only=True, omit_defaults=True):
    """The heartbeat. The wire spelling really is `hearbeat`: the official SDKs depend on it."""


class Reconnect(_ServerMessage, tag="reconnect", kw_only=True, omit_defaults=True):
    """The server will close this connection within `within_seconds`: open a new one first."""

    within_seconds: int | float
    before_time: str | None = None


class Error(_ServerMessage, tag="error", kw_only=True, omit_defaults=True):
    """Always terminal: the server closes the connection right after it."""

    message: str


ServerMessage = Trade | Quote | Book | Book5 | Book20 | Book50 | Ohlcv | Hearbeat | Reconnect | Error
BookTop = Book5 | Book20 | Book50
_SERVER_CLASSES: Final[tuple[type[ServerMessage], ...]] = (
    Trade, Quote, Book, Book5, Book20, Book50, Ohlcv, Hearbeat, Reconnect, Error
)


def tag_of(cls: type[msgspec.Struct]) -> str:
    """A message class's `type` on the wire."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


SERVER_TYPES: Final = frozenset(tag_of(cls) for cls in _SERVER_CLASSES)

# ---------------------------------------------------------------------------- client → server


class _ClientMessage(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """`hello` replaces the subscription scope, `subscribe` adds to it, `unsubscribe` removes."""

    apikey: str | None = None
    heartbeat: bool = False
    subscribe_data_type: list[str] | None = None  # required by the server; checked there
    subscribe_filter_symbol_id: list[str] | None = None
    subscribe_filter_exchange_id: list[str] | None = None
    subscribe_filter_asset_id: list[str] | None = None
    subscribe_filter_period_id: list[str] | None = None
    subscribe_update_limit_ms_quote: int | None = None
    subscribe_update_limit_ms_book_snapshot: int | None = None


class Hello(_ClientMessage, tag="hello", kw_only=True, omit_defaults=True):
    pass


class Subscribe(_ClientMessage, tag="subscribe", kw_only=True, omit_defaults=True):
    pass


class Unsubscribe(_ClientMessage, tag="unsubscribe", kw_only=True, omit_defaults=True):
    pass


ClientMessage = Hello | Subscribe | Unsubscribe
CLIENT_TYPES: Final = frozenset({"hello", "subscribe", "unsubscribe"})

# ---------------------------------------------------------------------------- codecs


class _Envelope(msgspec.Struct):
    """Only read on the error path, to tell an unknown type from a malformed frame."""

    type: str | None = None


_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_client_decoder: Final = msgspec.json.Decoder(ClientMessage)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
# The live server sends prices as JSON numbers; the default would write Decimal as a string.
_encoder: Final = msgspec.json.Encoder(decimal_format="number")


def _unknown_or_malformed(frame: bytes | str, error: msgspec.DecodeError, known: frozenset[str]) -> UnknownMessage:
    """The `UnknownMessage` of a well-formed object of an unknown type; raises MalformedFrame otherwise."""
    try:
        envelope = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, RecursionError):
        raise MalformedFrame(str(error)) from None
    if envelope.type is not None and envelope.type not in known:
        return UnknownMessage(envelope.type)
    raise MalformedFrame(str(error)) from None


def decode_server(frame: bytes | str) -> ServerMessage | UnknownMessage:
    """One server frame → its Struct, or `UnknownMessage`; raises MalformedFrame."""
    try:
        return _server_decoder.decode(frame)
    except msgspec.DecodeError as exc:
        return _unknown_or_malformed(frame, exc, SERVER_TYPES)
    except RecursionError:  # msgspec's answer to deeply nested JSON, not a DecodeError
        raise MalformedFrame("nested too deeply") from None


def decode_client(frame: bytes | str) -> ClientMessage | UnknownMessage:
    """One client frame → hello/subscribe/unsubscribe, or `UnknownMessage`; raises MalformedFrame."""
    try:
        return _client_decoder.decode(frame)
    except msgspec.DecodeError as exc:
        return _unknown_or_malformed(frame, exc, CLIENT_TYPES)
    except RecursionError:
        raise MalformedFrame("nested too deeply") from None


def encode_client(message: ClientMessage) -> str:
    """Compact JSON text (text frames: CoinAPI speaks text, not binary)."""
    return _encoder.encode(message).decode()


_PREFIXES: Final = {cls: b'{"type":"' + tag_of(cls).encode() + b'"' for cls in _SERVER_CLASSES}


def encode_server_bytes(message: ServerMessage) -> bytes:
    """Compact UTF-8 JSON with `type` LAST, as the live server writes it (msgspec writes the tag
    first; moving it exercises every client's tolerance of the real field order)."""
    body = _encoder.encode(message)
    prefix = _PREFIXES[type(message)]
    if len(body) == len(prefix) + 1:  # no other fields: {"type":"hearbeat"}
        return body
    return b"{" + body[len(prefix) + 1 : -1] + b"," + prefix[1:] + b"}"


def encode_server(message: ServerMessage) -> str:
    """`encode_server_bytes` as text (what a WebSocket library's `send_message` takes)."""
    return encode_server_bytes(message).decode()
