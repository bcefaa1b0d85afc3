"""The network container every search space builds: a stem followed by a generated part.

Both Nekrasov papers split a searched network into a fixed *stem* (the first stages of a
pre-trained classifier) and the *generated part* (everything the search decides). Stage 1
of search-time training trains only the generated part on cached stem features, so the
split is made explicit here: :class:`StemDecoderNetwork` holds ``stem`` and ``decoder``
and ``forward(x) == decoder(stem(x))``. The decoder returns logits at the network's
output stride; callers resize them.

Training code relies only on this container, never on a particular search space.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["AuxiliaryOutputs", "StemDecoderNetwork", "auxiliary_modules", "module_device"]


def module_device(module: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``module``'s first parameter or buffer; ``default`` when it has none.

    Example:
        >>> module_device(nn.Linear(2, 2))
        device(type='cpu')
        >>> module_device(nn.ReLU(), default="meta")
        device(type='meta')
    """
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device(default)


class AuxiliaryOutputs(NamedTuple):
    """What a decoder with auxiliary heads returns in training mode.

    Like torchvision's ``InceptionOutputs``: in eval mode the same decoder returns the
    logits alone, so inference, cost measurement and export never see the heads.

    Attributes:
        logits: The main classifier's logits.
        auxiliary: One logits tensor per auxiliary head (any resolution).
    """

    logits: torch.Tensor
    auxiliary: list[torch.Tensor]


def auxiliary_modules(network: nn.Module) -> list[nn.Module]:
    """The training-only auxiliary heads of ``network`` (a decoder's ``auxiliary``).

    Sizes of the inference network (``params_total``, ``params_generated``) exclude them.
    """
    return [m.auxiliary for m in network.modules() if getattr(m, "auxiliary", None) is not None
            and isinstance(m.auxiliary, nn.Module)]


class StemDecoderNetwork(nn.Module):
    """A segmentation network made of a stem and a generated decoder.

    Args:
        stem: Module mapping an image batch to a list of feature maps.
        decoder: Module mapping that list to logits ``(N, classes, H / os, W / os)``.

    Example:
        >>> from search_spaces import get_space
        >>> space = get_space("template")
        >>> net = space.build(space.random_architecture(seed=0), num_classes=6)
        >>> net.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        6
    """

    def __init__(self, stem: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxiliaryOutputs:
        return self.decoder(self.stem(x))
