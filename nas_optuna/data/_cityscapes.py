"""``cityscapes``: Cityscapes fine annotations, 19 evaluation classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas_optuna.data._files import FileSource, check_masks_exist, check_split, find_dir
from nas_optuna.data._source import IGNORE_INDEX
from nas_optuna.exceptions import DatasetError

__all__ = ["Cityscapes"]

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# labelId -> trainId for the labels evaluated in the benchmark, copied from
# cityscapesscripts/helpers/labels.py. Every other labelId (0-6 unlabelled/ego vehicle/
# rectification border/out of roi/static/dynamic/ground, 9 parking, 10 rail track,
# 14-16 guard rail/bridge/tunnel, 18 polegroup, 29-30 caravan/trailer, and -1 license plate,
# which the PNGs cannot store) is ignored, exactly as the official evaluation does.
LABEL_TO_TRAIN_ID = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in LABEL_TO_TRAIN_ID.items():
    _LUT[_label_id] = _train_id
del _label_id, _train_id

_IMAGE_SUFFIX = "_leftImg8bit.png"
_MASK_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(FileSource):
    """Cityscapes with ``gtFine`` labels mapped to the 19 train ids.

    Layout: ``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with masks in
    ``root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png``. Label ids are converted with
    the official table; everything not evaluated becomes 255.

    Args:
        root: Folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DatasetError: A folder is missing, the split holds no images, or an image has no mask.

    Example:
        >>> from nas_optuna.data import Cityscapes
        >>> source = Cityscapes("~/data/cityscapes", split="val")  # doctest: +SKIP
        >>> len(source.class_names)  # doctest: +SKIP
        19
    """

    name = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        split = check_split(split, "cityscapes")
        folder = find_dir(root)
        image_dir = find_dir(folder / "leftImg8bit" / split)
        mask_dir = find_dir(folder / "gtFine" / split)
        images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not images:
            raise DatasetError(f"no images found in {image_dir}/<city>/*{_IMAGE_SUFFIX}")
        pairs = [
            (
                image,
                mask_dir / image.parent.name / (image.name[: -len(_IMAGE_SUFFIX)] + _MASK_SUFFIX),
            )
            for image in images
        ]
        check_masks_exist(pairs)
        super().__init__(pairs, len(CITYSCAPES_CLASSES), CITYSCAPES_CLASSES, _LUT, folder)
        self.split = split

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["split"] = self.split
        return info
