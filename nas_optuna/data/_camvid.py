"""``camvid``: CamVid in the SegNet layout (11 classes, 360x480 frames)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas_optuna.data._files import FileSource, check_split, find_dir, pair_by_stem
from nas_optuna.data._source import IGNORE_INDEX

__all__ = ["CamVid"]

CAMVID_CLASSES = (
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
# SegNet's masks store the 11 classes as 0..10 and "Unlabelled" (void) as 11.
_VOID = 11

_LUT = np.arange(256, dtype=np.uint8)
_LUT[_VOID] = IGNORE_INDEX


class CamVid(FileSource):
    """CamVid as distributed with SegNet: ``root/<split>/*.png`` and ``root/<split>annot/*.png``.

    Frames and label masks are paired by file name. The void label 11 becomes 255; any other
    value above 10 (other than 255) is reported as an error when the sample is loaded.

    Args:
        root: Folder holding ``train/``, ``trainannot/``, ``val/``, ``valannot/``, ...
        split: ``"train"``, ``"val"`` or ``"test"`` (any folder name with a matching
            ``<split>annot`` folder works).

    Raises:
        DatasetError: A folder is missing, empty, or a frame has no mask.

    Example:
        >>> from nas_optuna.data import CamVid
        >>> source = CamVid("~/data/CamVid", split="val")  # doctest: +SKIP
        >>> source.class_names[3]  # doctest: +SKIP
        'Road'
    """

    name = "camvid"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        split = check_split(split, "camvid")
        folder = find_dir(root)
        image_dir = find_dir(folder / split)
        mask_dir = find_dir(folder / f"{split}annot")
        pairs = pair_by_stem(image_dir, mask_dir)
        super().__init__(pairs, len(CAMVID_CLASSES), CAMVID_CLASSES, _LUT, folder)
        self.split = split

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["split"] = self.split
        return info
