"""CamVid in the SegNet layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nas_optuna.data import IGNORE_INDEX, CamVid
from nas_optuna.exceptions import ConfigError, DatasetError


@pytest.fixture
def camvid(tmp_path: Path, write_image: Callable, rgb: Callable) -> Path:
    """3 train and 2 val frames; every mask holds all 12 stored values 0..11."""
    root = tmp_path / "CamVid"
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            name = f"0001TP_{i:06d}.png"
            write_image(root / split / name, rgb(3, 4, seed=i))
            write_image(root / f"{split}annot" / name, np.roll(labels, i))
    return root


def test_counts_per_split(camvid: Path) -> None:
    assert len(CamVid(camvid)) == 3
    assert len(CamVid(camvid, split="val")) == 2


def test_pairs_by_file_name(camvid: Path, rgb: Callable) -> None:
    source = CamVid(camvid)
    for i in range(3):
        image, mask = source.load(i)
        np.testing.assert_array_equal(image, rgb(3, 4, seed=i))
        expected = np.roll(np.arange(12).reshape(3, 4), i)
        np.testing.assert_array_equal(mask == IGNORE_INDEX, expected == 11)


def test_void_11_becomes_ignore_and_classes_are_kept(camvid: Path) -> None:
    _, mask = CamVid(camvid).load(0)
    np.testing.assert_array_equal(mask, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, IGNORE_INDEX]])


def test_stored_255_stays_ignored_and_unknown_values_fail(
    camvid: Path, write_image: Callable
) -> None:
    annot = camvid / "trainannot" / "0001TP_000000.png"
    write_image(annot, np.array([[255, 3, 11, 0]] * 3, np.uint8))
    np.testing.assert_array_equal(CamVid(camvid).load(0)[1][0], [255, 3, 255, 0])
    write_image(annot, np.array([[12, 3, 11, 0]] * 3, np.uint8))
    with pytest.raises(DatasetError) as err:
        CamVid(camvid).load(0)
    assert str(annot) in str(err.value) and "12" in str(err.value)


def test_metadata(camvid: Path) -> None:
    source = CamVid(camvid, split="val")
    assert source.num_classes == 11
    assert source.class_names == (
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Sidewalk",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    )
    info = source.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["split"] == "val" and info["size"] == 2 and info["name"] == "camvid"


def test_missing_folders(tmp_path: Path, camvid: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        CamVid(tmp_path / "missing")
    (camvid / "test").mkdir()
    with pytest.raises(DatasetError, match="dataset folder not found: .*testannot"):
        CamVid(camvid, split="test")


def test_frame_without_label(camvid: Path, write_image: Callable, rgb: Callable) -> None:
    orphan = write_image(camvid / "train" / "0001TP_000099.png", rgb(3, 4))
    with pytest.raises(DatasetError) as err:
        CamVid(camvid)
    assert str(orphan) in str(err.value)


def test_split_must_be_a_name(camvid: Path) -> None:
    with pytest.raises(ConfigError):
        CamVid(camvid, split="../train")
