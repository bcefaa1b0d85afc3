"""Helpers shared by the command modules: one-line errors, loading a stored trial, builds."""

from __future__ import annotations

import argparse
from typing import Any

import optuna

from nas_optuna.exceptions import ConfigError

PROG = "nas-optuna"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 2, like every other error."""

    def error(self, message: str) -> None:
        command = self.prog[len(PROG):].strip() if self.prog.startswith(PROG) else self.prog
        self.exit(2, f"{PROG}: error: {command + ': ' if command else ''}{message}\n")


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split())


def load_study(storage: str, study_name: str) -> optuna.Study:
    """Loads a study (any storage URL form), a missing one or a bad storage a ConfigError."""
    from nas_optuna.storage import load_study as load

    return load(storage, study_name)


def load_trial(storage: str, study_name: str,
               number: int) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]]:
    """Trial ``number`` of a stored study and the study's user attrs."""
    study = load_study(storage, study_name)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise ConfigError(f"study {study_name!r} has no trial {number}")
    return trials[0], study.user_attrs


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """``--num-classes``, ``--profile``, ``--input-size`` and ``--json``."""
    parser.add_argument("--num-classes", type=int, help="classes (default: the study's, else 19)")
    parser.add_argument("--profile", help="space profile, e.g. search or final")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size for MACs and output shape (default 512 1024)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def space_and_classes(args: argparse.Namespace, study_attrs: dict[str, Any] | None = None):
    """The search space (with the study's options, ``--profile`` on top) and class count."""
    from search_spaces import get_space

    options = dict((study_attrs or {}).get("space", {}))
    options.pop("name", None)
    if getattr(args, "profile", None) is not None:
        options["profile"] = args.profile
    space = get_space(args.space, **options)
    num_classes = args.num_classes or (study_attrs or {}).get("num_classes") or 19
    if num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {num_classes}")
    return space, int(num_classes)


def input_size(args: argparse.Namespace, default: tuple[int, int] = (512, 1024)) -> tuple[int, int]:
    """``--input-size`` or ``default``, checked positive."""
    size = tuple(args.input_size or default)
    if min(size) < 1:
        raise ConfigError(f"--input-size must be positive, got {size[0]} {size[1]}")
    return size  # type: ignore[return-value]
