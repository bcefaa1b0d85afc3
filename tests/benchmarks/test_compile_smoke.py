"""Smoke test of ``benchmarks/compile.py``: both workloads timed, eager and compiled.

It compiles with Dynamo's ``eager`` backend (the graph is captured, no code generated):
inductor's code generation takes a minute per graph on two cores, and what this test
guards is the script's own plumbing, not inductor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_compile_benchmark_times_both_workloads_and_reports_break_even(
    tmp_path: Path, import_benchmark: Callable[[str], ModuleType]
) -> None:
    compile_benchmark = import_benchmark("compile")
    report = compile_benchmark.main([
        "--spaces", "auxcell", "--archs", "1", "--batch", "2", "--height", "32", "--width",
        "32", "--warmup", "0", "--repeats", "1", "--backend", "eager",
        "--out", str(tmp_path / "compile.md")])
    assert (tmp_path / "compile.md").read_text() == report
    rows = [line for line in report.splitlines() if line.startswith("| auxcell | 0 |")]
    assert [row.split(" | ")[2] for row in rows] == ["stage 1", "stage 2"]
    # The quickstart's budget: 216 meta-train images, batch 16, 6 + 0 epochs.
    assert compile_benchmark.budget_steps(REPO / "studies" / "quickstart.toml") == {
        "stage 1": 6 * 14, "stage 2": 0}
    assert compile_benchmark.PAPER_STEPS == {"stage 1": 420, "stage 2": 415}
    assert "| stage 1 |" in report and "| 84 | 420 |" in report


def test_break_even_is_never_when_compiled_steps_are_not_faster(
    import_benchmark: Callable[[str], ModuleType]
) -> None:
    compile_benchmark = import_benchmark("compile")
    assert compile_benchmark._steps(math.inf) == "never"
    assert compile_benchmark._steps(1234.4) == "1,234"
