"""A space's derived architecture features as surrogate columns.

:meth:`search_spaces.SearchSpace.features` describes an architecture by numbers computed
from it alone (for the template space: the output stride, how often each operation is
applied, ...). A surrogate fitted with them records their names; predicting rebuilds each
architecture from its params (:meth:`~search_spaces.SearchSpace.from_params`, no network)
and asks the space again, so a space that no longer provides a recorded feature is
refused rather than silently predicting from shifted columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas_optuna.exceptions import ConfigError

__all__ = ["DerivedFeatures"]


class DerivedFeatures:
    """``names`` of the space ``space_options`` describes, computed for params.

    Args:
        space_options: The study's ``space`` user attr (``{"name": ..., ...}``).
        names: The feature names, in column order.
    """

    def __init__(self, space_options: Mapping[str, Any], names: Sequence[str]) -> None:
        from search_spaces import get_space

        options = {k: v for k, v in space_options.items() if k != "name"}
        self.space = get_space(str(space_options["name"]), **options)
        self.names = tuple(names)

    @classmethod
    def of_space(cls, space_options: Mapping[str, Any],
                 params: Mapping[str, Any]) -> DerivedFeatures:
        """Every feature the space derives (names from one architecture, ``params``)."""
        features = cls(space_options, ())
        features.names = tuple(features._features(params))
        return features

    def _features(self, params: Mapping[str, Any]) -> dict[str, float]:
        return self.space.features(self.space.from_params(params))

    def matrix(self, params_list: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(len(params_list), len(names))`` float64 features.

        Raises:
            ConfigError: Params that are not an architecture of the space, or a recorded
                feature the space no longer provides.
        """
        out = np.zeros((len(params_list), len(self.names)))
        for row, params in enumerate(params_list):
            features = self._features(params)
            missing = [n for n in self.names if n not in features]
            if missing:
                raise ConfigError(f"space {self.space.name!r} no longer derives the feature "
                                  f"{missing[0]!r} this surrogate was fitted with")
            out[row] = [features[n] for n in self.names]
        return out
