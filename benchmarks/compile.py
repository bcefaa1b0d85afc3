"""Does ``torch.compile`` pay for its compile time in a search trial?

Every trial of a search trains a new architecture, so a compiled trainer would compile a
new graph in every trial. This script measures, per architecture, what that costs and
what it returns, for the two training workloads of a trial as the trainer runs them
(the trainer's own step: channels-last, fp32 on CPU and bf16 autocast on CUDA; forward,
loss with the auxiliary heads, backward, gradient clipping, fused Adam):

* **stage 1**: the decoder alone on the frozen stem's features (the trainer's cached
  features; here computed once from random images);
* **stage 2**: the whole network on images.

For each it records the eager step time, the compiled step time once compiled, and the
compile time (the first compiled step minus an eager step), and derives the **break-even**
number of steps, ``compile / (eager - compiled)``: a trial that trains fewer steps of
that workload loses time by compiling ("never" when the compiled step is not faster).
The trainer's budget is set beside it: steps per trial of the given config
(``--config``, default the quickstart's).

Choices, stated because they decide the numbers:

* Inductor's caches live in a fresh temporary folder per run, so nothing compiled by an
  earlier run is reused; within a run, kernels compiled for one architecture may serve a
  later one, as they would in a search. Architectures are listed in run order, so a
  falling compile time shows that reuse.
* Only the training mode at one batch size is compiled here. A compiled trial would also
  compile the evaluation mode and the last, smaller batch of an epoch (a new shape), so
  the break-even points here are lower bounds.
* ``torch.compile(module)`` with the default backend (inductor; ``--backend``) and mode
  (``--mode``, e.g. ``reduce-overhead`` for CUDA graphs), which is what the trainer would
  compile; the rest of its step (loss, clipping, optimiser) stays eager.

Usage::

    python benchmarks/compile.py --device cpu --threads 2 --archs 3 --out /tmp/compile.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the helpers live beside this script
    sys.path.insert(0, str(_HERE))

from _step_timing import Start, publish, start, step_parser  # noqa: E402
from throughput import draw_architectures  # noqa: E402

from nas_optuna.config import TrainConfig, load_config  # noqa: E402
from nas_optuna.data import meta_split  # noqa: E402
from nas_optuna.training import trainer  # noqa: E402
from search_spaces import get_space  # noqa: E402

REPO = _HERE.parent
WORKLOADS = ("stage 1", "stage 2")
#: Steps per trial of the WACV 2020 search (Sect. 4.1): 2677 meta-train CityScapes crops
#: of 321x321 in batches of 32, 5 epochs per stage (stage 2 drops the last batch).
PAPER_STEPS = {"stage 1": 5 * math.ceil(2677 / 32), "stage 2": 5 * (2677 // 32)}


def time_steps(module: torch.nn.Module, inputs: Any, labels: torch.Tensor, *,
               warmup: int, repeats: int, sync: Callable[[], None]) -> tuple[float, float]:
    """(seconds of the first step, mean seconds of a step after ``warmup`` more).

    A step is the trainer's own (:func:`nas_optuna.training.trainer._step`: autocast on
    CUDA, the loss with its auxiliary heads, backward, clipping, fused Adam), with the
    default :class:`~nas_optuna.config.TrainConfig`.
    """
    config = TrainConfig()
    optimiser = trainer._adam(list(module.parameters()), lr=config.decoder_lr,
                              weight_decay=config.weight_decay)
    watch = trainer._NonFiniteWatch(stage=0)

    def step() -> None:
        trainer._step(module, inputs, labels, optimiser, config, watch)

    sync()
    started = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - started
    for _ in range(warmup):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return first, (time.perf_counter() - started) / repeats


def _workload(space: Any, params: dict[str, Any], workload: str, device: torch.device,
              batch: int, image_size: tuple[int, int], seed: int
              ) -> tuple[torch.nn.Module, Any, torch.Tensor]:
    torch.manual_seed(seed)
    network = space.build(space.from_params(params), num_classes=6)
    network = network.to(device, memory_format=torch.channels_last).train()
    images = torch.randn(batch, 3, *image_size, device=device).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, 6, (batch, *image_size), device=device)
    if workload == "stage 2":
        return network, images, labels
    network.stem.eval()
    with torch.no_grad():
        features = [f.contiguous(memory_format=torch.channels_last)
                    for f in network.stem(images)]
    return network.decoder, features, labels


def run(spaces: Sequence[str], n_archs: int, device: torch.device, *, batch: int,
        image_size: tuple[int, int], warmup: int, repeats: int, seed: int = 0,
        backend: str = "inductor", mode: str | None = None) -> list[dict[str, Any]]:
    """One row per (space, architecture, workload): eager and compiled step times."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows: list[dict[str, Any]] = []
    for space_name in spaces:
        space = get_space(space_name, profile="search")
        for index, params in enumerate(draw_architectures(space_name, n_archs, seed)):
            for workload in WORKLOADS:
                module, inputs, labels = _workload(space, params, workload, device, batch,
                                                   image_size, seed)
                _, eager = time_steps(module, inputs, labels, warmup=warmup,
                                      repeats=repeats, sync=sync)
                module, inputs, labels = _workload(space, params, workload, device, batch,
                                                   image_size, seed)
                torch._dynamo.reset()  # a new architecture is a new graph in a search
                compiled_module = torch.compile(module, backend=backend, mode=mode)
                first, compiled = time_steps(compiled_module, inputs, labels,
                                             warmup=warmup, repeats=repeats, sync=sync)
                compile_s = max(0.0, first - eager)
                saved = eager - compiled
                rows.append({
                    "space": space_name, "index": index, "workload": workload,
                    "eager_s": eager, "compiled_s": compiled, "compile_s": compile_s,
                    "speedup": eager / compiled,
                    "break_even_steps": compile_s / saved if saved > 0 else math.inf,
                })
                print(f"{space_name} {index} {workload}: eager {1000 * eager:.1f} ms, "
                      f"compiled {1000 * compiled:.1f} ms, compile {compile_s:.1f} s",
                      flush=True)
    return rows


def budget_steps(config_path: Path) -> dict[str, int]:
    """Training steps per trial of each workload under ``config_path``'s budget."""
    config = load_config(config_path)
    images = config.data.options.get("num_images")
    if images is None:  # a folder dataset: its size is not in the config
        return {}
    train = len(meta_split(images, config.data.val_fraction, config.data.split_seed)[0])
    batch = config.train.batch_size
    per_epoch_1 = train // batch + (train % batch > 1)  # a last batch of one is dropped
    per_epoch_2 = train // batch if train > batch else 1  # stage 2 drops the last batch
    return {"stage 1": config.train.stage1_epochs * per_epoch_1,
            "stage 2": config.train.stage2_epochs * per_epoch_2}


def _steps(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"


def render(rows: list[dict[str, Any]], budget: dict[str, int], args: argparse.Namespace,
           started: Start) -> str:
    """The markdown report: one row per architecture and workload, then the totals."""
    device = started.device
    lines = [
        started.machine_line(),
        "",
        f"Setting: {args.archs} architectures per space (RandomSampler seed 0, search "
        f"profile), batch {args.batch} of {args.height}x{args.width}, channels-last, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}; {args.warmup} warm-up + "
        f"{args.repeats} timed steps each, eager and compiled (backend {args.backend}, mode "
        f"{args.mode or 'default'}; inductor caches fresh).",
        "",
        "| space | arch | workload | eager ms/step | compiled ms/step | speed-up | "
        "compile s | break-even steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['space']} | {row['index']} | {row['workload']} | "
            f"{1000 * row['eager_s']:.1f} | {1000 * row['compiled_s']:.1f} | "
            f"{row['speedup']:.2f}x | {row['compile_s']:.1f} | "
            f"{_steps(row['break_even_steps'])} |")
    lines += ["", "| workload | speed-up, all architectures | mean compile s | break-even "
              f"steps, all architectures | steps per trial, {args.config.name} | steps per "
              "trial, WACV 2020 (321x321) |", "|---|---|---|---|---|---|"]
    for workload in WORKLOADS:
        mine = [r for r in rows if r["workload"] == workload]
        if not mine:
            continue
        eager = sum(r["eager_s"] for r in mine)
        compiled = sum(r["compiled_s"] for r in mine)
        compile_s = sum(r["compile_s"] for r in mine)
        saved = eager - compiled
        lines.append(
            f"| {workload} | {eager / compiled:.2f}x | {compile_s / len(mine):.1f} | "
            f"{_steps(compile_s / saved if saved > 0 else math.inf)} | "
            f"{budget.get(workload, 'n/a')} | {PAPER_STEPS[workload]} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = step_parser(__doc__.split("\n", 1)[0], archs=3)
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend (the smoke test uses 'eager')")
    parser.add_argument("--mode", default=None,
                        help="torch.compile mode, e.g. reduce-overhead (default: torch's)")
    parser.add_argument("--config", type=Path, default=REPO / "studies" / "quickstart.toml",
                        help="the budget the break-even is set against")
    args = parser.parse_args(argv)
    started = start(args)
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # nothing from earlier runs
        rows = run(args.spaces.split(","), args.archs, started.device, batch=args.batch,
                   image_size=(args.height, args.width), warmup=args.warmup,
                   repeats=args.repeats, backend=args.backend, mode=args.mode)
    report = render(rows, budget_steps(args.config), args, started)
    return publish(report, args.out)


if __name__ == "__main__":
    main()
