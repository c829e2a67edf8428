"""What both emulators share: scripted faults, counters tests can assert on, and the TCP listener.

An emulator is a stream handler (`async def handle_stream(stream)`) so the same code serves a real
socket (`serve_tcp`) and an in-memory stream under fake time (`tests.support.memory.memory_connector`).
Faults are scripted per connection: each new connection takes the next `FaultScript` from the
queue (none left: it behaves).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio


@dataclass(frozen=True)
class FaultScript:
    """Misbehaviour for one upstream connection; counts are data frames sent on that connection."""

    drop_after_frames: int | None = None  # close the socket abruptly (no close frame)
    mute_after_frames: int | None = None  # stop sending data and heartbeats; keep the socket open
    garbage_after_frames: int | None = None  # send one frame that is not valid JSON, then go on
    shutdown_after_frames: int | None = None  # Luzia SERVER_SHUTDOWN / CoinAPI reconnect notice
    reject_key: bool = False  # refuse this connection's key as the real service would


@dataclass
class EmulatorStats:
    """Counters for tests and benchmarks, and a way to wait for the emulator's state to change."""

    connections_opened: int = 0
    connections_open: int = 0
    frames_sent: int = 0
    client_messages: list[dict] = field(default_factory=list)  # every decoded client message, in order
    _changed: trio.Event = field(default_factory=trio.Event, repr=False)

    def notify(self) -> None:
        """The emulator calls this whenever subscriptions or connections change."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds: re-checked on every change, no polling."""
        while not predicate():
            await self._changed.wait()


@dataclass
class FaultQueue:
    scripts: deque[FaultScript] = field(default_factory=deque)

    def add(self, *scripts: FaultScript) -> None:
        self.scripts.extend(scripts)

    def next(self) -> FaultScript:
        return self.scripts.popleft() if self.scripts else FaultScript()


async def serve_tcp(
    handle_stream: Callable[[trio.abc.Stream], Awaitable[None]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port (0: an ephemeral port) and report the bound port once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle_stream, listeners)
        task_status.started(bound_port)
