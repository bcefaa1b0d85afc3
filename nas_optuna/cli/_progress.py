"""Progress of ``nas-optuna search``: a bar on a terminal, one line per trial otherwise.

On a terminal (standard error is a TTY) a tqdm bar shows the study's finished trials
against its target (every worker's, as :func:`nas_optuna.workers.trial_budget` counts
them), the best value so far and tqdm's ETA, with each trial's line printed above it;
elsewhere (a log file, CI, a pipe) only the lines are printed. ``quiet`` prints neither.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import optuna

__all__ = ["SearchProgress"]


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class SearchProgress:
    """An Optuna callback reporting a search's progress.

    Args:
        line: Formats one finished trial as a line (``line(study, trial)``).
        quiet: Print nothing.
        bar: Force the bar on (``True``) or off (``False``); default: on a terminal.
    """

    def __init__(self, line: Callable[[optuna.Study, optuna.trial.FrozenTrial], str], *,
                 quiet: bool = False, bar: bool | None = None) -> None:
        self._line = line
        self._quiet = quiet
        self._want_bar = _is_terminal(sys.stderr) if bar is None else bar
        self._bar: Any = None

    def start(self, done: int, target: int) -> None:
        """Opens the bar (when there is one) at ``done`` of ``target`` finished trials."""
        if self._quiet or not self._want_bar or self._bar is not None:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=target, initial=min(done, target), unit="trial",
                         desc="search", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self._quiet:
            return
        text = self._line(study, trial)
        if self._bar is None:
            print(text, flush=True)
            return
        from nas_optuna.workers import trial_budget

        self._bar.write(text, file=sys.stdout)
        done = min(trial_budget(study.get_trials(deepcopy=False)).counted, self._bar.total)
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix_str(_best(study), refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _best(study: optuna.Study) -> str:
    try:
        if len(study.directions) > 1:
            return f"{len(study.best_trials)} on the Pareto front"
        return f"best {study.best_value:.4f}"
    except ValueError:  # no COMPLETE trial yet
        return "best -"
