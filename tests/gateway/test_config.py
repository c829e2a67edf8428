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
    assert local_keys(config, {"GW_KEYS": " k1, k2 ,"}) == {"k1", "k2"}
    with pytest.raises(ConfigError, match="environment variable GW_KEYS is not set"):
        local_keys(config, {})
    assert local_keys(parse('[providers.a]\nkind = "luzia"\nemulate = true'), {}) is None
