"""A wake-up for one waiting task that is never lost: a `fire()` before the `wait()` still counts.

trio.Event alone can't be reset, and re-creating it at the wrong moment loses a wake-up; this owns
that dance once for every adapter (a wanted set changed, a subscribe must be sent).
"""

from __future__ import annotations

import trio


class Wakeup:
    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Until fired (at once if fired since the last wait); then re-arm."""
        await self._event.wait()
        self._event = trio.Event()
