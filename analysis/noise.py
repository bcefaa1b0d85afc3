"""The seed-noise floor: how much one architecture's reward moves between training seeds.

Every ranking figure (search reward against longer training, stage 1 against stage 2, a
proxy against a reference) must be read against this floor: when two evaluations of the
same architecture with different seeds rank a set only moderately alike, no cheaper proxy
can rank it better than that.

Statistics of an ``architectures x seeds`` table of rewards (a one-way random-effects
model, Shrout and Fleiss 1979):

* ``within_std``: the pooled standard deviation over seeds, ``sqrt(MSW)``;
* ``between_std``: the standard deviation of the architectures' true rewards,
  ``sqrt(max(0, (MSB - MSW) / k))``;
* ``icc1``: ICC(1) = ``(MSB - MSW) / (MSB + (k - 1) MSW)``, the share of one evaluation's
  variance that belongs to the architecture (1 = no seed noise);
* ``seed_spearman``: Spearman's rho between the first two seeds, with a seeded bootstrap
  interval (:func:`~analysis.correlation.rank_correlation`) — the ceiling of any proxy's
  rank correlation with one evaluation.

Example:
    >>> floor = seed_noise([[0.50, 0.52, 0.51], [0.60, 0.61, 0.59], [0.40, 0.42, 0.41]])
    >>> round(floor.icc1, 3)
    0.99
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from analysis.correlation import rank_correlation
from analysis.result import InsufficientData

__all__ = ["SeedNoise", "seed_noise"]


@dataclasses.dataclass(frozen=True)
class SeedNoise:
    """The noise floor of an ``n_archs x n_seeds`` reward table (see the module docstring)."""

    n_archs: int
    n_seeds: int
    icc1: float
    within_std: float
    between_std: float
    seed_spearman: float
    seed_spearman_low: float
    seed_spearman_high: float


def seed_noise(rewards: Sequence[Sequence[float]], *, n_bootstrap: int = 2000,
               seed: int = 0) -> SeedNoise:
    """ICC(1), within- and between-architecture std and the seed-vs-seed Spearman.

    Args:
        rewards: One row per architecture, one column per training seed (equal lengths).
        n_bootstrap: Bootstrap resamples of the Spearman interval.
        seed: Seed of the resampling.

    Raises:
        ValueError: Rows of different lengths, or fewer than 2 seeds.
        InsufficientData: Fewer than 3 architectures.
    """
    table = np.asarray(rewards, dtype=float)
    if table.ndim != 2:
        raise ValueError("rewards must be a table: one row per architecture, one column per seed")
    n, k = table.shape
    if k < 2:
        raise ValueError(f"the noise floor needs at least 2 seeds, got {k}")
    if n < 3:
        raise InsufficientData(f"the noise floor needs at least 3 architectures, got {n}")
    means = table.mean(axis=1)
    msb = k * float(np.var(means, ddof=1))
    msw = float(np.mean(np.var(table, axis=1, ddof=1)))
    denominator = msb + (k - 1) * msw
    icc1 = (msb - msw) / denominator if denominator > 0 else float("nan")
    pair = rank_correlation(table[:, 0], table[:, 1], n_bootstrap=n_bootstrap, seed=seed)
    return SeedNoise(
        n_archs=n, n_seeds=k, icc1=float(icc1), within_std=float(np.sqrt(msw)),
        between_std=float(np.sqrt(max(0.0, (msb - msw) / k))),
        seed_spearman=pair.spearman, seed_spearman_low=pair.spearman_low,
        seed_spearman_high=pair.spearman_high,
    )
