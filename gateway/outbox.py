"""One client's bounded queue of ready-to-send frames, and its overflow policy.

The upstream path only ever calls the non-blocking `put_*` methods; the client's writer task
awaits `wait()` then `take()`s everything queued, so a client's pending frames leave in one socket
write. Policy when the queue holds `limit` frames (the client is not keeping up):
- latest-wins frames (quotes, tickers) replace that stream's frame still queued, in place; a stream
  with nothing queued still gets one slot, so the queue can exceed `limit` by at most the number of
  distinct latest-wins streams, which the subscription limit bounds;
- trades are dropped, and the window they covered is handed to the writer as a `DroppedWindow` so
  the client is told with a `gap` event — data is never lost silently;
- control frames (replies, pongs, status, heartbeats, close) are never dropped. "Not reading" is
  judged by bytes, not by how many replies one request earned: once more than `control_bytes`
  bytes of control frames wait between two takes, `on_overflow` is called once (the owner cuts the
  client off with `abort`, its close frame alone) and nothing more is queued. The other half of
  the rule, a socket that accepts nothing for a while, is the peer's watchdog (`gateway.wspeer`).
Once `close()` or `abort()` has been called nothing more is queued: no frame may follow a close frame.
The outbox never blocks, never touches a socket, and never drops a control frame it accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import trio

from schemas.streams import Stream


@dataclass
class DroppedWindow:
    """Trades of one stream that were dropped for this client: from/to are event times (ns)."""

    key: Stream
    from_ts: int
    to_ts: int
    missed: int


#: Control bytes that may wait unread for one client (`[limits] max_pending_control_bytes` when a
#: server builds the outbox): far above one legal request's replies (1,000 `subscribed` ≈ 80 KB).
CONTROL_BYTES = 1024 * 1024


class Outbox:
    def __init__(self, limit: int, control_bytes: int = CONTROL_BYTES, on_overflow: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.control_bytes = control_bytes
        self.on_overflow = on_overflow
        self._frames: list[bytes] = []
        self._latest_slot: dict[Hashable, int] = {}  # stream → index of its frame in _frames
        self._dropped: dict[Stream, DroppedWindow] = {}
        self._control_pending = 0  # bytes of control frames queued since the last take
        self._final: bytes | None = None  # the close frame queued by close(), until taken
        self.overflowed = False
        self._ready = trio.Event()
        self.closed = False
        self.sent_frames = 0
        self.conflated = 0
        self.dropped_trades = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put_control(self, data: bytes) -> None:
        if self.closed:
            return
        self._control_pending += len(data)
        if self._control_pending > self.control_bytes:
            self._overflow()
            return
        self._append(data)

    def _overflow(self) -> None:
        """The client reads nothing: its owner cuts it off (once); nothing more is queued."""
        self.overflowed = True
        if self.on_overflow is not None:
            self.on_overflow()
        if not self.closed:  # an owner that did not abort with a close frame of its own
            self.abort()

    def put_latest(self, key: Hashable, data: bytes) -> None:
        """A quote or ticker: when the client lags, only the newest per stream matters."""
        if self.closed:
            return
        if len(self._frames) >= self.limit:
            slot = self._latest_slot.get(key)
            if slot is not None:
                self._frames[slot] = data
                self.conflated += 1
                return
        self._latest_slot[key] = len(self._frames)
        self._append(data)

    def put_trade(self, key: Stream, data: bytes, ts: int) -> None:
        """A trade: every one matters, so when full it is dropped *and recorded*."""
        if self.closed:
            return
        if len(self._frames) < self.limit:
            self._append(data)
            return
        self.dropped_trades += 1
        window = self._dropped.get(key)
        if window is None:
            self._dropped[key] = DroppedWindow(key, ts, ts, 1)
        else:
            window.from_ts, window.to_ts = min(window.from_ts, ts), max(window.to_ts, ts)
            window.missed += 1

    def _append(self, data: bytes) -> None:
        self._frames.append(data)
        self._ready.set()

    async def wait(self) -> None:
        """Until something is queued (or the outbox is closed)."""
        await self._ready.wait()

    def take(self) -> tuple[list[bytes], list[DroppedWindow]]:
        """Everything queued, and the trade windows dropped since the last take."""
        frames, dropped = self._frames, list(self._dropped.values())
        self._frames, self._latest_slot, self._dropped, self._control_pending = [], {}, {}, 0
        self._ready = trio.Event()
        if self.closed:
            self._final = None  # handed to the writer: an abort must not queue it twice
            self._ready.set()
        self.sent_frames += len(frames)
        return frames, dropped

    def close(self, final: bytes | None = None) -> None:
        """Queue `final` (the close frame) last, then accept nothing more; the writer sends what is
        queued and stops."""
        if final is not None and not self.closed:
            self._frames.append(final)
            self._final = final
        self.closed = True
        self._ready.set()

    def abort(self, final: bytes | None = None) -> None:
        """Cut off: drop everything queued (a client that is not reading would only fall further
        behind), queue `final` (the close frame) alone, accept nothing more. After `close()` the
        close frame already queued is kept instead: a client gets one close frame at most."""
        if self.closed:
            final = self._final
        self._frames, self._final = ([final] if final is not None else []), final
        self._latest_slot, self._dropped = {}, {}
        self.closed = True
        self._ready.set()
