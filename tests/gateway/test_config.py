"""A bad config fails at start with the key path and the reason; secrets come only from env vars."""

import pytest

from gateway.config import ConfigError, api_key, load, local_keys, parse

VALID = """
[providers.lz]
kind = "luzia"
url = "wss://api.luzia.dev/v1/ws"
api_key_env = "LUZIA_KEY"
tier = "enterprise"

[providers.ca]
kind = "coinapi"
url = "wss://ws.coinapi.io/v1/"
api_key_env = "COINAPI_KEY"

[routes]
trade = ["ca"]
ticker = ["lz", "ca"]
"""


def test_the_embedded_default_emulates_both_providers():
    config = load(None)
    assert {p.kind for p in config.providers.values()} == {"luzia", "coinapi"}
    assert all(p.emulate for p in config.providers.values())
    assert set(config.routes) == {"trade", "quote", "ticker", "book"}
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8765)


def test_a_valid_file_parses_with_its_options():
    config = parse(VALID)
    assert config.providers["lz"].policy.tier == "enterprise"
    assert config.routes["ticker"] == ["lz", "ca"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[server]\nport = "x"', "server.port: Expected `int`, got `str`"),
        ("[server]\nprot = 1", "server: Object contains unknown field `prot`"),
        ("[server]\nport = 70000", "server.port: Expected `int` <= 65535"),
        ('[providers.a]\nkind = "luzia"', "providers.a.url: required unless emulate = true"),
        ('[providers.a]\nkind = "nope"', "providers.a.kind: Invalid value 'nope' (known: coinapi, luzia)"),
        ('[providers.a]\nkind = "luzia"\nemulate = true\ntier = "gold"', "providers.a.tier: Invalid enum value 'gold'"),
        ('[providers.a]\nkind = "luzia"\nurl = "http://x"\napi_key_env = "K"', "providers.a.url: must start with ws:// or wss://"),
        ('[providers.a]\nkind = "luzia"\nemulate = true\n[routes]\ntrade = ["b"]', "routes.trade: no provider named 'b'"),
        ('[providers.a]\nkind = "luzia"\nemulate = true\n[routes]\ncandles = ["a"]', "routes.candles: unknown data type"),
        ('[server]\nhost = "0.0.0.0"\n[providers.a]\nkind = "luzia"\nemulate = true', "server.host: 0.0.0.0 is not loopback"),
        ("[server", "not valid TOML"),
        ("", "providers: at least one provider is required"),
    ],
)
def test_bad_configs_name_the_key_and_the_reason(text, expected):
    with pytest.raises(ConfigError) as info:
        parse(text, "gw.toml")
    assert str(info.value).startswith("gw.toml: ")
    assert expected in str(info.value)


def test_missing_key_variable_is_named_and_no_value_leaks():
    config = parse(VALID)
    with pytest.raises(ConfigError, match="environment variable LUZIA_KEY is not set"):
        api_key("lz", config.providers["lz"], environ={})
    assert api_key("lz", config.providers["lz"], environ={"LUZIA_KEY": " lz_secret "}) == "lz_secret"


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.toml"))


def test_local_keys_come_from_their_variable_and_open_non_loopback_binding():
    text = '[server]\nhost = "0.0.0.0"\nlocal_keys_env = "GW_KEYS"\n[providers.a]\nkind = "luzia"\nemulate = true'
    config = parse(text)
    assert local_keys(config, {"GW_KEYS": " key-one-0123456789, key-two-0123456789 ,"}) == {"key-one-0123456789", "key-two-0123456789"}
    with pytest.raises(ConfigError, match="environment variable GW_KEYS is not set"):
        local_keys(config, {})
    assert local_keys(parse('[providers.a]\nkind = "luzia"\nemulate = true'), {}) is None


def _provider_toml(extra: str = "") -> str:
    return f'[providers.ca]\nkind = "coinapi"\nurl = "wss://ws.coinapi.io/v1/"\napi_key_env = "MDG_K"\n{extra}[routes]\ntrade = ["ca"]\n'


@pytest.mark.parametrize(
    ("value", "reason"),
    [("x" * 513, "is longer than 512 characters"), ("key\r\nX-Injected: 1", "holds characters other than visible ASCII"),
     ("ключ", "holds characters other than visible ASCII")],
)
def test_a_provider_key_that_cannot_be_a_key_fails_at_start_naming_the_variable(value, reason):
    from gateway.config import api_key

    config = parse(_provider_toml())
    with pytest.raises(ConfigError) as info:
        api_key("ca", config.providers["ca"], {"MDG_K": value})
    assert str(info.value) == f"providers.ca.api_key_env (MDG_K): the key {reason}"
    assert value not in str(info.value)


def test_emulate_together_with_a_url_is_refused():
    with pytest.raises(ConfigError) as info:
        parse('[providers.ca]\nkind = "coinapi"\nemulate = true\nurl = "wss://ws.coinapi.io/v1/"\n')
    assert "providers.ca.url: not used with emulate = true" in str(info.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [('allowed_origins = ["evil.example"]', "server.allowed_origins[0]"),
     ('allowed_origins = ["https://app.example", "javascript:alert(1)"]', "server.allowed_origins[1]"),
     ('allowed_hosts = ["http://gw.example"]', "server.allowed_hosts[0]")],
)
def test_allowed_origins_and_hosts_are_checked_at_start(toml, key):
    with pytest.raises(ConfigError) as info:
        parse(f"[server]\n{toml}\n" + _provider_toml())
    assert f"config: {key}:" in str(info.value)


def test_allowed_origins_and_hosts_of_the_right_shape_are_accepted():
    config = parse('[server]\nallowed_origins = ["https://app.example:8443", "http://[::1]:3000"]\n'
                   'allowed_hosts = ["gw.example", "gw.example:8765"]\n' + _provider_toml())
    assert config.server.allowed_origins == ["https://app.example:8443", "http://[::1]:3000"]


def test_toml_nested_too_deeply_is_a_config_error_not_a_traceback():
    with pytest.raises(ConfigError) as info:
        parse("a = " + "[" * 100_000 + "]" * 100_000)
    assert str(info.value) == "config: not valid TOML: nested too deeply"


@pytest.mark.parametrize(
    ("url", "reason"),
    [("ws://127.0.0.1:99999/v1/", "not a valid URL"), ("ws://127.0.0.1:abc/v1/", "not a valid URL"),
     ("ws://[::1/v1/", "not a valid URL"), ("ws:///v1/", "names no host"), ("ws://user@/v1/", "names no host"),
     ("wss://feed.example:0/", "port 0 cannot be connected to")],
)
def test_a_provider_url_that_cannot_be_connected_to_fails_at_start(url, reason):
    with pytest.raises(ConfigError) as info:
        parse(f'[providers.ca]\nkind = "coinapi"\nurl = "{url}"\napi_key_env = "K"\n[routes]\ntrade = ["ca"]\n')
    assert str(info.value).startswith(f"config: providers.ca.url: {reason}")


@pytest.mark.parametrize(
    "limits", ["messages_per_second = inf", "max_streams = 99999999999999999999999", "message_burst = 10000000000"]
)
def test_limits_that_would_switch_a_cap_off_are_refused(limits):
    with pytest.raises(ConfigError) as info:
        parse(f"[limits]\n{limits}\n" + _provider_toml())
    assert f"config: limits.{limits.split()[0]}:" in str(info.value)


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_bytes(b"\xff\xfe[server]\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0)"


def test_a_local_key_too_short_to_resist_guessing_fails_at_start():
    config = parse('[server]\nlocal_keys_env = "GW_KEYS"\n[providers.a]\nkind = "luzia"\nemulate = true')
    with pytest.raises(ConfigError) as info:
        local_keys(config, {"GW_KEYS": "long-enough-key-0123,short"})
    assert str(info.value) == "server.local_keys_env (GW_KEYS): a local key needs at least 16 characters"
    assert "short" not in str(info.value).split(":")[-1]  # the value itself is never printed
