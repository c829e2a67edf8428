"""The emulated market is deterministic per instrument and stays on its price grid."""

from decimal import Decimal

from providers.common.market import DEFAULT_INSTRUMENTS, Instrument, Market

BTC = Instrument("binance", "BTC/USDT")


def test_same_seed_same_walk_whatever_else_is_stepped():
    alone, mixed = Market(seed=5), Market(seed=5)
    path_alone = [alone.step(BTC, i).price for i in range(50)]
    path_mixed = []
    for i in range(50):
        mixed.step(Instrument("coinbase", "ETH/USD"), i)
        path_mixed.append(mixed.step(BTC, i).price)
    assert path_alone == path_mixed
    assert path_alone != [Market(seed=6).step(BTC, i).price for i in range(50)]


def test_ticks_are_consistent():
    market = Market()
    for i in range(500):
        tick = market.step(BTC, i)
        assert tick.bid < tick.ask and tick.low_24h <= tick.price <= tick.high_24h
        assert tick.price == tick.price.quantize(Decimal("0.01")) and tick.size > 0


def test_default_market_covers_the_seeds_examples():
    names = {(i.exchange, i.symbol) for i in DEFAULT_INSTRUMENTS}
    assert {("bitstamp", "BTC/USD"), ("bitfinex", "BTC/USD"), ("binance", "BTC/USDT"), ("binance", "ETH/USDT"),
            ("coinbase", "ETH/USDT"), ("coinbase", "BTC/USD"), ("bitfinex", "BTC/LTC")} <= names
