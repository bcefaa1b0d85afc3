"""Decoding and validating image/mask files, shared by the file-based datasets.

Every failure becomes a one-line :class:`~nas_optuna.exceptions.DatasetError` naming the
file, because a broken sample deep inside an epoch is otherwise reported as an opaque
PIL or numpy traceback from a DataLoader worker.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from nas_optuna.data._source import IGNORE_INDEX
from nas_optuna.exceptions import ConfigError, DatasetError

__all__ = ["build_label_lut", "check_same_size", "read_image", "read_mask", "validate_labels"]

# Shown at most this many bad mask values in an error message, to keep it one short line.
_MAX_REPORTED_VALUES = 10


def _open(path: Path, what: str) -> Image.Image:
    image = None
    try:
        with warnings.catch_warnings():
            # Large real images trip PIL's decompression-bomb warning; they are trusted here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            # ``open`` is lazy: decode now so truncated files fail here, with the file name.
            image.load()
    except FileNotFoundError:
        raise DatasetError(f"{what} file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's decoders raise all three
        if image is not None:
            image.close()
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DatasetError(f"cannot read {what} {path}: {reason}") from None
    return image


def read_image(path: Path) -> np.ndarray:
    """Reads an image file as ``uint8`` RGB of shape ``(H, W, 3)``.

    Greyscale, palette and RGBA files are converted to RGB (alpha is dropped).

    Raises:
        DatasetError: The file is missing, not an image, or corrupt.
    """
    with _open(path, "image") as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # ``convert("RGB")`` clips 16-bit values instead of rescaling them: refuse rather
            # than feed the network a saturated image.
            raise DatasetError(f"cannot read image {path}: {image.mode} images are not supported")
        # np.array, not asarray: PIL hands out read-only buffers, and callers (augmentations,
        # torch.from_numpy) expect to own writable arrays.
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    return array


def read_mask(path: Path) -> np.ndarray:
    """Reads a label file as a 2-D integer array of the stored values.

    Palette (``P``) images yield their palette indices, which is how VOC stores class ids;
    converting them to RGB would lose the labels.

    Raises:
        DatasetError: The file is missing, corrupt, or has colour channels.
    """
    with _open(path, "mask") as image:
        if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            raise DatasetError(
                f"mask {path} has mode {image.mode}; masks must be single-channel label images "
                "(palette or greyscale PNG holding class ids), not colour-coded"
            )
        array = np.array(image)  # writable copy, see read_image
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def build_label_lut(label_map: Mapping[int, int] | None) -> np.ndarray | None:
    """Turns a ``{stored value: class id}`` mapping into a 256-entry lookup table.

    Stored values the mapping does not mention keep their value. ``None`` or an empty
    mapping returns ``None`` (no conversion).

    Raises:
        ConfigError: A key or value is not an integer in ``[0, 255]``.
    """
    if not label_map:
        return None
    lut = np.arange(256, dtype=np.uint8)
    for raw_key, raw_value in label_map.items():
        # Keys arrive as strings from TOML tables, so accept anything int() accepts.
        try:
            key, value = int(raw_key), int(raw_value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"label_map entries must be integers, got {raw_key!r}: {raw_value!r}"
            ) from None
        if not (0 <= key <= 255 and 0 <= value <= 255):
            raise ConfigError(
                f"label_map entry {key}: {value} is outside [0, 255]; masks are 8-bit"
            )
        lut[key] = value
    return lut


def validate_labels(
    raw: np.ndarray, num_classes: int, path: Path, lut: np.ndarray | None = None
) -> np.ndarray:
    """Maps stored mask values through ``lut`` and checks they are classes or ignore.

    Args:
        raw: 2-D integer array as returned by :func:`read_mask`.
        num_classes: Valid class ids are ``0 .. num_classes - 1``.
        path: The mask file, for error messages.
        lut: Optional 256-entry ``uint8`` lookup table from stored value to class id.

    Returns:
        The ``uint8`` mask with values in ``[0, num_classes)`` or :data:`IGNORE_INDEX`.

    Raises:
        DatasetError: Some value is neither a class id nor the ignore value; the message
            lists the offending values (as stored in the file).
    """
    if raw.dtype != np.uint8:
        # 16-bit or 32-bit files: values above 255 can never be valid 8-bit labels.
        low, high = int(raw.min(initial=0)), int(raw.max(initial=0))
        if low < 0 or high > 255:
            bad = np.unique(raw[(raw < 0) | (raw > 255)])
            raise DatasetError(_bad_values_message(path, bad, num_classes))
        raw = raw.astype(np.uint8)
    mask = raw if lut is None else lut[raw]
    # bincount is O(pixels) where np.unique would sort; masks are validated on every load.
    counts = np.bincount(mask.ravel(), minlength=256)
    valid = np.zeros(256, dtype=bool)
    valid[:num_classes] = True
    valid[IGNORE_INDEX] = True
    bad_labels = np.flatnonzero((counts > 0) & ~valid)
    if bad_labels.size:
        # Report what the file holds, not the converted ids, so the user can find them.
        bad = np.unique(raw[np.isin(mask, bad_labels)])
        raise DatasetError(_bad_values_message(path, bad, num_classes))
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _bad_values_message(path: Path, bad: np.ndarray, num_classes: int) -> str:
    shown = ", ".join(str(int(v)) for v in bad[:_MAX_REPORTED_VALUES])
    if bad.size > _MAX_REPORTED_VALUES:
        shown += f", ... ({bad.size} values)"
    return (
        f"mask {path} holds values {shown} outside the classes [0, {num_classes}) "
        f"and the ignore value {IGNORE_INDEX}"
    )


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    """Raises :class:`DatasetError` when ``image`` and ``mask`` differ in height or width."""
    if image.shape[:2] != mask.shape[:2]:
        (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
        raise DatasetError(
            f"image and mask sizes differ: {image_path} is {iw}x{ih} (WxH), "
            f"{mask_path} is {mw}x{mh}"
        )
