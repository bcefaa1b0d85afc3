"""How well does a surrogate predict the search reward from the architecture? (issue 18)

Rebuilds the study of ``benchmarks/surrogate_data.py`` from its committed table (300
random ``template`` architectures trained on the calibrated default) in a temporary
SQLite file and fits :func:`nas_optuna.surrogate.fit_surrogate` twice -- on the encoded
params alone, and with the space's derived features (:meth:`SearchSpace.features`) -- so
that every candidate model is scored by the library's own 5-fold cross-validation
(Spearman with a bootstrap 95% CI over the 300 out-of-fold pairs, and R^2). Baselines: the
parameter count and the best zero-cost proxies alone, ranked against the same rewards.

The seed-noise std is the pooled within-architecture std of the template ``s1_6`` rung of
``benchmarks/data/fidelity_runs.jsonl`` (the search budget, 3 seeds per architecture);
the ceiling is :func:`nas_optuna.surrogate.noise_ceiling` of it.

Usage::

    python benchmarks/surrogate_cv.py [--json docs/benchmarks_surrogate_cv.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
for folder in (_HERE, ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from _machine import cpu_model  # noqa: E402
from surrogate_data import restore  # noqa: E402

from analysis import rank_correlation, seed_noise  # noqa: E402
from nas_optuna.surrogate import fit_surrogate  # noqa: E402

TABLE = ROOT / "benchmarks" / "data" / "surrogate_template.csv"
FIDELITY = ROOT / "benchmarks" / "data" / "fidelity_runs.jsonl"


def seed_noise_std(path: Path = FIDELITY) -> float:
    """Pooled within-architecture std of the template ``s1_6`` rung (3 seeds each):
    :func:`analysis.seed_noise`, as ``benchmarks/fidelity.py`` reports it."""
    runs: dict[int, list[float]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("space") == "template" and row.get("rung") == "s1_6":
            runs[row["index"]].append(row["score"])
    return seed_noise([runs[i] for i in sorted(runs)], n_bootstrap=0).within_std


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--table", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    std = seed_noise_std()
    with tempfile.TemporaryDirectory() as folder:
        study = restore(args.table, f"sqlite:///{folder}/s.db")
        fits = {label: fit_surrogate(study, noise_std=std, derived=derived)
                for label, derived in (("params", False), ("params+derived", True))}
    with args.table.open() as handle:
        table = list(csv.DictReader(handle))
    values = np.asarray([float(r["value"]) for r in table])
    result = {"machine": cpu_model(), "n": len(values), "seed_noise_std": round(std, 5),
              "noise_ceiling_spearman": round(fits["params"].info["noise_ceiling"], 3),
              "fits": {}, "baselines": {}}
    for label, surrogate in fits.items():
        result["fits"][label] = {
            "features": len(surrogate.columns), "derived": list(surrogate.derived),
            "chosen": surrogate.model,
            "models": {s.model: {"cv_spearman": round(s.cv_spearman, 3),
                                 "ci": [round(s.cv_spearman_low, 3),
                                        round(s.cv_spearman_high, 3)],
                                 "cv_r2": round(s.cv_r2, 3)}
                       for s in surrogate.scores}}
    for column, sign in (("params_generated", -1), ("proxy_grad_norm", -1),
                         ("proxy_naswot", 1)):
        scores = sign * np.asarray([float(r[column]) for r in table])
        rank = rank_correlation(scores, values, n_bootstrap=2000, seed=0)
        result["baselines"][f"{'-' if sign < 0 else ''}{column}"] = {
            "spearman": round(rank.spearman, 3),
            "ci": [round(rank.spearman_low, 3), round(rank.spearman_high, 3)]}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
