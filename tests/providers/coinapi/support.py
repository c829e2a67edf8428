"""Shared test helpers for the CoinAPI package: constants, a recording sink, a fake wall clock,
a scripted stand-in server for frames the emulator never sends, and a raw client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, wrap_server_stream

from providers.coinapi import client, wire
from providers.coinapi.grammar import SymbolMapper
from schemas import Event, Gap, Quote, Status, Ticker, Trade
from schemas.streams import StreamKey

KEY = "73034021-0000-0000-0000-000000000000"  # GUID-shaped, like the C# SDK's keys
SEED = 7
URL = "ws://coinapi.test/v1/"
EPOCH_NS = 1_736_873_398_000_000_000  # 2025-01-14T16:49:58Z


def set_wanted(adapter, keys) -> None:
    """Move an adapter's wanted set to `keys` the way the hub does: by the difference."""
    keys, current = frozenset(keys), frozenset(adapter.wanted)
    adapter.update_wanted(keys - current, current - keys)


def plan_history(history: list[frozenset[StreamKey]], mapper: SymbolMapper) -> tuple[client.Planner, list[wire.ClientMessage]]:
    """A planner with one connection taken through the wanted sets of `history` (by differences,
    as the adapter is), and the messages it planned along the way."""
    planner = client.Planner(mapper)
    wanted: frozenset[StreamKey] = frozenset()
    link = planner.attach()
    messages: list[wire.ClientMessage] = []
    for target in history:
        planner.remove(wanted - target)
        planner.add(target - wanted)
        wanted = target
        message = planner.update(link, "k")
        if message is not None:
            messages.append(message)
    return planner, messages


def fake_wall_ns() -> int:
    """A wall clock that follows Trio's (fake) clock, so event times are exact in tests."""
    return EPOCH_NS + round(trio.current_time() * 1_000_000_000)


@dataclass
class Recorder:
    """The adapter's sink: keeps every event with the fake time it arrived."""

    items: list[tuple[float, Event]] = field(default_factory=list)
    hooks: list = field(default_factory=list)  # called with each event as it arrives

    def __call__(self, event: Event) -> None:
        self.items.append((trio.current_time(), event))
        for hook in self.hooks:
            hook(event)

    def of(self, kind: type) -> list:
        return [event for _, event in self.items if isinstance(event, kind)]

    def when(self, kind: type, **match) -> list[float]:
        return [
            at
            for at, event in self.items
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items())
        ]

    @property
    def trades(self) -> list[Trade]:
        return self.of(Trade)

    @property
    def quotes(self) -> list[Quote]:
        return self.of(Quote)

    @property
    def tickers(self) -> list[Ticker]:
        return self.of(Ticker)

    @property
    def gaps(self) -> list[Gap]:
        return self.of(Gap)

    @property
    def statuses(self) -> list[Status]:
        return self.of(Status)


CLOSE = object()  # in a script: close the connection (with a close frame)


@dataclass
class ScriptedServer:
    """A CoinAPI stand-in that plays one script per connection after the client's first message:
    strings are sent as frames, numbers are pauses (seconds), CLOSE closes. Then it stays open."""

    scripts: list[list]
    received: list[list[dict]] = field(default_factory=list)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        script = self.scripts[len(self.received)] if len(self.received) < len(self.scripts) else []
        messages: list[dict] = []
        self.received.append(messages)
        async with trio.open_nursery() as nursery:
            ws = await (await wrap_server_stream(nursery, stream)).accept()
            messages.append(json.loads(await ws.get_message()))
            nursery.start_soon(self._keep_reading, ws, messages)
            try:
                await self._play(ws, script)
            except ConnectionClosed:
                return  # the client closed it: the rest of the script is moot
            await trio.sleep_forever()

    async def _play(self, ws, script: list) -> None:
        for step in script:
            if step is CLOSE:
                await ws.aclose()
                return
            if isinstance(step, (int, float)):
                await trio.sleep(step)
            else:
                await ws.send_message(step)

    async def _keep_reading(self, ws, messages: list[dict]) -> None:
        try:
            while True:
                messages.append(json.loads(await ws.get_message()))
        except ConnectionClosed:
            pass


def trade_frame(symbol_id: str, sequence: int, uuid: str, price: str = "100.5", size: str = "0.25") -> str:
    """A trade frame in the live server's field order (`type` last)."""
    return (
        '{"time_exchange":"2025-01-14T16:49:58.3318050Z","time_coinapi":"2025-01-14T16:49:58.3368845Z",'
        f'"uuid":"{uuid}","price":{price},"size":{size},"taker_side":"BUY","symbol_id":"{symbol_id}",'
        f'"sequence":{sequence},"type":"trade"}}'
    )
