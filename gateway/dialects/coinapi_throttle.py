"""Per-connection update limits (`subscribe_update_limit_ms_quote`, `..._book_snapshot`). Pure.

Rule, per stream of one connection: at most one frame per interval. A frame arriving when the
stream's interval is over goes out at once and opens a new interval; frames arriving inside it
are held, each replacing the one before, and the latest goes out when the interval ends (opening
the next one) — conflated, never dropped. Times are passed in (Trio seconds); the session asks
`admit` on the hot path, `hold`s what it may not send yet, and its timer task `release`s.
Bounded: at most `max_windows` streams are tracked (`MAX_WINDOWS`). A new stream finding the
table full first forgets the windows that are over and hold nothing (they would admit their next
frame anyway, so forgetting them changes nothing); if every window is live, the new stream's
frame goes out unthrottled rather than growing the table.
Must never: read a clock, hold more than one frame per stream, or track more than `max_windows`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import count
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # a stream

#: Streams one connection's throttle tracks (far more than any real scope delivers with a limit).
MAX_WINDOWS = 65_536

@dataclass
class _Window:
    ends: float
    interval: float
    pending: bytes | None = None
    timed: bool = False  # a release is scheduled for this stream


class Throttle(Generic[K]):
    def __init__(self, max_windows: int = MAX_WINDOWS) -> None:
        self.max_windows = max_windows
        self._windows: dict[K, _Window] = {}
        self._timers: list[tuple[float, int, K]] = []  # (when, tie-break, stream)
        self._order = count()

    def admit(self, key: K, interval: float, now: float) -> bool:
        """True: send this frame now (a new interval starts). False: `hold` it."""
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self.max_windows and not self._forget_idle(now):
                return True  # full of live windows: send unthrottled rather than grow
            self._windows[key] = _Window(now + interval, interval)
            return True
        if now >= window.ends:
            window.ends, window.interval, window.pending = now + interval, interval, None
            return True
        return False

    def __len__(self) -> int:
        return len(self._windows)

    def _forget_idle(self, now: float) -> bool:
        """Forget windows that are over and hold nothing; whether room was made."""
        idle = [k for k, w in self._windows.items() if now >= w.ends and w.pending is None and not w.timed]
        for k in idle:
            del self._windows[k]
        return len(self._windows) < self.max_windows

    def hold(self, key: K, data: bytes) -> bool:
        """Keep `data` (replacing a held frame) for the end of the interval; True when that end
        is a new timer (the caller's timer task may have to wake earlier)."""
        window = self._windows[key]
        window.pending = data
        if window.timed:
            return False
        window.timed = True
        heapq.heappush(self._timers, (window.ends, next(self._order), key))
        return True

    def next_release(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def release(self, now: float) -> list[tuple[K, bytes]]:
        """The held frames whose interval has ended by `now`, oldest timer first."""
        out: list[tuple[K, bytes]] = []
        while self._timers and self._timers[0][0] <= now:
            _, _, key = heapq.heappop(self._timers)
            window = self._windows.get(key)
            if window is None:
                continue
            window.timed = False
            if window.pending is None:
                continue
            if now >= window.ends:
                out.append((key, window.pending))
                window.pending, window.ends = None, now + window.interval
            else:  # a newer frame went out meanwhile and opened a later interval
                window.timed = True
                heapq.heappush(self._timers, (window.ends, next(self._order), key))
        return out

    def drop(self, which: Callable[[K], bool]) -> list[tuple[K, bytes]]:
        """Forget the streams `which` selects (their limit changed, or they are no longer wanted);
        returns their held frames, for the caller to send now or discard."""
        held: list[tuple[K, bytes]] = []
        for key in [k for k in self._windows if which(k)]:
            window = self._windows.pop(key)
            if window.pending is not None:
                held.append((key, window.pending))
        return held
