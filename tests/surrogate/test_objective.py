"""SurrogateObjective: any registered sampler searches a surrogate like a real space."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest

from nas_optuna.study import SAMPLERS, build_sampler
from nas_optuna.surrogate import SurrogateObjective, prepare_surrogate_study


def _study(name: str) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.create_study(direction="maximize", sampler=build_sampler(name, {}, 0))


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_registered_sampler_runs_a_surrogate_study(known_surrogate, sampler) -> None:
    study = _study(sampler)
    objective = SurrogateObjective(known_surrogate, seed=0)
    study.optimize(objective, n_trials=12)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 12
    predicted = known_surrogate.predict([t.params for t in trials])
    np.testing.assert_allclose([t.user_attrs["predicted"] for t in trials], predicted)
    noise = np.asarray([t.value for t in trials]) - predicted
    assert np.all(noise != 0) and np.abs(noise).max() < 6 * known_surrogate.noise_std
    assert all(t.user_attrs["genotype"] for t in trials)


def test_the_noise_is_the_same_draw_for_a_trial_number_whatever_the_sampler(
        known_surrogate) -> None:
    noises = []
    for sampler in ("random", "tpe"):
        study = _study(sampler)
        study.optimize(SurrogateObjective(known_surrogate, seed=5), n_trials=6)
        noises.append([t.value - t.user_attrs["predicted"] for t in study.trials])
    np.testing.assert_allclose(noises[0], noises[1])
    expected = [np.random.default_rng((5, n)).normal(0.0, known_surrogate.noise_std)
                for n in range(6)]
    np.testing.assert_allclose(noises[0], expected)


def test_without_noise_a_trial_returns_the_prediction(known_surrogate) -> None:
    study = _study("random")
    study.optimize(SurrogateObjective(known_surrogate, noise=False), n_trials=4)
    assert [t.value for t in study.trials] == [t.user_attrs["predicted"] for t in study.trials]
    louder = _study("random")
    louder.optimize(SurrogateObjective(known_surrogate, noise_std=0.1, seed=0), n_trials=30)
    spread = np.std([t.value - t.user_attrs["predicted"] for t in louder.trials])
    assert 0.05 < spread < 0.2


def test_a_prepared_study_carries_what_nas_optuna_reads(known_surrogate) -> None:
    study = _study("random")
    prepare_surrogate_study(study, known_surrogate, sampler="random", model_path="m.npz")
    assert study.user_attrs["space"] == known_surrogate.space
    assert study.user_attrs["sampler"] == "random"
    assert study.user_attrs["surrogate"]["source_study"] == "known"
    assert study.user_attrs["surrogate"]["path"] == "m.npz"
