"""Storage URLs, heartbeats and retries, the study lock, the budget, Ctrl-C (in-process)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from nas_optuna.config import parse_config
from nas_optuna.exceptions import ConfigError
from nas_optuna.storage import (
    HEARTBEAT_ATTR,
    SQLITE_TIMEOUT_S,
    RetryCallback,
    file_lock,
    is_in_memory,
    mask_url,
    open_storage,
    study_lock,
    with_driver,
)
from nas_optuna.workers import (
    INTERRUPTED,
    WORKER_ATTR,
    WORKER_INDEX_ATTR,
    _deferred_sigint,
    claim_worker_index,
    optimize,
    trial_budget,
)
from tests.conftest import tiny_config_dict

State = optuna.trial.TrialState
# Some tests play a worker by hand (study.ask outside optimize) on storages with heartbeats.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


# --- URLs -------------------------------------------------------------------------------
def test_sqlite_url_gives_an_rdb_storage_with_heartbeat_retry_and_timeout(tmp_path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=5,
                           grace_period=11, max_retry=2)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 5 and storage.grace_period == 11
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, RetryCallback) and callback.max_retry == 2
    assert storage.engine_kwargs["connect_args"]["timeout"] == SQLITE_TIMEOUT_S
    plain = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=0)
    assert plain.get_heartbeat_interval() is None
    assert plain.get_heartbeat_stale_trial_callback() is None


def test_journal_urls_follow_sqlite_path_convention(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_storage("journal:///relative.log")
    assert isinstance(relative, optuna.storages.journal.JournalStorage)
    assert (tmp_path / "relative.log").exists()
    absolute = tmp_path / "sub" / "absolute.log"
    absolute.parent.mkdir()
    open_storage(f"journal:///{absolute}")  # journal:////tmp/...
    assert absolute.exists()


@pytest.mark.parametrize(("url", "message"), [
    ("journal://no-slash.log", "must look like journal:///FILE"),
    ("journal:///missing/dir/x.log", "folder missing/dir does not exist"),
    ("sqlite:////nonexistent-dir/x.db", "folder /nonexistent-dir does not exist"),
    ("nas-optuna.db", "is not a URL"),
    ("nosuchdb://host/x", "cannot open storage nosuchdb://host/x"),
    ("postgresql://user:secret@127.0.0.1:1/db", "cannot open storage "
     "postgresql://user:***@127.0.0.1:1/db"),
    ("grpc://localhost", "must look like grpc://HOST:PORT"),
    ("redis://127.0.0.1:1/0", "cannot open storage redis://127.0.0.1:1/0"),
])
def test_bad_or_unreachable_storages_are_one_line_errors(url: str, message: str,
                                                         tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    text = str(info.value)
    assert message in text and "\n" not in text and "secret" not in text


def test_grpc_without_a_proxy_says_how_to_start_one(monkeypatch) -> None:
    monkeypatch.setenv("NAS_OPTUNA_GRPC_TIMEOUT", "0.5")
    with pytest.raises(ConfigError, match="nas-optuna storage-proxy"):
        open_storage("grpc://127.0.0.1:1")


def test_url_helpers() -> None:
    assert mask_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert is_in_memory("sqlite:///:memory:") and is_in_memory("sqlite://")
    assert not is_in_memory("sqlite:///x.db")
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; only psycopg2 may be installed.
    assert with_driver("postgresql://h/db").startswith(("postgresql+psycopg://",
                                                        "postgresql+psycopg2://"))
    assert with_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"


def test_study_config_heartbeat_keys_are_validated(tmp_path) -> None:
    study = parse_config(tiny_config_dict(tmp_path)).study
    assert (study.heartbeat_interval, study.grace_period, study.max_retry) == (60, None, 3)
    for values, message in [({"heartbeat_interval": -1}, ">= 0"), ({"max_retry": -2}, ">= 0"),
                            ({"heartbeat_interval": 10, "grace_period": 10}, "longer than"),
                            ({"heartbeat_interval": 1.5}, "must be an int")]:
        with pytest.raises(ConfigError, match=message):
            parse_config(tiny_config_dict(tmp_path, study=values))


# --- heartbeats and retries -------------------------------------------------------------
def test_journal_heartbeat_fails_stale_trials_and_retries_them(tmp_path, monkeypatch) -> None:
    storage = open_storage(f"journal:///{tmp_path / 'j.log'}", heartbeat_interval=1,
                           grace_period=2, max_retry=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    trial.set_user_attr("fail_reason", "should not be inherited")
    silent = study.ask()  # a worker without heartbeats: never stale
    storage.record_heartbeat(trial._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []
    later = time.time() + 3
    monkeypatch.setattr(time, "time", lambda: later)
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.FAIL, State.RUNNING, State.WAITING]
    retry = trials[2]
    assert retry.params == trials[0].params and retry.system_attrs["retry_history"] == [0]
    assert "fail_reason" not in retry.user_attrs
    assert HEARTBEAT_ATTR not in retry.system_attrs
    assert silent.number == 1


def test_retry_respects_max_retry() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, state=State.FAIL)
    RetryCallback(max_retry=0)(study, study.trials[0])
    assert len(study.trials) == 1
    RetryCallback(max_retry=1)(study, study.trials[0])
    assert [t.state for t in study.trials] == [State.FAIL, State.WAITING]


# --- the budget -------------------------------------------------------------------------
def test_trial_budget_counts_retried_failures_once() -> None:
    study = optuna.create_study()
    for state in (State.COMPLETE, State.PRUNED, State.FAIL, State.FAIL):
        study.add_trial(optuna.create_trial(state=state, value=0.0 if state == State.COMPLETE
                                            else None, intermediate_values={1: 0.0}))
    study.ask()  # trial 4 running
    RetryCallback()(study, study.trials[3])  # trial 3 failed and was re-queued as trial 5
    budget = trial_budget(study.get_trials(deepcopy=False))
    assert (budget.counted, budget.running, budget.waiting, budget.retried) == (3, 1, 1, 1)
    assert budget.taken == 5


def _sleepy(seconds: float):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        time.sleep(seconds)
        return x

    return objective


def test_threads_as_workers_run_exactly_n_trials(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    optuna.create_study(study_name="b", storage=open_storage(url))

    def worker(seed: int) -> None:
        study = optuna.load_study(study_name="b", storage=open_storage(url),
                                  sampler=optuna.samplers.RandomSampler(seed))
        optimize(study, _sleepy(0.05), n_trials=7, timeout=None, callbacks=(),
                 lock=lambda: study_lock(url, "b"), retry=None)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = optuna.load_study(study_name="b", storage=url).trials
    assert [t.state for t in trials] == [State.COMPLETE] * 7


def test_queued_trials_run_first_and_only_within_the_budget(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x})
    optimize(study, _sleepy(0), n_trials=2, timeout=None, callbacks=(),
             lock=lambda: study_lock(url, "q"), retry=None)
    assert [(t.state, t.params.get("x")) for t in study.trials] == [
        (State.COMPLETE, 0.1), (State.COMPLETE, 0.2), (State.WAITING, None)]


def test_a_worker_waits_for_a_dead_workers_trial_and_retries_it(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2, max_retry=2)
    study = optuna.create_study(study_name="w", storage=storage)
    for _ in range(2):
        study.optimize(_sleepy(0), n_trials=1)
    # A trial of a worker with heartbeats, which then died: its heartbeat stops.
    dead = study.ask()
    dead.suggest_float("x", 0, 1)
    storage.set_trial_system_attr(dead._trial_id, WORKER_ATTR, {"pid": -1, "heartbeat": 1})
    storage.record_heartbeat(dead._trial_id)
    started = time.monotonic()
    optimize(study, _sleepy(0), n_trials=3, timeout=30, callbacks=(),
             lock=lambda: study_lock(url, "w"), retry=RetryCallback(2), poll_interval=0.5)
    assert time.monotonic() - started >= 1.5  # it waited for the grace period
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.COMPLETE] * 2 + [State.FAIL, State.COMPLETE]
    assert trials[3].params == trials[2].params
    assert trial_budget(trials).counted == 3


def test_a_trial_of_a_worker_without_heartbeats_is_not_waited_for(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    storage = open_storage(url, heartbeat_interval=1)
    study = optuna.create_study(study_name="z", storage=storage)
    study.optimize(_sleepy(0), n_trials=1)
    study.ask()  # left RUNNING by a worker without heartbeats: it holds its place
    started = time.monotonic()
    optimize(study, _sleepy(0), n_trials=2, timeout=None, callbacks=(),
             lock=lambda: study_lock(url, "z"), retry=None, poll_interval=0.2)
    assert time.monotonic() - started < 1
    assert [t.state for t in study.trials] == [State.COMPLETE, State.RUNNING]


def test_a_worker_taken_for_dead_drops_its_result_and_goes_on(caplog) -> None:
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 0:  # meanwhile another worker found no heartbeat: FAIL, retry
            storage = trial.study._storage
            storage.set_trial_state_values(trial._trial_id, State.FAIL)
            RetryCallback()(trial.study, storage.get_trial(trial._trial_id))
        return x

    with caplog.at_level(logging.WARNING, logger="nas_optuna.workers"):
        optimize(study, objective, n_trials=2, timeout=None, callbacks=(),
                 lock=threading.Lock, retry=None)
    assert [t.state for t in study.trials] == [State.FAIL, State.COMPLETE, State.COMPLETE]
    assert study.trials[1].params == study.trials[0].params
    assert "trial 0 was failed by another worker" in caplog.text


def test_worker_indices_are_unique_per_start(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    study = optuna.create_study(study_name="i", storage=open_storage(url))
    indices = [claim_worker_index(study, lambda: study_lock(url, "i")) for _ in range(3)]
    assert indices == [0, 1, 2]
    assert study._storage.get_study_system_attrs(study._study_id)[WORKER_INDEX_ATTR] == 3


def test_the_study_lock_excludes_other_processes(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    code = ("import sys, time; from nas_optuna.storage import study_lock\n"
            "with study_lock(sys.argv[1], 's'):\n"
            "    print('locked', flush=True); time.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    with study_lock(url, "s"):
        waited = time.monotonic() - started
    holder.wait(10)
    assert waited > 0.5


def test_file_lock_is_released_when_its_holder_dies(tmp_path) -> None:
    path = tmp_path / "x.lock"
    code = ("import sys, time; from pathlib import Path; from nas_optuna.storage import "
            "file_lock\nwith file_lock(Path(sys.argv[1])):\n    print('locked', flush=True); "
            "time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with file_lock(path):
        pass


# --- Ctrl-C -----------------------------------------------------------------------------
def test_ctrl_c_in_a_trial_marks_it_failed_requeues_it_and_logs_nothing(caplog) -> None:
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("x", 0, 9)
        raise KeyboardInterrupt

    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"), pytest.raises(KeyboardInterrupt):
            optimize(study, objective, n_trials=3, timeout=None, callbacks=(),
                     lock=threading.Lock, retry=RetryCallback(3))
    finally:
        optuna.logging.disable_propagation()
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
    failed, retry = study.trials
    assert failed.state == State.FAIL and failed.user_attrs["fail_reason"] == INTERRUPTED
    assert retry.state == State.WAITING and retry.params == failed.params


def test_sigint_while_a_trial_is_created_waits_for_its_id() -> None:
    # As under a terminal, even when the test run was started with SIGINT ignored (a
    # background job of a non-interactive shell).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_waits_for_the_block()
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_waits_for_the_block() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with _deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached.append("end of block")
    assert reached == ["end of block"]
