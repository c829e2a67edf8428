"""Provider kinds by name: how the gateway builds an adapter or an emulator of each kind.

The gateway's config names a `kind`; this table is the only place that maps it to code, so adding a
provider is a new package plus one entry here. Imports are lazy: a kind's code loads when used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from providers.base import Adapter, EventSink


class Emulator(Protocol):
    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = ...) -> None: ...


@dataclass(frozen=True)
class ProviderKind:
    name: str
    emulator_path: str  # the URL path its emulator (and the real service) serves WebSocket on
    make_adapter: Callable[[str, str, str, EventSink, Mapping[str, Any]], Adapter]  # name, url, key, sink, options
    make_emulator: Callable[[float], Emulator]  # market steps per second per connection (0: full speed)


def _luzia_adapter(name: str, url: str, api_key: str, sink: EventSink, options: Mapping[str, Any]) -> Adapter:
    from providers.luzia.adapter import LuziaAdapter  # noqa: PLC0415 - lazy by design

    return LuziaAdapter(name, url=url, api_key=api_key, sink=sink, tier=options.get("tier", "pro"))


def _luzia_emulator(rate: float) -> Emulator:
    from providers.luzia.emulator import LuziaEmulator  # noqa: PLC0415

    return LuziaEmulator(rate=rate)


def _coinapi_adapter(name: str, url: str, api_key: str, sink: EventSink, options: Mapping[str, Any]) -> Adapter:
    from providers.coinapi.session import CoinApiAdapter  # noqa: PLC0415

    return CoinApiAdapter(name, url=url, api_key=api_key, sink=sink, exchange_map=options.get("exchange_map") or None)


def _coinapi_emulator(rate: float) -> Emulator:
    from providers.coinapi.emulator import CoinApiEmulator  # noqa: PLC0415

    return CoinApiEmulator(rate=rate)


KINDS: dict[str, ProviderKind] = {
    "luzia": ProviderKind("luzia", "/v1/ws", _luzia_adapter, _luzia_emulator),
    "coinapi": ProviderKind("coinapi", "/v1/", _coinapi_adapter, _coinapi_emulator),
}
