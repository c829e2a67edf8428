"""Liveness, kept as three separate checks because each catches what the others miss:

1. transport ping/pong (the session pings; trio-websocket matches the pong) — a dead peer;
2. data idle per connection (`IdleDeadline`) — "connected but mute": socket up, nothing flowing;
3. staleness per subscribed stream (`providers.common.staleness`) — one symbol silent while others flow.

`IdleDeadline` is a cancel scope whose deadline moves forward on each frame; staleness is pure
(time passed in) and lives apart, so pure modules can use it without loading Trio.
"""

from __future__ import annotations

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
