"""Channel grammar: round trips, both separators, and clear rejection of anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.luzia.grammar import Channel, ChannelError, canonical_channel, format_channel, parse_channel

exchanges = st.from_regex(r"[a-z0-9][a-z0-9_.]{0,12}", fullmatch=True)
assets = st.from_regex(r"[A-Z0-9][A-Z0-9.]{0,8}", fullmatch=True)
symbols = st.builds(lambda b, q: f"{b}/{q}", assets, assets)


@given(exchanges, st.none() | symbols)
def test_format_then_parse_round_trips(exchange, symbol):
    text = format_channel(exchange, symbol)
    assert parse_channel(text) == Channel(exchange, symbol)
    assert str(parse_channel(text)) == text


@given(exchanges, assets, assets)
def test_dash_and_lower_case_parse_to_the_canonical_slash_form(exchange, base, quote):
    dashed = f"ticker:{exchange.upper()}:{base.lower()}-{quote.lower()}"
    assert canonical_channel(dashed) == f"ticker:{exchange}:{base}/{quote}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ticker",
        "ticker:",
        "ticker::BTC/USDT",
        "ticker:binance:",
        "ticker:binance:BTC",
        "ticker:binance:BTC/USDT/EUR",
        "ticker:binance:BTC:USDT",
        "ticker:binance:BTC//USDT",
        "trade:binance:BTC/USDT",
        "TICKER:binance",
        " ticker:binance",
        "ticker:binance:BTC/USDT ",
        "ticker:bin ance",
        "ticker:-binance",
    ],
)
def test_malformed_channels_are_rejected(text):
    with pytest.raises(ChannelError):
        parse_channel(text)


@given(st.text(max_size=40))
def test_parse_either_returns_a_canonical_channel_or_raises_channel_error(text):
    try:
        channel = parse_channel(text)
    except ChannelError:
        return
    assert parse_channel(str(channel)) == channel  # whatever is accepted is canonical-stable
    assert text.startswith("ticker:") and not any(c.isspace() for c in text)


@given(st.text(alphabet=" \t\n:/-", max_size=20))
def test_separators_and_whitespace_alone_are_never_a_channel(text):
    with pytest.raises(ChannelError):
        parse_channel(text)
