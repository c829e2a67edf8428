"""`LuziaPolicy`: every knob of one Luzia adapter, with today's defaults. Pure.

Owns: the names and defaults of the adapter's timings, tier, exchanges and backoff. The gateway's
config passes every key of a `[providers.NAME]` table (other than kind, url, api_key_env, emulate,
emulator_rate) into this Struct, so a field name here is a TOML key, and a bad value fails at start
with its key path (`providers.luzia.tier: Invalid enum value 'gold'`).
Never: holds a secret (the key is the adapter's argument, from the environment), or reads a clock.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from providers.common.backoff import BackoffPolicy
from providers.luzia.grammar import TierLimits

_Seconds = Annotated[float, msgspec.Meta(gt=0)]
_Exchange = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.]{0,31}$")]  # any case: read canonically

#: Luzia's documented heartbeat period; the SDKs ping this often.
PING_INTERVAL: Final = 30.0
PONG_TIMEOUT: Final = 10.0
#: Upgrade + `connected`; a server that accepts but never says `connected` is as good as down.
CONNECT_TIMEOUT: Final = 10.0
#: A rejected key is retried this rarely (the reconnect loop's own default, repeated as a knob).
AUTH_RETRY: Final = 300.0
#: Half a Pro connection's subscriptions: past this, one exchange-wide subscription is cheaper in
#: the scarce resource (slots) than the bandwidth it costs. Luzia's own advice is symbol channels
#: "when possible", hence not lower.
EXCHANGE_WIDE_THRESHOLD: Final = 25
#: The exchanges a stream of every exchange (`StreamKey(dt, None, None)`, native `ticker:*`) is
#: expanded to: Luzia has no channel for "everything", so it is one `ticker:{exchange}` per
#: exchange. An exchange the server does not list is refused (INVALID_CHANNEL) like any channel.
EXCHANGES: Final = ("binance", "coinbase", "kraken", "bitstamp", "bitfinex", "okx", "bybit")
#: A negotiated plan's limits, at most: ten times Enterprise's connections and a hundred times its
#: subscriptions. The adapter keeps a slot per connection the plan allows, so a typo of a few
#: zeros must fail at start, not allocate (and plan over) millions of slots.
MAX_PLAN_CONNECTIONS: Final = 250
MAX_PLAN_SUBSCRIPTIONS: Final = 50_000


class LuziaPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tier: Literal["pro", "enterprise"] = "pro"
    #: The tier's limits, when the account's differ from the documented ones (a negotiated plan).
    limits: TierLimits | None = None
    exchanges: tuple[_Exchange, ...] = EXCHANGES
    #: Symbols of one exchange from which its exchange-wide channel is used; None: only when a
    #: whole exchange is wanted, or when the symbol channels would not fit the tier.
    exchange_wide_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = EXCHANGE_WIDE_THRESHOLD
    ping_interval: _Seconds = PING_INTERVAL
    pong_timeout: _Seconds = PONG_TIMEOUT
    idle_timeout: _Seconds = 60.0  # data silence on one connection ("connected but mute")
    stale_after: _Seconds = 30.0  # data silence on one wanted stream
    connect_timeout: _Seconds = CONNECT_TIMEOUT
    auth_retry: _Seconds = AUTH_RETRY
    backoff: BackoffPolicy = BackoffPolicy()

    def __post_init__(self) -> None:
        limits = self.limits
        if limits is None:
            return
        if not (1 <= limits.connections <= MAX_PLAN_CONNECTIONS and 1 <= limits.subscriptions <= MAX_PLAN_SUBSCRIPTIONS):
            raise ValueError(
                f"limits: connections must be 1..{MAX_PLAN_CONNECTIONS} and subscriptions 1..{MAX_PLAN_SUBSCRIPTIONS}"
            )
