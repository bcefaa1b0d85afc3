"""Rewards over search time, and one sampler against another (template paper Figs. 5 and 8,
CVPR paper Fig. 2)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from scipy import stats

from analysis._stats import assign_windows, require, summarise, window_edges
from analysis.result import Analysis, InsufficientData
from analysis.tables import completed_trials

__all__ = ["compare_rewards", "reward_over_time", "stage_rewards"]

#: Share of the pooled rewards above the default threshold: the top 10 %.
_TOP_QUANTILE = 0.9


def stage_rewards(frame: pd.DataFrame) -> pd.DataFrame:
    """The rewards after each training stage, a row per trial and stage.

    Stage 1 counts every trained trial (``COMPLETE`` or ``PRUNED``, not rejected by a
    budget) with a ``reward_stage1``; stage 2 the ``COMPLETE`` ones with a
    ``reward_stage2``. Columns: ``study``, ``sampler``, ``number``, ``stage`` (1 or 2),
    ``reward``.

    Example:
        >>> stage_rewards(trials_frame(storage, ["quickstart"])).groupby("stage").size()
    """
    trained = frame[frame["state"].isin(("COMPLETE", "PRUNED")) & frame["rejected"].isna()]
    parts = []
    for stage in (1, 2):
        rows = trained if stage == 1 else trained[trained["state"] == "COMPLETE"]
        rows = rows[rows[f"reward_stage{stage}"].notna()]
        parts.append(pd.DataFrame({
            "study": rows["study"], "sampler": rows["sampler"], "number": rows["number"],
            "stage": stage, "reward": rows[f"reward_stage{stage}"].astype(float),
        }))
    return pd.concat(parts, ignore_index=True)


def reward_over_time(frame: pd.DataFrame, windows: int = 4,
                     threshold: float | None = None) -> Analysis:
    """How do the rewards a sampler finds change as the search goes on?

    Trials are grouped into ``windows`` equal spans of trial numbers, shared by all
    studies of ``frame`` (so studies are compared at the same search time), and each
    window's stage-1 and stage-2 rewards (:func:`stage_rewards`) are summarised, as in the
    CVPR paper's Fig. 2 (per stage, RL vs random) and the template paper's Fig. 5.

    Args:
        frame: A :func:`~analysis.tables.trials_frame` of one or more studies.
        windows: Number of windows of trial numbers.
        threshold: ``frac_above`` is the share of rewards above it; by default, per stage,
            the 90th percentile of that stage's pooled rewards (the share of the top 10 %
            each window holds).

    Returns:
        Table: a row per study, stage and window (``window`` labelled ``[a, b)``), with
        n, mean, std, quantiles, max and ``frac_above``; stats: the threshold per stage.

    Raises:
        InsufficientData: No trial has a stage reward.

    Example:
        >>> result = reward_over_time(trials_frame(storage, ["ppo", "random"]), windows=4)
        >>> result.table.pivot_table("median", "window", ["study", "stage"])
    """
    data = require(stage_rewards(frame), "reward over time")
    data["window"] = assign_windows(data["number"], window_edges(data["number"], windows))
    tables, thresholds = [], {}
    for stage, rows in data.groupby("stage", sort=True):
        cut = threshold if threshold is not None else float(rows["reward"].quantile(_TOP_QUANTILE))
        thresholds[f"threshold_stage{stage}"] = cut
        tables.append(summarise(rows, ["study", "stage", "window"], threshold=cut))
    table = pd.concat(tables, ignore_index=True)
    title = "Reward over search time"
    figure = go.Figure()
    for (study, stage), rows in data.groupby(["study", "stage"], sort=True):
        figure.add_trace(go.Box(
            x=rows["window"].astype(str), y=rows["reward"], name=f"{study} stage {stage}",
            boxpoints="outliers",
        ))
    figure.update_layout(
        title_text=title, boxmode="group", xaxis_title="trial numbers", yaxis_title="reward",
        xaxis={"categoryorder": "array",
               "categoryarray": [str(c) for c in data["window"].cat.categories]},
    )
    return Analysis(
        title=title, table=table, figure=figure, stats=thresholds,
        notes="Stage 1: every trained trial (completed or pruned, not rejected); stage 2: "
              "completed trials. Windows span equal ranges of trial numbers, shared by "
              "the studies. frac_above: share of rewards above the stage's threshold.",
    )


def compare_rewards(frame: pd.DataFrame, study: str, other: str, metric: str = "reward",
                    threshold: float | None = None) -> Analysis:
    """Does one sampler (e.g. the controller) find better architectures than another (random)?

    Compares the reward distributions of two studies as the template paper's Fig. 8:
    summaries, the share above a threshold and a two-sided Mann-Whitney U test
    (:func:`scipy.stats.mannwhitneyu`, which assumes nothing of the distributions' shape).

    Args:
        frame: A :func:`~analysis.tables.trials_frame` holding both studies.
        study: The study under test (e.g. the controller's).
        other: The baseline study (e.g. random search).
        metric: The reward column. ``reward`` counts the completed trials; use
            ``reward_stage1`` to compare every trained trial, pruned ones included, at
            the same stage (fair when only one study prunes).
        threshold: By default the 90th percentile of both studies' pooled rewards.

    Returns:
        Table: a row per study (n, mean, std, quantiles, max, ``frac_above``); stats:
        ``u_statistic`` (of ``study``), ``p_value`` (two-sided), ``p_value_greater``
        (``study`` stochastically greater), ``prob_superiority`` (U / (n1 n2): the chance
        that a random trial of ``study`` beats one of ``other``, ties counting half) and
        ``threshold``.

    Raises:
        InsufficientData: A study has no trial with the metric.

    Example:
        >>> frame = trials_frame(storage, ["ppo", "random"])
        >>> compare_rewards(frame, "ppo", "random").stats["p_value"]
    """
    if metric == "reward_stage1":
        rows = stage_rewards(frame)
        rows = rows[rows["stage"] == 1].rename(columns={"reward": metric})
    else:
        rows = completed_trials(frame, metric)
    if study == other:
        raise InsufficientData(f"compare {study!r} with another study, not with itself")
    groups = {}
    for name in (study, other):
        groups[name] = require(rows[rows["study"] == name], f"{metric} of study {name!r}")
    data = pd.concat(groups.values(), ignore_index=True)
    cut = threshold if threshold is not None else float(data[metric].quantile(_TOP_QUANTILE))
    table = summarise(data, ["study"], column=metric, threshold=cut)
    table = table.set_index("study").loc[[study, other]].reset_index()
    samplers = data.groupby("study")["sampler"].first()
    table.insert(1, "sampler", [samplers.get(name) for name in table["study"]])
    x, y = groups[study][metric], groups[other][metric]
    test = stats.mannwhitneyu(x, y, alternative="two-sided")
    greater = stats.mannwhitneyu(x, y, alternative="greater")
    title = f"{metric}: {study} vs {other}"
    figure = go.Figure()
    for name in (study, other):
        figure.add_trace(go.Violin(
            x=[name] * len(groups[name]), y=groups[name][metric], name=name, box_visible=True,
            meanline_visible=True, points="all", pointpos=0, jitter=0.3,
        ))
    figure.add_hline(y=cut, line_dash="dot", annotation_text=f"threshold {cut:.4g}")
    figure.update_layout(
        title_text=f"{title} (Mann-Whitney U p = {test.pvalue:.3g})",
        yaxis_title=metric, showlegend=False,
    )
    return Analysis(
        title=title, table=table, figure=figure,
        stats={"metric": metric, "u_statistic": float(test.statistic),
               "p_value": float(test.pvalue), "p_value_greater": float(greater.pvalue),
               "prob_superiority": float(test.statistic) / (len(x) * len(y)),
               "threshold": cut},
        notes=("Every trained trial's stage-1 reward (completed or pruned, not rejected)."
               if metric == "reward_stage1" else
               "Completed trials only (pruned, rejected and failed trials excluded).")
        + " Two-sided Mann-Whitney U test; frac_above: share above the threshold.",
    )
