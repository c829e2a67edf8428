"""Routing: which source serves each data type, and which source a demand change goes to. Pure.

`[routes]` maps a data type to an ordered list of provider names; the first one that is usable
(configured, able to serve the data type, not refusing our key) serves every stream of that data
type. Swapping providers is editing that list. Choosing costs O(routes × providers), and is redone
only when a source pushes a change of its health; demand changes are split by data type in time
proportional to the change (`split_by_source`), never re-planned whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Protocol

from schemas.streams import StreamKey


class ProviderLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def datatypes(self) -> frozenset[str]: ...

    @property
    def usable(self) -> bool: ...


@dataclass(frozen=True)
class ProviderInfo:
    """A provider as routing sees it (tests and tools build these; sources qualify as they are)."""

    name: str
    datatypes: frozenset[str]
    usable: bool


def choose_providers(routes: Mapping[str, list[str]], providers: Iterable[ProviderLike]) -> dict[str, str | None]:
    """For each routed data type, the first provider in its list that can serve it now."""
    by_name = {p.name: p for p in providers}
    serving: dict[str, str | None] = {}
    for datatype, names in routes.items():
        serving[datatype] = next(
            (n for n in names if n in by_name and by_name[n].usable and datatype in by_name[n].datatypes),
            None,
        )
    return serving


def split_by_source(keys: Iterable[StreamKey], serving: Mapping[str, str | None]) -> dict[str, set[StreamKey]]:
    """Demand changes grouped by the source serving their data type (unserved ones are dropped:
    nobody can subscribe them; a later route change hands the whole demand over)."""
    grouped: dict[str, set[StreamKey]] = {}
    for key in keys:
        name = serving.get(key.datatype)
        if name is not None:
            grouped.setdefault(name, set()).add(key)
    return grouped


@dataclass(frozen=True)
class Plan:
    serving: dict[str, str | None]  # data type → provider name (None: nobody can serve it now)
    wanted: dict[str, frozenset[StreamKey]]  # provider name → streams to subscribe upstream


def plan(demand: Set[StreamKey], routes: Mapping[str, list[str]], providers: Iterable[ProviderLike]) -> Plan:
    """The whole picture at once: what the hub's incremental bookkeeping must always equal."""
    providers = list(providers)
    serving = choose_providers(routes, providers)
    wanted: dict[str, frozenset[StreamKey]] = {p.name: frozenset() for p in providers} | {
        name: frozenset(keys) for name, keys in split_by_source(demand, serving).items()
    }
    return Plan(serving, wanted)
