"""Assembling and stopping a whole gateway (over memory streams, fake time): the adapters close
their upstream connections while the in-process emulators still answer, so stopping waits for no
timeout at all — whether by `shutdown()` (Ctrl-C) or by a plain cancel."""

import trio

from gateway.config import load
from tests.support.gateway import start_memory_gateway


async def _busy_gateway(nursery):
    memory = await start_memory_gateway(nursery, load(None))  # the embedded default
    client = await memory.connect("/stream")
    await client.send_message('{"type":"subscribe","channels":["ticker:binance:BTC/USDT","trade:binance:BTC/USDT"]}')
    seen = set()
    while seen != {"ticker", "trade"}:  # both adapters are connected and streaming
        kind = (await client.get_message()).split('"type":"', 1)[1].split('"', 1)[0]
        seen |= {kind} & {"ticker", "trade"}
    return memory, client


async def test_a_cancelled_gateway_stops_without_waiting_for_any_timeout(autojump_clock):
    async with trio.open_nursery() as outer:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                memory, _ = await _busy_gateway(nursery)
                emulators = memory.gateway.emulators
                stopping_at = trio.current_time()
                scope.cancel()
        assert trio.current_time() == stopping_at  # no close timeout ran out: every reply was read
        assert [e.stats.connections_open for e in emulators.values()] == [0, 0]
        outer.cancel_scope.cancel()


async def test_shutdown_closes_clients_then_upstream_then_stops(autojump_clock):
    async with trio.open_nursery() as nursery:
        memory, client = await _busy_gateway(nursery)
        gateway = memory.gateway
        stopping_at = trio.current_time()
        await gateway.shutdown()
        assert client.closed is not None and client.closed.code == 1001
        assert trio.current_time() == stopping_at
        assert all(e.stats.connections_open == 0 for e in gateway.emulators.values())
