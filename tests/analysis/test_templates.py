"""Per-template and per-operation rewards (template suppl. Figs. 15-16)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import InsufficientData, operation_stats, template_label, template_stats
from tests.analysis.conftest import (
    EARLY_TEMPLATE,
    SHARED_TEMPLATE,
    TOP_TEMPLATE,
    UNUSED_TEMPLATE,
)


def test_top_templates(frame: pd.DataFrame) -> None:
    result = template_stats(frame[frame["study"] == "controller"], top=2)
    table = result.table
    assert list(table["template"]) == [template_label(*TOP_TEMPLATE),
                                       template_label(*SHARED_TEMPLATE),
                                       template_label(*EARLY_TEMPLATE)]
    assert list(table["rank"]) == [1, 2, 3]
    assert list(table["n"]) == [10, 20, 10]
    assert table["mean"].iloc[0] == pytest.approx(0.545)
    assert result.stats["top"] == [template_label(*TOP_TEMPLATE),
                                   template_label(*SHARED_TEMPLATE)]
    # a template no block applies is not a sampled template
    assert template_label(*UNUSED_TEMPLATE) not in set(table["template"])
    assert len(result.figure.data) == 3


def test_min_trials_leaves_rare_templates_unranked(frame: pd.DataFrame) -> None:
    result = template_stats(frame[frame["study"] == "controller"], min_trials=15)
    ranked = result.table.dropna(subset=["rank"])
    assert list(ranked["template"]) == [template_label(*SHARED_TEMPLATE)]
    assert len(result.table) == 3 and len(result.figure.data) == 1


def test_operation_counts(frame: pd.DataFrame) -> None:
    result = operation_stats(frame[frame["study"] == "controller"])
    counts = result.table.set_index("op")["n"].to_dict()
    assert counts == {"sep_conv_5x5": 10, "skip_connect": 10, "global_average_pool": 20,
                      "sep_conv_3x3": 20, "max_pool_3x3": 10}  # dil6: only in template 2
    assert result.stats["top"][:2] == ["sep_conv_5x5", "skip_connect"]


def test_other_components(frame: pd.DataFrame) -> None:
    result = operation_stats(frame[frame["study"] == "controller"], component="aggregation")
    assert result.table.set_index("aggregation")["n"].to_dict() == {"cat": 10, "psum": 20}


def test_no_template_space(frame: pd.DataFrame) -> None:
    plain = frame.drop(columns=[c for c in frame.columns if c.startswith("param_template")])
    with pytest.raises(InsufficientData):
        template_stats(plain)
