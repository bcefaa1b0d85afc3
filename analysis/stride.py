"""The output stride (downsampling factor) of generated networks: how often each is chosen
over time, and the rewards each attains (template paper Figs. 6 and 7)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis._stats import assign_windows, require, summarise, window_edges
from analysis.result import Analysis
from analysis.tables import completed_trials

__all__ = ["stride_over_time", "stride_vs_reward"]

_PALETTE = qualitative.Plotly


def stride_vs_reward(frame: pd.DataFrame, column: str = "output_stride") -> Analysis:
    """Do networks of some output stride attain higher rewards? (template paper, Fig. 7).

    Counts the completed trials (not pruned, rejected or failed).

    Args:
        frame: A :func:`~analysis.tables.trials_frame`.
        column: ``output_stride`` (stored on every trial of every space: the network's
            output resolution relative to its input) or ``downsampling`` (the template
            paper's factor, ``2 ** (stride-2 blocks)``, 1 to 8).

    Returns:
        Table: a row per study and stride (n, mean, std, quantiles, max); stats: ``n``.

    Raises:
        InsufficientData: No completed trial has a reward and the column.

    Example:
        >>> stride_vs_reward(trials_frame(storage, ["quickstart"])).table
    """
    data = completed_trials(frame)
    data = require(data[data[column].notna()].copy(), f"reward per {column}")
    data[column] = data[column].astype(int)
    table = summarise(data, ["study", column])
    title = f"Reward per {column}"
    figure = go.Figure()
    for study, rows in data.groupby("study", sort=True):
        figure.add_trace(go.Box(x=rows[column].astype(str), y=rows["reward"], name=str(study),
                                boxpoints="all", jitter=0.3))
    strides = sorted(data[column].unique())
    figure.update_layout(
        title_text=title, boxmode="group", yaxis_title="reward", xaxis_title=column,
        xaxis={"categoryorder": "array", "categoryarray": [str(s) for s in strides]},
    )
    return Analysis(title=title, table=table, figure=figure, stats={"n": len(data)},
                    notes="Completed trials only (pruned, rejected and failed trials excluded).")


def stride_over_time(frame: pd.DataFrame, column: str = "output_stride",
                     windows: int = 4) -> Analysis:
    """How often does the sampler choose each output stride as the search goes on? (Fig. 6).

    Counts every trial whose architecture was sampled and measured (any state, rejected
    ones too: the question is what the sampler picks, not how it trained).

    Args:
        frame: A :func:`~analysis.tables.trials_frame`.
        column: ``output_stride`` or ``downsampling`` (see :func:`stride_vs_reward`).
        windows: Number of equal spans of trial numbers, shared by the studies.

    Returns:
        Table: a row per study, window and stride with ``count`` and ``fraction`` (of
        the window's trials of that study).

    Raises:
        InsufficientData: No trial has the column.

    Example:
        >>> table = stride_over_time(trials_frame(storage, ["quickstart"])).table
        >>> table.pivot_table("fraction", "window", "output_stride")
    """
    data = require(frame[frame[column].notna()].copy(), f"{column} over time")
    data[column] = data[column].astype(int)
    data["window"] = assign_windows(data["number"], window_edges(data["number"], windows))
    table = (data.groupby(["study", "window", column], observed=True).size()
             .rename("count").reset_index())
    totals = table.groupby(["study", "window"], observed=True)["count"].transform("sum")
    table["fraction"] = table["count"] / totals
    title = f"Share of each {column} over search time"
    studies = sorted(data["study"].unique())
    figure = make_subplots(rows=len(studies), cols=1, shared_xaxes=True,
                           subplot_titles=[str(s) for s in studies], vertical_spacing=0.08)
    strides = sorted(table[column].unique())
    for row, study in enumerate(studies, start=1):
        for index, stride in enumerate(strides):
            rows = table[(table["study"] == study) & (table[column] == stride)]
            figure.add_trace(go.Bar(
                x=rows["window"].astype(str), y=rows["fraction"], customdata=rows["count"],
                name=f"{column} {stride}", legendgroup=str(stride), showlegend=row == 1,
                marker_color=_PALETTE[index % len(_PALETTE)],
                hovertemplate="%{x}: %{y:.0%} (%{customdata} trials)<extra></extra>",
            ), row=row, col=1)
    order = [str(c) for c in data["window"].cat.categories]
    figure.update_xaxes(categoryorder="array", categoryarray=order)
    figure.update_xaxes(title_text="trial numbers", row=len(studies), col=1)
    figure.update_yaxes(title_text="fraction of trials", range=[0, 1])
    figure.update_layout(title_text=title, barmode="stack", height=250 + 200 * len(studies))
    return Analysis(title=title, table=table, figure=figure, stats={"n": len(data)},
                    notes="Every sampled trial (any state, rejected ones included). "
                          "fraction: share of the window's trials of the study.")
