"""Costs in the search: budgets (constraints, fast rejection), penalties, Pareto studies."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest

from nas_optuna.config import parse_config
from nas_optuna.cost import count_parameters
from nas_optuna.exceptions import ConfigError
from nas_optuna.study import run_search
from search_spaces import get_space
from tests.conftest import fake_trainer, tiny_config_dict


def test_budget_rejects_architectures_before_training(tmp_path: Path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module

    trained: list[int] = []
    train = fake_trainer([0.5] * 12)

    def counting_train(network, *args, **kwargs):  # noqa: ANN001
        trained.append(count_parameters(network.decoder))
        return train(network, *args, **kwargs)

    monkeypatch.setattr(objective_module, "train_architecture", counting_train)
    # The median size of random architectures splits them into feasible and not.
    space = get_space("template")
    limit = int(statistics.median(
        count_parameters(space.build_decoder(space.random_architecture(seed=i), 4))
        for i in range(15)))
    raw = tiny_config_dict(tmp_path, study={"n_trials": 12}, sampler={"name": "tpe"},
                           cost={"budget": {"params_generated": limit}})
    study = run_search(parse_config(raw))
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    accepted = [t for t in study.trials if "rejected" not in t.user_attrs]
    assert rejected and accepted, "the limit should split the random architectures"
    for trial in study.trials:
        over = trial.user_attrs["params_generated"] - limit
        assert trial.constraints == {"params_generated": pytest.approx(over)}
    for trial in rejected:
        assert trial.state.name == "COMPLETE" and trial.value == 0.0
        assert "reward_stage1" not in trial.user_attrs  # no compute spent
        assert "params_generated" in trial.user_attrs["rejected"]
    assert len(trained) == len(accepted)
    assert all(size <= limit for size in trained)
    # Optuna's best trial honours the constraint.
    assert study.best_trial.constraints["params_generated"] <= 0


@pytest.mark.parametrize("pareto", [False, True], ids=["reward", "reward-latency"])
def test_a_parameter_budget_rejects_before_anything_is_timed(tmp_path: Path, monkeypatch,
                                                             pareto: bool) -> None:
    from nas_optuna import measure
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.5] * 6))
    timed: list[str] = []
    for name in ("count_macs", "measure_peak_memory", "measure_latency"):
        real = getattr(measure, name)
        monkeypatch.setattr(measure, name, lambda *a, _n=name, _r=real, **k: (
            timed.append(_n), _r(*a, **k))[1])
    study = {"n_trials": 4}
    if pareto:
        study.update(directions=["maximize", "minimize"], metrics=["reward", "latency_ms"])
    raw = tiny_config_dict(tmp_path, study=study, cost={"budget": {"params_generated": 1}})
    trials = run_search(parse_config(raw)).trials
    assert all("rejected" in t.user_attrs for t in trials)  # 1 parameter: nothing fits
    for trial in trials:
        assert trial.constraints == {"params_generated": pytest.approx(
            trial.user_attrs["params_generated"] - 1)}
    if pareto:  # the objective needs the latency: it is measured, nothing dearer skipped
        assert all(t.values[1] == t.user_attrs["latency_ms"] for t in trials)
        assert timed.count("measure_latency") == 4
    else:
        assert timed == []
        assert all("macs" not in t.user_attrs and "latency_ms" not in t.user_attrs
                   for t in trials)


def test_penalty_scalarises_reward_and_cost(tmp_path: Path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.5, 0.6, 0.4]))
    raw = tiny_config_dict(
        tmp_path, study={"n_trials": 3, "metrics": ["penalised_reward"]},
        cost={"penalty": {"metric": "params_generated", "weight": 0.2, "reference": 100_000}},
    )
    study = run_search(parse_config(raw))
    assert study.metric_names == ["penalised_reward"]
    for trial in study.trials:
        penalty = 0.2 * trial.user_attrs["params_generated"] / 100_000
        assert trial.user_attrs["cost_penalty"] == pytest.approx(penalty)
        assert trial.value == pytest.approx(trial.user_attrs["reward_stage2"] - penalty)


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "ppo"])
def test_pareto_study_of_reward_and_latency(tmp_path: Path, monkeypatch, sampler: str) -> None:
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.5, 0.6, 0.4]))
    raw = tiny_config_dict(tmp_path, study={"n_trials": 3, "directions": ["maximize", "minimize"],
                                            "metrics": ["reward", "latency_ms"]},
                           sampler={"name": sampler})
    study = run_search(parse_config(raw))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    for trial in study.trials:
        assert trial.values[1] == trial.user_attrs["latency_ms"]
        protocol = trial.user_attrs["latency_protocol"]
        assert protocol["batch"] == 1 and protocol["device"]["device_type"] == "cpu"
        assert trial.user_attrs["peak_memory_mb"] > 0
    assert study.best_trials


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"cost": {"budget": {"flops": 10}}}, "unknown cost 'flops'"),
        ({"cost": {"budget": {"latency_ms": -1}}}, "positive number"),
        ({"cost": {"penalty": {"metric": "macs", "weight": 0.1, "reference": 1e6}}},
         "must include 'penalised_reward'"),
        ({"study": {"metrics": ["penalised_reward"]}}, "needs a [cost] penalty"),
        ({"study": {"metrics": ["penalised_reward"]},
          "cost": {"penalty": {"metric": "macs", "weight": 0.1}}}, "reference"),
        ({"cost": {"budget": {"latency_ms": 5}, "measure_latency": False}},
         "measure_latency must be true"),
    ],
)
def test_bad_cost_settings_are_one_line_config_errors(
    tmp_path: Path, sections: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tiny_config_dict(tmp_path, **sections))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'x.db'}")


def test_an_architecture_proposed_again_is_not_measured_again(tmp_path: Path,
                                                               monkeypatch) -> None:
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.5] * 3))
    measured: list[int] = []
    real_measure = objective_module.measure_network

    def counting_measure(network, *args, **kwargs):  # noqa: ANN001
        measured.append(count_parameters(network.decoder))
        return real_measure(network, *args, **kwargs)

    monkeypatch.setattr(objective_module, "measure_network", counting_measure)
    draft = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    get_space("template").suggest(draft)
    raw = tiny_config_dict(tmp_path, study={"n_trials": 3})
    study = optuna.create_study(study_name="tiny", storage=raw["study"]["storage"],
                                direction="maximize")
    study.enqueue_trial(draft.params)
    study.enqueue_trial(draft.params)
    study = run_search(parse_config(raw))
    first, again, other = study.trials
    assert first.params == again.params != other.params
    assert len(measured) == 2  # the repeated architecture reused its measurement
    for key in ("params_generated", "macs", "latency_ms", "peak_memory_mb"):
        assert again.user_attrs[key] == first.user_attrs[key]
