"""Per-operation latency cost tables: a fast latency estimate for a whole architecture.

CAS (Zhang et al., CVPR 2019, Sect. 4.1) assigns every candidate operation ``o`` a cost
``c_o = c'_o - c'_id``: the measured cost of the operation minus the cost of an identity
in its place. A :class:`CostTable` applies that rule to *units* of a built network and
estimates the latency of a whole architecture as the sum of its units' costs, so a search
can rank architectures by latency without timing each of them.

Units. One forward pass of the network (batch 1, eval mode, no grad) at the table's
resolution is traced with module hooks and a :class:`~torch.overrides.TorchFunctionMode`,
and becomes a list of units:

* ``op:`` / ``agg:`` -- a module tagged with a ``cost_key`` (every op built by
  :func:`nas_optuna.ops.build_op`, every aggregation built by
  :func:`nas_optuna.ops.build_aggregation`), keyed by that key;
* ``stem:`` -- the stem (``network.stem``), keyed by the space's ``stem_id``;
* ``leaf:`` -- every other *leaf* module called outside those (heads, 1x1 adapters,
  the layers of hand-written parts and of smp models), keyed by its class,
  ``extra_repr`` and parameter shapes;
* ``fn:`` -- every tensor-valued torch function called outside any unit
  (``F.interpolate``, ``+``, ``torch.cat``, slicing, ``new_zeros`` in the spaces' glue
  code), keyed by the function;
* ``call:module`` -- one per module call outside units (a unit's own call and every
  container's call), see below.

Every key except the last ends with ``|in=`` and the call's input signature (dtype,
shape and, for non-contiguous views, strides of every tensor; other arguments by
``repr``), so one key always names one computation. A module called twice is two units;
modules and functions inside a unit are part of it (the outermost unit wins); modules
the forward does not call (auxiliary heads in eval mode) cost nothing.

Unit cost. The unit is run alone on random inputs of its recorded signature and timed
with :func:`nas_optuna.cost.measure_latency` (batch 1, eval mode, no grad,
:class:`torch.utils.benchmark.Timer`, median of ``repeats`` samples at the current
``torch.get_num_threads()``); then an identity (:class:`torch.nn.Identity`; a variadic
pass-through for calls with several inputs) is timed the same way on the *same* input
tensors, and the entry is ``max(0, median_unit - median_identity)`` in milliseconds:
CAS's ``c'_o - c'_id``. The subtraction removes what every timed call pays whatever it
computes -- the timer, the wrapper feeding the stored inputs and one module call -- so
the call itself is booked separately: ``call:module`` is the overhead of one module call
(a Sequential of 32 identities timed against one identity, divided by the 33 calls it
adds), counted once per module call outside units. Functions are timed the same way (a
module calling the function, minus an identity), so their entry is the function's own
cost.

Calibration. What units still miss -- the Python code of the containers, the per-forward
overhead, the caches a whole network misses where a unit timed alone hits -- is
absorbed on average by a per-table linear calibration ``estimate = a * sum + b``, fitted
by least squares of the relative error on the architectures measured in full while the
table is warmed (:func:`build_cost_table`) and stored in the table; ``b`` stays 0 until
:data:`CALIBRATION_INTERCEPT_POINTS` architectures have been measured (see
:meth:`CostTable.fit_calibration`). It cannot change a ranking (``a > 0`` is enforced),
only the scale, so it fixes the median absolute percentage error but not Spearman's rho.

Cache. A table belongs to one device fingerprint (:func:`nas_optuna.cost.device_fingerprint`:
device, torch and CUDA versions, thread count), one space (``space.options()``, profile
included), one input size and channel count. It is stored as JSON under a cache folder
(default ``~/.cache/nas-optuna/cost-tables``; ``NAS_OPTUNA_COST_TABLES`` overrides it) in
a file named from a hash of those; a table whose fingerprint is not the current device's
is never loaded (:class:`CostTableMismatchError`; :func:`open_cost_table` starts a new
one). Writes are atomic (:func:`nas_optuna._files.atomic_path`: a temporary file in the
same folder, then a rename), so a concurrent reader never sees half a file; a save first
merges the entries another worker may have written meanwhile, so tables filled by
parallel workers lose nothing but the entries of a save that raced theirs (re-measured on demand).

Entries missing from the table are measured when an estimate needs them and added, so a
table fills as a search goes and each unit is measured once. The trace of a network is
cached per network object (weakly), so estimating the same network again costs a few
microseconds; a new network costs one traced forward plus its missing units.

Measured (``benchmarks/cost_table.py``, ``docs/benchmarks_cost.md``): on a 2-core CPU at
128x256, 50 random architectures per space, Spearman's rho between estimate and
measurement is 0.90-0.99 in all five registered spaces (0.96-0.995 with one thread),
about the rank agreement of two measurements of the same networks; the median absolute
percentage error is 3-7% (one case 11.5%); estimating a network whose units are known
costs one traced forward, 19-36 times less than one measurement.

Example:
    >>> from search_spaces import get_space
    >>> from nas_optuna.cost_table import build_cost_table
    >>> space = get_space("template", profile="search")
    >>> table = build_cost_table(space, (64, 64), n_architectures=3, cache_dir="tables")
    >>> net = space.build(space.random_architecture(seed=42), num_classes=6)
    >>> table.estimate(net) > 0
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from nas_optuna._files import atomic_path
from nas_optuna.cost import _eval_mode, device_fingerprint, measure_latency
from nas_optuna.exceptions import NasOptunaError
from nas_optuna.networks import module_device

__all__ = [
    "CALIBRATION_INTERCEPT_POINTS",
    "CostTable",
    "CostTableMismatchError",
    "CostUnit",
    "build_cost_table",
    "cost_table_path",
    "default_cache_dir",
    "open_cost_table",
    "trace_units",
    "unit_cost",
]

_LOGGER = logging.getLogger(__name__)

#: Calibration points from which the intercept ``b`` is fitted too (below: ``b = 0``).
CALIBRATION_INTERCEPT_POINTS = 20
_FORMAT = 1
_ENV_CACHE = "NAS_OPTUNA_COST_TABLES"


class CostTableMismatchError(NasOptunaError):
    """A stored cost table belongs to another device, space, resolution or format."""


@dataclass(frozen=True)
class _TensorSpec:
    """What a unit needs to know about one input tensor to recreate it."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    contiguous: bool

    def signature(self) -> str:
        text = f"{str(self.dtype).removeprefix('torch.')}[{','.join(map(str, self.shape))}]"
        return text if self.contiguous else f"{text}@{','.join(map(str, self.stride))}"


@dataclass(frozen=True)
class CostUnit:
    """One unit of a traced forward: a call of a module or function, or a call overhead.

    Attributes:
        key: Table key: what is called (``op:...``, ``agg:...``, ``stem:...``,
            ``leaf:...`` or ``fn:...``) followed by ``|in=`` and its input signature; or
            ``call:module``.
        kind: ``"op"`` (a module tagged with ``cost_key``), ``"stem"``, ``"leaf"``,
            ``"function"`` (a torch function called outside modules, key ``fn:...``) or
            ``"call"`` (the overhead of one module call, key ``call:module``).
        module: The module or function called (``None`` for ``"call"``).
    """

    key: str
    kind: str
    module: nn.Module | Callable[..., Any] | None = field(repr=False, compare=False)
    _leaves: tuple[Any, ...] = field(repr=False, compare=False, default=())
    _treespec: Any = field(repr=False, compare=False, default=None)


def default_cache_dir() -> Path:
    """Folder of the cost tables.

    ``$NAS_OPTUNA_COST_TABLES`` if set, else ``~/.cache/nas-optuna/cost-tables``.

    Example:
        >>> from nas_optuna.cost_table import default_cache_dir
        >>> default_cache_dir().name
        'cost-tables'
    """
    override = os.environ.get(_ENV_CACHE)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "nas-optuna" / "cost-tables"


# --------------------------------------------------------------------------------------
# Tracing a network into units
# --------------------------------------------------------------------------------------


def _spec_of(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return _TensorSpec(
            tuple(value.shape), tuple(value.stride()), value.dtype, value.is_contiguous()
        )
    return value


_POSITIONAL_SPECS: dict[int, Any] = {}


def _flatten_call(args: tuple, kwargs: dict) -> tuple[list[Any], Any]:
    """``pytree.tree_flatten((args, kwargs))``, faster for positional tensors only."""
    if not kwargs and all(isinstance(a, torch.Tensor) for a in args):
        treespec = _POSITIONAL_SPECS.get(len(args))
        if treespec is None:
            treespec = _POSITIONAL_SPECS[len(args)] = pytree.tree_flatten((args, {}))[1]
        return list(args), treespec
    return pytree.tree_flatten((args, kwargs))


def _signature(leaves: Sequence[Any]) -> str:
    return ";".join(x.signature() if isinstance(x, _TensorSpec) else repr(x) for x in leaves)


def _leaf_identity(module: nn.Module) -> str:
    cls = type(module)
    params = ",".join(
        f"{name}:{'x'.join(map(str, p.shape))}" for name, p in module.named_parameters()
    )
    return f"leaf:{cls.__module__}.{cls.__qualname__}({module.extra_repr()})|params={params}"


def _function_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None)
    name = name.replace("_VariableFunctionsClass.", "").replace("TensorBase.", "Tensor.")
    return f"{module}.{name}" if module and not name.startswith("Tensor.") else name


class _FunctionCall(nn.Module):
    """A torch function called outside any module unit, as a module (to be timed)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        super().__init__()
        self.func = func

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def extra_repr(self) -> str:
        return _function_name(self.func)


class _CallOverhead(nn.Module):
    """``_CALL_CHAIN`` identities in a Sequential: 33 module calls that compute nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.chain = nn.Sequential(*(nn.Identity() for _ in range(_CALL_CHAIN)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chain(x)


_CALL_CHAIN = 32
_CALL_KEY = "call:module"


class _FunctionRecorder(TorchFunctionMode):
    """Passes every torch function call to ``record`` (after the call, with its inputs)."""

    def __init__(self, record: Callable[[Any, tuple, dict, Any], None]) -> None:
        super().__init__()
        self._record = record

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        self._record(func, args, kwargs, output)
        return output


def trace_units(
    network: nn.Module,
    input_size: tuple[int, int],
    *,
    in_channels: int = 3,
    stem_id: str | None = None,
) -> list[CostUnit]:
    """The units of one forward pass of ``network``, in call order.

    Runs a zero input ``(1, in_channels, H, W)`` on the network's device in eval mode
    under :func:`torch.no_grad` (every submodule's training flag is restored) with hooks
    on every submodule and a :class:`~torch.overrides.TorchFunctionMode` recording torch
    functions called outside any unit.

    Args:
        network: Any module; a :class:`~nas_optuna.networks.StemDecoderNetwork` has its
            ``stem`` taken as one unit when ``stem_id`` is given.
        input_size: ``(H, W)`` of the input.
        in_channels: Channels of the input.
        stem_id: Names the stem in the keys (``SearchSpace.stem_id``); without it the
            stem's modules are units like any other.

    Returns:
        One :class:`CostUnit` per call of a tagged op (kind ``"op"``), the stem
        (``"stem"``) or an untagged leaf (``"leaf"``), per tensor-valued torch function
        called outside those (``"function"``), and one ``"call"`` unit per module call
        outside units (containers' and units' own calls: what an identity subtraction
        leaves out).

    Example:
        >>> from torch import nn
        >>> from nas_optuna.ops import build_op
        >>> net = nn.Sequential(build_op("conv3x3", 3, 8), nn.Conv2d(8, 2, 1))
        >>> [u.kind for u in trace_units(net, (16, 16))]
        ['call', 'call', 'op', 'call', 'leaf']
    """
    stem = getattr(network, "stem", None) if stem_id is not None else None
    units: list[CostUnit] = []
    depth = 0  # > 0 inside a unit
    call_unit = CostUnit(_CALL_KEY, "call", None)
    identities: dict[int, tuple[str, str] | None] = {}  # id(module) -> (key, kind) or None

    def identity_of(module: nn.Module) -> tuple[str, str] | None:
        found = identities.get(id(module), ())
        if found != ():
            return found  # type: ignore[return-value]
        key = getattr(module, "cost_key", None)
        if stem is not None and module is stem:
            found = (f"stem:{stem_id}", "stem")
        elif isinstance(key, str):
            found = (key, "op")
        elif next(module.children(), None) is None:
            found = (_leaf_identity(module), "leaf")
        else:
            found = None
        identities[id(module)] = found
        return found

    def add_unit(key: str, kind: str, target: Any, args: tuple, kwargs: dict) -> None:
        leaves, treespec = _flatten_call(args, kwargs)
        specs = tuple(_spec_of(x) for x in leaves)
        units.append(CostUnit(f"{key}|in={_signature(specs)}", kind, target, specs, treespec))

    modules = list(network.modules())
    members = {id(module) for module in modules}
    frames: list[tuple[str, str] | None] = []  # per open module call: the unit it is

    # Global hooks (two registrations instead of two per module); the pre-hook sees no
    # kwargs, so a unit is recorded when its call returns.
    def pre_hook(module: nn.Module, args: tuple) -> None:
        nonlocal depth
        if id(module) not in members:
            return
        if depth > 0:
            frames.append(None)
            return
        with torch._C.DisableTorchFunction():  # our own tensor calls are not recorded
            units.append(call_unit)
            found = identity_of(module)
        frames.append(found)
        if found is not None:
            depth += 1

    def post_hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        nonlocal depth
        if id(module) not in members or not frames:
            return
        found = frames.pop()
        if found is not None:
            depth -= 1
            with torch._C.DisableTorchFunction():
                add_unit(*found, module, args, kwargs)

    def record(func: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if depth > 0:
            return
        with torch._C.DisableTorchFunction():
            if isinstance(output, torch.Tensor) or any(
                isinstance(x, torch.Tensor) for x in pytree.tree_leaves(output)
            ):
                add_unit(f"fn:{_function_name(func)}", "function", func, args, kwargs)

    height, width = input_size
    device = module_device(network)
    dtype = next((p.dtype for p in network.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros(1, in_channels, height, width, dtype=dtype, device=device)
    flags = [module.training for module in modules]
    handles = []
    try:
        network.eval()
        handles.append(register_module_forward_pre_hook(pre_hook))
        handles.append(
            register_module_forward_hook(post_hook, with_kwargs=True, always_call=True)
        )
        with torch.no_grad(), _FunctionRecorder(record):
            network(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in zip(modules, flags):
            module.training = flag
    return units


# --------------------------------------------------------------------------------------
# Measuring one unit
# --------------------------------------------------------------------------------------


class _PassThrough(nn.Module):
    """Identity of a call with several inputs: returns the first one."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if args else next(iter(kwargs.values()), None)


class _Call(nn.Module):
    """Calls ``unit`` on stored inputs (non-persistent buffers), ignoring its own input.

    ``measure_latency`` feeds one dummy tensor; this wrapper replaces it with the unit's
    recorded inputs. The identity is wrapped the same way, so the wrapper's own overhead
    cancels in the subtraction.
    """

    def __init__(self, unit: nn.Module, leaves: Sequence[Any], treespec: Any) -> None:
        super().__init__()
        self.unit = unit
        self._treespec = treespec
        self._slots: list[tuple[str | None, Any]] = []
        for index, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                name = f"input_{index}"
                self.register_buffer(name, leaf, persistent=False)
                self._slots.append((name, None))
            else:
                self._slots.append((None, leaf))

    def forward(self, _: torch.Tensor) -> Any:
        leaves = [getattr(self, name) if name else value for name, value in self._slots]
        args, kwargs = pytree.tree_unflatten(leaves, self._treespec)
        return self.unit(*args, **kwargs)


def _materialise(specs: Sequence[Any], device: torch.device) -> list[Any]:
    generator = torch.Generator().manual_seed(0)
    leaves: list[Any] = []
    for spec in specs:
        if not isinstance(spec, _TensorSpec):
            leaves.append(spec)
            continue
        tensor = torch.empty_strided(spec.shape, spec.stride, dtype=spec.dtype)
        if spec.dtype.is_floating_point:
            tensor.copy_(torch.randn(spec.shape, generator=generator, dtype=spec.dtype))
        else:
            tensor.zero_()
        leaves.append(tensor.to(device) if device.type != "cpu" else tensor)
    return leaves


def _measure_call(
    module: nn.Module,
    specs: Sequence[Any],
    treespec: Any,
    *,
    device: torch.device | str,
    warmup: int,
    repeats: int,
) -> float:
    leaves = _materialise(specs, module_device(module))
    args, kwargs = pytree.tree_unflatten(list(specs), treespec)
    single = len(args) == 1 and not kwargs and isinstance(args[0], _TensorSpec)
    identity: nn.Module = nn.Identity() if single else _PassThrough()
    timed = {}
    for name, target in (("unit", module), ("identity", identity)):
        result = measure_latency(
            _Call(target, leaves, treespec),
            (1, 1),
            in_channels=1,
            device=device,
            warmup=warmup,
            repeats=repeats,
        )
        timed[name] = result.median_ms
    return max(0.0, timed["unit"] - timed["identity"])


def _measure_call_overhead(*, device: torch.device | str, warmup: int, repeats: int) -> float:
    """Milliseconds one call of a module costs beyond its forward (a chain of identities)."""
    x = torch.zeros(1, 1, 1, 1)
    leaves, treespec = pytree.tree_flatten(((x,), {}))
    chain = _measure_call(
        _CallOverhead(),
        [_spec_of(x) for x in leaves],
        treespec,
        device=device,
        warmup=warmup,
        repeats=repeats,
    )
    # Against one identity, the chain adds its Sequential's call and _CALL_CHAIN identities.
    return chain / (_CALL_CHAIN + 1)


def unit_cost(
    module: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 10,
) -> float:
    """CAS's ``c'_o - c'_id`` of ``module``: its latency minus an identity's, in ms.

    Both are timed by :func:`~nas_optuna.cost.measure_latency` on the same random tensors
    with the shapes, strides and dtypes of ``inputs`` (their values are not used); the
    difference is clamped at 0.

    Args:
        module: The unit, called as ``module(*inputs)``.
        inputs: One example tensor or a sequence of them.
        device: Device to time on.
        warmup: Untimed calls before timing.
        repeats: Timed samples (the median is taken).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> unit_cost(nn.Identity(), torch.zeros(1, 8, 16, 16), repeats=5) < 0.05
        True
    """
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    leaves, treespec = pytree.tree_flatten((args, {}))
    specs = [_spec_of(x) for x in leaves]
    with torch.no_grad():
        return _measure_call(
            module, specs, treespec, device=device, warmup=warmup, repeats=repeats
        )


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def _space_identity(space: Any) -> dict[str, Any]:
    options = dict(space.options()) if hasattr(space, "options") else {"name": str(space)}
    return json.loads(json.dumps(options, sort_keys=True, default=str))


def _table_hash(
    fingerprint: Mapping[str, Any],
    space: Mapping[str, Any],
    input_size: tuple[int, int],
    in_channels: int,
) -> str:
    payload = {
        "format": _FORMAT,
        "fingerprint": dict(fingerprint),
        "space": dict(space),
        "input_size": list(input_size),
        "in_channels": in_channels,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cost_table_path(
    space: Any,
    input_size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    in_channels: int = 3,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where the table of ``space`` at ``input_size`` on ``device`` is cached.

    The name is ``{space}-{profile}-{H}x{W}-{hash}.json`` with a hash of the device
    fingerprint, ``space.options()``, the input size and channels.

    Example:
        >>> from search_spaces import get_space
        >>> cost_table_path(get_space("template"), (64, 64), cache_dir="t").name[:22]
        'template-search-64x64-'
    """
    identity = _space_identity(space)
    digest = _table_hash(device_fingerprint(device), identity, tuple(input_size), in_channels)
    name = identity.get("name", "space")
    profile = identity.get("profile", "default")
    height, width = input_size
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / f"{name}-{profile}-{height}x{width}-{digest}.json"


class CostTable:
    """Unit latencies of one space on one device at one resolution, and the estimate.

    Args:
        space: Description of the space: ``space.options()`` (a dict with ``name`` and
            ``profile``); a :class:`~search_spaces.SearchSpace` is accepted too.
        input_size: ``(H, W)`` at which units are traced and timed.
        device: Device the units are timed on.
        in_channels: Channels of the network input.
        stem_id: The space's ``stem_id`` (the stem is one unit); ``None`` splits the stem.
        warmup: Untimed calls before timing a unit (and its identity).
        repeats: Timed samples per unit (and per identity).
        path: Where :meth:`save` writes by default.

    Attributes:
        entries: ``key -> ms``, the identity-subtracted unit costs.
        fingerprint: :func:`~nas_optuna.cost.device_fingerprint` at creation.
        calibration: ``(a, b)`` of ``estimate = a * sum + b``; ``(1, 0)`` until fitted.
        calibration_points: ``(sum_ms, measured_ms)`` of the architectures measured in
            full, from which ``calibration`` is fitted.

    Example:
        >>> from search_spaces import get_space
        >>> space = get_space("template")
        >>> table = CostTable(space, (64, 64), stem_id=space.stem_id)
        >>> net = space.build(space.random_architecture(seed=0), num_classes=6)
        >>> ms = table.estimate(net)  # measures the units it does not know yet
        >>> table.missing(net)
        []
    """

    def __init__(
        self,
        space: Any,
        input_size: tuple[int, int],
        *,
        device: torch.device | str = "cpu",
        in_channels: int = 3,
        stem_id: str | None = None,
        warmup: int = 2,
        repeats: int = 10,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if stem_id is None:
            stem_id = getattr(space, "stem_id", None)
        self.space: dict[str, Any] = (
            dict(space) if isinstance(space, Mapping) else _space_identity(space)
        )
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.device = torch.device(device)
        self.in_channels = int(in_channels)
        self.stem_id = stem_id
        self.warmup = int(warmup)
        self.repeats = int(repeats)
        self.path: Path | None = Path(path) if path is not None else None
        self.fingerprint: dict[str, Any] = device_fingerprint(self.device)
        self.entries: dict[str, float] = {}
        self.calibration: tuple[float, float] = (1.0, 0.0)
        self.calibration_points: list[tuple[float, float]] = []
        self._traces: weakref.WeakKeyDictionary[nn.Module, list[CostUnit]] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return (
            f"CostTable(space={self.space.get('name')!r}, input_size={self.input_size}, "
            f"device={str(self.device)!r}, entries={len(self.entries)}, "
            f"calibration=({self.calibration[0]:.3g}, {self.calibration[1]:.3g}))"
        )

    # --- units ----------------------------------------------------------------------
    def units(self, network: nn.Module) -> list[CostUnit]:
        """The traced units of ``network`` (cached per network object).

        Example:
            >>> len(table.units(net)) > 0
            True
        """
        units = self._traces.get(network)
        if units is None:
            units = trace_units(
                network, self.input_size, in_channels=self.in_channels, stem_id=self.stem_id
            )
            self._traces[network] = units
        return units

    def missing(self, network: nn.Module) -> list[str]:
        """Keys of ``network``'s units that the table does not hold yet (each once)."""
        return list(dict.fromkeys(u.key for u in self.units(network) if u.key not in self.entries))

    def measure_missing(self, network: nn.Module) -> int:
        """Measures the units of ``network`` that the table lacks and adds them.

        Returns:
            How many entries were added.
        """
        todo = [unit for unit in self.units(network) if unit.key not in self.entries]
        if not todo:
            return 0
        added = 0
        with _eval_mode(network), torch.no_grad():
            for unit in todo:
                if unit.key in self.entries:  # called more than once
                    continue
                if unit.kind == "call":
                    cost = _measure_call_overhead(
                        device=self.device, warmup=self.warmup, repeats=self.repeats
                    )
                else:
                    target = unit.module
                    cost = _measure_call(
                        target if isinstance(target, nn.Module) else _FunctionCall(target),
                        unit._leaves,
                        unit._treespec,
                        device=self.device,
                        warmup=self.warmup,
                        repeats=self.repeats,
                    )
                self.entries[unit.key] = cost
                added += 1
        if added:
            _LOGGER.debug("cost table %s: measured %d new units", self.space.get("name"), added)
        return added

    def breakdown(self, network: nn.Module, *, measure_missing: bool = True) -> dict[str, float]:
        """Uncalibrated cost per key for ``network``: entry times number of calls, in ms."""
        if measure_missing:
            self.measure_missing(network)
        totals: dict[str, float] = {}
        for unit in self.units(network):
            totals[unit.key] = totals.get(unit.key, 0.0) + self._entry(unit.key)
        return totals

    def _entry(self, key: str) -> float:
        try:
            return self.entries[key]
        except KeyError:
            raise KeyError(f"cost table has no entry for unit {key!r}") from None

    # --- estimate -------------------------------------------------------------------
    def estimate(
        self,
        network: nn.Module,
        *,
        calibrated: bool = True,
        measure_missing: bool = True,
    ) -> float:
        """Estimated batch-1 latency of ``network`` in milliseconds.

        Args:
            network: Built network of the table's space (any device; units are timed on
                the table's device).
            calibrated: Apply ``a * sum + b`` (clamped at 0); otherwise the plain sum of
                the unit costs.
            measure_missing: Measure and add units the table lacks; otherwise a missing
                unit raises :class:`KeyError`.

        Example:
            >>> table.estimate(net, calibrated=False) == sum(table.breakdown(net).values())
            True
        """
        if measure_missing:
            self.measure_missing(network)
        raw = math.fsum(self._entry(unit.key) for unit in self.units(network))
        if not calibrated:
            return raw
        a, b = self.calibration
        return max(0.0, a * raw + b)

    # --- calibration ----------------------------------------------------------------
    def add_calibration_point(
        self,
        network: nn.Module,
        measured_ms: float | None = None,
        *,
        warmup: int = 3,
        repeats: int = 15,
    ) -> tuple[float, float]:
        """Adds ``(sum of unit costs, measured latency)`` of ``network`` and refits.

        Args:
            network: A network of the table's space.
            measured_ms: Its measured latency; timed with
                :func:`~nas_optuna.cost.measure_latency` on the table's device when
                ``None``.
            warmup: Untimed forwards of that measurement.
            repeats: Timed forwards of that measurement.

        Returns:
            The point added.
        """
        raw = self.estimate(network, calibrated=False)
        if measured_ms is None:
            measured_ms = measure_latency(
                network,
                self.input_size,
                in_channels=self.in_channels,
                device=self.device,
                warmup=warmup,
                repeats=repeats,
            ).median_ms
        point = (float(raw), float(measured_ms))
        self.calibration_points.append(point)
        self.fit_calibration()
        return point

    def fit_calibration(self) -> tuple[float, float]:
        """Fits ``(a, b)`` to :attr:`calibration_points` by least squares of relative error.

        Minimises ``sum(((a * s + b) - m) / m) ** 2)`` over the points ``(s, m)``, the
        squared percentage error that MdAPE reads. With fewer than
        ``CALIBRATION_INTERCEPT_POINTS`` points, ``b`` is fixed at 0 and only the ratio
        ``a`` is fitted: on the few noisy points of a warm-up, a fitted intercept was
        measured to extrapolate worse than the ratio alone (the sum already contains the
        call overheads, so what is left is mostly proportional). A fit with ``a <= 0``
        falls back to the ratio, and no points give ``(1, 0)``, so the estimate always
        increases with the sum of unit costs.
        """
        points = np.asarray(self.calibration_points, dtype=np.float64).reshape(-1, 2)
        points = points[(points[:, 0] > 0) & (points[:, 1] > 0)]
        a, b = 1.0, 0.0
        if len(points):
            relative = points[:, 0] / points[:, 1]  # s / m
            a = float(relative.sum() / (relative**2).sum())
            if len(points) >= CALIBRATION_INTERCEPT_POINTS and np.ptp(points[:, 0]) > 0:
                design = np.stack([relative, 1.0 / points[:, 1]], axis=1)
                fit_a, fit_b = np.linalg.lstsq(design, np.ones(len(points)), rcond=None)[0]
                if fit_a > 0:
                    a, b = float(fit_a), float(fit_b)
        self.calibration = (a, b)
        return self.calibration

    # --- persistence ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able content of the table."""
        return {
            "format": _FORMAT,
            "space": self.space,
            "stem_id": self.stem_id,
            "input_size": list(self.input_size),
            "in_channels": self.in_channels,
            "device": str(self.device),
            "fingerprint": self.fingerprint,
            "protocol": {"warmup": self.warmup, "repeats": self.repeats},
            "calibration": {
                "a": self.calibration[0],
                "b": self.calibration[1],
                "points": [list(p) for p in self.calibration_points],
            },
            "entries": dict(sorted(self.entries.items())),
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        path: str | os.PathLike[str] | None = None,
        check_device: bool = True,
    ) -> CostTable:
        """Rebuilds a table from :meth:`to_dict`'s output.

        Raises:
            CostTableMismatchError: Another format, or (with ``check_device``) a
                fingerprint other than the current one of the table's device.
        """
        if data.get("format") != _FORMAT:
            raise CostTableMismatchError(
                f"cost table format {data.get('format')!r} is not {_FORMAT}"
            )
        protocol = data.get("protocol", {})
        table = cls(
            data["space"],
            tuple(data["input_size"]),
            device=data["device"],
            in_channels=int(data["in_channels"]),
            stem_id=data.get("stem_id"),
            warmup=int(protocol.get("warmup", 2)),
            repeats=int(protocol.get("repeats", 10)),
            path=path,
        )
        stored = dict(data["fingerprint"])
        if check_device and stored != table.fingerprint:
            raise CostTableMismatchError(
                f"cost table measured on {stored} cannot be used on {table.fingerprint}"
            )
        table.fingerprint = stored
        table.entries = {str(k): float(v) for k, v in data["entries"].items()}
        calibration = data.get("calibration", {})
        table.calibration_points = [
            (float(s), float(m)) for s, m in calibration.get("points", [])
        ]
        table.calibration = (float(calibration.get("a", 1.0)), float(calibration.get("b", 0.0)))
        return table

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check_device: bool = True) -> CostTable:
        """Reads a table saved by :meth:`save`.

        Raises:
            CostTableMismatchError: See :meth:`from_dict`.
            OSError, ValueError: The file cannot be read or is not JSON.

        Example:
            >>> table.save("table.json")
            >>> CostTable.load("table.json").entries == table.entries
            True
        """
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls.from_dict(data, path=path, check_device=check_device)

    def save(self, path: str | os.PathLike[str] | None = None, *, merge: bool = True) -> Path:
        """Writes the table as JSON, atomically; returns the path.

        Args:
            path: Target file; :attr:`path` when ``None`` (which ``path`` then becomes).
            merge: First add the entries and calibration points of a compatible table
                already at ``path`` (written by a concurrent worker) to this one.

        Raises:
            ValueError: Neither ``path`` nor :attr:`path` is set.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("CostTable.save needs a path: none given and table.path is unset")
        self.path = target
        if merge and target.exists():
            with contextlib.suppress(OSError, ValueError, KeyError, CostTableMismatchError):
                self._merge(CostTable.load(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1, sort_keys=False)
        with atomic_path(target) as temporary:
            Path(temporary).write_text(text, encoding="utf-8")
        return target

    def _merge(self, other: CostTable) -> None:
        if (other.space, other.input_size, other.in_channels, other.stem_id) != (
            self.space,
            self.input_size,
            self.in_channels,
            self.stem_id,
        ) or other.fingerprint != self.fingerprint:
            return
        for key, value in other.entries.items():
            self.entries.setdefault(key, value)
        known = set(self.calibration_points)
        extra = [p for p in other.calibration_points if p not in known]
        if extra:
            self.calibration_points.extend(extra)
            self.fit_calibration()


def open_cost_table(
    space: Any,
    input_size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    in_channels: int = 3,
    cache_dir: str | os.PathLike[str] | None = None,
    warmup: int = 2,
    repeats: int = 10,
) -> CostTable:
    """The cached table of ``space`` on ``device`` at ``input_size``, or a new empty one.

    A cached file that cannot be read, or that belongs to another device fingerprint, is
    not used (it is overwritten by the new table's first :meth:`CostTable.save`).

    Example:
        >>> table = open_cost_table(get_space("template"), (64, 64), cache_dir="tables")
        >>> table.path.parent.name
        'tables'
    """
    path = cost_table_path(
        space, input_size, device=device, in_channels=in_channels, cache_dir=cache_dir
    )
    if path.exists():
        try:
            table = CostTable.load(path)
        except CostTableMismatchError as error:
            _LOGGER.warning("not reusing cost table %s: %s", path, error)
        except (OSError, ValueError, KeyError, TypeError) as error:
            _LOGGER.warning("cannot read cost table %s (%s); starting a new one", path, error)
        else:
            if table.space == _space_identity(space) and table.input_size == tuple(input_size):
                return table
            _LOGGER.warning("cost table %s describes another space or size; not reused", path)
    return CostTable(
        space,
        input_size,
        device=device,
        in_channels=in_channels,
        stem_id=getattr(space, "stem_id", None),
        warmup=warmup,
        repeats=repeats,
        path=path,
    )


def build_cost_table(
    space: Any,
    input_size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    n_architectures: int = 8,
    num_classes: int = 19,
    in_channels: int = 3,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    warmup: int = 2,
    repeats: int = 10,
    calibration_warmup: int = 3,
    calibration_repeats: int = 15,
    save: bool = True,
    progress: Callable[[str], None] | None = None,
) -> CostTable:
    """Opens (or creates) the cached table of ``space`` and warms it.

    Warming builds the random architectures of seeds ``seed + k`` for ``k`` from the
    number of calibration points the table already has up to ``n_architectures - 1``,
    measures their units that the table lacks and measures each whole network
    (:func:`~nas_optuna.cost.measure_latency`) as a calibration point; the calibration is
    refitted and the table saved after each. A table that already has
    ``n_architectures`` calibration points is returned as loaded ("built once").

    Args:
        space: A :class:`~search_spaces.SearchSpace` (``random_architecture``, ``build``,
            ``options``, ``stem_id``).
        input_size: ``(H, W)``.
        device: Device to time on; the networks are built there.
        n_architectures: Random architectures to warm the table with.
        num_classes: Classes of the built networks.
        in_channels: Channels of the network input.
        cache_dir: Folder of the cached tables (:func:`default_cache_dir` if ``None``).
        seed: First seed of the random architectures.
        warmup: Untimed calls per unit.
        repeats: Timed samples per unit.
        calibration_warmup: Untimed forwards of each whole-network measurement.
        calibration_repeats: Timed forwards of each whole-network measurement.
        save: Save the table to the cache (after each architecture).
        progress: Called with a one-line message after each architecture.

    Example:
        >>> table = build_cost_table(get_space("auxcell"), (64, 64), n_architectures=2)
        >>> len(table.calibration_points)
        2
    """
    table = open_cost_table(
        space,
        input_size,
        device=device,
        in_channels=in_channels,
        cache_dir=cache_dir,
        warmup=warmup,
        repeats=repeats,
    )
    for offset in range(seed + len(table.calibration_points), seed + n_architectures):
        network = space.build(space.random_architecture(seed=offset), num_classes=num_classes)
        network.to(device)
        added = table.measure_missing(network)
        raw, measured = table.add_calibration_point(
            network, warmup=calibration_warmup, repeats=calibration_repeats
        )
        if save:
            table.save()
        if progress is not None:
            progress(
                f"{table.space.get('name')} seed {offset}: {added} new units, "
                f"sum {raw:.2f} ms, measured {measured:.2f} ms"
            )
    return table
