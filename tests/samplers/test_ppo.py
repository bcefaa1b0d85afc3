"""PPOSampler: valid choices, fallback, stored decisions, rebuild from storage, learning."""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

from nas_optuna.config import load_config
from nas_optuna.exceptions import ConfigError
from nas_optuna.samplers import PPOSampler
from nas_optuna.samplers._learner import _pad
from nas_optuna.samplers._ppo import _sample
from nas_optuna.study import SAMPLERS, build_sampler

ROOT = Path(__file__).resolve().parents[2]


class RecordingSampler(BaseSampler):
    """A fallback that returns fixed values and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.hooks: list[str] = []

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        self.asked.append(param_name)
        if isinstance(param_distribution, FloatDistribution):
            return param_distribution.low
        assert isinstance(param_distribution, IntDistribution)
        return param_distribution.high

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.hooks.append("before")

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.hooks.append("after")


def toy_objective(trial: Trial) -> float:
    """Six 4-way choices; the reward is the fraction of them equal to 2 (random: 0.25)."""
    choices = [trial.suggest_categorical(f"p{i}", [0, 1, 2, 3]) for i in range(6)]
    return sum(c == 2 for c in choices) / 6


def rewards(sampler: PPOSampler) -> list[float]:
    assert sampler._learner is not None
    return [t.reward for t in sampler._learner.buffer]


def test_categorical_and_int_choices_are_always_valid() -> None:
    def objective(trial: Trial) -> float:
        mixed = trial.suggest_categorical("mixed", [1, "a", None, 2.5, True])
        stepped = trial.suggest_int("stepped", -3, 9, step=3)
        wide = trial.suggest_int("wide", 1, 64)
        if mixed == "a":
            trial.suggest_categorical("only_if_a", ["x", "y"])
        return float(stepped + wide)

    study = optuna.create_study(sampler=PPOSampler(seed=1))
    study.optimize(objective, n_trials=40)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        assert trial.params["mixed"] in [1, "a", None, 2.5, True]
        assert trial.params["stepped"] in [-3, 0, 3, 6, 9]
        assert type(trial.params["stepped"]) is int
        assert 1 <= trial.params["wide"] <= 64
        assert ("only_if_a" in trial.params) == (trial.params["mixed"] == "a")
    # All of them went through the controller: one decision each.
    assert all(len(t.system_attrs["ppo:actions"]) == len(t.params) for t in study.trials)


def test_floats_log_ints_and_wide_ints_go_to_the_fallback() -> None:
    fallback = RecordingSampler()
    sampler = PPOSampler(seed=0, fallback_sampler=fallback, max_int_choices=64)

    def objective(trial: Trial) -> float:
        trial.suggest_categorical("op", ["a", "b"])
        x = trial.suggest_float("x", 0.5, 2.0)
        y = trial.suggest_int("y", 1, 100, log=True)
        z = trial.suggest_int("z", 0, 64)  # 65 values > max_int_choices
        w = trial.suggest_int("w", 0, 126, step=2)  # 64 values: modelled
        assert (x, y, z) == (0.5, 100, 64)
        return float(w)

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=3)
    assert fallback.asked == ["x", "y", "z"] * 3
    assert fallback.hooks == ["before", "after"] * 3
    for trial in study.trials:
        names = [name for name, _, _ in trial.system_attrs["ppo:actions"]]
        assert names == ["op", "w"]
        assert trial.params["w"] % 2 == 0


def test_decisions_and_log_probs_are_stored_in_system_attrs() -> None:
    study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=0))
    study.optimize(toy_objective, n_trials=5)
    for trial in study.trials:
        actions = trial.system_attrs["ppo:actions"]
        log_probs = trial.system_attrs["ppo:log_probs"]
        assert actions == [[f"p{i}", trial.params[f"p{i}"], 4] for i in range(6)]
        assert len(log_probs) == 6
        assert all(isinstance(lp, float) and lp <= 0.0 for lp in log_probs)
        # A (nearly) untrained controller is close to uniform over 4 choices.
        assert all(abs(lp - math.log(0.25)) < 0.25 for lp in log_probs)
        json.dumps([actions, log_probs])
    study_attrs = study._storage.get_study_system_attrs(study._study_id)
    assert study_attrs["ppo:init_seed"] == 0  # the seed, stored for rebuilding samplers


def _policy(sampler: PPOSampler) -> dict[str, torch.Tensor]:
    controller = sampler.controller
    assert controller is not None
    tensors = {f"lstm.{k}": v for k, v in controller.lstm.state_dict().items()}
    tensors["start"] = controller.start.detach()
    for index, (name, n) in enumerate(controller.kinds):
        tensors[f"{name}/{n}/embedding"] = controller.embeddings[index].weight.detach()
        tensors[f"{name}/{n}/head"] = controller.heads[index].weight.detach()
    return tensors


def test_a_new_sampler_rebuilds_the_policy_from_the_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'ppo.db'}"
    sampler_a = PPOSampler(seed=0)
    study_a = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                  sampler=sampler_a)
    study_a.optimize(toy_objective, n_trials=40)
    sampler_a.catch_up(study_a)  # the last trial is learned before the next one starts
    assert sampler_a.n_learned == 40

    # Another seed: the initial weights must come from the study, not from the seed.
    sampler_b = PPOSampler(seed=123)
    study_b = optuna.load_study(study_name="s", storage=storage, sampler=sampler_b)
    assert sampler_b.catch_up(study_b) == 40
    assert sampler_b.catch_up(study_b) == 0  # incremental
    policy_a, policy_b = _policy(sampler_a), _policy(sampler_b)
    assert policy_a.keys() == policy_b.keys()
    changed = [k for k in policy_a if not torch.allclose(policy_a[k], policy_b[k], atol=1e-6)]
    assert changed == []
    assert sampler_a._learner is not None and sampler_b._learner is not None
    assert sampler_a._learner.baseline == pytest.approx(sampler_b._learner.baseline)
    # ... and it learned something: the policy is not its initial self.
    fresh = PPOSampler(seed=0)
    fresh.catch_up(optuna.create_study(sampler=fresh))
    assert not torch.allclose(policy_a["start"], fresh.controller.start.detach())

    # B goes on learning from trials it runs itself.
    study_b.optimize(toy_objective, n_trials=2)
    sampler_b.catch_up(study_b)
    assert sampler_b.n_learned == 42


def test_learns_a_toy_objective_well_above_random() -> None:
    study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=0))
    study.optimize(toy_objective, n_trials=200)
    late = [t.value for t in study.trials[150:200]]
    # Random search averages 0.25 with a standard error of 0.025 over 50 trials.
    assert sum(late) / len(late) > 0.6


def _pruned_objective(trial: Trial) -> float:
    trial.suggest_categorical("op", ["a", "b"])
    if trial.number == 1:
        trial.report(0.9, step=0)
        trial.report(0.3, step=1)
        raise optuna.TrialPruned()
    if trial.number == 2:
        raise optuna.TrialPruned()  # no intermediate value: nothing to learn from
    return 1.0


@pytest.mark.parametrize("direction,sign", [("maximize", 1.0), ("minimize", -1.0)])
def test_pruned_trials_score_their_last_intermediate_value(direction: str, sign: float) -> None:
    sampler = PPOSampler(seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.optimize(_pruned_objective, n_trials=4)
    sampler.catch_up(study)
    assert rewards(sampler) == [sign * 1.0, sign * 0.3, sign * 1.0]


def test_pruned_trials_use_intermediate_values_not_the_trial_value() -> None:
    sampler = PPOSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    distribution = CategoricalDistribution(["a", "b"])
    study.add_trial(optuna.create_trial(
        state=TrialState.PRUNED, params={"op": "a"}, distributions={"op": distribution},
        intermediate_values={0: 0.9, 3: 0.2, 1: 0.7},
        system_attrs={"ppo:actions": [["op", 0, 2]], "ppo:log_probs": [-0.69]},
    ))
    assert sampler.catch_up(study) == 1
    assert rewards(sampler) == [0.2]


def _failing_objective(trial: Trial) -> float:
    trial.suggest_categorical("op", ["a", "b"])
    if trial.number % 2:
        raise ValueError("out of memory")
    return 0.5


@pytest.mark.parametrize("fail_penalty,expected", [(None, [0.5, 0.5]),
                                                   (-1.0, [0.5, -1.0, 0.5, -1.0])])
def test_failed_trials_are_skipped_unless_a_penalty_is_given(
    fail_penalty: float | None, expected: list[float]
) -> None:
    sampler = PPOSampler(seed=0, fail_penalty=fail_penalty)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_failing_objective, n_trials=4, catch=(ValueError,))
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 2
    sampler.catch_up(study)
    assert rewards(sampler) == expected


def test_minimisation_flips_the_sign() -> None:
    sampler = PPOSampler(seed=0)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(lambda t: 2.0 + t.suggest_int("k", 0, 3), n_trials=5)
    sampler.catch_up(study)
    assert rewards(sampler) == [-t.value for t in study.trials]


def test_two_threads_keep_their_trials_apart() -> None:
    sampler = PPOSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(toy_objective, n_trials=24, n_jobs=2)
    assert len(study.trials) == 24
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        # Each trial's stored decisions are its own parameters, in its own order.
        actions = trial.system_attrs["ppo:actions"]
        assert actions == [[f"p{i}", trial.params[f"p{i}"], 4] for i in range(6)]
    sampler.catch_up(study)
    assert sampler.n_learned == 24
    assert sampler._rollouts == {} and sampler._decisions == {}


def _two_objectives(trial: Trial) -> tuple[float, float]:
    k = trial.suggest_int("k", 1, 4)
    return 0.1 * k, 10.0 * k


@pytest.mark.parametrize(
    "options,reward",
    [
        ({}, lambda q, c: (q - c) / 2),
        ({"weights": [1.0, 0.25]}, lambda q, c: q - 0.25 * c),
        ({"mnasnet_target": 20.0, "mnasnet_w": -0.07}, lambda q, c: q * (c / 20.0) ** -0.07),
    ],
)
def test_multi_objective_scalarisation(options: dict[str, Any], reward: Any) -> None:
    sampler = PPOSampler(seed=0, **options)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_two_objectives, n_trials=6)
    sampler.catch_up(study)
    expected = [reward(*t.values) for t in study.trials]
    assert rewards(sampler) == pytest.approx(expected)


def test_scalarisation_options_are_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        PPOSampler(weights=[1.0, 1.0], mnasnet_target=1.0)
    study = optuna.create_study(directions=["maximize"] * 3, sampler=PPOSampler(weights=[1, 2]))
    with pytest.raises(ValueError, match="2 weights for a study with 3 objectives"):
        study.optimize(lambda t: (t.suggest_int("k", 0, 1),) * 3, n_trials=1, catch=())
    study = optuna.create_study(directions=["maximize"] * 3,
                                sampler=PPOSampler(mnasnet_target=1.0))
    with pytest.raises(ValueError, match="two objectives"):
        study.optimize(lambda t: (t.suggest_int("k", 0, 1),) * 3, n_trials=1, catch=())


def test_seeded_runs_are_reproducible() -> None:
    def objective(trial: Trial) -> float:
        return toy_objective(trial) + trial.suggest_float("x", 0.0, 0.01)

    runs = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=7))
        study.optimize(objective, n_trials=25)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]
    other = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=8))
    other.optimize(objective, n_trials=25)
    assert [t.params for t in other.trials] != runs[0]


def test_whole_buffer_updates_replay_exactly() -> None:
    sampler_a = PPOSampler(seed=0, batch_size=None)
    study = optuna.create_study(direction="maximize", sampler=sampler_a)
    study.optimize(toy_objective, n_trials=12)
    sampler_a.catch_up(study)
    sampler_b = PPOSampler(seed=5, batch_size=None)
    sampler_b.catch_up(study)
    policy_a, policy_b = _policy(sampler_a), _policy(sampler_b)
    assert all(torch.allclose(policy_a[k], policy_b[k], atol=1e-6) for k in policy_a)


def test_skipping_clipped_trajectories_leaves_the_update_unchanged() -> None:
    sampler = PPOSampler(seed=0, batch_size=None, learning_rate=3e-2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(toy_objective, n_trials=30)
    learner = sampler._learner
    assert learner is not None and learner.baseline is not None
    twin = copy.deepcopy(learner)
    buffer = list(learner.buffer)
    advantages = torch.tensor([t.reward for t in buffer]) - learner.baseline
    learner._step(buffer, advantages)

    # Reference: the clipped objective over every trajectory of the buffer.
    kinds, actions, old_log_probs, mask = _pad(buffer)
    log_probs, _ = twin.controller.log_probs(kinds, actions, with_entropy=False)
    ratio = twin._ratio(log_probs, old_log_probs, mask)
    clipped = ratio.clamp(0.9, 1.1)
    loss = -torch.minimum(ratio * advantages, clipped * advantages).mean()
    twin.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(twin.controller.parameters(), 2.0)
    twin.optimizer.step()

    inactive = ((ratio > 1.1) & (advantages > 0)) | ((ratio < 0.9) & (advantages < 0))
    assert inactive.sum() > 0  # the shortcut had something to skip
    for mine, reference in zip(learner.controller.parameters(), twin.controller.parameters()):
        assert torch.allclose(mine, reference, atol=1e-6)


def test_sampling_follows_the_softmax() -> None:
    logits = [0.0, 1.0, -2.0, 0.5]
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
    draws = [_sample(logits, (i + 0.5) / 10_000) for i in range(10_000)]
    for action in range(4):
        frequency = sum(a == action for a, _ in draws) / len(draws)
        assert frequency == pytest.approx(float(expected[action]), abs=1e-3)
    for action, log_prob in draws[::997]:
        assert log_prob == pytest.approx(math.log(float(expected[action])), abs=1e-9)
    assert _sample([0.0, -1e6], 0.9999999)[0] == 0  # never an action of probability 0


def test_pickled_sampler_keeps_working() -> None:
    sampler = PPOSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(toy_objective, n_trials=3)
    copy = pickle.loads(pickle.dumps(sampler))
    study.sampler = copy
    study.optimize(toy_objective, n_trials=2)
    assert copy.n_learned == 4


def test_selectable_by_name_with_options() -> None:
    assert "ppo" in SAMPLERS
    sampler = build_sampler("ppo", {"learning_rate": 1e-3, "fail_penalty": 0.0,
                                    "weights": [1.0]}, seed=0)
    assert isinstance(sampler, PPOSampler)
    assert sampler._learner_options["learning_rate"] == 1e-3
    assert sampler._reward_options["fail_penalty"] == 0.0
    with pytest.raises(ConfigError) as info:
        build_sampler("ppo", {"lr": 1e-3}, seed=0)
    message = str(info.value)
    assert message.startswith("sampler 'ppo' has no option 'lr'; accepted: ")
    assert "learning_rate" in message and "seed" not in message.split("accepted: ")[1]
    assert "\n" not in message
    with pytest.raises(ConfigError, match="sampler 'ppo': PPOSampler: buffer_size"):
        build_sampler("ppo", {"buffer_size": 0}, seed=0)
    with pytest.raises(ConfigError, match="fallback_sampler must be an Optuna sampler"):
        build_sampler("ppo", {"fallback_sampler": "tpe"}, seed=0)


def test_study_config_selects_ppo() -> None:
    config = load_config(ROOT / "studies" / "template_ppo.toml")
    assert config.sampler.name == "ppo"
    sampler = build_sampler(config.sampler.name, dict(config.sampler.options),
                            config.study.seed)
    assert isinstance(sampler, PPOSampler)
    assert sampler._reward_options["fail_penalty"] == 0.0
