"""Fixtures of the distributed tests: real servers, worker processes, polling the storage.

PostgreSQL: ``NAS_OPTUNA_TEST_POSTGRES_URL`` if set, else a fresh database created for the
session on ``postgresql://postgres@127.0.0.1:5432`` when that server answers; otherwise the
tests skip, saying how to enable them, unless ``NAS_OPTUNA_REQUIRE_POSTGRES=1`` (CI), which
turns the skip into a failure. Redis (``NAS_OPTUNA_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``) and MySQL/MariaDB (``NAS_OPTUNA_TEST_MYSQL_URL``, default a
fresh database on ``mysql+pymysql://root@127.0.0.1:3306``) skip when absent, unless
``NAS_OPTUNA_REQUIRE_REDIS=1`` / ``NAS_OPTUNA_REQUIRE_MYSQL=1`` (CI sets both).

Workers are ``python -m tests.distributed._worker CONFIG``: the real ``nas-optuna search``
with a fake trainer whose stages sleep ``stage_s`` seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import optuna
import pytest

from nas_optuna.config import StudyConfig
from nas_optuna.storage import open_storage
from nas_optuna.workers import WORKER_ATTR
from tests.conftest import tiny_config_dict

REPO = Path(__file__).resolve().parents[2]
_ENABLE = ("set NAS_OPTUNA_TEST_POSTGRES_URL=postgresql://USER[:PASSWORD]@HOST:PORT/DB "
           "(a database the tests may create tables in) to run them")


def unavailable(service: str, message: str) -> NoReturn:
    """Skips the test, or fails it when ``NAS_OPTUNA_REQUIRE_<SERVICE>=1`` (CI)."""
    flag = f"NAS_OPTUNA_REQUIRE_{service.upper()}"
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {message}")
    pytest.skip(f"{service} not available ({message})")


def _terminal_sigint() -> None:
    """Workers get SIGINT as under a terminal, whoever started the test run.

    A non-interactive shell starts background jobs (``pytest &``, some CI runners) with
    SIGINT ignored, and children inherit that: Python then never raises
    KeyboardInterrupt, and the Ctrl-C tests would test nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_toml(path: Path, raw: dict[str, Any]) -> Path:
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def worker_config(tmp_path: Path, storage: str, *, n_trials: int, name: str = "dist",
                  sampler: str = "random", heartbeat: int = 1, grace: int = 3,
                  max_retry: int = 5, **sections: dict[str, Any]) -> Path:
    """A tiny study config on ``storage`` with fast heartbeats, written as TOML."""
    raw = tiny_config_dict(
        tmp_path,
        study={"name": name, "storage": storage, "n_trials": n_trials,
               "heartbeat_interval": heartbeat, "grace_period": grace,
               "max_retry": max_retry},
        sampler={"name": sampler},
        cost={"measure_latency": False},
    )
    if "artifacts" in {f.name for f in dataclasses.fields(StudyConfig)}:
        raw["artifacts"] = {"enabled": False}  # diagrams and previews: not what is tested here
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return write_toml(tmp_path / f"{name}.toml", raw)


class Worker:
    """A worker subprocess; its stdout and stderr go to files (no pipe to fill up)."""

    def __init__(self, config: Path, *args: str, stage_s: float = 0.2,
                 module: str = "tests.distributed._worker") -> None:
        self.tag = uuid.uuid4().hex[:8]
        folder = config.parent
        self.out_path = folder / f"worker-{self.tag}.out"
        self.err_path = folder / f"worker-{self.tag}.err"
        env = {**os.environ, "NAS_OPTUNA_TEST_STAGE_S": str(stage_s), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        command = [sys.executable, "-m", module]
        if module == "nas_optuna.cli":
            command.append("search")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen([*command, str(config), *args], cwd=REPO,
                                            env=env, stdout=out, stderr=err,
                                            preexec_fn=_terminal_sigint)
        self.pid = self.process.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker {self.pid} still running after {timeout} s; "
                                 f"stderr: {self.stderr[-2000:]}") from None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """Starts workers; any still running at the end of the test is killed."""
    workers: list[Worker] = []

    def start(config: Path, *args: str, **kwargs: Any) -> Worker:
        worker = Worker(config, *args, **kwargs)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.kill()


def load(storage: str, name: str = "dist") -> optuna.Study:
    """The study as a test observer sees it (no heartbeat of its own)."""
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def observe(storage: str, name: str = "dist") -> Callable[[], optuna.Study]:
    """A getter of the study as it stands (an empty stand-in until a worker creates it)."""
    backend = open_storage(storage)

    def study() -> optuna.Study:
        try:
            return optuna.load_study(study_name=name, storage=backend)
        except KeyError:
            return optuna.create_study(storage=optuna.storages.InMemoryStorage())

    return study


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


def training_trial(study_getter: Callable[[], optuna.Study], worker: Worker,
                   timeout: float = 60, system_attr: str | None = None) -> optuna.trial.FrozenTrial:
    """Waits until ``worker`` runs a trial that is past sampling (its genotype is stored).

    ``system_attr``: also wait until the trial carries it (e.g. PPO's ``ppo:log_probs``,
    stored a moment after the last decision).
    """

    def find() -> optuna.trial.FrozenTrial | None:
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited with {worker.process.returncode}: "
                                 f"{worker.stderr[-2000:]}")
        for trial in study_getter().get_trials(deepcopy=False,
                                               states=(optuna.trial.TrialState.RUNNING,)):
            owner = trial.system_attrs.get(WORKER_ATTR) or {}
            if owner.get("pid") == worker.pid and "genotype" in trial.user_attrs and (
                    system_attr is None or system_attr in trial.system_attrs):
                return trial
        return None

    return wait_for(find, timeout, f"a training trial of worker {worker.pid}")


# --- servers ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    require = os.environ.get("NAS_OPTUNA_REQUIRE_POSTGRES") == "1"

    def unavailable(message: str) -> None:
        if require:
            pytest.fail(f"NAS_OPTUNA_REQUIRE_POSTGRES=1 but {message}")
        pytest.skip(f"PostgreSQL not available ({message}); {_ENABLE}")

    try:
        import psycopg2
    except ImportError:
        unavailable("psycopg2 is not installed (pip install psycopg2-binary)")
    url = os.environ.get("NAS_OPTUNA_TEST_POSTGRES_URL")
    if url:
        try:
            psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"),
                             connect_timeout=5).close()
        except Exception as error:  # noqa: BLE001
            unavailable("NAS_OPTUNA_TEST_POSTGRES_URL does not answer: "
                        + " ".join(str(error).split()))
        yield url
        return
    server = "postgresql://postgres@127.0.0.1:5432"
    admin = None
    for database in ("postgres", "test"):
        try:
            admin = psycopg2.connect(f"{server}/{database}", connect_timeout=3)
            break
        except Exception:  # noqa: BLE001, S112
            continue
    if admin is None:
        unavailable(f"no server answers on {server}")
    admin.autocommit = True
    name = f"nas_optuna_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL with a fresh key prefix (``?prefix=``), its keys deleted afterwards."""
    try:
        import redis
    except ImportError:
        unavailable("redis", "the redis package is not installed")
    base = os.environ.get("NAS_OPTUNA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(base, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as error:  # noqa: BLE001
        unavailable("redis", f"no server at {base} ({error}); set NAS_OPTUNA_TEST_REDIS_URL")
    prefix = f"nas-optuna-test-{uuid.uuid4().hex[:8]}"
    yield f"{base}?prefix={prefix}"
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    try:
        import pymysql
    except ImportError:
        unavailable("mysql", "PyMySQL is not installed (pip install PyMySQL)")
    url = os.environ.get("NAS_OPTUNA_TEST_MYSQL_URL")
    if url:
        yield url
        return
    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                connect_timeout=3, autocommit=True)
    except Exception as error:  # noqa: BLE001
        unavailable("mysql", f"no MySQL/MariaDB on 127.0.0.1:3306 ({error}); "
                    "set NAS_OPTUNA_TEST_MYSQL_URL=mysql+pymysql://USER:PASSWORD@HOST/DB")
    name = f"nas_optuna_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
