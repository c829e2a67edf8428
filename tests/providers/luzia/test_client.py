"""The client side: the reference planner (a full plan from all needs): limits are never exceeded,
everything that fits is served, the exchange-wide channel is used when cheaper, and assignments stay
put across re-plans. The incremental planner is held to the same rules in test_planner_incremental."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.common.errors import AuthRejected, ProviderError
from providers.luzia import wire
from providers.luzia.client import (
    CONNECTION_LIMIT,
    MAX_AWAITED_ANSWERS,
    MAX_DETAIL_LENGTH,
    REFUSED_KEY,
    SHUTTING_DOWN,
    Subscriptions,
    error_code,
    session_error,
    websocket_url,
)
from providers.luzia.grammar import TIER_LIMITS, TierLimits, format_channel, parse_channel, tier_limits
from tests.providers.luzia.reference_planner import Plan, plan_subscriptions

EXCHANGES = ["binance", "coinbase", "kraken", "okx"]
SYMBOLS = [f"C{i}/USDT" for i in range(40)]

needs_st = st.sets(
    st.tuples(st.sampled_from(EXCHANGES), st.none() | st.sampled_from(SYMBOLS)), max_size=60
)
limits_st = st.builds(TierLimits, st.integers(1, 4), st.integers(1, 12))
threshold_st = st.none() | st.integers(1, 30)


def _minimum_channels(needs) -> int:
    """The fewest subscriptions that cover `needs`: one per exchange."""
    return len({exchange for exchange, _ in needs})


def _covered(plan: Plan, need) -> bool:
    return plan.serving(*need) is not None


def _channel_of(need) -> str:
    return format_channel(*need)


@given(needs_st, limits_st, threshold_st)
def test_plan_respects_limits_and_serves_everything_that_fits(needs, limits, threshold):
    plan = plan_subscriptions(needs, limits, exchange_wide_threshold=threshold)
    assert len(plan.connections) == limits.connections
    assert all(len(slot) <= limits.subscriptions for slot in plan.connections)
    assert sum(len(slot) for slot in plan.connections) == len(plan.channels)  # no channel twice
    for need in needs:  # every need is served or reported, never silently lost
        reported = {_channel_of(need), format_channel(need[0])} & plan.unserved  # as itself or collapsed
        assert _covered(plan, need) != bool(reported)
    if _minimum_channels(needs) <= limits.connections * limits.subscriptions:
        assert not plan.unserved
        assert all(_covered(plan, need) for need in needs)


@given(needs_st, limits_st, threshold_st)
def test_an_exchange_is_never_subscribed_both_whole_and_by_symbol(needs, limits, threshold):
    plan = plan_subscriptions(needs, limits, exchange_wide_threshold=threshold)
    wide = {parse_channel(c).exchange for c in plan.channels if parse_channel(c).symbol is None}
    assert not any(parse_channel(c).exchange in wide and parse_channel(c).symbol for c in plan.channels)


@given(needs_st, threshold_st)
def test_exchange_wide_is_used_at_the_threshold(needs, threshold):
    plan = plan_subscriptions(needs, TierLimits(25, 500), exchange_wide_threshold=threshold)
    for exchange in EXCHANGES:
        symbols = {s for e, s in needs if e == exchange and s is not None}
        whole = (exchange, None) in needs
        expected_wide = whole or (threshold is not None and len(symbols) >= threshold)
        assert (format_channel(exchange) in plan.channels) == (expected_wide and (whole or bool(symbols)))
        if not expected_wide:  # plenty of room: symbol channels, exactly
            assert {c for c in plan.channels if c.startswith(f"ticker:{exchange}:")} == {
                format_channel(exchange, s) for s in symbols
            }


@given(needs_st, limits_st, threshold_st)
def test_replanning_the_same_wants_changes_nothing(needs, limits, threshold):
    first = plan_subscriptions(needs, limits, exchange_wide_threshold=threshold)
    again = plan_subscriptions(needs, limits, previous=first.connections, exchange_wide_threshold=threshold)
    assert again == first


@given(st.sets(st.sampled_from(SYMBOLS), min_size=1, max_size=20), st.sampled_from(SYMBOLS))
def test_adding_a_stream_moves_no_existing_channel(symbols, extra):
    limits = TierLimits(5, 6)
    needs = {("binance", s) for s in symbols}
    first = plan_subscriptions(needs, limits, exchange_wide_threshold=None)
    second = plan_subscriptions(needs | {("kraken", extra)}, limits, previous=first.connections, exchange_wide_threshold=None)
    for before, after in zip(first.connections, second.connections, strict=True):
        assert before <= after


@given(st.sets(st.sampled_from(SYMBOLS), min_size=2, max_size=30), st.data())
def test_shrinking_demand_frees_whole_connections(symbols, data):
    limits = TierLimits(5, 6)
    needs = {("binance", s) for s in symbols}
    first = plan_subscriptions(needs, limits, exchange_wide_threshold=None)
    kept = data.draw(st.sets(st.sampled_from(sorted(needs)), max_size=len(needs)))
    second = plan_subscriptions(kept, limits, previous=first.connections, exchange_wide_threshold=None)
    used = sum(1 for slot in second.connections if slot)
    assert used == -(-len(kept) // limits.subscriptions)  # ceil: no more connections than needed


def test_collapse_happens_only_when_needed_to_fit_biggest_saver_first():
    needs = {("binance", s) for s in SYMBOLS[:5]} | {("kraken", s) for s in SYMBOLS[:3]} | {("okx", "C1/USDT")}
    plan = plan_subscriptions(needs, TierLimits(1, 5), exchange_wide_threshold=None)
    # 9 symbol channels > 5: binance (5 → 1) collapses first, which is enough (1 + 3 + 1 = 5).
    assert plan.channels == {"ticker:binance", "ticker:kraken:C0/USDT", "ticker:kraken:C1/USDT",
                             "ticker:kraken:C2/USDT", "ticker:okx:C1/USDT"}
    assert not plan.unserved


def test_what_does_not_fit_even_collapsed_is_reported_and_current_channels_are_kept():
    limits = TierLimits(1, 2)
    first = plan_subscriptions({("okx", None), ("kraken", None)}, limits)
    second = plan_subscriptions({("okx", None), ("kraken", None), ("binance", None)}, limits, previous=first.connections)
    assert second.channels == {"ticker:okx", "ticker:kraken"}  # binance would sort first, but is new
    assert second.unserved == {"ticker:binance"}


def test_sharding_fills_a_connection_before_opening_the_next():
    needs = {("binance", s) for s in SYMBOLS[:7]}
    plan = plan_subscriptions(needs, TierLimits(3, 3), exchange_wide_threshold=None)
    assert [len(slot) for slot in plan.connections] == [3, 3, 1]


def test_excluded_channels_are_not_planned_and_are_reported():
    needs = {("binance", "BTC/USDT"), ("binance", "NOPE/USDT")}
    plan = plan_subscriptions(needs, TierLimits(1, 5), excluded={"ticker:binance:NOPE/USDT"})
    assert plan.channels == {"ticker:binance:BTC/USDT"}
    assert plan.unserved == {"ticker:binance:NOPE/USDT"}


def test_a_lowered_limit_moves_the_overflow_to_another_connection():
    first = plan_subscriptions({("binance", s) for s in SYMBOLS[:4]}, TierLimits(2, 4), exchange_wide_threshold=None)
    second = plan_subscriptions(
        {("binance", s) for s in SYMBOLS[:4]}, TierLimits(2, 2), previous=first.connections, exchange_wide_threshold=None
    )
    assert [len(slot) for slot in second.connections] == [2, 2]
    assert second.connections[0] < first.connections[0]


def test_tiers_are_luzias_documented_limits():
    assert TIER_LIMITS["pro"] == TierLimits(5, 50)
    assert TIER_LIMITS["enterprise"] == TierLimits(25, 500)
    assert TIER_LIMITS["free"].connections == 0
    with pytest.raises(ValueError, match="unknown Luzia tier"):
        tier_limits("platinum")
    assert plan_subscriptions({("binance", "BTC/USDT")}, TIER_LIMITS["free"]).unserved == {"ticker:binance:BTC/USDT"}


# ----- one connection: what is sent, what the server's errors mean ------------------------------


def test_sync_unsubscribes_first_then_subscribes_in_batches_of_fifty():
    subs = Subscriptions()
    first = subs.sync({f"ticker:binance:C{i}/USDT" for i in range(60)})
    assert [type(m) for m in first] == [wire.Subscribe, wire.Subscribe]
    assert [len(m.channels) for m in first] == [50, 10] and first[0].channels == sorted(first[0].channels)
    kept = {f"ticker:binance:C{i}/USDT" for i in range(5)}
    second = subs.sync(kept | {"ticker:kraken"})
    assert [type(m) for m in second] == [wire.Unsubscribe, wire.Unsubscribe, wire.Subscribe]
    assert [len(m.channels) for m in second] == [50, 5, 1] and second[2].channels == ["ticker:kraken"]
    assert subs.sync(kept | {"ticker:kraken"}) == []  # nothing changed: nothing to send


def test_an_error_is_blamed_on_the_channel_it_names_else_the_oldest_unanswered():
    subs = Subscriptions()
    subs.sync({"ticker:binance", "ticker:binance:BTC/USDT", "ticker:okx"})
    subs.subscribed("ticker:binance")
    assert subs.blame("Invalid channel: ticker:binance:BTC/USDT") == "ticker:binance:BTC/USDT"  # the longest named
    assert subs.blame("Subscription limit exceeded") == "ticker:binance:BTC/USDT"  # the oldest pending
    subs.refused("ticker:binance:BTC/USDT")
    assert subs.blame(None) == "ticker:okx" and subs.confirmed == {"ticker:binance"}
    subs.unsubscribed("ticker:binance")
    assert not subs.confirmed and "ticker:binance:BTC/USDT" not in subs.sent


@pytest.mark.parametrize(
    ("code", "text", "kind", "words"),
    [
        ("CONNECTION_REJECTED", "Invalid API key lz_secret_key", AuthRejected, REFUSED_KEY),
        ("CONNECTION_REJECTED", None, AuthRejected, REFUSED_KEY),
        ("CONNECTION_REJECTED", "Connection limit exceeded (max 5 for pro tier)", ProviderError, CONNECTION_LIMIT),
        ("SERVER_SHUTDOWN", "Server is shutting down, reconnect shortly", ProviderError, SHUTTING_DOWN),
    ],
)
def test_connection_level_errors_end_the_session_in_our_words_with_theirs_as_detail(code, text, kind, words):
    error = session_error(wire.Error(code=code, message=text))
    assert type(error) is kind and str(error) == words and code in words
    assert error.detail == text  # the loop redacts it, and logs it only


def test_the_providers_text_kept_for_the_log_is_bounded():
    error = session_error(wire.Error(code="SERVER_SHUTDOWN", message="x" * 100_000))
    assert error.detail == "x" * MAX_DETAIL_LENGTH + "…"


@pytest.mark.parametrize(
    ("code", "named"),
    [("INVALID_CHANNEL", "INVALID_CHANNEL"), ("RATE_LIMITED", "RATE_LIMITED"), ("lz_secret_key", "UNRECOGNISED_CODE"),
     ("X" * 41, "UNRECOGNISED_CODE"), ("ＡＢＣ", "UNRECOGNISED_CODE"), ("", "UNRECOGNISED_CODE")],
)
def test_only_a_code_shaped_code_is_named_in_our_texts(code, named):
    assert error_code(wire.Error(code=code)) == named


def test_other_errors_leave_the_session_alone():
    assert session_error(wire.Error(code="INVALID_CHANNEL", message="Invalid channel: x")) is None


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.luzia.dev", "wss://api.luzia.dev/v1/ws"),
        ("http://localhost:8765/", "ws://localhost:8765/v1/ws"),
        ("ws://127.0.0.1:9000/v1/ws", "ws://127.0.0.1:9000/v1/ws"),
    ],
)
def test_websocket_url_follows_the_sdk_rule(base, url):
    assert websocket_url(base) == url


def test_an_error_answering_an_unsubscribe_blames_nobody_and_never_another_requests_channel():
    """Luzia answers every channel of every request in order: an INVALID_CHANNEL that answers the
    unsubscribe of an unknown channel must not be pinned on the next request's subscribe."""
    subs = Subscriptions()
    subs.sync({"ticker:binance:NOPE/USDT"})  # subscribe NOPE (the server does not know it)
    subs.sync({"ticker:kraken:BTC/USD"})  # before any answer: unsubscribe NOPE, subscribe kraken
    assert list(subs.awaiting) == [("subscribe", "ticker:binance:NOPE/USDT"),
                                   ("unsubscribe", "ticker:binance:NOPE/USDT"), ("subscribe", "ticker:kraken:BTC/USD")]
    assert subs.blame("Invalid channel: ticker:binance:NOPE/USDT") == "ticker:binance:NOPE/USDT"
    subs.refused("ticker:binance:NOPE/USDT")
    assert subs.blame("Invalid channel: ticker:binance:NOPE/USDT") is None  # answered the unsubscribe
    subs.subscribed("ticker:kraken:BTC/USD")
    assert subs.confirmed == {"ticker:kraken:BTC/USD"} and "ticker:kraken:BTC/USD" in subs.sent
    assert not subs.awaiting


def test_acknowledgements_of_what_nobody_sent_change_nothing():
    """A hostile or confused server may acknowledge any channel: nothing grows from it."""
    subs = Subscriptions()
    subs.sync({"ticker:binance"})
    for i in range(10_000):
        subs.subscribed(f"ticker:x{i}")
        subs.unsubscribed(f"ticker:y{i}")
    assert not subs.confirmed and list(subs.awaiting) == [("subscribe", "ticker:binance")]
    subs.subscribed("ticker:binance")
    assert subs.confirmed == {"ticker:binance"} and not subs.awaiting


def test_the_answers_owed_are_bounded_when_the_server_answers_nothing():
    subs = Subscriptions()
    for i in range(MAX_AWAITED_ANSWERS):  # each sync: one unsubscribe and one subscribe owed
        subs.sync({f"ticker:x{i}"})
    assert len(subs.awaiting) == MAX_AWAITED_ANSWERS
    assert subs.awaiting[0] == ("unsubscribe", f"ticker:x{MAX_AWAITED_ANSWERS // 2 - 1}")  # the oldest went first
    last = f"ticker:x{MAX_AWAITED_ANSWERS - 1}"
    assert subs.sent == {last: None}
    subs.subscribed(last)  # an answer owed deep in the queue is still found
    assert subs.confirmed == {last} and ("subscribe", last) not in subs.awaiting
    assert len(subs.awaiting) == MAX_AWAITED_ANSWERS - 1
