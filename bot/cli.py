"""Command line: serve (default) and the maintenance commands."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import gc
import importlib
import signal
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from bot import readiness
from bot.app import build_app
from bot.commands import COMMANDS
from bot.configuration.config import Config, ConfigError
from bot.observability.logs import configure_logging
from bot.persistence.database import DatabaseUnavailable
from bot.tools import ToolConfigError
from bot.web.keys import CLUSTER, LIFECYCLE, STORED_SETTINGS

log = structlog.get_logger("bot")


def _parser() -> argparse.ArgumentParser:
    commands = ", ".join(COMMANDS)
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="WhatsApp AI assistant server. With no command it serves; "
        f"other commands: {commands} (run.py COMMAND --help).",
    )
    parser.add_argument("--host", help="address to listen on (BOT_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (BOT_PORT, default 8080)")
    parser.add_argument("--data-dir", help="where bot.db and secrets live (BOT_DATA_DIR, default ./data)")
    return parser


def tune_gc() -> None:
    """Collect cyclic garbage less often than CPython's default of every 700 allocations.

    A server holds many long-lived objects (start-up state, then thousands of idle actors with their
    tasks and futures), and the default schedule keeps rescanning them: it cost 40% of webhook
    throughput and 100-150 ms pauses under load (bench/README.md). Start-up objects are frozen
    (never garbage, never scanned again) and collections run 14 times less often. Full (generation 2)
    collections, which walk every live actor, run 100 times less often still: each one was a pause
    of tens of milliseconds that set the webhook's p99 (92-238 ms at 80% load, 38 ms without them).
    They still run, so cyclic garbage is still reclaimed, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 1_000)


async def start_server(app: web.Application, config: Config) -> web.AppRunner:
    """Open the app's resources and listen on config.host:port; the caller cleans the runner up.

    aiohttp 3.14 has no timeout of its own for a request head that arrives slowly, but its keep-alive
    timer does the job: armed when a connection opens and after each answer, never extended by the
    bytes of an unfinished head, it closes any connection still without a whole head when it fires.
    So the keep-alive timeout is the header timeout, and an idle kept-alive connection is closed after
    the same time (Apache and Node.js default to 5 s). Bodies are bounded in bot/web/guards.py.
    """
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           keepalive_timeout=config.header_timeout_seconds,
                           max_line_size=8190, max_field_size=8190)
    try:
        await runner.setup()
        await web.TCPSite(runner, config.host, config.port).start()
    except BaseException:
        # Closes what the start-up opened (the database first of all) before the error is reported.
        await runner.cleanup()
        raise
    return runner


EXIT_CLUSTER_LOST = 75  # EX_TEMPFAIL: a supervisor should start it again


async def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully; the exit code (75 after losing the cluster's locks)."""
    app = build_app(config)
    stop = asyncio.Event()
    # A process that lost its place among several (its lock connection died) stops as if told to.
    app[LIFECYCLE].shutdown = stop.set
    runner = await start_server(app, config)
    # After setup: the settings page's stored key (in the database, now open) counts too.
    for problem in await readiness.check(config, app[STORED_SETTINGS]):
        log.warning("setting_missing", setting=problem.setting, effect=problem.effect, fix=problem.fix)
    tune_gc()
    log.info("listening", url=f"http://{config.host}:{config.port}", data_dir=str(config.data_dir))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        # Cleanup runs the cleanup_ctx teardowns in reverse: actors first, database last.
        await runner.cleanup()
        log.info("stopped")
    node = app.get(CLUSTER)
    return EXIT_CLUSTER_LOST if node is not None and node.lost else 0


def _run_command(name: str, argv: list[str], data_dir: str | None) -> int:
    module = importlib.import_module(COMMANDS[name])
    try:
        config = Config.from_env(data_dir=data_dir)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    result: int = asyncio.run(module.run(config, argv))
    return result


def unknown_command(name: str) -> str:
    """What to say for a mistyped command: the nearest one, and every one there is."""
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    guess = f"; did you mean {close[0]!r}?" if close else "."
    return (f"unknown command {name!r}{guess} Commands: {', '.join(sorted(COMMANDS))}. "
            "With no command, run.py serves (run.py --help for its options).")


def main(argv: Sequence[str]) -> int:
    """Entry point for run.py."""
    argv = list(argv)
    # `--data-dir D` may come before the command name; pull it out so every command honours it.
    data_dir: str | None = None
    if len(argv) >= 2 and argv[0] == "--data-dir":
        data_dir, argv = argv[1], argv[2:]
    # Serving takes options only, so a first word that is not an option was meant as a command.
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"run.py: {unknown_command(argv[0])}", file=sys.stderr)
        return 2
    configure_logging()
    if argv and argv[0] in COMMANDS:
        rest = argv[1:]
        if "--data-dir" in rest:
            i = rest.index("--data-dir")
            if i + 1 < len(rest):
                data_dir = rest[i + 1]
                rest = rest[:i] + rest[i + 2 :]
        return _run_command(argv[0], rest, data_dir)
    if data_dir is not None:
        argv = ["--data-dir", data_dir, *argv]
    args = _parser().parse_args(argv)
    try:
        config = Config.from_env(host=args.host, port=args.port, data_dir=args.data_dir)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency, but keep Windows usable
            code = asyncio.run(serve(config))
        else:
            code = uvloop.run(serve(config))
    except ToolConfigError as exc:
        # e.g. two tools with one name: the message names both modules.
        print(f"tool configuration error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        # Found while starting, e.g. a BOT_SECRET_KEY that is not a key: reported like any other setting.
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:  # e.g. PostgreSQL not running, or a wrong BOT_DATABASE_URL
        print(f"the database cannot be opened: {exc}", file=sys.stderr)
        return 1
    if code == EXIT_CLUSTER_LOST:
        print("stopped: the connection holding this process's conversation locks was lost; start it again",
              file=sys.stderr)
    return code
