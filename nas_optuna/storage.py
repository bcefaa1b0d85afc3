"""Storage URLs -> Optuna storages, with heartbeats, failed-trial retries and study locks.

One URL names where a study lives; every worker process that opens the same URL works on
the same study. The forms (see docs/distributed.md for the full table):

=====================================  ======================================  ==========
URL                                    storage                                 machines
=====================================  ======================================  ==========
``sqlite:///nas-optuna.db``            :class:`optuna.storages.RDBStorage`     one
``postgresql://user@host/db``          RDBStorage (psycopg2)                   many
``mysql+pymysql://user@host/db``       RDBStorage (MySQL, MariaDB)             many
``journal:///run.log``                 JournalStorage, file backend            one (NFS)
``redis://host:6379/0?prefix=name``    JournalStorage, Redis backend           many
``grpc://host:13000``                  GrpcStorageProxy (``storage-proxy``)    many
=====================================  ======================================  ==========

``journal:`` paths follow SQLite's convention: ``journal:///run.log`` is relative to the
working directory, ``journal:////abs/run.log`` absolute.

Crash recovery: with ``heartbeat_interval`` set, every running trial records a heartbeat
every ``heartbeat_interval`` seconds; a running trial whose last heartbeat is older than
``grace_period`` seconds is failed by the next worker that starts a trial, and re-queued
with the same parameters up to ``max_retry`` times (Optuna's
``RetryHeartbeatStaleTrialCallback``; the retry carries ``failed_trial`` and
``retry_history`` system attrs). Optuna 5 implements heartbeats for RDB storages only;
this module adds the same mechanism to journal storages and to the gRPC proxy client, as a
``nas_optuna:heartbeat`` trial system attr holding the worker's wall-clock time (so their
machines' clocks must agree to well within ``grace_period``).

Example:
    >>> storage = open_storage("sqlite:///nas-optuna.db", heartbeat_interval=60,
    ...                        grace_period=120, max_retry=3)
    >>> study = optuna.load_study(study_name="quickstart", storage=storage)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from nas_optuna._optuna import experimental_ok
from nas_optuna.exceptions import ConfigError

__all__ = [
    "HEARTBEAT_ATTR",
    "RetryCallback",
    "SQLITE_TIMEOUT_S",
    "is_in_memory",
    "load_study",
    "mask_url",
    "open_storage",
    "sqlite_path",
    "storage_error_reason",
    "study_lock",
    "with_driver",
]

#: Seconds a SQLite connection waits for another process's write lock before failing
#: (Python's default is 5, too short for several workers writing heartbeats and trials).
SQLITE_TIMEOUT_S = 60
#: Trial system attr of the journal / gRPC heartbeat (seconds since the epoch).
HEARTBEAT_ATTR = "nas_optuna:heartbeat"
_JOURNAL = "journal://"
_REDIS = ("redis://", "rediss://", "unix://")
_GRPC = "grpc://"
_KNOWN_FORMS = ("sqlite:///FILE, postgresql://USER@HOST/DB, mysql+pymysql://USER@HOST/DB, "
                "journal:///FILE, redis://HOST:PORT/DB, grpc://HOST:PORT")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url)


#: Bare dialects and the drivers tried for them, in order (SQLAlchemy's own default first).
_DRIVERS = {"postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
            "mysql": (("mysqldb", "MySQLdb"), ("pymysql", "pymysql"))}


def with_driver(url: str) -> str:
    """``postgresql://`` / ``mysql://`` with a driver that is installed.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3 and ``mysql://`` to mysqlclient; when
    only psycopg2 or PyMySQL is installed, the URL names that driver instead.
    """
    import importlib.util

    dialect, sep, rest = url.partition("://")
    if not sep or dialect not in _DRIVERS:
        return url
    for driver, module in _DRIVERS[dialect]:
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}+{driver}://{rest}"
    return url


def is_in_memory(url: str) -> bool:
    """Whether ``url`` names a storage that lives inside one process."""
    return url in ("sqlite://", "sqlite:///:memory:", ":memory:") or url.startswith(
        "sqlite:///:memory:?")


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None (in memory, or not SQLite).

    SQLite URI filenames (``sqlite:///file:PATH?mode=ro&uri=true``, e.g. a read-only
    database) name the file ``PATH``.
    """
    if not url.startswith("sqlite:///") or is_in_memory(url):
        return None
    path, _, query = url[len("sqlite:///"):].partition("?")
    if path.startswith("file:") and "uri=true" in query.lower():
        path = path[len("file:"):]
    return Path(path).expanduser() if path and path != ":memory:" else None


def storage_error_reason(error: BaseException) -> str:
    """One line saying why a storage call failed: the database's own message when Optuna
    wrapped it (``StorageInternalError`` says only "An exception is raised during the
    commit"), without SQLAlchemy's ``[SQL: ...]`` and background link."""
    cause = error.__cause__ if isinstance(
        error, optuna.exceptions.StorageInternalError) and error.__cause__ else error
    text = str(cause).split("[SQL:", 1)[0].split("(Background on this error", 1)[0]
    return mask_url(f"{type(cause).__name__}: {' '.join(text.split())}")[:300]


def open_storage(url: str, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, max_retry: int | None = 3) -> BaseStorage:
    """The Optuna storage a URL names (see the module docstring for the forms).

    Args:
        url: Storage URL.
        heartbeat_interval: Seconds between heartbeats of a running trial; ``None`` or 0
            disables heartbeats (and so crash recovery).
        grace_period: Seconds without a heartbeat after which a running trial is failed
            (default: twice the interval).
        max_retry: How many times a trial failed that way is re-queued with its parameters
            (``None``: without limit, 0: never).

    Raises:
        ConfigError: Unknown URL form, or the storage cannot be reached.
    """
    interval = heartbeat_interval or None
    if interval is not None and grace_period is not None and grace_period <= interval:
        raise ConfigError(f"grace_period ({grace_period} s) must be longer than "
                          f"heartbeat_interval ({interval} s)")
    retry = RetryCallback(max_retry) if interval is not None else None
    try:
        with experimental_ok():  # heartbeat arguments are "experimental" since 2.x
            if url.startswith(_JOURNAL):
                return _journal_file(url, interval, grace_period, retry)
            if url.startswith(_REDIS):
                return _journal_redis(url, interval, grace_period, retry)
            if url.startswith(_GRPC):
                return _grpc(url, interval, grace_period, retry)
            return _rdb(url, interval, grace_period, retry)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - every storage failure becomes one line
        raise ConfigError(f"cannot open storage {mask_url(url)}: "
                          f"{storage_error_reason(error)}") from None


def load_study(url: str, study_name: str, *, missing_ok: bool = False) -> optuna.Study | None:
    """Loads a stored study through :func:`open_storage` (every URL form works).

    Args:
        url: Storage URL.
        study_name: The study.
        missing_ok: Return None instead of raising when the study does not exist.

    Raises:
        ConfigError: The storage cannot be opened, or the study does not exist.
    """
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        if missing_ok:
            return None
        raise ConfigError(f"no study {study_name!r} in {mask_url(url)}") from None
    except Exception as error:  # noqa: BLE001 - storage errors become one line
        message = mask_url(" ".join(str(error).split()))[:300]
        raise ConfigError(f"cannot read storage {mask_url(url)}: {message}") from None


class RetryCallback(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a failed trial, minus its ``fail_reason`` and nas-optuna's marks.

    The retry is a WAITING trial with the same params, user attrs and system attrs, plus
    ``failed_trial`` (number of the first trial of the chain) and ``retry_history`` (every
    trial number of the chain so far); nothing happens once ``max_retry`` retries exist.
    Used for heartbeat-stale trials and for trials interrupted by Ctrl-C.
    """

    def __init__(self, max_retry: int | None = 3) -> None:
        with experimental_ok():
            super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
        # The heartbeat and the worker that ran it belong to the failed trial only.
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items()
                              if not k.startswith("nas_optuna:")}
        super().__call__(study, trial)


# --- RDB ---------------------------------------------------------------------------------
def _rdb(url: str, interval: int | None, grace: int | None,
         retry: RetryCallback | None) -> BaseStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not path.resolve().parent.is_dir():
            raise ConfigError(f"cannot open storage {url}: folder "
                              f"{path.parent} does not exist")
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif "://" not in url:
        raise ConfigError(f"storage {mask_url(url)!r} is not a URL; use one of {_KNOWN_FORMS}")
    # Workers opening a fresh database at once would race to create Optuna's tables.
    with _process_lock(url, "schema"):
        return optuna.storages.RDBStorage(
            with_driver(url), engine_kwargs=engine_kwargs, heartbeat_interval=interval,
            grace_period=grace, heartbeat_stale_trial_callback=retry,
        )


# --- journal and gRPC, with a system-attr heartbeat ------------------------------------
class _AttrHeartbeat(BaseHeartbeat):
    """Heartbeats as a trial system attr, for storages Optuna gives none.

    The running worker writes ``time.time()`` into ``nas_optuna:heartbeat``; a trial is
    stale when that time is older than the grace period on the checking worker's clock.
    Trials without the attr (started by a worker without heartbeats) are never stale,
    like in Optuna's RDB storage.
    """

    _heartbeat_interval: int | None = None
    _grace_period: int | None = None
    _stale_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None

    def _configure_heartbeat(self, interval: int | None, grace: int | None,
                             callback: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        self._heartbeat_interval = interval
        self._grace_period = grace if grace is not None else (
            None if interval is None else 2 * interval)
        self._stale_callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())  # type: ignore[attr-defined]
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # failed as stale by another worker meanwhile: nothing left to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self._grace_period is not None
        now = time.time()
        running = self.get_all_trials(  # type: ignore[attr-defined]
            study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running
                if HEARTBEAT_ATTR in t.system_attrs
                and now - float(t.system_attrs[HEARTBEAT_ATTR]) > self._grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback


class _JournalStorage(optuna.storages.journal.JournalStorage, _AttrHeartbeat):
    """JournalStorage with heartbeats (Optuna 5 has none for journals)."""


class _GrpcStorageProxy(optuna.storages.GrpcStorageProxy, _AttrHeartbeat):
    """gRPC proxy client with heartbeats (Optuna's client implements none)."""


def _journal_file(url: str, interval: int | None, grace: int | None,
                  retry: RetryCallback | None) -> BaseStorage:
    path = _journal_path(url)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot open storage {url}: folder {path.parent} does not exist")
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    storage = _JournalStorage(backend)
    storage._configure_heartbeat(interval, grace, retry)
    return storage


def _journal_path(url: str) -> Path:
    """``journal:///run.log`` -> ``run.log``; ``journal:////abs/run.log`` -> ``/abs/run.log``."""
    rest = url[len(_JOURNAL):]
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(f"journal storage URL {url!r} must look like journal:///FILE "
                          f"(relative) or journal:////ABSOLUTE/FILE")
    return Path(rest[1:]).expanduser()


def _redis_parts(url: str) -> tuple[str, str]:
    """The Redis URL without nas-optuna's ``prefix`` query parameter, and that prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = "".join(v for k, v in query if k == "prefix")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _journal_redis(url: str, interval: int | None, grace: int | None,
                   retry: RetryCallback | None) -> BaseStorage:
    redis_url, prefix = _redis_parts(url)
    backend = optuna.storages.journal.JournalRedisBackend(redis_url, prefix=prefix)
    backend._redis.ping()  # fail now, in one line, rather than inside the first trial
    storage = _JournalStorage(backend)
    storage._configure_heartbeat(interval, grace, retry)
    return storage


def _grpc(url: str, interval: int | None, grace: int | None,
          retry: RetryCallback | None) -> BaseStorage:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ConfigError(f"gRPC storage URL {url!r} must look like grpc://HOST:PORT")
    storage = _GrpcStorageProxy(host=parts.hostname, port=parts.port)
    try:
        storage.wait_server_ready(timeout=float(os.environ.get("NAS_OPTUNA_GRPC_TIMEOUT", 10)))
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"cannot open storage {url}: no gRPC storage proxy answers "
                          f"({type(error).__name__}); start one with "
                          f"`nas-optuna storage-proxy`") from None
    storage._configure_heartbeat(interval, grace, retry)
    return storage


# --- one lock per study, across processes and machines ---------------------------------
@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Holds a lock shared by every worker of ``study_name`` in ``url`` (blocking).

    Used around "count the study's trials, then start one" so that workers never start
    more trials than the study's budget. PostgreSQL: a session advisory lock; MySQL and
    MariaDB: ``GET_LOCK``; SQLite and journal files: ``flock`` on a file beside the
    storage; Redis: a lock key that expires after 5 minutes if its holder dies; the gRPC
    proxy of ``nas-optuna storage-proxy``: a lease it serves, also expiring after 5
    minutes (a proxy started by Optuna's own ``run_grpc_proxy_server`` has none: the lock
    is then per process, with a warning).
    """
    with _thread_lock(url, study_name):
        with _process_lock(url, study_name):
            yield


_THREAD_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(url: str, study_name: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault((url, study_name), threading.Lock())


def _lock_name(study_name: str) -> str:
    return "nas-optuna:" + hashlib.sha256(study_name.encode()).hexdigest()[:40]


_ENGINES: dict[str, Any] = {}


def _engine(url: str) -> Any:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if url not in _ENGINES:
        _ENGINES[url] = sqlalchemy.create_engine(with_driver(url), poolclass=NullPool)
    return _ENGINES[url]


@contextlib.contextmanager
def _process_lock(url: str, study_name: str) -> Iterator[None]:
    if is_in_memory(url):
        yield
        return
    if url.startswith(_GRPC):
        from nas_optuna._grpc_lock import grpc_study_lock

        with grpc_study_lock(urlsplit(url).netloc, _lock_name(study_name)):
            yield
        return
    if url.startswith(_JOURNAL):
        with file_lock(Path(str(_journal_path(url)) + ".nas-optuna.lock")):
            yield
        return
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is None:  # not a file: one process
            yield
            return
        with file_lock(Path(str(path) + ".nas-optuna.lock")):
            yield
        return
    if url.startswith(_REDIS):
        import redis

        redis_url, prefix = _redis_parts(url)
        client = redis.Redis.from_url(redis_url)
        lock = client.lock(f"{prefix}:{_lock_name(study_name)}", timeout=300)
        lock.acquire(blocking=True)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired: another worker holds it now
                lock.release()
            client.close()
        return
    import sqlalchemy

    dialect = sqlalchemy.engine.make_url(with_driver(url)).get_dialect().name
    name = _lock_name(study_name)
    with _engine(url).connect() as connection:
        if dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
        elif dialect in ("mysql", "mariadb"):
            while connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 60)"),
                                     {"n": name[:64]}).scalar() != 1:
                pass  # timed out after 60 s: ask again
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
        else:  # another SQLAlchemy dialect: one machine assumed
            with file_lock(Path.home() / ".cache" / "nas-optuna" / f"{name[11:]}.lock"):
                yield


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), released on exit or death."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: one process assumed
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
