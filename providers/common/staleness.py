"""Per-stream staleness: which wanted streams have been silent for `stale_after` seconds. Pure:
time is passed in, no Trio, so the pure `providers.*.streams` modules use it.

A stream counts from when it was added (one that never sent anything goes stale too). Fresh
streams are kept ordered by their last data, oldest first, so a check looks only at the streams
it reports, never at everything tracked; adding, removing and seeing a stream are O(1). `seen`
returns when a stale stream was last heard before it went silent, so the caller can report the gap.
Times passed in must not go backwards (Trio's clock does not).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class StalenessTracker(Generic[K]):
    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._fresh: OrderedDict[K, float] = OrderedDict()  # → last seen, oldest first
        self._stale: dict[K, float] = {}  # → last seen before it went silent

    def __len__(self) -> int:
        return len(self._fresh) + len(self._stale)

    @property
    def stale_count(self) -> int:
        return len(self._stale)

    def add(self, keys: Iterable[K], now: float) -> None:
        """Start tracking `keys`; their clock starts now (keys already tracked keep theirs)."""
        for key in keys:
            if key not in self._fresh and key not in self._stale:
                self._fresh[key] = now  # `now` only grows: appending keeps the order

    def remove(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._fresh.pop(key, None)
            self._stale.pop(key, None)

    def want(self, keys: Iterable[K], now: float) -> None:
        """Track exactly `keys` (O(everything tracked): for a whole new wanted set only)."""
        wanted = set(keys)
        self.remove([key for key in (*self._fresh, *self._stale) if key not in wanted])
        self.add(wanted, now)

    def seen(self, key: K, now: float) -> float | None:
        """Data for `key`; if it was stale, when it was last seen before (else None)."""
        since = self._stale.pop(key, None)
        if since is None and key not in self._fresh:
            return None  # not tracked
        self._fresh[key] = now
        self._fresh.move_to_end(key)
        return since

    def newly_stale(self, now: float, limit: int | None = None) -> list[K]:
        """The streams that crossed the threshold since the last call, oldest first; at most
        `limit` of them (the next call finds the rest, so a burst of tens of thousands is sliced)."""
        out: list[K] = []
        while self._fresh and (limit is None or len(out) < limit):
            key, last = next(iter(self._fresh.items()))
            if now - last < self.stale_after:
                break
            del self._fresh[key]
            self._stale[key] = last
            out.append(key)
        return out
