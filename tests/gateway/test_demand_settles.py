"""The whole gateway under churn (memory streams, fake time): clients subscribe and unsubscribe
at random, sometimes both in one go, across every kind of channel; once things settle, each
adapter is asked for exactly what the whole plan says, and once every client has left, nothing
is subscribed anywhere upstream."""

import json
import random

import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway.config import parse
from gateway.router import plan
from tests.support.gateway import start_memory_gateway

CONFIG = """
[providers.luzia]
kind = "luzia"
emulate = true
emulator_rate = 5
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 5
[routes]
trade = ["coinapi"]
quote = ["coinapi", "luzia"]
ticker = ["luzia", "coinapi"]
book = ["coinapi"]
"""
INSTRUMENTS = [("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("coinbase", "BTC/USD"), ("kraken", "BTC/USD")]
CHANNELS = (
    [f"{dt}:{ex}:{sym}" for dt in ("trade", "quote", "ticker") for ex, sym in INSTRUMENTS]
    + [f"{dt}:{ex}" for dt in ("trade", "quote", "ticker") for ex in ("binance", "coinbase")]
    + ["trade:*", "ticker:*", "quote:*"]
)


async def _drain(ws) -> None:
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        pass


def _matches_the_plan(hub) -> bool:
    expected = plan(hub.demand(), hub.routes, hub.sources.values())
    return all(frozenset(source.wanted) == expected.wanted[name] for name, source in hub.sources.items())


@pytest.mark.parametrize("seed", [2, 5])
async def test_churn_settles_to_the_whole_plan_and_leaves_nothing_upstream(autojump_clock, nursery, seed):
    rng = random.Random(seed)
    memory = await start_memory_gateway(nursery, parse(CONFIG))
    luzia, coinapi = memory.gateway.emulators["luzia"], memory.gateway.emulators["coinapi"]
    clients = [await memory.connect("/stream") for _ in range(3)]
    for ws in clients:
        nursery.start_soon(_drain, ws)
    for _ in range(40):
        ws, channels = rng.choice(clients), rng.sample(CHANNELS, rng.randrange(1, 4))
        kinds = ["subscribe", "unsubscribe"] if rng.random() < 0.3 else [rng.choice(["subscribe", "unsubscribe"])]
        for kind in kinds:
            await ws.send_message(json.dumps({"type": kind, "channels": channels}))
        await trio.sleep(rng.choice([0, 0, 0.01, 0.3, 2]))
    await trio.sleep(30)
    assert _matches_the_plan(memory.hub)
    for ws in clients:
        await ws.aclose()
    await trio.sleep(30)
    assert memory.hub.demand() == frozenset() and _matches_the_plan(memory.hub)
    assert not luzia.active_channels()
    assert not any(scope.filters for scope in coinapi.scopes.values())
