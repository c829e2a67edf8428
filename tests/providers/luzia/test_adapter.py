"""LuziaAdapter against the emulator, over memory streams under fake time: data for the wanted set,
exact reconnect times, resubscription, liveness timers, auth rejection, sharding, bad frames,
staleness. Delays are exact because the adapter's rng is seeded and the clock is fake."""

from __future__ import annotations

import logging
import random
from collections import Counter

import msgspec
import pytest
import trio
import trio.testing

from providers.common.emulator import FaultScript
from providers.common.reconnect import AUTH_RETRY_SECONDS
from providers.luzia.adapter import LuziaAdapter
from providers.luzia.emulator import LuziaEmulator
from providers.luzia.grammar import TierLimits
from providers.luzia.policy import LuziaPolicy
from schemas import Gap, Quote, Status, Ticker
from schemas.streams import StreamKey
from tests.providers.luzia.support import KEY, SEED, is_status, of_type, tag
from tests.support.memory import memory_connector

BTC = StreamKey("ticker", "binance", "BTC/USDT")
ETH_QUOTE = StreamKey("quote", "coinbase", "ETH/USDT")


def _jitter(*ceilings: float) -> list[float]:
    """The delays the adapter's Backoff draws from random.Random(SEED): uniform(0, ceiling) each."""
    rng = random.Random(SEED)
    return [rng.uniform(0.0, c) for c in ceilings]


def _subscribes(emulator) -> list[list[str]]:
    return [m["channels"] for m in emulator.stats.client_messages if m["type"] == "subscribe"]


async def _start(nursery, adapter: LuziaAdapter, *wanted: StreamKey) -> LuziaAdapter:
    adapter.update_wanted(set(wanted), set())
    await nursery.start(adapter.run)
    return adapter


async def test_streams_exactly_the_wanted_datatypes(autojump_clock, nursery, make_adapter, recorder, emulator):
    adapter = await _start(nursery, make_adapter(), BTC, ETH_QUOTE)
    await recorder.wait_for(of_type("ticker", "BTC/USDT"), 3)
    await recorder.wait_for(of_type("quote", "ETH/USDT"), 3)
    events = [e for _, e in recorder.events]
    assert not any(isinstance(e, Quote) and e.symbol == "BTC/USDT" for e in events)
    assert not any(isinstance(e, Ticker) and e.symbol == "ETH/USDT" for e in events)
    assert all(e.provider == "lz" for e in events)
    assert _subscribes(emulator) == [["ticker:binance:BTC/USDT", "ticker:coinbase:ETH/USDT"]]
    health = adapter.health()
    assert (health.state, health.usable, health.wanted, health.subscriptions) == ("connected", True, 2, 2)
    assert health.connections[0].state == "connected" and health.reconnects == 0


async def test_exchange_wide_channel_is_filtered_to_the_wanted_stream(autojump_clock, nursery, make_adapter, recorder, emulator):
    await _start(nursery, make_adapter(exchange_wide_threshold=1), BTC)
    await recorder.wait_for(of_type("ticker"), 5)
    assert emulator.active_channels() == Counter({"ticker:binance": 1})
    market = [e for _, e in recorder.events if not isinstance(e, Status)]
    assert {(type(e), e.symbol) for e in market} == {(Ticker, "BTC/USDT")}  # not ETH, SOL; no quotes
    assert emulator.stats.frames_sent >= 3 * 5 - 2  # the others did arrive, and were dropped


async def test_reconnects_at_the_exact_backoff_times_and_resubscribes(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(drop_after_frames=4), FaultScript(drop_after_frames=4))
    adapter = await _start(nursery, make_adapter(), BTC, ETH_QUOTE)
    connected = await recorder.wait_for(is_status("connected"), 3)
    lost = recorder.matching(is_status("disconnected"))
    first, second = _jitter(1.0, 2.0)  # the ceiling doubles: the connection was not up 60 s
    assert [t for t, _ in lost] == [1.0, pytest.approx(1.0 + first + 1.0)]  # 4 frames at 4/s
    assert [t for t, _ in connected] == [0.0, 1.0 + first, lost[1][0] + second]
    before = len(recorder.matching(of_type("ticker", "BTC/USDT")))
    await recorder.wait_for(of_type("ticker", "BTC/USDT"), before + 1)  # data flows again
    channels = ["ticker:binance:BTC/USDT", "ticker:coinbase:ETH/USDT"]
    assert _subscribes(emulator) == [channels] * 3  # the full set, after every reconnect
    assert emulator.active_channels() == Counter(channels)
    assert adapter.health().reconnects == 2


async def test_a_reconnect_reports_a_gap_for_each_stream_of_that_connection(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(drop_after_frames=4))
    await _start(nursery, make_adapter(), BTC, ETH_QUOTE)
    await recorder.wait_for(is_status("connected"), 2)
    gaps = [e for _, e in recorder.matching(lambda e: isinstance(e, Gap))]
    (delay,) = _jitter(1.0)
    assert {(g.datatype, g.exchange, g.symbol, g.cause) for g in gaps} == {
        ("ticker", "binance", "BTC/USDT", "reconnect"),
        ("quote", "coinbase", "ETH/USDT", "reconnect"),
    }
    # From the last frame before the drop (t = 1.0) to `connected` again (t = 1.0 + delay).
    assert all(g.to_ts - g.from_ts == round(delay * 1e9) for g in gaps)


async def test_mute_connection_is_caught_by_the_idle_deadline(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(mute_after_frames=2))
    adapter = await _start(nursery, make_adapter(ping_interval=10_000), BTC)
    (lost_at, lost), = await recorder.wait_for(is_status("disconnected"))
    assert lost_at == 0.5 + 60.0  # last frame at 0.5, then 60 s of silence
    assert "mute" in lost.reason
    (reconnected_at, _) = (await recorder.wait_for(is_status("connected"), 2))[1]
    assert reconnected_at == lost_at + _jitter(1.0)[0]
    assert "mute" in adapter.health().last_error


async def test_missing_pong_is_caught_by_the_pong_timeout(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(mute_after_frames=2))
    await _start(nursery, make_adapter(idle_timeout=10_000), BTC)
    (lost_at, lost), = await recorder.wait_for(is_status("disconnected"))
    assert lost_at == 30.0 + 10.0 and "pong" in lost.reason
    assert [m for m in emulator.stats.client_messages if m["type"] == "ping"] == [{"type": "ping"}]


async def test_a_server_that_never_says_connected_is_given_up_on_after_the_connect_timeout(autojump_clock, nursery, recorder):
    attempts: list[float] = []

    async def silent(stream) -> None:  # accepts TCP, never answers the upgrade
        attempts.append(trio.current_time())
        await trio.sleep_forever()

    adapter = LuziaAdapter("lz", url="ws://x/v1/ws", api_key=KEY, sink=recorder, connector=memory_connector(silent, nursery),
                           policy=LuziaPolicy(connect_timeout=5.0), rng=random.Random(SEED))
    await _start(nursery, adapter, BTC)
    await trio.sleep_until(5.0 + _jitter(1.0)[0] + 0.001)
    assert attempts == [0.0, 5.0 + _jitter(1.0)[0]]
    assert "no 'connected' within 5 s" in adapter.health().last_error
    assert not recorder.matching(is_status("disconnected"))  # nothing was connected, nothing lost


async def test_heartbeat_keeps_a_healthy_connection(autojump_clock, nursery, make_adapter, recorder, emulator):
    await _start(nursery, make_adapter(), BTC)
    await trio.sleep_until(95.0)
    assert sum(1 for m in emulator.stats.client_messages if m["type"] == "ping") == 3  # at 30, 60, 90
    assert emulator.stats.connections_opened == 1 and not recorder.matching(is_status("disconnected"))


@pytest.mark.parametrize("key", ["lz_revoked", "not-a-luzia-key"])
async def test_a_refused_key_is_retried_slowly_and_reported(autojump_clock, nursery, make_adapter, recorder, emulator, key):
    """A well-formed but unknown key gets CONNECTION_REJECTED; a malformed one an HTTP 401."""
    adapter = await _start(nursery, make_adapter(api_key=key), BTC)
    await recorder.wait_for(is_status("rejected"))
    health = adapter.health()
    assert (health.state, health.usable) == ("auth_rejected", False)
    await trio.sleep_until(1000.0)
    assert emulator.stats.connections_opened == 1 + int(1000 // AUTH_RETRY_SECONDS)  # 0, 300, 600, 900
    assert key not in msgspec.json.encode(health).decode()
    assert not recorder.matching(is_status("connected"))


async def test_a_refused_key_is_still_probed_after_demand_moved_away(autojump_clock, nursery, make_adapter, recorder, emulator):
    """The hub routes around an unusable source; the adapter keeps one slow probe, so that a key
    accepted again makes it usable again (and the hub can route back)."""
    adapter = await _start(nursery, make_adapter(api_key="lz_revoked"), BTC)
    await recorder.wait_for(is_status("rejected"))
    adapter.update_wanted(set(), {BTC})  # what the hub does when `usable` turns False
    await trio.sleep_until(650.0)
    assert emulator.stats.connections_opened == 3 and not adapter.usable  # at 0, 300, 600
    emulator.accepted_keys.add("lz_revoked")
    ((connected_at, _),) = await recorder.wait_for(is_status("connected"))
    assert connected_at == 900.0 and adapter.usable
    await emulator.stats.wait_for(lambda: emulator.stats.connections_open == 0)  # nothing to carry: retired
    await trio.sleep_until(2000.0)
    assert emulator.stats.connections_opened == 4 and adapter.health().connections == []


async def test_the_api_key_never_reaches_health_events_or_logs(autojump_clock, nursery, make_adapter, recorder, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker"))
    await emulator.inject(f'{{"type":"error","code":"INVALID_REQUEST","message":"bad request from {KEY}"}}')
    await emulator.inject(f'{{"type":"error","code":"CONNECTION_REJECTED","message":"Invalid API key {KEY}"}}')
    await recorder.wait_for(is_status("rejected"))
    texts = [caplog.text, repr(adapter), msgspec.json.encode(adapter.health()).decode()]
    texts += [msgspec.json.encode(e).decode() for _, e in recorder.events]
    assert not [t for t in texts if KEY in t]
    assert "lz_***" in caplog.text  # what the provider said is logged, redacted
    # Health and statuses carry our own words and the code, never the provider's text.
    assert "Invalid API key" not in texts[2] and "CONNECTION_REJECTED" in adapter.health().last_error
    assert not [e for _, e in recorder.events if tag(e) == "status" and "Invalid API key" in (e.reason or "")]


async def test_a_truncated_upper_cased_echo_of_the_key_is_redacted_in_logs(autojump_clock, nursery, make_adapter, recorder, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker"))
    echo = KEY.upper()[:-3]  # cut off, and in another case
    await emulator.inject(f'{{"type":"error","code":"INVALID_REQUEST","message":"bad key {echo}"}}')
    await emulator.inject(f'{{"type":"error","code":"SERVER_SHUTDOWN","message":"going down, {echo}..."}}')
    await recorder.wait_for(is_status("disconnected"))
    assert echo.lower() not in caplog.text.lower() and "going down" in caplog.text


async def test_server_shutdown_reconnects_after_a_backoff(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(shutdown_after_frames=3))
    adapter = await _start(nursery, make_adapter(), BTC)
    (lost_at, lost), = await recorder.wait_for(is_status("disconnected"))
    assert lost_at == 0.75 and "SERVER_SHUTDOWN" in lost.reason
    (reconnected_at, _) = (await recorder.wait_for(is_status("connected"), 2))[1]
    assert reconnected_at == 0.75 + _jitter(1.0)[0]
    assert adapter.health().state == "connected" and emulator.stats.connections_opened == 2


SYMBOLS = [("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("binance", "SOL/USDT"), ("coinbase", "BTC/USD"), ("kraken", "BTC/USD")]


async def test_the_wanted_set_is_sharded_at_the_limit_and_shrinks_back(autojump_clock, nursery, recorder, make_adapter, emulator):
    emulator.limits = TierLimits(3, 2)
    adapter = make_adapter(limits=TierLimits(3, 2), exchange_wide_threshold=None)
    await _start(nursery, adapter, *(StreamKey("ticker", e, s) for e, s in SYMBOLS))
    for _, symbol in SYMBOLS:
        await recorder.wait_for(of_type("ticker", symbol))
    assert sorted(len(c) for c in emulator.connection_channels()) == [1, 2, 2]
    assert set().union(*emulator.connection_channels()) == {f"ticker:{e}:{s}" for e, s in SYMBOLS}
    assert [c.subscriptions for c in adapter.health().connections] == [2, 2, 1]

    adapter.update_wanted(set(), {StreamKey("ticker", e, s) for e, s in SYMBOLS[:4]})  # kraken stays
    await trio.testing.wait_all_tasks_blocked()
    assert emulator.connection_channels() == [frozenset({"ticker:kraken:BTC/USD"})]  # surplus closed
    assert len(adapter.health().connections) == 1


async def test_a_connection_limit_refusal_backs_off_instead_of_auth_state(autojump_clock, nursery, recorder, make_adapter, emulator):
    emulator.limits = TierLimits(1, 2)  # the account allows fewer connections than configured
    adapter = make_adapter(limits=TierLimits(2, 2), exchange_wide_threshold=None)
    await _start(nursery, adapter, *(StreamKey("ticker", e, s) for e, s in SYMBOLS[:3]))
    await trio.sleep_until(20.0)
    states = sorted(c.state for c in adapter.health().connections)
    assert states[0] == "backoff" or states[0] == "connecting"
    assert states[1] == "connected" and adapter.health().usable
    assert not recorder.matching(is_status("rejected"))
    assert emulator.stats.connections_opened > 3  # retried on the backoff schedule, not every 300 s


async def test_garbage_frame_is_counted_and_skipped(autojump_clock, nursery, make_adapter, recorder, emulator):
    emulator.faults.add(FaultScript(garbage_after_frames=2))
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker"), 6)
    assert adapter.health().malformed_frames == 1
    assert emulator.stats.connections_opened == 1


async def test_unknown_and_misshapen_messages_are_counted_not_fatal(autojump_clock, nursery, make_adapter, recorder, emulator):
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker"))
    await emulator.inject('{"type":"announcement","text":"maintenance at 02:00"}')
    await emulator.inject('{"type":"ticker","exchange":"binance"}')
    await emulator.inject('{"type":"ticker","exchange":"binance","symbol":"BTC/USDT","data":{"last":1,"timestamp":"soon"}}')
    count = len(recorder.matching(of_type("ticker")))
    await recorder.wait_for(of_type("ticker"), count + 2)
    health = adapter.health()
    assert (health.unknown_messages, health.malformed_frames) == (1, 2)
    assert emulator.stats.connections_opened == 1


async def test_a_silent_stream_goes_stale_then_recovers_with_a_gap(autojump_clock, nursery, make_adapter, recorder, emulator):
    eth = next(i for i in emulator.instruments if (i.exchange, i.symbol) == ("binance", "ETH/USDT"))
    emulator.paused.add(eth)
    stream = "ticker:binance:ETH/USDT"
    adapter = await _start(nursery, make_adapter(), BTC, StreamKey("ticker", "binance", "ETH/USDT"))
    (stale_at, _), = await recorder.wait_for(is_status("stale", stream))
    assert stale_at == 30.0 and adapter.health().stale_streams == 1
    assert not recorder.matching(is_status("stale", "ticker:binance:BTC/USDT"))
    await trio.sleep_until(40.1)
    emulator.paused.clear()
    (recovered_at, _), = await recorder.wait_for(is_status("recovered", stream))
    assert recovered_at == 40.5  # ETH's next turn in the emulator's round-robin
    (gap,) = [e for _, e in recorder.matching(lambda e: isinstance(e, Gap))]
    assert (gap.cause, gap.symbol, gap.to_ts - gap.from_ts) == ("stale", "ETH/USDT", 40_500_000_000)
    assert adapter.health().stale_streams == 0


async def test_an_invalid_channel_is_reported_once_and_not_retried(autojump_clock, nursery, make_adapter, recorder, emulator):
    doge = StreamKey("ticker", "binance", "DOGE/USDT")
    adapter = await _start(nursery, make_adapter(), BTC, doge)
    (_, refused), = await recorder.wait_for(is_status("rejected", doge.channel()))
    assert "INVALID_CHANNEL" in refused.reason
    await trio.sleep_until(200.0)
    assert emulator.stats.connections_opened == 1
    assert sum(c.count("ticker:binance:DOGE/USDT") for c in _subscribes(emulator)) == 1
    assert emulator.active_channels() == Counter({"ticker:binance:BTC/USDT": 1})
    assert len(recorder.matching(is_status("rejected"))) == 1 and adapter.health().subscriptions == 1


async def test_subscription_limit_errors_lower_the_limit_and_move_channels(autojump_clock, nursery, recorder):
    emulator = LuziaEmulator(rate=4, limits=TierLimits(3, 2), announce=50)  # overstates its limit
    policy = LuziaPolicy(limits=TierLimits(3, 4), exchange_wide_threshold=None)
    adapter = LuziaAdapter(
        "lz", url="ws://x/v1/ws", api_key=KEY, sink=recorder, connector=memory_connector(emulator.handle_stream, nursery),
        policy=policy, rng=random.Random(SEED),
    )
    await _start(nursery, adapter, *(StreamKey("ticker", e, s) for e, s in SYMBOLS[:4]))
    for _, symbol in SYMBOLS[:4]:
        await recorder.wait_for(of_type("ticker", symbol))
    assert sorted(len(c) for c in emulator.connection_channels()) == [2, 2]
    assert sum(emulator.active_channels().values()) == 4
    assert not recorder.matching(is_status("rejected"))
    assert "SUBSCRIPTION_LIMIT" in adapter.health().last_error


async def test_the_limit_in_connected_is_believed_before_subscribing(autojump_clock, nursery, recorder, make_adapter, emulator):
    emulator.limits = TierLimits(3, 2)
    adapter = make_adapter(limits=TierLimits(3, 4), exchange_wide_threshold=None)
    await _start(nursery, adapter, *(StreamKey("ticker", e, s) for e, s in SYMBOLS[:4]))
    for _, symbol in SYMBOLS[:4]:
        await recorder.wait_for(of_type("ticker", symbol))
    assert sorted(len(c) for c in emulator.connection_channels()) == [2, 2]
    assert adapter.health().last_error is None  # no SUBSCRIPTION_LIMIT was ever needed


async def test_changing_the_wanted_set_unsubscribes_and_subscribes(autojump_clock, nursery, make_adapter, recorder, emulator):
    adapter = await _start(nursery, make_adapter(), BTC)
    await recorder.wait_for(of_type("ticker", "BTC/USDT"))
    adapter.update_wanted({ETH_QUOTE}, {BTC})
    await recorder.wait_for(of_type("quote", "ETH/USDT"))
    assert {"type": "unsubscribe", "channels": ["ticker:binance:BTC/USDT"]} in emulator.stats.client_messages
    assert emulator.active_channels() == Counter({"ticker:coinbase:ETH/USDT": 1})
    after = recorder.events.index(recorder.matching(of_type("quote", "ETH/USDT"))[0])
    assert not [e for _, e in recorder.events[after:] if isinstance(e, Ticker)]


def test_configuration_errors_fail_at_construction():
    with pytest.raises(ValueError, match="no WebSocket access"):
        LuziaAdapter("lz", api_key=KEY, sink=print, policy=LuziaPolicy(tier="free"))
    with pytest.raises(ValueError, match="unknown Luzia tier"):
        LuziaAdapter("lz", api_key=KEY, sink=print, policy=LuziaPolicy(tier="gold"))
    with pytest.raises(ValueError, match="api_key is empty"):
        LuziaAdapter("lz", api_key="", sink=print)


async def test_an_unknown_channel_dropped_before_its_answer_does_not_take_the_next_one_down(
    autojump_clock, nursery, make_adapter, recorder, emulator
):
    """An unknown channel, unwanted again before the server answered, earns two INVALID_CHANNEL
    answers (its subscribe, then its unsubscribe); the second must not be blamed on the channel
    subscribed in the same sync, which the server accepts."""
    bad, good = StreamKey("ticker", "binance", "NOPE/USDT"), StreamKey("ticker", "kraken", "BTC/USD")
    adapter = await _start(nursery, make_adapter(), BTC)
    await emulator.stats.wait_for(lambda: bool(emulator.active_channels()))
    adapter.update_wanted({bad}, set())
    for _ in range(2):  # the subscribe is sent; its answer is not in yet
        await trio.lowlevel.checkpoint()
    adapter.update_wanted({good}, {bad})
    await trio.sleep(5)
    assert not recorder.matching(is_status("rejected", good.channel()))
    assert set(emulator.active_channels()) == {BTC.channel(), good.channel()}
    adapter.update_wanted(set(), {good})
    await trio.sleep(5)
    assert set(emulator.active_channels()) == {BTC.channel()}  # nothing left behind upstream
