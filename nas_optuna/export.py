"""Export: a searched architecture as a deployable inference model (ONNX or TorchScript).

:func:`export_model` writes the network as it runs at inference: in eval mode, with its
training-only auxiliary heads removed (``decoder.auxiliary``, see
:class:`~nas_optuna.networks.AuxiliaryOutputs`), on the CPU, in float32. The file maps an
image batch ``(N, 3, H, W)``, normalised like the training images, to logits
``(N, classes, H / os, W / os)`` at the network's output stride (resize them to the image
size, as validation does).

Formats and the choices made (torch 2.15):

* ``onnx``: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based exporter
  (the default since torch 2.9; the TorchScript-based one is deprecated), opset
  :data:`ONNX_OPSET` = 18 (its default, run by onnxruntime >= 1.14). Input ``image``,
  output ``logits``; the batch axis is dynamic, the spatial size is the one exported
  (``input_size``): several decoders pick resize targets from the feature sizes, which
  the exporter fixes. Weights are inside the one ``.onnx`` file (no external data; the
  largest networks here are far below ONNX's 2 GB limit). Needs the ``export`` extra
  (``onnx``, ``onnxscript``).
* ``torchscript``: ``torch.jit.trace`` (``torch.jit.script`` fails on every space: the
  decoders use lambdas and ``Sequence`` annotations that TorchScript cannot compile; a
  trace works for all five). Any batch size runs; the trace is exact at ``input_size`` and
  only promised there, for the same reason as ONNX. Load with ``torch.jit.load``.
  ``torch.jit`` is deprecated upstream in favour of ``torch.export``; its warnings are
  silenced here, and the format stays because C++/mobile runtimes still load it.

Files are written to a temporary name in the target folder and renamed, so a reader never
sees half a file.

Example:
    >>> from search_spaces import get_space
    >>> space = get_space("template")
    >>> net = space.build(space.random_architecture(seed=0), num_classes=19)
    >>> export_model(net, "arch.onnx", "onnx", (512, 1024))  # doctest: +SKIP
    PosixPath('arch.onnx')
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from nas_optuna._files import atomic_path
from nas_optuna.exceptions import ConfigError

__all__ = ["EXPORT_FORMATS", "ONNX_OPSET", "export_model", "inference_network"]

#: Formats :func:`export_model` writes.
EXPORT_FORMATS = ("onnx", "torchscript")

#: The ONNX opset of exported models.
ONNX_OPSET = 18

#: Batch size of the example input (2: a batch of 1 would let torch.export specialise it).
_EXAMPLE_BATCH = 2


def inference_network(network: nn.Module) -> nn.Module:
    """A CPU, float32, eval-mode copy of ``network`` without its auxiliary heads."""
    model = copy.deepcopy(network).cpu().float().eval()
    for module in model.modules():
        if isinstance(getattr(module, "auxiliary", None), nn.Module):
            module.auxiliary = None  # training-only heads: not part of the deployed model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def export_model(network: nn.Module, path: str | os.PathLike, format: str,
                 input_size: tuple[int, int]) -> Path:
    """Writes ``network`` (as :func:`inference_network` makes it) to ``path``.

    Args:
        network: A segmentation network (e.g. ``space.build(arch, num_classes)``); it is
            copied, not changed.
        path: The file to write (replaced atomically).
        format: ``onnx`` or ``torchscript``.
        input_size: ``(H, W)`` of the example input the export is made at.

    Returns:
        ``path``.

    Raises:
        ConfigError: Unknown format, bad size, missing ONNX packages, or an export error.
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: "
                          f"{', '.join(EXPORT_FORMATS)}")
    height, width = (int(s) for s in input_size)
    if min(height, width) < 1:
        raise ConfigError(f"input size must be positive, got {height} {width}")
    model = inference_network(network)
    example = torch.randn(_EXAMPLE_BATCH, 3, height, width,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            output = model(example)
        except RuntimeError as error:
            raise ConfigError(f"the network cannot run on {height}x{width} inputs: "
                              f"{str(error).splitlines()[0]}") from None
    if not isinstance(output, torch.Tensor):
        raise ConfigError(f"the network returns {type(output).__name__} in eval mode, "
                          f"not a logits tensor")
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"output folder {str(target.parent)!r} does not exist")
    write = _write_onnx if format == "onnx" else _write_torchscript
    with atomic_path(target) as temporary:
        write(model, example, temporary)
    return target


def _write_onnx(model: nn.Module, example: torch.Tensor, path: str) -> None:
    try:
        import onnx  # noqa: F401 - both are needed by torch's exporter
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs the onnx and onnxscript packages: "
                          "pip install 'nas-optuna[export]'") from None
    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                dynamic_shapes=({0: batch},), opset_version=ONNX_OPSET, verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - exporter errors become one line
        raise ConfigError(f"ONNX export failed: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from None
    program.save(path, external_data=False)


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: str) -> None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # FutureWarning: torch.jit is deprecated; TracerWarning: shape-dependent Python
            # branches are fixed at the traced size (documented above).
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
    except Exception as error:  # noqa: BLE001 - tracer errors become one line
        raise ConfigError(f"TorchScript export failed: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced, path)
