"""Helpers for the CoinAPI endpoint's tests: a session on a real hub without sockets (its clock
Trio's, or 0 outside a Trio run), frame parsing, event builders."""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import trio

from gateway.config import parse
from gateway.context import GatewayContext
from gateway.dialects.coinapi import CoinApiEndpoint, CoinApiSession
from gateway.hub import Hub
from gateway.outbox import Outbox
from gateway.wsframe import OP_CLOSE, close_frame
from schemas import Book, BookLevel, Quote, Trade
from tests.gateway.fakes import FakeAdapter

GUID = "73034021-0000-0000-0000-000000000000"  # the C# SDK types keys as GUIDs
CONFIG = parse('[providers.ca]\nkind = "coinapi"\nemulate = true\n[routes]\ntrade = ["ca"]\nquote = ["ca"]\nbook = ["ca"]')


class RecordingOutbox(Outbox):
    """An outbox that also remembers when (Trio time) each frame was queued."""

    def __init__(self, limit: int = 10_000) -> None:
        super().__init__(limit)
        self.log: list[tuple[float, bytes]] = []

    def _append(self, data: bytes) -> None:
        try:
            now = trio.current_time()
        except RuntimeError:
            now = 0.0
        self.log.append((now, data))
        super()._append(data)


class FakePeer:
    """What the session needs of a `WebSocketPeer`: an outbox and `close`."""

    def __init__(self) -> None:
        self.outbox = RecordingOutbox()
        self.closed_with: tuple[int, str] | None = None

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
            self.outbox.close(close_frame(code, reason))


def make_hub(routes=None, adapters=None) -> Hub:
    routes = routes or {"trade": ["ca"], "quote": ["ca"], "book": ["ca"]}
    hub = Hub(routes)
    for adapter in adapters or [FakeAdapter("ca", {"trade", "quote", "book"})]:
        hub.add_source(adapter)
    return hub


def make_endpoint(hub: Hub | None = None, local_keys: frozenset[str] | None = None, config=CONFIG) -> CoinApiEndpoint:
    return CoinApiEndpoint(GatewayContext(config, hub or make_hub(), local_keys))


def clock() -> float:
    """Trio's clock inside a run (fake under `autojump_clock`); 0 for the synchronous tests."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def make_session(endpoint: CoinApiEndpoint | None = None, key: str | None = None, **options) -> CoinApiSession:
    options.setdefault("clock", clock)
    return CoinApiSession(endpoint or make_endpoint(), FakePeer(), key, **options)


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in `data` (one queued item may hold several)."""
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def messages(session: CoinApiSession) -> list:
    """Everything queued for the client since the last call: JSON messages, and ("close", code)."""
    frames, _ = session.outbox.take()
    out = []
    for data in frames:
        for opcode, payload in split_frames(data):
            if opcode == OP_CLOSE:
                out.append(("close", struct.unpack("!H", payload[:2])[0]))
            else:
                out.append(json.loads(payload))
    return out


def hello(**fields) -> str:
    return json.dumps({"type": "hello", **fields})


def trade(exchange="bitstamp", symbol="BTC/USD", price="100.5", provider="ca", ts=1_736_873_398_331_805_000) -> Trade:
    return Trade(provider=provider, ts_gateway=ts + 9_000_000, exchange=exchange, symbol=symbol, price=Decimal(price),
                 size=Decimal("0.25"), side="buy", ts_exchange=ts, ts_provider=ts + 5_000_000, trade_id="u-1")


def quote(exchange="bitstamp", symbol="BTC/USD", bid="100", ask="101", provider="ca", sizes=True) -> Quote:
    size = Decimal("1.5") if sizes else None
    return Quote(provider=provider, ts_gateway=1_736_873_398_000_000_000, exchange=exchange, symbol=symbol,
                 bid_price=Decimal(bid), ask_price=Decimal(ask), bid_size=size, ask_size=size)


def book(exchange="bitstamp", symbol="BTC/USD", depth=50, provider="ca") -> Book:
    bids = tuple(BookLevel(Decimal(1000 - i), Decimal(i + 1)) for i in range(depth))
    asks = tuple(BookLevel(Decimal(1001 + i), Decimal(i + 1)) for i in range(depth))
    return Book(provider=provider, ts_gateway=1_736_873_398_000_000_000, exchange=exchange, symbol=symbol,
                bids=bids, asks=asks)
