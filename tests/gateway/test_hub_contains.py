"""`Hub.publish` never raises into a source's reader: a failing codec, delivery step or tap is
counted and skips only what it concerns; every other client still gets the event."""

import logging

from gateway.hub import Hub
from schemas import Status
from schemas.streams import StreamKey
from tests.gateway.fakes import CountingCodec, FakeAdapter, FakeClient, RecordingTap, trade

BTC_TRADES = StreamKey("trade", "binance", "BTC/USDT")


class BrokenCodec(CountingCodec):
    def frame(self, event):
        self.encoded += 1
        raise OverflowError("this format cannot write that number")


class BrokenClient(FakeClient):
    def deliver(self, event, stream, frames):
        raise RuntimeError("a dialect bug")

    def notify(self, event, frames):
        raise RuntimeError("a dialect bug")


class BrokenTap:
    def on_event(self, event):
        raise KeyError("a tap bug")


def _hub() -> Hub:
    hub = Hub({"trade": ["ca"]})
    hub.add_source(FakeAdapter("ca", {"trade"}))
    return hub


def test_a_codec_that_raises_skips_the_event_for_that_codec_only(caplog):
    hub = _hub()
    broken = BrokenCodec("broken")
    victims = [FakeClient(broken) for _ in range(3)]
    healthy = FakeClient(CountingCodec("fine"))
    for client in [*victims, healthy]:
        hub.subscribe(client, BTC_TRADES)
    with caplog.at_level(logging.ERROR, logger="gateway.hub"):
        hub.publish(trade(ts=1))
        hub.publish(trade(ts=2))
    assert len(healthy.outbox) == 2
    assert all(len(v.outbox) == 0 for v in victims)
    assert broken.encoded == 2  # tried once per event, not once per client
    assert hub.failures.counts == {"encode:broken": 2}
    assert len([r for r in caplog.records if "encode:broken" in r.getMessage()]) == 1  # logged once, not per event


def test_a_delivery_step_or_tap_that_raises_does_not_stop_the_fan_out():
    hub = _hub()
    tap = RecordingTap()
    hub.add_tap(BrokenTap())
    hub.add_tap(tap)
    first, broken, last = FakeClient(CountingCodec()), BrokenClient(CountingCodec()), FakeClient(CountingCodec())
    for client in (first, broken, last):
        hub.subscribe(client, BTC_TRADES)
    hub.publish(trade())
    hub.publish(Status(provider="ca", ts_gateway=2, state="stale", stream="trade:binance:BTC/USDT"))
    assert len(first.outbox) == 2 and len(last.outbox) == 2
    assert len(tap.events) == 2
    assert hub.failures.counts == {"tap": 2, "deliver": 1, "notify": 1}


def test_publish_contains_even_an_error_in_routing(monkeypatch):
    hub = _hub()
    client = FakeClient(CountingCodec())
    hub.subscribe(client, BTC_TRADES)

    def broken_refresh():
        raise RuntimeError("a routing bug")

    monkeypatch.setattr(hub, "refresh_routes", broken_refresh)
    hub.publish(Status(provider="ca", ts_gateway=1, state="connected"))  # must not raise
    assert hub.failures.counts == {"publish": 1}
    hub.publish(trade())
    assert len(client.outbox) == 2  # the provider status, then the trade: the hub still works
