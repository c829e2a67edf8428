"""The hub: shared upstream demand, routing by data type, encode-once fan-out, no blocking."""

import msgspec

from gateway.hub import Hub
from schemas.streams import StreamKey
from tests.gateway.fakes import CountingCodec, FakeAdapter, FakeClient, quote, trade

BTC_TRADES = StreamKey("trade", "binance", "BTC/USDT")
BTC_QUOTES = StreamKey("quote", "binance", "BTC/USDT")
ALL_BINANCE_TRADES = StreamKey("trade", "binance", None)
ROUTES = {"trade": ["ca"], "quote": ["ca", "lz"], "ticker": ["lz", "ca"]}


def _hub(ca_usable=True):
    hub = Hub(ROUTES)
    ca = FakeAdapter("ca", {"trade", "quote", "ticker"}, usable=ca_usable)
    lz = FakeAdapter("lz", {"quote", "ticker"})
    hub.add_adapter(ca)
    hub.add_adapter(lz)
    return hub, ca, lz


def _decoded(client):
    frames, _ = client.outbox.take()
    return [msgspec.json.decode(f[2:] if f[1] < 126 else f[4:]) for f in frames]


def test_many_clients_on_one_stream_are_one_upstream_subscription():
    hub, ca, _ = _hub()
    clients = [FakeClient(CountingCodec()) for _ in range(10)]
    for client in clients:
        hub.subscribe(client, BTC_TRADES)
    assert ca.wanted == {BTC_TRADES}
    assert ca.set_wanted_calls == 1  # only the first subscriber changed the upstream demand
    for client in clients[:-1]:
        hub.unsubscribe(client, BTC_TRADES)
    assert ca.wanted == {BTC_TRADES}
    hub.unsubscribe(clients[-1], BTC_TRADES)
    assert ca.wanted == frozenset()


def test_each_event_is_encoded_once_per_codec_not_per_client():
    hub, _, _ = _hub()
    json_codec, other_codec = CountingCodec("a"), CountingCodec("b")
    clients = [FakeClient(json_codec) for _ in range(5)] + [FakeClient(other_codec) for _ in range(3)]
    for client in clients:
        hub.subscribe(client, BTC_TRADES)
    hub.publish(trade())
    assert (json_codec.encoded, other_codec.encoded) == (1, 1)
    assert all(len(c.outbox) == 1 for c in clients)


def test_routing_follows_the_first_usable_provider():
    hub, ca, lz = _hub(ca_usable=False)
    client = FakeClient(CountingCodec())
    hub.subscribe(client, BTC_QUOTES)
    assert hub.serving["quote"] == "lz" and lz.wanted == {BTC_QUOTES} and ca.wanted == frozenset()
    hub.publish(quote(provider="ca"))  # not the serving provider: dropped
    hub.publish(quote(provider="lz"))
    assert [e["provider"] for e in _decoded(client)] == ["lz"]
    ca.usable = True
    hub.refresh_routes()
    assert hub.serving["quote"] == "ca" and ca.wanted == {BTC_QUOTES} and lz.wanted == frozenset()
    status = _decoded(client)
    assert status[0]["type"] == "status" and status[0]["reason"] == "quote now served by ca"


def test_exchange_wide_and_symbol_subscriptions_deliver_once():
    hub, _, _ = _hub()
    both, wide_only = FakeClient(CountingCodec()), FakeClient(CountingCodec())
    hub.subscribe(both, BTC_TRADES)
    hub.subscribe(both, ALL_BINANCE_TRADES)
    hub.subscribe(wide_only, ALL_BINANCE_TRADES)
    hub.publish(trade(symbol="BTC/USDT"))
    hub.publish(trade(symbol="ETH/USDT"))
    hub.publish(trade(exchange="kraken"))
    assert [e["symbol"] for e in _decoded(both)] == ["BTC/USDT", "ETH/USDT"]
    assert [e["symbol"] for e in _decoded(wide_only)] == ["BTC/USDT", "ETH/USDT"]


def test_a_slow_client_does_not_hold_back_a_fast_one():
    hub, _, _ = _hub()
    slow, fast = FakeClient(CountingCodec(), limit=3), FakeClient(CountingCodec(), limit=3)
    hub.subscribe(slow, BTC_TRADES)
    hub.subscribe(fast, BTC_TRADES)
    received = []
    for i in range(10):
        hub.publish(trade(ts=i))
        received += _decoded(fast)  # the fast client drains after every event; the slow one never
    assert [e["ts_gateway"] for e in received] == list(range(10))
    frames, dropped = slow.outbox.take()
    assert len(frames) == 3
    assert (dropped[0].from_ts, dropped[0].to_ts, dropped[0].missed) == (3, 9, 7)


def test_unrouted_data_types_are_reported():
    hub = Hub({"trade": ["ca"], "quote": ["lz"]})
    hub.add_adapter(FakeAdapter("ca", {"trade"}))
    hub.add_adapter(FakeAdapter("lz", {"ticker"}))
    assert hub.routed("trade") and not hub.routed("ticker") and not hub.routed("quote")
    assert hub.refusal("ticker") == "no provider is configured for ticker (see [routes])"
    assert hub.refusal("quote") == "quote is routed to lz (fake), which cannot provide quote"


def test_a_batch_of_subscriptions_is_one_replan():
    hub, ca, _ = _hub()
    client = FakeClient(CountingCodec())
    calls_before = ca.set_wanted_calls
    with hub.batch():
        for i in range(1000):
            hub.subscribe(client, StreamKey("trade", "binance", f"C{i}/USDT"))
        assert ca.set_wanted_calls == calls_before  # nothing re-planned inside the batch
    assert ca.set_wanted_calls == calls_before + 1 and len(ca.wanted) == 1000
    with hub.batch():
        for i in range(1000):
            hub.unsubscribe(client, StreamKey("trade", "binance", f"C{i}/USDT"))
    assert ca.set_wanted_calls == calls_before + 2 and ca.wanted == frozenset()
