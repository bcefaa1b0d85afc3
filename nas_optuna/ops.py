"""Named candidate operations and aggregations shared by every search space.

Each search space refers to operations by a stable name and builds them with
:func:`build_op`; two-input merges of the WACV 2020 templates are built with
:func:`build_aggregation`. Every operation factory has the uniform signature
``(c_in, c_out, stride, repeats) -> nn.Module`` so that spaces can treat them alike.

Four families are registered in :data:`OPS`:

* **Nekrasov et al.** (CVPR 2019 auxiliary-cell decoder, WACV 2020 templates):
  ``conv1x1``, ``conv3x3``, ``conv3x3_dil3``, ``conv3x3_dil12``, ``sep_conv_3x3``,
  ``sep_conv_5x5``, ``sep_conv_3x3_dil3``, ``sep_conv_5x5_dil6``,
  ``global_average_pool``, ``max_pool_3x3``, ``skip_connect``, ``none``. Their
  structure follows ``shared/spec/reference-semantics.md`` exactly, because the
  parameter counts of the released architectures must be reproduced to the unit.
  Only the ``sep_conv_*`` ops honour ``repeats`` (and apply ``stride`` in *every*
  repeat, as the released models do); ``global_average_pool`` and ``skip_connect``
  ignore ``stride``.
* **CAS** (Zhang et al., CVPR 2019), backbone set O_b with prefix ``cas_`` and
  multi-scale set O_ms with prefix ``cas_ms_``. The repeat count of these ops is part
  of their name (the paper lists e.g. "3x3 conv" and "3x3 conv, repeat 2" as two
  different candidates), so they ignore ``repeats``. Only the first layer of a
  repeated op carries the stride.
* **RSPNet**, prefix ``rsp_``: the five operators of its normal cell. They ignore
  ``repeats``.

Conventions of the CAS and RSPNet ops, where the papers are silent:

* Every convolution unit is **Conv-BN-ReLU** (convolution without bias, affine BN,
  ReLU), the ordering the Nekrasov ops use, so that one building block serves all
  families. A separable unit is depthwise kxk -> pointwise 1x1 -> BN -> ReLU.
* A shortcut that must change the channel count or the resolution uses a strided
  1x1 conv -> BN projection (ResNet "option B"), not DARTS' two-branch factorized
  reduce, because the latter breaks on odd spatial sizes and needs an even ``c_out``.
* Pooling ops with ``c_in != c_out`` first project with 1x1 conv -> BN (as the
  Nekrasov ``max_pool_3x3`` does) and then pool; 3x3 average pooling does not count
  the zero padding.
* Pooled convolutions average-pool 2x2 with stride 2 (ceil mode, so odd and 1x1
  inputs work), apply their 3x3 Conv-BN-ReLU units and resize bilinearly to
  ``ceil(H / stride)``.
* Residual SPP with an ``n x n`` window average-pools non-overlapping ``n x n``
  windows (partial windows at the border are averaged over their valid pixels; the
  window shrinks to the input when the input is smaller), encodes with a 1x1
  Conv-BN-ReLU, resizes bilinearly and adds the result to the (projected) input.
* Spatially decomposed ``k x 1 then 1 x k`` convs have no non-linearity between the
  two factors (they factorise one large kernel) and end with BN -> ReLU.

All bilinear resizes use ``align_corners=False``. Operations run on CPU and CUDA,
under :func:`torch.autocast` and with channels-last inputs, for any spatial size
>= 1. Modules containing BN after a global pooling need a batch of at least two in
training mode, as in the authors' models.

Example:
    >>> import torch
    >>> from nas_optuna.ops import build_op
    >>> op = build_op("sep_conv_3x3", 24, 48, stride=2, repeats=2)
    >>> op(torch.randn(2, 24, 32, 32)).shape
    torch.Size([2, 48, 8, 8])
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_optuna.registry import Registry

__all__ = [
    "AGGREGATIONS",
    "CAS_BACKBONE_OPS",
    "CAS_MS_OPS",
    "CVPR2019_OPS",
    "OPS",
    "OPS_IGNORING_STRIDE",
    "OPS_WITH_REPEATS",
    "RSP_OPS",
    "WACV2020_OPS",
    "AggregationFactory",
    "OpFactory",
    "build_aggregation",
    "build_op",
    "conv_bn_relu",
    "resize",
]

OpFactory = Callable[[int, int, int, int], nn.Module]
"""Builds an operation from ``(c_in, c_out, stride, repeats)``."""

AggregationFactory = Callable[[int, int, int, bool], nn.Module]
"""Builds an aggregation from ``(c_in1, c_in2, c_out, larger)``."""

OPS: Registry[OpFactory] = Registry("operation")
"""Every named operation, ``name -> factory``."""

AGGREGATIONS: Registry[AggregationFactory] = Registry("aggregation")
"""Two-input aggregations of the WACV 2020 templates, ``name -> factory``."""


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def conv_bn_relu(
    c_in: int,
    c_out: int,
    kernel_size: int | tuple[int, int] = 1,
    stride: int | tuple[int, int] = 1,
    dilation: int = 1,
) -> nn.Sequential:
    """Conv (no bias, "same" padding) -> BN -> ReLU: the layer every space's glue uses.

    Example:
        >>> conv_bn_relu(24, 48)(torch.zeros(1, 24, 8, 8)).shape
        torch.Size([1, 48, 8, 8])
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    padding = (dilation * (kh // 2), dilation * (kw // 2))
    return nn.Sequential(
        nn.Conv2d(
            c_in, c_out, (kh, kw), stride=stride, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(c_out),
        # In place is safe: the BN output is a fresh tensor nobody else holds.
        nn.ReLU(inplace=True),
    )


def _sep_unit(c_in: int, c_out: int, kernel_size: int, stride: int, dilation: int) -> nn.Sequential:
    """Depthwise kxk (groups=c_in) -> pointwise 1x1 -> BN -> ReLU, no biases."""
    return nn.Sequential(
        nn.Conv2d(
            c_in,
            c_in,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=c_in,
            bias=False,
        ),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _projection(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Strided 1x1 conv (no bias) -> BN, without ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
        nn.BatchNorm2d(c_out),
    )


def _tile_factor(c_in: int, c_out: int, op: str) -> int:
    if c_out % c_in != 0:
        raise ValueError(
            f"{op} tiles channels, so c_out must be a multiple of c_in; got c_in={c_in}, "
            f"c_out={c_out}"
        )
    return c_out // c_in


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _strided_size(x: torch.Tensor, stride: int) -> tuple[int, int]:
    """``ceil(H / stride), ceil(W / stride)``: what a "same"-padded strided op yields."""
    h, w = x.shape[-2:]
    return -(-h // stride), -(-w // stride)


class _GlobalAveragePool(nn.Module):
    """Spatial mean -> conv1x1-BN-ReLU -> bilinear resize back to the input size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        # From a 1x1 map the bilinear resize is an exact broadcast; F.interpolate (rather
        # than expand) returns a real tensor that callers may modify in place.
        return F.interpolate(
            self.conv(pooled), size=x.shape[-2:], mode="bilinear", align_corners=False
        )


class _TileChannels(nn.Module):
    """Repeats the channels ``factor`` times: output channel k is input channel k % C."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.factor == 1 else x.repeat(1, self.factor, 1, 1)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class _Zero(nn.Module):
    """Subsamples by ``stride``, tiles channels ``factor`` times and multiplies by 0.

    Multiplying (rather than allocating zeros) keeps the authors' semantics: the output
    stays connected to the graph and follows the input's dtype, device and layout.
    """

    def __init__(self, stride: int, factor: int) -> None:
        super().__init__()
        self.stride = stride
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return x.repeat(1, self.factor, 1, 1).mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, factor={self.factor}"


class _PooledConv(nn.Module):
    """2x2 avg pool stride 2 -> 3x3 Conv-BN-ReLU units -> bilinear resize (CAS)."""

    def __init__(self, c_in: int, c_out: int, stride: int, units: int) -> None:
        super().__init__()
        self.stride = stride
        self.convs = nn.Sequential(
            *(conv_bn_relu(c_in if i == 0 else c_out, c_out, 3) for i in range(units))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = _strided_size(x, self.stride)
        # Ceil mode keeps the last row/column of odd inputs and lets 1x1 inputs through.
        pooled = F.avg_pool2d(x, 2, stride=2, ceil_mode=True, count_include_pad=False)
        return resize(self.convs(pooled), target)


class _ResidualSPP(nn.Module):
    """Residual spatial pyramid pooling with ``window x window`` average pooling (CAS)."""

    def __init__(self, c_in: int, c_out: int, stride: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.shortcut: nn.Module = (
            nn.Identity() if c_in == c_out and stride == 1 else _projection(c_in, c_out, stride)
        )
        self.encode = conv_bn_relu(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shortcut(x)
        h, w = x.shape[-2:]
        # Shrink the window on inputs smaller than it, so the op works at any size.
        kernel = (min(self.window, h), min(self.window, w))
        context = F.avg_pool2d(x, kernel, stride=kernel, ceil_mode=True)
        return out + resize(self.encode(context), tuple(out.shape[-2:]))

    def extra_repr(self) -> str:
        return f"window={self.window}"


class _AdaptResize(nn.Module):
    """Common front of the aggregations: adapt channels, then bring to one resolution."""

    def __init__(self, c_in1: int, c_in2: int, c_out: int, larger: bool) -> None:
        super().__init__()
        self.larger = larger
        # No module at all for matching inputs: the released parameter counts rely on it.
        self.adapt1: nn.Module = nn.Identity() if c_in1 == c_out else conv_bn_relu(c_in1, c_out)
        self.adapt2: nn.Module = nn.Identity() if c_in2 == c_out else conv_bn_relu(c_in2, c_out)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.adapt1(x), self.adapt2(y)
        pick = max if self.larger else min
        # Per dimension, so inputs of different aspect ratios still get one common size.
        size = (pick(x.shape[-2], y.shape[-2]), pick(x.shape[-1], y.shape[-1]))
        return resize(x, size), resize(y, size)

    def extra_repr(self) -> str:
        return f"larger={self.larger}"


class _ParametricSum(_AdaptResize):
    """``a * x + b * y`` with learnable per-channel weights initialised to ones."""

    def __init__(self, c_in1: int, c_in2: int, c_out: int, larger: bool) -> None:
        super().__init__(c_in1, c_in2, c_out, larger)
        self.a = nn.Parameter(torch.ones(c_out))
        self.b = nn.Parameter(torch.ones(c_out))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, y = super().forward(x, y)
        # Cast the fp32 weights to the activations' dtype so autocast keeps half precision.
        a = self.a.to(x.dtype).view(1, -1, 1, 1)
        b = self.b.to(y.dtype).view(1, -1, 1, 1)
        return a * x + b * y


class _ConcatReduce(_AdaptResize):
    """Concatenate -> BN(2C) -> ReLU -> conv1x1 (2C -> C, no bias)."""

    def __init__(self, c_in1: int, c_in2: int, c_out: int, larger: bool) -> None:
        super().__init__(c_in1, c_in2, c_out, larger)
        self.reduce = nn.Sequential(
            nn.BatchNorm2d(2 * c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * c_out, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, y = super().forward(x, y)
        if x.dtype != y.dtype:
            # Under autocast one input may be fp32 (no adapt) and the other half precision.
            y = y.to(x.dtype)
        return self.reduce(torch.cat([x, y], dim=1))


# --------------------------------------------------------------------------------------
# Factories (uniform signature: c_in, c_out, stride, repeats)
# --------------------------------------------------------------------------------------


def _conv_op(
    c_in: int, c_out: int, stride: int, repeats: int, *, kernel_size: int, dilation: int = 1
) -> nn.Module:
    """Nekrasov conv: one Conv-BN-ReLU; ignores ``repeats``."""
    del repeats
    return conv_bn_relu(c_in, c_out, kernel_size, stride, dilation)


def _sep_conv_op(
    c_in: int, c_out: int, stride: int, repeats: int, *, kernel_size: int, dilation: int = 1
) -> nn.Module:
    """Nekrasov sep conv: ``repeats`` separable units, each with the same ``stride``."""
    return nn.Sequential(
        *(
            _sep_unit(c_in if i == 0 else c_out, c_out, kernel_size, stride, dilation)
            for i in range(repeats)
        )
    )


def _global_average_pool_op(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
    """Image pooling branch; ignores ``stride`` and ``repeats``."""
    del stride, repeats
    return _GlobalAveragePool(c_in, c_out)


def _max_pool_op(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
    """conv1x1 -> BN (always, even when ``c_in == c_out``) -> 3x3 max pool with stride."""
    del repeats
    return nn.Sequential(_projection(c_in, c_out, 1), nn.MaxPool2d(3, stride=stride, padding=1))


def _skip_connect_op(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
    """Channel tiling; ignores ``stride`` and ``repeats``."""
    del stride, repeats
    return _TileChannels(_tile_factor(c_in, c_out, "skip_connect"))


def _none_op(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
    """Zero edge; subsamples by ``stride``, ignores ``repeats``."""
    del repeats
    return _Zero(stride, _tile_factor(c_in, c_out, "none"))


def _identity_op(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
    """Identity, or a 1x1 conv-BN projection when the shape changes; ignores ``repeats``."""
    del repeats
    if c_in == c_out and stride == 1:
        return nn.Identity()
    return _projection(c_in, c_out, stride)


def _pool_op(c_in: int, c_out: int, stride: int, repeats: int, *, kind: str) -> nn.Module:
    """3x3 max/avg pooling, after a 1x1 conv-BN projection if channels change."""
    del repeats
    pool: nn.Module
    if kind == "max":
        pool = nn.MaxPool2d(3, stride=stride, padding=1)
    else:
        pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if c_in == c_out:
        return pool
    return nn.Sequential(_projection(c_in, c_out, 1), pool)


def _conv_stack_op(
    c_in: int,
    c_out: int,
    stride: int,
    repeats: int,
    *,
    units: int,
    kernel_size: int = 3,
    dilation: int = 1,
) -> nn.Module:
    """``units`` Conv-BN-ReLU layers; only the first strides and changes channels."""
    del repeats
    return nn.Sequential(
        *(
            conv_bn_relu(
                c_in if i == 0 else c_out, c_out, kernel_size, stride if i == 0 else 1, dilation
            )
            for i in range(units)
        )
    )


def _sep_stack_op(
    c_in: int, c_out: int, stride: int, repeats: int, *, units: int, kernel_size: int = 3
) -> nn.Module:
    """``units`` separable units; only the first strides and changes channels."""
    del repeats
    return nn.Sequential(
        *(
            _sep_unit(c_in if i == 0 else c_out, c_out, kernel_size, stride if i == 0 else 1, 1)
            for i in range(units)
        )
    )


def _pooled_conv_op(c_in: int, c_out: int, stride: int, repeats: int, *, units: int) -> nn.Module:
    del repeats
    return _PooledConv(c_in, c_out, stride, units)


def _decomposed_conv_op(
    c_in: int, c_out: int, stride: int, repeats: int, *, kernel_size: int
) -> nn.Module:
    """``k x 1`` then ``1 x k`` conv (no bias, no activation between) -> BN -> ReLU."""
    del repeats
    pad = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, (kernel_size, 1), stride=(stride, 1), padding=(pad, 0), bias=False),
        nn.Conv2d(c_out, c_out, (1, kernel_size), stride=(1, stride), padding=(0, pad), bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _residual_spp_op(c_in: int, c_out: int, stride: int, repeats: int, *, window: int) -> nn.Module:
    del repeats
    return _ResidualSPP(c_in, c_out, stride, window)


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------

# Nekrasov et al. (CVPR 2019 / WACV 2020), structure from the reference semantics.
OPS.add("conv1x1", functools.partial(_conv_op, kernel_size=1))
OPS.add("conv3x3", functools.partial(_conv_op, kernel_size=3))
OPS.add("conv3x3_dil3", functools.partial(_conv_op, kernel_size=3, dilation=3))
OPS.add("conv3x3_dil12", functools.partial(_conv_op, kernel_size=3, dilation=12))
OPS.add("sep_conv_3x3", functools.partial(_sep_conv_op, kernel_size=3))
OPS.add("sep_conv_5x5", functools.partial(_sep_conv_op, kernel_size=5))
OPS.add("sep_conv_3x3_dil3", functools.partial(_sep_conv_op, kernel_size=3, dilation=3))
OPS.add("sep_conv_5x5_dil6", functools.partial(_sep_conv_op, kernel_size=5, dilation=6))
OPS.add("global_average_pool", _global_average_pool_op)
OPS.add("max_pool_3x3", _max_pool_op)
OPS.add("skip_connect", _skip_connect_op)
OPS.add("none", _none_op)

# CAS backbone set O_b. The paper lists the separable conv only as "repeat 2" and
# "repeat 4" (a separable conv is "applied at least twice in an operation").
OPS.add("cas_identity", _identity_op)
OPS.add("cas_max_pool_3x3", functools.partial(_pool_op, kind="max"))
OPS.add("cas_avg_pool_3x3", functools.partial(_pool_op, kind="avg"))
OPS.add("cas_conv_3x3", functools.partial(_conv_stack_op, units=1))
OPS.add("cas_conv_3x3_rep2", functools.partial(_conv_stack_op, units=2))
OPS.add("cas_sep_conv_3x3_rep2", functools.partial(_sep_stack_op, units=2))
OPS.add("cas_sep_conv_3x3_rep4", functools.partial(_sep_stack_op, units=4))
OPS.add("cas_dil_conv_3x3", functools.partial(_conv_stack_op, units=1, dilation=2))
OPS.add("cas_dil_conv_3x3_rep2", functools.partial(_conv_stack_op, units=2, dilation=2))
OPS.add("cas_pooled_conv_3x3", functools.partial(_pooled_conv_op, units=1))
OPS.add("cas_pooled_conv_3x3_rep2", functools.partial(_pooled_conv_op, units=2))
# CAS appends a "None" edge during the search only (section 4.1).
OPS.add("cas_none", _none_op)

# CAS multi-scale set O_ms.
for _dilation in (1, 2, 4, 8):
    OPS.add(
        f"cas_ms_conv_3x3_dil{_dilation}",
        functools.partial(_conv_stack_op, units=1, dilation=_dilation),
    )
for _kernel in (15, 25):
    OPS.add(
        f"cas_ms_conv_{_kernel}x1_1x{_kernel}",
        functools.partial(_decomposed_conv_op, kernel_size=_kernel),
    )
for _window in (8, 16, 24):
    OPS.add(
        f"cas_ms_residual_spp_{_window}x{_window}",
        functools.partial(_residual_spp_op, window=_window),
    )
OPS.add("cas_ms_identity", _identity_op)
del _dilation, _kernel, _window

# RSPNet normal-cell operators.
OPS.add("rsp_conv_3x3", functools.partial(_conv_stack_op, units=1))
OPS.add("rsp_dw_conv_3x3", functools.partial(_sep_stack_op, units=1))
OPS.add("rsp_conv_5x5", functools.partial(_conv_stack_op, units=1, kernel_size=5))
OPS.add("rsp_dil_conv_3x3", functools.partial(_conv_stack_op, units=1, dilation=2))
OPS.add("rsp_identity", _identity_op)

AGGREGATIONS.add("psum", _ParametricSum)
AGGREGATIONS.add("cat", _ConcatReduce)

CVPR2019_OPS: tuple[str, ...] = (
    "conv1x1",
    "conv3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "global_average_pool",
    "conv3x3_dil3",
    "conv3x3_dil12",
    "sep_conv_3x3_dil3",
    "sep_conv_5x5_dil6",
    "skip_connect",
    "none",
)
"""The 11 cell ops of the CVPR 2019 decoder space, in genotype index order."""

WACV2020_OPS: tuple[str, ...] = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "global_average_pool",
    "max_pool_3x3",
    "sep_conv_5x5_dil6",
    "skip_connect",
)
"""The 6 template ops of the WACV 2020 space, in genotype index order."""

CAS_BACKBONE_OPS: tuple[str, ...] = tuple(
    n for n in OPS if n.startswith("cas_") and not n.startswith("cas_ms_")
)
"""CAS O_b plus the search-time ``cas_none`` edge (last; exclude it when deriving)."""

CAS_MS_OPS: tuple[str, ...] = (*(n for n in OPS if n.startswith("cas_ms_")), "cas_none")
"""CAS O_ms plus the search-time ``cas_none`` edge (last; exclude it when deriving)."""

RSP_OPS: tuple[str, ...] = tuple(n for n in OPS if n.startswith("rsp_"))
"""The five RSPNet normal-cell operators."""

OPS_IGNORING_STRIDE: frozenset[str] = frozenset({"global_average_pool", "skip_connect"})
"""Ops whose output keeps the input resolution whatever ``stride`` is."""

OPS_WITH_REPEATS: frozenset[str] = frozenset(
    {"sep_conv_3x3", "sep_conv_5x5", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6"}
)
"""Ops that honour ``repeats``; they apply ``stride`` once per repeat. Others ignore it."""


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def build_op(name: str, c_in: int, c_out: int, stride: int = 1, *, repeats: int = 1) -> nn.Module:
    """Builds the operation registered under ``name``.

    Args:
        name: A name in :data:`OPS`.
        c_in: Input channels.
        c_out: Output channels.
        stride: Spatial stride; ops in :data:`OPS_IGNORING_STRIDE` ignore it, the others
            map ``H`` to ``ceil(H / stride)`` (per repeat for :data:`OPS_WITH_REPEATS`).
        repeats: Number of repeats ``R``; honoured only by :data:`OPS_WITH_REPEATS`.

    Returns:
        A module mapping ``(N, c_in, H, W)`` to ``(N, c_out, H', W')``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ValueError: A size argument is not a positive integer, or ``skip_connect`` /
            ``none`` get a ``c_out`` that is not a multiple of ``c_in``.
    """
    factory = OPS.get(name)
    _check_positive(c_in=c_in, c_out=c_out, stride=stride, repeats=repeats)
    module = factory(c_in, c_out, stride, repeats)
    # Names the module's structure for per-operation cost tables (nas_optuna.cost_table);
    # arguments an op ignores are normalised so that equal keys mean equal modules.
    module.cost_key = (
        f"op:{name}|c_in={c_in}|c_out={c_out}"
        f"|stride={1 if name in OPS_IGNORING_STRIDE else stride}"
        f"|repeats={repeats if name in OPS_WITH_REPEATS else 1}"
    )
    return module


def build_aggregation(name: str, c_in1: int, c_in2: int, c_out: int, *, larger: bool) -> nn.Module:
    """Builds the two-input aggregation registered under ``name``.

    The module's ``forward(x, y)`` first adapts each input whose channel count differs
    from ``c_out`` with conv1x1-BN-ReLU, then resizes both bilinearly to the larger (or
    smaller) of their spatial sizes, per dimension, and merges them into ``c_out``
    channels.

    Args:
        name: A name in :data:`AGGREGATIONS` (``"psum"`` or ``"cat"``).
        c_in1: Channels of the first input.
        c_in2: Channels of the second input.
        c_out: Output channels.
        larger: Merge at the larger resolution if true, at the smaller otherwise.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ValueError: A channel count is not a positive integer.
    """
    factory = AGGREGATIONS.get(name)
    _check_positive(c_in1=c_in1, c_in2=c_in2, c_out=c_out)
    module = factory(c_in1, c_in2, c_out, bool(larger))
    # See build_op.
    module.cost_key = f"agg:{name}|c_in1={c_in1}|c_in2={c_in2}|c_out={c_out}|larger={bool(larger)}"
    return module
