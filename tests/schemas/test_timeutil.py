"""Timestamps convert exactly: no float anywhere between the text and the int nanoseconds."""

import calendar
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.timeutil import TimestampError, format_iso_ns, parse_any_ns, parse_iso_ns

# 1970 .. 2200, whole nanoseconds.
ns_values = st.integers(min_value=0, max_value=7_258_118_400 * 10**9)


def test_the_captured_coinapi_timestamp():
    assert parse_iso_ns("2025-01-14T16:49:58.3318050Z") == 1736873398_331805000


@given(ns_values, st.integers(min_value=0, max_value=9))
def test_format_then_parse_truncates_exactly(ns, digits):
    text = format_iso_ns(ns, digits)
    step = 10 ** (9 - digits)
    assert parse_iso_ns(text) == ns - ns % step


@given(ns_values)
def test_seconds_agree_with_the_standard_library(ns):
    text = format_iso_ns(ns, 0)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert calendar.timegm(parsed.utctimetuple()) == ns // 10**9


def test_offsets_and_naive_times():
    assert parse_iso_ns("2024-01-23T12:13:20.5+02:00") == parse_iso_ns("2024-01-23T10:13:20.500Z")
    assert parse_iso_ns("2024-01-23T10:13:20") == parse_iso_ns("2024-01-23T10:13:20Z")


@pytest.mark.parametrize("text", ["", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01", "yesterday",
                                  "2024-01-01T25:00:00Z", "2024-01-01T00:00:00.1234567890Z"])
def test_bad_timestamps_raise(text):
    with pytest.raises(TimestampError):
        parse_iso_ns(text)


def test_unix_milliseconds_and_iso_both_accepted():
    assert parse_any_ns(1706004800000) == parse_any_ns("2024-01-23T10:13:20.000Z")
    assert parse_any_ns(1706004800000.0) == 1706004800000 * 10**6
    with pytest.raises(TimestampError):
        parse_any_ns(1.5)
    with pytest.raises(TimestampError):
        parse_any_ns(True)


def test_the_fast_path_agrees_with_the_slow_one_and_survives_a_full_cache():
    from schemas import timeutil

    for second in range(timeutil._PREFIX_CACHE_LIMIT + 10):
        ns = (1_736_873_398 + second) * 10**9 + 331_805_000
        text = format_iso_ns(ns, 7)
        assert parse_iso_ns(text) == ns  # first: slow path, fills the cache
        assert parse_iso_ns(text) == ns  # again: fast path
    assert len(timeutil._prefix_seconds) <= timeutil._PREFIX_CACHE_LIMIT
    with pytest.raises(TimestampError):
        parse_iso_ns(format_iso_ns(ns, 7)[:-2] + "xZ")  # a cached prefix does not excuse a bad fraction


@pytest.mark.parametrize(
    "text",
    ["2025-01-14T16:49:58+99:99", "2025-01-14T16:49:58+15:00", "2025-01-14T16:49:58-12:60",
     "٢٠٢٥-01-14T16:49:58Z", "2025-01-14T１６:49:58Z"],
)
def test_offsets_no_zone_has_and_other_scripts_digits_are_not_timestamps(text):
    with pytest.raises(TimestampError):
        parse_iso_ns(text)
