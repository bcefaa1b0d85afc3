"""PPOSampler on the real template space: learning, sampler overhead, resume.

Trains nothing: a synthetic reward with known structure stands in for the trained
network's reward, so the benchmark measures the sampler, not the trainer. The reward of an
architecture of ``search_spaces.get_space("template")`` (about 40 decisions) is::

    0.40 + 0.04 * (sep_conv_5x5 ops in the 3 templates, 0..6)
         + 0.02 * (blocks applying a template that holds a sep_conv_5x5, 0..7)
         - 0.05 * |log2(downsampling of the generated part) - 1|   (prefers one stride 2)
         - 0.015 * (applications beyond 2 per block, 0..14)        (huge repeats cost)
         + N(0, 0.01) noise, fixed per (seed, trial number)

so the optimum is 0.78 and a random architecture scores 0.25 on average (std 0.15).

Parts:

* ``learning``: mean reward over the last 50 trials and best-so-far at trials 50, 100, 200,
  300 for PPOSampler (defaults; ``ppo-buffer``: whole-buffer updates; ``ppo-papers``: also
  the papers' learning rate 1e-4), RandomSampler and TPESampler; mean ± std over seeds.
* ``overhead``: sampler time per trial (suggestions plus the PPO update, or TPE's fitting)
  at trials 10, 100 and 1000, in-memory storage.
* ``resume``: a SQLite study stopped after 150 trials and resumed by a new process,
  against the same study run without interruption.

Usage:
    python benchmarks/ppo_sampler.py [--parts learning,overhead,resume] [--seeds 5]
        [--trials 300] [--overhead-trials 1000] [--output docs/benchmarks_ppo.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from nas_optuna.samplers import PPOSampler
from search_spaces import get_space
from search_spaces.template import TemplateArchitecture

CHECKPOINTS = (50, 100, 200, 300)
OVERHEAD_POINTS = (10, 100, 1000)
WINDOW = 50


# --- the synthetic objective ---------------------------------------------------------
def synthetic_reward(arch: TemplateArchitecture) -> float:
    """The noiseless reward of an architecture (see the module docstring)."""
    sep5 = [(t.op1 == "sep_conv_5x5") + (t.op2 == "sep_conv_5x5") for t in arch.templates]
    blocks_with_sep5 = sum(sep5[b.template] > 0 for b in arch.blocks)
    excess_repeats = sum(max(0, b.repeats - 2) for b in arch.blocks)
    stride_error = abs(math.log2(arch.downsampling()) - 1)
    return (0.40 + 0.04 * sum(sep5) + 0.02 * blocks_with_sep5 - 0.05 * stride_error
            - 0.015 * excess_repeats)


def make_objective(seed: int) -> Callable[[optuna.Trial], float]:
    space = get_space("template")

    def objective(trial: optuna.Trial) -> float:
        arch = space.suggest(trial)
        noise = np.random.default_rng([seed, trial.number]).normal(0.0, 0.01)
        return synthetic_reward(arch) + float(noise)

    return objective


#: PPOSampler variants: the defaults, and the papers' settings the defaults depart from.
PPO_VARIANTS: dict[str, dict[str, Any]] = {
    "ppo": {},
    "ppo-buffer": {"batch_size": None},
    "ppo-papers": {"batch_size": None, "learning_rate": 1e-4},
}


def make_sampler(name: str, seed: int, ppo_options: dict[str, Any]) -> BaseSampler:
    if name in PPO_VARIANTS:
        return PPOSampler(seed=seed, **{**PPO_VARIANTS[name], **ppo_options})
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


# --- learning ------------------------------------------------------------------------
def run_learning(samplers: Sequence[str], seeds: int, trials: int,
                 ppo_options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    curves: dict[str, list[list[float]]] = defaultdict(list)
    for name in samplers:
        for seed in range(seeds):
            study = optuna.create_study(direction="maximize",
                                        sampler=make_sampler(name, seed, ppo_options))
            study.optimize(make_objective(seed), n_trials=trials)
            curves[name].append([t.value for t in study.trials])
            print(f"  learning: {name} seed {seed}: last-{WINDOW} mean "
                  f"{np.mean(curves[name][-1][-WINDOW:]):.4f}", file=sys.stderr, flush=True)
    points = [c for c in CHECKPOINTS if c <= trials]
    lines = [
        f"Mean reward of the last {WINDOW} trials / best reward so far, mean ± std over "
        f"{seeds} seeds (random architectures: 0.25 on average; optimum 0.78).",
        "",
        "| sampler | " + " | ".join(f"trial {p}: mean last {WINDOW}" for p in points)
        + " | " + " | ".join(f"trial {p}: best" for p in points) + " |",
        "|---|" + "---|" * (2 * len(points)),
    ]
    summary: dict[str, Any] = {}
    for name in samplers:
        runs = np.array(curves[name])
        means = [runs[:, p - WINDOW:p].mean(axis=1) for p in points]
        bests = [runs[:, :p].max(axis=1) for p in points]
        lines.append(f"| {name} | " + " | ".join(_pm(m) for m in means) + " | "
                     + " | ".join(_pm(b) for b in bests) + " |")
        summary[name] = {"mean_last": {p: float(m.mean()) for p, m in zip(points, means)}}
    return lines, summary


# --- overhead ------------------------------------------------------------------------
class TimedSampler(BaseSampler):
    """Forwards to ``inner`` and adds up wall and CPU time spent in it, per trial number."""

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner
        self.wall: dict[int, float] = defaultdict(float)
        self.cpu: dict[int, float] = defaultdict(float)

    def _timed(self, trial: FrozenTrial, call: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return call()
        finally:
            self.wall[trial.number] += time.perf_counter() - wall
            self.cpu[trial.number] += time.thread_time() - cpu

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._timed(trial, lambda: self.inner.infer_relative_search_space(study, trial))

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._timed(trial, lambda: self.inner.sample_relative(study, trial, search_space))

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._timed(trial, lambda: self.inner.sample_independent(
            study, trial, param_name, param_distribution))

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._timed(trial, lambda: self.inner.before_trial(study, trial))

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._timed(trial, lambda: self.inner.after_trial(study, trial, state, values))


def run_overhead(samplers: Sequence[str], trials: int,
                 ppo_options: dict[str, Any]) -> list[str]:
    # Creating the first torch optimizer imports torch._dynamo (seconds, once per process).
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    points = [p for p in OVERHEAD_POINTS if p <= trials]
    lines = [
        "Sampler time per trial in ms (all sampler calls of one trial: the ~40 suggestions "
        "and, for PPO, the update on the previous trial), median over the 10 trials up to "
        "the one named; wall-clock / CPU time of the sampling thread; in-memory storage. "
        "The one-time import of torch's optimizers (several seconds) is done before.",
        "",
        "| sampler | " + " | ".join(f"trial {p}" for p in points) + " |",
        "|---|" + "---|" * len(points),
    ]
    for name in samplers:
        timed = TimedSampler(make_sampler(name, 0, ppo_options))
        study = optuna.create_study(direction="maximize", sampler=timed)
        study.optimize(make_objective(0), n_trials=trials)
        cells = []
        for p in points:
            window = range(max(0, p - 10), p)
            wall = 1e3 * statistics.median(timed.wall[n] for n in window)
            cpu = 1e3 * statistics.median(timed.cpu[n] for n in window)
            cells.append(f"{wall:.1f} / {cpu:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(f"  overhead: {name}: {cells}", file=sys.stderr, flush=True)
    return lines


# --- resume --------------------------------------------------------------------------
def _worker(storage: str, study_name: str, seed: int, until: int,
            ppo_options: dict[str, Any]) -> None:
    """Runs PPO on a stored study until it holds ``until`` trials (a separate process)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = PPOSampler(seed=seed, **ppo_options)
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                direction="maximize", load_if_exists=True)
    started = time.perf_counter()
    study.optimize(make_objective(seed), n_trials=until - len(study.trials))
    print(json.dumps({"learned": sampler.n_learned,
                      "seconds": time.perf_counter() - started}))


def _spawn(storage: str, study_name: str, seed: int, until: int,
           ppo_options: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", storage, study_name, str(seed),
               str(until), "--ppo-options", json.dumps(ppo_options)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_resume(seeds: int, trials: int, stop: int, ppo_options: dict[str, Any]) -> list[str]:
    window = (stop, min(stop + WINDOW, trials))
    late = (trials - WINDOW, trials)
    rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    learned_on_resume = []
    # SQLite commits every suggestion; on tmpfs that costs CPU, not disk latency.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as directory:
        for seed in range(seeds):
            for mode in ("uninterrupted", "resumed"):
                storage = f"sqlite:///{Path(directory) / f'{mode}-{seed}.db'}"
                if mode == "resumed":
                    _spawn(storage, "resume", seed, stop, ppo_options)
                report = _spawn(storage, "resume", seed, trials, ppo_options)
                if mode == "resumed":
                    learned_on_resume.append(report["learned"])
                values = [t.value for t in optuna.load_study(study_name="resume",
                                                             storage=storage).trials]
                rows[mode].append((float(np.mean(values[:WINDOW])),
                                   float(np.mean(values[window[0]:window[1]])),
                                   float(np.mean(values[late[0]:late[1]]))))
                print(f"  resume: {mode} seed {seed}: {rows[mode][-1]}", file=sys.stderr,
                      flush=True)
    lines = [
        f"SQLite study (file on tmpfs) run by one process for {trials} trials, against one "
        f"stopped after "
        f"{stop} trials and resumed by a new process (new PPOSampler, same seed) that first "
        f"catches up on the {stop} stored trials (it learned from "
        f"{min(learned_on_resume)}-{max(learned_on_resume)} trials in total). Mean reward, "
        f"mean ± std over {seeds} seeds; random architectures score 0.25 on average.",
        "",
        f"| run | trials 0-{WINDOW - 1} (fresh policy) | trials {window[0]}-{window[1] - 1} "
        f"(first after the stop) | trials {late[0]}-{late[1] - 1} |",
        "|---|---|---|---|",
    ]
    for mode in ("uninterrupted", "resumed"):
        cells = [_pm(np.array([r[i] for r in rows[mode]])) for i in range(3)]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


# --- report --------------------------------------------------------------------------
def _pm(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, Optuna "
            f"{optuna.__version__} (PPOSampler runs its tensor ops on one thread)")


def _load() -> str:
    """The 1-minute load average: other processes on the machine skew the timings."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="learning,overhead,resume")
    parser.add_argument("--samplers", default="ppo,ppo-buffer,ppo-papers,random,tpe")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--overhead-trials", type=int, default=1000)
    parser.add_argument("--resume-seeds", type=int, default=None,
                        help="seeds of the resume part (default: --seeds)")
    parser.add_argument("--stop", type=int, default=150, help="resume: trials before the stop")
    parser.add_argument("--ppo-options", default="{}", help="PPOSampler options as JSON")
    parser.add_argument("--output", default="docs/benchmarks_ppo.md")
    parser.add_argument("--worker", nargs=4, metavar=("STORAGE", "STUDY", "SEED", "UNTIL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    ppo_options = json.loads(args.ppo_options)
    if args.worker:
        storage, study_name, seed, until = args.worker
        _worker(storage, study_name, int(seed), int(until), ppo_options)
        return

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parts = args.parts.split(",")
    samplers = args.samplers.split(",")
    options = f" with options `{json.dumps(ppo_options)}`" if ppo_options else ""
    lines = [
        "## PPOSampler",
        "",
        f"`python benchmarks/ppo_sampler.py --parts {args.parts} --seeds {args.seeds} "
        f"--trials {args.trials} --overhead-trials {args.overhead_trials}`: PPOSampler "
        f"(defaults{options}) on the template space with a synthetic reward (see the "
        "script's docstring); no network is trained.",
        "",
        f"Machine: {machine()}.",
    ]
    started = time.perf_counter()
    if "learning" in parts:
        table, _ = run_learning(samplers, args.seeds, args.trials, ppo_options)
        lines += ["", "### Learning", "", *table]
    if "overhead" in parts:
        load = _load()
        table = run_overhead([s for s in samplers if s not in ("random", "ppo-papers")],
                             args.overhead_trials, ppo_options)
        lines += ["", "### Overhead", "", *table, "",
                  f"Load average (1 min) before / after this part: {load} / {_load()}."]
    if "resume" in parts:
        table = run_resume(args.resume_seeds or args.seeds, args.trials, args.stop,
                           ppo_options)
        lines += ["", "### Resume", "", *table]
    lines += ["", f"Total benchmark time: {(time.perf_counter() - started) / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
