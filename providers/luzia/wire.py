"""Luzia's own WebSocket messages, with Luzia's field names, and the one decoder for them.

Owns: the msgspec Structs of every message either side sends, the module-level decoder of the
server's tagged union on `type`, and the client-message encoder.
Never: maps to `schemas` (that is `normalize`), touches I/O, or rejects a frame for carrying fields
it does not know (no `forbid_unknown_fields`: Luzia may add fields at any time).

Decoding rules (the convention of `providers.common.errors`, as in every provider package):
- Prices, sizes and statistics are `Decimal`, decoded straight from the JSON number's text, so
  `67432.10` stays `Decimal("67432.10")`, never a float in between.
- Timestamps are kept as sent (ISO-8601 text or Unix ms number); `normalize` converts them.
- A frame whose `type` is not one we know is *returned* as an `UnknownMessage`, to be counted and
  skipped; a frame that is not JSON, or not the shape its `type` promises, *raises* `MalformedFrame`.
- Nothing else ever leaves a decoder, whatever the bytes: JSON nested thousands deep (msgspec raises
  `RecursionError` for it, not `DecodeError`), invalid UTF-8, integers beyond 64 bits, wrong types
  in fields nobody reads. Values that decode but make no sense (`NaN`, `1E+100`, a timestamp in
  the year 3000) are `normalize`'s to refuse.
- Identifiers (a `type`, an exchange, a symbol, a channel) have a length bound: longer is no id of
  Luzia's, and bounded text is what keeps the caches keyed on them bounded in bytes.
- Client requests (`decode_client`, what a Luzia server reads): not JSON at all → `NotJson`
  (Luzia's INVALID_JSON); JSON but not a request → `MalformedFrame` naming the missing field
  (INVALID_REQUEST); a request of a type Luzia does not have → `UnknownMessage` (UNKNOWN_TYPE).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args

import msgspec

from providers.common.errors import MalformedFrame, UnknownMessage

#: Longest timestamp text: ISO-8601 with nine fractional digits and an offset is 35 characters.
MAX_TIMESTAMP_LENGTH: Final = 64
#: ISO-8601 text (docs) or Unix ms (the Python SDK's model).
Timestamp = Union[Annotated[str, msgspec.Meta(max_length=MAX_TIMESTAMP_LENGTH)], int, float]  # noqa: UP007 - msgspec reads it

#: Longest `type` (and error `code`) kept: Luzia's are a dozen characters. A longer unknown type
#: is still an unknown type, named by its first this many characters.
MAX_TYPE_LENGTH: Final = 64
#: Longest exchange id or symbol as sent (canonical ids are at most 32 and 41 characters; a little
#: room for spellings that still canonicalize, such as surrounding spaces).
MAX_ID_LENGTH: Final = 64
#: Longest channel name: `ticker:` + exchange + `:` + symbol, with the same room.
MAX_CHANNEL_LENGTH: Final = 160
_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]

# A field nobody reads takes anything, so that a provider changing its type (or sending a number
# of 5,000 digits there) costs nothing: decoded, it is the raw JSON text (`msgspec.Raw`, never
# parsed, re-encoded as it came); written, it is whatever value the writer gives (a `str`).
if TYPE_CHECKING:
    Unread = Any
else:
    Unread = msgspec.Raw
_ChannelName = Annotated[str, msgspec.Meta(max_length=MAX_CHANNEL_LENGTH)]


class _Message(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """Every Luzia message is a JSON object with a `type`."""


# ---- server -> client -------------------------------------------------------------------------


class Limits(msgspec.Struct, frozen=True):
    maxSubscriptions: int | None = None


class Connected(_Message, tag="connected", kw_only=True, frozen=True):
    message: Unread = None
    tier: Unread = None
    limits: Limits | None = None


class Subscribed(_Message, tag="subscribed", kw_only=True, frozen=True):
    channel: _ChannelName


class Unsubscribed(_Message, tag="unsubscribed", kw_only=True, frozen=True):
    channel: _ChannelName


class Pong(_Message, tag="pong", kw_only=True, frozen=True):
    timestamp: Unread = None  # the heartbeat needs only that a pong came


class Error(_Message, tag="error", kw_only=True, frozen=True):
    code: Annotated[str, msgspec.Meta(max_length=MAX_TYPE_LENGTH)]
    message: str | None = None


class TickerData(msgspec.Struct, kw_only=True, frozen=True):
    """The REST ticker object; field order is Luzia's, so the emulator's frames read like theirs."""

    symbol: Unread = None  # the outer `symbol` and `exchange` are the ones read
    exchange: Unread = None
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    open: Decimal | None = None
    close: Decimal | None = None
    volume: Decimal | None = None
    quoteVolume: Decimal | None = None
    change: Decimal | None = None
    changePercent: Decimal | None = None
    timestamp: Timestamp | None = None  # when the exchange observed it


class Ticker(_Message, tag="ticker", kw_only=True, frozen=True):
    exchange: _Id
    symbol: _Id
    data: TickerData
    timestamp: Timestamp | None = None  # when Luzia sent it


ServerMessage = Union[Connected, Subscribed, Unsubscribed, Pong, Error, Ticker]  # noqa: UP007 - msgspec reads it

# ---- client -> server -------------------------------------------------------------------------


#: A request names at least one channel; a missing or empty list is INVALID_REQUEST. How many a
#: request may name is the server's to bound (its subscription limit), not the decoder's.
_Channels = Annotated[list[str], msgspec.Meta(min_length=1)]


class Subscribe(_Message, tag="subscribe", kw_only=True, frozen=True):
    channels: _Channels


class Unsubscribe(_Message, tag="unsubscribe", kw_only=True, frozen=True):
    channels: _Channels


class Ping(_Message, tag="ping", kw_only=True, frozen=True):
    pass


ClientMessage = Union[Subscribe, Unsubscribe, Ping]  # noqa: UP007

# ---- codecs -----------------------------------------------------------------------------------


class _TypeOnly(msgspec.Struct):
    type: str


class NotJson(MalformedFrame):
    """Not a JSON document we can read at all (Luzia's INVALID_JSON): broken syntax, invalid
    UTF-8, or nesting deeper than the decoder goes."""


#: Error codes Luzia documents; anything else is still an `Error`, reported as it comes.
ErrorCode = Literal[
    "CONNECTION_REJECTED",
    "SUBSCRIPTION_LIMIT",
    "INVALID_CHANNEL",
    "INVALID_JSON",
    "INVALID_REQUEST",
    "UNKNOWN_TYPE",
    "SERVER_SHUTDOWN",
]
ERROR_CODES: Final = frozenset(get_args(ErrorCode))
SERVER_TYPES: Final = frozenset({"connected", "subscribed", "unsubscribed", "pong", "error", "ticker"})
CLIENT_TYPES: Final = frozenset({"subscribe", "unsubscribe", "ping"})

_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_client_decoder: Final = msgspec.json.Decoder(ClientMessage)
_type_decoder: Final = msgspec.json.Decoder(_TypeOnly)
_any_decoder: Final = msgspec.json.Decoder()
#: Luzia writes numbers as JSON numbers; `decimal_format="number"` keeps Decimals exact that way.
encoder: Final = msgspec.json.Encoder(decimal_format="number")
#: What msgspec can raise for bytes that are no JSON we can read, besides a shape mismatch:
#: `RecursionError` for deep nesting; `ValueError`/`UnicodeError` for text it cannot take (a `str`
#: holding a lone surrogate is not UTF-8).
_UNREADABLE: Final = (msgspec.DecodeError, RecursionError, ValueError)


def decode_server(frame: str | bytes) -> ServerMessage | UnknownMessage:
    """One frame → one message. The common path decodes once; only a failure decodes again, to
    tell a new message type (skip) from a broken frame (MalformedFrame)."""
    try:
        try:
            return _server_decoder.decode(frame)
        except msgspec.ValidationError as exc:
            kind, shape = _known_type(frame), exc
    except _UNREADABLE as exc:  # a ValidationError never gets here: it is handled inside
        raise NotJson(f"not JSON: {_short(exc)}") from None
    if kind is not None and kind not in SERVER_TYPES:
        return UnknownMessage(kind)
    raise MalformedFrame(f"bad {kind or 'untyped'} message: {_short(shape)}")


def decode_client(frame: str | bytes) -> ClientMessage | UnknownMessage:
    """One client request → a message; see the module header for what each failure raises. The
    texts of `MalformedFrame` are Luzia's own wording for INVALID_REQUEST."""
    try:
        if isinstance(frame, bytes):
            frame.decode()  # msgspec skips unknown fields unchecked: a request is UTF-8 throughout
        try:
            return _client_decoder.decode(frame)
        except msgspec.ValidationError:
            kind = _known_type(frame)
            if kind is None:
                _any_decoder.decode(frame)  # a typed decode stops at the first mismatch: is it JSON?
    except _UNREADABLE:
        raise NotJson("Invalid JSON") from None
    if kind is None:
        raise MalformedFrame("Missing required field: type")
    if kind not in CLIENT_TYPES:
        return UnknownMessage(kind)
    raise MalformedFrame("Missing required field: channels")


def _known_type(frame: str | bytes) -> str | None:
    """The frame's `type`, if it is an object with a string one, after its typed decode failed
    on its shape. A frame too deep or broken past the point where that decode stopped raises."""
    try:
        return _type_decoder.decode(frame).type[:MAX_TYPE_LENGTH]
    except msgspec.ValidationError:
        return None


#: What a malformed frame's description keeps of the decoder's text (which quotes the frame).
_SAID_LENGTH: Final = 200


def _short(exc: Exception) -> str:
    text = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
    return text if len(text) <= _SAID_LENGTH else text[:_SAID_LENGTH] + "…"


def encode(message: msgspec.Struct) -> str:
    """A compact JSON text frame (trio-websocket sends `str` as a text frame, `bytes` as binary)."""
    return encoder.encode(message).decode()
