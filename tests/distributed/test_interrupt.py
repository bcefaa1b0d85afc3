"""Ctrl-C stops a worker cleanly and the same command resumes; ``--n-workers`` runs K."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import optuna
import pytest

from nas_optuna.workers import INTERRUPTED, WORKER_ATTR, trial_budget
from tests.distributed.conftest import load, observe, training_trial, wait_for, worker_config

COMPLETE = optuna.trial.TrialState.COMPLETE
FAIL = optuna.trial.TrialState.FAIL
WAITING = optuna.trial.TrialState.WAITING

# Worker processes: end-to-end, a few seconds each.
pytestmark = pytest.mark.slow


def test_ctrl_c_fails_the_running_trial_and_the_rerun_resumes(tmp_path: Path,
                                                              start_worker) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = worker_config(tmp_path, storage, n_trials=2)
    worker = start_worker(config, stage_s=2.0)
    interrupted = training_trial(observe(storage), worker, timeout=90)
    worker.interrupt()
    assert worker.wait(60) == 130
    assert worker.stderr.strip().splitlines() == ["nas-optuna: interrupted"]

    trials = load(storage).get_trials(deepcopy=False)
    failed = trials[interrupted.number]
    assert failed.state == FAIL
    assert failed.user_attrs["fail_reason"] == INTERRUPTED
    (retry,) = [t for t in trials if t.state == WAITING]
    assert retry.system_attrs["retry_history"] == [interrupted.number]
    assert retry.params == failed.params
    assert "fail_reason" not in retry.user_attrs

    again = start_worker(config)
    assert again.wait(90) == 0, again.stderr[-2000:]
    trials = load(storage).get_trials(deepcopy=False)
    rerun = trials[retry.number]
    assert rerun.state == COMPLETE and rerun.params == failed.params
    budget = trial_budget(trials)
    assert (budget.counted, budget.running, budget.waiting, budget.retried) == (2, 0, 0, 1)


def test_n_workers_starts_local_worker_processes(tmp_path: Path, start_worker) -> None:
    # Real (tiny) training here: the children are plain `nas-optuna search` processes.
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = worker_config(tmp_path, storage, n_trials=5, train={"stage1_epochs": 3})
    parent = start_worker(config, "--n-workers", "2", module="nas_optuna.cli")
    assert parent.wait(150) == 0, parent.stderr[-2000:]
    trials = load(storage).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [COMPLETE] * 5
    assert "[worker 1] study 'dist'" in parent.stdout
    assert len({t.system_attrs[WORKER_ATTR]["pid"] for t in trials}) == 2


def test_ctrl_c_reaches_every_local_worker(tmp_path: Path, start_worker) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = worker_config(tmp_path, storage, n_trials=6, train={"stage1_epochs": 30})
    parent = start_worker(config, "--n-workers", "2", module="nas_optuna.cli")
    study = observe(storage)

    def both_running() -> bool:
        running = study().get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return len({t.system_attrs.get(WORKER_ATTR, {}).get("pid") for t in running}) == 2

    wait_for(both_running, 90, "a trial in each worker")
    time.sleep(0.5)
    parent.process.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the parent
    assert parent.wait(90) == 130
    assert parent.stderr.strip().splitlines() == ["nas-optuna: interrupted"]
    trials = load(storage).get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == FAIL]
    assert len(failed) == 2
    assert all(t.user_attrs["fail_reason"] == INTERRUPTED for t in failed)
    assert len([t for t in trials if t.state == WAITING]) == 2  # both re-queued
