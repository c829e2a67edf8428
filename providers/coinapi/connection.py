"""One upstream CoinAPI connection ("link") over a `providers.common.transport.Transport`.

Owns: one connection's life: open the transport (within the idle timeout), let the adapter send
the first message, read frames until the connection ends, transport pings, the data-idle deadline
("connected but mute": heartbeats count as data, malformed frames do not: a connection sending
only garbage is not alive), and what the adapter keeps per connection (its server's scope, its
sequence numbers, when it last sent a good frame). Leaving closes politely (the
transport's close); a peer believed dead (idle or pong timeout) is cut off without waiting.
Must never: decode or interpret a frame (the adapter's `on_frame` does), import trio-websocket, or
catch what it cannot handle: failures leave as `TransportError` / `ProviderError` (or whatever
`on_frame` raised), for the adapter and the reconnect loop to judge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from providers.coinapi.client import LinkScope
from providers.coinapi.policy import CoinApiPolicy
from providers.coinapi.streams import Sequences
from providers.common.counters import MalformedRun
from providers.common.errors import ProviderError, TransportError
from providers.common.liveness import IdleDeadline
from providers.common.transport import Connector, Headers, Transport, open_transport

#: A peer that does not answer our close frame is cut off after this.
CLOSE_TIMEOUT: Final = 1.0


class Connection:
    def __init__(self, link_id: int, scope: LinkScope) -> None:
        self.id = link_id
        self.scope = scope  # what its server has (the planner's view)
        self.retired = False  # replaced: its frames are dropped and it is being closed
        self.sequences: Sequences = {}
        self.last_frame_at: float | None = None
        self.malformed_run = MalformedRun()
        self.transport: Transport | None = None
        self.cancel_scope = trio.CancelScope()  # cancelled to retire it

    def retire(self) -> None:
        """Close it (politely) and ignore whatever it still delivers."""
        self.retired = True
        self.cancel_scope.cancel()

    async def run(
        self,
        connector: Connector,
        url: str,
        headers: Headers,
        policy: CoinApiPolicy,
        on_open: Callable[[Connection], Awaitable[None]],
        on_frame: Callable[[Connection, str | bytes], bool],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, `on_open` (the first hello), `started()`, then read until the connection
        fails (raises) or is retired (returns). `on_frame` says whether the frame was good: only
        a good one feeds the idle deadline and the last-frame time."""
        idle = IdleDeadline(policy.idle_timeout)
        with self.cancel_scope, idle.scope:
            async with open_transport(connector, url, headers, close_timeout=CLOSE_TIMEOUT) as transport:
                self.transport = transport
                try:
                    await on_open(self)
                    task_status.started()
                    async with trio.open_nursery() as nursery:
                        if policy.ping_interval is not None:
                            nursery.start_soon(self._pinger, transport, policy.ping_interval, policy.ping_timeout)
                        await self._read(transport, idle, on_frame)
                finally:
                    if idle.scope.cancel_called:
                        transport.peer_dead = True  # mute: no point waiting for a close reply
        if idle.expired:
            raise ProviderError(f"no data for {policy.idle_timeout:g} s")

    async def _read(self, transport: Transport, idle: IdleDeadline, on_frame: Callable[[Connection, str | bytes], bool]) -> None:
        while True:
            raw = await transport.receive()
            if on_frame(self, raw):
                idle.fed()
                self.last_frame_at = trio.current_time()

    async def _pinger(self, transport: Transport, interval: float, timeout: float) -> None:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(timeout) as waited:
                try:
                    await transport.ping()
                except TransportError:
                    return  # the reader reports it
            if waited.cancelled_caught:
                transport.peer_dead = True
                raise ProviderError(f"no pong within {timeout:g} s")

    async def send(self, text: str) -> None:
        assert self.transport is not None, "send before the connection is open"
        await self.transport.send(text)
