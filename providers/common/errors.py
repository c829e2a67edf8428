"""The project's own error vocabulary for everything a provider (or a client of a provider's
protocol) can do wrong. Library exceptions never leave `transport`; these are what the rest sees.

Convention, the same in every provider package:
- decoders *raise* `MalformedFrame` for a frame that is not a message of the shape its type
  promises, and *return* an `UnknownMessage` for a well-formed message of a type we do not know
  (providers add types: count it, skip it — it is not an error);
- a server-side state machine turns a bad client request into the protocol's own error reply;
  `RequestError` carries the code and the wording from the parser to that reply;
- a session ends with `AuthRejected` (our key: stop hammering), `ProviderError` (a reconnect may
  cure it) or `TransportError` (the network or the peer went away).
"""

from __future__ import annotations

from typing import NamedTuple


class MalformedFrame(ValueError):
    """The peer sent something that is not a message of the shape its `type` promises."""


class UnknownMessage(NamedTuple):
    """A well-formed message of a `type` this code does not know (yet): count it, skip it."""

    type: str


class RequestError(ValueError):
    """A client request that earns the protocol's error reply; `code` is the protocol's own code
    (None where the protocol has none, as CoinAPI's `error` message)."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code


class _WithDetail(Exception):
    """An upstream failure: its message is the project's own wording (safe for health, status
    events and clients); `detail` is what the provider said, free text, for logs only (redact it
    before it is stored)."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class AuthRejected(_WithDetail):
    """The provider refused our key: retrying quickly would only hammer it."""


class ProviderError(_WithDetail):
    """The provider ended the session with an error that a reconnect may cure."""


class TransportError(Exception):
    """Connecting failed, or the connection broke. `status` is the HTTP status of a refused
    upgrade; `code` the WebSocket close code when the peer closed."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
