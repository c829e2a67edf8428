"""The command as a user meets it: a bad config stops it at start with the key and the reason."""

import subprocess
import sys

import pytest

from gateway.cli import main


def test_bad_config_file_exits_2_naming_key_and_reason(tmp_path, capsys):
    config = tmp_path / "gw.toml"
    config.write_text('[providers.lz]\nkind = "luzia"\nemulate = true\ntier = "gold"\n')
    assert main(["run", "--config", str(config)]) == 2  # the console script's entry point, in-process
    stderr = capsys.readouterr().err
    assert "providers.lz.tier: Invalid enum value 'gold'" in stderr
    assert len(stderr.strip().splitlines()) == 1  # one line: the key and the reason


def test_missing_key_variable_is_named_and_its_value_never_printed(tmp_path, monkeypatch):
    config = tmp_path / "gw.toml"
    config.write_text('[providers.ca]\nkind = "coinapi"\nurl = "wss://ws.coinapi.io/v1/"\napi_key_env = "MDG_TEST_KEY"\n')
    monkeypatch.delenv("MDG_TEST_KEY", raising=False)
    assert main(["run", "--config", str(config)]) == 2


def test_non_loopback_host_without_local_keys_refuses_to_start(capsys):
    assert main(["run", "--host", "0.0.0.0"]) == 2
    assert "not loopback" in capsys.readouterr().err


def test_unknown_command_is_an_argument_error():
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_emulate_runs_one_provider_standalone_on_loopback():
    import trio
    from trio_websocket import open_websocket_url

    proc = subprocess.Popen([sys.executable, "-m", "gateway", "emulate", "luzia", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "luzia emulator listening on ws://127.0.0.1:" in line
        url = line.split()[4]

        async def connected() -> str:
            with trio.fail_after(30):
                async with open_websocket_url(url, extra_headers=[(b"authorization", b"Bearer lz_test")]) as ws:
                    return await ws.get_message()

        assert '"type":"connected"' in trio.run(connected)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_outside_the_tcp_range_is_one_line_and_exit_2(port, capsys):
    assert main(["run", "--port", port]) == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr == f"mdgateway: --port {port}: not a TCP port (0–65535; 0 picks a free one)"


def test_a_port_already_in_use_is_one_line_naming_it_and_exit_2(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["run", "--port", str(port)]) == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith(f"mdgateway: cannot listen on 127.0.0.1:{port}: the port is already in use")
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr


def test_library_lines_that_print_urls_and_close_reasons_stay_out_of_a_debug_log(monkeypatch):
    import logging

    from gateway.cli import configure_logging

    root, library = logging.getLogger(), logging.getLogger("trio-websocket")
    levels = root.level, library.level
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process: basicConfig applies
    try:
        root.setLevel(logging.WARNING)
        library.setLevel(logging.NOTSET)
        configure_logging("DEBUG")
        assert logging.getLogger("gateway.app").isEnabledFor(logging.DEBUG)
        assert not library.isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(levels[0])  # setLevel, not assignment: it clears the loggers' level cache
        library.setLevel(levels[1])
