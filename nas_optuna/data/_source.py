"""The contract every dataset fulfils: a raw, un-augmented, indexable source of samples.

A :class:`SegmentationSource` knows how to find and decode its samples and nothing else.
Augmentation, normalisation, tensors and train/validation subsets belong to
:class:`~nas_optuna.data.SegmentationDataset`, a view over a source, so one source can back
the meta-train and meta-val views of a study without being loaded twice.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from nas_optuna.labels import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "SegmentationSource"]



class SegmentationSource(abc.ABC):
    """Base class of the registered datasets.

    Subclasses set :attr:`name`, :attr:`num_classes` and :attr:`class_names`, and implement
    :meth:`__len__` and :meth:`load`.
    """

    #: Registry name of the dataset, reported by :meth:`describe`.
    name: ClassVar[str] = "custom"
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    #: Folder the samples are read from; ``None`` for generated datasets.
    root: str | None = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns sample ``index`` as ``(image, mask)``.

        ``image`` is ``uint8`` of shape ``(H, W, 3)`` in RGB order; ``mask`` is ``uint8`` of
        shape ``(H, W)`` holding values in ``[0, num_classes)`` or :data:`IGNORE_INDEX`.

        Raises:
            IndexError: ``index`` is outside ``[0, len(self))``.
            DatasetError: The files are unreadable, their sizes differ, or the mask holds
                values that are neither a class nor the ignore value.
        """

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary that identifies the samples, used as a cache key.

        Subclasses add every option that changes the samples (split, seed, image size...).
        """
        info: dict[str, Any] = {"name": self.name}
        if self.root is not None:
            info["root"] = self.root
        info["size"] = len(self)
        info["num_classes"] = self.num_classes
        return info

    def _check_index(self, index: int) -> int:
        # Negative indices are rejected rather than wrapped: a split handing out -1 is a bug
        # that silently duplicating the last sample would hide.
        size = len(self)
        if not 0 <= index < size:
            raise IndexError(f"sample index {index} out of range for {self.name} of size {size}")
        return int(index)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({fields})"
