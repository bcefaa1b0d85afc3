"""fit_surrogate: cross-validated model choice, the noise ceiling, refusals."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from scipy.stats import spearmanr

from nas_optuna.exceptions import ConfigError
from nas_optuna.surrogate import fit_surrogate, noise_ceiling
from search_spaces import get_space
from tests.surrogate.conftest import known_reward, make_known_study


def test_a_surrogate_of_a_known_function_recovers_its_ranking(known_surrogate) -> None:
    assert known_surrogate.space_name == "template"
    assert known_surrogate.metric == {"name": "reward", "direction": "maximize"}
    assert known_surrogate.cv.cv_spearman > 0.85
    assert known_surrogate.cv.cv_spearman_low < known_surrogate.cv.cv_spearman \
        < known_surrogate.cv.cv_spearman_high
    # Scores are sorted, the chosen model first.
    spearmans = [s.cv_spearman for s in known_surrogate.scores]
    assert spearmans == sorted(spearmans, reverse=True)
    assert known_surrogate.model == known_surrogate.scores[0].model
    # Architectures it never saw are ranked as the known reward ranks them.
    fresh = make_known_study(60, seed=1)
    params = [t.params for t in fresh.trials]
    rho = spearmanr(known_surrogate.predict(params), [known_reward(p) for p in params])
    assert rho.statistic > 0.85
    assert known_surrogate.info["noise_ceiling"] > 0.9


def test_the_noise_ceiling_falls_with_the_noise() -> None:
    values = np.linspace(0.5, 0.7, 100)
    assert noise_ceiling(values, 0.0) == pytest.approx(1.0)
    ceilings = [noise_ceiling(values, std) for std in (0.005, 0.02, 0.1)]
    assert ceilings == sorted(ceilings, reverse=True) and ceilings[-1] < 0.6


def test_the_noise_std_is_estimated_from_repeated_params() -> None:
    rng = np.random.default_rng(0)
    space = get_space("template")
    study = make_known_study(20)
    for trial in list(study.trials[:4]):
        for _ in range(3):
            study.enqueue_trial(trial.params)
            repeat = study.ask()
            space.suggest(repeat)
            study.tell(repeat, known_reward(repeat.params) + rng.normal(0, 0.02))
    surrogate = fit_surrogate(study, models=["random_forest"])
    assert 0.005 < surrogate.noise_std < 0.05
    unknown = fit_surrogate(make_known_study(20), models=["random_forest"])
    assert unknown.noise_std is None and "noise_ceiling" not in unknown.info


def test_budget_rejections_and_unfinished_trials_are_left_out() -> None:
    study = make_known_study(12)
    rejected = study.ask()
    get_space("template").suggest(rejected)
    rejected.set_user_attr("rejected", "params > budget")
    study.tell(rejected, 0.0)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert fit_surrogate(study, models=["random_forest"]).info["trials"] == 12


@pytest.mark.parametrize(("make", "message"), [
    (lambda: make_known_study(8), "has 8 usable COMPLETE trials; a surrogate needs at least 10"),
    (lambda: optuna.create_study(), "no 'space' user attr"),
])
def test_unusable_studies_are_refused(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit_surrogate(make())


def test_unknown_candidate_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown surrogate model 'svm'"):
        fit_surrogate(make_known_study(12), models=["svm"])


def test_the_spaces_derived_features_are_columns_unless_turned_off(known_surrogate) -> None:
    assert "output_stride" in known_surrogate.derived
    assert known_surrogate.columns[-len(known_surrogate.derived):] == list(
        known_surrogate.derived)
    plain = fit_surrogate(make_known_study(12), models=["random_forest"], derived=False)
    assert plain.derived == () and plain.columns == plain.encoding.columns
    params = [t.params for t in make_known_study(3, seed=2).trials]
    assert plain.features(params).shape == (3, len(plain.encoding.columns))
    assert known_surrogate.features(params).shape == (3, len(known_surrogate.columns))


def test_a_feature_the_space_no_longer_derives_is_refused(known_surrogate) -> None:
    import dataclasses

    renamed = dataclasses.replace(known_surrogate,
                                  derived=(*known_surrogate.derived[:-1], "vanished"))
    with pytest.raises(ConfigError, match="no longer derives the feature 'vanished'"):
        renamed.predict([make_known_study(1, seed=2).trials[0].params])
