"""Typed configuration: TOML → msgspec Structs, checked once at start.

A bad config fails at start with the key path and the reason (`ConfigError`). Secrets never live in
the file: a provider names the environment variable holding its key (`api_key_env`), and only that
name ever appears in messages. A provider with `emulate = true` is served by the built-in emulator of
its kind, in-process on an ephemeral loopback port, and needs neither a URL nor a key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from providers.registry import KINDS
from schemas import DATATYPES

#: The embedded default: both providers emulated in-process (shipped as package data).
DEFAULT_CONFIG = Path(__file__).with_name("default.toml")

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
#: A count: at least one, and at most a billion (a typo of many digits fails at start).
Positive = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class ConfigError(ValueError):
    """The config cannot run; the message names the key and the reason."""


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 8765
    client_buffer: Positive = 4096  # frames queued per client before the overflow policy applies
    # Kernel send buffer per client socket (bytes). Bounded so that a lagging client meets the
    # overflow policy (conflation, gap events) instead of seconds of stale data queued in the kernel.
    client_socket_buffer: Annotated[int, msgspec.Meta(ge=4096)] = 256 * 1024
    max_subscriptions_per_client: Positive = 1000
    # The environment variable holding local client keys (comma-separated). Unset: no local keys,
    # which is only allowed on loopback.
    local_keys_env: str | None = None
    # Web pages allowed to open WebSockets here, as `scheme://host[:port]`. Upgrades without an
    # Origin (non-browser apps) and from loopback origins are always served; any other origin is
    # refused with 403, so a page the operator happens to open cannot use the provider quota.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    # Host header values served besides localhost, 127.0.0.1, [::1] and `host` (with or without a
    # port); anything else is refused (421), which defeats DNS rebinding.
    allowed_hosts: list[str] = msgspec.field(default_factory=list)


Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[limits]`: the caps that keep one client (or many) from exhausting the gateway. Each says
    why it exists; every one is enforced with the protocol's own error and loses nothing already
    subscribed."""

    # File descriptors and per-connection memory are finite; beyond this, new connections get 503.
    max_connections: Positive = 2048
    # One misbehaving app (or one remote address when not on loopback) cannot take every slot.
    max_connections_per_address: Positive = 1024
    # Distinct streams all clients together may hold demand for: bounds upstream subscriptions,
    # the hub's indexes and every per-stream cache.
    max_streams: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000
    # A subscription request is small; a larger message is not one (WebSocket close 1009).
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    # Fragments per message, empty ones included: each costs work but may carry no bytes.
    max_message_fragments: Positive = 64
    # The HTTP request head (request line and headers), however its bytes arrive.
    max_request_head_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024
    # A client that has not sent a whole request head by then is dropped (slowloris).
    request_timeout_seconds: Seconds = 10.0
    # CoinAPI-compatible endpoint: a connection whose first message (the hello, which carries the
    # key) has not arrived by then is closed, so keyless sockets cannot hold slots.
    auth_deadline_seconds: Seconds = 10.0
    # Token bucket per connection: sustained client messages per second, and the burst allowed.
    messages_per_second: Annotated[float, msgspec.Meta(gt=0, le=100_000)] = 50.0
    message_burst: Positive = 100
    # A client refused this many times in a row for flooding gets the protocol's error and a close.
    flood_strikes: Positive = 20
    # "Not reading": replies and control frames pending for one client beyond this many bytes, or
    # a socket that accepts nothing for `write_stall_seconds`, end the connection with a close frame.
    # 1 MiB is ~17 times the answer to a 1,030-channel subscribe, and bounds what all clients may
    # pin together at max_connections × 1 MiB.
    max_pending_control_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024)] = 1024 * 1024
    write_stall_seconds: Seconds = 30.0


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[providers.NAME]` table: what the gateway itself reads, and the kind's own policy.

    The TOML table is flat: `kind`, `url`, `api_key_env`, `emulate` and `emulator_rate` are the
    gateway's; every other key belongs to the kind's policy Struct (`providers.<kind>.policy`), which
    reaches the adapter as it is, typed (`tier = "pro"`, `[providers.NAME.backoff]`, ...).
    """

    kind: str
    url: str | None = None
    api_key_env: str | None = None
    emulate: bool = False
    emulator_rate: Annotated[float, msgspec.Meta(ge=0)] = 20.0  # emulated market steps/s per connection
    policy: Any = None  # the kind's policy Struct (`providers.<kind>.policy`); filled by `parse`


#: The keys of a provider table that are the gateway's, not the kind's policy.
GATEWAY_PROVIDER_KEYS = frozenset(f for f in ProviderConfig.__struct_fields__ if f != "policy")


class LuziaEndpointConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The Luzia-compatible endpoint (`/v1/ws` and the REST ticker paths)."""

    tier: str = "gateway"  # the tier name its `connected` message announces
    max_subscriptions: Positive = 500  # `limits.maxSubscriptions`, per connection
    max_connections: Positive = 100  # local connections at once; beyond: CONNECTION_REJECTED
    rest_wait_seconds: Annotated[float, msgspec.Meta(ge=0, le=30)] = 3.0  # REST: wait for a first value


class CoinApiEndpointConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The CoinAPI-compatible endpoint (`/`, `/v1`, `/v1/`, `/APIKEY-<key>`)."""

    exchange_map: dict[str, str] = msgspec.field(default_factory=dict)  # canonical id → CoinAPI id
    # Streams one connection's filters may cover (CoinAPI itself has no documented cap; a filter
    # of `BINANCE_SPOT_` covers every symbol of an exchange and counts as one).
    max_subscriptions: Positive = 1000


class EndpointsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    luzia: LuziaEndpointConfig = msgspec.field(default_factory=LuziaEndpointConfig)
    coinapi: CoinApiEndpointConfig = msgspec.field(default_factory=CoinApiEndpointConfig)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    limits: Limits = msgspec.field(default_factory=Limits)
    endpoints: EndpointsConfig = msgspec.field(default_factory=EndpointsConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    routes: dict[str, list[str]] = msgspec.field(default_factory=dict)


def parse(text: str, source: str = "config") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None
    # Providers are converted one by one so an error names the provider (`providers.luzia.tier`).
    sections = raw.pop("providers", {})
    if not isinstance(sections, dict):
        raise ConfigError(f"{source}: providers: expected a table of providers")
    config = _convert(raw, Config, "", source)
    config.providers = {name: _provider(name, section, source) for name, section in sections.items()}
    _check(config, source)
    return config


def _provider(name: str, section: object, source: str) -> ProviderConfig:
    """A provider table → its config, the kind's keys converted into the kind's policy Struct."""
    where = f"providers.{name}"
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: {where}: expected a table")
    kind = section.get("kind")
    if kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        raise ConfigError(f"{source}: {where}.kind: Invalid value {kind!r} (known: {known})")
    ours = {k: v for k, v in section.items() if k in GATEWAY_PROVIDER_KEYS}
    theirs = {k: v for k, v in section.items() if k not in GATEWAY_PROVIDER_KEYS}
    provider: ProviderConfig = _convert(ours, ProviderConfig, where, source)
    provider.policy = _convert(theirs, KINDS[kind].policy_type(), where, source)
    return provider


def _convert(raw: object, type_: type, prefix: str, source: str):  # type: ignore[no-untyped-def]
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_with_toml_path(str(exc), prefix)}") from None


def load(path: str | None) -> Config:
    """The config at `path`, or the embedded default (both providers emulated) when None."""
    if path is None:
        text = DEFAULT_CONFIG.read_text(encoding="utf-8")
        return parse(text, "embedded default config")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse(text, path)


def _with_toml_path(message: str, prefix: str) -> str:
    """msgspec says `Expected `int`, got `str` - at `$.server.port``; lead with the key path instead."""
    reason, _, where = message.rpartition(" - at ")
    if not reason:
        return f"{prefix or 'top level'}: {message}"
    path = where.strip("`").removeprefix("$").lstrip(".")
    full = ".".join(p for p in (prefix, path) if p) or "top level"
    return f"{full}: {reason}"


def _check(config: Config, source: str) -> None:
    if not config.providers:
        raise ConfigError(f"{source}: providers: at least one provider is required")
    for name, provider in config.providers.items():
        where = f"{source}: providers.{name}"
        if provider.emulate and provider.url:
            raise ConfigError(f"{where}.url: not used with emulate = true (remove one of them)")
        if not provider.emulate:
            if not provider.url:
                raise ConfigError(f"{where}.url: required unless emulate = true")
            if not provider.url.startswith(("ws://", "wss://")):
                raise ConfigError(f"{where}.url: must start with ws:// or wss://")
            problem = _url_problem(provider.url)
            if problem is not None:
                raise ConfigError(f"{where}.url: {problem}")
            if not provider.api_key_env:
                raise ConfigError(f"{where}.api_key_env: required unless emulate = true")
    for i, origin in enumerate(config.server.allowed_origins):
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(f"{source}: server.allowed_origins[{i}]: {origin!r} is not an origin (scheme://host[:port])")
    for i, allowed in enumerate(config.server.allowed_hosts):
        if not _HOST.fullmatch(allowed):
            raise ConfigError(f"{source}: server.allowed_hosts[{i}]: {allowed!r} is not a host name (host or host:port)")
    for datatype, names in config.routes.items():
        if datatype not in DATATYPES:
            raise ConfigError(f"{source}: routes.{datatype}: unknown data type (known: {', '.join(DATATYPES)})")
        for name in names:
            if name not in config.providers:
                raise ConfigError(f"{source}: routes.{datatype}: no provider named {name!r} under [providers]")
    if not is_loopback(config.server.host) and not config.server.local_keys_env:
        raise ConfigError(
            f"{source}: server.host: {config.server.host} is not loopback; set server.local_keys_env "
            "so that only clients with a local key are served"
        )


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
#: A key longer than this is not an API key (and the redactor's work grows with its square).
MAX_KEY_LENGTH = 512
#: Keys travel in HTTP headers and URLs: visible ASCII only (a CR/LF would inject headers).
_KEY = re.compile(r"[\x21-\x7e]+")


def _check_key(value: str, what: str) -> str:
    if len(value) > MAX_KEY_LENGTH:
        raise ConfigError(f"{what}: the key is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY.fullmatch(value):
        raise ConfigError(f"{what}: the key holds characters other than visible ASCII")
    return value


def _url_problem(url: str) -> str | None:
    """Why a provider URL cannot be connected to (checked at start: the connector would raise
    on the first subscribe instead), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "port 0 cannot be connected to"
    return None


#: A local key guards the gateway (and the provider quota behind it) when it is bound off
#: loopback: shorter ones are too easy to guess.
MIN_LOCAL_KEY_LENGTH = 16


def _check_local_key(value: str, what: str) -> str:
    if len(value) < MIN_LOCAL_KEY_LENGTH:
        raise ConfigError(f"{what}: a local key needs at least {MIN_LOCAL_KEY_LENGTH} characters")
    return _check_key(value, what)


def is_loopback(host: str) -> bool:
    """Only loopback addresses (127.0.0.0/8, ::1, with or without brackets) and `localhost`; a name
    that merely begins with `127.` (`127.0.0.1.evil.example`) is not."""
    host = host.strip().lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def local_keys(config: Config, environ: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The local client keys, or None when none are configured; errors name the variable only."""
    name = config.server.local_keys_env
    if name is None:
        return None
    variables = os.environ if environ is None else environ
    keys = frozenset(_check_local_key(k.strip(), f"server.local_keys_env ({name})")
                     for k in variables.get(name, "").split(",") if k.strip())
    if not keys:
        raise ConfigError(f"server.local_keys_env: environment variable {name} is not set or holds no key")
    return keys


def api_key(name: str, provider: ProviderConfig, environ: Mapping[str, str] | None = None) -> str:
    """The provider's key from its environment variable; the error names the variable, never a value."""
    if provider.emulate:
        return KINDS[provider.kind].emulator_key
    variables = os.environ if environ is None else environ
    assert provider.api_key_env is not None  # checked by _check
    value = variables.get(provider.api_key_env, "").strip()
    if not value:
        raise ConfigError(f"providers.{name}.api_key_env: environment variable {provider.api_key_env} is not set")
    return _check_key(value, f"providers.{name}.api_key_env ({provider.api_key_env})")
