"""Pre-trained stems (encoder prefixes) shared by the search spaces.

The stems come from segmentation-models-pytorch encoders, so ImageNet weights load
through smp's own weight registry (``encoder_weights="imagenet"``, fetched from its
Hugging Face hub repository and cached by ``huggingface_hub``). This network has no
internet, so :func:`load_imagenet_weights` first looks in the local cache and only then
tries a download, and the caller falls back to a short supervised warm-up (see
:mod:`nas_optuna.training.stem`) when neither works.

A stem returns a list of feature maps; ``out_channels`` and ``reductions`` describe them.
Unused encoder stages are removed so that parameter counts describe the real network:
smp's MobileNet-v2 prefix up to 1/8 has 55,488 parameters (the authors' layout, with an
extra 1x1 conv in the first block, had 56,576; the generated parts are unaffected).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "EncoderStem",
    "ImageStem",
    "mobilenet_v2_stem",
    "load_imagenet_weights",
    "STEM_WEIGHTS",
]

#: How a stem was initialised: ``imagenet`` (pre-trained), ``warmup`` (trained on the
#: search dataset because no ImageNet weights could be had), ``random`` (tests) or
#: ``none`` (a stem without parameters, see :class:`ImageStem`).
STEM_WEIGHTS = ("imagenet", "warmup", "random", "none")

# Index of the MobileNet-v2 ``features`` layer that ends each output stage of smp's encoder.
_MOBILENET_V2_STAGE_ENDS = {2: 1, 4: 3, 8: 6, 16: 13, 32: 18}
_MOBILENET_V2_CHANNELS = {2: 16, 4: 24, 8: 32, 16: 96, 32: 320}


class EncoderStem(nn.Module):
    """The first layers of MobileNet-v2, returning features at chosen reductions.

    Args:
        reductions: Output reductions relative to the input, ascending, e.g. ``(4, 8)``.
        drop_last_conv: Drop MobileNet-v2's final 1x1 conv to 1280 channels (the CVPR 2019
            encoder stops at 320 channels).
    """

    def __init__(self, reductions: Sequence[int], *, drop_last_conv: bool = True) -> None:
        super().__init__()
        # Imported lazily: smp import is slow and not needed to describe an architecture.
        import segmentation_models_pytorch as smp

        reductions = tuple(sorted(reductions))
        unknown = [r for r in reductions if r not in _MOBILENET_V2_STAGE_ENDS]
        if unknown:
            raise ValueError(f"MobileNet-v2 has no output at reductions {unknown}")
        encoder = smp.encoders.get_encoder("mobilenet_v2", in_channels=3, depth=5, weights=None)
        self._full_state_keys = set(encoder.state_dict())
        last = max(_MOBILENET_V2_STAGE_ENDS[r] for r in reductions)
        if last == 18 and drop_last_conv:
            last = 17
        self.features = nn.Sequential(*list(encoder.features.children())[: last + 1])
        self._taps = {_MOBILENET_V2_STAGE_ENDS[r] if r != 32 else last: r for r in reductions}
        self.reductions = reductions
        self.out_channels = tuple(_MOBILENET_V2_CHANNELS[r] for r in reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                outputs.append(x)
        return outputs


class ImageStem(nn.Module):
    """The stem of spaces that search the whole network (CAS, RSPNet, smp): no layers.

    It returns the image itself as the one feature map, so stage 1 of search-time training
    trains the whole generated network on the cached, un-augmented images and stage 2 on
    live augmentation.

    Example:
        >>> [f.shape for f in ImageStem()(torch.zeros(1, 3, 8, 8))]
        [torch.Size([1, 3, 8, 8])]
    """

    out_channels = (3,)
    reductions = (1,)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


def mobilenet_v2_stem(reductions: Sequence[int]) -> EncoderStem:
    """Builds a randomly initialised MobileNet-v2 stem.

    Example:
        >>> stem = mobilenet_v2_stem((4, 8))
        >>> [f.shape[1] for f in stem(torch.zeros(1, 3, 32, 32))]
        [24, 32]
    """
    return EncoderStem(reductions)


def _hub_reachable(host: str = "huggingface.co") -> bool:
    # huggingface_hub retries an unreachable hub for ~20 s; a failed DNS lookup answers
    # at once on an offline machine, so ask it first.
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def load_imagenet_weights(stem: EncoderStem, *, allow_download: bool = True) -> bool:
    """Loads smp's ImageNet weights for MobileNet-v2 into ``stem``.

    Looks in the local Hugging Face cache first; downloads only when ``allow_download``
    and the hub is reachable.

    Returns:
        True when weights were loaded, False when none could be had.
    """
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    path = None
    for local_only in (True, False):
        if not local_only and not (allow_download and _hub_reachable()):
            break
        try:
            path = hf_hub_download(
                settings["repo_id"],
                filename="model.safetensors",
                revision=settings["revision"],
                local_files_only=local_only,
            )
            break
        except Exception:  # noqa: BLE001 - any hub/cache failure means "not available"
            continue
    if path is None:
        return False
    state = load_file(path)
    prefix = "features."
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, _ = stem.features.load_state_dict(own, strict=False)
    if missing:
        raise RuntimeError(f"ImageNet weights lack {len(missing)} stem tensors, e.g. {missing[0]}")
    return True
