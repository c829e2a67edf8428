"""Fixtures for the CoinAPI tests: the emulator, a recording sink, and adapters wired to either
the emulator or a scripted server over memory streams."""

from __future__ import annotations

import random

import pytest

from providers.coinapi import CoinApiAdapter, CoinApiEmulator
from providers.common.transport import memory_connector
from tests.providers.coinapi.support import KEY, SEED, URL, Recorder, fake_wall_ns


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def emulator() -> CoinApiEmulator:
    # 4 steps per second: every step lands on a fake time that is exact in binary floating point.
    return CoinApiEmulator(rate=4, seed=SEED, clock_ns=fake_wall_ns)


@pytest.fixture
def make_adapter(nursery, emulator, recorder):
    """An adapter wired (by default) to the emulator over memory streams, with a seeded rng."""

    def make(server=None, **options) -> CoinApiAdapter:
        handler = (server or emulator).handle_stream
        options.setdefault("api_key", KEY)
        options.setdefault("rng", random.Random(SEED))
        options.setdefault("clock_ns", fake_wall_ns)
        options.setdefault("ping_interval", None)
        return CoinApiAdapter("capi", url=URL, sink=recorder, connector=memory_connector(handler, nursery), **options)

    return make
