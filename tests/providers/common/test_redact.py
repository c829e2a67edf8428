"""The one key redactor: the key in any case, long cut-off echoes of it, and nothing else."""

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
