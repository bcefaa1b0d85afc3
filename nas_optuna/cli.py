"""The ``nas-optuna`` command line: thin commands over the runner and the spaces.

Commands:
    search    run or resume the search a TOML config describes
    describe  an architecture's readable form, sizes, MACs and output stride
    sample    random architectures of a space, each built and run forward and backward

Every user error ends with one line ``nas-optuna: error: ...`` on stderr and exit code 2;
nothing stored is changed by a command that fails this way.

Example:
    $ nas-optuna search studies/quickstart.toml
    $ nas-optuna describe --space template --storage sqlite:///nas-optuna.db \\
          --study-name quickstart --trial 0 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import optuna

from nas_optuna.config import StudyConfig, load_config
from nas_optuna.exceptions import ConfigError, NasOptunaError

__all__ = ["main"]

_PROG = "nas-optuna"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other error
        self.exit(2, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG,
        description="Neural architecture search of compact "
        "semantic-segmentation networks on Optuna.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = commands.add_parser("search", help="run or resume a search from a TOML config")
    search.add_argument("config", help="study config (TOML), e.g. studies/quickstart.toml")
    search.add_argument("--storage", help="Optuna storage URL (overrides [study] storage)")
    search.add_argument("--study-name", help="study name (overrides [study] name)")
    search.add_argument("--n-trials", type=int, help="total trials of the study")
    search.add_argument("--timeout", type=float, help="stop starting trials after SECONDS")
    search.add_argument("--sampler", help="sampler name (overrides [sampler] name)")
    search.add_argument("--pruner", help="pruner name (overrides [pruner] name)")
    search.add_argument("--seed", type=int, help="seed of the sampler and trials")
    search.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    search.add_argument("--quiet", action="store_true", help="no per-trial progress lines")

    describe = commands.add_parser("describe", help="describe one architecture")
    describe.add_argument("--space", required=True, help="search space name")
    source = describe.add_mutually_exclusive_group(required=True)
    source.add_argument("--genotype", help="the authors' genotype list, as JSON")
    source.add_argument("--storage", help="Optuna storage URL holding the trial")
    describe.add_argument("--study-name", help="study of the trial (with --storage)")
    describe.add_argument("--trial", type=int, help="trial number (with --storage)")
    _add_build_options(describe)

    sample = commands.add_parser("sample", help="build and run random architectures")
    sample.add_argument("--space", required=True, help="search space name")
    sample.add_argument("-n", type=int, default=10, help="number of architectures")
    sample.add_argument("--seed", type=int, default=0, help="seed of the random sampler")
    _add_build_options(sample)

    spaces = commands.add_parser("spaces", help="list the registered search spaces")
    spaces.add_argument("--json", action="store_true", help="print JSON, one space per line")
    return parser


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-classes", type=int, help="classes (default: the study's, else 19)")
    parser.add_argument("--profile", help="space profile, e.g. search or final")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size for MACs and output shape (default 512 1024)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas-optuna`` console script."""
    # timm (through segmentation-models-pytorch) imports torch's C++-extension helper,
    # which warns on every start of a machine without a CUDA toolkit; it concerns
    # compiling extensions, which nas-optuna never does.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    args = _build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        commands = {"search": _search, "describe": _describe, "sample": _sample,
                    "spaces": _spaces}
        return commands[args.command](args)
    except NasOptunaError as error:
        print(f"{_PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# --- search ---------------------------------------------------------------------------
def _search(args: argparse.Namespace) -> int:
    from nas_optuna.objective import trial_record
    from nas_optuna.study import run_search

    config = _apply_overrides(load_config(args.config), args)
    started = time.monotonic()

    def on_ready(study: optuna.Study, space: Any) -> None:
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
        print(
            f"study {study.study_name!r} in {config.study.storage}: {done} finished trials, "
            f"target {config.study.n_trials}; space {space.name} ({space.profile}), "
            f"stem weights: {study.user_attrs.get('stem_weights')}",
            flush=True,
        )

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if args.quiet:
            return
        record = trial_record(trial)
        values = ", ".join(f"{v:.4f}" for v in trial.values) if trial.values else "-"
        stage1 = trial.user_attrs.get("reward_stage1")
        detail = f"stage1 {stage1:.4f}" if stage1 is not None else ""
        if record["fail_reason"]:
            detail = f"reason: {record['fail_reason']}"
        print(
            f"[{time.monotonic() - started:7.1f}s] trial {trial.number:3d} {trial.state.name:8s} "
            f"value {values:>8s}  params {record['params_generated'] or 0:>9,}  "
            f"os {record['output_stride'] or '-'}  {detail}",
            flush=True,
        )

    study = run_search(config, callbacks=[progress], on_ready=on_ready)
    _print_best(study)
    return 0


def _apply_overrides(config: StudyConfig, args: argparse.Namespace) -> StudyConfig:
    from nas_optuna.config import NamedConfig

    study = config.study
    changes: dict[str, Any] = {}
    for attr, key in (
        ("storage", "storage"),
        ("study_name", "name"),
        ("n_trials", "n_trials"),
        ("timeout", "timeout"),
        ("seed", "seed"),
    ):
        value = getattr(args, attr)
        if value is not None:
            changes[key] = value
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {args.n_trials}")
    config = config.replace(study=dataclasses.replace(study, **changes))
    if args.sampler is not None and args.sampler != config.sampler.name:
        config = config.replace(sampler=NamedConfig(args.sampler, {}))
    if args.pruner is not None and args.pruner != config.pruner.name:
        config = config.replace(pruner=NamedConfig(args.pruner, {}))
    if args.device is not None:
        config = config.replace(train=dataclasses.replace(config.train, device=args.device))
    return config


def _print_best(study: optuna.Study) -> None:
    completed = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    if not completed:
        print("no trial completed yet")
        return
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    title = "Pareto-optimal trials" if len(best) > 1 else "best architecture"
    names = study.metric_names or ["value"] * len(study.directions)
    print(f"{title}:")
    for trial in best:
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, trial.values))
        attrs = trial.user_attrs
        print(
            f"  trial {trial.number}: {values}; params {attrs.get('params_total', 0):,} "
            f"(generated {attrs.get('params_generated', 0):,}); output stride "
            f"{attrs.get('output_stride')}"
        )
        print(f"  {attrs.get('genotype')}")


# --- describe / sample ------------------------------------------------------------------
def _space_and_classes(args: argparse.Namespace, study_attrs: dict[str, Any] | None = None):
    from search_spaces import get_space

    options = dict((study_attrs or {}).get("space", {}))
    options.pop("name", None)
    if args.profile is not None:
        options["profile"] = args.profile
    space = get_space(args.space, **options)
    num_classes = args.num_classes or (study_attrs or {}).get("num_classes") or 19
    if num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {num_classes}")
    return space, int(num_classes)


def _input_size(args: argparse.Namespace) -> tuple[int, int]:
    size = tuple(args.input_size or (512, 1024))
    if min(size) < 1:
        raise ConfigError(f"--input-size must be positive, got {size[0]} {size[1]}")
    return size  # type: ignore[return-value]


def _describe(args: argparse.Namespace) -> int:
    from nas_optuna.measure import measure_network

    if args.genotype is not None:
        try:
            genotype = json.loads(args.genotype)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--genotype is not valid JSON: {error}") from None
        space, num_classes = _space_and_classes(args)
        arch = space.from_genotype(genotype)
    else:
        if args.study_name is None or args.trial is None:
            raise ConfigError("--storage needs --study-name and --trial")
        trial, attrs = _load_trial(args.storage, args.study_name, args.trial)
        stored_space = attrs.get("space", {}).get("name")
        if stored_space is not None and stored_space != args.space:
            raise ConfigError(
                f"study {args.study_name!r} searched space {stored_space!r}, not {args.space!r}"
            )
        space, num_classes = _space_and_classes(args, attrs)
        arch = space.from_params(trial.params)
    network = space.build(arch, num_classes)
    record = {
        "space": space.name,
        "profile": space.profile,
        "num_classes": num_classes,
        "input_size": list(_input_size(args)),
        "genotype": space.to_genotype(arch),
        "readable": space.describe(arch),
        **measure_network(network, _input_size(args)),
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


def _load_trial(storage: str, study_name: str, number: int):
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {study_name!r} in {storage}") from None
    except Exception as error:  # noqa: BLE001 - storage errors become one line
        raise ConfigError(f"cannot open storage {storage}: {_one_line(error)}") from None
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise ConfigError(f"study {study_name!r} has no trial {number}")
    return trials[0], study.user_attrs


def _spaces(args: argparse.Namespace) -> int:
    from search_spaces import SPACES, get_space

    for name in SPACES.names():
        space = get_space(name)
        record = {
            "name": name,
            "profiles": list(space.profiles),
            "size": space.size(),
            "stem": space.stem_id,
            "summary": space.summary,
        }
        if args.json:
            print(json.dumps(record))
        else:
            size = record["size"]
            shown = f"{size:,}" if size < 10**6 else f"{size:.2e}"
            print(f"{name:10s} {shown:>9s} architectures  profiles "
                  f"{'/'.join(record['profiles']):13s} {record['summary']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from nas_optuna.measure import measure_network
    from nas_optuna.networks import AuxiliaryOutputs

    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    space, num_classes = _space_and_classes(args)
    size = tuple(args.input_size or (128, 128))
    if min(size) < 1:
        raise ConfigError(f"--input-size must be positive, got {size[0]} {size[1]}")
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
            record["error"] = _one_line(error)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
