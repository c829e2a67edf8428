"""CoinAPI WebSocket V1 messages as msgspec Structs, with CoinAPI's own field names.

Owns: the shapes of every server→client and client→server message, one module-level decoder per
direction, and the encoders (the emulator's output puts `type` last, like the live server).
Must never: normalize (that is `normalize.py`), do I/O, or reject a frame for fields it does not
know (no `forbid_unknown_fields`: CoinAPI adds fields). The one convention of every provider
package (`providers.common.errors`): a decoder *returns* `UnknownMessage` for a well-formed message
of a type we do not know (count it, skip it) and *raises* `MalformedFrame` for anything else that
does not fit. Nothing else leaves a decoder, whatever the frame: msgspec's `RecursionError` for
deep nesting, a `ValueError`/`OverflowError` of a huge number, the `UnicodeEncodeError` of a text
with lone surrogates all become `MalformedFrame`, whose message is ours and bounded (it never
echoes a whole hostile frame). Server frames are also bounded here, by shape: identifiers and
times have a length limit, sequences fit int64 and are not negative, a book side has at most
`MAX_LEVELS` levels; values (prices, sizes, times) are `normalize`'s to check.

Prices and sizes are `Decimal`: msgspec parses a JSON number into a Decimal from its text, so
`95495.96` becomes `Decimal('95495.96')` exactly (never via float). Times stay the wire's
ISO-8601 strings here; `normalize` converts them to int ns exactly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, TypeVar

import msgspec

from providers.common.errors import MalformedFrame, UnknownMessage

# ---------------------------------------------------------------------------- server → client

#: Longest identifier (symbol id, trade uuid) accepted from the server. CoinAPI's longest real ids
#: (options with a strike and a disambiguating suffix) are about 60 characters.
MAX_ID_CHARS: Final = 128
#: Longest time text: CoinAPI's is 28 (`2025-01-14T16:49:58.3318050Z`); an offset adds 5.
MAX_TIME_CHARS: Final = 40
#: Sequences count messages for a connection's life: int64 is plenty, and what the encoders of a
#: `Gap`'s `missed` count (its difference) can write.
MAX_SEQUENCE: Final = 2**63 - 1
#: Levels per side of one book message: book50 has 50, a full-book snapshot a few thousand.
MAX_LEVELS: Final = 10_000
#: A `MalformedFrame`'s message quotes at most this much of what msgspec said.
MAX_REASON_CHARS: Final = 200

_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
_Time = Annotated[str, msgspec.Meta(max_length=MAX_TIME_CHARS)]
_Sequence = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]


class _ServerMessage(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of every server message; `omit_defaults` keeps the emulator's frames compact."""


class Trade(_ServerMessage, tag="trade", kw_only=True, omit_defaults=True):
    # Field order is the live server's, so the emulator's frames look like captured ones.
    time_exchange: _Time
    time_coinapi: _Time
    uuid: _Id | None = None
    price: Decimal
    size: Decimal  # 0 marks an index tick, not a trade
    taker_side: str = "UNKNOWN"  # BUY | SELL | BUY_ESTIMATED | SELL_ESTIMATED | UNKNOWN
    symbol_id: _Id
    sequence: _Sequence | None = None


class Quote(_ServerMessage, tag="quote", kw_only=True, omit_defaults=True):
    symbol_id: _Id
    sequence: _Sequence | None = None
    time_exchange: _Time
    time_coinapi: _Time
    ask_price: Decimal | None = None
    ask_size: Decimal | None = None  # 0 means unknown
    bid_price: Decimal | None = None
    bid_size: Decimal | None = None


class BookLevel(msgspec.Struct):
    price: Decimal
    size: Decimal  # in a delta, 0 removes the level


_Levels = Annotated[list[BookLevel], msgspec.Meta(max_length=MAX_LEVELS)]


class Book(_ServerMessage, tag="book", kw_only=True, omit_defaults=False):
    """Full L2: a snapshot, then deltas (`is_snapshot` false) carrying changed levels. Books are
    encoded with every field (`omit_defaults=False`): an empty side is `[]`, never left out."""

    symbol_id: _Id
    sequence: _Sequence | None = None
    time_exchange: _Time
    time_coinapi: _Time
    is_snapshot: bool | None = None  # None only if a server left it out (never omitted when set)
    asks: _Levels = []
    bids: _Levels = []


class _BookTop(_ServerMessage, kw_only=True, omit_defaults=False):
    """The top N levels, always complete (no deltas); an empty side is encoded as `[]`."""

    symbol_id: _Id
    sequence: _Sequence | None = None
    time_exchange: _Time
    time_coinapi: _Time
    asks: _Levels = []
    bids: _Levels = []


class Book5(_BookTop, tag="book5", kw_only=True, omit_defaults=False):
    pass


class Book20(_BookTop, tag="book20", kw_only=True, omit_defaults=False):
    pass


class Book50(_BookTop, tag="book50", kw_only=True, omit_defaults=False):
    pass


class Ohlcv(_ServerMessage, tag="ohlcv", kw_only=True, omit_defaults=True):
    """One OHLCV period, sent when it closes and every 5 s while it is open."""

    symbol_id: _Id
    sequence: _Sequence | None = None
    period_id: _Id | None = None  # may be absent; the period length then tells
    time_period_start: _Time
    time_period_end: _Time
    time_open: _Time | None = None
    time_close: _Time | None = None
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
    before_time: _Time | None = None


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


_T = TypeVar("_T")
_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_client_decoder: Final = msgspec.json.Decoder(ClientMessage)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
# The live server sends prices as JSON numbers; the default would write Decimal as a string.
_encoder: Final = msgspec.json.Encoder(decimal_format="number")


def _malformed(what: str) -> MalformedFrame:
    return MalformedFrame(what[:MAX_REASON_CHARS])


def _unknown_or_malformed(frame: bytes | str, error: msgspec.DecodeError, known: frozenset[str]) -> UnknownMessage:
    """The `UnknownMessage` of a well-formed object of an unknown type; raises MalformedFrame otherwise."""
    try:
        envelope = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, RecursionError):
        raise _malformed(str(error)) from None
    if envelope.type is not None and envelope.type not in known:
        return UnknownMessage(envelope.type[:MAX_ID_CHARS])
    raise _malformed(str(error)) from None


def _decode(decoder: msgspec.json.Decoder[_T], frame: bytes | str, known: frozenset[str]) -> _T | UnknownMessage:
    """The one place a frame is decoded: only a Struct, `UnknownMessage` or `MalformedFrame` leave."""
    try:
        return decoder.decode(frame)
    except msgspec.DecodeError as exc:  # ValidationError too
        return _unknown_or_malformed(frame, exc, known)
    except RecursionError:  # msgspec's answer to deeply nested JSON, not a DecodeError
        raise _malformed("nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a text with lone surrogates (UnicodeEncodeError), ...
        raise _malformed(f"not decodable ({type(exc).__name__})") from None


def decode_server(frame: bytes | str) -> ServerMessage | UnknownMessage:
    """One server frame → its Struct, or `UnknownMessage`; raises MalformedFrame."""
    return _decode(_server_decoder, frame, SERVER_TYPES)


def decode_client(frame: bytes | str) -> ClientMessage | UnknownMessage:
    """One client frame → hello/subscribe/unsubscribe, or `UnknownMessage`; raises MalformedFrame."""
    return _decode(_client_decoder, frame, CLIENT_TYPES)


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
