"""trials_frame: a row per trial, the reward rule, the columns analyses read."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from analysis import TRIAL_COLUMNS, completed_trials, trials_frame


def test_a_row_per_trial_of_every_state(frame: pd.DataFrame) -> None:
    controller = frame[frame["study"] == "controller"]
    assert len(controller) == 24 and len(frame) == 44
    assert controller["state"].value_counts().to_dict() == {"COMPLETE": 21, "PRUNED": 2,
                                                            "FAIL": 1}
    assert list(controller["number"]) == list(range(24))
    assert set(frame["sampler"]) == {"ppo", "random"}
    assert set(frame["space"]) == {"template"}


def test_columns(frame: pd.DataFrame) -> None:
    for column in ("study", "sampler", "number", "state", "reward", "value_reward",
                   *TRIAL_COLUMNS, "feasible", "downsampling", "duration_s",
                   "datetime_start", "datetime_complete"):
        assert column in frame.columns, column
    params = [c for c in frame.columns if c.startswith("param_")]
    assert "param_template_0_op1" in params and "param_block_6_repeats" in params
    assert "param_block_3_stride" not in params  # only the first half of the blocks stride
    assert len(params) == 3 * 3 + 7 * 4 + 3
    assert frame["params_generated"].dtype == float


def test_reward_rule(frame: pd.DataFrame) -> None:
    rows = frame[frame["study"] == "controller"].set_index("number")
    assert rows.loc[5, "reward"] == pytest.approx(0.45)      # the objective value
    assert rows.loc[20, "reward"] == pytest.approx(0.30)     # pruned: its stage-1 reward
    assert rows.loc[22, "reward"] == 0.0                     # rejected: value 0
    assert math.isnan(rows.loc[23, "reward"])                # failed: none
    assert rows.loc[23, "fail_reason"] == "NaN loss in stage 1"
    assert rows.loc[22, "rejected"].startswith("params_generated")


def test_feasible_and_downsampling(frame: pd.DataFrame) -> None:
    rows = frame[frame["study"] == "controller"].set_index("number")
    assert rows.loc[22, "feasible"] is False or rows.loc[22, "feasible"] == False  # noqa: E712
    assert rows.loc[0, "feasible"] is None
    # trial 2 strides twice (stride2 = 2 % 3): factor 4, output stride 8 * 4
    assert rows.loc[2, "downsampling"] == 4 and rows.loc[2, "output_stride"] == 32
    assert rows.loc[12, "downsampling"] == 1


def test_completed_trials_drop_pruned_rejected_and_failed(frame: pd.DataFrame) -> None:
    completed = completed_trials(frame[frame["study"] == "controller"])
    assert list(completed["number"]) == list(range(20))


def test_missing_study(storage: str) -> None:
    with pytest.raises(KeyError):
        trials_frame(storage, ["no-such-study"])


def test_empty_study_gives_an_empty_frame_with_the_columns(storage: str) -> None:
    empty = trials_frame(storage, ["empty"])
    assert empty.empty and {"reward", "state", *TRIAL_COLUMNS} <= set(empty.columns)


def test_analysis_is_storage_only() -> None:
    code = ("import sys, analysis; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'nas_optuna', 'search_spaces')]; print(bad); assert not bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
