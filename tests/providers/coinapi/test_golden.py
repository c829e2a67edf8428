"""Golden frames: the spec's captured CoinAPI frames (one file per server message type) decoded
by the production decoder and normalized, compared with the expected results stored next to them
(`<name>.expected.json`: the decoded wire fields, and the normalized events)."""

from __future__ import annotations

import pathlib
from decimal import Decimal

import msgspec
import pytest

from providers.coinapi import normalize, wire
from providers.coinapi.grammar import SymbolMapper
from schemas import json_encoder

FIXTURES = pathlib.Path(__file__).parents[2] / "fixtures" / "coinapi"
FRAMES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))
PROVIDER, TS_GATEWAY = "capi", 1_700_000_000_123_456_789


def normalized(message: wire.ServerMessage) -> list:
    """What the adapter makes of one message, as JSON builtins (decimals as strings)."""
    instrument = SymbolMapper().instrument(getattr(message, "symbol_id", ""))
    context = dict(provider=PROVIDER, ts_gateway=TS_GATEWAY)
    if isinstance(message, wire.Trade):
        events = [normalize.to_trade(message, exchange=instrument[0], symbol=instrument[1], **context)]
    elif isinstance(message, wire.Quote):
        events = [normalize.to_quote(message, exchange=instrument[0], symbol=instrument[1], **context)]
    elif isinstance(message, (wire.Book5, wire.Book20, wire.Book50)):
        events = [normalize.to_book(message, exchange=instrument[0], symbol=instrument[1], **context)]
    elif isinstance(message, wire.Ohlcv):
        builder = normalize.TickerBuilder(PROVIDER, *instrument)
        events = [builder.on_ohlcv(message, TS_GATEWAY)]
    else:
        events = []
    return [msgspec.json.decode(json_encoder.encode(e)) for e in events if e is not None]


def actual(frame: bytes) -> dict:
    message = wire.decode_server(frame)
    decoded = msgspec.to_builtins(message, builtin_types=(Decimal,))
    return {
        "type": type(message).__struct_config__.tag,
        "decoded": {k: str(v) if isinstance(v, Decimal) else v for k, v in decoded.items()} | {
            k: [{f: str(x) for f, x in level.items()} for level in decoded[k]] for k in ("asks", "bids") if k in decoded
        },
        "normalized": normalized(message),
    }


def test_every_server_message_type_has_a_golden_frame() -> None:
    types = {msgspec.json.decode(p.read_bytes())["type"] for p in FRAMES}
    assert types == wire.SERVER_TYPES


@pytest.mark.parametrize("path", FRAMES, ids=lambda p: p.stem)
def test_golden_frame(path: pathlib.Path) -> None:
    expected = msgspec.json.decode(path.with_name(f"{path.stem}.expected.json").read_bytes())
    assert actual(path.read_bytes()) == expected


def test_the_live_trade_frame_in_detail() -> None:
    """Spelled out, so the golden file itself is checked against the spec's numbers."""
    (event,) = normalized(wire.decode_server((FIXTURES / "trade.json").read_bytes()))
    assert event == {
        "type": "trade",
        "provider": "capi",
        "ts_gateway": TS_GATEWAY,
        "exchange": "coinbase",
        "symbol": "BTC/USD",
        "ts_exchange": 1_736_873_398_331_805_000,
        "ts_provider": 1_736_873_398_336_884_500,
        "sequence": 5_231_604,
        "price": "95495.96",
        "size": "0.00310908",
        "side": "buy",
        "trade_id": "fa42708a-ca7b-4d48-9bf8-68d23b416751",
    }


def test_quote_sizes_and_ticker_fields_from_the_frames() -> None:
    (quote,) = normalized(wire.decode_server((FIXTURES / "quote.json").read_bytes()))
    assert (quote["bid_price"], quote["bid_size"], quote["ask_price"], quote["ask_size"]) == ("760", "124", "770.0", "3252")
    assert normalized(wire.decode_server((FIXTURES / "ohlcv.json").read_bytes())) == []  # a 1-minute candle
    (ticker,) = normalized(wire.decode_server((FIXTURES / "ohlcv_1day.json").read_bytes()))
    assert (ticker["open"], ticker["high"], ticker["low"], ticker["volume"]) == ("0.3800", "0.39120", "0.37511", "981234.31419084")
    assert ticker["last"] is None and ticker["change"] is None and ticker["quote_volume"] is None
