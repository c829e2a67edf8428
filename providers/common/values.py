"""The one check every provider's `normalize` applies to the values it passes on. Pure.

A frame either becomes valid normalized events or is a `MalformedFrame` (counted, skipped). msgspec
reads `"NaN"`, `"Infinity"`, `1E+100` and thousand-digit text as Decimals, and ints of any size;
none of those may reach an encoder or a client. The bounds below are deliberately wide — they
catch values no market has, not unusual markets:

- prices: finite, 0 ≤ price ≤ 10^12 (no asset trades above a trillion per unit; 0 is a legal
  "no bid" in some feeds); every non-zero value at least 10^-30 in magnitude and written in at
  most `MAX_CHARS` characters (which bounds what an encoder writes);
- sizes and volumes: finite, 0 ≤ size ≤ 10^18 (meme-coin supplies reach 10^15);
- signed quantities (a 24 h change, a percentage): finite, |value| ≤ 10^18;
- timestamps: int ns between 2009-01-01 (before any crypto exchange) and 2100-01-01, which also
  keeps them inside int64.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from providers.common.errors import MalformedFrame

MAX_PRICE: Final = Decimal(10) ** 12
MAX_SIZE: Final = Decimal(10) ** 18
#: Room for more significant digits than any exchange quotes (about 40), sign, point, exponent.
MAX_CHARS: Final = 48
#: Smaller than any tick size (1e-18 is the smallest unit of an 18-decimal token).
MIN_EXPONENT: Final = -30
MIN_TS_NS: Final = 1_230_768_000 * 1_000_000_000  # 2009-01-01T00:00:00Z
MAX_TS_NS: Final = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z


def require_price(*values: Decimal | None) -> None:
    """Prices (and book levels): None, or finite within [0, MAX_PRICE] with sane precision."""
    for value in values:
        if value is not None:
            _require(value, Decimal(0), MAX_PRICE, "price")


def require_size(*values: Decimal | None) -> None:
    """Sizes, volumes, counts: None, or finite within [0, MAX_SIZE] with sane precision."""
    for value in values:
        if value is not None:
            _require(value, Decimal(0), MAX_SIZE, "size")


def require_signed(*values: Decimal | None) -> None:
    """Changes and percentages: None, or finite with |value| ≤ MAX_SIZE."""
    for value in values:
        if value is not None:
            _require(value, -MAX_SIZE, MAX_SIZE, "value")


def require_ts(*values: int | None) -> None:
    """Timestamps in int ns: None, or within [MIN_TS_NS, MAX_TS_NS]."""
    for value in values:
        if value is not None and not (MIN_TS_NS <= value <= MAX_TS_NS):
            raise MalformedFrame(f"timestamp outside 2009..2100: {value}")


def _require(value: Decimal, low: Decimal, high: Decimal, what: str) -> None:
    # Cheapest first: this runs for every price and size of every frame. `is_finite` before the
    # comparison, which raises on NaN.
    if not value.is_finite():
        raise MalformedFrame(f"{what} is not a finite number: {value}")
    if not (low <= value <= high):
        raise MalformedFrame(f"{what} out of range [{low}, {high:.0E}]: {value:.6E}")
    if value and (value.adjusted() < MIN_EXPONENT or len(str(value)) > MAX_CHARS):
        raise MalformedFrame(f"{what} has an implausible precision: {value:.6E}")
