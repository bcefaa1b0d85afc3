"""``nas-optuna report``: one self-contained HTML report of a stored study.

Every analysis of :mod:`analysis` that applies to the study: reward over search time,
the comparison with ``--compare`` studies (e.g. random search), reward vs size, output
stride, templates and operations, stage-1 vs stage-2 and search vs retrained rank
correlation (retrain studies linked by their ``retrain_of`` user attr), and the Pareto
front and hypervolume history of a multi-objective study. plotly.js is embedded, so the
page opens without a network.

Example:
    $ nas-optuna report --storage sqlite:///nas-optuna.db --study-name ppo \\
          --compare random -o report.html
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nas_optuna.cli._common import load_study, one_line
from nas_optuna.exceptions import ConfigError

NAME = "report"
HELP = "write a self-contained HTML report of a stored study"


def add_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("--storage", required=True, help="Optuna storage URL")
    report.add_argument("--study-name", required=True, help="the study to report on")
    report.add_argument("--compare", action="extend", nargs="+", default=[], metavar="NAME",
                        help="studies to compare it with (e.g. random search)")
    report.add_argument("-o", "--output", required=True, type=Path, metavar="PATH",
                        help="HTML file to write (replaced atomically)")
    report.add_argument("--windows", type=int, default=4,
                        help="windows of trial numbers in the over-time plots (default 4)")
    report.add_argument("--top", type=int, default=5,
                        help="best templates / operations highlighted (default 5)")
    report.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="bootstrap resamples of rank-correlation intervals (default 2000)")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def run(args: argparse.Namespace) -> int:
    for option in ("windows", "top", "bootstrap"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option} must be >= 1, got {getattr(args, option)}")
    _check_output(args.output)
    for name in (args.study_name, *args.compare):
        load_study(args.storage, name)

    from analysis import InsufficientData, build_report, write_report

    try:
        html = build_report(args.storage, args.study_name, args.compare, windows=args.windows,
                            top=args.top, n_bootstrap=args.bootstrap, seed=args.seed)
    except InsufficientData as error:
        raise ConfigError(one_line(error)) from None
    try:
        path = write_report(html, args.output)
    except OSError as error:
        raise ConfigError(f"cannot write {args.output}: {one_line(error)}") from None
    figures = html.count('class="plotly-graph-div"')
    print(f"wrote {path} ({figures} figures, {len(html.encode()) / 2**20:.1f} MiB)")
    return 0


def _check_output(path: Path) -> None:
    """Fails before any work when the report could not be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"-o {path} is a directory")
    if not folder.is_dir():
        raise ConfigError(f"-o {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"-o {path}: folder {folder} is not writable")
