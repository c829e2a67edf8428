"""The adapter's knobs: today's defaults, TOML-reachable through the gateway's config (unknown
keys refused with their path), and what the adapter makes of them."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse
from providers.coinapi import wire
from providers.coinapi.adapter import CoinApiAdapter
from providers.coinapi.client import Limits, Planner
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.policy import HELLO_WINDOW_MARGIN, CoinApiPolicy
from providers.coinapi.server import HELLO_LIMIT, HELLO_WINDOW
from providers.common.backoff import BackoffPolicy
from providers.common.reconnect import AUTH_RETRY_SECONDS
from schemas.streams import StreamKey


def test_the_defaults_are_todays() -> None:
    policy = CoinApiPolicy()
    assert (policy.idle_timeout, policy.stale_after, policy.ping_interval, policy.ping_timeout) == (10.0, 30.0, 20.0, 10.0)
    assert policy.auth_retry == AUTH_RETRY_SECONDS  # written out in policy.py: the pure module imports no Trio
    assert (policy.hello_limit, policy.hello_window) == (HELLO_LIMIT, HELLO_WINDOW + HELLO_WINDOW_MARGIN)
    assert policy.backoff == BackoffPolicy() and policy.exchange_map == {}


def test_every_knob_is_a_toml_key() -> None:
    config = parse(
        '[providers.ca]\nkind = "coinapi"\nemulate = true\nidle_timeout = 5\nping_interval = 2.5\n'
        'exchange_map = { okx = "OKX" }\n[providers.ca.backoff]\ninitial = 0.5\ncap = 8\n'
    )
    policy = config.providers["ca"].policy
    assert isinstance(policy, CoinApiPolicy)
    assert (policy.idle_timeout, policy.ping_interval, policy.exchange_map) == (5.0, 2.5, {"okx": "OKX"})
    assert policy.backoff == BackoffPolicy(initial=0.5, cap=8.0)
    adapter = CoinApiAdapter("ca", api_key="k", sink=lambda event: None, policy=policy)
    assert adapter.policy is policy


@pytest.mark.parametrize(
    ("line", "where"),
    [("idle_timeout = 0", "providers.ca.idle_timeout"), ("hello_limit = 0", "providers.ca.hello_limit"),
     ('tier = "pro"', "unknown field `tier`")],  # Luzia's knob, not CoinAPI's
)
def test_a_bad_knob_fails_at_start_naming_it(line: str, where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(f'[providers.ca]\nkind = "coinapi"\nemulate = true\n{line}\n', "gw.toml")
    assert str(refused.value).startswith("gw.toml: providers.ca") and where in str(refused.value)


def test_what_one_upstream_connection_may_be_asked_is_configurable() -> None:
    config = parse(
        '[providers.ca]\nkind = "coinapi"\nemulate = true\n'
        "[providers.ca.limits]\nmax_message_bytes = 4096\nmax_symbol_filters = 500\nmax_exchange_filters = 2\n"
    )
    policy = config.providers["ca"].policy
    assert isinstance(policy, CoinApiPolicy) and CoinApiPolicy().limits == Limits()
    planner = Planner(SymbolMapper(), policy.limits)
    link = planner.attach()
    refused = planner.add([StreamKey("trade", ex, f"C{i}/USDT") for ex in ("binance", "okx") for i in range(400)])
    assert planner.add([StreamKey("trade", "kraken", None)]) == [StreamKey("trade", "kraken", None)] and refused == []
    sizes = []
    while planner.pending(link) and (message := planner.update(link, "k")) is not None:
        sizes.append(len(wire.encode_client(message).encode()))
    assert len(sizes) >= 2 and max(sizes) <= 4096 and planner.target().exchange_ids == {"BINANCE"}  # 800 symbols > 500: the first of the two largest collapsed
    with pytest.raises(ConfigError):
        parse('[providers.ca]\nkind = "coinapi"\nemulate = true\n[providers.ca.limits]\nmax_message_bytes = 100\n')
