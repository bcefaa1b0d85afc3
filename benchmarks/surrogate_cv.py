"""How well can a model predict the search reward from the architecture? (issue 18, a first look)

Reads the committed table of ``benchmarks/surrogate_data.py`` (300 random ``template``
architectures trained on the calibrated default), encodes each trial's stored params
(categoricals one-hot, integers as numbers; the template space has no inactive
parameters), and compares scikit-learn regressors by 5-fold cross-validation (shuffled,
seeded): Spearman (with a bootstrap 95% CI over the out-of-fold pairs, 300 pairs) and R^2
of the out-of-fold predictions. Baselines: the parameter count and the best zero-cost
proxy alone.

The **noise ceiling**: the Spearman a perfect predictor of an architecture's mean reward
could reach against one noisy evaluation, simulated by adding the measured seed noise
(within-architecture std of the same budget, ``s1_6`` rung of
``benchmarks/data/fidelity_runs.jsonl``, template) to the observed rewards, 200 draws.

This is a measurement script, not yet the ``nas-optuna surrogate`` command of issue 18.

Usage::

    python benchmarks/surrogate_cv.py [--json docs/benchmarks_surrogate_cv.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import rank_correlation  # noqa: E402
from benchmarks._machine import cpu_model  # noqa: E402

TABLE = ROOT / "benchmarks" / "data" / "surrogate_template.csv"
FIDELITY = ROOT / "benchmarks" / "data" / "fidelity_runs.jsonl"


def encode(params: pd.Series) -> pd.DataFrame:
    """One column per integer parameter, one-hot columns per categorical value."""
    frame = pd.DataFrame([json.loads(p) for p in params])
    categorical = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    return pd.get_dummies(frame, columns=categorical, dtype=float).astype(float)


def seed_noise_std() -> float:
    """Pooled within-architecture std of the template ``s1_6`` rung (3 seeds each)."""
    runs: dict[int, list[float]] = defaultdict(list)
    for line in FIDELITY.read_text().splitlines():
        row = json.loads(line)
        if row.get("space") == "template" and row.get("rung") == "s1_6":
            runs[row["index"]].append(row["score"])
    variances = [np.var(v, ddof=1) for v in runs.values() if len(v) >= 2]
    return float(np.sqrt(np.mean(variances)))


def noise_ceiling(values: np.ndarray, std: float, draws: int = 200, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([stats.spearmanr(values, values + rng.normal(0, std, len(values)))
                          .statistic for _ in range(draws)]))


def models() -> dict:
    kernel = ConstantKernel() * RBF(length_scale=5.0) + WhiteKernel()
    return {
        "gradient_boosting": GradientBoostingRegressor(n_estimators=300, max_depth=3,
                                                       learning_rate=0.05, subsample=0.8,
                                                       random_state=0),
        "random_forest": RandomForestRegressor(n_estimators=500, min_samples_leaf=2,
                                               random_state=0, n_jobs=1),
        "gaussian_process": make_pipeline(StandardScaler(), GaussianProcessRegressor(
            kernel, normalize_y=True, random_state=0)),
        "kernel_ridge": make_pipeline(StandardScaler(), KernelRidge(kernel="rbf", alpha=1.0,
                                                                    gamma=0.01)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    table = pd.read_csv(TABLE)
    y = table["value"].to_numpy()
    x = encode(table["params"])
    folds = KFold(5, shuffle=True, random_state=0)
    std = seed_noise_std()
    result = {"machine": cpu_model(), "n": len(y), "features": x.shape[1],
              "seed_noise_std": round(std, 5),
              "noise_ceiling_spearman": round(noise_ceiling(y, std), 3), "models": {},
              "baselines": {}}
    for name, model in models().items():
        predicted = cross_val_predict(model, x, y, cv=folds)
        rank = rank_correlation(predicted, y, n_bootstrap=2000, seed=0)
        result["models"][name] = {"cv_spearman": round(rank.spearman, 3),
                                  "ci": [round(rank.spearman_low, 3),
                                         round(rank.spearman_high, 3)],
                                  "cv_r2": round(float(r2_score(y, predicted)), 3)}
    for column, sign in (("params_generated", -1), ("proxy_grad_norm", -1),
                         ("proxy_naswot", 1)):
        rank = rank_correlation(sign * table[column].to_numpy(), y, n_bootstrap=2000, seed=0)
        result["baselines"][f"{'-' if sign < 0 else ''}{column}"] = {
            "spearman": round(rank.spearman, 3),
            "ci": [round(rank.spearman_low, 3), round(rank.spearman_high, 3)]}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
