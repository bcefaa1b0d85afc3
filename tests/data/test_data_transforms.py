"""Augmentation: padding with ignore, crop sizes, joint flips, label-preserving resizes."""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import numpy as np
import pytest

from nas_optuna.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, build_transforms
from nas_optuna.exceptions import ConfigError


def _blocks(height: int, width: int, labels: tuple[int, ...] = (0, 3, 7)) -> np.ndarray:
    """A mask of vertical stripes of ``labels``: sharp edges for interpolation to smear."""
    columns = np.array(labels)[np.arange(width) * len(labels) // width]
    return np.broadcast_to(columns, (height, width)).astype(np.uint8).copy()


def _always_flip(transform: A.Compose) -> A.Compose:
    """The same pipeline with its horizontal flip made certain (p=1)."""
    flips = [t for t in transform.transforms if isinstance(t, A.HorizontalFlip)]
    assert len(flips) == 1
    flips[0].p = 1.0
    return transform


def test_padding_fills_image_with_zero_and_mask_with_ignore(rgb: Callable) -> None:
    image, mask = rgb(20, 30), _blocks(20, 30)
    for train in (True, False):
        transform = build_transforms(
            train=train,
            crop_size=(40, 50),
            scale=(1.0, 1.0),
            hflip=False,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        )
        out = transform(image=image, mask=mask)
        padded = out["mask"] == IGNORE_INDEX
        assert out["mask"].shape == (40, 50)
        assert padded.sum() == 40 * 50 - 20 * 30  # the input had no 255 at all
        # With mean 0 and std 1, normalisation is x / 255: padding stays exactly 0.
        assert np.all(out["image"][padded] == 0.0)
        # Every original pixel survives unchanged (no scale, no flip, crop >= image).
        kept = out["image"][~padded].reshape(20, 30, 3)
        np.testing.assert_allclose(kept, image / 255.0, atol=1e-6)


def test_padding_is_zero_before_imagenet_normalisation(rgb: Callable) -> None:
    transform = build_transforms(train=False, crop_size=(32, 32))
    out = transform(image=rgb(10, 12), mask=np.zeros((10, 12), np.uint8))
    padded = out["mask"] == IGNORE_INDEX
    expected = -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)  # (0 - mean) / std
    np.testing.assert_allclose(
        out["image"][padded], np.tile(expected, (padded.sum(), 1)), rtol=1e-5
    )


@pytest.mark.parametrize("size", [(24, 30), (64, 64), (100, 150)])
def test_train_output_has_crop_size(rgb: Callable, size: tuple[int, int]) -> None:
    transform = build_transforms(train=True, crop_size=(48, 56), seed=0)
    for _ in range(5):
        out = transform(image=rgb(*size), mask=_blocks(*size))
        assert out["image"].shape == (48, 56, 3) and out["image"].dtype == np.float32
        assert out["mask"].shape == (48, 56)


def test_horizontal_flip_moves_image_and_mask_together(rgb: Callable) -> None:
    image = rgb(16, 20)
    mask = np.tile(np.arange(20, dtype=np.uint8), (16, 1))  # column index as label
    transform = _always_flip(build_transforms(train=True, scale=(1.0, 1.0), hflip=True))
    out = transform(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask[:, ::-1])
    expected = (image[:, ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out["image"], expected, atol=1e-5)


def test_hflip_false_never_flips(rgb: Callable) -> None:
    mask = np.tile(np.arange(20, dtype=np.uint8), (8, 1))
    transform = build_transforms(train=True, scale=(1.0, 1.0), hflip=False, seed=0)
    assert not any(isinstance(t, A.HorizontalFlip) for t in transform.transforms)
    for _ in range(10):
        np.testing.assert_array_equal(transform(image=rgb(8, 20), mask=mask)["mask"], mask)


def test_masks_keep_their_labels_through_random_scaling(rgb: Callable) -> None:
    mask = _blocks(37, 53, labels=(0, 3, 7, 12))
    transform = build_transforms(train=True, crop_size=(41, 47), scale=(0.3, 2.7), seed=1)
    sizes = set()
    for _ in range(20):
        out = transform(image=rgb(37, 53), mask=mask)
        assert set(np.unique(out["mask"]).tolist()) <= {0, 3, 7, 12, IGNORE_INDEX}
        sizes.add(int((out["mask"] != IGNORE_INDEX).sum()))
    assert len(sizes) > 1  # the scale really varied


def test_eval_transform_is_deterministic_and_keeps_size(rgb: Callable) -> None:
    transform = build_transforms(train=False)
    image, mask = rgb(30, 40), _blocks(30, 40)
    first, second = transform(image=image, mask=mask), transform(image=image, mask=mask)
    np.testing.assert_array_equal(first["image"], second["image"])
    assert first["image"].shape == (30, 40, 3)
    np.testing.assert_array_equal(first["mask"], mask)


def test_eval_crop_is_centred(rgb: Callable) -> None:
    mask = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12)
    out = build_transforms(train=False, crop_size=(4, 6))(image=rgb(10, 12), mask=mask)
    np.testing.assert_array_equal(out["mask"], mask[3:7, 3:9])


def test_same_seed_same_augmentations(rgb: Callable) -> None:
    image, mask = rgb(50, 60), _blocks(50, 60)
    a = build_transforms(train=True, crop_size=(32, 32), seed=7)
    b = build_transforms(train=True, crop_size=(32, 32), seed=7)
    for _ in range(3):
        np.testing.assert_array_equal(
            a(image=image, mask=mask)["image"], b(image=image, mask=mask)["image"]
        )


@pytest.mark.parametrize(
    "options",
    [
        {"scale": (0.0, 1.0)},
        {"scale": (2.0, 1.0)},
        {"crop_size": (0, 16)},
        {"crop_size": (16,)},
        {"std": (0.2, 0.0, 0.2)},
        {"mean": (0.5, 0.5)},
    ],
)
def test_invalid_arguments_raise_config_error(options: dict) -> None:
    with pytest.raises(ConfigError):
        build_transforms(train=True, **options)
