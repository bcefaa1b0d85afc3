"""The study runner: config -> sampler, pruner, storage, search data -> ``study.optimize``.

Everything that can be wrong with a config (names, options, the dataset itself) is
checked *before* the study is created or loaded, so bad input never leaves a half-made
study behind. Studies are plain Optuna studies: ``optuna studies``, ``optuna trials`` and
``optuna best-trial`` work on them, and the study's user attrs record the space, the
dataset and how the stem was initialised.

``[study] n_trials`` is the study's total: re-running a search resumes it and runs only
the trials still missing (finished trials of any state count).

Example:
    >>> from nas_optuna import load_config, run_search
    >>> study = run_search(load_config("studies/quickstart.toml"))
    >>> study.best_trial.user_attrs["genotype"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

from nas_optuna.config import StudyConfig
from nas_optuna.data import build_dataset
from nas_optuna.exceptions import ConfigError
from nas_optuna.objective import SearchObjective
from nas_optuna.pruners import STAGE1_RULES, RunningMeanPruner, Stage1Rule
from nas_optuna.registry import Registry
from nas_optuna.samplers import PPOSampler
from nas_optuna.training import (
    initialise_stem,
    load_teacher,
    prepare_search_data,
    resolve_device,
)
from search_spaces import SearchSpace, get_space

__all__ = ["PRUNERS", "SAMPLERS", "build_pruner", "build_sampler", "build_stage1_rule",
           "create_study", "run_search", "default_cache_dir"]

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
PRUNERS.add("none", optuna.pruners.NopPruner)


def build_sampler(
    name: str, options: dict[str, Any], seed: int | None
) -> optuna.samplers.BaseSampler:
    """Builds the sampler ``name`` with its config options.

    Raises:
        UnknownNameError: Unknown sampler.
        ConfigError: An option is not accepted.
    """
    sampler_class = SAMPLERS.get(name)
    _check_options(sampler_class, options, f"sampler {name!r}", exclude={"seed"})
    try:
        return sampler_class(seed=seed, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"sampler {name!r}: {error}") from None


def build_pruner(name: str, options: dict[str, Any],
                 seed: int | None = None) -> optuna.pruners.BasePruner:
    """Builds the pruner ``name`` with its config options (and ``seed`` if it takes one)."""
    factory = PRUNERS.get(name)
    _check_options(factory, options, f"pruner {name!r}", exclude={"seed"})
    if "seed" in inspect.signature(factory).parameters:
        options = {**options, "seed": seed}
    try:
        return factory(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"pruner {name!r}: {error}") from None


def build_stage1_rule(name: str, options: dict[str, Any], seed: int | None) -> Stage1Rule:
    """The multi-objective form of pruner ``name`` (median, running_mean or none)."""
    PRUNERS.get(name)  # unknown names fail like everywhere else
    if name not in STAGE1_RULES:
        raise ConfigError(f"pruner {name!r} cannot act in a multi-objective study; use one "
                          f"of {', '.join(STAGE1_RULES)}")
    try:
        return Stage1Rule(name, seed=seed, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"pruner {name!r} in a multi-objective study: {error}") from None


def _check_options(target: Any, options: dict[str, Any], what: str,
                   exclude: set[str] | None = None) -> None:
    accepted = [p for p in inspect.signature(target).parameters
                if p not in ("self", "args", "kwargs") and p not in (exclude or set())]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"{what} has no option {unknown[0]!r}; accepted: {', '.join(accepted)}")


def default_cache_dir(storage: str) -> Path:
    """The stem-feature cache lives next to a SQLite file, else in the user's cache."""
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        return Path(storage[len("sqlite:///"):]).expanduser().resolve().parent / ".nas_optuna_cache"
    return Path.home() / ".cache" / "nas-optuna"


def create_study(config: StudyConfig, *, sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Creates the config's study, or loads it when it exists with the same directions.

    Raises:
        ConfigError: The existing study has other directions or metrics than the config.
    """
    section = config.study
    directions = [optuna.study.StudyDirection[d.upper()] for d in section.directions]
    try:
        existing = optuna.load_study(study_name=section.name, storage=section.storage,
                                     sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        if list(existing.directions) != directions:
            have = [d.name.lower() for d in existing.directions]
            raise ConfigError(f"study {section.name!r} exists with directions {have}, "
                              f"but the config asks for {list(section.directions)}")
        stored = existing.metric_names
        if stored is not None and list(stored) != list(section.metrics):
            raise ConfigError(f"study {section.name!r} exists with metrics {stored}, "
                              f"but the config asks for {list(section.metrics)}")
        return existing
    study = optuna.create_study(study_name=section.name, storage=section.storage,
                                sampler=sampler, pruner=pruner, directions=list(section.directions))
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(section.metrics))
    return study


def run_search(config: StudyConfig, *, callbacks: Sequence[Callable] = (),
               on_ready: Callable[[optuna.Study, SearchSpace], None] | None = None) -> optuna.Study:
    """Runs (or resumes) the search a config describes.

    Args:
        config: A validated study config.
        callbacks: Extra ``study.optimize`` callbacks (e.g. progress printing).
        on_ready: Called with the study and space once the study exists, before trials.

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
        pruner = build_pruner(config.pruner.name, dict(config.pruner.options), section.seed)
    space = get_space(config.space.name, **config.space.options)
    source = build_dataset(config.data.name, **config.data.options)
    bad = [c for c in config.train.omit_classes if not 0 <= c < source.num_classes]
    if bad:
        raise ConfigError(f"[train] omit_classes: class {bad[0]} does not exist "
                          f"(the dataset has {source.num_classes} classes)")
    device = resolve_device(config.train.device)
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

    study = create_study(config, sampler=sampler, pruner=pruner)
    _record_study_attrs(study, config, space, source.describe(), data.stem_weights)
    if on_ready is not None:
        on_ready(study, space)
    finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    remaining = None if section.n_trials is None else max(section.n_trials - finished, 0)
    if remaining == 0:
        return study
    objective = SearchObjective(space, data, config, device, stage1_rule=stage1_rule)
    study.optimize(objective, n_trials=remaining, timeout=section.timeout,
                   catch=(Exception,), callbacks=list(callbacks), gc_after_trial=False)
    return study


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


def _record_study_attrs(study: optuna.Study, config: StudyConfig, space: SearchSpace,
                        dataset: dict[str, Any], stem_weights: str) -> None:
    attrs = {
        "space": space.options(),
        "dataset": dataset,
        "num_classes": dataset.get("num_classes"),
        "stem_weights": stem_weights,
        "sampler": config.sampler.name,
        "pruner": config.pruner.name,
        "train": dataclasses.asdict(config.train),
        "config_source": config.source,
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
