"""The native protocol's client side: every error code in its situation, replies in order."""

import msgspec
import pytest

from gateway.config import parse
from gateway.context import GatewayContext
from gateway.dialects.native import CODECS, NativeSession, Ping, RequestError, Subscribe, parse_request
from gateway.hub import Hub
from gateway.outbox import DroppedWindow, Outbox
from schemas.streams import Stream, StreamKey
from tests.gateway.fakes import FakeAdapter
from tests.support.frames import payloads


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "INVALID_JSON"),
        ("[1, 2]", "INVALID_REQUEST"),
        ('{"channels": []}', "INVALID_REQUEST"),
        ('{"type": "subscribe"}', "INVALID_REQUEST"),
        ('{"type": "subscribe", "channels": "trade:binance"}', "INVALID_REQUEST"),
        ('{"type": "subscribe", "channels": [1]}', "INVALID_REQUEST"),
        ('{"type": "hello"}', "UNKNOWN_TYPE"),
    ],
)
def test_bad_messages_earn_their_error_code(message, code):
    with pytest.raises(RequestError) as info:
        parse_request(message)
    assert info.value.code == code


def test_good_messages_parse():
    assert parse_request('{"type":"ping"}') == Ping()
    assert parse_request(b'{"type":"subscribe","channels":["trade:binance"]}') == Subscribe(["trade:binance"])
    packed = msgspec.msgpack.encode({"type": "subscribe", "channels": ["quote:kraken"]})
    assert parse_request(packed, msgpack=True) == Subscribe(["quote:kraken"])


def test_undecodable_messages_name_the_format_expected():
    with pytest.raises(RequestError) as info:
        parse_request(b"\xc1", msgpack=True)  # 0xc1 is never valid MessagePack
    assert (info.value.code, str(info.value)) == ("INVALID_JSON", "message is not valid MessagePack")
    with pytest.raises(RequestError) as info:
        parse_request("{", msgpack=True)  # a text frame on a msgpack stream is still read as JSON
    assert str(info.value) == "message is not valid JSON"


def native_config(max_subscriptions=10, limits=""):
    return parse(f"""[server]\nmax_subscriptions_per_client = {max_subscriptions}\n[limits]\n{limits}
[providers.ca]\nkind = "coinapi"\nemulate = true\n[routes]\ntrade = ["ca"]""")


def _session(max_subscriptions=10):
    hub = Hub({"trade": ["ca"]})
    adapter = FakeAdapter("ca", {"trade"})
    hub.add_source(adapter)
    clock = iter(range(1_000, 10**6, 1_000)).__next__  # the wall clock, injected: exact times
    ctx = GatewayContext(native_config(max_subscriptions), hub, None)
    session = NativeSession(ctx, Outbox(limit=100), CODECS["json"], clock=lambda: 0.0, clock_ns=clock)
    return session, adapter


def _replies(session):
    frames, _ = session.outbox.take()
    return [msgspec.json.decode(p) for p in payloads(frames)]


def test_subscribe_replies_per_channel_with_the_canonical_name():
    session, adapter = _session()
    session.on_message('{"type":"subscribe","channels":["trade:Binance:btc-usdt","trade:nope","quote:binance"]}')
    assert _replies(session) == [
        {"type": "subscribed", "channel": "trade:binance:BTC/USDT"},
        {"type": "subscribed", "channel": "trade:nope"},
        {"type": "error", "code": "NO_ROUTE", "message": "no provider is configured for quote (see [routes])",
         "channel": "quote:binance"},
    ]
    assert adapter.wanted == {StreamKey("trade", "binance", "BTC/USDT"), StreamKey("trade", "nope", None)}


def test_invalid_channel_and_limit():
    session, _ = _session(max_subscriptions=1)
    session.on_message('{"type":"subscribe","channels":["trade:binance:BTC","trade:a","trade:b","trade:a"]}')
    replies = _replies(session)
    codes = [r.get("code", r["type"]) for r in replies]
    assert codes == ["INVALID_CHANNEL", "subscribed", "subscribed", "SUBSCRIPTION_LIMIT"]  # the cap's error last
    assert replies[-1]["channels"] == ["trade:b"]


def test_unsubscribe_and_close_release_upstream_demand():
    session, adapter = _session()
    session.on_message('{"type":"subscribe","channels":["trade:a","trade:b"]}')
    session.on_message('{"type":"unsubscribe","channels":["trade:a"]}')
    assert _replies(session)[-1] == {"type": "unsubscribed", "channel": "trade:a"}
    assert adapter.wanted == {StreamKey("trade", "b", None)}
    session.on_close()
    assert adapter.wanted == frozenset()


def test_ping_gets_pong_and_gaps_name_the_window():
    session, _ = _session()
    session.on_message('{"type":"ping"}')
    (pong,) = _replies(session)
    assert pong == {"type": "pong", "ts_gateway": 1_000}
    session.hub.serving["trade"] = "ca"
    (frame,) = session.gap_frames([DroppedWindow(Stream("trade", "binance", "BTC/USDT"), 5, 9, 3)])
    gap = msgspec.json.decode(frame[2:] if frame[1] < 126 else frame[4:])
    assert (gap["type"], gap["cause"], gap["from_ts"], gap["to_ts"], gap["missed"], gap["provider"]) == (
        "gap", "client_overflow", 5, 9, 3, "ca")
    assert gap["ts_gateway"] == 2_000


def test_a_request_naming_too_many_channels_is_refused_whole():
    from gateway.dialects.native import MAX_CHANNELS_PER_REQUEST

    session, adapter = _session()
    channels = ["trade:a"] * (MAX_CHANNELS_PER_REQUEST + 1)
    session.on_message(msgspec.json.encode({"type": "subscribe", "channels": channels}))
    (reply,) = _replies(session)
    assert reply == {"type": "error", "code": "INVALID_REQUEST",
                     "message": f"too many channels in one request (max {MAX_CHANNELS_PER_REQUEST})"}
    assert adapter.wanted == frozenset()


@pytest.mark.parametrize(
    ("message", "msgpack"),
    [("[" * 100_000, False), (b"\x91" * 100_000, True), (b'{"type":"ping","x":"\xc3\x28"}', False)],
)
def test_nesting_past_the_decoders_limit_and_invalid_utf8_are_invalid_json(message, msgpack):
    with pytest.raises(RequestError) as info:
        parse_request(message, msgpack=msgpack)
    assert info.value.code == "INVALID_JSON" and info.value.fault is None


def test_an_unknown_type_is_echoed_only_in_part():
    with pytest.raises(RequestError) as info:
        parse_request(msgspec.json.encode({"type": "x" * 10_000}))
    assert info.value.code == "UNKNOWN_TYPE" and len(str(info.value)) < 100
