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
        # A short key: a regex for the key standing alone. A longer one: the set of its
        # MIN_ECHO-character windows, so that finding any echo costs one set look-up per
        # position of the text (an alternation of every piece of a 512-character key took
        # seconds to compile and half a second per text).
        self._short = _alone(secret) if secret and len(secret) <= MIN_ECHO else None
        self._key = secret.translate(_ASCII_LOWER)
        self._windows = frozenset(self._key[i : i + MIN_ECHO] for i in range(len(secret) - MIN_ECHO + 1))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._short is not None:
            return self._short.sub(MASK, text)
        if not self._windows:
            return text
        return self._masked(text)

    def _masked(self, text: str) -> str:
        """Each leftmost, longest run of the text that is a piece of the key (≥ MIN_ECHO), masked."""
        folded = text.translate(_ASCII_LOWER)  # same length as text: keys are visible ASCII
        key, windows = self._key, self._windows
        out: list[str] = []
        done = i = 0
        last_start = len(folded) - MIN_ECHO
        while i <= last_start:
            if folded[i : i + MIN_ECHO] not in windows:
                i += 1
                continue
            end = i + MIN_ECHO
            while end < len(folded) and folded[i : end + 1] in key:
                end += 1
            out.append(text[done:i])
            out.append(MASK)
            done = i = end
        out.append(text[done:])
        return "".join(out)

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)


#: Characters a key is made of: a short key is masked only where it stands on its own, so that a
#: one-letter test key does not eat every "k" of "Invalid API key".
_KEY_CHARS: Final = r"A-Za-z0-9_\-"
#: Case folding of ASCII letters only: it never changes a text's length (str.lower() can).
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _alone(secret: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![{_KEY_CHARS}]){re.escape(secret)}(?![{_KEY_CHARS}])", re.IGNORECASE)


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
