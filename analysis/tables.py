"""One tidy table of trials from one or more stored studies."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
import pandas as pd

__all__ = ["TRIAL_COLUMNS", "trials_frame"]

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
    "output_stride",
    "genotype",
    "stem_weights",
    "fail_reason",
)


def trials_frame(storage: str, study_names: Sequence[str]) -> pd.DataFrame:
    """A row per trial of the named studies.

    Columns: ``study``, ``sampler``, ``number``, ``state``, ``reward`` (the trial's value,
    or its last reported stage reward when pruned), one column per objective value
    (``value_<metric>``), the :data:`TRIAL_COLUMNS`, ``duration_s`` and one column per
    search-space parameter prefixed ``param_``.

    Args:
        storage: Optuna storage URL.
        study_names: Studies to read.

    Raises:
        KeyError: A study does not exist.
    """
    rows = []
    for name in study_names:
        study = optuna.load_study(study_name=name, storage=storage)
        metrics = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
        sampler = study.user_attrs.get("sampler")
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            reward = None
            if trial.values is not None and "reward" in metrics:
                reward = trial.values[metrics.index("reward")]
            elif trial.intermediate_values:
                reward = trial.intermediate_values[max(trial.intermediate_values)]
            row = {
                "study": name,
                "sampler": sampler,
                "number": trial.number,
                "state": trial.state.name,
                "reward": reward,
                "duration_s": trial.duration.total_seconds() if trial.duration else None,
            }
            for index, metric in enumerate(metrics):
                row[f"value_{metric}"] = trial.values[index] if trial.values else None
            row.update({key: attrs.get(key) for key in TRIAL_COLUMNS})
            row.update({f"param_{key}": value for key, value in trial.params.items()})
            rows.append(row)
    return pd.DataFrame(rows)
