"""File-backed sources: a list of (image, mask) paths plus a label conversion.

Real datasets differ only in where their files live and how stored mask values become
class ids; :class:`FileSource` holds what is common (loading, validation, describing) and
the helpers here find the files, so each dataset module is just its layout and label table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas_optuna.data._io import check_same_size, read_image, read_mask, validate_labels
from nas_optuna.data._source import SegmentationSource
from nas_optuna.exceptions import ConfigError, DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "FileSource",
    "check_masks_exist",
    "check_split",
    "find_dir",
    "pair_by_stem",
]

#: File extensions accepted for images (case-insensitive); masks are always PNG, because
#: lossy formats would corrupt label values.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def find_dir(path: str | Path) -> Path:
    """Returns ``path`` as an absolute :class:`~pathlib.Path` if it is a folder.

    Raises:
        DatasetError: ``dataset folder not found: PATH``.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    return folder.resolve()


def check_split(split: object, dataset: str) -> str:
    """Checks that a split name is a plain folder/file name (no paths)."""
    if not isinstance(split, str) or split in ("", ".", "..") or "/" in split or "\\" in split:
        raise ConfigError(f"split for {dataset} must be a name such as 'train', got {split!r}")
    return split


def pair_by_stem(
    image_dir: Path,
    mask_dir: Path,
    image_suffixes: Iterable[str] = IMAGE_SUFFIXES,
    mask_suffix: str = ".png",
) -> list[tuple[Path, Path]]:
    """Pairs every image in ``image_dir`` with ``mask_dir/<stem><mask_suffix>``.

    Masks without an image are ignored (a label folder may hold more than one split's
    files); images without a mask are an error, since training on them is impossible.

    Raises:
        DatasetError: No image found, two images share a stem, or an image has no mask.
    """
    suffixes = {s.lower() for s in image_suffixes}
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    if not images:
        accepted = " ".join(sorted(suffixes))
        raise DatasetError(f"no images found in {image_dir} (accepted extensions: {accepted})")
    by_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in by_stem:
            raise DatasetError(
                f"two images share the stem {image.stem!r}: {by_stem[image.stem]} and {image}"
            )
        by_stem[image.stem] = image
    pairs = [(image, mask_dir / f"{stem}{mask_suffix}") for stem, image in by_stem.items()]
    check_masks_exist(pairs)
    return pairs


def check_masks_exist(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Raises :class:`DatasetError` naming the first image whose mask file is missing."""
    missing = [(image, mask) for image, mask in pairs if not mask.is_file()]
    if missing:
        image, mask = missing[0]
        more = f" ({len(missing)} images lack masks)" if len(missing) > 1 else ""
        raise DatasetError(f"no mask for image {image}: expected {mask}{more}")


class FileSource(SegmentationSource):
    """A source reading ``(image, mask)`` file pairs, converting masks through a table.

    Args:
        pairs: ``(image path, mask path)`` per sample, in sample order.
        num_classes: Number of classes; valid mask values are ``0 .. num_classes - 1``.
        class_names: One name per class.
        lut: Optional 256-entry ``uint8`` table from stored mask value to class id.
        root: The dataset folder, reported by :meth:`describe`.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        num_classes: int,
        class_names: Sequence[str],
        lut: np.ndarray | None,
        root: Path,
    ) -> None:
        if len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names given for {num_classes} classes")
        self.pairs = list(pairs)
        self.num_classes = num_classes
        self.class_names = tuple(str(name) for name in class_names)
        self.root = str(root)
        self._lut = lut

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self) -> dict[str, Any]:
        """Adds a fingerprint of the files (names, sizes, modification times).

        Cached stem features are keyed by this description, so replacing or editing an
        image or mask invalidates them instead of silently reusing stale features.
        """
        digest = hashlib.sha256()
        for image_path, mask_path in self.pairs:
            for path in (image_path, mask_path):
                stat = path.stat()
                digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return {**super().describe(), "files": digest.hexdigest()[:16]}

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[self._check_index(index)]
        image = read_image(image_path)
        raw = read_mask(mask_path)
        check_same_size(image, raw, image_path, mask_path)
        mask = validate_labels(raw, self.num_classes, mask_path, self._lut)
        return image, mask
