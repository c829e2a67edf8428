"""Fixtures for the Luzia tests: the emulator, a recording sink, and adapters wired to both."""

from __future__ import annotations

import random

import pytest

from providers.common.transport import memory_connector
from providers.luzia import LuziaAdapter, LuziaEmulator
from tests.providers.luzia.support import KEY, SEED, URL, Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def emulator() -> LuziaEmulator:
    # 4 frames per second: every frame lands on a fake time exact in binary floating point.
    return LuziaEmulator(rate=4, accepted_keys={KEY})


@pytest.fixture
def make_adapter(nursery, emulator, recorder):
    """Build an adapter wired to the emulator over memory streams, with a seeded rng."""

    def make(**options) -> LuziaAdapter:
        options.setdefault("api_key", KEY)
        options.setdefault("rng", random.Random(SEED))
        return LuziaAdapter(
            "lz", url=URL, sink=recorder, connector=memory_connector(emulator.handle_stream, nursery), **options
        )

    return make
