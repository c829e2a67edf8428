"""Fixtures for the CoinAPI tests: the emulator, a recording sink, and adapters wired to either
the emulator or a scripted server over memory streams."""

from __future__ import annotations

import random

import pytest

from providers.coinapi.adapter import CoinApiAdapter
from providers.coinapi.emulator import CoinApiEmulator
from providers.coinapi.policy import CoinApiPolicy
from tests.providers.coinapi.support import KEY, SEED, URL, Recorder, fake_wall_ns
from tests.support.memory import memory_connector


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def emulator() -> CoinApiEmulator:
    # 4 steps per second: every step lands on a fake time that is exact in binary floating point.
    return CoinApiEmulator(rate=4, seed=SEED, clock_ns=fake_wall_ns)


@pytest.fixture
def make_adapter(nursery, emulator, recorder):
    """An adapter wired (by default) to the emulator over memory streams, with a seeded rng;
    keyword options are `CoinApiPolicy` fields (no transport pings unless asked)."""

    def make(server=None, *, api_key: str = KEY, **policy) -> CoinApiAdapter:
        handler = (server or emulator).handle_stream
        policy.setdefault("ping_interval", None)
        return CoinApiAdapter(
            "capi", url=URL, api_key=api_key, sink=recorder, policy=CoinApiPolicy(**policy),
            connector=memory_connector(handler, nursery), rng=random.Random(SEED), clock_ns=fake_wall_ns,
        )

    return make
