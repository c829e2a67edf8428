"""Whatever a client sends, every endpoint answers with a request it accepts or its protocol's own
error, never an exception: generated JSON trees (deep nesting, extreme numbers, odd strings) and
hand-built pathological frames, over each client-side parser and each session shell (native JSON
and MessagePack, Luzia `/v1/ws`, CoinAPI-compatible), and a decoder that breaks its contract.
"""

from __future__ import annotations

import json
import logging

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.context import GatewayContext
from gateway.dialects import native
from gateway.dialects.native import CODECS, NativeSession, RequestError
from gateway.hub import Hub
from gateway.outbox import Outbox
from providers.coinapi import server as coinapi_server
from providers.coinapi import wire as coinapi_wire
from providers.common.errors import RequestError as ProtocolRequestError
from providers.luzia import server as luzia_server
from providers.luzia import wire as luzia_wire
from tests.gateway.coinapi_support import make_session, messages
from tests.gateway.fakes import FakeAdapter
from tests.gateway.test_luzia_codec import FakePeer, Request, _endpoint
from tests.gateway.test_native_dialect import native_config
from tests.support.frames import payloads

# ----- generated input ------------------------------------------------------------------------


class Raw(str):
    """A JSON token written as it is (numbers no encoder would write: NaN, 1E+100, 5000 digits)."""


ODD_STRINGS = [
    "NaN", "Infinity", "-Infinity", "1E+100", "1e-400", "9" * 5000, "\u212aRAKEN", "ticker:binance:\u212a-USDT",
    "trade:binance:BTC/USDß", "ticker:bınance", "ＢＴＣ", "١٢", "\u0000", "\ufeff", "trade:binance:BTC/USDT",
    "ticker:binance:BTC-USDT", "trade:*", "quote:kraken", "BINANCE_SPOT_BTC_USDT", "BITSTAMP_", "$", "x" * 3000,
]
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1E+100", "1e999", "-0", "9" * 5000, "1" + "0" * 400, "1.5e-400"]
KEYS = ["type", "channels", "subscribe_data_type", "subscribe_filter_symbol_id", "subscribe_filter_exchange_id",
        "subscribe_filter_asset_id", "subscribe_update_limit_ms_quote", "heartbeat", "apikey"]
TYPES = ["subscribe", "unsubscribe", "ping", "hello", "SUBSCRIBE", "pıng", "", "error"]

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**64) | st.floats(allow_nan=False)
    | st.sampled_from(ODD_STRINGS) | st.text(max_size=20) | st.sampled_from(RAW_NUMBERS).map(Raw)
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)
requests = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | trees},
    optional={key: trees | st.lists(st.sampled_from(ODD_STRINGS), max_size=5) for key in KEYS[1:]},
)
messages_st = requests | trees


def to_json(tree: object) -> str:
    """JSON text of `tree`, `Raw` tokens as they are (json.dumps would quote them)."""
    if isinstance(tree, Raw):
        return str(tree)
    if isinstance(tree, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, list):
        return "[" + ",".join(to_json(v) for v in tree) + "]"
    return json.dumps(tree)


#: Frames no generator stumbles on: nesting far past msgspec's recursion limit, invalid UTF-8,
#: binary garbage, truncations, a frame that is one huge string or number.
PATHOLOGICAL: list[str | bytes] = [
    "[" * 100_000,
    "{" * 100_000,
    '{"type":"subscribe","channels":' + "[" * 100_000,
    '{"type":"ping","x":' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    b"\xff\xfe\xfd",
    b'{"type":"subscribe","channels":["\xc3\x28"]}',  # invalid UTF-8 inside a string
    b"\x91" * 100_000,  # MessagePack arrays nested 100,000 deep
    b"\x81\xa4type\xc4\x04ping",  # MessagePack: type is bytes, not text
    b"\xc1",
    "",
    "\ufeff{}",
    '{"type":"subscribe","channels":["' + "a" * 60_000 + '"]}',
    '{"type":"subscribe","channels":[' + "9" * 60_000 + "]}",
    '{"type":"subscribe","channels":[' + ",".join(['"trade:a"'] * 5000) + "]}",
    '{"type":"ping"}x',
    '{"type":"ping","type":"subscribe"}',
    '{"type":"hello","subscribe_data_type":["trade"],"subscribe_filter_symbol_id":["BITSTAMP_SPOT_BTC_U\u00df"]}',
    '{"type":"hello","subscribe_data_type":["trade"],"subscribe_update_limit_ms_quote":1E+100}',
    '{"type":"hello","subscribe_data_type":["trade"],"subscribe_update_limit_ms_quote":' + "9" * 5000 + "}",
    '{"type":"hello","subscribe_data_type":["trade"],"subscribe_filter_exchange_id":[' + "[" * 10_000 + "]}",
]


def examples(test):
    for frame in PATHOLOGICAL:
        test = example(frame)(test)
    return test


message_frames = messages_st.map(to_json) | messages_st.map(lambda t: to_json(t).encode()) | st.binary(max_size=64)


# ----- the pure parsers ----------------------------------------------------------------------


def outcome(parse, *args, **kwargs) -> object:
    """What `parse` returned, or the RequestError it raised (anything else propagates: a failure)."""
    try:
        return parse(*args, **kwargs)
    except (RequestError, ProtocolRequestError) as exc:
        return exc


@examples
@given(message_frames)
def test_the_native_parser_accepts_a_request_or_names_its_error_code(frame):
    for msgpack in (False, True):
        result = outcome(native.parse_request, frame, msgpack=msgpack)
        if isinstance(result, RequestError):
            assert result.code in {"INVALID_JSON", "INVALID_REQUEST", "UNKNOWN_TYPE"}
            assert result.fault is None  # msgspec kept its contract
        else:
            assert isinstance(result, (native.Subscribe, native.Unsubscribe, native.Ping))


@given(messages_st)
def test_the_native_parser_reads_msgpack_trees_the_same_way(tree):
    packed = msgspec.msgpack.encode(_msgpack_safe(tree))
    result = outcome(native.parse_request, packed, msgpack=True)
    if isinstance(result, RequestError):
        assert result.code in {"INVALID_JSON", "INVALID_REQUEST", "UNKNOWN_TYPE"}
    else:
        assert isinstance(result, (native.Subscribe, native.Unsubscribe, native.Ping))


def _msgpack_safe(tree: object) -> object:
    if isinstance(tree, Raw) or (isinstance(tree, int) and not -(2**63) <= tree < 2**64):
        return str(tree)
    if isinstance(tree, dict):
        return {k: _msgpack_safe(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_msgpack_safe(v) for v in tree]
    return tree


@examples
@given(message_frames)
def test_the_luzia_parser_accepts_a_request_or_names_a_luzia_code(frame):
    result = outcome(luzia_server.parse_request, frame)
    if isinstance(result, ProtocolRequestError):
        assert result.code in luzia_wire.ERROR_CODES
    else:
        assert isinstance(result, (luzia_wire.Subscribe, luzia_wire.Unsubscribe, luzia_wire.Ping))


@examples
@given(message_frames)
def test_the_coinapi_server_accepts_a_request_or_refuses_it_with_one_error(frame):
    connection = coinapi_server.ServerConnection(coinapi_server.Rules(key_check=lambda *_: True), None, now=0.0)
    outcome = connection.receive(frame, 0.0)
    if isinstance(outcome, coinapi_server.Refused):
        assert isinstance(outcome.error, coinapi_wire.Error) and outcome.error.message
        assert outcome.fault is None
        assert connection.receive(frame, 0.0) is None  # terminal: nothing more is answered
    else:
        assert isinstance(outcome, coinapi_server.Accepted)
        assert all(item.isascii() for f in outcome.scope.filters.values() for item in f.symbol_ids | f.exchange_ids)


# ----- the session shells: never an exception, only the protocol's answer ---------------------


def _native(fmt="json"):
    hub = Hub({"trade": ["ca"]})
    hub.add_source(FakeAdapter("ca", {"trade"}))
    ctx = GatewayContext(native_config(limits="message_burst = 100000"), hub, None)
    return NativeSession(ctx, Outbox(limit=100), CODECS[fmt], clock=lambda: 0.0, clock_ns=lambda: 1)


def _native_replies(session) -> list[dict]:
    frames, _ = session.outbox.take()
    decode = msgspec.msgpack.decode if session.codec.msgpack else json.loads  # not msgspec.json: patched below
    return [decode(p) for p in payloads(frames)]


@examples
@given(message_frames)
def test_a_native_session_answers_everything_with_replies_of_its_protocol(frame):
    for fmt in ("json", "msgpack"):
        session = _native(fmt)
        session.on_message(frame)
        replies = _native_replies(session)
        request = outcome(native.parse_request, frame, msgpack=fmt == "msgpack")
        if not (isinstance(request, (native.Subscribe, native.Unsubscribe)) and not request.channels):
            assert replies, "every message is answered (but an empty channel list asks for nothing)"
        for reply in replies:
            assert reply["type"] in {"subscribed", "unsubscribed", "pong", "error"}
        session.on_close()
        assert session.hub.demand_count() == 0


@examples
@given(message_frames)
def test_a_luzia_session_answers_everything_in_luzias_words(frame):
    endpoint, _ = _endpoint(max_connections=5)
    peer = FakePeer()
    session = endpoint.open_session(peer, Request({}))
    peer.sent()  # connected
    session.on_message(frame)
    for reply in peer.sent():
        assert reply["type"] in {"subscribed", "unsubscribed", "pong", "error"}
        if reply["type"] == "error":
            assert reply["code"] in luzia_wire.ERROR_CODES
    assert peer.closed is None  # Luzia's errors are answers, not the end
    session.on_close()
    assert endpoint.ctx.hub.demand_count() == 0


@examples
@given(message_frames)
def test_a_coinapi_session_subscribes_or_sends_error_then_closes(frame):
    session = make_session()
    session.on_message(frame)
    out = messages(session)
    if out:  # CoinAPI acknowledges nothing: the only thing it may say here is its terminal error
        assert [m["type"] if isinstance(m, dict) else m[0] for m in out] == ["error", "close"]
        assert session.hub.demand_count() == 0
    session.on_close()
    assert session.hub.demand_count() == 0


# ----- defence in depth: a decoder that breaks its contract ----------------------------------


class _Broken:
    """A decoder raising what its contract never allows."""

    def decode(self, data):
        raise TypeError("decoder bug")


def test_a_native_decoder_fault_is_invalid_json_counted_and_logged_once_without_traceback(monkeypatch, caplog):
    session = _native()
    monkeypatch.setattr(native.msgspec.json, "decode", _Broken().decode)
    with caplog.at_level(logging.WARNING):
        session.on_message('{"type":"ping"}')
    (reply,) = _native_replies(session)
    assert (reply["code"], reply["message"]) == ("INVALID_JSON", "message is not valid JSON")
    assert (session.ctx.counters.decoder_faults, session.ctx.counters.malformed) == (1, 1)
    (record,) = caplog.records
    assert "TypeError" in record.getMessage() and record.exc_info is None


def test_a_luzia_decoder_fault_is_invalid_json_counted_and_logged_once(monkeypatch, caplog):
    endpoint, _ = _endpoint()
    peer = FakePeer()
    session = endpoint.open_session(peer, Request({}))
    peer.sent()
    monkeypatch.setattr(luzia_server.wire, "decode_client", _Broken().decode)
    with caplog.at_level(logging.WARNING):
        session.on_message('{"type":"ping"}')
    assert peer.sent() == [{"type": "error", "code": "INVALID_JSON", "message": "Invalid JSON"}]
    assert endpoint.ctx.counters.decoder_faults == 1
    (record,) = caplog.records
    assert "TypeError" in record.getMessage() and record.exc_info is None


def test_a_coinapi_decoder_fault_is_the_malformed_message_error_then_the_close(monkeypatch, caplog):
    session = make_session()
    monkeypatch.setattr(coinapi_wire, "decode_client", _Broken().decode)
    with caplog.at_level(logging.WARNING):
        session.on_message('{"type":"hello","subscribe_data_type":["trade"]}')
    assert messages(session) == [{"type": "error", "message": coinapi_server.INVALID_MESSAGE}, ("close", 1008)]
    assert session.ctx.counters.decoder_faults == 1
    (record,) = caplog.records
    assert "TypeError" in record.getMessage() and record.exc_info is None


@pytest.mark.parametrize("frame", ["[" * 100_000, b"\xff\xfe", b"\x91" * 100_000])
def test_pathological_frames_are_counted_as_malformed(frame):
    session = _native("msgpack" if frame.startswith(b"\x91") else "json") if isinstance(frame, bytes) else _native()
    session.on_message(frame)
    (reply,) = _native_replies(session)
    assert reply["code"] == "INVALID_JSON" and session.ctx.counters.malformed == 1
