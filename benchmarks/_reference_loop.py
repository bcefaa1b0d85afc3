"""A plain, textbook implementation of search-time training: the baseline of ``throughput.py``.

It trains one architecture with the same two-stage budget as :mod:`nas_optuna.training`
and scores it with the same reward, but written the way a first implementation would be,
without any of nas-optuna's speed work:

* **Stage 1** trains only the generated part (``network.decoder``) with Adam
  (``decoder_lr``) on the same fixed, un-augmented meta-train crops (plus mirrored copies
  with ``flip_views``), and **recomputes the frozen stem for every batch** under
  ``torch.no_grad()`` (eval mode) instead of reading cached features.
* **Stage 2** trains the whole network end to end on augmented images (the same
  :func:`nas_optuna.data.build_transforms` pipeline), the stem with Adam or SGD at
  ``stem_lr``, the decoder's Adam carried over from stage 1.
* Data comes from a standard ``torch.utils.data.DataLoader`` (``num_workers=0``,
  ``pin_memory=False``) over nas-optuna's dataset classes; every batch is copied to the
  device with a blocking ``.to(device)``; everything runs in float32 and the default
  memory format; the loss is read with ``.item()`` every step (the usual logging, which
  also catches a non-finite loss).
* **Evaluation** runs every meta-val image through the full network (stem included) from
  a DataLoader, upsamples the logits to the label size and fills one
  :class:`~nas_optuna.metrics.ConfusionMatrix`; the reward is its geometric mean of mean
  IoU, mean accuracy and frequency-weighted IoU.
* The loss (cross-entropy on labels nearest-downsampled to the output stride, ignore 255,
  plus ``auxiliary_weight`` x the auxiliary heads' cross-entropies) and the Polyak average
  (decays 0.9 / 0.99, warmed up as ``min(decay, n / (9 + n))`` over the ``n``-th update,
  the first update copying the weights; parameters and buffers averaged; the averaged copy
  is evaluated) are written out here rather than imported from nas-optuna, so the
  baseline stays an independent implementation of the same procedure.

Distillation (a ``[teacher]``) is not implemented: the benchmark does not use one.

The loop reports where its time goes through ``phase(name)``, a context-manager factory
(by default a no-op); phases are ``data``, ``stem``, ``forward/backward``, ``polyak`` and
``evaluation``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

from nas_optuna.config import TrainConfig
from nas_optuna.data import SegmentationDataset, SegmentationSource, build_transforms, meta_split
from nas_optuna.metrics import ConfusionMatrix
from nas_optuna.networks import AuxiliaryOutputs, StemDecoderNetwork

__all__ = ["PolyakAverage", "ReferenceData", "build_reference_data", "train_reference"]

#: ``phase(name)`` returns a context manager timing the code inside it.
PhaseFactory = Callable[[str], contextlib.AbstractContextManager]

_IGNORE_INDEX = 255


def _no_phase(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@dataclasses.dataclass
class ReferenceData:
    """The datasets of the reference loop.

    Attributes:
        num_classes: Number of classes.
        train_fixed: Un-augmented meta-train crops (and their mirrors with ``flip_views``).
        train_augmented: Augmented meta-train view of stage 2.
        val: Un-augmented meta-val crops.
        image_size: ``(H, W)`` of the crops.
    """

    num_classes: int
    train_fixed: Dataset
    train_augmented: SegmentationDataset
    val: SegmentationDataset
    image_size: tuple[int, int]


class _MirroredViews(Dataset):
    """``base`` followed by the horizontal mirrors of its samples."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return 2 * len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        count = len(self.base)  # type: ignore[arg-type]
        image, label = self.base[index % count]
        if index >= count:
            image, label = image.flip(-1), label.flip(-1)
        return image, label


def build_reference_data(
    source: SegmentationSource,
    *,
    val_fraction: float,
    split_seed: int,
    crop_size: tuple[int, int] | None,
    scale: tuple[float, float],
    flip_views: bool,
) -> ReferenceData:
    """Splits ``source`` like nas-optuna (same seeded meta split) and wraps the views.

    Args:
        source: The search dataset.
        val_fraction: Share of meta-val images.
        split_seed: Seed of the split.
        crop_size: Fixed crop, or None for the images' own size.
        scale: Random-scale range of the stage-2 augmentation.
        flip_views: Stage 1 also trains on mirrored crops.
    """
    train_indices, val_indices = meta_split(len(source), val_fraction, split_seed)
    fixed = build_transforms(train=False, crop_size=crop_size)
    size = crop_size or tuple(source.load(train_indices[0])[0].shape[:2])
    train_fixed: Dataset = SegmentationDataset(source, train_indices, fixed)
    if flip_views:
        train_fixed = _MirroredViews(train_fixed)
    augmented = SegmentationDataset(
        source, train_indices, build_transforms(train=True, crop_size=size, scale=scale)
    )
    return ReferenceData(
        num_classes=source.num_classes,
        train_fixed=train_fixed,
        train_augmented=augmented,
        val=SegmentationDataset(source, val_indices, fixed),
        image_size=(int(size[0]), int(size[1])),
    )


class PolyakAverage:
    """An exponential moving average of a module's parameters and buffers.

    The first update copies the weights; update ``n`` then uses the decay
    ``min(decay, n / (9 + n))``.

    Args:
        model: The module to average (deep-copied).
        decay: The decay the warm-up reaches.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Folds the current weights of ``model`` into the average."""
        self.updates += 1
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        if self.updates == 1:
            for mine, theirs in zip(averaged, current):
                mine.copy_(theirs)
            return
        decay = min(self.decay, self.updates / (9 + self.updates))
        for mine, theirs in zip(averaged, current):
            if mine.is_floating_point():
                mine.mul_(decay).add_(theirs, alpha=1.0 - decay)
            else:
                mine.copy_(theirs)


def train_reference(
    network: StemDecoderNetwork,
    data: ReferenceData,
    config: TrainConfig,
    *,
    device: torch.device,
    seed: int = 0,
    omit_classes: Sequence[int] = (),
    phase: PhaseFactory = _no_phase,
) -> dict[int, dict[str, float]]:
    """Trains ``network`` with the two-stage budget of ``config`` and evaluates it.

    Args:
        network: A freshly built network whose stem holds the initialised weights.
        data: The reference datasets.
        config: Budget and optimiser settings (the same object nas-optuna trains with).
        device: Where to train.
        seed: Seed of the batch order and the augmentation. Drawn from in the order
            nas-optuna's trainer draws (a permutation per stage-1 epoch, then the
            augmentation seed and the stage-2 loader), so the same ``seed`` gives both the
            same batches.
        omit_classes: Classes left out of the metrics.
        phase: Timing hook, see the module docstring.

    Returns:
        The metrics (``miou``, ``macc``, ``fwiou``, ``pixel_accuracy``, ``reward``) of the
        averaged network after each stage that ran.

    Raises:
        FloatingPointError: The loss became non-finite.
    """
    network = network.to(device)
    generator = torch.Generator().manual_seed(seed)
    decoder_optimiser = torch.optim.Adam(
        network.decoder.parameters(), lr=config.decoder_lr, weight_decay=config.weight_decay
    )
    metrics: dict[int, dict[str, float]] = {}
    if config.stage1_epochs > 0:
        decoder = _stage1(network, data, config, device, generator, decoder_optimiser, phase)
        frozen_stem = network.stem

        def stage1_network(images: torch.Tensor) -> Any:
            return decoder(frozen_stem(images))

        frozen_stem.eval()
        metrics[1] = _evaluate(stage1_network, [decoder], data, config.batch_size, device,
                               omit_classes, phase)
    if config.stage2_epochs > 0:
        averaged = _stage2(network, data, config, device, generator, decoder_optimiser, phase)
        metrics[2] = _evaluate(averaged, [averaged], data, config.batch_size, device,
                               omit_classes, phase)
    return metrics


def _stage1(
    network: StemDecoderNetwork,
    data: ReferenceData,
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    optimiser: torch.optim.Optimizer,
    phase: PhaseFactory,
) -> nn.Module:
    stem, decoder = network.stem, network.decoder
    stem.eval()  # frozen: batch-norm statistics stay those of the initialised stem
    decoder.train()
    with phase("polyak"):
        average = PolyakAverage(decoder, config.polyak_decay[0])
    count = len(data.train_fixed)  # type: ignore[arg-type]
    with phase("data"):
        # One permutation per epoch drawn from ``generator``, as nas-optuna's stage 1 draws
        # it: ``shuffle=True`` would also draw the loader's worker seed and a spare
        # permutation from it, and the two sides would train on different batch orders.
        loader = DataLoader(
            data.train_fixed,
            batch_size=config.batch_size,
            sampler=SubsetRandomSampler(range(count), generator=generator),
            drop_last=count % config.batch_size == 1,  # batch norm cannot train on one sample
        )
    for _ in range(config.stage1_epochs):
        for images, labels in _batches(loader, device, phase):
            with phase("stem"), torch.no_grad():
                features = stem(images)
            with phase("forward/backward"):
                _train_step(decoder, features, labels, [optimiser], config)
            with phase("polyak"):
                average.update(decoder)
    return average.module


def _stage2(
    network: StemDecoderNetwork,
    data: ReferenceData,
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    decoder_optimiser: torch.optim.Optimizer,
    phase: PhaseFactory,
) -> nn.Module:
    network.train()
    optimisers = [decoder_optimiser]
    stem_parameters = list(network.stem.parameters())
    if stem_parameters:
        if config.stem_optimizer == "adam":
            stem_optimiser: torch.optim.Optimizer = torch.optim.Adam(
                stem_parameters, lr=config.stem_lr, weight_decay=config.weight_decay)
        else:
            stem_optimiser = torch.optim.SGD(stem_parameters, lr=config.stem_lr, momentum=0.9,
                                             weight_decay=config.weight_decay)
        optimisers.append(stem_optimiser)
    with phase("polyak"):
        average = PolyakAverage(network, config.polyak_decay[1])
    with phase("data"):
        data.train_augmented.reseed(int(torch.randint(2**31, (1,), generator=generator)))
        loader = DataLoader(
            data.train_augmented,
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=len(data.train_augmented) > config.batch_size,
        )
    for _ in range(config.stage2_epochs):
        for images, labels in _batches(loader, device, phase):
            with phase("forward/backward"):
                _train_step(network, images, labels, optimisers, config)
            with phase("polyak"):
                average.update(network)
    return average.module


def _batches(
    loader: DataLoader, device: torch.device, phase: PhaseFactory
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, copied to ``device``; fetching and copying count as ``data``."""
    with phase("data"):
        iterator = iter(loader)
    while True:
        with phase("data"):
            try:
                images, labels = next(iterator)
            except StopIteration:
                return
            images, labels = images.to(device), labels.to(device)
        yield images, labels


def _train_step(
    model: nn.Module,
    inputs: Any,
    labels: torch.Tensor,
    optimisers: list[torch.optim.Optimizer],
    config: TrainConfig,
) -> float:
    loss = _loss(model(inputs), labels, config.auxiliary_weight)
    for optimiser in optimisers:
        optimiser.zero_grad()
    loss.backward()
    if config.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    for optimiser in optimisers:
        optimiser.step()
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value}")
    return value


def _loss(outputs: Any, labels: torch.Tensor, auxiliary_weight: float) -> torch.Tensor:
    """Cross-entropy at the output stride, plus the weighted auxiliary cross-entropies."""
    auxiliary: list[torch.Tensor] = []
    if isinstance(outputs, AuxiliaryOutputs):
        outputs, auxiliary = outputs.logits, outputs.auxiliary
    loss = F.cross_entropy(outputs, _resize_labels(labels, outputs.shape[-2:]),
                           ignore_index=_IGNORE_INDEX)
    for logits in auxiliary:
        loss = loss + auxiliary_weight * F.cross_entropy(
            logits, _resize_labels(labels, logits.shape[-2:]), ignore_index=_IGNORE_INDEX)
    return loss


def _resize_labels(labels: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if labels.shape[-2:] == size:
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].long()


@torch.no_grad()
def _evaluate(
    model: Callable[[torch.Tensor], Any],
    modules: list[nn.Module],
    data: ReferenceData,
    batch_size: int,
    device: torch.device,
    omit_classes: Sequence[int],
    phase: PhaseFactory,
) -> dict[str, float]:
    with phase("evaluation"):
        for module in modules:
            module.eval()
        matrix = ConfusionMatrix(data.num_classes, ignore_index=_IGNORE_INDEX, device=device)
        for images, labels in DataLoader(data.val, batch_size=batch_size):
            logits = model(images.to(device))
            matrix.update(logits, labels.to(device))
        return matrix.compute(omit_classes=omit_classes)
