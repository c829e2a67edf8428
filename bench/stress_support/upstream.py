"""A scripted CoinAPI-shaped upstream for `bench/stress.py` (a child process, 127.0.0.1 only).

It speaks enough of CoinAPI V1 for the gateway's adapter: the WebSocket handshake, `hello`
(replace the scope), `subscribe` / `unsubscribe` (exact `…$` symbol filters and exchange filters),
transport pongs, and `hearbeat` frames after a second of silence when asked. What it sends is
scripted from stdin, per exchange, so the orchestrator knows exactly what was published:
- `feed EXCHANGE RATE`: every wanted symbol of that exchange gets RATE trades/s (`max`: as fast
  as the socket takes them; 0: silent); sequences are consecutive per symbol and connection;
- `hostile RATIO`: after each valid trade, RATIO frames (on average) from `hostile.CATALOGUE`;
- `burst N`, `oversized BYTES`: one-off frames on every connection (a malformed run, a frame past
  the client's message limit); `pause` (answers once every connection is idle) / `resume`;
- `stats`: valid trades sent per symbol id, hostile frames sent, connections, client messages.
Must never: listen beyond 127.0.0.1, run unbounded (its parent kills it; stdin EOF ends it).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections import Counter
from functools import partial
from typing import Any

import msgspec
import trio
import wsproto
from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, Request
from wsproto.utilities import LocalProtocolError

from schemas.timeutil import format_iso_ns
from stress_support import hostile
from stress_support.control import announce, serve_commands

FULL_BATCH = 256  # valid trades per socket write at full rate
FULL_BATCH_BYTES = 256 * 1024  # ... unless the hostile frames among them already make it this big
CATCH_UP_SECONDS = 0.05  # a paced feed that fell behind does not burst to catch up beyond this
_TEMPLATE = ('{"time_exchange":"%s","time_coinapi":"%s","uuid":"%08x-0000-4000-8000-%012x",'
             '"price":95495.96,"size":0.00310908,"taker_side":"BUY","symbol_id":"%s","sequence":%d,"type":"trade"}')


def frame(payload: bytes, binary: bool = False) -> bytes:
    """An unmasked server frame, FIN set."""
    n, opcode = len(payload), 0x82 if binary else 0x81
    if n < 126:
        return bytes([opcode, n]) + payload
    if n < 65536:
        return bytes([opcode, 126]) + n.to_bytes(2, "big") + payload
    return bytes([opcode, 127]) + n.to_bytes(8, "big") + payload


def exchange_of(symbol_id: str) -> str:
    return symbol_id.split("_SPOT_", 1)[0]


class Upstream:
    def __init__(self) -> None:
        self.feeds: dict[str, float] = {}
        self.hostile_ratio = 0.0
        self.paused = False
        self.changed = trio.Event()
        self.went_idle = trio.Event()  # set (and replaced) whenever a connection's sender goes idle
        self.universe: dict[str, set[str]] = {}  # exchange id → symbol ids named in exact filters
        self.connections: set[Connection] = set()
        self.opened = 0
        self.sent: Counter[str] = Counter()
        self.hostile_sent: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.max_message = 0
        # Since the last `mark`: the longest socket write (the gateway not reading its upstream) and
        # the longest pause between two writes while a feed was due (this process short of CPU).
        self.max_send_block = 0.0
        self.max_pass_gap = 0.0
        self.max_hello_symbols = 0
        self.uuids = itertools.count(1)
        self._hostile_cache: dict[str, list[tuple[str, bytes]]] = {}

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        for conn in self.connections:
            conn.dirty = True

    def hostile_frames(self, symbol_id: str) -> list[tuple[str, bytes]]:
        frames = self._hostile_cache.get(symbol_id)
        if frames is None:
            frames = self._hostile_cache[symbol_id] = [
                (name, frame(payload, hostile.is_binary(name))) for name, payload in hostile.frames_for(symbol_id)
            ]
        return frames

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = Connection(self, stream)
        try:
            if await conn.handshake():
                self.connections.add(conn)
                self.opened += 1
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.sender)
                    await conn.receiver()
                    nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass  # the gateway went away or dropped this connection (as a hostile frame may make it do)
        finally:
            self.connections.discard(conn)
            self.went_idle.set()  # a pause must not wait for a connection that is gone
            self.went_idle = trio.Event()
            await trio.aclose_forcefully(stream)


class _ClientMessage(msgspec.Struct):
    type: str = ""
    heartbeat: bool = False
    subscribe_filter_symbol_id: list[str] | None = None
    subscribe_filter_exchange_id: list[str] | None = None


class Connection:
    def __init__(self, upstream: Upstream, stream: trio.SocketStream) -> None:
        self.up = upstream
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.lock = trio.Lock()
        self.exact: set[str] = set()
        self.exchanges: set[str] = set()
        self.everything = False
        self.heartbeat = False
        self.sequences: Counter[str] = Counter()
        self.extra: list[bytes] = []  # one-off frames queued by a command
        self.idle = False
        self.dirty = True
        self._by_exchange: dict[str, list[str]] = {}
        self._parts: list[str] = []

    async def handshake(self) -> bool:
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Request):
                    await self._send(self.ws.send(AcceptConnection()))
                    return True

    async def _send(self, data: bytes) -> None:
        async with self.lock:
            began = trio.current_time()
            await self.stream.send_all(data)
            self.up.max_send_block = max(self.up.max_send_block, trio.current_time() - began)

    async def receiver(self) -> None:
        while True:
            data = await self.stream.receive_some(1 << 20)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, Message):
                    self._parts.append(event.data if isinstance(event.data, str) else bytes(event.data).decode("utf-8", "replace"))
                    if event.message_finished:
                        text, self._parts = "".join(self._parts), []
                        self._apply(text)
                elif isinstance(event, Ping):
                    await self._send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._send(self.ws.send(event.response()))
                    return
            if not data:
                return

    def _apply(self, text: str) -> None:
        up = self.up
        up.max_message = max(up.max_message, len(text))
        message = msgspec.json.decode(text, type=_ClientMessage)
        up.messages[message.type] += 1
        symbols = {s.rstrip("$") for s in message.subscribe_filter_symbol_id or ()}
        exchanges = set(message.subscribe_filter_exchange_id or ())
        for symbol_id in symbols:
            up.universe.setdefault(exchange_of(symbol_id), set()).add(symbol_id)
        if message.type == "hello":
            up.max_hello_symbols = max(up.max_hello_symbols, len(symbols))
            self.exact, self.exchanges, self.heartbeat = symbols, exchanges, message.heartbeat
            self.everything = message.subscribe_filter_symbol_id is None and message.subscribe_filter_exchange_id is None
        elif message.type == "subscribe":
            self.exact |= symbols
            self.exchanges |= exchanges
            self.heartbeat = self.heartbeat or message.heartbeat
        elif message.type == "unsubscribe":
            self.exact -= symbols
            self.exchanges -= exchanges
        up.poke()

    def symbols_of(self, exchange: str) -> list[str]:
        if self.dirty:
            self._by_exchange = {}
            self.dirty = False
        found = self._by_exchange.get(exchange)
        if found is None:
            wide = self.everything or exchange in self.exchanges
            pool = self.up.universe.get(exchange, set()) if wide else (s for s in self.exact if exchange_of(s) == exchange)
            found = self._by_exchange[exchange] = sorted(pool)
        return found

    def _trade(self, symbol_id: str, stamp: str) -> bytes:
        self.sequences[symbol_id] += 1
        n = next(self.up.uuids)
        return frame((_TEMPLATE % (stamp, stamp, n >> 48, n & 0xFFFFFFFFFFFF, symbol_id, self.sequences[symbol_id])).encode())

    def trade_now(self, symbol_id: str) -> bytes:
        self.up.sent[symbol_id] += 1
        return self._trade(symbol_id, format_iso_ns(time.time_ns()))

    async def sender(self) -> None:
        due: dict[str, float] = {}
        credit = 0.0
        picks = itertools.cycle(range(len(hostile.CATALOGUE)))
        last_sent = trio.current_time()
        while True:
            now = trio.current_time()
            frames, self.extra = self.extra, []
            if not self.up.paused:
                stamp = format_iso_ns(time.time_ns())
                for exchange, rate in self.up.feeds.items():
                    symbols = self.symbols_of(exchange)
                    if not symbols or rate <= 0:
                        continue
                    if math.isinf(rate):
                        rounds = max(1, FULL_BATCH // len(symbols))
                    elif now >= due.setdefault(exchange, now):
                        # Every step due since the last pass (a slow pass must not slow a paced feed).
                        rounds = 1 + int((now - due[exchange]) * rate)
                        due[exchange] = max(due[exchange] + rounds / rate, now - CATCH_UP_SECONDS)
                    else:
                        continue
                    size = 0
                    for _ in range(rounds):
                        for symbol_id in symbols:
                            frames.append(self._trade(symbol_id, stamp))
                            self.up.sent[symbol_id] += 1
                            credit += self.up.hostile_ratio
                            while credit >= 1:
                                credit -= 1
                                name, data = self.up.hostile_frames(symbol_id)[next(picks)]
                                frames.append(data)
                                size += len(data)
                                self.up.hostile_sent[name] += 1
                        if size > FULL_BATCH_BYTES:  # big hostile frames: keep a pass short for the paced feeds
                            break
            if frames:
                if self.up.feeds and not self.up.paused:
                    self.up.max_pass_gap = max(self.up.max_pass_gap, now - last_sent)
                await self._send(b"".join(frames))
                last_sent = now
                await trio.lowlevel.checkpoint()
                continue
            self.idle = True
            self.up.went_idle.set()
            self.up.went_idle = trio.Event()
            wake = min((t for e, t in due.items() if self.up.feeds.get(e, 0) > 0 and not self.up.paused), default=math.inf)
            if self.heartbeat:
                wake = min(wake, last_sent + 1.0)
            with trio.move_on_at(wake):
                await self.up.changed.wait()
            self.idle = False
            if self.heartbeat and trio.current_time() - last_sent >= 1.0 and not self.extra:
                await self._send(frame(b'{"type":"hearbeat"}'))
                last_sent = trio.current_time()


class Commands:
    def __init__(self, up: Upstream) -> None:
        self.up = up

    async def feed(self, args: list[str]) -> dict[str, Any]:
        exchange, rate = args[0].upper(), args[1]
        self.up.feeds[exchange] = math.inf if rate == "max" else float(rate)
        self.up.poke()
        return {"ok": True}

    async def hostile(self, args: list[str]) -> dict[str, Any]:
        self.up.hostile_ratio = float(args[0])
        return {"ok": True}

    async def pause(self, args: list[str]) -> dict[str, Any]:
        self.up.paused = True
        self.up.poke()
        with trio.move_on_after(10):
            while not all(c.idle for c in self.up.connections):
                await self.up.went_idle.wait()
        return await self.stats(args)

    async def resume(self, args: list[str]) -> dict[str, Any]:
        self.up.paused = False
        self.up.poke()
        return {"ok": True}

    async def burst(self, args: list[str]) -> dict[str, Any]:
        return self._queue([frame(p) for p in hostile.malformed_run(int(args[0]))])

    async def oversized(self, args: list[str]) -> dict[str, Any]:
        return self._queue([frame(hostile.oversized(args[1], int(args[0])))])

    async def probe(self, args: list[str]) -> dict[str, Any]:
        """One hostile frame, then one valid trade of the same symbol on every connection: once
        the gateway has published that trade, it has dealt with the hostile frame."""
        index, sid = int(args[0]), args[1]
        name, data = self.up.hostile_frames(sid)[index]
        for conn in self.up.connections:
            conn.extra.extend([data, conn.trade_now(sid)])
        self.up.poke()
        return {"ok": True, "name": name, "connections": len(self.up.connections)}

    def _queue(self, frames: list[bytes]) -> dict[str, Any]:
        for conn in self.up.connections:
            conn.extra.extend(frames)
        self.up.poke()
        return {"ok": True, "connections": len(self.up.connections)}

    async def mark(self, args: list[str]) -> dict[str, Any]:
        report = {"max_send_block_ms": self.up.max_send_block * 1e3, "max_pass_gap_ms": self.up.max_pass_gap * 1e3}
        self.up.max_send_block = self.up.max_pass_gap = 0.0
        return report

    async def stats(self, args: list[str]) -> dict[str, Any]:
        up = self.up
        return {
            "sent": dict(up.sent), "hostile_sent": sum(up.hostile_sent.values()), "hostile_kinds": len(up.hostile_sent),
            "opened": up.opened, "open": len(up.connections), "messages": dict(up.messages),
            "max_message": up.max_message, "max_hello_symbols": up.max_hello_symbols,
            "scope": sum(len(c.exact) for c in up.connections),
        }


async def main(port: int) -> None:
    up = Upstream()
    commands = Commands(up)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, up.handle, port, host="127.0.0.1"))
        announce({"port": listeners[0].socket.getsockname()[1]})
        await serve_commands({name: getattr(commands, name) for name in
                              ("feed", "hostile", "pause", "resume", "burst", "oversized", "probe", "mark", "stats")})
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    trio.run(main, parser.parse_args().port)
