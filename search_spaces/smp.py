"""The smp baseline space: segmentation-models-pytorch architectures on light encoders.

A hyperparameter-style baseline: a trial picks a segmentation-models-pytorch (smp 0.6)
*architecture*, an ImageNet *encoder* and a *decoder width*, and the whole smp model is
the searched network. Because the encoder is itself a choice, it cannot be a fixed stem:
:meth:`SmpSpace.build_stem` returns :class:`~nas_optuna.stems.ImageStem` (no layers, the
image is the one feature map) and the decoder is the whole smp model, so the
``params_generated`` of a trial counts the whole network, encoder included. The same
models serve as knowledge-distillation teachers (:meth:`SmpSpace.build_model`).

Parameter names (stable; analysis and stored studies rely on them)::

    architecture              categorical over the profile's architectures
    encoder                   categorical over the profile's encoders
    {arch}_decoder_width      categorical, only for the chosen architecture, where
                              {arch} is the lower-cased name: unet, fpn, deeplabv3plus,
                              pspnet, upernet, unetplusplus

The width is conditional (define-by-run) because each architecture has its own width
scale, and Optuna fixes a categorical's choices per name.

What the width sets (``w``; smp's defaults are ``w`` = 256, PSPNet 512):

* Unet, UnetPlusPlus: ``decoder_channels = (w, w/2, w/4, w/8, w/16)``, each at least 16
  (smp's default ``(256, 128, 64, 32, 16)`` is ``w = 256``).
* FPN: ``decoder_pyramid_channels = w``, ``decoder_segmentation_channels = max(w/2, 64)``:
  its group norm has 32 groups and, on the 1 x 1 map of a 32 x 32 input at batch 1, needs
  two channels per group.
* DeepLabV3Plus, UPerNet: ``decoder_channels = w``.
* PSPNet: ``psp_out_channels = w``.

Everything else is smp's default (DeepLabV3Plus: encoder output stride 16, atrous rates
12/24/36; PSPNet: encoder depth 3, i.e. 1/8; dropouts as in smp).

Profiles (the final choices contain the search choices, so the params of a searched trial
rebuild under ``final``):

* ``search`` — fast on a CPU: architectures Unet, FPN, DeepLabV3Plus, PSPNet, UPerNet;
  encoders mobilenet_v2, efficientnet-b0, resnet18; widths 32/64/128 (PSPNet 64/128/256).
  45 architectures; each trains a 64 x 64, batch-2 step in at most ~0.12 s on one CPU
  thread (median ~65 ms; ``docs/spaces/smp.md``).
* ``final`` — adds smp's default widths (256; PSPNet 512), the architecture UnetPlusPlus
  and the encoders mobileone_s0 and resnet34 (teacher grade). 120 architectures.

Left out (measured with smp 0.6 at 64 x 64): MAnet (46.9M parameters on mobilenet_v2,
0.47 s per training step), PAN (its feature-pyramid attention pools the 1/16 map by 8 and
fails below 128 x 128 inputs), Linknet (smp gives it no width argument), DeepLabV3 (dilated
to 1/8, DeepLabV3Plus covers it), and the transformer-only Segformer/DPT.

Choices made here:

* Any input size: smp models need sides divisible by their encoder's output stride (32;
  16 for DeepLabV3Plus, 8 for PSPNet). The image is padded at the bottom and right up to
  that multiple (``reflect``; ``replicate`` when a side is shorter than its padding) and the
  logits are cropped back, so the output is ``N x classes x H x W`` for every ``H, W`` and
  ``output_stride`` is 1.
* Encoder weights (``encoder_weights`` option): ``auto`` loads smp's ImageNet weights when
  they are in the local Hugging Face cache or can be downloaded (a DNS check first, so an
  offline machine answers at once; the answer is remembered per process), else keeps the
  random initialisation; ``imagenet`` requires them (:class:`ConfigError` otherwise);
  ``none`` never loads them. The built decoder records what happened in
  ``encoder_weights_loaded`` (``imagenet`` or ``random``).
* Batch norm: DeepLabV3Plus's image pooling and UPerNet's pyramid pooling normalise
  1 x 1 maps at every input size, and every architecture's 1/32 maps are 1 x 1 for sides
  of 32, so, as for any smp model, a training batch needs at least two images (the trainer
  drops a trailing batch of one). Evaluation at batch 1 works.
* Size: every (architecture, encoder, width) triple is a distinct network; no symmetries.

Genotype format: ``[architecture, encoder, width]``, e.g. ``["FPN", "mobilenet_v2", 128]``.

Example:
    >>> from search_spaces.smp import SmpSpace
    >>> space = SmpSpace("search", encoder_weights="none")
    >>> arch = space.from_genotype(["FPN", "mobilenet_v2", 128])
    >>> space.to_params(arch)
    {'architecture': 'FPN', 'encoder': 'mobilenet_v2', 'fpn_decoder_width': 128}
    >>> net = space.build_model(arch, num_classes=6)
    >>> net(torch.zeros(2, 3, 45, 61)).shape
    torch.Size([2, 6, 45, 61])
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import optuna
import torch
import torch.nn.functional as F
from torch import nn

from nas_optuna.diagram import ArchitectureGraph, GraphBuilder
from nas_optuna.exceptions import ConfigError
from nas_optuna.networks import StemDecoderNetwork
from nas_optuna.stems import ImageStem, _hub_reachable
from search_spaces._base import SearchSpace

__all__ = [
    "ARCHITECTURES",
    "ENCODERS",
    "ENCODER_WEIGHTS",
    "SmpArchitecture",
    "SmpDecoder",
    "SmpSpace",
    "width_param",
]

_LOG = logging.getLogger(__name__)


def _halving(width: int) -> tuple[int, ...]:
    return tuple(max(width >> i, 16) for i in range(5))


#: Architecture -> how the searched width ``w`` becomes the smp class's keyword arguments.
_WIDTH_KWARGS: dict[str, Callable[[int], dict[str, Any]]] = {
    "Unet": lambda w: {"decoder_channels": _halving(w)},
    "FPN": lambda w: {
        "decoder_pyramid_channels": w,
        "decoder_segmentation_channels": max(w // 2, 64),
    },
    "DeepLabV3Plus": lambda w: {"decoder_channels": w},
    "PSPNet": lambda w: {"psp_out_channels": w},
    "UPerNet": lambda w: {"decoder_channels": w},
    "UnetPlusPlus": lambda w: {"decoder_channels": _halving(w)},
}

#: Architecture -> (reductions of the encoder features its decoder reads, upsampling of
#: its segmentation head, side multiple the padding reaches), as in smp 0.6: Unet reads
#: ``features[1:]``, FPN and UPerNet 1/4 to 1/32, DeepLabV3Plus 1/4 and its dilated
#: (output stride 16) last stage, PSPNet the 1/8 output of a depth-3 encoder.
_DIAGRAM: dict[str, tuple[tuple[int, ...], int, int]] = {
    "Unet": ((2, 4, 8, 16, 32), 1, 32),
    "FPN": ((4, 8, 16, 32), 4, 32),
    "DeepLabV3Plus": ((4, 16), 4, 16),
    "PSPNet": ((8,), 8, 8),
    "UPerNet": ((4, 8, 16, 32), 4, 32),
    "UnetPlusPlus": ((2, 4, 8, 16, 32), 1, 32),
}

#: Every architecture the space knows (smp class names), in the order of the choices.
ARCHITECTURES: tuple[str, ...] = tuple(_WIDTH_KWARGS)
#: Every encoder the space knows (smp encoder names), in the order of the choices.
ENCODERS: tuple[str, ...] = (
    "mobilenet_v2",
    "efficientnet-b0",
    "resnet18",
    "mobileone_s0",
    "resnet34",
)
#: Accepted values of the ``encoder_weights`` option.
ENCODER_WEIGHTS: tuple[str, ...] = ("auto", "imagenet", "none")

_SEARCH_WIDTHS: dict[str, tuple[int, ...]] = {
    "Unet": (32, 64, 128),
    "FPN": (32, 64, 128),
    "DeepLabV3Plus": (32, 64, 128),
    "PSPNet": (64, 128, 256),
    "UPerNet": (32, 64, 128),
}
_FINAL_WIDTHS: dict[str, tuple[int, ...]] = {
    "Unet": (32, 64, 128, 256),
    "FPN": (32, 64, 128, 256),
    "DeepLabV3Plus": (32, 64, 128, 256),
    "PSPNet": (64, 128, 256, 512),
    "UPerNet": (32, 64, 128, 256),
    "UnetPlusPlus": (32, 64, 128, 256),
}


def width_param(architecture: str) -> str:
    """The name of the width parameter of ``architecture``.

    Example:
        >>> width_param("DeepLabV3Plus")
        'deeplabv3plus_decoder_width'
    """
    return f"{architecture.lower()}_decoder_width"


@dataclasses.dataclass(frozen=True)
class SmpArchitecture:
    """A frozen smp-space architecture.

    Attributes:
        architecture: smp class name, e.g. ``"FPN"``.
        encoder: smp encoder name, e.g. ``"mobilenet_v2"``.
        width: Decoder width (see the module docstring for what it sets).
    """

    architecture: str
    encoder: str
    width: int


class SmpDecoder(nn.Module):
    """A whole smp model behind the decoder interface: ``[image]`` in, full-size logits out.

    Pads the image at the bottom and right to a multiple of ``pad_multiple`` and crops the
    logits back, so any input size works.

    Attributes:
        model: The smp model.
        pad_multiple: The side multiple the model needs (its encoder's output stride).
        encoder_weights_loaded: ``imagenet`` or ``random``: how the encoder was initialised.
        output_stride: Always 1 (logits at input resolution).
    """

    output_stride = 1

    def __init__(self, model: nn.Module, *, pad_multiple: int, encoder_weights_loaded: str):
        super().__init__()
        self.model = model
        self.pad_multiple = pad_multiple
        self.encoder_weights_loaded = encoder_weights_loaded

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        image = features[0]
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % self.pad_multiple, -width % self.pad_multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
        logits = self.model(image)
        return logits[..., :height, :width]


class SmpSpace(SearchSpace[SmpArchitecture]):
    """segmentation-models-pytorch architectures and encoders (registered as ``smp``).

    Args:
        profile: ``"search"`` or ``"final"`` (see the module docstring).
        encoder_weights: ``"auto"``, ``"imagenet"`` or ``"none"`` (see the module docstring).
        architectures: Restrict (or, for names outside the profile, extend) the
            architecture choices; kept in the canonical order of :data:`ARCHITECTURES`.
        encoders: The same for the encoders (:data:`ENCODERS`).

    Raises:
        ConfigError: An unknown profile, weights mode, architecture or encoder name.

    Example:
        >>> space = SmpSpace(encoders=["mobilenet_v2"], encoder_weights="none")
        >>> space.size()
        15
        >>> arch = space.random_architecture(seed=0)
        >>> space.build(arch, num_classes=3)(torch.zeros(2, 3, 40, 50)).shape
        torch.Size([2, 3, 40, 50])
    """

    name: ClassVar[str] = "smp"
    stem_id: ClassVar[str] = "image"
    summary: ClassVar[str] = (
        "segmentation-models-pytorch baseline: architecture, light ImageNet encoder and "
        "decoder width (whole model searched)"
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "search": {
            "architectures": ("Unet", "FPN", "DeepLabV3Plus", "PSPNet", "UPerNet"),
            "encoders": ("mobilenet_v2", "efficientnet-b0", "resnet18"),
            "widths": _SEARCH_WIDTHS,
        },
        "final": {
            "architectures": ARCHITECTURES,
            "encoders": ENCODERS,
            "widths": _FINAL_WIDTHS,
        },
    }

    def __init__(
        self,
        profile: str = "search",
        *,
        encoder_weights: str = "auto",
        architectures: Sequence[str] | None = None,
        encoders: Sequence[str] | None = None,
    ) -> None:
        super().__init__(profile)
        if encoder_weights not in ENCODER_WEIGHTS:
            raise ConfigError(
                f"smp space: unknown encoder_weights {encoder_weights!r}; "
                f"choose one of: {', '.join(ENCODER_WEIGHTS)}"
            )
        self.encoder_weights = encoder_weights
        self.architectures = _choices(
            "architecture", architectures, ARCHITECTURES, self.settings["architectures"]
        )
        self.encoders = _choices("encoder", encoders, ENCODERS, self.settings["encoders"])
        widths: Mapping[str, tuple[int, ...]] = self.settings["widths"]
        # An architecture outside the profile gets the final profile's widths.
        self.widths = {a: widths.get(a, _FINAL_WIDTHS[a]) for a in self.architectures}

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "encoder_weights": self.encoder_weights,
            "architectures": list(self.architectures),
            "encoders": list(self.encoders),
        }

    # --- define-by-run ---------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> SmpArchitecture:
        architecture = trial.suggest_categorical("architecture", self.architectures)
        encoder = trial.suggest_categorical("encoder", self.encoders)
        width = trial.suggest_categorical(width_param(architecture), self.widths[architecture])
        return SmpArchitecture(str(architecture), str(encoder), int(width))

    def to_params(self, arch: SmpArchitecture) -> dict[str, Any]:
        return {
            "architecture": arch.architecture,
            "encoder": arch.encoder,
            width_param(arch.architecture): arch.width,
        }

    def size(self) -> int:
        return sum(len(self.encoders) * len(self.widths[a]) for a in self.architectures)

    # --- genotypes -------------------------------------------------------------------
    def from_genotype(self, genotype: Any) -> SmpArchitecture:
        """Converts ``[architecture, encoder, width]``, e.g. ``["Unet", "resnet18", 64]``.

        Raises:
            ConfigError: Not such a list, or a value is not a choice of this space.
        """
        if (
            not isinstance(genotype, (list, tuple))
            or len(genotype) != 3
            or not isinstance(genotype[0], str)
            or not isinstance(genotype[1], str)
            or isinstance(genotype[2], bool)
            or not isinstance(genotype[2], int)
        ):
            raise ConfigError(f"not an smp genotype [architecture, encoder, width]: {genotype!r}")
        architecture, encoder, width = genotype
        for kind, value, choices in (
            ("architecture", architecture, self.architectures),
            ("encoder", encoder, self.encoders),
            ("width", width, self.widths.get(architecture, ())),
        ):
            if value not in choices:
                listed = ", ".join(str(c) for c in choices)
                raise ConfigError(
                    f"smp genotype: {kind} {value!r} is not a choice; choose one of: {listed}"
                )
        return self.from_params(self.to_params(SmpArchitecture(architecture, encoder, width)))

    def to_genotype(self, arch: SmpArchitecture) -> list:
        return [arch.architecture, arch.encoder, arch.width]

    def describe(self, arch: SmpArchitecture) -> str:
        return f"{arch.architecture}({arch.encoder}, width {arch.width})"

    # --- networks --------------------------------------------------------------------
    def build_stem(self) -> nn.Module:
        return ImageStem()

    def build_decoder(self, arch: SmpArchitecture, num_classes: int) -> SmpDecoder:
        """The whole smp model (encoder included) behind the decoder interface.

        Raises:
            ConfigError: ``encoder_weights="imagenet"`` and the weights cannot be had.
        """
        import segmentation_models_pytorch as smp

        if arch.architecture not in _WIDTH_KWARGS or arch.encoder not in ENCODERS:
            raise ConfigError(f"not an smp-space architecture: {arch!r}")
        model_class = getattr(smp, arch.architecture)
        model = model_class(
            encoder_name=arch.encoder,
            encoder_weights=None,
            classes=num_classes,
            **_WIDTH_KWARGS[arch.architecture](arch.width),
        )
        loaded = "random"
        if self.encoder_weights != "none":
            path = _imagenet_weights_path(arch.encoder)
            if path is not None:
                _load_encoder_weights(model.encoder, path)
                loaded = "imagenet"
            elif self.encoder_weights == "imagenet":
                raise ConfigError(
                    f"smp space: no ImageNet weights for encoder {arch.encoder!r} in the "
                    "local Hugging Face cache and the hub is unreachable; "
                    "use encoder_weights = 'auto' or 'none'"
                )
        return SmpDecoder(
            model, pad_multiple=int(model.encoder.output_stride), encoder_weights_loaded=loaded
        )

    def build_model(self, arch: SmpArchitecture, num_classes: int) -> StemDecoderNetwork:
        """The whole network as one module (image in, full-size logits out), e.g. a teacher.

        Example:
            >>> space = SmpSpace("final")
            >>> teacher = space.build_model(
            ...     space.from_genotype(["DeepLabV3Plus", "resnet34", 256]), num_classes=19
            ... )
            >>> teacher(torch.zeros(2, 3, 100, 100)).shape
            torch.Size([2, 19, 100, 100])
            >>> teacher.decoder.encoder_weights_loaded  # 'imagenet' where the hub or cache has them
            'random'
        """
        return self.build(arch, num_classes)

    # --- pictures --------------------------------------------------------------------
    def graph(self, arch: SmpArchitecture) -> ArchitectureGraph:
        """The smp pipeline: padding, encoder, the feature levels the decoder reads, the
        decoder family with its width, the segmentation head and the cropped logits.

        Example:
            >>> space = SmpSpace("search", encoder_weights="none")
            >>> graph = space.graph(space.from_genotype(["FPN", "mobilenet_v2", 128]))
            >>> [node.label for node in graph.nodes][:3]
            ['image', 'pad', 'mobilenet_v2']
        """
        levels, upsampling, multiple = _DIAGRAM[arch.architecture]
        builder = GraphBuilder()
        builder.add("image", "image", "input")
        builder.add(
            "pad", "pad", "op", detail=f"sides to a multiple of {multiple}", inputs=["image"]
        )
        builder.add("encoder", arch.encoder, "stem", detail="encoder", inputs=["pad"])
        dilated = 16 if arch.architecture == "DeepLabV3Plus" else None
        features = [
            builder.add(
                f"features{reduction}",
                f"1/{reduction}",
                "feature",
                detail="dilated last stage" if reduction == dilated else "",
                inputs=["encoder"],
            )
            for reduction in levels
        ]
        builder.add(
            "decoder", arch.architecture, "cell", detail=f"width {arch.width}", inputs=features
        )
        builder.add(
            "head",
            "segmentation head",
            "head",
            detail=f"conv, upsample x{upsampling}" if upsampling > 1 else "conv",
            inputs=["decoder"],
        )
        builder.add("logits", "logits", "output", detail="cropped, 1/1", inputs=["head"])
        return builder.build(f"smp ({self.profile}): {self.describe(arch)}")


def _choices(
    kind: str, requested: Sequence[str] | None, known: tuple[str, ...], default: Sequence[str]
) -> tuple[str, ...]:
    if requested is None:
        return tuple(default)
    if isinstance(requested, str):
        requested = [requested]
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ConfigError(
            f"smp space: unknown {kind} {unknown[0]!r}; choose from: {', '.join(known)}"
        )
    if not requested:
        raise ConfigError(f"smp space: at least one {kind} is needed")
    return tuple(name for name in known if name in requested)


@functools.cache
def _imagenet_weights_path(encoder: str) -> str | None:
    """Local path of smp's ImageNet weights for ``encoder``, or None when none can be had.

    Looks in the local Hugging Face cache first and downloads only when the hub resolves.
    Remembered per process, so a search asks the network at most once per encoder.
    """
    from huggingface_hub import hf_hub_download
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder]["pretrained_settings"].get("imagenet")
    if settings is None:
        return None
    for local_only in (True, False):
        if not local_only and not _hub_reachable():
            break
        try:
            return hf_hub_download(
                settings["repo_id"],
                filename="model.safetensors",
                revision=settings["revision"],
                local_files_only=local_only,
            )
        except Exception:  # noqa: BLE001 - any hub/cache failure means "not available"
            continue
    _LOG.info("no ImageNet weights for smp encoder %s (not cached, hub unreachable)", encoder)
    return None


def _load_encoder_weights(encoder: nn.Module, path: str) -> None:
    # As smp's get_encoder does: the encoder drops its classifier keys, the rest is strict.
    from safetensors.torch import load_file

    encoder.load_state_dict(load_file(path, device="cpu"))
