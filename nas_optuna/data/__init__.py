"""Datasets, augmentation and splits for segmentation architecture search.

A *source* (:class:`SegmentationSource`) decodes raw samples; a *view*
(:class:`SegmentationDataset`) serves a subset of a source through an augmentation as
tensors. Sources are registered by name in :data:`DATASETS` and built from a study
config's ``[dataset]`` table with :func:`build_dataset`. The default, ``synthetic``, is
generated on the fly (:class:`SyntheticStreetScenes`), so studies run without downloads.

Example:
    >>> from nas_optuna.data import (
    ...     SegmentationDataset, build_dataset, build_transforms, meta_split)
    >>> source = build_dataset("synthetic", num_images=100)
    >>> train_idx, val_idx = meta_split(len(source), val_fraction=0.1, seed=0)
    >>> train = SegmentationDataset(
    ...     source, train_idx, build_transforms(train=True, crop_size=(64, 64)))
    >>> val = SegmentationDataset(source, val_idx, build_transforms(train=False))
    >>> image, mask = train[0]  # float32 (3, 64, 64), int64 (64, 64)
"""

import os as _os

# albumentations (seen with 2.0.0) asks PyPI for a newer release on import and warns on
# stderr: a network call and a message on every command. nas-optuna runs offline; a user
# who wants the check sets the variable to 0 themselves.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


from nas_optuna.data._camvid import CAMVID_CLASSES, CamVid
from nas_optuna.data._cityscapes import CITYSCAPES_CLASSES, LABEL_TO_TRAIN_ID, Cityscapes
from nas_optuna.data._dataset import SegmentationDataset
from nas_optuna.data._folder import FolderDataset
from nas_optuna.data._registry import DATASETS, build_dataset
from nas_optuna.data._source import IGNORE_INDEX, SegmentationSource
from nas_optuna.data._split import meta_split
from nas_optuna.data._synthetic import (
    GENERATOR_VERSION,
    SYNTHETIC_CLASSES,
    SyntheticStreetScenes,
    merged_class_names,
    render_street_scene,
)
from nas_optuna.data._transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from nas_optuna.data._voc import VOC_CLASSES, PascalVOC

__all__ = [
    "CAMVID_CLASSES",
    "CITYSCAPES_CLASSES",
    "DATASETS",
    "GENERATOR_VERSION",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LABEL_TO_TRAIN_ID",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "CamVid",
    "Cityscapes",
    "FolderDataset",
    "PascalVOC",
    "SegmentationDataset",
    "SegmentationSource",
    "SyntheticStreetScenes",
    "build_dataset",
    "build_transforms",
    "merged_class_names",
    "meta_split",
    "render_street_scene",
]
