"""CoinAPI's own how-to clients (shared/seeds/000, copied to tests/fixtures/coinapi_howto/), run
as they are written with only the URL changed to the gateway's: the Python `websocket-client`
script, and the Node `ws` script when Node and the npm registry are available.

Each runs in a subprocess until it has printed the trades it asked for (bounded by a hang guard,
then killed: the scripts run forever by design). No wall-clock speed is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from gateway.app import run_gateway
from gateway.config import parse

HANG_GUARD = 30  # seconds; generous for a loaded 2-core CI box
NPM_INSTALL_TIMEOUT = 180
HOWTO = Path(__file__).parents[1] / "fixtures" / "coinapi_howto"
#: Where the Node test keeps the `ws` package between runs (MDGATEWAY_NODE_CACHE overrides).
NODE_CACHE = Path(os.environ.get("MDGATEWAY_NODE_CACHE", Path.home() / ".cache" / "mdgateway" / "coinapi-howto-node"))
CONFIG = parse("""
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 50
[routes]
trade = ["coinapi"]
""")


def with_url(source: str, original: str, url: str) -> str:
    """The script with its one URL replaced, and nothing else."""
    assert source.count(original) == 1, f"expected the how-to's URL {original!r} exactly once"
    return source.replace(original, url)


async def run_until_trades(command: list[str], cwd: Path, wanted: set[str], env: dict[str, str]) -> list[dict]:
    """Run a client until it has printed a trade of each `wanted` symbol id; what it printed, as JSON."""
    process = await trio.lowlevel.open_process(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = b""
    try:
        with trio.move_on_after(HANG_GUARD):
            while not wanted <= _trade_ids(output):
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    break
                output += chunk
    finally:
        process.kill()
        await process.wait()
    assert wanted <= _trade_ids(output), f"{command[0]} printed:\n{output.decode(errors='replace')[-3000:]}"
    return _printed_json(output)


def _printed_json(output: bytes) -> list[dict]:
    """Each complete printed line that is a JSON object (what follows the last newline may be cut short)."""
    lines = output.decode(errors="replace").split("\n")[:-1]
    return [json.loads(line) for line in lines if line.startswith("{")]


def _trade_ids(output: bytes) -> set[str]:
    return {m["symbol_id"] for m in _printed_json(output) if m.get("type") == "trade"}


async def test_the_howto_python_client_gets_its_trades(nursery, tmp_path) -> None:
    gateway = await nursery.start(partial(run_gateway, CONFIG, port=0))
    source = (HOWTO / "howto_client.py").read_text()
    script = tmp_path / "client.py"
    script.write_text(with_url(source, "wss://ws.coinapi.io/v1", gateway.url("/v1")))
    wanted = {"BITSTAMP_SPOT_BTC_USD", "BITFINEX_SPOT_BTC_USD"}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # print() to a pipe would otherwise sit in a buffer
    printed = await run_until_trades([sys.executable, str(script)], tmp_path, wanted, env)
    assert {(m["type"], m["symbol_id"]) for m in printed} == {("trade", s) for s in wanted}  # and nothing else


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The cached `node_modules` holding `ws`, installed by `npm install` from the how-to's own
    package.json on first use; skips the test where Node, npm or the registry is unavailable."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the how-to's Node client")
    modules = NODE_CACHE / "node_modules"
    if not (modules / "ws" / "package.json").exists():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        shutil.copy(HOWTO / "package.json", NODE_CACHE / "package.json")
        command = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(command, cwd=NODE_CACHE, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install ws did not finish within {NPM_INSTALL_TIMEOUT} s")
        if done.returncode != 0 or not (modules / "ws" / "package.json").exists():
            why = " | ".join(line for line in done.stderr.splitlines() if line.startswith("npm error"))[:400]
            pytest.skip(f"npm install ws failed (registry unreachable?): {why}")
    return modules


async def test_the_howto_node_client_gets_its_trades(nursery, tmp_path, node_modules) -> None:
    gateway = await nursery.start(partial(run_gateway, CONFIG, port=0))
    source = (HOWTO / "howto_client.js").read_text()
    (tmp_path / "index.js").write_text(with_url(source, "wss://ws.coinapi.io/v1/", gateway.url("/v1/")))
    shutil.copy(HOWTO / "package.json", tmp_path / "package.json")  # "type": "module", as the how-to says
    (tmp_path / "node_modules").symlink_to(node_modules, target_is_directory=True)
    wanted = {"BITSTAMP_SPOT_BTC_USD", "BITFINEX_SPOT_BTC_LTC"}
    printed = await run_until_trades(["node", "index.js"], tmp_path, wanted, dict(os.environ))
    assert {(m["type"], m["symbol_id"]) for m in printed} == {("trade", s) for s in wanted}
