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


def test_multi_objective_median_rule_has_median_pruners_semantics(
        tmp_path: Path, monkeypatch) -> None:
    """A multi-objective study's ``median`` rule and MedianPruner in a single-objective
    study decide alike on the same stream, pruned trials included: the median is over
    COMPLETE trials' values at the step, and a trial's best value so far is compared."""
    from nas_optuna import objective as objective_module

    # Trials 2-4 stop with low values. Counting them (the old rule) would pull step 1's
    # median below trial 5's 0.40 and stop it at step 2 instead; trial 7 drops below
    # step 2's median (0.70) with its last value but not with its best.
    rewards = [[0.50, 0.60], [0.60, 0.70], [0.10, 0.12], [0.12, 0.10], [0.11, 0.09],
               [0.40, 0.38], [0.56, 0.75], [0.70, 0.55], [0.30, 0.20], [0.62, 0.66]]

    def outcomes(study: optuna.Study) -> list[tuple[str, int]]:
        """Each trial's state and the last step it reported (its validations)."""
        return [(t.state.name, len(t.user_attrs.get("validation_values", t.intermediate_values)))
                for t in study.trials]

    expected = optuna.create_study(direction="maximize",
                                   pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for values in rewards:
        trial = expected.ask()
        for step, value in enumerate(values, start=1):
            trial.report(value, step=step)
            if trial.should_prune():
                expected.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            expected.tell(trial, values[-1] + 0.01)
    # The stream tests what it should: trial 5 stops at step 1, trial 7 completes.
    assert outcomes(expected)[5] == ("PRUNED", 1)
    assert outcomes(expected)[7] == ("COMPLETE", 2)
    assert [state for state, _ in outcomes(expected)].count("PRUNED") == 5

    monkeypatch.setattr(objective_module, "train_architecture", rung_trainer(rewards))
    raw = tiny_config_dict(
        tmp_path, study={"n_trials": len(rewards), "directions": ["maximize", "minimize"],
                         "metrics": ["reward", "macs"]},
        train={"stage1_epochs": 2, "stage1_validations": 2},
        pruner={"name": "median", "n_startup_trials": 2})
    found = run_search(parse_config(raw))
    # Completed trials reported stage 2 too (step 3); compare the stage-1 steps.
    assert [(state, min(step, 2)) for state, step in outcomes(found)] == outcomes(expected)


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


# --- several validations inside stage 1: multi-rung pruners -------------------------------
def rung_trainer(rewards: list[list[float]]):
    """A ``train_architecture`` stand-in: trial i reports ``rewards[i]`` at its validations
    inside stage 1 and at stage 1's end (one value per step), then stage 2 (+0.01)."""
    from nas_optuna.training import TrainResult

    queue = iter(rewards)

    def train(network, data, config, *, device, reporter, seed, validation_reporter=None,
              **kwargs):  # noqa: ANN001
        values = next(queue)
        assert len(values) == config.stage1_validations

        def metrics(value: float) -> dict[str, float]:
            return {"miou": value, "macc": value, "fwiou": value, "reward": value}

        for index, value in enumerate(values[:-1], start=1):
            if not validation_reporter(index, metrics(value)):
                return TrainResult(stage_metrics={1: metrics(value)}, stopped_after=1)
        result = TrainResult(stage_metrics={1: metrics(values[-1])})
        if not reporter(1, metrics(values[-1])):
            result.stopped_after = 1
            return result
        result.stage_metrics[2] = metrics(values[-1] + 0.01)
        reporter(2, result.stage_metrics[2])
        return result

    return train


def test_successive_halving_rule_at_hand_computed_rungs() -> None:
    from nas_optuna.pruners import successive_halving_continues as go_on

    # Rungs of min_resource 1, factor 2: steps 1, 2, 4, 8; step 3 is no rung.
    assert go_on(0.1, [0.9, 0.8, 0.7], step=3, reduction_factor=2)
    # 4 values at step 2, keep the best 4 // 2 = 2: 0.8 and 0.7 go on, 0.6 does not.
    assert go_on(0.7, [0.9, 0.8, 0.1], step=2, reduction_factor=2) is False
    assert go_on(0.8, [0.9, 0.7, 0.1], step=2, reduction_factor=2)
    assert go_on(0.1, [], step=1)  # alone at a rung: the best
    with pytest.raises(ValueError):
        go_on(0.5, [], step=1, reduction_factor=1)


def test_successive_halving_rule_agrees_with_optunas_pruner() -> None:
    """The multi-objective rule and Optuna's SuccessiveHalvingPruner decide alike on one
    stream of trials reporting at steps 1..3 (rungs at 1 and 2 for factor 2)."""
    from nas_optuna.pruners import successive_halving_continues

    rng = np.random.default_rng(3)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=2, min_early_stopping_rate=0))
    reached: dict[int, list[float]] = {1: [], 2: [], 3: []}
    decisions = []
    for _ in range(25):
        trial = study.ask()
        values = rng.uniform(0.2, 0.8, size=3)
        for step, value in enumerate(values, start=1):
            ours = successive_halving_continues(float(value), reached[step], step=step,
                                                reduction_factor=2)
            trial.report(float(value), step=step)
            theirs = not trial.should_prune()
            decisions.append(ours == theirs)
            reached[step].append(float(value))
            if not theirs:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, float(values[-1]))
    assert all(decisions) and len(decisions) > 25


@pytest.mark.parametrize("name", ["successive_halving", "hyperband", "wilcoxon", "patient"])
def test_multi_rung_pruners_prune_at_validations_inside_stage_1(
        tmp_path: Path, monkeypatch, name: str) -> None:
    from nas_optuna import objective as objective_module

    # The weak trials get worse: PatientPruner stops only trials that stopped improving.
    rewards = [[0.50, 0.55, 0.60], [0.60, 0.65, 0.70], [0.55, 0.60, 0.65], [0.10, 0.09, 0.08],
               [0.05, 0.04, 0.03], [0.08, 0.07, 0.06], [0.04, 0.03, 0.02], [0.03, 0.02, 0.01]]
    monkeypatch.setattr(objective_module, "train_architecture", rung_trainer(rewards))
    options = {"successive_halving": {"min_resource": 1, "reduction_factor": 2},
               "hyperband": {"min_resource": 1, "max_resource": 4, "reduction_factor": 2},
               "wilcoxon": {"n_startup_steps": 0, "p_threshold": 0.5},
               "patient": {"patience": 0, "n_startup_trials": 2}}[name]
    raw = tiny_config_dict(tmp_path, study={"n_trials": len(rewards)},
                           train={"stage1_epochs": 3, "stage1_validations": 3},
                           pruner={"name": name, **options})
    study = run_search(parse_config(raw))
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["COMPLETE"] * 2  # the first, and the best at every step
    assert "PRUNED" in states[3:]  # the weak trials stop inside stage 1
    for trial in study.trials:
        values = trial.user_attrs["validation_values"]
        assert values == [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        if trial.state.name == "PRUNED":
            assert len(values) <= 3 and "reward_stage2" not in trial.user_attrs
            assert trial.user_attrs["reward_stage1"] == values[-1]
        else:  # steps 1-3 inside and at the end of stage 1, 4 after stage 2
            assert sorted(trial.intermediate_values) == [1, 2, 3, 4]


def test_multi_objective_successive_halving_compares_values_at_the_same_step(
        tmp_path: Path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module

    rewards = [[0.5, 0.6], [0.55, 0.7], [0.1, 0.8], [0.52, 0.2]]
    monkeypatch.setattr(objective_module, "train_architecture", rung_trainer(rewards))
    raw = tiny_config_dict(
        tmp_path, study={"n_trials": 4, "directions": ["maximize", "minimize"],
                         "metrics": ["reward", "params_generated"]},
        train={"stage1_epochs": 2, "stage1_validations": 2},
        pruner={"name": "successive_halving", "reduction_factor": 2})
    study = run_search(parse_config(raw))
    # Rungs at steps 1 and 2 (factor 2), each keeping the best len // 2 (at least one):
    # trial 1 is the best at both; trial 2's 0.1 is not the best of {0.5, 0.55, 0.1};
    # trial 3's 0.52 is in the best two of {0.5, 0.55, 0.1, 0.52} at step 1, but its 0.2
    # is not the best of {0.6, 0.7, 0.2} at step 2 (trial 2 never reached it).
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert study.trials[2].user_attrs["validation_values"] == [0.1]
    assert study.trials[3].user_attrs["validation_values"] == [0.52, 0.2]


def test_multi_rung_pruners_need_several_validations(tmp_path: Path) -> None:
    raw = tiny_config_dict(tmp_path, pruner={"name": "successive_halving"})
    with pytest.raises(ConfigError, match="stage1_validations >= 2"):
        run_search(parse_config(raw))
    raw = tiny_config_dict(tmp_path, train={"stage1_epochs": 2, "stage1_validations": 3})
    with pytest.raises(ConfigError, match="stage1_validations must be between 1 and"):
        parse_config(raw)
    assert not (tmp_path / "study.db").exists()


@pytest.mark.slow
def test_the_shipped_successive_halving_config_validates_inside_stage_1(tmp_path: Path) -> None:
    """studies/template_successive_halving.toml with tiny data: real training reports
    steps 1-3 inside stage 1 and 4 after stage 2, and Optuna's pruner acts on them."""
    from nas_optuna.config import config_to_dict, load_config

    root = Path(__file__).resolve().parents[1]
    raw = config_to_dict(load_config(root / "studies" / "template_successive_halving.toml"))
    tiny = tiny_config_dict(tmp_path, study={"n_trials": 4})
    raw.update(study=tiny["study"], data=tiny["data"], artifacts={"enabled": False},
               train={**raw["train"], **{k: tiny["train"][k] for k in (
                   "batch_size", "warmup_epochs", "device", "stem_weights", "cache_dir")}},
               cost={"measure_latency": False})
    study = run_search(parse_config(raw))
    assert isinstance(study.pruner, optuna.pruners.SuccessiveHalvingPruner)
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        if trial.state.name == "COMPLETE":
            assert steps == [1, 2, 3, 4]
        else:
            assert trial.state.name == "PRUNED" and steps[-1] in (1, 3)
