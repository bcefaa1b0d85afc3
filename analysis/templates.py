"""Rewards per template and per operation (template paper, supplementary Figs. 15 and 16)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from analysis._stats import require, summarise
from analysis.genotype import genotype_long
from analysis.result import Analysis
from analysis.tables import completed_trials

__all__ = ["operation_stats", "template_stats"]

_TOP_COLOUR = "#d62728"
_OTHER_COLOUR = "#7f7f7f"


def template_stats(frame: pd.DataFrame, top: int = 5, min_trials: int = 1) -> Analysis:
    """Which templates lead to high rewards? (template space; Figs. 15-16).

    A template (two operations in either order and an aggregation, see
    :func:`~analysis.genotype.template_label`) counts for a trial when some block of the
    trial applies it, the paper's definition of a *sampled* template; the trial's reward
    then counts once for that template, however many blocks apply it. Completed trials only.

    Args:
        frame: A :func:`~analysis.tables.trials_frame` of template-space studies.
        top: How many of the best templates (by mean reward, ties by name) the figure
            highlights and ``stats["top"]`` lists.
        min_trials: Templates used by fewer trials are listed but not ranked or plotted.

    Returns:
        Table: a row per study and template, best mean reward first within a study, with
        ``rank`` (1 = best, NaN below ``min_trials``), n, mean, std, quantiles, max;
        stats: ``top``, the best templates over all studies of the frame.

    Raises:
        InsufficientData: No completed trial uses a template (e.g. another space).

    Example:
        >>> result = template_stats(trials_frame(storage, ["quickstart"]), top=5)
        >>> result.stats["top"]
    """
    return _choice_stats(frame, "template", top, min_trials, "template",
                         "Reward per template (templates some block applies)")


def operation_stats(frame: pd.DataFrame, component: str = "op", top: int = 5,
                    min_trials: int = 1) -> Analysis:
    """Which operations (or other choices) lead to high rewards? Works in every space.

    A value counts for a trial when the trial's network uses it (``used`` rows of
    :func:`~analysis.genotype.genotype_long`; in the template space only operations of
    templates some block applies); the trial's reward counts once per distinct value.
    Completed trials only.

    Args:
        frame: A :func:`~analysis.tables.trials_frame`.
        component: A component of :func:`~analysis.genotype.genotype_long`: ``op``,
            ``aggregation``, ``stride``, ``repeats``, ``choice``...
        top: How many of the best values the figure highlights and ``stats["top"]`` lists.
        min_trials: Values used by fewer trials are listed but not ranked or plotted.

    Returns:
        Table: a row per study and value (column named after ``component``), as
        :func:`template_stats`.

    Raises:
        InsufficientData: No completed trial has the component.

    Example:
        >>> operation_stats(trials_frame(storage, ["quickstart"])).table.head()
    """
    return _choice_stats(frame, component, top, min_trials, component,
                         f"Reward per {component} (used in the network)")


def _choice_stats(frame: pd.DataFrame, component: str, top: int, min_trials: int,
                  name: str, title: str) -> Analysis:
    data = completed_trials(frame)
    long = genotype_long(data)
    long = long[(long["component"] == component) & long["used"]]
    long = long.drop_duplicates(["study", "number", "value"])
    rows = long.merge(data[["study", "number", "reward"]], on=["study", "number"])
    rows = require(rows.rename(columns={"value": name}), f"reward per {component}")
    rows[name] = rows[name].astype(str)
    table = summarise(rows, ["study", name])
    table = table.sort_values(["study", "mean", name], ascending=[True, False, True],
                              kind="stable")
    ranked = table["n"] >= min_trials
    table["rank"] = table[ranked].groupby("study")["mean"].rank(ascending=False,
                                                                 method="first")
    table = table[["study", name, "rank", *[c for c in table.columns
                                             if c not in ("study", name, "rank")]]]
    pooled = rows.groupby(name)["reward"].agg(["mean", "count"]).reset_index()
    pooled = pooled[pooled["count"] >= min_trials].sort_values(
        ["mean", name], ascending=[False, True], kind="stable").set_index(name)
    best = list(pooled.index[:top])
    figure = go.Figure()
    for label in reversed(pooled.index):  # best at the top of a horizontal plot
        values = rows.loc[rows[name] == label, "reward"]
        figure.add_trace(go.Box(
            x=values, y=[label] * len(values), name=label, orientation="h", boxpoints="all",
            jitter=0.3, marker_color=_TOP_COLOUR if label in best else _OTHER_COLOUR,
            showlegend=False,
        ))
    figure.update_layout(title_text=title, xaxis_title="reward",
                         height=max(350, 120 + 28 * len(pooled)), margin={"l": 260})
    return Analysis(
        title=title, table=table.reset_index(drop=True), figure=figure, stats={"top": best},
        notes=f"Completed trials only; a trial counts once per distinct {name} its network "
              f"uses. Ranked by mean reward among {name}s used by >= {min_trials} trial(s); "
              f"the top {top} are highlighted.",
    )
