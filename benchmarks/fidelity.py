"""Does the search reward rank architectures the way longer training does?

A fixed, seeded set of architectures (half ``template``, half ``auxcell``, search
profile; ``space.random_architecture(seed=i)``) is trained and evaluated

* at the **search budget** (each space's study config: ``studies/quickstart.toml`` and
  ``studies/auxcell.toml``) with three training seeds: the seed-noise floor;
* on a **fidelity ladder** of cheaper and dearer rungs (stage-1 / stage-2 epochs, half the
  training images, half the input resolution), one seed each;
* at two **references**, each at least 8x the search budget's compute, two seeds averaged:
  ``reference`` (the ``nas-optuna retrain`` schedule: SGD, poly learning rate, no Polyak
  averaging) and ``reference_search_opt`` (the search optimiser, 8x the epochs of both
  stages);
* by **free scores**, computed without training: the parameter count and MACs (the
  baselines any proxy must beat; fewer is better, as measured on this task before) and the
  zero-cost proxies of :mod:`nas_optuna.proxies` when they are available.

Every evaluation is one line of a JSON-lines results file (default
``benchmarks/data/fidelity_runs.jsonl``) appended as soon as it is measured; a stopped run
started again skips what the file holds, so hours of CPU are never lost. A line belongs to
one *task*: a hash of the space, its profile and options, the dataset and the training
budget; and to one rung *spec* (what the rung trains); lines of another task (an earlier
default, an older space) or of a changed rung are kept but ignored.
Each line also stores the architecture's generated parameter count, and a run refuses to
continue when the current code builds the same architecture with another size.

Statistics (``report``): per rung, Spearman and Kendall against each reference with
seeded percentile-bootstrap 95% intervals over architectures
(:func:`analysis.rank_correlation`), top-25% precision (the share of the reference's top
quarter found in the rung's top quarter) and the measured seconds per architecture; the
noise floor (:func:`analysis.seed_noise`: ICC(1), within- and between-architecture
standard deviations, Spearman between two seeds); a replay of the search's median rule and
a proxy pre-screen. Correlations are reported pooled over both spaces and per space.

Usage::

    python benchmarks/fidelity.py run [--archs 16] [--hours 2.5] [--only template] \\
        [--pause-file PATH]
    python benchmarks/fidelity.py report --markdown docs/benchmarks_fidelity.md \\
        --json docs/benchmarks_fidelity.json --figure docs/img/fidelity.html
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
if str(_HERE) not in sys.path:  # the machine helpers live beside this script
    sys.path.insert(0, str(_HERE))

from _docs import write_between_markers  # noqa: E402
from _machine import cpu_model  # noqa: E402

from nas_optuna.config import StudyConfig, config_to_dict, load_config  # noqa: E402
from nas_optuna.measure import measure_network  # noqa: E402
from nas_optuna.study import prepare_data  # noqa: E402
from nas_optuna.training import SearchData, train_architecture  # noqa: E402
from nas_optuna.training.trainer import train_final  # noqa: E402
from search_spaces import SearchSpace, get_space  # noqa: E402

#: Space -> the study config whose budget is that space's search budget.
#: The budgets measured (frozen copies of the pre-calibration ``studies/quickstart.toml``
#: and ``studies/auxcell.toml``: every stored line is keyed by this task). The calibrated
#: template default, ``studies/quickstart.toml`` now, is this config's rung ``s1_6``.
CONFIGS = {"template": "benchmarks/configs/fidelity_template.toml",
           "auxcell": "benchmarks/configs/fidelity_auxcell.toml"}
#: The rung each space's shipped default searches at (``report --search-rung``).
DEFAULT_RUNGS = {"template": "s1_6", "auxcell": "search"}
DEFAULT_RESULTS = ROOT / "benchmarks" / "data" / "fidelity_runs.jsonl"
#: Epochs of the ``retrain`` schedule at the reference (>= 8x the search compute, checked
#: in the report from the measured seconds).
REFERENCE_EPOCHS = 24
#: Multiplier of both stages' epochs at the search-optimiser reference.
REFERENCE_SEARCH_FACTOR = 8
#: Epochs of the longer ``retrain`` reference (``reference_long``): >= 8x the search
#: budget's measured seconds with a margin, and a check that 24 epochs had converged.
REFERENCE_LONG_EPOCHS = 32


@dataclasses.dataclass(frozen=True)
class Rung:
    """One way of evaluating an architecture.

    Attributes:
        name: The rung's name in the results and tables.
        kind: ``search`` (the two-stage search trainer), ``final`` (the retrain schedule),
            ``free`` (a size, no training) or ``proxy`` (a zero-cost proxy at init).
        seeds: Training seeds evaluated.
        train: Overrides of ``[train]`` (search trainer rungs).
        data: Overrides of ``[data]`` (a rung on other data prepares its own).
        train_fraction: Share of the meta-train images trained on.
        epochs: Epochs of the retrain schedule (``final`` rungs).
        description: What the rung changes, for the tables.
    """

    name: str
    kind: str
    seeds: tuple[int, ...] = (0,)
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train_fraction: float = 1.0
    epochs: int = 0
    description: str = ""

    @property
    def spec(self) -> str:
        """What the rung does, as stored with each result (a changed rung is a new one)."""
        return json.dumps([self.kind, dict(sorted(self.train.items())),
                           dict(sorted(self.data.items())), self.train_fraction, self.epochs],
                          sort_keys=True)


def rungs(config: StudyConfig) -> list[Rung]:
    """The rungs for a space whose search budget is ``config``'s, in the order they run.

    The order puts first what the report needs most (the search rung's first seed and the
    reference), so a run stopped early leaves the most useful partial table.
    """
    s1, s2 = config.train.stage1_epochs, config.train.stage2_epochs
    height, width = config.data.options.get("image_size", (64, 96))
    factor = REFERENCE_SEARCH_FACTOR
    planned = [
        Rung("params", "free", description="generated parameters (fewer is better)"),
        Rung("macs", "free", description="MACs (fewer is better)"),
        *[Rung(name, "proxy", description=f"zero-cost proxy {name} at initialisation")
          for name in _proxy_names()],
        Rung("search", "search", seeds=(0,), description=f"search budget, {s1} + {s2} epochs"),
        Rung("reference", "final", seeds=(0,), epochs=REFERENCE_EPOCHS,
             description=f"retrain schedule, {REFERENCE_EPOCHS} epochs (SGD, poly lr)"),
        Rung("search", "search", seeds=(1,)),
        Rung("reference", "final", seeds=(1,), epochs=REFERENCE_EPOCHS),
        Rung("search", "search", seeds=(2,)),
        Rung("s1_1", "search", train={"stage1_epochs": 1, "stage2_epochs": 0},
             description="1 + 0 epochs"),
        Rung(f"s1_{s1}", "search", train={"stage2_epochs": 0},
             description=f"{s1} + 0 epochs (the stage-1 reward pruners see)"),
        Rung("half_images", "search", train_fraction=0.5,
             description=f"{s1} + {s2} epochs on half the meta-train images"),
        Rung("half_resolution", "search",
             data={"image_size": [height // 2, width // 2]},
             description=f"{s1} + {s2} epochs at {height // 2}x{width // 2}"),
        Rung(f"s1_{2 * s1}_s2_{2 * s2}", "search",
             train={"stage1_epochs": 2 * s1, "stage2_epochs": 2 * s2},
             description=f"{2 * s1} + {2 * s2} epochs"),
        Rung("reference_search_opt", "search", seeds=(0, 1),
             train={"stage1_epochs": factor * s1, "stage2_epochs": factor * s2},
             description=f"search optimiser, {factor * s1} + {factor * s2} epochs"),
        # Calibration (issue 16, part 2): the noise of the stage-1-only reward, a stage-1
        # budget spending the search's compute on stage 1 alone, and a longer reference.
        Rung(f"s1_{s1}", "search", seeds=(1, 2), train={"stage2_epochs": 0}),
        Rung(f"s1_{2 * s1}", "search", seeds=(0, 1, 2),
             train={"stage1_epochs": 2 * s1, "stage2_epochs": 0},
             description=f"{2 * s1} + 0 epochs (stage 1 only, about the search's seconds)"),
        Rung("reference_long", "final", seeds=(0, 1), epochs=REFERENCE_LONG_EPOCHS,
             description=f"retrain schedule, {REFERENCE_LONG_EPOCHS} epochs (SGD, poly lr)"),
    ]
    # A budget of 1 epoch makes two ladder rungs one (``s1_1``): keep the first.
    seen: dict[str, tuple] = {}
    unique = []
    for rung in planned:
        signature = (rung.kind, tuple(sorted(rung.train.items())), rung.train_fraction,
                     tuple(sorted(rung.data.items())), rung.epochs)
        if seen.setdefault(rung.name, signature) == signature:
            unique.append(rung)
    return unique


def _proxy_names() -> tuple[str, ...]:
    try:
        from nas_optuna.proxies import PROXIES
    except ImportError:  # older checkouts: the free baselines only
        return ()
    return tuple(PROXIES)


# --- the results file ------------------------------------------------------------------
def task_id(config: StudyConfig) -> str:
    """A short hash of what decides a reward: space, dataset, training budget."""
    raw = config_to_dict(config)
    task = {key: raw.get(key) for key in ("space", "data", "train")}
    # Where it runs, the cache and how often stage 1 is validated do not change a reward.
    task["train"] = {k: v for k, v in (task["train"] or {}).items()
                     if k not in ("device", "cache_dir", "stage1_validations")}
    return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every complete line of the results file (a torn last line is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _append(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()


def _key(record: Mapping[str, Any]) -> tuple:
    return (record["task"], record["space"], record["index"], record["rung"], record["seed"],
            record.get("spec"))


# --- evaluations ------------------------------------------------------------------------
@dataclasses.dataclass
class _Space:
    name: str
    config: StudyConfig
    space: SearchSpace
    task: str
    data: dict[str, SearchData] = dataclasses.field(default_factory=dict)


def _load_space(name: str, config_path: str | Path, cache_dir: Path) -> _Space:
    config = load_config(ROOT / config_path if not Path(config_path).is_absolute()
                         else config_path)
    train = dataclasses.replace(config.train, cache_dir=str(cache_dir), device="cpu")
    config = config.replace(train=train)
    options = {k: v for k, v in config.space.options.items()}
    space = get_space(name, **options)
    return _Space(name, config, space, task_id(config))


def _search_data(entry: _Space, rung: Rung) -> SearchData:
    key = json.dumps(dict(rung.data), sort_keys=True)
    if key not in entry.data:
        config = entry.config
        if rung.data:
            config = config.replace(data=dataclasses.replace(
                config.data, options={**config.data.options, **rung.data}))
        _, entry.data[key] = prepare_data(config, entry.space, torch.device("cpu"))
    return entry.data[key]


def _subset(data: SearchData, fraction: float) -> SearchData:
    """The first ``fraction`` of the meta-train images (features, labels, augmented view)."""
    if fraction >= 1.0:
        return data
    from nas_optuna.data import SegmentationDataset

    count = max(2, int(round(len(data.train_labels) * fraction)))
    dataset = data.train_dataset
    return dataclasses.replace(
        data, train_features=[f[:count] for f in data.train_features],
        train_labels=data.train_labels[:count],
        train_dataset=SegmentationDataset(dataset.source, dataset.indices[:count],
                                          dataset.transform))


def _network(entry: _Space, arch: Any, data: SearchData, index: int, seed: int):
    # Seeded like a search trial: the decoder's initial weights depend on (seed, index).
    torch.manual_seed(seed * 100_003 + index)
    stem = entry.space.build_stem()
    stem.load_state_dict(data.stem_state)
    return entry.space.build(arch, data.num_classes, stem=stem)


def evaluate(entry: _Space, index: int, rung: Rung, seed: int) -> dict[str, Any]:
    """One evaluation of architecture ``index`` at ``rung`` with training seed ``seed``."""
    arch = entry.space.random_architecture(seed=index)
    data = _search_data(entry, rung)
    network = _network(entry, arch, data, index, seed)
    record: dict[str, Any] = {}
    started = time.perf_counter()
    if rung.kind == "free":
        costs = measure_network(network, data.image_size)
        record["score"] = -float(costs["params_generated" if rung.name == "params" else "macs"])
    elif rung.kind == "proxy":
        from nas_optuna.proxies import search_proxies

        # As every search trial computes it (nas_optuna.objective, [proxies] defaults).
        batch = entry.config.proxies.batch_size
        record["score"] = float(search_proxies(network, data, [rung.name],
                                               batch_size=batch)[rung.name])
    elif rung.kind == "final":
        result = train_final(network, data, entry.config.train, epochs=rung.epochs,
                             device=torch.device("cpu"), seed=seed * 1000 + index,
                             omit_classes=entry.config.train.omit_classes)
        record["score"] = float(result.final_metrics["reward"])
    else:
        train = dataclasses.replace(entry.config.train, **rung.train)
        # Validated after every stage-1 epoch (validations do not change training), so
        # that pruners can be replayed on the stored values.
        train = dataclasses.replace(train, stage1_validations=max(1, train.stage1_epochs))
        stages: dict[int, float] = {}
        validations: list[float] = []

        def reporter(stage: int, metrics: Mapping[str, float]) -> bool:
            stages[stage] = float(metrics["reward"])
            return True

        def validation(index: int, metrics: Mapping[str, float]) -> bool:
            validations.append(float(metrics["reward"]))
            return True

        result = train_architecture(network, _subset(data, rung.train_fraction), train,
                                    device=torch.device("cpu"), reporter=reporter,
                                    seed=seed * 1000 + index,
                                    omit_classes=train.omit_classes,
                                    validation_reporter=validation)
        record["score"] = float(result.final_metrics["reward"])
        record["stages"] = {str(k): v for k, v in stages.items()}
        if "1" in record["stages"]:  # every stage-1 epoch, the last being stage 1's end
            record["validations"] = [*validations, stages[1]]
    record["seconds"] = round(time.perf_counter() - started, 3)
    record["params_generated"] = _params(network)
    return record


def _params(network: torch.nn.Module) -> int:
    from nas_optuna.cost import count_parameters
    from nas_optuna.networks import auxiliary_modules

    auxiliary = sum(count_parameters(m) for m in auxiliary_modules(network))
    return int(count_parameters(network.decoder) - auxiliary)


def plan(entries: Sequence[_Space], archs: int) -> Iterator[tuple[_Space, int, Rung, int]]:
    """Every evaluation, rung by rung (each rung over all architectures) in run order."""
    by_space = {entry.name: rungs(entry.config) for entry in entries}
    depth = max(len(r) for r in by_space.values())
    for position in range(depth):
        for entry in entries:
            if position >= len(by_space[entry.name]):
                continue
            rung = by_space[entry.name][position]
            for seed in rung.seeds:
                for index in range(archs):
                    yield entry, index, rung, seed


def run(results: Path, archs: int, spaces: Sequence[str], hours: float | None,
        cache_dir: Path, configs: Mapping[str, str] = CONFIGS,
        log: Callable[[str], None] = print, pause: Path | None = None) -> int:
    """Runs the missing evaluations; returns how many it ran.

    Between two evaluations the run waits while the file ``pause`` exists, so that a
    timing is never taken while other work shares the cores on purpose.

    Raises:
        SystemExit: A stored line's architecture now builds with another size.
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    entries = [_load_space(name, configs[name], cache_dir) for name in spaces]
    done = {_key(r): r for r in read_results(results)}
    deadline = None if hours is None else time.monotonic() + hours * 3600
    machine = cpu_model()
    count = 0
    for entry, index, rung, seed in plan(entries, archs):
        key = (entry.task, entry.name, index, rung.name, seed, rung.spec)
        if key in done:
            continue
        if deadline is not None and time.monotonic() > deadline:
            log(f"[fidelity] time limit reached after {count} evaluations; run again to go on")
            break
        if pause is not None and pause.exists():
            log(f"[fidelity] paused while {pause} exists")
            while pause.exists():  # other work needs the cores; timings stay clean
                time.sleep(2.0)
        record = evaluate(entry, index, rung, seed)
        sizes = {r["params_generated"] for k, r in done.items()
                 if k[:3] == key[:3] and "params_generated" in r}
        if sizes and record["params_generated"] not in sizes:
            raise SystemExit(f"fidelity: {entry.name} architecture {index} now has "
                             f"{record['params_generated']:,} generated parameters, the results "
                             f"file says {sorted(sizes)[0]:,}: use another --results file")
        record.update(task=entry.task, space=entry.name, index=index, rung=rung.name,
                      seed=seed, kind=rung.kind, spec=rung.spec, machine=machine,
                      genotype=entry.space.describe(entry.space.random_architecture(seed=index)))
        _append(results, record)
        done[key] = record
        count += 1
        log(f"[fidelity] {entry.name} #{index} {rung.name} seed {seed}: "
            f"{record['score']:.4f} ({record['seconds']:.1f} s)")
    return count


# --- the report ---------------------------------------------------------------------------
def _table(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[tuple[str, int], dict]]:
    """rung -> (space, index) -> {"scores": [per seed], "seconds": [...], "stages": [...]}."""
    table: dict[str, dict[tuple[str, int], dict]] = {}
    for record in sorted(records, key=lambda r: r["seed"]):
        cell = table.setdefault(record["rung"], {}).setdefault(
            (record["space"], record["index"]),
            {"scores": [], "seconds": [], "stages": [], "validations": []})
        cell["scores"].append(record["score"])
        cell["seconds"].append(record["seconds"])
        cell["stages"].append(record.get("stages", {}))
        cell["validations"].append(record.get("validations"))
    return table


def current_records(records: Sequence[Mapping[str, Any]], spaces: Sequence[str],
                    cache_dir: Path, configs: Mapping[str, str] = CONFIGS
                    ) -> list[Mapping[str, Any]]:
    """The lines of the current task of each space."""
    specs, tasks = {}, {}
    for name in spaces:
        entry = _load_space(name, configs[name], cache_dir)
        tasks[name] = entry.task
        specs[name] = {(rung.name, rung.spec) for rung in rungs(entry.config)}
    return [r for r in records if r["space"] in tasks and r["task"] == tasks[r["space"]]
            and (r["rung"], r.get("spec")) in specs[r["space"]]]


def top_precision(score: Sequence[float], reference: Sequence[float],
                  fraction: float = 0.25) -> float:
    """The share of the reference's top ``fraction`` that is in ``score``'s top ``fraction``."""
    count = max(1, int(math.ceil(len(score) * fraction)))
    top_ref = set(np.argsort(-np.asarray(reference), kind="stable")[:count])
    top_score = set(np.argsort(-np.asarray(score), kind="stable")[:count])
    return len(top_ref & top_score) / count


def summarise(records: Sequence[Mapping[str, Any]], *, reference: str = "reference_long",
              search_rung: str | Mapping[str, str] = "search", n_bootstrap: int = 2000,
              seed: int = 0,
              reference_seeds: int = 2, pruner_rungs: Sequence[str] = ("s1_6",)
              ) -> dict[str, Any]:
    """The report's figures (see the module docstring) as one JSON-ready dict.

    A reference is the mean of an architecture's first ``reference_seeds`` seeds; an
    architecture with fewer is left out of the correlations. The row
    ``{search_rung}_2seeds`` is derived: the mean of the search rung's first two seeds, at
    twice the seconds (what averaging two evaluations per architecture would buy).
    """
    from analysis import InsufficientData, rank_correlation

    table = _table(records)
    default_rungs = None
    if not isinstance(search_rung, str):
        # Each space's default searches at its own rung: one row, "default", of both.
        default_rungs = dict(search_rung)
        table["default"] = {k: c for name in set(default_rungs.values())
                            for k, c in table.get(name, {}).items()
                            if default_rungs.get(k[0]) == name}
        search_rung = "default"
    refs = {name: {k: float(np.mean(c["scores"][:reference_seeds]))
                   for k, c in table.get(name, {}).items()
                   if len(c["scores"]) >= reference_seeds}
            for name in dict.fromkeys((reference, "reference", "reference_long",
                                       "reference_search_opt"))}
    search = table.get(search_rung, {})
    paired = {k: c for k, c in search.items() if len(c["scores"]) >= 2}
    if paired:
        table[f"{search_rung}_2seeds"] = {
            k: {"scores": [float(np.mean(c["scores"][:2]))],
                "seconds": [2.0 * min(c["seconds"])], "stages": [{}],
                "validations": [None]} for k, c in paired.items()}
    noise = _noise(search)
    if noise:
        noise["by_space"] = {space: _noise({k: c for k, c in search.items() if k[0] == space})
                             for space in sorted({k[0] for k in search})}
    search_seconds = _mean_seconds(search)
    others = [name for name in refs if name != reference and refs[name]]
    rows = []
    for name, cells in table.items():
        seconds = _mean_seconds(cells)
        row: dict[str, Any] = {"name": name, "seconds_per_arch": seconds,
                               "n_archs": len(cells)}
        if search_seconds:
            row["compute_vs_search"] = seconds / search_seconds
        row.update({f"{k}_seeds": v for k, v in _noise(cells).items()
                    if k in ("icc1", "n_archs")})
        ref = refs.get(reference, {})
        row.update(_against(cells, ref, None, n_bootstrap, seed, rank_correlation,
                            InsufficientData))
        for space in sorted({k[0] for k in ref}):
            part = _against(cells, ref, space, n_bootstrap, seed, rank_correlation,
                            InsufficientData)
            for key in ("spearman", "spearman_low", "spearman_high", "top25_precision",
                        "n_pairs"):
                row[f"{key}_{space}"] = part.get(key)
        for other in others:
            row[f"spearman_vs_{other}"] = _against(
                cells, refs[other], None, n_bootstrap, seed, rank_correlation,
                InsufficientData).get("spearman")
        rows.append(row)
    order = {name: i for i, name in enumerate(
        ["params", "macs", *_proxy_names(), "s1_1", "s1_3", "half_resolution", "half_images",
         "s1_6", "search", "default", f"{search_rung}_2seeds", "s1_6_s2_2", "reference_search_opt",
         "reference", "reference_long"])}
    rows.sort(key=lambda r: (order.get(r["name"], 99), r["name"]))
    by_name = {r["name"]: r for r in rows}
    cheapest = None
    if "spearman" in by_name.get(search_rung, {}):
        trained = [r for r in rows if "spearman" in r and not r["name"].startswith("reference")
                   and r["spearman"] >= by_name[search_rung]["spearman"] - 0.05
                   and r["name"] not in ("params", "macs", *_proxy_names())]
        cheapest = min(trained, key=lambda r: r["seconds_per_arch"])["name"] if trained else None
    summary = {"search_rung": search_rung, "default_rungs": default_rungs,
               "reference": reference,
               "reference_seeds": reference_seeds, "noise": noise,
               "cheapest_within_0.05_of_search": cheapest,
               "rungs": rows, "prescreen": _prescreen(table, refs.get(reference, {})),
               "pruners": _pruners(table, refs.get(reference, {}),
                                   [n for n in dict.fromkeys((search_rung, *pruner_rungs))
                                    if n in table])}
    summary["targets"] = targets(summary)
    return summary


def _noise(cells: Mapping[tuple[str, int], dict]) -> dict[str, Any]:
    """The seed-noise floor of the architectures of ``cells`` with three seeds ({} if < 3)."""
    from analysis import seed_noise

    full = {k: c["scores"][:3] for k, c in cells.items() if len(c["scores"]) >= 3}
    if len(full) < 3:
        return {}
    floor = seed_noise(list(full.values()))
    return {"icc1": floor.icc1, "within_std": floor.within_std,
            "between_std": floor.between_std, "seed_spearman": floor.seed_spearman,
            "seed_spearman_low": floor.seed_spearman_low,
            "seed_spearman_high": floor.seed_spearman_high, "n_archs": len(full)}


def targets(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's targets, each with the measured value and whether it holds.

    Computed from the summary's own figures, pooled over both spaces and per space, so
    the doc states no verdict that the numbers do not give. A proxy "ranks better" than
    the free baselines only when the lower end of its Spearman CI is above both
    baselines' Spearman: a difference inside the interval is no evidence.
    """
    rows = {r["name"]: r for r in summary["rungs"]}
    search = rows.get(summary["search_rung"], {})
    params = rows.get("params", {})
    noise = summary["noise"]
    out = []

    def add(name: str, value: Any, met: bool | None) -> None:
        out.append({"target": name, "value": value, "met": met})

    spaces = sorted({k[len("n_pairs_"):] for k in search if k.startswith("n_pairs_")}
                    | set(noise.get("by_space", {})))
    scopes = [(None, noise)] + [(sp, noise.get("by_space", {}).get(sp, {})) for sp in spaces]
    for space, floor in scopes:
        where = " (pooled)" if space is None else f" ({space})"
        sfx = "" if space is None else f"_{space}"
        if floor:
            add(f"ICC(1) >= 0.9 at the search budget{where}", round(floor["icc1"], 3),
                floor["icc1"] >= 0.9)
        if search.get("spearman" + sfx) is None:
            continue
        rho, low = search["spearman" + sfx], search["spearman_low" + sfx]
        add(f"Spearman(search, reference) >= 0.8 with CI low >= 0.6{where}",
            f"{rho:.3f} ({low:.2f} to {search['spearman_high' + sfx]:.2f}), "
            f"{search['n_pairs' + sfx]} pairs", rho >= 0.8 and low >= 0.6)
        top = search["top25_precision" + sfx]
        add(f"top-25% precision >= 0.6{where}", round(top, 3), top >= 0.6)
        if params.get("spearman" + sfx) is not None:
            add(f"Spearman above the parameter-count baseline's by >= 0.1{where}",
                f"{rho:.3f} vs {params['spearman' + sfx]:.3f}",
                rho >= params["spearman" + sfx] + 0.1)
    reference = rows.get(summary["reference"], {})
    if search.get("seconds_per_arch") and reference.get("seconds_per_arch"):
        ratio = reference["seconds_per_arch"] / search["seconds_per_arch"]
        add("reference >= 8x the search budget's seconds", round(ratio, 2), ratio >= 8)
    savers = [p for p in [*summary["prescreen"], *summary["pruners"]]
              if p["compute_saved"] >= 0.3 and p["reference_top5_kept"] >= 4]
    add("a pre-screen or pruner saves >= 30% keeping >= 4 of the reference top 5",
        ", ".join(p["name"] for p in savers) or "none", bool(savers))
    proxies = [rows[n] for n in _proxy_names() if "spearman" in rows.get(n, {})]
    baseline = max((rows[n]["spearman"] for n in ("params", "macs") if "spearman" in rows.get(
        n, {})), default=None)
    if proxies and baseline is not None:
        best = max(proxies, key=lambda r: r["spearman"])
        add("a zero-cost proxy ranks better than both parameter count and MACs",
            f"best {best['name']} {best['spearman']:.3f} (CI low "
            f"{best['spearman_low']:.2f}) vs {baseline:.3f}",
            best["spearman_low"] > baseline)
    return out


def _mean_seconds(cells: Mapping[tuple[str, int], dict]) -> float:
    """Seconds of one evaluation (one seed) of one architecture: per architecture the
    fastest of its seeds (an evaluation that shared the cores with other work is slower,
    never faster), averaged over architectures."""
    values = [min(c["seconds"]) for c in cells.values() if c["seconds"]]
    return float(np.mean(values)) if values else float("nan")


def _against(cells: Mapping, ref: Mapping, space: str | None, n_bootstrap: int, seed: int,
             rank_correlation: Callable, insufficient: type) -> dict[str, Any]:
    keys = [k for k in ref if k in cells and (space is None or k[0] == space)]
    if len(keys) < 3:
        return {"n_pairs": len(keys)}
    # A rung with several seeds is judged by its first: what one search evaluation sees.
    x = [cells[k]["scores"][0] for k in keys]
    y = [ref[k] for k in keys]
    try:
        result = rank_correlation(x, y, n_bootstrap=n_bootstrap, seed=seed)
    except insufficient:
        return {"n_pairs": len(keys)}
    return {"n_pairs": len(keys), "spearman": result.spearman,
            "spearman_low": result.spearman_low, "spearman_high": result.spearman_high,
            "kendall": result.kendall, "kendall_low": result.kendall_low,
            "kendall_high": result.kendall_high, "top25_precision": top_precision(x, y)}


def _top5(ref: Mapping[tuple[str, int], float]) -> set[tuple[str, int]]:
    return set(sorted(ref, key=lambda k: -ref[k])[:5])


def _prescreen(table: Mapping, ref: Mapping, quantile: float = 0.5,
               startup: int = 8, orders: int = 200) -> list[dict[str, Any]]:
    """Replays ``[prescreen]`` for each free score over random trial orders.

    After ``startup`` architectures, one whose score falls below the ``quantile`` of the
    earlier ones' scores is rejected before training; the compute saved is the rejected
    share of the search rung's seconds.
    """
    search = table.get("search", {})
    out = []
    top5 = _top5(ref)
    for name in ["params", "macs", *_proxy_names()]:
        cells = table.get(name, {})
        keys = [k for k in ref if k in cells and k in search]
        if len(keys) < startup + 2:
            continue
        rng = np.random.default_rng(0)
        saved, kept = [], []
        for _ in range(orders):
            order = [keys[i] for i in rng.permutation(len(keys))]
            seen: list[float] = []
            rejected = set()
            for position, key in enumerate(order):
                score = cells[key]["scores"][0]
                if position >= startup and np.isfinite(score) and score < np.quantile(
                        np.asarray(seen)[np.isfinite(seen)], quantile):
                    rejected.add(key)
                seen.append(score)
            total = sum(search[k]["seconds"][0] for k in keys)
            saved.append(sum(search[k]["seconds"][0] for k in rejected) / total)
            kept.append(len(top5 - rejected))
        out.append({"name": f"{name} q{quantile:g} startup {startup}",
                    "compute_saved": float(np.mean(saved)),
                    "reference_top5_kept": float(np.mean(kept))})
    return out


def _replayed_pruners(epochs: int, two_stage: bool) -> dict[str, Callable[[], Any]]:
    """Pruners replayed on the stored validations: name -> factory of an Optuna pruner.

    ``epochs`` stage-1 epochs report at steps ``1 .. epochs``; a two-stage evaluation
    reports its final reward at ``epochs + 1``. The paper's single decision is taken
    after stage 1 when there is a stage 2, else half-way through stage 1.
    """
    import optuna

    decision = epochs if two_stage else max(1, epochs // 2)
    last = epochs + 1 if two_stage else epochs
    where = "after stage 1" if two_stage else f"at epoch {decision} of {epochs}"
    return {
        f"median {where} (one decision)": lambda: _AtStep(
            optuna.pruners.MedianPruner(n_startup_trials=5), decision),
        "median at every stage-1 epoch": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=5),
        "successive halving (factor 3)": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3),
        "hyperband (factor 3)": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=last, reduction_factor=3),
        "patient median (patience 1)": lambda: optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=5), patience=1),
    }


class _AtStep:
    """A pruner that asks ``wrapped`` only at ``step`` (one decision, as the papers')."""

    def __init__(self, wrapped: Any, step: int) -> None:
        self._wrapped, self._step = wrapped, step

    def prune(self, study: Any, trial: Any) -> bool:
        return trial.last_step == self._step and self._wrapped.prune(study, trial)


def _pruners(table: Mapping, ref: Mapping, rung_names: Sequence[str],
             orders: int = 50) -> list[dict[str, Any]]:
    """Replays Optuna's pruners on the stored validations of the rungs ``rung_names``.

    Each architecture of a rung that has its per-epoch stage-1 validations (the last seed
    evaluated with them) is a trial reporting them at steps ``1 .. E1`` and, when the rung
    has a stage 2, its final reward at ``E1 + 1``, in ``orders`` random orders, through a
    real Optuna study with that pruner. Compute saved: the share of the rung's seconds a
    stopped trial did not spend; a two-stage trial's seconds are split into equal stage-1
    epochs and stage 2 by the measured stage-1-only rung (``s1_<E1>``), a stage-1-only
    trial's into equal epochs. Kept: how many of the reference's top 5 trained to the end.
    """
    out = []
    for rung in rung_names:
        out += [{**row, "name": f"{rung}: {row['name']}", "rung": rung}
                for row in _pruners_of(table, ref, rung, orders)]
    return out


def _pruners_of(table: Mapping, ref: Mapping, rung: str, orders: int) -> list[dict[str, Any]]:
    import warnings

    import optuna

    cells = table.get(rung, {})
    runs = {}
    for key, cell in cells.items():
        for position in range(len(cell["scores"]) - 1, -1, -1):
            if cell["validations"][position]:
                runs[key] = (cell["validations"][position], cell["scores"][position],
                             cell["seconds"][position], cell["stages"][position])
                break
    keys = [k for k in ref if k in runs]
    if len(keys) < 8:
        return []
    epochs = len(runs[keys[0]][0])
    two_stage = "2" in runs[keys[0]][3]
    stage1 = table.get(f"s1_{epochs}", {})
    if two_stage and not stage1:
        return []
    top5 = _top5({k: ref[k] for k in keys})
    out = []
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name, factory in _replayed_pruners(epochs, two_stage).items():
        rng = np.random.default_rng(0)
        saved, kept = [], []
        for _ in range(orders):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study = optuna.create_study(direction="maximize", pruner=factory())
            spent = total = 0.0
            stopped = set()
            for key in (keys[i] for i in rng.permutation(len(keys))):
                values, final, seconds, _ = runs[key]
                s1 = min(min(stage1[key]["seconds"]), seconds) if two_stage else seconds
                epoch_cost = s1 / len(values)
                total += seconds
                trial = study.ask()
                for step, value in enumerate(values, start=1):
                    trial.report(value, step)
                    if step < len(values) + two_stage and trial.should_prune():
                        stopped.add(key)
                        spent += step * epoch_cost
                        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                        break
                else:
                    if two_stage:
                        trial.report(final, len(values) + 1)
                    spent += seconds
                    study.tell(trial, final)
            saved.append(1.0 - spent / total)
            kept.append(len(top5 - stopped))
        out.append({"name": name, "compute_saved": float(np.mean(saved)),
                    "reference_top5_kept": float(np.mean(kept)), "n_archs": len(keys)})
    return out


def markdown(summary: Mapping[str, Any], machine: str, command: str) -> str:
    """The doc page's tables."""
    noise = summary["noise"]
    lines = [f"Machine: {machine}. Command: `{command}`.", ""]
    if noise:
        spaces = sorted(noise.get("by_space", {}))
        parts = [("both spaces", noise), *[(s, noise["by_space"][s]) for s in spaces]]
        lines += ["### Seed-noise floor at the search budget", "",
                  "| statistic | " + " | ".join(n for n, _ in parts) + " |",
                  "|---|" + "---:|" * len(parts)]
        for label, fmt in (("architectures x seeds", lambda n: f"{n['n_archs']} x 3"),
                           ("ICC(1)", lambda n: f"{n['icc1']:.3f}"),
                           ("within-architecture std", lambda n: f"{n['within_std']:.4f}"),
                           ("between-architecture std", lambda n: f"{n['between_std']:.4f}"),
                           ("ratio between / within",
                            lambda n: f"{n['between_std'] / n['within_std']:.2f}"),
                           ("Spearman seed 0 vs seed 1 (95% CI)",
                            lambda n: f"{n['seed_spearman']:.3f} ({n['seed_spearman_low']:.2f}"
                                      f" to {n['seed_spearman_high']:.2f})")):
            lines.append(f"| {label} | " + " | ".join(fmt(n) for _, n in parts) + " |")
        lines.append("")
    rows = summary["rungs"]
    others = sorted({k[len("spearman_vs_"):] for r in rows for k in r
                     if k.startswith("spearman_vs_")})
    spaces = sorted({k[len("n_pairs_"):] for r in rows for k in r if k.startswith("n_pairs_")})
    lines += [f"### Rungs against the reference (`{summary['reference']}`, "
              f"{summary['reference_seeds']} seed(s) averaged; pooled over both spaces)", "",
              "| rung | s / arch | x search | ICC(1) | pairs | Spearman (95% CI) | Kendall | "
              "top-25% | " + " | ".join(f"vs {o}" for o in others) + " |",
              "|---|---:|---:|---:|---:|---|---:|---:|" + "---:|" * len(others)]
    for row in rows:
        head = (f"| {row['name']} | {row['seconds_per_arch']:.2f} | "
                f"{row.get('compute_vs_search', float('nan')):.2f} | "
                f"{_fmt(row.get('icc1_seeds'))} | {row.get('n_pairs', 0)} | ")
        if "spearman" not in row:
            lines.append(head + "(too few pairs) | | |" + " |" * len(others))
            continue
        lines.append(head + f"{_ci(row, 'spearman')} | {row['kendall']:.3f} | "
                     f"{row['top25_precision']:.2f} | "
                     + " | ".join(_fmt(row.get(f"spearman_vs_{o}")) for o in others) + " |")
    lines += ["", f"The `{summary['reference']}` row is its seed 0 against its own two-seed "
              "mean (the reference's noise); ICC(1) is given for rungs with three seeds. "
              f"Cheapest trained rung whose Spearman is within 0.05 of the search budget's: "
              f"**{summary.get('cheapest_within_0.05_of_search')}**."]
    if spaces:
        lines += ["", "### Per space (same reference)", "",
                  "| rung | " + " | ".join(f"{s}: Spearman (95% CI) | {s}: top-25%"
                                            for s in spaces) + " |",
                  "|---|" + "---|---:|" * len(spaces)]
        for row in rows:
            if row.get(f"spearman_{spaces[0]}") is None:
                continue
            lines.append(f"| {row['name']} | " + " | ".join(
                f"{_ci(row, 'spearman', s)} | {_fmt(row.get(f'top25_precision_{s}'))}"
                for s in spaces) + " |")
    for title, key in (("Pre-screens (replayed)", "prescreen"),
                       ("Pruners (replayed)", "pruners")):
        if summary[key]:
            lines += ["", f"### {title}", "", "| rule | compute saved | reference top-5 kept |",
                      "|---|---:|---:|"]
            lines += [f"| {p['name']} | {p['compute_saved']:.0%} | "
                      f"{p['reference_top5_kept']:.2f} |" for p in summary[key]]
    if summary.get("targets"):
        lines += ["", "### Targets of issue 16 (pooled and per space)", "",
                  "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |"
                  for t in summary["targets"]]
    return "\n".join(lines) + "\n"


def _ci(row: Mapping[str, Any], key: str, space: str | None = None) -> str:
    suffix = "" if space is None else f"_{space}"
    value = row.get(key + suffix)
    if value is None:
        return ""
    return (f"{value:.3f} ({row[f'{key}_low{suffix}']:.2f} to "
            f"{row[f'{key}_high{suffix}']:.2f})")


def _fmt(value: float | None) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3f}"


def figure(summary: Mapping[str, Any]) -> Any:
    """Rank fidelity against compute per architecture (plotly), the report's style."""
    import plotly.graph_objects as go

    rows = [r for r in summary["rungs"] if "spearman" in r]
    fig = go.Figure(go.Scatter(
        x=[max(r["seconds_per_arch"], 1e-3) for r in rows], y=[r["spearman"] for r in rows],
        error_y={"type": "data", "symmetric": False,
                 "array": [r["spearman_high"] - r["spearman"] for r in rows],
                 "arrayminus": [r["spearman"] - r["spearman_low"] for r in rows]},
        mode="markers+text", text=[r["name"] for r in rows], textposition="top center",
        hovertemplate="%{text}<br>%{x:.2f} s per architecture<br>Spearman %{y:.3f}"
                      "<extra></extra>"))
    if summary["noise"]:
        fig.add_hline(y=summary["noise"]["seed_spearman"], line_dash="dot",
                      annotation_text="seed 0 vs seed 1 at the search budget")
    fig.update_layout(title="Rank fidelity against compute per architecture",
                      xaxis={"title": "seconds per architecture (one seed)", "type": "log"},
                      yaxis={"title": "Spearman vs reference (95% bootstrap CI)"},
                      template="plotly_white")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report"):
        command = sub.add_parser(name)
        command.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
        command.add_argument("--only", choices=sorted(CONFIGS), action="append",
                             help="spaces (default: both)")
        command.add_argument("--cache-dir", type=Path,
                             default=Path.home() / ".cache" / "nas-optuna" / "fidelity")
        command.add_argument("--config", action="append", default=[], metavar="SPACE=TOML",
                             help="another study config for a space's search budget")
    sub.choices["run"].add_argument("--archs", type=int, default=16,
                                    help="architectures per space")
    sub.choices["run"].add_argument("--hours", type=float, help="stop after this long")
    sub.choices["run"].add_argument("--threads", type=int, default=2)
    sub.choices["run"].add_argument("--pause-file", type=Path,
                                    help="wait between evaluations while this file exists")
    for name in ("run", "report"):
        sub.choices[name].add_argument("--quick", action="store_true",
                                       help="smoke test: 2-epoch references")
    report = sub.choices["report"]
    report.add_argument("--markdown", type=Path)
    report.add_argument("--json", type=Path)
    report.add_argument("--figure", type=Path, help="plotly figure (HTML)")
    report.add_argument("--reference-seeds", type=int, default=2,
                        help="seeds averaged into the reference (1 for a partial run)")
    report.add_argument("--search-rung", action="append", default=[], metavar="[SPACE=]RUNG",
                        help="the rung the default searches at (default: search); "
                             "SPACE=RUNG for each space when the spaces' defaults differ")
    report.add_argument("--reference", default="reference_long",
                        choices=["reference_long", "reference", "reference_search_opt"],
                        help="the reference every rung is ranked against")
    args = parser.parse_args(argv)
    if args.quick:
        global REFERENCE_EPOCHS, REFERENCE_SEARCH_FACTOR, REFERENCE_LONG_EPOCHS
        REFERENCE_EPOCHS, REFERENCE_SEARCH_FACTOR, REFERENCE_LONG_EPOCHS = 2, 2, 3
    spaces = args.only or sorted(CONFIGS, reverse=True)  # template first
    configs = dict(CONFIGS)
    for item in args.config:
        space, _, path = item.partition("=")
        if space not in CONFIGS or not path:
            parser.error(f"--config {item!r}: expected SPACE=TOML with SPACE in "
                         f"{', '.join(sorted(CONFIGS))}")
        configs[space] = path
    if args.command == "run":
        if args.archs < 4:
            parser.error("--archs must be >= 4")
        torch.set_num_threads(args.threads)
        run(args.results, args.archs, spaces, args.hours, args.cache_dir, configs,
            pause=args.pause_file)
        return 0
    records = current_records(read_results(args.results), spaces, args.cache_dir, configs)
    if not records:
        print(f"fidelity: no results of the current task in {args.results}", file=sys.stderr)
        return 1
    search_rung: str | dict[str, str] = "search" if args.config else DEFAULT_RUNGS
    if args.search_rung:
        pairs = [item.partition("=") for item in args.search_rung]
        if len(pairs) == 1 and not pairs[0][1]:
            search_rung = pairs[0][0]
        elif all(sep and space in CONFIGS for space, sep, _ in pairs):
            search_rung = {space: rung for space, _, rung in pairs}
        else:
            parser.error("--search-rung: expected one RUNG or SPACE=RUNG for each space")
    summary = summarise(records, reference=args.reference, search_rung=search_rung,
                        reference_seeds=args.reference_seeds)
    machines = sorted({r.get("machine", "?") for r in records})
    summary["machine"] = f"{', '.join(machines)}, 2 cores"
    command = "python benchmarks/fidelity.py run && python benchmarks/fidelity.py report"
    text = markdown(summary, summary["machine"], command)
    print(text)
    if args.markdown:
        write_between_markers(args.markdown, text, "fidelity")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure(summary).write_html(args.figure, include_plotlyjs="cdn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
