"""PASCAL VOC 2012: split lists, palette masks, the two accepted roots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nas_optuna.data import IGNORE_INDEX, VOC_CLASSES, PascalVOC
from nas_optuna.exceptions import DatasetError

IDS = {"train": ["2007_000032", "2007_000039", "2008_000123"], "val": ["2007_000033"]}


@pytest.fixture
def devkit(tmp_path: Path, write_image: Callable, rgb: Callable) -> Path:
    """tmp/VOCdevkit/VOC2012 with palette masks whose index i marks image i."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, ids in IDS.items():
        # Official lists end with a newline; a blank line must not become an id.
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n\n")
        for i, name in enumerate(ids):
            write_image(voc / "JPEGImages" / f"{name}.jpg", rgb(6, 8, seed=i))
            mask = np.zeros((6, 8), np.uint8)
            mask[1:5, 2:6] = 255  # object border
            mask[2:4, 3:5] = i + 1
            write_image(voc / "SegmentationClass" / f"{name}.png", mask, palette=True)
    # Distractor: an image with no segmentation mask, not listed in the split files.
    write_image(voc / "JPEGImages" / "2009_999999.jpg", rgb(6, 8))
    return tmp_path


def test_both_roots_are_accepted(devkit: Path) -> None:
    voc = devkit / "VOCdevkit" / "VOC2012"
    for root in (devkit, voc):
        source = PascalVOC(root)
        assert len(source) == 3
        assert source.root == str(voc.resolve())
    assert len(PascalVOC(devkit, split="val")) == 1


def test_palette_indices_are_the_labels(devkit: Path) -> None:
    source = PascalVOC(devkit)
    for i, (image_path, _) in enumerate(source.pairs):
        image, mask = source.load(i)
        assert image_path.stem == IDS["train"][i]  # list order is kept
        assert image.shape == (6, 8, 3)
        assert set(np.unique(mask).tolist()) == {0, i + 1, IGNORE_INDEX}
        assert mask[2, 3] == i + 1 and mask[1, 2] == IGNORE_INDEX and mask[0, 0] == 0


def test_labels_above_20_fail(devkit: Path, write_image: Callable) -> None:
    path = devkit / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000033.png"
    write_image(path, np.full((6, 8), 21, np.uint8), palette=True)
    with pytest.raises(DatasetError) as err:
        PascalVOC(devkit, split="val").load(0)
    assert str(path) in str(err.value) and "21" in str(err.value)


def test_class_names() -> None:
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert VOC_CLASSES[20] == "tvmonitor"


def test_missing_root_split_and_files(tmp_path: Path, devkit: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        PascalVOC(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="dataset folder not found"):
        PascalVOC(empty)
    with pytest.raises(DatasetError, match="split file not found"):
        PascalVOC(devkit, split="trainaug")
    voc = devkit / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass" / "2008_000123.png").unlink()
    with pytest.raises(DatasetError, match="2008_000123"):
        PascalVOC(devkit)
    (voc / "JPEGImages" / "2007_000033.jpg").unlink()
    with pytest.raises(DatasetError, match="2007_000033.jpg"):
        PascalVOC(devkit, split="val")


def test_empty_split_list(devkit: Path) -> None:
    (devkit / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "none.txt").write_text("\n")
    with pytest.raises(DatasetError, match="lists no images"):
        PascalVOC(devkit, split="none")


def test_describe(devkit: Path) -> None:
    info = PascalVOC(devkit).describe()
    assert json.loads(json.dumps(info)) == info
    assert info["name"] == "voc" and info["num_classes"] == 21 and info["split"] == "train"
