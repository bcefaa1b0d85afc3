"""Training-step time of search networks by memory layout and precision.

Times one training step (forward, loss, backward, Adam step) of the same architectures
in four settings: fp32 with contiguous (NCHW) tensors, fp32 channels-last (NHWC), bf16
autocast contiguous, bf16 autocast channels-last. It is the measurement behind the
trainer's choice of layout and precision per device (``nas_optuna/training/trainer.py``):
channels-last everywhere, bf16 autocast on CUDA only.

The settings are interleaved per architecture (each architecture built afresh from the
same seed in every setting) so a slow drift of the machine hits all four alike.

Usage::

    python benchmarks/layouts.py --device cpu --threads 2 --archs 6 --out /tmp/layouts.md
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the helpers live beside this script
    sys.path.insert(0, str(_HERE))

from _step_timing import Start, publish, start, step_parser  # noqa: E402
from throughput import draw_architectures  # noqa: E402

from search_spaces import get_space  # noqa: E402

#: name -> (channels-last?, autocast dtype or None)
SETTINGS: dict[str, tuple[bool, torch.dtype | None]] = {
    "fp32, contiguous": (False, None),
    "fp32, channels-last": (True, None),
    "bf16 autocast, contiguous": (False, torch.bfloat16),
    "bf16 autocast, channels-last": (True, torch.bfloat16),
}


def step_seconds(network: torch.nn.Module, images: torch.Tensor, *, channels_last: bool,
                 dtype: torch.dtype | None, warmup: int, repeats: int,
                 sync: Callable[[], None]) -> float:
    """Mean seconds of one training step of ``network`` on ``images``."""
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    autocast = (torch.autocast(images.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            outputs = network(images)
            logits = outputs[0] if isinstance(outputs, tuple) else outputs
            loss = logits.float().square().mean()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return (time.perf_counter() - started) / repeats


def run(spaces: Sequence[str], n_archs: int, device: torch.device, *, batch: int,
        image_size: tuple[int, int], warmup: int, repeats: int,
        seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Per space, per setting: the step seconds of each of ``n_archs`` architectures."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results: dict[str, dict[str, list[float]]] = {}
    for space_name in spaces:
        space = get_space(space_name, profile="search")
        per_setting: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for params in draw_architectures(space_name, n_archs, seed):
            for name, (channels_last, dtype) in SETTINGS.items():
                torch.manual_seed(seed)
                network = space.build(space.from_params(params), num_classes=6)
                network = network.to(device).train()
                images = torch.randn(batch, 3, *image_size, device=device)
                per_setting[name].append(step_seconds(
                    network, images, channels_last=channels_last, dtype=dtype,
                    warmup=warmup, repeats=repeats, sync=sync))
        results[space_name] = per_setting
    return results


def render(results: dict[str, dict[str, list[float]]], args: argparse.Namespace,
           started: Start) -> str:
    """The markdown table: total step time per setting and its speed relative to fp32."""
    baseline = "fp32, contiguous"
    lines = [
        started.machine_line(),
        "",
        f"Setting: {args.archs} architectures per space (RandomSampler seed 0, search "
        f"profile), batch {args.batch} of {args.height}x{args.width}, {args.warmup} warm-up "
        f"+ {args.repeats} timed steps per architecture and setting.",
        "",
        "| space | setting | step ms, sum over architectures | speed vs fp32 contiguous "
        "| architectures faster than fp32 contiguous |",
        "|---|---|---|---|---|",
    ]
    for space_name, per_setting in [*results.items(), ("all", _pooled(results))]:
        base = per_setting[baseline]
        for name, seconds in per_setting.items():
            faster = sum(s < b for s, b in zip(seconds, base))
            lines.append(f"| {space_name} | {name} | {1000 * sum(seconds):,.0f} | "
                         f"{sum(base) / sum(seconds):.2f}x | {faster} / {len(seconds)} |")
    return "\n".join(lines) + "\n"


def _pooled(results: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    return {name: [s for per in results.values() for s in per[name]] for name in SETTINGS}


def main(argv: Sequence[str] | None = None) -> str:
    args = step_parser(__doc__.split("\n", 1)[0], archs=6).parse_args(argv)
    started = start(args)
    results = run(args.spaces.split(","), args.archs, started.device, batch=args.batch,
                  image_size=(args.height, args.width), warmup=args.warmup,
                  repeats=args.repeats)
    table = render(results, args, started)
    return publish(table, args.out)


if __name__ == "__main__":
    main()
