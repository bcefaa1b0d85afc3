"""Fitting a surrogate of a study's reward: candidates compared by cross-validation.

Each candidate of :data:`~nas_optuna.surrogate._models.MODELS` is scored by K-fold
cross-validation (shuffled, seeded): the Spearman correlation and R^2 of the out-of-fold
predictions against the stored rewards, pooled over the folds, with a 1,000-resample
bootstrap 95% interval of the Spearman over the out-of-fold pairs
(:func:`analysis.rank_correlation`, seeded).
The best Spearman wins and is refitted on every trial.

The **seed-noise ceiling** is what a perfect model of an architecture's *mean* reward
would score against single noisy evaluations: Spearman between the rewards and the
rewards plus Gaussian noise of the measured seed std, averaged over 200 seeded draws.
A cross-validated Spearman near it means the model has learned what the data can teach.

The noise std (``noise_std``): given (e.g. from repeated-seed training of the same
architectures), else the pooled within-group std of trials whose params are identical
when at least two such groups exist, else ``None`` (no ceiling is reported and a
:class:`~nas_optuna.surrogate.SurrogateObjective` adds no noise unless told).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from nas_optuna.exceptions import ConfigError
from nas_optuna.surrogate._encoding import ParamEncoding
from nas_optuna.surrogate._features import DerivedFeatures
from nas_optuna.surrogate._models import MODELS, export_model, make_model, predict_arrays

__all__ = ["CandidateScore", "Surrogate", "fit_surrogate", "noise_ceiling"]

#: The fewest trials a surrogate is fitted on (each of 5 folds needs a few to test on).
MIN_TRIALS = 10


@dataclasses.dataclass(frozen=True)
class CandidateScore:
    """One candidate model's cross-validated scores."""

    model: str
    cv_spearman: float
    cv_spearman_low: float
    cv_spearman_high: float
    cv_r2: float


@dataclasses.dataclass
class Surrogate:
    """A fitted model of reward from params: everything a saved surrogate holds.

    Attributes:
        space: The search space's options (``{"name": ..., "profile": ..., ...}``), as
            the study stored them.
        encoding: How params become features.
        model: The chosen model's name.
        arrays: The fitted model as numbers (:func:`export_model`).
        noise_std: The reward's seed-noise std (``None`` if unknown).
        metric: The objective the surrogate predicts (e.g. ``reward``) and its direction.
        scores: Every candidate's cross-validated scores, the chosen one first.
        info: Provenance: source study, number of trials, folds, seed.
        derived: Names of the space's derived features (:meth:`SearchSpace.features`)
            appended to the encoded params, in column order (empty: params only).
    """

    space: dict[str, Any]
    encoding: ParamEncoding
    model: str
    arrays: dict[str, np.ndarray]
    noise_std: float | None
    metric: dict[str, str]
    scores: list[CandidateScore]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    derived: tuple[str, ...] = ()
    #: The saved file's header digest (set by :func:`load_surrogate`): which model a
    #: benchmark's results came from.
    digest: str | None = dataclasses.field(default=None, compare=False)
    _derived: DerivedFeatures | None = dataclasses.field(default=None, init=False,
                                                         repr=False, compare=False)

    @property
    def space_name(self) -> str:
        return str(self.space.get("name"))

    @property
    def columns(self) -> list[str]:
        """The model's input columns: encoded params, then derived features."""
        return self.encoding.columns + list(self.derived)

    def features(self, params_list: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The model's input rows for ``params_list``."""
        x = self.encoding.encode(params_list)
        if not self.derived:
            return x
        if self._derived is None:
            self._derived = DerivedFeatures(self.space, self.derived)
        return np.hstack([x, self._derived.matrix(params_list)])

    def predict(self, params_list: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The predicted (noise-free) reward of each params dict."""
        return predict_arrays(self.model, self.arrays, self.features(params_list))

    @property
    def cv(self) -> CandidateScore:
        """The chosen model's cross-validated scores."""
        return self.scores[0]


def noise_ceiling(values: Sequence[float], noise_std: float, draws: int = 200,
                  seed: int = 0) -> float:
    """Mean Spearman of ``values`` against ``values`` + N(0, ``noise_std``^2) noise."""
    from scipy.stats import spearmanr

    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    return float(np.mean([spearmanr(values, values + rng.normal(0.0, noise_std, len(values)))
                          .statistic for _ in range(draws)]))


def _repeat_noise(params_list: Sequence[Mapping[str, Any]],
                  values: Sequence[float]) -> float | None:
    groups: dict[str, list[float]] = {}
    for params, value in zip(params_list, values):
        groups.setdefault(json.dumps(dict(params), sort_keys=True, default=str), []).append(value)
    variances = [np.var(v, ddof=1) for v in groups.values() if len(v) >= 2]
    return float(np.sqrt(np.mean(variances))) if len(variances) >= 2 else None


def _metric(study: optuna.Study) -> tuple[str, int, str]:
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    index = names.index("reward") if "reward" in names else 0
    return names[index], index, study.directions[index].name.lower()


def fit_surrogate(
    study: optuna.Study,
    *,
    noise_std: float | None = None,
    models: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    derived: bool = True,
) -> Surrogate:
    """Fits a surrogate of ``study``'s reward on its COMPLETE trials.

    The target is the ``reward`` objective when the study has one, else its first.
    Trials rejected by a cost budget (user attr ``rejected``) are left out: their reward
    was set, not measured.

    Args:
        study: A nas-optuna study (its ``space`` user attr names the space).
        noise_std: The reward's seed-noise std; ``None``: estimated from repeated params
            if possible (module docstring).
        models: Candidate names (default: all of ``MODELS``).
        folds: Cross-validation folds.
        seed: Seed of the folds, the models and the bootstrap.
        derived: Append the space's derived features (:meth:`SearchSpace.features`) to
            the encoded params (spaces that derive none: params only).

    Raises:
        ConfigError: The study has no space, too few usable trials, or an unknown model.

    Example:
        >>> surrogate = fit_surrogate(optuna.load_study(  # doctest: +SKIP
        ...     study_name="quickstart", storage="sqlite:///nas-optuna.db"))
        >>> surrogate.cv.cv_spearman  # doctest: +SKIP
        0.41
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    from analysis import rank_correlation  # the project's bootstrap interval

    space = study.user_attrs.get("space")
    if not isinstance(space, dict) or "name" not in space:
        raise ConfigError(f"study {study.study_name!r} has no 'space' user attr: not a "
                          "nas-optuna study")
    names = list(models or MODELS)
    for name in names:
        MODELS.get(name)  # an unknown name: one line listing the known ones
    metric, index, direction = _metric(study)
    trials = [t for t in study.get_trials(deepcopy=False,
                                          states=(optuna.trial.TrialState.COMPLETE,))
              if t.params and "rejected" not in t.user_attrs]
    if len(trials) < max(MIN_TRIALS, folds):
        raise ConfigError(f"study {study.study_name!r} has {len(trials)} usable COMPLETE "
                          f"trials; a surrogate needs at least {max(MIN_TRIALS, folds)}")
    encoding = ParamEncoding.from_trials(trials)
    params_list = [t.params for t in trials]
    x = encoding.encode(params_list)
    derived_names: tuple[str, ...] = ()
    if derived:
        extra = DerivedFeatures.of_space(space, params_list[0])
        derived_names = extra.names
        if derived_names:
            x = np.hstack([x, extra.matrix(params_list)])
    y = np.asarray([t.values[index] for t in trials], dtype=float)
    if noise_std is None:
        noise_std = _repeat_noise(params_list, y)
    splitter = KFold(folds, shuffle=True, random_state=seed)
    scores = []
    with warnings.catch_warnings():
        # A GP's hyperparameters at their bounds are what the scores then show.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name in names:
            predicted = np.empty_like(y)
            for train, test in splitter.split(x):
                model = make_model(name, seed).fit(x[train], y[train])
                predicted[test] = model.predict(x[test])
            rank = rank_correlation(predicted, y, n_bootstrap=1000, seed=seed)
            scores.append(CandidateScore(name, rank.spearman, rank.spearman_low,
                                         rank.spearman_high, float(r2_score(y, predicted))))
        scores.sort(key=lambda s: -np.nan_to_num(s.cv_spearman, nan=-2.0))
        best = scores[0].model
        arrays = export_model(best, make_model(best, seed).fit(x, y))
    info = {"study": study.study_name, "trials": len(trials), "folds": folds, "seed": seed,
            "reward_std": float(np.std(y))}
    if noise_std is not None:
        info["noise_ceiling"] = noise_ceiling(y, noise_std, seed=seed)
    return Surrogate(dict(space), encoding, best, arrays, noise_std,
                     {"name": metric, "direction": direction}, scores, info, derived_names)
