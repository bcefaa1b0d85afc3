"""How long does rejecting an over-budget architecture take?

``studies/template_params_budget.toml`` with its budget tightened to
``params_generated <= 1`` (every architecture is over it) runs ``--trials`` random
architectures; each trial's duration (Optuna's ``datetime_complete - datetime_start``:
sampling, building, the costs measured, the budget decided, artifacts stored) is a
rejection. Once with the config's artifacts (the architecture diagram of every rejected
trial), once without. Prints a JSON object and appends it to ``--out`` (JSON lines), with
the machine and the nas-optuna commit it ran.

Usage::

    python benchmarks/budget_rejection.py [--trials 12] [--threads 2] \\
        [--out benchmarks/data/budget_rejection.jsonl]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._machine import cpu_model, loadavg  # noqa: E402
from nas_optuna.config import NamedConfig, load_config  # noqa: E402

CONFIG = ROOT / "studies" / "template_params_budget.toml"


def rejection_seconds(trials: int, artifacts: bool, folder: Path) -> list[float]:
    """Durations of ``trials`` rejected trials of the tightened budget study."""
    from nas_optuna.study import run_search

    config = load_config(CONFIG)
    config = config.replace(
        study=dataclasses.replace(config.study, storage=f"sqlite:///{folder / 'b.db'}",
                                  name=f"reject-{artifacts}", n_trials=trials),
        sampler=NamedConfig("random", {}),
        cost=dataclasses.replace(config.cost, budget={"params_generated": 1}),
        artifacts=dataclasses.replace(config.artifacts, enabled=artifacts),
        train=dataclasses.replace(config.train, cache_dir=str(ROOT / ".nas_optuna_cache")),
    )
    study = run_search(config)
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    assert len(rejected) == trials, "every architecture should be over a 1-parameter budget"
    return [t.duration.total_seconds() for t in rejected]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--label", default="", help="what code ran (e.g. before a change)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    result = {"machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
              "loadavg_before": loadavg(), "threads": args.threads, "trials": args.trials,
              "commit": commit, "label": args.label, "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        for artifacts in (True, False):
            seconds = rejection_seconds(args.trials, artifacts, Path(tmp))
            result["with_diagram" if artifacts else "without_artifacts"] = {
                "median_s": round(statistics.median(seconds), 4),
                "max_s": round(max(seconds), 4), "min_s": round(min(seconds), 4)}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        with args.out.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
