"""Search throughput: a plain reference loop against nas-optuna's trainer, side by side.

Method. One fixed set of architectures (``--archs`` per space, default 12 from ``template``
and 12 from ``auxcell``, search profile, drawn by Optuna's RandomSampler with ``--seed``
through ``space.suggest(study.ask())``; duplicates are redrawn) is trained on the same
data with the same budget (default: the quickstart config's synthetic scenes, epochs and
batch size) twice:

* **(a) the reference loop** (``benchmarks/_reference_loop.py``): the textbook way, the
  frozen stem recomputed for every stage-1 batch, float32, a standard DataLoader,
  blocking per-step host-to-device copies, evaluation through the full network. No
  sampler, no storage: the architectures are given, so any study overhead counts
  against (b) only.
* **(b) nas-optuna**: the real path. Per space, the study is created on SQLite in the
  work folder, the architectures are enqueued (``study.enqueue_trial(params)``) and
  :func:`nas_optuna.study.run_search` runs them with a RandomSampler and no pruner, so
  sampling, storage, cost measurement (:func:`~nas_optuna.measure.measure_network`) and
  training (:func:`~nas_optuna.training.train_architecture`) are nas-optuna's own code.
  ``prepare_search_data`` runs once per space; its stem-feature caching is reported as a
  one-off and also amortised per trial over the set.

Both sides measure the same costs per trial (params, MACs, peak memory and, as in the
config, latency). Trial ``i`` of (b) and architecture ``i`` of (a) start from the same
weights: the objective seeds torch with ``seed * 100003 + trial.number`` before building,
and (a) does the same. Both also train with the seed ``seed + i``, and the reference loop
draws its batch orders and augmentation seeds from it in nas-optuna's order (one
permutation per stage-1 epoch), so the two sides see the same batches: their rewards
differ only by what the implementations compute differently (float16 cached features,
channels-last kernels, fused optimisers, the order of floating-point sums). The stem
weights are the ones (b)'s ``prepare_search_data``
initialised (ImageNet when cached, else the warm-up). The stem initialisation stands in
for downloading ImageNet weights, which the papers do once, so it is reported but counted
on neither side. Before either side runs, one network per space is built and run once,
untimed, so that lazy imports and first-call set-up land on neither side; (b) runs first.

Breakdown. Phases are timed *exclusively* (a phase's time excludes the phases nested in
it) by one :class:`PhaseTimer`; on CUDA each phase boundary synchronises the device
(``--no-phase-sync`` turns that off, then time lands where the host waits). The
reference loop calls the timer itself. nas-optuna is not edited: the benchmark wraps its
functions for the duration of the run (``unittest.mock.patch``):

* ``forward/backward``: ``trainer._step`` (forward, loss, backward, clipping, optimiser
  steps); ``polyak``: ``trainer._averaged`` and ``_PolyakAverage.update_parameters``;
  ``evaluation``: ``trainer._evaluate``; ``data``: what is left of ``_stage1`` /
  ``_stage2`` (batch assembly, DataLoader, host-to-device copies, loop overhead);
  ``train setup``: what is left of ``train_architecture``;
* ``cost``: ``objective.measure_network``; ``artifacts``:
  ``objective.upload_trial_artifacts`` where nas-optuna has it (diagram, mask preview,
  note; the reference loop stores none); ``build``: what is left of
  ``SearchObjective._run`` (building the network and the objective's glue);
* ``sampler``: ``Study.ask``, the space's ``suggest``, the sampler's methods and
  ``Trial.should_prune`` (with the pruner); ``storage``: every public method of Optuna's
  ``_CachedStorage`` and ``_tell_with_warning``. Calls from other threads (Optuna's
  heartbeat) run beside the trial and are not counted.

A hook whose target no longer exists is skipped and listed in the JSON; its time then
shows as *unattributed* (total minus the phases), so a breakdown that stops covering the
trial is visible. The totals are wall-clock times measured apart from the timer: (a) the
loop over the architectures, (b) from ``run_search``'s ``on_ready`` to its return.

Peak memory: CUDA ``max_memory_allocated`` per side; on CPU the peak resident set size,
reset per side through ``/proc/self/clear_refs`` where Linux allows it (else the process
peak so far, ``getrusage``).

Rankings: Spearman's rho between (a) and (b) rewards of the same architectures (final
and stage 1), which isolates the effect of the implementation. ``--noise-ceiling`` trains
(b) again with training seed ``seed + 1`` (same study seed, hence the same cached stem;
other initial weights and batch order): rho between the two (b) runs is how much the
seed alone moves the ranking at this budget, the scale against which the
implementation's effect is read.

Several trials at once (``--concurrent K1,K2,...``; no list: 1,2 on CPU, 1,2,4,8 on
CUDA): for each K, a fresh SQLite study holds ``N = max(K) * ceil(archs / max(K))``
enqueued architectures of the first space, cycled, and K processes ``python -m
nas_optuna.cli search CONFIG --n-trials M`` share it on one device, reusing (b)'s
stem-feature cache; each worker gets ``threads // K`` torch threads. ``M`` is ``N`` where
nas-optuna shares ``n_trials`` between workers (``nas_optuna.workers`` exists), else
``N / K`` (each worker then runs ``n_trials`` minus the trials finished when it starts:
all start on an empty study). Reported: trials per hour from the launch to the last
trial's end (start-up included; a worker that waits for others' trials before leaving is
not counted) and from the first trial's start to the last one's end (steady state).

Usage:
    python benchmarks/throughput.py [--config studies/quickstart.toml] [--spaces template
        auxcell] [--archs 12] [--epochs S1 S2] [--batch-size B] [--images N]
        [--image-size H W] [--device auto] [--threads N] [--seed 0] [--noise-ceiling]
        [--concurrent [K1,K2,...]] [--write docs/benchmarks_throughput.md [--append]]
        [--json results.json] [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import functools
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import optuna
import torch
from scipy import stats

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the reference loop lives beside this script
    sys.path.insert(0, str(_HERE))

from _machine import OtherLoad, cpu_model, loadavg  # noqa: E402
from _reference_loop import build_reference_data, train_reference  # noqa: E402

from nas_optuna.config import StudyConfig, parse_config  # noqa: E402
from nas_optuna.data import build_dataset  # noqa: E402
from nas_optuna.measure import measure_network  # noqa: E402
from nas_optuna.training import resolve_device  # noqa: E402
from search_spaces import get_space  # noqa: E402

REPO = _HERE.parent

#: Display order of the phases; ``unattributed`` is total minus the others.
PHASES = ("data", "stem", "forward/backward", "polyak", "evaluation", "cost", "build",
          "train setup", "artifacts", "sampler", "storage")
#: Phases that are model compute (the share reported for GPUs).
COMPUTE_PHASES = ("stem", "forward/backward", "evaluation")
#: Phases of training and evaluating (no cost measurement, building or study overhead).
TRAINING_PHASES = ("data", "stem", "forward/backward", "polyak", "evaluation", "train setup")
SIDES = {"reference": "(a) reference loop", "nas_optuna": "(b) nas-optuna"}

_QUICK = {"archs": 2, "epochs": (1, 1), "batch_size": 8, "images": 24,
          "image_size": (32, 48)}


# --- timing --------------------------------------------------------------------------------
class PhaseTimer:
    """Exclusive wall-clock time per named phase.

    Entering a phase pauses the enclosing one, so every second is counted once, in the
    innermost phase. Only the thread that created the timer is timed, and only while
    :attr:`armed`.

    Args:
        sync: Called before every clock reading (``torch.cuda.synchronize`` on CUDA).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.armed = True
        self._sync = sync
        self._stack: list[list[Any]] = []
        self._owner = threading.get_ident()

    def _clock(self) -> float:
        if self._sync is not None:
            self._sync()
        return time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Times the body as ``name``."""
        if not self.armed or threading.get_ident() != self._owner:
            yield
            return
        now = self._clock()
        if self._stack:
            parent = self._stack[-1]
            self.seconds[parent[0]] += now - parent[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = self._clock()
            own, start = self._stack.pop()
            self.seconds[own] += now - start
            self.calls[own] += 1
            if self._stack:
                self._stack[-1][1] = now

    def wrap(self, name: str, function: Callable) -> Callable:
        """``function`` timed as phase ``name``."""

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return function(*args, **kwargs)

        return timed


def _device_sync(device: torch.device, enabled: bool) -> Callable[[], None] | None:
    if device.type != "cuda" or not enabled:
        return None
    return functools.partial(torch.cuda.synchronize, device)


# --- machine -----------------------------------------------------------------------------
class _PeakMemory:
    """Peak memory of one side: CUDA allocations, or the CPU's resident set size."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "CUDA max_memory_allocated"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
            self.kind = "peak RSS of the side"
        except OSError:
            self.kind = "process peak RSS so far"

    def mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "peak RSS of the side":
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _machine(device: torch.device) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else "CPU"),
    }


# --- configs -----------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the characters configs hold
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(raw: Mapping[str, Mapping[str, Any]]) -> str:
    """Writes a config's tables as TOML text (round-trip checked).

    Raises:
        ValueError: The text does not read back as ``raw``.
    """
    lines: list[str] = []
    for table, values in raw.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    text = "\n".join(lines)
    if tomllib.loads(text) != json.loads(json.dumps(raw)):
        raise ValueError("config does not survive the TOML round trip")
    return text


def benchmark_raw(args: argparse.Namespace, device: torch.device, cache_dir: Path) -> dict:
    """The base config (``--config``) with the benchmark's data, budget and study settings.

    Single objective ``reward``, RandomSampler, no pruner (every architecture trains to the
    end), no budget or penalty (nothing is rejected), no teacher.
    """
    raw = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    raw.pop("teacher", None)
    raw["study"] = {"name": "throughput", "storage": "sqlite:///:memory:",
                    "directions": ["maximize"], "metrics": ["reward"], "n_trials": 1,
                    "seed": args.seed}
    data = raw.setdefault("data", {})
    if args.images is not None:
        data["num_images"] = args.images
    if args.image_size is not None:
        data["image_size"] = list(args.image_size)
    train = raw.setdefault("train", {})
    if args.epochs is not None:
        train["stage1_epochs"], train["stage2_epochs"] = args.epochs
        # Fewer stage-1 epochs than the config validates after: validate at the end only.
        if train.get("stage1_validations", 1) > max(train["stage1_epochs"], 1):
            train["stage1_validations"] = 1
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    train["device"] = str(device)
    train["cache_dir"] = str(cache_dir)
    cost = raw.setdefault("cost", {})
    cost.pop("budget", None)
    cost.pop("penalty", None)
    if args.quick:
        train["warmup_epochs"] = 1
        cost["latency_warmup"], cost["latency_repeats"] = 1, 2
    raw["sampler"] = {"name": "random"}
    raw["pruner"] = {"name": "none"}
    return raw


def space_raw(raw: Mapping[str, Any], space: str, *, name: str, storage: str,
              n_trials: int) -> dict:
    """``raw`` for one space and study (the base's space options kept for the same space)."""
    out = json.loads(json.dumps(raw))
    options = {k: v for k, v in out.get("space", {}).items() if k != "name"}
    if out.get("space", {}).get("name") != space:
        options = {}
    out["space"] = {"name": space, **{"profile": "search", **options}}
    out["study"].update(name=name, storage=storage, n_trials=n_trials)
    return out


# --- architectures -----------------------------------------------------------------------
def draw_architectures(space_name: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct architectures' params: RandomSampler(seed), ``space.suggest``."""
    space = get_space(space_name, profile="search")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn: dict[str, dict[str, Any]] = {}
    for _ in range(50 * n):
        if len(drawn) == n:
            break
        trial = study.ask()
        arch = space.suggest(trial)
        drawn.setdefault(space.describe(arch), dict(trial.params))
    if len(drawn) < n:
        raise ValueError(f"{space_name}: only {len(drawn)} distinct architectures drawn")
    return list(drawn.values())


def warm_up(spaces: Mapping[str, list[dict[str, Any]]], device: torch.device) -> None:
    """Untimed: lazy imports (segmentation_models_pytorch) and first-call set-up.

    Otherwise the side that runs first pays them (2 s of imports on the development
    machine, as much as the whole feature caching of the quick settings).
    """
    for name, archs in spaces.items():
        space = get_space(name, profile="search")
        network = space.build(space.from_params(archs[0]), num_classes=2).to(device).train()
        outputs = network(torch.zeros(2, 3, 64, 64, device=device))
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        logits.float().mean().backward()


# --- (b) nas-optuna ------------------------------------------------------------------------
@contextlib.contextmanager
def instrument_nas_optuna(timer: PhaseTimer, capture: dict[str, Any],
                          training_seed: int | None = None) -> Iterator[list[str]]:
    """Wraps nas-optuna's and Optuna's functions with timing hooks for the duration.

    Yields the hooks that could not be installed (their targets no longer exist).
    ``capture`` receives the search data and the one-off times of ``prepare_search_data``
    and ``initialise_stem``. With ``training_seed``, the objective trains with it while
    the study seed (and so the cached stem) stays the same.
    """
    import optuna.study._optimize as optimize_module
    from optuna.storages._base import BaseStorage
    from optuna.storages._cached_storage import _CachedStorage

    import nas_optuna.objective as objective_module
    import nas_optuna.study as study_module
    import nas_optuna.training.trainer as trainer_module

    missing: list[str] = []
    # Optional hooks: targets that only some versions of nas-optuna have.
    optional = {"upload_trial_artifacts"}
    hooks: list[tuple[Any, str, str]] = [
        (trainer_module, "_step", "forward/backward"),
        (trainer_module, "_evaluate", "evaluation"),
        (trainer_module, "_stage1", "data"),
        (trainer_module, "_stage2", "data"),
        (trainer_module, "_averaged", "polyak"),
        (getattr(trainer_module, "_PolyakAverage", None), "update_parameters", "polyak"),
        (objective_module, "measure_network", "cost"),
        (objective_module, "train_architecture", "train setup"),
        (objective_module, "upload_trial_artifacts", "artifacts"),
        (objective_module.SearchObjective, "_run", "build"),
        (optuna.study.Study, "ask", "sampler"),
        (optuna.trial.Trial, "should_prune", "sampler"),
        (optimize_module, "_tell_with_warning", "storage"),
    ]
    hooks += [(_CachedStorage, name, "storage") for name in dir(BaseStorage)
              if not name.startswith("_") and callable(getattr(BaseStorage, name))]

    def build_sampler(*args: Any, **kwargs: Any) -> optuna.samplers.BaseSampler:
        sampler = original_build_sampler(*args, **kwargs)
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent",
                     "before_trial", "after_trial"):
            setattr(sampler, name, timer.wrap("sampler", getattr(sampler, name)))
        return sampler

    def get_space_timed(*args: Any, **kwargs: Any) -> Any:
        space = original_get_space(*args, **kwargs)
        space.suggest = timer.wrap("sampler", space.suggest)
        return space

    def one_off(original: Callable[..., Any], seconds_key: str,
                value_key: str) -> Callable[..., Any]:
        """``original``, adding its seconds to ``capture[seconds_key]``, its result kept."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            value = original(*args, **kwargs)
            capture[seconds_key] = (capture.get(seconds_key, 0.0)
                                    + time.perf_counter() - started)
            capture[value_key] = value
            return value
        return timed

    original_build_sampler = study_module.build_sampler
    original_get_space = study_module.get_space
    with contextlib.ExitStack() as stack:
        for target, name, phase in hooks:
            if target is None or not callable(getattr(target, name, None)):
                if name not in optional:
                    missing.append(f"{getattr(target, '__name__', target)}.{name}")
                continue
            stack.enter_context(
                mock.patch.object(target, name, timer.wrap(phase, getattr(target, name))))
        stack.enter_context(mock.patch.object(study_module, "build_sampler", build_sampler))
        stack.enter_context(mock.patch.object(study_module, "get_space", get_space_timed))
        stack.enter_context(mock.patch.object(
            study_module, "prepare_search_data",
            one_off(study_module.prepare_search_data, "prepare_s", "data")))
        stack.enter_context(mock.patch.object(
            study_module, "initialise_stem",
            one_off(study_module.initialise_stem, "stem_init_s", "stem_weights")))
        if training_seed is not None:
            base = study_module.SearchObjective

            class Reseeded(base):  # type: ignore[misc, valid-type]
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    self.seed = training_seed

            stack.enter_context(mock.patch.object(study_module, "SearchObjective", Reseeded))
        yield missing


def run_nas_optuna(raw: Mapping[str, Any], spaces: Mapping[str, list[dict[str, Any]]],
                   device: torch.device, workdir: Path, *, phase_sync: bool,
                   training_seed: int | None = None, tag: str = "b") -> dict[str, Any]:
    """Side (b): every space's architectures through ``run_search`` on a SQLite study."""
    from nas_optuna.study import create_study, run_search

    timer = PhaseTimer(_device_sync(device, phase_sync))
    timer.armed = False
    rows: list[dict[str, Any]] = []
    one_off: dict[str, Any] = {"prepare_s": 0.0, "stem_init_s": 0.0}
    stem_states: dict[str, dict[str, torch.Tensor]] = {}
    total = 0.0
    missing: list[str] = []
    load = OtherLoad()
    memory = _PeakMemory(device)
    for space_name, archs in spaces.items():
        config = parse_config(space_raw(
            raw, space_name, name=f"throughput-{tag}-{space_name}",
            storage=f"sqlite:///{workdir / f'{tag}-{space_name}.db'}", n_trials=len(archs)))
        study = create_study(config)
        for params in archs:
            study.enqueue_trial(params)
        capture: dict[str, Any] = {}
        ready: list[float] = []

        def on_ready(study: optuna.Study, space: Any, ready: list[float] = ready) -> None:
            timer.armed = True
            ready.append(time.perf_counter())

        with instrument_nas_optuna(timer, capture, training_seed) as missing_hooks:
            study = run_search(config, on_ready=on_ready)
            ended = time.perf_counter()
            timer.armed = False
        missing = sorted(set(missing) | set(missing_hooks))
        total += ended - ready[0]
        one_off["prepare_s"] += capture.get("prepare_s", 0.0)
        one_off["stem_init_s"] += capture.get("stem_init_s", 0.0)
        stem_states[space_name] = capture["data"].stem_state
        one_off["stem_weights"] = capture["data"].stem_weights
        # The last finished trial of each architecture (a retried trial has a later number).
        by_params = {_key(t.params): t for t in sorted(study.get_trials(deepcopy=False),
                                                       key=lambda t: t.number)
                     if t.state.is_finished()}
        for index, params in enumerate(archs):
            trial = by_params.get(_key(params))
            if trial is None:
                rows.append({"space": space_name, "index": index, "state": "MISSING",
                             "params_match": False, "reward": None, "reward_stage1": None})
                continue
            complete = trial.state == optuna.trial.TrialState.COMPLETE
            rows.append({
                "space": space_name, "index": index, "trial": trial.number,
                "params_match": trial.params == params, "state": trial.state.name,
                "genotype": trial.user_attrs.get("genotype"),
                "reward": trial.value if complete else None,
                "reward_stage1": trial.user_attrs.get("reward_stage1"),
                "params_generated": trial.user_attrs.get("params_generated"),
                "seconds": trial.duration.total_seconds() if trial.duration else None,
                "fail_reason": trial.user_attrs.get("fail_reason"),
            })
    one_off["feature_cache_s"] = one_off["prepare_s"] - one_off["stem_init_s"]
    return {
        "rows": rows, "total_s": total, "phases": dict(timer.seconds),
        "one_off": one_off, "peak_memory_mib": memory.mib(), "memory_kind": memory.kind,
        "other_load_cores": load.cores(), "missing_hooks": missing,
        "stem_states": stem_states,
    }


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


# --- (a) reference -------------------------------------------------------------------------
def run_reference(raw: Mapping[str, Any], spaces: Mapping[str, list[dict[str, Any]]],
                  stem_states: Mapping[str, dict[str, torch.Tensor]], device: torch.device,
                  *, seed: int, phase_sync: bool) -> dict[str, Any]:
    """Side (a): every architecture through the plain reference loop."""
    timer = PhaseTimer(_device_sync(device, phase_sync))
    rows: list[dict[str, Any]] = []
    total = 0.0
    load = OtherLoad()
    memory = _PeakMemory(device)
    for space_name, archs in spaces.items():
        config = parse_config(space_raw(raw, space_name, name="reference",
                                        storage="sqlite:///:memory:", n_trials=len(archs)))
        source = build_dataset(config.data.name, **config.data.options)
        data = build_reference_data(
            source, val_fraction=config.data.val_fraction, split_seed=config.data.split_seed,
            crop_size=config.data.crop_size, scale=config.data.scale,
            flip_views=config.train.flip_views)
        space = get_space(config.space.name, **config.space.options)
        input_size = config.cost.input_size or data.image_size
        sizes = {"train_images": len(data.train_augmented), "val_images": len(data.val),
                 "image_size": "x".join(map(str, data.image_size))}
        for index, params in enumerate(archs):
            started = time.perf_counter()
            row = {"space": space_name, "index": index, "state": "COMPLETE",
                   "reward": None, "reward_stage1": None, "fail_reason": None}
            with timer.phase("build"):
                arch = space.from_params(params)
                torch.manual_seed(seed * 100_003 + index)  # the objective's per-trial seed
                stem = space.build_stem()
                stem.load_state_dict(stem_states[space_name])
                network = space.build(arch, data.num_classes, stem=stem).to(device)
                row["genotype"] = space.describe(arch)
            with timer.phase("cost"):
                _measure(network, input_size, device, config)
            try:
                with timer.phase("train setup"):
                    metrics = train_reference(
                        network, data, config.train, device=device, seed=seed + index,
                        omit_classes=config.train.omit_classes, phase=timer.phase)
                row["reward"] = metrics[max(metrics)]["reward"]
                row["reward_stage1"] = metrics.get(1, {}).get("reward")
            except (FloatingPointError, torch.OutOfMemoryError) as error:
                row.update(state="FAIL", fail_reason=f"{type(error).__name__}: {error}")
            row["seconds"] = time.perf_counter() - started
            total += row["seconds"]
            rows.append(row)
            del network
    return {
        "rows": rows, "total_s": total, "phases": dict(timer.seconds), "one_off": {},
        "sizes": sizes, "peak_memory_mib": memory.mib(), "memory_kind": memory.kind,
        "other_load_cores": load.cores(), "missing_hooks": [],
    }


def _measure(network: torch.nn.Module, input_size: Sequence[int], device: torch.device,
             config: StudyConfig) -> dict[str, Any]:
    cost = config.cost
    return measure_network(network, tuple(input_size), device=device,
                           latency=cost.measure_latency, latency_warmup=cost.latency_warmup,
                           latency_repeats=cost.latency_repeats)


# --- several trials at once -------------------------------------------------------------------
def run_concurrent(raw: Mapping[str, Any], space_name: str, archs: list[dict[str, Any]],
                   ks: Sequence[int], device: torch.device, workdir: Path,
                   threads: int) -> list[dict[str, Any]]:
    """K worker processes of ``nas-optuna search`` sharing one SQLite study, for each K."""
    from nas_optuna.study import create_study

    n_trials = max(ks) * math.ceil(len(archs) / max(ks))
    shared_budget = importlib.util.find_spec("nas_optuna.workers") is not None
    results = []
    for k in ks:
        per_worker = n_trials if shared_budget else n_trials // k
        name = f"concurrent-{k}"
        storage = f"sqlite:///{workdir / f'{name}.db'}"
        worker_raw = space_raw(raw, space_name, name=name, storage=storage, n_trials=per_worker)
        path = workdir / f"{name}.toml"
        path.write_text(to_toml(worker_raw), encoding="utf-8")
        study = create_study(parse_config(worker_raw))
        for i in range(n_trials):
            study.enqueue_trial(archs[i % len(archs)])
        worker_threads = max(1, threads // k)
        env = {**os.environ, "OMP_NUM_THREADS": str(worker_threads),
               "MKL_NUM_THREADS": str(worker_threads),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        command = [sys.executable, "-m", "nas_optuna.cli", "search", str(path),
                   "--n-trials", str(per_worker), "--device", str(device), "--quiet"]
        launched_at = datetime.datetime.now()
        started = time.perf_counter()
        with contextlib.ExitStack() as logs:
            workers = [
                subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.STDOUT,
                                 stdout=logs.enter_context(
                                     (workdir / f"{name}-worker{w}.log").open("w")))
                for w in range(k)
            ]
            codes = [worker.wait() for worker in workers]
        exit_s = time.perf_counter() - started
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        results.append(_concurrency_row(k, worker_threads, codes, n_trials, trials,
                                        launched_at, exit_s))
        row = results[-1]
        print(f"concurrent K={k}: {row['trials_complete']} trials, "
              f"{_fmt(row['trials_per_hour_wall'], 0)}/h wall, "
              f"{_fmt(row['trials_per_hour_steady'], 0)}/h steady; exit codes {codes}",
              flush=True)
    return results


def _concurrency_row(k: int, worker_threads: int, codes: list[int], enqueued: int,
                     trials: Sequence[optuna.trial.FrozenTrial],
                     launched_at: datetime.datetime, exit_s: float) -> dict[str, Any]:
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
            and t.datetime_start and t.datetime_complete]
    row: dict[str, Any] = {
        "k": k, "worker_threads": worker_threads, "exit_codes": codes,
        "trials_enqueued": enqueued, "trials_complete": len(done),
        "trials_other": sum(1 for t in trials if t.state.is_finished()) - len(done),
        "exit_s": exit_s, "wall_s": None, "steady_s": None, "startup_s": None,
        "trials_per_hour_wall": 0.0, "trials_per_hour_steady": 0.0, "mean_trial_s": None,
    }
    if done:
        first = min(t.datetime_start for t in done)
        last = max(t.datetime_complete for t in done)
        row["wall_s"] = (last - launched_at).total_seconds()
        row["steady_s"] = (last - first).total_seconds()
        row["startup_s"] = (first - launched_at).total_seconds()
        row["trials_per_hour_wall"] = len(done) / row["wall_s"] * 3600
        row["trials_per_hour_steady"] = len(done) / max(row["steady_s"], 1e-9) * 3600
        row["mean_trial_s"] = statistics.mean(t.duration.total_seconds() for t in done)
    return row


# --- summaries -------------------------------------------------------------------------------
def summarise_side(side: Mapping[str, Any], n_archs: int) -> dict[str, Any]:
    """Per-trial means, architectures per hour and the breakdown's coverage of the total."""
    total = side["total_s"]
    phases = {name: side["phases"].get(name, 0.0) for name in PHASES}
    attributed = sum(phases.values())
    feature_cache = side["one_off"].get("feature_cache_s", 0.0)
    compute = sum(phases[name] for name in COMPUTE_PHASES)
    failed = sum(1 for row in side["rows"] if row["state"] != "COMPLETE")
    return {
        "archs": n_archs,
        "failed": failed,
        "seconds_per_trial": total / n_archs,
        "archs_per_hour": n_archs / total * 3600 if total > 0 else 0.0,
        "archs_per_hour_with_one_off": (n_archs / (total + feature_cache) * 3600
                                        if total > 0 else 0.0),
        "phases_per_trial": {name: value / n_archs for name, value in phases.items()},
        "training_seconds_per_trial": sum(phases[name] for name in TRAINING_PHASES) / n_archs,
        "unattributed_per_trial": (total - attributed) / n_archs,
        "attributed_fraction": attributed / total if total > 0 else float("nan"),
        "compute_fraction": compute / total if total > 0 else float("nan"),
        "peak_memory_mib": side["peak_memory_mib"],
        "memory_kind": side["memory_kind"],
        "other_load_cores": side["other_load_cores"],
        "one_off": side["one_off"],
        "missing_hooks": side["missing_hooks"],
    }


def _spearman(xs: Sequence[float | None], ys: Sequence[float | None]) -> dict[str, Any]:
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    rho = float("nan")
    if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
        rho = float(stats.spearmanr(*zip(*pairs)).statistic)
    return {"n": len(pairs), "rho": rho}


def rankings(reference: list[dict], nas: list[dict], again: list[dict] | None,
             spaces: Sequence[str]) -> dict[str, Any]:
    """Spearman's rho between the sides' rewards of the same architectures."""
    def rewards(rows: list[dict], key: str = "reward", space: str | None = None) -> list:
        return [r[key] for r in rows if space is None or r["space"] == space]

    out = {
        "final": _spearman(rewards(reference), rewards(nas)),
        "stage1": _spearman(rewards(reference, "reward_stage1"), rewards(nas, "reward_stage1")),
        "per_space": {s: _spearman(rewards(reference, space=s), rewards(nas, space=s))
                      for s in spaces},
    }
    if again is not None:
        out["noise_ceiling"] = _spearman(rewards(nas), rewards(again))
        out["reference_vs_reseeded"] = _spearman(rewards(reference), rewards(again))
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _reward_range(rows: list[dict]) -> str:
    values = sorted(r["reward"] for r in rows if r["reward"] is not None)
    if not values:
        return "-"
    return f"{values[0]:.3f} / {statistics.median(values):.3f} / {values[-1]:.3f}"


def render_markdown(results: Mapping[str, Any]) -> str:
    """The report: machine, settings, the two sides, rankings, concurrency."""
    meta, settings = results["meta"], results["settings"]
    a, b = results["summary"]["reference"], results["summary"]["nas_optuna"]
    machine = meta["machine"]
    lines = [
        f"## Throughput, {machine['device_name']}, {machine['torch_threads']} torch "
        f"threads ({meta['date']})",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Machine: {machine['cpu_model']}, `nproc` = {machine['nproc']}, device "
        f"{machine['device_name']}; torch {machine['torch']}, Optuna {machine['optuna']}, "
        f"Python {machine['python']}. Load average before / after: "
        f"{_fmt(meta['load_before'])} / {_fmt(meta['load_after'])}; other processes kept "
        f"{_fmt(a['other_load_cores'])} cores busy during (a), {_fmt(b['other_load_cores'])} "
        "during (b).",
        "",
        f"Setting: {settings['n_archs']} architectures ({settings['archs_per_space']} per "
        f"space from {', '.join(settings['spaces'])}; search profile; RandomSampler seed "
        f"{settings['seed']}); data `{settings['data']}`; {settings['train_images']} "
        f"meta-train / {settings['val_images']} meta-val images of {settings['image_size']}; "
        f"{settings['stage1_epochs']} + {settings['stage2_epochs']} epochs, batch "
        f"{settings['batch_size']}, flip views {settings['flip_views']}; costs per trial "
        f"with latency {settings['measure_latency']}. (b) runs through `run_search` on "
        "SQLite with the architectures enqueued (RandomSampler, no pruner).",
        "",
        f"| | {SIDES['reference']} | {SIDES['nas_optuna']} | (b) / (a), rates |",
        "|---|---|---|---|",
        f"| architectures (failed) | {a['archs']} ({a['failed']}) | {b['archs']} "
        f"({b['failed']}) | |",
        f"| seconds per trial | {_fmt(a['seconds_per_trial'])} | "
        f"{_fmt(b['seconds_per_trial'])} | |",
        f"| **architectures per hour** | {_fmt(a['archs_per_hour'], 0)} | "
        f"{_fmt(b['archs_per_hour'], 0)} | "
        f"**{_ratio(b['archs_per_hour'], a['archs_per_hour'])}** |",
        f"| ... with (b)'s feature caching amortised over the set | "
        f"{_fmt(a['archs_per_hour_with_one_off'], 0)} | "
        f"{_fmt(b['archs_per_hour_with_one_off'], 0)} | "
        f"{_ratio(b['archs_per_hour_with_one_off'], a['archs_per_hour_with_one_off'])} |",
        f"| training and evaluation only, seconds per trial | "
        f"{_fmt(a['training_seconds_per_trial'])} | {_fmt(b['training_seconds_per_trial'])} | "
        f"{_ratio(a['training_seconds_per_trial'], b['training_seconds_per_trial'])} "
        "|",
        f"| peak memory, MiB ({a['memory_kind']}) | {_fmt(a['peak_memory_mib'], 0)} | "
        f"{_fmt(b['peak_memory_mib'], 0)} | |",
        f"| model compute share (stem + forward/backward + evaluation) | "
        f"{_fmt(100 * a['compute_fraction'], 0)}% | {_fmt(100 * b['compute_fraction'], 0)}% | |",
        "",
        "Per-trial breakdown, seconds per trial (exclusive phase times; *unattributed* = "
        "measured total minus the phases):",
        "",
        "| phase | (a) s | (a) % | (b) s | (b) % |",
        "|---|---|---|---|---|",
    ]
    for name in (*PHASES, "unattributed"):
        if name == "unattributed":
            sa, sb = a["unattributed_per_trial"], b["unattributed_per_trial"]
        else:
            sa, sb = a["phases_per_trial"][name], b["phases_per_trial"][name]
        lines.append(f"| {name} | {_fmt(sa, 3)} | {_fmt(100 * sa / a['seconds_per_trial'], 1)} "
                     f"| {_fmt(sb, 3)} | {_fmt(100 * sb / b['seconds_per_trial'], 1)} |")
    lines.append(f"| **total** | {_fmt(a['seconds_per_trial'], 3)} | 100 | "
                 f"{_fmt(b['seconds_per_trial'], 3)} | 100 |")
    one_off = b["one_off"]
    lines += [
        "",
        f"One-off of (b) (`prepare_search_data`, {len(settings['spaces'])} spaces): "
        f"{_fmt(one_off.get('prepare_s'), 1)} s, of which stem initialisation "
        f"({results['stem_weights']}; shared by both sides, counted on neither) "
        f"{_fmt(one_off.get('stem_init_s'), 1)} s and stem-feature caching "
        f"{_fmt(one_off.get('feature_cache_s'), 1)} s = "
        f"{_fmt(one_off.get('feature_cache_s', 0.0) / b['archs'], 2)} s per trial over "
        "this set.",
    ]
    if a["missing_hooks"] or b["missing_hooks"]:
        lines.append(f"Hooks not installed (their time is unattributed): "
                     f"{', '.join(b['missing_hooks'])}.")
    rank = results["rankings"]
    lines += [
        "",
        "| rewards compared | architectures | Spearman rho |",
        "|---|---|---|",
        f"| **(a) vs (b), final reward** | {rank['final']['n']} | "
        f"**{_fmt(rank['final']['rho'], 3)}** |",
        f"| (a) vs (b), stage-1 reward | {rank['stage1']['n']} | "
        f"{_fmt(rank['stage1']['rho'], 3)} |",
    ]
    for space, value in rank["per_space"].items():
        lines.append(f"| (a) vs (b), {space} only | {value['n']} | {_fmt(value['rho'], 3)} |")
    if "noise_ceiling" in rank:
        lines += [
            f"| noise ceiling: (b) vs (b) with training seed {settings['seed'] + 1} | "
            f"{rank['noise_ceiling']['n']} | {_fmt(rank['noise_ceiling']['rho'], 3)} |",
            f"| (a) vs (b) with training seed {settings['seed'] + 1} | "
            f"{rank['reference_vs_reseeded']['n']} | "
            f"{_fmt(rank['reference_vs_reseeded']['rho'], 3)} |",
        ]
    lines += [
        "",
        f"Rewards min / median / max: (a) {_reward_range(results['rows']['reference'])}, "
        f"(b) {_reward_range(results['rows']['nas_optuna'])}.",
    ]
    if results.get("concurrent"):
        base = results["concurrent"][0]["trials_per_hour_steady"]
        lines += [
            "",
            f"Several trials at once on one device ({settings['spaces'][0]} architectures, "
            f"{results['concurrent'][0]['trials_enqueued']} trials per K, one SQLite "
            "storage, `python -m nas_optuna.cli search` workers):",
            "",
            "| K | threads per worker | trials complete | wall s (start-up s) | trials/hour, "
            "wall | trials/hour, steady | vs K=" + str(results["concurrent"][0]["k"]) +
            " (steady) | mean trial s | last worker exit s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["concurrent"]:
            lines.append(
                f"| {row['k']} | {row['worker_threads']} | {row['trials_complete']} | "
                f"{_fmt(row['wall_s'], 1)} ({_fmt(row['startup_s'], 1)}) | "
                f"{_fmt(row['trials_per_hour_wall'], 0)} | "
                f"{_fmt(row['trials_per_hour_steady'], 0)} | "
                f"{_ratio(row['trials_per_hour_steady'], base)} | "
                f"{_fmt(row['mean_trial_s'], 2)} | {_fmt(row['exit_s'], 1)} |")
    lines.append("")
    return "\n".join(lines)


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


# --- command line ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "studies" / "quickstart.toml"),
                        help="base study config: data, budget, costs")
    parser.add_argument("--spaces", nargs="+", default=["template", "auxcell"])
    parser.add_argument("--archs", type=int, help="architectures per space (default 12)")
    parser.add_argument("--epochs", type=int, nargs=2, metavar=("S1", "S2"),
                        help="stage-1 and stage-2 epochs (default: the config's)")
    parser.add_argument("--batch-size", type=int, help="default: the config's")
    parser.add_argument("--images", type=int, help="synthetic images (default: the config's)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the architecture draw, the study and training")
    parser.add_argument("--noise-ceiling", action="store_true",
                        help="train (b) again with training seed + 1")
    parser.add_argument("--concurrent", nargs="?", const="default", metavar="K1,K2,...",
                        help="K worker processes per run (no list: 1,2 on CPU, 1,2,4,8 on CUDA)")
    parser.add_argument("--no-phase-sync", action="store_true",
                        help="do not synchronise CUDA at phase boundaries")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for a smoke test (explicit flags still win)")
    parser.add_argument("--workdir", help="keep studies, caches and logs here (default: temp)")
    parser.add_argument("--write", help="write the markdown report to this file")
    parser.add_argument("--append", action="store_true", help="append to --write's file")
    parser.add_argument("--json", help="raw results (default with --write: its .json twin)")
    return parser


def _settings(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset options: ``--quick``'s tiny values, else 12 architectures per space."""
    if args.archs is None:
        args.archs = _QUICK["archs"] if args.quick else 12
    if args.quick:
        for name in ("epochs", "batch_size", "images", "image_size"):
            if getattr(args, name) is None:
                setattr(args, name, _QUICK[name])
    return args


def _concurrency_levels(spec: str | None, device: torch.device) -> list[int]:
    if spec is None:
        return []
    if spec == "default":
        return [1, 2, 4, 8] if device.type == "cuda" else [1, 2]
    levels = sorted({int(k) for k in spec.split(",") if k.strip()})
    if not levels or levels[0] < 1:
        raise SystemExit(f"--concurrent: positive integers expected, got {spec!r}")
    return levels


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the report and returns the results."""
    args = _settings(_parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(args.device)
    levels = _concurrency_levels(args.concurrent, device)
    load_before = loadavg()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="thr-")))
        raw = benchmark_raw(args, device, workdir / "cache")
        spaces = {name: draw_architectures(name, args.archs, args.seed) for name in args.spaces}
        n_archs = sum(len(v) for v in spaces.values())
        warm_up(spaces, device)
        print(f"{n_archs} architectures; (b) nas-optuna ...", flush=True)
        sync = not args.no_phase_sync
        nas = run_nas_optuna(raw, spaces, device, workdir, phase_sync=sync)
        print(f"(b) {nas['total_s']:.1f} s; (a) reference loop ...", flush=True)
        reference = run_reference(raw, spaces, nas.pop("stem_states"), device,
                                  seed=args.seed, phase_sync=sync)
        print(f"(a) {reference['total_s']:.1f} s", flush=True)
        again = None
        if args.noise_ceiling:
            print("(b) again with training seed + 1 ...", flush=True)
            again = run_nas_optuna(raw, spaces, device, workdir, phase_sync=sync,
                                   training_seed=args.seed + 1, tag="b-reseeded")
            again.pop("stem_states")
        concurrent = []
        if levels:
            first = args.spaces[0]
            concurrent = run_concurrent(raw, first, spaces[first], levels, device, workdir,
                                        args.threads or torch.get_num_threads())
    config = parse_config(space_raw(raw, args.spaces[0], name="settings",
                                    storage="sqlite:///:memory:", n_trials=1))
    results: dict[str, Any] = {
        "meta": {
            "command": "python benchmarks/throughput.py " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "date": datetime.date.today().isoformat(),
            "machine": _machine(device),
            "load_before": load_before,
            "load_after": loadavg(),
        },
        "settings": {
            "spaces": list(args.spaces), "archs_per_space": args.archs, "n_archs": n_archs,
            "seed": args.seed, "data": {"name": config.data.name, **config.data.options},
            **reference["sizes"],
            "stage1_epochs": config.train.stage1_epochs,
            "stage2_epochs": config.train.stage2_epochs,
            "batch_size": config.train.batch_size, "flip_views": config.train.flip_views,
            "measure_latency": config.cost.measure_latency, "phase_sync": sync,
            "concurrent": levels, "params": spaces,
        },
        "stem_weights": nas["one_off"].get("stem_weights"),
        "summary": {"reference": summarise_side(reference, n_archs),
                    "nas_optuna": summarise_side(nas, n_archs)},
        "rows": {"reference": reference["rows"], "nas_optuna": nas["rows"],
                 **({"nas_optuna_reseeded": again["rows"]} if again else {})},
        "rankings": rankings(reference["rows"], nas["rows"],
                             again["rows"] if again else None, args.spaces),
        "concurrent": concurrent,
    }
    if again is not None:
        results["summary"]["nas_optuna_reseeded"] = summarise_side(again, n_archs)
    report = render_markdown(results)
    print(report)
    if args.write:
        path = Path(args.write)
        with path.open("a" if args.append else "w", encoding="utf-8") as handle:
            handle.write(report)
    json_path = args.json or (str(Path(args.write).with_suffix(".json")) if args.write else None)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
