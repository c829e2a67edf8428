"""LuziaAdapter facing a hostile or broken Luzia, over memory streams under fake time: hostile
frames of every class at full rate are counted and skipped while good tickers flow; a run of
`MALFORMED_RUN_LIMIT` malformed frames reconnects; malformed frames are not liveness; tens of
thousands of streams going stale are told in slices; whatever the gateway wants, nothing sent
exceeds the tier's limits, and what cannot fit is refused in our words."""

from __future__ import annotations

import logging
import random

import trio
import trio.lowlevel

from providers.common.counters import MALFORMED_RUN_LIMIT
from providers.common.emulator import FaultScript
from providers.common.market import Instrument
from providers.luzia.adapter import STALE_REPORT_SLICE, LuziaAdapter
from providers.luzia.client import SUBSCRIBE_BATCH
from providers.luzia.emulator import LuziaEmulator
from providers.luzia.grammar import tier_limits
from providers.luzia.policy import LuziaPolicy
from providers.luzia.streams import DOES_NOT_FIT
from schemas.streams import StreamKey
from tests.providers.luzia.hostile import HOSTILE_FRAMES as HOSTILE
from tests.providers.luzia.support import KEY, SEED, is_status, of_type
from tests.support.memory import memory_connector

BTC = StreamKey("ticker", "binance", "BTC/USDT")
GARBAGE = '{"type":"ticker","exchange":'
#: Well-formed on the wire, malformed to the connection: no case mapping may make it "kraken".
KELVIN_ACK = '{"type":"subscribed","channel":"ticker:\u212araken:BTC/USD"}'

async def _start(nursery, adapter: LuziaAdapter, *wanted: StreamKey) -> LuziaAdapter:
    adapter.update_wanted(set(wanted), set())
    await nursery.start(adapter.run)
    return adapter


async def test_hostile_frames_at_full_rate_are_counted_and_skipped_while_tickers_flow(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.rate = 0  # as fast as the emulator can send: no fake time passes
    emulator.interleave = [*HOSTILE, KELVIN_ACK]
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker", "BTC/USDT"), 3 * len(emulator.interleave))
    assert trio.current_time() == 0.0
    assert not recorder.matching(is_status("disconnected"))  # one connection, up all along
    health = adapter.health()
    assert health.state == "connected" and health.reconnects == 0
    tickers = [e for _, e in recorder.matching(of_type("ticker"))]
    # Each ticker came after one hostile frame (the next hostile one may be in already).
    assert len(tickers) <= health.malformed_frames <= len(tickers) + 1
    assert all(e.last.is_finite() and e.symbol == "BTC/USDT" for e in tickers)


async def test_a_run_of_malformed_frames_reconnects_and_a_good_frame_ends_the_run(autojump_clock, nursery, make_adapter, recorder, emulator):
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker"))  # t = 0.25
    for _ in range(MALFORMED_RUN_LIMIT - 1):
        await emulator.inject(GARBAGE)
    await recorder.wait_for(of_type("ticker"), 2)  # a good frame: the run is over
    for _ in range(MALFORMED_RUN_LIMIT):
        await emulator.inject(GARBAGE)
    (lost_at, lost), = await recorder.wait_for(is_status("disconnected"))
    assert lost_at == 0.5
    assert lost.reason == f"connection 0: ProviderError: {MALFORMED_RUN_LIMIT} malformed frames in a row"
    (reconnected_at, _) = (await recorder.wait_for(is_status("connected"), 2))[1]
    assert reconnected_at == 0.5 + random.Random(SEED).uniform(0.0, 1.0)  # the first backoff delay
    assert adapter.health().malformed_frames == 2 * MALFORMED_RUN_LIMIT - 1
    assert emulator.stats.connections_opened == 2


async def test_malformed_frames_are_not_liveness(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(mute_after_frames=2))  # tickers at 0.25 and 0.5, then silence
    adapter = await _start(nursery, make_adapter(ping_interval=10_000), BTC)

    async def garbage_every_ten_seconds() -> None:
        while True:
            await trio.sleep(10.0)
            await emulator.inject(GARBAGE)

    nursery.start_soon(garbage_every_ten_seconds)
    await trio.sleep_until(30.0)
    assert adapter.health().last_message_age_s == 29.5  # from the last good frame, garbage or not
    (lost_at, lost), = await recorder.wait_for(is_status("disconnected"))
    assert lost_at == 0.5 + 60.0 and "mute" in lost.reason


async def test_thousands_of_streams_going_stale_at_once_are_told_in_slices(autojump_clock, nursery, make_adapter, recorder):
    count = 10 * STALE_REPORT_SLICE + 7
    wanted = [StreamKey("ticker", "binance", f"X{i}/USDT") for i in range(count)]  # nothing ever ticks for them
    adapter = await _start(nursery, make_adapter(stale_after=5.0), *wanted)
    seen_between: list[int] = []

    async def bystander() -> None:
        """Runs whenever the loop lets it, as a client's writer would, from the moment the
        staleness check is due until everything is told (a busy task stops the fake clock)."""
        await trio.sleep_until(5.0)
        told = 0
        while told < count:
            await trio.lowlevel.checkpoint()
            now = len(recorder.matching(is_status("stale")))
            seen_between.append(now - told)
            told = now

    nursery.start_soon(bystander)
    stale = await recorder.wait_for(is_status("stale"), count)
    assert {t for t, _ in stale} == {5.0}  # all at the check 5 s after they were wanted, in fake time
    # Never more than one slice per scheduler pass; Trio may run a pass in reverse order, so two
    # slices (the end of one pass, the start of the next) can fall between two turns of another task.
    assert STALE_REPORT_SLICE <= max(seen_between) <= 2 * STALE_REPORT_SLICE
    assert sorted(e.stream for _, e in stale) == sorted(k.channel() for k in wanted)
    assert adapter.health().stale_streams == count


async def test_whatever_is_wanted_nothing_sent_exceeds_the_tiers_limits(autojump_clock, nursery, recorder):
    limits = tier_limits("pro")
    # One symbol on each of 2,000 exchanges: nothing can collapse to an exchange-wide channel.
    instruments = [Instrument(f"x{i}", "BTC/USDT") for i in range(2000)]
    emulator = LuziaEmulator(rate=4, accepted_keys={KEY}, instruments=instruments, limits=limits)
    adapter = LuziaAdapter(
        "lz", url="ws://x/v1/ws", api_key=KEY, sink=recorder, connector=memory_connector(emulator.handle_stream, nursery),
        policy=LuziaPolicy(), rng=random.Random(SEED),
    )
    await _start(nursery, adapter, *(StreamKey("ticker", i.exchange, i.symbol) for i in instruments))
    capacity = limits.connections * limits.subscriptions
    await emulator.stats.wait_for(lambda: sum(emulator.active_channels().values()) == capacity)
    await trio.sleep(5.0)
    requests = [m for m in emulator.stats.client_messages if m["type"] == "subscribe"]
    assert max(len(m["channels"]) for m in requests) == SUBSCRIBE_BATCH
    assert sum(len(m["channels"]) for m in requests) == capacity  # each sent once, none to fail
    assert [len(c) for c in emulator.connection_channels()] == [limits.subscriptions] * limits.connections
    refused = recorder.matching(is_status("rejected"))
    assert len(refused) == len(instruments) - capacity and {e.reason for _, e in refused} == {DOES_NOT_FIT}
    assert adapter.health().subscriptions == capacity and adapter.health().last_error is None  # no error earned


async def test_a_provider_repeating_errors_is_logged_at_most_once_a_second(autojump_clock, nursery, make_adapter, recorder, emulator, caplog):
    caplog.set_level(logging.WARNING)
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker"))  # t = 0.25
    for _ in range(1000):
        await emulator.inject('{"type":"error","code":"INVALID_REQUEST","message":"no"}')
    await trio.sleep_until(1.25)
    await emulator.inject('{"type":"error","code":"INVALID_REQUEST","message":"still no"}')
    await recorder.wait_for(of_type("ticker"), 6)
    lines = [r.getMessage() for r in caplog.records if "INVALID_REQUEST" in r.getMessage()]
    assert lines == ["lz: connection 0: INVALID_REQUEST ('no')", "lz: connection 0: INVALID_REQUEST ('still no'); 999 more errors since the last line"]
    assert adapter.health().last_error == "connection 0: the provider reported INVALID_REQUEST"


async def test_a_channel_the_server_drops_on_its_own_is_asked_for_again(autojump_clock, nursery, make_adapter, recorder, emulator):
    """An `unsubscribed` nobody asked for used to leave the adapter believing the channel carried
    (wanted 1, subscriptions 0, no tickers, forever)."""
    emulator.interleave = ['{"type":"unsubscribed","channel":"ticker:binance:BTC/USDT"}']
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker", "BTC/USDT"), 3)
    subscribes = [m for m in emulator.stats.client_messages
                  if m.get("type") == "subscribe" and "ticker:binance:BTC/USDT" in m.get("channels", [])]
    assert len(subscribes) >= 2  # asked again after each drop
    assert adapter.health().wanted == 1


def test_an_unsolicited_unsubscribed_forgets_the_channel_as_sent_and_a_solicited_one_does_not():
    from providers.luzia.client import Subscriptions

    subs = Subscriptions()
    subs.sync({"ticker:binance:BTC/USDT"})
    subs.subscribed("ticker:binance:BTC/USDT")
    assert subs.unsubscribed("ticker:binance:BTC/USDT") is True  # dropped by the server
    assert [m.channels for m in subs.sync({"ticker:binance:BTC/USDT"})] == [["ticker:binance:BTC/USDT"]]
    subs.subscribed("ticker:binance:BTC/USDT")
    assert [m.channels for m in subs.sync(set())] == [["ticker:binance:BTC/USDT"]]  # we drop it
    assert subs.unsubscribed("ticker:binance:BTC/USDT") is False and subs.sync(set()) == []
