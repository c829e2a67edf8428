"""Who may use the gateway's port, decided before any route runs: pure policy, no I/O, no Trio.

- `Host` (every HTTP request and upgrade): loopback names, the configured host and
  `[server] allowed_hosts`, with or without a port; anything else is a DNS-rebinding attempt (421).
- `Origin` (every WebSocket upgrade): none (a non-browser app), a loopback origin, or one listed in
  `[server] allowed_origins`; anything else, `null` included, is a web page the operator happened to
  open, which must not spend the provider quota (403).
- The WebSocket handshake fields wsproto does not check the way RFC 6455 §4.2.1 asks (the method,
  the version, the key's shape), each with its own status.
- The request target: origin-form only (`/path?query`), valid percent escapes, no NUL.
- Connection accounting: in total and per client address, released exactly once per admission.

This module decides and never answers: `server.py` turns a `Refusal` into the HTTP response. It must
never log or echo a header value (an Origin or Host is attacker-chosen text).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.config import is_loopback

#: Seconds a client refused for a connection cap is asked to wait before trying again.
RETRY_AFTER_SECONDS = 1
#: Query parameters one request may carry: our endpoints read at most a few; the bound keeps a
#: hostile query string from costing more than a few microseconds to split.
MAX_QUERY_FIELDS = 64
WEBSOCKET_VERSION = "13"
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Refusal:
    """An HTTP status and the project's own wording for it (never an echo of client input)."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


BAD_TARGET = Refusal(400, "malformed request target")
NO_HOST = Refusal(400, "a Host header is required")
WRONG_HOST = Refusal(421, "this gateway does not serve that host name")
WRONG_ORIGIN = Refusal(403, "web pages from this origin may not use this gateway")
NOT_GET = Refusal(405, "a WebSocket upgrade must be a GET request", (("allow", "GET"),))
WRONG_VERSION = Refusal(426, "only WebSocket version 13 is served", (("sec-websocket-version", WEBSOCKET_VERSION),))
BAD_KEY = Refusal(400, "Sec-WebSocket-Key must be 16 bytes in base64")
NOT_UPGRADE = Refusal(400, "a WebSocket upgrade needs Connection: Upgrade")
BUSY = Refusal(503, "too many connections; try again shortly", (("retry-after", str(RETRY_AFTER_SECONDS)),))
BUSY_ADDRESS = Refusal(503, "too many connections from this address; try again shortly",
                       (("retry-after", str(RETRY_AFTER_SECONDS)),))


@dataclass(frozen=True)
class Target:
    """An origin-form request target, decoded."""

    path: str
    query: dict[str, str]


def parse_target(raw: str) -> Target | Refusal:
    """`/path?query` → its decoded parts; absolute-form, authority-form, `*`, junk → 400.

    Only origin-form is served: an absolute-form target would carry a second host name that the
    Host check does not see."""
    if not raw.startswith("/") or "\x00" in raw or _PERCENT_ESCAPE.search(raw):
        return BAD_TARGET
    path, _, query = raw.partition("?")
    path = path.partition("#")[0]
    try:
        fields = urllib.parse.parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS,
                                        errors="strict")
        decoded = urllib.parse.unquote(path, errors="strict")
    except (ValueError, UnicodeDecodeError):  # too many fields, or escapes that are not UTF-8
        return BAD_TARGET
    if "\x00" in decoded or any("\x00" in k or "\x00" in v for k, v in fields):
        return BAD_TARGET
    return Target(decoded, dict(fields))


def _split_host(value: str) -> tuple[str, str | None] | None:
    """ASCII `name[:port]` / `[v6][:port]` → (lower-case name, port or None); None when not a host."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, sep, port = value.partition(":")
        rest = f":{port}" if sep else ""
    if rest and (not rest.startswith(":") or not rest[1:].isascii() or not rest[1:].isdigit()):
        return None
    if not name:
        return None
    return name, rest[1:] or None


@dataclass(frozen=True)
class Policy:
    """The Host and Origin rules of one configured server."""

    host: str
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def build(cls, host: str, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> Policy:
        return cls(host.lower(), frozenset(h.strip().lower() for h in allowed_hosts),
                   frozenset(_normal_origin(o) for o in allowed_origins))

    def check_host(self, value: str | None) -> Refusal | None:
        if value is None or not value.strip():
            return NO_HOST
        if not value.isascii():  # before any case mapping: no Unicode may fold into an allowed name
            return WRONG_HOST
        parts = _split_host(value)
        if parts is None:
            return WRONG_HOST
        name, _ = parts
        bare = name.removeprefix("[").removesuffix("]")
        if is_loopback(name) or name in (self.host, f"[{self.host}]") or bare == self.host:
            return None
        if name in self.allowed_hosts or value.strip().lower() in self.allowed_hosts:
            return None
        return WRONG_HOST

    def check_page(self, origin: str | None, fetch_site: str | None) -> Refusal | None:
        """Any HTTP request: a web page on another site must not use the gateway either (a REST
        call or an `<img src>` costs upstream quota even if the page cannot read the answer).
        Browsers send `Origin` on cross-origin fetches and `Sec-Fetch-Site` on every request;
        apps send neither. A request naming an origin is judged like an upgrade; one without an
        origin but marked `cross-site` comes from another site's page (an image, a navigation)."""
        if origin is not None:
            return self.check_origin(origin)
        return WRONG_ORIGIN if fetch_site is not None and fetch_site.strip().lower() == "cross-site" else None

    def check_origin(self, value: str | None) -> Refusal | None:
        if value is None:
            return None  # a non-browser app: browsers always send Origin on a WebSocket upgrade
        if not value.isascii():
            return WRONG_ORIGIN
        origin = _normal_origin(value)
        if origin in self.allowed_origins:
            return None
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or "/" in rest or "@" in rest:
            return WRONG_ORIGIN  # `null` (sandboxed frames, file://) lands here
        parts = _split_host(rest)
        return None if parts is not None and is_loopback(parts[0]) else WRONG_ORIGIN


def _normal_origin(value: str) -> str:
    """Origins compare case-insensitively and without a trailing slash (RFC 6454 §6.2)."""
    return value.strip().lower().removesuffix("/")


def check_handshake(method: str, headers: Mapping[str, str]) -> Refusal | None:
    """RFC 6455 §4.2.1 for an `Upgrade: websocket` request (headers with lower-case names)."""
    if method != "GET":
        return NOT_GET
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "upgrade" not in tokens:
        return NOT_UPGRADE
    if headers.get("sec-websocket-version", "").strip() != WEBSOCKET_VERSION:
        return WRONG_VERSION
    return None if _valid_key(headers.get("sec-websocket-key", "")) else BAD_KEY


def _valid_key(key: str) -> bool:
    try:
        return key.isascii() and len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class ConnectionCount:
    """Connections open in total and per client address; an address's entry exists only while it
    has a connection, so the table is bounded by `max_total`."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self.by_address: dict[str | None, int] = {}

    def admit(self, address: str | None) -> Refusal | None:
        """Count one more connection from `address`, or say why not (nothing is counted then)."""
        if self.total >= self.max_total:
            return BUSY
        held = self.by_address.get(address, 0)
        if held >= self.max_per_address:
            return BUSY_ADDRESS
        self.total += 1
        self.by_address[address] = held + 1
        return None

    def release(self, address: str | None) -> None:
        """One admitted connection from `address` has closed."""
        held = self.by_address.pop(address, 0) - 1
        if held > 0:
            self.by_address[address] = held
        self.total -= 1
