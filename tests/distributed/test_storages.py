"""Several workers on the other storages: SQLite, journal file, Redis journal, MySQL, gRPC."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from nas_optuna.workers import WORKER_ATTR, trial_budget
from tests.distributed.conftest import REPO, load, observe, training_trial, worker_config

COMPLETE = optuna.trial.TrialState.COMPLETE
FAIL = optuna.trial.TrialState.FAIL

# Worker processes: end-to-end, a few seconds each.
pytestmark = pytest.mark.slow


def _run_workers(start_worker, config: Path, count: int, stage_s: float = 0.2) -> list:
    workers = [start_worker(config, stage_s=stage_s) for _ in range(count)]
    codes = [worker.wait(120) for worker in workers]
    assert codes == [0] * count, [w.stderr[-1500:] for w in workers]
    return workers


def _check_exact(storage: str, name: str, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    trials = load(storage, name).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [COMPLETE] * n_trials
    assert sorted(t.number for t in trials) == list(range(n_trials))
    return trials


def test_two_workers_on_sqlite(tmp_path: Path, start_worker) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _run_workers(start_worker, worker_config(tmp_path, storage, n_trials=5), 2, stage_s=0.5)
    trials = _check_exact(storage, "dist", 5)
    assert len({t.system_attrs[WORKER_ATTR]["pid"] for t in trials}) == 2


def test_journal_file_workers_recover_a_killed_trial(tmp_path: Path, start_worker) -> None:
    # Optuna 5 has no heartbeat for journal storages; nas-optuna's system-attr heartbeat
    # lets the next worker fail the killed trial and retry it.
    storage = f"journal:///{tmp_path / 'study.log'}"  # journal:////tmp/...: absolute
    config = worker_config(tmp_path, storage, n_trials=4)
    victim = start_worker(config, stage_s=2.0)
    killed = training_trial(observe(storage), victim)
    victim.kill()
    _run_workers(start_worker, config, 2)
    trials = load(storage).get_trials(deepcopy=False)
    assert trials[killed.number].state == FAIL
    retry = [t for t in trials if killed.number in t.system_attrs.get("retry_history", ())]
    assert len(retry) == 1 and retry[0].params == killed.params
    assert retry[0].state == COMPLETE
    budget = trial_budget(trials)
    assert (budget.counted, budget.running, budget.waiting, budget.retried) == (4, 0, 0, 1)


def test_two_workers_on_a_redis_journal(tmp_path: Path, redis_url: str, start_worker) -> None:
    _run_workers(start_worker, worker_config(tmp_path, redis_url, n_trials=4), 2)
    _check_exact(redis_url, "dist", 4)


def test_two_workers_on_mysql(tmp_path: Path, mysql_url: str, start_worker) -> None:
    name = f"mysql-{uuid.uuid4().hex[:6]}"
    _run_workers(start_worker, worker_config(tmp_path, mysql_url, name=name, n_trials=4), 2)
    _check_exact(mysql_url, name, 4)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_workers_through_the_grpc_proxy(tmp_path: Path, start_worker) -> None:
    backend = f"sqlite:///{tmp_path / 'proxied.db'}"
    port = _free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nas_optuna.cli import _storage_proxy as p, "
         "_common as c; a = c.Parser(); p.add_arguments(a); sys.exit(p.run(a.parse_args("
         "sys.argv[1:])))", "--storage", backend, "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        storage = f"grpc://localhost:{port}"
        workers = _run_workers(start_worker, worker_config(tmp_path, storage, n_trials=4), 2)
        # The proxy wrote through to its SQLite storage; its study lock kept the budget.
        _check_exact(backend, "dist", 4)
        assert not any("serves no study lock" in w.stderr for w in workers)
    finally:
        proxy.terminate()
        proxy.wait(10)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_n_workers_refuses_an_in_memory_storage(tmp_path: Path, capsys, url: str) -> None:
    from nas_optuna.cli import main

    config = worker_config(tmp_path, url, n_trials=2)
    assert main(["search", str(config), "--n-workers", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas-optuna: error: --n-workers 3 needs a storage") and "\n" not in err
