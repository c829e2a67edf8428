"""The reference planner: which Luzia channels on which connection, planned from all needs at once
(the rules of `providers.luzia.client`'s header). It is what the adapter's planner did before the
plan became incremental; the incremental `client.Planner` is tested against it and its rules.
Pure, test code only: production plans incrementally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from providers.luzia.grammar import Need, TierLimits, format_channel
from providers.luzia.policy import EXCHANGE_WIDE_THRESHOLD


@dataclass(frozen=True)
class Plan:
    connections: tuple[frozenset[str], ...]  # one entry per slot (the tier's connection count)
    unserved: frozenset[str]  # channels that would be needed but do not fit (or were excluded)

    @cached_property
    def channels(self) -> frozenset[str]:
        """Every planned channel (cached: `serving` asks once per wanted stream)."""
        return frozenset().union(*self.connections)

    def serving(self, exchange: str, symbol: str | None) -> str | None:
        """The planned channel that delivers this need, if any."""
        planned = self.channels
        if symbol is not None and format_channel(exchange, symbol) in planned:
            return format_channel(exchange, symbol)
        wide = format_channel(exchange)
        return wide if wide in planned else None


def plan_subscriptions(
    needs: Iterable[Need],
    limits: TierLimits,
    *,
    previous: Sequence[Iterable[str]] = (),
    exchange_wide_threshold: int | None = EXCHANGE_WIDE_THRESHOLD,
    excluded: Iterable[str] = (),
) -> Plan:
    """All needs → channels per connection slot, within `limits`, from scratch (the rules above,
    with rule 3 keeping `previous` channels, then name order). `excluded` channels (the server
    refused them) are never planned and are reported unserved."""
    refused_channels = frozenset(excluded)
    before = [frozenset(p) for p in previous]
    capacity = limits.connections * limits.subscriptions
    channels, refused = _choose_channels(needs, capacity, exchange_wide_threshold, refused_channels)
    kept, over = _fit(channels, capacity, frozenset().union(*before))
    slots = _assign(kept, limits, before)
    return Plan(tuple(frozenset(s) for s in slots), frozenset(refused | over))


def _group(needs: Iterable[Need], excluded: frozenset[str]) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """Needs → symbols per exchange, exchanges wanted whole, and the excluded channels asked for."""
    symbols: dict[str, set[str]] = {}
    whole: set[str] = set()
    refused: set[str] = set()
    for exchange, symbol in needs:
        channel = format_channel(exchange, symbol)
        if channel in excluded or format_channel(exchange) in excluded:
            refused.add(channel)
        elif symbol is None:
            whole.add(exchange)
        else:
            symbols.setdefault(exchange, set()).add(symbol)
    return symbols, whole, refused


def _choose_channels(
    needs: Iterable[Need], capacity: int, threshold: int | None, excluded: frozenset[str]
) -> tuple[set[str], set[str]]:
    symbols, whole, refused = _group(needs, excluded)
    wide = set(whole)
    if threshold is not None:
        wide |= {ex for ex, syms in symbols.items() if len(syms) >= threshold}
    total = len(wide) + sum(len(s) for ex, s in symbols.items() if ex not in wide)
    # Rule 2: collapse the biggest savers first, only as far as needed to fit.
    for exchange in sorted(symbols, key=lambda ex: (-len(symbols[ex]), ex)):
        if total <= capacity:
            break
        if exchange not in wide and len(symbols[exchange]) > 1:
            wide.add(exchange)
            total -= len(symbols[exchange]) - 1
    channels = {format_channel(ex) for ex in wide}
    for exchange, syms in symbols.items():
        if exchange not in wide:
            channels |= {format_channel(exchange, s) for s in syms}
    return channels, refused


def _fit(channels: set[str], capacity: int, assigned: frozenset[str]) -> tuple[set[str], set[str]]:
    """Rule 3: keep what is already subscribed, then name order; the rest does not fit."""
    if len(channels) <= capacity:
        return channels, set()
    ordered = sorted(channels, key=lambda c: (c not in assigned, c))
    return set(ordered[:capacity]), set(ordered[capacity:])


def _assign(channels: set[str], limits: TierLimits, previous: list[frozenset[str]]) -> list[set[str]]:
    slots = _carry_over(channels, limits, previous)
    pool = sorted(channels - set().union(*slots))
    pool += _compact_slots(slots, len(channels), limits.subscriptions)
    _fill(sorted(pool), slots, limits.subscriptions)
    return slots


def _carry_over(channels: set[str], limits: TierLimits, previous: list[frozenset[str]]) -> list[set[str]]:
    """Each slot keeps its still-planned channels (once each, within the limit)."""
    slots: list[set[str]] = []
    taken: set[str] = set()
    for index in range(limits.connections):
        before = previous[index] if index < len(previous) else frozenset()
        keep = sorted((before & channels) - taken)[: limits.subscriptions]
        slots.append(set(keep))
        taken |= set(keep)
    return slots


def _compact_slots(slots: list[set[str]], total: int, per_slot: int) -> list[str]:
    """Empty the least-filled slots while more are in use than the channels need."""
    needed = math.ceil(total / per_slot) if per_slot else 0
    freed: list[str] = []
    while sum(1 for s in slots if s) > needed:
        victim = min((i for i, s in enumerate(slots) if s), key=lambda i: (len(slots[i]), -i))
        freed += sorted(slots[victim])
        slots[victim].clear()
    return freed


def _fill(pool: list[str], slots: list[set[str]], per_slot: int) -> None:
    """Fill slots already in use (lowest first), then open new ones (lowest first)."""
    order = [i for i, s in enumerate(slots) if s] + [i for i, s in enumerate(slots) if not s]
    for index in order:
        room = per_slot - len(slots[index])
        if room > 0 and pool:
            slots[index] |= set(pool[:room])
            del pool[:room]
    assert not pool, "the planner placed more channels than fit"  # _fit guarantees room
