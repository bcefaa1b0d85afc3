"""The cell search space of CAS (Zhang et al., Customizable Architecture Search, CVPR 2019).

Three cell designs are suggested separately, and every cell of a type shares its design
(with its own weights): the *normal* and the *reduction* cell of the backbone and the
*multi-scale* (MS) cell on top of it. A cell is a DAG whose first two nodes are its
inputs; every intermediate node chooses two different predecessors and one operation for
each edge, and sums the two edge outputs (paper Eq. 2 after keeping the k = 2 strongest
predecessors); the cell's output is the concatenation of all intermediate nodes.

Network (paper Sect. 3.3-3.4, Fig. 3):

* Backbone: three 3x3 Conv-BN-ReLU layers with strides 2, 1, 2, then 8 cells, of which
  cells 2 and 5 are reduction cells (:data:`REDUCTION_CELLS`), so the layout is
  ``N N R N N R N N`` (6 normal, 2 reduction) and the final features have output stride
  16. Cell ``k`` takes the outputs of the two previous cells *or layers*: cell 0 reads
  the second and third stem convolutions.
* Backbone cells have N = 6 nodes (2 inputs, 3 intermediate, 1 output); the MS cell has
  N = 9 (2 inputs, 6 intermediate, 1 output). Edges of O_b (:data:`OPERATIONS`) in the
  backbone, of O_ms (:data:`MS_OPERATIONS`) in the MS cell.
* MS cell: its inputs are the second normal cell's output (cell 1, 1/4) and the final
  features (cell 7, 1/16). The smaller one is upsampled bilinearly to the larger one's
  size, and each edge leaving an input starts with its own 1x1 Conv-BN-ReLU to the MS
  width (paper Sect. 3.4). A 1x1 convolution (with bias) classifies its output, so the
  logits have output stride 4 (:attr:`CASDecoder.output_stride`).

Choices where the paper is open (each is tested):

* Reduction cells at ``8 // 3`` and ``2 * 8 // 3`` (the placement of DARTS, on which CAS
  builds): 6 normal + 2 reduction cells with output stride 16, and the second normal
  cell at 1/4, the finest cell feature for the MS cell to recover spatial detail from.
* In a reduction cell, edges from the two inputs have stride 2, edges from intermediate
  nodes stride 1 (DARTS). The cell width doubles at each reduction cell (C, 2C, 4C).
* "1x1 convolutions if dimension projection needed": a cell input from a stem layer is
  projected (1x1 Conv-BN-ReLU, stride 2 when it has twice the resolution) only if its
  width or resolution differs; an input that is a cell output (a concatenation) is
  always projected, as it is in the paper's configuration (3C channels never equal a
  cell width), so permuting a cell's intermediate nodes only permutes channels that a
  1x1 convolution consumes.
* The two predecessors of a node are different nodes (DARTS keeps the two strongest
  *edges*, one per predecessor), and the order of the two edges does not matter: the
  parameters name the pair once (``"0,2"``) with ``op0`` on the edge from the lower node.

The "None" edge (``cas_none``, last in both op sets): CAS appends it to the candidate set
during the search and excludes it from the derived architecture (Sect. 4.1). Here it is
a choice like any other (``include_none=True``, the default; ``include_none=False`` gives
the paper's derived space) and is resolved at build time: a None edge is *pruned*, so it
has no module, no parameters and no cost, and its predecessor is irrelevant. A node with
one None edge is that single edge; a node whose two edges are None outputs zeros of the
cell's shape (it stays in the concatenation, so widths do not depend on the design). Ops
applied to a zero node are kept: a convolution of zeros yields a learned constant.

Space size (:meth:`CASSpace.size`): distinct networks, which collapses (1) the order of a
node's two edges, (2) the predecessor of a None edge (it builds nothing) and (3)
relabelings of the intermediate nodes that map one cell onto another (isomorphic DAGs:
the concatenation order changes, which the next 1x1 convolution absorbs). The count is
exact (Burnside's lemma over node relabelings, :func:`count_cell_designs`); the paper
states no size.

Profiles (the paper gives no widths; ``stem`` are the three stem convolutions' widths,
``cell`` the width C of the cells at 1/4, ``ms`` the width of the MS cell's nodes):

* ``search`` — narrow, for CPU search-time training: stem 8, 8, 16; C = 8; MS 8.
* ``final`` — widths chosen here for a real-time network (DARTS-like C): stem 32, 32, 64;
  C = 32; MS 32.

Parameter names (stable; analysis and stored studies rely on them), suggested for the
normal, then the reduction, then the MS cell, node by node::

    {cell}_node{j}_inputs   categorical "a,b" with 0 <= a < b <= j + 1 (two predecessors)
    {cell}_node{j}_op0      categorical op on the edge from a
    {cell}_node{j}_op1      categorical op on the edge from b

    cell normal, reduce:  j = 0..nodes-1 (default 3), ops OPERATIONS (O_b, then cas_none)
    cell ms:              j = 0..ms_nodes-1 (default 6), ops MS_OPERATIONS (O_ms, cas_none)

Node numbering: 0 and 1 are the cell's inputs (backbone: the outputs of cell k-2 and
k-1; MS cell: cell 1 and cell 7), ``j + 2`` is intermediate node ``j``.

Genotype format (plain nested lists, CAS released none): ``[normal, reduce, ms]``, each
a list of nodes, each node two ``[op, predecessor]`` edges, e.g.
``[["cas_conv_3x3", 0], ["cas_identity", 1]]``. :meth:`CASSpace.to_genotype` lists the
lower predecessor first; :meth:`CASSpace.from_genotype` accepts either order.

Example:
    >>> from search_spaces.cas import CASSpace
    >>> space = CASSpace(profile="search")
    >>> arch = space.random_architecture(seed=0)
    >>> space.from_genotype(space.to_genotype(arch)) == arch
    True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import optuna
import torch
from torch import nn

from nas_optuna.diagram import ArchitectureGraph, GraphBuilder, op_label
from nas_optuna.exceptions import ConfigError
from nas_optuna.ops import CAS_BACKBONE_OPS, CAS_MS_OPS, build_op, conv_bn_relu, resize
from nas_optuna.stems import ImageStem
from search_spaces._base import SearchSpace

__all__ = [
    "CELL_TYPES",
    "MS_LOW_LEVEL_CELL",
    "MS_OPERATIONS",
    "NONE",
    "NUM_CELLS",
    "OPERATIONS",
    "REDUCTION_CELLS",
    "STEM_STRIDES",
    "CASArchitecture",
    "CASCell",
    "CASDecoder",
    "CASNode",
    "CASSpace",
    "count_cell_designs",
]

#: O_b followed by the search-time "None" edge.
OPERATIONS: tuple[str, ...] = CAS_BACKBONE_OPS
#: O_ms followed by the search-time "None" edge.
MS_OPERATIONS: tuple[str, ...] = CAS_MS_OPS
#: The "None" edge: pruned when the network is built.
NONE = "cas_none"
#: The three cell designs, in suggestion and genotype order.
CELL_TYPES: tuple[str, ...] = ("normal", "reduce", "ms")

#: Strides of the three stem convolutions (paper: first and third convolutions stride 2).
STEM_STRIDES: tuple[int, ...] = (2, 1, 2)
#: Number of backbone cells.
NUM_CELLS = 8
#: Indices of the reduction cells (DARTS: ``NUM_CELLS // 3`` and ``2 * NUM_CELLS // 3``).
REDUCTION_CELLS: tuple[int, ...] = (NUM_CELLS // 3, 2 * NUM_CELLS // 3)
#: The backbone cell whose output the MS cell fuses with the final features: the second
#: normal cell.
MS_LOW_LEVEL_CELL = [k for k in range(NUM_CELLS) if k not in REDUCTION_CELLS][1]

assert OPERATIONS[-1] == NONE and MS_OPERATIONS[-1] == NONE
assert REDUCTION_CELLS == (2, 5) and MS_LOW_LEVEL_CELL == 1

_NUM_INPUTS = 2


@dataclasses.dataclass(frozen=True)
class CASNode:
    """One intermediate node: two different predecessors and the op on each edge.

    Attributes:
        inputs: The predecessors ``(a, b)`` with ``a < b`` (0, 1: the cell's inputs,
            ``j + 2``: intermediate node ``j``).
        ops: The op on the edge from ``a`` and the op on the edge from ``b``.
    """

    inputs: tuple[int, int]
    ops: tuple[str, str]

    def edges(self) -> tuple[tuple[int, str], ...]:
        """The ``(predecessor, op)`` edges that are built: None edges are pruned."""
        return tuple((i, op) for i, op in zip(self.inputs, self.ops) if op != NONE)


@dataclasses.dataclass(frozen=True)
class CASCell:
    """A cell design: its intermediate nodes in order."""

    nodes: tuple[CASNode, ...]


@dataclasses.dataclass(frozen=True)
class CASArchitecture:
    """A frozen CAS architecture: the normal, reduction and multi-scale cell designs."""

    normal: CASCell
    reduce: CASCell
    ms: CASCell

    def cell(self, kind: str) -> CASCell:
        """The design of ``kind`` (one of :data:`CELL_TYPES`)."""
        return {"normal": self.normal, "reduce": self.reduce, "ms": self.ms}[kind]


# --------------------------------------------------------------------------------------
# Space size
# --------------------------------------------------------------------------------------


def count_cell_designs(
    nodes: int, num_ops: int, *, allow_none: bool, num_inputs: int = _NUM_INPUTS
) -> int:
    """Number of distinct cells with ``nodes`` intermediate nodes.

    A node is two edges from different predecessors with one of ``num_ops`` real ops
    each, in either order; with ``allow_none`` an edge may also be None, which is pruned
    (a node is then one edge, or zeros). Cells that differ only by a relabeling of their
    intermediate nodes count once. Counted with Burnside's lemma: the relabelings of the
    nodes act on all acyclic labelled cells, and a cell fixed by a relabeling ``s`` is
    chosen one cycle of ``s`` at a time (inclusion-exclusion over the cycles that
    reference only inputs and cycles already placed).

    Args:
        nodes: Intermediate nodes.
        num_ops: Real operations (without the None edge).
        allow_none: Whether an edge may be None.
        num_inputs: The cell's input nodes (never relabeled).

    Returns:
        The number of isomorphism classes of cells.
    """
    total = 0
    for lengths, permutations in _cycle_types(nodes):
        total += permutations * _fixed_cells(lengths, num_ops, allow_none, num_inputs)
    count, remainder = divmod(total, math.factorial(nodes))
    assert remainder == 0, "Burnside sum must divide by the group order"
    return count


def _cycle_types(n: int) -> list[tuple[tuple[int, ...], int]]:
    """Each cycle type of a permutation of ``n`` elements with its number of permutations."""
    result = []

    def partitions(rest: int, largest: int) -> list[tuple[int, ...]]:
        if rest == 0:
            return [()]
        return [
            (part, *tail)
            for part in range(min(rest, largest), 0, -1)
            for tail in partitions(rest - part, part)
        ]

    for lengths in partitions(n, n):
        denominator = 1
        for length in set(lengths):
            multiplicity = lengths.count(length)
            denominator *= length**multiplicity * math.factorial(multiplicity)
        result.append((lengths, math.factorial(n) // denominator))
    return result


def _fixed_cells(lengths: Sequence[int], num_ops: int, allow_none: bool, num_inputs: int) -> int:
    """Acyclic labelled cells fixed by a relabeling with cycles of ``lengths``."""
    k = len(lengths)

    def configurations(i: int, placed: frozenset[int]) -> int:
        # Choices for a representative node of cycle i that references only inputs and
        # nodes of the cycles in ``placed``, and is invariant under s^L (L = its length).
        length = lengths[i]
        fixed = num_inputs + sum(lengths[j] for j in placed if length % lengths[j] == 0)
        swapped = sum(
            lengths[j] // 2
            for j in placed
            if (2 * length) % lengths[j] == 0 and length % lengths[j] != 0
        )
        # Two edges from fixed predecessors, or from a pair s^L swaps (then one op).
        count = math.comb(fixed, 2) * num_ops**2 + swapped * num_ops
        if allow_none:
            count += 1 + fixed * num_ops  # zeros, or a single edge
        return count

    @functools.cache
    def acyclic(remaining: frozenset[int]) -> int:
        if not remaining:
            return 1
        placed = frozenset(range(k)) - remaining
        total = 0
        members = sorted(remaining)
        for size in range(1, len(members) + 1):
            for first in itertools.combinations(members, size):
                term = math.prod(configurations(i, placed) for i in first)
                total += (-1) ** (size + 1) * term * acyclic(remaining - frozenset(first))
        return total

    return acyclic(frozenset(range(k)))


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------




class _CellGraph(nn.Module):
    """The intermediate nodes of one cell: pruned edges, sums, concatenation.

    ``edge_ops[n]`` holds the built edges of node ``n``; ``sources[n]`` their predecessors.
    """

    def __init__(self, design: CASCell, edge_factory: Any, width: int) -> None:
        super().__init__()
        self.width = width
        self.sources: list[tuple[int, ...]] = []
        edge_ops = []
        for node in design.nodes:
            edges = node.edges()
            self.sources.append(tuple(i for i, _ in edges))
            edge_ops.append(nn.ModuleList(edge_factory(i, op) for i, op in edges))
        self.edge_ops = nn.ModuleList(edge_ops)

    def run(self, states: list[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """Appends every node to ``states`` (the two inputs) and concatenates the nodes."""
        reference = states[1]
        for sources, ops in zip(self.sources, self.edge_ops):
            out: torch.Tensor | None = None
            for source, op in zip(sources, ops):
                y = resize(op(states[source]), size)
                out = y if out is None else out + y
            if out is None:
                # Both edges are None: the node is zeros of the cell's shape.
                out = reference.new_zeros((reference.shape[0], self.width, *size))
            states.append(out)
        return torch.cat(states[_NUM_INPUTS:], dim=1)


class _BackboneCell(nn.Module):
    """A normal or reduction cell with its input projections."""

    def __init__(
        self,
        design: CASCell,
        *,
        width: int,
        reduction: bool,
        inputs: Sequence[tuple[int, int, bool]],
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.stride = 2 if reduction else 1
        # inputs: (channels, stride relative to the newer input, is a cell output).
        projections = []
        for channels, stride, from_cell in inputs:
            if from_cell or channels != width or stride != 1:
                projections.append(conv_bn_relu(channels, width, 1, stride))
            else:
                projections.append(nn.Identity())
        self.project = nn.ModuleList(projections)

        def edge(source: int, op: str) -> nn.Module:
            stride = self.stride if source < _NUM_INPUTS else 1
            return build_op(op, width, width, stride)

        self.graph = _CellGraph(design, edge, width)
        self.out_channels = width * len(design.nodes)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        s0, s1 = self.project[0](s0), self.project[1](s1)
        h, w = s1.shape[-2:]
        size = (-(-h // self.stride), -(-w // self.stride))
        return self.graph.run([s0, s1], size)


class _MultiScaleCell(nn.Module):
    """The MS cell: align the inputs' sizes, one 1x1 projection per edge from an input."""

    def __init__(self, design: CASCell, in_channels: Sequence[int], width: int) -> None:
        super().__init__()

        def edge(source: int, op: str) -> nn.Module:
            op_module = build_op(op, width, width, 1)
            if source < _NUM_INPUTS:
                return nn.Sequential(conv_bn_relu(in_channels[source], width), op_module)
            return op_module

        self.graph = _CellGraph(design, edge, width)
        self.out_channels = width * len(design.nodes)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        size = (max(low.shape[-2], high.shape[-2]), max(low.shape[-1], high.shape[-1]))
        return self.graph.run([resize(low, size), resize(high, size)], size)


class CASDecoder(nn.Module):
    """A whole CAS network (the stem is :class:`~nas_optuna.stems.ImageStem`).

    Args:
        arch: The cell designs.
        num_classes: Output classes.
        stem: Widths of the three stem convolutions.
        cell: Width C of the cells before the first reduction (doubles at each).
        ms: Width of the MS cell's nodes.
    """

    #: Output stride of the logits: the MS cell works at cell 1's resolution.
    output_stride = 4
    #: Output stride of the backbone's final features.
    backbone_output_stride = 16

    def __init__(
        self,
        arch: CASArchitecture,
        num_classes: int,
        *,
        stem: Sequence[int],
        cell: int,
        ms: int,
    ) -> None:
        super().__init__()
        layers, c_in = [], 3
        for width, stride in zip(stem, STEM_STRIDES, strict=True):
            layers.append(conv_bn_relu(c_in, width, 3, stride))
            c_in = width
        self.stem = nn.ModuleList(layers)
        # (channels, reduction, is a cell output) of the two latest layers.
        previous = [(stem[1], 2, False), (stem[2], 4, False)]
        width = cell
        cells = []
        self.cell_types: list[str] = []
        for k in range(NUM_CELLS):
            reduction = k in REDUCTION_CELLS
            width *= 2 if reduction else 1
            (c0, r0, cell0), (c1, r1, cell1) = previous
            module = _BackboneCell(
                arch.reduce if reduction else arch.normal,
                width=width,
                reduction=reduction,
                inputs=[(c0, r1 // r0, cell0), (c1, 1, cell1)],
            )
            cells.append(module)
            self.cell_types.append("reduce" if reduction else "normal")
            previous = [previous[1], (module.out_channels, r1 * module.stride, True)]
        self.cells = nn.ModuleList(cells)
        assert previous[1][1] == self.backbone_output_stride
        self.ms_cell = _MultiScaleCell(
            arch.ms, (cells[MS_LOW_LEVEL_CELL].out_channels, cells[-1].out_channels), ms
        )
        self.classifier = nn.Conv2d(self.ms_cell.out_channels, num_classes, 1)

    def backbone(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the three stem convolutions followed by those of the 8 cells."""
        outputs = []
        x = image
        for layer in self.stem:
            x = layer(x)
            outputs.append(x)
        for module in self.cells:
            outputs.append(module(outputs[-2], outputs[-1]))
        return outputs

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        outputs = self.backbone(features[0])
        cell_outputs = outputs[len(self.stem) :]
        fused = self.ms_cell(cell_outputs[MS_LOW_LEVEL_CELL], cell_outputs[-1])
        return self.classifier(fused)


# --------------------------------------------------------------------------------------
# The space
# --------------------------------------------------------------------------------------


def _pairs(num_predecessors: int) -> tuple[str, ...]:
    """Choices of a node's two different predecessors, as ``"a,b"`` with ``a < b``."""
    return tuple(f"{a},{b}" for a, b in itertools.combinations(range(num_predecessors), 2))


class CASSpace(SearchSpace[CASArchitecture]):
    """The CAS cell space (registered as ``cas``).

    Args:
        profile: ``"search"`` or ``"final"`` (see the module docstring).
        nodes: Intermediate nodes of the normal and reduction cells (paper: N = 6 nodes
            including two inputs and the output, i.e. 3).
        ms_nodes: Intermediate nodes of the multi-scale cell (paper: N = 9, i.e. 6).
        include_none: Offer the None edge (paper: during the search); ``False`` gives the
            derived-architecture space.
    """

    name: ClassVar[str] = "cas"
    stem_id: ClassVar[str] = "image"
    summary: ClassVar[str] = (
        "CAS (Zhang et al., CVPR 2019): shared normal, reduction and multi-scale cell DAGs "
        "over O_b / O_ms with the search-time None edge"
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "search": {"stem": (8, 8, 16), "cell": 8, "ms": 8},
        "final": {"stem": (32, 32, 64), "cell": 32, "ms": 32},
    }

    def __init__(
        self,
        profile: str = "search",
        *,
        nodes: int = 3,
        ms_nodes: int = 6,
        include_none: bool = True,
    ) -> None:
        super().__init__(profile)
        for key, value in (("nodes", nodes), ("ms_nodes", ms_nodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"cas space: {key} must be an integer >= 1, got {value!r}")
        if not isinstance(include_none, bool):
            raise ConfigError(
                f"cas space: include_none must be true or false, got {include_none!r}"
            )
        self.nodes = nodes
        self.ms_nodes = ms_nodes
        self.include_none = include_none

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "nodes": self.nodes,
            "ms_nodes": self.ms_nodes,
            "include_none": self.include_none,
        }

    def node_count(self, kind: str) -> int:
        """Intermediate nodes of a cell of ``kind``."""
        return self.ms_nodes if kind == "ms" else self.nodes

    def operations(self, kind: str) -> tuple[str, ...]:
        """The op choices of a cell of ``kind``: O_b or O_ms, with None if included."""
        ops = MS_OPERATIONS if kind == "ms" else OPERATIONS
        return ops if self.include_none else ops[:-1]

    # --- define-by-run ---------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> CASArchitecture:
        cells = {}
        for kind in CELL_TYPES:
            ops = self.operations(kind)
            nodes = []
            for j in range(self.node_count(kind)):
                pair = trial.suggest_categorical(f"{kind}_node{j}_inputs", _pairs(j + _NUM_INPUTS))
                a, b = (int(i) for i in pair.split(","))
                op0 = trial.suggest_categorical(f"{kind}_node{j}_op0", ops)
                op1 = trial.suggest_categorical(f"{kind}_node{j}_op1", ops)
                nodes.append(CASNode((a, b), (op0, op1)))
            cells[kind] = CASCell(tuple(nodes))
        return CASArchitecture(**cells)

    def to_params(self, arch: CASArchitecture) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for kind in CELL_TYPES:
            for j, node in enumerate(arch.cell(kind).nodes):
                params[f"{kind}_node{j}_inputs"] = f"{node.inputs[0]},{node.inputs[1]}"
                params[f"{kind}_node{j}_op0"] = node.ops[0]
                params[f"{kind}_node{j}_op1"] = node.ops[1]
        return params

    def size(self) -> int:
        """Distinct networks: node edge order, None predecessors and node relabelings collapsed.

        Example:
            >>> CASSpace(include_none=False, nodes=1, ms_nodes=1).size() == 11**2 * 11**2 * 10**2
            True
        """
        backbone, ms = (
            count_cell_designs(
                self.node_count(kind),
                sum(op != NONE for op in self.operations(kind)),
                allow_none=self.include_none,
            )
            for kind in ("normal", "ms")
        )
        # Normal and reduction designs are chosen independently from the same set.
        return backbone * backbone * ms

    # --- genotypes -------------------------------------------------------------------
    def from_genotype(self, genotype: Any) -> CASArchitecture:
        """Converts ``[normal, reduce, ms]`` (see the module docstring) into an architecture.

        Raises:
            ConfigError: The lists do not have the expected shape, a node count differs
                from the space's, an op is not in the cell's set, or a predecessor is out
                of range or repeated.
        """
        if not isinstance(genotype, (list, tuple)) or len(genotype) != len(CELL_TYPES):
            raise ConfigError("cas genotype must be a list [normal, reduce, ms] of cells")
        cells = {kind: self._parse_cell(kind, raw) for kind, raw in zip(CELL_TYPES, genotype)}
        return CASArchitecture(**cells)

    def _parse_cell(self, kind: str, raw: Any) -> CASCell:
        expected = self.node_count(kind)
        if not isinstance(raw, (list, tuple)) or len(raw) != expected:
            raise ConfigError(f"cas genotype: the {kind} cell must be a list of {expected} nodes")
        ops = self.operations(kind)
        nodes = []
        for j, raw_node in enumerate(raw):
            where = f"cas genotype: {kind} node {j}"
            try:
                (op0, pred0), (op1, pred1) = raw_node
            except (TypeError, ValueError):
                raise ConfigError(f"{where} must be two [op, predecessor] edges") from None
            edges = []
            for op, pred in ((op0, pred0), (op1, pred1)):
                if not isinstance(op, str) or op not in ops:
                    raise ConfigError(f"{where}: {op!r} is not one of {', '.join(ops)}")
                if isinstance(pred, bool) or not isinstance(pred, int):
                    raise ConfigError(f"{where}: predecessor {pred!r} is not an integer")
                if not 0 <= pred < j + _NUM_INPUTS:
                    raise ConfigError(
                        f"{where}: predecessor {pred} is not in 0..{j + _NUM_INPUTS - 1}"
                    )
                edges.append((pred, op))
            if edges[0][0] == edges[1][0]:
                raise ConfigError(f"{where}: the two edges must leave different nodes")
            (a, op_a), (b, op_b) = sorted(edges)
            nodes.append(CASNode((a, b), (op_a, op_b)))
        return CASCell(tuple(nodes))

    def to_genotype(self, arch: CASArchitecture) -> list:
        return [
            [
                [[node.ops[0], node.inputs[0]], [node.ops[1], node.inputs[1]]]
                for node in arch.cell(kind).nodes
            ]
            for kind in CELL_TYPES
        ]

    def describe(self, arch: CASArchitecture) -> str:
        def short(op: str) -> str:
            return op.removeprefix("cas_ms_").removeprefix("cas_")

        parts = []
        for kind in CELL_TYPES:
            nodes = " ".join(
                f"n{j + _NUM_INPUTS}={short(node.ops[0])}({node.inputs[0]})"
                f"+{short(node.ops[1])}({node.inputs[1]})"
                for j, node in enumerate(arch.cell(kind).nodes)
            )
            parts.append(f"{kind}: {nodes}")
        return " | ".join(parts)

    # --- networks --------------------------------------------------------------------
    def build_stem(self) -> nn.Module:
        return ImageStem()

    def build_decoder(self, arch: CASArchitecture, num_classes: int) -> CASDecoder:
        return CASDecoder(arch, num_classes, **self.settings)

    # --- pictures --------------------------------------------------------------------
    def graph(self, arch: CASArchitecture) -> ArchitectureGraph:
        """The network (stem, backbone cells, multi-scale cell, classifier) and the designs.

        The network part draws the three stem convolutions, the eight backbone cells as
        boxes (each reading the outputs of the two previous cells or layers that its
        design uses) and the multi-scale cell in full: cell 7's output upsampled to cell
        1's resolution, one box per built edge op and per node, their concatenation and
        the classifier. The normal and the reduction designs are drawn once each, as
        separate parts with inputs ``cell k-2`` and ``cell k-1``. Pruned None edges are
        not drawn; a node whose two edges are None is drawn as zeros of its cell's shape
        (an edge from input 1, the shape it copies). Parts that cannot reach the logits
        (an input no node reads) are left out.

        Example:
            >>> space = CASSpace()
            >>> graph = space.graph(space.random_architecture(seed=0))
        """
        settings = self.settings
        builder = GraphBuilder()
        layers = [builder.add("image", "image", "input")]
        reduction = 1
        for index, (width, stride) in enumerate(zip(settings["stem"], STEM_STRIDES)):
            reduction *= stride
            layers.append(
                builder.add(
                    f"stem{index}",
                    "conv3x3" + (f" s{stride}" if stride > 1 else ""),
                    "stem",
                    detail=f"{width} ch, 1/{reduction}",
                    inputs=[layers[-1]],
                )
            )
        previous = layers[-2:]
        width = settings["cell"]
        reductions = []
        for k in range(NUM_CELLS):
            kind = "reduce" if k in REDUCTION_CELLS else "normal"
            if kind == "reduce":
                width, reduction = width * 2, reduction * 2
            design = arch.cell(kind)
            cell = builder.add(
                f"cell{k}",
                f"{kind} {k}",
                "cell",
                detail=f"1/{reduction}, {width * len(design.nodes)} ch",
                inputs=[previous[i] for i in _used_inputs(design)],
            )
            reductions.append(reduction)
            previous = [previous[1], cell]
        low, high = f"cell{MS_LOW_LEVEL_CELL}", f"cell{NUM_CELLS - 1}"
        factor = reductions[-1] // reductions[MS_LOW_LEVEL_CELL]
        if 1 in _used_inputs(arch.ms):
            high = builder.add(
                "ms.up", f"upsample x{factor}", "op", detail="bilinear", inputs=[high]
            )
        fused = _draw_cell(builder, "ms", arch.ms, [low, high], stride=1, projected=True)
        builder.add("classifier", "conv1x1", "head", detail="classifier", inputs=[fused])
        builder.add(
            "logits",
            "logits",
            "output",
            detail=f"1/{reductions[MS_LOW_LEVEL_CELL]}",
            inputs=["classifier"],
        )
        for kind in ("normal", "reduce"):
            inputs = [
                builder.add(f"{kind}.in{i}", name, "input", detail="after conv1x1 if needed")
                for i, name in enumerate(("cell k-2", "cell k-1"))
            ]
            stride = 2 if kind == "reduce" else 1
            concat = _draw_cell(builder, kind, arch.cell(kind), inputs, stride=stride)
            builder.add(
                f"{kind}.out",
                f"{kind} cell",
                "output",
                detail="design of every " + ("reduction" if stride > 1 else "normal") + " cell",
                inputs=[concat],
            )
        title = (
            f"cas ({self.profile}): stem, cells N N R N N R N N, multi-scale cell; "
            "with the normal and the reduction cell designs"
        )
        return builder.build(title, drop_dead_ends=True)


def _used_inputs(design: CASCell) -> list[int]:
    """The cell inputs (0, 1) that a built edge reads; a zeros node copies input 1's shape."""
    used = {i for node in design.nodes for i, _ in node.edges() if i < _NUM_INPUTS}
    if any(not node.edges() for node in design.nodes):
        used.add(1)
    return sorted(used)


def _draw_cell(
    builder: GraphBuilder,
    prefix: str,
    design: CASCell,
    inputs: Sequence[str],
    *,
    stride: int,
    projected: bool = False,
) -> str:
    """Adds a cell's edge ops, nodes and concatenation reading ``inputs``; returns the last."""
    states = list(inputs)
    for j, node in enumerate(design.nodes):
        target = j + _NUM_INPUTS
        sources = []
        for source, op in node.edges():
            detail = f"{source} -> {target}"
            if source < _NUM_INPUTS and stride > 1:
                detail += f", stride {stride}"
            if source < _NUM_INPUTS and projected:
                detail += ", conv1x1 first"
            sources.append(
                builder.add(
                    f"{prefix}.e{source}-{target}",
                    op_label(op),
                    "op",
                    detail=detail,
                    inputs=[states[source]],
                )
            )
        detail = {0: "zeros (both edges None)", 1: "one edge (one None)", 2: "sum"}[len(sources)]
        states.append(
            builder.add(
                f"{prefix}.n{target}",
                f"node {target}",
                "aggregation",
                detail=detail,
                inputs=sources or [states[1]],
            )
        )
    return builder.add(
        f"{prefix}.concat",
        "concat",
        "aggregation",
        detail=f"nodes {_NUM_INPUTS}-{len(states) - 1}",
        inputs=states[_NUM_INPUTS:],
    )
