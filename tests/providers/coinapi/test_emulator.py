"""The emulator against the protocol: paths and keys, every error path, heartbeats, filter
union semantics, frame shapes and sequences, the hello rate limit and the scripted faults.
A raw trio-websocket client over memory streams, under fake time."""

from __future__ import annotations

import json
import re

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from providers.coinapi import feed
from providers.coinapi.emulator import CoinApiEmulator, run_standalone
from providers.coinapi.server import INVALID_API_KEY as INVALID_KEY
from providers.coinapi.server import INVALID_MESSAGE as INVALID_JSON
from providers.coinapi.server import rate_limited
from providers.common.emulator import FaultScript
from providers.common.market import Instrument
from tests.providers.coinapi.support import KEY, SEED, fake_wall_ns
from tests.support.memory import memory_connector

RATE_LIMITED = rate_limited(10, 10.0)

HEADER = [(b"X-CoinAPI-Key", KEY.encode())]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")


def hello(**fields) -> str:
    return json.dumps({"type": "hello", **fields})


async def connect(emulator, nursery, path="/v1/", headers=HEADER):
    return await memory_connector(emulator.handle_stream, nursery)(nursery, f"ws://emu{path}", headers)


async def receive(ws, count: int) -> list[dict]:
    return [json.loads(await ws.get_message()) for _ in range(count)]


async def expect_error_then_close(ws, text: str) -> None:
    assert json.loads(await ws.get_message()) == {"type": "error", "message": text}
    with pytest.raises(ConnectionClosed):
        await ws.get_message()


@pytest.mark.parametrize(
    ("path", "headers", "source"),
    [
        ("/v1/", HEADER, "header"),
        ("/v1", [(b"Authorization", KEY.encode())], "authorization"),
        (f"/?apikey={KEY}", [], "query"),
        (f"/APIKEY-{KEY}", [], "path"),
        ("/", [], None),  # the key only in the hello, as every legacy example does
    ],
)
async def test_every_documented_way_to_pass_the_key(autojump_clock, nursery, path, headers, source) -> None:
    emulator = CoinApiEmulator(rate=4, accepted_keys={KEY}, seed=SEED)
    ws = await connect(emulator, nursery, path, headers)
    await ws.send_message(hello(apikey=KEY, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["BINANCE_SPOT_BTC_USDT$"]))
    (trade,) = await receive(ws, 1)
    assert trade["type"] == "trade" and trade["symbol_id"] == "BINANCE_SPOT_BTC_USDT"
    assert emulator.connections[0].key_source == source


def test_the_rate_limit_text() -> None:
    assert RATE_LIMITED == "Too many hello/subscribe messages: at most 10 per 10 seconds."


async def test_an_unknown_path_is_refused(autojump_clock, nursery, emulator) -> None:
    # trio-websocket raises the refusal from its reader task, i.e. out of the nursery it was given.
    with pytest.raises(ExceptionGroup) as refused:
        async with trio.open_nursery() as connection_nursery:
            await memory_connector(emulator.handle_stream, nursery)(connection_nursery, "ws://emu/v2/", HEADER)
    (leaf,) = refused.value.exceptions
    assert isinstance(leaf, ConnectionRejected) and leaf.status_code == 404


@pytest.mark.parametrize(
    ("headers", "message", "faults"),
    [
        ([], {}, FaultScript()),  # no key at all
        ([(b"X-CoinAPI-Key", b"wrong")], {}, FaultScript()),  # not an accepted key
        (HEADER, {"apikey": "wrong"}, FaultScript()),  # a bad key in the hello spoils a good header
        (HEADER, {}, FaultScript(reject_key=True)),
    ],
)
async def test_a_refused_key_is_an_error_after_the_first_hello_then_close(autojump_clock, nursery, headers, message, faults):
    emulator = CoinApiEmulator(rate=4, accepted_keys={KEY})
    emulator.faults.add(faults)
    ws = await connect(emulator, nursery, headers=headers)
    await ws.send_message(hello(subscribe_data_type=["trade"], **message))
    await expect_error_then_close(ws, INVALID_KEY)
    await trio.testing.wait_all_tasks_blocked()
    assert emulator.stats.connections_open == 0 and emulator.stats.connections_opened == 1


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (hello(), "Parameter subscribe_data_type is required."),
        (hello(subscribe_data_type=["trade", "trades"]), "Parameter subscribe_data_type contains an unknown data type: trades."),
        ('{"type":"hello",', INVALID_JSON),
        ('{"type":"greet","subscribe_data_type":["trade"]}', INVALID_JSON),
        ('{"type":"hello","subscribe_data_type":"trade"}', INVALID_JSON),
    ],
)
async def test_bad_requests_are_an_error_then_close(autojump_clock, nursery, emulator, frame, text) -> None:
    ws = await connect(emulator, nursery)
    await ws.send_message(frame)
    await expect_error_then_close(ws, text)


async def test_heartbeat_after_each_second_of_silence(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    await trio.sleep(2.5)
    await ws.send_message(hello(heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["NOWHERE_SPOT_A_B$"]))
    for second in (3.5, 4.5, 5.5):
        assert json.loads(await ws.get_message()) == {"type": "hearbeat"}
        assert trio.current_time() == second


async def test_no_heartbeat_unless_asked_and_none_while_data_flows(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["NOWHERE_SPOT_A_B$"]))
    with trio.move_on_after(5) as waited:
        await ws.get_message()
    assert waited.cancelled_caught
    quiet = await connect(emulator, nursery)
    await quiet.send_message(hello(heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_"]))
    assert {m["type"] for m in await receive(quiet, 12)} == {"trade"}  # 4 steps a second: never a second of silence


async def symbols_seen(ws, steps: int = 3) -> set[str]:
    seen: set[str] = set()
    with trio.move_on_after(steps / 4):
        while True:
            seen.add(json.loads(await ws.get_message())["symbol_id"])
    return seen


async def test_filter_lists_are_a_union(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    await ws.send_message(
        hello(
            subscribe_data_type=["trade"],
            subscribe_filter_exchange_id=["COINBASE"],
            subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$", "BINANCE_SPOT_E"],
            subscribe_filter_asset_id=["LTC"],
        )
    )
    assert await symbols_seen(ws) == {
        "COINBASE_SPOT_BTC_USD", "COINBASE_SPOT_ETH_USD", "COINBASE_SPOT_ETH_USDT",
        "BITSTAMP_SPOT_BTC_USD", "BINANCE_SPOT_ETH_USDT", "BITFINEX_SPOT_BTC_LTC",
    }


async def test_subscribe_first_then_add_then_unsubscribe(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    await ws.send_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["KRAKEN_"]}))
    assert await symbols_seen(ws) == {"KRAKEN_SPOT_BTC_USD"}
    await ws.send_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["trade"], "subscribe_filter_asset_id": ["SOL"]}))
    assert await symbols_seen(ws) == {"KRAKEN_SPOT_BTC_USD", "BINANCE_SPOT_SOL_USDT"}
    await ws.send_message(json.dumps({"type": "unsubscribe", "subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["KRAKEN_"]}))
    await symbols_seen(ws, steps=1)  # frames sent before the unsubscribe arrived
    assert await symbols_seen(ws) == {"BINANCE_SPOT_SOL_USDT"}
    (scope,) = emulator.scopes.values()
    assert scope.wants("trade", "BINANCE_SPOT_SOL_USDT") and not scope.wants("trade", "KRAKEN_SPOT_BTC_USD")


async def test_frames_shapes_times_and_sequences(autojump_clock, nursery) -> None:
    emulator = CoinApiEmulator(rate=4, seed=SEED, clock_ns=fake_wall_ns)
    ws = await connect(emulator, nursery)
    types = ["trade", "quote", "book", "book5", "book20", "book50", "ohlcv"]
    await ws.send_message(hello(subscribe_data_type=types, subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$", "KRAKEN_SPOT_BTC_USD$"]))
    raw = [await ws.get_message() for _ in range(200)]
    messages = [json.loads(r) for r in raw]
    assert all(r.endswith(f',"type":"{m["type"]}"}}') for r, m in zip(raw, messages, strict=True))  # type last, compact
    sequences: dict[tuple[str, str], list[int]] = {}
    for m in messages:
        sequences.setdefault((m["type"], m["symbol_id"]), []).append(m["sequence"])
        assert all(TIME.fullmatch(m[k]) for k in m if k.startswith("time_"))
    assert {t for t, _ in sequences} == set(types)
    assert all(seq == list(range(1, len(seq) + 1)) for seq in sequences.values())
    by_type = {m["type"]: m for m in messages if m["symbol_id"] == "KRAKEN_SPOT_BTC_USD"}
    assert [len(by_type[t]["bids"]) for t in ("book5", "book20", "book50")] == [5, 20, 50]
    books = [m for m in messages if m["type"] == "book" and m["symbol_id"] == "KRAKEN_SPOT_BTC_USD"]
    assert books[0]["is_snapshot"] is True and not any(b["is_snapshot"] for b in books[1:])
    first_trade = next(m for m in messages if m["type"] == "trade")
    # Sent at the wall clock of fake time 0: that is CoinAPI's stamp; the exchange's is 5 ms earlier.
    assert first_trade["time_coinapi"] == "2025-01-14T16:49:58.0000000Z"
    assert first_trade["time_exchange"] == "2025-01-14T16:49:57.9950000Z"
    assert set(first_trade) == {"time_exchange", "time_coinapi", "uuid", "price", "size", "taker_side", "symbol_id", "sequence", "type"}
    periods = {m["period_id"] for m in messages if m["type"] == "ohlcv"}
    assert {"1MIN", "1DAY"} <= periods
    day = next(m for m in messages if m["type"] == "ohlcv" and m["period_id"] == "1DAY")
    assert (day["time_period_start"], day["time_period_end"]) == ("2025-01-14T00:00:00.0000000Z", "2025-01-15T00:00:00.0000000Z")


async def test_ohlcv_honours_the_period_filter_and_repeats_every_five_seconds(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    await ws.send_message(hello(subscribe_data_type=["ohlcv"], subscribe_filter_symbol_id=["KRAKEN_"], subscribe_filter_period_id=["1DAY"]))
    times = []
    for _ in range(3):
        (message,) = await receive(ws, 1)
        assert message["period_id"] == "1DAY"
        times.append(trio.current_time())
    assert times == [0.0, 5.0, 10.0]


async def test_overlapping_connections_deliver_the_same_trades(autojump_clock, nursery, emulator) -> None:
    first, second = await connect(emulator, nursery), await connect(emulator, nursery)
    subscription = hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_SPOT_BTC_USD$"])
    await first.send_message(subscription)
    early = await receive(first, 2)
    await second.send_message(subscription)
    later_first, later_second = await receive(first, 4), await receive(second, 3)
    # The second connection starts at the market's head: trade 3, which the first also delivers next.
    assert [m["uuid"] for m in later_second] == [m["uuid"] for m in later_first[:3]]
    expected = [feed.trade_uuid(SEED, "KRAKEN_SPOT_BTC_USD", n) for n in range(1, 7)]
    assert [m["uuid"] for m in early + later_first] == expected
    assert [m["sequence"] for m in later_second] == [1, 2, 3]  # sequences are per connection


async def test_the_hello_rate_limit(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    for _ in range(10):
        await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["NOWHERE$"]))
    await ws.send_message(json.dumps({"type": "unsubscribe", "subscribe_data_type": ["trade"]}))  # not counted
    await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["NOWHERE$"]))
    await expect_error_then_close(ws, RATE_LIMITED)
    await trio.sleep(10)
    again = await connect(emulator, nursery)  # the window has passed (the limit is per IP, not per connection)
    await again.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_"]))
    assert (await receive(again, 1))[0]["type"] == "trade"


async def trades_after_hello(emulator, nursery, count: int) -> tuple[object, list[str]]:
    ws = await connect(emulator, nursery)
    await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_SPOT_BTC_USD$"]))
    return ws, [await ws.get_message() for _ in range(count)]


async def test_fault_garbage_frame(autojump_clock, nursery, emulator) -> None:
    emulator.faults.add(FaultScript(garbage_after_frames=2))
    _, raw = await trades_after_hello(emulator, nursery, 4)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[2])
    assert [json.loads(r)["sequence"] for i, r in enumerate(raw) if i != 2] == [1, 2, 3]


async def test_fault_drop_closes_abruptly(autojump_clock, nursery, emulator) -> None:
    emulator.faults.add(FaultScript(drop_after_frames=3))
    ws, _ = await trades_after_hello(emulator, nursery, 3)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1006  # no close frame
    assert trio.current_time() == 0.75


async def test_fault_mute_keeps_the_socket_open(autojump_clock, nursery, emulator) -> None:
    emulator.faults.add(FaultScript(mute_after_frames=2))
    ws = await connect(emulator, nursery)
    await ws.send_message(hello(heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_SPOT_BTC_USD$"]))
    await receive(ws, 2)
    with trio.move_on_after(60) as waited:
        await ws.get_message()
    assert waited.cancelled_caught and ws.closed is None and emulator.stats.connections_open == 1


async def test_fault_reconnect_notice_then_close_within_seconds(autojump_clock, nursery) -> None:
    emulator = CoinApiEmulator(rate=4, clock_ns=fake_wall_ns, reconnect_within_seconds=3)
    emulator.faults.add(FaultScript(shutdown_after_frames=2))
    ws, raw = await trades_after_hello(emulator, nursery, 3)
    assert json.loads(raw[2]) == {"type": "reconnect", "within_seconds": 3, "before_time": "2025-01-14T16:50:01.5000000Z"}
    assert trio.current_time() == 0.5
    with pytest.raises(ConnectionClosed) as closed:
        await _trades_until_closed(ws)  # data goes on until then
    assert closed.value.reason.code == 1000 and trio.current_time() == 3.5


async def _trades_until_closed(ws) -> None:
    while True:
        assert json.loads(await ws.get_message())["type"] == "trade"


async def test_instruments_can_be_added_while_running(autojump_clock, nursery, emulator) -> None:
    ws = await connect(emulator, nursery)
    await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_SPOT_DOGE_USD$"]))
    await trio.sleep(1.9)
    emulator.instruments.append(Instrument("kraken", "DOGE/USD"))
    message = json.loads(await ws.get_message())
    assert message["symbol_id"] == "KRAKEN_SPOT_DOGE_USD" and trio.current_time() == 2.0


async def test_runs_standalone_on_real_tcp_loopback(nursery, capsys) -> None:
    """One real-socket run: the CLI entry point reports where it listens and a plain client gets data."""
    from trio_websocket import open_websocket_url

    port = await nursery.start(run_standalone, "127.0.0.1", 0)
    assert f"ws://127.0.0.1:{port}/v1/" in capsys.readouterr().out
    with trio.fail_after(30):  # a hang guard, not a speed assertion
        async with open_websocket_url(f"ws://127.0.0.1:{port}/v1/", extra_headers=HEADER) as ws:
            await ws.send_message(hello(subscribe_data_type=["quote"], subscribe_filter_symbol_id=["COINBASE_SPOT_ETH_USD$"]))
            message = json.loads(await ws.get_message())
    assert message["type"] == "quote" and message["symbol_id"] == "COINBASE_SPOT_ETH_USD"
