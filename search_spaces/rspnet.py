"""The RSPNet search space: a DARTS normal cell, path attention and recursive stage partial.

From *NAS-based Recursive Stage Partial Network (RSPNet) for Light-Weight Semantic
Segmentation* (``../shared/papers/rspnet.txt``). There is no backbone: the generated part
takes the image (:class:`~nas_optuna.stems.ImageStem`) and is the whole network. Three
decisions are searched:

* **The cell** (paper "Cell Architecture Search"): one normal cell, shared by every cell
  of the network ("only one type of cell is used"). It has one input and two intermediate
  nodes and keeps its width and resolution. DARTS keeps every edge into a node that has
  at most two predecessors, so the derived cell has three edges, each one of the five
  operators of :data:`OPERATIONS` (``nas_optuna.ops.RSP_OPS``: 3x3 conv, 3x3 depthwise
  separable conv, 5x5 conv, 3x3 conv with dilation 2, identity)::

      x' = conv1x1-BN-ReLU(x)            (DARTS' preprocessing, to half the cell width)
      n1 = op_in_n1(x')
      n2 = op_in_n2(x') + op_n1_n2(n1)
      cell(x) = concat(n1, n2)           (the cell's width again)

* **Path attention** (paper "Path Attention Module"): layer ``k`` of ``L`` takes two of
  the outputs of all the nodes before it — node 0 is the stem, node ``j`` is layer ``j``
  — so the choice is an unordered pair out of ``k`` nodes. Layers 1 and 2 have one and
  two predecessors, so they take all of them and nothing is suggested. The chosen inputs
  are projected by a 1x1 conv (no bias) to the layer's width, resized bilinearly to its
  resolution, summed, and pass BN -> ReLU (the PAM's "1x1 convolution and an
  interpolation operation ... after adding together"); the attention weights themselves
  exist only in the authors' differentiable search and are not part of a derived network.
* **RSP** (paper "Recursive Stage Partial"): a suggested switch. When on, every cell
  sends the first half of its input channels through the cell above (so the cell works at
  half width, and its convolutions have a quarter of the parameters) and concatenates the
  result after the untouched second half: ``cell_rsp(x) = concat(x[C/2:], cell(x[:C/2]))``
  (the paper's Eq. 9 with concatenation, "we concatenate the output and the unused part
  of the input").

Network layout (choices where the paper is silent, written here and tested):

* **Stem**: three 3x3 Conv-BN-ReLU (strides 2, 1, 2; widths ``B/2``, ``B/2``, ``B``) to
  1/4 resolution, as in Auto-DeepLab, the backbone-free network the paper compares with.
* **Layers**: ``layer_reductions`` fixes each layer's resolution; the default
  ``(4, 8, 16, 32, 16, 8, 4)`` is a U-shaped encoder-decoder (the paper's introduction:
  segmentation networks are U-Nets, and the PAM fuses "high- and low-resolution feature
  maps"). A layer at reduction ``r`` has width ``B * r / 4`` (doubling on every halving,
  as in Auto-DeepLab and HRNet) and feature size ``ceil(H / r) x ceil(W / r)``. Cells never
  change resolution (paper), so only the PAM's interpolation does. Each layer stacks
  ``cells_per_layer`` cells: 4 in the ``final`` profile (paper: "we stack four cells"),
  1 in ``search`` (paper: "we only use one cell in each layer when we search").
* **Unused layers are not built.** A layer whose output no later layer takes cannot reach
  the logits, so its path choice is not even suggested (define-by-run: the pairs are
  suggested from the last layer down, for the layers that are used). The last layer is
  always used.
* **Head**: a 1x1 conv with bias from the last layer to the classes; the output stride
  (:attr:`RSPNetDecoder.output_stride`) is the last layer's reduction, 4 by default.
* The stem's and the cells' convolutions are Conv-BN-ReLU units (the ops' convention);
  bilinear resizes use ``align_corners=False``.

Profiles (the paper states no widths; see ``docs/spaces/rspnet.md``):

* ``search`` — ``B = 16`` (16 ... 128 channels; DARTS' search-network width), one cell
  per layer, as the paper searches: a batch of two 64x64 images takes about 10 ms forward
  and backward on one CPU thread.
* ``final`` — ``B = 144`` (144 ... 1152 channels), four cells per layer. The width is
  chosen so that the default layout with every layer used (layer ``k`` takes ``k-2`` and
  ``k-1``), averaged over the 125 cells, has 65.6M parameters at 19 classes, near the
  68.67M of the paper's Table 1 ("Ours"); RSP brings that to 18.8M (paper: 17.20M, "Ours
  + RSP"): a quarter inside the cells, while the PAM's projections keep their size.

Parameter names (stable; analysis and stored studies rely on them)::

    cell_op_in_n1, cell_op_in_n2, cell_op_n1_n2   categorical over OPERATIONS
    rsp                                           categorical False | True
    layer_{k}_paths    categorical over "i+j", 0 <= i < j < k; for k = L, L-1, ..., 3,
                       only for the layers that a later layer (or the head) uses

Genotype (plain nested lists, JSON-able)::

    [[op_in_n1, op_in_n2, op_n1_n2], [inputs of layer 1, ..., inputs of layer L], rsp]

with operator names from :data:`OPERATIONS`, each layer's inputs as ascending node
indices (``[0]`` for layer 1, ``[0, 1]`` for layer 2, two nodes later, ``[]`` for a layer
that is not used), and ``rsp`` a bool.

Size (:meth:`RSPNetSpace.size`): a pair of inputs is unordered (the PAM sums them), unused
layers are not built (their choices are not part of an architecture), and when
``op_in_n1`` is the identity ``n1 = x'``, so ``n2 = op_in_n2(x') + op_n1_n2(x')`` and the
two operators are interchangeable: 4 x 25 + 15 = 115 distinct cells (of 125). With the
default seven layers there are 5,034 distinct wirings (of 3 x 6 x 10 x 15 x 21 = 56,700
pair choices when every layer is counted), so 115 x 2 x 5,034 = 1,157,820 architectures.
The paper states no figure.

Example:
    >>> from search_spaces.rspnet import RSPNetSpace
    >>> space = RSPNetSpace(layer_reductions=(4, 8, 4))
    >>> genotype = [["rsp_conv_3x3", "rsp_identity", "rsp_conv_5x5"], [[0], [0, 1], [1, 2]], True]
    >>> arch = space.from_genotype(genotype)
    >>> space.to_params(arch)["layer_3_paths"]
    '1+2'
    >>> space.to_genotype(arch) == genotype
    True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import optuna
import torch
from torch import nn

from nas_optuna.diagram import ArchitectureGraph, GraphBuilder, op_label
from nas_optuna.exceptions import ConfigError
from nas_optuna.ops import RSP_OPS, build_op, resize
from nas_optuna.stems import ImageStem
from search_spaces._base import SearchSpace

__all__ = [
    "DEFAULT_LAYER_REDUCTIONS",
    "EDGES",
    "OPERATIONS",
    "PATHS_PER_LAYER",
    "Cell",
    "RSPNetArchitecture",
    "RSPNetDecoder",
    "RSPNetSpace",
]

#: The five operators of the normal cell, in genotype order.
OPERATIONS: tuple[str, ...] = RSP_OPS
#: The cell's edges (source_target), in the order of the genotype and of the suggestions.
EDGES: tuple[str, ...] = ("in_n1", "in_n2", "n1_n2")
#: How many earlier outputs the path-attention module passes to each layer (paper: two).
PATHS_PER_LAYER = 2
#: Reductions of the layers of the default layout: a U from 1/4 down to 1/32 and back.
DEFAULT_LAYER_REDUCTIONS: tuple[int, ...] = (4, 8, 16, 32, 16, 8, 4)

_STEM_REDUCTION = 4


@dataclasses.dataclass(frozen=True)
class Cell:
    """The operators on the three edges of the normal cell."""

    op_in_n1: str
    op_in_n2: str
    op_n1_n2: str

    @property
    def ops(self) -> tuple[str, str, str]:
        """The operators in :data:`EDGES` order."""
        return (self.op_in_n1, self.op_in_n2, self.op_n1_n2)


@dataclasses.dataclass(frozen=True)
class RSPNetArchitecture:
    """A frozen RSPNet architecture.

    Attributes:
        cell: The normal cell, shared by every cell of the network.
        rsp: Whether each cell passes only half of its channels through (RSP).
        inputs: ``inputs[k - 1]`` are the nodes feeding layer ``k`` (node 0 is the stem,
            node ``j`` is layer ``j``), ascending; ``()`` for a layer that is not used.
    """

    cell: Cell
    rsp: bool
    inputs: tuple[tuple[int, ...], ...]

    def used_layers(self) -> list[int]:
        """The layers (1-based) that are built, i.e. that reach the logits."""
        return [k for k, nodes in enumerate(self.inputs, start=1) if nodes]


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------



class _PathAttention(nn.Module):
    """The derived PAM: 1x1 conv and resize of each chosen input, sum, BN -> ReLU."""

    def __init__(self, in_widths: Sequence[int], width: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(c, width, 1, bias=False) for c in in_widths)
        self.norm = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, inputs: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for projection, x in zip(self.projections, inputs):
            # A bias-free 1x1 conv and a bilinear resize are both linear and commute, so
            # convolve at whichever of the two resolutions is smaller.
            if x.shape[-2] * x.shape[-1] > size[0] * size[1]:
                y = projection(resize(x, size))
            else:
                y = resize(projection(x), size)
            total = y if total is None else total + y
        assert total is not None  # every used layer has at least one input
        return self.norm(total)


class _Cell(nn.Module):
    """The normal cell at ``width`` channels, optionally as an RSP cell."""

    def __init__(self, cell: Cell, width: int, rsp: bool) -> None:
        super().__init__()
        self.rsp = rsp
        #: Channels that go through the searched operators (half of them under RSP).
        self.inner_width = width // 2 if rsp else width
        node_width = self.inner_width // 2
        self.preprocess = build_op("conv1x1", self.inner_width, node_width)
        self.op_in_n1 = build_op(cell.op_in_n1, node_width, node_width)
        self.op_in_n2 = build_op(cell.op_in_n2, node_width, node_width)
        self.op_n1_n2 = build_op(cell.op_n1_n2, node_width, node_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part = x[:, : self.inner_width] if self.rsp else x
        h = self.preprocess(part)
        n1 = self.op_in_n1(h)
        n2 = self.op_in_n2(h) + self.op_n1_n2(n1)
        out = torch.cat([n1, n2], dim=1)
        if not self.rsp:
            return out
        # The untouched half goes first, so the next cell works on it: the halves alternate.
        return torch.cat([x[:, self.inner_width :], out], dim=1)


class _Layer(nn.Module):
    """Path attention followed by the stacked cells."""

    def __init__(
        self, in_widths: Sequence[int], width: int, cell: Cell, rsp: bool, cells: int
    ) -> None:
        super().__init__()
        self.paths = _PathAttention(in_widths, width)
        self.cells = nn.Sequential(*(_Cell(cell, width, rsp) for _ in range(cells)))

    def forward(self, inputs: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return self.cells(self.paths(inputs, size))


class RSPNetDecoder(nn.Module):
    """The whole RSPNet network (there is no backbone): image list in, logits out.

    Args:
        arch: The architecture.
        num_classes: Number of output classes.
        layer_reductions: Reduction of each layer relative to the image.
        base_width: Width ``B`` at 1/4 resolution; a layer at reduction ``r`` has
            ``B * r / 4`` channels.
        cells_per_layer: Cells stacked in every layer.
    """

    def __init__(
        self,
        arch: RSPNetArchitecture,
        *,
        num_classes: int,
        layer_reductions: Sequence[int],
        base_width: int,
        cells_per_layer: int,
    ) -> None:
        super().__init__()
        if len(arch.inputs) != len(layer_reductions):
            raise ConfigError(
                f"rspnet: the architecture has {len(arch.inputs)} layers, the space "
                f"{len(layer_reductions)}"
            )
        half = base_width // 2
        self.stem = nn.Sequential(
            build_op("rsp_conv_3x3", 3, half, 2),
            build_op("rsp_conv_3x3", half, half, 1),
            build_op("rsp_conv_3x3", half, base_width, 2),
        )
        self.reductions = (_STEM_REDUCTION, *layer_reductions)
        widths = [base_width * r // _STEM_REDUCTION for r in self.reductions]
        self.used = arch.used_layers()
        self.inputs = {k: arch.inputs[k - 1] for k in self.used}
        self.layers = nn.ModuleList(
            _Layer(
                [widths[n] for n in self.inputs[k]], widths[k], arch.cell, arch.rsp, cells_per_layer
            )
            for k in self.used
        )
        self.head = nn.Conv2d(widths[-1], num_classes, 1)
        #: Output stride: the last layer's reduction.
        self.output_stride = self.reductions[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        image = features[0]
        height, width = image.shape[-2:]
        nodes: list[torch.Tensor | None] = [None] * len(self.reductions)
        nodes[0] = self.stem(image)
        for k, layer in zip(self.used, self.layers):
            r = self.reductions[k]
            size = (-(-height // r), -(-width // r))
            nodes[k] = layer([nodes[n] for n in self.inputs[k]], size)
        return self.head(nodes[-1])


# --------------------------------------------------------------------------------------
# The space
# --------------------------------------------------------------------------------------


@functools.cache
def _pair_choices(layer: int) -> tuple[str, ...]:
    """The ``layer_{k}_paths`` choices: every pair ``"i+j"`` of nodes before layer ``k``."""
    return tuple(f"{i}+{j}" for i, j in itertools.combinations(range(layer), PATHS_PER_LAYER))


def _forced_inputs(layer: int) -> tuple[int, ...] | None:
    """The inputs of a layer with too few predecessors to choose from, else None."""
    return tuple(range(layer)) if layer <= PATHS_PER_LAYER else None


@functools.cache
def _count_wirings(num_layers: int) -> int:
    """Distinct choices of inputs for the used layers, over all sets of used layers.

    Walks from the last layer down with the set of layers that later layers need (a
    bitmask); memoised, so the work is bounded by ``2**L`` states times the pairs.
    """

    @functools.cache
    def count(layer: int, needed: int) -> int:
        if layer == 0:
            return 1
        bit = 1 << layer
        if not needed & bit:
            return count(layer - 1, needed)
        rest = needed & ~bit
        forced = _forced_inputs(layer)
        options = (
            [forced]
            if forced is not None
            else itertools.combinations(range(layer), PATHS_PER_LAYER)
        )
        total = 0
        for nodes in options:
            mask = rest
            for node in nodes:
                mask |= (1 << node) if node > 0 else 0
            total += count(layer - 1, mask)
        return total

    return count(num_layers, 1 << num_layers)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"rspnet: {name} must be a positive integer, got {value!r}")
    return value


class RSPNetSpace(SearchSpace[RSPNetArchitecture]):
    """The RSPNet space (registered as ``rspnet``).

    Args:
        profile: ``"search"`` or ``"final"`` (see the module docstring).
        layer_reductions: Each layer's reduction relative to the image: powers of two,
            at least 4 (the stem's); the last is the output stride. Default: the U-shaped
            ``(4, 8, 16, 32, 16, 8, 4)``.
        cells_per_layer: Cells stacked per layer; ``None`` takes the profile's (1 for
            ``search``, 4 for ``final``).

    Raises:
        ConfigError: An option is out of range.
    """

    name: ClassVar[str] = "rspnet"
    stem_id: ClassVar[str] = "image"
    summary: ClassVar[str] = (
        "RSPNet (recursive stage partial NAS): a 2-node normal cell over 5 ops, path "
        "attention (2 earlier outputs per layer) and the RSP half-channel switch, no backbone"
    )
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "search": {"base_width": 16, "cells_per_layer": 1},
        "final": {"base_width": 144, "cells_per_layer": 4},
    }

    def __init__(
        self,
        profile: str = "search",
        *,
        layer_reductions: Sequence[int] = DEFAULT_LAYER_REDUCTIONS,
        cells_per_layer: int | None = None,
    ) -> None:
        super().__init__(profile)
        if isinstance(layer_reductions, str | bytes) or not isinstance(layer_reductions, Sequence):
            raise ConfigError(
                f"rspnet: layer_reductions must be a list of integers, got {layer_reductions!r}"
            )
        if not layer_reductions:
            raise ConfigError("rspnet: layer_reductions needs at least one layer")
        for r in layer_reductions:
            _check_positive_int("every layer reduction", r)
            if r < _STEM_REDUCTION or r & (r - 1):
                raise ConfigError(
                    f"rspnet: layer reductions must be powers of two >= {_STEM_REDUCTION}, "
                    f"got {r}"
                )
        self.layer_reductions: tuple[int, ...] = tuple(layer_reductions)
        self.cells_per_layer = _check_positive_int(
            "cells_per_layer",
            self.settings["cells_per_layer"] if cells_per_layer is None else cells_per_layer,
        )
        self.base_width: int = self.settings["base_width"]

    @property
    def num_layers(self) -> int:
        """Number of layers ``L``."""
        return len(self.layer_reductions)

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "layer_reductions": list(self.layer_reductions),
            "cells_per_layer": self.cells_per_layer,
        }

    # --- define-by-run ---------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> RSPNetArchitecture:
        cell = Cell(*(trial.suggest_categorical(f"cell_op_{edge}", OPERATIONS) for edge in EDGES))
        rsp = trial.suggest_categorical("rsp", (False, True))
        inputs: list[tuple[int, ...]] = [()] * self.num_layers
        needed = {self.num_layers}
        # From the last layer down, so that only the layers something uses are suggested.
        for layer in range(self.num_layers, 0, -1):
            if layer not in needed:
                continue
            nodes = _forced_inputs(layer)
            if nodes is None:
                pair = trial.suggest_categorical(f"layer_{layer}_paths", _pair_choices(layer))
                nodes = tuple(int(n) for n in pair.split("+"))
            inputs[layer - 1] = nodes
            needed.update(n for n in nodes if n > 0)
        return RSPNetArchitecture(cell, bool(rsp), tuple(inputs))

    def to_params(self, arch: RSPNetArchitecture) -> dict[str, Any]:
        params: dict[str, Any] = {
            f"cell_op_{edge}": op for edge, op in zip(EDGES, arch.cell.ops)
        }
        params["rsp"] = arch.rsp
        for layer, nodes in enumerate(arch.inputs, start=1):
            if nodes and _forced_inputs(layer) is None:
                params[f"layer_{layer}_paths"] = "+".join(str(n) for n in nodes)
        return params

    def size(self) -> int:
        """Distinct architectures: distinct cells x 2 (RSP) x distinct wirings.

        Symmetries collapsed: a layer's two inputs are unordered (summed); unused layers
        are not built, so their inputs are not counted; with ``op_in_n1`` the identity,
        ``op_in_n2`` and ``op_n1_n2`` act on the same tensor and are summed, so they are
        interchangeable.
        """
        n = len(OPERATIONS)
        cells = (n - 1) * n * n + n * (n + 1) // 2
        return cells * 2 * _count_wirings(self.num_layers)

    # --- genotypes -------------------------------------------------------------------
    def from_genotype(self, genotype: Any) -> RSPNetArchitecture:
        """Converts ``[[op_in_n1, op_in_n2, op_n1_n2], [inputs per layer], rsp]``.

        Raises:
            ConfigError: The list does not have that shape, an operator is unknown, the
                layer count differs from the space's, or a layer's inputs are not what
                path attention could have chosen (see the module docstring).
        """
        try:
            raw_ops, raw_inputs, raw_rsp = genotype
            ops = tuple(raw_ops)
            inputs = tuple(tuple(_node(n) for n in nodes) for nodes in raw_inputs)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"not an rspnet genotype ([cell ops, inputs per layer, rsp]): {error}"
            ) from None
        if len(ops) != len(EDGES) or any(op not in OPERATIONS for op in ops):
            raise ConfigError(
                f"rspnet genotype: the cell needs {len(EDGES)} operators out of "
                f"{', '.join(OPERATIONS)}; got {list(ops)!r}"
            )
        if not isinstance(raw_rsp, bool):
            raise ConfigError(f"rspnet genotype: rsp must be true or false, got {raw_rsp!r}")
        if len(inputs) != self.num_layers:
            raise ConfigError(
                f"rspnet genotype has {len(inputs)} layers; this space has {self.num_layers}"
            )
        needed = {self.num_layers}
        for layer in range(self.num_layers, 0, -1):
            nodes = inputs[layer - 1]
            if layer not in needed:
                if nodes:
                    raise ConfigError(
                        f"rspnet genotype: no later layer uses layer {layer}, so its inputs "
                        f"must be [], got {list(nodes)}"
                    )
                continue
            forced = _forced_inputs(layer)
            valid = (
                nodes == forced
                if forced is not None
                else len(nodes) == PATHS_PER_LAYER
                and list(nodes) == sorted(set(nodes))
                and nodes[-1] < layer
            )
            if not valid:
                expected = list(forced) if forced is not None else f"two of 0..{layer - 1}"
                raise ConfigError(
                    f"rspnet genotype: layer {layer} needs the ascending inputs {expected}, "
                    f"got {list(nodes)}"
                )
            needed.update(n for n in nodes if n > 0)
        return RSPNetArchitecture(Cell(*ops), raw_rsp, inputs)

    def to_genotype(self, arch: RSPNetArchitecture) -> list:
        return [list(arch.cell.ops), [list(nodes) for nodes in arch.inputs], arch.rsp]

    def describe(self, arch: RSPNetArchitecture) -> str:
        def short(op: str) -> str:
            return op.removeprefix("rsp_")

        cell = (
            f"n1={short(arch.cell.op_in_n1)}(x) "
            f"n2={short(arch.cell.op_in_n2)}(x)+{short(arch.cell.op_n1_n2)}(n1)"
        )
        layers = " ".join(
            f"L{k}@{r}<{'+'.join(map(str, nodes)) if nodes else '(unused)'}"
            for k, (r, nodes) in enumerate(zip(self.layer_reductions, arch.inputs), start=1)
        )
        return f"cell {cell} | rsp {'on' if arch.rsp else 'off'} | {layers}"

    # --- networks --------------------------------------------------------------------
    def build_stem(self) -> nn.Module:
        return ImageStem()

    def build_decoder(self, arch: RSPNetArchitecture, num_classes: int) -> RSPNetDecoder:
        return RSPNetDecoder(
            arch,
            num_classes=num_classes,
            layer_reductions=self.layer_reductions,
            base_width=self.base_width,
            cells_per_layer=self.cells_per_layer,
        )

    # --- pictures --------------------------------------------------------------------
    def graph(self, arch: RSPNetArchitecture) -> ArchitectureGraph:
        """The layers with their chosen paths, and the shared cell design beside them.

        The network part: the stem, then every used layer as its path-attention module
        (kind ``aggregation``, fed by the chosen earlier outputs) and its stacked cells
        (with resolution, width and count), then the classifier; unused layers are not
        built, so not drawn. The cell part, with its own input ``x`` and output: the
        preprocessing conv1x1, the three searched edges and, under RSP, the split
        whose untouched half joins the final concatenation.

        Example:
            >>> space = RSPNetSpace()
            >>> graph = space.graph(space.random_architecture(seed=0))
        """
        base = self.base_width
        builder = GraphBuilder()
        builder.add("image", "image", "input")
        reductions = (_STEM_REDUCTION, *self.layer_reductions)
        nodes = {
            0: builder.add(
                "stem",
                "stem",
                "stem",
                detail=f"3 conv3x3, 1/{_STEM_REDUCTION}, {base} ch",
                inputs=["image"],
            )
        }
        cells = self.cells_per_layer
        stacked = f"{cells} cells" if cells > 1 else "1 cell"
        if arch.rsp:
            stacked += " RSP"
        for k in arch.used_layers():
            reduction, width = reductions[k], base * reductions[k] // _STEM_REDUCTION
            sources = arch.inputs[k - 1]
            paths = builder.add(
                f"layer{k}.pam",
                "PAM",
                "aggregation",
                detail="1x1, resize" + (", sum" if len(sources) > 1 else ""),
                inputs=[nodes[n] for n in sources],
            )
            nodes[k] = builder.add(
                f"layer{k}",
                f"layer {k}",
                "cell",
                detail=f"1/{reduction}, {width} ch, {stacked}",
                inputs=[paths],
            )
        builder.add("head", "conv1x1", "head", detail="classifier", inputs=[nodes[self.num_layers]])
        builder.add("logits", "logits", "output", detail=f"1/{reductions[-1]}", inputs=["head"])
        _draw_cell(builder, arch)
        used = len(arch.used_layers())
        title = (
            f"rspnet ({self.profile}): {used} of {self.num_layers} layers used, "
            f"RSP {'on' if arch.rsp else 'off'}; with the design shared by every cell"
        )
        return builder.build(title)


def _draw_cell(builder: GraphBuilder, arch: RSPNetArchitecture) -> None:
    """Adds the normal cell as a separate part, from input ``x`` to ``cell output``."""
    x = builder.add("cell.x", "x", "input", detail="cell input, C ch")
    source, inner = x, "C"
    if arch.rsp:
        source = builder.add("cell.split", "split", "op", detail="first C/2 into cell", inputs=[x])
        inner = "C/2"
    pre = builder.add("cell.pre", "conv1x1", "op", detail=f"{inner} to {inner}/2", inputs=[source])
    cell = arch.cell
    n1 = builder.add("cell.in_n1", op_label(cell.op_in_n1), "op", detail="x' -> n1", inputs=[pre])
    to_n2 = [
        builder.add("cell.in_n2", op_label(cell.op_in_n2), "op", detail="x' -> n2", inputs=[pre]),
        builder.add("cell.n1_n2", op_label(cell.op_n1_n2), "op", detail="n1 -> n2", inputs=[n1]),
    ]
    n2 = builder.add("cell.n2", "sum", "aggregation", detail="n2", inputs=to_n2)
    parts = [source, n1, n2] if arch.rsp else [n1, n2]
    concat = builder.add(
        "cell.concat",
        "concat",
        "aggregation",
        detail="other C/2, n1, n2" if arch.rsp else "n1, n2",
        inputs=parts,
    )
    builder.add("cell.out", "cell output", "output", detail="design of every cell", inputs=[concat])


def _node(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a node index")
    return value
