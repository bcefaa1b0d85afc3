"""atomic_path: the one way nas-optuna replaces a file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nas_optuna._files import atomic_path


def test_the_target_is_replaced_whole_with_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    target.write_text("old")
    with atomic_path(target) as temporary:
        assert Path(temporary).parent == tmp_path and Path(temporary).name.startswith(
            ".table.json.")
        Path(temporary).write_text("new")
        assert target.read_text() == "old"  # a reader still sees the old file
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_an_error_leaves_the_target_as_it_was_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "weights.pt"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        Path(temporary).write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]


def test_prefix_and_mode_are_honoured(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.bin", prefix="cache-", mode=0o600) as temporary:
        assert Path(temporary).name.startswith("cache-") and temporary.endswith(".tmp")
        Path(temporary).write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o600


def test_every_writer_of_stored_files_goes_through_it() -> None:
    # The five writes issue 17 found duplicated, each with its own (partial) recipe.
    root = Path(__file__).resolve().parents[1]
    for module in ("nas_optuna/training/features.py", "nas_optuna/export.py",
                   "nas_optuna/cost_table.py", "nas_optuna/retrain.py", "analysis/report.py",
                   "nas_optuna/surrogate/_file.py"):
        text = (root / module).read_text()
        assert "atomic_path(" in text, module
        assert "mkstemp(" not in text and "os.replace(" not in text, module
