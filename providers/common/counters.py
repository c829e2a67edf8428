"""The counters every adapter keeps about what its provider sent, reported in health.

A connection that sends nothing but malformed frames is broken (a proxy injecting garbage, a
provider bug, a truncated stream): `MALFORMED_RUN_LIMIT` in a row and the connection is dropped and
reconnected. Malformed frames never count as liveness: only a frame that decoded does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Malformed frames in a row after which a connection is given up and reconnected. Large enough
#: that an occasional bad frame among good ones never costs a reconnect; small enough that a
#: connection that has gone wrong is replaced within a fraction of a second at market rates.
MALFORMED_RUN_LIMIT: Final = 100


@dataclass
class FrameCounters:
    frames: int = 0  # every frame received
    malformed: int = 0  # not a message of the shape its type promises, or values we refuse
    unknown: int = 0  # a well-formed message of a type we do not know


class MalformedRun:
    """One connection's malformed frames since its last good one (a connection, not an adapter:
    a healthy connection beside a broken one must not hide the broken one's run)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def bad(self) -> bool:
        """One more malformed frame; True once `MALFORMED_RUN_LIMIT` have come in a row."""
        self.count += 1
        return self.count >= MALFORMED_RUN_LIMIT

    def good(self) -> None:
        """A frame that decoded (known or unknown type): the run is over."""
        self.count = 0
