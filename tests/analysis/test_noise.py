"""The seed-noise floor: ICC(1) and the two standard deviations, against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import InsufficientData, seed_noise


def test_a_hand_computed_table() -> None:
    # means 2, 6, 10: MSB = 2 * var([2, 6, 10]) = 32; each row's variance 2: MSW = 2.
    floor = seed_noise([[1, 3], [5, 7], [9, 11]])
    assert floor.icc1 == pytest.approx((32 - 2) / (32 + 2))
    assert floor.within_std == pytest.approx(math.sqrt(2))
    assert floor.between_std == pytest.approx(math.sqrt((32 - 2) / 2))
    assert floor.seed_spearman == 1.0
    assert (floor.n_archs, floor.n_seeds) == (3, 2)


def test_pure_seed_noise_has_an_icc_near_zero_and_no_between_spread() -> None:
    rng = np.random.default_rng(0)
    table = 0.5 + 0.02 * rng.standard_normal((300, 3))  # one true reward, noise only
    floor = seed_noise(table)
    assert abs(floor.icc1) < 0.1
    assert floor.within_std == pytest.approx(0.02, rel=0.1)
    assert floor.between_std < 0.006
    assert floor.seed_spearman_low < 0 < floor.seed_spearman_high


def test_architecture_spread_well_above_the_noise_gives_a_high_icc() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0.3, 0.7, size=(40, 1))
    floor = seed_noise(true + 0.01 * rng.standard_normal((40, 3)))
    assert floor.icc1 > 0.95
    assert floor.between_std == pytest.approx(np.std(true, ddof=1), rel=0.1)
    assert floor.seed_spearman > 0.9


@pytest.mark.parametrize(("table", "error"), [
    ([[0.5], [0.6], [0.7]], ValueError),
    ([[0.5, 0.6], [0.6, 0.7]], InsufficientData),
])
def test_too_little_data_is_refused(table: list, error: type) -> None:
    with pytest.raises(error):
        seed_noise(table)
