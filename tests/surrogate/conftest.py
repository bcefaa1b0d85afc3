"""A template-space study whose reward is a known function of its params."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optuna
import pytest

from search_spaces import get_space

SPACE = {"name": "template", "profile": "search"}


def known_reward(params: Mapping[str, Any]) -> float:
    """Deeper blocks and the first template's separable convolutions score higher."""
    depth = sum(v for k, v in params.items() if k.endswith("_repeats"))
    sep = params["template_0_op1"].startswith("sep_conv")
    return 0.4 + 0.01 * depth + 0.05 * sep + 0.02 * (params["block_6_template"] == 2)


def make_known_study(n_trials: int = 200, seed: int = 0,
                     storage: str | None = None, name: str = "known") -> optuna.Study:
    """``n_trials`` random template architectures rewarded by :func:`known_reward`."""
    space = get_space(**SPACE)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    study.set_user_attr("space", dict(SPACE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["reward"])
    for _ in range(n_trials):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, known_reward(trial.params))
    return study


@pytest.fixture(scope="package")
def known_surrogate():
    from nas_optuna.surrogate import fit_surrogate

    return fit_surrogate(make_known_study(), noise_std=0.005,
                         models=["gradient_boosting", "kernel_ridge"])
