"""Retraining: the selected architectures of a finished search, trained for longer.

Both papers check their search reward against a longer training of the same
architectures (WACV 2020 Sect. 4.3: Spearman rho 0.734 / 0.904; CVPR 2019 Sect. 4.3: rho
0.92). :func:`retrain_study` does that second evaluation and stores it in a *linked*
Optuna study, so an analysis reads both rewards from the storage alone.

Selection (``--select``): ``top:K`` picks the K COMPLETE trials with the best search
value, ``random:K`` K further COMPLETE trials drawn uniformly with the seed (never one of
the top ones, CVPR 2019's "randomly sample" / WACV 2020's random set); both parts are
optional and comma-separated, e.g. ``top:5,random:5``. The search value is the ``reward``
objective when the study has one (``study.metric_names``), else the first objective, in
that objective's direction; ties go to the lower trial number. Trials rejected by a cost
budget (user attr ``rejected``) are never selected: their reward of 0 was set, not
measured. Asking for more than there are is fine: the selection takes what exists and
:attr:`Retrained.selected` tells how many (e.g. ``top:10`` on a 6-trial study retrains 6).

The schedule (:func:`nas_optuna.training.trainer.train_final`): the papers' longer / full
training shape -- SGD with momentum 0.9 over the whole network from the first step, the
'poly' learning rate ``lr * (1 - it / max_it) ** 0.9`` per iteration, cross-entropy plus
the auxiliary heads' losses, no Polyak averaging and no distillation (CVPR 2019 Sect. 4.2
"for simplicity, we omit Polyak averaging and knowledge distillation"). Values and the
choices the papers leave open:

* ``lr`` 5e-2 for the whole network, weight decay 1e-5 (WACV 2020 Sect. 5; CVPR 2019
  uses a 3-5x lower encoder rate with its full MobileNet-v2 encoder; the stems here are
  small prefixes or empty, so WACV's single rate is used; ``stem_lr`` overrides it).
* Epochs: default :data:`DEFAULT_EPOCHS` = 20, the WACV 2020 rank-correlation setup
  ("we increase it to 20 for the second stage"; CVPR 2019 used 20 + 30). The papers' full
  training (500-1000 epochs on the whole training split) is out of reach on a CPU; the
  question here is the *ranking*, which both papers measured with a few tens of epochs.
* The poly rule decays per iteration (the brief's ``it / max_it``; WACV writes it per
  epoch, the per-iteration form is the common implementation of [Chen et al.]).
* Data, batch size, augmentation (the search's random scale and mirror) and the
  meta-train / meta-val split are the search's own, rebuilt from the study (below), so the
  two rewards are measured on the same meta-val images with the same metric.
* Each network starts from the same initialised stem as in the search and a decoder
  seeded like the search's trial (``seed * 100003 + source trial number``).

Rebuilding from the storage: the source study's user attr ``config`` (the whole parsed
config, recorded by the runner) is read with :func:`~nas_optuna.config.parse_config`;
studies made before it existed fall back to reading the TOML at ``config_source``. The
architecture is ``space.from_params(trial.params)``.

The linked study (default ``<name>-retrain``) is the contract the analyses read:

* study: one objective, ``maximize``, metric name ``reward``; user attrs ``retrain_of``
  (the source study's name), ``epochs``, ``schedule`` (optimiser settings) and
  ``selection`` (a list of ``{"select": spec, "seed": seed}``, one per distinct run), plus
  the source's ``space``, ``num_classes`` and ``dataset`` (so ``describe`` and ``export``
  read a retrained trial from the linked study alone);
* one trial per retrained architecture, added with ``study.add_trial`` once it has
  trained (so a killed run leaves no RUNNING trials behind): the source trial's params and
  distributions, value = the retrained reward, user attrs ``source_study``,
  ``source_trial`` (int), ``selection`` (``top`` / ``random``), ``search_reward`` (the
  source trial's search value), ``search_metric``, ``reward``, ``reward_stage2``
  (= ``reward``: the end-to-end evaluation), ``miou``, ``macc``, ``fwiou``, ``epochs``,
  ``train_seconds``, ``stem_weights``, ``weights`` (with ``weights_dir``: the saved
  ``state_dict``), and the architecture's stored sizes copied from the source trial
  (``params_total``, ``params_generated``, ``macs``, ``peak_memory_mb``, ``latency_ms``,
  ``output_stride``, ``genotype``);
* a trial that fails is added as FAIL with ``fail_reason``; the others go on.

Resuming: architectures (source trial numbers) already COMPLETE in the linked study are
skipped, so re-running a command retrains only what is missing (a FAIL is retried). A
linked study made with other ``epochs`` or another schedule is refused (its rewards would
not compare); another ``--select`` or ``--seed`` adds to it.

Bad input (unknown study, no COMPLETE trials, malformed selection, epochs < 1, a linked
study that retrains another study or uses another schedule, a dataset that cannot be
read) raises :class:`~nas_optuna.exceptions.NasOptunaError` before anything is written.

Example:
    >>> from nas_optuna.retrain import retrain_study
    >>> done = retrain_study("sqlite:///nas-optuna.db", "quickstart", "top:3,random:3",
    ...                      epochs=20)  # doctest: +SKIP
    >>> done.study.study_name  # doctest: +SKIP
    'quickstart-retrain'
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from nas_optuna._files import atomic_path
from nas_optuna._optuna import set_metric_names
from nas_optuna.config import StudyConfig, check_device, load_config, parse_config
from nas_optuna.exceptions import ConfigError, TrialFailed
from nas_optuna.storage import load_study, open_storage
from nas_optuna.study import prepare_data
from nas_optuna.training.features import SearchData
from nas_optuna.training.trainer import (
    FINAL_LR,
    FINAL_MOMENTUM,
    FINAL_POWER,
    FINAL_WEIGHT_DECAY,
    resolve_device,
    train_final,
)
from search_spaces import SearchSpace, get_space

__all__ = [
    "DEFAULT_EPOCHS",
    "Retrained",
    "Selected",
    "Selection",
    "parse_selection",
    "retrain_study",
    "select_trials",
    "study_config",
]

#: Default epochs of the longer training (WACV 2020's rank-correlation setup).
DEFAULT_EPOCHS = 20

#: Source-trial user attrs copied onto the retrained trial (same architecture, same sizes).
_COPIED_ATTRS = ("params_total", "params_generated", "macs", "peak_memory_mb", "latency_ms",
                 "output_stride", "genotype")

#: Source-study user attrs copied onto the linked study.
_COPIED_STUDY_ATTRS = ("space", "num_classes", "dataset")

_PART = re.compile(r"^(top|random):(\d+)$")


@dataclasses.dataclass(frozen=True)
class Selection:
    """A parsed ``--select`` spec: how many top and how many random trials."""

    top: int = 0
    random: int = 0

    @property
    def spec(self) -> str:
        """The canonical spec, e.g. ``top:3,random:2``."""
        return ",".join(f"{name}:{count}" for name, count in
                        (("top", self.top), ("random", self.random)) if count)


def parse_selection(spec: str) -> Selection:
    """Parses ``top:K``, ``random:K`` or ``top:K,random:K`` (K >= 1, each part at most once).

    Raises:
        ConfigError: A malformed spec.
    """
    counts: dict[str, int] = {}
    parts = [p.strip() for p in str(spec).split(",")]
    for part in parts:
        match = _PART.match(part)
        if match is None:
            raise ConfigError(f"--select {spec!r}: expected top:K and/or random:K "
                              f"separated by a comma, e.g. top:5,random:5")
        name, count = match.group(1), int(match.group(2))
        if name in counts:
            raise ConfigError(f"--select {spec!r}: {name} is given twice")
        if count < 1:
            raise ConfigError(f"--select {spec!r}: {name} needs K >= 1")
        counts[name] = count
    return Selection(**counts)


@dataclasses.dataclass(frozen=True)
class Selected:
    """One selected source trial.

    Attributes:
        trial: The source trial (COMPLETE).
        part: ``top`` or ``random``.
        value: Its search value (see :func:`search_metric`).
    """

    trial: optuna.trial.FrozenTrial
    part: str
    value: float


@dataclasses.dataclass
class Retrained:
    """What :func:`retrain_study` did.

    Attributes:
        study: The linked study.
        selected: Every selected source trial, top first (best first), then random.
        skipped: Source trial numbers already COMPLETE in the linked study.
        trials: The trials this call added (COMPLETE or FAIL), in order.
        search_metric: The source objective the selection ranked by.
    """

    study: optuna.Study
    selected: list[Selected]
    skipped: list[int]
    trials: list[optuna.trial.FrozenTrial]
    search_metric: str


def search_metric(study: optuna.Study) -> tuple[str, int]:
    """The objective the selection ranks by: ``reward`` if the study has it, else the first."""
    names = list(study.metric_names or [])
    if "reward" in names:
        return "reward", names.index("reward")
    return (names[0] if names else "value"), 0


def select_trials(study: optuna.Study, selection: Selection, seed: int) -> list[Selected]:
    """The COMPLETE, measured trials ``selection`` picks (top best first, then random).

    Raises:
        ConfigError: The study has no COMPLETE trial that was trained.
    """
    _, index = search_metric(study)
    maximise = study.directions[index] == optuna.study.StudyDirection.MAXIMIZE
    candidates = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None and math.isfinite(t.values[index])
        and "rejected" not in t.user_attrs
    ]
    if not candidates:
        raise ConfigError(f"study {study.study_name!r} has no COMPLETE trained trial to retrain")
    ranked = sorted(candidates,
                    key=lambda t: (-t.values[index] if maximise else t.values[index], t.number))
    top = ranked[: selection.top]
    rest = sorted((t for t in ranked[selection.top:]), key=lambda t: t.number)
    drawn = random.Random(seed).sample(rest, min(selection.random, len(rest)))
    return ([Selected(t, "top", float(t.values[index])) for t in top]
            + [Selected(t, "random", float(t.values[index])) for t in drawn])


def study_config(study: optuna.Study, storage: str, device: str | None = None) -> StudyConfig:
    """The source study's config, rebuilt from its user attrs (``config``, else the TOML).

    ``storage`` replaces the recorded storage (the study may have moved); ``device``, when
    given, replaces ``[train] device``.

    Raises:
        ConfigError: Neither a stored config nor a readable ``config_source``.
    """
    attrs = study.user_attrs
    if isinstance(attrs.get("config"), Mapping):
        raw = {key: dict(value) for key, value in attrs["config"].items()}
        config = parse_config(raw, source=f"study {study.study_name!r}")
    elif attrs.get("config_source"):
        path = Path(attrs["config_source"])
        if not path.exists():
            raise ConfigError(f"study {study.study_name!r} stores no config and its config "
                              f"file {str(path)!r} is not found")
        config = load_config(path)
    else:
        raise ConfigError(f"study {study.study_name!r} is not a nas-optuna search "
                          f"(no stored config)")
    config = config.replace(study=dataclasses.replace(config.study, storage=storage))
    if device is not None:
        config = config.replace(train=dataclasses.replace(
            config.train, device=check_device(device, "--device")))
    else:
        check_device(config.train.device, "the search's [train] device (pass --device cpu)")
    return config


def retrain_study(
    storage: str,
    study_name: str,
    select: str | Selection,
    *,
    epochs: int = DEFAULT_EPOCHS,
    retrain_study_name: str | None = None,
    seed: int | None = None,
    device: str | None = None,
    lr: float = FINAL_LR,
    stem_lr: float | None = None,
    weights_dir: str | Path | None = None,
    on_start: Callable[[list[Selected], list[int]], None] | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> Retrained:
    """Retrains the selected architectures of ``study_name`` into the linked study.

    Args:
        storage: Optuna storage URL of both studies.
        study_name: The finished search.
        select: ``top:K,random:K`` (see :func:`parse_selection`).
        epochs: Epochs of the longer training (>= 1).
        retrain_study_name: The linked study (default ``<study_name>-retrain``).
        seed: Seed of the random selection and of training (default: the search's seed).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (default: the search's).
        lr: Initial learning rate (5e-2).
        stem_lr: Initial learning rate of the stem (default ``lr``).
        weights_dir: When given, each retrained network's ``state_dict`` is saved there as
            ``<linked study>-source<N>.pt`` (trial user attr ``weights``), e.g. for
            ``nas-optuna export --weights``.
        on_start: Called with the selection and the skipped source trial numbers, before
            training.
        on_trial: Called with each trial once it is stored.

    Returns:
        What was selected, skipped and added.

    Raises:
        NasOptunaError: Bad input; raised before anything is stored.
    """
    selection = parse_selection(select) if isinstance(select, str) else select
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    if lr <= 0 or (stem_lr is not None and stem_lr <= 0):
        raise ConfigError("learning rates must be > 0")
    linked_name = retrain_study_name or f"{study_name}-retrain"
    if linked_name == study_name:
        raise ConfigError(f"the retrain study must not be the source study {study_name!r}")
    source = _load_study(storage, study_name)
    if "retrain_of" in source.user_attrs:
        raise ConfigError(f"study {study_name!r} is itself a retraining "
                          f"(of {source.user_attrs['retrain_of']!r}); name the search study")
    config = study_config(source, storage, device)
    seed = (config.study.seed or 0) if seed is None else seed
    metric, _ = search_metric(source)
    selected = select_trials(source, selection, seed)
    space = get_space(config.space.name, **config.space.options)
    architectures = [space.from_params(s.trial.params) for s in selected]  # all valid first

    schedule = {"optimizer": "sgd", "lr": lr, "stem_lr": lr if stem_lr is None else stem_lr,
                "momentum": FINAL_MOMENTUM, "weight_decay": FINAL_WEIGHT_DECAY,
                "power": FINAL_POWER, "batch_size": config.train.batch_size,
                "polyak": False, "distillation": False}
    run = {"select": selection.spec, "seed": seed}
    linked = _existing(storage, linked_name)
    if linked is not None:
        _check_linked(linked, study_name, epochs, schedule)
    done = set() if linked is None else {
        t.user_attrs.get("source_trial")
        for t in linked.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("source_study") == study_name
    }
    todo = [(s, a) for s, a in zip(selected, architectures) if s.trial.number not in done]
    skipped = [s.trial.number for s in selected if s.trial.number in done]
    if linked is not None and not todo:
        if on_start is not None:
            on_start(selected, skipped)
        return Retrained(linked, selected, skipped, [], metric)

    train_device = resolve_device(config.train.device)
    _, data = prepare_data(config, space, train_device)  # dataset errors: nothing stored yet
    if linked is None:
        linked = optuna.create_study(study_name=linked_name, storage=open_storage(storage),
                                     direction="maximize")
        set_metric_names(linked, ["reward"])
        linked.set_user_attr("retrain_of", study_name)
        linked.set_user_attr("epochs", epochs)
        linked.set_user_attr("schedule", schedule)
        for key in _COPIED_STUDY_ATTRS:  # so describe / export read the linked study alone
            if key in source.user_attrs:
                linked.set_user_attr(key, source.user_attrs[key])
    runs = list(linked.user_attrs.get("selection", []))
    if run not in runs:
        linked.set_user_attr("selection", [*runs, run])
    if on_start is not None:
        on_start(selected, skipped)

    added = []
    for chosen, arch in todo:
        trial = _retrain_one(chosen, arch, space, data, config, study_name, metric,
                             epochs=epochs, lr=lr, stem_lr=stem_lr, seed=seed,
                             device=train_device, weights_dir=weights_dir,
                             linked_name=linked_name)
        linked.add_trial(trial)
        stored = linked.get_trials(deepcopy=False)[-1]
        added.append(stored)
        if on_trial is not None:
            on_trial(stored)
    return Retrained(linked, selected, skipped, added, metric)


def _retrain_one(chosen: Selected, arch: Any, space: SearchSpace, data: SearchData,
                 config: StudyConfig, study_name: str, metric: str, *, epochs: int,
                 lr: float, stem_lr: float | None, seed: int, device: torch.device,
                 weights_dir: str | Path | None, linked_name: str) -> optuna.trial.FrozenTrial:
    """Trains one architecture; returns the trial to add (COMPLETE, or FAIL with a reason)."""
    source = chosen.trial
    attrs: dict[str, Any] = {
        "source_study": study_name,
        "source_trial": int(source.number),
        "selection": chosen.part,
        "search_reward": chosen.value,
        "search_metric": metric,
        "epochs": epochs,
        "stem_weights": data.stem_weights,
        **{k: source.user_attrs[k] for k in _COPIED_ATTRS if k in source.user_attrs},
    }
    started = time.monotonic()
    try:
        # Seeded like the search's trial, so the decoder starts from the same weights.
        torch.manual_seed(seed * 100_003 + source.number)
        stem = space.build_stem()
        stem.load_state_dict(data.stem_state)
        network = space.build(arch, data.num_classes, stem=stem)
        result = train_final(network, data, config.train, epochs=epochs, device=device, lr=lr,
                             stem_lr=stem_lr, seed=seed + source.number,
                             omit_classes=config.train.omit_classes)
        metrics = result.final_metrics
        attrs.update({"reward": metrics["reward"], "reward_stage2": metrics["reward"],
                      **{k: metrics[k] for k in ("miou", "macc", "fwiou")}})
        if weights_dir is not None:
            attrs["weights"] = _save_weights(network, Path(weights_dir),
                                             f"{linked_name}-source{source.number}.pt")
        state, value = optuna.trial.TrialState.COMPLETE, float(metrics["reward"])
    except TrialFailed as error:
        state, value = optuna.trial.TrialState.FAIL, None
        attrs["fail_reason"] = str(error)
    except Exception as error:  # noqa: BLE001 - one failure must not stop the others
        state, value = optuna.trial.TrialState.FAIL, None
        attrs["fail_reason"] = f"{type(error).__name__}: {error}"[:500]
    attrs["train_seconds"] = round(time.monotonic() - started, 3)
    return optuna.trial.create_trial(state=state, value=value, params=dict(source.params),
                                     distributions=dict(source.distributions),
                                     user_attrs=attrs)


def _save_weights(network: torch.nn.Module, folder: Path, name: str) -> str:
    """Saves ``network``'s state_dict atomically; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with atomic_path(path) as temporary:
        torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, temporary)
    return str(path)


def _load_study(storage: str, name: str) -> optuna.Study:
    """Loads a study; a missing study or an unreachable storage becomes a ConfigError."""
    return load_study(storage, name)


def _existing(storage: str, name: str) -> optuna.Study | None:
    return load_study(storage, name, missing_ok=True)


def _check_linked(linked: optuna.Study, source: str, epochs: int,
                  schedule: Mapping[str, Any]) -> None:
    name = linked.study_name
    attrs = linked.user_attrs
    if attrs.get("retrain_of") != source:
        what = (f"retrains {attrs['retrain_of']!r}, not {source!r}" if "retrain_of" in attrs
                else f"is not a retraining of {source!r}")
        raise ConfigError(f"study {name!r} exists and {what}; choose another --retrain-study")
    if attrs.get("epochs") != epochs:
        raise ConfigError(f"study {name!r} retrained with {attrs.get('epochs')} epochs, not "
                          f"{epochs}; rewards would not compare: choose another --retrain-study")
    if attrs.get("schedule") != dict(schedule):
        raise ConfigError(f"study {name!r} retrained with schedule {attrs.get('schedule')}; "
                          f"choose another --retrain-study for another schedule")
