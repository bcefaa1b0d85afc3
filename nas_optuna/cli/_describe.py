"""``nas-optuna describe``: an architecture's readable form, sizes, MACs and output stride."""

from __future__ import annotations

import argparse
import json

from nas_optuna.cli._common import add_build_options, input_size, load_trial, space_and_classes
from nas_optuna.exceptions import ConfigError

NAME = "describe"
HELP = "describe one architecture"


def add_arguments(describe: argparse.ArgumentParser) -> None:
    describe.add_argument("--space", required=True, help="search space name")
    source = describe.add_mutually_exclusive_group(required=True)
    source.add_argument("--genotype", help="the authors' genotype list, as JSON")
    source.add_argument("--storage", help="Optuna storage URL holding the trial")
    describe.add_argument("--study-name", help="study of the trial (with --storage)")
    describe.add_argument("--trial", type=int, help="trial number (with --storage)")
    add_build_options(describe)


def run(args: argparse.Namespace) -> int:
    from nas_optuna.measure import measure_network

    if args.genotype is not None:
        try:
            genotype = json.loads(args.genotype)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--genotype is not valid JSON: {error}") from None
        space, num_classes = space_and_classes(args)
        arch = space.from_genotype(genotype)
    else:
        if args.study_name is None or args.trial is None:
            raise ConfigError("--storage needs --study-name and --trial")
        trial, attrs = load_trial(args.storage, args.study_name, args.trial)
        stored_space = attrs.get("space", {}).get("name")
        if stored_space is not None and stored_space != args.space:
            raise ConfigError(
                f"study {args.study_name!r} searched space {stored_space!r}, not {args.space!r}"
            )
        space, num_classes = space_and_classes(args, attrs)
        arch = space.from_params(trial.params)
    network = space.build(arch, num_classes)
    record = {
        "space": space.name,
        "profile": space.profile,
        "num_classes": num_classes,
        "input_size": list(input_size(args)),
        "genotype": space.to_genotype(arch),
        "readable": space.describe(arch),
        **measure_network(network, input_size(args)),
    }
    if args.json:
        print(json.dumps(record))
    else:
        print(f"{space.name} ({space.profile}), {num_classes} classes")
        print(f"  {record['readable']}")
        print(
            f"  parameters: {record['params_total']:,} total, "
            f"{record['params_generated']:,} generated"
        )
        print(f"  MACs at {record['input_size'][0]}x{record['input_size'][1]}: {record['macs']:,}")
        print(f"  output stride: {record['output_stride']}")
    return 0
