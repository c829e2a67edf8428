"""Provider kinds by name: how the gateway builds a kind's policy, adapter and emulator.

The gateway's config names a `kind`; this table is the only place that maps it to code, so adding a
provider is a new package plus one entry here. Imports are lazy and by name: reading this table,
or a kind's policy (a pure msgspec Struct), loads no Trio and no adapter; `make_adapter` and
`make_emulator` import the kind's Trio shells when they are really needed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import trio

    from providers.base import EventSink, Source
    from providers.common.transport import Connector


class Emulator(Protocol):
    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = ...) -> None: ...

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (a socket, or one end of an in-memory stream pair)."""


def _load(path: str) -> Any:
    """`package.module:Name` → the object, imported now."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ProviderKind:
    name: str
    emulator_path: str  # the URL path its emulator (and the real service) serves WebSocket on
    emulator_key: str  # a well-formed key the emulator accepts (and obviously not a secret)
    policy: str  # `module:Struct` of the adapter's knobs
    adapter: str  # `module:Class` of the adapter (a `providers.base.Source`)
    emulator: str  # `module:Class` of the emulator

    def policy_type(self) -> type:
        policy_type: type = _load(self.policy)
        return policy_type

    def make_adapter(
        self, name: str, url: str, api_key: str, sink: EventSink, policy: object, connector: Connector | None = None
    ) -> Source:
        """`connector`: how to reach the provider (default: a real socket, `transport.connect_tcp`)."""
        extra = {} if connector is None else {"connector": connector}
        adapter: Source = _load(self.adapter)(name, url=url, api_key=api_key, sink=sink, policy=policy, **extra)
        return adapter

    def make_emulator(self, rate: float) -> Emulator:
        """`rate`: market steps per second per connection (0: full speed)."""
        emulator: Emulator = _load(self.emulator)(rate=rate)
        return emulator


KINDS: dict[str, ProviderKind] = {
    "luzia": ProviderKind(
        "luzia",
        "/v1/ws",
        "lz_local_emulator",
        "providers.luzia.policy:LuziaPolicy",
        "providers.luzia.adapter:LuziaAdapter",
        "providers.luzia.emulator:LuziaEmulator",
    ),
    "coinapi": ProviderKind(
        "coinapi",
        "/v1/",
        "00000000-0000-0000-0000-000000000000",
        "providers.coinapi.policy:CoinApiPolicy",
        "providers.coinapi.adapter:CoinApiAdapter",
        "providers.coinapi.emulator:CoinApiEmulator",
    ),
}
