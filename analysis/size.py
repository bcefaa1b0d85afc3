"""Reward against architecture size (template paper, supplementary Figs. 13 and 14)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from analysis._stats import human, nice_edges, require, summarise
from analysis.result import Analysis
from analysis.tables import completed_trials

__all__ = ["reward_vs_size", "size_buckets"]


def size_buckets(sizes: pd.Series, buckets: int | Sequence[float] = 5) -> pd.Series:
    """The size bucket of every value, as ordered categories labelled ``"lo-hi"``.

    Args:
        sizes: Sizes (e.g. ``params_generated``).
        buckets: A number of buckets, cut at the sizes' quantiles rounded to two
            significant digits (equal-frequency buckets, readable edges), or explicit
            edges; a bucket holds ``lo < size <= hi``, the first also ``lo``; sizes
            outside explicit edges get no bucket (NaN).

    Example:
        >>> size_buckets(pd.Series([1e5, 2e5, 3e5]), [0, 150_000, 400_000]).tolist()
        ['0-150k', '150k-400k', '150k-400k']
    """
    edges = _edges(sizes, buckets)
    labels = [_label(a, b) for a, b in zip(edges[:-1], edges[1:])]
    if edges[0] == edges[-1]:  # a single size: one bucket
        return pd.Series(pd.Categorical(labels * len(sizes), categories=labels, ordered=True),
                         index=sizes.index)
    return pd.cut(sizes, bins=edges, labels=labels, include_lowest=True, right=True)


def reward_vs_size(frame: pd.DataFrame, size: str = "params_generated",
                   buckets: int | Sequence[float] = 5) -> Analysis:
    """Does the size of an architecture tell its reward? (template paper, Figs. 13-14).

    Counts the completed trials (:func:`~analysis.tables.completed_trials`: not pruned,
    rejected or failed). The figure scatters reward against ``size`` (Fig. 13) and
    shows a box of rewards per size bucket (Fig. 14).

    Args:
        frame: A :func:`~analysis.tables.trials_frame`.
        size: The size column: ``params_generated`` (the searched part, as the paper),
            ``params_total``, ``macs``, ``latency_ms``...
        buckets: See :func:`size_buckets`.

    Returns:
        Table: a row per study and bucket (``bucket``, ``lower``, ``upper``, ``n``, mean,
        std, quantiles); stats: ``spearman_rho`` and ``spearman_p`` of size vs reward
        over all rows.

    Raises:
        InsufficientData: No completed trial has a reward and a size.

    Example:
        >>> result = reward_vs_size(trials_frame(storage, ["quickstart"]), buckets=4)
        >>> result.table[["bucket", "n", "median"]]
    """
    data = completed_trials(frame)
    data = require(data[data[size].notna()].copy(), f"reward vs {size}")
    data["bucket"] = size_buckets(data[size], buckets)
    table = summarise(data, ["study", "bucket"])
    edges = _edges(data[size], buckets)
    bounds = {_label(a, b): (a, b) for a, b in zip(edges[:-1], edges[1:])}
    table["lower"] = [bounds[str(b)][0] for b in table["bucket"]]
    table["upper"] = [bounds[str(b)][1] for b in table["bucket"]]
    table = table[["study", "bucket", "lower", "upper",
                   *[c for c in table.columns if c not in ("study", "bucket", "lower", "upper")]]]
    rho, p = (stats.spearmanr(data[size], data["reward"]) if len(data) > 2
              else (float("nan"), float("nan")))
    title = f"Reward vs {size}"
    figure = make_subplots(rows=1, cols=2, subplot_titles=(
        f"reward vs {size}", f"reward per {size} bucket"))
    for study, group in data.groupby("study", sort=True):
        figure.add_trace(go.Scatter(
            x=group[size], y=group["reward"], mode="markers", name=str(study),
            legendgroup=str(study), text=_hover(group),
            hovertemplate="%{text}<br>" + size + " %{x:,}<br>reward %{y:.4f}<extra></extra>",
        ), row=1, col=1)
        figure.add_trace(go.Box(
            x=group["bucket"].astype(str), y=group["reward"], name=str(study),
            legendgroup=str(study), showlegend=False, boxpoints="all", jitter=0.3,
        ), row=1, col=2)
    order = [str(c) for c in data["bucket"].cat.categories]
    figure.update_xaxes(title_text=size, row=1, col=1)
    figure.update_xaxes(title_text=f"{size} bucket", categoryorder="array",
                        categoryarray=order, row=1, col=2)
    figure.update_yaxes(title_text="reward")
    figure.update_layout(title_text=title, boxmode="group")
    return Analysis(
        title=title, table=table.reset_index(drop=True), figure=figure,
        stats={"n": len(data), "spearman_rho": float(rho), "spearman_p": float(p)},
        notes=f"Completed trials only (pruned, rejected and failed trials excluded). A "
              f"bucket holds lower < {size} <= upper (the first also lower).",
    )


def _edges(sizes: pd.Series, buckets: int | Sequence[float]) -> list[float]:
    if isinstance(buckets, int):
        edges = nice_edges(sizes, buckets)
        return edges * 2 if len(edges) == 1 else edges
    edges = sorted(float(edge) for edge in buckets)
    if len(edges) < 2:
        raise ValueError(f"buckets: give a count or at least two edges, got {list(buckets)}")
    return edges


def _label(lower: float, upper: float) -> str:
    return human(lower) if lower == upper else f"{human(lower)}-{human(upper)}"


def _hover(group: pd.DataFrame) -> list[str]:
    return [f"trial {n}<br>{g}" if isinstance(g, str) else f"trial {n}"
            for n, g in zip(group["number"], group["genotype"])]
