"""Luzia's REST paths against hostile requests, without sockets: non-ASCII ids and digits, too many
symbols, and the gateway-wide stream cap answer with Luzia's error body and status (400, 429),
never a traceback, and leave no hold behind."""

from __future__ import annotations

import json

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse
from gateway.context import GatewayContext
from gateway.dialects.luzia import LuziaEndpoint
from gateway.dialects.luzia_rest import MAX_LIMIT, MAX_SYMBOLS, BadRequest, parse_exchange, parse_page, parse_symbol
from gateway.hub import Hub
from gateway.server import HttpRequest
from schemas.streams import StreamKey
from tests.gateway.fakes import FakeAdapter

CONFIG = """
[endpoints.luzia]
rest_wait_seconds = 1.0
[limits]
max_streams = {max_streams}
[providers.lz]
kind = "luzia"
emulate = true
[routes]
ticker = ["lz"]
"""


def _endpoint(max_streams=100):
    config = parse(CONFIG.format(max_streams=max_streams))
    hub = Hub(config.routes)
    adapter = FakeAdapter("lz", {"ticker"})
    hub.add_source(adapter)
    return LuziaEndpoint(GatewayContext(config, hub, None)), adapter


async def _get(endpoint, path: str, query: dict[str, str] | None = None):
    response = await endpoint.http(HttpRequest("GET", path, query or {}, {}))
    assert response is not None
    return response.status, json.loads(response.body)


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/v1/ticker/\u212araken/BTC-USD", {}, "exchange"),  # the Kelvin sign is no `k`
        ("/v1/ticker/binance/BTC-USDß", {}, "symbol"),
        ("/v1/ticker/binance/ＢＴＣ-USDT", {}, "symbol"),
        ("/v1/tickers/b\u0131nance", {}, "exchange"),
        ("/v1/tickers/binance", {"limit": "١٢"}, "limit"),  # int() would read 12
        ("/v1/tickers/binance", {"offset": "１"}, "offset"),
        ("/v1/tickers/binance", {"limit": "9" * 5000}, "limit"),
        ("/v1/tickers", {"exchange": "binance", "symbols": "BTC-USDT,ETH-U\u212a"}, "symbol"),
    ],
)
async def test_non_ascii_ids_and_digits_are_400_with_luzias_body_and_hold_nothing(path, query, field, autojump_clock):
    endpoint, adapter = _endpoint()
    status, body = await _get(endpoint, path, query)
    assert status == 400 and body["error"] == "Bad Request" and field in body["details"]
    assert len(body["message"]) < 100  # the echo is bounded
    assert adapter.wanted == frozenset() and endpoint.ctx.hub.demand_count() == 0


async def test_too_many_symbols_in_one_call_is_400(autojump_clock):
    endpoint, adapter = _endpoint()
    symbols = ",".join(f"A{i}-USDT" for i in range(MAX_SYMBOLS + 1))
    status, body = await _get(endpoint, "/v1/tickers", {"exchange": "binance", "symbols": symbols})
    assert (status, body["message"]) == (400, f"Too many symbols (max {MAX_SYMBOLS})")
    assert adapter.wanted == frozenset()


async def test_a_watch_past_the_gateways_stream_cap_is_429_and_what_is_held_stays(autojump_clock):
    endpoint, adapter = _endpoint(max_streams=1)
    start = trio.current_time()
    status, _ = await _get(endpoint, "/v1/ticker/binance/BTC-USDT")
    assert status == 404 and trio.current_time() - start == 1.0  # waited rest_wait_seconds for a first value
    status, body = await _get(endpoint, "/v1/ticker/kraken/BTC-USD")
    assert status == 429 and body["details"]["retryAfter"] == "59"
    assert adapter.wanted == {StreamKey("ticker", "binance", "BTC/USDT")}


query_text = st.text(max_size=30) | st.sampled_from(["١٢", "１２", "9" * 5000, " 7 ", "-1", "0", "50", "51", "\u212a"])


def _outcome(parser, *args):
    """What `parser` returned, or the BadRequest it raised (anything else propagates: a failure)."""
    try:
        return parser(*args)
    except BadRequest as exc:
        return exc


@given(st.dictionaries(st.sampled_from(["limit", "offset", "exchange", "symbols", "x"]), query_text, max_size=4))
def test_any_page_query_is_a_page_or_a_400(query):
    result = _outcome(parse_page, query)
    if isinstance(result, BadRequest):
        assert set(result.details) <= {"limit", "offset"} and len(str(result)) < 100
    else:
        limit, offset = result
        assert 1 <= limit <= MAX_LIMIT and offset >= 0


@given(query_text, query_text)
def test_any_path_segment_is_a_canonical_ascii_id_or_a_400(exchange, symbol):
    for parser, text in ((parse_exchange, exchange), (parse_symbol, symbol)):
        result = _outcome(parser, text)
        if isinstance(result, BadRequest):
            assert len(str(result)) < 100
        else:
            assert result.isascii() and result == result.strip()
