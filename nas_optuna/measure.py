"""The sizes and costs stored on every trial, measured on a built network.

One function, :func:`measure_network`, so that ``search``, ``describe`` and ``sample``
report the same quantities under the same names (the user-attr keys of the design).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nas_optuna.cost import count_macs, count_parameters, measure_latency, measure_peak_memory
from nas_optuna.cost import output_stride as measured_output_stride
from nas_optuna.networks import StemDecoderNetwork, auxiliary_modules, module_device

__all__ = ["measure_network"]


def measure_network(network: StemDecoderNetwork, input_size: tuple[int, int], *,
                    device: torch.device | str = "cpu", latency: bool = False,
                    latency_warmup: int = 3, latency_repeats: int = 10,
                    until: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Parameters, MACs, output stride and optionally latency of ``network``.

    Args:
        network: The whole network (stem and generated part).
        input_size: ``(H, W)`` at which MACs and latency are measured.
        device: Where latency is measured.
        latency: Measure latency (batch 1, eval mode, median and IQR).
        latency_warmup: Untimed forwards before timing.
        latency_repeats: Timed forwards.
        until: Called with the record after each group of costs, cheapest first (sizes
            and output stride; MACs; peak memory; latency); when it returns True the
            dearer groups are not measured (a budget already rejects the network).

    Returns:
        ``params_total``, ``params_generated`` (decoder only; training-only auxiliary
        heads excluded), ``macs``, ``output_stride``, ``peak_memory_mb`` (weights plus peak
        activations of a batch-1 inference, MiB) and, with ``latency``, ``latency_ms``
        and ``latency_protocol`` (with ``latency_iqr_ms`` inside).

    Example:
        >>> costs = measure_network(net, (64, 64))
        >>> costs["params_total"] > costs["params_generated"]
        True
    """
    device = torch.device(device)
    probe = torch.zeros(1, 3, *input_size, device=module_device(network))
    stride = getattr(network.decoder, "output_stride", None)
    if stride is None:
        stride = measured_output_stride(network, input_size)
    # Training-only auxiliary heads are not part of the network users deploy.
    auxiliary = sum(count_parameters(m) for m in auxiliary_modules(network))
    record: dict[str, Any] = {
        "params_total": count_parameters(network) - auxiliary,
        "params_generated": count_parameters(network.decoder) - auxiliary,
        "output_stride": int(stride),
    }
    stop = until or (lambda _: False)
    if stop(record):
        return record
    record["macs"] = count_macs(network, probe)
    if stop(record):
        return record
    record["peak_memory_mb"] = measure_peak_memory(network, input_size) / 2**20
    if latency and not stop(record):
        result = measure_latency(network, input_size, device=device, warmup=latency_warmup,
                                 repeats=latency_repeats)
        record["latency_ms"] = result.median_ms
        record["latency_protocol"] = {**result.protocol, "iqr_ms": result.iqr_ms}
    return record
