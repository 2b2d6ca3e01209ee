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
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases
from bench.common import ROOT
from bench.phases import Fakes, Options

RESULTS_DIR = ROOT / "bench" / "results"


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
    p.add_argument("--only", help="comma-separated phases: bare,ingest,live,e2e,memory,actor")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directories and server logs")
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
            # Bare and ingest alternate, and each round's pair (back to back) gives one ratio: on a small
            # shared machine a window can lose a core to someone else, so the median round is reported.
            bare_runs: list[dict[str, Any]] = []
            ingest_runs: list[dict[str, Any]] = []
            for round_no in range(1, opts.rounds + 1):
                if "bare" in only:
                    log(f"bare aiohttp endpoint, closed loop (round {round_no}/{opts.rounds})")
                    bare_runs.append(await phases.bare(opts))
                if "ingest" in only:
                    log(f"ingest (webhook path, turns parked), closed loop (round {round_no}/{opts.rounds})")
                    ingest_runs.append(await phases.ingest(opts, fakes, parked=True))
            if bare_runs:
                res["bare"] = median_run(bare_runs)
            if ingest_runs:
                res["ingest"] = median_run(ingest_runs)
            if bare_runs and ingest_runs:
                ratios = [i["ok_per_s"] / b["ok_per_s"] for b, i in zip(bare_runs, ingest_runs, strict=True)]
                res["ratio"] = {"per_round": [round(r, 4) for r in ratios], "median": statistics.median(ratios)}
            if ingest_runs:
                for fraction in opts.open_fractions:
                    rate = round(fraction * res["ingest"]["ok_per_s"], 1)
                    log(f"ingest ack latency, open loop at {rate}/s ({fraction:.0%} of the closed-loop rate)")
                    result = await phases.ingest(opts, fakes, parked=True, rate=rate)
                    res[f"ingest_open_{round(fraction * 100)}"] = {**result, "fraction": fraction}
            if "live" in only:
                log("ingest with the whole pipeline live, closed loop")
                res["live"] = await phases.ingest(opts, fakes, parked=False)
            if "e2e" in only:
                log(f"end to end: {opts.conversations} conversations x {opts.messages_per_conversation}, "
                    f"burst {opts.burst_ms} ms, L {opts.latency_ms} ms")
                res["e2e"] = await phases.e2e(opts, fakes, opts.burst_ms)
                if opts.burst0 and opts.burst_ms != 0:
                    log("end to end with burst window 0")
                    res["e2e_burst0"] = await phases.e2e(opts, fakes, 0)
            if "memory" in only:
                log(f"memory: {opts.actors} idle live actors")
                res["memory"] = await phases.memory(opts, fakes)
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
    """(metric, measured, target, pass) for the summary table.

    --quick windows (2 s, 1,000 actors) are too small for the throughput and memory targets: those
    rows are shown without a verdict, and only correctness and latency are judged.
    """
    out: list[Row] = []

    def judged(ok: bool) -> bool | None:
        return None if quick else ok

    bare, ing = res.get("bare"), res.get("ingest")
    if bare:
        out.append((f"bare aiohttp: acks/s (closed loop, {bare['connections']} conns)", _rounds(bare), "yardstick",
                    None))
    if ing:
        out.append(("ingest: acks/s (closed loop, turns parked)", _rounds(ing), "", None))
        out.append(("ingest: ack p50 / p99 (closed loop)", f"{ing['p50_ms']} / {ing['p99_ms']} ms", "", None))
    if "ratio" in res:
        ratio = float(res["ratio"]["median"])
        rounds = ", ".join(f"{r:.0%}" for r in res["ratio"]["per_round"])
        out.append(("ingest / bare (median of rounds)", f"{ratio:.1%} ({rounds})", ">= 40%", judged(ratio >= 0.40)))
    for key in sorted(k for k in res if k.startswith("ingest_open_")):
        o = res[key]
        ok = o["ok"] == o["requests"]
        # Issue 2's target: p99 ≤ 50 ms at 80% of the maximum rate (other fractions: all 200 only).
        at_80 = abs(float(o["fraction"]) - 0.8) < 0.01
        if at_80:
            ok = ok and float(o["p99_ms"]) <= 50.0
        out.append((f"ack p50 / p99 at {o['fraction']:.0%} ({o['target_rate']:,.0f}/s, open loop)",
                    f"{o['p50_ms']} / {o['p99_ms']} ms", "all 200, p99 <= 50 ms" if at_80 else "all 200", ok))
    if "live" in res:
        live = res["live"]
        out.append(("live pipeline, a new customer per POST: acks/s", _fmt(live["ok_per_s"]), "info", None))
        out.append(("live pipeline: ack p50 / p99; replies meanwhile",
                    f"{live['p50_ms']} / {live['p99_ms']} ms; {live.get('replies_by_end', 0):,}", "info", None))
    for key in ("e2e", "e2e_burst0"):
        if key not in res:
            continue
        e = res[key]
        target = e["latency_ms"] + e["burst_ms"] + 50
        label = f"e2e L={e['latency_ms']} burst={e['burst_ms']}"
        out.append((f"{label}: p50 / p99", f"{e['e2e_p50_ms']} / {e['e2e_p99_ms']} ms", f"p50 <= {target} ms",
                    e["e2e_p50_ms"] <= target))
        exact = e["missing"] == 0 and e["duplicated"] == 0 and e["wrong_recipient"] == 0
        out.append((f"{label}: answered exactly once",
                    f"{e['answered']}/{e['messages']} msgs, {e['duplicated']} dup, "
                    f"{e['conversations_complete']}/{e['conversations']} convs",
                    "all, 0 dup", exact))
    if "memory" in res:
        m = res["memory"]
        out.append(("server RSS: baseline (after start / warm)",
                    f"{m['rss_start_kib'] / 1024:,.1f} / {m['rss_warm_kib'] / 1024:,.1f} MiB", "info", None))
        out.append((f"server RSS per idle live actor ({m['actors']:,})", f"{m['rss_per_actor_bytes'] / 1024:.2f} KiB",
                    "<= 4 KiB", judged(m["rss_per_actor_bytes"] <= 4096) if m["all_answered"] else False))
        out.append(("turns/s with L=0 (memory phase)", _fmt(m["turns_per_s"]), "info", None))
    if "actor_alone" in res:
        a = res["actor_alone"]
        out.append(("idle actor alone: tracemalloc / RSS",
                    f"{a['traced_bytes_per_actor'] / 1024:.2f} / {a['rss_bytes_per_actor'] / 1024:.2f} KiB",
                    "<= 4 KiB", a["rss_bytes_per_actor"] <= 4096))
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
    only = set((args.only or "bare,ingest,live,e2e,memory,actor").split(","))
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
