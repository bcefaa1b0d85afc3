"""Does searching beat random search on trained networks? (issue 18, part 4)

Three ordinary nas-optuna studies on the calibrated embedded default
(``studies/quickstart.toml``: the ``template`` search profile on the synthetic street
scenes, 6 + 0 epochs, MedianPruner at epoch 3), one per sampler -- ``random``, ``tpe``
(the shipped options) and ``ppo`` (:class:`~nas_optuna.samplers.PPOSampler` defaults) --
each run to ``--trials`` trials per search seed. Only the sampler differs; artifacts are off
(they cost seconds and change no reward).

Then each study's top 5 COMPLETE trials and a *random 5* -- the random study's first five
trials, unbiased draws of the space that no pruner could touch (MedianPruner's five startup
trials) -- are trained again at issue 10's reference budget: the ``retrain`` schedule (SGD,
poly learning rate) for 32 epochs, two training seeds averaged (``reference_long`` of
``benchmarks/fidelity.py``, about 9x the search's compute). The question is whether each
searched top 5 beats the random 5 after that longer training: one-sided Mann-Whitney U
(scipy) and the rank-biserial effect size ``2 U / (n1 n2) - 1`` (1: every searched
architecture beats every random one).

Resumable: the studies live in an Optuna storage (default
``sqlite:///benchmarks/data/real_search.db``, not committed; ``run`` continues each study
to its total) and every retraining is one line appended to
``benchmarks/data/real_search_retrain.jsonl`` (committed; a line already there is never
trained again). ``export`` writes the studies' trials to
``benchmarks/data/real_search_trials.csv`` (committed) so that ``report`` works without
the database.

Usage::

    python benchmarks/real_search.py run [--trials 80] [--seeds 0] [--rounds 4]
    python benchmarks/real_search.py retrain [--seeds 0 1]
    python benchmarks/real_search.py export
    python benchmarks/real_search.py report [--json docs/benchmarks_real_search.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _machine import cpu_model  # noqa: E402

from nas_optuna._files import atomic_path  # noqa: E402
from nas_optuna.config import NamedConfig, StudyConfig, load_config  # noqa: E402

BASE_CONFIG = ROOT / "studies" / "quickstart.toml"
DATA = ROOT / "benchmarks" / "data"
DEFAULT_STORAGE = f"sqlite:///{DATA / 'real_search.db'}"
DEFAULT_RETRAIN = DATA / "real_search_retrain.jsonl"
DEFAULT_TRIALS_CSV = DATA / "real_search_trials.csv"
#: Sampler name -> the ``[sampler]`` table of its study (``tpe``: the quickstart's own).
SAMPLERS: dict[str, NamedConfig] = {
    "random": NamedConfig("random", {}),
    "tpe": NamedConfig("tpe", {"n_startup_trials": 8}),
    "ppo": NamedConfig("ppo", {}),
}
#: Epochs of the reference retraining (``benchmarks/fidelity.py`` REFERENCE_LONG_EPOCHS).
REFERENCE_EPOCHS = 32
TOP_K = 5


def study_name(sampler: str, seed: int) -> str:
    return f"real_{sampler}_s{seed}"


def search_config(sampler: str, seed: int, n_trials: int, storage: str = DEFAULT_STORAGE,
                  base: Path = BASE_CONFIG) -> StudyConfig:
    """The calibrated default with only the sampler (and the study's name) changed."""
    config = load_config(base)
    return config.replace(
        study=dataclasses.replace(config.study, name=study_name(sampler, seed),
                                  storage=storage, n_trials=n_trials, seed=seed),
        sampler=SAMPLERS[sampler],
        artifacts=dataclasses.replace(config.artifacts, enabled=False),
    )


def run(samplers: Sequence[str], seeds: Sequence[int], trials: int, rounds: int,
        storage: str, base: Path = BASE_CONFIG, quiet: bool = False) -> None:
    """Runs every (sampler, seed) study to ``trials``, ``rounds`` interleaved steps."""
    from nas_optuna.study import run_search

    def progress(study: Any, trial: Any) -> None:
        if not quiet:
            print(f"{study.study_name} trial {trial.number:3d} {trial.state.name:8s} "
                  f"value {trial.value}", flush=True)

    for step in range(1, rounds + 1):
        total = -(-trials * step // rounds)
        for seed in seeds:
            for sampler in samplers:
                run_search(search_config(sampler, seed, total, storage, base),
                           callbacks=[progress])


# --------------------------------------------------------------------------- selection
def _trials(storage: str | None, csv_path: Path) -> list[dict[str, Any]]:
    """The studies' trials as rows (from the storage when given, else the CSV)."""
    if storage is None:
        with csv_path.open() as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            row["number"] = int(row["number"])
            row["value"] = float(row["value"]) if row["value"] else None
            row["params"] = json.loads(row["params"])
        return rows
    import optuna

    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        if not summary.study_name.startswith("real_"):
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            rows.append({"study": study.study_name, "number": trial.number,
                         "state": trial.state.name, "value": trial.value,
                         "params": trial.params,
                         "seconds": (trial.duration.total_seconds()
                                     if trial.duration else None)})
    return rows


def export(storage: str, path: Path) -> int:
    """Writes every trial of the ``real_*`` studies as one CSV row; returns the count.

    Rows of studies the storage does not hold (e.g. an earlier seed's, whose database is
    gone) are kept from the existing CSV; a study the storage holds replaces its rows.
    """
    fresh = _trials(storage, path)
    held = {row["study"] for row in fresh}
    kept = ([row for row in _trials(None, path) if row["study"] not in held]
            if path.is_file() else [])
    rows = kept + fresh
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["study", "number", "state", "value", "seconds",
                                         "params"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "params": json.dumps(row["params"], sort_keys=True),
                             "value": "" if row["value"] is None else row["value"],
                             "seconds": ("" if row["seconds"] in (None, "")
                                         else round(float(row["seconds"]), 3))})
    return len(rows)


def selections(rows: Sequence[Mapping[str, Any]], top_k: int = TOP_K,
               max_trials: int | None = None) -> list[dict[str, Any]]:
    """The architectures to retrain: each study's top ``top_k`` and the random ``top_k``.

    ``max_trials`` limits each study to its first trials (a partial run is compared at the
    same length for every sampler). Ties go to the lower trial number.
    """
    chosen = []
    by_study: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if max_trials is None or row["number"] < max_trials:
            by_study.setdefault(row["study"], []).append(row)
    for name in sorted(by_study):
        done = [r for r in by_study[name] if r["state"] == "COMPLETE" and r["value"] is not None]
        top = sorted(done, key=lambda r: (-r["value"], r["number"]))[:top_k]
        chosen += [{"group": f"{name}:top", "study": name, **_pick(r)} for r in top]
        if name.startswith("real_random_"):
            first = sorted(done, key=lambda r: r["number"])[:top_k]
            chosen += [{"group": f"{name}:random", "study": name, **_pick(r)} for r in first]
    return chosen


def _pick(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"number": row["number"], "search_value": row["value"], "params": row["params"]}


# --------------------------------------------------------------------------- retraining
def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _arch_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


def retrain(choices: Sequence[Mapping[str, Any]], seeds: Sequence[int], results: Path,
            epochs: int = REFERENCE_EPOCHS, base: Path = BASE_CONFIG,
            threads: int = 2) -> int:
    """Trains every chosen architecture at the reference; appends one line each."""
    import torch

    from nas_optuna.study import prepare_data
    from nas_optuna.training.trainer import train_final
    from search_spaces import get_space

    torch.set_num_threads(threads)
    # An architecture two studies share (TPE's startup trials are the random study's) is
    # trained once per seed; the summary finds it by its params.
    done = {(_arch_key(r["params"]), r["seed"], r["epochs"]) for r in _read(results)}
    config = load_config(base)
    config = config.replace(train=dataclasses.replace(config.train, device="cpu"))
    space = get_space(config.space.name, **config.space.options)
    data = None
    count = 0
    for seed in seeds:
        for choice in choices:
            key = (_arch_key(choice["params"]), seed, epochs)
            if key in done:
                continue
            done.add(key)
            if data is None:
                _, data = prepare_data(config, space, torch.device("cpu"))
            arch = space.from_params(choice["params"])
            torch.manual_seed(seed * 100_003 + choice["number"])
            stem = space.build_stem()
            stem.load_state_dict(data.stem_state)
            network = space.build(arch, data.num_classes, stem=stem)
            started = time.perf_counter()
            result = train_final(network, data, config.train, epochs=epochs,
                                 device=torch.device("cpu"),
                                 seed=seed * 1000 + choice["number"],
                                 omit_classes=config.train.omit_classes)
            record = {"study": choice["study"], "number": choice["number"], "seed": seed,
                      "epochs": epochs, "score": float(result.final_metrics["reward"]),
                      "search_value": choice["search_value"], "params": choice["params"],
                      "seconds": round(time.perf_counter() - started, 3),
                      "machine": cpu_model()}
            with results.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            print(f"{choice['group']:22s} #{choice['number']:3d} seed {seed}: "
                  f"search {choice['search_value']:.4f} -> long {record['score']:.4f} "
                  f"({record['seconds']:.0f} s)", flush=True)
            count += 1
    return count


# --------------------------------------------------------------------------- statistics
def mann_whitney(searched: Sequence[float], random: Sequence[float]) -> dict[str, float]:
    """One-sided Mann-Whitney U (searched > random) and the rank-biserial effect size."""
    from scipy.stats import mannwhitneyu

    test = mannwhitneyu(searched, random, alternative="greater")
    effect = 2.0 * float(test.statistic) / (len(searched) * len(random)) - 1.0
    return {"u": float(test.statistic), "p_value": float(test.pvalue),
            "effect_size": effect, "n_searched": len(searched), "n_random": len(random)}


def summarise(choices: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
              rows: Sequence[Mapping[str, Any]], epochs: int = REFERENCE_EPOCHS,
              seeds: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """Per group, the long rewards (mean over the seeds present) and each test."""
    import numpy as np

    scores: dict[str, list[float]] = {}
    for r in records:
        if r["epochs"] == epochs and r["seed"] in seeds:
            scores.setdefault(_arch_key(r["params"]), []).append(r["score"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for choice in choices:
        values = scores.get(_arch_key(choice["params"]))
        groups.setdefault(choice["group"], []).append(
            {"number": choice["number"], "search_value": choice["search_value"],
             "long": None if not values else float(np.mean(values)),
             "seeds": 0 if not values else len(values)})
    studies: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = studies.setdefault(row["study"], {"trials": 0, "complete": 0, "best": None,
                                                  "seconds": 0.0})
        entry["trials"] += 1
        if row["state"] == "COMPLETE" and row["value"] is not None:
            entry["complete"] += 1
            entry["best"] = max(entry["best"] or row["value"], row["value"])
        entry["seconds"] += float(row["seconds"] or 0.0)
    tests = {}
    for name, members in groups.items():
        if not name.endswith(":top"):
            continue
        study = name.split(":")[0]
        seed = study.rsplit("_s", 1)[1]
        random_group = groups.get(f"real_random_s{seed}:random", [])
        searched = [m["long"] for m in members if m["long"] is not None]
        baseline = [m["long"] for m in random_group if m["long"] is not None]
        if len(searched) >= 2 and len(baseline) >= 2:
            tests[study] = mann_whitney(searched, baseline)
    # More power: every searching sampler's top architectures (each once) against the
    # random 5 of the same seed.
    for seed in sorted({name.split(":")[0].rsplit("_s", 1)[1] for name in groups}):
        pooled: dict[str, float] = {}
        for name, members in groups.items():
            study = name.split(":")[0]
            if (name.endswith(":top") and not study.startswith("real_random_")
                    and study.endswith(f"_s{seed}")):
                for choice, member in zip(_members(choices, name), members):
                    if member["long"] is not None:
                        pooled[_arch_key(choice["params"])] = member["long"]
        baseline = [m["long"] for m in groups.get(f"real_random_s{seed}:random", [])
                    if m["long"] is not None]
        if len(pooled) >= 2 and len(baseline) >= 2:
            tests[f"searched_s{seed} (tpe + ppo top, pooled)"] = mann_whitney(
                list(pooled.values()), baseline)
    return {"groups": groups, "studies": studies, "tests": tests, "epochs": epochs}


def _members(choices: Sequence[Mapping[str, Any]], group: str) -> list[Mapping[str, Any]]:
    return [c for c in choices if c["group"] == group]


def markdown(summary: Mapping[str, Any], machine: str, command: str) -> str:
    lines = [f"Machine: {machine}. Command: `{command}`.", "",
             "| study | trials | COMPLETE | best search reward | search hours |",
             "|---|---|---|---|---|"]
    for name, s in sorted(summary["studies"].items()):
        best = "-" if s["best"] is None else f"{s['best']:.4f}"
        lines.append(f"| {name} | {s['trials']} | {s['complete']} | {best} | "
                     f"{s['seconds'] / 3600:.2f} |")
    lines += ["", f"Long training: {summary['epochs']} epochs of the retrain schedule, mean "
              "over the seeds trained.", "",
              "| group | search rewards | long rewards | mean long |", "|---|---|---|---|"]
    for name, members in sorted(summary["groups"].items()):
        longs = [m["long"] for m in members if m["long"] is not None]
        mean = f"{sum(longs) / len(longs):.4f}" if longs else "-"
        lines.append(f"| {name} | " + ", ".join(f"{m['search_value']:.3f}" for m in members)
                     + " | " + ", ".join("-" if m["long"] is None else f"{m['long']:.3f}"
                                         for m in members) + f" | {mean} |")
    lines += ["", "| searched top vs random 5 | U | one-sided p | rank-biserial effect |",
              "|---|---|---|---|"]
    for name, t in sorted(summary["tests"].items()):
        lines.append(f"| {name} ({t['n_searched']} vs {t['n_random']}) | {t['u']:.1f} | "
                     f"{t['p_value']:.4f} | {t['effect_size']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run or resume the three searches")
    run_cmd.add_argument("--trials", type=int, default=80)
    run_cmd.add_argument("--seeds", type=int, nargs="+", default=[0])
    run_cmd.add_argument("--rounds", type=int, default=4)
    run_cmd.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    run_cmd.add_argument("--storage", default=DEFAULT_STORAGE)
    run_cmd.add_argument("--config", type=Path, default=BASE_CONFIG)
    run_cmd.add_argument("--threads", type=int, default=2)
    run_cmd.add_argument("--quiet", action="store_true")
    for name in ("retrain", "report"):
        sub = commands.add_parser(name)
        sub.add_argument("--storage", default=None,
                         help="read trials from this storage (default: the exported CSV)")
        sub.add_argument("--trials-csv", type=Path, default=DEFAULT_TRIALS_CSV)
        sub.add_argument("--results", type=Path, default=DEFAULT_RETRAIN)
        sub.add_argument("--max-trials", type=int, default=None)
        sub.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS)
        sub.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
        sub.add_argument("--config", type=Path, default=BASE_CONFIG)
    commands.choices["retrain"].add_argument("--threads", type=int, default=2)
    commands.choices["report"].add_argument("--json", type=Path, default=None)
    commands.choices["report"].add_argument("--markdown", type=Path, default=None)
    exp = commands.add_parser("export", help="write the trials CSV from the storage")
    exp.add_argument("--storage", default=DEFAULT_STORAGE)
    exp.add_argument("--trials-csv", type=Path, default=DEFAULT_TRIALS_CSV)
    args = parser.parse_args(argv)
    if args.command == "run":
        import torch

        torch.set_num_threads(args.threads)
        run(args.samplers, args.seeds, args.trials, args.rounds, args.storage, args.config,
            args.quiet)
        return 0
    if args.command == "export":
        print(f"{export(args.storage, args.trials_csv)} rows -> {args.trials_csv}")
        return 0
    rows = _trials(args.storage, args.trials_csv)
    choices = selections(rows, max_trials=args.max_trials)
    if args.command == "retrain":
        count = retrain(choices, args.seeds, args.results, args.epochs, args.config,
                        args.threads)
        print(f"{count} retrainings appended to {args.results}")
        return 0
    summary = summarise(choices, _read(args.results), rows, args.epochs, args.seeds)
    command = "python benchmarks/real_search.py " + " ".join(argv or sys.argv[1:])
    text = markdown(summary, cpu_model(), command)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_model(), **summary}, indent=1,
                                        sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
