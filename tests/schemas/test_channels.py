"""The native channel grammar: round trips, both separators, clear rejections."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.channels import ChannelError, format_channel, parse_channel

assets = st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True)
exchanges = st.from_regex(r"[a-z][a-z0-9]{0,12}", fullmatch=True)
datatypes = st.sampled_from(["trade", "quote", "ticker", "book"])


@given(datatypes, exchanges, st.none() | st.tuples(assets, assets))
def test_format_then_parse_round_trips(datatype, exchange, pair):
    symbol = None if pair is None else f"{pair[0]}/{pair[1]}"
    assert parse_channel(format_channel(datatype, exchange, symbol)) == (datatype, exchange, symbol)


@given(datatypes, exchanges, assets, assets)
def test_dash_and_case_are_normalized(datatype, exchange, base, quote):
    text = f"{datatype.upper()}:{exchange.upper()}:{base.lower()}-{quote.lower()}"
    assert parse_channel(text) == (datatype, exchange, f"{base}/{quote}")


@pytest.mark.parametrize(
    "text",
    ["", "trade", "candle:binance", "trade:*:BTC/USDT", "trade::BTC/USDT", "trade:binance:BTC", "trade:binance:BTC/USDT/X",
     "trade:binance:BTC/USDT:x", "trade:bin ance", "trade:binance:/USDT", "trade:binance:BTC/"],
)
def test_malformed_channels_are_rejected(text):
    with pytest.raises(ChannelError):
        parse_channel(text)


@given(st.text(max_size=40))
def test_anything_either_parses_to_canonical_form_or_raises_channel_error(text):
    try:
        datatype, exchange, symbol = parse_channel(text)
    except ChannelError:
        return
    assert parse_channel(format_channel(datatype, exchange, symbol)) == (datatype, exchange, symbol)


def test_star_means_every_exchange():
    assert parse_channel("quote:*") == ("quote", None, None)
    assert format_channel("quote", None, None) == "quote:*"


def test_non_strings_are_rejected():
    with pytest.raises(ChannelError):
        parse_channel(42)


def test_parsed_channels_are_cached_within_bounds(monkeypatch):
    from schemas import channels

    monkeypatch.setattr(channels, "_parsed", {})
    monkeypatch.setattr(channels, "_PARSED_LIMIT", 10)
    for i in range(25):
        assert channels.parse_channel(f"trade:binance:C{i}/USDT") == ("trade", "binance", f"C{i}/USDT")
    assert 0 < len(channels._parsed) <= 10
    long_name = "trade:" + " " * 100 + "binance:BTC/USDT"  # valid: parts are stripped
    channels.parse_channel(long_name)
    assert long_name not in channels._parsed  # long names are parsed, never kept
    for _ in range(2):  # an error is never cached: raised every time
        with pytest.raises(channels.ChannelError):
            channels.parse_channel("trade:binance:BTC/USDT:extra")
    with pytest.raises(channels.ChannelError):
        channels.parse_channel(["not", "hashable"])  # type: ignore[arg-type]
