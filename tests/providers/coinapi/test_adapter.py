"""The adapter against the emulator (and a few scripted servers), over memory streams under fake
time: delivery of exactly the wanted streams, reconnects at exact times, make-before-break,
liveness, auth rejection, rate-limited coalescing, gaps and counters."""

from __future__ import annotations

import logging
import random

import msgspec
import pytest
import trio
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from providers.coinapi import feed
from providers.coinapi.emulator import CoinApiEmulator
from providers.common.backoff import Backoff
from providers.common.emulator import FaultScript
from providers.common.market import Instrument
from schemas import Status, Trade
from schemas.streams import StreamKey
from tests.providers.coinapi.support import CLOSE, EPOCH_NS, KEY, SEED, ScriptedServer, fake_wall_ns, set_wanted, trade_frame

KRAKEN = StreamKey("trade", "kraken", "BTC/USD")
BITSTAMP = StreamKey("trade", "bitstamp", "BTC/USD")


def delays(count: int) -> list[float]:
    """The adapter's jittered backoff delays, from the same seed."""
    backoff = Backoff(rng=random.Random(SEED))
    return [backoff.next_delay() for _ in range(count)]


def wall(at: float) -> int:
    return EPOCH_NS + round(at * 1_000_000_000)


def last_tick(emulator: CoinApiEmulator, exchange: str, symbol: str):
    instrument = Instrument(exchange, symbol)
    return emulator.feed.tick(instrument, emulator.feed.head(instrument) - 1, 0)[0]


async def test_delivers_exactly_the_wanted_streams(autojump_clock, nursery, emulator, make_adapter, recorder) -> None:
    adapter = make_adapter()
    set_wanted(adapter, {BITSTAMP, StreamKey("quote", "coinbase", "ETH/USD"), StreamKey("ticker", "kraken", "BTC/USD")})
    await nursery.start(adapter.run)
    await trio.sleep(2.1)  # fake time: market steps at 0, 0.25, ..., 2.0
    (hello,) = emulator.connections[0].messages
    assert hello == {
        "type": "hello", "apikey": KEY, "heartbeat": True, "subscribe_data_type": ["ohlcv", "quote", "trade"],
        "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$", "COINBASE_SPOT_ETH_USD$", "KRAKEN_SPOT_BTC_USD$"],
        "subscribe_filter_period_id": ["1DAY"],
    }
    assert emulator.connections[0].key_source == "header"
    # The union filter delivers trades and quotes of all three symbols; only the wanted ones come out.
    assert {(e.exchange, e.symbol) for e in recorder.trades} == {("bitstamp", "BTC/USD")}
    assert {(e.exchange, e.symbol) for e in recorder.quotes} == {("coinbase", "ETH/USD")}
    assert {(e.exchange, e.symbol) for e in recorder.tickers} == {("kraken", "BTC/USD")}
    assert [t.sequence for t in recorder.trades] == list(range(1, 10))
    assert [t.ts_gateway for t in recorder.trades] == [wall(0.25 * i) for i in range(9)]
    assert {e.provider for _, e in recorder.items} == {"capi"}
    trade, tick = recorder.trades[-1], last_tick(emulator, "bitstamp", "BTC/USD")
    assert (trade.price, trade.size, trade.trade_id) == (tick.price, tick.size, feed.trade_uuid(SEED, "BITSTAMP_SPOT_BTC_USD", 9))
    ticker, kraken = recorder.tickers[-1], last_tick(emulator, "kraken", "BTC/USD")
    assert (ticker.last, ticker.bid, ticker.ask, ticker.open) == (kraken.price, kraken.bid, kraken.ask, kraken.open_24h)
    assert ticker.change == kraken.price - kraken.open_24h and ticker.quote_volume is None
    assert len(recorder.tickers) == 9 * 2 + 1  # a trade and a quote per step, one day candle at 0
    assert recorder.statuses[0].state == "connected" and len(recorder.statuses) == 1
    health = adapter.health()
    assert (health.state, health.usable, health.wanted, health.subscriptions, health.reconnects) == ("connected", True, 3, 3, 0)
    assert [c.state for c in health.connections] == ["connected"]


async def test_an_exchange_wide_stream_subscribes_the_exchange(autojump_clock, nursery, emulator, make_adapter, recorder):
    adapter = make_adapter()
    set_wanted(adapter, {StreamKey("trade", "coinbase", None)})
    await nursery.start(adapter.run)
    await trio.sleep(0.1)
    assert emulator.connections[0].messages[0]["subscribe_filter_exchange_id"] == ["COINBASE"]
    assert {e.symbol for e in recorder.trades} == {"BTC/USD", "ETH/USD", "ETH/USDT"}


async def test_a_drop_reconnects_after_the_jittered_delay_and_resends_everything(
    autojump_clock, nursery, emulator, make_adapter, recorder
) -> None:
    emulator.faults.add(FaultScript(drop_after_frames=4))  # trades at 0, .25, .5, .75; dropped at 1.0
    adapter = make_adapter()
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(3)
    first, second = emulator.connections[:2]
    assert first.closed_at == 1.0
    assert second.opened_at == pytest.approx(1.0 + delays(1)[0], abs=1e-9)
    assert second.messages[0] == first.messages[0]  # the full wanted set, again
    (gap,) = recorder.gaps
    assert (gap.cause, gap.datatype, gap.exchange, gap.symbol) == ("reconnect", "trade", "kraken", "BTC/USD")
    assert (gap.from_ts, gap.to_ts) == (wall(0.75), wall(second.opened_at))  # last data .. first data again
    assert [s.state for s in recorder.statuses] == ["connected", "disconnected", "connected"]
    assert recorder.statuses[1].reason == "TransportError: connection closed (code 1006)"
    sequences = [t.sequence for t in recorder.trades]
    assert sequences[:5] == [1, 2, 3, 4, 1]  # a new connection numbers afresh: no sequence gap
    assert adapter.health().reconnects == 1 and adapter.health().state == "connected"


async def test_backoff_grows_while_the_server_accepts_and_drops(autojump_clock, nursery, emulator, make_adapter) -> None:
    emulator.faults.add(*[FaultScript(drop_after_frames=0)] * 3)  # never a single frame: never healthy
    adapter = make_adapter()
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(20)
    waits = delays(3)  # ceilings 1, 2, 4 s
    expected = [0.0, waits[0], waits[0] + waits[1], waits[0] + waits[1] + waits[2]]
    assert [c.opened_at for c in emulator.connections] == pytest.approx(expected, abs=1e-9)
    assert emulator.stats.connections_open == 1


async def test_a_mute_connection_is_replaced_after_the_idle_timeout(autojump_clock, nursery, emulator, make_adapter, recorder):
    emulator.faults.add(FaultScript(mute_after_frames=3))  # the last data at 0.5, then no heartbeats either
    adapter = make_adapter(idle_timeout=10.0)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(15)
    assert emulator.connections[0].closed_at == 10.5
    assert emulator.connections[1].opened_at == pytest.approx(10.5 + delays(1)[0], abs=1e-9)
    assert recorder.statuses[1].state == "disconnected"
    assert recorder.statuses[1].reason == "ProviderError: no data for 10 s"


async def test_heartbeats_keep_a_quiet_connection_and_a_silent_stream_goes_stale(
    autojump_clock, nursery, emulator, make_adapter, recorder
) -> None:
    doge = StreamKey("trade", "kraken", "DOGE/USD")  # the emulated market has no DOGE yet
    adapter = make_adapter(idle_timeout=10.0, stale_after=5.0)
    set_wanted(adapter, {KRAKEN, doge})
    await nursery.start(adapter.run)
    await trio.sleep(6.9)
    assert recorder.when(Status, state="stale") == [5.0]
    (stale,) = [s for s in recorder.statuses if s.state == "stale"]
    assert stale.stream == "trade:kraken:DOGE/USD" and adapter.health().stale_streams == 1
    emulator.instruments.append(Instrument("kraken", "DOGE/USD"))
    await trio.sleep(0.2)
    assert recorder.when(Status, state="recovered", stream="trade:kraken:DOGE/USD") == [7.0]
    (gap,) = recorder.gaps
    assert (gap.cause, gap.symbol, gap.from_ts, gap.to_ts) == ("stale", "DOGE/USD", wall(0), wall(7.0))
    assert adapter.health().stale_streams == 0

    set_wanted(adapter, {doge})  # only DOGE now; then the market loses it again: heartbeats only
    emulator.instruments.pop()
    await trio.sleep(60)
    assert emulator.stats.connections_opened == 1  # heartbeats count as data: never "mute"
    assert adapter.health().last_message_age_s <= 1.0


async def test_a_refused_key_is_reported_and_not_hammered(autojump_clock, nursery, make_adapter, recorder, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    strict = CoinApiEmulator(rate=4, accepted_keys={"the-good-key"})
    secret = "d2a2f0e4-1111-2222-3333-444455556666"
    adapter = make_adapter(strict, api_key=secret)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1000)
    assert [c.opened_at for c in strict.connections] == [0.0, 300.0, 600.0, 900.0]
    health = adapter.health()
    # Health has the project's wording; the provider's own text is only in the log.
    assert (health.state, health.usable, health.last_error) == ("auth_rejected", False, "AuthRejected: the provider refused the key")
    assert "the provider said 'Invalid API key'" in caplog.text
    assert all(s.reason is None or "Invalid" not in s.reason for s in recorder.statuses)
    assert recorder.when(Status, state="rejected") == [0.0, 300.0, 600.0, 900.0]
    assert [s.stream for s in recorder.statuses if s.state == "stale"] == ["trade:kraken:BTC/USD"]  # no data, indeed
    for text in (caplog.text, msgspec.json.encode(health).decode(), repr(adapter), str(recorder.items)):
        assert secret not in text


async def test_an_upgrade_refused_with_401_is_a_refused_key(autojump_clock, nursery, make_adapter) -> None:
    class Refuser:
        attempts = 0

        async def handle_stream(self, stream):
            from trio_websocket import wrap_server_stream

            self.attempts += 1
            async with trio.open_nursery() as inner:
                await (await wrap_server_stream(inner, stream)).reject(401)
                inner.cancel_scope.cancel()

    refuser = Refuser()
    adapter = make_adapter(refuser)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(10)
    assert refuser.attempts == 1 and adapter.health().state == "auth_rejected"
    assert adapter.health().last_error == "AuthRejected: upgrade refused with HTTP 401"


async def test_other_errors_back_off_normally(autojump_clock, nursery, make_adapter, recorder, caplog) -> None:
    caplog.set_level(logging.INFO)
    full = '{"message":"Reached maximum allowed buffered messages for this connection.","type":"error"}'
    server = ScriptedServer([[full, CLOSE], [trade_frame("KRAKEN_SPOT_BTC_USD", 1, "u1")]])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(5)
    assert len(server.received) == 2 and [t.trade_id for t in recorder.trades] == ["u1"]
    assert recorder.when(Trade) == [pytest.approx(delays(1)[0], abs=1e-9)]
    health = adapter.health()
    assert (health.state, health.last_error) == ("connected", "ProviderError: the provider sent an error")
    assert "Reached maximum allowed buffered messages" in caplog.text  # the detail, for the operator


async def test_reconnect_notice_is_make_before_break(autojump_clock, nursery, make_adapter, recorder) -> None:
    emulator = CoinApiEmulator(rate=4, seed=SEED, clock_ns=fake_wall_ns, reconnect_within_seconds=3)
    emulator.faults.add(FaultScript(shutdown_after_frames=6))  # two trades a step: the notice at 0.75
    adapter = make_adapter(emulator)
    set_wanted(adapter, {KRAKEN, BITSTAMP})
    await nursery.start(adapter.run)
    await trio.sleep(5)
    old, new = emulator.connections
    assert new.opened_at == 0.75 and old.closed_at == 0.75  # opened first; closed by us, before the server's 3.75
    assert new.messages[0] == old.messages[0] and new.closed_at is None
    for key, symbol_id in ((KRAKEN, "KRAKEN_SPOT_BTC_USD"), (BITSTAMP, "BITSTAMP_SPOT_BTC_USD")):
        trades = [t for t in recorder.trades if t.exchange == key.exchange]
        # Every trade of the market exactly once, in order, across the switch.
        assert [t.trade_id for t in trades] == [feed.trade_uuid(SEED, symbol_id, n) for n in range(1, len(trades) + 1)]
        sequences = [t.sequence for t in trades]
        restart = sequences.index(1, 1)
        assert sequences == list(range(1, restart + 1)) + list(range(1, len(trades) - restart + 1))
    assert recorder.gaps == [] and [s.state for s in recorder.statuses] == ["connected"]
    assert adapter.health().reconnects == 0 and len(adapter.health().connections) == 1


async def test_overlap_duplicates_are_emitted_once(autojump_clock, nursery, make_adapter, recorder) -> None:
    sid = "KRAKEN_SPOT_BTC_USD"
    quote = '{"symbol_id":"KRAKEN_SPOT_BTC_USD","sequence":%d,"time_exchange":"2025-01-14T16:49:59.0000000Z","time_coinapi":"2025-01-14T16:49:59.0000001Z","ask_price":2,"ask_size":1,"bid_price":1,"bid_size":1,"type":"quote"}'
    notice = '{"within_seconds":5,"before_time":"2025-01-14T16:50:03.0000000Z","type":"reconnect"}'
    old = [trade_frame(sid, 1, "u1"), notice, 0.1, trade_frame(sid, 2, "u2"), quote % 1, trade_frame(sid, 3, "u3"), 0.5,
           trade_frame(sid, 4, "u4"), CLOSE]
    new = [0.2, trade_frame(sid, 1, "u2"), quote % 1, trade_frame(sid, 2, "u3"), trade_frame(sid, 3, "u4"), trade_frame(sid, 4, "u5")]
    server = ScriptedServer([old, new])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN, StreamKey("quote", "kraken", "BTC/USD")})
    await nursery.start(adapter.run)
    await trio.sleep(2)
    assert [t.trade_id for t in recorder.trades] == ["u1", "u2", "u3", "u4", "u5"]
    assert len(recorder.quotes) == 1 and recorder.gaps == []
    assert recorder.when(Trade, trade_id="u4") == [0.2]  # from the new connection, not the old one at 0.6


async def test_a_sequence_jump_is_a_gap(autojump_clock, nursery, make_adapter, recorder) -> None:
    script = [trade_frame("KRAKEN_SPOT_BTC_USD", 1, "a"), trade_frame("KRAKEN_SPOT_BTC_USD", 2, "b"), 1.0,
              trade_frame("BITSTAMP_SPOT_BTC_USD", 7, "x"), trade_frame("BITSTAMP_SPOT_BTC_USD", 9, "y"),  # not wanted
              trade_frame("KRAKEN_SPOT_BTC_USD", 5, "c")]
    adapter = make_adapter(ScriptedServer([script]))
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(2)
    (gap,) = recorder.gaps
    assert (gap.cause, gap.datatype, gap.symbol, gap.missed) == ("sequence", "trade", "BTC/USD", 2)
    assert (gap.from_ts, gap.to_ts) == (wall(0), wall(1.0))
    assert [t.trade_id for t in recorder.trades] == ["a", "b", "c"]


async def test_garbage_and_unknown_frames_are_counted_and_skipped(autojump_clock, nursery, make_adapter, recorder) -> None:
    script = [
        trade_frame("KRAKEN_SPOT_BTC_USD", 1, "a"),
        '{"rate":95000.1,"asset_id_base":"BTC","type":"exrate"}',  # a type we do not know
        '{"type":"trade","price":',  # not JSON
        '{"symbol_id":"KRAKEN_SPOT_BTC_USD"}',  # no type
        trade_frame("KRAKEN_SPOT_BTC_USD", 2, "b").replace("2025-01-14T16:49:58.3318050Z", "yesterday"),
        trade_frame("KRAKEN_SPOT_BTC_USD", 3, "c"),
    ]
    adapter = make_adapter(ScriptedServer([script]))
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    health = adapter.health()
    assert (health.unknown_messages, health.malformed_frames, health.reconnects) == (1, 3, 0)
    assert [t.trade_id for t in recorder.trades] == ["a", "c"]


async def test_the_emulators_garbage_fault_is_skipped(autojump_clock, nursery, emulator, make_adapter, recorder) -> None:
    emulator.faults.add(FaultScript(garbage_after_frames=2))
    adapter = make_adapter()
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1.1)
    assert adapter.health().malformed_frames == 1
    assert [t.sequence for t in recorder.trades] == [1, 2, 3, 4, 5] and recorder.gaps == []


async def test_a_burst_of_changes_is_coalesced_within_the_rate_limit(autojump_clock, nursery, emulator, make_adapter, recorder):
    adapter = make_adapter()
    symbols = [i.symbol for i in emulator.instruments if i.exchange == "binance"] + ["DOGE/USDT"]
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    for n in range(100):  # one synchronous burst: one message
        set_wanted(adapter, {KRAKEN} | {StreamKey("trade", "binance", s) for s in symbols[: 1 + n % 3]})
    await trio.sleep(1)
    assert len(emulator.connections[0].messages) == 2
    for n in range(60):  # a change every 50 ms for 3 s: many messages, never over the limit
        set_wanted(adapter, {StreamKey("quote" if n % 2 else "trade", "binance", symbols[n % 4]), KRAKEN})
        await trio.sleep(0.05)
    final = {StreamKey("quote", "binance", "ETH/USDT"), KRAKEN}
    set_wanted(adapter, final)
    await trio.sleep(30)
    sent = emulator.connections[0].messages
    assert 2 < len(sent) <= 1 + 10 + 10 + 2  # hello, the burst, then at most 10 per 10 s
    assert emulator.stats.connections_opened == 1 and emulator.connections[0].closed_at is None  # never rate-limited
    (scope,) = emulator.scopes.values()
    assert scope.wants("quote", "BINANCE_SPOT_ETH_USDT") and scope.wants("trade", "KRAKEN_SPOT_BTC_USD")
    assert not scope.wants("trade", "BINANCE_SPOT_SOL_USDT")
    recorder.items.clear()
    await trio.sleep(1)
    assert {(type(e).__name__, e.exchange, e.symbol) for _, e in recorder.items} == {
        ("Quote", "binance", "ETH/USDT"), ("Trade", "kraken", "BTC/USD")
    }


async def test_nothing_wanted_means_no_connection(autojump_clock, nursery, emulator, make_adapter, recorder) -> None:
    adapter = make_adapter()
    await nursery.start(adapter.run)
    await trio.sleep(100)
    assert emulator.stats.connections_opened == 0 and adapter.health().state == "stopped"
    set_wanted(adapter, {KRAKEN})
    await trio.sleep(1)
    assert emulator.stats.connections_opened == 1 and adapter.health().state == "connected"
    set_wanted(adapter, set())
    await trio.sleep(1)
    assert emulator.connections[0].messages[-1] == {
        "type": "unsubscribe", "subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["KRAKEN_SPOT_BTC_USD$"]
    }
    assert emulator.scopes[1].data_types == frozenset()
    recorder.items.clear()
    await trio.sleep(60)
    assert recorder.items == [] and emulator.stats.connections_opened == 1  # heartbeats keep it alive


class DeafServer:
    """Accepts, then sends a heartbeat every 0.5 s and never reads again: pings go unanswered."""

    def __init__(self) -> None:
        self.opened: list[float] = []

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        connection = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while not any(isinstance(e, Request) for e in connection.events()):
            connection.receive_data(await stream.receive_some())
        await stream.send_all(connection.send(AcceptConnection()))
        self.opened.append(trio.current_time())
        try:
            while True:
                await stream.send_all(connection.send(TextMessage(data='{"type":"hearbeat"}')))
                await trio.sleep(0.5)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client gave up on us


async def test_an_unanswered_ping_ends_the_connection(autojump_clock, nursery, make_adapter, recorder) -> None:
    deaf = DeafServer()
    adapter = make_adapter(deaf, ping_interval=5.0, ping_timeout=2.0)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(8)
    assert recorder.when(Status, state="disconnected") == [7.0]  # ping at 5, no pong by 7: cut off at once
    assert recorder.statuses[1].reason == "ProviderError: no pong within 2 s"
    assert deaf.opened == [0.0, pytest.approx(7.0 + delays(1)[0], abs=1e-9)]


async def test_an_old_connection_closing_before_its_replacement_delivers_is_a_gap(
    autojump_clock, nursery, make_adapter, recorder
) -> None:
    sid = "KRAKEN_SPOT_BTC_USD"
    notice = '{"within_seconds":0,"type":"reconnect"}'
    server = ScriptedServer([[trade_frame(sid, 1, "u1"), notice, CLOSE], [0.5, trade_frame(sid, 1, "u2")]])
    adapter = make_adapter(server)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    (gap,) = recorder.gaps
    assert (gap.cause, gap.from_ts, gap.to_ts) == ("reconnect", wall(0), wall(0.5))
    assert [t.trade_id for t in recorder.trades] == ["u1", "u2"]
    assert adapter.health().reconnects == 0 and [s.state for s in recorder.statuses] == ["connected"]


async def test_health_is_pushed_after_usable_says_it(autojump_clock, nursery, make_adapter, recorder) -> None:
    """A provider-level Status whenever `usable` may have changed, emitted once it is already true."""
    emulator = CoinApiEmulator(rate=4, seed=SEED, clock_ns=fake_wall_ns)
    emulator.faults.add(FaultScript(reject_key=True))  # the first connection's key is refused, then it works
    seen: list[tuple[str, bool]] = []
    adapter = make_adapter(emulator, auth_retry=60.0)

    def watch(event) -> None:
        if isinstance(event, Status) and event.stream is None:
            seen.append((event.state, adapter.usable))

    recorder.hooks.append(watch)
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(61)
    assert seen == [("rejected", False), ("connected", True)]
    assert recorder.when(Status, state="rejected") == [0.0] and recorder.when(Status, state="connected") == [60.0]
    assert adapter.health().usable and adapter.health().state == "connected"


async def test_one_more_stream_is_one_subscribe_of_just_it(autojump_clock, nursery, emulator, make_adapter, recorder) -> None:
    adapter = make_adapter()
    set_wanted(adapter, {KRAKEN})
    await nursery.start(adapter.run)
    await trio.sleep(1)
    adapter.update_wanted({BITSTAMP}, set())
    await trio.sleep(1)
    first, added = emulator.connections[0].messages
    assert first["type"] == "hello" and added == {
        "type": "subscribe", "heartbeat": True, "subscribe_data_type": ["trade"],
        "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$"],
    }
    assert {e.exchange for at, e in recorder.items if isinstance(e, Trade) and at > 1.1} == {"kraken", "bitstamp"}
    adapter.update_wanted(set(), {KRAKEN})  # a removal: the scope is replaced
    await trio.sleep(1)
    assert emulator.connections[0].messages[-1]["type"] == "hello"
    assert emulator.connections[0].messages[-1]["subscribe_filter_symbol_id"] == ["BITSTAMP_SPOT_BTC_USD$"]
    assert adapter.health().subscriptions == 1 and adapter.health().wanted == 1


@pytest.mark.parametrize("checkpoints", range(12))
async def test_demand_that_leaves_and_returns_while_the_first_connection_opens_is_sent(
    autojump_clock, nursery, make_adapter, recorder, checkpoints
) -> None:
    """Gone before the first hello (so it said nothing) and back: the returning demand goes out on
    that connection at once, instead of waiting for its idle timeout and a reconnect."""
    adapter = make_adapter()
    await nursery.start(adapter.run)
    adapter.update_wanted({KRAKEN}, set())
    for _ in range(checkpoints):  # how far the opening got when the demand left
        await trio.lowlevel.checkpoint()
    adapter.update_wanted(set(), {KRAKEN})
    await trio.sleep(0.001)
    back_at = trio.current_time()
    adapter.update_wanted({KRAKEN}, set())
    await trio.sleep(1.0)
    first = recorder.when(Trade)
    assert first and first[0] - back_at < 1.0  # the coalescing delay and a market step, not 10 s
    assert adapter.health().reconnects == 0
