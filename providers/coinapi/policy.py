"""The CoinAPI adapter's knobs, as one frozen Struct with today's defaults. Pure.

Reachable from TOML: every key of a `[providers.NAME]` table of kind `coinapi` other than
kind/url/api_key_env/emulate/emulator_rate is a field here (`[providers.NAME.backoff]` is the
`BackoffPolicy`, `[providers.NAME.limits]` the planner's `client.Limits`: what one upstream
connection may be asked). Unknown keys are refused, so a typo fails at start with its key path.
Must never: hold a secret (the key comes from the environment, never from this Struct).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from providers.coinapi.client import Limits
from providers.common.backoff import BackoffPolicy

_Seconds = Annotated[float, msgspec.Meta(gt=0)]

#: Added to CoinAPI's 10 s hello window: the server measures arrival times, which network
#: jitter moves closer together than our send times.
HELLO_WINDOW_MARGIN: Final = 0.5


class CoinApiPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    #: canonical exchange id → CoinAPI exchange id, beyond the built-in ones (`okx = "OKEX"`).
    exchange_map: dict[str, str] = msgspec.field(default_factory=dict)
    #: A connection with no frame (data or heartbeat) for this long is dead ("connected but mute").
    idle_timeout: _Seconds = 10.0
    #: A wanted stream with no data for this long is reported stale.
    stale_after: _Seconds = 30.0
    #: Transport pings (None: none) and how long a pong may take.
    ping_interval: _Seconds | None = 20.0
    ping_timeout: _Seconds = 10.0
    #: A refused key is retried this rarely (`providers.common.reconnect.AUTH_RETRY_SECONDS`).
    auth_retry: _Seconds = 300.0
    #: CoinAPI's hello rate: at most `hello_limit` hello/subscribe messages per `hello_window` s.
    hello_limit: Annotated[int, msgspec.Meta(ge=1)] = 10
    hello_window: _Seconds = 10.0 + HELLO_WINDOW_MARGIN
    backoff: BackoffPolicy = msgspec.field(default_factory=BackoffPolicy)
    limits: Limits = msgspec.field(default_factory=Limits)
