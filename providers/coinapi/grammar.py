"""CoinAPI's grammar: symbol ids, exchange ids and the hello filter lists. Pure.

Owns: the grammar of CoinAPI symbol ids, the canonical ↔ CoinAPI exchange id map, and which
symbol ids one message's filter lists select.
Must never: do I/O, or map anything but a plain SPOT id onto a canonical BASE/QUOTE symbol
(perpetuals, futures, options and indexes parse, but are different instruments).

Symbol ids: `{EXCHANGE}_SPOT_{BASE}_{QUOTE}`, `_PERP_{BASE}_{QUOTE}`, `_FTS_{BASE}_{QUOTE}_{YYMMDD}`,
`_OPT_{BASE}_{QUOTE}_{YYMMDD}_{STRIKE}_{C|P}`, `_IDX_{ID}`, each optionally followed by
`_<suffix>` (CoinAPI's disambiguation of duplicate ids). The exchange id is everything before the
first kind token (`SPOT`, `PERP`, ...), so an exchange id containing `_` still parses; an IDX id
takes the whole rest (it has no fixed arity, so no suffix can be told apart). A suffixed SPOT id is
a *different* instrument from the plain one, so it is not mapped to a canonical symbol.

Filters, our reading of the spec where it is terse:
- `subscribe_filter_symbol_id` items are prefixes; a trailing `$` makes the item an exact id.
- `subscribe_filter_exchange_id` items select every symbol of that exchange (exact exchange id).
- `subscribe_filter_asset_id`: an asset (`BTC`) selects symbols whose base or quote it is; a pair
  (`BTC/USD`) selects symbols with exactly that base and quote (not `USD/BTC`). Indexes have no
  base/quote, so asset filters never select them.
- Items inside one list are OR'd, and the lists are a UNION: a symbol is selected if any non-empty
  list selects it (the documented "all COINBASE and ITBIT symbols and additionally two BITSTAMP/
  BITFINEX symbols" example; we apply the same union to the asset list).
- An empty or absent list filters nothing; with no non-empty list at all, EVERY symbol matches.
- Ids are upper case at CoinAPI, so filter items and ids are compared case-insensitively, by
  ASCII case only: an item with a non-ASCII character is never case-mapped (`ß` must not become
  `SS`, nor the Kelvin sign `K`), so it matches no id and pins no exchange (the server refuses it).
How filters combine across messages (the scope) is the server's: `server.Scope`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol

KINDS: Final = frozenset({"SPOT", "PERP", "FTS", "OPT", "IDX"})
_TOKEN: Final = re.compile(r"[A-Za-z0-9.\-]+", re.ASCII)
# `[0-9]`, not `\d`: `\d` matches every Unicode digit (`١٢٣٤٥٦` is no date).
_DATE: Final = re.compile(r"[0-9]{6}")
_STRIKE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: Tokens after the kind, suffix excluded.
_ARITY: Final = {"SPOT": 2, "PERP": 2, "FTS": 3, "OPT": 5}


class SymbolIdError(ValueError):
    """Text that is not a CoinAPI symbol id."""


class SymbolId(NamedTuple):
    exchange: str  # CoinAPI exchange id, e.g. "BINANCE"
    kind: str  # SPOT | PERP | FTS | OPT | IDX
    base: str | None = None
    quote: str | None = None
    expiry: str | None = None  # YYMMDD (FTS, OPT)
    strike: str | None = None  # OPT
    option_type: str | None = None  # C | P
    index_id: str | None = None  # IDX (not `index`: a tuple has that method)
    suffix: str | None = None  # the disambiguating tail, without its leading `_`

    def __str__(self) -> str:
        return format_symbol_id(self)


def _kind_position(tokens: list[str], text: str) -> int:
    for position in range(1, len(tokens)):
        if tokens[position] in KINDS:
            return position
    raise SymbolIdError(f"no kind (SPOT, PERP, FTS, OPT, IDX) in {text!r}")


def _check_contract(kind: str, rest: list[str], text: str) -> None:
    if kind in ("FTS", "OPT") and not _DATE.fullmatch(rest[2]):
        raise SymbolIdError(f"expiry is not YYMMDD in {text!r}")
    if kind == "OPT" and not (_STRIKE.fullmatch(rest[3]) and rest[4] in ("C", "P")):
        raise SymbolIdError(f"strike or C|P missing in {text!r}")


def parse_symbol_id(text: str) -> SymbolId:
    """`BINANCE_SPOT_BTC_USDT` → SymbolId(exchange="BINANCE", kind="SPOT", base="BTC", quote="USDT")."""
    tokens = text.split("_")
    if not all(_TOKEN.fullmatch(token) for token in tokens):
        raise SymbolIdError(f"empty or invalid part in {text!r}")
    position = _kind_position(tokens, text)
    exchange, kind, rest = "_".join(tokens[:position]), tokens[position], tokens[position + 1 :]
    if kind == "IDX":
        if not rest:
            raise SymbolIdError(f"index id missing in {text!r}")
        return SymbolId(exchange, kind, index_id="_".join(rest))
    arity = _ARITY[kind]
    if len(rest) < arity:
        raise SymbolIdError(f"{kind} id needs {arity} parts after the kind: {text!r}")
    _check_contract(kind, rest, text)
    fields = rest[:arity] + [None] * (5 - arity)
    suffix = "_".join(rest[arity:]) or None
    return SymbolId(exchange, kind, fields[0], fields[1], fields[2], fields[3], fields[4], None, suffix)


def format_symbol_id(sid: SymbolId) -> str:
    """The inverse of `parse_symbol_id`."""
    if sid.kind == "IDX":
        return f"{sid.exchange}_IDX_{sid.index_id}"
    parts = [sid.exchange, sid.kind, sid.base, sid.quote]
    parts += [p for p in (sid.expiry, sid.strike, sid.option_type, sid.suffix) if p is not None]
    return "_".join(parts)  # type: ignore[arg-type]


#: canonical id → CoinAPI id, for exchanges whose ids differ or are commonly used.
DEFAULT_EXCHANGES: Final[Mapping[str, str]] = {
    "binance": "BINANCE",
    "binancefts": "BINANCEFTS",
    "bitfinex": "BITFINEX",
    "bitmex": "BITMEX",
    "bitstamp": "BITSTAMP",
    "bybit": "BYBIT",
    "coinbase": "COINBASE",
    "deribit": "DERIBIT",
    "kraken": "KRAKEN",
    "okx": "OKEX",
}


class ExchangeMap:
    """canonical ↔ CoinAPI exchange ids; `overrides` (canonical → CoinAPI) extend the defaults.
    An exchange in neither is mapped by case alone (`gateio` ↔ `GATEIO`)."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        merged = {**DEFAULT_EXCHANGES, **{canonical_exchange(k): v.upper() for k, v in (overrides or {}).items()}}
        self._to_coinapi = merged
        self._to_canonical = {v: k for k, v in merged.items()}

    def to_coinapi(self, exchange: str) -> str:
        return self._to_coinapi.get(exchange) or exchange.upper()

    def to_canonical(self, exchange_id: str) -> str:
        """Raises InstrumentError for an id with no canonical form."""
        return self._to_canonical.get(exchange_id) or canonical_exchange(exchange_id)


#: Caches (ids the mapper has seen, match results per filter) start over beyond this many entries:
#: the symbols of a subscription are bounded in practice, this only guards against an unbounded
#: stream of ids.
_CACHE_LIMIT: Final = 65_536


class SymbolMapper:
    """Cached canonical (exchange, BASE/QUOTE) ↔ CoinAPI SPOT symbol id."""

    def __init__(self, exchanges: ExchangeMap | None = None) -> None:
        self.exchanges = exchanges or ExchangeMap()
        self._instruments: dict[str, tuple[str, str] | None] = {}

    def symbol_id(self, exchange: str, symbol: str) -> str:
        """`binance`, `BTC/USDT` → `BINANCE_SPOT_BTC_USDT`."""
        base, _, quote = canonical_symbol(symbol).partition("/")
        return f"{self.exchanges.to_coinapi(exchange)}_SPOT_{base}_{quote}"

    def instrument(self, symbol_id: str) -> tuple[str, str] | None:
        """`BINANCE_SPOT_BTC_USDT` → (`binance`, `BTC/USDT`); None for anything but a plain SPOT id."""
        try:
            return self._instruments[symbol_id]
        except KeyError:
            pass
        if len(self._instruments) >= _CACHE_LIMIT:
            self._instruments.clear()
        found = self._instruments[symbol_id] = self._map(symbol_id)
        return found

    def _map(self, symbol_id: str) -> tuple[str, str] | None:
        try:
            sid = parse_symbol_id(symbol_id)
            if sid.kind != "SPOT" or sid.suffix is not None:
                return None
            return self.exchanges.to_canonical(sid.exchange), canonical_symbol(f"{sid.base}/{sid.quote}")
        except (SymbolIdError, InstrumentError):
            return None


# ---------------------------------------------------------------------------- filters


def ascii_upper(item: str) -> str:
    """Upper case by ASCII rules only: non-ASCII text is left as it is, so no Unicode case
    mapping can turn it into an ASCII id."""
    return item.upper() if item.isascii() else item


def _upper(items: Iterable[str] | None) -> frozenset[str]:
    return frozenset(ascii_upper(item) for item in items or ())


def _exchange_and_assets(symbol_id: str) -> tuple[str, str | None, str | None]:
    try:
        sid = parse_symbol_id(symbol_id)
    except SymbolIdError:
        return symbol_id.split("_", 1)[0], None, None
    return sid.exchange, sid.base, sid.quote


@dataclass(frozen=True)
class SubscriptionFilter:
    """The symbol selection of one message (or of one data type in a scope). Immutable; `matches`
    is memoized because it runs once per data frame on the hot path."""

    symbol_ids: frozenset[str] = frozenset()  # prefixes; trailing `$`: exact
    exchange_ids: frozenset[str] = frozenset()
    asset_ids: frozenset[str] = frozenset()  # `BTC` or `BTC/USD`
    _cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False, hash=False)

    @classmethod
    def of(
        cls,
        symbol_ids: Iterable[str] | None = None,
        exchange_ids: Iterable[str] | None = None,
        asset_ids: Iterable[str] | None = None,
    ) -> SubscriptionFilter:
        return cls(_upper(symbol_ids), _upper(exchange_ids), _upper(asset_ids))

    @property
    def everything(self) -> bool:
        """No list filters anything: every symbol matches."""
        return not (self.symbol_ids or self.exchange_ids or self.asset_ids)

    def matches(self, symbol_id: str) -> bool:
        found = self._cache.get(symbol_id)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[symbol_id] = self.everything or self._selects(ascii_upper(symbol_id))
        return found

    def _selects(self, symbol_id: str) -> bool:
        if any(_symbol_item_matches(item, symbol_id) for item in self.symbol_ids):
            return True
        if not (self.exchange_ids or self.asset_ids):
            return False
        exchange, base, quote = _exchange_and_assets(symbol_id)
        return exchange in self.exchange_ids or any(_asset_item_matches(a, base, quote) for a in self.asset_ids)

    def union(self, other: SubscriptionFilter) -> SubscriptionFilter:
        if self.everything or other.everything:
            return SubscriptionFilter()
        return SubscriptionFilter(
            self.symbol_ids | other.symbol_ids, self.exchange_ids | other.exchange_ids, self.asset_ids | other.asset_ids
        )

    def without(self, other: SubscriptionFilter) -> SubscriptionFilter | None:
        """Remove `other`'s items; None when nothing is left selected (why: `server.Scope`)."""
        if other.everything:
            return None
        if self.everything:
            return self
        left = SubscriptionFilter(
            self.symbol_ids - other.symbol_ids, self.exchange_ids - other.exchange_ids, self.asset_ids - other.asset_ids
        )
        return None if left.everything else left


def _symbol_item_matches(item: str, symbol_id: str) -> bool:
    if item.endswith("$"):
        return symbol_id == item[:-1]
    return symbol_id.startswith(item)


def _asset_item_matches(item: str, base: str | None, quote: str | None) -> bool:
    if base is None:
        return False
    if "/" in item:
        return item == f"{base}/{quote}"
    return item in (base, quote)


class Unpinned(enum.Enum):
    """What a symbol id prefix pins when it pins no one exchange."""

    EVERY = "any exchange's ids may start with it"
    NONE = "no plain SPOT id can start with it"


def prefix_exchange(prefix: str) -> str | Unpinned:
    """The CoinAPI exchange id a symbol id prefix pins, or why it pins none.

    A prefix pins the exchange before its first complete kind token (`A_B_SPOT_` → `A_B`), else its
    first token (`BITSTAMP_` → `BITSTAMP`): CoinAPI's exchange ids have no `_`, so an exchange whose
    id has one is reached by its kind-spelling prefixes. A prefix pinning a kind other than SPOT
    (`BINANCEFTS_PERP_`) selects no plain SPOT id."""
    if not prefix.isascii():  # no CoinAPI id has a non-ASCII character
        return Unpinned.NONE
    complete = prefix.upper().split("_")[:-1]  # the last part may be cut short
    if not complete:
        return Unpinned.EVERY
    for position in range(1, len(complete)):
        if complete[position] in KINDS:
            return "_".join(complete[:position]) if complete[position] == "SPOT" else Unpinned.NONE
    return complete[0]
