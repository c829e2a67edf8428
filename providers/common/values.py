"""Checks every provider's `normalize` applies to the values it passes on. Pure.

msgspec reads `"NaN"`, `"Infinity"` and `1E+100`-style text as Decimals; a non-finite one must
never reach an encoder (the providers' wire encoders write Decimals as JSON numbers, and JSON has
no NaN), so it makes the frame malformed, in one place for every provider.
"""

from __future__ import annotations

from decimal import Decimal

from providers.common.errors import MalformedFrame


def require_finite(*values: Decimal | None) -> None:
    """Raise `MalformedFrame` unless every value given is None or a finite Decimal."""
    for value in values:
        if value is not None and not value.is_finite():
            raise MalformedFrame(f"not a finite number: {value}")
