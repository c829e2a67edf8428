"""End to end: both emulators in-process → adapters → hub → native clients.

Most of these are the few real-socket tests (loopback, the real command); everything timed is
tested under fake time elsewhere. Each wait is bounded by `fail_after` only as a hang guard, never
as a speed assertion.
"""

import json
import os
import select
import signal
import subprocess
import sys
from collections import defaultdict
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from gateway.app import run_gateway
from gateway.config import parse
from schemas.streams import StreamKey
from tests.support.gateway import start_memory_gateway
from tests.support.raw import masked_frame, upgraded_socket

HANG_GUARD = 30  # seconds; generous for a loaded 2-core CI box

EMULATED = """
[server]
client_buffer = {buffer}
client_socket_buffer = 16384
[providers.luzia]
kind = "luzia"
emulate = true
emulator_rate = {rate}
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = {rate}
[routes]
trade = ["coinapi"]
quote = ["coinapi", "luzia"]
ticker = ["luzia", "coinapi"]
"""


def _config(rate=50, buffer=4096):
    return parse(EMULATED.format(rate=rate, buffer=buffer))


async def _subscribe(ws, *channels):
    await ws.send_message(json.dumps({"type": "subscribe", "channels": list(channels)}))


async def _until(ws, predicate, limit=5000):
    """Messages up to and including the first one `predicate` accepts."""
    seen = []
    for _ in range(limit):
        message = json.loads(await ws.get_message())
        seen.append(message)
        if predicate(message, seen):
            return seen
    raise AssertionError(f"not found in {limit} messages")


async def test_native_client_gets_trades_quotes_and_tickers_from_both_providers(nursery):
    gateway = await nursery.start(partial(run_gateway, _config(rate=200), port=0))
    wanted = {("trade", "coinapi"), ("quote", "coinapi"), ("ticker", "luzia")}
    with trio.fail_after(HANG_GUARD):
        async with open_websocket_url(gateway.url()) as ws:
            await _subscribe(ws, "trade:binance:BTC/USDT", "quote:bitstamp:BTC/USD", "ticker:coinbase:ETH/USDT")
            got: dict[tuple, dict] = {}

            def all_kinds(message, _):
                if message["type"] in ("trade", "quote", "ticker"):
                    got[(message["type"], message["provider"])] = message
                return set(got) >= wanted

            seen = await _until(ws, all_kinds)
    assert [m["channel"] for m in seen[:3]] == ["trade:binance:BTC/USDT", "quote:bitstamp:BTC/USD", "ticker:coinbase:ETH/USDT"]
    assert set(got) == wanted  # nothing from a provider not routed for that type
    trade, quote, ticker = got[("trade", "coinapi")], got[("quote", "coinapi")], got[("ticker", "luzia")]
    assert (trade["exchange"], trade["symbol"]) == ("binance", "BTC/USDT")
    assert (quote["exchange"], quote["symbol"]) == ("bitstamp", "BTC/USD")
    assert (ticker["exchange"], ticker["symbol"]) == ("coinbase", "ETH/USDT")
    assert isinstance(trade["price"], str) and float(trade["price"]) > 0  # decimal strings, never floats
    assert trade["ts_exchange"] <= trade["ts_provider"] and trade["ts_gateway"] > 0
    assert ticker["last"] is not None and ticker["sequence"] is None  # Luzia has no sequence: null, not 0


async def test_two_clients_on_one_stream_are_one_upstream_subscription(autojump_clock, nursery):
    memory = await start_memory_gateway(nursery, _config())  # the same path over memory streams
    gateway = memory.gateway
    luzia, coinapi = gateway.emulators["luzia"], gateway.emulators["coinapi"]
    with trio.fail_after(HANG_GUARD):
        async with memory.websocket() as a, memory.websocket() as b:
            for ws in (a, b):
                await _subscribe(ws, "ticker:binance:BTC/USDT", "trade:binance:ETH/USDT")
            for ws in (a, b):
                await _until(ws, lambda m, seen: {x["type"] for x in seen} >= {"ticker", "trade"})
            assert gateway.hub.subscriber_count(StreamKey("ticker", "binance", "BTC/USDT")) == 2
            assert luzia.active_channels() == {"ticker:binance:BTC/USDT": 1}
            (scope,) = coinapi.scopes.values()
            assert set(scope.filters) == {"trade"}
            assert scope.filters["trade"].symbol_ids == {"BINANCE_SPOT_ETH_USDT$"}
            assert coinapi.stats.connections_opened == 1
        # Both clients gone: the hub releases the upstream subscriptions.
        await luzia.stats.wait_for(lambda: not luzia.active_channels())
        await coinapi.stats.wait_for(lambda: not any(scope.filters for scope in coinapi.scopes.values()))
    assert not gateway.hub.demand()


async def _raw_websocket_that_never_reads(port: int) -> trio.socket.SocketType:
    """A client that subscribes and then stops reading, with the smallest receive buffer."""
    sock = await upgraded_socket(port)
    await sock.send(masked_frame(0x1, b'{"type":"subscribe","channels":["trade:binance"]}'))
    return sock


async def test_a_slow_client_does_not_delay_a_fast_one_and_is_told_what_it_missed(nursery):
    gateway = await nursery.start(partial(run_gateway, _config(rate=1000, buffer=16), port=0))
    slow = await _raw_websocket_that_never_reads(gateway.port)
    try:
        with trio.fail_after(HANG_GUARD):
            async with open_websocket_url(gateway.url()) as fast:
                await _subscribe(fast, "trade:binance")
                counted = defaultdict(int)

                def enough(message, _):
                    counted[message["type"]] += 1
                    return counted["trade"] >= 1500

                trades = await _until(fast, enough, 3000)
        sequences = defaultdict(list)
        for message in trades:
            assert message["type"] != "gap"
            if message["type"] == "trade":
                sequences[message["symbol"]].append(message["sequence"])
        for symbol, seq in sequences.items():  # every trade of every symbol, none skipped
            assert seq == list(range(seq[0], seq[0] + len(seq))), symbol
        slow_port = slow.getsockname()[1]
        (slow_peer,) = [p for p in gateway.server.peers if p.remote and p.remote[1] == slow_port]
        assert slow_peer.outbox.dropped_trades > 0
        # Now the slow client reads, and finds a gap event telling it what it missed.
        received = b""
        with trio.fail_after(HANG_GUARD):
            while b'"cause":"client_overflow"' not in received:
                received += await slow.recv(65536)
    finally:
        slow.close()


async def _drain(ws) -> None:
    while True:
        await ws.get_message()


def test_mdgateway_run_serves_then_shuts_down_cleanly_on_ctrl_c():
    """The real command, as a new user runs it: prints where to connect, serves, Ctrl-C → exit 0."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        readable, _, _ = select.select([proc.stdout], [], [], HANG_GUARD)
        assert readable, "the CLI printed nothing"
        first_line = proc.stdout.readline()  # the CLI prints it first; an exit gives "" at once
        assert "listening on 127.0.0.1:" in first_line, first_line
        port = int(first_line.rsplit(":", 1)[1])

        async def client() -> int:
            with trio.fail_after(HANG_GUARD):
                async with open_websocket_url(f"ws://127.0.0.1:{port}/stream") as ws:
                    await _subscribe(ws, "trade:binance:BTC/USDT")
                    await _until(ws, lambda m, _: m["type"] == "trade")
                    proc.send_signal(signal.SIGINT)
                    with pytest.raises(ConnectionClosed):
                        await _drain(ws)
                    return ws.closed.code

        assert trio.run(client) == 1001  # "going away": a proper close, not a dropped socket
        assert proc.wait(timeout=HANG_GUARD) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
