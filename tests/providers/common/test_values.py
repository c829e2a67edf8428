"""The value bounds every provider's normalize applies (providers.common.values)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.common.errors import MalformedFrame
from providers.common.staleness import StalenessTracker
from providers.common.values import (
    MAX_CHARS,
    MAX_PRICE,
    MAX_TS_NS,
    MIN_TS_NS,
    require_price,
    require_signed,
    require_size,
    require_ts,
)


@pytest.mark.parametrize("text", ["0", "67123.45", "0.00000001234", "1E+12", "1E-30", "0E-50", "-0"])
def test_plausible_prices_pass(text):
    require_price(Decimal(text))


@pytest.mark.parametrize(
    "text",
    ["NaN", "sNaN", "Infinity", "-Infinity", "1E+100", "1000000000001", "-1", "1E-31",
     "0." + "1" * 60, "1" * 5000],
)
def test_implausible_prices_are_malformed(text):
    with pytest.raises(MalformedFrame):
        require_price(Decimal(text))


def test_sizes_and_signed_values_have_their_own_ranges():
    require_size(Decimal("1E+15"), None)
    require_signed(Decimal("-12.5"))
    with pytest.raises(MalformedFrame):
        require_size(Decimal("-0.1"))
    with pytest.raises(MalformedFrame):
        require_signed(Decimal("-1E+19"))


@pytest.mark.parametrize("ts", [MIN_TS_NS - 1, MAX_TS_NS + 1, -1, 0, 2**63, 10**30])
def test_timestamps_outside_2009_to_2100_are_malformed(ts):
    with pytest.raises(MalformedFrame):
        require_ts(ts)


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_a_price_either_passes_within_bounds_or_is_malformed(value):
    try:
        require_price(value)
    except MalformedFrame:
        return
    assert value.is_finite() and 0 <= value <= MAX_PRICE and len(str(value)) <= MAX_CHARS


def test_newly_stale_hands_out_a_burst_in_slices_oldest_first():
    tracker: StalenessTracker[int] = StalenessTracker(stale_after=10.0)
    tracker.add(range(1000), 0.0)
    for key in range(1000):
        tracker.seen(key, key / 1000)
    first = tracker.newly_stale(100.0, limit=128)
    second = tracker.newly_stale(100.0, limit=128)
    assert first == list(range(128)) and second == list(range(128, 256))
    assert len(tracker.newly_stale(100.0)) == 1000 - 256
