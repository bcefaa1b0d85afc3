"""Trials per hour with 1, 2 and 4 workers on one study, per storage (issue 7).

Every configuration runs the same command a user runs, on a fresh study::

    OMP_NUM_THREADS=<cores // K> nas-optuna search studies/quickstart.toml \\
        --storage URL --study-name workers-K --n-trials N --n-workers K --quiet

with the quickstart's data, space and training budget (TPE, MedianPruner). The stem
features are cached once before the first configuration (a shared ``[train] cache_dir``),
so every configuration measures trials, not the one-off cache build. Each worker gets
``cores // K`` torch threads (at least one), so K workers never ask for more threads than
the machine has cores.

Reported per storage and K: wall time from start to exit, trials per hour over that wall
time (start-up included, as a user experiences it), trials per hour between the first
and the last trial's end (the steady state), and the trial states. Storages: SQLite
(file), JournalStorage (file backend) and PostgreSQL (a fresh database per configuration
on ``--postgres``, default ``postgresql://postgres@127.0.0.1:5432``; skipped with a
message when it does not answer).

Run on a quiet machine (other processes on the cores change the result many times over)::

    python benchmarks/workers.py --trials 8 --workers 1,2,4 --write docs/benchmarks_workers.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

if str(Path(__file__).resolve().parent) not in sys.path:  # helpers beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "studies" / "quickstart.toml"


def _config(workdir: Path) -> Path:
    """The quickstart config with a shared stem cache and artifacts under ``workdir``."""
    text = CONFIG.read_text()
    text = text.replace("[train]\n", f'[train]\ncache_dir = "{workdir / "cache"}"\n', 1)
    text = text.replace("[artifacts]\n", f'[artifacts]\ndir = "{workdir / "artifacts"}"\n', 1)
    path = workdir / "workers.toml"
    path.write_text(text)
    return path


def _postgres_database(server: str, name: str) -> str | None:
    """A fresh database ``name`` on ``server``; None when the server does not answer."""
    try:
        import psycopg2
    except ImportError:
        return None
    try:
        connection = psycopg2.connect(f"{server}/postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        return None
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return f"{server}/{name}"


def _storage(kind: str, workdir: Path, k: int, postgres: str) -> str | None:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'sqlite-{k}.db'}"
    if kind == "journal":
        return f"journal:///{workdir / f'journal-{k}.log'}"
    if kind == "postgresql":
        return _postgres_database(postgres, f"nas_optuna_bench_workers_{k}")
    raise ValueError(kind)


def _run(config: Path, storage: str, name: str, trials: int, k: int,
         cores: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // k))}
    command = [sys.executable, "-m", "nas_optuna.cli", "search", str(config), "--storage",
               storage, "--study-name", name, "--n-trials", str(trials), "--quiet"]
    if k > 1:
        command += ["--n-workers", str(k)]
    started = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        raise RuntimeError(f"{name} on {storage} exited {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")
    from nas_optuna.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    ends = sorted(t.datetime_complete.timestamp() for t in finished)
    states: dict[str, int] = {}
    for trial in finished:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) * 3600 if len(ends) > 1 else None
    return {"workers": k, "trials": len(finished), "wall_s": round(wall, 1),
            "trials_per_hour": round(len(finished) / wall * 3600, 1),
            "steady_trials_per_hour": None if steady is None else round(steady, 1),
            "states": states, "threads_per_worker": max(1, cores // k)}


def _machine() -> str:
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, optuna {optuna.__version__}")


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| storage | workers | threads each | trials | wall (s) | trials/hour | "
             "steady trials/hour | states |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        states = ", ".join(f"{n} {s}" for s, n in sorted(row["states"].items()))
        steady = row["steady_trials_per_hour"]
        lines.append(f"| {row['storage']} | {row['workers']} | {row['threads_per_worker']} | "
                     f"{row['trials']} | {row['wall_s']} | {row['trials_per_hour']} | "
                     f"{'-' if steady is None else steady} | {states} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per configuration")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--storages", default="sqlite,journal,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, help="keep the studies here")
    parser.add_argument("--write", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nas-optuna-workers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = _config(workdir)
    # Build the stem cache once (one trial on a scratch study), outside every measurement.
    _run(config, f"sqlite:///{workdir / 'warm.db'}", "warm", 1, 1, args.cores)
    rows = []
    for kind in args.storages.split(","):
        for k in (int(x) for x in args.workers.split(",")):
            storage = _storage(kind, workdir, k, args.postgres)
            if storage is None:
                print(f"{kind}: server not reachable, skipped", flush=True)
                break
            row = {"storage": kind, **_run(config, storage, f"workers-{k}", args.trials, k,
                                           args.cores)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = _table(rows)
    print(table)
    if args.write:
        args.write.write_text(
            "# Trials per hour with several workers (issue 7)\n\n"
            f"Measured by `benchmarks/workers.py --trials {args.trials} --workers "
            f"{args.workers}` on {_machine()}; quickstart data, space and budget "
            "(TPE, MedianPruner), the stem cache built beforehand.\n\n" + table + "\n")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
