"""An Optuna objective that asks a surrogate instead of training a network.

:class:`SurrogateObjective` replays the space's own define-by-run suggestions on the trial
(so any sampler sees exactly the parameters a real search would), predicts the reward of
the suggested params and adds Gaussian noise of the surrogate's seed std: one evaluation
of a surrogate trial is as noisy as one real one (NAS-Bench-301's "noisy" mode). Each
trial's noise is drawn from ``numpy.random.default_rng((seed, trial.number))``, so a study
is reproducible whatever order its trials finish in.

Every trial stores the user attrs ``predicted`` (the noise-free prediction: a benchmark's
regret is measured on it) and ``genotype`` (the space's readable form);
:func:`prepare_surrogate_study` gives the study the user attrs a nas-optuna study has
(``space``, ``sampler``, ``surrogate``) so that ``nas-optuna report``, the ``optuna`` CLI
and optuna-dashboard read it like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from nas_optuna._optuna import set_metric_names
from nas_optuna.surrogate._fit import Surrogate

__all__ = ["SurrogateObjective", "prepare_surrogate_study"]


class SurrogateObjective:
    """``objective(trial) -> predicted reward + noise`` for ``study.optimize``.

    Args:
        surrogate: A fitted or loaded :class:`~nas_optuna.surrogate.Surrogate`.
        noise: Add noise of ``surrogate.noise_std`` (``False``: the noise-free
            prediction; also when the surrogate's noise is unknown).
        noise_std: Override the surrogate's noise std.
        seed: Seed of the noise.

    Example:
        >>> from nas_optuna.surrogate import load_surrogate
        >>> surrogate = load_surrogate("benchmarks/data/surrogate_template.npz")
        >>> study = optuna.create_study(direction="maximize",
        ...                             sampler=optuna.samplers.RandomSampler(seed=0))
        >>> study.optimize(SurrogateObjective(surrogate, seed=0), n_trials=3)
        >>> 0.0 < study.best_value < 1.0
        True
    """

    def __init__(self, surrogate: Surrogate, *, noise: bool = True,
                 noise_std: float | None = None, seed: int = 0) -> None:
        from search_spaces import get_space

        options = {k: v for k, v in surrogate.space.items() if k != "name"}
        self.surrogate = surrogate
        self.space = get_space(surrogate.space_name, **options)
        std = surrogate.noise_std if noise_std is None else float(noise_std)
        self.noise_std = float(std) if noise and std else 0.0
        self.seed = int(seed)

    def __call__(self, trial: optuna.trial.Trial) -> float:
        arch = self.space.suggest(trial)
        predicted = float(self.surrogate.predict([trial.params])[0])
        trial.set_user_attr("predicted", predicted)
        trial.set_user_attr("genotype", self.space.describe(arch))
        if not self.noise_std:
            return predicted
        rng = np.random.default_rng((self.seed, trial.number))
        return predicted + float(rng.normal(0.0, self.noise_std))


def prepare_surrogate_study(study: optuna.Study, surrogate: Surrogate, *,
                            sampler: str | None = None, model_path: str | None = None,
                            noise_std: float | None = None) -> None:
    """Records on ``study`` what the rest of nas-optuna reads from a study's user attrs."""
    attrs: dict[str, Any] = {
        "space": surrogate.space,
        "surrogate": {"model": surrogate.model, "path": model_path,
                      "noise_std": surrogate.noise_std if noise_std is None else noise_std,
                      "cv_spearman": surrogate.cv.cv_spearman,
                      "source_study": surrogate.info.get("study")},
    }
    if sampler is not None:
        attrs["sampler"] = sampler
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    if not study.metric_names:
        set_metric_names(study, [surrogate.metric["name"]])
