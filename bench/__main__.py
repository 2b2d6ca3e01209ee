"""`python -m bench`: start the fakes, the bare app and the real server as processes, load them, print a table.

See bench/README.md for the method and the figures measured on the reference machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases
from bench.common import ROOT
from bench.phases import Fakes, Options
from bench.postgres import DEFAULT_URL

RESULTS_DIR = ROOT / "bench" / "results"
PHASES = "bare,flood,sustained,pg1,pg2,quiet,memory,parked,e2e,actor"
DEFAULT_PHASES = "bare,flood,sustained,pg1,pg2,quiet,memory,parked,actor"
# The sustained scenario on PostgreSQL: --only name → number of server processes.
PG_VARIANTS = {"pg1": 1, "pg2": 2}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small counts, under a minute (smoke test)")
    p.add_argument("--latency-ms", type=int, default=200, help="fake model latency L (default 200)")
    p.add_argument("--burst-ms", type=int, default=1000, help="BOT_BURST_WINDOW_MS for the live phases (1000)")
    p.add_argument("--actors", type=int, help="idle actors for the memory phase (20000; quick 1000)")
    p.add_argument("--duration", type=float, help="seconds of each load window (6; quick 2)")
    p.add_argument("--connections", type=int, default=64, help="closed-loop connections (64)")
    p.add_argument("--conversations", type=int, help="end-to-end conversations (1000; quick 40)")
    p.add_argument("--messages", type=int, default=5, help="messages per conversation (5)")
    p.add_argument("--conversation-rate", type=float,
                   help="new conversations per second in the end-to-end phase (12; quick 20)")
    p.add_argument("--rounds", type=int, help="alternating bare/ingest rounds, median reported (3; quick 1)")
    p.add_argument("--no-burst0", action="store_true", help="skip the extra end-to-end run with burst window 0")
    p.add_argument("--only", help=f"comma-separated phases: {PHASES} (default: {DEFAULT_PHASES})")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary data directories, server logs and PostgreSQL schemas")
    p.add_argument("--pg-url", default=os.environ.get("BOT_BENCH_DATABASE_URL", DEFAULT_URL),
                   help=f"PostgreSQL for pg1/pg2, a schema per phase (BOT_BENCH_DATABASE_URL; default {DEFAULT_URL})")
    return p.parse_args(argv)


def options(args: argparse.Namespace, workdir: Path) -> Options:
    """Defaults, scaled down by --quick."""
    quick = bool(args.quick)
    return Options(
        latency_ms=args.latency_ms,
        burst_ms=args.burst_ms,
        connections=args.connections,
        duration=args.duration or (2.0 if quick else 6.0),
        warmup=0.5 if quick else 1.0,
        customers=10_000,
        conversations=args.conversations or (40 if quick else 1000),
        messages_per_conversation=args.messages,
        conversation_rate=args.conversation_rate or (20.0 if quick else 12.0),
        actors=args.actors or (1000 if quick else 20_000),
        workdir=workdir,
        burst0=not (args.no_burst0 or quick),
        rounds=args.rounds or (1 if quick else 3),
        open_fractions=(0.8,) if quick else (0.5, 0.8),
        flood_rate=1000.0,
        flood_count=400 if quick else 2000,
        sustained_customers=400 if quick else 4000,
        sustained_messages=10,
        quiet_rate=100.0,
        quiet_seconds=3.0 if quick else 10.0,
        pg_url=args.pg_url,
        keep=bool(args.keep),
    )


def log(msg: str) -> None:
    """Progress on stderr (stdout stays the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def run_all(opts: Options, only: set[str]) -> dict[str, Any]:
    """Every selected phase, in an order where earlier results feed later ones."""
    res: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        fakes = await Fakes.start(http)
        try:
            if "bare" in only:
                log("bare aiohttp endpoint, closed loop (the yardstick)")
                res["bare"] = await phases.bare(opts)
            if "flood" in only:
                log(f"flood: {opts.flood_count} new conversations at {opts.flood_rate:.0f}/s, model 200 ms")
                res["flood"] = await phases.open_arrivals(opts, fakes, name="flood", rate=opts.flood_rate,
                                                          count=opts.flood_count, latency_ms=200, timeout=90)
            if "sustained" in only:
                log(f"sustained ingest: {opts.sustained_customers} customers x {opts.sustained_messages} messages, "
                    f"closed loop, model 0 ms, then the drain")
                res["sustained"] = await phases.sustained(opts, fakes, customers=opts.sustained_customers,
                                                          per_customer=opts.sustained_messages)
            # Right after the SQLite run, so that the three drains see the machine in the same mood.
            for name, processes in PG_VARIANTS.items():
                if name in only:
                    log(f"sustained on PostgreSQL, {processes} process{'es' if processes > 1 else ''}: the same "
                        "load spread over their ports, then the drain")
                    res[f"sustained_{name}"] = await phases.sustained_pg(
                        opts, fakes, name=name, processes=processes, customers=opts.sustained_customers,
                        per_customer=opts.sustained_messages)
            if "quiet" in only:
                log(f"quiet: new customers at {opts.quiet_rate:.0f}/s for {opts.quiet_seconds:.0f} s, model 200 ms")
                res["quiet"] = await phases.open_arrivals(
                    opts, fakes, name="quiet", rate=opts.quiet_rate, count=int(opts.quiet_rate * opts.quiet_seconds),
                    latency_ms=200, timeout=60)
            if "memory" in only:
                log(f"turns and memory: one message from each of {opts.actors} customers, model 0 ms")
                res["memory"] = await phases.memory(opts, fakes)
            if "parked" in only:
                log("component: the webhook path alone (turns parked), closed loop")
                res["parked"] = await phases.ingest(opts, fakes, parked=True)
            if "e2e" in only:
                log(f"end to end: {opts.conversations} conversations x {opts.messages_per_conversation}, "
                    f"burst {opts.burst_ms} ms, L {opts.latency_ms} ms")
                res["e2e"] = await phases.e2e(opts, fakes, opts.burst_ms)
            if "actor" in only:
                log(f"memory of the idle actor alone ({max(opts.actors, 20_000)} actors, no database work)")
                res["actor_alone"] = await phases.actor_alone(max(opts.actors, 20_000))
        finally:
            await fakes.stop()
    return res


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median acks per second, noting every round's figure."""
    ordered = sorted(runs, key=lambda r: float(r["ok_per_s"]))
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["rounds_ok_per_s"] = [r["ok_per_s"] for r in runs]
    return mid


Row = tuple[str, str, str, bool | None]


def _fmt(value: float, unit: str = "") -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:,.1f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def _rounds(run: dict[str, Any]) -> str:
    figures = run.get("rounds_ok_per_s", [])
    spread = f" (rounds {', '.join(f'{x:,.0f}' for x in figures)})" if len(figures) > 1 else ""
    return f"{run['ok_per_s']:,.0f}{spread}"


def rows(res: dict[str, Any], opts: Options, *, quick: bool = False) -> list[Row]:
    """(metric, measured, target, pass) for the summary table (issue 10's targets).

    --quick runs are too small for the throughput and memory targets: those rows are shown without
    a verdict, and only correctness and latency are judged.
    """
    out: list[Row] = []

    def judged(ok: bool) -> bool | None:
        return None if quick else ok

    bare = res.get("bare")
    if bare:
        out.append((f"bare aiohttp: acks/s (closed loop, {bare['connections']} conns)", f"{bare['ok_per_s']:,.0f}",
                    "yardstick", None))
    if "flood" in res:
        f = res["flood"]
        out.append((f"flood {f['messages']:,} new conversations at {f['rate']:,.0f}/s, L=200: ack p50 / p99",
                    f"{f['ack']['p50_ms']} / {f['ack']['p99_ms']} ms", "p99 <= 50 ms", f["ack"]["p99_ms"] <= 50))
        out.append(("flood: every conversation answered, reply p50 / p99 / max",
                    f"{f['answered']:,}/{f['messages']:,}, {f['duplicates']} dup; {f['reply']['p50_ms'] / 1000:.2f} / "
                    f"{f['reply']['p99_ms'] / 1000:.2f} / {f['reply']['max_ms'] / 1000:.2f} s", "all, max <= 10 s",
                    f["answered"] == f["messages"] and f["duplicates"] == 0 and f["reply"]["max_ms"] <= 10_000))
    out += sustained_rows(res, judged)
    if "quiet" in res:
        q = res["quiet"]
        out.append((f"quiet {q['rate']:,.0f} new customers/s, L=200: ack p99", f"{q['ack']['p99_ms']} ms",
                    "<= 20 ms", q["ack"]["p99_ms"] <= 20))
        out.append(("quiet: reply p50 (p99)", f"{q['reply']['p50_ms']:.0f} ms ({q['reply']['p99_ms']:.0f} ms)",
                    "<= 230 ms", q["answered"] == q["messages"] and q["reply"]["p50_ms"] <= 230))
    if "memory" in res:
        m = res["memory"]
        out.append((f"turns/s, one message from each of {m['actors']:,} customers, L=0", _fmt(m["turns_per_s"]),
                    ">= 400", judged(m["turns_per_s"] >= 400) if m["all_answered"] else False))
        out.append((f"server RSS per idle live actor ({m['actors']:,})", f"{m['rss_per_actor_bytes'] / 1024:.2f} KiB",
                    "<= 4 KiB", judged(m["rss_per_actor_bytes"] <= 4096) if m["all_answered"] else False))
        out.append(("server RSS: baseline (after start / warm)",
                    f"{m['rss_start_kib'] / 1024:,.1f} / {m['rss_warm_kib'] / 1024:,.1f} MiB", "info", None))
    if "parked" in res:
        p = res["parked"]
        ratio = f" = {p['ok_per_s'] / bare['ok_per_s']:.0%} of bare" if bare else ""
        out.append(("component: webhook path alone, turns parked: acks/s", f"{p['ok_per_s']:,.0f}{ratio}",
                    "component", None))
    if "e2e" in res:
        e = res["e2e"]
        target = e["latency_ms"] + e["burst_ms"] + 50
        out.append((f"e2e L={e['latency_ms']} burst={e['burst_ms']}: p50 / p99",
                    f"{e['e2e_p50_ms']} / {e['e2e_p99_ms']} ms", f"p50 <= {target} ms", e["e2e_p50_ms"] <= target))
    if "actor_alone" in res:
        a = res["actor_alone"]
        out.append(("idle actor alone: tracemalloc / RSS",
                    f"{a['traced_bytes_per_actor'] / 1024:.2f} / {a['rss_bytes_per_actor'] / 1024:.2f} KiB",
                    "<= 4 KiB", a["rss_bytes_per_actor"] <= 4096))
    return out


SUSTAINED_VARIANTS = ("sustained", "sustained_pg1", "sustained_pg2")


def _variant(run: dict[str, Any]) -> str:
    """E.g. "PostgreSQL, 2 processes"."""
    n = int(run["processes"])
    return f"{'SQLite' if run['backend'] == 'sqlite' else 'PostgreSQL'}, {n} process{'es' if n > 1 else ''}"


def _cores(cores: dict[str, float]) -> str:
    """Each server process's cores (and its PostgreSQL backends' together), then the whole machine's."""
    shown = [k for k in cores if k.startswith("server")] + [k for k in ("postgres", "machine") if k in cores]
    return ", ".join(f"{k} {float(cores[k]):.2f}" for k in shown)


def _drain_ratio(label: str, top: dict[str, Any] | None, bottom: dict[str, Any] | None, target: float,
                 as_percent: bool, judged: Callable[[bool], bool | None]) -> list[Row]:
    """One drain divided by another, against its target (no row unless both ran)."""
    if top is None or bottom is None:
        return []
    num, den = top["drain"]["messages_per_s"], bottom["drain"]["messages_per_s"]
    wanted = f">= {target:.0%}" if as_percent else f">= {target:.1f}x"
    if den <= 0:  # nothing left to drain after the last ack: no ratio to judge
        return [(label, "n/a (no drain below)", wanted, None)]
    ratio = num / den
    return [(label, f"{ratio:.0%}" if as_percent else f"{ratio:.2f}x", wanted, judged(ratio >= target))]


def _exactly_once(su: dict[str, Any], variant: str) -> Row:
    """Every message acknowledged (200) and answered exactly once; refused webhooks are named, and fail the row."""
    refused = su["messages"] - su["acked"]
    measured = f"{su['answered']:,}/{su['messages']:,}, {su['duplicates']} dup"
    if refused:
        statuses = ", ".join(f"{n:,} x {code}" for code, n in su["ingest"]["statuses"].items() if code != "200")
        lost = su["ingest"]["connection_errors"]
        measured += f"; {refused:,} refused ({statuses}{f', {lost} connections lost' if lost else ''})"
    return (f"sustained, {variant}: every message acknowledged and answered exactly once", measured, "all, 0 dup",
            su["answered"] == su["messages"] and su["duplicates"] == 0)


def sustained_rows(res: dict[str, Any], judged: Callable[[bool], bool | None]) -> list[Row]:
    """The sustained scenario on each backend: ingest, exactly-once, WAL; then the drains side by side, and CPU."""
    out: list[Row] = []
    runs = {name: res[name] for name in SUSTAINED_VARIANTS if name in res}
    bare = res.get("bare")
    for name, su in runs.items():
        ing, variant = su["ingest"], _variant(su)
        per_port = f"; per port {' / '.join(f'{n:,}' for n in ing['answers_by_port'].values())}" \
            if len(su["ports"]) > 1 else ""
        out.append((f"sustained {su['customers']:,} x {su['messages'] // su['customers']} msgs, L=0, {variant}: "
                    "acks/s (turns running)", f"{ing['ok_per_s']:,.0f} (p99 {ing['p99_ms']} ms{per_port})", "", None))
        if name == "sustained" and bare:
            ratio = ing["ok_per_s"] / bare["ok_per_s"]
            out.append(("sustained ingest / bare", f"{ratio:.1%}", ">= 20%", judged(ratio >= 0.20)))
        out.append(_exactly_once(su, variant))
        if su["wal_max_mib"] is not None:
            out.append((f"sustained, {variant}: largest WAL file (at the end)",
                        f"{su['wal_max_mib']} MiB ({su['wal_end_mib']} MiB)", "< 64 MiB", su["wal_max_mib"] < 64))
    if any(su["wal_max_mib"] is None for su in runs.values()):
        out.append(("sustained, PostgreSQL: largest WAL file", "n/a (the sampler reads SQLite's WAL)", "", None))
    for name, su in runs.items():
        d = su["drain"]
        sqlite = name == "sustained"
        out.append((f"sustained drain, {_variant(su)}: messages answered/s",
                    f"{d['messages_per_s']:,.0f} ({d['messages']:,} msgs in {d['seconds']} s)",
                    ">= 1,000/s" if sqlite else "", judged(d["messages_per_s"] >= 1000) if sqlite else None))
    out += _drain_ratio("drain: PostgreSQL 2 processes / 1 process", runs.get("sustained_pg2"),
                        runs.get("sustained_pg1"), 1.3, False, judged)
    out += _drain_ratio("drain: PostgreSQL 1 process / SQLite 1 process", runs.get("sustained_pg1"),
                        runs.get("sustained"), 0.70, True, judged)
    for su in runs.values():
        out.append((f"sustained CPU (cores), {_variant(su)}: ingest | drain",
                    f"{_cores(su['cores'])} | {_cores(su['drain']['cores'])}", "info", None))
    return out


def disturbances(res: dict[str, Any], threshold: float = 0.25) -> list[str]:
    """Phases during which processes outside the benchmark used a noticeable share of the 2 cores."""
    notes = []
    for name, result in res.items():
        cores = result.get("cores") if isinstance(result, dict) else None
        if cores and cores.get("other", 0.0) >= threshold:
            notes.append(f"{name}: other processes used {cores['other']:.2f} cores meanwhile")
    return notes


def table(lines: list[Row]) -> str:
    """A plain-text table."""
    header = ("metric", "measured", "target", "pass")
    cells = [header] + [(m, v, t, "-" if p is None else ("PASS" if p else "FAIL")) for m, v, t, p in lines]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*cells[0]), sep, *(fmt.format(*c) for c in cells[1:])])


def main(argv: list[str]) -> int:
    """Run the benchmark and print the table; exit 1 when a target fails."""
    args = parse_args(argv)
    only = set((args.only or DEFAULT_PHASES).split(","))
    unknown = only - set(PHASES.split(","))
    if unknown:
        print(f"unknown phase(s) {', '.join(sorted(unknown))}: choose from {PHASES}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bot-bench-"))
    opts = options(args, workdir)
    started = time.time()
    try:
        import uvloop

        res = uvloop.run(run_all(opts, only))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    elapsed = time.time() - started
    lines = rows(res, opts, quick=args.quick)
    print()
    print(table(lines))
    notes = disturbances(res)
    if notes:
        print("\nDisturbed (figures of these phases are pessimistic):\n  " + "\n  ".join(notes))
    print(f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{elapsed:.0f} s in all{' (quick)' if args.quick else ''}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    settings = {k: str(v) for k, v in dataclasses.asdict(opts).items()}
    out.write_text(json.dumps({"options": settings, "results": res, "elapsed_s": round(elapsed, 1)}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 1 if any(p is False for *_, p in lines) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
