"""Pareto front and hypervolume history of multi-objective studies (e.g. reward vs latency).

Both reuse Optuna's plots, so the trials they count are Optuna's: ``COMPLETE`` trials
whose constraints (nas-optuna's budgets) are all <= 0. Pruned trials have no values and
rejected trials are infeasible, so neither counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.study import StudyDirection
from optuna.trial import TrialState

from analysis.result import Analysis, InsufficientData

__all__ = ["default_reference_point", "hypervolume_history", "pareto_front"]

#: How far beyond the worst feasible value the default reference point lies, as a share
#: of the objective's range.
REFERENCE_MARGIN = 0.1

_ATTR_COLUMNS = ("reward_stage1", "reward_stage2", "miou", "params_generated", "macs",
                 "latency_ms", "peak_memory_mb", "output_stride", "genotype")


def pareto_front(study: optuna.Study) -> Analysis:
    """Which architectures are not dominated in the study's objectives?

    The figure is :func:`optuna.visualization.plot_pareto_front` (2 or 3 objectives);
    the table lists :attr:`optuna.Study.best_trials` (feasible, non-dominated).

    Args:
        study: A multi-objective study.

    Returns:
        Table: a row per Pareto-optimal trial, by its first objective: ``number``,
        ``value_<metric>`` per objective and the trial's user attrs ``reward_stage1``,
        ``reward_stage2``, ``miou``, ``params_generated``, ``macs``, ``latency_ms``,
        ``peak_memory_mb``, ``output_stride``, ``genotype`` (less those that are
        objectives); stats: ``n_pareto``, ``n_feasible``.

    Raises:
        InsufficientData: The study has one objective (or more than 3), or no completed
            feasible trial.

    Example:
        >>> study = optuna.load_study(study_name="latency_pareto", storage=storage)
        >>> pareto_front(study).table[["number", "value_reward", "value_latency_ms"]]
    """
    names = _check_multi_objective(study, plot_limit=True)
    feasible = _feasible_trials(study)
    best = sorted(study.best_trials, key=lambda t: (t.values[0], t.number))
    attrs = [key for key in _ATTR_COLUMNS if key not in names]  # objectives are values
    rows = []
    for trial in best:
        row = {"number": trial.number}
        row.update({f"value_{name}": value for name, value in zip(names, trial.values)})
        row.update({key: trial.user_attrs.get(key) for key in attrs})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["number", *[f"value_{n}" for n in names], *attrs])
    from nas_optuna._optuna import experimental_ok  # lazily: analysis imports no nas_optuna

    with experimental_ok():
        figure = optuna.visualization.plot_pareto_front(study, target_names=list(names))
    title = f"Pareto front ({' vs '.join(names)})"
    figure.update_layout(title_text=title)
    return Analysis(
        title=title, table=table, figure=figure,
        stats={"n_pareto": len(best), "n_feasible": len(feasible)},
        notes="Optuna's rules: completed trials whose constraints (budgets) are all <= 0; "
              "pruned trials have no values.",
    )


def default_reference_point(study: optuna.Study,
                            margin: float = REFERENCE_MARGIN) -> list[float]:
    """A hypervolume reference point derived from the data.

    Per objective, the worst value among the completed feasible trials, moved a further
    ``margin`` of that objective's range (max - min) in the worse direction; when all
    values are equal, ``margin * |value|`` (or ``margin`` when the value is 0). So every
    feasible trial, the extreme ones included, adds volume.

    Example:
        >>> default_reference_point(study)  # maximize reward, minimize latency_ms
        [0.29, 14.3]
    """
    _check_multi_objective(study)
    values = np.array([t.values for t in _feasible_trials(study)], dtype=float)
    point = []
    for column, direction in zip(values.T, study.directions):
        span = float(column.max() - column.min())
        if span == 0.0:
            span = abs(float(column[0])) or 1.0
        if direction == StudyDirection.MAXIMIZE:
            point.append(float(column.min()) - margin * span)
        else:
            point.append(float(column.max()) + margin * span)
    return point


def hypervolume_history(study: optuna.Study,
                        reference_point: Sequence[float] | None = None) -> Analysis:
    """How fast does the search push the Pareto front out? (hypervolume per trial).

    The figure is :func:`optuna.visualization.plot_hypervolume_history`.

    Args:
        study: A multi-objective study.
        reference_point: In the objectives' own units and directions; by default
            :func:`default_reference_point`.

    Returns:
        Table: ``number`` and ``hypervolume`` of the front after each completed trial;
        stats: ``reference_point`` and ``final_hypervolume``.

    Raises:
        InsufficientData: Single-objective study, or no completed feasible trial.

    Example:
        >>> hypervolume_history(study).stats["reference_point"]
    """
    _check_multi_objective(study)
    point = (default_reference_point(study) if reference_point is None
             else [float(v) for v in reference_point])
    from nas_optuna._optuna import experimental_ok  # lazily: analysis imports no nas_optuna

    with experimental_ok():
        figure = optuna.visualization.plot_hypervolume_history(study, point)
    trace = figure.data[0]
    table = pd.DataFrame({"number": list(trace.x), "hypervolume": list(trace.y)})
    title = "Hypervolume history"
    shown = ", ".join(f"{v:.4g}" for v in point)
    figure.update_layout(title_text=f"{title} (reference point {shown})")
    return Analysis(
        title=title, table=table, figure=figure,
        stats={"reference_point": point,
               "final_hypervolume": float(table["hypervolume"].iloc[-1])},
        notes="Completed feasible trials. Reference point: per objective the worst feasible "
              f"value moved {REFERENCE_MARGIN:.0%} of the objective's range further, unless "
              "given.",
    )


def _check_multi_objective(study: optuna.Study, plot_limit: bool = False) -> list[str]:
    count = len(study.directions)
    if count < 2:
        raise InsufficientData(f"study {study.study_name!r} has a single objective")
    if plot_limit and count > 3:
        raise InsufficientData(f"study {study.study_name!r} has {count} objectives; "
                               "the Pareto plot shows 2 or 3")
    if not _feasible_trials(study):
        raise InsufficientData(f"study {study.study_name!r} has no completed feasible trial")
    return list(study.metric_names or [f"objective_{i}" for i in range(count)])


def _feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if all(v <= 0.0 for v in t.constraints.values())]
