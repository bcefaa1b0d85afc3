"""The CAS cell space: parameters, genotypes, space size and the paper's network structure."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
import pytest
import torch
from torch import nn

import search_spaces.cas as cas_module
from nas_optuna.exceptions import ConfigError
from search_spaces.cas import (
    MS_OPERATIONS,
    NONE,
    OPERATIONS,
    CASArchitecture,
    CASCell,
    CASDecoder,
    CASNode,
    CASSpace,
    count_cell_designs,
)


def _suggested(space: CASSpace, seed: int = 0) -> optuna.trial.Trial:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    space.suggest(trial)
    return trial


def _uniform_cell(nodes: int, op: str, inputs: tuple[int, int] = (0, 1)) -> CASCell:
    return CASCell(tuple(CASNode(inputs, (op, op)) for _ in range(nodes)))


def _all_none() -> CASArchitecture:
    return CASArchitecture(_uniform_cell(3, NONE), _uniform_cell(3, NONE), _uniform_cell(6, NONE))


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameters ------------------------------------------------------------------------


def test_suggest_uses_the_documented_parameter_names_and_choices() -> None:
    space = CASSpace()
    trial = _suggested(space, seed=1)
    expected = {
        f"{kind}_node{j}_{key}"
        for kind, nodes in (("normal", 3), ("reduce", 3), ("ms", 6))
        for j in range(nodes)
        for key in ("inputs", "op0", "op1")
    }
    assert set(trial.params) == expected
    dists = trial.distributions
    # Node j picks an unordered pair of different predecessors among 0..j+1.
    assert dists["normal_node0_inputs"].choices == ("0,1",)
    assert dists["reduce_node2_inputs"].choices == ("0,1", "0,2", "0,3", "1,2", "1,3", "2,3")
    assert len(dists["ms_node5_inputs"].choices) == math.comb(7, 2)
    # O_b has 11 ops, O_ms 10; both end with the search-time None edge.
    assert dists["normal_node1_op0"].choices == OPERATIONS and len(OPERATIONS) == 12
    assert dists["ms_node3_op1"].choices == MS_OPERATIONS and len(MS_OPERATIONS) == 11
    assert OPERATIONS[-1] == MS_OPERATIONS[-1] == NONE
    # The names are written in the module docstring, which analysis code refers to.
    doc = cas_module.__doc__ or ""
    for pattern in ("{cell}_node{j}_inputs", "{cell}_node{j}_op0", "{cell}_node{j}_op1"):
        assert pattern in doc


def test_include_none_false_gives_the_derived_space() -> None:
    space = CASSpace(include_none=False)
    dists = _suggested(space).distributions
    assert NONE not in dists["normal_node0_op0"].choices
    assert NONE not in dists["ms_node0_op1"].choices
    assert space.size() < CASSpace().size()
    with pytest.raises(ConfigError, match="cas_none"):
        space.from_genotype(CASSpace().to_genotype(_all_none()))


def test_from_params_rejects_a_missing_or_invalid_parameter() -> None:
    space = CASSpace()
    params = space.to_params(space.random_architecture(seed=2))
    with pytest.raises(ConfigError):
        space.from_params({k: v for k, v in params.items() if k != "ms_node4_op0"})
    with pytest.raises(ConfigError):
        space.from_params({**params, "normal_node1_inputs": "1,1"})


# --- genotypes -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_genotype_round_trip(seed: int) -> None:
    space = CASSpace()
    arch = space.random_architecture(seed=seed)
    genotype = space.to_genotype(arch)
    assert space.from_genotype(genotype) == arch
    assert space.to_genotype(space.from_genotype(genotype)) == genotype
    # Edges are listed lower predecessor first; the other order is the same node.
    swapped = [[[node[1], node[0]] for node in cell] for cell in genotype]
    assert space.from_genotype(swapped) == arch


def test_genotype_format_is_plain_lists_of_op_and_predecessor() -> None:
    space = CASSpace(nodes=1, ms_nodes=1)
    arch = CASArchitecture(
        CASCell((CASNode((0, 1), ("cas_conv_3x3", "cas_identity")),)),
        CASCell((CASNode((0, 1), ("cas_none", "cas_max_pool_3x3")),)),
        CASCell((CASNode((0, 1), ("cas_ms_identity", "cas_ms_residual_spp_8x8")),)),
    )
    assert space.to_genotype(arch) == [
        [[["cas_conv_3x3", 0], ["cas_identity", 1]]],
        [[["cas_none", 0], ["cas_max_pool_3x3", 1]]],
        [[["cas_ms_identity", 0], ["cas_ms_residual_spp_8x8", 1]]],
    ]


_GOOD = CASSpace().to_genotype(CASSpace().random_architecture(seed=0))


def _replace(cell: int, node: int, value: Any) -> list:
    genotype = [list(c) for c in _GOOD]
    genotype[cell][node] = value
    return genotype


@pytest.mark.parametrize(
    ("genotype", "message"),
    [
        ("not a genotype", "list \\[normal, reduce, ms\\]"),
        (_GOOD[:2], "list \\[normal, reduce, ms\\]"),
        ([_GOOD[0][:2], _GOOD[1], _GOOD[2]], "3 nodes"),  # a node missing
        (_replace(0, 1, [["cas_conv_3x3", 0]]), "two \\[op, predecessor\\] edges"),
        (_replace(0, 1, [["sep_conv_3x3", 0], ["cas_identity", 1]]), "not one of"),
        (_replace(2, 0, [["cas_conv_3x3", 0], ["cas_ms_identity", 1]]), "not one of"),
        (_replace(1, 0, [["cas_conv_3x3", 0], ["cas_identity", 2]]), "not in 0..1"),
        (_replace(1, 2, [["cas_conv_3x3", -1], ["cas_identity", 1]]), "not in 0..3"),
        (_replace(0, 2, [["cas_conv_3x3", 3], ["cas_identity", 3]]), "different nodes"),
        (_replace(0, 0, [["cas_conv_3x3", True], ["cas_identity", 1]]), "not an integer"),
    ],
)
def test_bad_genotypes_raise_one_line_config_errors(genotype: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        CASSpace().from_genotype(genotype)
    assert "\n" not in str(error.value)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="nodes must be"):
        CASSpace(nodes=0)
    with pytest.raises(ConfigError, match="ms_nodes must be"):
        CASSpace(ms_nodes=True)
    with pytest.raises(ConfigError, match="include_none"):
        CASSpace(include_none="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown profile"):
        CASSpace(profile="tiny")


def test_options_and_describe() -> None:
    space = CASSpace("final", nodes=2)
    assert space.options() == {
        "name": "cas",
        "profile": "final",
        "nodes": 2,
        "ms_nodes": 6,
        "include_none": True,
    }
    line = space.describe(space.random_architecture(seed=4))
    assert "\n" not in line and line.startswith("normal: n2=") and "| ms: " in line


# --- space size ------------------------------------------------------------------------


def _canonical_cell(nodes: Sequence[tuple[tuple[int, int], tuple[str, str]]]) -> str:
    """A cell's form under the collapsed symmetries, found by trying every relabeling.

    None edges are dropped (they build nothing), a node is the *set* of its edges, and the
    smallest rendering over all relabelings of the intermediate nodes is the canonical one.
    """
    edge_sets = [
        frozenset((p, op) for p, op in zip(inputs, ops) if op != NONE) for inputs, ops in nodes
    ]
    best = None
    for perm in itertools.permutations(range(len(nodes))):

        def rename(p: int, perm: tuple[int, ...] = perm) -> int:
            return p if p < 2 else perm[p - 2] + 2

        rendering = repr(
            sorted(
                (perm[j], sorted((rename(p), op) for p, op in edges))
                for j, edges in enumerate(edge_sets)
            )
        )
        best = rendering if best is None or rendering < best else best
    assert best is not None
    return best


def _brute_force_cells(choices: Iterable[Sequence[tuple[tuple[int, int], tuple[str, str]]]]) -> int:
    return len({_canonical_cell(cell) for cell in choices})


def _cells_from_distributions(
    dists: dict[str, Any], kind: str, nodes: int
) -> Iterable[list[tuple[tuple[int, int], tuple[str, str]]]]:
    """Every cell the space's suggested distributions allow, node by node."""
    per_node = []
    for j in range(nodes):
        options = []
        for pair in dists[f"{kind}_node{j}_inputs"].choices:
            a, b = (int(x) for x in pair.split(","))
            for op0 in dists[f"{kind}_node{j}_op0"].choices:
                for op1 in dists[f"{kind}_node{j}_op1"].choices:
                    options.append(((a, b), (op0, op1)))
        per_node.append(options)
    return (list(cell) for cell in itertools.product(*per_node))


def test_size_matches_brute_force_over_every_parameter_setting_of_a_tiny_space() -> None:
    # nodes=2 / ms_nodes=1 with the full op sets: 62,208 normal-cell and 121 MS-cell settings.
    space = CASSpace(nodes=2, ms_nodes=1)
    dists = _suggested(space).distributions
    backbone = _brute_force_cells(_cells_from_distributions(dists, "normal", 2))
    ms = _brute_force_cells(_cells_from_distributions(dists, "ms", 1))
    # One MS node: two real edges (1 pair x 10^2), one edge (2 x 10) or zeros.
    assert ms == 100 + 20 + 1
    assert space.size() == backbone * backbone * ms


def _small_cells(nodes: int, num_ops: int, allow_none: bool) -> Iterable[list]:
    ops = [f"op{i}" for i in range(num_ops)] + ([NONE] if allow_none else [])
    per_node = [
        [
            (pair, (o0, o1))
            for pair in itertools.combinations(range(j + 2), 2)
            for o0 in ops
            for o1 in ops
        ]
        for j in range(nodes)
    ]
    return (list(cell) for cell in itertools.product(*per_node))


@pytest.mark.parametrize(
    ("nodes", "num_ops", "allow_none"),
    [(2, 2, True), (3, 1, True), (3, 2, True), (3, 2, False), (4, 1, False)],
)
def test_count_cell_designs_matches_brute_force(nodes: int, num_ops: int, allow_none: bool) -> None:
    # Three and four nodes exercise relabelings with 2-, 3- and 4-cycles, including pairs
    # of edges that a relabeling swaps.
    expected = _brute_force_cells(_small_cells(nodes, num_ops, allow_none))
    assert count_cell_designs(nodes, num_ops, allow_none=allow_none) == expected


def test_default_size() -> None:
    backbone = count_cell_designs(3, 11, allow_none=True)
    ms = count_cell_designs(6, 10, allow_none=True)
    assert CASSpace().size() == backbone**2 * ms == 5_378_345_213_327_709_991_128_497_563_200
    # The collapsed symmetries make it smaller than the raw parameter space.
    raw_backbone = math.prod(math.comb(j + 2, 2) * 12**2 for j in range(3))
    raw_ms = math.prod(math.comb(j + 2, 2) * 11**2 for j in range(6))
    assert CASSpace().size() < raw_backbone**2 * raw_ms
    # Without None and with one node, nothing collapses: a pair of inputs, 11^2 or 10^2 ops.
    assert CASSpace(nodes=1, ms_nodes=1, include_none=False).size() == 121 * 121 * 100


# --- the network -----------------------------------------------------------------------


def test_backbone_is_three_convs_with_strides_2_1_2_then_8_cells_to_stride_16() -> None:
    space = CASSpace()
    decoder = space.build_decoder(space.random_architecture(seed=0), num_classes=3)
    assert [layer[0].stride for layer in decoder.stem] == [(2, 2), (1, 1), (2, 2)]
    assert [layer[0].kernel_size for layer in decoder.stem] == [(3, 3)] * 3
    assert (
        decoder.cell_types
        == ["normal", "normal", "reduce"] + ["normal"] * 2 + ["reduce"] + ["normal"] * 2
    )
    assert decoder.cell_types.count("normal") == 6 and decoder.cell_types.count("reduce") == 2
    assert decoder.backbone_output_stride == 16
    # Odd sizes map to ceil(H / stride) at every stage.
    outputs = decoder.eval().backbone(torch.zeros(1, 3, 45, 61))
    strides = [1, 2, 4] + [4, 4, 8, 8, 8, 16, 16, 16]
    sizes = [tuple(o.shape[-2:]) for o in outputs]
    assert sizes[1:] == [(-(-45 // s), -(-61 // s)) for s in strides[1:]]


def test_cells_use_the_paper_node_counts_and_widths_double_at_reductions() -> None:
    space = CASSpace()
    decoder = space.build_decoder(space.random_architecture(seed=5), num_classes=3)
    # N = 6 nodes (2 inputs + 3 intermediate + output) and N = 9 (2 + 6 + output).
    assert all(len(cell.graph.sources) == 3 for cell in decoder.cells)
    assert len(decoder.ms_cell.graph.sources) == 6
    widths = [cell.graph.width for cell in decoder.cells]
    assert widths == [8, 8, 16, 16, 16, 32, 32, 32]
    # The output node concatenates the intermediate nodes.
    assert [cell.out_channels for cell in decoder.cells] == [3 * w for w in widths]
    assert decoder.classifier.in_channels == 6 * 8


def test_final_profile_widths() -> None:
    space = CASSpace("final")
    decoder = space.build_decoder(space.random_architecture(seed=5), num_classes=19)
    assert [layer[0].out_channels for layer in decoder.stem] == [32, 32, 64]
    assert [cell.graph.width for cell in decoder.cells] == [32, 32, 64, 64, 64, 128, 128, 128]
    assert decoder.ms_cell.graph.width == 32 and decoder.classifier.out_channels == 19


def test_ms_cell_fuses_the_second_normal_cell_with_the_final_features() -> None:
    space = CASSpace()
    decoder = space.build_decoder(space.random_architecture(seed=3), num_classes=4).eval()
    seen: dict[str, Any] = {}
    decoder.cells[1].register_forward_hook(lambda m, i, o: seen.__setitem__("cell1", o))
    decoder.cells[7].register_forward_hook(lambda m, i, o: seen.__setitem__("cell7", o))
    decoder.ms_cell.register_forward_hook(lambda m, i, o: seen.__setitem__("ms", i))
    out = decoder([torch.randn(1, 3, 64, 80)])
    low, high = seen["ms"]
    assert decoder.cell_types[:2] == ["normal", "normal"]
    assert low is seen["cell1"] and high is seen["cell7"]
    assert low.shape[-2:] == (16, 20) and high.shape[-2:] == (4, 5)
    # The MS cell works at the larger input's resolution, so the logits have stride 4.
    assert decoder.output_stride == 4 and out.shape == (1, 4, 16, 20)


def test_every_cell_of_a_type_shares_the_design_with_its_own_weights() -> None:
    space = CASSpace()
    arch = space.random_architecture(seed=7)
    decoder = space.build_decoder(arch, num_classes=3)

    def expected_sources(cell: CASCell) -> list[tuple[int, ...]]:
        return [tuple(p for p, _ in node.edges()) for node in cell.nodes]

    def layout(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        # Module types and parameter shapes, independent of the width.
        return [
            (type(m).__name__, tuple(p.dim() for p in m.parameters(recurse=False)))
            for m in module.graph.edge_ops.modules()
        ]

    for kind, design in (("normal", arch.normal), ("reduce", arch.reduce)):
        cells = [c for c, t in zip(decoder.cells, decoder.cell_types) if t == kind]
        assert all(c.graph.sources == expected_sources(design) for c in cells)
        assert all(layout(c) == layout(cells[0]) for c in cells)
        first = {id(p) for p in cells[0].parameters()}
        assert all(first.isdisjoint(id(p) for p in c.parameters()) for c in cells[1:])
    assert decoder.ms_cell.graph.sources == expected_sources(arch.ms)


def test_reduction_cells_stride_only_the_edges_from_their_inputs() -> None:
    cell = CASCell(
        (
            CASNode((0, 1), ("cas_conv_3x3", "cas_conv_3x3")),
            CASNode((1, 2), ("cas_conv_3x3", "cas_conv_3x3")),
            CASNode((2, 3), ("cas_conv_3x3", "cas_conv_3x3")),
        )
    )
    arch = CASArchitecture(cell, cell, _uniform_cell(6, "cas_ms_identity"))
    decoder = CASSpace().build_decoder(arch, num_classes=2)
    reduce_cell = decoder.cells[2]
    strides = [[op[0][0].stride for op in ops] for ops in reduce_cell.graph.edge_ops]
    assert strides == [[(2, 2), (2, 2)], [(2, 2), (1, 1)], [(1, 1), (1, 1)]]
    normal_strides = [[op[0][0].stride for op in ops] for ops in decoder.cells[0].graph.edge_ops]
    assert normal_strides == [[(1, 1)] * 2] * 3


def test_none_edges_are_pruned_and_their_predecessor_does_not_matter() -> None:
    space = CASSpace()
    base = space.random_architecture(seed=11)

    def with_first_normal_node(node: CASNode) -> CASArchitecture:
        normal = CASCell((node, *base.normal.nodes[1:]))
        return CASArchitecture(normal, base.reduce, base.ms)

    full = space.build_decoder(
        with_first_normal_node(CASNode((0, 1), ("cas_conv_3x3", "cas_conv_3x3"))), 3
    )
    one_none = space.build_decoder(
        with_first_normal_node(CASNode((0, 1), (NONE, "cas_conv_3x3"))), 3
    )
    # A None edge builds no module, so it costs no parameters: one 3x3 conv C->C + BN less
    # in each of the 6 normal cells (two each at C = 8, 16, 32).
    assert len(one_none.cells[0].graph.edge_ops[0]) == 1
    assert one_none.cells[0].graph.sources[0] == (1,)
    saved = sum(2 * (c * c * 9 + 2 * c) for c in (8, 16, 32))
    assert _count_params(full) - _count_params(one_none) == saved
    # The same single edge (1, conv) written with a different pruned predecessor builds
    # the same network: same parameters and, from the same seed, the same outputs.
    variants = []
    for node in (
        CASNode((0, 1), (NONE, "cas_conv_3x3")),
        CASNode((1, 2), ("cas_conv_3x3", NONE)),
    ):
        normal = CASCell((base.normal.nodes[0], node, base.normal.nodes[2]))
        torch.manual_seed(0)
        variants.append(space.build(CASArchitecture(normal, base.reduce, base.ms), 3).eval())
    a, b = variants
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }
    image = torch.randn(1, 3, 40, 40)
    assert torch.equal(a(image), b(image))


def test_a_node_whose_edges_are_all_none_is_zeros_in_the_concatenation() -> None:
    space = CASSpace()
    base = space.random_architecture(seed=12)
    normal = CASCell((base.normal.nodes[0], CASNode((0, 2), (NONE, NONE)), base.normal.nodes[2]))
    decoder = space.build_decoder(CASArchitecture(normal, base.reduce, base.ms), 3).eval()
    outputs = decoder.backbone(torch.randn(1, 3, 48, 48))
    cell0 = outputs[3]
    assert cell0.shape[1] == 3 * 8  # the zero node keeps its place in the concatenation
    assert torch.count_nonzero(cell0[:, 8:16]) == 0
    assert torch.count_nonzero(cell0[:, :8]) > 0


def test_an_architecture_of_none_edges_only_trains_and_predicts_the_bias() -> None:
    space = CASSpace()
    net = space.build(_all_none(), num_classes=5).train()
    out = net(torch.randn(2, 3, 45, 61))
    assert out.shape == (2, 5, 12, 16)
    out.mean().backward()
    # Every MS node is zeros, so the logits are the classifier's bias.
    bias = net.decoder.classifier.bias.detach().view(1, -1, 1, 1).expand_as(out)
    assert torch.equal(out.detach(), bias)
    assert net.decoder.classifier.bias.grad is not None


@pytest.mark.parametrize("seed", range(4))
def test_random_architectures_train_forward_and_backward(seed: int) -> None:
    space = CASSpace()
    net = space.build(space.random_architecture(seed=seed), num_classes=5).train()
    assert isinstance(net.decoder, CASDecoder)
    for height, width in ((64, 64), (45, 61), (32, 33)):
        out = net(torch.randn(2, 3, height, width))
        out.mean().backward()
        stride = net.decoder.output_stride
        assert out.shape == (2, 5, -(-height // stride), -(-width // stride))


def test_build_stem_is_the_image() -> None:
    space = CASSpace()
    assert space.stem_id == "image"
    image = torch.zeros(1, 3, 8, 8)
    assert space.build_stem()(image)[0] is image


def test_cell_inputs_are_projected_only_when_needed_but_cell_outputs_always() -> None:
    arch = CASSpace().random_architecture(seed=8)
    # With a stem as wide as the cells, stem outputs at the cell's resolution pass as is.
    decoder = CASDecoder(arch, 3, stem=(8, 8, 8), cell=8, ms=8)
    cell0, cell1, cell2 = decoder.cells[:3]
    assert isinstance(cell0.project[1], nn.Identity)  # stem conv 3: 8 channels at 1/4
    assert cell0.project[0][0].stride == (2, 2)  # stem conv 2 is at 1/2
    assert isinstance(cell1.project[0], nn.Identity)  # stem conv 3 again
    # Cell outputs (concatenations) are always projected by a 1x1 conv.
    for projection in (cell1.project[1], cell2.project[0], cell2.project[1]):
        assert projection[0].kernel_size == (1, 1)
    # After the reduction cell 2, cell 3's older input (cell 1, at 1/4) is strided.
    assert decoder.cells[3].project[0][0].stride == (2, 2)
    # The default search widths (stem 16 -> C 8) need a projection from the stem too.
    default = CASSpace().build_decoder(arch, 3)
    assert default.cells[0].project[1][0].in_channels == 16
