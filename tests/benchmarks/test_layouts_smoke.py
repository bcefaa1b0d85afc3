"""Smoke test of ``benchmarks/layouts.py``: every setting timed for every architecture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.mark.slow
def test_layouts_times_every_setting_of_every_architecture(
    tmp_path: Path, import_benchmark: Callable[[str], ModuleType]
) -> None:
    layouts = import_benchmark("layouts")
    results = layouts.run(["auxcell"], 2, layouts.torch.device("cpu"), batch=2,
                          image_size=(32, 32), warmup=0, repeats=1)
    assert set(results) == {"auxcell"}
    assert set(results["auxcell"]) == set(layouts.SETTINGS)
    assert all(len(s) == 2 and all(t > 0 for t in s) for s in results["auxcell"].values())
    table = layouts.main(["--spaces", "auxcell", "--archs", "1", "--batch", "2", "--height",
                          "32", "--width", "32", "--warmup", "0", "--repeats", "1",
                          "--out", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| auxcell |")]
    assert len(rows) == len(layouts.SETTINGS)
    assert "| auxcell | fp32, contiguous |" in rows[0] and "| 1.00x |" in rows[0]
