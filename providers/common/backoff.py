"""Reconnect delays: exponential, full jitter, capped; the attempt count resets only after a
connection stayed healthy for `stable_after` seconds (not merely on connect, which would let a
server that accepts-then-drops be hammered at the initial delay forever). Pure: time and
randomness are passed in. `BackoffPolicy` is the TOML-reachable part (`[providers.X.backoff]`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

_Seconds = Annotated[float, msgspec.Meta(gt=0)]


class BackoffPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    initial: _Seconds = 1.0
    factor: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    cap: _Seconds = 30.0
    stable_after: _Seconds = 60.0


@dataclass
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    stable_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    _connected_at: float | None = None

    @classmethod
    def of(cls, policy: BackoffPolicy, rng: random.Random | None = None) -> Backoff:
        return cls(policy.initial, policy.factor, policy.cap, policy.stable_after, rng or random.Random())

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
