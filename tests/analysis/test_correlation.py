"""Rank correlation with confidence intervals; stage 1 vs 2; search vs retrained reward."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import (
    InsufficientData,
    rank_correlation,
    retrain_correlation,
    retrain_pairs,
    retrain_studies,
    stage_correlation,
)
from tests.analysis.conftest import retrained_reward


def test_monotone_pair() -> None:
    result = rank_correlation([0.1, 0.3, 0.2, 0.5, 0.4], [1.0, 3.0, 2.0, 9.0, 4.0])
    assert result.spearman == 1.0 and result.kendall == 1.0
    # every bootstrap resample of a monotone pair is monotone: the interval is the point
    assert result.spearman_low == result.spearman_high == 1.0
    assert result.kendall_low == result.kendall_high == 1.0
    assert result.spearman_fisher_low == result.spearman_fisher_high == 1.0


def test_reversed_pair() -> None:
    result = rank_correlation([1, 2, 3, 4], [4, 3, 2, 1])
    assert result.spearman == -1.0 and result.kendall == -1.0
    assert result.spearman_low == result.spearman_high == -1.0


def test_values_agree_with_scipy() -> None:
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    result = rank_correlation(x, y)
    assert result.spearman == pytest.approx(0.8) and result.kendall == pytest.approx(0.6)
    assert result.spearman_p == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert result.kendall_p == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert result.n == 5


def test_intervals() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    result = rank_correlation(x, y, n_bootstrap=500, seed=1)
    assert result.spearman_low < result.spearman < result.spearman_high
    assert result.kendall_low < result.kendall < result.kendall_high
    half = stats.norm.ppf(0.975) * math.sqrt(1.06 / 57)
    assert result.spearman_fisher_low == pytest.approx(math.tanh(math.atanh(result.spearman)
                                                                 - half))
    # seeded: the same interval twice; another seed moves it
    again = rank_correlation(x, y, n_bootstrap=500, seed=1)
    other = rank_correlation(x, y, n_bootstrap=500, seed=2)
    assert again == result and other.spearman_low != result.spearman_low
    wider = rank_correlation(x, y, n_bootstrap=500, seed=1, confidence=0.99)
    assert wider.spearman_low < result.spearman_low


def test_nan_pairs_are_dropped_and_bad_input_refused() -> None:
    assert rank_correlation([1, 2, float("nan"), 3], [1, 2, 5, 3]).n == 3
    with pytest.raises(ValueError):
        rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        rank_correlation([1, 2, 3], [1, 2, 3], confidence=1.5)
    with pytest.raises(InsufficientData):
        rank_correlation([1, 2], [1, 2])


def test_stage_correlation(frame: pd.DataFrame) -> None:
    result = stage_correlation(frame, n_bootstrap=200)
    table = result.table.set_index("study")
    assert table.loc["controller", "n"] == 20  # completed only: no pruned, rejected, failed
    assert table.loc["controller", "spearman"] == pytest.approx(1.0)
    assert table.loc["controller", "spearman_low"] == table.loc["controller",
                                                                "spearman_high"] == 1.0
    assert result.stats["study"] == "controller"


def test_retrain_studies(storage: str) -> None:
    assert retrain_studies(storage, "controller") == ["controller-retrain"]
    assert retrain_studies(storage, "random") == ["random-retrain"]
    assert retrain_studies(storage, "pareto") == []


def test_retrain_pairs(storage: str) -> None:
    pairs = retrain_pairs(storage, "controller-retrain").set_index("source_trial")
    # trial 23 failed (no search reward): dropped; trial 19 retrained twice: averaged
    assert sorted(pairs.index) == [2, 5, 8, 13, 15, 17, 19]
    assert pairs.loc[19, "retrains"] == 2
    assert pairs.loc[19, "retrained_reward"] == pytest.approx(retrained_reward(0.59) + 0.001)
    assert pairs.loc[13, "search_reward"] == pytest.approx(0.53)
    assert pairs.loc[2, "selection"] == "random"


def test_retrain_correlation(storage: str) -> None:
    result = retrain_correlation(storage, "controller-retrain", n_bootstrap=200)
    table = result.table.set_index("selection")
    assert list(table.index) == ["all", "random", "top"]
    assert list(table["n"]) == [7, 3, 4]
    assert table["spearman"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert table.loc["all", "spearman_low"] == table.loc["all", "spearman_high"] == 1.0
    assert result.stats["selection"] == "all"


def test_retrain_study_with_too_few_pairs(storage: str) -> None:
    with pytest.raises(InsufficientData):
        retrain_correlation(storage, "random-retrain")
