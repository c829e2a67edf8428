"""Golden frames: every server message type, as Luzia documents it, through the production decoder
and normalizer, compared with the expected result stored next to it (`X.json` + `X.expected.json`)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from providers.common.market import DEFAULT_INSTRUMENTS, Market
from providers.luzia import normalize, server, wire
from providers.luzia.feed import ticker_message
from providers.luzia.grammar import TIER_LIMITS
from schemas import json_encoder

FIXTURES = Path(__file__).parents[2] / "fixtures" / "luzia"
_exact_decoder = msgspec.json.Decoder(float_hook=Decimal)
FRAMES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))


def _exact(data: bytes | str):
    """JSON with every non-integer number as an exact Decimal."""
    return _exact_decoder.decode(data)


def _events(message, provider: str, ts_gateway: int) -> list:
    if type(message) is not wire.Ticker:
        return []  # control messages are session business, not market events
    events = [
        normalize.ticker_event(message, provider=provider, ts_gateway=ts_gateway),
        normalize.quote_event(message, provider=provider, ts_gateway=ts_gateway),
    ]
    return [e for e in events if e is not None]


def test_every_server_message_type_has_a_golden_frame():
    types = {msgspec.json.decode(p.read_bytes())["type"] for p in FRAMES}
    assert types == wire.SERVER_TYPES


@pytest.mark.parametrize("frame_path", FRAMES, ids=lambda p: p.stem)
def test_golden_frame(frame_path: Path):
    expected = _exact(frame_path.with_suffix(".expected.json").read_bytes())
    message = wire.decode_server(frame_path.read_bytes())
    assert _exact(wire.encode(message)) == expected["wire"]
    events = _events(message, expected["provider"], expected["ts_gateway"])
    assert [msgspec.json.decode(json_encoder.encode(e)) for e in events] == expected["events"]


def test_the_server_says_connected_exactly_as_the_docs_show():
    """What the emulator (and the gateway's endpoint, with its own tier) sends on `open`."""
    frame = wire.encode(server.connected(server.Terms("pro", TIER_LIMITS["pro"])))
    assert frame == (FIXTURES / "connected.json").read_text().strip()


def test_the_emulators_ticker_has_luzias_shape_and_key_order():
    golden = msgspec.json.decode((FIXTURES / "ticker.json").read_bytes())
    tick = Market(seed=3).step(DEFAULT_INSTRUMENTS[0], 1706004800000000000)
    ours = msgspec.json.decode(wire.encode(ticker_message(tick, 1706004800050000000)))
    assert list(ours) == list(golden)
    assert list(ours["data"]) == list(golden["data"])
    assert ours["data"]["timestamp"] == "2024-01-23T10:13:20.000Z"
    assert ours["timestamp"] == "2024-01-23T10:13:20.050Z"
    numbers = {k: v for k, v in ours["data"].items() if k not in ("symbol", "exchange", "timestamp")}
    assert all(isinstance(v, (int, float)) for v in numbers.values())  # JSON numbers, as Luzia sends
