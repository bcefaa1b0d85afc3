"""Study configs: TOML files read into typed, validated dataclasses.

A config is data, never code: it is parsed with :mod:`tomllib` and every table is checked
for unknown keys and wrong types, so a typo fails at once with a one-line
:class:`~nas_optuna.exceptions.ConfigError` instead of silently using a default.

Shape (see ``studies/quickstart.toml``)::

    [study]   name, storage, directions, metrics, n_trials, timeout, seed, heartbeat_interval,
              grace_period, max_retry
    [space]   name, profile, and the space's own options
    [data]    name, val_fraction, split_seed, crop_size, and the dataset's own options
    [train]   epochs, batch size, learning rates, Polyak decays, device, stem weights
    [sampler] name and the sampler's options
    [pruner]  name and the pruner's options
    [cost]    input_size and latency protocol
    [teacher] optional knowledge-distillation teacher: space, params or genotype, checkpoint
    [artifacts] what each finished trial stores in the artifact store (diagram, mask
              preview, weights) and where
    [proxies] zero-cost proxies stored on every trial; [prescreen] rejection by one

Example:
    >>> from nas_optuna.config import load_config
    >>> config = load_config("studies/quickstart.toml")
    >>> config.space.name
    'template'
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

from nas_optuna.exceptions import ConfigError

__all__ = [
    "ArtifactsConfig",
    "CostConfig",
    "DataConfig",
    "NamedConfig",
    "PrescreenConfig",
    "ProxiesConfig",
    "StudyConfig",
    "StudySection",
    "TeacherConfig",
    "TrainConfig",
    "COST_METRICS",
    "OBJECTIVE_METRICS",
    "changed_config_keys",
    "check_device",
    "config_to_dict",
    "load_config",
    "parse_config",
]

#: Trial quantities a study may optimise, with the direction that makes sense for each.
OBJECTIVE_METRICS = {
    "reward": "maximize",
    "miou": "maximize",
    "params_total": "minimize",
    "params_generated": "minimize",
    "macs": "minimize",
    "latency_ms": "minimize",
    "peak_memory_mb": "minimize",
    "penalised_reward": "maximize",
}

#: Smallest side of ``[cost] input_size``: every space's deepest feature has stride 32.
MIN_INPUT_SIDE = 32

#: Measured costs that budgets and penalties may name (all measured before training).
COST_METRICS = ("params_total", "params_generated", "macs", "latency_ms", "peak_memory_mb")


@dataclasses.dataclass(frozen=True)
class StudySection:
    """``[study]``: where the study lives and how long it runs.

    Attributes:
        storage: Storage URL (``sqlite:///``, ``postgresql://``, ``mysql+pymysql://``,
            ``journal:///``, ``redis://``, ``grpc://``; see docs/distributed.md).
        n_trials: The study's total of counted trials (COMPLETE, PRUNED, and FAIL ones
            that were not retried), shared by all workers.
        heartbeat_interval: Seconds between heartbeats of a running trial; 0 turns
            heartbeats, and with them crash recovery, off.
        grace_period: Seconds without a heartbeat after which a running trial is failed
            and retried (default: twice ``heartbeat_interval``).
        max_retry: How often a trial failed by a crash (stale heartbeat) or Ctrl-C is
            re-queued with the same parameters.
    """

    name: str = "nas-optuna"
    storage: str = "sqlite:///nas-optuna.db"
    directions: tuple[str, ...] = ("maximize",)
    metrics: tuple[str, ...] = ("reward",)
    n_trials: int | None = 20
    timeout: float | None = None
    seed: int | None = 0
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3


@dataclasses.dataclass(frozen=True)
class NamedConfig:
    """A table holding ``name`` plus options forwarded to the named factory."""

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``[data]``: the search dataset and its meta-train / meta-val split."""

    name: str = "synthetic"
    val_fraction: float = 0.1
    split_seed: int = 0
    crop_size: tuple[int, int] | None = None
    scale: tuple[float, float] = (0.75, 1.25)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """``[train]``: search-time training (defaults: WACV 2020, Sect. 4.1 and the spec).

    Attributes:
        stage1_epochs: Epochs training only the generated part on cached stem features.
        stage2_epochs: Epochs training the whole network end to end.
        stage1_validations: Validations of the Polyak-averaged decoder during stage 1,
            evenly spaced over its epochs, the last at its end (1: only at its end, the
            papers' procedure). Each is an intermediate value where pruners act: steps
            ``1 .. stage1_validations``, then stage 2 at ``stage1_validations + 1``; the
            multi-rung pruners (``successive_halving``, ``hyperband``, ``wilcoxon``,
            ``patient``) need more than one.
        batch_size: Mini-batch size (paper: 32).
        decoder_lr: Adam learning rate of the generated part (WACV 7e-3; CVPR 3e-3).
        stem_lr: Learning rate of the stem in stage 2 (1e-3).
        stem_optimizer: ``adam`` or ``sgd`` for the stem in stage 2.
        polyak_decay: Polyak (EMA) decay per stage, applied before validation (0.9, 0.99).
        weight_decay: L2 weight decay of all optimisers.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        stem_weights: ``auto`` (ImageNet if it can be had, else warm-up), ``imagenet``,
            ``warmup`` or ``random``.
        warmup_epochs: Epochs of the supervised stem warm-up when no ImageNet weights exist.
        flip_views: Also cache horizontally flipped stem features for stage 1.
        cache_dir: Folder of the stem-feature cache (default: next to a SQLite storage,
            else ``~/.cache/nas-optuna``).
        max_grad_norm: Gradient-norm clipping of the trained network: a norm > 0, or
            ``"off"`` in TOML (``None`` here) for no clipping.
        auxiliary_weight: Loss weight of each auxiliary head (CVPR 2019: 0.15).
        distill_weight: Weight of the distillation loss when a ``[teacher]`` is set
            (CVPR 2019: 0.3 x MSE between raw logits).
        omit_classes: Classes left out of the reward's metrics (CVPR 2019 omits the
            background, class 0; WACV 2020 keeps all).
    """

    stage1_epochs: int = 5
    stage2_epochs: int = 5
    stage1_validations: int = 1
    batch_size: int = 32
    decoder_lr: float = 7e-3
    stem_lr: float = 1e-3
    stem_optimizer: str = "adam"
    polyak_decay: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    device: str = "auto"
    stem_weights: str = "auto"
    warmup_epochs: int = 5
    flip_views: bool = True
    cache_dir: str | None = None
    max_grad_norm: float | None = 10.0
    auxiliary_weight: float = 0.15
    distill_weight: float = 0.3
    omit_classes: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """``[teacher]``: a trained network whose logits the searched networks mimic (KD).

    The teacher is any architecture of any registered space (e.g. ``smp``), given by its
    trial ``params`` or the authors' ``genotype``, with weights from ``checkpoint`` (a
    ``state_dict``, loaded with ``weights_only=True``).
    """

    space: str
    checkpoint: str
    profile: str = "final"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    genotype: list | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CostConfig:
    """``[cost]``: how costs are measured, and how they enter the search.

    Attributes:
        input_size: ``(H, W)`` at which MACs, memory and latency are measured (default:
            the search images' size).
        measure_latency: Measure latency on every trial.
        latency_warmup: Untimed forwards before timing.
        latency_repeats: Timed forwards (median and IQR are stored).
        budget: ``{metric: limit}`` over :data:`COST_METRICS`, e.g.
            ``{ params_generated = 300000 }``: every trial gets one Optuna constraint per
            entry (``cost - limit``, feasible when <= 0) that TPE, NSGA-II and GP honour,
            and an architecture over budget is rejected before any training.
        penalty: ``{ metric, weight, reference }``: the objective ``penalised_reward`` is
            ``reward - weight * cost / reference`` (CAS's scalarised cost).
    """

    input_size: tuple[int, int] | None = None
    measure_latency: bool = True
    latency_warmup: int = 3
    latency_repeats: int = 10
    budget: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    penalty: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ArtifactsConfig:
    """``[artifacts]``: files each finished trial stores through ``optuna.artifacts``.

    They are shown by ``nas-optuna dashboard`` (optuna-dashboard) beside the trial, and
    listed by ``optuna.artifacts.get_all_artifact_meta(trial)``.

    Attributes:
        enabled: Store artifacts and the trial note at all.
        dir: Folder of the filesystem artifact store (default: next to a SQLite or
            journal file, ``x.db`` -> ``x.db-artifacts``; for other storages
            ``~/.cache/nas-optuna/artifacts/<storage name>``). Recorded as the study's user
            attr ``artifact_dir``.
        diagram: An SVG diagram of the architecture (COMPLETE and PRUNED trials).
        masks: Meta-val images in the predicted-vs-true mask preview (PNG) of COMPLETE
            trials; 0 turns the preview off.
        weights: The evaluated (Polyak-averaged) ``state_dict`` (``torch.save``) of
            COMPLETE trials; off by default (megabytes per trial).
    """

    enabled: bool = True
    dir: str | None = None
    diagram: bool = True
    masks: int = 4
    weights: bool = False


@dataclasses.dataclass(frozen=True)
class ProxiesConfig:
    """``[proxies]``: zero-cost proxies computed on every trial before training.

    Attributes:
        names: Proxies of :mod:`nas_optuna.proxies` stored as ``proxy_<name>`` user attrs
            (all five by default; ``[]`` computes none).
        batch_size: Meta-train images the proxies see.
    """

    names: tuple[str, ...] = ("synflow", "naswot", "grad_norm", "snip", "jacob_cov")
    batch_size: int = 8


@dataclasses.dataclass(frozen=True)
class PrescreenConfig:
    """``[prescreen]``: reject architectures by a zero-cost proxy before training.

    After ``startup`` trials with the proxy stored, an architecture whose proxy falls
    below the ``quantile`` of the earlier trials' values is rejected the way an
    over-budget one is: COMPLETE at once with reward 0 and a ``rejected`` user attr, so
    every sampler learns the region. Off when ``proxy`` is empty.
    """

    proxy: str = ""
    quantile: float = 0.5
    startup: int = 10


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A whole study config."""

    study: StudySection
    space: NamedConfig
    data: DataConfig
    train: TrainConfig
    sampler: NamedConfig
    pruner: NamedConfig
    cost: CostConfig
    source: str | None = None
    teacher: TeacherConfig | None = None
    artifacts: ArtifactsConfig = dataclasses.field(default_factory=ArtifactsConfig)
    proxies: ProxiesConfig = dataclasses.field(default_factory=ProxiesConfig)
    prescreen: PrescreenConfig = dataclasses.field(default_factory=PrescreenConfig)

    def replace(self, **sections: Any) -> StudyConfig:
        """Returns a copy with some sections replaced."""
        return dataclasses.replace(self, **sections)


def config_to_dict(config: StudyConfig) -> dict[str, Any]:
    """The config as the TOML tables :func:`parse_config` reads (JSON-serialisable).

    ``parse_config(config_to_dict(c))`` rebuilds ``c`` (without its ``source``).
    """
    raw: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        section = getattr(config, field.name)
        if field.name == "source" or section is None:
            continue
        table = dataclasses.asdict(section)
        if isinstance(section, (NamedConfig, DataConfig)):  # their options sit in the table
            table.update(table.pop("options"))
        raw[field.name] = table
    return raw


#: Config keys whose change does not change what a trial's reward means: where the study
#: lives and how long it runs, which sampler and pruner choose the trials, where work runs,
#: what is stored beside each trial. Anything else changes rewards (space, data, training
#: budget, costs, pre-screen) and a study that holds trials refuses it on resume.
HARMLESS_CONFIG_KEYS = frozenset({
    "study.name", "study.storage", "study.n_trials", "study.timeout", "study.seed",
    "study.heartbeat_interval", "study.grace_period", "study.max_retry", "train.device",
    "train.cache_dir", "proxies.names", "proxies.batch_size",
})
HARMLESS_CONFIG_SECTIONS = frozenset({"sampler", "pruner", "artifacts"})


def changed_config_keys(stored: Mapping[str, Any], config: StudyConfig) -> list[str]:
    """``section.key`` of every reward-affecting value ``config`` changes against ``stored``.

    Args:
        stored: A config as :func:`config_to_dict` wrote it (a study's ``config`` user
            attr). Keys it lacks (written by an older nas-optuna) count as unchanged.
        config: The config a run resumes the study with.

    Example:
        >>> base = parse_config({"train": {"stage1_epochs": 3}})
        >>> changed_config_keys(config_to_dict(base), parse_config({"train": {
        ...     "stage1_epochs": 6}, "study": {"n_trials": 40}}))
        ['train.stage1_epochs']
    """
    import json

    new = json.loads(json.dumps(config_to_dict(config), default=str))
    old = json.loads(json.dumps(stored, default=str))
    changed = []
    for section in sorted(set(new) | set(old)):
        if section in HARMLESS_CONFIG_SECTIONS:
            continue
        before, after = old.get(section), new.get(section)
        if before is None or after is None:
            if section == "teacher":  # a distillation teacher added or removed
                changed.append(section)
            continue  # a section an older nas-optuna did not write
        for key in sorted(set(before) & set(after)):
            name = f"{section}.{key}"
            if name not in HARMLESS_CONFIG_KEYS and before[key] != after[key]:
                changed.append(name)
    return changed


def load_config(path: str | Path) -> StudyConfig:
    """Reads and validates a TOML study config.

    Raises:
        ConfigError: The file is missing, not valid TOML, or holds invalid values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"malformed TOML in {path}: {error}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Mapping[str, Any], source: str | None = None) -> StudyConfig:
    """Validates a config already parsed into nested dicts."""
    where = f" in {source}" if source else ""
    known = {"study", "space", "data", "train", "sampler", "pruner", "cost", "teacher",
             "artifacts", "proxies", "prescreen"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown table [{unknown[0]}]{where}; known: {', '.join(sorted(known))}")
    for key, value in raw.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{key}] must be a table{where}")

    study = _dataclass_from(StudySection, raw.get("study", {}), "study", where)
    _check_study(study, where)
    space = _named(raw.get("space", {}), "space", where, default="template")
    data_raw = dict(raw.get("data", {}))
    data_fields = {f.name for f in dataclasses.fields(DataConfig)} - {"options"}
    data = _dataclass_from(
        DataConfig, {k: v for k, v in data_raw.items() if k in data_fields}, "data", where
    )
    data = dataclasses.replace(
        data, options={k: v for k, v in data_raw.items() if k not in data_fields}
    )
    if not 0.0 < data.val_fraction < 1.0:
        raise ConfigError(f"[data] val_fraction must be in (0, 1), got {data.val_fraction}{where}")
    train_raw = dict(raw.get("train", {}))
    if train_raw.get("max_grad_norm") == "off":  # TOML has no null: the explicit off value
        train_raw["max_grad_norm"] = None
    train = _dataclass_from(TrainConfig, train_raw, "train", where)
    _check_train(train, where)
    sampler = _named(raw.get("sampler", {}), "sampler", where, default="tpe")
    pruner = _named(raw.get("pruner", {}), "pruner", where, default="median")
    cost = _dataclass_from(CostConfig, raw.get("cost", {}), "cost", where)
    _check_cost(cost, study, where)
    teacher = _teacher(raw["teacher"], where) if "teacher" in raw else None
    artifacts = _dataclass_from(ArtifactsConfig, raw.get("artifacts", {}), "artifacts", where)
    _check_artifacts(artifacts, where)
    proxies = _dataclass_from(ProxiesConfig, raw.get("proxies", {}), "proxies", where)
    proxies = dataclasses.replace(proxies, names=tuple(proxies.names))
    prescreen = _dataclass_from(PrescreenConfig, raw.get("prescreen", {}), "prescreen", where)
    _check_proxies(proxies, prescreen, where)
    return StudyConfig(study, space, data, train, sampler, pruner, cost, source, teacher,
                       artifacts, proxies, prescreen)


def _check_proxies(proxies: ProxiesConfig, prescreen: PrescreenConfig, where: str) -> None:
    from nas_optuna.proxies import PROXIES

    for name in (*proxies.names, *([prescreen.proxy] if prescreen.proxy else [])):
        if name not in PROXIES:
            raise ConfigError(f"unknown proxy {name!r}; known proxies: {', '.join(PROXIES)}"
                              f"{where}")
    if proxies.batch_size < 2:
        raise ConfigError(f"[proxies] batch_size must be >= 2{where}")
    if prescreen.proxy:
        if prescreen.proxy not in proxies.names:
            raise ConfigError(f"[prescreen] proxy {prescreen.proxy!r} must be among [proxies] "
                              f"names{where}")
        if not 0.0 < prescreen.quantile < 1.0:
            raise ConfigError(f"[prescreen] quantile must be in (0, 1), got "
                              f"{prescreen.quantile}{where}")
        if prescreen.startup < 1:
            raise ConfigError(f"[prescreen] startup must be >= 1, got {prescreen.startup}{where}")


def _check_artifacts(artifacts: ArtifactsConfig, where: str) -> None:
    if artifacts.masks < 0 or artifacts.masks > 64:
        raise ConfigError(f"[artifacts] masks must be between 0 and 64 images, "
                          f"got {artifacts.masks}{where}")
    if artifacts.dir is not None and not artifacts.dir.strip():
        raise ConfigError(f"[artifacts] dir must not be empty{where}")


def _check_cost(cost: CostConfig, study: StudySection, where: str) -> None:
    if cost.latency_repeats < 1:
        raise ConfigError(f"[cost] latency_repeats must be >= 1, got {cost.latency_repeats}"
                          f"{where}")
    if cost.latency_warmup < 0:
        raise ConfigError(f"[cost] latency_warmup must be >= 0, got {cost.latency_warmup}"
                          f"{where}")
    if cost.input_size is not None and min(cost.input_size) < MIN_INPUT_SIDE:
        raise ConfigError(f"[cost] input_size must be at least {MIN_INPUT_SIDE} pixels a side "
                          f"(networks downsample by up to 32), got {list(cost.input_size)}"
                          f"{where}")
    if not isinstance(cost.budget, Mapping) or not isinstance(cost.penalty, Mapping):
        raise ConfigError(f"[cost] budget and penalty must be tables{where}")
    for metric, limit in cost.budget.items():
        if metric not in COST_METRICS:
            raise ConfigError(f"[cost] budget names unknown cost {metric!r}; choose from: "
                              f"{', '.join(COST_METRICS)}{where}")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            raise ConfigError(f"[cost] budget {metric} must be a positive number{where}")
    penalised = "penalised_reward" in study.metrics
    if cost.penalty:
        unknown = sorted(set(cost.penalty) - {"metric", "weight", "reference"})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in [cost] penalty; accepted: "
                              f"metric, weight, reference{where}")
        if cost.penalty.get("metric") not in COST_METRICS:
            raise ConfigError(f"[cost] penalty metric must be one of {', '.join(COST_METRICS)}"
                              f"{where}")
        for key in ("weight", "reference"):
            value = cost.penalty.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"[cost] penalty {key} must be a positive number{where}")
        if not penalised:
            raise ConfigError(f"[cost] penalty is set, so [study] metrics must include "
                              f"'penalised_reward'{where}")
    elif penalised:
        raise ConfigError(f"[study] metric 'penalised_reward' needs a [cost] penalty "
                          f"table {{ metric, weight, reference }}{where}")
    needs_latency = "latency_ms" in (*cost.budget, cost.penalty.get("metric"), *study.metrics)
    if needs_latency and not cost.measure_latency:
        raise ConfigError(f"latency_ms is used by the study, so [cost] measure_latency must "
                          f"be true{where}")


def _teacher(table: Mapping[str, Any], where: str) -> TeacherConfig:
    for key in ("space", "checkpoint"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"[teacher] needs {key} = \"...\"{where}")
    teacher = TeacherConfig(
        space=table["space"],
        checkpoint=table["checkpoint"],
        profile=table.get("profile", "final"),
        params=table.get("params", {}),
        genotype=table.get("genotype"),
        options=table.get("options", {}),
    )
    unknown = sorted(set(table) - {f.name for f in dataclasses.fields(TeacherConfig)})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in [teacher]{where}")
    if not isinstance(teacher.params, Mapping) or not isinstance(teacher.options, Mapping):
        raise ConfigError(f"[teacher] params and options must be tables{where}")
    if bool(teacher.params) == (teacher.genotype is not None):
        raise ConfigError(f"[teacher] needs exactly one of params or genotype{where}")
    return teacher


def _check_study(study: StudySection, where: str) -> None:
    if len(study.directions) != len(study.metrics):
        raise ConfigError(
            f"[study] directions ({len(study.directions)}) and metrics "
            f"({len(study.metrics)}) must have the same length{where}"
        )
    for direction in study.directions:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"[study] direction {direction!r} must be 'maximize' or 'minimize'{where}"
            )
    for metric in study.metrics:
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(
                f"[study] unknown metric {metric!r}; choose from: "
                f"{', '.join(OBJECTIVE_METRICS)}{where}"
            )
    if len(set(study.metrics)) != len(study.metrics):
        raise ConfigError(f"[study] metrics must not repeat{where}")
    if study.n_trials is not None and study.n_trials < 1:
        raise ConfigError(f"[study] n_trials must be >= 1, got {study.n_trials}{where}")
    if study.timeout is not None and study.timeout <= 0:
        raise ConfigError(f"[study] timeout must be > 0 seconds, got {study.timeout}{where}")
    if not study.name:
        raise ConfigError(f"[study] name must not be empty{where}")
    if study.heartbeat_interval < 0 or study.max_retry < 0:
        raise ConfigError(f"[study] heartbeat_interval and max_retry must be >= 0{where}")
    if study.grace_period is not None and study.grace_period <= study.heartbeat_interval:
        raise ConfigError(f"[study] grace_period ({study.grace_period} s) must be longer than "
                          f"heartbeat_interval ({study.heartbeat_interval} s){where}")


def _check_train(train: TrainConfig, where: str) -> None:
    for key in ("stage1_epochs", "stage2_epochs", "warmup_epochs"):
        if getattr(train, key) < 0:
            raise ConfigError(f"[train] {key} must be >= 0{where}")
    if train.stage1_epochs + train.stage2_epochs == 0:
        raise ConfigError(f"[train] stage1_epochs + stage2_epochs must be >= 1{where}")
    if not 1 <= train.stage1_validations <= max(train.stage1_epochs, 1):
        raise ConfigError(f"[train] stage1_validations must be between 1 and stage1_epochs "
                          f"({train.stage1_epochs}), got {train.stage1_validations}{where}")
    if train.batch_size < 1:
        raise ConfigError(f"[train] batch_size must be >= 1{where}")
    if train.decoder_lr <= 0 or train.stem_lr <= 0:
        raise ConfigError(f"[train] learning rates must be > 0{where}")
    if len(train.polyak_decay) != 2 or not all(0.0 <= d < 1.0 for d in train.polyak_decay):
        raise ConfigError(f"[train] polyak_decay must be two values in [0, 1){where}")
    if train.max_grad_norm is not None and not train.max_grad_norm > 0:
        raise ConfigError(f"[train] max_grad_norm must be > 0 (or \"off\" for no clipping), "
                          f"got {train.max_grad_norm:g}{where}")
    if train.stem_optimizer not in ("adam", "sgd"):
        raise ConfigError(f"[train] stem_optimizer must be 'adam' or 'sgd'{where}")
    if train.auxiliary_weight < 0 or train.distill_weight < 0:
        raise ConfigError(f"[train] auxiliary_weight and distill_weight must be >= 0{where}")
    if train.stem_weights not in ("auto", "imagenet", "warmup", "random"):
        raise ConfigError(
            f"[train] stem_weights must be one of auto, imagenet, warmup, random{where}"
        )
    device = train.device
    if not (
        device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise ConfigError(
            f"[train] device must be auto, cpu, cuda or cuda:N, got {device!r}{where}"
        )


def check_device(device: str, what: str = "[train] device") -> str:
    """``device`` if it names a device this machine has; else a one-line ConfigError.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        what: Where the value came from, for the message (e.g. ``--device``).

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    if not (device in ("auto", "cpu", "cuda")
            or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"{what} must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{what} is {device!r}, but CUDA is not available here; "
                              f"use cpu or auto")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{what} is {device!r}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _named(table: Mapping[str, Any], section: str, where: str, *, default: str) -> NamedConfig:
    options = dict(table)
    name = options.pop("name", default)
    if not isinstance(name, str):
        raise ConfigError(f"[{section}] name must be a string{where}")
    return NamedConfig(name, options)


def _dataclass_from(cls: type, table: Mapping[str, Any], section: str, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields or key == "options":
            accepted = ", ".join(k for k in fields if k != "options")
            raise ConfigError(f"unknown key {key!r} in [{section}]{where}; accepted: {accepted}")
        values[key] = _coerce(value, fields[key].type, f"[{section}] {key}", where)
    return cls(**values)


def _coerce(value: Any, annotation: Any, name: str, where: str) -> Any:
    """Checks ``value`` against a field's (string) annotation and converts lists to tuples."""
    text = str(annotation)
    optional = "None" in text
    if value is None and optional:
        return None
    if text.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list{where}")
        items = tuple(value)
        element = "float" if "float" in text else "int" if "int" in text else "str"
        items = tuple(_scalar(v, element, name, where) for v in items)
        if "..." not in text and len(items) != text.count(element):
            raise ConfigError(f"{name} must have {text.count(element)} values{where}")
        return items
    if "Mapping" in text:
        return value
    for element in ("bool", "int", "float", "str"):
        if text.startswith(element):
            return _scalar(value, element, name, where)
    return value


def _scalar(value: Any, element: str, name: str, where: str) -> Any:
    if element == "bool":
        ok = isinstance(value, bool)
    elif element == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif element == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(
            f"{name} must be {'a' if element != 'int' else 'an'} {element}, got {value!r}{where}"
        )
    return value
