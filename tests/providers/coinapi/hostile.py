"""Hostile CoinAPI frames for tests: Hypothesis JSON trees written as raw JSON text (so numbers
like `1E+100` and 5000-digit literals reach the decoder as the provider would send them), hostile
values for the fields that matter, and hand-built pathological frames.

Only text is built here; what the code under test must make of it is the tests' business.
"""

from __future__ import annotations

import json
from typing import Final

from hypothesis import strategies as st

from tests.providers.coinapi.support import trade_frame

HUGE_DIGITS: Final = "9" * 5000
NUMBER_TEXTS: Final = (
    "1E+100", "-1E+100", "1e400", "-1e-400", "0", "-0", "0.000000001", HUGE_DIGITS, "-" + HUGE_DIGITS,
    "1" + "0" * 5000 + ".5", "0." + "0" * 5000 + "1", str(2**64), str(-(2**63) - 1), "123456789012345678901234567890",
)
STRING_TEXTS: Final = (
    '"NaN"', '"Infinity"', '"-Infinity"', '"sNaN"', '"1E+100"', '"1E+999999999"', f'"{HUGE_DIGITS}"', '""',
    '"\\u0000"', '"\\ud83d\\ude00"', '"\u212a"', '"\u00df"', '"\u0662\u0660\u0662\u0665"', '"' + "x" * 20_000 + '"',
)
#: Times no market has: years 0001 and 9999, before 1970, impossible dates, other scripts' digits.
TIME_TEXTS: Final = (
    '"0001-01-01T00:00:00.0000000Z"', '"9999-12-31T23:59:59.9999999Z"', '"1969-12-31T23:59:59Z"',
    '"1970-01-01T00:00:00Z"', '"2025-13-01T00:00:00Z"', '"2025-02-30T00:00:00Z"', '"2025-01-14T25:00:00Z"',
    '"\u0662\u0660\u0662\u0665-01-14T16:49:58Z"', '"2025-01-14"', '""', '"2101-01-01T00:00:00Z"',
    '"2025-01-14T16:49:58.1234567890123Z"', '"2025-01-14T16:49:58+99:99"', "1736873398000",
)
PATHOLOGICAL: Final = (
    "[" * 100_000, "{" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000, '{"type":"trade","x":' + "[" * 50_000,
    "", " ", "null", "[]", "{}", '"hearbeat"', "\x00", "\ud800", '{"type":"\ud800"}', b"\xff\xfe\xfd",
    b'{"type":"trade","symbol_id":"\xc3\x28"}', '{"type":"trade"}' * 2, '{"type":' + HUGE_DIGITS + "}",
    '{"type":"' + "t" * 100_000 + '"}', '{"type":"error","message":' + "[" * 10_000 + "}",
)

leaves = st.one_of(
    st.sampled_from(NUMBER_TEXTS + STRING_TEXTS + TIME_TEXTS + ("true", "false", "null")),
    st.integers().map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: f"{n}E{n % 700 - 350}"),
    st.text(max_size=30).map(json.dumps),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(fields: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


json_trees = st.one_of(
    st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4).map(_array)
        | st.dictionaries(st.sampled_from(["type", "price", "size", "a", "\u212a"]) | st.text(max_size=5), children, max_size=4).map(_object),
        max_leaves=25,
    ),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),  # deep, but under the recursion limit
    st.integers(3000, 20_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)

SYMBOL = "COINBASE_SPOT_BTC_USD"
GOOD_TIME = '"2025-01-14T16:49:58.3318050Z"'
LEVEL = '{"price":456.35,"size":123}'
#: One valid frame of every server type, as field → JSON text (the `type` goes last, as live).
BASE_FRAMES: Final[dict[str, dict[str, str]]] = {
    "trade": {
        "time_exchange": GOOD_TIME, "time_coinapi": GOOD_TIME, "uuid": '"fa42708a"', "price": "95495.96",
        "size": "0.00310908", "taker_side": '"BUY"', "symbol_id": f'"{SYMBOL}"', "sequence": "5",
    },
    "quote": {
        "symbol_id": f'"{SYMBOL}"', "sequence": "2", "time_exchange": GOOD_TIME, "time_coinapi": GOOD_TIME,
        "ask_price": "770.0", "ask_size": "3252", "bid_price": "760", "bid_size": "124",
    },
    "book5": {
        "symbol_id": f'"{SYMBOL}"', "sequence": "3", "time_exchange": GOOD_TIME, "time_coinapi": GOOD_TIME,
        "asks": f"[{LEVEL}]", "bids": f"[{LEVEL}]",
    },
    "book50": {
        "symbol_id": f'"{SYMBOL}"', "time_exchange": GOOD_TIME, "time_coinapi": GOOD_TIME, "asks": f"[{LEVEL}]", "bids": "[]",
    },
    "book": {
        "symbol_id": f'"{SYMBOL}"', "sequence": "4", "time_exchange": GOOD_TIME, "time_coinapi": GOOD_TIME,
        "is_snapshot": "true", "asks": f"[{LEVEL}]", "bids": f"[{LEVEL}]",
    },
    "ohlcv": {
        "symbol_id": f'"{SYMBOL}"', "sequence": "511", "period_id": '"1DAY"', "time_period_start": '"2025-01-14T00:00:00.0000000Z"',
        "time_period_end": '"2025-01-15T00:00:00.0000000Z"', "time_open": GOOD_TIME, "time_close": GOOD_TIME,
        "price_open": "0.3865", "price_high": "0.38706", "price_low": "0.3865", "price_close": "0.38706",
        "volume_traded": "1500.31419084", "trades_count": "5",
    },
    "error": {"message": '"Invalid API key"'},
    "reconnect": {"within_seconds": "10", "before_time": GOOD_TIME},
    "hearbeat": {},
}


def frame_of(kind: str, fields: dict[str, str]) -> str:
    return _object({**fields, "type": json.dumps(kind)})


@st.composite
def hostile_frames(draw: st.DrawFn) -> str:
    """A valid frame of some type with some fields replaced (or added) by hostile values."""
    kind = draw(st.sampled_from(sorted(BASE_FRAMES)))
    fields = dict(BASE_FRAMES[kind])
    names = [*sorted(fields), "unread_field"]
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        values = st.sampled_from(TIME_TEXTS) if name.startswith("time") else json_trees
        fields[name] = draw(values)
    return frame_of(kind, fields)


def good_trade(price: str = "100.5", size: str = "0.25", sequence: int = 1, uuid: str = "u") -> str:
    return trade_frame(SYMBOL, sequence, uuid, price=price, size=size)
