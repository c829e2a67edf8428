"""The normalized model every part of mdgateway shares.

Owns: the tagged union of events (`events`), instrument identity (`instruments`) and the exact
timestamp conversions (`timeutil`). Depends on nothing else in the project; `providers` and
`gateway` depend on it, never the reverse.
"""

from schemas.events import (
    DATATYPES,
    Book,
    BookLevel,
    Event,
    Gap,
    MarketEvent,
    Quote,
    Status,
    Ticker,
    Trade,
    event_decoder,
    json_encoder,
    msgpack_encoder,
)
from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol

__all__ = [
    "DATATYPES",
    "Book",
    "BookLevel",
    "Event",
    "Gap",
    "InstrumentError",
    "MarketEvent",
    "Quote",
    "Status",
    "Ticker",
    "Trade",
    "canonical_exchange",
    "canonical_symbol",
    "event_decoder",
    "json_encoder",
    "msgpack_encoder",
]
