"""A study ``nas-optuna search`` wrote opens in the user's own tools.

The ``optuna`` CLI, optuna-dashboard's WSGI app and ``optuna.load_study`` get the storage
URL exactly as docs/distributed.md writes it, with nothing of nas-optuna's in between
(nas-optuna's own commands add a driver to a bare URL; these tools do not).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from tests.distributed.conftest import REPO, unavailable, worker_config

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "distributed.md"
OPTUNA_CLI = Path(sys.executable).with_name("optuna")
#: the database Redis studies of this test use: an unprefixed journal, as Optuna writes it
REDIS_DB = 7


def documented_scheme(backend: str) -> str:
    """The scheme docs/distributed.md's storage table writes for ``backend``'s URLs."""
    for line in DOC.read_text().splitlines():
        if line.startswith("| `") and backend in line:
            return re.match(r"\| `([a-z0-9+]+)://", line).group(1)
    raise AssertionError(f"docs/distributed.md has no storage row for {backend}")


@pytest.fixture(params=["postgresql", "mysql", "redis"])
def user_url(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    """(URL as documented, the optuna CLI's extra flags for it)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        rest = url.split("://", 1)[1]
        return f"{documented_scheme('RDBStorage` (psycopg')}://{rest}", []
    if request.param == "mysql":
        rest = request.getfixturevalue("mysql_url").split("://", 1)[1]
        return f"{documented_scheme('(MySQL, MariaDB')}://{rest}", []
    try:
        import redis
    except ImportError:
        unavailable("redis", "the redis package is not installed")
    url = f"{documented_scheme('JournalRedisBackend')}://127.0.0.1:6379/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as error:  # noqa: BLE001
        unavailable("redis", f"no server at {url} ({error})")
    request.addfinalizer(lambda: client.delete(*client.keys("log*") or ["log_number"]))
    return url, ["--storage-class", "JournalRedisBackend"]


def _user_storage(url: str) -> str | optuna.storages.BaseStorage:
    """What a user passes to ``optuna.load_study`` for ``url``."""
    if url.startswith("redis"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalRedisBackend(url))
    return url


def _dashboard_studies(storage: str | optuna.storages.BaseStorage) -> list[dict]:
    from optuna_dashboard import wsgi

    app = wsgi(storage)
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/studies", "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "wsgi.input": io.BytesIO(),
               "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr}
    body = b"".join(app(environ, lambda code, headers, exc=None: status.append(code)))
    assert status and status[0].startswith("200"), (status, body[:500])
    listing = json.loads(body)
    # optuna-dashboard 0.20-0.21 call the list study_summaries and plan to rename it studies.
    return listing.get("studies", listing.get("study_summaries"))


def test_user_tools_read_a_nas_optuna_study(tmp_path: Path, start_worker,
                                            user_url: tuple[str, list[str]]) -> None:
    url, cli_flags = user_url
    name = f"user-tools-{uuid.uuid4().hex[:6]}"
    worker = start_worker(worker_config(tmp_path, url, name=name, n_trials=2))
    assert worker.wait(120) == 0, worker.stderr[-2000:]

    listed = subprocess.run(
        [str(OPTUNA_CLI), "studies", "--storage", url, *cli_flags, "-f", "json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    row = next(s for s in json.loads(listed.stdout) if s["name"] == name)
    assert row["n_trials"] == 2

    study = optuna.load_study(study_name=name, storage=_user_storage(url))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all("genotype" in t.user_attrs for t in trials)

    shown = [s for s in _dashboard_studies(_user_storage(url)) if s["study_name"] == name]
    assert len(shown) == 1
