"""The dataset registry and the config-facing factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nas_optuna.data._camvid import CamVid
from nas_optuna.data._cityscapes import Cityscapes
from nas_optuna.data._folder import FolderDataset
from nas_optuna.data._source import SegmentationSource
from nas_optuna.data._synthetic import SyntheticStreetScenes
from nas_optuna.data._voc import PascalVOC
from nas_optuna.registry import Registry, check_options

__all__ = ["DATASETS", "build_dataset"]

#: Registered datasets: name -> factory (the source class) returning a SegmentationSource.
DATASETS: Registry[Callable[..., SegmentationSource]] = Registry("dataset")
for _source in (SyntheticStreetScenes, FolderDataset, CamVid, Cityscapes, PascalVOC):
    DATASETS.add(_source.name, _source)
del _source


def build_dataset(name: str, **options: Any) -> SegmentationSource:
    """Builds the registered dataset ``name`` from a config's options.

    Options are checked against the factory's signature first, so a misspelt key in a
    study config is reported by name instead of as a Python ``TypeError``.

    Args:
        name: A name in :data:`DATASETS`: ``synthetic``, ``folder``, ``camvid``,
            ``cityscapes`` or ``voc``.
        **options: Keyword arguments of the dataset's constructor.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: An option is unknown, a required one is missing, or a value is invalid.
        DatasetError: The dataset's files are missing or malformed.

    Example:
        >>> from nas_optuna.data import build_dataset
        >>> source = build_dataset("synthetic", num_images=50, num_classes=4)
        >>> source.describe()["size"]
        50
    """
    factory = DATASETS.get(name)
    check_options(factory, options, f"dataset {name!r}", required=True)
    return factory(**options)
