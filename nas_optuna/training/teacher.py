"""Loading a knowledge-distillation teacher (CVPR 2019: 0.3 x MSE between raw logits).

The teacher is any architecture of any registered search space — typically the ``smp``
space's hand-designed baselines, or a searched architecture retrained for longer — with
weights from a checkpoint. Checkpoints are data: they are read with
``torch.load(weights_only=True)``, never unpickled as code.

A checkpoint is a ``state_dict`` (or a dict holding one under ``"state_dict"`` or
``"model"``) of either the whole network nas-optuna builds for the architecture, or of
any one of its submodules — e.g. the plain segmentation-models-pytorch model inside the
``smp`` space's decoder, so that a model trained with smp directly can teach.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_optuna.exceptions import ConfigError

__all__ = ["load_teacher"]


def load_teacher(
    space: Any, arch: Any, num_classes: int, checkpoint: str | Path
) -> tuple[nn.Module, str]:
    """Builds ``arch`` of ``space`` and loads the checkpoint's weights into it.

    Args:
        space: A :class:`~search_spaces.SearchSpace`.
        arch: An architecture of that space.
        num_classes: Classes of the search dataset (the teacher must predict the same ones).
        checkpoint: Path of the weights.

    Returns:
        The teacher in eval mode, and an identifier (space, architecture and a hash of the
        checkpoint's bytes) for cache keys.

    Raises:
        ConfigError: The file is missing, not a state dict, or does not fit the network.

    Example:
        >>> teacher, teacher_id = load_teacher(space, arch, 6, "teacher.pt")
        >>> teacher(torch.zeros(1, 3, 64, 64)).shape[1]
        6
    """
    path = Path(checkpoint)
    try:
        payload = path.read_bytes()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"teacher checkpoint not found: {path}") from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is one clear error
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"cannot read teacher checkpoint {path}: {first}") from None
    state = _state_dict(state, path)
    network = space.build(arch, num_classes)
    target = _matching_module(network, state)
    if target is None:
        expected = next(iter(network.state_dict()))
        raise ConfigError(
            f"teacher checkpoint {path} does not fit {space.name} architecture "
            f"{space.describe(arch)!r} (first key {next(iter(state))!r}, expected e.g. "
            f"{expected!r})"
        )
    try:
        target.load_state_dict(state)
    except RuntimeError as error:  # same keys, other shapes (e.g. another class count)
        raise ConfigError(
            f"teacher checkpoint {path} does not fit: {str(error).splitlines()[-1].strip()}"
        ) from None
    network.eval()
    digest = hashlib.sha256(payload).hexdigest()[:16]
    return network, f"{space.name}:{space.describe(arch)}:{digest}"


def _state_dict(state: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ConfigError(f"teacher checkpoint {path} holds no state_dict of tensors")
    return state


def _matching_module(network: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module | None:
    """The network or the submodule whose state-dict keys are exactly the checkpoint's."""
    keys = set(state)
    for module in network.modules():
        if set(module.state_dict()) == keys:
            return module
    return None
