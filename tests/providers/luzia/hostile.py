"""Hostile Luzia frames for tests: every server message type with some of its fields (top level or
inside the ticker's `data`) replaced by Hypothesis JSON trees written as raw JSON text, and client
requests built the same way. The generic trees, extreme values and pathological texts are the
ones the CoinAPI tests use (tests/providers/coinapi/hostile.py), so both providers face the same.

Only text is built here; what the code under test must make of it is the tests' business.
"""

from __future__ import annotations

import json
from typing import Final

from hypothesis import strategies as st

from tests.providers.coinapi.hostile import NUMBER_TEXTS, PATHOLOGICAL, STRING_TEXTS, TIME_TEXTS, json_trees

__all__ = ["NUMBER_TEXTS", "PATHOLOGICAL", "STRING_TEXTS", "TIME_TEXTS", "json_trees"]

GOOD_TIME: Final = '"2024-01-23T10:13:20.000Z"'
#: The ticker's `data`, field → JSON text (Luzia's field order).
TICKER_DATA: Final[dict[str, str]] = {
    "symbol": '"BTC/USDT"', "exchange": '"binance"', "last": "67432.10", "bid": "67430.00", "ask": "67434.20",
    "high": "68100.00", "low": "66800.00", "open": "67000.00", "close": "67432.10", "volume": "12345.67",
    "quoteVolume": "832456789.12", "change": "432.10", "changePercent": "0.645", "timestamp": GOOD_TIME,
}
#: One valid frame of every server type, as field → JSON text (`data` is filled in by `frame_of`).
BASE_FRAMES: Final[dict[str, dict[str, str]]] = {
    "ticker": {"exchange": '"binance"', "symbol": '"BTC/USDT"', "timestamp": '"2024-01-23T10:13:20.050Z"'},
    "connected": {"message": '"Connected to Luzia WebSocket API"', "tier": '"pro"', "limits": '{"maxSubscriptions":50}'},
    "subscribed": {"channel": '"ticker:binance:BTC/USDT"'},
    "unsubscribed": {"channel": '"ticker:binance:BTC/USDT"'},
    "pong": {"timestamp": GOOD_TIME},
    "error": {"code": '"INVALID_CHANNEL"', "message": '"Invalid channel: ticker:binance:NOPE/USDT"'},
}
#: Timestamps as Luzia may send them (text or Unix ms) that no market has, besides TIME_TEXTS.
LUZIA_TIMES: Final = (
    "-1", "0", "1", str(2**63), str(-(2**63)), "9" * 5000, "1e300", "1.5", "1E+100", "4102444800001",
    "1230767999999", "true", "[]", "{}",
)
TIME_FIELDS: Final = frozenset({"timestamp"})


def _object(fields: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(name)}:{text}" for name, text in fields.items()) + "}"


def frame_of(kind: str, fields: dict[str, str], data: dict[str, str] | None = None) -> str:
    """A server frame of `kind`; a ticker gets `data` (default: the valid one) as its `data`."""
    if kind == "ticker" and "data" not in fields:
        fields = {**fields, "data": _object(TICKER_DATA if data is None else data)}
    return _object({"type": json.dumps(kind), **fields})


def _hostile_value(name: str) -> st.SearchStrategy[str]:
    if name in TIME_FIELDS:
        return st.sampled_from(TIME_TEXTS + LUZIA_TIMES) | json_trees
    return json_trees


@st.composite
def hostile_frames(draw: st.DrawFn) -> str:
    """A valid frame of some type with 1-3 of its fields (a ticker's: its `data` fields too)
    replaced, or unread fields added, by hostile values."""
    kind = draw(st.sampled_from(sorted(BASE_FRAMES)))
    fields, data = dict(BASE_FRAMES[kind]), dict(TICKER_DATA)
    names = [*fields, "unread_field"] + ([f"data.{n}" for n in (*data, "unread_field")] if kind == "ticker" else [])
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        inner = name.removeprefix("data.")
        (data if inner != name else fields)[inner] = draw(_hostile_value(inner))
    return frame_of(kind, fields, data)


@st.composite
def hostile_requests(draw: st.DrawFn) -> str:
    """A client request (subscribe / unsubscribe / ping, or another type) with hostile parts."""
    kind = draw(st.sampled_from(["subscribe", "unsubscribe", "ping", "pong", "ticker"]).map(json.dumps) | json_trees)
    channels = draw(
        json_trees
        | st.lists(st.sampled_from(['"ticker:binance:BTC/USDT"', '"ticker:\u212araken"']) | json_trees, max_size=4).map(
            lambda items: "[" + ",".join(items) + "]"
        )
    )
    fields = {"type": kind}
    if draw(st.booleans()):
        fields["channels"] = channels
    if draw(st.booleans()):
        fields["extra"] = draw(json_trees)
    return _object(fields)


#: One hostile frame of each class the issue names, each malformed.
HOSTILE_FRAMES: Final = [
    "[" * 100_000,  # nested far beyond the decoder's depth
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "x": "[" * 5000 + "]" * 5000}),  # deep, in a field nobody reads
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "last": '"NaN"'}),
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "bid": '"Infinity"'}),
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "ask": "1E+100"}),
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "volume": "9" * 5000}),
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "timestamp": str(2**70)}),
    frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, "timestamp": "-1"}),
    frame_of("ticker", {**BASE_FRAMES["ticker"], "timestamp": '"9999-12-31T23:59:59.999Z"'}),
    frame_of("ticker", {**BASE_FRAMES["ticker"], "symbol": '"' + "B" * 20_000 + '"'}),  # a huge string
    frame_of("ticker", {**BASE_FRAMES["ticker"], "symbol": '"\u212aRW/USDT"'}),  # not ASCII
    frame_of("ticker", {**BASE_FRAMES["ticker"], "exchange": '"\u212araken"'}),  # lower-cases to "kraken"
    frame_of("subscribed", {"channel": "12"}),  # a wrong type in a field that is read
    '{"type":"pong","timestamp":' + "[" * 100_000,
    *PATHOLOGICAL[:6],
]
