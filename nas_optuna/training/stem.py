"""Initialising the stem: ImageNet weights when they can be had, else a short warm-up.

Both papers start from an ImageNet-pre-trained MobileNet-v2. This network cannot download
them, so ``stem_weights = "auto"`` (the default) loads segmentation-models-pytorch's
ImageNet weights from the local cache or the hub when possible, and otherwise trains the
stem once on the search dataset (*warm-up*): the stem plus a per-output 1x1 classifier,
whose upsampled logits are summed, trained with Adam (lr 1e-3) and cross-entropy for
``warmup_epochs`` epochs on augmented meta-train images. The result is cached with the
stem features, and the study records which of the two happened (``stem_weights``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nas_optuna.exceptions import ConfigError
from nas_optuna.labels import IGNORE_INDEX
from nas_optuna.stems import EncoderStem, load_imagenet_weights

__all__ = ["initialise_stem"]



def initialise_stem(
    stem: nn.Module,
    dataset: Dataset,
    *,
    mode: str,
    num_classes: int,
    warmup_epochs: int,
    batch_size: int,
    device: torch.device | str,
    seed: int = 0,
    lr: float = 1e-3,
) -> str:
    """Loads or trains the stem's weights in place.

    Args:
        stem: The stem (a list-of-features module), already on ``device``.
        dataset: Augmented meta-train images for the warm-up.
        mode: ``auto``, ``imagenet`` (fail if unavailable), ``warmup`` or ``random``.
        num_classes: Classes of the warm-up classifier.
        warmup_epochs: Warm-up epochs (0 leaves the stem random).
        batch_size: Warm-up batch size.
        device: Where to train.
        seed: Seed of the warm-up's shuffling and classifier initialisation.
        lr: Warm-up learning rate.

    Returns:
        ``imagenet``, ``warmup``, ``random``, or ``none`` for a stem without parameters.

    Raises:
        ConfigError: ``mode == "imagenet"`` and no weights can be had.
    """
    if not any(True for _ in stem.parameters()):
        return "none"
    if mode in ("auto", "imagenet") and isinstance(stem, EncoderStem):
        if load_imagenet_weights(stem):
            return "imagenet"
        if mode == "imagenet":
            raise ConfigError(
                "ImageNet weights for the stem are neither cached nor downloadable; "
                "use [train] stem_weights = 'auto' or 'warmup'"
            )
    if mode == "random" or warmup_epochs == 0:
        return "random"
    _warm_up(
        stem,
        dataset,
        num_classes=num_classes,
        epochs=warmup_epochs,
        batch_size=batch_size,
        device=torch.device(device),
        seed=seed,
        lr=lr,
    )
    return "warmup"


def _warm_up(
    stem: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    lr: float,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    reseed = getattr(dataset, "reseed", None)
    if reseed is not None:  # the warm-up, and so the cached stem, is reproducible
        reseed(seed)
    with torch.no_grad():
        probe = stem(dataset[0][0][None].to(device))
    torch.manual_seed(seed)
    heads = nn.ModuleList(nn.Conv2d(f.shape[1], num_classes, 1) for f in probe).to(device)
    optimiser = torch.optim.Adam([*stem.parameters(), *heads.parameters()], lr=lr)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(dataset) > batch_size,
    )
    stem.train()
    for _ in range(epochs):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            features = stem(images)
            size = features[0].shape[-2:]
            logits = sum(
                F.interpolate(head(f), size=size, mode="bilinear", align_corners=False)
                for head, f in zip(heads, features)
            )
            targets = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
            loss = F.cross_entropy(logits, targets[:, 0].long(), ignore_index=IGNORE_INDEX)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    stem.eval()
