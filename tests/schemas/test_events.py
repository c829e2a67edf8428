"""The normalized union: exact money, exported JSON Schema fresh and true to the encoder."""

import json
from decimal import Decimal

import jsonschema
import msgspec
from hypothesis import given
from hypothesis import strategies as st

from schemas import Gap, Quote, Status, Ticker, Trade, event_decoder, json_encoder, msgpack_encoder
from schemas.export import DOCUMENTS, SCHEMA_DIR, render

decimals = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e12"), max_value=Decimal("1e12"),
                       places=None).filter(lambda d: d.as_tuple().exponent >= -12)
opt_decimals = st.none() | decimals
ns = st.integers(min_value=0, max_value=2**63 - 1)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)

trades = st.builds(Trade, provider=names, ts_gateway=ns, exchange=names, symbol=st.just("BTC/USDT"), price=decimals,
                   size=decimals, side=st.sampled_from(["buy", "sell", "unknown"]), ts_exchange=st.none() | ns,
                   sequence=st.none() | ns, trade_id=st.none() | names)
quotes = st.builds(Quote, provider=names, ts_gateway=ns, exchange=names, symbol=st.just("ETH/USD"),
                   bid_price=opt_decimals, bid_size=opt_decimals, ask_price=opt_decimals, ask_size=opt_decimals)
tickers = st.builds(Ticker, provider=names, ts_gateway=ns, exchange=names, symbol=st.just("ETH/USD"), last=opt_decimals,
                    volume=opt_decimals, change_percent=opt_decimals)
statuses = st.builds(Status, provider=names, ts_gateway=ns,
                     state=st.sampled_from(["connected", "disconnected", "stale", "recovered", "rejected"]),
                     stream=st.none() | names)
gaps = st.builds(Gap, provider=names, ts_gateway=ns, datatype=st.just("trade"), exchange=names, symbol=st.none() | names,
                 from_ts=ns, to_ts=ns, cause=st.sampled_from(["reconnect", "stale", "sequence", "client_overflow"]))
events = trades | quotes | tickers | statuses | gaps

VALIDATOR = jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / "event.schema.json").read_text()))


def test_checked_in_json_schema_is_fresh():
    for filename, type_ in DOCUMENTS.items():
        assert (SCHEMA_DIR / filename).read_text() == render(type_), "run: python -m schemas.export"


@given(events)
def test_every_encoded_event_validates_against_the_exported_schema(event):
    VALIDATOR.validate(json.loads(json_encoder.encode(event)))


@given(events)
def test_json_and_msgpack_round_trip_exactly(event):
    assert event_decoder.decode(json_encoder.encode(event)) == event
    assert msgspec.msgpack.decode(msgpack_encoder.encode(event), type=type(event)) == event


@given(decimals)
def test_money_goes_on_the_wire_as_the_exact_decimal_string(price):
    trade = Trade(provider="p", ts_gateway=0, exchange="x", symbol="A/B", price=price, size=Decimal(1))
    assert json.loads(json_encoder.encode(trade))["price"] == str(price)


def test_unknown_fields_are_null_not_zero():
    wire = json.loads(json_encoder.encode(Quote(provider="p", ts_gateway=1, exchange="x", symbol="A/B")))
    assert wire["bid_price"] is None and wire["ask_size"] is None and wire["sequence"] is None
