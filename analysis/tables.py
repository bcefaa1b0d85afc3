"""One tidy table of trials from stored studies, and the trial filter analyses share."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from analysis._storage import StorageLike, open_storage

__all__ = ["TRIAL_COLUMNS", "completed_trials", "trials_frame"]

#: User attrs every nas-optuna trial stores, copied to columns of the same name.
TRIAL_COLUMNS = (
    "reward_stage1",
    "reward_stage2",
    "miou",
    "macc",
    "fwiou",
    "params_total",
    "params_generated",
    "macs",
    "latency_ms",
    "peak_memory_mb",
    "output_stride",
    "genotype",
    "stem_weights",
    "fail_reason",
    "rejected",
    "cost_penalty",
)

#: Columns read as numbers (NaN where a trial lacks them).
_NUMERIC = (
    "reward", "reward_stage1", "reward_stage2", "miou", "macc", "fwiou", "params_total",
    "params_generated", "macs", "latency_ms", "peak_memory_mb", "output_stride",
    "cost_penalty", "downsampling", "duration_s",
)
#: Prefix of the zero-cost proxy user attrs, copied to columns of the same name.
PROXY_PREFIX = "proxy_"
_BASE_COLUMNS = ("study", "sampler", "space", "number", "state", "reward")
_STRIDE_PARAM = re.compile(r"^block_\d+_stride$")


def trials_frame(storage: StorageLike, study_names: Sequence[str]) -> pd.DataFrame:
    """A row per trial of the named studies (every state), read from the storage alone.

    Columns, in order:

    * ``study``, ``sampler`` (the study's ``sampler`` user attr), ``space`` (its space
      name), ``number``, ``state`` (``COMPLETE``, ``PRUNED``, ``FAIL``, ...);
    * ``reward``: the objective value named ``reward``; else the last stage's reward
      (``reward_stage2``, else ``reward_stage1``, so a pruned trial carries its stage-1
      reward, unpenalised); else the last intermediate value;
    * ``value_<metric>``: one column per objective (``value_objective_<i>`` when the study
      names none);
    * the user attrs of :data:`TRIAL_COLUMNS` (``rejected`` holds the budget violation of
      a trial rejected before training, ``fail_reason`` why a trial failed);
    * ``proxy_<name>``: each zero-cost proxy the trial stored (NaN where non-finite), and
      ``proxy_seconds``;
    * ``feasible``: all Optuna constraints <= 0 (missing when the trial has none);
    * ``downsampling``: ``2 ** (number of block_*_stride params equal to 2)``, the
      template paper's downsampling factor (missing in spaces without such params);
    * ``duration_s``, ``datetime_start``, ``datetime_complete``;
    * ``param_<name>``: the architecture, one column per search-space parameter
      (:func:`~analysis.genotype.genotype_long` gives it in long form).

    Args:
        storage: Optuna storage URL (or an opened storage).
        study_names: Studies to read.

    Returns:
        The frame; numeric columns are floats with NaN where a trial lacks the value.

    Raises:
        KeyError: A study does not exist.

    Example:
        >>> frame = trials_frame("sqlite:///nas-optuna.db", ["quickstart"])
        >>> frame.groupby("state")["reward"].describe()
    """
    storage = open_storage(storage)
    rows = []
    metric_columns: list[str] = []
    param_columns: list[str] = []
    proxy_columns: list[str] = []
    for name in study_names:
        study = optuna.load_study(study_name=name, storage=storage)
        metrics = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
        for metric in metrics:
            if f"value_{metric}" not in metric_columns:
                metric_columns.append(f"value_{metric}")
        study_attrs = study.user_attrs
        space = study_attrs.get("space")
        for trial in study.get_trials(deepcopy=False):
            row = _trial_row(trial, metrics)
            row.update(study=name, sampler=study_attrs.get("sampler"),
                       space=space.get("name") if isinstance(space, dict) else space)
            for key in trial.params:
                if f"param_{key}" not in param_columns:
                    param_columns.append(f"param_{key}")
            for key in row:
                if key.startswith(PROXY_PREFIX) and key not in proxy_columns:
                    proxy_columns.append(key)
            rows.append(row)
    proxy_columns.sort()
    columns = [*_BASE_COLUMNS, *metric_columns, *TRIAL_COLUMNS, *proxy_columns, "feasible",
               "downsampling", "duration_s", "datetime_start", "datetime_complete",
               *param_columns]
    frame = pd.DataFrame(rows, columns=columns)
    for column in (*_NUMERIC, *metric_columns, *proxy_columns):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["number"] = frame["number"].astype(int)
    for column in ("datetime_start", "datetime_complete"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def completed_trials(frame: pd.DataFrame, column: str = "reward") -> pd.DataFrame:
    """The trials trained to the end: ``COMPLETE``, not rejected by a budget, ``column`` set.

    Most analyses count only these: a pruned trial's reward is a stage-1 reward (not
    comparable with final rewards), a rejected trial was never trained (reward 0 by
    convention), a failed trial has none.

    Args:
        frame: A :func:`trials_frame`.
        column: The column that must be present (not NaN).

    Example:
        >>> completed_trials(trials_frame(storage, ["quickstart"]))["reward"].max()
    """
    keep = (frame["state"] == "COMPLETE") & frame["rejected"].isna() & frame[column].notna()
    return frame[keep]


def _trial_row(trial: optuna.trial.FrozenTrial, metrics: Sequence[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "reward": _reward(trial, metrics),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
    }
    for index, metric in enumerate(metrics):
        row[f"value_{metric}"] = trial.values[index] if trial.values else None
    row.update({key: attrs.get(key) for key in TRIAL_COLUMNS})
    # Zero-cost proxies (``proxy_<name>``, None where non-finite) and their seconds.
    row.update({key: (np.nan if value is None else float(value))
                for key, value in attrs.items() if key.startswith(PROXY_PREFIX)})
    constraints = trial.constraints
    row["feasible"] = all(v <= 0.0 for v in constraints.values()) if constraints else None
    strides = [value for key, value in trial.params.items() if _STRIDE_PARAM.match(key)]
    row["downsampling"] = int(np.prod(strides)) if strides else None
    row.update({f"param_{key}": value for key, value in trial.params.items()})
    return row


def _reward(trial: optuna.trial.FrozenTrial, metrics: Sequence[str]) -> float | None:
    if trial.values is not None and "reward" in metrics:
        return trial.values[list(metrics).index("reward")]
    for key in ("reward_stage2", "reward_stage1"):
        if trial.user_attrs.get(key) is not None:
            return trial.user_attrs[key]
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None
