"""Luzia's WebSocket protocol as the gateway speaks it to local apps. Pure: no I/O, no hub.

Owns: parsing a client message into a request (or the error code it earns), the reply frames, and
the translation of a normalized `schemas.Ticker` into Luzia's ticker frame and REST ticker object.
Luzia's own message Structs (`providers.luzia.wire`) are reused, so what the gateway sends is what
its own Luzia adapter decodes.
Never: invents a value. A ticker field the gateway was not told is `null`, never 0; `close` is
`last` (Luzia's close of a rolling window is the last price); numbers go out as JSON numbers with
every digit of the Decimal.

Times are ISO-8601 UTC with milliseconds, as Luzia's docs show. `data.timestamp` is the observation
time: the exchange's, else the provider's, else the gateway's receive time (Luzia's SDKs type it as
a non-null string, so it is never null). The outer `timestamp` is when the gateway received it.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gateway.wsframe import text_frame
from providers.luzia import wire
from schemas import Event, Ticker
from schemas.timeutil import format_iso_ns

ErrorCode = wire.ErrorCode
Request = wire.Subscribe | wire.Unsubscribe | wire.Ping

CONNECTED_MESSAGE: Final = "Connected to Luzia WebSocket API"
SHUTDOWN_MESSAGE: Final = "Server is shutting down, reconnect shortly"
_decoder: Final = msgspec.json.Decoder()


class RequestError(ValueError):
    """A client message that earns an `error` reply; `code` is Luzia's error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_request(message: str | bytes) -> Request:
    """One client message → a request; RequestError with Luzia's code (and the emulator's wording)."""
    try:
        raw = _decoder.decode(message)
    except msgspec.DecodeError:
        raise RequestError("INVALID_JSON", "Invalid JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise RequestError("INVALID_REQUEST", "Missing required field: type")
    kind = raw["type"]
    if kind == "ping":
        return wire.Ping()
    if kind not in ("subscribe", "unsubscribe"):
        raise RequestError("UNKNOWN_TYPE", f"Unknown message type: {kind}")
    channels = raw.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise RequestError("INVALID_REQUEST", "Missing required field: channels")
    return wire.Subscribe(channels=channels) if kind == "subscribe" else wire.Unsubscribe(channels=channels)


# ----- replies: complete WebSocket text frames --------------------------------------------------


def _frame(message: msgspec.Struct) -> bytes:
    return text_frame(wire.encoder.encode(message))


def connected_frame(tier: str, max_subscriptions: int) -> bytes:
    limits = wire.Limits(maxSubscriptions=max_subscriptions)
    return _frame(wire.Connected(message=CONNECTED_MESSAGE, tier=tier, limits=limits))


def subscribed_frame(channel: str) -> bytes:
    return _frame(wire.Subscribed(channel=channel))


def unsubscribed_frame(channel: str) -> bytes:
    return _frame(wire.Unsubscribed(channel=channel))


def pong_frame(now_ns: int) -> bytes:
    return _frame(wire.Pong(timestamp=format_iso_ns(now_ns, 3)))


def error_frame(code: ErrorCode, message: str) -> bytes:
    return _frame(wire.Error(code=code, message=message))


# ----- tickers ----------------------------------------------------------------------------------


def observed_ns(ticker: Ticker) -> int:
    for ns in (ticker.ts_exchange, ticker.ts_provider):
        if ns is not None:
            return ns
    return ticker.ts_gateway


def ticker_data(ticker: Ticker) -> wire.TickerData:
    """The REST ticker object (also the `data` of a ticker frame)."""
    return wire.TickerData(
        symbol=ticker.symbol,
        exchange=ticker.exchange,
        last=ticker.last,
        bid=ticker.bid,
        ask=ticker.ask,
        high=ticker.high,
        low=ticker.low,
        open=ticker.open,
        close=ticker.last,
        volume=ticker.volume,
        quoteVolume=ticker.quote_volume,
        change=ticker.change,
        changePercent=ticker.change_percent,
        timestamp=format_iso_ns(observed_ns(ticker), 3),
    )


def ticker_message(ticker: Ticker) -> wire.Ticker:
    sent = format_iso_ns(ticker.ts_gateway, 3)
    return wire.Ticker(exchange=ticker.exchange, symbol=ticker.symbol, data=ticker_data(ticker), timestamp=sent)


class LuziaCodec:
    """How Luzia clients see events: tickers as Luzia ticker frames, nothing else. Luzia has no
    status or gap messages, and its errors only ever answer a request (clients pair each answer
    with the channel they sent, in order), so a stream a provider refused later is not reported
    here: it simply carries no data, as a quiet symbol would. One instance per endpoint: the hub
    frames each event once for every Luzia client. `exchanges` collects where tickers came from."""

    name = "luzia"

    def __init__(self) -> None:
        self.exchanges: set[str] = set()

    def frame(self, event: Event) -> bytes | None:
        if type(event) is not Ticker:
            return None
        self.exchanges.add(event.exchange)
        return _frame(ticker_message(event))
