"""``folder``: any dataset laid out as an image folder and a mask folder paired by file stem."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas_optuna.data._files import FileSource, find_dir, pair_by_stem
from nas_optuna.data._io import build_label_lut
from nas_optuna.data._source import IGNORE_INDEX
from nas_optuna.exceptions import ConfigError

__all__ = ["FolderDataset"]


class FolderDataset(FileSource):
    """Images in ``root/<images>`` paired with label PNGs in ``root/<masks>`` by file stem.

    Images may be PNG, JPEG, BMP or TIFF; masks must be single-channel PNGs (greyscale or
    palette) whose values are class ids, or become class ids through ``label_map``. Masks
    without a matching image are ignored.

    Args:
        root: Dataset folder.
        num_classes: Number of classes (2 to 255); mask value 255 is always "ignore".
        images: Image subfolder of ``root``.
        masks: Mask subfolder of ``root``.
        class_names: One name per class; defaults to ``class_0``, ``class_1``, ...
        label_map: ``{stored value: class id}`` applied to every mask before validation,
            e.g. ``{11: 255}`` to ignore a void label. Unlisted values keep their value.

    Raises:
        DatasetError: A folder is missing (``dataset folder not found: PATH``), holds no
            images, or an image has no mask.
        ConfigError: An argument is invalid.

    Example:
        >>> from nas_optuna.data import FolderDataset
        >>> source = FolderDataset("~/roads", 3, label_map={99: 255})  # doctest: +SKIP
        >>> image, mask = source.load(0)  # doctest: +SKIP
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        num_classes: int,
        images: str = "images",
        masks: str = "masks",
        class_names: Sequence[str] | None = None,
        label_map: Mapping[int, int] | None = None,
    ) -> None:
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or not 2 <= num_classes < IGNORE_INDEX
        ):
            raise ConfigError(
                f"num_classes must be an integer in [2, {IGNORE_INDEX - 1}], got {num_classes!r}"
            )
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        elif isinstance(class_names, str):
            raise ConfigError("class_names must be a list of names, not a single string")
        lut = build_label_lut(label_map)
        if lut is not None and label_map is not None:
            # Checked here, not at the first load, so a typo fails before any training.
            targets = {int(v) for v in label_map.values()}
            bad = sorted(v for v in targets if v >= num_classes and v != IGNORE_INDEX)
            if bad:
                raise ConfigError(
                    f"label_map maps to {bad}, which are neither classes [0, {num_classes}) "
                    f"nor the ignore value {IGNORE_INDEX}"
                )
        folder = find_dir(root)
        image_dir = find_dir(folder / images)
        mask_dir = find_dir(folder / masks)
        pairs = pair_by_stem(image_dir, mask_dir)
        super().__init__(pairs, int(num_classes), class_names, lut, folder)
        self.images = images
        self.masks = masks
        self.label_map = (
            {} if lut is None else {k: int(v) for k, v in enumerate(lut) if k != int(v)}
        )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["images"] = self.images
        info["masks"] = self.masks
        # JSON object keys must be strings; sorted so the cache key is order-independent.
        info["label_map"] = {str(k): v for k, v in sorted(self.label_map.items())}
        return info
