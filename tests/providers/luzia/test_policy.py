"""`LuziaPolicy`: today's defaults, reachable from a `[providers.NAME]` TOML table, and bad values
refused with the key that holds them."""

from __future__ import annotations

import msgspec
import pytest

from providers.common.backoff import BackoffPolicy
from providers.luzia.grammar import TierLimits
from providers.luzia.policy import LuziaPolicy


def test_the_defaults_are_todays_behaviour():
    policy = LuziaPolicy()
    assert (policy.tier, policy.limits, policy.exchange_wide_threshold) == ("pro", None, 25)
    assert policy.exchanges == ("binance", "coinbase", "kraken", "bitstamp", "bitfinex", "okx", "bybit")
    timings = (policy.ping_interval, policy.pong_timeout, policy.idle_timeout, policy.stale_after)
    assert timings == (30.0, 10.0, 60.0, 30.0)
    assert (policy.connect_timeout, policy.auth_retry) == (10.0, 300.0)
    assert policy.backoff == BackoffPolicy(initial=1.0, factor=2.0, cap=30.0, stable_after=60.0)


def test_a_toml_table_converts_into_the_policy():
    table = {"tier": "enterprise", "exchanges": ["Binance", "okx"], "exchange_wide_threshold": None,
             "limits": {"connections": 2, "subscriptions": 10}, "backoff": {"cap": 5}}
    policy = msgspec.convert(table, LuziaPolicy)
    assert (policy.tier, policy.exchanges, policy.exchange_wide_threshold) == ("enterprise", ("Binance", "okx"), None)
    assert policy.limits == TierLimits(2, 10) and policy.backoff.cap == 5


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ({"tier": "gold"}, "$.tier"),
        ({"exchanges": ["no spaces"]}, "$.exchanges[0]"),
        ({"ping_interval": 0}, "$.ping_interval"),
        ({"exchange_wide_threshold": 0}, "$.exchange_wide_threshold"),
        ({"limits": {"connections": 1}}, "$.limits"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_values_are_refused_naming_their_key(table, where):
    with pytest.raises(msgspec.ValidationError, match=where.replace("$", r"\$").replace("[", r"\[")):
        msgspec.convert(table, LuziaPolicy)


@pytest.mark.parametrize("limits", [{"connections": 10**9, "subscriptions": 50}, {"connections": 5, "subscriptions": 0},
                                    {"connections": 0, "subscriptions": 50}, {"connections": 5, "subscriptions": 10**7}])
def test_a_plan_beyond_any_luzia_plan_is_refused_at_start(limits):
    with pytest.raises(msgspec.ValidationError, match="limits: connections must be"):
        msgspec.convert({"limits": limits}, LuziaPolicy)
