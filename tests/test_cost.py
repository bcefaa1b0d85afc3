"""Tests of nas_optuna.cost: parameters, MACs, latency and output stride."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_optuna.cost import (
    LatencyResult,
    count_macs,
    count_parameters,
    device_fingerprint,
    measure_latency,
    output_stride,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1),  # 8 * 3 * 3 * 3 weights + 8 biases = 224
        nn.BatchNorm2d(8),  # 8 weights + 8 biases = 16 (running stats are buffers)
        nn.ReLU(),
        nn.Conv2d(8, 4, kernel_size=1, bias=False),  # 4 * 8 * 1 * 1 = 32
    )  # total 224 + 16 + 32 = 272


class _Recorder(nn.Module):
    """Conv2d that records the training flag and grad mode of each forward."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, stride=stride, padding=1)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.conv(x)


def _mixed_mode_net() -> nn.Sequential:
    """A training net with one deliberately frozen batch norm."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.BatchNorm2d(4))
    net.train()
    net[2].eval()
    return net


def _flags(module: nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


def test_count_parameters_hand_built_net() -> None:
    assert count_parameters(_small_net()) == 272


def test_count_parameters_trainable_only() -> None:
    net = _small_net()
    for parameter in net[0].parameters():
        parameter.requires_grad_(False)
    assert count_parameters(net) == 272
    assert count_parameters(net, trainable_only=True) == 272 - 224


def test_count_parameters_counts_shared_weights_once() -> None:
    linear = nn.Linear(4, 4)  # 16 + 4 = 20
    assert count_parameters(nn.Sequential(linear, nn.ReLU(), linear)) == 20


def test_count_parameters_lazy_module_raises() -> None:
    with pytest.raises(ValueError, match="lazy"):
        count_parameters(nn.LazyLinear(3))


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "padding", "groups", "size"),
    [
        (3, 8, 3, 1, 1, 1, 10),
        (4, 8, 3, 2, 1, 2, 9),  # grouped, strided, odd size
        (6, 6, 3, 2, 0, 6, 11),  # depthwise, no padding
        (8, 4, 1, 1, 0, 1, 7),  # pointwise
        (2, 6, 5, 2, 2, 2, 16),
    ],
)
def test_count_macs_conv_textbook_formula(
    c_in: int, c_out: int, kernel: int, stride: int, padding: int, groups: int, size: int
) -> None:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups)
    out = (size + 2 * padding - kernel) // stride + 1
    expected = out * out * c_out * (c_in // groups) * kernel * kernel
    assert count_macs(conv, torch.zeros(1, c_in, size, size)) == expected
    # MACs scale with the batch.
    assert count_macs(conv, torch.zeros(3, c_in, size, size)) == 3 * expected


@pytest.mark.parametrize(("in_features", "out_features", "batch"), [(4, 2, 1), (7, 5, 3)])
def test_count_macs_linear(in_features: int, out_features: int, batch: int) -> None:
    linear = nn.Linear(in_features, out_features)
    macs = count_macs(linear, torch.zeros(batch, in_features))
    assert macs == in_features * out_features * batch


def test_count_macs_ignores_elementwise_norm_and_pooling() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    net = nn.Sequential(
        conv, nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Upsample(scale_factor=2)
    )
    x = torch.zeros(1, 3, 8, 8)
    assert count_macs(net, x) == count_macs(conv, x) == 8 * 8 * 8 * 3 * 9


def test_count_macs_sequence_of_inputs() -> None:
    class _Bilinear(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a @ b

    # (2 x 3) @ (3 x 5): 2 * 5 outputs, 3 MACs each.
    assert count_macs(_Bilinear(), [torch.zeros(2, 3), torch.zeros(3, 5)]) == 30


def test_count_macs_restores_training_flags_and_runs_in_eval_without_grad() -> None:
    net = _mixed_mode_net()
    before = _flags(net)
    running_mean = net[1].running_mean.clone()
    count_macs(net, torch.randn(2, 3, 6, 6) + 5.0)
    assert _flags(net) == before == [True, True, True, False]
    # In training mode batch norm would have updated its running statistics.
    assert torch.equal(net[1].running_mean, running_mean)

    recorder = _Recorder().train()
    count_macs(recorder, torch.zeros(1, 3, 4, 4))
    assert recorder.calls == [(False, False)]
    assert recorder.training


def test_device_fingerprint_keys() -> None:
    fingerprint = device_fingerprint("cpu")
    assert fingerprint["device_type"] == "cpu"
    assert isinstance(fingerprint["device_name"], str) and fingerprint["device_name"]
    assert fingerprint["torch_version"] == torch.__version__
    assert fingerprint["cuda_version"] == torch.version.cuda
    assert fingerprint["num_threads"] == torch.get_num_threads()


@pytest.mark.parametrize("device", DEVICES)
def test_measure_latency(device: str) -> None:
    net = _mixed_mode_net()
    before = _flags(net)
    result = measure_latency(net, (12, 16), device=device, warmup=2, repeats=7)

    assert isinstance(result, LatencyResult)
    assert result.median_ms > 0.0
    assert result.iqr_ms >= 0.0
    assert len(result.samples_ms) == 7
    assert min(result.samples_ms) <= result.median_ms <= max(result.samples_ms)
    assert result.iqr_ms <= max(result.samples_ms) - min(result.samples_ms)
    protocol = result.protocol
    assert protocol["device"] == device_fingerprint(device)
    assert protocol["input_size"] == (12, 16)
    assert protocol["batch"] == 1
    assert protocol["warmup"] == 2
    assert protocol["repeats"] == 7
    assert protocol["threads"] == torch.get_num_threads()
    assert protocol["in_channels"] == 3
    assert protocol["dtype"] == "float32"
    # Put in eval for the measurement by measure_latency itself, then restored.
    assert _flags(net) == before
    assert next(net.parameters()).device.type == "cpu"


def test_measure_latency_runs_in_eval_without_grad_at_batch_one() -> None:
    recorder = _Recorder().train()
    shapes: list[tuple[int, ...]] = []
    recorder.conv.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
    measure_latency(recorder, (8, 10), in_channels=3, warmup=3, repeats=4)
    # Timer.timeit(number=1) runs two untimed forwards before each timed one.
    assert len(recorder.calls) == 3 + 3 * 4
    assert set(recorder.calls) == {(False, False)}
    assert set(shapes) == {(1, 3, 8, 10)}
    assert recorder.training


def test_measure_latency_times_at_the_current_thread_count() -> None:
    class _ThreadProbe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[int] = set()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.add(torch.get_num_threads())
            return x

    previous = torch.get_num_threads()
    # Two threads, so the test fails if Timer's default of one thread leaks through.
    torch.set_num_threads(2)
    try:
        probe = _ThreadProbe()
        result = measure_latency(probe, (4, 4), warmup=0, repeats=1)
        assert probe.seen == {2}
        assert torch.get_num_threads() == 2
        assert result.protocol["threads"] == 2
        assert result.protocol["dtype"] == "float32"  # parameterless module
        assert result.iqr_ms == 0.0  # a single sample has no spread
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(
    "kwargs",
    [{"repeats": 0}, {"warmup": -1}, {"in_channels": 0}, {"input_size": (0, 4)}],
)
def test_measure_latency_rejects_bad_arguments(kwargs: dict) -> None:
    arguments = {"input_size": (4, 4), **kwargs}
    with pytest.raises(ValueError):
        measure_latency(nn.Conv2d(3, 3, 1), **arguments)


def test_output_stride_of_stride_four_net() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 5, 1),
    ).train()
    assert output_stride(net) == 4
    assert output_stride(net, input_size=(32, 48)) == 4
    assert net.training and all(m.training for m in net.modules())


def test_output_stride_of_stride_one_and_main_output() -> None:
    assert output_stride(nn.Conv2d(3, 2, 3, padding=1), input_size=(8, 8)) == 1

    class _WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main = nn.Conv2d(3, 2, 3, stride=2, padding=1)
            self.aux = nn.Conv2d(3, 2, 1, stride=8)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"aux": self.aux(x), "out": self.main(x)}

    assert output_stride(_WithAux(), input_size=(16, 16)) == 2


def test_output_stride_non_integer_raises() -> None:
    # 3x3 valid convolution: 10 -> 8, and 10 / 8 is not an integer.
    with pytest.raises(ValueError, match="not an integer"):
        output_stride(nn.Conv2d(3, 2, 3), input_size=(10, 10))
    # Different strides along height and width.
    with pytest.raises(ValueError, match="not an integer"):
        output_stride(nn.Conv2d(3, 2, 1, stride=(2, 1)), input_size=(8, 8))


def test_measure_latency_rejects_module_spread_over_devices() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2, device="meta"))
    with pytest.raises(ValueError, match="several devices"):
        measure_latency(net, (4, 4))
