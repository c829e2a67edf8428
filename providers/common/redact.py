"""Keeping a secret out of every text that leaves an adapter (logs, health, status reasons).

One `Redactor` per adapter, built from its key: every text a provider or a library produced goes
through it before it is logged or kept. Case does not matter (a server may echo the key upper-
cased), and neither does truncation: any run of `MIN_ECHO` or more characters of the key is
masked too, because error texts often echo a cut-off key. Decide what a text *means* before
redacting it (redaction may change words that happen to contain the key).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

#: Shorter runs of a key are too common to mask (a key shares short runs with ordinary words).
MIN_ECHO: Final = 8
MASK: Final = "***"


class Redactor:
    def __init__(self, secret: str) -> None:
        self._pattern = _pattern(secret) if secret else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)


#: Characters a key is made of: a short key is masked only where it stands on its own, so that a
#: one-letter test key does not eat every "k" of "Invalid API key".
_KEY_CHARS: Final = r"A-Za-z0-9_\-"


def _pattern(secret: str) -> re.Pattern[str]:
    """The key itself, or any piece of it of MIN_ECHO or more characters, longest first."""
    n = len(secret)
    if n <= MIN_ECHO:
        alone = rf"(?<![{_KEY_CHARS}]){re.escape(secret)}(?![{_KEY_CHARS}])"
        return re.compile(alone, re.IGNORECASE)
    pieces = {secret[i:j] for i in range(n) for j in range(i + MIN_ECHO, n + 1)}
    # Bounded: a key is at most a few hundred characters (checked where keys are read).
    alternatives = sorted(pieces, key=len, reverse=True)
    return re.compile("|".join(re.escape(p) for p in alternatives), re.IGNORECASE)


def url_without_credentials(url: str) -> str:
    """A provider URL fit for a banner, a log or health: user info, CoinAPI's `/APIKEY-…` path
    segment and any `apikey`/`key`/`token` query value are masked."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    path = _APIKEY_PATH.sub(lambda m: m.group(1) + MASK, parts.path)
    query = urllib.parse.urlencode(
        [(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


_APIKEY_PATH: Final = re.compile(r"(/apikey-)[^/]*", re.IGNORECASE)
_SECRET_QUERY_KEYS: Final = frozenset({"apikey", "api_key", "key", "token", "access_token", "x-coinapi-key"})
