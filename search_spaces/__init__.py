"""The papers' search spaces, written as Optuna define-by-run suggestions.

Spaces are registered by name in :data:`SPACES` (one module per paper); :func:`get_space`
builds one from a study config's ``[space]`` table.

Example:
    >>> from search_spaces import get_space
    >>> space = get_space("template", profile="search")
    >>> arch = space.random_architecture(seed=0)
    >>> net = space.build(arch, num_classes=6)
"""

from __future__ import annotations

from typing import Any

from nas_optuna.registry import Registry, check_options
from search_spaces._base import SearchSpace
from search_spaces.auxcell import AuxCellSpace
from search_spaces.cas import CASSpace
from search_spaces.rspnet import RSPNetSpace
from search_spaces.smp import SmpSpace
from search_spaces.template import TemplateSpace

__all__ = [
    "SPACES",
    "AuxCellSpace",
    "CASSpace",
    "RSPNetSpace",
    "SearchSpace",
    "SmpSpace",
    "TemplateSpace",
    "get_space",
]

#: Registered search spaces: name -> SearchSpace subclass.
SPACES: Registry[type[SearchSpace]] = Registry("search space")
SPACES.add(TemplateSpace.name, TemplateSpace)
SPACES.add(AuxCellSpace.name, AuxCellSpace)
SPACES.add(CASSpace.name, CASSpace)
SPACES.add(RSPNetSpace.name, RSPNetSpace)
SPACES.add(SmpSpace.name, SmpSpace)


def get_space(name: str, **options: Any) -> SearchSpace:
    """Builds the search space ``name`` with ``options`` (e.g. ``profile="final"``).

    Raises:
        UnknownNameError: No space is registered under ``name``.
        ConfigError: An option is not accepted by the space.
    """
    cls = SPACES.get(name)
    check_options(cls, options, f"search space {name!r}")
    return cls(**options)
