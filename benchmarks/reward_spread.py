"""Reward spread of random architectures: does the embedded dataset tell them apart?

Runs a random-search study (RandomSampler, no pruner) with a study config's budget
(default: the quickstart's) and reports the distribution of rewards, their spread, and
how reward relates to size and output stride. A dataset that cannot discriminate between
architectures gives every architecture about the same reward; a useful one spreads them.

Usage:
    python benchmarks/reward_spread.py [--config studies/quickstart.toml] [-n 30]
        [--storage sqlite:///reward-spread.db] [--markdown docs/reward_spread.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import numpy as np
import optuna
import torch
from scipy import stats

from nas_optuna.config import NamedConfig, load_config
from nas_optuna.study import run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/quickstart.toml")
    parser.add_argument("-n", type=int, default=30, help="random architectures")
    parser.add_argument("--storage", default="sqlite:///reward-spread.db")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()

    config = load_config(args.config)
    study_name = f"reward-spread-{args.seed}"
    config = config.replace(
        study=dataclasses.replace(
            config.study,
            name=study_name,
            storage=args.storage,
            n_trials=args.n,
            seed=args.seed,
            timeout=None,
        ),
        sampler=NamedConfig("random", {}),
        pruner=NamedConfig("none", {}),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    study = run_search(config)
    elapsed = time.perf_counter() - started

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rewards = np.array([t.value for t in done])
    stage1 = np.array([t.user_attrs["reward_stage1"] for t in done])
    params = np.array([t.user_attrs["params_generated"] for t in done])
    strides = np.array([t.user_attrs["output_stride"] for t in done])
    q10, q50, q90 = np.percentile(rewards, [10, 50, 90])
    rho_size = stats.spearmanr(params, rewards).statistic
    rho_stages = stats.spearmanr(stage1, rewards).statistic
    by_stride = {int(s): rewards[strides == s] for s in np.unique(strides)}
    profile = config.space.options.get("profile", "search")
    lines = [
        f"Random architectures of `{config.space.name}` ({profile} profile) on "
        f"`{config.data.name}` {dict(config.data.options)}, budget "
        f"{config.train.stage1_epochs} + {config.train.stage2_epochs} epochs; "
        f"{len(done)} of {len(study.trials)} trials completed in {elapsed / 60:.1f} min.",
        "",
        "| statistic | value |",
        "|---|---|",
        f"| reward min / median / max | {rewards.min():.4f} / {q50:.4f} / {rewards.max():.4f} |",
        f"| reward 10th-90th percentile range | {q90 - q10:.4f} ({q10:.4f} - {q90:.4f}) |",
        f"| reward standard deviation | {rewards.std(ddof=1):.4f} |",
        f"| Spearman rho, stage-1 vs final reward | {rho_stages:.3f} |",
        f"| Spearman rho, generated params vs reward | {rho_size:.3f} |",
    ]
    for stride, values in by_stride.items():
        lines.append(
            f"| output stride {stride}: n / mean reward | {len(values)} / {values.mean():.4f} |"
        )
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
