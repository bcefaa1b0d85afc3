"""meta_split: the seeded meta-train / meta-val split of a training set."""

from __future__ import annotations

import numpy as np
import pytest

from nas_optuna.data import meta_split
from nas_optuna.exceptions import ConfigError, DatasetError


def test_deterministic_per_seed() -> None:
    assert meta_split(100, seed=3) == meta_split(100, seed=3)
    assert meta_split(100, seed=3) != meta_split(100, seed=4)


def test_independent_of_global_random_state() -> None:
    np.random.seed(0)
    first = meta_split(50, seed=1)
    np.random.seed(123)
    assert meta_split(50, seed=1) == first


@pytest.mark.parametrize("n", [2, 7, 100, 401])
def test_disjoint_sorted_and_covering(n: int) -> None:
    train, val = meta_split(n, seed=0)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(n))
    assert train == sorted(train) and val == sorted(val)
    assert all(type(i) is int for i in train + val)


@pytest.mark.parametrize(
    ("n", "fraction", "expected_val"),
    [
        (400, 0.1, 40),
        (15, 0.1, 2),  # 1.5 rounds up
        (5, 0.5, 3),  # 2.5 rounds up too (Python's round() would give 2)
        (14, 0.1, 1),
        (5, 0.1, 1),  # 0.5 -> at least one
        (2, 0.1, 1),
        (3, 0.5, 2),
        (10, 0.25, 3),
    ],
)
def test_val_size_is_rounded_fraction_at_least_one(
    n: int, fraction: float, expected_val: int
) -> None:
    train, val = meta_split(n, val_fraction=fraction, seed=0)
    assert len(val) == expected_val
    assert len(train) == n - expected_val


@pytest.mark.parametrize(("n", "fraction"), [(0, 0.1), (1, 0.1), (2, 0.9)])
def test_too_few_images_raise_dataset_error(n: int, fraction: float) -> None:
    with pytest.raises(DatasetError) as info:
        meta_split(n, val_fraction=fraction)
    message = str(info.value)
    assert f"{n} images" in message and str(fraction) in message and "\n" not in message


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_open_unit_interval_raises_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError):
        meta_split(100, val_fraction=fraction)
