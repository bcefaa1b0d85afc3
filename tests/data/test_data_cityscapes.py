"""Cityscapes: layout, and the labelId -> trainId conversion."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nas_optuna.data import CITYSCAPES_CLASSES, IGNORE_INDEX, LABEL_TO_TRAIN_ID, Cityscapes
from nas_optuna.exceptions import DatasetError

# Written out by hand from cityscapesscripts' labels.py, not derived from the code under test.
OFFICIAL = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
FRAMES = {
    "train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
    "val": ["frankfurt_000000_000294"],
}


def _write_frame(
    root: Path, split: str, frame: str, labels: np.ndarray, write: Callable, rgb: Callable
) -> tuple[Path, Path]:
    city = frame.split("_")[0]
    image = write(
        root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", rgb(*labels.shape)
    )
    mask = write(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", labels)
    return image, mask


@pytest.fixture
def cityscapes(tmp_path: Path, write_image: Callable, rgb: Callable) -> Path:
    root = tmp_path / "cityscapes"
    labels = np.array([[7, 8, 26, 23]], dtype=np.uint8)
    for split, frames in FRAMES.items():
        for frame in frames:
            _write_frame(root, split, frame, labels, write_image, rgb)
            # Other gtFine products sit next to the labelIds files and must be ignored.
            city = frame.split("_")[0]
            write_image(root / "gtFine" / split / city / f"{frame}_gtFine_color.png", rgb(1, 4))
            write_image(
                root / "gtFine" / split / city / f"{frame}_gtFine_instanceIds.png",
                np.zeros((1, 4), np.uint16),
            )
    return root


def test_table_matches_the_official_one() -> None:
    assert LABEL_TO_TRAIN_ID == OFFICIAL
    assert len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[13] == "car"
    assert CITYSCAPES_CLASSES[18] == "bicycle"


def test_counts_and_pairing_across_cities(cityscapes: Path) -> None:
    train = Cityscapes(cityscapes)
    assert len(train) == 3 and len(Cityscapes(cityscapes, split="val")) == 1
    for image, mask in train.pairs:
        assert image.name.replace("_leftImg8bit.png", "") == mask.name.replace(
            "_gtFine_labelIds.png", ""
        )
        assert image.parent.name == mask.parent.name  # same city
    assert {image.parent.name for image, _ in train.pairs} == {"aachen", "bochum"}


def test_label_ids_become_train_ids(cityscapes: Path, write_image: Callable, rgb: Callable) -> None:
    label_ids = np.array(
        [
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23],
            [24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 255, 34],
        ],
        dtype=np.uint8,
    )
    ignore = IGNORE_INDEX
    expected = np.array(
        [
            [ignore, ignore, ignore, ignore, ignore, ignore, ignore, 0, 1, ignore, ignore, 2],
            [3, 4, ignore, ignore, ignore, 5, ignore, 6, 7, 8, 9, 10],
            [11, 12, 13, 14, 15, ignore, ignore, 16, 17, 18, ignore, ignore],
        ],
        dtype=np.uint8,
    )
    _write_frame(cityscapes, "val", "frankfurt_000000_000294", label_ids, write_image, rgb)
    image, mask = Cityscapes(cityscapes, split="val").load(0)
    assert image.shape == (3, 12, 3)
    np.testing.assert_array_equal(mask, expected)


def test_missing_label_file_names_the_image(
    cityscapes: Path, write_image: Callable, rgb: Callable
) -> None:
    orphan = write_image(
        cityscapes / "leftImg8bit" / "train" / "bochum" / "bochum_000000_000999_leftImg8bit.png",
        rgb(1, 4),
    )
    with pytest.raises(DatasetError) as err:
        Cityscapes(cityscapes)
    assert str(orphan) in str(err.value)


def test_missing_folders_and_empty_split(tmp_path: Path, cityscapes: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        Cityscapes(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        Cityscapes(cityscapes, split="test")
    (cityscapes / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    (cityscapes / "gtFine" / "test").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        Cityscapes(cityscapes, split="test")


def test_size_mismatch(cityscapes: Path, write_image: Callable) -> None:
    mask = (
        cityscapes / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png"
    )
    write_image(mask, np.zeros((2, 4), np.uint8))
    with pytest.raises(DatasetError, match="sizes differ"):
        Cityscapes(cityscapes, split="val").load(0)


def test_describe(cityscapes: Path) -> None:
    info = Cityscapes(cityscapes, split="val").describe()
    assert json.loads(json.dumps(info)) == info
    files = info.pop("files")  # fingerprint of names, sizes and modification times
    assert isinstance(files, str) and len(files) == 16
    assert info == {
        "name": "cityscapes",
        "root": str(cityscapes.resolve()),
        "size": 1,
        "num_classes": 19,
        "split": "val",
    }
