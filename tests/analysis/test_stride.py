"""Output stride vs reward and its frequency over time (template Figs. 6-7)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import InsufficientData, stride_over_time, stride_vs_reward


def test_stride_frequencies_over_time(frame: pd.DataFrame) -> None:
    controller = frame[frame["study"] == "controller"]
    result = stride_over_time(controller, windows=2)
    counts = result.table.set_index(["window", "output_stride"])["count"].to_dict()
    # trials 0-22 carry a stride (23 failed before measuring): windows [0, 12), [12, 23)
    assert counts == {("[0, 12)", 8): 6, ("[0, 12)", 16): 3, ("[0, 12)", 32): 3,
                      ("[12, 23)", 8): 8, ("[12, 23)", 16): 1, ("[12, 23)", 32): 2}
    fractions = result.table.groupby("window", observed=True)["fraction"].sum()
    assert fractions.to_numpy() == pytest.approx([1.0, 1.0])


def test_downsampling_factor_column(frame: pd.DataFrame) -> None:
    # from the params, so the failed trial 23 (stride 1 everywhere) counts too
    result = stride_over_time(frame[frame["study"] == "controller"], column="downsampling",
                              windows=1)
    assert result.table.set_index("downsampling")["count"].to_dict() == {1: 15, 2: 4, 4: 5}


def test_reward_per_stride(frame: pd.DataFrame) -> None:
    result = stride_vs_reward(frame[frame["study"] == "controller"])
    table = result.table.set_index("output_stride")
    assert table["n"].to_dict() == {8: 14, 16: 3, 32: 3}
    assert table.loc[16, "mean"] == pytest.approx(0.44)  # trials 1, 4, 7
    assert table.loc[8, "max"] == pytest.approx(0.59)


def test_several_studies_get_a_panel_each(frame: pd.DataFrame) -> None:
    result = stride_over_time(frame, windows=3)
    assert set(result.table["study"]) == {"controller", "random"}
    titles = [a.text for a in result.figure.layout.annotations]
    assert titles == ["controller", "random"]


def test_no_stride(frame: pd.DataFrame) -> None:
    with pytest.raises(InsufficientData):
        stride_over_time(frame.assign(output_stride=float("nan")))
