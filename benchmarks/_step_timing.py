"""What the training-step benchmarks (``layouts.py``, ``compile.py``) share: their options,
their start-up, the machine line of their reports and where the reports go."""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from _machine import OtherLoad, cpu_model, loadavg


def step_parser(description: str, *, archs: int) -> argparse.ArgumentParser:
    """The options of a step benchmark: device, threads, architectures, batch, timing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's)")
    parser.add_argument("--spaces", default="template,auxcell")
    parser.add_argument("--archs", type=int, default=archs, help="architectures per space")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    return parser


@dataclass
class Start:
    """The device and the machine's load when the benchmark started."""

    device: torch.device
    load_before: float
    other_load: OtherLoad

    def machine_line(self) -> str:
        """The report's first line: machine, device, threads, versions, load."""
        device = self.device
        name = cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device)
        return (f"Machine: {name}, device {device.type}, {torch.get_num_threads()} torch "
                f"threads; torch {torch.__version__}, Python {platform.python_version()}. "
                f"Load average before: {self.load_before:.2f}; other processes kept "
                f"{self.other_load.cores():.2f} cores busy.")


def start(args: argparse.Namespace) -> Start:
    """Applies ``--threads`` and records the load before the timings."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return Start(torch.device(args.device), loadavg(), OtherLoad())


def publish(report: str, out: Path | None) -> str:
    """Prints ``report``, also writes it to ``out`` when given, and returns it."""
    print(report)
    if out is not None:
        out.write_text(report)
    return report
