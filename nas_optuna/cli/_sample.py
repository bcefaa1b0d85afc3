"""``nas-optuna sample``: random architectures of a space, built and run forward and backward."""

from __future__ import annotations

import argparse
import json
from typing import Any

import optuna

from nas_optuna.cli._common import add_build_options, input_size, one_line, space_and_classes
from nas_optuna.exceptions import ConfigError

NAME = "sample"
HELP = "build and run random architectures"


def add_arguments(sample: argparse.ArgumentParser) -> None:
    sample.add_argument("--space", required=True, help="search space name")
    sample.add_argument("-n", type=int, default=10, help="number of architectures")
    sample.add_argument("--seed", type=int, default=0, help="seed of the random sampler")
    add_build_options(sample)


def run(args: argparse.Namespace) -> int:
    import torch

    from nas_optuna.measure import measure_network
    from nas_optuna.networks import AuxiliaryOutputs

    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    space, num_classes = space_and_classes(args)
    size = input_size(args, default=(128, 128))
    sampler = optuna.samplers.RandomSampler(seed=args.seed)
    study = optuna.create_study(sampler=sampler)
    for index in range(args.n):
        trial = study.ask()
        arch = space.suggest(trial)
        record: dict[str, Any] = {"index": index, "readable": space.describe(arch)}
        try:
            torch.manual_seed(args.seed * 1000 + index)
            network = space.build(arch, num_classes)
            record.update(measure_network(network, size))
            network.train()
            # Batch 2: batch norm after global pooling needs more than one value per channel.
            output = network(torch.randn(2, 3, *size))
            auxiliary = []
            if isinstance(output, AuxiliaryOutputs):  # training-only heads train too
                output, auxiliary = output.logits, output.auxiliary
            sum(o.float().mean() for o in [output, *auxiliary]).backward()
            record["output_shape"] = list(output.shape)
        except Exception as error:  # noqa: BLE001 - a broken architecture is a result here
            record["error"] = one_line(error)
        study.tell(trial, 0.0)
        if args.json:
            print(json.dumps(record), flush=True)
        elif "error" in record:
            print(f"{index:3d}  error: {record['error']}  {record['readable']}", flush=True)
        else:
            print(
                f"{index:3d}  params {record['params_generated']:>10,}  "
                f"MACs {record['macs']:>14,}  os {record['output_stride']:>3}  "
                f"out {tuple(record['output_shape'])}  {record['readable']}",
                flush=True,
            )
    return 0
