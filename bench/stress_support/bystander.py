"""The bystander: a separate process holding one native client on a steady stream, measuring how
long the gateway keeps it waiting while a load runs elsewhere (`bench/stress.py`).

Two figures per window (`mark` starts one, `report` ends it): the largest gap between consecutive
trade deliveries (the stream is paced by the upstream, so the no-load baseline shows its normal
spacing), and the largest ping→pong round trip (a ping every PING_EVERY s, one outstanding).
Its own process, so the load clients' work never shows up as a gateway stall. `drain` does the
two-ping accounting of `wsclient.drain`. Must never: connect beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import msgspec
import trio

from stress_support.control import announce, first_line, serve_commands
from stress_support.wsclient import TEXT, Tally, WsClient, drain


class _Stamps(msgspec.Struct):
    ts_exchange: int | None = None  # the upstream's send time (it stamps `time_exchange` when it sends)
    ts_gateway: int | None = None  # when the gateway read the frame


_stamps = msgspec.json.Decoder(_Stamps)
PING_EVERY = 0.05  # 20 pings/s: well inside the gateway's default 50 messages/s per connection
PONG_TIMEOUT = 10.0


class Bystander:
    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.tally = Tally()
        self.last_trade: float | None = None
        self.max_gap = 0.0
        self.max_gap_at = 0.0  # when it ended, seconds after `mark`
        self.marked = time.monotonic()
        self.rtts: list[float] = []
        self.window_trades = 0
        self.lost_pongs = 0
        self.to_gateway = 0.0  # largest delay from the upstream's send to the gateway's read (s)
        self.in_gateway = 0.0  # largest delay from the gateway's read to our receipt (s)
        self.ping_lock = trio.Lock()  # one ping in flight: the drain's pongs must be its own

    def mark(self) -> None:
        self.max_gap, self.rtts, self.window_trades, self.lost_pongs = 0.0, [], 0, 0
        self.last_trade, self.marked, self.max_gap_at = None, time.monotonic(), 0.0
        self.to_gateway = self.in_gateway = 0.0

    async def read(self) -> None:
        async for batch in self.client.frames():
            now, now_ns = time.monotonic(), time.time_ns()
            before = self.tally.trades
            for opcode, payload in batch:
                self.tally.take(opcode, payload)
                if payload.startswith(b'{"type":"trade"'):
                    self._delays(_stamps.decode(payload), now_ns)
            if self.tally.trades > before and any(op == TEXT for op, _ in batch):
                if self.last_trade is not None and now - self.last_trade > self.max_gap:
                    self.max_gap, self.max_gap_at = now - self.last_trade, now - self.marked
                self.last_trade = now
                self.window_trades += self.tally.trades - before
        self.tally.eof = True

    def _delays(self, stamps: _Stamps, now_ns: int) -> None:
        if stamps.ts_exchange is not None and stamps.ts_gateway is not None:
            self.to_gateway = max(self.to_gateway, (stamps.ts_gateway - stamps.ts_exchange) / 1e9)
            self.in_gateway = max(self.in_gateway, (now_ns - stamps.ts_gateway) / 1e9)

    async def ping(self) -> None:
        while not self.tally.eof:
            await trio.sleep(PING_EVERY)
            async with self.ping_lock:
                waiter, sent = self.tally.pong, time.monotonic()
                await self.client.send(b'{"type":"ping"}')
                with trio.move_on_after(PONG_TIMEOUT):
                    await waiter.wait()
                    self.rtts.append(time.monotonic() - sent)
                    continue
                self.lost_pongs += 1

    def report(self) -> dict[str, Any]:
        rtts = sorted(self.rtts)
        return {
            "max_gap_ms": self.max_gap * 1e3, "max_gap_at": self.max_gap_at,
            "max_rtt_ms": rtts[-1] * 1e3 if rtts else None,
            "p50_rtt_ms": statistics.median(rtts) * 1e3 if rtts else None,
            "to_gateway_ms": self.to_gateway * 1e3, "in_gateway_ms": self.in_gateway * 1e3,
            "pings": len(rtts), "lost_pongs": self.lost_pongs, "trades": self.window_trades,
            "connected": not self.tally.eof, "close": self.tally.close,
        }


async def main(port: int, channel: str) -> None:
    client = await WsClient.connect(port)
    bystander = Bystander(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bystander.read)
        await client.send(b'{"type":"subscribe","channels":["%s"]}' % channel.encode())
        nursery.start_soon(bystander.ping)
        announce({"ok": True})

        async def mark(args: list[str]) -> dict[str, Any]:
            bystander.mark()
            return {"ok": True}

        async def report(args: list[str]) -> dict[str, Any]:
            return bystander.report()

        async def do_drain(args: list[str]) -> dict[str, Any]:
            async with bystander.ping_lock:
                ok = await drain(client, bystander.tally)
            t = bystander.tally
            return {"ok": ok, "trades": t.trades, "missed": t.missed, "statuses": dict(t.statuses),
                    "errors": dict(t.errors), "gap_causes": dict(t.gap_causes), "eof": t.eof, "close": t.close}

        await serve_commands({"mark": mark, "report": report, "drain": do_drain})
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("channel")
    args = parser.parse_args()
    trio.run(main, int(first_line()), args.channel)  # the gateway's port, once it listens
