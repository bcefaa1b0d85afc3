"""Proxy and retrain-fidelity analyses, on studies written by hand (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats

from analysis import (
    InsufficientData,
    build_report,
    proxy_correlation,
    retrain_fidelity,
    trials_frame,
)

REWARDS = [0.40, 0.55, 0.50, 0.62, 0.45, 0.58, 0.48, 0.60, 0.52, 0.66]
SYNFLOW = [1.0, 6.0, 4.0, 9.0, 2.0, 7.0, 3.0, 8.0, 5.0, 10.0]  # the reward's exact order
NOISE = [3.0, 1.0, 9.0, 2.0, 8.0, 4.0, 7.0, 5.0, 10.0, 6.0]
PARAMS = [90, 50, 70, 40, 60, 80, 30, 20, 100, 10]


@pytest.fixture()
def storage(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="search", storage=url, direction="maximize")
    study.set_metric_names(["reward"])
    for i, reward in enumerate(REWARDS):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=reward, params={"x": i},
            distributions={"x": IntDistribution(0, 20)},
            user_attrs={"proxy_synflow": SYNFLOW[i], "proxy_naswot": NOISE[i],
                        "proxy_jacob_cov": None, "proxy_seconds": 0.2,
                        "params_generated": PARAMS[i], "macs": PARAMS[i] * 10,
                        "reward_stage1": reward - 0.05}))
    study.add_trial(create_trial(  # rejected by the pre-screen: left out
        state=TrialState.COMPLETE, value=0.0, params={"x": 11},
        distributions={"x": IntDistribution(0, 20)},
        user_attrs={"proxy_synflow": 100.0, "proxy_naswot": 0.0, "rejected": "synflow",
                    "params_generated": 1, "macs": 10}))
    retrain = optuna.create_study(study_name="search-retrain", storage=url,
                                  direction="maximize")
    retrain.set_metric_names(["reward"])
    retrain.set_user_attr("retrain_of", "search")
    for i in range(8):
        retrain.add_trial(create_trial(
            state=TrialState.COMPLETE, value=REWARDS[i] + 0.1, params={"x": i},
            distributions={"x": IntDistribution(0, 20)},
            user_attrs={"source_study": "search", "source_trial": i, "selection": "top"}))
    return url


def test_proxy_correlation_matches_scipy_and_skips_rejected_trials(storage: str) -> None:
    result = proxy_correlation(trials_frame(storage, ["search"]), n_bootstrap=200)
    table = result.table.set_index("predictor")
    assert table.loc["synflow", "spearman"] == pytest.approx(1.0)
    assert table.loc["synflow", "n"] == 10  # the rejected trial is not a pair
    assert table.loc["naswot", "spearman"] == pytest.approx(
        stats.spearmanr(NOISE, REWARDS).statistic)
    assert table.loc["fewer generated parameters", "spearman"] == pytest.approx(
        stats.spearmanr(-np.array(PARAMS), REWARDS).statistic)
    assert "jacob_cov" not in table.index  # every value non-finite: no correlation
    assert result.stats["best_proxy"] == "synflow"
    assert list(result.table["spearman"]) == sorted(result.table["spearman"], reverse=True)


def test_a_study_without_proxies_has_no_proxy_analysis(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    study = optuna.create_study(study_name="plain", storage=url, direction="maximize")
    for i in range(5):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.1 * i,
                                     user_attrs={"params_generated": 10 * i}))
    with pytest.raises(InsufficientData, match="proxy"):
        proxy_correlation(trials_frame(url, ["plain"]))


def test_retrain_fidelity_ranks_every_predictor_against_the_retrained_reward(
        storage: str) -> None:
    result = retrain_fidelity(storage, "search-retrain", n_bootstrap=200)
    table = result.table.set_index("predictor")
    retrained = [REWARDS[i] + 0.1 for i in range(8)]
    assert table.loc["search reward", "spearman"] == pytest.approx(1.0)
    assert table.loc["naswot", "spearman"] == pytest.approx(
        stats.spearmanr(NOISE[:8], retrained).statistic)
    assert table.loc["naswot", "seconds_per_arch"] == pytest.approx(0.2)
    assert table.loc["fewer MACs", "seconds_per_arch"] == 0.0
    assert (table["n"] == 8).all()


def test_the_report_shows_both(storage: str) -> None:
    html = build_report(storage, "search", n_bootstrap=100)
    assert "Zero-cost proxies vs search reward" in html
    assert "Rank fidelity against compute (search-retrain)" in html
