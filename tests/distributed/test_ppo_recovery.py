"""PPOSampler learns from what the storage holds across crashes, retries and Ctrl-C."""

from __future__ import annotations

import time

import optuna
import pytest

from nas_optuna.samplers import PPOSampler
from nas_optuna.samplers._ppo import _FLUSH_DELAY
from nas_optuna.storage import RetryCallback

OPS = ["conv", "pool", "skip"]


def objective(trial: optuna.Trial) -> float:
    ops = [trial.suggest_categorical(f"op{i}", OPS) for i in range(4)]
    return ops.count("conv") / 4


def _running_trial_with(study: optuna.Study, n_ops: int) -> optuna.trial.FrozenTrial:
    """A trial that suggested ``n_ops`` ops, then its worker "died" (never told)."""
    trial = study.ask()
    for i in range(n_ops):
        trial.suggest_categorical(f"op{i}", OPS)
    time.sleep(_FLUSH_DELAY + 0.3)  # the sampler stores the decisions while it trains
    return study._storage.get_trial(trial._trial_id)


def test_decisions_are_stored_while_the_trial_still_runs() -> None:
    study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=0))
    frozen = _running_trial_with(study, 4)
    assert frozen.state == optuna.trial.TrialState.RUNNING
    actions = frozen.system_attrs["ppo:actions"]
    assert [name for name, _, _ in actions] == [f"op{i}" for i in range(4)]
    assert [OPS[a] for _, a, _ in actions] == [frozen.params[f"op{i}"] for i in range(4)]
    assert len(frozen.system_attrs["ppo:log_probs"]) == 4


@pytest.mark.parametrize("suggested", [4, 2])
def test_a_retried_trial_is_learned_once_with_its_decisions(suggested: int) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=PPOSampler(seed=0, fail_penalty=0.0))
    killed = _running_trial_with(study, suggested)
    # What the heartbeat check does to a dead worker's trial: FAIL, then a retry.
    storage.set_trial_state_values(killed._trial_id, optuna.trial.TrialState.FAIL)
    RetryCallback(max_retry=3)(study, storage.get_trial(killed._trial_id))

    study.optimize(objective, n_trials=1)  # pops the retry
    retry = study.trials[-1]
    assert retry.system_attrs["retry_history"] == [killed.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    for name, value in killed.params.items():
        assert retry.params[name] == value
    # The retry's stored decisions: the inherited ones, then (killed while suggesting) the
    # rest, decided after replaying the inherited ones through the LSTM.
    actions = retry.system_attrs["ppo:actions"]
    assert [name for name, _, _ in actions] == [f"op{i}" for i in range(4)]
    assert actions[:suggested] == killed.system_attrs["ppo:actions"]
    assert [OPS[a] for _, a, _ in actions] == [retry.params[f"op{i}"] for i in range(4)]

    # A sampler rebuilt from the storage learns the retry, and not the retried FAIL trial
    # (even with a fail penalty): the same decisions are learned once.
    fresh = PPOSampler(seed=0, fail_penalty=0.0)
    assert fresh.catch_up(study) == 1


def test_resumed_and_parallel_samplers_learn_every_trial_in_the_storage(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'ppo.db'}"
    first = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=PPOSampler(seed=0))
    first.optimize(objective, n_trials=3)
    # A second worker (another sampler object on the same storage) adds trials...
    second = optuna.load_study(study_name="s", storage=storage, sampler=PPOSampler(seed=1))
    second.optimize(objective, n_trials=2)
    # ...and the first worker's sampler catches up on them before its next decision.
    first.optimize(objective, n_trials=1)
    assert first.sampler.n_learned == 5
    assert PPOSampler(seed=2).catch_up(optuna.load_study(study_name="s", storage=storage)) == 6
