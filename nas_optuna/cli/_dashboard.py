"""``nas-optuna dashboard --storage URL``: optuna-dashboard with the trials' artifacts.

Starts optuna-dashboard (``optuna_dashboard.run_server``) on the storage with the
filesystem artifact store of the studies wired in, so each trial page shows its
architecture diagram, mask preview and note (see :mod:`nas_optuna.artifacts`).

The artifact folder is ``--artifact-dir``, else every folder the storage's studies
recorded in their ``artifact_dir`` user attr (plus the storage's default folder), else the
default folder of the storage (:func:`~nas_optuna.artifacts.default_artifact_dir`).

The server listens on 127.0.0.1 unless ``--host`` says otherwise: optuna-dashboard has no
login, and whoever reaches it can read, rename and delete the studies. Binding to an
address other machines can reach prints a warning.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

from nas_optuna.cli._common import PROG, one_line
from nas_optuna.exceptions import ConfigError

NAME = "dashboard"
HELP = "browse studies, trial notes and artifacts in optuna-dashboard"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: URL forms opened through nas_optuna.storage (journals and the gRPC proxy).
_PROXIED = ("journal://", "redis://", "rediss://", "unix://", "grpc://")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True,
                        help="Optuna storage URL, e.g. sqlite:///nas-optuna.db")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--artifact-dir",
                        help="artifact folder (default: the studies' artifact_dir attr, else "
                             "the storage's default folder)")


def run(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from nas_optuna.artifacts import open_artifact_store
    from nas_optuna.storage import mask_url

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    storage, studies = open_storage(args.storage)
    directories = artifact_directories(args.storage, studies, args.artifact_dir)
    store = open_artifact_store(directories)
    if not is_loopback(args.host):
        print(f"{PROG}: warning: listening on {args.host}, which other machines can reach; "
              "optuna-dashboard has no login, so anyone who reaches it can read, change and "
              "delete these studies (use --host 127.0.0.1 or an SSH tunnel)",
              file=sys.stderr, flush=True)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"optuna-dashboard on http://{shown}:{args.port}/dashboard/ : {len(studies)} "
          f"studies in {mask_url(args.storage)}; artifacts in {', '.join(map(str, directories))}",
          flush=True)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port,
                                    artifact_store=store)
    except OSError as error:  # the address is taken or cannot be bound
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {one_line(error)}") from None
    return 0


def open_storage(url: str) -> tuple[Any, list[Any]]:
    """Opens a storage without creating anything in it, and lists its studies.

    SQLite and journal files must exist; SQL databases are opened without creating
    Optuna's tables; journal, Redis and gRPC URLs are opened by
    :func:`nas_optuna.storage.open_storage` (no heartbeats: the dashboard runs no trials).

    Raises:
        ConfigError: A file does not exist, or the storage cannot be read.
    """
    import optuna

    from nas_optuna.storage import is_in_memory, mask_url, sqlite_path, with_driver
    from nas_optuna.storage import open_storage as open_url

    for prefix, what in (("sqlite:///", "database"), ("journal:///", "journal")):
        if url.startswith(prefix) and not is_in_memory(url):
            path = Path(url[len(prefix):].split("?")[0]).expanduser()
            if prefix == "sqlite:///":  # file: URIs (read-only databases) included
                path = sqlite_path(url) or path
            if not path.is_file():
                raise ConfigError(f"cannot open storage {url}: no {what} file {path}")
    try:
        if url.startswith(_PROXIED):
            storage = open_url(url, heartbeat_interval=None)
        elif "://" in url:
            storage = optuna.storages.RDBStorage(with_driver(url), skip_table_creation=True)
        else:
            raise ConfigError(f"cannot open storage {mask_url(url)}: not a storage URL")
        studies = storage.get_all_studies()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - any storage error becomes one line
        raise ConfigError(f"cannot open storage {mask_url(url)}: {_reason(error)}") from None
    return storage, studies


def _reason(error: BaseException) -> str:
    """The error's first line, with its cause's (Optuna wraps SQLAlchemy's errors)."""
    reason = one_line(str(error).splitlines()[0] if str(error) else type(error).__name__)
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause):
        first = one_line(str(cause).splitlines()[0])
        if first not in reason:
            reason = f"{reason} ({first})"
    return reason


def artifact_directories(url: str, studies: list[Any], override: str | None) -> list[Path]:
    """The artifact folders to serve (see the module docstring)."""
    from nas_optuna.artifacts import artifact_dirs_of, default_artifact_dir

    if override is not None:
        directory = Path(override).expanduser().resolve()
        if not directory.is_dir():
            raise ConfigError(f"--artifact-dir {override}: no such folder")
        return [directory]
    candidates = [*artifact_dirs_of(studies), default_artifact_dir(url)]
    existing: list[Path] = []
    for directory in candidates:
        if directory.is_dir() and directory not in existing:
            existing.append(directory)
    return existing or [default_artifact_dir(url)]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    try:
        return bool(addresses) and all(
            ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except ValueError:
        return False
