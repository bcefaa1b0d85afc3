"""Workers against a real PostgreSQL server: the budget is exact, crashes lose nothing.

Skipped (with how to enable) without a server, failed instead when
``NAS_OPTUNA_REQUIRE_POSTGRES=1``; see conftest.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest

from nas_optuna.samplers import PPOSampler
from nas_optuna.workers import WORKER_ATTR, trial_budget
from tests.distributed.conftest import load, observe, training_trial, worker_config

FAIL = optuna.trial.TrialState.FAIL
COMPLETE = optuna.trial.TrialState.COMPLETE

# Worker processes: end-to-end, a few seconds each.
pytestmark = pytest.mark.slow


def _sql(url: str, query: str, *args: object) -> tuple:
    import psycopg2

    with psycopg2.connect(url.replace("+psycopg2", "")) as connection:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchone()


def test_four_workers_run_exactly_the_study_budget(tmp_path: Path, postgres_url: str,
                                                   start_worker) -> None:
    name = f"four-{uuid.uuid4().hex[:6]}"
    n_trials = 4 * 2
    config = worker_config(tmp_path, postgres_url, name=name, n_trials=n_trials)
    workers = [start_worker(config) for _ in range(4)]
    codes = [worker.wait(150) for worker in workers]
    assert codes == [0] * 4, [w.stderr[-1000:] for w in workers]

    trials = load(postgres_url, name).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [COMPLETE] * n_trials
    assert sorted(t.number for t in trials) == list(range(n_trials))
    # Each worker start has its own sampler seed: nobody re-draws another's architecture.
    assert len({t.user_attrs["genotype"] for t in trials}) == n_trials
    assert len({t.system_attrs[WORKER_ATTR]["pid"] for t in trials}) >= 2
    # The rows themselves: one per trial, one value each, two intermediate values each.
    study_id = """(SELECT study_id FROM studies WHERE study_name = %s)"""
    assert _sql(postgres_url, "SELECT count(*), count(DISTINCT number), count(DISTINCT trial_id) "
                f"FROM trials WHERE study_id = {study_id}", name) == (n_trials,) * 3
    assert _sql(postgres_url, "SELECT count(*) FROM trial_values v JOIN trials t USING (trial_id)"
                f" WHERE t.study_id = {study_id}", name) == (n_trials,)
    assert _sql(postgres_url, "SELECT count(*) FROM trial_intermediate_values v JOIN trials t "
                f"USING (trial_id) WHERE t.study_id = {study_id}", name) == (2 * n_trials,)


@pytest.mark.parametrize(("sampler", "kills"), [("random", 3), ("ppo", 2)])
def test_killed_workers_trials_fail_and_are_retried(tmp_path: Path, postgres_url: str,
                                                    start_worker, sampler: str,
                                                    kills: int) -> None:
    name = f"kill-{sampler}-{uuid.uuid4().hex[:6]}"
    n_trials = 4
    config = worker_config(tmp_path, postgres_url, name=name, n_trials=n_trials,
                           sampler=sampler)
    study = observe(postgres_url, name)
    killed = []
    for _ in range(kills):
        worker = start_worker(config, stage_s=2.0)
        # Sampled, stored (PPO: its decisions too), now in stage 1.
        trial = training_trial(study, worker,
                               system_attr="ppo:log_probs" if sampler == "ppo" else None)
        worker.kill()
        killed.append(trial.number)
    last = start_worker(config)
    assert last.wait(120) == 0, last.stderr[-2000:]

    trials = load(postgres_url, name).get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert sorted(by_number) == list(range(len(trials)))  # unique, gap-free numbers
    for number in killed:
        assert by_number[number].state == FAIL
        retries = [t for t in trials if number in t.system_attrs.get("retry_history", ())]
        assert retries, f"killed trial {number} was not retried"
        assert all(r.params == by_number[number].params for r in retries)
    budget = trial_budget(trials)
    assert (budget.counted, budget.running, budget.waiting) == (n_trials, 0, 0)
    assert budget.retried == len(killed)
    complete = [t for t in trials if t.state == COMPLETE]
    assert len(complete) == n_trials  # every counted trial completed: none lost
    if sampler == "ppo":
        # The killed trials' decisions were stored before the kill; their retries carry
        # them, so a sampler rebuilt from the storage learns from every completed trial.
        assert all("ppo:log_probs" in t.system_attrs for t in complete)
        assert PPOSampler(seed=0).catch_up(load(postgres_url, name)) == n_trials
