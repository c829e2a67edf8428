"""Fixtures for the Luzia tests: the emulator, a recording sink, and adapters wired to both."""

from __future__ import annotations

import random

import pytest

from providers.luzia.adapter import LuziaAdapter
from providers.luzia.emulator import LuziaEmulator
from providers.luzia.policy import LuziaPolicy
from tests.providers.luzia.support import KEY, SEED, URL, Recorder
from tests.support.memory import memory_connector


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def emulator() -> LuziaEmulator:
    # 4 frames per second: every frame lands on a fake time exact in binary floating point.
    return LuziaEmulator(rate=4, accepted_keys={KEY})


@pytest.fixture
def make_adapter(nursery, emulator, recorder):
    """Build an adapter wired to the emulator over memory streams, with a seeded rng; keyword
    arguments other than `api_key` are `LuziaPolicy` fields."""

    def make(api_key: str = KEY, **policy) -> LuziaAdapter:
        return LuziaAdapter(
            "lz",
            url=URL,
            api_key=api_key,
            sink=recorder,
            policy=LuziaPolicy(**policy),
            connector=memory_connector(emulator.handle_stream, nursery),
            rng=random.Random(SEED),
        )

    return make
