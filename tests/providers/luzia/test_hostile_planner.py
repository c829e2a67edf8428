"""However much the gateway wants, the Luzia client side never asks for more than the tier allows:
at most `connections` slots of at most `subscriptions` channels each, subscribe frames of at most
`SUBSCRIBE_BATCH` channels, and what does not fit is reported unserved (the adapter turns that into
a `rejected` status in our words), never sent to fail. Pure: the planner and one connection's
`Subscriptions`, at the scale of 50,000 wanted streams."""

from __future__ import annotations

import msgspec
import pytest

from providers.luzia import wire
from providers.luzia.client import SUBSCRIBE_BATCH, Planner, Subscriptions
from providers.luzia.grammar import format_channel, tier_limits
from providers.luzia.policy import EXCHANGE_WIDE_THRESHOLD

WANTED = 50_000


def _frames(planner: Planner) -> list[list[wire.Subscribe | wire.Unsubscribe]]:
    return [Subscriptions().sync(planner.slot(i)) for i in range(planner.limits.connections)]


@pytest.mark.parametrize("tier", ["pro", "enterprise"])
@pytest.mark.parametrize("shape", ["one-symbol-per-exchange", "symbols-of-few-exchanges", "whole-exchanges"])
def test_fifty_thousand_wanted_streams_stay_inside_the_tier(tier, shape):
    limits = tier_limits(tier)
    planner = Planner(limits, threshold=EXCHANGE_WIDE_THRESHOLD)
    needs = {
        "one-symbol-per-exchange": [(f"x{i}", "BTC/USDT") for i in range(WANTED)],
        "symbols-of-few-exchanges": [(f"x{i % 7}", f"C{i}/USDT") for i in range(WANTED)],
        "whole-exchanges": [(f"x{i}", None) for i in range(WANTED)],
    }[shape]
    for need in needs:
        planner.add(*need)
    capacity = limits.connections * limits.subscriptions
    slots = planner.connections
    assert len(slots) == limits.connections and all(len(slot) <= limits.subscriptions for slot in slots)
    planned = sum(len(slot) for slot in slots)
    served = sum(1 for need in needs if planner.serving(*need) is not None)
    if shape == "symbols-of-few-exchanges":  # collapsed: seven exchange-wide channels serve all
        assert planned == 7 and served == WANTED and not planner.unserved
    else:  # nothing collapses: the tier is full, and everything else is unserved, not sent
        assert planned == capacity and served == capacity
        assert len(planner.unserved) == WANTED - capacity
        assert not planner.unserved & frozenset().union(*slots)
    for frames in _frames(planner):
        assert all(len(f.channels) <= SUBSCRIBE_BATCH for f in frames)
        assert sum(len(f.channels) for f in frames) <= limits.subscriptions


def test_a_subscribe_frame_stays_small_even_with_the_longest_channel_names():
    planner = Planner(tier_limits("enterprise"), threshold=None)
    exchange, asset = "x" * 32, "A" * 20
    for i in range(1000):
        planner.add(exchange, f"{asset}/{i:0>20}")
    frames = [f for slot in _frames(planner) for f in slot]
    assert max(len(msgspec.json.encode(f)) for f in frames) < 8 * 1024
    assert format_channel(exchange, f"{asset}/{0:0>20}") in frames[0].channels
