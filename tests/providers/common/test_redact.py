"""The one key redactor: the key in any case, long cut-off echoes of it, and nothing else."""

import re

from hypothesis import given
from hypothesis import strategies as st

from providers.common.redact import Redactor

KEY = "73034021-0A1B-2C3D-4E5F-6A7B8C9D0E1F"


def test_the_key_is_masked_in_any_case_and_in_long_echoes():
    redact = Redactor(KEY)
    assert redact(f"bad key {KEY} here") == "bad key *** here"
    assert redact(f"bad key {KEY.lower()}") == "bad key ***"
    assert redact(f"key '{KEY[:12]}…' refused") == "key '***…' refused"  # a truncated echo
    assert redact(f"tail {KEY[-9:]}") == "tail ***"
    assert redact("nothing secret here: 7303") == "nothing secret here: 7303"  # short pieces stay
    assert redact.optional(None) is None


def test_a_short_key_is_masked_only_where_it_stands_alone():
    redact = Redactor("k")
    assert redact("Invalid API key") == "Invalid API key"
    assert redact("apikey=k&x=1") == "apikey=***&x=1"
    assert Redactor("")("anything") == "anything"


def _reference(secret: str, text: str) -> str:
    """The former implementation: one alternation of every piece of the key, longest first."""
    pieces = {secret[i:j] for i in range(len(secret)) for j in range(i + 8, len(secret) + 1)}
    pattern = re.compile("|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True)), re.IGNORECASE)
    return pattern.sub("***", text)


_KEYS = st.text(alphabet="abcAB12-_x", min_size=9, max_size=40)


@given(_KEYS, st.lists(st.one_of(st.text(alphabet="abcAB12-_x é", max_size=12), _KEYS), max_size=6))
def test_the_window_scan_masks_exactly_what_the_alternation_did(key, parts):
    text = "".join(parts) + key.upper()[3:] + " tail"
    assert Redactor(key)(text) == _reference(key, text)


def test_a_long_key_is_masked_without_a_pattern_of_all_its_pieces():
    key = "K" + "".join(f"{i:03d}" for i in range(170))  # 511 characters: the config allows 512
    redact = Redactor(key)
    assert redact(f"refused {key[100:300]} and {key.lower()}") == "refused *** and ***"
