"""The ``nas-optuna`` command line: thin commands over the runner, the spaces and analysis.

Commands (one module each in this package, each with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``):
    search    run or resume the search a TOML config describes
    describe  an architecture's readable form, sizes, MACs and output stride
    sample    random architectures of a space, each built and run forward and backward
    spaces    the registered search spaces
    report    one self-contained HTML report of a study (analysis/)
    retrain   longer training of selected architectures into a linked study
    surrogate fit a surrogate of a study's reward, check it, and search on it
    dashboard optuna-dashboard with the trials' artifacts (localhost by default)
    export    an architecture as ONNX or TorchScript, without auxiliary heads
    storage-proxy  Optuna's gRPC storage proxy, for very many workers

Every user error ends with one line ``nas-optuna: error: ...`` on stderr and exit code 2;
nothing stored is changed by a command that fails this way.

Example:
    $ nas-optuna search studies/quickstart.toml
    $ nas-optuna describe --space template --storage sqlite:///nas-optuna.db \\
          --study-name quickstart --trial 0 --json
"""

from __future__ import annotations

import _thread
import argparse
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

import optuna

from nas_optuna.cli import (
    _dashboard,
    _describe,
    _export,
    _report,
    _retrain,
    _sample,
    _search,
    _spaces,
    _storage_proxy,
    _surrogate,
)
from nas_optuna.cli._common import PROG, Parser, one_line
from nas_optuna.exceptions import NasOptunaError

__all__ = ["main"]

#: The command modules, in the order ``--help`` lists them.
_COMMANDS: tuple[ModuleType, ...] = (
    _search, _describe, _sample, _spaces, _report, _retrain, _dashboard, _export,
    _storage_proxy,
    _surrogate,
)


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Neural architecture search of compact "
        "semantic-segmentation networks on Optuna.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in _COMMANDS:
        module.add_arguments(commands.add_parser(module.NAME, help=module.HELP))
    return parser


def interrupt_safe_unraisablehook(previous: Callable[[object], None]
                                   ) -> Callable[[object], None]:
    """An ``sys.unraisablehook`` that passes a Ctrl-C caught in a finaliser on to the main
    thread instead of printing it.

    SIGINT can arrive while Python runs a ``__del__`` or weakref callback (SQLAlchemy's
    registries have them); the KeyboardInterrupt raised there cannot propagate, so Python
    prints "Exception ignored in ..." with a traceback and the interrupt would be lost.
    This hook prints nothing and raises it again in the main thread
    (:func:`_thread.interrupt_main`) from a short-lived helper thread, a moment later: an
    interrupt raised while the finaliser (or this hook) still runs would be swallowed
    the same way. The command's one-line ``interrupted`` handling then sees it; every
    other unraisable exception goes to ``previous``.
    """

    def hook(unraisable: object) -> None:
        if isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
            threading.Timer(0.05, _thread.interrupt_main).start()
            return
        previous(unraisable)

    hook.passes_interrupts = True  # type: ignore[attr-defined]
    return hook


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas-optuna`` console script."""
    if not getattr(sys.unraisablehook, "passes_interrupts", False):
        sys.unraisablehook = interrupt_safe_unraisablehook(sys.unraisablehook)
    # timm (through segmentation-models-pytorch) imports torch's C++-extension helper,
    # which warns on every start of a machine without a CUDA toolkit; it concerns
    # compiling extensions, which nas-optuna never does.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    args = _build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = {module.NAME: module.run for module in _COMMANDS}[args.command]
    try:
        return run(args)
    except NasOptunaError as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
