"""The hub: shared upstream demand, routing by data type, encode-once fan-out, no blocking."""

import random

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.hub import Hub
from gateway.router import plan
from providers.coinapi.adapter import CoinApiAdapter
from providers.coinapi.emulator import CoinApiEmulator
from providers.coinapi.policy import CoinApiPolicy
from providers.common.emulator import FaultScript
from schemas import Gap, Status
from schemas.streams import StreamKey
from tests.gateway.fakes import CountingCodec, FakeAdapter, FakeClient, RecordingTap, quote, trade
from tests.support.frames import payloads
from tests.support.memory import memory_connector

BTC_TRADES = StreamKey("trade", "binance", "BTC/USDT")
BTC_QUOTES = StreamKey("quote", "binance", "BTC/USDT")
ALL_BINANCE_TRADES = StreamKey("trade", "binance", None)
ROUTES = {"trade": ["ca"], "quote": ["ca", "lz"], "ticker": ["lz", "ca"]}


def _hub(ca_usable=True):
    hub = Hub(ROUTES)
    ca = FakeAdapter("ca", {"trade", "quote", "ticker"}, usable=ca_usable)
    lz = FakeAdapter("lz", {"quote", "ticker"})
    hub.add_source(ca)
    hub.add_source(lz)
    return hub, ca, lz


def _decoded(client):
    frames, _ = client.outbox.take()
    return [msgspec.json.decode(p) for p in payloads(frames)]


def test_many_clients_on_one_stream_are_one_upstream_subscription():
    hub, ca, _ = _hub()
    clients = [FakeClient(CountingCodec()) for _ in range(10)]
    for client in clients:
        hub.subscribe(client, BTC_TRADES)
    assert ca.wanted == {BTC_TRADES}
    assert ca.update_calls == 1  # only the first subscriber changed the upstream demand
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
    ca.usable = True  # pushed: the source says so with a provider-level status; nothing polls
    hub.publish(Status(provider="ca", ts_gateway=2, state="connected"))
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
    hub.add_source(FakeAdapter("ca", {"trade"}))
    hub.add_source(FakeAdapter("lz", {"ticker"}))
    assert hub.routed("trade") and not hub.routed("ticker") and not hub.routed("quote")
    assert hub.refusal("ticker") == "no provider is configured for ticker (see [routes])"
    assert hub.refusal("quote") == "quote is routed to lz (fake), which cannot provide quote"


def test_a_batch_of_subscriptions_is_one_replan():
    hub, ca, _ = _hub()
    client = FakeClient(CountingCodec())
    calls_before = ca.update_calls
    with hub.batch():
        for i in range(1000):
            hub.subscribe(client, StreamKey("trade", "binance", f"C{i}/USDT"))
        assert ca.update_calls == calls_before  # nothing told to the source inside the batch
    assert ca.update_calls == calls_before + 1 and len(ca.wanted) == 1000
    with hub.batch():
        for i in range(1000):
            hub.unsubscribe(client, StreamKey("trade", "binance", f"C{i}/USDT"))
    assert ca.update_calls == calls_before + 2 and ca.wanted == frozenset()


def test_one_subscribe_among_ten_thousand_is_one_key_upstream():
    hub, ca, _ = _hub()
    crowd = FakeClient(CountingCodec())
    with hub.batch():
        for i in range(10_000):
            hub.subscribe(crowd, StreamKey("trade", "binance", f"C{i}/USDT"))
    calls = []
    ca.update_wanted = lambda added, removed: calls.append((set(added), set(removed)))
    hub.subscribe(FakeClient(CountingCodec()), BTC_TRADES)
    assert calls == [({BTC_TRADES}, set())]


def test_an_event_reaches_exactly_its_streams_clients_among_many():
    hub, _, _ = _hub()
    crowd = [FakeClient(CountingCodec()) for _ in range(50)]
    with hub.batch():
        for i, client in enumerate(crowd):
            hub.subscribe(client, StreamKey("trade", "kraken", f"C{i}/USD"))
    mine, wide, every = (FakeClient(CountingCodec()) for _ in range(3))
    hub.subscribe(mine, BTC_TRADES)
    hub.subscribe(wide, ALL_BINANCE_TRADES)
    hub.subscribe(every, StreamKey("trade", None, None))
    hub.publish(trade())
    assert [len(c.outbox) for c in (mine, wide, every)] == [1, 1, 1]
    assert not any(len(c.outbox) for c in crowd)


def _gap(exchange, symbol):
    return Gap(provider="ca", ts_gateway=5, datatype="trade", exchange=exchange, symbol=symbol,
               from_ts=1, to_ts=5, cause="reconnect")


def test_control_events_reach_the_clients_of_their_stream_and_the_covering_streams():
    hub, _, _ = _hub()
    btc, eth, wide, every, kraken, quotes = (FakeClient(CountingCodec()) for _ in range(6))
    hub.subscribe(btc, BTC_TRADES)
    hub.subscribe(eth, StreamKey("trade", "binance", "ETH/USDT"))
    hub.subscribe(wide, ALL_BINANCE_TRADES)
    hub.subscribe(every, StreamKey("trade", None, None))
    hub.subscribe(kraken, StreamKey("trade", "kraken", "BTC/USD"))
    hub.subscribe(quotes, BTC_QUOTES)
    hub.publish(_gap("binance", "BTC/USDT"))
    assert [len(c.outbox) for c in (btc, eth, wide, every, kraken, quotes)] == [1, 0, 1, 1, 0, 0]
    hub.publish(_gap("binance", None))  # the whole exchange: every binance trade client
    assert [len(c.outbox) for c in (btc, eth, wide, every, kraken, quotes)] == [2, 1, 2, 2, 0, 0]
    hub.publish(Status(provider="ca", ts_gateway=6, state="stale", stream="trade:*"))
    assert [len(c.outbox) for c in (btc, eth, wide, every, kraken, quotes)] == [3, 2, 3, 3, 1, 0]


def test_taps_see_routed_events_and_control_events_and_hold_demand():
    hub, ca, _ = _hub()
    tap = RecordingTap()
    hub.add_tap(tap)
    hub.hold(BTC_TRADES)
    assert ca.wanted == {BTC_TRADES} and hub.subscriber_count(BTC_TRADES) == 0
    hub.publish(trade())
    hub.publish(quote(provider="lz"))  # lz does not serve quotes now: not routed, not seen
    hub.publish(_gap("binance", "BTC/USDT"))
    assert [type(e).__name__ for e in tap.events] == ["Trade", "Gap"]
    hub.release(BTC_TRADES)
    assert ca.wanted == frozenset()
    hub.remove_tap(tap)
    hub.publish(trade())
    assert len(tap.events) == 2


def test_a_pushed_rejection_moves_the_route_and_clients_hear_both():
    hub, ca, lz = _hub()
    client = FakeClient(CountingCodec())
    hub.subscribe(client, BTC_QUOTES)
    assert ca.wanted == {BTC_QUOTES}
    ca.usable = False
    hub.publish(Status(provider="ca", ts_gateway=3, state="rejected", reason="bad key"))
    assert hub.serving["quote"] == "lz" and lz.wanted == {BTC_QUOTES} and ca.wanted == frozenset()
    assert [(e["state"], e["reason"]) for e in _decoded(client)] == [
        ("rejected", "bad key"), ("connected", "quote now served by lz"),
    ]


_KEYS = st.sampled_from([
    StreamKey(dt, ex, sym)
    for dt in ("trade", "quote", "ticker")
    for ex, sym in (("binance", "BTC/USDT"), ("binance", None), (None, None), ("kraken", "BTC/USD"))
])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["subscribe", "unsubscribe"]), st.integers(0, 3), _KEYS),
        st.tuples(st.sampled_from(["hold", "release"]), st.just(0), _KEYS),
        st.tuples(st.just("usable"), st.sampled_from(["ca", "lz"]), st.booleans()),
        st.tuples(st.just("batch"), st.just(0), st.just(None)),
    ),
    max_size=40,
)


@settings(max_examples=80)
@given(_STEPS)
def test_incremental_demand_always_equals_the_whole_plan(steps):
    hub, ca, lz = _hub()
    clients = [FakeClient(CountingCodec()) for _ in range(4)]
    held: list[StreamKey] = []
    for op, who, arg in steps:
        if op == "subscribe":
            hub.subscribe(clients[who], arg)
        elif op == "unsubscribe":
            hub.unsubscribe(clients[who], arg)
        elif op == "hold":
            hub.hold(arg)
            held.append(arg)
        elif op == "release" and arg in held:
            hub.release(arg)
            held.remove(arg)
        elif op == "usable":
            source = ca if who == "ca" else lz
            source.usable = arg
            hub.publish(Status(provider=who, ts_gateway=1, state="connected" if arg else "rejected"))
        elif op == "batch":
            with hub.batch():
                for client in clients:
                    hub.unsubscribe(client, BTC_TRADES)
                    hub.subscribe(client, BTC_QUOTES)
    expected = plan(hub.demand(), ROUTES, [ca, lz])
    assert hub.serving == expected.serving
    assert {"ca": ca.wanted, "lz": lz.wanted} == expected.wanted


async def test_a_refused_provider_gets_its_demand_back_when_its_key_retry_comes(autojump_clock, nursery):
    """Routes moved quotes to `lz` when `ca` refused our key; at the key's retry time `ca` says it
    is ready again, the routes hand the demand back, and that connection finds the key accepted."""
    emulator = CoinApiEmulator(rate=4)
    emulator.faults.add(FaultScript(reject_key=True))  # refused once (a revoked key, re-enabled later)
    hub = Hub({"quote": ["ca", "lz"]})
    ca = CoinApiAdapter("ca", url="ws://ca.test/v1/", api_key="k", sink=hub.publish, rng=random.Random(1),
                        policy=CoinApiPolicy(auth_retry=60.0, ping_interval=None),
                        connector=memory_connector(emulator.handle_stream, nursery))
    lz = FakeAdapter("lz", {"quote"})
    hub.add_sources([ca, lz])
    client = FakeClient(CountingCodec())
    hub.subscribe(client, BTC_QUOTES)
    await nursery.start(ca.run)
    await trio.sleep(1)
    assert hub.serving["quote"] == "lz" and lz.wanted == {BTC_QUOTES}
    await trio.sleep(60)  # the retry comes round at 60 s
    assert hub.serving["quote"] == "ca" and lz.wanted == frozenset() and ca.usable
    told = [(e["state"], e["reason"]) for e in _decoded(client) if e["type"] == "status"]
    assert told[0] == ("rejected", "AuthRejected: the provider refused the key")
    assert ("connected", "quote now served by lz") in told and ("connected", "quote now served by ca") in told
    hub.publish(quote(provider="ca"))
    assert [e["provider"] for e in _decoded(client)] == ["ca"]


class _PushesFromInside(FakeAdapter):
    """A source that, the first time any source is told its demand, finds the *other* source's
    key refused and pushes that health at once: from inside `update_wanted`."""

    pushed = False  # shared: only the first call, whichever source the hub tells first

    def __init__(self, name, datatypes, hub):
        super().__init__(name, datatypes)
        self.hub = hub

    def update_wanted(self, added, removed):
        super().update_wanted(added, removed)
        if not _PushesFromInside.pushed:
            _PushesFromInside.pushed = True
            other = self.hub.sources["lz" if self.name == "ca" else "ca"]
            other.usable = False
            self.hub.publish(Status(provider=other.name, ts_gateway=1, state="rejected"))


@pytest.mark.parametrize("first", ["ca", "lz"])
def test_health_pushed_from_inside_update_wanted_still_settles_to_the_whole_plan(first):
    routes = {"quote": ["ca", "lz"], "ticker": ["lz", "ca"]}
    hub = Hub(routes)
    _PushesFromInside.pushed = False
    ca, lz = _PushesFromInside("ca", {"quote", "ticker"}, hub), _PushesFromInside("lz", {"quote", "ticker"}, hub)
    hub.add_sources([ca, lz] if first == "ca" else [lz, ca])
    client = FakeClient(CountingCodec())
    with hub.batch():
        hub.subscribe(client, BTC_QUOTES)
        hub.subscribe(client, StreamKey("ticker", "binance", "BTC/USDT"))
    expected = plan(hub.demand(), routes, [ca, lz])
    assert _PushesFromInside.pushed
    assert hub.serving == expected.serving
    assert {"ca": ca.wanted, "lz": lz.wanted} == expected.wanted
