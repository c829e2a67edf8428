"""Helpers for the Luzia tests: a recording sink tests can wait on, event predicates, and a raw
trio-websocket client for the emulator over memory streams."""

from __future__ import annotations

import msgspec
import trio

from providers.luzia.emulator import LuziaEmulator
from tests.support.memory import memory_connector

KEY = "lz_test_key_123"
URL = "ws://luzia.test/v1/ws"
SEED = 20240123


class Recorder:
    """The adapter's sink: keeps (fake time, event) pairs; `wait_for` parks until enough match."""

    def __init__(self) -> None:
        self.events: list[tuple[float, object]] = []
        self._lot = trio.lowlevel.ParkingLot()

    def __call__(self, event) -> None:
        self.events.append((trio.current_time(), event))
        self._lot.unpark_all()

    def matching(self, predicate) -> list[tuple[float, object]]:
        return [(t, e) for t, e in self.events if predicate(e)]

    async def wait_for(self, predicate, count: int = 1) -> list[tuple[float, object]]:
        while len(hits := self.matching(predicate)) < count:
            await self._lot.park()
        return hits


def tag(event) -> str:
    """An event's `type` tag (msgspec keeps it in the class config, not on the instance)."""
    return event.__struct_config__.tag


def is_status(state: str, stream: str | None = None):
    return lambda e: tag(e) == "status" and e.state == state and (stream is None or e.stream == stream)


def of_type(kind: str, symbol: str | None = None):
    return lambda e: tag(e) == kind and (symbol is None or e.symbol == symbol)


async def open_client(emulator: LuziaEmulator, nursery, headers=None, url: str = URL, client_nursery=None):
    """A plain trio-websocket client connected to the emulator (memory streams). The emulator runs
    in `nursery`; the client's reader task in `client_nursery` (default: the same)."""
    connect = memory_connector(emulator.handle_stream, nursery)
    if headers is None:
        headers = [(b"Authorization", f"Bearer {KEY}".encode())]
    return await connect(client_nursery or nursery, url, headers)


async def receive(ws) -> dict:
    return msgspec.json.decode(await ws.get_message())


async def send(ws, message) -> None:
    await ws.send_message(message if isinstance(message, str) else msgspec.json.encode(message).decode())
