"""Luzia's server side as a pure state machine (`server.ServerConnection`), shared by the emulator
and the gateway's endpoint: the upgrade's auth rules, every refusal and error in its wording, one
answer per channel, the subscription set and its limit, and the states. A Hypothesis state machine
drives it against a small reference model."""

from __future__ import annotations

import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from providers.common.errors import RequestError
from providers.luzia import server, wire
from providers.luzia.grammar import Channel, TierLimits, canonical_channel, parse_channel
from providers.luzia.server import Access, Close, HttpRefusal, ServerConnection, State, Terms

T0 = 1_706_004_800_000_000_000  # 2024-01-23T10:13:20Z
KNOWN = {("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("coinbase", "BTC/USD"), ("kraken", "BTC/USD")}


class Catalog:
    def __init__(self, available: bool = True, detail: str | None = None) -> None:
        self.available, self.detail = available, detail

    def has(self, channel: Channel) -> bool:
        if channel.symbol is None:
            return self.available and channel.exchange in {e for e, _ in KNOWN}
        return self.available and (channel.exchange, channel.symbol) in KNOWN


def _open(limits: TierLimits | None = None, catalog=None, tier="pro", **access) -> ServerConnection:
    limits = limits or TierLimits(5, 3)
    conn = ServerConnection(Terms(tier, limits), Access(lambda key: True, **access), catalog or Catalog())
    assert conn.upgrade("/v1/ws", "Bearer lz_abc") is None
    assert conn.open(connections=0).replies[0].limits == wire.Limits(maxSubscriptions=limits.subscriptions)
    return conn


def _answers(conn: ServerConnection, message) -> list[dict]:
    text = message if isinstance(message, str) else json.dumps(message)
    return [json.loads(wire.encode(m)) for m in conn.receive(text, T0).replies]


# ---- the upgrade and the opening ------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-luzia-key", "lz_x", "Basic lz_abc", "Bearer "])
def test_a_missing_or_malformed_key_is_refused_at_the_upgrade_with_401(authorization):
    conn = ServerConnection(Terms("pro", TierLimits(5, 50)), Access(lambda key: True), Catalog())
    assert conn.upgrade("/v1/ws", authorization) == HttpRefusal(401, "Missing or invalid API key")
    assert conn.state is State.CLOSED


def test_the_wrong_path_is_404_when_the_server_serves_one_path():
    conn = ServerConnection(Terms("pro", TierLimits(5, 50)), Access(lambda key: True, path="/v1/ws"), Catalog())
    assert conn.upgrade("/v2/ws", "Bearer lz_abc") == HttpRefusal(404, "Not found")
    other = ServerConnection(Terms("pro", TierLimits(5, 50)), Access(lambda key: True, path="/v1/ws"), Catalog())
    assert other.upgrade("/v1/ws?x=1", "Bearer lz_abc") is None  # the query is not the path


def test_without_required_keys_no_key_reaches_the_key_check_and_any_token_form_is_read():
    seen = []
    access = Access(lambda key: seen.append(key) or True, key_form=None, key_required=False)
    conn = ServerConnection(Terms("local", TierLimits(100, 500)), access, Catalog())
    assert conn.upgrade("/v1/ws", None) is None and conn.open(connections=0).close is None
    keyed = ServerConnection(Terms("local", TierLimits(100, 500)), access, Catalog())
    assert keyed.upgrade("/v1/ws", "bearer  secret-123 ") is None and keyed.key == "secret-123"
    keyed.open(connections=0)
    assert seen == [None, "secret-123"]


@pytest.mark.parametrize(
    ("key_ok", "limits", "open_already", "message"),
    [
        (False, TierLimits(5, 50), 0, "Invalid API key"),
        (True, TierLimits(0, 0), 0, "WebSocket access requires a Pro or Enterprise plan"),
        (True, TierLimits(2, 50), 2, "Connection limit exceeded (max 2 for pro tier)"),
    ],
)
def test_connection_rejected_is_an_error_then_a_close_1008(key_ok, limits, open_already, message):
    conn = ServerConnection(Terms("pro", limits), Access(lambda key: key_ok), Catalog())
    assert conn.upgrade("/v1/ws", "Bearer lz_abc") is None
    out = conn.open(connections=open_already)
    assert [json.loads(wire.encode(m)) for m in out.replies] == [{"type": "error", "code": "CONNECTION_REJECTED", "message": message}]
    assert out.close == Close(1008, "connection rejected") and conn.state is State.CLOSED
    assert conn.receive('{"type":"ping"}', T0).replies == []  # nothing follows the close


def test_connected_names_the_tier_and_the_announced_limit():
    conn = ServerConnection(Terms("pro", TierLimits(5, 2), announced=50), Access(lambda key: True), Catalog())
    conn.upgrade("/v1/ws", "Bearer lz_abc")
    out = conn.open(connections=4)
    assert json.loads(wire.encode(out.replies[0])) == {
        "type": "connected", "message": "Connected to Luzia WebSocket API", "tier": "pro", "limits": {"maxSubscriptions": 50},
    }
    assert conn.state is State.OPEN and out.close is None


def test_calls_out_of_order_are_our_bug():
    conn = _open()
    with pytest.raises(RuntimeError, match="is open, not idle"):
        conn.open(connections=0)


# ---- requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        ("{not json", "INVALID_JSON", "Invalid JSON"),
        (b"\xff", "INVALID_JSON", "Invalid JSON"),
        ("[1, 2]", "INVALID_REQUEST", "Missing required field: type"),
        ('{"channels": ["ticker:binance"]}', "INVALID_REQUEST", "Missing required field: type"),
        ('{"type": 7}', "INVALID_REQUEST", "Missing required field: type"),
        ('{"type": "subscribe"}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "subscribe", "channels": []}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "unsubscribe", "channels": "ticker:binance"}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "subscribe", "channels": [1]}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "hello"}', "UNKNOWN_TYPE", "Unknown message type: hello"),
    ],
)
def test_each_bad_message_earns_its_error_code(message, code, text):
    with pytest.raises(RequestError) as caught:
        server.parse_request(message)
    assert (caught.value.code, str(caught.value)) == (code, text)
    conn = _open()
    assert conn.receive(message, T0).replies == [wire.Error(code=code, message=text)]
    assert conn.state is State.OPEN  # the connection goes on


def test_requests_parse_into_luzias_own_structs():
    assert server.parse_request('{"type":"ping"}') == wire.Ping()
    assert server.parse_request(b'{"type":"subscribe","channels":["ticker:binance:BTC-USDT"],"extra":1}') == wire.Subscribe(
        channels=["ticker:binance:BTC-USDT"]
    )
    assert server.parse_request('{"type":"unsubscribe","channels":["x"]}') == wire.Unsubscribe(channels=["x"])


def test_ping_gets_pong_at_the_time_passed_in():
    assert _answers(_open(), {"type": "ping"}) == [{"type": "pong", "timestamp": "2024-01-23T10:13:20.000Z"}]
    assert _open().receive('{"type":"ping"}', T0 + 123_456_789).replies == [wire.Pong(timestamp="2024-01-23T10:13:20.123Z")]


def test_one_answer_per_channel_in_order_echoing_the_spelling_duplicates_counted_once():
    conn = _open(limits=TierLimits(5, 3))
    channels = ["ticker:binance:BTC/USDT", "ticker:binance:BTC-USDT", "nonsense", "ticker:coinbase",
                "ticker:kraken:BTC/USD", "ticker:binance:ETH/USDT", "ticker:binance:DOGE/USDT"]
    out = conn.receive(json.dumps({"type": "subscribe", "channels": channels}), T0)
    assert [json.loads(wire.encode(m)) for m in out.replies] == [
        {"type": "subscribed", "channel": "ticker:binance:BTC/USDT"},
        {"type": "subscribed", "channel": "ticker:binance:BTC-USDT"},  # the same channel: counted once
        {"type": "error", "code": "INVALID_CHANNEL", "message": "Invalid channel: nonsense"},
        {"type": "subscribed", "channel": "ticker:coinbase"},
        {"type": "subscribed", "channel": "ticker:kraken:BTC/USD"},
        {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": "Subscription limit exceeded (max 3 for pro tier)"},
        {"type": "error", "code": "INVALID_CHANNEL", "message": "Invalid channel: ticker:binance:DOGE/USDT"},
    ]
    assert [str(c) for c in out.added] == ["ticker:binance:BTC/USDT", "ticker:coinbase", "ticker:kraken:BTC/USD"]
    assert list(conn.channels) == [str(c) for c in out.added] and out.removed == []


def test_unsubscribe_answers_every_channel_and_removes_only_what_was_subscribed():
    conn = _open()
    conn.receive('{"type":"subscribe","channels":["ticker:kraken:BTC/USD"]}', T0)
    out = conn.receive('{"type":"unsubscribe","channels":["ticker:kraken:BTC-USD","ticker:coinbase:BTC/USD","x:y"]}', T0)
    assert [json.loads(wire.encode(m)) for m in out.replies] == [
        {"type": "unsubscribed", "channel": "ticker:kraken:BTC-USD"},
        {"type": "unsubscribed", "channel": "ticker:coinbase:BTC/USD"},  # never subscribed: still answered
        {"type": "error", "code": "INVALID_CHANNEL", "message": "Invalid channel: x:y"},
    ]
    assert out.removed == [Channel("kraken", "BTC/USD")] and not conn.channels


def test_a_catalog_without_the_channel_says_why_and_a_subscribed_channel_can_always_go():
    catalog = Catalog(detail="no provider serves tickers on this gateway")
    conn = _open(catalog=catalog)
    conn.receive('{"type":"subscribe","channels":["ticker:binance:BTC/USDT"]}', T0)
    catalog.available = False
    assert _answers(conn, {"type": "subscribe", "channels": ["ticker:binance:ETH/USDT"]}) == [{
        "type": "error", "code": "INVALID_CHANNEL",
        "message": "Invalid channel: ticker:binance:ETH/USDT (no provider serves tickers on this gateway)",
    }]
    assert _answers(conn, {"type": "unsubscribe", "channels": ["ticker:binance:BTC/USDT", "ticker:binance:ETH/USDT"]}) == [
        {"type": "unsubscribed", "channel": "ticker:binance:BTC/USDT"},
        {"type": "error", "code": "INVALID_CHANNEL",
         "message": "Invalid channel: ticker:binance:ETH/USDT (no provider serves tickers on this gateway)"},
    ]


def test_shutdown_says_server_shutdown_then_closes_going_away_and_releases_everything():
    conn = _open()
    conn.receive('{"type":"subscribe","channels":["ticker:coinbase","ticker:binance:BTC/USDT"]}', T0)
    out = conn.shutdown()
    assert out.replies == [wire.Error(code="SERVER_SHUTDOWN", message="Server is shutting down, reconnect shortly")]
    assert out.close == Close(1001, "server shutting down")
    assert [str(c) for c in out.removed] == ["ticker:coinbase", "ticker:binance:BTC/USDT"]
    assert conn.state is State.CLOSED and conn.shutdown().replies == []  # said once


def test_a_connection_that_went_away_releases_its_channels_and_answers_nothing():
    conn = _open()
    conn.receive('{"type":"subscribe","channels":["ticker:coinbase"]}', T0)
    assert conn.closed() == [Channel("coinbase", None)]
    assert conn.receive('{"type":"subscribe","channels":["ticker:kraken"]}', T0) == ([], [], [], None, None)


# ---- the state machine against a reference model ----------------------------------------------------

POOL = ["ticker:binance:BTC/USDT", "ticker:binance:btc-usdt", "ticker:Binance:ETH-USDT", "ticker:coinbase",
        "ticker:kraken:BTC/USD", "ticker:kraken", "ticker:binance:DOGE/USDT", "ticker:nowhere", "trade:binance",
        "ticker:", "", "ticker:okx:BTC/USDT",
        # no Unicode case mapping may make these ASCII channels: the Kelvin sign, ß, dotless ı
        "ticker:\u212araken", "ticker:binance:BTC-USDß", "ticker:bınance:BTC/USDT", "x" * 5000]
#: Frames no decoder may choke on: nesting past msgspec's recursion limit, invalid UTF-8, huge numbers.
HOSTILE = ["[" * 100_000, '{"type":"subscribe","channels":' + "[" * 50_000, b"\xff\xfe", '{"type":"ping","n":1E+100}',
           '{"type":"subscribe","channels":[' + "9" * 5000 + "]}", '{"type":"p\u0131ng"}']
REQUESTS = st.one_of(
    st.builds(lambda kind, chans: json.dumps({"type": kind, "channels": chans}),
              st.sampled_from(["subscribe", "unsubscribe"]), st.lists(st.sampled_from(POOL), min_size=1, max_size=6)),
    st.sampled_from(['{"type":"ping"}', "nope", '{"type":"hello"}', '{"type":"subscribe","channels":[]}', "[]"]),
    st.sampled_from(HOSTILE),
)


def _model_answer(model: dict, limit: int, kind: str, raw: str) -> tuple[dict, str | None, str | None]:
    """(the reply, a channel added, a channel removed) by the rules written out plainly."""
    try:
        name = canonical_channel(raw)
    except ValueError:
        return {"type": "error", "code": "INVALID_CHANNEL", "message": f"Invalid channel: {raw}"}, None, None
    exchange, symbol = parse_channel(name)
    known = (exchange, symbol) in KNOWN if symbol else exchange in {e for e, _ in KNOWN}
    if kind == "unsubscribe" and name in model:
        del model[name]
        return {"type": "unsubscribed", "channel": raw}, None, name
    if not known:
        return {"type": "error", "code": "INVALID_CHANNEL", "message": f"Invalid channel: {raw}"}, None, None
    if kind == "unsubscribe":
        return {"type": "unsubscribed", "channel": raw}, None, None
    if name in model:
        return {"type": "subscribed", "channel": raw}, None, None
    if len(model) >= limit:
        message = f"Subscription limit exceeded (max {limit} for pro tier)"
        return {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": message}, None, None
    model[name] = None
    return {"type": "subscribed", "channel": raw}, name, None


class ServerMachine(RuleBasedStateMachine):
    @initialize(limit=st.integers(1, 4))
    def start(self, limit: int) -> None:
        self.limit = limit
        self.conn = _open(limits=TierLimits(5, limit))
        self.model: dict[str, None] = {}
        self.open = True

    @rule(text=REQUESTS, now=st.integers(0, 2**62))
    def receive(self, text: str, now: int) -> None:
        out = self.conn.receive(text, now)
        if not self.open:
            assert out == ([], [], [], None, None)  # CLOSED: nothing may follow the close
            return
        replies = [json.loads(wire.encode(m)) for m in out.replies]
        try:
            request = server.parse_request(text)
        except RequestError as exc:
            error = {"type": "error", "code": exc.code, "message": str(exc)}
        else:
            error = None
        if error is not None:
            assert replies == [error]
            return
        if type(request) is wire.Ping:
            assert [r["type"] for r in replies] == ["pong"] and not (out.added or out.removed)
            return
        kind = "subscribe" if type(request) is wire.Subscribe else "unsubscribe"
        expected = [_model_answer(self.model, self.limit, kind, raw) for raw in request.channels]
        assert replies == [reply for reply, _, _ in expected]  # one answer per channel, in order
        assert [str(c) for c in out.added] == [a for _, a, _ in expected if a]
        assert [str(c) for c in out.removed] == [r for _, _, r in expected if r]

    @precondition(lambda self: self.open)
    @rule(planned=st.booleans())
    def end(self, planned: bool) -> None:
        released = self.conn.shutdown().removed if planned else self.conn.closed()
        assert [str(c) for c in released] == list(self.model)
        self.model.clear()
        self.open = False

    @invariant()
    def the_subscription_set_is_the_models(self) -> None:
        assert list(self.conn.channels) == list(self.model)
        assert len(self.conn.channels) <= self.limit
        assert self.conn.state is (State.OPEN if self.open else State.CLOSED)


ServerMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30)
TestServerStateMachine = ServerMachine.TestCase
