"""The study runner: config -> sampler, pruner, storage, search data -> ``study.optimize``.

Everything that can be wrong with a config (names, options, the dataset itself) is
checked *before* the study is created or loaded, so bad input never leaves a half-made
study behind. Studies are plain Optuna studies: ``optuna studies``, ``optuna trials`` and
``optuna best-trial`` work on them, and the study's user attrs record the space, the
dataset and how the stem was initialised.

``[study] n_trials`` is the study's total, shared by every worker process on the storage
(:mod:`nas_optuna.workers`): re-running a search resumes it and runs only the trials still
missing. COMPLETE, PRUNED and FAIL trials count, except FAIL trials that were re-queued
(after a crash, a stale heartbeat, or Ctrl-C), whose retry counts instead.

Example:
    >>> from nas_optuna import load_config, run_search
    >>> study = run_search(load_config("studies/quickstart.toml"))
    >>> study.best_trial.user_attrs["genotype"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

from nas_optuna._optuna import set_metric_names
from nas_optuna.artifacts import record_artifact_dir
from nas_optuna.config import StudyConfig, changed_config_keys, config_to_dict
from nas_optuna.data import build_dataset
from nas_optuna.exceptions import ConfigError, NasOptunaError
from nas_optuna.objective import SearchObjective
from nas_optuna.pruners import STAGE1_RULES, RunningMeanPruner, Stage1Rule
from nas_optuna.registry import Registry, check_options
from nas_optuna.samplers import PPOSampler
from nas_optuna.storage import (
    RetryCallback,
    mask_url,
    open_storage,
    sqlite_path,
    storage_error_reason,
    study_lock,
)
from nas_optuna.training import (
    SearchData,
    initialise_stem,
    load_teacher,
    prepare_search_data,
    resolve_device,
)
from nas_optuna.workers import claim_worker_index, optimize, trial_budget
from search_spaces import SearchSpace, get_space

__all__ = ["MULTI_RUNG_PRUNERS", "PRUNERS", "SAMPLERS", "build_pruner", "build_sampler",
           "build_stage1_rule",
           "create_study", "prepare_data", "run_search", "default_cache_dir"]

#: Sampler classes, each constructed as ``cls(seed=..., **options)``.
SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry("sampler")
SAMPLERS.add("tpe", optuna.samplers.TPESampler)
SAMPLERS.add("random", optuna.samplers.RandomSampler)
SAMPLERS.add("nsga2", optuna.samplers.NSGAIISampler)
SAMPLERS.add("gp", optuna.samplers.GPSampler)
SAMPLERS.add("ppo", PPOSampler)

#: Pruner factories ``(**options) -> BasePruner``.
PRUNERS: Registry[Callable[..., optuna.pruners.BasePruner]] = Registry("pruner")
PRUNERS.add("median", optuna.pruners.MedianPruner)
PRUNERS.add("running_mean", RunningMeanPruner)
PRUNERS.add("successive_halving", optuna.pruners.SuccessiveHalvingPruner)
PRUNERS.add("hyperband", optuna.pruners.HyperbandPruner)
PRUNERS.add("wilcoxon", optuna.pruners.WilcoxonPruner)


def _patient_median(*, patience: int = 1, min_delta: float = 0.0, n_startup_trials: int = 5,
                    n_warmup_steps: int = 0) -> optuna.pruners.BasePruner:
    """``patient``: MedianPruner behind PatientPruner (prunes only after ``patience`` steps
    without improvement of at least ``min_delta``)."""
    return optuna.pruners.PatientPruner(
        optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                    n_warmup_steps=n_warmup_steps),
        patience=patience, min_delta=min_delta)


PRUNERS.add("patient", _patient_median)
PRUNERS.add("none", optuna.pruners.NopPruner)
#: Pruners that rank trials at several steps: they need ``[train] stage1_validations > 1``.
MULTI_RUNG_PRUNERS = ("successive_halving", "hyperband", "wilcoxon", "patient")


#: Seconds between checks of a worker waiting for other workers' last trials: short, so
#: that it exits soon after they finish (noticing a dead one takes ``grace_period`` anyway).
_WAIT_POLL_S = 2.0


def build_sampler(
    name: str, options: dict[str, Any], seed: int | None
) -> optuna.samplers.BaseSampler:
    """Builds the sampler ``name`` with its config options.

    Raises:
        UnknownNameError: Unknown sampler.
        ConfigError: An option is not accepted.
    """
    sampler_class = SAMPLERS.get(name)
    check_options(sampler_class, options, f"sampler {name!r}", exclude={"seed"})
    try:
        return sampler_class(seed=seed, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"sampler {name!r}: {error}") from None


def build_pruner(name: str, options: dict[str, Any],
                 seed: int | None = None, *, stage1_step: int = 1) -> optuna.pruners.BasePruner:
    """Builds the pruner ``name`` with its config options (and ``seed`` if it takes one).

    ``stage1_step`` is the step of stage 1's end (``[train] stage1_validations``), where
    ``running_mean`` decides unless its ``step`` option says otherwise.
    """
    factory = PRUNERS.get(name)
    check_options(factory, options, f"pruner {name!r}", exclude={"seed"})
    if "seed" in inspect.signature(factory).parameters:
        options = {**options, "seed": seed}
    if name == "running_mean":
        options = {"step": stage1_step, **options}
    try:
        return factory(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"pruner {name!r}: {error}") from None


def build_stage1_rule(name: str, options: dict[str, Any], seed: int | None) -> Stage1Rule:
    """The multi-objective form of pruner ``name`` (median, running_mean, successive_halving
    or none): the objective takes its decision, since Optuna forbids pruning there."""
    PRUNERS.get(name)  # unknown names fail like everywhere else
    if name not in STAGE1_RULES:
        raise ConfigError(f"pruner {name!r} cannot act in a multi-objective study; use one "
                          f"of {', '.join(STAGE1_RULES)}")
    try:
        return Stage1Rule(name, seed=seed, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"pruner {name!r} in a multi-objective study: {error}") from None


def default_cache_dir(storage: str) -> Path:
    """The stem-feature cache lives next to a SQLite or journal file, else in the user's cache."""
    path = sqlite_path(storage)  # file: URIs (e.g. read-only databases) included
    if path is None and storage.startswith("journal:///"):
        path = Path(storage[len("journal:///"):].split("?", 1)[0]).expanduser()
    if path is not None:
        return path.resolve().parent / ".nas_optuna_cache"
    return Path.home() / ".cache" / "nas-optuna"


def create_study(config: StudyConfig, *, sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Creates the config's study, or loads it when it exists with the same directions.

    The storage comes from :func:`nas_optuna.storage.open_storage` with the config's
    heartbeat settings, so trials of a crashed worker are failed and retried.

    Raises:
        ConfigError: The storage cannot be opened, or the existing study has other
            directions or metrics than the config.
    """
    section = config.study
    directions = [optuna.study.StudyDirection[d.upper()] for d in section.directions]
    storage = open_storage(section.storage, heartbeat_interval=section.heartbeat_interval,
                           grace_period=section.grace_period, max_retry=section.max_retry)
    try:
        existing = optuna.load_study(study_name=section.name, storage=storage,
                                     sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is None:
        try:
            study = optuna.create_study(study_name=section.name, storage=storage,
                                        sampler=sampler, pruner=pruner,
                                        directions=list(section.directions))
        except optuna.exceptions.DuplicatedStudyError:  # another worker was quicker
            existing = optuna.load_study(study_name=section.name, storage=storage,
                                         sampler=sampler, pruner=pruner)
        else:
            set_metric_names(study, section.metrics)
            return study
    if list(existing.directions) != directions:
        have = [d.name.lower() for d in existing.directions]
        raise ConfigError(f"study {section.name!r} exists with directions {have}, "
                          f"but the config asks for {list(section.directions)}")
    stored = existing.metric_names
    if stored is not None and list(stored) != list(section.metrics):
        raise ConfigError(f"study {section.name!r} exists with metrics {stored}, "
                          f"but the config asks for {list(section.metrics)}")
    if stored is None:  # made by `optuna create-study`: name its objectives for the dashboard
        set_metric_names(existing, section.metrics)
    return existing


def run_search(config: StudyConfig, *, callbacks: Sequence[Callable] = (),
               on_ready: Callable[[optuna.Study, SearchSpace], None] | None = None,
               allow_config_change: bool = False) -> optuna.Study:
    """Runs (or resumes) the search a config describes.

    Args:
        config: A validated study config.
        callbacks: Extra ``study.optimize`` callbacks (e.g. progress printing).
        on_ready: Called with the study and space once the study exists, before trials.
        allow_config_change: Resume a study that holds trials even when the config
            changes values that affect rewards (:func:`~nas_optuna.config.changed_config_keys`);
            the changed keys are appended to the study's ``config_changes`` user attr.
            Off: such a resume raises ConfigError before anything is written.

    Returns:
        The Optuna study.

    Raises:
        NasOptunaError: Bad config or dataset; raised before the storage is touched.
    """
    section = config.study
    sampler = build_sampler(config.sampler.name, dict(config.sampler.options), section.seed)
    stage1_rule = None
    if len(section.directions) > 1:
        # Optuna forbids pruning here; the objective takes the same stage-1 decision.
        stage1_rule = build_stage1_rule(config.pruner.name, dict(config.pruner.options),
                                        section.seed)
        pruner = optuna.pruners.NopPruner()
    else:
        pruner = build_pruner(config.pruner.name, dict(config.pruner.options), section.seed,
                              stage1_step=config.train.stage1_validations)
    if config.pruner.name in MULTI_RUNG_PRUNERS and config.train.stage1_validations < 2:
        raise ConfigError(f"pruner {config.pruner.name!r} ranks trials at several steps: set "
                          f"[train] stage1_validations >= 2 (it is "
                          f"{config.train.stage1_validations})")
    space = get_space(config.space.name, **config.space.options)
    device = resolve_device(config.train.device)
    source, data = prepare_data(config, space, device)

    lock = functools.partial(study_lock, section.storage, section.name)
    try:
        study = create_study(config, sampler=sampler, pruner=pruner)
        _check_resumed_config(study, config, allow_config_change)
        _record_study_attrs(study, config, space, source.describe(), data.stem_weights)
        index = claim_worker_index(study, lock)
    except NasOptunaError:
        raise
    except Exception as error:  # noqa: BLE001 - e.g. a read-only storage: one line, not a trace
        raise ConfigError(f"cannot write to storage {mask_url(section.storage)}: "
                          f"{storage_error_reason(error)}") from None
    if index and section.seed is not None:
        # Every worker start draws its own random stream: parallel workers, and runs
        # resuming the study, do not sample each other's architectures again.
        study.sampler = build_sampler(config.sampler.name, dict(config.sampler.options),
                                      section.seed + index)
    if on_ready is not None:
        on_ready(study, space)
    budget = trial_budget(study.get_trials(deepcopy=False))
    if section.n_trials is not None and budget.counted >= section.n_trials:
        return study
    artifact_dir = record_artifact_dir(study, config)  # None when [artifacts] is off
    objective = SearchObjective(space, data, config, device, stage1_rule=stage1_rule,
                                artifact_dir=artifact_dir)
    optimize(study, objective, n_trials=section.n_trials, timeout=section.timeout,
             callbacks=callbacks, lock=lock, retry=RetryCallback(section.max_retry),
             poll_interval=_WAIT_POLL_S)
    return study



def prepare_data(config: StudyConfig, space: SearchSpace,
                 device: torch.device) -> tuple[Any, SearchData]:
    """The config's dataset and its search data (split, initialised stem, cached features).

    Shared by the search and by ``nas-optuna retrain``, so both see the same split and
    reuse the same stem-feature cache (its key includes the teacher's identity, so the
    teacher is loaded here too, and freed once its logits are cached).

    Raises:
        NasOptunaError: Bad dataset or ``[train] omit_classes``.
    """
    section = config.study
    source = build_dataset(config.data.name, **config.data.options)
    bad = [c for c in config.train.omit_classes if not 0 <= c < source.num_classes]
    if bad:
        raise ConfigError(f"[train] omit_classes: class {bad[0]} does not exist "
                          f"(the dataset has {source.num_classes} classes)")
    train = config.train
    cache_dir = train.cache_dir or default_cache_dir(section.storage)

    def initialise(stem: Any, dataset: Any) -> str:
        return initialise_stem(stem, dataset, mode=train.stem_weights,
                               num_classes=source.num_classes, warmup_epochs=train.warmup_epochs,
                               batch_size=train.batch_size, device=device, seed=section.seed or 0)

    teacher, teacher_id = _teacher(config, source.num_classes, device)
    data = prepare_search_data(
        source, build_stem=space.build_stem, stem_id=space.stem_id, initialise_stem=initialise,
        stem_weights=train.stem_weights, warmup_epochs=train.warmup_epochs,
        val_fraction=config.data.val_fraction, split_seed=config.data.split_seed,
        crop_size=config.data.crop_size, scale=config.data.scale, flip_views=train.flip_views,
        batch_size=train.batch_size, cache_dir=cache_dir, device=device, seed=section.seed or 0,
        teacher=teacher, teacher_id=teacher_id,
    ).to(device)
    del teacher  # its logits are cached; the search does not need it any more
    return source, data

def _teacher(config: StudyConfig, num_classes: int,
             device: torch.device) -> tuple[torch.nn.Module | None, str | None]:
    """The ``[teacher]`` network on ``device``, and its identifier, or (None, None)."""
    if config.teacher is None:
        return None, None
    section = config.teacher
    space = get_space(section.space, profile=section.profile, **section.options)
    if section.genotype is not None:
        arch = space.from_genotype(section.genotype)
    else:
        arch = space.from_params(section.params)
    teacher, teacher_id = load_teacher(space, arch, num_classes, section.checkpoint)
    return teacher.to(device), teacher_id


def _check_resumed_config(study: optuna.Study, config: StudyConfig,
                          allow_config_change: bool) -> None:
    """Refuses to resume a study that holds trials with a config that changes rewards."""
    stored = study.user_attrs.get("config")
    if not isinstance(stored, dict) or not study.get_trials(deepcopy=False):
        return
    changed = changed_config_keys(stored, config)
    if not changed:
        return
    if not allow_config_change:
        raise ConfigError(
            f"study {config.study.name!r} holds trials run with another config: "
            f"{', '.join(changed)} differ, so their rewards would not compare; use a new "
            f"--study-name, or --allow-config-change to resume anyway")
    history = list(study.user_attrs.get("config_changes", []))
    history.append({"keys": changed, "trials_before": len(study.get_trials(deepcopy=False))})
    study.set_user_attr("config_changes", history)


def _record_study_attrs(study: optuna.Study, config: StudyConfig, space: SearchSpace,
                        dataset: dict[str, Any], stem_weights: str) -> None:
    import json

    # The whole parsed config, so that the study alone rebuilds its space, data and training
    # (``nas-optuna retrain``); the storage's password, if any, is not stored.
    raw = config_to_dict(config)
    raw["study"]["storage"] = mask_url(raw["study"]["storage"])
    attrs = {
        "space": space.options(),
        "dataset": dataset,
        "num_classes": dataset.get("num_classes"),
        "stem_weights": stem_weights,
        "sampler": config.sampler.name,
        "pruner": config.pruner.name,
        "train": dataclasses.asdict(config.train),
        "config_source": config.source,
        "config": raw,
    }
    for key, value in attrs.items():
        value = json.loads(json.dumps(value, default=str))  # as stored: tuples become lists
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
