"""The Optuna APIs nas-optuna uses that Optuna still marks experimental.

``Study.set_metric_names``, heartbeat storages, ``fail_stale_trials``, the Pareto and
hypervolume plots and ``RetryFailedTrialCallback`` have been stable in use for years but
warn ``ExperimentalWarning`` on every call. nas-optuna relies on their public behaviour
only; :func:`experimental_ok` is the one place that silences the warning around them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import optuna

__all__ = ["experimental_ok", "set_metric_names"]


@contextlib.contextmanager
def experimental_ok() -> Iterator[None]:
    """Silences ``optuna.exceptions.ExperimentalWarning`` inside the block (only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def set_metric_names(study: optuna.Study, names: Sequence[str]) -> None:
    """``study.set_metric_names(names)`` without the experimental warning."""
    with experimental_ok():
        study.set_metric_names(list(names))
