"""End to end over real sockets on 127.0.0.1 (port 0): the production connector, the standalone
emulator, real time. Waits are on events, bounded by a generous timeout, never on sleeps."""

from __future__ import annotations

from functools import partial

import trio

from providers.luzia.adapter import LuziaAdapter
from providers.luzia.emulator import run_standalone
from schemas.streams import StreamKey
from tests.providers.luzia.support import KEY, Recorder, of_type

GENEROUS = 20.0  # a bound for a noisy CI box, not a speed expectation


async def test_adapter_streams_from_the_standalone_emulator_over_tcp(nursery, capsys):
    port = await nursery.start(partial(run_standalone, "127.0.0.1", 0, rate=50))
    assert f"ws://127.0.0.1:{port}/v1/ws" in capsys.readouterr().out
    recorder = Recorder()
    adapter = LuziaAdapter("lz", url=f"http://127.0.0.1:{port}", api_key=KEY, sink=recorder)  # REST base → ws URL
    adapter.update_wanted({StreamKey("ticker", "binance", "BTC/USDT"), StreamKey("quote", "kraken", "BTC/USD")}, set())
    await nursery.start(adapter.run)
    with trio.fail_after(GENEROUS):
        await recorder.wait_for(of_type("ticker", "BTC/USDT"), 2)
        await recorder.wait_for(of_type("quote", "BTC/USD"), 2)
    health = adapter.health()
    assert (health.state, health.subscriptions, health.malformed_frames) == ("connected", 2, 0)
