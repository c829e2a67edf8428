"""Caps and flood control on every endpoint: the token bucket (exact fake times), subscriptions
per connection, streams in total, CoinAPI's first-message deadline. Every over-cap request gets the
protocol's error and loses nothing already subscribed; a legal 1,030-channel subscribe is answered
in full and keeps its client connected."""

from __future__ import annotations

import json

import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse
from gateway.context import GatewayContext
from gateway.dialects.luzia import LuziaEndpoint
from gateway.dialects.native import CODECS, NativeSession
from gateway.flood import FloodGuard, TokenBucket, Verdict, message_cost
from gateway.hub import Hub
from gateway.outbox import Outbox
from providers.coinapi import server as coinapi_server
from schemas.streams import StreamKey
from tests.gateway.coinapi_support import GUID, make_endpoint, make_hub, make_session, messages
from tests.gateway.fakes import FakeAdapter, FakeClient
from tests.gateway.test_luzia_codec import FakePeer, Request
from tests.gateway.test_native_dialect import native_config
from tests.support.frames import payloads

# ----- the token bucket --------------------------------------------------------------------


def test_the_bucket_allows_a_burst_then_one_message_per_token_at_exact_times():
    guard = FloodGuard(rate=2.0, burst=3, strikes=2, now=0.0)
    assert [guard.check(0.0) for _ in range(3)] == [Verdict.ALLOW] * 3
    assert guard.bucket.ready_at(0.0) == 0.5  # one token per 1/rate seconds
    assert guard.check(0.25) is Verdict.REFUSE  # half a token
    assert guard.check(0.5) is Verdict.ALLOW  # a whole one: and the run of strikes ends
    assert guard.check(0.5) is Verdict.REFUSE
    assert guard.check(0.5) is Verdict.CLOSE  # the second refusal in a row
    assert guard.refused == 3


def test_a_message_costs_a_token_per_256_bytes_and_never_more_than_the_burst():
    assert [message_cost(m) for m in ("", "x" * 255, "x" * 256, b"x" * 4352)] == [1, 1, 2, 18]
    guard = FloodGuard(rate=1.0, burst=40, strikes=3, now=0.0)
    assert guard.check(0.0, cost=17) is Verdict.ALLOW  # a 4 KiB subscribe
    assert guard.check(0.0, cost=17) is Verdict.ALLOW  # and another: 6 tokens left
    assert guard.check(0.0, cost=17) is Verdict.REFUSE  # not enough for a third
    assert guard.check(0.0, cost=3) is Verdict.ALLOW  # but enough for three pings' worth
    huge = FloodGuard(rate=1.0, burst=10, strikes=3, now=0.0)
    assert huge.check(0.0, cost=170) is Verdict.ALLOW  # capped at half the burst: never refused forever
    assert huge.bucket.tokens == 5.0  # and a ping after it still goes through
    assert huge.check(0.0, cost=1) is Verdict.ALLOW


def test_a_full_bucket_stays_full_and_a_clock_stepping_back_refills_nothing():
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    assert bucket.take(100.0) and bucket.take(100.0) and not bucket.take(100.0)  # idle time saved nothing extra
    assert not bucket.take(50.0)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200))
def test_no_window_ever_lets_more_than_burst_plus_rate_times_its_length_through(times):
    rate, burst = 5.0, 4
    times = sorted(times)
    guard = FloodGuard(rate, burst, strikes=10**9, now=0.0)
    allowed = [t for t in times if guard.check(t) is Verdict.ALLOW]
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + rate * (allowed[j] - start) + 1e-9


# ----- native ------------------------------------------------------------------------------


class Clock:
    """An injected Trio-seconds clock: exact times, no waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _native(max_subscriptions=1000, limits="", hub=None):
    if hub is None:
        hub = Hub({"trade": ["ca"]})
        hub.add_source(FakeAdapter("ca", {"trade"}))
    ctx = GatewayContext(native_config(max_subscriptions, limits), hub, None)
    clock, closed = Clock(), []
    session = NativeSession(ctx, Outbox(limit=100), CODECS["json"], close=lambda *c: closed.append(c), clock=clock,
                            clock_ns=lambda: 7)
    return session, clock, closed


def _replies(session) -> list[dict]:
    frames, _ = session.outbox.take()
    return [json.loads(p) for p in payloads(frames)]


def _subscribe(*channels: str) -> str:
    return json.dumps({"type": "subscribe", "channels": list(channels)})


def test_a_native_flood_is_refused_unapplied_then_closed_after_its_strikes():
    session, clock, closed = _native(limits="messages_per_second = 2\nmessage_burst = 3\nflood_strikes = 2")
    for _ in range(3):
        session.on_message('{"type":"ping"}')
    session.on_message(_subscribe("trade:binance"))  # over the rate: not applied
    assert [r["type"] for r in _replies(session)] == ["pong"] * 3 + ["error"]
    assert session.hub.demand_count() == 0
    clock.now = 0.5  # one token back
    session.on_message(_subscribe("trade:binance"))
    assert _replies(session) == [{"type": "subscribed", "channel": "trade:binance"}]
    session.on_message('{"type":"ping"}')
    session.on_message('{"type":"ping"}')
    errors = _replies(session)
    assert [e["code"] for e in errors] == ["RATE_LIMITED", "RATE_LIMITED"]
    assert errors[0]["message"] == "too many messages: at most 2 per second (bursts of 3; each 256 bytes counts as one); this one was not applied"
    assert closed == [(1008, "too many messages")]
    session.on_message('{"type":"ping"}')
    assert _replies(session) == []  # closing: nothing more is answered
    assert session.hub.demand_count() == 1  # what was subscribed stays until the close takes it
    assert (session.ctx.counters.rate_limited, session.ctx.counters.flood_closed) == (3, 1)


def _applied(session) -> None:
    """What `background` does a slice per scheduler pass, done here in one go."""
    while session._backlog:
        session._step()


def test_a_big_request_is_applied_a_slice_at_a_time_in_order():
    from gateway.dialects.native import SLICE_CHANNELS

    session, _, _ = _native(limits="message_burst = 100")
    session.on_message(_subscribe(*[f"trade:ex{i}" for i in range(250)]))
    assert [r["type"] for r in _replies(session)] == ["subscribed"] * SLICE_CHANNELS  # one slice per step
    assert session.hub.demand_count() == SLICE_CHANNELS
    session.on_message('{"type":"ping"}')  # waits its turn behind the subscribe; its arrival is a step
    assert [r["type"] for r in _replies(session)] == ["subscribed"] * SLICE_CHANNELS
    _applied(session)
    assert [r["type"] for r in _replies(session)] == ["subscribed"] * (250 - 2 * SLICE_CHANNELS) + ["pong"]
    assert session.hub.demand_count() == 250


def test_a_legal_1030_channel_subscribe_gets_1000_subscribed_and_one_limit_error():
    session, _, closed = _native(limits="message_burst = 100")
    session.on_message(_subscribe(*[f"trade:ex{i}" for i in range(1030)]))
    _applied(session)
    replies = _replies(session)
    assert [r["type"] for r in replies] == ["subscribed"] * 1000 + ["error"]
    error = replies[-1]
    assert error["code"] == "SUBSCRIPTION_LIMIT"
    assert error["message"] == "subscription limit reached (max 1000 per connection): 30 channels refused"
    assert error["channels"] == [f"trade:ex{i}" for i in range(1000, 1030)]
    assert closed == [] and len(session.subscriptions) == 1000
    session.on_message(_subscribe("trade:ex0", "trade:more"))  # at the cap: kept ones still answer
    assert [r.get("code", r["type"]) for r in _replies(session)] == ["subscribed", "SUBSCRIPTION_LIMIT"]


def test_the_gateway_wide_stream_cap_refuses_new_streams_only():
    hub = Hub({"trade": ["ca"]})
    hub.add_source(FakeAdapter("ca", {"trade"}))
    other = FakeClient(CODECS["json"])
    hub.subscribe(other, StreamKey("trade", "a", None))
    hub.subscribe(other, StreamKey("trade", "b", None))
    session, _, _ = _native(limits="max_streams = 3", hub=hub)
    session.on_message(_subscribe("trade:a", "trade:c", "trade:d", "trade:e"))
    replies = _replies(session)
    assert [r.get("channel") for r in replies[:2]] == ["trade:a", "trade:c"]  # a costs nothing: it is wanted
    assert replies[2] == {"type": "error", "code": "SUBSCRIPTION_LIMIT", "channels": ["trade:d", "trade:e"],
                          "message": "the gateway's stream limit is reached (max 3 streams): 2 channels refused"}
    assert hub.demand_count() == 3


# ----- Luzia -------------------------------------------------------------------------------

LUZIA = """
[endpoints.luzia]
tier = "local"
max_subscriptions = {max_subscriptions}
[limits]
{limits}
[providers.lz]
kind = "luzia"
emulate = true
[routes]
ticker = ["lz"]
"""


def _luzia(max_subscriptions=1000, limits=""):
    config = parse(LUZIA.format(max_subscriptions=max_subscriptions, limits=limits))
    hub = Hub(config.routes)
    adapter = FakeAdapter("lz", {"ticker"})
    hub.add_source(adapter)
    clock = Clock()
    endpoint = LuziaEndpoint(GatewayContext(config, hub, None), clock_ns=lambda: 0, clock=clock)
    peer = FakePeer()
    session = endpoint.open_session(peer, Request({}))
    assert peer.sent()[0]["type"] == "connected"
    return session, peer, clock, adapter


def test_a_luzia_subscribe_over_the_limit_gets_luzias_error_per_channel_and_stays_connected():
    session, peer, _, adapter = _luzia(limits="message_burst = 100")
    channels = [f"ticker:ex{i}" for i in range(1030)]
    session.on_message(json.dumps({"type": "subscribe", "channels": channels}))
    assert len(peer.sent()) == 100  # a slice per step (see test_a_big_request_is_applied_a_slice_at_a_time_in_order)
    _applied(session)
    replies = peer.sent()
    assert [r["type"] for r in replies] == ["subscribed"] * 900 + ["error"] * 30  # one answer per channel
    assert replies[-1] == {"type": "error", "code": "SUBSCRIPTION_LIMIT",
                           "message": "Subscription limit exceeded (max 1000 for local tier)"}
    assert peer.closed is None and len(adapter.wanted) == 1000


def test_luzia_counts_one_requests_new_streams_against_the_gateway_cap_before_applying_any():
    session, peer, _, adapter = _luzia(limits="max_streams = 2")
    session.on_message('{"type":"subscribe","channels":["ticker:a","ticker:b","ticker:a","ticker:c"]}')
    assert peer.sent() == [
        {"type": "subscribed", "channel": "ticker:a"},
        {"type": "subscribed", "channel": "ticker:b"},
        {"type": "subscribed", "channel": "ticker:a"},
        {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": "Subscription limit exceeded (max 2 streams on this gateway)"},
    ]
    assert adapter.wanted == {StreamKey("ticker", "a", None), StreamKey("ticker", "b", None)}


def test_a_luzia_flood_is_rate_limited_then_closed_and_releases_its_channels():
    session, peer, clock, adapter = _luzia(limits="messages_per_second = 1\nmessage_burst = 1\nflood_strikes = 2")
    session.on_message('{"type":"subscribe","channels":["ticker:a"]}')
    session.on_message('{"type":"subscribe","channels":["ticker:b"]}')
    clock.now = 0.5
    session.on_message('{"type":"ping"}')
    rate_limited = {"type": "error", "code": "RATE_LIMITED", "message": "Too many messages; this one was not applied"}
    assert peer.sent() == [{"type": "subscribed", "channel": "ticker:a"}, rate_limited, rate_limited]
    assert peer.closed == (1008, "too many messages")
    assert adapter.wanted == frozenset()  # released with the close
    session.on_message('{"type":"ping"}')  # before the socket is gone: nothing answered, nothing counted
    assert peer.sent() == [] and session.ctx.counters.flood_closed == 1


# ----- CoinAPI -----------------------------------------------------------------------------

COINAPI = """
[endpoints.coinapi]
max_subscriptions = {max_subscriptions}
[limits]
{limits}
[providers.ca]
kind = "coinapi"
emulate = true
[routes]
trade = ["ca"]
quote = ["ca"]
book = ["ca"]
"""


def _coinapi(max_subscriptions=1000, limits="", hub=None, local_keys=None):
    config = parse(COINAPI.format(max_subscriptions=max_subscriptions, limits=limits))
    adapter = FakeAdapter("ca", {"trade", "quote", "book"})
    hub = hub or make_hub(None, [adapter])
    return make_endpoint(hub, local_keys=local_keys, config=config), adapter


def _hello(**fields) -> str:
    return json.dumps({"type": "hello", "subscribe_data_type": ["trade"], **fields})


def test_coinapi_counts_the_streams_a_scope_covers_and_refuses_past_the_cap_before_the_hub_sees_it():
    endpoint, adapter = _coinapi(max_subscriptions=2)
    session = make_session(endpoint)
    exact = ["BITSTAMP_SPOT_BTC_USD$", "KRAKEN_SPOT_ETH_USD$"]
    session.on_message(_hello(subscribe_filter_symbol_id=exact, subscribe_filter_exchange_id=["COINBASE"]))
    assert messages(session) == [
        {"type": "error", "message": "Too many subscriptions: the filters cover 3 streams, at most 2 per connection."},
        ("close", 1008),
    ]
    assert adapter.update_calls == 0  # nothing went upstream, not even for a moment
    fine = make_session(endpoint)  # an exchange-wide filter is one stream
    fine.on_message(_hello(subscribe_filter_symbol_id=exact[:1], subscribe_filter_exchange_id=["COINBASE"]))
    assert messages(fine) == [] and adapter.wanted == {
        StreamKey("trade", "bitstamp", "BTC/USD"), StreamKey("trade", "coinbase", None)}


def test_coinapi_refuses_a_scope_that_would_pass_the_gateways_stream_cap():
    endpoint, adapter = _coinapi(limits="max_streams = 1")
    first = make_session(endpoint)
    first.on_message(_hello(subscribe_filter_exchange_id=["BITSTAMP"]))
    second = make_session(endpoint)
    second.on_message(_hello(subscribe_filter_exchange_id=["BITSTAMP"]))  # the same stream: no new one
    assert messages(first) == messages(second) == []
    second.on_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["trade"],
                                  "subscribe_filter_exchange_id": ["KRAKEN"]}))
    assert messages(second) == [
        {"type": "error", "message": "Too many subscriptions: this gateway serves at most 1 streams."}, ("close", 1008)]
    assert adapter.wanted == {StreamKey("trade", "bitstamp", None)}  # the first client keeps its stream


def test_coinapi_floods_end_with_the_error_then_the_close():
    endpoint, _ = _coinapi(limits="messages_per_second = 1\nmessage_burst = 2")
    session = make_session(endpoint, clock=lambda: 0.0)
    session.on_message(_hello())
    session.on_message(_hello())
    session.on_message(_hello())
    assert messages(session) == [{"type": "error", "message": "Too many messages: at most 1 small ones per second (each 256 bytes counts as one)."},
                                 ("close", 1008)]
    assert session.hub.demand_count() == 0 and endpoint.ctx.counters.flood_closed == 1


def test_coinapi_rejects_non_ascii_filter_items_instead_of_case_mapping_them():
    session = make_session(*_coinapi()[:1])
    session.on_message(_hello(subscribe_filter_exchange_id=["\u212aRAKEN"]))  # the Kelvin sign
    assert messages(session) == [
        {"type": "error", "message": "Parameter subscribe_filter_exchange_id contains an invalid item: '\u212aRAKEN'."},
        ("close", 1008)]


async def test_a_coinapi_connection_silent_past_the_auth_deadline_gets_the_error_then_the_close(
        autojump_clock, nursery):
    endpoint, _ = _coinapi(limits="auth_deadline_seconds = 2.5")
    silent, talker = make_session(endpoint), make_session(endpoint, key=GUID)
    nursery.start_soon(silent.background)
    nursery.start_soon(talker.background)
    await trio.sleep(1)
    talker.on_message(_hello(subscribe_filter_exchange_id=["BITSTAMP"]))
    await trio.sleep(5)
    assert [(t, json.loads(d[2:])) for t, d in silent.peer.outbox.log] == [
        (2.5, {"type": "error", "message": coinapi_server.NO_FIRST_MESSAGE})]  # at exactly the deadline
    assert silent.peer.closed_with == (1008, coinapi_server.NO_FIRST_MESSAGE) and silent.peer.outbox.closed
    assert talker.peer.closed_with is None and talker.hub.demand_count() == 1
    assert endpoint.ctx.counters.auth_timeouts == 1


def test_a_coinapi_scope_cannot_grow_without_bound_through_ids_that_cover_no_stream():
    endpoint, adapter = _coinapi(limits="message_burst = 100000")  # big messages cost tokens by size
    session = make_session(endpoint)
    per_message = coinapi_server.MAX_FILTER_ITEMS
    for batch in range(coinapi_server.MAX_SCOPE_ITEMS // per_message):
        ids = [f"BINANCEFTS_PERP_A{batch}X{i}_USDT$" for i in range(per_message)]  # PERP: no gateway stream
        session.on_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["trade"],
                                       "subscribe_filter_symbol_id": ids}))
    assert messages(session) == [] and session.protocol.scope.size == coinapi_server.MAX_SCOPE_ITEMS
    session.on_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["trade"],
                                   "subscribe_filter_symbol_id": ["BINANCEFTS_PERP_ONE_MORE$"]}))
    assert messages(session) == [{"type": "error", "message": coinapi_server.scope_too_big(coinapi_server.MAX_SCOPE_ITEMS)},
                                 ("close", 1008)]
    assert adapter.update_calls == 0
