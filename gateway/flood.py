"""Per-connection flood control: a token bucket, and the strikes that end a flooding client. Pure.

Owns: whether one client message may be applied now. A bucket holds up to `burst` tokens and
refills at `rate` tokens per second; every client message takes one, and one more for each
further `BYTES_PER_TOKEN` bytes it carries (`message_cost`): the work a request costs grows with
its size (each channel is parsed and answered), so a client sending big subscribes pays for
them, while pings and one-channel requests cost exactly one. A message that finds too few tokens is
refused: the dialect answers it with its protocol's error and does not apply it
(so a flood costs one reply each, never the work the message asked for). `strikes` refusals in a
row mean the client keeps flooding instead of slowing down: that one gets the error and a close
(`FLOOD_CLOSE_CODE`). An allowed message ends the run of strikes.
Never: reads a clock (times are passed in, Trio seconds), sleeps, or grows: O(1) state per client.
"""

from __future__ import annotations

import enum
from typing import Final

#: A message costs one token per this many bytes (rounded down, plus one), about ten channels: a
#: ping or a one-channel subscribe costs 1, fifty channels 6, a 1,000-channel subscribe half the
#: burst (the most one message costs, so that a legal big subscribe always passes). The work of a
#: request is per channel (parse, demand, reply), so a client's sustained channel changes are
#: bounded: ~450/s at the default rate in ordinary messages, at most ~1,000/s packed into maximal
#: ones (the cap makes those cheaper per channel). Measured by bench/stress.py: a per-message cost
#: let 20 paced clients saturate the core.
BYTES_PER_TOKEN: Final = 256
#: WebSocket close code for a client cut off for flooding: policy violation.
FLOOD_CLOSE_CODE: Final = 1008
FLOOD_CLOSE_REASON: Final = "too many messages"


def message_cost(message: str | bytes) -> int:
    """Tokens one client message takes (characters stand in for bytes: no encoding is paid for)."""
    return 1 + len(message) // BYTES_PER_TOKEN


class Verdict(enum.Enum):
    ALLOW = "allow"  # apply the message
    REFUSE = "refuse"  # answer with the protocol's rate-limit error, do not apply it
    CLOSE = "close"  # the error, then close the connection


class TokenBucket:
    """`burst` tokens, refilled continuously at `rate` per second (a full bucket stays full)."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")  # our config's bug
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:  # a clock that steps back refills nothing (and takes nothing back)
            self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, tokens: int = 1) -> bool:
        """Take `tokens` at `now`, at most half the burst: one big request never empties a full
        bucket, so the small ones after it (a ping) still go through, and a cost the bucket could
        never hold would refuse forever. False, and nothing taken, when there are fewer."""
        self._refill(now)
        wanted = min(float(tokens), max(1.0, self.burst / 2))
        if self.tokens >= wanted:
            self.tokens -= wanted
            return True
        return False

    def ready_at(self, now: float) -> float:
        """When the next token is there: `now` if one is."""
        self._refill(now)
        return now if self.tokens >= 1.0 else now + (1.0 - self.tokens) / self.rate


class FloodGuard:
    """One connection's bucket and its run of refusals."""

    def __init__(self, rate: float, burst: int, strikes: int, now: float) -> None:
        self.bucket = TokenBucket(rate, burst, now)
        self.strikes = strikes
        self.run = 0  # refusals in a row
        self.refused = 0  # refusals in all (for counters and tests)

    def check(self, now: float, cost: int = 1) -> Verdict:
        """The verdict on one client message of `cost` tokens (`message_cost`) arriving at `now`."""
        if self.bucket.take(now, cost):
            self.run = 0
            return Verdict.ALLOW
        self.run += 1
        self.refused += 1
        return Verdict.CLOSE if self.run >= self.strikes else Verdict.REFUSE
