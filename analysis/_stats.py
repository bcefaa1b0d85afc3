"""Helpers shared by the analyses: distribution summaries, windows of trials, size labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.result import InsufficientData

#: Columns of :func:`summarise`, after the group keys.
SUMMARY_COLUMNS = ("n", "mean", "std", "min", "q25", "median", "q75", "max")


def summarise(frame: pd.DataFrame, by: Sequence[str], column: str = "reward",
              threshold: float | None = None) -> pd.DataFrame:
    """Count, mean, std and quantiles of ``column`` per group (and the share > threshold)."""
    grouped = frame.groupby(list(by), sort=True, observed=True)[column]
    table = grouped.agg(
        n="count", mean="mean", std="std", min="min",
        q25=lambda s: s.quantile(0.25), median="median",
        q75=lambda s: s.quantile(0.75), max="max",
    ).reset_index()
    if threshold is not None:
        share = grouped.agg(lambda s: float((s > threshold).mean())).reset_index(drop=True)
        table["frac_above"] = share.to_numpy()
    table["n"] = table["n"].astype(int)
    return table


def require(frame: pd.DataFrame, what: str, minimum: int = 1) -> pd.DataFrame:
    """``frame`` unchanged, or :class:`InsufficientData` when it has fewer rows than needed."""
    if len(frame) < minimum:
        raise InsufficientData(f"{what}: need at least {minimum} trial(s), found {len(frame)}")
    return frame


def window_edges(numbers: pd.Series, windows: int) -> np.ndarray:
    """Integer edges of ``windows`` equal spans of trial numbers (first edge <= min, last > max)."""
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    low, high = int(numbers.min()), int(numbers.max()) + 1
    edges = np.unique(np.round(np.linspace(low, high, windows + 1)).astype(int))
    return edges


def assign_windows(numbers: pd.Series, edges: np.ndarray) -> pd.Series:
    """Labels ``"[a, b)"`` of the window each trial number falls in, ordered categories."""
    labels = [f"[{a}, {b})" for a, b in zip(edges[:-1], edges[1:])]
    index = np.searchsorted(edges, numbers.to_numpy(), side="right") - 1
    index = np.clip(index, 0, len(labels) - 1)
    return pd.Series(pd.Categorical.from_codes(index, labels, ordered=True), index=numbers.index)


def human(value: float) -> str:
    """A count in k / M, e.g. 250000 -> '250k', 1200000 -> '1.2M'."""
    value = float(value)
    for divisor, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.3g}{suffix}"
    return f"{value:.3g}"


def nice_edges(values: pd.Series, buckets: int) -> list[float]:
    """Bucket edges at the quantiles of ``values``, rounded to two significant digits.

    Equal-frequency buckets keep every box of a size plot comparably filled; rounding
    makes the edges readable (250k, 300k). The outer edges are the data's min and max.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    inner = values.quantile(np.linspace(0, 1, buckets + 1)[1:-1]).to_numpy()
    rounded = [_round_significant(v, 2) for v in inner]
    edges = [float(values.min()), *rounded, float(values.max())]
    return sorted({e for e in edges if values.min() <= e <= values.max()})


def _round_significant(value: float, digits: int) -> float:
    if value == 0:
        return 0.0
    return float(round(value, -int(np.floor(np.log10(abs(value)))) + digits - 1))
