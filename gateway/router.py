"""Routing: which provider serves each data type, and what each provider is asked for. Pure.

`[routes]` maps a data type to an ordered list of provider names; the first one that is usable
(configured, able to serve the data type, not refusing our key) serves every stream of that data
type. Swapping providers is editing that list. Demand is the set of streams at least one local
client wants; each provider is asked for exactly the streams of the data types routed to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from schemas.streams import StreamKey


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    datatypes: frozenset[str]
    usable: bool


@dataclass(frozen=True)
class Plan:
    serving: dict[str, str | None]  # data type → provider name (None: nobody can serve it now)
    wanted: dict[str, frozenset[StreamKey]]  # provider name → streams to subscribe upstream


def choose_providers(routes: Mapping[str, list[str]], providers: Iterable[ProviderInfo]) -> dict[str, str | None]:
    """For each routed data type, the first provider in its list that can serve it now."""
    by_name = {p.name: p for p in providers}
    serving: dict[str, str | None] = {}
    for datatype, names in routes.items():
        serving[datatype] = next(
            (n for n in names if n in by_name and by_name[n].usable and datatype in by_name[n].datatypes),
            None,
        )
    return serving


def plan(demand: Set[StreamKey], routes: Mapping[str, list[str]], providers: Iterable[ProviderInfo]) -> Plan:
    providers = list(providers)
    serving = choose_providers(routes, providers)
    wanted: dict[str, set[StreamKey]] = {p.name: set() for p in providers}
    for key in demand:
        name = serving.get(key.datatype)
        if name is not None:
            wanted[name].add(key)
    return Plan(serving, {name: frozenset(keys) for name, keys in wanted.items()})
