"""Reconnect delays: exponential, full jitter, capped; the attempt count resets only after a
connection stayed healthy for `stable_after` seconds (not merely on connect, which would let a
server that accepts-then-drops be hammered at the initial delay forever). Pure: time and
randomness are passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    stable_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    _connected_at: float | None = None

    def ceiling(self) -> float:
        """The upper bound of the next delay, before jitter."""
        # The exponent is clamped so a long outage cannot overflow the float.
        return min(self.cap, self.initial * self.factor ** min(self.attempt, 64))

    def next_delay(self) -> float:
        """The delay before the next attempt (uniform in [0, ceiling]), and count the attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        """Reset the attempt count if the connection that just ended had been up long enough."""
        if self._connected_at is not None and now - self._connected_at >= self.stable_after:
            self.attempt = 0
        self._connected_at = None
