"""Seeded meta-train / meta-val split of a training set."""

from __future__ import annotations

import math

import numpy as np

from nas_optuna.exceptions import ConfigError, DatasetError

__all__ = ["meta_split"]


def meta_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Splits ``range(n)`` at random into meta-train and meta-val indices.

    Architecture search must not select on the data it reports on, so (as in the NAS
    segmentation papers) the official training set is split: networks are trained on
    meta-train and scored on meta-val, and the official validation set is kept for the
    final report. The meta-val part holds ``round(n * val_fraction)`` indices (halves
    round up), at least one.

    Args:
        n: Number of samples in the training set.
        val_fraction: Share of samples in meta-val, in ``(0, 1)``.
        seed: Seed of the permutation; the split depends on nothing else.

    Returns:
        ``(meta_train, meta_val)``: disjoint sorted lists of indices covering ``range(n)``.

    Raises:
        DatasetError: Either part would be empty.
        ConfigError: ``val_fraction`` is not in ``(0, 1)``.

    Example:
        >>> from nas_optuna.data import meta_split
        >>> train_idx, val_idx = meta_split(400, val_fraction=0.1, seed=0)
        >>> len(train_idx), len(val_idx)
        (360, 40)
    """
    if isinstance(val_fraction, bool) or not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n = int(n)
    # floor(x + 0.5) rather than round(): Python's round() sends 2.5 to 2 (banker's rounding).
    n_val = max(1, math.floor(n * val_fraction + 0.5))
    if n < 2 or n_val >= n:
        raise DatasetError(
            f"cannot split {n} images into meta-train and meta-val with "
            f"val_fraction={val_fraction}: one part would be empty"
        )
    order = np.random.default_rng(seed).permutation(n)
    meta_val = sorted(int(i) for i in order[:n_val])
    meta_train = sorted(int(i) for i in order[n_val:])
    return meta_train, meta_val
