"""The incremental planner (`client.Planner`): after any sequence of adds, removes, refusals and
lowered limits it keeps the rules the reference planner's tests assert, it reports every change
it makes (the slots it touched, the needs whose channel may have moved), and a change moves no
channel it does not have to."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from providers.luzia.client import Planner
from providers.luzia.grammar import TierLimits, format_channel, parse_channel
from tests.providers.luzia.reference_planner import plan_subscriptions

EXCHANGES = ["binance", "coinbase", "kraken", "okx"]
SYMBOLS = [f"C{i}/USDT" for i in range(40)]
needs_st = st.tuples(st.sampled_from(EXCHANGES), st.none() | st.sampled_from(SYMBOLS))


def _planned(planner: Planner) -> frozenset[str]:
    return frozenset().union(*planner.connections)


def check_rules(planner: Planner, needs: set, refused: set[str]) -> None:
    """The reference planner's rules, for the incremental plan."""
    limits = planner.limits
    slots = planner.connections
    channels = _planned(planner)
    assert all(len(slot) <= limits.subscriptions for slot in slots)
    assert sum(len(slot) for slot in slots) == len(channels)  # no channel twice
    unserved = planner.unserved
    for need in needs:  # every need is served or reported, never silently lost
        reported = {format_channel(*need), format_channel(need[0])} & unserved
        assert (planner.serving(*need) is not None) != bool(reported), need
    for channel in channels:  # nothing is subscribed that nobody needs, or that was refused
        exchange, symbol = parse_channel(channel)
        assert (exchange, symbol) in needs or (symbol is None and any(e == exchange for e, _ in needs))
        assert channel not in refused
    wide = {parse_channel(c).exchange for c in channels if parse_channel(c).symbol is None}
    assert not any(parse_channel(c).exchange in wide and parse_channel(c).symbol for c in channels)
    live = {e for e, s in needs if format_channel(e) not in refused and format_channel(e, s) not in refused}
    if len(live) <= limits.connections * limits.subscriptions:  # one channel per exchange fits
        assert unserved <= refused, "something that fits is unserved"
    used = sum(1 for slot in slots if slot)
    assert used == math.ceil(len(channels) / limits.subscriptions)  # no more connections than needed


class DemandMachine(RuleBasedStateMachine):
    """Needs come and go; subclasses set up `self.planner` and say what they check."""

    planner: Planner
    needs: set

    @rule(need=needs_st)
    def add(self, need) -> None:
        if need not in self.needs:
            self.needs.add(need)
            self.planner.add(*need)

    @precondition(lambda self: self.needs)
    @rule(data=st.data())
    def remove(self, data) -> None:
        need = data.draw(st.sampled_from(sorted(self.needs, key=str)))
        self.needs.discard(need)
        self.planner.remove(*need)
        self.removed()

    def removed(self) -> None:
        """After a need went."""


class PlannerMachine(DemandMachine):
    @initialize(
        connections=st.integers(1, 4),
        subscriptions=st.integers(2, 12),
        threshold=st.none() | st.integers(1, 30),
    )
    def start(self, connections: int, subscriptions: int, threshold: int | None) -> None:
        self.planner = Planner(TierLimits(connections, subscriptions), threshold=threshold)
        self.needs: set = set()
        self.refused: set[str] = set()
        self.slots = self.planner.connections
        self.serving: dict = {}

    def removed(self) -> None:
        # A refusal is forgotten with the last need that asked for the channel.
        self.refused = {c for c in self.refused if any(c in (format_channel(*n), format_channel(n[0])) for n in self.needs)}

    @precondition(lambda self: _planned(self.planner))
    @rule(data=st.data())
    def refuse(self, data) -> None:
        channel = data.draw(st.sampled_from(sorted(_planned(self.planner))))
        self.planner.exclude(channel)
        self.refused.add(channel)

    @precondition(lambda self: self.planner.limits.subscriptions > 1)
    @rule(data=st.data())
    def lower_limit(self, data) -> None:
        evict = data.draw(st.lists(st.sampled_from(sorted(_planned(self.planner)) or ["ticker:x"]), max_size=2))
        self.planner.lower_limit(self.planner.limits.subscriptions - 1, evict=evict)

    @invariant()
    def keeps_the_rules(self) -> None:
        check_rules(self.planner, self.needs, self.refused)

    @invariant()
    def reports_what_it_changed(self) -> None:
        dirty, touched = self.planner.changes()
        slots = self.planner.connections
        assert {i for i, (a, b) in enumerate(zip(self.slots, slots, strict=True)) if a != b} <= dirty
        serving = {need: self.planner.serving(*need) for need in self.needs}
        assert {n for n in self.needs if self.serving.get(n) != serving[n]} <= touched
        self.slots, self.serving = slots, serving


PlannerMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=30)
TestIncrementalPlanner = PlannerMachine.TestCase


class AmpleCapacityMachine(DemandMachine):
    """With room for everything, the plan is exactly the threshold rule: no collapse ever."""

    @initialize(threshold=st.none() | st.integers(1, 30))
    def start(self, threshold: int | None) -> None:
        self.threshold = threshold
        self.planner = Planner(TierLimits(25, 500), threshold=threshold)
        self.needs = set()

    @invariant()
    def exchange_wide_exactly_at_the_threshold(self) -> None:
        channels = _planned(self.planner)
        for exchange in EXCHANGES:
            symbols = {s for e, s in self.needs if e == exchange and s is not None}
            whole = (exchange, None) in self.needs
            wide = whole or (self.threshold is not None and len(symbols) >= self.threshold)
            assert (format_channel(exchange) in channels) == (wide and (whole or bool(symbols)))
            if not wide:
                assert {c for c in channels if c.startswith(f"ticker:{exchange}:")} == {format_channel(exchange, s) for s in symbols}

    @invariant()
    def agrees_with_the_reference(self) -> None:
        reference = plan_subscriptions(self.needs, self.planner.limits, exchange_wide_threshold=self.threshold)
        assert _planned(self.planner) == reference.channels


AmpleCapacityMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=30)
TestAmpleCapacity = AmpleCapacityMachine.TestCase


@given(st.sets(st.sampled_from(SYMBOLS), min_size=1, max_size=20), st.sampled_from(SYMBOLS))
def test_adding_a_stream_moves_no_existing_channel(symbols, extra):
    planner = Planner(TierLimits(5, 6), threshold=None)
    for symbol in sorted(symbols):
        planner.add("binance", symbol)
    before = planner.connections
    planner.add("kraken", extra)
    for old, new in zip(before, planner.connections, strict=True):
        assert old <= new


def test_sharding_fills_a_connection_before_opening_the_next():
    planner = Planner(TierLimits(3, 3), threshold=None)
    for symbol in SYMBOLS[:7]:
        planner.add("binance", symbol)
    assert [len(slot) for slot in planner.connections] == [3, 3, 1]


def test_collapse_happens_only_when_needed_to_fit_biggest_saver_first():
    planner = Planner(TierLimits(1, 5), threshold=None)
    needs = [("binance", s) for s in SYMBOLS[:5]] + [("kraken", s) for s in SYMBOLS[:3]] + [("okx", "C1/USDT")]
    for need in needs:
        planner.add(*need)
    # 9 symbol channels > 5: binance (5 → 1) collapses first, which is enough (1 + 3 + 1 = 5).
    assert _planned(planner) == {"ticker:binance", "ticker:kraken:C0/USDT", "ticker:kraken:C1/USDT",
                                 "ticker:kraken:C2/USDT", "ticker:okx:C1/USDT"}
    assert not planner.unserved


def test_what_does_not_fit_waits_and_is_placed_when_room_frees():
    planner = Planner(TierLimits(1, 2), threshold=None)
    for exchange in ("okx", "kraken", "binance"):
        planner.add(exchange, None)
    assert _planned(planner) == {"ticker:okx", "ticker:kraken"}  # binance is new: what is subscribed stays
    assert planner.unserved == {"ticker:binance"}
    planner.changes()
    planner.remove("kraken", None)
    assert _planned(planner) == {"ticker:okx", "ticker:binance"} and not planner.unserved
    dirty, touched = planner.changes()
    assert dirty == {0} and {("kraken", None), ("binance", None)} <= touched


def test_a_lowered_limit_moves_the_overflow_and_the_refused_channel_first():
    planner = Planner(TierLimits(2, 4), threshold=None)
    for symbol in SYMBOLS[:4]:
        planner.add("binance", symbol)
    first = planner.connections
    refused_here = "ticker:binance:C0/USDT"
    planner.lower_limit(2, evict=[refused_here])
    assert [len(slot) for slot in planner.connections] == [2, 2]
    assert planner.connections[0] < first[0] and refused_here in planner.connections[1]


def test_a_refused_channel_is_unserved_until_its_need_goes():
    planner = Planner(TierLimits(1, 5), threshold=None)
    planner.add("binance", "BTC/USDT")
    planner.add("binance", "NOPE/USDT")
    planner.exclude("ticker:binance:NOPE/USDT")
    assert _planned(planner) == {"ticker:binance:BTC/USDT"}
    assert planner.unserved == {"ticker:binance:NOPE/USDT"} and planner.serving("binance", "NOPE/USDT") is None
    planner.remove("binance", "NOPE/USDT")
    planner.add("binance", "NOPE/USDT")  # wanted anew: tried again
    assert "ticker:binance:NOPE/USDT" in _planned(planner)


def test_an_exchange_wide_refusal_leaves_every_need_of_it_unserved():
    planner = Planner(TierLimits(1, 5), threshold=2)
    for symbol in SYMBOLS[:3]:
        planner.add("bybit", symbol)
    assert _planned(planner) == {"ticker:bybit"}
    planner.exclude("ticker:bybit")
    planner.add("bybit", SYMBOLS[3])
    assert not _planned(planner) and planner.unserved == {"ticker:bybit"}
    assert all(planner.serving("bybit", s) is None for s in SYMBOLS[:4])


def test_one_change_among_ten_thousand_costs_what_it_changes():
    """What the adapter does per change is driven by what `changes()` reports: one slot, one need."""
    planner = Planner(TierLimits(25, 500), threshold=25)
    for i in range(10_000):
        planner.add(f"ex{i % 400}", f"S{i}/USDT")  # 25 symbols each: every exchange is wide
    planner.changes()
    planner.add("kraken", "BTC/USD")
    dirty, touched = planner.changes()
    assert (len(dirty), touched) == (1, {("kraken", "BTC/USD")})
    planner.remove("kraken", "BTC/USD")
    assert planner.changes() == (dirty, touched)
