"""LuziaAdapter serving streams of every exchange (`StreamKey(dt, None, None)`, native `ticker:*`):
expanded to one exchange-wide channel per configured exchange, under fake time over memory streams."""

from __future__ import annotations

from collections import Counter

from providers.luzia.policy import EXCHANGES as DEFAULT_EXCHANGES
from providers.luzia.streams import expand_every_exchange
from schemas import Quote, Status, Ticker
from schemas.streams import StreamKey
from tests.providers.luzia.support import is_status, of_type

EVERY_TICKER = StreamKey("ticker", None, None)
EVERY_QUOTE = StreamKey("quote", None, None)
#: The emulator's default market has these; `bybit` (a default exchange) it refuses.
EMULATED_EXCHANGES = {"binance", "coinbase", "bitstamp", "bitfinex", "kraken", "okx"}


def test_expansion_is_per_exchange_and_leaves_other_keys_alone():
    btc = StreamKey("ticker", "binance", "BTC/USDT")
    assert expand_every_exchange({EVERY_TICKER, btc, EVERY_QUOTE}, ("binance", "kraken")) == {
        StreamKey("ticker", "binance", None),
        StreamKey("ticker", "kraken", None),
        StreamKey("quote", "binance", None),
        StreamKey("quote", "kraken", None),
        btc,
    }
    assert expand_every_exchange({btc}, DEFAULT_EXCHANGES) == {btc}


async def test_every_exchange_subscribes_each_exchange_wide_and_delivers_them_all(
    autojump_clock, nursery, make_adapter, recorder, emulator
):
    adapter = make_adapter()
    adapter.update_wanted({EVERY_TICKER}, set())
    await nursery.start(adapter.run)
    await emulator.stats.wait_for(lambda: set(emulator.active_channels()) == {f"ticker:{e}" for e in EMULATED_EXCHANGES})
    # The one exchange the server does not have is refused, per exchange, not for the whole stream.
    (_, refused), = await recorder.wait_for(is_status("rejected", "ticker:bybit"))
    assert "INVALID_CHANNEL" in refused.reason
    assert not recorder.matching(is_status("rejected", "ticker:*"))
    tickers = await recorder.wait_for(of_type("ticker"), 11)  # 11 instruments, round-robin
    assert {e.exchange for _, e in tickers} == EMULATED_EXCHANGES
    assert not recorder.matching(lambda e: isinstance(e, Quote))  # quotes were not asked for
    assert adapter.health().wanted == 1


async def test_configured_exchanges_bound_the_expansion(autojump_clock, nursery, make_adapter, recorder, emulator):
    adapter = make_adapter(exchanges=("Binance", "kraken"))
    adapter.update_wanted({EVERY_QUOTE}, set())
    await nursery.start(adapter.run)
    quotes = await recorder.wait_for(of_type("quote"), 8)
    assert emulator.active_channels() == Counter({"ticker:binance": 1, "ticker:kraken": 1})
    assert {e.exchange for _, e in quotes} == {"binance", "kraken"}
    assert not recorder.matching(lambda e: isinstance(e, Ticker))


async def test_every_exchange_and_one_symbol_share_the_exchange_wide_channel(
    autojump_clock, nursery, make_adapter, recorder, emulator
):
    btc = StreamKey("ticker", "binance", "BTC/USDT")
    adapter = make_adapter(exchanges=("binance",))
    adapter.update_wanted({EVERY_TICKER, btc}, set())
    await nursery.start(adapter.run)
    await recorder.wait_for(of_type("ticker"), 6)
    assert emulator.active_channels() == Counter({"ticker:binance": 1})
    symbols = {e.symbol for _, e in recorder.matching(of_type("ticker"))}
    assert symbols == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}  # the whole exchange, not just BTC
    # Dropping the every-exchange stream narrows the subscription back to the one symbol.
    adapter.update_wanted(set(), {EVERY_TICKER})
    await emulator.stats.wait_for(lambda: emulator.active_channels() == Counter({"ticker:binance:BTC/USDT": 1}))
    before = len(recorder.events)
    await recorder.wait_for(lambda e: not isinstance(e, Status), before + 3)
    assert {e.symbol for _, e in recorder.events[before:] if isinstance(e, Ticker)} == {"BTC/USDT"}
