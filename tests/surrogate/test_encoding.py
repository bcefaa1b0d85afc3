"""ParamEncoding: stored params <-> feature vectors, for every registered space."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from nas_optuna.exceptions import ConfigError
from nas_optuna.surrogate import ParamEncoding
from search_spaces import SPACES, get_space


def _random_trials(space_name: str, n: int = 40) -> list[optuna.trial.FrozenTrial]:
    space = get_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.0)
    return study.trials


@pytest.mark.parametrize("space_name", SPACES.names())
def test_every_space_round_trips_its_params(space_name: str) -> None:
    trials = _random_trials(space_name)
    encoding = ParamEncoding.from_trials(trials)
    x = encoding.encode([t.params for t in trials])
    assert x.shape == (len(trials), len(encoding.columns))
    assert [encoding.decode(row) for row in x] == [t.params for t in trials]
    # A parameter some trials lack is conditional: it has an "active" column, set exactly
    # on the trials that suggested it.
    every = set.intersection(*(set(t.params) for t in trials))
    for name in {n for t in trials for n in t.params} - every:
        column = encoding.columns.index(f"{name}:active")
        assert x[:, column].tolist() == [float(name in t.params) for t in trials]


def test_conditional_spaces_are_covered() -> None:
    # Guards the test above: at least one registered space has conditional params.
    conditional = [name for name in SPACES.names()
                   if any(c.endswith(":active")
                          for c in ParamEncoding.from_trials(_random_trials(name)).columns)]
    assert {"rspnet", "smp"} <= set(conditional)


def _numeric_trials() -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for i in range(6):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("width", 8, 64, log=True)
        if i % 2:
            trial.suggest_float("dropout", 0.0, 0.5)
        study.tell(trial, 0.0)
    return study.trials


def test_numeric_and_log_params_round_trip_and_inactive_differs_from_zero() -> None:
    trials = _numeric_trials()
    encoding = ParamEncoding.from_trials(trials)
    assert encoding.columns == ["log(lr)", "log(width)", "dropout", "dropout:active"]
    for trial in trials:
        decoded = encoding.decode(encoding.encode([trial.params])[0])
        assert decoded.keys() == trial.params.keys()
        assert decoded == pytest.approx(trial.params, rel=1e-12)
    inactive = encoding.encode([{"lr": 0.01, "width": 8}])[0]
    zero = encoding.encode([{"lr": 0.01, "width": 8, "dropout": 0.0}])[0]
    assert inactive[:3].tolist() == zero[:3].tolist() and inactive[3] != zero[3]


def test_the_description_round_trips_through_json() -> None:
    encoding = ParamEncoding.from_trials(_random_trials("rspnet"))
    again = ParamEncoding.from_dict(json.loads(json.dumps(encoding.to_dict())))
    assert again == encoding


def test_unseen_choices_and_unknown_params_encode_as_nothing() -> None:
    encoding = ParamEncoding.from_trials(_random_trials("template", 5))
    row = encoding.encode([{"template_0_op1": "not_an_op", "unknown": 3}])[0]
    assert not row.any()


@pytest.mark.parametrize(("params", "message"), [
    ({"lr": "fast", "width": 8}, "'fast' is not a number"),
    ({"lr": -1.0, "width": 8}, "not positive"),
])
def test_bad_numeric_values_are_refused(params: dict, message: str) -> None:
    encoding = ParamEncoding.from_trials(_numeric_trials())
    with pytest.raises(ConfigError, match=message):
        encoding.encode([params])


def test_incompatible_distributions_and_malformed_descriptions_are_refused() -> None:
    study = optuna.create_study()
    for distribution in (optuna.distributions.IntDistribution(1, 4),
                         optuna.distributions.CategoricalDistribution(["a", "b"])):
        study.add_trial(optuna.trial.create_trial(
            params={"x": distribution.to_external_repr(0) if hasattr(distribution, "choices")
                    else 1}, distributions={"x": distribution}, value=0.0))
    with pytest.raises(ConfigError, match="incompatible distributions"):
        ParamEncoding.from_trials(study.trials)
    with pytest.raises(ConfigError, match="malformed"):
        ParamEncoding.from_dict({"params": [{"name": "x"}]})
    with pytest.raises(ConfigError, match="no trial with params"):
        ParamEncoding.from_trials([])


def test_merged_trials_widen_ranges_and_unite_choices() -> None:
    study = optuna.create_study()
    for params, distributions in (
            ({"n": 2, "op": "a"}, {"n": optuna.distributions.IntDistribution(1, 4),
                                   "op": optuna.distributions.CategoricalDistribution(["a"])}),
            ({"n": 7, "op": "b"}, {"n": optuna.distributions.IntDistribution(2, 8),
                                   "op": optuna.distributions.CategoricalDistribution(["b"])})):
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=0.0))
    encoding = ParamEncoding.from_trials(study.trials)
    assert encoding.columns == ["n", "op=a", "op=b"]
    assert np.array_equal(encoding.encode([{"n": 7, "op": "b"}]), [[7.0, 0.0, 1.0]])
