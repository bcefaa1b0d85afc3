"""The CVPR 2019 auxiliary-cell decoder space: released sizes, cell semantics, aux heads."""

from __future__ import annotations

import itertools

import optuna
import pytest
import torch

from nas_optuna.cost import count_parameters
from nas_optuna.exceptions import ConfigError
from nas_optuna.measure import measure_network
from nas_optuna.networks import AuxiliaryOutputs
from search_spaces import get_space
from search_spaces.auxcell import (
    ARCH0_GENOTYPE,
    ARCH1_GENOTYPE,
    ARCH2_GENOTYPE,
    OPERATIONS,
    AuxCellArchitecture,
    Cell,
    CellLayer,
    _Cell,
)


@pytest.mark.parametrize(
    ("genotype", "generated"),
    [(ARCH0_GENOTYPE, 817_109), (ARCH1_GENOTYPE, 997_333), (ARCH2_GENOTYPE, 1_040_341)],
)
def test_released_architectures_reproduce_published_sizes(genotype: list, generated: int) -> None:
    space = get_space("auxcell", profile="final")
    net = space.build(space.from_genotype(genotype), num_classes=21)
    costs = measure_network(net, (64, 64))
    assert costs["params_generated"] == generated
    # The auxiliary heads exist for training but are not part of the published size.
    assert count_parameters(net.decoder) > generated


def test_released_arch0_predicts_at_one_quarter() -> None:
    # arch0's blocks read encoder outputs only (indices <= 3), so all three feed the head;
    # block 2 reads the 1/4 output, which sets the head's resolution.
    space = get_space("auxcell", profile="final")
    net = space.build(space.from_genotype(ARCH0_GENOTYPE), num_classes=21).eval()
    assert net.decoder.head_inputs == [4, 5, 6]
    assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 21, 16, 24)


@pytest.mark.parametrize("genotype", [ARCH0_GENOTYPE, ARCH1_GENOTYPE, ARCH2_GENOTYPE])
def test_genotype_round_trip(genotype: list) -> None:
    space = get_space("auxcell")
    arch = space.from_genotype(genotype)
    assert space.to_genotype(arch) == genotype


def test_suggest_uses_documented_names_in_controller_order() -> None:
    space = get_space("auxcell")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    space.suggest(trial)
    names = list(trial.params)
    expected = [f"block_{b}_input{k}" for b in range(3) for k in (1, 2)] + ["cell_op0"]
    expected += [f"cell_layer_{i}_{k}" for i in range(3) for k in ("pos1", "pos2", "op1", "op2")]
    # Connections come first, then the cell, as the paper's controller emits them.
    assert names == expected
    distributions = trial.distributions
    assert distributions["block_2_input1"].choices == tuple(range(6))
    assert [distributions[f"cell_layer_{i}_pos1"].choices for i in range(3)] == [
        tuple(range(2)), tuple(range(5)), tuple(range(8))
    ]
    assert distributions["cell_op0"].choices == OPERATIONS and len(OPERATIONS) == 11


def test_cell_sums_the_unused_nodes() -> None:
    # With skip connections everywhere every feature equals x times a known integer, so
    # the output tells which nodes were summed. Features: [x, op0 x, a1, b1, s1, ...].
    layers = (
        CellLayer(1, 1, "skip_connect", "skip_connect"),  # s1 = 2x (uses op0(x))
        CellLayer(4, 0, "skip_connect", "skip_connect"),  # s2 = 2x + x = 3x (uses s1)
        CellLayer(2, 3, "skip_connect", "skip_connect"),  # s3 = x + x = 2x
    )
    cell = Cell("skip_connect", layers)
    assert cell.output_nodes() == [7, 10]  # op0(x) and s1 were used by later layers
    x = torch.randn(1, 4, 5, 5)
    assert torch.allclose(_Cell(cell, 4, 1)(x), 5 * x)


def test_training_returns_one_auxiliary_output_per_block() -> None:
    space = get_space("auxcell")
    arch = space.from_genotype(ARCH1_GENOTYPE)
    net = space.build(arch, num_classes=4).train()
    output = net(torch.randn(2, 3, 64, 64))
    assert isinstance(output, AuxiliaryOutputs)
    assert len(output.auxiliary) == 3
    # Each head predicts at its block's resolution: arch1's blocks read 1/16+1/32,
    # 1/32+1/8 and block0 twice.
    assert [tuple(a.shape[-2:]) for a in output.auxiliary] == [(4, 4), (8, 8), (4, 4)]
    assert isinstance(net.eval()(torch.randn(1, 3, 64, 64)), torch.Tensor)


def test_auxiliary_kinds_change_only_the_training_heads() -> None:
    arch = get_space("auxcell").from_genotype(ARCH0_GENOTYPE)
    sizes = {}
    for kind in ("cell", "classifier", "none"):
        net = get_space("auxcell", auxiliary=kind).build(arch, num_classes=4)
        sizes[kind] = (measure_network(net, (32, 32))["params_generated"],
                       count_parameters(net.decoder))
        if kind == "none":
            assert isinstance(net.train()(torch.randn(2, 3, 32, 32)), torch.Tensor)
    assert sizes["cell"][0] == sizes["classifier"][0] == sizes["none"][0]
    # A classifier head is one conv3x3 (48 -> 4 classes, with bias) per block.
    assert sizes["classifier"][1] - sizes["none"][1] == 3 * (9 * 48 * 4 + 4)
    assert sizes["cell"][1] > sizes["classifier"][1]


def test_size_counts_unordered_branches() -> None:
    space = get_space("auxcell")
    # Independent count: enumerate unordered (position, op) pairs per layer and unordered
    # input pairs per block.
    ops = range(len(OPERATIONS))
    cells = len(OPERATIONS)
    for positions in (2, 5, 8):
        branches = list(itertools.product(range(positions), ops))
        cells *= sum(1 for _ in itertools.combinations_with_replacement(branches, 2))
    connections = 1
    for pool in (4, 5, 6):
        connections *= sum(1 for _ in itertools.combinations_with_replacement(range(pool), 2))
    assert connections == 3150
    assert space.size() == cells * connections
    assert 1e10 < cells < 1e11  # the paper's "~10^10 unique cells"


@pytest.mark.parametrize(
    "genotype",
    [
        [[8, [0, 0, 5, 2], [0, 2, 8, 8]], [[3, 3], [3, 2], [3, 0]]],  # two layers
        [[8, [0, 2, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],  # pos 2
        [[11, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],  # op 11
        [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[4, 3], [3, 2], [3, 0]]],  # input 4
        "arch0",
    ],
)
def test_bad_genotypes_raise_config_error(genotype: object) -> None:
    with pytest.raises(ConfigError):
        get_space("auxcell").from_genotype(genotype)


def test_unknown_auxiliary_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="auxiliary"):
        get_space("auxcell", auxiliary="deep")


def test_unused_blocks_feed_the_head() -> None:
    cell = get_space("auxcell").from_genotype(ARCH0_GENOTYPE).cell
    arch = AuxCellArchitecture(cell, ((0, 1), (4, 2), (5, 3)))
    assert arch.unused_blocks() == [2]
