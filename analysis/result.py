"""The one return type of every analysis: a summary table, a figure and its statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import plotly.graph_objects as go

__all__ = ["Analysis", "InsufficientData"]


class InsufficientData(ValueError):
    """The trials given hold too little for an analysis (e.g. no completed trial).

    The report catches it and lists the analysis as not shown, with this message.
    """


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The answer to one question about stored studies.

    Attributes:
        title: One line naming the question, also the figure's title.
        table: The summary table the figure shows (tidy: a row per group).
        figure: A plotly figure.
        stats: Scalar results (test statistics, p-values, the reference point used...).
        notes: Which trials count and how the statistics were computed, in one paragraph.

    Example:
        >>> result = reward_vs_size(trials_frame(storage, ["quickstart"]))
        >>> result.table[["bucket", "n", "median"]]
        >>> result.figure.show()
    """

    title: str
    table: pd.DataFrame
    figure: go.Figure
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""
