"""The torch-facing view: a source, a subset of its indices, and an augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch

from nas_optuna.data._source import SegmentationSource
from nas_optuna.data._transforms import build_transforms

__all__ = ["SegmentationDataset"]


class SegmentationDataset(torch.utils.data.Dataset):
    """Serves ``source`` samples (optionally a subset) as augmented tensors.

    Args:
        source: Where samples come from.
        indices: Source indices this view serves, in order; ``None`` serves all of them.
        transform: Applied as ``transform(image=..., mask=...)``; must end in normalisation
            (see :func:`~nas_optuna.data.build_transforms`). ``None`` uses the evaluation
            pipeline, i.e. ImageNet normalisation only.

    Raises:
        IndexError: An index is outside the source.

    Example:
        >>> from nas_optuna.data import SegmentationDataset, SyntheticStreetScenes, meta_split
        >>> source = SyntheticStreetScenes(num_images=100)
        >>> train_idx, val_idx = meta_split(len(source))
        >>> val = SegmentationDataset(source, val_idx)
        >>> image, mask = val[0]  # float32 (3, 96, 128), int64 (96, 128)
    """

    def __init__(
        self,
        source: SegmentationSource,
        indices: Sequence[int] | None = None,
        transform: A.Compose | None = None,
    ) -> None:
        size = len(source)
        if indices is None:
            self.indices = list(range(size))
        else:
            self.indices = [int(i) for i in indices]
            bad = [i for i in self.indices if not 0 <= i < size]
            if bad:
                raise IndexError(f"indices {bad[:5]} out of range for {source.name} of size {size}")
        self.source = source
        self.transform = transform if transform is not None else build_transforms(train=False)
        # (worker id, worker seed) the transform was last reseeded for; see _reseed_in_worker.
        self._seeded_for: tuple[int, int] | None = None

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def ignore_index(self) -> int:
        return self.source.ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._reseed_in_worker()
        image, mask = self.source.load(self.indices[i])
        out = self.transform(image=image, mask=mask)
        return _to_tensor(out["image"], is_mask=False), _to_tensor(out["mask"], is_mask=True)

    def reseed(self, seed: int) -> None:
        """Restarts the augmentation's random stream, e.g. at the start of each trial.

        Without it, the shared transform's state would carry over from one trial to the
        next, and a trial's augmentations would depend on the trials run before it.
        """
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is not None:
            set_seed(seed % 2**32)

    def _reseed_in_worker(self) -> None:
        # albumentations keeps its own RNG inside the Compose; forked DataLoader workers all
        # inherit the same state and would apply identical "random" augmentations. Reseeding
        # from torch's per-worker seed (new every epoch, derived from torch.manual_seed) keeps
        # workers apart and makes runs reproducible.
        info = torch.utils.data.get_worker_info()
        if info is None or self._seeded_for == (info.id, info.seed):
            return
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is not None:
            set_seed(info.seed % 2**32)
        self._seeded_for = (info.id, info.seed)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.source!r}, {len(self)} samples)"


def _to_tensor(array: np.ndarray | torch.Tensor, *, is_mask: bool) -> torch.Tensor:
    # Accept transforms ending in ToTensorV2 as well as plain numpy output; numpy views with
    # negative strides (user flips done with [::-1]) cannot be shared with torch, so copy.
    if isinstance(array, torch.Tensor):
        tensor = array
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if is_mask:
        return tensor.long()
    if tensor.ndim == 3 and not isinstance(array, torch.Tensor):
        tensor = tensor.permute(2, 0, 1)  # HWC -> CHW
    return tensor.float().contiguous()
