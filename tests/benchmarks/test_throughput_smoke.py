"""Smoke test of ``benchmarks/throughput.py``: tiny settings, both sides, honest numbers.

The numbers are not checked against targets (a shared CI machine cannot time anything);
the test checks that the benchmark measures what its report claims: both sides trained
the same architectures, the phase breakdown covers the measured time, rates are positive
and the rank correlation is a correlation.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from scipy import stats

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def throughput(import_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return import_benchmark("throughput")


@pytest.fixture(scope="module")
def quick_run(throughput: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("throughput")
    results = throughput.main([
        "--quick", "--device", "cpu", "--threads", "1", "--archs", "3",
        "--workdir", str(out / "work"), "--write", str(out / "report.md"),
    ])
    return {"results": results, "out": out}


@pytest.mark.slow
def test_quick_run_reports_both_sides(quick_run: dict[str, Any]) -> None:
    results, out = quick_run["results"], quick_run["out"]
    report = (out / "report.md").read_text()
    assert "(a) reference loop" in report and "(b) nas-optuna" in report
    assert "architectures per hour" in report and "Spearman" in report
    saved = json.loads((out / "report.json").read_text())  # --write's JSON twin
    assert saved["settings"]["n_archs"] == 6
    for side in ("reference", "nas_optuna"):
        rows = results["rows"][side]
        assert [(r["space"], r["index"]) for r in rows] == [
            (space, i) for space in ("template", "auxcell") for i in range(3)]
        assert all(r["state"] == "COMPLETE" for r in rows), rows
        assert all(0.0 <= r["reward"] <= 1.0 for r in rows)
    # (b) trained exactly the enqueued architectures, in order.
    assert all(r["params_match"] for r in results["rows"]["nas_optuna"])
    assert [r["genotype"] for r in results["rows"]["reference"]] == [
        r["genotype"] for r in results["rows"]["nas_optuna"]]


@pytest.mark.slow
def test_quick_run_breakdown_covers_the_measured_time(quick_run: dict[str, Any]) -> None:
    summary = quick_run["results"]["summary"]
    for side in ("reference", "nas_optuna"):
        s = summary[side]
        assert s["missing_hooks"] == [], f"benchmark hooks lost their targets: {s}"
        # the rate a user reads is the trials it timed over the seconds it measured
        assert s["archs_per_hour"] == pytest.approx(3600 / s["seconds_per_trial"])
        assert s["seconds_per_trial"] > 0.1  # a trained network, not an empty loop
        phases = s["phases_per_trial"]
        assert sum(phases.values()) == pytest.approx(s["seconds_per_trial"], rel=0.15)
        for name in ("forward/backward", "evaluation", "cost", "build"):
            assert phases[name] > 0, (side, name)
    assert summary["reference"]["phases_per_trial"]["stem"] > 0  # recomputed every step
    assert summary["nas_optuna"]["phases_per_trial"]["stem"] == 0  # cached
    assert summary["nas_optuna"]["phases_per_trial"]["storage"] > 0  # a real SQLite study
    assert summary["reference"]["phases_per_trial"]["storage"] == 0
    assert summary["nas_optuna"]["one_off"]["prepare_s"] > 0


@pytest.mark.slow
def test_quick_run_rank_correlation_is_a_correlation(quick_run: dict[str, Any]) -> None:
    final = quick_run["results"]["rankings"]["final"]
    assert final["n"] == 6
    rows = quick_run["results"]["rows"]
    expected = stats.spearmanr([r["reward"] for r in rows["reference"]],
                               [r["reward"] for r in rows["nas_optuna"]]).statistic
    assert final["rho"] == pytest.approx(expected)  # of the same architectures, in order


def test_phase_timer_counts_every_second_once(throughput: ModuleType,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(100))
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: float(next(clock)))
    timer = throughput.PhaseTimer()
    with timer.phase("outer"):  # t = 0
        with timer.phase("inner"):  # 1 .. 2
            pass
        with timer.phase("outer"):  # 3 .. 4: re-entering counts as the same phase
            pass
    # closed at 5: outer 0-1, 2-3, 3-4 (nested), 4-5 = 4 s; inner 1 s
    assert dict(timer.seconds) == {"outer": 4.0, "inner": 1.0}
    timer.armed = False
    with timer.phase("ignored"):
        pass
    assert "ignored" not in timer.seconds


def test_worker_configs_survive_the_toml_round_trip(throughput: ModuleType,
                                                    tmp_path: Path) -> None:
    from nas_optuna.config import parse_config

    args = throughput._settings(throughput._parser().parse_args(["--quick"]))
    raw = throughput.benchmark_raw(args, throughput.torch.device("cpu"), tmp_path / "cache")
    worker = throughput.space_raw(raw, "auxcell", name="w", storage="sqlite:///w.db",
                                  n_trials=4)
    config = parse_config(tomllib.loads(throughput.to_toml(worker)))
    assert config.space.name == "auxcell" and config.study.n_trials == 4
    assert config.sampler.name == "random" and config.pruner.name == "none"
    assert config.data.options["num_images"] == 24
    assert config.train.device == "cpu" and config.train.stage1_epochs == 1
