"""Subscription planning: wanted streams → upstream scope; the one message that moves the server
there (checked against the emulator's own scope model); the hello rate limiter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.streams import StreamKey
from providers.coinapi import plan, wire
from providers.coinapi.filters import Scope
from providers.coinapi.symbols import SymbolMapper

MAPPER = SymbolMapper()
SYMBOLS = [("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("okx", "BTC/USDT"), ("coinbase", "BTC/USD")]
UNIVERSE = [MAPPER.symbol_id(ex, sym) for ex, sym in SYMBOLS] + ["BINANCE_SPOT_SOL_USDT", "KRAKEN_SPOT_BTC_USD"]
keys = st.builds(
    lambda datatype, pick, wide: StreamKey(datatype, SYMBOLS[pick][0], None if wide else SYMBOLS[pick][1]),
    st.sampled_from(["trade", "quote", "ticker"]),
    st.integers(0, len(SYMBOLS) - 1),
    st.booleans(),
)
wanted_sets = st.frozensets(keys, max_size=6)


def test_scope_for_maps_streams_to_exact_symbols_and_exchanges() -> None:
    scope = plan.scope_for(
        {
            StreamKey("trade", "okx", "BTC/USDT"),
            StreamKey("ticker", "coinbase", "BTC/USD"),
            StreamKey("quote", "binance", None),
            StreamKey("trade", "binance", "ETH/USDT"),  # covered by the exchange-wide stream
            StreamKey("funding", "kraken", "BTC/USD"),  # not a data type this adapter serves
            StreamKey("trade", "okx", "not a symbol"),
        },
        MAPPER,
    )
    assert scope.data_types == {"trade", "quote", "ohlcv"}
    assert scope.symbol_ids == {"OKEX_SPOT_BTC_USDT$", "COINBASE_SPOT_BTC_USD$"}
    assert scope.exchange_ids == {"BINANCE"}
    assert scope.period_ids == {"1DAY"}
    assert scope.entries == 3


def test_a_hello_carries_key_heartbeat_and_every_filter() -> None:
    message = plan.hello(plan.scope_for({StreamKey("ticker", "binance", "BTC/USDT")}, MAPPER), "k")
    assert message == wire.Hello(
        apikey="k",
        heartbeat=True,
        subscribe_data_type=["ohlcv", "quote", "trade"],
        subscribe_filter_symbol_id=["BINANCE_SPOT_BTC_USDT$"],
        subscribe_filter_period_id=["1DAY"],
    )


def _server_scope(messages: list[wire.ClientMessage]) -> Scope:
    scope = Scope()
    for message in messages:
        scope = scope.apply(message)
    return scope


def _delivered(scope: Scope) -> set[tuple[str, str]]:
    return {(t, s) for t in ("trade", "quote", "ohlcv") for s in UNIVERSE if scope.wants(t, s)}


@given(st.lists(wanted_sets, min_size=1, max_size=5))
def test_planned_messages_leave_the_server_with_exactly_the_target_scope(history: list[frozenset]) -> None:
    """Whatever sequence of wanted sets, the messages planned along the way leave the (emulator's
    model of the) server delivering exactly what a fresh hello of the last target would."""
    sent, messages = None, []
    for wanted in history:
        target = plan.scope_for(wanted, MAPPER)
        message = plan.plan_update(sent, target, "k")
        if message is not None:
            assert not (isinstance(message, wire.Hello) and target.empty)  # a hello never means "everything"
            messages.append(message)
            sent = target
    final = plan.scope_for(history[-1], MAPPER)
    expected = set() if final.empty else _delivered(_server_scope([plan.hello(final, "k")]))
    assert _delivered(_server_scope(messages)) == expected


def test_pure_additions_subscribe_and_emptying_unsubscribes() -> None:
    one = plan.scope_for({StreamKey("trade", "binance", "BTC/USDT")}, MAPPER)
    two = plan.scope_for({StreamKey("trade", "binance", "BTC/USDT"), StreamKey("trade", "okx", "BTC/USDT")}, MAPPER)
    assert plan.plan_update(one, two, "k") == wire.Subscribe(
        heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["OKEX_SPOT_BTC_USDT$"]
    )
    assert isinstance(plan.plan_update(two, one, "k"), wire.Hello)  # a removal: replace the scope
    assert plan.plan_update(one, plan.UpstreamScope(), "k") == wire.Unsubscribe(
        subscribe_data_type=["trade"], subscribe_filter_symbol_id=["BINANCE_SPOT_BTC_USDT$"]
    )
    assert plan.plan_update(one, one, "k") is None
    assert plan.plan_update(None, plan.UpstreamScope(), "k") is None


@given(st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), min_size=1, max_size=40), st.integers(1, 5))
def test_a_sender_that_waits_for_the_limiter_never_exceeds_it(wishes: list[float], limit: int) -> None:
    """A sender that asks at `wishes` times and waits as told; the server (same rule, same window)
    accepts every message, and no window holds more than `limit`."""
    sender, server = plan.HelloLimiter(limit, 10.0), plan.HelloLimiter(limit, 10.0)
    now, sent = 0.0, []
    for wish in sorted(wishes):
        now = max(now, wish)
        while (delay := sender.delay(now)) > 0:
            now += delay
        sender.record(now)
        sent.append(now)
        assert server.allow(now)
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 10.0) <= limit


def test_limiter_refuses_the_eleventh_message_until_the_first_leaves_the_window() -> None:
    limiter = plan.HelloLimiter()
    assert all(limiter.allow(float(i)) for i in range(10))
    assert not limiter.allow(9.5) and limiter.delay(9.5) == 0.5
    assert limiter.allow(10.0)
