"""The auxiliary-cell decoder space of Nekrasov, Chen, Shen and Reid (CVPR 2019).

The encoder is MobileNet-v2 (smp's, randomly initialised here; the trainer loads ImageNet
weights or warms it up); its outputs 24@1/4, 32@1/8, 96@1/16 and 320@1/32 each go through
conv1x1-BN-ReLU to the decoder width and form the *pool*. Three *blocks* each choose two
pool entries (with replacement), apply the cell to each (own weights per input), pass each
branch through conv1x1-BN-ReLU, resize the smaller to the larger and sum; the sum joins
the pool. Block outputs that no later block chose are resized to the largest among them,
concatenated and classified: ReLU -> conv1x1-BN-ReLU to the width -> conv3x3 (with bias).

One *cell* design is shared by every cell: ``op0`` on the input, then three layers, each
choosing two positions (with replacement) and two ops; the feature list is
``[x, op0(x)]`` plus, per layer, ``op_a(in_a), op_b(in_b)`` and their sum, so layers 1, 2
and 3 choose among the first 2, 5 and 8 entries. The cell output is the sum of the nodes
among ``op0(x)``, ``sum1``, ``sum2``, ``sum3`` that no later layer chose. Every cell op maps
the width to itself at stride 1 (``../shared/spec/reference-semantics.md``).

**Auxiliary cells** (paper Sect. 3.2.2): during training each block also feeds an
auxiliary head — a copy of the cell with its own weights (``auxiliary="cell"``, the
paper's choice) or nothing but the classifier (``auxiliary="classifier"``, the paper's
ablation), then conv3x3 to the classes. In training mode the decoder returns
:class:`~nas_optuna.networks.AuxiliaryOutputs`; the trainer adds the auxiliary
cross-entropies with weight ``auxiliary_weight`` (0.15, the final value of the paper's
0.3 -> 0.15 schedule and the spec's search-time weight). In eval mode, which inference,
cost measurement and export use, only the logits are returned, and the heads live under
``decoder.auxiliary``, which :func:`~nas_optuna.cost.count_parameters` callers exclude
(``params_generated`` does not count them). ``auxiliary="none"`` builds no heads.

Profiles:

* ``search`` — width 48, separable convs applied once (paper Sect. 4: 48 channels in
  search, 64 in training).
* ``final`` — width 64, separable convs twice: the released models. At 21 classes the
  released arch0 / arch1 / arch2 have 817,109 / 997,333 / 1,040,341 generated parameters.

Order of decisions (what the PPO controller sees): connections first, then the cell, as
the paper's controller emits them (Fig. 1).

Parameter names (stable)::

    block_{b}_input1, block_{b}_input2   categorical 0..3+b (pool index)     b = 0..2
    cell_op0                             categorical over OPERATIONS
    cell_layer_{l}_pos1, _pos2           categorical 0..1+3l (feature index)  l = 0..2
    cell_layer_{l}_op1, _op2             categorical over OPERATIONS

Size (:meth:`AuxCellSpace.size`): a block's two inputs are interchangeable (the two
branches are summed), and so are a layer's two (position, op) pairs; collapsing those
symmetries gives 3,150 connection patterns and 1.68e10 cells, 5.3e13 architectures. The
paper estimates 120 connection patterns and ~1e10 cells (~1e12); its connection count is
not derivable from its own description (4 x 5 x 6 = 120 would be one ordered input per
block), so ours is stated with its derivation in ``docs/spaces/auxcell.md``.

Example:
    >>> from search_spaces import get_space
    >>> space = get_space("auxcell", profile="final")
    >>> arch = space.from_genotype(ARCH0_GENOTYPE)
    >>> space.to_genotype(arch) == ARCH0_GENOTYPE
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import optuna
import torch
from torch import nn

from nas_optuna.diagram import ArchitectureGraph, GraphBuilder, op_label
from nas_optuna.exceptions import ConfigError
from nas_optuna.networks import AuxiliaryOutputs
from nas_optuna.ops import CVPR2019_OPS, build_op, conv_bn_relu, resize
from nas_optuna.stems import mobilenet_v2_stem
from search_spaces._base import SearchSpace, genotype_index

__all__ = [
    "ARCH0_GENOTYPE",
    "ARCH1_GENOTYPE",
    "ARCH2_GENOTYPE",
    "AUXILIARY_KINDS",
    "AuxCellArchitecture",
    "AuxCellDecoder",
    "AuxCellSpace",
    "Cell",
    "CellLayer",
    "OPERATIONS",
]

#: Cell operations, in the order of the authors' genotype indices.
OPERATIONS = CVPR2019_OPS
#: What an auxiliary head holds before its classifier.
AUXILIARY_KINDS = ("cell", "classifier", "none")

#: The released architectures (authors' ``[cell, connections]`` format).
ARCH0_GENOTYPE = [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]]
ARCH1_GENOTYPE = [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]]
ARCH2_GENOTYPE = [[5, [0, 0, 4, 1], [3, 2, 0, 1], [5, 6, 5, 0]], [[1, 3], [4, 3], [2, 2]]]

_ENCODER_REDUCTIONS = (4, 8, 16, 32)
_ENCODER_CHANNELS = (24, 32, 96, 320)
_NUM_LAYERS = 3
_NUM_BLOCKS = 3


def _positions(layer: int) -> int:
    """Feature-list entries layer ``layer`` may choose from: 2, 5, 8."""
    return 2 + 3 * layer


@dataclasses.dataclass(frozen=True)
class CellLayer:
    """Two (position, op) branches whose outputs are summed."""

    pos1: int
    pos2: int
    op1: str
    op2: str


@dataclasses.dataclass(frozen=True)
class Cell:
    """The shared cell design: ``op0`` on the input, then the layers."""

    op0: str
    layers: tuple[CellLayer, ...]

    def output_nodes(self) -> list[int]:
        """Feature indices summed into the cell output: unused ones of op0(x), sum1, ..."""
        used = {p for layer in self.layers for p in (layer.pos1, layer.pos2)}
        nodes = [1] + [_positions(layer) + 2 for layer in range(len(self.layers))]
        return [n for n in nodes if n not in used]


@dataclasses.dataclass(frozen=True)
class AuxCellArchitecture:
    """A frozen auxiliary-cell-space architecture: the cell and each block's two inputs."""

    cell: Cell
    connections: tuple[tuple[int, int], ...]

    def unused_blocks(self) -> list[int]:
        """Blocks whose output no later block takes (they feed the head)."""
        used = {i for pair in self.connections for i in pair}
        offset = len(_ENCODER_REDUCTIONS)
        return [b for b in range(len(self.connections)) if b + offset not in used]


class _Cell(nn.Module):
    """One instance of the cell design (own weights)."""

    def __init__(self, cell: Cell, width: int, op_repeats: int) -> None:
        super().__init__()

        def op(name: str) -> nn.Module:
            return build_op(name, width, width, 1, repeats=op_repeats)

        self.op0 = op(cell.op0)
        self.positions = [(layer.pos1, layer.pos2) for layer in cell.layers]
        self.layers = nn.ModuleList(
            nn.ModuleList([op(layer.op1), op(layer.op2)]) for layer in cell.layers
        )
        self.output_nodes = cell.output_nodes()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x, self.op0(x)]
        for (p1, p2), (op1, op2) in zip(self.positions, self.layers):
            a, b = op1(features[p1]), op2(features[p2])
            features += [a, b, a + b]
        return sum(features[n] for n in self.output_nodes)  # type: ignore[return-value]




class _Block(nn.Module):
    """Cell on each of two inputs, conv1x1-BN-ReLU per branch, resize to the larger, sum."""

    def __init__(self, inputs: tuple[int, int], cell: Cell, width: int, op_repeats: int) -> None:
        super().__init__()
        self.inputs = inputs
        self.cells = nn.ModuleList(_Cell(cell, width, op_repeats) for _ in inputs)
        self.projections = nn.ModuleList(conv_bn_relu(width, width) for _ in inputs)

    def forward(self, pool: list[torch.Tensor]) -> torch.Tensor:
        branches = [
            projection(cell(pool[i]))
            for i, cell, projection in zip(self.inputs, self.cells, self.projections)
        ]
        size = max((b.shape[-2:] for b in branches), key=lambda s: s[0] * s[1])
        return sum(resize(b, size) for b in branches)  # type: ignore[return-value]


class _AuxiliaryHead(nn.Module):
    """Intermediate supervision of one block: optional cell copy -> conv3x3 to classes."""

    def __init__(self, cell: Cell | None, width: int, num_classes: int, op_repeats: int) -> None:
        super().__init__()
        self.cell = _Cell(cell, width, op_repeats) if cell is not None else nn.Identity()
        self.classifier = nn.Conv2d(width, num_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cell(x))


class AuxCellDecoder(nn.Module):
    """The generated part of an auxiliary-cell-space network.

    Args:
        arch: The architecture.
        num_classes: Output classes.
        width: Decoder width (adaptation, cells, head).
        op_repeats: Repeats of the separable convolutions (1 in search, 2 released).
        auxiliary: ``cell``, ``classifier`` or ``none`` (see the module docstring).
    """

    def __init__(
        self,
        arch: AuxCellArchitecture,
        *,
        num_classes: int,
        width: int,
        op_repeats: int,
        auxiliary: str = "cell",
    ) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(conv_bn_relu(c, width) for c in _ENCODER_CHANNELS)
        reductions = list(_ENCODER_REDUCTIONS)
        blocks = []
        for pair in arch.connections:
            blocks.append(_Block(pair, arch.cell, width, op_repeats))
            reductions.append(min(reductions[i] for i in pair))
        self.blocks = nn.ModuleList(blocks)
        offset = len(_ENCODER_REDUCTIONS)
        self.head_inputs = [b + offset for b in arch.unused_blocks()]
        #: Nominal output stride: the finest resolution among the head's inputs.
        self.output_stride = min(reductions[i] for i in self.head_inputs)
        self.head = nn.Sequential(
            nn.ReLU(),
            conv_bn_relu(width * len(self.head_inputs), width),
            nn.Conv2d(width, num_classes, 3, padding=1, bias=True),
        )
        #: Training-only heads; excluded from ``params_generated`` and from inference.
        self.auxiliary: nn.ModuleList | None = None
        if auxiliary != "none":
            cell = arch.cell if auxiliary == "cell" else None
            self.auxiliary = nn.ModuleList(
                _AuxiliaryHead(cell, width, num_classes, op_repeats) for _ in self.blocks
            )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor | AuxiliaryOutputs:
        pool = [adapt(f) for adapt, f in zip(self.adapt, features)]
        for block in self.blocks:
            pool.append(block(pool))
        outputs = [pool[i] for i in self.head_inputs]
        size = max((o.shape[-2:] for o in outputs), key=lambda s: s[0] * s[1])
        logits = self.head(torch.cat([resize(o, size) for o in outputs], dim=1))
        if not self.training or self.auxiliary is None:
            return logits
        offset = len(_ENCODER_REDUCTIONS)
        auxiliary = [head(pool[offset + b]) for b, head in enumerate(self.auxiliary)]
        return AuxiliaryOutputs(logits, auxiliary)


class AuxCellSpace(SearchSpace[AuxCellArchitecture]):
    """The CVPR 2019 auxiliary-cell decoder space (registered as ``auxcell``).

    Args:
        profile: ``"search"`` or ``"final"`` (see the module docstring).
        auxiliary: Auxiliary heads during training: ``cell`` (paper), ``classifier`` or
            ``none``.
    """

    name: ClassVar[str] = "auxcell"
    stem_id: ClassVar[str] = "mobilenet_v2@4,8,16,32"
    summary: ClassVar[str] = (
        "Nekrasov et al., CVPR 2019: 3 decoder blocks over MobileNet-v2 outputs, one shared "
        "cell of 11 ops, auxiliary cells"
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "search": {"width": 48, "op_repeats": 1},
        "final": {"width": 64, "op_repeats": 2},
    }

    def __init__(self, profile: str = "search", *, auxiliary: str = "cell") -> None:
        super().__init__(profile)
        if auxiliary not in AUXILIARY_KINDS:
            raise ConfigError(
                f"auxcell space: auxiliary must be one of {', '.join(AUXILIARY_KINDS)}, "
                f"got {auxiliary!r}"
            )
        self.auxiliary = auxiliary

    def options(self) -> dict[str, Any]:
        return {**super().options(), "auxiliary": self.auxiliary}

    # --- define-by-run ---------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> AuxCellArchitecture:
        pool = len(_ENCODER_REDUCTIONS)
        connections = []
        for b in range(_NUM_BLOCKS):
            choices = tuple(range(pool + b))
            connections.append(
                (
                    trial.suggest_categorical(f"block_{b}_input1", choices),
                    trial.suggest_categorical(f"block_{b}_input2", choices),
                )
            )
        op0 = trial.suggest_categorical("cell_op0", OPERATIONS)
        layers = []
        for layer in range(_NUM_LAYERS):
            positions = tuple(range(_positions(layer)))
            layers.append(
                CellLayer(
                    pos1=trial.suggest_categorical(f"cell_layer_{layer}_pos1", positions),
                    pos2=trial.suggest_categorical(f"cell_layer_{layer}_pos2", positions),
                    op1=trial.suggest_categorical(f"cell_layer_{layer}_op1", OPERATIONS),
                    op2=trial.suggest_categorical(f"cell_layer_{layer}_op2", OPERATIONS),
                )
            )
        return AuxCellArchitecture(Cell(op0, tuple(layers)), tuple(connections))

    def to_params(self, arch: AuxCellArchitecture) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for b, (i, j) in enumerate(arch.connections):
            params[f"block_{b}_input1"] = i
            params[f"block_{b}_input2"] = j
        params["cell_op0"] = arch.cell.op0
        for index, layer in enumerate(arch.cell.layers):
            params[f"cell_layer_{index}_pos1"] = layer.pos1
            params[f"cell_layer_{index}_pos2"] = layer.pos2
            params[f"cell_layer_{index}_op1"] = layer.op1
            params[f"cell_layer_{index}_op2"] = layer.op2
        return params

    def size(self) -> int:
        """Distinct architectures: a block's inputs and a layer's two branches are unordered."""
        cells = len(OPERATIONS)
        for layer in range(_NUM_LAYERS):
            items = _positions(layer) * len(OPERATIONS)
            cells *= _multisets_of_two(items)
        connections = 1
        for b in range(_NUM_BLOCKS):
            connections *= _multisets_of_two(len(_ENCODER_REDUCTIONS) + b)
        return cells * connections

    # --- authors' genotypes ----------------------------------------------------------
    def from_genotype(self, genotype: Any) -> AuxCellArchitecture:
        """Converts ``[cell, connections]`` in the authors' index format.

        ``cell = [op0, [p1, p2, o1, o2] x 3]``, ``connections = [[i, j] x 3]``.

        Raises:
            ConfigError: The list does not have the expected shape or an index is out of range.
        """
        try:
            raw_cell, raw_connections = genotype
            op0, *raw_layers = raw_cell
            if len(raw_layers) != _NUM_LAYERS or len(raw_connections) != _NUM_BLOCKS:
                raise ValueError(
                    f"expected {_NUM_LAYERS} cell layers and {_NUM_BLOCKS} connections"
                )
            layers = tuple(
                CellLayer(
                    int(p1),
                    int(p2),
                    OPERATIONS[genotype_index(o1)],
                    OPERATIONS[genotype_index(o2)],
                )
                for p1, p2, o1, o2 in raw_layers
            )
            cell = Cell(OPERATIONS[genotype_index(op0)], layers)
            connections = tuple((int(i), int(j)) for i, j in raw_connections)
        except (TypeError, ValueError, IndexError) as error:
            raise ConfigError(
                f"not an auxcell genotype ([cell, connections]): {error}"
            ) from None
        # Validate position and input ranges by replaying the define-by-run suggestions.
        return self.from_params(self.to_params(AuxCellArchitecture(cell, connections)))

    def to_genotype(self, arch: AuxCellArchitecture) -> list:
        cell = [OPERATIONS.index(arch.cell.op0)] + [
            [layer.pos1, layer.pos2, OPERATIONS.index(layer.op1), OPERATIONS.index(layer.op2)]
            for layer in arch.cell.layers
        ]
        return [cell, [list(pair) for pair in arch.connections]]

    def describe(self, arch: AuxCellArchitecture) -> str:
        layers = " ".join(
            f"L{index}=[{x.pos1}:{x.op1},{x.pos2}:{x.op2}]"
            for index, x in enumerate(arch.cell.layers)
        )
        blocks = " ".join(f"B{b}=({i},{j})" for b, (i, j) in enumerate(arch.connections))
        return f"cell op0={arch.cell.op0} {layers} | {blocks}"

    # --- networks --------------------------------------------------------------------
    def build_stem(self) -> nn.Module:
        return mobilenet_v2_stem(_ENCODER_REDUCTIONS)

    def build_decoder(self, arch: AuxCellArchitecture, num_classes: int) -> AuxCellDecoder:
        return AuxCellDecoder(
            arch, num_classes=num_classes, auxiliary=self.auxiliary, **self.settings
        )

    # --- pictures --------------------------------------------------------------------
    def graph(self, arch: AuxCellArchitecture) -> ArchitectureGraph:
        """The decoder over the encoder's levels, and the shared cell design beside it.

        The decoder part: the adapted encoder outputs (levels no block reads are left
        out), each block's two cells (own weights, each followed by conv1x1-BN-ReLU) and
        their sum, the head over the unused blocks and, unless ``auxiliary="none"``, each
        block's auxiliary head (kind ``head``) with its training-only logits. The cell
        part, with its own input ``x`` and output: ``op0``, the three layers' two ops and
        sums, and the sum of the unused nodes.

        Example:
            >>> from search_spaces import get_space
            >>> space = get_space("auxcell", profile="final")
            >>> graph = space.graph(space.from_genotype(ARCH0_GENOTYPE))
        """
        width = self.settings["width"]
        builder = GraphBuilder()
        builder.add("image", "image", "input")
        builder.add("stem", "MobileNet-v2", "stem", detail="encoder", inputs=["image"])
        pool, reductions = [], list(_ENCODER_REDUCTIONS)
        for level, (reduction, channels) in enumerate(zip(_ENCODER_REDUCTIONS, _ENCODER_CHANNELS)):
            pool.append(
                builder.add(
                    f"pool{level}",
                    f"1/{reduction}",
                    "feature",
                    detail=f"{channels} -> {width} ch",
                    inputs=["stem"],
                )
            )
        for b, pair in enumerate(arch.connections):
            branches = [
                builder.add(
                    f"b{b}.cell{k}", "cell", "cell", detail=f"B{b}, then conv1x1", inputs=[pool[i]]
                )
                for k, i in enumerate(pair)
            ]
            reductions.append(min(reductions[i] for i in pair))
            pool.append(
                builder.add(
                    f"b{b}.sum",
                    "sum",
                    "aggregation",
                    detail=f"B{b} out, 1/{reductions[-1]}",
                    inputs=branches,
                )
            )
            if self.auxiliary != "none":
                inside = "cell copy, conv3x3" if self.auxiliary == "cell" else "conv3x3"
                head = builder.add(
                    f"aux{b}", f"aux head {b}", "head", detail=inside, inputs=[pool[-1]]
                )
                builder.add(
                    f"aux{b}.logits",
                    f"aux logits {b}",
                    "output",
                    detail=f"training only, 1/{reductions[-1]}",
                    inputs=[head],
                )
        offset = len(_ENCODER_REDUCTIONS)
        head_inputs = [b + offset for b in arch.unused_blocks()]
        output_stride = min(reductions[i] for i in head_inputs)
        builder.add_head([pool[i] for i in head_inputs], output_stride, width)
        _draw_cell(builder, arch.cell, width)
        title = (
            f"auxcell ({self.profile}): 3 blocks over MobileNet-v2, auxiliary {self.auxiliary}, "
            f"output stride {output_stride}; with the design shared by every cell"
        )
        return builder.build(title, drop_dead_ends=True)


def _draw_cell(builder: GraphBuilder, cell: Cell, width: int) -> None:
    """Adds the cell design as a separate part, from input ``x`` to ``cell output``."""
    x = builder.add("cell.x", "x", "input", detail=f"cell input, {width} ch")
    features = [x, builder.add("cell.op0", op_label(cell.op0), "op", detail="op0", inputs=[x])]
    for index, layer in enumerate(cell.layers):
        ops = [
            builder.add(
                f"cell.l{index}.op{k}",
                op_label(op),
                "op",
                detail=f"layer {index + 1} op{k}",
                inputs=[features[position]],
            )
            for k, (op, position) in enumerate(
                ((layer.op1, layer.pos1), (layer.op2, layer.pos2)), start=1
            )
        ]
        total = builder.add(
            f"cell.l{index}.sum", "sum", "aggregation", detail=f"layer {index + 1}", inputs=ops
        )
        features += [*ops, total]
    outputs = [features[n] for n in cell.output_nodes()]
    if len(outputs) > 1:
        outputs = [
            builder.add("cell.sum", "sum", "aggregation", detail="unused nodes", inputs=outputs)
        ]
    builder.add(
        "cell.out", "cell output", "output", detail="design of every cell", inputs=outputs
    )


def _multisets_of_two(items: int) -> int:
    """Unordered pairs drawn with replacement from ``items`` things."""
    return items * (items + 1) // 2

