"""Augmentation pipelines (albumentations) for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2

from nas_optuna.data._source import IGNORE_INDEX
from nas_optuna.exceptions import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transforms"]

#: Per-channel RGB mean and standard deviation (of pixel values / 255) of ImageNet, which
#: every pretrained encoder in segmentation-models-pytorch expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    *,
    train: bool,
    crop_size: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int | None = None,
) -> A.Compose:
    """Builds the standard semantic-segmentation augmentation.

    Training: random rescale by a factor drawn uniformly from ``scale``, padding up to
    ``crop_size`` (image filled with 0, mask with 255 so padding is ignored), a random
    crop of ``crop_size``, a horizontal flip with probability 0.5, and normalisation.
    Evaluation: when ``crop_size`` is given, pad and centre-crop to it (so a batch stacks),
    then normalise. Masks are always resized with nearest-neighbour interpolation, so they
    never gain labels that were not in the input.

    Args:
        train: Whether to build the training (random) or evaluation (deterministic) pipeline.
        crop_size: ``(height, width)`` of the output; ``None`` keeps the (rescaled) size.
        scale: Range of the random rescale factor; ``(1.0, 1.0)`` disables it. Training only.
        hflip: Whether to flip horizontally at random. Training only.
        mean: Per-channel mean of pixel values divided by 255.
        std: Per-channel standard deviation of pixel values divided by 255.
        seed: Seed of the pipeline's own random state (albumentations ignores numpy's and
            Python's global seeds). ``None`` draws a fresh one.
            :class:`~nas_optuna.data.SegmentationDataset` reseeds it per DataLoader worker.

    Returns:
        An :class:`albumentations.Compose` to call as ``transform(image=..., mask=...)``.

    Raises:
        ConfigError: An argument is out of range.

    Example:
        >>> from nas_optuna.data import build_transforms
        >>> train_tf = build_transforms(train=True, crop_size=(64, 64))
        >>> eval_tf = build_transforms(train=False)
    """
    crop = _check_crop(crop_size)
    low, high = _check_scale(scale)
    mean, std = _check_stats(mean, "mean"), _check_stats(std, "std")
    if any(s <= 0 for s in std):
        raise ConfigError(f"std must be positive, got {tuple(std)}")

    steps: list[A.BasicTransform] = []
    if train and (low, high) != (1.0, 1.0):
        # RandomScale samples the factor as 1 + U(scale_limit); p=1 so every sample is scaled.
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    if crop is not None:
        steps.append(
            A.PadIfNeeded(
                min_height=crop[0],
                min_width=crop[1],
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
            )
        )
        crop_cls = A.RandomCrop if train else A.CenterCrop
        steps.append(crop_cls(height=crop[0], width=crop[1]))
    if train and hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    # mask_interpolation on Compose overrides every transform's, guarding later additions.
    return A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST, seed=seed)


def _check_crop(crop_size: Sequence[int] | None) -> tuple[int, int] | None:
    if crop_size is None:
        return None
    try:
        height, width = (int(v) for v in crop_size)
    except (TypeError, ValueError):
        raise ConfigError(f"crop_size must be (height, width), got {crop_size!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"crop_size must be positive, got {crop_size!r}")
    return height, width


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"scale must be (low, high), got {scale!r}") from None
    if not 0 < low <= high:
        raise ConfigError(f"scale must satisfy 0 < low <= high, got {scale!r}")
    return low, high


def _check_stats(values: Sequence[float], what: str) -> tuple[float, float, float]:
    try:
        stats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be three numbers, got {values!r}") from None
    if len(stats) != 3:
        raise ConfigError(f"{what} must be three numbers (RGB), got {values!r}")
    return stats  # type: ignore[return-value]
