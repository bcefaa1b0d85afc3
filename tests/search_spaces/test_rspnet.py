"""The RSPNet space: stable names, round trips, its size by brute force, the paper's structure."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import optuna
import pytest
import torch
from torch import nn

import search_spaces.rspnet as rspnet_module
from nas_optuna.exceptions import ConfigError
from nas_optuna.ops import RSP_OPS
from nas_optuna.stems import ImageStem
from search_spaces.rspnet import (
    EDGES,
    OPERATIONS,
    Cell,
    RSPNetArchitecture,
    RSPNetSpace,
)

CONV_3X3, DW_3X3, CONV_5X5, DIL_3X3, IDENTITY = RSP_OPS
#: Every layer used: layer k takes the two layers before it.
CHAIN_INPUTS = ((0,), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6))
CHAIN = RSPNetArchitecture(Cell(CONV_3X3, IDENTITY, CONV_5X5), False, CHAIN_INPUTS)


class _ScriptedTrial:
    """Answers ``suggest_categorical`` with scripted choice indices (0 past the script).

    Walking these scripts like an odometer visits every branch of a define-by-run space.
    """

    def __init__(self, script: Sequence[int]) -> None:
        self.script = list(script)
        self.taken: list[tuple[int, int]] = []  # (index, number of choices) per decision
        self.names: list[str] = []

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        index = self.script[len(self.taken)] if len(self.taken) < len(self.script) else 0
        self.taken.append((index, len(choices)))
        self.names.append(name)
        return choices[index]


def _every_suggestion(space: RSPNetSpace) -> list[RSPNetArchitecture]:
    """Every architecture ``suggest`` can return, one per leaf of its decision tree."""
    archs, script = [], []
    while True:
        trial = _ScriptedTrial(script)
        archs.append(space.suggest(trial))  # type: ignore[arg-type]
        assert len(set(trial.names)) == len(trial.names), "a name was suggested twice"
        path = trial.taken
        while path and path[-1][0] + 1 == path[-1][1]:
            path.pop()
        if not path:
            return archs
        script = [index for index, _ in path[:-1]] + [path[-1][0] + 1]


def _used_inputs(all_inputs: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """Keeps the inputs of the layers from which the last layer is reachable."""
    last = len(all_inputs)
    used, stack = {last}, [last]
    while stack:
        for node in all_inputs[stack.pop() - 1]:
            if node > 0 and node not in used:
                used.add(node)
                stack.append(node)
    return tuple(nodes if k in used else () for k, nodes in enumerate(all_inputs, start=1))


def _canonical_cell(cell: Cell) -> tuple:
    # With the identity on in->n1, n1 is the cell's (preprocessed) input, so the two
    # operators into n2 act on the same tensor and are summed: their order is immaterial.
    if cell.op_in_n1 == IDENTITY:
        return (IDENTITY, frozenset([cell.op_in_n2, cell.op_n1_n2]))
    return cell.ops


# --- parameter names ------------------------------------------------------------------


def test_parameter_names_are_documented_and_stable() -> None:
    space = RSPNetSpace()
    params = space.to_params(CHAIN)
    # Every layer is used, so every layer with a real choice (3..7) has its parameter.
    assert params == {
        "cell_op_in_n1": CONV_3X3,
        "cell_op_in_n2": IDENTITY,
        "cell_op_n1_n2": CONV_5X5,
        "rsp": False,
        "layer_3_paths": "1+2",
        "layer_4_paths": "2+3",
        "layer_5_paths": "3+4",
        "layer_6_paths": "4+5",
        "layer_7_paths": "5+6",
    }
    assert space.from_params(params) == CHAIN
    doc = rspnet_module.__doc__
    for name in ("cell_op_in_n1", "cell_op_in_n2", "cell_op_n1_n2", "rsp", "layer_{k}_paths"):
        assert name in doc


def test_suggest_uses_the_documented_choices() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    space = RSPNetSpace()
    for _ in range(10):
        trial = study.ask()
        arch = space.suggest(trial)
        dists = trial.distributions
        for edge in EDGES:
            assert dists[f"cell_op_{edge}"].choices == OPERATIONS
        assert dists["rsp"].choices == (False, True)
        for layer in arch.used_layers():
            if layer >= 3:
                # Path attention: any two of ALL the earlier nodes (stem and layers 1..k-1).
                expected = tuple(f"{i}+{j}" for i, j in itertools.combinations(range(layer), 2))
                assert dists[f"layer_{layer}_paths"].choices == expected
        # The unused layers' choices are not asked for: they would not change the network.
        assert {n for n in dists if n.startswith("layer_")} == {
            f"layer_{k}_paths" for k in arch.used_layers() if k >= 3
        }


# --- round trips --------------------------------------------------------------------


def test_genotype_round_trip() -> None:
    space = RSPNetSpace()
    genotype = [
        [DW_3X3, DIL_3X3, IDENTITY],
        [[0], [0, 1], [], [0, 2], [], [1, 4], [2, 6]],
        True,
    ]
    arch = space.from_genotype(genotype)
    assert arch == RSPNetArchitecture(
        Cell(DW_3X3, DIL_3X3, IDENTITY), True, ((0,), (0, 1), (), (0, 2), (), (1, 4), (2, 6))
    )
    assert space.to_genotype(arch) == genotype
    for seed in range(10):
        arch = space.random_architecture(seed=seed)
        assert space.from_genotype(json.loads(json.dumps(space.to_genotype(arch)))) == arch


@pytest.mark.parametrize(
    "genotype",
    [
        "not a genotype",
        [[CONV_3X3, CONV_3X3], [list(n) for n in CHAIN_INPUTS], False],  # two operators
        [["conv7x7", CONV_3X3, CONV_3X3], [list(n) for n in CHAIN_INPUTS], False],
        [[CONV_3X3] * 3, [list(n) for n in CHAIN_INPUTS], "yes"],  # rsp not a bool
        [[CONV_3X3] * 3, [list(n) for n in CHAIN_INPUTS[:6]], False],  # six layers
        # layer 6 is unused (layer 7 takes 4 and 5), so it may have no inputs
        [[CONV_3X3] * 3, [[0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [4, 5]], False],
        [[CONV_3X3] * 3, [[0], [0, 1], [2, 1], [2, 3], [3, 4], [4, 5], [5, 6]], False],  # order
        [[CONV_3X3] * 3, [[0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [6, 7]], False],
        [[CONV_3X3] * 3, [[0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 5]], False],
        [[CONV_3X3] * 3, [[0], [0], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]], False],
        [[CONV_3X3] * 3, [[0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [-1, 6]], False],
        # layer 6 is used by layer 7, so it needs inputs
        [[CONV_3X3] * 3, [[0], [0, 1], [1, 2], [2, 3], [3, 4], [], [5, 6]], True],
        [[CONV_3X3] * 3, [[0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [1, 2, 6]], True],
    ],
    ids=lambda g: str(g)[:40],
)
def test_bad_genotypes_raise_one_line_config_errors(genotype: object) -> None:
    with pytest.raises(ConfigError) as error:
        RSPNetSpace().from_genotype(genotype)
    assert "\n" not in str(error.value)


# --- size ---------------------------------------------------------------------------


def test_size_matches_a_brute_force_count_on_five_layers() -> None:
    space = RSPNetSpace(layer_reductions=(4, 8, 4, 8, 4))
    archs = _every_suggestion(space)
    # The define-by-run tree has no two leaves with the same architecture ...
    assert len(set(archs)) == len(archs)
    # ... and its wirings are exactly the distinct used-layer wirings of the raw choice of
    # a pair for every layer (also for the unused ones), found independently here.
    raw = {
        _used_inputs(((0,), (0, 1), *pairs))
        for pairs in itertools.product(*(itertools.combinations(range(k), 2) for k in (3, 4, 5)))
    }
    assert {arch.inputs for arch in archs} == raw
    assert len(raw) == 66
    distinct = {(_canonical_cell(a.cell), a.rsp, a.inputs) for a in archs}
    assert space.size() == len(distinct) == 115 * 2 * 66


def test_default_size_is_the_documented_figure() -> None:
    # 115 cells x RSP on/off x 5,034 wirings of seven layers (module docstring, docs page).
    assert RSPNetSpace().size() == 1_157_820
    assert RSPNetSpace(layer_reductions=(4,)).size() == 230  # one layer: only the cell
    assert RSPNetSpace(layer_reductions=(4, 4, 4, 4)).size() == 230 * 12


def test_the_collapsed_cell_symmetry_is_real() -> None:
    # identity on in->n1: swapping the two operators into n2 (and their weights) gives the
    # same function, so size() may count them once ...
    torch.manual_seed(0)
    width = 16
    a = rspnet_module._Cell(Cell(IDENTITY, CONV_3X3, CONV_5X5), width, rsp=False).eval()
    b = rspnet_module._Cell(Cell(IDENTITY, CONV_5X5, CONV_3X3), width, rsp=False).eval()
    b.preprocess.load_state_dict(a.preprocess.state_dict())
    b.op_in_n2.load_state_dict(a.op_n1_n2.state_dict())
    b.op_n1_n2.load_state_dict(a.op_in_n2.state_dict())
    x = torch.randn(2, width, 9, 11)
    torch.testing.assert_close(a(x), b(x))
    # ... but not with another operator on in->n1, where n1 is not the input.
    c = rspnet_module._Cell(Cell(CONV_3X3, CONV_3X3, CONV_5X5), width, rsp=False).eval()
    d = rspnet_module._Cell(Cell(CONV_3X3, CONV_5X5, CONV_3X3), width, rsp=False).eval()
    d.preprocess.load_state_dict(c.preprocess.state_dict())
    d.op_in_n1.load_state_dict(c.op_in_n1.state_dict())
    d.op_in_n2.load_state_dict(c.op_n1_n2.state_dict())
    d.op_n1_n2.load_state_dict(c.op_in_n2.state_dict())
    assert not torch.allclose(c(x), d(x))


# --- the paper's structure ------------------------------------------------------------


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def _cells(decoder: nn.Module) -> list[nn.Module]:
    return [m for m in decoder.modules() if isinstance(m, rspnet_module._Cell)]


def test_structure_follows_the_paper() -> None:
    # Five operators, the RSPNet ones of the op registry.
    assert OPERATIONS == RSP_OPS and len(OPERATIONS) == 5
    # No backbone: the stem is the image itself, without parameters.
    space = RSPNetSpace("final")
    assert isinstance(space.build_stem(), ImageStem) and space.stem_id == "image"
    assert not list(space.build_stem().parameters())
    with torch.device("meta"):  # shapes only: this final network has 82M parameters
        decoder = space.build_decoder(CHAIN, num_classes=19)
    assert _first_conv(decoder.stem).in_channels == 3
    # Four stacked cells per layer in the final network, one while searching (paper).
    assert [len(layer.cells) for layer in decoder.layers] == [4] * 7
    search_decoder = RSPNetSpace("search").build_decoder(CHAIN, num_classes=19)
    assert [len(layer.cells) for layer in search_decoder.layers] == [1] * 7
    # Path attention: two inputs per layer (one and two where fewer nodes exist yet).
    assert [len(layer.paths.projections) for layer in decoder.layers] == [1, 2, 2, 2, 2, 2, 2]
    # Two intermediate nodes, each half of the cell's width, concatenated back to it.
    for cell, width in zip(_cells(search_decoder), (16, 32, 64, 128, 64, 32, 16)):
        node_widths = [_first_conv(op).out_channels for op in (cell.op_in_n1, cell.op_n1_n2)]
        assert node_widths == [width // 2] * 2
        assert isinstance(cell.op_in_n2, nn.Identity)


def test_cells_keep_width_and_resolution_and_the_network_outputs_stride_4() -> None:
    cell = rspnet_module._Cell(Cell(DIL_3X3, DW_3X3, CONV_5X5), 32, rsp=False)
    assert cell(torch.randn(2, 32, 7, 9)).shape == (2, 32, 7, 9)
    net = RSPNetSpace().build(CHAIN, num_classes=3)
    assert net.decoder.output_stride == 4
    out = net(torch.randn(2, 3, 45, 61))
    assert out.shape == (2, 3, math.ceil(45 / 4), math.ceil(61 / 4))
    out.mean().backward()


def test_unused_layers_are_not_built() -> None:
    space = RSPNetSpace()
    # The last layer takes the stem and layer 1 only: layers 2-6 cannot reach the logits.
    arch = space.from_params(
        {"cell_op_in_n1": CONV_3X3, "cell_op_in_n2": CONV_3X3, "cell_op_n1_n2": CONV_3X3,
         "rsp": True, "layer_7_paths": "0+1"}
    )
    assert arch.inputs == ((0,), (), (), (), (), (), (0, 1))
    decoder = space.build_decoder(arch, num_classes=4)
    assert len(decoder.layers) == 2
    assert decoder([torch.randn(2, 3, 32, 32)]).shape == (2, 4, 8, 8)
    assert "L3@16<(unused)" in space.describe(arch)


def test_rsp_sends_half_of_the_channels_through_the_cell() -> None:
    torch.manual_seed(0)
    width = 32
    ops = Cell(CONV_3X3, CONV_5X5, DIL_3X3)
    full = rspnet_module._Cell(ops, width, rsp=False).eval()
    partial = rspnet_module._Cell(ops, width, rsp=True).eval()
    assert full.preprocess[0].in_channels == width
    assert partial.preprocess[0].in_channels == width // 2
    # Convolutions at half the width: a quarter of their weights (the paper's 68.67M ->
    # 17.20M is this ratio).
    def conv_weights(cell: nn.Module) -> int:
        return sum(m.weight.numel() for m in cell.modules() if isinstance(m, nn.Conv2d))

    assert 4 * conv_weights(partial) == conv_weights(full)
    # The second half passes untouched (first in the output); only the first half is
    # transformed, into the output's second half.
    x = torch.randn(2, width, 8, 8)
    out = partial(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[:, : width // 2], x[:, width // 2 :])
    y = x.clone()
    y[:, width // 2 :] += 1.0
    torch.testing.assert_close(partial(y)[:, width // 2 :], out[:, width // 2 :])
    # Stacked RSP cells alternate halves, so two cells transform every input channel.
    second = rspnet_module._Cell(ops, width, rsp=True).eval()
    assert not torch.allclose(second(partial(y))[:, width // 2 :], second(out)[:, width // 2 :])


def test_rsp_shrinks_the_final_network_about_fourfold() -> None:
    space = RSPNetSpace("final")
    counts = []
    for rsp in (False, True):
        arch = RSPNetArchitecture(CHAIN.cell, rsp, CHAIN.inputs)
        with torch.device("meta"):
            counts.append(sum(p.numel() for p in space.build_decoder(arch, 19).parameters()))
    # Inside the cells exactly a quarter of the conv weights; the path projections and the
    # stem keep their size.
    assert 3.0 < counts[0] / counts[1] < 4.0


@pytest.mark.parametrize("seed", range(8))
def test_random_architectures_train_at_odd_sizes(seed: int) -> None:
    space = RSPNetSpace(layer_reductions=(4, 16, 32, 8, 4))
    arch = space.random_architecture(seed=seed)
    net = space.build(arch, num_classes=5).train()
    out = net(torch.randn(2, 3, 33, 47))
    assert out.shape == (2, 5, 9, 12)
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


# --- options --------------------------------------------------------------------------


def test_options_rebuild_the_space() -> None:
    space = RSPNetSpace("final", layer_reductions=[4, 8, 4], cells_per_layer=2)
    options = json.loads(json.dumps(space.options()))
    assert options == {
        "name": "rspnet", "profile": "final", "layer_reductions": [4, 8, 4], "cells_per_layer": 2
    }
    options.pop("name")
    assert RSPNetSpace(**options).options() == space.options()


@pytest.mark.parametrize(
    "options",
    [
        {"layer_reductions": ()},
        {"layer_reductions": (4, 6)},
        {"layer_reductions": (2, 4)},
        {"layer_reductions": "4,8"},
        {"cells_per_layer": 0},
        {"profile": "tiny"},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RSPNetSpace(**options)
