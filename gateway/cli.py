"""The `mdgateway` command: `run` the gateway (the default), or `emulate` one provider standalone.

Exit codes: 0 after a clean Ctrl-C, 2 for a bad config or bad arguments (the message names the key
and the reason). Logs go to stderr; no secret is ever logged.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
from functools import partial

import trio

from gateway.app import run_gateway
from gateway.config import ConfigError, load
from providers.registry import KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdgateway", description="Local gateway for real-time crypto market data.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the gateway (default: both providers emulated, no keys needed)")
    _add_run_arguments(run)
    emulate = commands.add_parser("emulate", help="run one provider's emulator standalone")
    emulate.add_argument("kind", choices=sorted(KINDS))
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulate.add_argument("--rate", type=float, default=20.0, help="market steps per second per connection (0: as fast as possible)")
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: the embedded config, both providers emulated)")
    parser.add_argument("--host", help="override [server].host")
    parser.add_argument("--port", type=int, help="override [server].port (0 picks a free port)")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # trio-websocket's DEBUG lines print URLs (CoinAPI keys live in them) and providers' close
    # reasons verbatim, unredacted: they never reach the log, whatever the level.
    logging.getLogger("trio-websocket").setLevel(max(logging.INFO, logging.getLogger().level))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    port = getattr(args, "port", None)
    if port is not None and not 0 <= port <= 65535:
        print(f"mdgateway: --port {port}: not a TCP port (0–65535; 0 picks a free one)", file=sys.stderr)
        return 2
    where = "the port"
    try:
        if args.command == "emulate":
            where = f"{args.host}:{args.port}"
            trio.run(_emulate, args.kind, args.host, args.port, args.rate)
        else:
            config = load(getattr(args, "config", None))
            where = f"{getattr(args, 'host', None) or config.server.host}:{config.server.port if port is None else port}"
            trio.run(_run, config, getattr(args, "host", None), getattr(args, "port", None))
    except (ConfigError, OSError, BaseExceptionGroup) as exc:
        problem = _start_error(exc, where)
        if problem is None:
            raise
        print(f"mdgateway: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _start_error(exc: BaseException, where: str) -> str | None:
    """One line for what stopped the start (a bad config, a port that cannot be listened on), or
    None for anything else (a bug: let it show its traceback). Raised at start, it may come wrapped
    in the nursery's exception group."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _start_error(exc.exceptions[0], where)
    if isinstance(exc, ConfigError):
        return f"bad config: {exc}"
    if isinstance(exc, OSError) and exc.errno in _LISTEN_ERRORS:
        return f"cannot listen on {where}: {_LISTEN_ERRORS[exc.errno]}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: the host does not resolve ({exc.strerror})"
    return None


_LISTEN_ERRORS = {
    errno.EADDRINUSE: "the port is already in use (another mdgateway? pick one with --port)",
    errno.EACCES: "not allowed to listen on that port (below 1024 needs privileges)",
    errno.EADDRNOTAVAIL: "--host is not an address of this machine",
}


async def _run(config, host: str | None, port: int | None) -> None:
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(partial(run_gateway, config, host=host, port=port, announce=_print))
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                print("mdgateway: shutting down", file=sys.stderr, flush=True)
                await gateway.shutdown()
                nursery.cancel_scope.cancel()
                return


async def _emulate(kind: str, host: str, port: int, rate: float) -> None:
    emulator = KINDS[kind].make_emulator(rate)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(emulator.serve, host, port)
        _print(f"{kind} emulator listening on ws://{host}:{bound}{KINDS[kind].emulator_path}  (Ctrl-C stops)")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def _print(text: str) -> None:
    print(text, flush=True)
