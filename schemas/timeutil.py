"""Exact conversions between wire timestamps and int nanoseconds since the Unix epoch.

Providers send UTC ISO-8601 with 0–9 fractional digits (CoinAPI: 7, Luzia: 3) or Unix milliseconds.
Nothing here goes through float: a float has ~16 significant digits, a ns timestamp needs 19.
The whole-second prefix is cached, because consecutive frames almost always share it.
"""

from __future__ import annotations

import calendar
import re
import time
from functools import lru_cache

# `[0-9]`, not `\d`: `\d` (and `int()`) take other scripts' digits, which no provider means.
_ISO = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:[.,]([0-9]{1,9}))?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
#: UTC offsets in use run from -12:00 to +14:00.
_MAX_OFFSET_HOURS = 14
NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


class TimestampError(ValueError):
    """Text that is not a timestamp we can convert exactly."""


@lru_cache(maxsize=4096)
def _epoch_seconds(date: str, clock: str) -> int:
    try:
        y, mo, d = (int(p) for p in date.split("-"))
        h, mi, s = (int(p) for p in clock.split(":"))
        return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) if _valid(y, mo, d, h, mi, s) else -1
    except ValueError:
        return -1


def _valid(y: int, mo: int, d: int, h: int, mi: int, s: int) -> bool:
    if not (1 <= mo <= 12 and 0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 61):
        return False
    return 1 <= d <= calendar.monthrange(y, mo)[1]


def _offset_seconds(zone: str | None) -> int:
    if zone is None or zone == "Z":
        return 0
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > _MAX_OFFSET_HOURS or minutes > 59:
        raise TimestampError(f"not a UTC offset: {zone!r}")
    offset = hours * 3600 + minutes * 60
    return -offset if zone[0] == "+" else offset


_prefix_seconds: dict[str, int] = {}  # `YYYY-MM-DDTHH:MM:SS` → epoch seconds, for the fast path
_PREFIX_CACHE_LIMIT = 4096


def parse_iso_ns(text: str) -> int:
    """`2025-01-14T16:49:58.3318050Z` → 1736873398331805000, exactly. Naive times are UTC."""
    # Fast path for the shape providers send (`…SS.fffffffZ`): the whole-second prefix repeats
    # from frame to frame, so it is looked up, and only the fraction is converted.
    if len(text) > 21 and text[19] == "." and text[-1] == "Z":
        fraction = text[20:-1]
        seconds = _prefix_seconds.get(text[:19])
        if seconds is not None and len(fraction) <= 9 and fraction.isdigit() and fraction.isascii():
            return seconds * NS_PER_S + int(fraction.ljust(9, "0"))
    return _parse_iso_slow(text)


def _parse_iso_slow(text: str) -> int:
    match = _ISO.fullmatch(text)
    if match is None:
        raise TimestampError(f"not an ISO-8601 timestamp: {text!r}")
    date, clock, fraction, zone = match.groups()
    seconds = _epoch_seconds(date, clock)
    if seconds < 0:
        raise TimestampError(f"not a calendar time: {text!r}")
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    if zone == "Z" and text[10] == "T":
        if len(_prefix_seconds) >= _PREFIX_CACHE_LIMIT:
            _prefix_seconds.clear()  # live data moves on: old seconds are not asked for again
        _prefix_seconds[f"{date}T{clock}"] = seconds
    return (seconds + _offset_seconds(zone)) * NS_PER_S + nanos


def parse_unix_ms_ns(value: int) -> int:
    """Unix milliseconds (Luzia SDK models) → ns."""
    return value * NS_PER_MS


def parse_any_ns(value: str | int | float) -> int:
    """A timestamp as either ISO-8601 text or Unix ms number (as some providers document both)."""
    if isinstance(value, str):
        return parse_iso_ns(value)
    if isinstance(value, bool):
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TimestampError(f"fractional Unix ms are not exact: {value!r}")
        value = int(value)
    return parse_unix_ms_ns(value)


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    y, mo, d, h, mi, s = time.gmtime(seconds)[:6]
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


def format_iso_ns(ns: int, digits: int = 7) -> str:
    """int ns → `YYYY-MM-DDTHH:MM:SS.fffffffZ` with `digits` fractional digits (truncated, not rounded)."""
    seconds, nanos = divmod(ns, NS_PER_S)
    if digits == 0:
        return f"{_second_text(seconds)}Z"
    fraction = f"{nanos:09d}"[:digits]
    return f"{_second_text(seconds)}.{fraction}Z"
