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
* Networks and inputs are channels-last on every device; on CUDA the forward passes also
  run under bf16 autocast. Measured on 2 CPU cores (``benchmarks/layouts.py``): a
  training step of 12 search networks took 1.36x less time channels-last than contiguous,
  every one of them faster; bf16 autocast, even with AMX-BF16, took 1.24x the time of
  channels-last fp32, so the CPU stays fp32.
* Nothing is ``torch.compile``-d: every trial trains a new architecture, so every trial
  would compile new graphs. Measured on 2 CPU cores (``benchmarks/compile.py``): 27-107 s
  per graph, and the compiled steps of six architectures were slower overall (0.83x in
  stage 1, 0.98x in stage 2), so compiling never pays back within a trial.
* A non-finite loss raises :class:`~nas_optuna.exceptions.TrialFailed` (``nan_loss``), an
  out-of-memory error raises it with ``out_of_memory``.

Longer training (:func:`train_final`, used by ``nas-optuna retrain``) reuses the loss, the
augmented loader and the evaluation with the papers' final schedule instead of the two
stages: SGD (momentum 0.9) over the whole network, 'poly' learning rate per iteration
(:func:`poly_lr_factor`), no Polyak averaging, no distillation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from nas_optuna.config import TrainConfig
from nas_optuna.exceptions import TrialFailed
from nas_optuna.labels import IGNORE_INDEX
from nas_optuna.metrics import ConfusionMatrix
from nas_optuna.networks import AuxiliaryOutputs, StemDecoderNetwork
from nas_optuna.training.features import SearchData

__all__ = ["FINAL_LR", "Reporter", "TrainResult", "ValidationReporter", "evaluated_state_dict",
           "validation_epochs", "poly_lr_factor",
           "predict", "resolve_device", "train_architecture", "train_final"]

#: ``reporter(stage, metrics) -> continue?``; metrics hold miou, macc, fwiou and reward.
Reporter = Callable[[int, Mapping[str, float]], bool]
#: ``validation_reporter(index, metrics) -> continue?`` at a validation inside stage 1
#: (``index`` 1 .. ``stage1_validations - 1``; the last is stage 1's own, see Reporter).
ValidationReporter = Callable[[int, Mapping[str, float]], bool]



@dataclasses.dataclass
class TrainResult:
    """What training produced.

    Attributes:
        stage_metrics: Metrics of the averaged network after each completed stage.
        stopped_after: The stage after which the reporter stopped training, or None.
        evaluated: The Polyak-averaged copy that was validated last: the decoder after
            stage 1 (it reads cached stem features), the whole network after stage 2; None
            when no stage ran. See :func:`predict` and :func:`evaluated_state_dict`.
    """

    stage_metrics: dict[int, dict[str, float]]
    stopped_after: int | None = None
    evaluated: nn.Module | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.stage_metrics[max(self.stage_metrics)]

    @property
    def last_stage(self) -> int | None:
        """The stage whose averaged copy is :attr:`evaluated` (None before any stage)."""
        return max(self.stage_metrics) if self.stage_metrics else None


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
    validation_reporter: ValidationReporter | None = None,
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
        validation_reporter: Called at the validations inside stage 1 that
            ``config.stage1_validations`` asks for (the averaged decoder on the meta-val
            features, as at the stage's end); returning False stops training there, with
            ``stopped_after`` 1 and that validation's metrics as stage 1's.

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
    network = network.to(device, memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult(stage_metrics={})
    stages = ((1, config.stage1_epochs, _stage1), (2, config.stage2_epochs, _stage2))
    decoder_optimiser = _adam(list(network.decoder.parameters()), lr=config.decoder_lr,
                              weight_decay=config.weight_decay)
    inside = validation_epochs(config.stage1_epochs, config.stage1_validations)[:-1]

    def on_epoch(epoch: int, averaged: nn.Module) -> bool:
        """Validates inside stage 1 where asked; False stops the stage (and training)."""
        if epoch not in inside or validation_reporter is None:
            return True
        metrics = _evaluate(averaged, data, 1, device, config.batch_size, omit_classes)
        averaged.train()
        if validation_reporter(inside.index(epoch) + 1, metrics):
            return True
        result.stage_metrics[1] = metrics
        result.evaluated = averaged.eval()  # stage 1 stops here: it changes no more
        result.stopped_after = 1
        return False

    with _failures_as_trial_failed():
        for stage, epochs, run in stages:
            if epochs == 0:
                continue
            extra = {"on_epoch": on_epoch} if stage == 1 else {}
            averaged = run(network, data, config, device, epochs, generator, decoder_optimiser,
                           **extra)
            if result.stopped_after is not None:  # stopped at a validation inside stage 1
                break
            metrics = _evaluate(averaged, data, stage, device, config.batch_size, omit_classes)
            result.stage_metrics[stage] = metrics
            result.evaluated = averaged
            if reporter is not None and not reporter(stage, metrics):
                result.stopped_after = stage
                break
    return result


def validation_epochs(epochs: int, validations: int) -> list[int]:
    """The stage-1 epochs (1-based) after which the averaged decoder is validated.

    ``validations`` evenly spaced epochs, the last one ``epochs``: e.g. 6 epochs, 3
    validations -> ``[2, 4, 6]``; 3 and 3 -> ``[1, 2, 3]``; 1 validation -> ``[epochs]``.

    Raises:
        ValueError: ``validations`` is not between 1 and ``epochs``.
    """
    if epochs == 0:
        return []
    if not 1 <= validations <= epochs:
        raise ValueError(f"validations must be between 1 and {epochs}, got {validations}")
    return [math.ceil(epochs * i / validations) for i in range(1, validations + 1)]



#: The longer ("final") training schedule of :func:`train_final` (WACV 2020, Sect. 5):
#: SGD with momentum 0.9, initial learning rate 5e-2, weight decay 1e-5, 'poly' power 0.9.
FINAL_LR = 5e-2
FINAL_MOMENTUM = 0.9
FINAL_WEIGHT_DECAY = 1e-5
FINAL_POWER = 0.9


def poly_lr_factor(iteration: int, max_iterations: int, power: float = FINAL_POWER) -> float:
    """The 'poly' schedule's factor ``(1 - iteration / max_iterations) ** power``.

    Step ``iteration`` (counted from 0) trains with ``lr * poly_lr_factor(iteration, ...)``;
    the factor is 1 at the first step and 0 from ``max_iterations`` on.

    Raises:
        ValueError: ``max_iterations`` < 1.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    return max(0.0, 1.0 - iteration / max_iterations) ** power


def train_final(
    network: StemDecoderNetwork,
    data: SearchData,
    config: TrainConfig,
    *,
    epochs: int,
    device: torch.device,
    lr: float = FINAL_LR,
    stem_lr: float | None = None,
    momentum: float = FINAL_MOMENTUM,
    weight_decay: float = FINAL_WEIGHT_DECAY,
    power: float = FINAL_POWER,
    seed: int = 0,
    omit_classes: Sequence[int] = (),
) -> TrainResult:
    """Trains ``network`` end to end with the papers' longer schedule and evaluates it.

    The schedule of the papers' longer / full training (WACV 2020 Sect. 5; CVPR 2019
    appendix): SGD with momentum over the whole network from the first step, the learning
    rate annealed per iteration by the 'poly' rule ``lr * (1 - it / max_it) ** power``
    (:func:`poly_lr_factor`), on the augmented meta-train view for ``epochs`` epochs. The
    loss is the search loss (:func:`_loss`: cross-entropy at the output stride plus
    ``config.auxiliary_weight`` x each auxiliary head); as in CVPR 2019's longer training,
    neither Polyak averaging nor distillation is used. The trained network itself is
    evaluated on the meta-val images, like search stage 2, so the two rewards compare.

    Args:
        network: A freshly built network whose stem holds the initialised weights.
        data: Search data (its augmented meta-train view and meta-val images are used).
        config: ``batch_size``, ``auxiliary_weight`` and ``max_grad_norm`` are used.
        epochs: Epochs over the meta-train split (>= 1).
        device: Where to train.
        lr: Initial learning rate of the generated part (WACV 2020: 5e-2).
        stem_lr: Initial learning rate of the stem (default: ``lr``, as WACV 2020 trains
            the whole network with one rate).
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay (WACV 2020: 1e-5).
        power: Exponent of the 'poly' schedule (0.9).
        seed: Seed of the batch order and augmentation.
        omit_classes: Classes left out of the metrics.

    Returns:
        ``stage_metrics[2]``: metrics of the trained network on the meta-val images.

    Raises:
        ValueError: ``epochs`` < 1 or a learning rate <= 0.
        TrialFailed: Non-finite loss or out of memory.

    Example:
        >>> result = train_final(net, data, TrainConfig(batch_size=8), epochs=1,
        ...                      device=torch.device("cpu"))
        >>> 0.0 <= result.final_metrics["reward"] <= 1.0
        True
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    stem_lr = lr if stem_lr is None else stem_lr
    if lr <= 0 or stem_lr <= 0:
        raise ValueError(f"learning rates must be > 0, got {lr} and {stem_lr}")
    network = network.to(device, memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    groups = [{"params": list(network.decoder.parameters()), "lr": lr}]
    stem_parameters = list(network.stem.parameters())
    if stem_parameters:  # spaces searching the whole network have an empty ImageStem
        groups.append({"params": stem_parameters, "lr": stem_lr})
    optimiser = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                **_fused_options([p for g in groups for p in g["params"]]))
    loader = _augmented_loader(data, config.batch_size, device, generator)
    max_iterations = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda iteration: poly_lr_factor(iteration, max_iterations, power)
    )
    network.train()
    watch = _NonFiniteWatch(stage=2)
    with _failures_as_trial_failed():
        for _ in range(epochs):
            for images, labels in _on_device(loader, device):
                _step(network, images, labels, optimiser, config, watch)
                scheduler.step()
        watch.check()
        metrics = _evaluate(network, data, 2, device, config.batch_size, omit_classes)
    return TrainResult(stage_metrics={2: metrics})

def _stage1(
    network: StemDecoderNetwork,
    data: SearchData,
    config: TrainConfig,
    device: torch.device,
    epochs: int,
    generator: torch.Generator,
    optimiser: torch.optim.Optimizer,
    on_epoch: Callable[[int, nn.Module], bool] | None = None,
) -> nn.Module:
    decoder = network.decoder
    decoder.train()
    averaged = _averaged(decoder, config.polyak_decay[0])
    count = len(data.train_labels)
    watch = _NonFiniteWatch(stage=1)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(count, generator=generator)
        # A trailing batch of one sample is dropped: batch norm cannot train on it.
        for start in range(0, count - (count % config.batch_size == 1), config.batch_size):
            index = order[start : start + config.batch_size]
            features = [_channels_last(f[index].to(device, non_blocking=True).float())
                        for f in data.train_features]
            labels = data.train_labels[index].to(device, non_blocking=True)
            teacher = None
            if data.train_teacher_logits is not None and config.distill_weight > 0:
                teacher = data.train_teacher_logits[index].to(device, non_blocking=True)
            _step(decoder, features, labels, optimiser, config, watch, teacher_logits=teacher)
            averaged.update_parameters(decoder)
        if on_epoch is not None and epoch < epochs:
            watch.check()  # a validation of a non-finite model would be meaningless
            if not on_epoch(epoch, averaged.module):
                break
    watch.check()
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
        _adam
        if config.stem_optimizer == "adam"
        else lambda p, lr, weight_decay: torch.optim.SGD(
            p, lr, momentum=0.9, weight_decay=weight_decay, **_fused_options(p)
        )
    )
    optimisers = [decoder_optimiser]
    stem_parameters = list(network.stem.parameters())
    if stem_parameters:  # spaces searching the whole network have an empty ImageStem
        optimisers.append(
            stem_optimiser(stem_parameters, lr=config.stem_lr, weight_decay=config.weight_decay)
        )
    averaged = _averaged(network, config.polyak_decay[1])
    loader = _augmented_loader(data, config.batch_size, device, generator)
    watch = _NonFiniteWatch(stage=2)
    for _ in range(epochs):
        for images, labels in _on_device(loader, device):
            _step(network, images, labels, optimisers, config, watch)
            averaged.update_parameters(network)
    watch.check()
    return averaged.module



def _on_device(loader: DataLoader, device: torch.device
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's (images, labels) on ``device``; images channels-last."""
    for images, labels in loader:
        yield (_channels_last(images.to(device, non_blocking=True)),
               labels.to(device, non_blocking=True))


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """NHWC strides: the layout cuDNN's and oneDNN's convolutions run fastest in."""
    return tensor.contiguous(memory_format=torch.channels_last)


def _augmented_loader(data: SearchData, batch_size: int, device: torch.device,
                      generator: torch.Generator) -> DataLoader:
    """Batches of the augmented meta-train view (stage 2 and :func:`train_final`)."""
    data.train_dataset.reseed(int(torch.randint(2**31, (1,), generator=generator)))
    return DataLoader(
        data.train_dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(data.train_dataset) > batch_size,
        pin_memory=device.type == "cuda",
    )

def _step(
    model: nn.Module,
    inputs: object,
    labels: torch.Tensor,
    optimisers: torch.optim.Optimizer | list[torch.optim.Optimizer],
    config: TrainConfig,
    watch: _NonFiniteWatch,
    teacher_logits: torch.Tensor | None = None,
) -> None:
    optimisers = optimisers if isinstance(optimisers, list) else [optimisers]
    with _autocast(labels.device):
        outputs = model(inputs)
    loss = _loss(outputs, labels, config, teacher_logits)
    watch.observe(loss)
    for optimiser in optimisers:
        optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm, foreach=True)
    for optimiser in optimisers:
        optimiser.step()


class _NonFiniteWatch:
    """The first non-finite loss of a stage, kept on the device until the stage ends.

    Testing ``isfinite(loss)`` on the host at every step would synchronise a CUDA device
    once per step; the flag is read once, when the stage ends, and the trial fails then
    (the steps in between are wasted, which only matters for trials that fail anyway).
    """

    def __init__(self, stage: int) -> None:
        self.stage = stage
        self._seen: torch.Tensor | None = None
        self._first: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        bad = ~torch.isfinite(loss)
        if self._seen is None:
            self._seen, self._first = bad, loss
        else:
            self._first = torch.where(self._seen, self._first, loss)
            self._seen = self._seen | bad

    def check(self) -> None:
        """Raises TrialFailed (``nan_loss``) when a loss of the stage was not finite."""
        if self._seen is not None and bool(self._seen):
            raise TrialFailed("nan_loss",
                              f"non-finite loss {self._first.item()} in stage {self.stage}")


def _fused_options(parameters: Sequence[torch.Tensor]) -> dict[str, bool]:
    """``fused=True`` where torch has a fused kernel for every parameter (CPU and CUDA
    floats), else ``foreach=True``: one kernel per step instead of one per tensor."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    supported = _get_fused_kernels_supported_devices()
    if parameters and all(p.is_floating_point() and p.device.type in supported
                          for p in parameters):
        return {"fused": True}
    return {"foreach": True}


def _adam(parameters: Sequence[torch.Tensor], lr: float,
          weight_decay: float) -> torch.optim.Adam:
    parameters = list(parameters)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay,
                            **_fused_options(parameters))


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
                           ignore_index=IGNORE_INDEX)
    for extra in auxiliary:
        extra = extra.float()
        loss = loss + config.auxiliary_weight * F.cross_entropy(
            extra, _downsample(labels, extra.shape[-2:]), ignore_index=IGNORE_INDEX
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
    """An EMA of parameters and buffers whose decay warms up to ``decay``.

    ``AveragedModel.update_parameters`` rebuilds its tensor lists, groups them by device
    and reads ``n_averaged`` on the host at every call (a device synchronisation on CUDA);
    with a few small tensors per layer that bookkeeping cost more than the averaging
    itself (measured: ~30% of a search step on CPU). The pairs of tensors are built once
    here and averaged with one ``torch._foreach_lerp_`` per call. Integer buffers (batch
    norm's ``num_batches_tracked``) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, use_buffers=True)
        self._target_decay = decay
        self._updates = 0  # counted on the host: reading n_averaged would sync the device
        self._floats: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._others: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        self._updates += 1
        if self._floats is None:  # the first update copies, like AveragedModel's
            averaged_floats: list[torch.Tensor] = []
            model_floats: list[torch.Tensor] = []
            ours = itertools.chain(self.module.parameters(), self.module.buffers())
            for mine, theirs in zip(ours, itertools.chain(model.parameters(), model.buffers())):
                mine, theirs = mine.detach(), theirs.detach()
                mine.copy_(theirs)
                if mine.is_floating_point():
                    averaged_floats.append(mine)
                    model_floats.append(theirs)
                else:
                    self._others.append((mine, theirs))
            self._floats = (averaged_floats, model_floats)
            self.n_averaged += 1
            return
        decay = min(self._target_decay, self._updates / (9 + self._updates))
        if self._floats[0]:
            torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - decay)
        for mine, theirs in self._others:
            mine.copy_(theirs)


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
    matrix = ConfusionMatrix(data.num_classes, ignore_index=IGNORE_INDEX, device=device)
    count = len(data.val_labels)
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        if stage == 1:
            inputs: object = [_channels_last(f[part].to(device).float())
                              for f in data.val_features]
        else:
            inputs = _channels_last(data.val_images[part].to(device).float())
        with _autocast(device):
            logits = model(inputs)
        matrix.update(logits.float(), data.val_labels[part].to(device).long())
    return matrix.compute(omit_classes=omit_classes)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: SearchData,
    indices: Sequence[int],
    *,
    stage: int,
    device: torch.device,
) -> torch.Tensor:
    """Predicted classes of some meta-val images, as validation computes them.

    Args:
        model: :attr:`TrainResult.evaluated` (or a whole network with ``stage=2``).
        data: The search data.
        indices: Meta-val image indices.
        stage: 1: ``model`` is a decoder over the cached stem features; 2: a whole network
            over the images.
        device: Where to run.

    Returns:
        ``(len(indices), H, W)`` int64 class indices at the labels' size (on the CPU).
    """
    model.eval()
    index = torch.as_tensor(list(indices), dtype=torch.long)
    if stage == 1:
        inputs: object = [f[index.to(f.device)].to(device).float() for f in data.val_features]
    else:
        inputs = data.val_images[index.to(data.val_images.device)].to(device).float()
    with _autocast(device):
        outputs = model(inputs)
    if isinstance(outputs, AuxiliaryOutputs):
        outputs = outputs.logits
    logits = outputs.float()
    if logits.shape[-2:] != data.val_labels.shape[-2:]:
        logits = F.interpolate(logits, size=tuple(data.val_labels.shape[-2:]), mode="bilinear",
                               align_corners=False)
    return logits.argmax(1).cpu()


def evaluated_state_dict(network: StemDecoderNetwork,
                         result: TrainResult) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of ``network`` as it was evaluated (Polyak-averaged weights).

    After stage 2 this is the averaged whole network; after stage 1 the averaged decoder
    on the (frozen) stem. It loads into a network rebuilt with the same architecture.
    Without an averaged copy (no stage ran) it is ``network``'s own state.
    """
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    if result.evaluated is None:
        return state
    if result.last_stage == 1:
        decoder = result.evaluated.state_dict()
        state.update({f"decoder.{k}": v.detach().cpu() for k, v in decoder.items()})
        return state
    return {k: v.detach().cpu() for k, v in result.evaluated.state_dict().items()}


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
