"""reward_vs_size: buckets of size and the rewards in them (template suppl. Figs. 13-14)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import InsufficientData, reward_vs_size, size_buckets


def test_explicit_bucket_counts(frame: pd.DataFrame) -> None:
    controller = frame[frame["study"] == "controller"]
    result = reward_vs_size(controller, buckets=[100_000, 150_000, 200_000, 300_000])
    # completed trials 0-19 have 100k + 10k i generated parameters
    assert list(result.table["n"]) == [6, 5, 9]
    assert list(result.table["bucket"].astype(str)) == ["100k-150k", "150k-200k", "200k-300k"]
    assert list(result.table["lower"]) == [100_000, 150_000, 200_000]
    assert result.table["mean"].iloc[0] == pytest.approx(0.425)
    assert result.stats["n"] == 20 and result.stats["spearman_rho"] == pytest.approx(1.0)
    assert [t.type for t in result.figure.data] == ["scatter", "box"]


def test_default_buckets_cover_every_completed_trial(frame: pd.DataFrame) -> None:
    result = reward_vs_size(frame, buckets=4)
    assert result.table["n"].sum() == 40
    assert set(result.table["study"]) == {"controller", "random"}


def test_size_buckets_single_size() -> None:
    buckets = size_buckets(pd.Series([5e5, 5e5]), 3)
    assert buckets.astype(str).tolist() == ["500k", "500k"]


def test_no_completed_trial(frame: pd.DataFrame) -> None:
    with pytest.raises(InsufficientData):
        reward_vs_size(frame[frame["state"] == "FAIL"])
