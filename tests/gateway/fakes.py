"""Stand-ins for the hub's neighbours: an adapter that records what it was asked for, a client."""

from __future__ import annotations

from decimal import Decimal

import trio

from gateway.dialects.native import JsonCodec
from gateway.hub import CodecSubscriber
from gateway.outbox import Outbox
from providers.base import ProviderHealth
from schemas import Quote, Trade
from schemas.streams import StreamKey


class FakeAdapter:
    def __init__(self, name: str, datatypes: set[str], usable: bool = True) -> None:
        self.name = name
        self.kind = "fake"
        self.datatypes = frozenset(datatypes)
        self.usable = usable
        self.wanted: frozenset[StreamKey] = frozenset()
        self.update_calls = 0

    def update_wanted(self, added, removed) -> None:
        assert not (set(added) & set(removed)), "a key is never both added and removed"
        assert not (set(added) & self.wanted), "only new keys are added"
        assert set(removed) <= self.wanted, "only wanted keys are removed"
        self.wanted = (self.wanted | frozenset(added)) - frozenset(removed)
        self.update_calls += 1

    def health(self) -> ProviderHealth:
        return ProviderHealth(
            name=self.name, kind=self.kind, state="connected" if self.usable else "auth_rejected",
            usable=self.usable, wanted=len(self.wanted), subscriptions=len(self.wanted), connections=[],
            last_message_age_s=None, reconnects=0, malformed_frames=0, unknown_messages=0, stale_streams=0,
            last_error=None,
        )

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


class CountingCodec(JsonCodec):
    """The native JSON codec, counting how often it really encodes."""

    def __init__(self, name: str = "native-json") -> None:
        self.name = name
        self.encoded = 0

    def frame(self, event):
        self.encoded += 1
        return super().frame(event)


class FakeClient(CodecSubscriber):
    def __init__(self, codec, limit: int = 100) -> None:
        self.outbox = Outbox(limit=limit)
        self.codec = codec


class RecordingTap:
    def __init__(self) -> None:
        self.events: list = []

    def on_event(self, event) -> None:
        self.events.append(event)


def trade(provider="ca", exchange="binance", symbol="BTC/USDT", price="100.5", ts=1) -> Trade:
    return Trade(provider=provider, ts_gateway=ts, exchange=exchange, symbol=symbol, price=Decimal(price),
                 size=Decimal("0.1"), ts_exchange=ts)


def quote(provider="ca", exchange="binance", symbol="BTC/USDT", bid="100", ts=1) -> Quote:
    return Quote(provider=provider, ts_gateway=ts, exchange=exchange, symbol=symbol, bid_price=Decimal(bid))
