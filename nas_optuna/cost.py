"""Cost of a network: parameter count, multiply-accumulates, latency and output stride.

Everything here works on any :class:`torch.nn.Module`, generated or hand-written.

Conventions:
    * **Parameters** are ``module.parameters()`` — shared tensors once, buffers (e.g.
      batch-norm running statistics) never.
    * **MACs** are multiply-accumulates of one forward pass as counted by
      :class:`torch.utils.flop_counter.FlopCounterMode`, divided by two: that counter
      books 2 FLOPs per multiply-accumulate of convolutions (transposed ones included),
      matrix products (``nn.Linear``, attention) and their batched variants. Bias
      additions, element-wise operations and activations, batch norm, pooling and
      interpolation are **not** counted, so the figure is the usual "conv/matmul MACs"
      found in papers, not a full operation count.
    * MACs, latency and output stride are measured in eval mode under
      :func:`torch.no_grad`; afterwards every submodule gets back its own training flag
      (not just the root's, so a frozen batch norm inside a training model stays frozen).
    * **Latency** is of a batch of one ``(1, in_channels, H, W)`` standard-normal input,
      timed per forward with :class:`torch.utils.benchmark.Timer` (which synchronises
      CUDA around each measurement) at the current ``torch.get_num_threads()`` — the
      Timer would otherwise pin one thread. It is reported as the median and the
      interquartile range (75th minus 25th percentile, linear interpolation) of
      ``repeats`` single-forward samples in milliseconds, after ``warmup`` untimed
      forwards, together with the protocol and device fingerprint needed to compare it.
      Latencies are comparable only between equal protocols.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from nas_optuna.cost import count_macs, count_parameters
    >>> conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    >>> count_parameters(conv)
    224
    >>> count_macs(conv, torch.zeros(1, 3, 4, 4))
    3456
"""

from __future__ import annotations

import contextlib
import platform
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "LatencyResult",
    "count_macs",
    "count_parameters",
    "device_fingerprint",
    "measure_latency",
    "measure_peak_memory",
    "output_stride",
]


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module``.

    Args:
        module: Any module. Parameters shared between submodules count once.
        trainable_only: Count only parameters with ``requires_grad=True``.

    Returns:
        The number of scalars in the (trainable) parameters; buffers are not counted.

    Raises:
        ValueError: ``module`` holds a lazy parameter that has no shape yet.

    Example:
        >>> from torch import nn
        >>> from nas_optuna.cost import count_parameters
        >>> count_parameters(nn.Linear(4, 2))  # 4 * 2 weights + 2 biases
        10
    """
    total = 0
    for name, parameter in module.named_parameters():
        if trainable_only and not parameter.requires_grad:
            continue
        if nn.parameter.is_lazy(parameter):
            raise ValueError(f"parameter {name!r} is lazy; run one forward pass before counting")
        total += parameter.numel()
    return total


def count_macs(module: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> int:
    """Multiply-accumulates of one forward pass of ``module`` on ``inputs``.

    Counts convolutions and matrix products only (see the module docstring); runs in eval
    mode under :func:`torch.no_grad` and restores every submodule's training flag.

    Args:
        module: Any module.
        inputs: One tensor, or a sequence of tensors passed as positional arguments. They
            must be on the module's device; the batch size they carry is counted.

    Returns:
        ``FlopCounterMode``'s total FLOPs ``// 2``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from nas_optuna.cost import count_macs
        >>> count_macs(nn.Linear(4, 2), torch.zeros(3, 4))  # 3 rows * 4 in * 2 out
        24
    """
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    counter = FlopCounterMode(display=False)
    with _eval_mode(module), torch.no_grad(), counter:
        module(*args)
    return int(counter.get_total_flops()) // 2


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one network under a recorded protocol.

    Attributes:
        median_ms: Median of the per-forward samples, in milliseconds.
        iqr_ms: Interquartile range of the samples, in milliseconds.
        protocol: How it was measured: ``device`` (see :func:`device_fingerprint`),
            ``input_size`` ``(H, W)``, ``in_channels``, ``batch`` (always 1), ``dtype``,
            ``warmup``, ``repeats`` and ``threads``.
        samples_ms: The raw per-forward samples, in milliseconds, in measurement order.
    """

    median_ms: float
    iqr_ms: float
    protocol: dict[str, Any]
    samples_ms: tuple[float, ...] = field(default=(), repr=False)


def device_fingerprint(device: torch.device | str) -> dict[str, Any]:
    """What a latency depends on besides the network: device, software, threads.

    Args:
        device: The device the network runs on, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        ``device_type``; ``device_name`` (the CUDA device name, or on CPU
        ``platform.processor()`` falling back to ``platform.machine()`` where the former
        is empty, as on most Linux systems); ``torch_version``; ``cuda_version`` (``None``
        for a CPU-only build); ``num_threads`` (``torch.get_num_threads()``).

    Example:
        >>> from nas_optuna.cost import device_fingerprint
        >>> sorted(device_fingerprint("cpu"))
        ['cuda_version', 'device_name', 'device_type', 'num_threads', 'torch_version']
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = platform.processor() or platform.machine()
    else:
        name = device.type
    return {
        "device_type": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
    }


def measure_latency(
    module: nn.Module,
    input_size: tuple[int, int],
    *,
    in_channels: int = 3,
    device: torch.device | str = "cpu",
    warmup: int = 5,
    repeats: int = 20,
) -> LatencyResult:
    """Batch-1 inference latency of ``module``: median and IQR of ``repeats`` forwards.

    The module is moved to ``device`` and put in eval mode for the measurement; its
    device and every submodule's training flag are restored afterwards. The input is
    standard normal in the dtype of the module's first floating-point parameter
    (``float32`` for a module without one). Each sample is one
    ``Timer.timeit(number=1)``, which itself runs two untimed forwards first, so the
    module sees ``warmup + 3 * repeats`` forwards in all.

    Args:
        module: Network taking one ``(1, in_channels, H, W)`` tensor.
        input_size: ``(H, W)`` of the input.
        in_channels: Channels of the input.
        device: Device to time on.
        warmup: Untimed forwards before timing (cuDNN autotuning, allocator, caches).
        repeats: Timed single-forward samples.

    Returns:
        A :class:`LatencyResult` with the protocol recorded.

    Raises:
        ValueError: A size or count is not positive, or the module is spread over more
            than one device.
        RuntimeError: Some submodule stays in training mode after ``module.eval()``.

    Example:
        >>> from torch import nn
        >>> from nas_optuna.cost import measure_latency
        >>> result = measure_latency(nn.Conv2d(3, 4, 3), (16, 16), warmup=1, repeats=3)
        >>> result.median_ms > 0, result.protocol["batch"]
        (True, 1)
    """
    height, width = _validate_size(input_size)
    _validate_positive(in_channels=in_channels, repeats=repeats)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    device = torch.device(device)
    threads = torch.get_num_threads()
    dtype = _input_dtype(module)

    # A fixed CPU generator: the same input on every device and run.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, in_channels, height, width, generator=generator, dtype=dtype).to(device)

    # Timer synchronises the *current* accelerator, so make the timed device current.
    current = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with current, _on_device(module, device), _eval_mode(module), torch.no_grad():
        for _ in range(warmup):
            module(x)
        # Timer's default timer synchronises CUDA before reading the clock, so queued
        # kernels are included; num_threads would otherwise default to 1.
        timer = Timer(stmt="module(x)", globals={"module": module, "x": x}, num_threads=threads)
        samples_s = [timer.timeit(number=1).times[0] for _ in range(repeats)]

    samples_ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    q25, median, q75 = np.percentile(samples_ms, [25.0, 50.0, 75.0])
    protocol: dict[str, Any] = {
        "device": device_fingerprint(device),
        "input_size": (height, width),
        "in_channels": in_channels,
        "batch": 1,
        "dtype": str(dtype).removeprefix("torch."),
        "warmup": warmup,
        "repeats": repeats,
        "threads": threads,
    }
    return LatencyResult(
        median_ms=float(median),
        iqr_ms=float(q75 - q25),
        protocol=protocol,
        samples_ms=tuple(float(s) for s in samples_ms),
    )


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created under it that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage pointer -> [views alive, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        output = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(output):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0:
                continue
            if key not in self._refs:
                self._refs[key] = [0, size]
                self.live += size
            self._refs[key][0] += 1
            weakref.finalize(tensor, self._release, key)
        self.peak = max(self.peak, self.live)
        return output

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]


def measure_peak_memory(
    module: nn.Module, input_size: tuple[int, int], *, in_channels: int = 3
) -> int:
    """Peak memory of one batch-1 inference forward, in bytes: weights plus activations.

    Parameters and buffers count in full; activations count at their peak, i.e. the most
    bytes of tensors created by the forward that are alive at one time (the input
    included). On CUDA the activation peak is ``torch.cuda.max_memory_allocated`` above
    what was allocated before the forward; on CPU it is tracked per tensor storage with a
    dispatch mode (allocator caching and framework workspaces are not counted). Runs on
    the module's device, in eval mode under :func:`torch.no_grad`.

    Example:
        >>> from torch import nn
        >>> measure_peak_memory(nn.Conv2d(3, 8, 1, bias=False), (4, 4))  # weights 96 B,
        ...                                                              # in 192 B, out 512 B
        800
    """
    height, width = _validate_size(input_size)
    _validate_positive(in_channels=in_channels)
    reference = next(module.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    with _eval_mode(module), torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            x = torch.randn(1, in_channels, height, width, dtype=_input_dtype(module),
                            device=device)
            module(x)
            torch.cuda.synchronize(device)
            activations = torch.cuda.max_memory_allocated(device) - before
        else:
            tracker = _LiveTensorBytes()
            with tracker:
                x = torch.randn(1, in_channels, height, width, dtype=_input_dtype(module))
                module(x)
            activations = tracker.peak
    return int(weights + activations)


def output_stride(
    module: nn.Module, input_size: tuple[int, int] = (64, 64), in_channels: int = 3
) -> int:
    """Ratio of input to output resolution of one forward pass.

    Runs a zero input ``(1, in_channels, H, W)`` on the module's device, in eval mode under
    :func:`torch.no_grad`, restoring every submodule's training flag. A tuple or list
    output is read through its first element and a mapping through its ``"out"`` entry
    (torchvision segmentation models), i.e. the main head.

    Args:
        module: Network whose output ends in ``(h, w)``.
        input_size: ``(H, W)``; choose it divisible by the expected stride.
        in_channels: Channels of the input.

    Returns:
        ``H // h``, which equals ``W // w``.

    Raises:
        ValueError: ``H / h`` or ``W / w`` is not an integer, or they differ.

    Example:
        >>> from torch import nn
        >>> from nas_optuna.cost import output_stride
        >>> output_stride(nn.Conv2d(3, 2, kernel_size=3, stride=2, padding=1))
        2
    """
    height, width = _validate_size(input_size)
    _validate_positive(in_channels=in_channels)
    reference = next(module.parameters(), None)
    if reference is None:
        reference = next(module.buffers(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    x = torch.zeros(1, in_channels, height, width, dtype=_input_dtype(module), device=device)
    with _eval_mode(module), torch.no_grad():
        output = _main_output(module(x))
    if output.dim() < 2:
        raise ValueError(f"output of shape {tuple(output.shape)} has no spatial dimensions")
    out_height, out_width = output.shape[-2:]
    if (
        out_height == 0
        or out_width == 0
        or height % out_height
        or width % out_width
        or height // out_height != width // out_width
    ):
        raise ValueError(
            f"input {height}x{width} -> output {out_height}x{out_width} is not an integer "
            "output stride shared by height and width"
        )
    return height // out_height


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    # Per-submodule flags: module.train(flag) on exit would overwrite deliberately mixed
    # states such as frozen batch norm in a training model.
    flags = [(submodule, submodule.training) for submodule in module.modules()]
    try:
        module.eval()
        still_training = [name for name, sub in module.named_modules() if sub.training]
        if still_training:
            raise RuntimeError(f"submodules still in training mode after eval(): {still_training}")
        yield
    finally:
        for submodule, flag in flags:
            submodule.training = flag


@contextlib.contextmanager
def _on_device(module: nn.Module, device: torch.device) -> Iterator[None]:
    tensors = [*module.parameters(), *module.buffers()]
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"module is spread over several devices {sorted(map(str, devices))}")
    original = devices.pop() if devices else None
    # Compare resolved devices: "cuda" and "cuda:0" are the same place.
    if original is None or _same_device(original, device):
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to(original)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current
        )
    return a.index == b.index or a.index is None or b.index is None


def _input_dtype(module: nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _main_output(output: Any) -> torch.Tensor:
    if isinstance(output, Mapping):
        output = output["out"]
    elif isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"cannot find the main output tensor in a {type(output).__name__}")
    return output


def _validate_size(input_size: tuple[int, int]) -> tuple[int, int]:
    size = tuple(input_size)
    if len(size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(f"input_size must be two positive ints (H, W), got {input_size!r}")
    return size[0], size[1]


def _validate_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
