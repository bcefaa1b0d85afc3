"""Per-operation cost tables: how well does the table's estimate rank measured latencies?

For every registered search space (search profile): build a fresh cost table (warmed and
calibrated on ``--warm`` random architectures), then for ``-n`` other random
architectures compare the table's estimate with ``measure_latency`` (batch 1, eval mode).
Reports per space Spearman's rho and the median absolute percentage error (MdAPE) of the
estimate against the measurement, the time to build the table, and the time of one
estimate against one measurement. Each architecture is measured twice (in two passes), so
the rho between the two measurements shows how far measurement noise lets any estimate go.

Usage:
    python benchmarks/cost_table.py [-n 50] [--size 128 256] [--warm 10] [--spaces ...]
        [--repeats 15] [--threads N] [--wait-quiet 1500] [--markdown section.md]
        [--json results.json]
    python benchmarks/cost_table.py --from-json results.json [--markdown section.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from nas_optuna.cost import device_fingerprint, measure_latency
from nas_optuna.cost_table import build_cost_table
from search_spaces import SPACES, get_space

if str(Path(__file__).resolve().parent) not in sys.path:  # helpers beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import OtherLoad, cpu_model, loadavg  # noqa: E402

_WARM_SEED = 10_000  # warming architectures never appear among the compared ones


def _wait_quiet(limit_s: float, threshold: float = 1.0) -> float:
    started = time.monotonic()
    load = loadavg()
    while load >= threshold and time.monotonic() - started < limit_s:
        print(f"load {load:.2f} >= {threshold}; waiting", flush=True)
        time.sleep(30)
        load = loadavg()
    return load


def _mdape(estimates: np.ndarray, measured: np.ndarray) -> float:
    return float(np.median(np.abs(estimates - measured) / measured) * 100)


def _bench_space(name: str, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    space = get_space(name, profile="search")
    size = tuple(args.size)
    load = OtherLoad()
    started = time.perf_counter()
    table = build_cost_table(
        space,
        size,
        n_architectures=args.warm,
        num_classes=args.classes,
        cache_dir=cache_dir,
        seed=_WARM_SEED,
        warmup=args.unit_warmup,
        repeats=args.unit_repeats,
        calibration_warmup=args.warmup,
        calibration_repeats=args.repeats,
    )
    build_s = time.perf_counter() - started
    build_entries = len(table.entries)
    print(f"{name}: table built in {build_s:.1f} s, {build_entries} entries, "
          f"calibration a={table.calibration[0]:.3f} b={table.calibration[1]:.3f}", flush=True)

    rows: list[dict[str, Any]] = []
    networks = []
    for seed in range(args.n):
        arch = space.random_architecture(seed=seed)
        network = space.build(arch, num_classes=args.classes).eval()
        networks.append(network)
        t0 = time.perf_counter()
        table.estimate(network)  # traces, measures the units the table lacks
        first_s = time.perf_counter() - t0
        twin = space.build(arch, num_classes=args.classes).eval()  # all its units known
        t0 = time.perf_counter()
        estimate = table.estimate(twin)
        traced_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        table.estimate(twin)  # the same network again: its trace is cached
        cached_s = time.perf_counter() - t0
        del twin
        t0 = time.perf_counter()
        measured = measure_latency(
            network, size, warmup=args.warmup, repeats=args.repeats
        ).median_ms
        measure_s = time.perf_counter() - t0
        rows.append({
            "seed": seed,
            "describe": space.describe(arch),
            "estimate_ms": estimate,
            "sum_ms": table.estimate(network, calibrated=False),
            "measured_ms": measured,
            "first_estimate_s": first_s,
            "estimate_s": traced_s,
            "cached_estimate_s": cached_s,
            "measure_s": measure_s,
        })
    # Second pass: the same networks measured again, for the noise ceiling.
    for row, network in zip(rows, networks):
        row["remeasured_ms"] = measure_latency(
            network, size, warmup=args.warmup, repeats=args.repeats
        ).median_ms
    table.save()
    est = np.array([r["estimate_ms"] for r in rows])
    raw = np.array([r["sum_ms"] for r in rows])
    meas = np.array([r["measured_ms"] for r in rows])
    again = np.array([r["remeasured_ms"] for r in rows])
    result = {
        "space": name,
        "n": len(rows),
        "distinct": len({r["describe"] for r in rows}),
        "build_s": build_s,
        "entries_after_build": build_entries,
        "entries_after_run": len(table.entries),
        "calibration": list(table.calibration),
        "rho": float(stats.spearmanr(est, meas).statistic),
        "rho_remeasured": float(stats.spearmanr(est, again).statistic),
        "rho_noise_ceiling": float(stats.spearmanr(meas, again).statistic),
        "mdape": _mdape(est, meas),
        "mdape_sum": _mdape(raw, meas),
        "mdape_remeasure": _mdape(again, meas),
        "measured_min_median_max": [float(meas.min()), float(np.median(meas)), float(meas.max())],
        "first_estimate_s": statistics.median(r["first_estimate_s"] for r in rows),
        "estimate_s": statistics.median(r["estimate_s"] for r in rows),
        "cached_estimate_s": statistics.median(r["cached_estimate_s"] for r in rows),
        "measure_s": statistics.median(r["measure_s"] for r in rows),
        "other_load_cores": load.cores(),
        "rows": rows,
    }
    print(
        f"{name}: rho {result['rho']:.3f} (vs re-measure {result['rho_remeasured']:.3f}, "
        f"noise ceiling {result['rho_noise_ceiling']:.3f}), MdAPE {result['mdape']:.1f}% "
        f"(sum {result['mdape_sum']:.1f}%), other load {result['other_load_cores']:.2f} cores",
        flush=True,
    )
    return result


def _markdown(results: list[dict[str, Any]], args: argparse.Namespace, meta: dict) -> str:
    height, width = args.size
    fingerprint = meta["fingerprint"]
    threads = fingerprint["num_threads"]
    lines = [
        f"## CPU, {threads} torch thread{'s' if threads != 1 else ''}, input {height}x{width}",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Machine: {meta['cpu_model']}, `nproc` = {meta['nproc']}; device fingerprint "
        f"`{json.dumps(fingerprint, sort_keys=True)}`. Load average before the run: "
        f"{meta['load_before']:.2f} (after waiting {meta['waited_s'] / 60:.1f} min for it "
        "to drop below 1.0). *Other load* below is the CPU time other processes used during "
        "each space's run, in cores (`/proc/stat` minus this process).",
        "",
        f"Setting: spaces {', '.join(r['space'] for r in results)}; search profile, batch 1, "
        f"{args.classes} classes. Each table is built from scratch (empty cache) from "
        f"{args.warm} warming architectures (seeds {_WARM_SEED}+; units timed with "
        f"{args.unit_warmup} warm-up + {args.unit_repeats} samples; the whole networks, for "
        "the calibration, like the measurements below). Then "
        f"{args.n} other random architectures (seeds 0-{args.n - 1}) are estimated and "
        f"measured with `measure_latency` ({args.warmup} warm-up, {args.repeats} samples, "
        "median), and all of them are measured a second time in a second pass.",
        "",
        "Accuracy (estimate = calibrated table estimate; *1st*/*2nd* = the two "
        "measurements):",
        "",
        "| space | archs (distinct) | Spearman rho, estimate vs 1st | estimate vs 2nd | "
        "1st vs 2nd (noise ceiling) | MdAPE, estimate vs 1st | uncalibrated sum vs 1st | "
        "2nd vs 1st | calibration a | measured ms min / median / max | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lo, mid, hi = r["measured_min_median_max"]
        lines.append(
            f"| {r['space']} | {r['n']} ({r['distinct']}) | **{r['rho']:.3f}** | "
            f"{r['rho_remeasured']:.3f} | {r['rho_noise_ceiling']:.3f} | "
            f"**{r['mdape']:.1f}%** | {r['mdape_sum']:.1f}% | {r['mdape_remeasure']:.1f}% | "
            f"{r['calibration'][0]:.3f} | {lo:.1f} / {mid:.1f} / {hi:.1f} | "
            f"{r['other_load_cores']:.2f} |"
        )
    lines += [
        "",
        "Cost (medians over the architectures):",
        "",
        "| space | table build | entries after build (after run) | first estimate, new units "
        "measured | estimate, new network, units known | estimate, same network again | one "
        "measurement | measurement / estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['space']} | {r['build_s']:.0f} s | {r['entries_after_build']} "
            f"({r['entries_after_run']}) | {r['first_estimate_s']:.2f} s | "
            f"{r['estimate_s'] * 1e3:.1f} ms | {r['cached_estimate_s'] * 1e6:.0f} us | "
            f"{r['measure_s']:.2f} s | {r['measure_s'] / r['estimate_s']:.0f}x |"
        )
    lines.append("")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="random architectures per space")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--warm", type=int, default=10, help="warming architectures")
    parser.add_argument("--spaces", nargs="*", help="default: every registered space")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--warmup", type=int, default=3, help="measure_latency warm-up")
    parser.add_argument("--repeats", type=int, default=15, help="measure_latency samples")
    parser.add_argument("--unit-warmup", type=int, default=2)
    parser.add_argument("--unit-repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--cache-dir", help="default: a fresh temporary folder")
    parser.add_argument("--wait-quiet", type=float, default=0.0,
                        help="seconds to wait at most for a 1-min load average below 1.0")
    parser.add_argument("--markdown", help="write the report (a markdown section) here")
    parser.add_argument("--json", help="write all results (per architecture) to this file")
    parser.add_argument("--from-json", help="only render the report of a saved --json file")
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        meta = saved["meta"]
        run_args = parser.parse_args(shlex.split(meta["command"])[2:])
        report = _markdown(saved["results"], run_args, meta)
        print(report)
        if args.markdown:
            Path(args.markdown).write_text(report)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    waited = time.monotonic()
    load_before = _wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else loadavg()
    waited = time.monotonic() - waited
    names = args.spaces or SPACES.names()
    print(f"spaces: {', '.join(names)}; load {load_before:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = Path(args.cache_dir) if args.cache_dir else Path(scratch)
        results = [_bench_space(name, args, cache_dir) for name in names]
    meta = {
        "command": "python " + " ".join(sys.argv),
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "fingerprint": device_fingerprint("cpu"),
        "load_before": load_before,
        "waited_s": waited,
        "load_after": loadavg(),
    }
    report = _markdown(results, args, meta)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
