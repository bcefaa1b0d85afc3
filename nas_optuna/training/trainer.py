"""Search-time training of one architecture: two stages, Polyak averaging, a reward.

Training knows nothing of Optuna. It takes a network, the search data and a budget and
calls ``reporter(stage, metrics) -> continue?`` after each stage; the objective turns that
into ``trial.report`` / ``should_prune`` (or the multi-objective stage-1 rule), which is
what lets pruning, multi-objective studies and retraining share this one trainer.

Procedure (WACV 2020 Sect. 4.1; CVPR 2019; ``../shared/spec/reference-semantics.md``):

* Stage 1 trains only the generated part (``network.decoder``) on the cached stem features
  with Adam (``decoder_lr``, WACV 7e-3).
* Stage 2 trains the whole network end to end on augmented images: Adam or SGD on the
  stem (``stem_lr`` 1e-3), and the decoder's Adam carried over from stage 1 — a fresh Adam
  would take a full-size first step away from the stage-1 solution (measured: stage-2
  rewards fell below stage-1 rewards on the quickstart budget).
* Labels are nearest-downsampled to the network's output stride for the cross-entropy
  loss (ignore 255). A decoder with auxiliary heads returns
  :class:`~nas_optuna.networks.AuxiliaryOutputs` in training mode; each head adds its
  cross-entropy times ``auxiliary_weight`` (CVPR 2019: 0.15).
* Knowledge distillation (CVPR 2019): with teacher logits in the search data, stage 1 adds
  ``distill_weight`` (0.3) x the mean squared error between the student's raw logits and
  the teacher's, resized bilinearly to the student's size. As in the paper, the teacher's
  outputs are precomputed for stage 1 and stage 2 does without them.
* Polyak averaging (``torch.optim.swa_utils`` EMA, buffers included) with decay 0.9 in
  stage 1 and 0.99 in stage 2; the averaged copy is what gets validated. Training
  continues from the raw weights (the average is an evaluation copy) — our choice.
  The decay of update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (the usual warm-up of
  an EMA): the papers ran hundreds of steps per stage, while a short CPU budget runs a few
  dozen, over which a fixed 0.99 would validate the stage's *starting* weights.
* Validation upsamples the logits bilinearly to the label size and computes mean IoU,
  mean accuracy and frequency-weighted IoU from one confusion matrix; the reward is their
  geometric mean.
* On CUDA the forward passes run under bf16 autocast with channels-last tensors.
* A non-finite loss raises :class:`~nas_optuna.exceptions.TrialFailed` (``nan_loss``), an
  out-of-memory error raises it with ``out_of_memory``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from nas_optuna.config import TrainConfig
from nas_optuna.exceptions import TrialFailed
from nas_optuna.metrics import ConfusionMatrix
from nas_optuna.networks import AuxiliaryOutputs, StemDecoderNetwork
from nas_optuna.training.features import SearchData

__all__ = ["Reporter", "TrainResult", "train_architecture", "resolve_device"]

#: ``reporter(stage, metrics) -> continue?``; metrics hold miou, macc, fwiou and reward.
Reporter = Callable[[int, Mapping[str, float]], bool]

_IGNORE_INDEX = 255


@dataclasses.dataclass
class TrainResult:
    """What training produced.

    Attributes:
        stage_metrics: Metrics of the averaged network after each completed stage.
        stopped_after: The stage after which the reporter stopped training, or None.
    """

    stage_metrics: dict[int, dict[str, float]]
    stopped_after: int | None = None

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.stage_metrics[max(self.stage_metrics)]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_architecture(
    network: StemDecoderNetwork,
    data: SearchData,
    config: TrainConfig,
    *,
    device: torch.device,
    reporter: Reporter | None = None,
    seed: int = 0,
    omit_classes: Sequence[int] = (),
) -> TrainResult:
    """Trains ``network`` with the two-stage search procedure and evaluates it.

    Args:
        network: A freshly built network whose stem holds the initialised weights.
        data: Search data with cached stem features (see :func:`prepare_search_data`).
        config: Budget and optimiser settings.
        device: Where to train.
        reporter: Called after each stage; returning False stops training.
        seed: Seed of the batch order.
        omit_classes: Classes left out of the metrics (CVPR 2019 omits background).

    Returns:
        The metrics after each completed stage.

    Raises:
        TrialFailed: Non-finite loss or out of memory.

    Example:
        >>> result = train_architecture(net, data, TrainConfig(stage1_epochs=1,
        ...                             stage2_epochs=1), device=torch.device("cpu"))
        >>> 0.0 <= result.final_metrics["reward"] <= 1.0
        True
    """
    network = network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult(stage_metrics={})
    stages = ((1, config.stage1_epochs, _stage1), (2, config.stage2_epochs, _stage2))
    decoder_optimiser = torch.optim.Adam(
        network.decoder.parameters(), lr=config.decoder_lr, weight_decay=config.weight_decay
    )
    with _failures_as_trial_failed():
        for stage, epochs, run in stages:
            if epochs == 0:
                continue
            averaged = run(network, data, config, device, epochs, generator, decoder_optimiser)
            metrics = _evaluate(averaged, data, stage, device, config.batch_size, omit_classes)
            result.stage_metrics[stage] = metrics
            if reporter is not None and not reporter(stage, metrics):
                result.stopped_after = stage
                break
    return result


def _stage1(
    network: StemDecoderNetwork,
    data: SearchData,
    config: TrainConfig,
    device: torch.device,
    epochs: int,
    generator: torch.Generator,
    optimiser: torch.optim.Optimizer,
) -> nn.Module:
    decoder = network.decoder
    decoder.train()
    averaged = _averaged(decoder, config.polyak_decay[0])
    count = len(data.train_labels)
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        # A trailing batch of one sample is dropped: batch norm cannot train on it.
        for start in range(0, count - (count % config.batch_size == 1), config.batch_size):
            index = order[start : start + config.batch_size]
            features = [f[index].to(device, non_blocking=True).float() for f in data.train_features]
            if device.type == "cuda":
                features = [f.contiguous(memory_format=torch.channels_last) for f in features]
            labels = data.train_labels[index].to(device, non_blocking=True)
            teacher = None
            if data.train_teacher_logits is not None and config.distill_weight > 0:
                teacher = data.train_teacher_logits[index].to(device, non_blocking=True)
            _step(decoder, features, labels, optimiser, config, stage=1, teacher_logits=teacher)
            averaged.update_parameters(decoder)
    return averaged.module


def _stage2(
    network: StemDecoderNetwork,
    data: SearchData,
    config: TrainConfig,
    device: torch.device,
    epochs: int,
    generator: torch.Generator,
    decoder_optimiser: torch.optim.Optimizer,
) -> nn.Module:
    network.train()
    stem_optimiser = (
        torch.optim.Adam
        if config.stem_optimizer == "adam"
        else lambda p, lr, weight_decay: torch.optim.SGD(
            p, lr, momentum=0.9, weight_decay=weight_decay
        )
    )
    optimisers = [decoder_optimiser]
    stem_parameters = list(network.stem.parameters())
    if stem_parameters:  # spaces searching the whole network have an empty ImageStem
        optimisers.append(
            stem_optimiser(stem_parameters, lr=config.stem_lr, weight_decay=config.weight_decay)
        )
    averaged = _averaged(network, config.polyak_decay[1])
    data.train_dataset.reseed(int(torch.randint(2**31, (1,), generator=generator)))
    loader = DataLoader(
        data.train_dataset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(data.train_dataset) > config.batch_size,
        pin_memory=device.type == "cuda",
    )
    for _ in range(epochs):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            _step(
                network, images, labels.to(device, non_blocking=True), optimisers, config, stage=2
            )
            averaged.update_parameters(network)
    return averaged.module


def _step(
    model: nn.Module,
    inputs: object,
    labels: torch.Tensor,
    optimisers: torch.optim.Optimizer | list[torch.optim.Optimizer],
    config: TrainConfig,
    stage: int,
    teacher_logits: torch.Tensor | None = None,
) -> None:
    optimisers = optimisers if isinstance(optimisers, list) else [optimisers]
    with _autocast(labels.device):
        outputs = model(inputs)
    loss = _loss(outputs, labels, config, teacher_logits)
    if not torch.isfinite(loss):
        raise TrialFailed("nan_loss", f"non-finite loss {loss.item()} in stage {stage}")
    for optimiser in optimisers:
        optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    for optimiser in optimisers:
        optimiser.step()


def _loss(
    outputs: torch.Tensor | AuxiliaryOutputs,
    labels: torch.Tensor,
    config: TrainConfig,
    teacher_logits: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy, plus weighted auxiliary cross-entropies and distillation (CVPR 2019)."""
    auxiliary: list[torch.Tensor] = []
    if isinstance(outputs, AuxiliaryOutputs):
        outputs, auxiliary = outputs.logits, outputs.auxiliary
    logits = outputs.float()
    loss = F.cross_entropy(logits, _downsample(labels, logits.shape[-2:]),
                           ignore_index=_IGNORE_INDEX)
    for extra in auxiliary:
        extra = extra.float()
        loss = loss + config.auxiliary_weight * F.cross_entropy(
            extra, _downsample(labels, extra.shape[-2:]), ignore_index=_IGNORE_INDEX
        )
    if teacher_logits is not None:
        # The student's raw logits mimic the teacher's, compared at the student's size.
        target = teacher_logits.float()
        if target.shape[-2:] != logits.shape[-2:]:
            target = F.interpolate(target, size=logits.shape[-2:], mode="bilinear",
                                   align_corners=False)
        loss = loss + config.distill_weight * F.mse_loss(logits, target)
    return loss


def _downsample(labels: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Nearest-neighbour resize of integer labels to the logits' size (papers' choice)."""
    if labels.shape[-2:] == size:
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].long()


class _PolyakAverage(AveragedModel):
    """An EMA of parameters and buffers whose decay warms up to ``decay``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=self._average, use_buffers=True)
        self._target_decay = decay
        self._updates = 0  # counted on the host: reading n_averaged would sync the device

    def update_parameters(self, model: nn.Module) -> None:
        self._updates += 1
        super().update_parameters(model)

    def _average(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        decay = min(self._target_decay, self._updates / (9 + self._updates))
        get_ema_multi_avg_fn(decay)(averaged, current, num_averaged)


def _averaged(model: nn.Module, decay: float) -> AveragedModel:
    return _PolyakAverage(model, decay)


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: SearchData,
    stage: int,
    device: torch.device,
    batch_size: int,
    omit_classes: Sequence[int],
) -> dict[str, float]:
    model.eval()
    matrix = ConfusionMatrix(data.num_classes, ignore_index=_IGNORE_INDEX, device=device)
    count = len(data.val_labels)
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        if stage == 1:
            inputs: object = [f[part].to(device).float() for f in data.val_features]
        else:
            inputs = data.val_images[part].to(device).float()
        with _autocast(device):
            logits = model(inputs)
        matrix.update(logits.float(), data.val_labels[part].to(device).long())
    return matrix.compute(omit_classes=omit_classes)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _failures_as_trial_failed() -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise TrialFailed("out_of_memory", str(error).splitlines()[0]) from error
    except RuntimeError as error:
        message = str(error)
        if "out of memory" in message or "can't allocate memory" in message:
            raise TrialFailed("out_of_memory", message.splitlines()[0]) from error
        raise
