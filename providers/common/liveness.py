"""Liveness, kept as three separate checks because each catches what the others miss:

1. transport ping/pong (the session pings; trio-websocket matches the pong) — a dead peer;
2. data idle per connection (`IdleDeadline`) — "connected but mute": socket up, nothing flowing;
3. staleness per subscribed stream (`StalenessTracker`) — one symbol silent while others flow.

`IdleDeadline` is a cancel scope whose deadline moves forward on each frame; `StalenessTracker`
is pure (time passed in) so its rules are testable without a clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

import trio


def trio_now() -> float | None:
    """Trio's clock, or None outside a Trio run (`update_wanted` and `health` may be called from
    anywhere, e.g. before the gateway starts)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


class IdleDeadline:
    """Cancel the session if no frame arrived for `timeout` seconds; `fed` moves the deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.scope = trio.CancelScope(deadline=trio.current_time() + timeout)

    def fed(self) -> None:
        self.scope.deadline = trio.current_time() + self.timeout

    @property
    def expired(self) -> bool:
        return self.scope.cancelled_caught


@dataclass
class StalenessTracker:
    """Which wanted streams have been silent longer than `stale_after` seconds.

    A stream counts from when it was wanted (a stream that never sent anything goes stale too).
    `seen` returns the silent window when a stale stream comes back, so the caller can report a gap.
    """

    stale_after: float
    _last_seen: dict[Hashable, float] = field(default_factory=dict)
    _stale: set[Hashable] = field(default_factory=set)

    def want(self, keys: Iterable[Hashable], now: float) -> None:
        """Track exactly `keys`: new ones start their clock now, dropped ones are forgotten."""
        wanted = set(keys)
        for key in list(self._last_seen):
            if key not in wanted:
                del self._last_seen[key]
                self._stale.discard(key)
        for key in wanted:
            self._last_seen.setdefault(key, now)

    def add(self, keys: Iterable[Hashable], now: float) -> None:
        """Start tracking `keys` (their clock starts now; keys already tracked keep theirs)."""
        for key in keys:
            self._last_seen.setdefault(key, now)

    def remove(self, keys: Iterable[Hashable]) -> None:
        """Stop tracking `keys`: work proportional to `keys`, not to everything tracked."""
        for key in keys:
            self._last_seen.pop(key, None)
            self._stale.discard(key)

    def seen(self, key: Hashable, now: float) -> float | None:
        """Record data for `key`; if it was stale, return when it was last seen before (else None)."""
        previous = self._last_seen.get(key)
        if previous is None:
            return None
        self._last_seen[key] = now
        if key in self._stale:
            self._stale.discard(key)
            return previous
        return None

    def newly_stale(self, now: float) -> list[Hashable]:
        """Streams that crossed the threshold since the last call."""
        fresh_stale = [
            key
            for key, last in self._last_seen.items()
            if key not in self._stale and now - last >= self.stale_after
        ]
        self._stale.update(fresh_stale)
        return fresh_stale

    @property
    def stale_count(self) -> int:
        return len(self._stale)
