"""The adapter under a hostile or unlucky upstream, over memory streams under fake time: malformed
frames are counted and never liveness, a run of them reconnects, provider text stays out of
health, hellos stay inside CoinAPI's limits, the make-before-break de-duplication is bounded, and
tens of thousands of streams going stale at once are reported a slice at a time."""

from __future__ import annotations

import itertools
import json
import logging
import random

import pytest
import trio
import trio.lowlevel

from providers.coinapi import client, streams, wire
from providers.coinapi.adapter import DOES_NOT_FIT
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.streams import DEDUPE_WINDOW, STALE_SLICE, StreamRouter
from providers.common.backoff import Backoff
from providers.common.counters import MALFORMED_RUN_LIMIT
from providers.common.emulator import FaultScript
from providers.common.errors import MalformedFrame
from schemas import Event, Gap, Status, Trade
from schemas.streams import StreamKey
from tests.providers.coinapi.hostile import PATHOLOGICAL
from tests.providers.coinapi.support import CLOSE, SEED, ScriptedServer, set_wanted, trade_frame

SID = "KRAKEN_SPOT_BTC_USD"
KRAKEN = StreamKey("trade", "kraken", "BTC/USD")
GARBAGE = ['{"type":"trade","price":', '{"type":"trade","price":"NaN"}', "[" * 100_000, b"\xff\xfe"]
#: What a WebSocket can carry of the pathological frames (a text frame cannot hold a lone surrogate).
SENDABLE = [f for f in PATHOLOGICAL if isinstance(f, bytes) or not any("\ud800" <= c <= "\udfff" for c in f)]
NOTICE = '{"within_seconds":5,"before_time":"2025-01-14T16:50:03.0000000Z","type":"reconnect"}'


def first_delay() -> float:
    return Backoff(rng=random.Random(SEED)).next_delay()


def garbage(count: int) -> list[str | bytes]:
    return [GARBAGE[i % len(GARBAGE)] for i in range(count)]


# ---------------------------------------------------------------------------- malformed frames


async def test_a_run_of_malformed_frames_reconnects_that_connection(autojump_clock, nursery, make_adapter, recorder) -> None:
    server = ScriptedServer([garbage(MALFORMED_RUN_LIMIT), [trade_frame(SID, 1, "u1")]])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(first_delay() + 1)
    health = adapter.health()
    assert len(server.received) == 2 and [t.trade_id for t in recorder.trades] == ["u1"]
    assert (health.malformed_frames, health.reconnects) == (MALFORMED_RUN_LIMIT, 1)
    assert health.last_error == f"ProviderError: {MALFORMED_RUN_LIMIT} malformed frames in a row"


async def test_malformed_frames_among_good_ones_are_counted_and_skipped(autojump_clock, nursery, make_adapter, recorder) -> None:
    run = MALFORMED_RUN_LIMIT - 1
    script = [*garbage(run), trade_frame(SID, 1, "u1"), *SENDABLE, *garbage(run - len(SENDABLE)), trade_frame(SID, 2, "u2")]
    server = ScriptedServer([script])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    health = adapter.health()
    assert [t.trade_id for t in recorder.trades] == ["u1", "u2"] and len(server.received) == 1
    # One of the pathological frames is a well-formed object of an unknown type (a 100,000-letter one).
    assert (health.malformed_frames, health.unknown_messages) == (2 * run - 1, 1)
    assert (health.reconnects, health.state) == (0, "connected")


async def test_malformed_frames_are_not_liveness(autojump_clock, nursery, make_adapter) -> None:
    """A connection sending only garbage (slower than the run limit) is mute: the idle deadline ends it."""
    server = ScriptedServer([[x for frame in garbage(40) for x in (frame, 0.5)]])
    adapter = make_adapter(server, idle_timeout=10.0)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(9.9)
    assert adapter.health().last_message_age_s is None and len(server.received) == 1  # 19 garbage frames: no age
    await trio.sleep(first_delay() + 0.2)
    health = adapter.health()
    assert len(server.received) == 2 and health.last_error == "ProviderError: no data for 10 s"


# ---------------------------------------------------------------------------- provider free text


async def test_provider_error_text_reaches_only_the_log_and_redacted(autojump_clock, nursery, make_adapter, recorder, caplog) -> None:
    caplog.set_level(logging.INFO)
    secret = "AbCdEf12-secret-key-9999"
    text = f"Over quota for {secret.upper()} (was {secret[:12]}…)" + "!" * 50_000
    server = ScriptedServer([[json.dumps({"message": text, "type": "error"}), CLOSE]])
    adapter = make_adapter(server, api_key=secret)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    health = adapter.health()
    assert health.last_error == "ProviderError: the provider sent an error" and health.reconnects == 1
    assert "Over quota for ***" in caplog.text and len(caplog.text) < 5_000
    for where in (caplog.text.lower(), str(health).lower(), str(recorder.items).lower()):
        assert secret[:8].lower() not in where and "-key-9999" not in where
    assert all("quota" not in (s.reason or "") for s in recorder.statuses)


# ---------------------------------------------------------------------------- CoinAPI's limits


@pytest.mark.parametrize(
    ("datatypes", "per_exchange", "collapsed"),
    [
        (("trade",), 2_000, 8),  # 20,000 symbols: more than 5,000 symbol filters
        (("ticker", "book"), 480, 2),  # 4,800 symbols, but 4 upstream types: a server holds 4,095 of each
    ],
)
async def test_a_huge_scope_goes_out_in_messages_within_coinapi_limits(
    autojump_clock, nursery, emulator, make_adapter, datatypes, per_exchange, collapsed
) -> None:
    exchanges = [f"ex{i}" for i in range(10)]
    wanted = {StreamKey(dt, ex, f"C{i}/USDT") for dt in datatypes for ex in exchanges for i in range(per_exchange)}
    adapter = make_adapter()
    set_wanted(adapter, wanted)
    await nursery.start(adapter.run)
    await trio.sleep(30)
    (record,) = emulator.connections
    sizes = [len(json.dumps(m, separators=(",", ":")).encode()) for m in record.messages]
    assert record.closed_at is None and max(sizes) <= client.MAX_MESSAGE_BYTES and len(sizes) >= 2
    scope = emulator.scopes[record.id]
    assert scope.wants("trade", f"EX0_SPOT_C{per_exchange - 1}_USDT") and scope.wants("trade", "EX9_SPOT_C0_USDT")
    # Beyond what fits, the largest exchanges went exchange-wide; the server refused nothing.
    assert adapter.health().subscriptions == collapsed + per_exchange * (10 - collapsed)
    assert scope.size <= client.MAX_SCOPE_ITEMS and adapter.health().reconnects == 0


async def test_a_stream_that_cannot_fit_is_rejected_and_never_sent(autojump_clock, nursery, emulator, make_adapter, recorder) -> None:
    adapter = make_adapter()
    many = {StreamKey("trade", f"ex{i}", None) for i in range(client.MAX_EXCHANGE_FILTERS)}
    set_wanted(adapter, many)
    one_more = StreamKey("trade", "one-more", "BTC/USDT")
    adapter.update_wanted({one_more}, set())
    await nursery.start(adapter.run)
    await trio.sleep(1)
    (rejected,) = [s for s in recorder.statuses if s.state == "rejected"]
    assert (rejected.stream, rejected.reason) == ("trade:one-more:BTC/USDT", DOES_NOT_FIT)
    assert one_more not in adapter.wanted and "ONE-MORE" not in json.dumps(emulator.connections[0].messages)
    assert emulator.connections[0].closed_at is None


# ---------------------------------------------------------------------------- make-before-break


def _router(events: list[Event]) -> StreamRouter:
    router = StreamRouter("capi", SymbolMapper(), events.append, stale_after=30.0)
    router.add([KRAKEN], 0.0)
    return router


def _route(router: StreamRouter, uuid: str, now: float) -> None:
    message = wire.decode_server(trade_frame(SID, 1, uuid))
    assert isinstance(message, wire.Trade)
    router.route({}, message, 1_736_873_398_000_000_000, now)


def test_the_overlap_remembers_at_most_its_limit(monkeypatch) -> None:
    monkeypatch.setattr(streams, "DEDUPE_LIMIT", 3)
    router = _router([])
    router.begin_overlap(0.0)
    for i in range(5):
        _route(router, f"u{i}", 0.1)
    assert router.remembered == 3


def test_the_overlap_and_its_dedupe_set_are_bounded_in_time() -> None:
    events: list[Event] = []
    router = _router(events)
    router.begin_overlap(0.0)
    _route(router, "u1", 1.0)
    router.check_stale(DEDUPE_WINDOW + 0.5)  # the replacement never took over: forgotten
    assert router.remembered == 0
    router.begin_overlap(20.0)
    _route(router, "u2", 20.0)
    router.switched(21.0)
    assert router.remembered == 1
    router.check_stale(21.0 + DEDUPE_WINDOW + 0.1)  # no message needed to let go
    assert router.remembered == 0
    _route(router, "u2", 32.0)
    assert [t.trade_id for t in events if isinstance(t, Trade)] == ["u1", "u2", "u2"]  # nothing held back


async def test_the_overlap_is_dropped_when_the_replacement_fails(autojump_clock, nursery, make_adapter, recorder) -> None:
    old = [trade_frame(SID, 1, "u1"), NOTICE, 0.1, trade_frame(SID, 2, "u2"), trade_frame(SID, 3, "u3")]
    server = ScriptedServer([old, [CLOSE]])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(0.05)
    assert adapter._router.remembered == 0 and len(server.received) == 2  # the replacement is connecting
    await trio.sleep(0.1)
    assert [t.trade_id for t in recorder.trades] == ["u1", "u2", "u3"]
    assert adapter._router.remembered == 0 and adapter.health().reconnects == 0  # old carries on, nothing held


# ---------------------------------------------------------------------------- staleness at scale


def _counter(recorder, matches) -> list[int]:
    """A one-element list counting the recorded events that `matches`, as they arrive."""
    count = [0]
    recorder.hooks.append(lambda event: count.__setitem__(0, count[0] + bool(matches(event))))
    return count


async def _steps_until(count: list[int], total: int) -> list[int]:
    """How many counted events arrived between each two of our checkpoints, until `total`."""
    seen = [count[0]]
    for _ in range(2_000):  # bounded: the slices must end well before
        await trio.lowlevel.checkpoint()
        seen.append(count[0])
        if seen[-1] >= total:
            break
    return [b - a for a, b in itertools.pairwise(seen)]


# Trio runs each batch of ready tasks in a random order: between two of our checkpoints the
# reporting task may have run once in each of two batches, never more.
MOST_PER_STEP = 2 * STALE_SLICE


async def test_forty_thousand_streams_going_stale_at_once_are_reported_a_slice_at_a_time(
    autojump_clock, nursery, make_adapter, recorder
) -> None:
    wanted = {StreamKey("trade", "binance", f"C{i}/USDT") for i in range(40_000)}
    adapter = make_adapter(stale_after=30.0)
    set_wanted(adapter, wanted)
    await nursery.start(adapter.run)
    stale = _counter(recorder, lambda event: type(event) is Status and event.state == "stale")
    await trio.sleep_until(30.0)  # the watchdog's tick that finds them all stale
    steps = await _steps_until(stale, len(wanted))
    assert stale[0] == 40_000 and max(steps) <= MOST_PER_STEP and len(steps) >= 40_000 // MOST_PER_STEP
    assert trio.current_time() == 30.0  # every slice ran at one moment: a checkpoint between, no delay


async def test_forty_thousand_streams_lost_with_a_connection_get_their_gaps_a_slice_at_a_time(
    autojump_clock, nursery, emulator, make_adapter, recorder
) -> None:
    emulator.faults.add(FaultScript(drop_after_frames=2))
    wanted = {StreamKey("trade", "binance", f"C{i}/USDT") for i in range(40_000)} | {KRAKEN}
    adapter = make_adapter(stale_after=3600.0)
    set_wanted(adapter, wanted)
    await nursery.start(adapter.run)
    gaps = _counter(recorder, lambda event: type(event) is Gap and event.cause == "reconnect")
    await emulator.stats.wait_for(lambda: emulator.stats.connections_opened == 2)
    steps = await _steps_until(gaps, len(wanted))
    assert gaps[0] == len(wanted) and max(steps) <= MOST_PER_STEP and len(steps) >= len(wanted) // MOST_PER_STEP


def test_loss_reports_waiting_are_bounded_and_merged_into_a_wider_window() -> None:
    events: list[Event] = []
    router = _router(events)
    router.add([StreamKey("trade", "kraken", "ETH/USD")], 0.0)
    for i in range(streams.GAP_BATCHES + 2):
        router.queue_gaps([KRAKEN], from_ns=10 + i, to_ns=20 + i)
    while router.report_gaps():
        pass
    windows = [(g.from_ts, g.to_ts) for g in events if isinstance(g, Gap)]
    assert len(windows) == streams.GAP_BATCHES  # the last three came as one, spanning all three
    assert windows[-1] == (10 + streams.GAP_BATCHES - 1, 20 + streams.GAP_BATCHES + 1)


def test_a_stream_that_delivers_or_leaves_before_its_turn_is_not_reported() -> None:
    events: list[Event] = []
    router = StreamRouter("capi", SymbolMapper(), events.append, stale_after=30.0)
    keys = [StreamKey("trade", "kraken", "BTC/USD"), StreamKey("trade", "kraken", "ETH/USD"), StreamKey("trade", "kraken", "SOL/USD")]
    router.add(keys, 0.0)
    router.check_stale(30.0)
    assert router.report_stale(1, limit=1) is True  # BTC/USD reported; two queued
    router.remove([keys[2]])
    _route(router, "u1", 30.5)  # a BTC/USD trade: it was reported, so it recovers
    message = wire.decode_server(trade_frame("KRAKEN_SPOT_ETH_USD", 1, "e1"))
    assert isinstance(message, wire.Trade)
    router.route({}, message, 2, 30.5)  # ETH/USD delivered before its turn
    assert router.report_stale(3) is False
    statuses = [(e.state, e.stream) for e in events if isinstance(e, Status)]
    assert statuses == [("stale", "trade:kraken:BTC/USD"), ("recovered", "trade:kraken:BTC/USD")]


@pytest.mark.parametrize("count", [0, 1, STALE_SLICE, STALE_SLICE + 1])
def test_report_stale_says_whether_more_are_queued(count: int) -> None:
    router = StreamRouter("capi", SymbolMapper(), lambda event: None, stale_after=1.0)
    router.add([StreamKey("trade", "kraken", f"C{i}/USD") for i in range(count)], 0.0)
    router.check_stale(1.0, limit=None)
    assert router.report_stale(0) is (count > STALE_SLICE)


@pytest.mark.parametrize("count", [0, 1, STALE_SLICE, STALE_SLICE + 1])
def test_check_stale_finds_a_burst_a_slice_at_a_time(count: int) -> None:
    router = StreamRouter("capi", SymbolMapper(), lambda event: None, stale_after=1.0)
    router.add([StreamKey("trade", "kraken", f"C{i}/USD") for i in range(count)], 0.0)
    assert router.check_stale(1.0) is (count >= STALE_SLICE)  # True: call again, more may be stale
    assert len(router._unreported) == min(count, STALE_SLICE)


def test_sequence_counters_per_connection_are_bounded(monkeypatch) -> None:
    """A server delivering ever new symbols (wanted or not) cannot grow a connection's state."""
    monkeypatch.setattr(streams, "SEQUENCE_LIMIT", 2)
    router = _router([])
    sequences: streams.Sequences = {}
    for base in ("A", "B", "C", "D", "E"):
        message = wire.decode_server(trade_frame(f"KRAKEN_SPOT_{base}_USD", 1, base))
        assert isinstance(message, wire.Trade)
        router.route(sequences, message, 1_736_873_398_000_000_000, 1.0)
    assert 1 <= len(sequences) <= 2


async def test_a_frame_of_megabytes_is_one_malformed_frame_not_a_reconnect(autojump_clock, nursery, make_adapter, recorder) -> None:
    """trio-websocket's default 1 MiB message limit used to end the connection (every stream of
    the provider paused until the reconnect); up to `MAX_PROVIDER_MESSAGE` it is the decoders'."""
    huge = '{"type":"trade","symbol_id":"' + "X" * (3 * 1024 * 1024) + '"}'
    server = ScriptedServer([[trade_frame(SID, 1, "u1"), huge, trade_frame(SID, 2, "u2")]])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    health = adapter.health()
    assert [t.trade_id for t in recorder.trades] == ["u1", "u2"]
    assert (health.malformed_frames, health.reconnects) == (1, 0)


@pytest.mark.parametrize("symbol_id", ["KRAKEN_SPOT_BTC_USß", "\u212aRAKEN_SPOT_BTC_USD"])
def test_a_non_ascii_symbol_id_is_a_counted_malformed_frame(symbol_id: str) -> None:
    router = StreamRouter("capi", SymbolMapper(), lambda event: None, stale_after=30.0)
    router.add([KRAKEN], 0.0)
    message = wire.decode_server(trade_frame(symbol_id, 1, "u1"))
    with pytest.raises(MalformedFrame):  # the adapter counts it (before, it vanished uncounted)
        router.route({}, message, 1, 1.0)
