"""Early termination after stage 1: the running-mean rule, as a pruner and in MO studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from nas_optuna.config import parse_config
from nas_optuna.exceptions import ConfigError
from nas_optuna.pruners import RunningMeanPruner, Stage1Rule, running_mean_continues
from nas_optuna.study import run_search
from tests.conftest import fake_trainer, tiny_config_dict


def test_above_the_running_mean_always_continues() -> None:
    for number in range(200):
        assert running_mean_continues(0.6, [0.5, 0.65], trial_number=number,
                                      initial_probability=0.0)


def test_below_the_mean_continues_with_probability_p() -> None:
    # No annealing within these trials: p stays at 0.9.
    kept = [running_mean_continues(0.1, [0.5], trial_number=n, anneal_trials=10**9, seed=3)
            for n in range(2000)]
    assert abs(np.mean(kept) - 0.9) < 0.03


def test_p_is_annealed_linearly_to_the_final_probability() -> None:
    def kept_fraction(numbers: range) -> float:
        return float(np.mean([running_mean_continues(0.1, [0.5], trial_number=n,
                                                     anneal_trials=1000, seed=0)
                              for n in numbers]))

    assert abs(kept_fraction(range(0, 100)) - 0.855) < 0.08  # p from 0.9 to 0.81
    assert abs(kept_fraction(range(400, 600)) - 0.45) < 0.08
    assert kept_fraction(range(1000, 1200)) == 0.0  # p reached 0: below-mean trials stop


def test_minimised_objectives_beat_the_mean_from_below() -> None:
    assert running_mean_continues(0.2, [0.5], trial_number=5000, maximize=False)
    assert not running_mean_continues(0.8, [0.5], trial_number=5000, maximize=False)


def test_draws_are_reproducible_per_trial() -> None:
    draws = [running_mean_continues(0.1, [0.5], trial_number=n, seed=7) for n in range(50)]
    assert draws == [running_mean_continues(0.1, [0.5], trial_number=n, seed=7)
                     for n in range(50)]


def test_running_mean_pruner_in_an_optuna_study() -> None:
    pruner = RunningMeanPruner(initial_probability=0.0, seed=0)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    decisions = []
    for value in (0.5, 0.3, 0.7, 0.45, 0.6):
        trial = study.ask()
        trial.report(value, step=1)
        pruned = trial.should_prune()
        decisions.append(pruned)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else None,
                   values=None if pruned else value)
    # Running means: -, 0.5, 0.4, 0.5, 0.4875 (pruned trials' stage-1 values count too).
    assert decisions == [False, True, False, True, False]
    # Only the stage-1 step is decided.
    trial = study.ask()
    trial.report(0.0, step=2)
    assert not trial.should_prune()


def test_median_stage1_rule_agrees_with_optunas_median_pruner() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.3, 0.7, size=30)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    rule = Stage1Rule("median", n_startup_trials=3)
    earlier: list[float] = []
    for value in values:
        trial = study.ask()
        trial.report(float(value), step=1)
        pruned = trial.should_prune()
        assert rule.continues(float(value), earlier, trial_number=trial.number) is not pruned
        if not pruned:  # MedianPruner's median is over completed trials' values
            study.tell(trial, float(value))
            earlier.append(float(value))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def test_multi_objective_study_stops_trials_at_stage_one(tmp_path: Path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture",
                        fake_trainer([0.50, 0.30, 0.60, 0.20, 0.70]))
    raw = tiny_config_dict(
        tmp_path,
        study={"n_trials": 5, "directions": ["maximize", "minimize"],
               "metrics": ["reward", "latency_ms"]},
        pruner={"name": "running_mean", "initial_probability": 0.0},
    )
    study = run_search(parse_config(raw))
    # Running means of the earlier stage-1 rewards: -, 0.5, 0.4, 0.4667, 0.4.
    assert [t.state.name for t in study.trials] == [
        "COMPLETE", "PRUNED", "COMPLETE", "PRUNED", "COMPLETE"]
    for trial in study.trials:
        assert "reward_stage1" in trial.user_attrs and "latency_ms" in trial.user_attrs
        if trial.state.name == "PRUNED":  # stage-1 values kept, stage 2 never ran
            assert "reward_stage2" not in trial.user_attrs
            assert trial.user_attrs["miou"] == trial.user_attrs["reward_stage1"]
        else:
            assert trial.values[0] == pytest.approx(trial.user_attrs["reward_stage1"] + 0.01)


def test_unusable_pruners_in_multi_objective_studies_are_config_errors(tmp_path: Path) -> None:
    mo = {"directions": ["maximize", "minimize"], "metrics": ["reward", "macs"]}
    for pruner, message in (
        ({"name": "median", "n_warmup_steps": 2}, "no option 'n_warmup_steps'"),
        ({"name": "running_mean", "initial_probability": 1.5}, "initial_probability"),
    ):
        raw = tiny_config_dict(tmp_path, study=mo, pruner=pruner)
        with pytest.raises(ConfigError, match=message):
            run_search(parse_config(raw))
        assert not (tmp_path / "study.db").exists()
