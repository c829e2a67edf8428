"""The counters every adapter keeps about what its provider sent, reported in health."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FrameCounters:
    frames: int = 0  # every frame received
    malformed: int = 0  # not a message of the shape its type promises, or values we refuse
    unknown: int = 0  # a well-formed message of a type we do not know
