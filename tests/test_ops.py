"""Tests of the operation and aggregation registries in :mod:`nas_optuna.ops`."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_optuna.exceptions import UnknownNameError
from nas_optuna.ops import (
    AGGREGATIONS,
    CAS_BACKBONE_OPS,
    CAS_MS_OPS,
    CVPR2019_OPS,
    OPS,
    OPS_IGNORING_STRIDE,
    OPS_WITH_REPEATS,
    RSP_OPS,
    WACV2020_OPS,
    build_aggregation,
    build_op,
)

# Written out here rather than read from the module, so that a change of the module's
# declarations is caught by the shape checks below.
NEKRASOV_OPS = (
    "conv1x1",
    "conv3x3",
    "conv3x3_dil3",
    "conv3x3_dil12",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_3x3_dil3",
    "sep_conv_5x5_dil6",
    "global_average_pool",
    "max_pool_3x3",
    "skip_connect",
    "none",
)
IGNORES_STRIDE = {"global_average_pool", "skip_connect"}
STRIDE_PER_REPEAT = {"sep_conv_3x3", "sep_conv_5x5", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6"}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _expected_size(name: str, size: int, stride: int, repeats: int) -> int:
    if name in IGNORES_STRIDE:
        return size
    for _ in range(repeats if name in STRIDE_PER_REPEAT else 1):
        size = math.ceil(size / stride)
    return size


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # The tensors are tiny: thread start-up and contention would dominate the run time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------
# Registry contents
# --------------------------------------------------------------------------------------


def test_registered_names_and_declared_sets() -> None:
    names = OPS.names()
    assert names[: len(NEKRASOV_OPS)] == list(NEKRASOV_OPS)
    assert set(OPS_IGNORING_STRIDE) == IGNORES_STRIDE
    assert set(OPS_WITH_REPEATS) == STRIDE_PER_REPEAT
    for op_set in (CVPR2019_OPS, WACV2020_OPS, CAS_BACKBONE_OPS, CAS_MS_OPS, RSP_OPS):
        assert all(name in OPS for name in op_set)
    # Genotype index order of the released spaces (reference semantics).
    assert CVPR2019_OPS == (
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
    assert WACV2020_OPS == (
        "sep_conv_3x3",
        "sep_conv_5x5",
        "global_average_pool",
        "max_pool_3x3",
        "sep_conv_5x5_dil6",
        "skip_connect",
    )
    # CAS: 11 ops of O_b and 10 of O_ms, each plus the search-time none edge.
    assert len(CAS_BACKBONE_OPS) == 12 and CAS_BACKBONE_OPS[-1] == "cas_none"
    assert len(CAS_MS_OPS) == 11 and CAS_MS_OPS[-1] == "cas_none"
    assert len(RSP_OPS) == 5
    assert AGGREGATIONS.names() == ["psum", "cat"]


# --------------------------------------------------------------------------------------
# Sweeps over every op
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("c_in", "repeats"),
    # Channel growth with both repeat counts, and the width-keeping case once.
    [(8, 1), (8, 2), (16, 1)],
)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", OPS.names())
def test_every_op_forward_backward(name: str, stride: int, repeats: int, c_in: int) -> None:
    op = build_op(name, c_in, 16, stride, repeats=repeats)
    x = torch.randn(2, c_in, 15, 13, requires_grad=True)
    out = op(x)
    assert out.shape == (
        2,
        16,
        _expected_size(name, 15, stride, repeats),
        _expected_size(name, 13, stride, repeats),
    )
    assert torch.isfinite(out).all()
    # Random weights, because the plain sum of a BN output has zero gradient.
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for pname, param in op.named_parameters():
        assert param.grad is not None, f"{name}: {pname} got no gradient"


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", OPS.names())
def test_every_op_on_1x1_input(name: str, stride: int) -> None:
    op = build_op(name, 8, 16, stride, repeats=2)
    out = op(torch.randn(2, 8, 1, 1))
    assert out.shape == (2, 16, 1, 1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS.names())
def test_every_op_channels_last_and_autocast(name: str, device: str) -> None:
    op = build_op(name, 8, 16, 2).to(device)
    x = torch.randn(2, 8, 9, 9, device=device).to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device_type=device, dtype=dtype):
        out = op(x)
    expected = _expected_size(name, 9, 2, 1)
    assert out.shape == (2, 16, expected, expected)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", sorted(set(OPS.names()) - STRIDE_PER_REPEAT))
def test_ops_without_repeats_ignore_them(name: str) -> None:
    assert _params(build_op(name, 8, 16, repeats=1)) == _params(build_op(name, 8, 16, repeats=3))


@pytest.mark.parametrize("name", sorted(STRIDE_PER_REPEAT))
def test_sep_convs_honour_repeats(name: str) -> None:
    one, two = build_op(name, 16, 16, repeats=1), build_op(name, 16, 16, repeats=2)
    assert _params(two) == 2 * _params(one)


# --------------------------------------------------------------------------------------
# Sweeps over every aggregation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [(16, 16, 16), (8, 16, 16), (8, 12, 16)])
@pytest.mark.parametrize("larger", [True, False])
@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_every_aggregation_forward_backward(
    name: str, larger: bool, channels: tuple[int, int, int]
) -> None:
    c1, c2, c_out = channels
    agg = build_aggregation(name, c1, c2, c_out, larger=larger)
    x = torch.randn(2, c1, 15, 15, requires_grad=True)
    y = torch.randn(2, c2, 8, 8, requires_grad=True)
    out = agg(x, y)
    size = 15 if larger else 8
    assert out.shape == (2, c_out, size, size)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and y.grad is not None
    for pname, param in agg.named_parameters():
        assert param.grad is not None, f"{name}: {pname} got no gradient"


@pytest.mark.parametrize("larger", [True, False])
@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_aggregation_picks_size_per_dimension(name: str, larger: bool) -> None:
    agg = build_aggregation(name, 8, 8, 8, larger=larger)
    out = agg(torch.randn(2, 8, 4, 9), torch.randn(2, 8, 7, 3))
    assert out.shape[-2:] == ((7, 9) if larger else (4, 3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_aggregation_channels_last_and_autocast(name: str, device: str) -> None:
    agg = build_aggregation(name, 8, 16, 16, larger=True).to(device)
    x = torch.randn(2, 8, 5, 5, device=device).to(memory_format=torch.channels_last)
    y = torch.randn(2, 16, 3, 3, device=device).to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device_type=device, dtype=dtype):
        out = agg(x, y)
    assert out.shape == (2, 16, 5, 5)
    assert torch.isfinite(out.float()).all()


def test_psum_is_initially_a_plain_sum_after_bilinear_resize() -> None:
    agg = build_aggregation("psum", 4, 4, 4, larger=False)
    x, y = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)
    expected = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False) + y
    torch.testing.assert_close(agg(x, y), expected)
    with torch.no_grad():
        agg.a.fill_(2.0)
        agg.b.zero_()
    torch.testing.assert_close(agg(x, y), 2 * expected - 2 * y)


# --------------------------------------------------------------------------------------
# Exact parameter counts, computed by hand
# --------------------------------------------------------------------------------------


def test_param_count_sep_conv_3x3() -> None:
    # R=1, 24->48: depthwise 3*3*24 + pointwise 24*48 + BN 2*48.
    assert _params(build_op("sep_conv_3x3", 24, 48, repeats=1)) == 9 * 24 + 24 * 48 + 2 * 48
    assert 9 * 24 + 24 * 48 + 2 * 48 == 1464
    # R=2, 48->48: two units of depthwise 3*3*48 + pointwise 48*48 + BN 2*48.
    assert _params(build_op("sep_conv_3x3", 48, 48, repeats=2)) == 2 * (9 * 48 + 48 * 48 + 96)
    assert 2 * (9 * 48 + 48 * 48 + 96) == 5664
    # R=2, 24->48: first unit 24->48 (1464), second 48->48 (2832).
    assert _params(build_op("sep_conv_3x3", 24, 48, repeats=2)) == 1464 + 2832


def test_param_count_sep_conv_5x5_dil6() -> None:
    # R=2, 24->48: unit 1 = 5*5*24 + 24*48 + 2*48 = 1848; unit 2 = 5*5*48 + 48*48 + 2*48 = 3600.
    assert _params(build_op("sep_conv_5x5_dil6", 24, 48, repeats=2)) == 1848 + 3600
    # R=1, 48->48: 5*5*48 + 48*48 + 2*48.
    assert _params(build_op("sep_conv_5x5_dil6", 48, 48)) == 1200 + 2304 + 96


def test_param_count_global_average_pool_max_pool_conv3x3() -> None:
    # conv1x1 24*48 + BN 2*48; stride does not matter.
    assert _params(build_op("global_average_pool", 24, 48, 2)) == 24 * 48 + 2 * 48 == 1248
    # conv1x1 24*48 + BN 2*48 (no ReLU, pooling has no parameters).
    assert _params(build_op("max_pool_3x3", 24, 48, 2)) == 24 * 48 + 2 * 48 == 1248
    # The projection exists even without a channel change: 48*48 + 2*48.
    assert _params(build_op("max_pool_3x3", 48, 48)) == 2304 + 96
    # conv 3*3*24*48 + BN 2*48.
    assert _params(build_op("conv3x3", 24, 48)) == 9 * 24 * 48 + 2 * 48 == 10464
    assert _params(build_op("skip_connect", 24, 48)) == 0
    assert _params(build_op("none", 24, 48, 2)) == 0


def test_param_count_aggregations() -> None:
    # psum without adapt: a and b, 48 each.
    assert _params(build_aggregation("psum", 48, 48, 48, larger=True)) == 2 * 48
    # psum with both adapted: (24*48 + 96) + (32*48 + 96) + 2*48 = 1248 + 1632 + 96.
    assert _params(build_aggregation("psum", 24, 32, 48, larger=True)) == 2976
    # cat without adapt: BN(96) = 192, conv1x1 96*48 = 4608.
    assert _params(build_aggregation("cat", 48, 48, 48, larger=False)) == 192 + 4608 == 4800
    # cat with the first input adapted: 24*48 + 96 = 1248 more.
    assert _params(build_aggregation("cat", 24, 48, 48, larger=False)) == 1248 + 4800


# --------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------


def test_none_returns_zeros() -> None:
    x = torch.randn(2, 8, 15, 15, requires_grad=True)
    out = build_op("none", 8, 16)(x)
    assert out.shape == (2, 16, 15, 15)
    assert torch.count_nonzero(out) == 0
    strided = build_op("none", 8, 16, 2)(x)
    assert strided.shape == (2, 16, 8, 8)
    assert torch.count_nonzero(strided) == 0
    strided.sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


def test_skip_connect_tiles_channels_and_ignores_stride() -> None:
    x = torch.randn(2, 3, 7, 5)
    out = build_op("skip_connect", 3, 12, 2)(x)
    assert out.shape == (2, 12, 7, 5)
    for k in range(12):
        torch.testing.assert_close(out[:, k], x[:, k % 3])
    same = build_op("skip_connect", 3, 3)(x)
    torch.testing.assert_close(same, x)


@pytest.mark.parametrize("name", ["skip_connect", "none"])
def test_tiling_ops_reject_incompatible_channels(name: str) -> None:
    with pytest.raises(ValueError, match="multiple of c_in"):
        build_op(name, 8, 12)


def test_global_average_pool_is_spatially_constant() -> None:
    op = build_op("global_average_pool", 8, 16, 2)
    x = torch.randn(2, 8, 15, 11)
    out = op(x)
    assert out.shape == (2, 16, 15, 11)
    torch.testing.assert_close(out, out[:, :, :1, :1].expand_as(out))
    # The constant is the conv-BN-ReLU of the spatial mean.
    torch.testing.assert_close(
        out[:, :, 0, 0], op.conv(x.mean(dim=(2, 3), keepdim=True))[..., 0, 0]
    )


def test_max_pool_3x3_stride_2_halves() -> None:
    op = build_op("max_pool_3x3", 8, 8, 2)
    assert op(torch.randn(2, 8, 16, 16)).shape == (2, 8, 8, 8)
    assert op(torch.randn(2, 8, 15, 15)).shape == (2, 8, 8, 8)
    op_eval = build_op("max_pool_3x3", 8, 8, 1).eval()
    x = torch.randn(1, 8, 6, 6)
    # Stride 1 keeps the size and is the 3x3 max of the projected input.
    projected = op_eval[0](x)
    torch.testing.assert_close(op_eval(x), F.max_pool2d(projected, 3, 1, 1))


@pytest.mark.parametrize("name", sorted(STRIDE_PER_REPEAT))
@pytest.mark.parametrize("size", [15, 3])
def test_sep_conv_padding_keeps_size(name: str, size: int) -> None:
    op = build_op(name, 8, 8, repeats=2)
    assert op(torch.randn(2, 8, size, size)).shape == (2, 8, size, size)
    # Every repeat strides again: 15 -> 8 -> 4.
    strided = build_op(name, 8, 8, 2, repeats=2)
    assert strided(torch.randn(2, 8, 15, 15)).shape == (2, 8, 4, 4)


def test_sep_conv_layout_matches_reference() -> None:
    op = build_op("sep_conv_5x5_dil6", 4, 8, 2, repeats=2)
    for i, unit in enumerate(op):
        depthwise, pointwise, bn, relu = unit
        c = 4 if i == 0 else 8
        assert depthwise.groups == c and depthwise.stride == (2, 2)
        assert depthwise.dilation == (6, 6) and depthwise.padding == (12, 12)
        assert depthwise.bias is None and pointwise.bias is None
        assert pointwise.kernel_size == (1, 1) and pointwise.out_channels == 8
        assert isinstance(bn, nn.BatchNorm2d) and bn.affine
        assert isinstance(relu, nn.ReLU)


def test_cas_identity_is_identity_without_shape_change() -> None:
    x = torch.randn(2, 8, 5, 5)
    assert build_op("cas_identity", 8, 8)(x) is x
    assert _params(build_op("cas_identity", 8, 16, 2)) == 8 * 16 + 2 * 16


def test_cas_residual_spp_adds_context_to_input() -> None:
    op = build_op("cas_ms_residual_spp_8x8", 4, 4)
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        op.encode[1].weight.zero_()
        op.encode[1].bias.fill_(0.5)
    # With the context branch forced to the constant 0.5 the op is x + 0.5.
    torch.testing.assert_close(op(x), x + 0.5)


def test_unknown_names_raise_with_choices() -> None:
    with pytest.raises(UnknownNameError, match="sep_conv_3x3") as info:
        build_op("sep_conv_7x7", 8, 8)
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError, match="psum"):
        build_aggregation("max", 8, 8, 8, larger=True)


@pytest.mark.parametrize(
    "kwargs", [{"stride": 0}, {"repeats": 0}, {"c_out": 0}, {"stride": True}, {"c_in": 2.0}]
)
def test_build_op_rejects_bad_sizes(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"c_in": 8, "c_out": 8, "stride": 1, "repeats": 1} | kwargs
    with pytest.raises(ValueError, match="positive integer"):
        build_op(
            "conv3x3",
            args["c_in"],  # type: ignore[arg-type]
            args["c_out"],  # type: ignore[arg-type]
            args["stride"],  # type: ignore[arg-type]
            repeats=args["repeats"],  # type: ignore[arg-type]
        )
