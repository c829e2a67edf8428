"""The CoinAPI server side as a pure state machine: key sources, the two auth rules, validation
texts, the scope's hello/subscribe/unsubscribe semantics, update limits, heartbeats, the
`reconnect` notice, error-then-close, the hello rate limit and sequence numbers; and a Hypothesis
state machine driving `ServerConnection` against a plainly written model of the protocol."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from providers.coinapi import server, wire
from providers.coinapi.server import (
    DATA_TYPE_REQUIRED,
    INVALID_API_KEY,
    INVALID_MESSAGE,
    Accepted,
    HelloLimiter,
    Refused,
    Rules,
    Scope,
    Sequencer,
    ServerConnection,
    State,
    any_given_key,
    every_given_key,
    serves_path,
    upgrade_key,
    validate,
)
from tests.providers.coinapi.test_grammar import reference_matches

GUID = "73034021-0000-0000-0000-000000000000"


# ---------------------------------------------------------------------------- the upgrade request


def test_every_place_a_key_can_come_from() -> None:
    def key(path="/v1/", query=None, headers=None):
        return upgrade_key(path, query or {}, headers or {})

    assert key(f"/APIKEY-{GUID}") == (GUID, "path")
    assert key(f"/v1/APIKEY-{GUID}/") == (GUID, "path")
    assert key(headers={"x-coinapi-key": GUID}) == (GUID, "header")
    assert key(headers={"authorization": GUID}) == (GUID, "authorization")
    assert key(headers={"authorization": f"Bearer {GUID}"}) == (GUID, "authorization")
    assert key(query={"apikey": GUID}) == (GUID, "query")
    assert key(headers={"x-coinapi-key": "h", "authorization": "a"}, query={"apikey": "q"}) == ("h", "header")  # the first
    assert key() is None and key("/APIKEY-") is None and key(headers={"authorization": "Bearer "}) is None
    assert all(serves_path(p) for p in ("/", "/v1", "/v1/", f"/APIKEY-{GUID}", f"/v1/APIKEY-{GUID}"))
    assert not any(serves_path(p) for p in ("/stream", "/v1/ws", "/v2/", "/favicon.ico"))


def test_the_two_auth_rules() -> None:
    every = every_given_key(lambda key: key == GUID)
    assert every(GUID, None) and every(None, GUID) and every(GUID, GUID)
    assert not every(None, None) and not every(GUID, "wrong") and not every("wrong", GUID)
    anyone = any_given_key(lambda key: key == GUID)
    assert anyone(GUID, "YOUR_API_KEY") and anyone("wrong", GUID)
    assert not anyone(None, None) and not anyone("wrong", "also wrong")
    open_door = any_given_key(lambda key: True)  # no local keys configured
    assert open_door(None, None) and open_door("anything", None)


# ---------------------------------------------------------------------------- the scope


def _scope(*messages: wire.ClientMessage) -> Scope:
    scope = Scope()
    for message in messages:
        scope = scope.apply(message)
    return scope


def test_hello_replaces_subscribe_adds_unsubscribe_removes() -> None:
    scope = _scope(
        wire.Subscribe(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["A_SPOT_X_Y$"]),  # may come first
        wire.Subscribe(subscribe_data_type=["trade", "quote"], subscribe_filter_symbol_id=["B_SPOT_X_Y$"]),
    )
    assert scope.wants("trade", "A_SPOT_X_Y") and scope.wants("trade", "B_SPOT_X_Y")
    assert scope.wants("quote", "B_SPOT_X_Y") and not scope.wants("quote", "A_SPOT_X_Y")
    scope = scope.apply(wire.Unsubscribe(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["A_SPOT_X_Y$"]))
    assert not scope.wants("trade", "A_SPOT_X_Y") and scope.wants("trade", "B_SPOT_X_Y")
    scope = scope.apply(wire.Unsubscribe(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["B_SPOT_X_Y$"]))
    assert scope.data_types == {"quote"}  # emptied, not widened to "everything"
    scope = scope.apply(wire.Hello(subscribe_data_type=["ohlcv"], subscribe_filter_period_id=["1day"]))
    assert scope.data_types == {"ohlcv"} and scope.wants("ohlcv", "ANY_SPOT_X_Y")
    assert scope.wants_period("1DAY") and not scope.wants_period("1MIN")


def test_heartbeat_is_set_by_hello_and_switched_on_by_subscribe() -> None:
    assert not _scope(wire.Hello(subscribe_data_type=["trade"])).heartbeat
    assert _scope(wire.Hello(subscribe_data_type=["trade"]), wire.Subscribe(heartbeat=True, subscribe_data_type=["quote"])).heartbeat
    assert not _scope(wire.Hello(heartbeat=True, subscribe_data_type=["trade"]), wire.Hello(subscribe_data_type=["trade"])).heartbeat


def test_request_validation_texts() -> None:
    assert validate(wire.Hello()) == DATA_TYPE_REQUIRED == "Parameter subscribe_data_type is required."
    assert validate(wire.Hello(subscribe_data_type=[])) == DATA_TYPE_REQUIRED
    assert validate(wire.Hello(subscribe_data_type=["trade", "trades"])) == (
        "Parameter subscribe_data_type contains an unknown data type: trades."
    )
    assert validate(wire.Subscribe(subscribe_data_type=["book20", "ohlcv", "exrate"])) is None


# ---------------------------------------------------------------------------- one connection

OPEN_DOOR = Rules(key_check=any_given_key(lambda key: True))


def _request(kind: str = "hello", **fields: object) -> str:
    return json.dumps({"type": kind, **fields})


def test_an_error_is_terminal() -> None:
    connection = ServerConnection(OPEN_DOOR, None, now=0.0)
    assert connection.state is State.AWAITING_FIRST and connection.heartbeat_at() == math.inf
    outcome = connection.receive('{"type":"hello"', now=1.0)
    assert outcome == Refused(wire.Error(message=INVALID_MESSAGE))
    assert connection.state is State.CLOSING and connection.due(1.0)
    assert connection.receive(_request(subscribe_data_type=["trade"]), now=2.0) is None  # nothing after an error
    assert connection.scope == Scope()


def test_the_key_is_checked_on_the_first_message_only() -> None:
    rules = Rules(key_check=every_given_key(lambda key: key == GUID))
    refused = ServerConnection(rules, "wrong", now=0.0).receive(_request(apikey=GUID, subscribe_data_type=["trade"]), 0.0)
    assert isinstance(refused, Refused) and refused.error.message == INVALID_API_KEY
    assert refused.request == wire.Hello(apikey=GUID, subscribe_data_type=["trade"])
    connection = ServerConnection(rules, GUID, now=0.0)
    assert isinstance(connection.receive(_request(subscribe_data_type=["trade"]), 0.0), Accepted)
    assert isinstance(connection.receive(_request(apikey="wrong", subscribe_data_type=["quote"]), 1.0), Accepted)


def test_a_shell_may_refuse_a_data_type_it_cannot_serve() -> None:
    rules = Rules(key_check=OPEN_DOOR.key_check, available=lambda t: None if t == "trade" else f"no {t} here")
    connection = ServerConnection(rules, None, now=0.0)
    outcome = connection.receive(_request(subscribe_data_type=["trade", "ohlcv"]), 0.0)
    assert isinstance(outcome, Refused) and outcome.error.message == "no ohlcv here"
    unsubscribing = ServerConnection(rules, None, now=0.0)  # removing is never refused for that
    assert isinstance(unsubscribing.receive(_request("unsubscribe", subscribe_data_type=["ohlcv"]), 0.0), Accepted)


def test_heartbeats_are_due_a_second_after_the_last_frame() -> None:
    connection = ServerConnection(OPEN_DOOR, None, now=0.0)
    connection.receive(_request(subscribe_data_type=["trade"]), 2.5)
    assert connection.heartbeat_at() == math.inf  # not asked for
    connection.receive(_request("subscribe", heartbeat=True, subscribe_data_type=["trade"]), 3.0)
    assert connection.heartbeat_at() == 4.0  # silence counts from the request
    assert connection.heartbeat(3.9) is None
    assert connection.heartbeat(4.0) == wire.Hearbeat() and connection.heartbeat_at() == 5.0
    connection.sent(4.5)
    assert connection.heartbeat_at() == 5.5
    connection.receive(_request("subscribe", heartbeat=True, subscribe_data_type=["quote"]), 5.0)  # already on
    assert connection.heartbeat_at() == 5.5
    connection.receive(_request(subscribe_data_type=["trade"]), 5.2)  # a hello without it: off
    assert connection.heartbeat_at() == math.inf


def test_update_limits_hello_sets_or_clears_subscribe_sets_what_it_names() -> None:
    connection = ServerConnection(OPEN_DOOR, None, now=0.0)
    first = connection.receive(_request(subscribe_data_type=["quote"], subscribe_update_limit_ms_quote=250), 0.0)
    assert isinstance(first, Accepted) and first.limits_changed == {"quote"} and connection.limits == {"quote": 0.25}
    kept = connection.receive(_request("subscribe", subscribe_data_type=["book5"], subscribe_update_limit_ms_book_snapshot=1000), 0.0)
    assert isinstance(kept, Accepted) and kept.limits_changed == {"book_snapshot"}
    assert connection.limits == {"quote": 0.25, "book_snapshot": 1.0}
    same = connection.receive(_request("unsubscribe", subscribe_data_type=["book5"], subscribe_update_limit_ms_quote=9), 0.0)
    assert isinstance(same, Accepted) and same.limits_changed == frozenset()
    cleared = connection.receive(_request(subscribe_data_type=["quote"], subscribe_update_limit_ms_quote=0), 0.0)
    assert isinstance(cleared, Accepted) and cleared.limits_changed == {"quote", "book_snapshot"}
    assert connection.limits == {}


def test_a_reconnect_notice_closes_after_its_seconds() -> None:
    connection = ServerConnection(OPEN_DOOR, None, now=0.0)
    connection.receive(_request(subscribe_data_type=["trade"]), 0.0)
    notice = connection.notice(0.5, 1_596_741_539_703_542_900, 3)
    assert notice == wire.Reconnect(within_seconds=3, before_time="2020-08-06T19:19:02.7035429Z")
    assert connection.state is State.OPEN and not connection.due(3.4) and connection.due(3.5)
    assert connection.state is State.CLOSING


def test_the_hello_rate_limit_is_optional_and_counts_no_unsubscribe() -> None:
    limited = ServerConnection(Rules(key_check=OPEN_DOOR.key_check, limiter=HelloLimiter()), None, now=0.0)
    for _ in range(10):
        assert isinstance(limited.receive(_request(subscribe_data_type=["trade"]), 0.0), Accepted)
    assert isinstance(limited.receive(_request("unsubscribe", subscribe_data_type=["trade"]), 0.0), Accepted)
    refused = limited.receive(_request("subscribe", subscribe_data_type=["trade"]), 9.9)
    assert isinstance(refused, Refused)
    assert refused.error.message == "Too many hello/subscribe messages: at most 10 per 10 seconds."
    free = ServerConnection(OPEN_DOOR, None, now=0.0)
    assert all(isinstance(free.receive(_request(subscribe_data_type=["trade"]), 0.0), Accepted) for _ in range(50))


@given(st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), min_size=1, max_size=40), st.integers(1, 5))
def test_a_sender_that_waits_for_the_limiter_never_exceeds_it(wishes: list[float], limit: int) -> None:
    """A sender that asks at `wishes` times and waits as told; the server (same rule, same window)
    accepts every message, and no window holds more than `limit`."""
    sender, receiver = HelloLimiter(limit, 10.0), HelloLimiter(limit, 10.0)
    now, sent = 0.0, []
    for wish in sorted(wishes):
        now = max(now, wish)
        while (delay := sender.delay(now)) > 0:
            now += delay
        sender.record(now)
        sent.append(now)
        assert receiver.allow(now)
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 10.0) <= limit


def test_limiter_refuses_the_eleventh_message_until_the_first_leaves_the_window() -> None:
    limiter = HelloLimiter()
    assert all(limiter.allow(float(i)) for i in range(10))
    assert not limiter.allow(9.5) and limiter.delay(9.5) == 0.5
    assert limiter.allow(10.0)


@given(st.lists(st.tuples(st.sampled_from(["trade", "quote"]), st.sampled_from(["A", "B", "C"])), max_size=60))
def test_sequences_count_per_type_and_symbol(calls: list[tuple[str, str]]) -> None:
    sequencer, seen = Sequencer(), {}
    for kind, symbol_id in calls:
        seen[(kind, symbol_id)] = seen.get((kind, symbol_id), 0) + 1
        assert sequencer.next(kind, symbol_id) == seen[(kind, symbol_id)]


def test_a_sequencer_forgets_its_oldest_stream_beyond_its_bound() -> None:
    sequencer = Sequencer(limit=2)
    assert [sequencer.next("trade", s) for s in "AAB"] == [1, 2, 1]
    assert sequencer.next("trade", "C") == 1  # A is forgotten ...
    assert sequencer.next("trade", "A") == 1 and sequencer.next("trade", "C") == 2


# ---------------------------------------------------------------------------- the state machine

REFUSED_TYPE = "ohlcv"  # what the gateway-like rules cannot serve
RATE = 3  # hello/subscribe per 10 s in the emulator-like rules: small, so that runs reach it
# Mostly requests a server accepts, so that runs get far; now and then one it must refuse.
valid_types = st.lists(st.sampled_from(["trade", "quote", "book5"]), min_size=1, max_size=3)
odd_types = st.lists(st.sampled_from(["trade", REFUSED_TYPE, "candles"]), max_size=2)
requests = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["hello", "subscribe", "subscribe", "unsubscribe"]),
        "subscribe_data_type": st.integers(0, 9).flatmap(lambda n: odd_types if n == 0 else valid_types),
    },
    optional={
        "apikey": st.sampled_from(["good", "good", "good", "bad"]),
        "heartbeat": st.booleans(),
        "subscribe_filter_symbol_id": st.lists(st.sampled_from(["KRAKEN_", "BINANCE_SPOT_BTC_USDT$", "B"]), max_size=2),
        "subscribe_filter_exchange_id": st.lists(st.sampled_from(["KRAKEN", "COINBASE"]), max_size=2),
        "subscribe_filter_asset_id": st.lists(st.sampled_from(["ETH", "BTC/USD"]), max_size=1),
        "subscribe_update_limit_ms_quote": st.sampled_from([0, 100, 1000]),
    },
)
garbage = st.sampled_from(['{"type":"hello"', "[]", '{"type":"greet"}', '{"type":"hello","heartbeat":"yes"}', "",
                           # past msgspec's recursion limit, invalid UTF-8, numbers no int holds
                           "[" * 100_000, '{"type":"hello","x":' * 20_000, b"\xff\xfe",
                           '{"type":"hello","subscribe_data_type":["trade"],"subscribe_update_limit_ms_quote":1E+100}',
                           '{"type":"hello","subscribe_data_type":["trade"],"subscribe_update_limit_ms_quote":'
                           + "9" * 5000 + "}"])
SYMBOLS = ["KRAKEN_SPOT_BTC_USD", "BINANCE_SPOT_BTC_USDT", "COINBASE_SPOT_ETH_USD", "BITSTAMP_SPOT_BTC_USD"]
LISTS = ("subscribe_filter_symbol_id", "subscribe_filter_exchange_id", "subscribe_filter_asset_id")


class ServerMachine(RuleBasedStateMachine):
    """Whatever a client sends, in whatever order and timing: the connection's answers, state,
    scope, limits, heartbeat times and rate limit follow the protocol as the model below reads it."""

    @initialize(gateway_like=st.booleans(), upgrade=st.sampled_from(["good", None, "good", "bad"]))
    def start(self, gateway_like: bool, upgrade: str | None) -> None:
        self.gateway_like, self.upgrade = gateway_like, upgrade
        if gateway_like:
            rules = Rules(key_check=any_given_key(lambda key: key == "good"),
                          available=lambda t: f"no {t}" if t == REFUSED_TYPE else None)
        else:
            rules = Rules(key_check=every_given_key(lambda key: key == "good"), limiter=HelloLimiter(RATE, 10.0))
        self.connection = ServerConnection(rules, upgrade, now=0.0)
        self.now = 0.0
        self.state = "awaiting"
        self.filters: dict[str, list[set[str]]] = {}  # data type → [symbols, exchanges, assets]
        self.heartbeat_on = False
        self.allowed_at: list[float] = []  # hello/subscribe times the rate limit counted
        self.limits: dict[str, float] = {}
        self.last_sent = 0.0
        self.close_at = math.inf
        self.steps = 0

    # ----- the model ----------------------------------------------------------------------

    def _key_ok(self, in_message: str | None) -> bool:
        given = [key for key in (self.upgrade, in_message) if key]
        if self.gateway_like:
            return any(key == "good" for key in given)
        return bool(given) and all(key == "good" for key in given)

    def _expected_error(self, fields: dict) -> str | None:
        if self.state == "awaiting" and not self._key_ok(fields.get("apikey")):
            return INVALID_API_KEY
        types = fields.get("subscribe_data_type")
        if not types:
            return DATA_TYPE_REQUIRED
        unknown = [t for t in types if t not in server.DATA_TYPES]
        if unknown:
            return f"Parameter subscribe_data_type contains an unknown data type: {unknown[0]}."
        if fields["type"] == "unsubscribe":
            return None
        if self.gateway_like and REFUSED_TYPE in types:
            return f"no {REFUSED_TYPE}"
        if not self.gateway_like and sum(1 for t in self.allowed_at if t > self.now - 10.0) >= RATE:
            return f"Too many hello/subscribe messages: at most {RATE} per 10 seconds."
        return None

    def _apply(self, fields: dict) -> None:
        """The scope rules as the spec reads: hello replaces, subscribe unions, unsubscribe
        subtracts (an everything-filter stays one; a filter left with nothing is dropped)."""
        lists = [{item.upper() for item in fields.get(name, [])} for name in LISTS]
        everything = not any(lists)
        kind, types = fields["type"], fields["subscribe_data_type"]
        if kind == "hello":
            self.filters = {t: [set(x) for x in lists] for t in types}
            self.heartbeat_on = fields.get("heartbeat", False)
            return
        for t in types:
            mine = self.filters.get(t)
            if kind == "subscribe":
                if mine is None:
                    self.filters[t] = [set(x) for x in lists]
                elif everything or not any(mine):
                    self.filters[t] = [set(), set(), set()]
                else:
                    self.filters[t] = [a | b for a, b in zip(mine, lists, strict=True)]
            elif mine is not None and everything:
                del self.filters[t]
            elif mine is not None and any(mine):
                left = [a - b for a, b in zip(mine, lists, strict=True)]
                if any(left):
                    self.filters[t] = left
                else:
                    del self.filters[t]
        if kind == "subscribe":
            self.heartbeat_on = self.heartbeat_on or fields.get("heartbeat", False)

    def _wants(self, data_type: str, symbol_id: str) -> bool:
        lists = self.filters.get(data_type)
        return lists is not None and reference_matches(symbol_id, *(sorted(x) for x in lists))

    def _expected_limits(self, fields: dict) -> dict[str, float]:
        limits = dict(self.limits)
        if fields["type"] == "unsubscribe" or ("subscribe_update_limit_ms_quote" not in fields and fields["type"] == "subscribe"):
            return limits
        value = fields.get("subscribe_update_limit_ms_quote")
        limits.pop("quote", None)
        if value:
            limits["quote"] = value / 1000
        return limits

    # ----- rules ----------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.0, 0.25, 1.0, 4.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.steps += 1

    @rule(fields=requests)
    def send_request(self, fields: dict) -> None:
        outcome = self.connection.receive(json.dumps(fields), self.now)
        if self.state == "closing":
            assert outcome is None
            return
        expected = self._expected_error(fields)
        if expected is not None:
            assert isinstance(outcome, Refused) and outcome.error.message == expected
            self.state = "closing"
            return
        assert isinstance(outcome, Accepted)
        had_heartbeat = self.heartbeat_on
        self._apply(fields)
        if fields["type"] != "unsubscribe":
            self.allowed_at.append(self.now)
        limits = self._expected_limits(fields)
        assert outcome.limits_changed == {f for f in ("quote", "book_snapshot") if limits.get(f) != self.limits.get(f)}
        self.limits = limits
        self.state = "open"
        if self.heartbeat_on and not had_heartbeat:
            self.last_sent = self.now

    @precondition(lambda self: self.steps % 7 == 6)  # rarely: it ends the run's interesting part
    @rule(raw=garbage)
    def send_garbage(self, raw: str) -> None:
        outcome = self.connection.receive(raw, self.now)
        if self.state == "closing":
            assert outcome is None
        else:
            assert outcome == Refused(wire.Error(message=INVALID_MESSAGE))
            self.state = "closing"

    @rule()
    def send_a_frame(self) -> None:
        self.connection.sent(self.now)
        self.last_sent = self.now

    @rule()
    def heartbeat(self) -> None:
        due = self.state == "open" and self.heartbeat_on and self.now >= self.last_sent + 1.0
        assert (self.connection.heartbeat(self.now) is not None) == due
        if due:
            self.last_sent = self.now

    @precondition(lambda self: self.state != "closing" and self.steps % 5 == 4)
    @rule(within=st.sampled_from([0, 1, 10]))
    def notice(self, within: int) -> None:
        message = self.connection.notice(self.now, 0, within)
        assert message.within_seconds == within
        self.close_at = min(self.close_at, self.now + within)

    @rule()
    def check_due(self) -> None:
        if self.now >= self.close_at:
            self.state = "closing"
        assert self.connection.due(self.now) == (self.state == "closing")

    # ----- invariants ------------------------------------------------------------------------

    @invariant()
    def state_scope_and_limits_follow_the_model(self) -> None:
        names = {"awaiting": State.AWAITING_FIRST, "open": State.OPEN, "closing": State.CLOSING}
        assert self.connection.state is names[self.state]
        assert self.connection.limits == self.limits
        scope = self.connection.scope
        assert scope.data_types == set(self.filters) and scope.heartbeat == self.heartbeat_on
        for data_type in self.filters:
            assert [scope.wants(data_type, s) for s in SYMBOLS] == [self._wants(data_type, s) for s in SYMBOLS]

    @invariant()
    def a_heartbeat_is_due_a_second_after_the_last_frame_while_asked_for(self) -> None:
        asked = self.state == "open" and self.heartbeat_on
        assert self.connection.heartbeat_at() == (self.last_sent + 1.0 if asked else math.inf)


TestServerMachine = ServerMachine.TestCase
TestServerMachine.settings = settings(max_examples=40, stateful_step_count=40)


@pytest.mark.parametrize("raw", ['{"type":"hello","subscribe_data_type":["trade"]}', b'{"type":"hello","subscribe_data_type":["trade"]}'])
def test_text_and_binary_messages_alike(raw: str | bytes) -> None:
    assert isinstance(ServerConnection(OPEN_DOOR, None, now=0.0).receive(raw, 0.0), Accepted)
