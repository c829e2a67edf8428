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
- Client requests are read by `server.parse_request`, which words Luzia's errors for them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Literal, Union, get_args

import msgspec

from providers.common.errors import MalformedFrame, UnknownMessage

Timestamp = Union[str, int, float]  # noqa: UP007 - ISO-8601 text (docs) or Unix ms (the Python SDK's model)


class _Message(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """Every Luzia message is a JSON object with a `type`."""


# ---- server -> client -------------------------------------------------------------------------


class Limits(msgspec.Struct, frozen=True):
    maxSubscriptions: int | None = None


class Connected(_Message, tag="connected", kw_only=True, frozen=True):
    message: str | None = None
    tier: str | None = None
    limits: Limits | None = None


class Subscribed(_Message, tag="subscribed", kw_only=True, frozen=True):
    channel: str


class Unsubscribed(_Message, tag="unsubscribed", kw_only=True, frozen=True):
    channel: str


class Pong(_Message, tag="pong", kw_only=True, frozen=True):
    timestamp: Timestamp | None = None


class Error(_Message, tag="error", kw_only=True, frozen=True):
    code: str
    message: str | None = None


class TickerData(msgspec.Struct, kw_only=True, frozen=True):
    """The REST ticker object; field order is Luzia's, so the emulator's frames read like theirs."""

    symbol: str | None = None
    exchange: str | None = None
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
    exchange: str
    symbol: str
    data: TickerData
    timestamp: Timestamp | None = None  # when Luzia sent it


ServerMessage = Union[Connected, Subscribed, Unsubscribed, Pong, Error, Ticker]  # noqa: UP007 - msgspec reads it

# ---- client -> server -------------------------------------------------------------------------


class Subscribe(_Message, tag="subscribe", kw_only=True, frozen=True):
    channels: list[str]


class Unsubscribe(_Message, tag="unsubscribe", kw_only=True, frozen=True):
    channels: list[str]


class Ping(_Message, tag="ping", kw_only=True, frozen=True):
    pass


ClientMessage = Union[Subscribe, Unsubscribe, Ping]  # noqa: UP007

# ---- codecs -----------------------------------------------------------------------------------


class _TypeOnly(msgspec.Struct):
    type: str


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

_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_type_decoder: Final = msgspec.json.Decoder(_TypeOnly)
#: Luzia writes numbers as JSON numbers; `decimal_format="number"` keeps Decimals exact that way.
encoder: Final = msgspec.json.Encoder(decimal_format="number")


def decode_server(frame: str | bytes) -> ServerMessage | UnknownMessage:
    """One frame → one message. The common path decodes once; only a failure decodes again, to
    tell a new message type (skip) from a broken frame (MalformedFrame)."""
    try:
        return _server_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        kind = _known_type(frame)
        if kind is not None and kind not in SERVER_TYPES:
            return UnknownMessage(kind)
        raise MalformedFrame(f"bad {kind or 'untyped'} message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from None


def _known_type(frame: str | bytes) -> str | None:
    try:
        return _type_decoder.decode(frame).type
    except msgspec.MsgspecError:
        return None


def encode(message: msgspec.Struct) -> str:
    """A compact JSON text frame (trio-websocket sends `str` as a text frame, `bytes` as binary)."""
    return encoder.encode(message).decode()
