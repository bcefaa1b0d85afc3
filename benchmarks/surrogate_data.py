"""Training data of the surrogate benchmark: random ``template`` architectures, trained.

Issue 18, part 1. The calibrated embedded default (``studies/quickstart.toml``: the
``template`` search profile on the synthetic street scenes, 6 + 0 epochs, see
docs/benchmarks_fidelity.md) is run as an ordinary nas-optuna study with three changes:

* ``RandomSampler`` (seeded): the architectures are an unbiased sample of the space;
* no pruner: every architecture is trained to the end of the search budget, so every
  trial has the reward a surrogate is fitted to (the calibrated default has no stage 2,
  so its reward *is* the stage-1 reward after the last epoch);
* no artifacts (diagrams, masks): they cost seconds and no surrogate reads them.

Costs (parameters, MACs, measured CPU latency) and the five zero-cost proxies are stored
on every trial as in any search. The study lives in an Optuna storage (default
``sqlite:///benchmarks/data/surrogate_template.db``, not committed: this script rebuilds
it). ``run`` resumes it: ``n_trials`` is the study's total, as for ``nas-optuna search``,
and trials a stop interrupted are failed and re-queued by the usual heartbeat rules.
``export`` writes the compact table the tests and ``benchmarks/samplers.py`` read
(``benchmarks/data/surrogate_template.csv``: one row per COMPLETE trial, its stored
params as JSON, rewards, costs and proxies), which is committed.

The seed-noise set (the same architectures under several training seeds) is issue 10's
``benchmarks/fidelity.py`` data: the ``s1_6`` rung of the 16 template architectures,
3 seeds (``benchmarks/data/fidelity_runs.jsonl``).

Usage::

    python benchmarks/surrogate_data.py run [--n-trials 300] [--threads 2]
    python benchmarks/surrogate_data.py export [--csv benchmarks/data/surrogate_template.csv]
    python benchmarks/surrogate_data.py restore [--storage URL]

``restore`` rebuilds the study from the committed table without training (each row's params
replayed through the space's suggestions, so the trials have their distributions; value
and stored attrs as in the table): what ``nas-optuna surrogate fit`` reads.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas_optuna._optuna import set_metric_names  # noqa: E402
from nas_optuna.config import NamedConfig, StudyConfig, load_config  # noqa: E402

BASE_CONFIG = ROOT / "studies" / "quickstart.toml"
DEFAULT_STORAGE = f"sqlite:///{ROOT / 'benchmarks' / 'data' / 'surrogate_template.db'}"
DEFAULT_CSV = ROOT / "benchmarks" / "data" / "surrogate_template.csv"
STUDY_NAME = "surrogate_template"
#: user attrs copied into the table (missing ones are left empty)
ATTRS = ("reward_stage1", "params_generated", "params_total", "macs", "latency_ms",
         "output_stride", "proxy_synflow", "proxy_naswot", "proxy_grad_norm", "proxy_snip",
         "proxy_jacob_cov", "proxy_seconds", "peak_memory_mb", "genotype")


def data_config(storage: str = DEFAULT_STORAGE, n_trials: int = 300, seed: int = 0,
                base: Path = BASE_CONFIG) -> StudyConfig:
    """The calibrated default turned into the unbiased, unpruned data-collection study."""
    config = load_config(base)
    return config.replace(
        study=dataclasses.replace(config.study, name=STUDY_NAME, storage=storage,
                                  n_trials=n_trials, seed=seed),
        sampler=NamedConfig("random", {}),
        pruner=NamedConfig("none", {}),
        artifacts=dataclasses.replace(config.artifacts, enabled=False),
    )


def run(config: StudyConfig, quiet: bool = False) -> optuna.Study:
    """Runs (or resumes) the data-collection study."""
    from nas_optuna.study import run_search

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not quiet:
            print(f"trial {trial.number:4d} {trial.state.name:8s} value {trial.value}",
                  flush=True)

    return run_search(config, callbacks=[progress])


def export(storage: str, path: Path, study_name: str = STUDY_NAME) -> int:
    """Writes one CSV row per COMPLETE trial; returns the number of rows."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    rows = []
    for trial in study.get_trials(deepcopy=False,
                                  states=(optuna.trial.TrialState.COMPLETE,)):
        row = {"number": trial.number, "value": trial.value,
               "params": json.dumps(trial.params, sort_keys=True),
               "seconds": round(trial.duration.total_seconds(), 3) if trial.duration else ""}
        for key in ATTRS:
            row[key] = trial.user_attrs.get(key, "")
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["number", "value", "params", "seconds",
                                                     *ATTRS])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return len(rows)


def restore(csv_path: Path, storage: str, study_name: str = STUDY_NAME,
            base: Path = BASE_CONFIG) -> optuna.Study:
    """Rebuilds the data-collection study from its CSV table (no training)."""
    from search_spaces import get_space

    config = load_config(base)
    space = get_space(config.space.name, **config.space.options)
    study = optuna.create_study(study_name=study_name, storage=storage,
                                direction="maximize")
    if study.trials:
        raise SystemExit(f"study {study_name!r} already has trials in {storage}")
    set_metric_names(study, ["reward"])
    study.set_user_attr("space", space.options())
    study.set_user_attr("sampler", "random")
    study.set_user_attr("restored_from", str(csv_path.relative_to(ROOT)
                                             if csv_path.is_relative_to(ROOT) else csv_path))
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        study.enqueue_trial(json.loads(row["params"]))
        trial = study.ask()
        space.suggest(trial)
        for key in ATTRS:
            if row.get(key, "") != "":
                value = row[key]
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
                trial.set_user_attr(key, value)
        trial.set_user_attr("source_trial", int(row["number"]))
        study.tell(trial, float(row["value"]))
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run or resume the data-collection study")
    run_cmd.add_argument("--n-trials", type=int, default=300)
    run_cmd.add_argument("--storage", default=DEFAULT_STORAGE)
    run_cmd.add_argument("--seed", type=int, default=0)
    run_cmd.add_argument("--threads", type=int, default=2)
    run_cmd.add_argument("--config", type=Path, default=BASE_CONFIG)
    run_cmd.add_argument("--quiet", action="store_true")
    exp = commands.add_parser("export", help="write the compact CSV table")
    exp.add_argument("--storage", default=DEFAULT_STORAGE)
    exp.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    res = commands.add_parser("restore", help="rebuild the study from the CSV table")
    res.add_argument("--storage", default=DEFAULT_STORAGE)
    res.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = parser.parse_args(argv)
    if args.command == "restore":
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = restore(args.csv, args.storage)
        print(f"{len(study.trials)} trials -> {args.storage} ({study.study_name})")
        return 0
    if args.command == "run":
        torch.set_num_threads(args.threads)
        config = data_config(args.storage, args.n_trials, args.seed, args.config)
        run(config, quiet=args.quiet)
        return 0
    print(f"{export(args.storage, args.csv)} rows -> {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
