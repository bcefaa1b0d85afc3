"""``nas-optuna search CONFIG``: run or resume the search a TOML config describes.

Every ``search`` process is a worker; processes started with the same storage URL and study
name (on one or many machines) cooperate on one study, whose ``[study] n_trials`` is their
shared total. ``--n-workers K`` runs K workers from one command: this process and K - 1
children (``search`` without ``--n-workers``), started once the study and the stem-feature
cache exist, their output prefixed ``[worker i]``. Ctrl-C stops them all; the running trials
end FAIL with ``fail_reason`` and are re-queued, so the same command resumes the study.
See docs/distributed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import optuna

from nas_optuna.config import StudyConfig, check_device, load_config
from nas_optuna.exceptions import ConfigError

NAME = "search"
HELP = "run or resume a search from a TOML config"


def add_arguments(search: argparse.ArgumentParser) -> None:
    search.add_argument("config", help="study config (TOML), e.g. studies/quickstart.toml")
    search.add_argument("--storage", help="Optuna storage URL (overrides [study] storage)")
    search.add_argument("--study-name", help="study name (overrides [study] name)")
    search.add_argument("--n-trials", type=int, help="total trials of the study")
    search.add_argument("--timeout", type=float, help="stop starting trials after SECONDS")
    search.add_argument("--sampler", help="sampler name (overrides [sampler] name)")
    search.add_argument("--pruner", help="pruner name (overrides [pruner] name)")
    search.add_argument("--seed", type=int, help="seed of the sampler and trials")
    search.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    search.add_argument("--quiet", action="store_true",
                        help="no progress bar (on a terminal) and no per-trial lines")
    search.add_argument("--allow-config-change", action="store_true",
                        help="resume a study that holds trials although the config changes "
                        "what its rewards mean (space, data, training, costs); the changed "
                        "keys are recorded in the study's config_changes attr")
    search.add_argument("--n-workers", type=int, default=1, metavar="K",
                        help="run K worker processes on this machine (default 1); more "
                        "machines: start the same command there with the same --storage")


def run(args: argparse.Namespace) -> int:
    from nas_optuna.cli._progress import SearchProgress
    from nas_optuna.objective import trial_record
    from nas_optuna.storage import mask_url
    from nas_optuna.study import run_search
    from nas_optuna.workers import LocalWorkers, trial_budget

    config = _apply_overrides(load_config(args.config), args)
    started = time.monotonic()
    children: list[LocalWorkers] = []

    def on_ready(study: optuna.Study, space: Any) -> None:
        budget = trial_budget(study.get_trials(deepcopy=False))
        running = f", {budget.running} running" if budget.running else ""
        print(
            f"study {study.study_name!r} in {mask_url(config.study.storage)}: "
            f"{budget.counted} finished trials{running}, target {config.study.n_trials}; "
            f"space {space.name} ({space.profile}), "
            f"stem weights: {study.user_attrs.get('stem_weights')}",
            flush=True,
        )
        progress.start(budget.counted, config.study.n_trials)
        if args.n_workers > 1:  # the study and the feature cache exist: children load them
            children.append(LocalWorkers(_worker_argv(args), args.n_workers - 1))

    def line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
        record = trial_record(trial)
        values = ", ".join(f"{v:.4f}" for v in trial.values) if trial.values else "-"
        stage1 = trial.user_attrs.get("reward_stage1")
        detail = f"stage1 {stage1:.4f}" if stage1 is not None else ""
        if record["fail_reason"]:
            detail = f"reason: {record['fail_reason']}"
        return (f"[{time.monotonic() - started:7.1f}s] trial {trial.number:3d} "
                f"{trial.state.name:8s} value {values:>8s}  "
                f"params {record['params_generated'] or 0:>9,}  "
                f"os {record['output_stride'] or '-'}  {detail}")

    progress = SearchProgress(line, quiet=args.quiet)

    try:
        study = run_search(config, callbacks=[progress], on_ready=on_ready,
                           allow_config_change=getattr(args, "allow_config_change", False))
    except BaseException:
        progress.close()
        for workers in children:  # Ctrl-C or an error here: stop the children too
            workers.interrupt()
            workers.wait(timeout=120)
        raise
    progress.close()
    failed = [(i + 1, code) for workers in children
              for i, code in enumerate(workers.wait()) if code != 0]
    _print_best(study)
    if failed:
        index, code = failed[0]
        print(f"nas-optuna: error: worker {index} exited with code {code}", file=sys.stderr)
        return 1
    return 0


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one child worker: this command without ``--n-workers``."""
    argv = [sys.executable, "-m", "nas_optuna.cli", "search", args.config]
    for flag, attr in (("--storage", "storage"), ("--study-name", "study_name"),
                       ("--n-trials", "n_trials"), ("--timeout", "timeout"),
                       ("--sampler", "sampler"), ("--pruner", "pruner"), ("--seed", "seed"),
                       ("--device", "device")):
        value = getattr(args, attr)
        if value is not None:
            argv += [flag, str(value)]
    if args.quiet:
        argv.append("--quiet")
    if getattr(args, "allow_config_change", False):
        argv.append("--allow-config-change")
    return argv


def _apply_overrides(config: StudyConfig, args: argparse.Namespace) -> StudyConfig:
    from nas_optuna.config import NamedConfig

    study = config.study
    changes: dict[str, Any] = {}
    for attr, key in (
        ("storage", "storage"),
        ("study_name", "name"),
        ("n_trials", "n_trials"),
        ("timeout", "timeout"),
        ("seed", "seed"),
    ):
        value = getattr(args, attr)
        if value is not None:
            changes[key] = value
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    config = config.replace(study=dataclasses.replace(study, **changes))
    n_workers = getattr(args, "n_workers", 1)
    if n_workers < 1:
        raise ConfigError(f"--n-workers must be >= 1, got {n_workers}")
    if n_workers > 1:
        from nas_optuna.storage import is_in_memory

        if is_in_memory(config.study.storage):
            raise ConfigError(f"--n-workers {n_workers} needs a storage other processes can "
                              f"open; {config.study.storage} lives inside one process")
    for flag, section in (("sampler", "sampler"), ("pruner", "pruner")):
        name = getattr(args, flag)
        configured = getattr(config, section)
        if name is not None and name != configured.name:
            if configured.options:  # options belong to the configured class, not this one
                print(f"nas-optuna: note: --{flag} {name} replaces [{section}] "
                      f"{configured.name!r}; its options ({', '.join(sorted(configured.options))})"
                      f" are not used", file=sys.stderr)
            config = config.replace(**{section: NamedConfig(name, {})})
    if args.device is not None:
        config = config.replace(train=dataclasses.replace(
            config.train, device=check_device(args.device, "--device")))
    else:
        check_device(config.train.device)
    return config


def _print_best(study: optuna.Study) -> None:
    completed = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    if not completed:
        print("no trial completed yet")
        return
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    title = "Pareto-optimal trials" if len(best) > 1 else "best architecture"
    names = study.metric_names or ["value"] * len(study.directions)
    print(f"{title}:")
    for trial in best:
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, trial.values))
        attrs = trial.user_attrs
        print(
            f"  trial {trial.number}: {values}; params {attrs.get('params_total', 0):,} "
            f"(generated {attrs.get('params_generated', 0):,}); output stride "
            f"{attrs.get('output_stride')}"
        )
        print(f"  {attrs.get('genotype')}")
