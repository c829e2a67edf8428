"""Identifiers are ASCII on every client-facing parser: no Unicode case mapping turns `ß`, the
Kelvin sign, dotless ı or fullwidth letters into an ASCII exchange, symbol or data type, and
non-ASCII digits are not numbers (`int()` takes `١٢` and fullwidth digits; our parsers do not)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dialects.luzia_rest import MAX_DIGITS, BadRequest, parse_count, parse_page
from providers.coinapi.grammar import SubscriptionFilter, Unpinned, parse_symbol_id, prefix_exchange
from providers.coinapi.server import validate
from providers.coinapi.wire import Hello
from providers.luzia.grammar import ChannelError as LuziaChannelError
from providers.luzia.grammar import parse_channel as luzia_channel
from schemas.channels import ChannelError, parse_channel
from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol

#: Each maps onto ASCII under Unicode case mapping (`"\u212a".lower() == "k"`, `"ß".upper() == "SS"`,
#: `"ı".upper() == "I"`, `"ﬁ".upper() == "FI"`, fullwidth `Ｂ`.lower() is fullwidth, kept for breadth).
TRAPS = ["\u212a", "ß", "ı", "ﬁ", "Ｂ", "ſ", "\u0130"]


@pytest.mark.parametrize("trap", TRAPS)
def test_no_case_mapping_makes_an_ascii_id(trap):
    with pytest.raises(InstrumentError):
        canonical_exchange(f"{trap}raken")
    with pytest.raises(InstrumentError):
        canonical_symbol(f"BTC/US{trap}")
    with pytest.raises(ChannelError):
        parse_channel(f"trade:{trap}raken")
    with pytest.raises(ChannelError):
        parse_channel(f"tic{trap}er:kraken")  # not even the data type
    with pytest.raises(LuziaChannelError):
        luzia_channel(f"ticker:binance:BTC-USD{trap}")


non_ascii_text = st.text(min_size=1, max_size=20).filter(lambda t: not t.isascii())


@given(st.text(max_size=10), non_ascii_text, st.text(max_size=10))
def test_any_non_ascii_character_anywhere_is_refused(before, odd, after):
    text = before + odd + after
    for parse, error in ((parse_channel, ChannelError), (luzia_channel, LuziaChannelError)):
        with pytest.raises(error):
            parse(f"ticker:{text}")
        with pytest.raises(error):
            parse(f"ticker:binance:{text}")
    assert prefix_exchange(text + "_") is Unpinned.NONE or (text + "_").isascii()


def test_coinapi_filters_never_case_map_non_ascii_items():
    selection = SubscriptionFilter.of(exchange_ids=["\u212aRAKEN"], symbol_ids=["BITSTAMP_SPOT_BTC_U\u00df"])
    assert not selection.matches("KRAKEN_SPOT_BTC_USD") and not selection.matches("BITSTAMP_SPOT_BTC_USS")
    assert validate(Hello(subscribe_data_type=["trade"], subscribe_filter_asset_id=["ＢＴＣ"])) == (
        "Parameter subscribe_filter_asset_id contains an invalid item: 'ＢＴＣ'.")
    assert validate(Hello(subscribe_data_type=["trade"], subscribe_filter_asset_id=["btc", ""])) is None


def test_coinapi_dates_and_strikes_are_ascii_digits():
    assert parse_symbol_id("DERIBIT_FTS_BTC_USD_250328").expiry == "250328"
    with pytest.raises(ValueError, match="invalid part"):
        parse_symbol_id("DERIBIT_FTS_BTC_USD_٢٥٠٣٢٨")
    with pytest.raises(ValueError, match="invalid part"):
        parse_symbol_id("DERIBIT_OPT_BTC_USD_250328_١٠٠٠٠_C")


@pytest.mark.parametrize("text", ["١٢", "１２", "12\u0660", "+5", "-1", "1_000", "0x10", "1e3", "", "9" * (MAX_DIGITS + 1)])
def test_rest_counts_are_ascii_digits_only(text):
    assert parse_count(text) is None


@given(st.text(max_size=12))
def test_rest_counts_agree_with_int_exactly_on_plain_ascii_digits(text):
    plain = text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS
    assert parse_count(text) == (int(text) if plain else None)


def test_rest_pages_refuse_unicode_digits_with_a_400_shaped_error():
    assert parse_page({"limit": "7", "offset": " 3 "}) == (7, 3)
    with pytest.raises(BadRequest) as info:
        parse_page({"limit": "١٢"})
    assert info.value.details == {"limit": "expected an integer ≥ 1"}
