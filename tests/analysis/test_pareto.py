"""Pareto front and hypervolume history of a multi-objective study."""

from __future__ import annotations

import optuna
import pytest

from analysis import InsufficientData, default_reference_point, hypervolume_history, pareto_front
from tests.analysis.conftest import PARETO_FRONT


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def test_pareto_table_is_the_studys_best_trials(storage: str) -> None:
    study = _study(storage, "pareto")
    result = pareto_front(study)
    assert set(result.table["number"]) == {t.number for t in study.best_trials} == PARETO_FRONT
    assert list(result.table["value_reward"]) == [0.4, 0.5, 0.6]
    assert "value_latency_ms" in result.table and "latency_ms" not in result.table
    assert result.stats == {"n_pareto": 3, "n_feasible": 5}
    assert "Pareto front" in result.figure.layout.title.text


def test_default_reference_point(storage: str) -> None:
    # worst feasible reward 0.4 (range 0.2), worst latency 25 (range 20), 10 % beyond
    assert default_reference_point(_study(storage, "pareto")) == pytest.approx([0.38, 27.0])


def test_hypervolume_history(storage: str) -> None:
    result = hypervolume_history(_study(storage, "pareto"))
    assert list(result.table["number"]) == [0, 1, 2, 3, 4, 5]
    # front (0.6, 20), (0.5, 10), (0.4, 5) against (0.38, 27): 0.1*7 + 0.1*17 + 0.02*22
    assert result.stats["final_hypervolume"] == pytest.approx(2.84)
    assert result.table["hypervolume"].is_monotonic_increasing
    fixed = hypervolume_history(_study(storage, "pareto"), reference_point=[0.0, 30.0])
    assert fixed.stats["reference_point"] == [0.0, 30.0]


def test_single_objective_study(storage: str) -> None:
    with pytest.raises(InsufficientData):
        pareto_front(_study(storage, "controller"))
    with pytest.raises(InsufficientData):
        hypervolume_history(_study(storage, "controller"))
