"""The three ways to use a cost, side by side at equal trial budgets.

Runs three studies of the template space on the quickstart's data and training budget,
with parameters of the generated part as the cost (machine-independent, so the figures
can be compared across machines):

* **pareto** — objectives ``[reward, params_generated]``, NSGA-II, the stage-1 median rule
  applied by the objective (Optuna cannot prune multi-objective studies);
* **budget** — ``reward`` under the constraint ``params_generated <= BUDGET``, TPE, the
  over-budget architectures rejected before training, MedianPruner;
* **penalty** — ``penalised_reward = reward - weight * params / BUDGET``, TPE, MedianPruner.

Reported per study: hypervolume of the feasible completed trials in (reward, params)
space (reference point: reward 0, params = 2 x BUDGET), best reward under the budget, and
the compute saved by fast rejection and early termination (estimated from the measured
durations: a rejected trial would have cost a mean full trial; a stopped one saved the
difference between a mean full trial and its own duration).

Usage::

    python benchmarks/cost_modes.py --trials 20 --out docs/benchmarks_cost_modes.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from nas_optuna.config import parse_config
from nas_optuna.study import run_search

BUDGET = 200_000


def _config(name: str, folder: Path, trials: int, **sections: dict) -> dict:
    raw = {
        "study": {"name": name, "storage": f"sqlite:///{folder / 'cost_modes.db'}",
                  "n_trials": trials, "seed": 0},
        "space": {"name": "template", "profile": "search"},
        "data": {"name": "synthetic", "num_images": 240, "image_size": [64, 96],
                 "num_classes": 6, "scale": [1.0, 1.0]},
        "train": {"stage1_epochs": 3, "stage2_epochs": 1, "batch_size": 16,
                  "warmup_epochs": 4, "flip_views": False, "cache_dir": str(folder / "cache")},
        "sampler": {"name": "tpe", "n_startup_trials": 8},
        "pruner": {"name": "median", "n_startup_trials": 5},
        "cost": {"measure_latency": False},
    }
    for key, values in sections.items():
        if key == "sampler":
            raw[key] = dict(values)  # options of one sampler do not fit another
        else:
            raw[key].update(values)
    return raw


def _hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """2-D hypervolume of (reward up, params down) points against ``reference``."""
    front = sorted((p for p in points if p[0] > reference[0] and p[1] < reference[1]),
                   key=lambda p: p[1])
    volume, best_reward = 0.0, reference[0]
    for index, (reward, params) in enumerate(front):
        best_reward = max(best_reward, reward)
        next_params = front[index + 1][1] if index + 1 < len(front) else reference[1]
        volume += (best_reward - reference[0]) * (next_params - params)
    return volume


def _summary(study: optuna.Study) -> dict[str, float | int]:
    trials = study.get_trials(deepcopy=False)
    seconds = [t.duration.total_seconds() for t in trials if t.duration is not None]
    full = [t.duration.total_seconds() for t in trials
            if t.state.name == "COMPLETE" and "rejected" not in t.user_attrs]
    mean_full = float(np.mean(full)) if full else 0.0
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    stopped = [t for t in trials if t.state.name == "PRUNED"]
    points = [(t.user_attrs["reward_stage2"], t.user_attrs["params_generated"])
              for t in trials if "reward_stage2" in t.user_attrs]
    under = [r for r, p in points if p <= BUDGET]
    return {
        "trials": len(trials),
        "completed (trained)": len(full),
        "rejected before training": len(rejected),
        "stopped after stage 1": len(stopped),
        "hypervolume": _hypervolume(points, (0.0, 2.0 * BUDGET)) / BUDGET,
        "best reward, params <= budget": max(under) if under else float("nan"),
        "wall time, s": sum(seconds),
        "saved by rejection, s": mean_full * len(rejected),
        "saved by early termination, s": sum(
            max(mean_full - t.duration.total_seconds(), 0.0)
            for t in stopped if t.duration is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks_cost_modes.md"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {
        "pareto": dict(study={"directions": ["maximize", "minimize"],
                              "metrics": ["reward", "params_generated"]},
                       sampler={"name": "nsga2", "population_size": 8}),
        "budget": dict(cost={"budget": {"params_generated": BUDGET}}),
        "penalty": dict(study={"metrics": ["penalised_reward"]},
                        cost={"penalty": {"metric": "params_generated", "weight": 0.1,
                                          "reference": BUDGET}}),
    }
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, sections in studies.items():
            start = time.perf_counter()
            study = run_search(parse_config(_config(name, Path(folder), args.trials, **sections)))
            rows[name] = _summary(study)
            print(name, rows[name], f"{time.perf_counter() - start:.0f} s", flush=True)
    keys = list(next(iter(rows.values())))
    lines = [
        "# Cost modes side by side (`benchmarks/cost_modes.py`)",
        "",
        f"Template space (search profile), quickstart data, the pre-calibration budget "
        f"(3 + 1 epochs), "
        f"{args.trials} trials per study, seed 0; cost = generated parameters, budget "
        f"{BUDGET:,}. Hypervolume in (reward, params / budget) against reference (0, 2).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        f"Command: `python benchmarks/cost_modes.py --trials {args.trials}`",
        "",
        "| quantity | " + " | ".join(rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for key in keys:
        cells = [f"{rows[n][key]:.3f}" if isinstance(rows[n][key], float) else str(rows[n][key])
                 for n in rows]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
