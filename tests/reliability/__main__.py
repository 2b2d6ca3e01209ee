"""Run the fault-injection scenarios standalone and print a summary table.

    python -m tests.reliability --scale 4            # every scenario; ≥ 20 SIGKILL trials, a real 60 s outage
    python -m tests.reliability --only sigkill storm  # some of them
    python -m tests.reliability --markdown out.md     # also write the table as Markdown
    python -m tests.reliability --database-url postgresql://postgres@127.0.0.1/test   # on PostgreSQL

Exit status 0 when every scenario met its target (a documented KNOWN LIMIT does not count as a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import structlog

from bot.observability.logs import configure_logging
from tests import backend
from tests.reliability.harness import ScenarioResult
from tests.reliability.scenarios import SCENARIOS, kill_trials

COLUMNS = ("scenario", "messages", "lost", "duplicate replies", "at-most-once gaps", "fallbacks", "seconds", "result")


def _row(r: ScenarioResult) -> tuple[str, ...]:
    o = r.outcome
    return (r.name, str(o.messages), str(o.lost), str(o.duplicates), str(o.gaps), str(o.fallbacks),
            f"{r.seconds:.1f}", r.verdict)


def table(results: list[ScenarioResult]) -> str:
    """A plain-text table for the terminal."""
    rows = [COLUMNS, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results: list[ScenarioResult]) -> str:
    """The same table in Markdown, with the notes below it."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    lines.append("")
    lines += [f"- **{r.name}**: {r.note}" + (f" (known limit: {r.known_limit})" if r.known_limit and not r.passed
                                             else "") for r in results]
    return "\n".join(lines)


async def run(scale: int, names: list[str]) -> list[ScenarioResult]:
    """Run the chosen scenarios one after the other, each in its own scratch directory (and schema)."""
    results: list[ScenarioResult] = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"bot-reliability-{name}-") as scratch:
            began = time.monotonic()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            try:
                rows = await SCENARIOS[name](scale, Path(scratch))
            finally:
                schemas = backend.postgres()
                if schemas is not None:
                    schemas.release_all()
            print(f"  {name} done in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
            results.extend(rows)
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1,
                        help="size of every scenario (1 = the pytest default; 4+ = 20+ SIGKILL trials, 60 s outage)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--markdown", type=Path, help="also write the table and notes as Markdown to this file")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "bot-reliability.log",
                        help="where the in-process servers log (JSON lines; default %(default)s)")
    parser.add_argument("--database-url", default=os.environ.get(backend.ENV, ""),
                        help="run on PostgreSQL, a schema per scenario (default: BOT_TEST_DATABASE_URL; "
                             "unset = SQLite)")
    args = parser.parse_args(argv)
    if args.database_url:
        schemas = backend.PostgresSchemas(args.database_url)
        schemas.prepare()
        backend.install(schemas)
    log_file = args.log.open("w", encoding="utf-8")
    configure_logging(json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log_file))
    names = args.only or list(SCENARIOS)
    print(f"scale {args.scale}: {kill_trials(args.scale)} SIGKILL trials", file=sys.stderr)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        results = asyncio.run(run(args.scale, names))
    else:
        results = uvloop.run(run(args.scale, names))
    print(table(results))
    print()
    for r in results:
        print(f"- {r.name}: {r.note}")
        if r.known_limit and not r.passed:
            print(f"  known limit: {r.known_limit}")
        for problem in r.outcome.problems:
            print(f"  ! {problem}")
    if args.markdown:
        args.markdown.write_text(markdown(results) + "\n", encoding="utf-8")
    log_file.close()
    print(f"\nserver logs: {args.log}")
    schemas = backend.postgres()
    if schemas is not None:
        backend.install(None)
        schemas.close()
    return 0 if all(r.passed or r.known_limit for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
