"""``voc``: PASCAL VOC 2012 segmentation, 21 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas_optuna.data._files import FileSource, check_masks_exist, check_split
from nas_optuna.exceptions import DatasetError

__all__ = ["PascalVOC"]

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _find_voc_root(root: str | Path) -> Path:
    # Users point either at the year folder or at the folder the tarball was extracted into.
    given = Path(root).expanduser()
    for candidate in (given, given / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate.resolve()
    if not given.is_dir():
        raise DatasetError(f"dataset folder not found: {given}")
    raise DatasetError(
        f"dataset folder not found: {given / 'VOCdevkit' / 'VOC2012'} (expected JPEGImages/ "
        f"and SegmentationClass/ in {given} or in its VOCdevkit/VOC2012)"
    )


class PascalVOC(FileSource):
    """PASCAL VOC 2012: ``JPEGImages/<id>.jpg`` and palette masks ``SegmentationClass/<id>.png``.

    Sample ids come from ``ImageSets/Segmentation/<split>.txt``. Masks are palette PNGs whose
    indices are the class ids (0 background, 1-20 objects) and 255 for object borders and
    difficult regions, which stays 255 (ignored).

    Args:
        root: The ``VOC2012`` folder, or a folder containing ``VOCdevkit/VOC2012``.
        split: Name of a list in ``ImageSets/Segmentation``: ``"train"``, ``"val"``,
            ``"trainval"``.

    Raises:
        DatasetError: The folders or the split list are missing, the list is empty, or a
            listed image or mask file does not exist.

    Example:
        >>> from nas_optuna.data import PascalVOC
        >>> source = PascalVOC("~/data", split="val")  # doctest: +SKIP
        >>> source.num_classes  # doctest: +SKIP
        21
    """

    name = "voc"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        split = check_split(split, "voc")
        folder = _find_voc_root(root)
        list_file = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise DatasetError(f"split file not found: {list_file}")
        # The official lists hold one id per line; tolerate blank lines and stray spaces.
        ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"split file {list_file} lists no images")
        pairs = [
            (folder / "JPEGImages" / f"{i}.jpg", folder / "SegmentationClass" / f"{i}.png")
            for i in ids
        ]
        missing = [image for image, _ in pairs if not image.is_file()]
        if missing:
            more = f" ({len(missing)} listed images missing)" if len(missing) > 1 else ""
            raise DatasetError(f"image listed in {list_file} not found: {missing[0]}{more}")
        check_masks_exist(pairs)
        super().__init__(pairs, len(VOC_CLASSES), VOC_CLASSES, None, folder)
        self.split = split

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["split"] = self.split
        return info
