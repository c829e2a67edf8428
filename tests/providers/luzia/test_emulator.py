"""Emulator conformance: Luzia's protocol as documented, every error code in its situation, and
the scripted faults, driven by a plain trio-websocket client over memory streams (fake time)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from providers.common.emulator import FaultScript
from providers.luzia.emulator import MAX_RECORDED_MESSAGES, LuziaEmulator
from providers.luzia.grammar import TierLimits
from tests.providers.luzia.support import KEY, open_client, receive, send

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def _connected(emulator, nursery, **kw):
    ws = await open_client(emulator, nursery, **kw)
    hello = await receive(ws)
    assert hello["type"] == "connected"
    return ws


async def test_connected_then_one_answer_per_channel_in_order(autojump_clock, emulator, nursery):
    ws = await open_client(emulator, nursery)
    assert await receive(ws) == {
        "type": "connected",
        "message": "Connected to Luzia WebSocket API",
        "tier": "pro",
        "limits": {"maxSubscriptions": 50},
    }
    await send(ws, {"type": "subscribe", "channels": ["ticker:binance:BTC-USDT", "ticker:nowhere", "ticker:coinbase"]})
    assert await receive(ws) == {"type": "subscribed", "channel": "ticker:binance:BTC-USDT"}  # echoed as sent
    assert await receive(ws) == {"type": "error", "code": "INVALID_CHANNEL", "message": "Invalid channel: ticker:nowhere"}
    assert await receive(ws) == {"type": "subscribed", "channel": "ticker:coinbase"}
    assert emulator.active_channels() == Counter({"ticker:binance:BTC/USDT": 1, "ticker:coinbase": 1})


async def test_ticker_frames_cover_the_subscribed_channels_in_luzias_shape(autojump_clock, emulator, nursery):
    ws = await _connected(emulator, nursery)
    await send(ws, {"type": "subscribe", "channels": ["ticker:coinbase", "ticker:binance:ETH/USDT"]})
    for _ in range(2):
        assert (await receive(ws))["type"] == "subscribed"
    tickers = [await receive(ws) for _ in range(8)]
    seen = {(t["exchange"], t["symbol"]) for t in tickers}
    assert seen == {("coinbase", "BTC/USD"), ("coinbase", "ETH/USD"), ("coinbase", "ETH/USDT"), ("binance", "ETH/USDT")}
    for t in tickers:
        assert t["type"] == "ticker" and t["data"]["symbol"] == t["symbol"] and t["data"]["exchange"] == t["exchange"]
        assert ISO_MS.fullmatch(t["timestamp"]) and ISO_MS.fullmatch(t["data"]["timestamp"])
        assert t["data"]["bid"] < t["data"]["last"] <= t["data"]["ask"] or t["data"]["bid"] == t["data"]["last"]
    assert trio.current_time() == 2.0  # 8 frames at 4 per second


async def test_unsubscribe_stops_the_data(autojump_clock, emulator, nursery):
    ws = await _connected(emulator, nursery)
    await send(ws, {"type": "subscribe", "channels": ["ticker:binance:BTC/USDT"]})
    await receive(ws)
    await send(ws, {"type": "unsubscribe", "channels": ["ticker:binance:BTC/USDT", "ticker:kraken:BTC/USD"]})
    answers = []
    while len(answers) < 2:
        message = await receive(ws)
        if message["type"] != "ticker":  # a frame may have been on its way
            answers.append(message)
    assert answers == [
        {"type": "unsubscribed", "channel": "ticker:binance:BTC/USDT"},
        {"type": "unsubscribed", "channel": "ticker:kraken:BTC/USD"},  # not subscribed: answered anyway
    ]
    assert emulator.active_channels() == Counter()
    with trio.move_on_after(100) as quiet:
        await ws.get_message()
    assert quiet.cancelled_caught


async def test_ping_gets_pong_with_an_iso_ms_timestamp(autojump_clock, emulator, nursery):
    ws = await _connected(emulator, nursery)
    await send(ws, {"type": "ping"})
    pong = await receive(ws)
    assert pong["type"] == "pong" and ISO_MS.fullmatch(pong["timestamp"])


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        ("this is not json", "INVALID_JSON", "Invalid JSON"),
        ('{"channels":["ticker:binance"]}', "INVALID_REQUEST", "Missing required field: type"),
        ("[1, 2]", "INVALID_REQUEST", "Missing required field: type"),
        ('{"type":"subscribe"}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type":"unsubscribe","channels":"ticker:binance"}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type":"hello"}', "UNKNOWN_TYPE", "Unknown message type: hello"),
        ('{"type":"subscribe","channels":["trade:binance:BTC/USDT"]}', "INVALID_CHANNEL", "Invalid channel: trade:binance:BTC/USDT"),
        ('{"type":"subscribe","channels":["ticker:binance:DOGE/USDT"]}', "INVALID_CHANNEL", "Invalid channel: ticker:binance:DOGE/USDT"),
    ],
)
async def test_request_errors(autojump_clock, emulator, nursery, frame, code, message):
    ws = await _connected(emulator, nursery)
    await send(ws, frame)
    assert await receive(ws) == {"type": "error", "code": code, "message": message}
    await send(ws, {"type": "ping"})  # the connection goes on
    assert (await receive(ws))["type"] == "pong"


async def test_subscription_limit_per_connection(autojump_clock, nursery):
    emulator = LuziaEmulator(rate=4, limits=TierLimits(5, 2))
    ws = await _connected(emulator, nursery)
    channels = ["ticker:binance:BTC/USDT", "ticker:binance:ETH/USDT", "ticker:binance:SOL/USDT", "ticker:binance:BTC/USDT"]
    await send(ws, {"type": "subscribe", "channels": channels})
    answers = [await receive(ws) for _ in channels]
    limit = {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": "Subscription limit exceeded (max 2 for pro tier)"}
    assert answers[:2] == [{"type": "subscribed", "channel": c} for c in channels[:2]]
    assert answers[2] == limit
    assert answers[3] == {"type": "subscribed", "channel": channels[3]}  # already subscribed: counted once
    assert sum(emulator.active_channels().values()) == 2


async def _rejection(emulator, nursery, key=KEY) -> dict:
    ws = await open_client(emulator, nursery, headers=[(b"Authorization", f"Bearer {key}".encode())])
    error = await receive(ws)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1008
    return error


async def test_connection_rejected_for_a_key_it_does_not_accept(autojump_clock, emulator, nursery):
    error = await _rejection(emulator, nursery, key="lz_someone_else")
    assert error == {"type": "error", "code": "CONNECTION_REJECTED", "message": "Invalid API key"}
    assert emulator.stats.connections_open == 0


async def test_connection_rejected_for_the_free_tier(autojump_clock, nursery):
    error = await _rejection(LuziaEmulator(tier="free"), nursery)
    assert error["code"] == "CONNECTION_REJECTED" and "Pro or Enterprise" in error["message"]


async def test_connection_rejected_over_the_connection_limit(autojump_clock, nursery):
    emulator = LuziaEmulator(limits=TierLimits(2, 50))
    await _connected(emulator, nursery)
    await _connected(emulator, nursery)
    error = await _rejection(emulator, nursery)
    assert error == {"type": "error", "code": "CONNECTION_REJECTED", "message": "Connection limit exceeded (max 2 for pro tier)"}
    await _connected(emulator, nursery, headers=[(b"Authorization", b"Bearer lz_another_key")])  # per key
    assert emulator.stats.connections_open == 3


async def test_reject_key_fault(autojump_clock, emulator, nursery):
    emulator.faults.add(FaultScript(reject_key=True))
    assert (await _rejection(emulator, nursery))["message"] == "Invalid API key"
    await _connected(emulator, nursery)  # only the scripted connection is refused


@pytest.mark.parametrize("headers", [[], [(b"Authorization", b"Bearer not-a-luzia-key")], [(b"Authorization", b"lz_x")]])
async def test_missing_or_malformed_key_is_refused_at_the_upgrade(autojump_clock, emulator, nursery, headers):
    assert await _refused_upgrade(emulator, nursery, headers=headers) == (401, b'{"message":"Missing or invalid API key"}')


async def test_wrong_path_is_not_found(autojump_clock, emulator, nursery):
    assert (await _refused_upgrade(emulator, nursery, url="ws://luzia.test/v2/ws"))[0] == 404


async def _refused_upgrade(emulator, nursery, **kw) -> tuple[int, bytes]:
    """trio-websocket raises the refusal from the client's reader task, i.e. out of its nursery."""
    with pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as refused:
        async with trio.open_nursery() as client_nursery:
            await open_client(emulator, nursery, client_nursery=client_nursery, **kw)
    rejection = refused.value.exceptions[0]
    return rejection.status_code, rejection.body


async def _subscribed_client(emulator, nursery, channel="ticker:binance:BTC/USDT"):
    ws = await _connected(emulator, nursery)
    await send(ws, {"type": "subscribe", "channels": [channel]})
    assert (await receive(ws))["type"] == "subscribed"
    return ws


async def test_server_shutdown_fault(autojump_clock, emulator, nursery):
    emulator.faults.add(FaultScript(shutdown_after_frames=2))
    ws = await _subscribed_client(emulator, nursery)
    assert [(await receive(ws))["type"] for _ in range(2)] == ["ticker", "ticker"]
    assert (await receive(ws))["code"] == "SERVER_SHUTDOWN"
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1001 and trio.current_time() == 0.5


async def test_drop_fault_closes_without_a_close_frame(autojump_clock, emulator, nursery):
    emulator.faults.add(FaultScript(drop_after_frames=3))
    ws = await _subscribed_client(emulator, nursery)
    assert [(await receive(ws))["type"] for _ in range(3)] == ["ticker"] * 3
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1006 and trio.current_time() == 0.75
    assert emulator.stats.connections_open == 0


async def test_mute_fault_keeps_the_socket_but_answers_nothing(autojump_clock, emulator, nursery):
    emulator.faults.add(FaultScript(mute_after_frames=1))
    ws = await _subscribed_client(emulator, nursery)
    assert (await receive(ws))["type"] == "ticker"
    await send(ws, {"type": "ping"})
    with trio.move_on_after(1000) as quiet:
        await ws.get_message()
    assert quiet.cancelled_caught
    assert emulator.stats.connections_open == 1 and emulator.stats.client_messages[-1] == {"type": "ping"}


async def test_garbage_fault_sends_one_bad_frame_then_goes_on(autojump_clock, emulator, nursery):
    emulator.faults.add(FaultScript(garbage_after_frames=1))
    ws = await _subscribed_client(emulator, nursery)
    frames = [await ws.get_message() for _ in range(4)]
    assert frames[1] == '{"type":"ticker","exchange":"binance","symbol":'
    assert all(f.startswith('{"type":"ticker"') and f.endswith("}") for i, f in enumerate(frames) if i != 1)


async def test_paused_instruments_publish_nothing(autojump_clock, emulator, nursery):
    ws = await _subscribed_client(emulator, nursery, "ticker:binance")
    emulator.paused = {i for i in emulator.instruments if i.symbol != "SOL/USDT"}
    symbols = {(await receive(ws))["symbol"] for _ in range(5)}
    assert symbols == {"SOL/USDT"}


async def test_the_market_is_deterministic_for_a_seed(autojump_clock, nursery):
    async def prices(emulator):
        ws = await _subscribed_client(emulator, nursery, "ticker:binance")
        return [(await receive(ws))["data"]["last"] for _ in range(9)]

    first = await prices(LuziaEmulator(seed=7, rate=4, clock=lambda: 0))
    second = await prices(LuziaEmulator(seed=7, rate=4, clock=lambda: 0))
    other = await prices(LuziaEmulator(seed=8, rate=4, clock=lambda: 0))
    assert first == second != other


def test_what_clients_sent_is_kept_within_a_bound():
    emulator = LuziaEmulator()
    for i in range(MAX_RECORDED_MESSAGES + 1):
        emulator._record(f'{{"type":"ping","n":{i}}}')
    emulator._record("[" * 100_000)  # a hostile client's: not recorded, and nothing raised
    recorded = emulator.stats.client_messages
    assert len(recorded) <= MAX_RECORDED_MESSAGES and recorded[-1] == {"type": "ping", "n": MAX_RECORDED_MESSAGES}
