"""Luzia (api.luzia.dev): real-time tickers over WebSocket, and a quote derived from each ticker.

`LuziaAdapter` is what the gateway runs; `LuziaEmulator` / `run_standalone` are the offline
stand-in server. The rest is the pure core: `wire` (Luzia's messages), `channels` (channel
grammar), `planner` (channels per connection within the tier), `normalize` (wire → schemas).
"""

from providers.luzia.adapter import DEFAULT_URL, LuziaAdapter, websocket_url
from providers.luzia.channels import Channel, ChannelError, format_channel, parse_channel
from providers.luzia.emulator import LuziaEmulator, run_standalone
from providers.luzia.planner import TIER_LIMITS, Plan, TierLimits, plan_subscriptions

__all__ = [
    "DEFAULT_URL",
    "TIER_LIMITS",
    "Channel",
    "ChannelError",
    "LuziaAdapter",
    "LuziaEmulator",
    "Plan",
    "TierLimits",
    "format_channel",
    "parse_channel",
    "plan_subscriptions",
    "run_standalone",
    "websocket_url",
]
