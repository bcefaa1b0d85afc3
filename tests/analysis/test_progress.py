"""Rewards over search time and controller vs random (template Figs. 5, 8; CVPR Fig. 2)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import InsufficientData, compare_rewards, reward_over_time, stage_rewards


def test_stage_rewards_count_pruned_trials_at_stage_1(frame: pd.DataFrame) -> None:
    rows = stage_rewards(frame[frame["study"] == "controller"])
    assert rows.groupby("stage").size().to_dict() == {1: 22, 2: 20}


def test_reward_over_time_windows(frame: pd.DataFrame) -> None:
    result = reward_over_time(frame[frame["study"] == "controller"], windows=2,
                              threshold=0.5)
    table = result.table.set_index(["stage", "window"])
    # stage-1 trials are numbers 0-21: windows [0, 11) and [11, 22)
    assert table.loc[(1, "[0, 11)"), "n"] == 11 and table.loc[(1, "[11, 22)"), "n"] == 11
    assert table.loc[(2, "[11, 22)"), "n"] == 9
    assert table.loc[(2, "[0, 11)"), "median"] == pytest.approx(0.45)
    # stage 2 above 0.5: trials 11-19
    assert table.loc[(2, "[11, 22)"), "frac_above"] == pytest.approx(1.0)
    assert result.stats == {"threshold_stage1": 0.5, "threshold_stage2": 0.5}
    assert len(result.figure.data) == 2


def test_reward_over_time_shares_windows_between_studies(frame: pd.DataFrame) -> None:
    result = reward_over_time(frame, windows=4)
    windows = result.table.groupby("study")["window"].apply(lambda w: set(w.astype(str)))
    assert windows["controller"] == windows["random"]
    assert len(result.figure.data) == 4  # study x stage


def test_compare_controller_with_random(frame: pd.DataFrame) -> None:
    result = compare_rewards(frame, "controller", "random", threshold=0.45)
    table = result.table.set_index("study")
    assert list(table.index) == ["controller", "random"]
    assert table.loc["controller", "sampler"] == "ppo"
    assert table.loc["controller", "n"] == 20 and table.loc["random", "n"] == 20
    # controller rewards 0.40 + 0.01 i exceed 0.45 from i = 6: 14 of 20
    assert table.loc["controller", "frac_above"] == pytest.approx(0.7)
    assert table.loc["random", "frac_above"] == 0.0
    # every controller reward beats every random one
    assert result.stats["u_statistic"] == 400.0
    assert result.stats["prob_superiority"] == 1.0
    assert result.stats["p_value"] < 1e-6
    assert result.stats["p_value_greater"] < result.stats["p_value"]


def test_compare_stage1_counts_pruned_trials(frame: pd.DataFrame) -> None:
    result = compare_rewards(frame, "controller", "random", metric="reward_stage1")
    assert result.table.set_index("study").loc["controller", "n"] == 22
    # the pruned trials' stage-1 rewards (0.30) lose to some random ones (0.25-0.345)
    assert result.stats["u_statistic"] < 22 * 20
    assert result.stats["prob_superiority"] == result.stats["u_statistic"] / (22 * 20)


def test_compare_needs_two_studies(frame: pd.DataFrame) -> None:
    with pytest.raises(InsufficientData):
        compare_rewards(frame, "controller", "controller")
    with pytest.raises(InsufficientData):
        compare_rewards(frame, "controller", "no-such-study")
