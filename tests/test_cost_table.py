"""Tests of nas_optuna.cost_table: unit decomposition, CAS cost rule, cache, estimate."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import nas_optuna.cost_table as cost_table_module
from nas_optuna.cost import LatencyResult, device_fingerprint
from nas_optuna.cost_table import (
    CALIBRATION_INTERCEPT_POINTS,
    CostTable,
    CostTableMismatchError,
    build_cost_table,
    cost_table_path,
    open_cost_table,
    trace_units,
    unit_cost,
)
from nas_optuna.ops import build_op
from search_spaces import SPACES, get_space
from search_spaces.template import Template

SIZE = (64, 64)
FAST = {"warmup": 1, "repeats": 3}


def _fake_latency(medians: dict[type, float]):
    """A measure_latency stand-in: the median depends on the type of the timed module."""

    def fake(module: nn.Module, input_size, **kwargs) -> LatencyResult:
        inner = getattr(module, "unit", module)
        return LatencyResult(median_ms=medians[type(inner)], iqr_ms=0.0, protocol={})

    return fake


def _template_net(repeats: int) -> nn.Module:
    """One template architecture of separable 5x5 convs, stride 1, every block repeated."""
    space = get_space("template", profile="search")
    arch = space.random_architecture(seed=3)
    heavy = Template("sep_conv_5x5", "sep_conv_5x5", "cat")
    arch = dataclasses.replace(
        arch,
        templates=(heavy,) * len(arch.templates),
        blocks=tuple(dataclasses.replace(b, repeats=repeats, stride=1) for b in arch.blocks),
    )
    return space.build(arch, num_classes=4)


# --- the CAS rule: c_o = c'_o - c'_id --------------------------------------------------


def test_unit_cost_is_unit_latency_minus_identity_latency(monkeypatch):
    monkeypatch.setattr(
        cost_table_module,
        "measure_latency",
        _fake_latency({nn.Conv2d: 5.0, nn.Identity: 1.5, nn.ReLU: 1.0}),
    )
    x = torch.zeros(1, 4, 8, 8)
    assert unit_cost(nn.Conv2d(4, 4, 3), x) == pytest.approx(3.5)
    # Cheaper than the identity (timing noise): clamped at zero, never negative.
    assert unit_cost(nn.ReLU(), x) == 0.0


def test_identity_unit_costs_about_nothing_and_a_conv_costs_more():
    x = torch.zeros(1, 32, 64, 64)
    identity = unit_cost(nn.Identity(), x, repeats=15)
    conv = unit_cost(nn.Conv2d(32, 32, 3, padding=1), x, repeats=5)
    assert 0.0 <= identity < 0.02  # ms: the identity's own call is what is subtracted
    assert conv > 0.05 and conv > 10 * identity


def test_identity_op_in_a_network_is_a_unit_of_about_zero_cost():
    net = nn.Sequential(build_op("cas_identity", 8, 8), build_op("conv3x3", 8, 8))
    table = CostTable({"name": "toy", "profile": "search"}, (32, 32), in_channels=8, **FAST)
    table.estimate(net)
    keys = [u.key for u in table.units(net) if u.kind == "op"]
    assert keys[0].startswith("op:cas_identity|c_in=8|c_out=8|stride=1|repeats=1|in=")
    assert keys[1].startswith("op:conv3x3|")
    assert table.entries[keys[0]] < 0.02 < table.entries[keys[1]]


# --- decomposition ----------------------------------------------------------------------


def test_trace_units_stem_ops_leaves_functions_and_calls():
    space = get_space("auxcell", profile="search")
    net = space.build(space.random_architecture(seed=0), num_classes=5)
    net.train()  # tracing runs in eval mode: no auxiliary heads, flags restored
    units = trace_units(net, SIZE, stem_id=space.stem_id)
    kinds = [u.kind for u in units]
    assert net.training and all(m.training for m in net.modules())
    assert kinds.count("stem") == 1
    assert units[kinds.index("stem")].key == "stem:mobilenet_v2@4,8,16,32|in=float32[1,3,64,64]"
    assert {"op", "leaf", "function", "call"} <= set(kinds)
    # Nothing inside the stem or an op is a unit of its own.
    stem_modules = set(net.stem.modules())
    assert not any(u.module in stem_modules for u in units if u.kind == "leaf")
    # Auxiliary heads are not called in eval mode, so none of their modules is a unit.
    auxiliary = {m for head in net.decoder.auxiliary for m in head.modules()}
    assert not any(u.module in auxiliary for u in units)


# --- cache --------------------------------------------------------------------------------


def _filled_table(tmp_path: Path) -> CostTable:
    space = get_space("template", profile="search")
    table = open_cost_table(space, SIZE, cache_dir=tmp_path, **FAST)
    table.entries = {"op:a|in=float32[1,8,4,4]": 0.25, "leaf:b|in=float32[1,2]": 0.0}
    table.calibration_points = [(1.0, 2.0), (2.0, 3.5)]
    table.fit_calibration()
    return table


def test_cache_round_trip(tmp_path):
    table = _filled_table(tmp_path)
    path = table.save()
    assert path == cost_table_path(get_space("template"), SIZE, cache_dir=tmp_path)
    loaded = open_cost_table(get_space("template", profile="search"), SIZE, cache_dir=tmp_path)
    assert loaded.entries == table.entries
    assert loaded.calibration == pytest.approx(table.calibration)
    assert loaded.calibration_points == table.calibration_points
    assert loaded.fingerprint == device_fingerprint("cpu")
    assert loaded.stem_id == "mobilenet_v2@4,8"
    # Another profile or size is another file.
    final = get_space("template", profile="final")
    assert open_cost_table(final, SIZE, cache_dir=tmp_path).entries == {}
    assert open_cost_table(get_space("template"), (64, 128), cache_dir=tmp_path).entries == {}


def test_table_of_another_device_fingerprint_is_not_reused(tmp_path):
    table = _filled_table(tmp_path)
    path = table.save()
    data = json.loads(path.read_text())
    data["fingerprint"]["num_threads"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(CostTableMismatchError):
        CostTable.load(path)
    fresh = open_cost_table(get_space("template", profile="search"), SIZE, cache_dir=tmp_path)
    assert fresh.entries == {} and fresh.fingerprint == device_fingerprint("cpu")
    # Saving the fresh table replaces the stale one instead of merging its entries.
    fresh.save()
    assert CostTable.load(path).entries == {}


def test_atomic_write_leaves_no_temporary_files(tmp_path, monkeypatch):
    table = _filled_table(tmp_path)
    for _ in range(3):
        table.save()
    assert [p.name for p in tmp_path.iterdir()] == [table.path.name]
    before = table.path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cost_table_module.os, "replace", broken_replace)
    table.entries["op:new|in=float32[1]"] = 1.0
    with pytest.raises(OSError, match="disk full"):
        table.save()
    assert [p.name for p in tmp_path.iterdir()] == [table.path.name]
    assert table.path.read_text() == before  # the old file is intact


def test_save_merges_entries_written_by_another_worker(tmp_path):
    first = _filled_table(tmp_path)
    first.save()
    second = open_cost_table(get_space("template", profile="search"), SIZE, cache_dir=tmp_path)
    second.entries["op:other|in=float32[1]"] = 0.5
    first.entries["op:mine|in=float32[1]"] = 0.75
    second.save()
    first.save()
    merged = CostTable.load(first.path).entries
    assert merged["op:other|in=float32[1]"] == 0.5 and merged["op:mine|in=float32[1]"] == 0.75


# --- estimate -----------------------------------------------------------------------------


def test_missing_entries_are_measured_once_and_added(monkeypatch):
    space = get_space("template", profile="search")
    net = space.build(space.random_architecture(seed=1), num_classes=4)
    table = CostTable(space, SIZE, **FAST)
    missing = table.missing(net)
    assert missing and len(missing) == len(set(missing))
    with pytest.raises(KeyError):
        table.estimate(net, measure_missing=False)
    first = table.estimate(net)
    assert table.missing(net) == [] and set(missing) <= set(table.entries)
    assert first == pytest.approx(sum(table.breakdown(net).values()))

    def no_measuring(*args, **kwargs):
        raise AssertionError("a known unit was measured again")

    monkeypatch.setattr(cost_table_module, "_measure_call", no_measuring)
    # A new network of the same architecture has the same units: nothing is measured.
    twin = space.build(space.random_architecture(seed=1), num_classes=4)
    assert table.estimate(twin) == pytest.approx(first)


def test_estimate_grows_with_a_heavier_architecture():
    # Same architecture, blocks applied 4 times instead of once: about 2.6x the estimate
    # (the stem and head stay); 1.5x leaves room for timing noise.
    light, heavy = _template_net(repeats=1), _template_net(repeats=4)
    table = CostTable(get_space("template"), SIZE, **FAST)
    assert table.estimate(heavy, calibrated=False) > 1.5 * table.estimate(light, calibrated=False)


def test_calibration_fits_ratio_then_line_and_stays_increasing():
    table = CostTable({"name": "toy"}, SIZE)
    # Few points: the ratio alone (least squares of the relative error), b = 0.
    table.calibration_points = [(1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]
    assert table.fit_calibration() == pytest.approx((2.0, 0.0))
    # Enough points: the line through them.
    sums = [float(s) for s in range(1, CALIBRATION_INTERCEPT_POINTS + 1)]
    table.calibration_points = [(s, 2.0 * s + 1.0) for s in sums]
    assert table.fit_calibration() == pytest.approx((2.0, 1.0))
    # A decreasing cloud never gives a decreasing estimate.
    table.calibration_points = [(s, 100.0 - s) for s in sums]
    a, b = table.fit_calibration()
    assert a > 0 and b == 0.0
    table.calibration_points = []
    assert table.fit_calibration() == (1.0, 0.0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1))
    table.calibration = (2.0, 1.0)
    raw = table.estimate(net, calibrated=False)
    assert table.estimate(net) == pytest.approx(2.0 * raw + 1.0)


def test_build_cost_table_warms_once_and_fits_calibration(tmp_path, monkeypatch):
    space = get_space("template", profile="search")
    table = build_cost_table(
        space, SIZE, n_architectures=2, num_classes=4, cache_dir=tmp_path,
        calibration_warmup=1, calibration_repeats=3, **FAST,
    )
    assert len(table.calibration_points) == 2 and table.calibration[0] > 0
    assert table.path.exists() and len(table.entries) > 10

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached table was measured again")

    monkeypatch.setattr(cost_table_module, "_measure_call", no_measuring)
    monkeypatch.setattr(cost_table_module, "measure_latency", no_measuring)
    again = build_cost_table(space, SIZE, n_architectures=2, num_classes=4, cache_dir=tmp_path)
    assert again.entries == table.entries and again.calibration == table.calibration


@pytest.mark.parametrize("name", SPACES.names())
def test_estimate_on_a_random_architecture_of_every_space(name):
    space = get_space(name, profile="search")
    net = space.build(space.random_architecture(seed=0), num_classes=4)
    table = CostTable(space, SIZE, **FAST)
    estimate = table.estimate(net)
    assert math.isfinite(estimate) and estimate > 0
    assert table.missing(net) == []
