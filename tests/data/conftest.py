"""Fixtures for the data tests: tiny image/mask files written with PIL into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Returns ``write(path, array, palette=False)`` saving ``array`` with PIL.

    ``uint8`` arrays of shape (H, W, 3) become RGB files, (H, W) greyscale (``L``) files,
    ``uint16`` (H, W) 16-bit files. ``palette=True`` stores an (H, W) array as a palette
    (``P``) PNG like PASCAL VOC's masks.
    """

    def write(path: Path, array: np.ndarray, palette: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(array)
        if palette:
            # Colours unrelated to the indices, as in VOC: a loader that converted the
            # palette to RGB would get the labels wrong.
            colours = np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8)
            image.putpalette(colours.tolist())  # turns the L image into P, keeping indices
            assert image.mode == "P"
        image.save(path)
        return path

    return write


@pytest.fixture
def rgb() -> Callable[..., np.ndarray]:
    """Returns ``rgb(height, width, seed=0)``: a random ``uint8`` RGB image."""

    def make(height: int, width: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)

    return make
