"""Hostile CoinAPI-shaped frames: every class of bad value issue 7 names, as ready payloads. Pure.

Each frame names a symbol the gateway really wants (so it reaches decode, normalize and the value
checks, not just the "not in scope" filter) and must come out as a counted malformed frame: none
may become an event, end the connection, or end the process. Frames carry no valid `sequence`, so
refusing one leaves the stream's sequence intact. The oversized frame (past trio-websocket's
1 MiB message limit) is separate: it is a transport limit, sent once on purpose.
"""

from __future__ import annotations

from collections.abc import Callable

_TIME = "2026-01-14T16:49:58.3318050Z"


def _trade(wanted: str, /, **fields: str) -> bytes:
    """A trade of `wanted` whose fields are raw JSON texts (anything, valid JSON or not); an
    empty text leaves the field out."""
    base = {
        "time_exchange": f'"{_TIME}"', "time_coinapi": f'"{_TIME}"', "uuid": '"fa42708a-ca7b-4d48-9bf8-68d23b416751"',
        "price": "95495.96", "size": "0.00310908", "taker_side": '"BUY"', "symbol_id": f'"{wanted}"',
    }
    base.update(fields)
    body = ",".join(f'"{k}":{v}' for k, v in base.items() if v != "")
    return ('{' + body + ',"type":"trade"}').encode()


def _deep(opener: str, depth: int) -> str:
    return opener * depth


Maker = Callable[[str], bytes]

#: (name, maker): the maker is given a wanted symbol id.
CATALOGUE: list[tuple[str, Maker]] = [
    ("deep [ ×100k", lambda s: b"[" * 100_000),
    ("deep {\"a\": ×50k", lambda s: b'{"a":' * 50_000),
    ("deep field nobody reads", lambda s: _trade(s, extra=_deep("[", 20_000) + "]" * 20_000)),
    ("price \"NaN\"", lambda s: _trade(s, price='"NaN"')),
    ("price \"Infinity\"", lambda s: _trade(s, price='"Infinity"')),
    ("price -Infinity string", lambda s: _trade(s, price='"-Infinity"')),
    ("price 1E+100", lambda s: _trade(s, price="1E+100")),
    ("price 1e400", lambda s: _trade(s, price="1e400")),
    ("price 5000 digits", lambda s: _trade(s, price="9" * 5000)),
    ("price 5000-digit fraction", lambda s: _trade(s, price="0." + "1" * 5000)),
    ("price negative", lambda s: _trade(s, price="-5")),
    ("size \"sNaN\"", lambda s: _trade(s, size='"sNaN"')),
    ("size huge int", lambda s: _trade(s, size="1" + "0" * 400)),
    ("time year 9999", lambda s: _trade(s, time_exchange='"9999-12-31T23:59:59.9999999Z"')),
    ("time year 1", lambda s: _trade(s, time_exchange='"0001-01-01T00:00:00.0000000Z"')),
    ("time 1960", lambda s: _trade(s, time_coinapi='"1960-01-01T00:00:00.0000000Z"')),
    ("time not a time", lambda s: _trade(s, time_exchange='"yesterday"')),
    ("time 5000-digit year", lambda s: _trade(s, time_exchange='"' + "2" * 5000 + '-01-01T00:00:00Z"')),
    ("symbol_id number", lambda s: _trade(s, symbol_id="123")),
    ("symbol_id ß", lambda s: _trade(s, symbol_id='"BINANCE_SPOT_ß_USDT"')),
    ("symbol_id Kelvin", lambda s: _trade(s, symbol_id='"\u212aRAKEN_SPOT_BTC_USD"')),
    ("symbol_id 500k chars", lambda s: _trade(s, symbol_id='"' + "A" * 500_000 + '"')),
    ("uuid list", lambda s: _trade(s, uuid="[1,2,3]")),
    ("taker_side object", lambda s: _trade(s, taker_side='{"a":1}')),
    ("sequence string", lambda s: _trade(s, sequence='"x"')),
    ("sequence 1e30", lambda s: _trade(s, sequence="1e30")),
    ("sequence huge int", lambda s: _trade(s, sequence="9" * 40)),
    ("price missing", lambda s: _trade(s, price="")),
    ("type null", lambda s: b'{"type":null}'),
    ("type unknown", lambda s: b'{"type":"weird","x":1}'),
    ("array", lambda s: b"[]"),
    ("null", lambda s: b"null"),
    ("empty", lambda s: b""),
    ("truncated", lambda s: _trade(s)[:40]),
    ("lone surrogate escape", lambda s: _trade(s, taker_side='"\\ud800"')),
    ("binary frame", lambda s: b"\x82\xa4type\xa5trade"),  # sent as a binary frame (see is_binary)
]

NAMES = [name for name, _ in CATALOGUE]


def is_binary(name: str) -> bool:
    return name == "binary frame"


def frames_for(symbol_id: str) -> list[tuple[str, bytes]]:
    return [(name, make(symbol_id)) for name, make in CATALOGUE]


def malformed_run(n: int) -> list[bytes]:
    """`n` malformed frames in a row: past `MALFORMED_RUN_LIMIT` the connection must be replaced."""
    return [b'{"type":"trade","price":' for _ in range(n)]


def oversized(symbol_id: str, size: int) -> bytes:
    """One otherwise valid trade padded past `size` bytes with a field nobody reads."""
    return _trade(symbol_id, padding='"' + "x" * size + '"')
