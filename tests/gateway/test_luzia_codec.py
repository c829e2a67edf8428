"""The Luzia endpoint's own parts, without sockets: `LuziaCodec` (normalized tickers in Luzia's
ticker shape: exact numbers, nulls, times; pure, recording nothing), and `LuziaSession` applying the
shared server state machine to an outbox and a real hub. The protocol's rules and wording are
tested once, in tests/providers/luzia/test_server.py."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse
from gateway.context import GatewayContext
from gateway.dialects.luzia import LuziaCodec, LuziaEndpoint
from gateway.hub import Hub
from gateway.outbox import Outbox
from providers.luzia import normalize, wire
from providers.luzia.denormalize import ticker_data
from schemas import Gap, Quote, Status, Ticker
from schemas.streams import StreamKey
from tests.gateway.fakes import FakeAdapter
from tests.support.frames import payloads

T0 = 1_706_004_800_000_000_000  # 2024-01-23T10:13:20Z


def payload(frame: bytes) -> bytes:
    """The payload of one unmasked server frame."""
    assert frame[0] == 0x81  # FIN + text
    length = frame[1]
    return frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]


def full_ticker(**overrides) -> Ticker:
    fields = dict(
        provider="lz", ts_gateway=T0 + 50_000_000, exchange="binance", symbol="BTC/USDT", ts_exchange=T0,
        last=Decimal("67432.10"), bid=Decimal("67430.00"), ask=Decimal("67434.20"), high=Decimal("68100.00"),
        low=Decimal("66800.00"), open=Decimal("67000.00"), volume=Decimal("12345.67"),
        quote_volume=Decimal("832456789.12"), change=Decimal("432.10"), change_percent=Decimal("0.645"),
    )
    return Ticker(**{**fields, **overrides})


class FakePeer:
    def __init__(self) -> None:
        self.outbox = Outbox(limit=100)
        self.closed: tuple[int, str] | None = None

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def sent(self) -> list[dict]:
        frames, _ = self.outbox.take()
        return [json.loads(p) for p in payloads(frames)]


class Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.path, self.headers = "/v1/ws", headers


CONFIG = """
[endpoints.luzia]
tier = "local"
max_subscriptions = 2
max_connections = {max_connections}
[providers.lz]
kind = "luzia"
emulate = true
[routes]
{routes}
"""


def _endpoint(local_keys=None, routes='ticker = ["lz"]', max_connections=2):
    """The endpoint on a real hub whose one source is a fake that records what it is asked for."""
    config = parse(CONFIG.format(max_connections=max_connections, routes=routes))
    hub = Hub(config.routes)
    adapter = FakeAdapter("lz", {"ticker"})
    hub.add_source(adapter)
    return LuziaEndpoint(GatewayContext(config, hub, local_keys), clock_ns=lambda: T0 + 123_456_789, clock=lambda: 0.0), adapter


def test_a_session_applies_the_protocol_to_its_outbox_and_the_hub():
    endpoint, adapter = _endpoint()
    peer = FakePeer()
    session = endpoint.open_session(peer, Request({}))
    assert peer.sent() == [{"type": "connected", "message": "Connected to Luzia WebSocket API", "tier": "local",
                            "limits": {"maxSubscriptions": 2}}]
    session.on_message('{"type":"subscribe","channels":["ticker:binance:BTC-USDT","ticker:kraken","ticker:okx"]}')
    session.on_message('{"type":"ping"}')
    assert peer.sent() == [
        {"type": "subscribed", "channel": "ticker:binance:BTC-USDT"},
        {"type": "subscribed", "channel": "ticker:kraken"},
        {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": "Subscription limit exceeded (max 2 for local tier)"},
        {"type": "pong", "timestamp": "2024-01-23T10:13:20.123Z"},
    ]
    assert adapter.wanted == {StreamKey("ticker", "binance", "BTC/USDT"), StreamKey("ticker", "kraken", None)}
    assert adapter.update_calls == 1  # one request, one update
    endpoint.ctx.hub.publish(full_ticker())
    (frame,) = peer.sent()
    assert frame["type"] == "ticker" and frame["symbol"] == "BTC/USDT"
    endpoint.ctx.hub.publish(Status(provider="lz", ts_gateway=T0, state="stale", stream="ticker:kraken"))
    assert peer.sent() == []  # Luzia has no status message
    session.on_close()
    assert adapter.wanted == frozenset() and not endpoint.sessions


def test_refusals_at_the_upgrade_and_after_it():
    endpoint, _ = _endpoint(local_keys=frozenset({"lz_local"}), max_connections=1)
    refused = endpoint.open_session(FakePeer(), Request({}))
    assert refused.status == 401 and json.loads(refused.body)["message"] == "Missing or invalid API key"
    wrong = FakePeer()
    endpoint.open_session(wrong, Request({"authorization": "Bearer lz_other"}))
    assert wrong.sent() == [{"type": "error", "code": "CONNECTION_REJECTED", "message": "Invalid API key"}]
    assert wrong.closed == (1008, "connection rejected")
    first, second = FakePeer(), FakePeer()
    kept = endpoint.open_session(first, Request({"authorization": "Bearer lz_local"}))
    endpoint.open_session(second, Request({"authorization": "Bearer lz_local"}))
    assert second.sent()[0]["message"] == "Connection limit exceeded (max 1 for local tier)"
    assert first.closed is None and len(endpoint.sessions) == 1
    assert [json.loads(payload(f))["code"] for f in kept.goodbye_frames()] == ["SERVER_SHUTDOWN"]


def test_without_a_ticker_route_every_channel_is_invalid_and_says_why():
    endpoint, _ = _endpoint(routes='trade = ["lz"]')
    peer = FakePeer()
    session = endpoint.open_session(peer, Request({}))
    peer.sent()
    session.on_message('{"type":"subscribe","channels":["ticker:binance:BTC/USDT"]}')
    assert peer.sent() == [{"type": "error", "code": "INVALID_CHANNEL",
                            "message": "Invalid channel: ticker:binance:BTC/USDT (no provider serves tickers on this gateway)"}]


def test_a_full_ticker_is_the_documented_frame_byte_for_byte():
    expected = (
        '{"type":"ticker","exchange":"binance","symbol":"BTC/USDT","data":{"symbol":"BTC/USDT","exchange":"binance",'
        '"last":67432.10,"bid":67430.00,"ask":67434.20,"high":68100.00,"low":66800.00,"open":67000.00,'
        '"close":67432.10,"volume":12345.67,"quoteVolume":832456789.12,"change":432.10,"changePercent":0.645,'
        '"timestamp":"2024-01-23T10:13:20.000Z"},"timestamp":"2024-01-23T10:13:20.050Z"}'
    )
    assert payload(LuziaCodec().frame(full_ticker())).decode() == expected  # the example on Luzia's API page


def test_unknown_fields_are_null_never_zero_and_close_follows_last():
    partial = Ticker(provider="ca", ts_gateway=T0, exchange="kraken", symbol="BTC/USD", bid=Decimal("1.5"))
    data = json.loads(payload(LuziaCodec().frame(partial)))["data"]
    assert data["bid"] == 1.5
    unknown = ("last", "ask", "high", "low", "open", "close", "volume", "quoteVolume", "change", "changePercent")
    assert all(data[name] is None for name in unknown)
    assert data["timestamp"] == "2024-01-23T10:13:20.000Z"  # no exchange time: the receive time


def test_observation_time_prefers_exchange_then_provider_time():
    ticker = full_ticker(ts_exchange=None, ts_provider=T0 + 7_000_000)
    assert ticker_data(ticker).timestamp == "2024-01-23T10:13:20.007Z"
    assert ticker_data(full_ticker()).timestamp == "2024-01-23T10:13:20.000Z"


def test_codec_shows_only_tickers_and_records_nothing():
    codec = LuziaCodec()
    others = [
        Quote(provider="ca", ts_gateway=T0, exchange="okx", symbol="BTC/USDT", bid_price=Decimal(1)),
        Status(provider="lz", ts_gateway=T0, state="rejected", stream="ticker:okx:BTC/USDT"),
        Gap(provider="lz", ts_gateway=T0, datatype="ticker", exchange="okx", symbol=None, from_ts=0, to_ts=1, cause="reconnect"),
    ]
    assert [codec.frame(e) for e in others] == [None, None, None]
    assert codec.frame(full_ticker()) == codec.frame(full_ticker())
    assert vars(codec) == {}  # pure: the exchanges seen are the REST tap's business


# Within the bounds every normalize enforces (providers/common/values.py): prices are 0 … 10^12.
prices = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("0"), max_value=Decimal("1e12"), places=8)


@given(last=prices, bid=prices | st.none(), volume=prices | st.none())
def test_numbers_keep_every_digit_through_our_own_luzia_decoder(last, bid, volume):
    ticker = full_ticker(last=last, bid=bid, volume=volume)
    decoded = wire.decode_server(payload(LuziaCodec().frame(ticker)))
    back = normalize.ticker_event(decoded, provider="lz", ts_gateway=ticker.ts_gateway)
    assert (back.last, back.bid, back.volume) == (last, bid, volume)
    assert str(back.last) == str(last)  # the same digits, not just the same value
    assert (back.exchange, back.symbol, back.ts_exchange, back.ts_provider) == ("binance", "BTC/USDT", T0, T0 + 50_000_000)
