"""``nas-optuna export``: a stored trial's architecture as an ONNX or TorchScript model.

Search trials keep no weights, so without ``--weights`` the model carries freshly
initialised weights (seed 0) and the command says so; ``--weights`` loads a
``state_dict`` (``torch.load(weights_only=True)``). A trial of a linked retrain study
whose ``weights`` user attr names an existing file (``retrain --weights-dir``) is exported
with those weights unless ``--weights`` is given. See :mod:`nas_optuna.export` for the
formats and their limits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nas_optuna.cli._common import input_size, load_trial, one_line, space_and_classes
from nas_optuna.exceptions import ConfigError

NAME = "export"
HELP = "export a stored trial's network as ONNX or TorchScript"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True, help="Optuna storage URL holding the trial")
    parser.add_argument("--study-name", required=True, help="study of the trial")
    parser.add_argument("--trial", type=int, required=True, help="trial number")
    parser.add_argument("--format", required=True, help="onnx or torchscript")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    parser.add_argument("--profile", help="space profile (default: the study's), e.g. final")
    parser.add_argument("--num-classes", type=int, help="classes (default: the study's)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size the model is exported at (default 512 1024)")
    parser.add_argument("--weights", metavar="CHECKPOINT",
                        help="a state_dict to load (default: freshly initialised weights)")


def run(args: argparse.Namespace) -> int:
    import torch

    from nas_optuna.export import EXPORT_FORMATS, ONNX_OPSET, export_model

    if args.format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {args.format!r}; choose one of: "
                          f"{', '.join(EXPORT_FORMATS)}")
    size = input_size(args)
    trial, attrs = load_trial(args.storage, args.study_name, args.trial)
    stored = attrs.get("space", {}).get("name")
    if stored is None:
        raise ConfigError(f"study {args.study_name!r} records no search space")
    args.space = stored
    space, num_classes = space_and_classes(args, attrs)
    arch = space.from_params(trial.params)
    torch.manual_seed(0)
    network = space.build(arch, num_classes)
    stored_weights = trial.user_attrs.get("weights")  # retrain --weights-dir records it
    if args.weights is not None:
        _load_weights(network, args.weights)
        weights = f"weights from {args.weights}"
    elif isinstance(stored_weights, str) and Path(stored_weights).is_file():
        _load_weights(network, stored_weights)
        weights = f"the trial's retrained weights from {stored_weights}"
    else:
        weights = ("freshly initialised weights (seed 0; search trials keep no weights): "
                   "pass --weights to export a trained network")
    path = export_model(network, args.output, args.format, size)
    kind = f"ONNX (opset {ONNX_OPSET})" if args.format == "onnx" else "TorchScript (traced)"
    print(f"exported trial {trial.number} of {args.study_name!r} ({space.name}, "
          f"{space.profile}, {num_classes} classes) as {kind} to {path}")
    print(f"  input image N x 3 x {size[0]} x {size[1]} (batch free), output logits; "
          f"{weights}")
    return 0


def _load_weights(network: object, checkpoint: str) -> None:
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"--weights file not found: {checkpoint}") from None
    except Exception as error:  # noqa: BLE001 - unreadable checkpoints become one line
        raise ConfigError(f"cannot read --weights {checkpoint}: {one_line(error)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--weights {checkpoint} is not a state_dict of tensors")
    try:
        network.load_state_dict(state)  # type: ignore[attr-defined]
    except RuntimeError as error:
        raise ConfigError(f"--weights {checkpoint} does not fit the trial's network: "
                          f"{one_line(error)[:300]}") from None
