"""Architecture diagrams: a tiny graph model and a dependency-free SVG renderer.

A search space draws an architecture as an :class:`ArchitectureGraph`
(:meth:`search_spaces.SearchSpace.graph`): boxes (:class:`Node`) of a few *kinds*, which
set their colours, joined by directed edges along which data flows from ``input`` nodes
to ``output`` nodes. :func:`render_svg` lays the graph out in layers (longest path from
the inputs, dummy points on edges that span layers, barycentre ordering against
crossings) and writes a standalone SVG, which browsers and optuna-dashboard show as
``image/svg+xml``.

Only the standard library is used, so analysis code can draw stored architectures
without torch, graphviz or matplotlib.

Example:
    >>> from nas_optuna.diagram import GraphBuilder, render_svg
    >>> builder = GraphBuilder()
    >>> builder.add("image", "image", "input")
    'image'
    >>> builder.add("conv", "conv3x3", "op", detail="stride 2", inputs=["image"])
    'conv'
    >>> builder.add("logits", "logits", "output", detail="1/2", inputs=["conv"])
    'logits'
    >>> svg = render_svg(builder.build("a tiny network"))
    >>> svg.startswith("<svg xmlns=")
    True
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "KIND_COLOURS",
    "ArchitectureGraph",
    "GraphBuilder",
    "Node",
    "op_label",
    "render_svg",
]

#: Node kind -> (fill, stroke) colours; the order is the legend's. Other kinds are drawn
#: white with a grey border.
KIND_COLOURS: Mapping[str, tuple[str, str]] = {
    "input": ("#dbe7f5", "#3d6aa2"),
    "stem": ("#e4dcf1", "#674ea7"),
    "feature": ("#eeeeee", "#7f7f7f"),
    "op": ("#dcefd5", "#3a7a23"),
    "aggregation": ("#fff1c7", "#b58900"),
    "cell": ("#cfe3f6", "#0b5394"),
    "head": ("#f6d2d2", "#a61c1c"),
    "output": ("#fde3cb", "#b45f06"),
}
_OTHER_COLOURS = ("#ffffff", "#7f7f7f")


# --------------------------------------------------------------------------------------
# The graph model
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Node:
    """One box of a diagram.

    Attributes:
        id: Unique within its graph; not shown.
        label: The short text in the box, e.g. ``"sep3x3 d2"``, ``"sum"``, ``"1/8"``.
        kind: What the box is, which sets its colour: one of :data:`KIND_COLOURS`
            (``input``, ``stem``, ``feature``, ``op``, ``aggregation``, ``cell``,
            ``head``, ``output``); any other kind is drawn white.
        detail: An optional second, smaller line, e.g. ``"stride 2"``.
    """

    id: str
    label: str
    kind: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ArchitectureGraph:
    """A directed acyclic graph of :class:`Node` boxes, data flowing along the edges.

    Args:
        nodes: The boxes, with unique ids; their order is the initial drawing order.
        edges: ``(source id, target id)`` pairs, each at most once.
        title: Drawn above the diagram.

    Raises:
        ValueError: Duplicate node ids or edges, an edge naming an unknown node, a
            self-loop or a cycle.

    Example:
        >>> graph = ArchitectureGraph(
        ...     nodes=(Node("x", "image", "input"), Node("y", "logits", "output")),
        ...     edges=(("x", "y"),),
        ...     title="identity",
        ... )
        >>> graph.successors("x")
        ['y']
    """

    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]
    title: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple((a, b) for a, b in self.edges))
        ids = [node.id for node in self.nodes]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"duplicate node id {duplicate!r}")
        known = set(ids)
        if len(set(self.edges)) != len(self.edges):
            duplicate_edge = next(e for e in self.edges if self.edges.count(e) > 1)
            raise ValueError(f"duplicate edge {duplicate_edge!r}")
        for source, target in self.edges:
            for end in (source, target):
                if end not in known:
                    raise ValueError(f"edge {(source, target)!r} names unknown node {end!r}")
            if source == target:
                raise ValueError(f"self-loop on node {source!r}")
        if len(self.topological_order()) != len(self.nodes):
            raise ValueError("the graph has a cycle")

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {node.id: i for i, node in enumerate(self.nodes)}

    @functools.cached_property
    def _adjacency(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        predecessors: dict[str, list[str]] = {node.id: [] for node in self.nodes}
        successors: dict[str, list[str]] = {node.id: [] for node in self.nodes}
        for source, target in self.edges:
            successors[source].append(target)
            predecessors[target].append(source)
        return predecessors, successors

    def node(self, node_id: str) -> Node:
        """The node with id ``node_id`` (``KeyError`` if there is none)."""
        return self.nodes[self._index[node_id]]

    def predecessors(self, node_id: str) -> list[str]:
        """Ids of the nodes with an edge into ``node_id``, in edge order."""
        return list(self._adjacency[0][node_id])

    def successors(self, node_id: str) -> list[str]:
        """Ids of the nodes ``node_id`` has an edge to, in edge order."""
        return list(self._adjacency[1][node_id])

    def topological_order(self) -> list[str]:
        """Node ids, every node after its predecessors; ties keep the node order.

        Shorter than :attr:`nodes` exactly when the graph has a cycle.
        """
        predecessors, successors = self._adjacency
        waiting = {node_id: len(p) for node_id, p in predecessors.items()}
        ready = [self._index[i] for i, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            node_id = self.nodes[heapq.heappop(ready)].id
            order.append(node_id)
            for target in successors[node_id]:
                waiting[target] -= 1
                if waiting[target] == 0:
                    heapq.heappush(ready, self._index[target])
        return order


class GraphBuilder:
    """Collects nodes and edges in drawing order and builds an :class:`ArchitectureGraph`.

    Example:
        >>> builder = GraphBuilder()
        >>> builder.add("a", "image", "input")
        'a'
        >>> builder.add("b", "logits", "output", inputs=["a"])
        'b'
        >>> builder.build("tiny").edges
        (('a', 'b'),)
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self._edges: dict[tuple[str, str], None] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def add(
        self,
        node_id: str,
        label: str,
        kind: str,
        *,
        detail: str = "",
        inputs: Iterable[str] = (),
    ) -> str:
        """Adds a node, with edges from ``inputs``, and returns its id.

        Raises:
            ValueError: ``node_id`` is already taken.
        """
        if node_id in self._nodes:
            raise ValueError(f"duplicate node id {node_id!r}")
        self._nodes[node_id] = Node(node_id, label, kind, detail)
        for source in inputs:
            self.connect(source, node_id)
        return node_id

    def connect(self, source: str, target: str) -> None:
        """Adds the edge ``source -> target`` (once, however often it is connected)."""
        self._edges[(source, target)] = None

    def add_head(self, features: Sequence[str], output_stride: int, width: int) -> str:
        """The decoders' shared ending: concat (if several), conv head, logits; returns logits.

        Template and auxcell decoders resize every unused block output to the finest
        resolution, concatenate them and classify with conv1x1 + conv3x3.
        """
        features = list(features)
        if len(features) > 1:
            features = [self.add("concat", "concat", "aggregation",
                                 detail=f"resized to 1/{output_stride}", inputs=features)]
        self.add("head", "head", "head", detail=f"conv1x1 {width}, conv3x3", inputs=features)
        return self.add("logits", "logits", "output", detail=f"1/{output_stride}",
                        inputs=["head"])

    def build(self, title: str = "", *, drop_dead_ends: bool = False) -> ArchitectureGraph:
        """The graph.

        Args:
            title: The diagram's title.
            drop_dead_ends: Leave out the nodes from which no ``output`` node can be
                reached (computed but unused, e.g. an encoder level that no block reads).

        Raises:
            ValueError: See :class:`ArchitectureGraph`.
        """
        nodes = list(self._nodes.values())
        edges = list(self._edges)
        if drop_dead_ends:
            into: dict[str, list[str]] = {node.id: [] for node in nodes}
            for source, target in edges:
                if source in into and target in into:
                    into[target].append(source)
            alive = {node.id for node in nodes if node.kind == "output"}
            stack = list(alive)
            while stack:
                for source in into[stack.pop()]:
                    if source not in alive:
                        alive.add(source)
                        stack.append(source)
            nodes = [node for node in nodes if node.id in alive]
            edges = [(a, b) for a, b in edges if a in alive and b in alive]
        return ArchitectureGraph(tuple(nodes), tuple(edges), title)


_OP_LABELS = {
    "global_average_pool": "global avg pool",
    "skip_connect": "skip",
    "dil_conv_3x3": "conv3x3 d2",
    "dil_conv_3x3_rep2": "conv3x3 d2 x2",
}


def op_label(name: str) -> str:
    """A short label for an operation of :data:`nas_optuna.ops.OPS`.

    Example:
        >>> [op_label(n) for n in ("sep_conv_5x5_dil6", "cas_conv_3x3_rep2", "rsp_dw_conv_3x3")]
        ['sep5x5 d6', 'conv3x3 x2', 'dw3x3']
    """
    short = name
    for prefix in ("cas_ms_", "cas_", "rsp_"):
        if short.startswith(prefix):
            short = short[len(prefix) :]
            break
    if short in _OP_LABELS:
        return _OP_LABELS[short]
    for old, new in (
        ("sep_conv_", "sep"),
        ("dw_conv_", "dw"),
        ("conv_", "conv"),
        ("residual_spp_", "residual SPP "),
        ("_dil", " d"),
        ("_rep", " x"),
        ("_", " "),
    ):
        short = short.replace(old, new)
    return short


# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------

_FONT = "Helvetica, Arial, sans-serif"
_LABEL_SIZE = 12
_DETAIL_SIZE = 10
_TITLE_SIZE = 15
_LEGEND_SIZE = 11
#: Estimated advance of an average character, in ems (no font metrics here).
_CHAR_EM = 0.6
_TEXT_PAD = 8
_BOX_WIDTH = (64.0, 200.0)
_BOX_HEIGHT = (26.0, 38.0)  # without, with a detail line
_MARGIN = 16.0
_MAIN_GAP = {"LR": 46.0, "TB": 34.0}
_CROSS_GAP = {"LR": 12.0, "TB": 14.0}
_DUMMY_GAP = 7.0
_COMPONENT_GAP = 40.0
_MIN_CONTENT_WIDTH = 420.0
_ORDER_SWEEPS = 12
_PLACE_SWEEPS = 10

# A slot of a layer: a node id, or an int for a dummy point of an edge spanning layers.
_Slot = str | int


@dataclasses.dataclass
class _Edge:
    source: str
    target: str
    #: Points in (main, cross) coordinates and, per segment, whether it is straight.
    points: list[tuple[float, float]]
    straight: list[bool]


@dataclasses.dataclass
class _Layout:
    direction: str
    box: tuple[float, float]  # width, height
    width: float  # of the drawing (nodes and edges only)
    height: float
    centres: dict[str, tuple[float, float]]  # node id -> (x, y)
    edges: list[_Edge]


def _components(graph: ArchitectureGraph) -> list[list[str]]:
    """Weakly connected components, in the order of their first node."""
    parent = {node.id: node.id for node in graph.nodes}

    def find(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for source, target in graph.edges:
        parent[find(source)] = find(target)
    groups: dict[str, list[str]] = {}
    for node in graph.nodes:
        groups.setdefault(find(node.id), []).append(node.id)
    return list(groups.values())


def _crossings(layers: list[list[_Slot]], successors: dict[_Slot, list[_Slot]]) -> int:
    total = 0
    for upper, lower in zip(layers, layers[1:]):
        where = {slot: i for i, slot in enumerate(lower)}
        pairs = [(i, where[t]) for i, s in enumerate(upper) for t in successors[s]]
        for a, (i1, j1) in enumerate(pairs):
            for i2, j2 in pairs[a + 1 :]:
                if (i1 - i2) * (j1 - j2) < 0:
                    total += 1
    return total


def _order(
    layers: list[list[_Slot]],
    predecessors: dict[_Slot, list[_Slot]],
    successors: dict[_Slot, list[_Slot]],
) -> list[list[_Slot]]:
    """Barycentre sweeps, down and up, keeping the order with the fewest crossings."""
    layers = [list(layer) for layer in layers]
    best, fewest = [list(layer) for layer in layers], _crossings(layers, successors)
    for sweep in range(_ORDER_SWEEPS):
        down = sweep % 2 == 0
        neighbours = predecessors if down else successors
        indices = range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)
        for r in indices:
            other = layers[r - 1] if down else layers[r + 1]
            where = {slot: i for i, slot in enumerate(other)}
            keys = {
                slot: sum(where[n] for n in neighbours[slot]) / len(neighbours[slot])
                if neighbours[slot]
                else float(i)
                for i, slot in enumerate(layers[r])
            }
            layers[r].sort(key=keys.__getitem__)
        count = _crossings(layers, successors)
        if count < fewest:
            best, fewest = [list(layer) for layer in layers], count
        if fewest == 0:
            break
    return best


def _place(desired: Sequence[float], separations: Sequence[float]) -> list[float]:
    """Positions closest (least squares) to ``desired`` keeping the order and separations.

    ``separations[i]`` is the least distance between items ``i`` and ``i + 1``; solved
    exactly by pool-adjacent-violators on the positions minus the cumulative separations.
    """
    offsets = [0.0]
    for separation in separations:
        offsets.append(offsets[-1] + separation)
    blocks: list[list[float]] = []  # [sum, count]
    for target in (d - o for d, o in zip(desired, offsets)):
        blocks.append([target, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    positions = []
    for total, count in blocks:
        positions.extend([total / count] * int(count))
    return [p + o for p, o in zip(positions, offsets)]


def _layout_component(
    graph: ArchitectureGraph, ids: list[str], direction: str, box: tuple[float, float]
) -> tuple[dict[_Slot, int], dict[_Slot, float], list[list[_Slot]], float]:
    """Ranks, cross-axis centres and chains (one per edge) of one component.

    Returns ranks, centres, chains and the component's extent across the layers; centres
    start at 0.
    """
    members = set(ids)
    rank: dict[_Slot, int] = {}
    order = [node_id for node_id in graph.topological_order() if node_id in members]
    for node_id in order:
        rank[node_id] = max((rank[p] + 1 for p in graph.predecessors(node_id)), default=0)
    # A link of a chain (one edge in, one out) moves down next to its successor: the
    # edges keep their total length, and an op stays beside what consumes it.
    for node_id in reversed(order):
        before, after = graph.predecessors(node_id), graph.successors(node_id)
        if len(before) == 1 and len(after) == 1:
            rank[node_id] = rank[after[0]] - 1
    predecessors: dict[_Slot, list[_Slot]] = {i: [] for i in ids}
    successors: dict[_Slot, list[_Slot]] = {i: [] for i in ids}
    chains: list[list[_Slot]] = []
    dummies = 0
    for source, target in graph.edges:
        if source not in members:
            continue
        chain: list[_Slot] = [source]
        for r in range(rank[source] + 1, rank[target]):
            rank[dummies] = r
            predecessors[dummies], successors[dummies] = [], []
            chain.append(dummies)
            dummies += 1
        chain.append(target)
        for a, b in zip(chain, chain[1:]):
            successors[a].append(b)
            predecessors[b].append(a)
        chains.append(chain)

    # Initial order: depth-first from the sources, following the edges in their order.
    visited: dict[_Slot, int] = {}
    for start in ids:
        if predecessors[start]:
            continue
        stack: list[_Slot] = [start]
        while stack:
            slot = stack.pop()
            if slot in visited:
                continue
            visited[slot] = len(visited)
            stack.extend(reversed(successors[slot]))
    layers: list[list[_Slot]] = [[] for _ in range(max(rank.values()) + 1)]
    for slot in sorted(rank, key=lambda s: visited.get(s, math.inf)):
        layers[rank[slot]].append(slot)
    layers = _order(layers, predecessors, successors)

    # Cross-axis positions: neighbours' mean, then the closest order-keeping placement.
    box_cross = box[1] if direction == "LR" else box[0]
    gap = _CROSS_GAP[direction]

    def size(slot: _Slot) -> float:
        return box_cross if isinstance(slot, str) else 0.0

    def separations(layer: list[_Slot]) -> list[float]:
        return [
            (size(a) + size(b)) / 2
            + (gap if isinstance(a, str) and isinstance(b, str) else _DUMMY_GAP)
            for a, b in zip(layer, layer[1:])
        ]

    cross: dict[_Slot, float] = {}
    for layer in layers:
        cross.update(zip(layer, _place([0.0] * len(layer), separations(layer))))
    for sweep in range(_PLACE_SWEEPS + 2):
        down = sweep % 2 == 0
        indices = range(len(layers)) if down else range(len(layers) - 1, -1, -1)
        for r in indices:
            layer = layers[r]
            desired = []
            for slot in layer:
                if sweep >= _PLACE_SWEEPS:  # last sweeps: both sides
                    near = predecessors[slot] + successors[slot]
                else:
                    near = predecessors[slot] if down else successors[slot]
                desired.append(sum(cross[n] for n in near) / len(near) if near else cross[slot])
            cross.update(zip(layer, _place(desired, separations(layer))))
    low = min(cross[s] - size(s) / 2 for s in cross)
    high = max(cross[s] + size(s) / 2 for s in cross)
    return rank, {s: c - low for s, c in cross.items()}, chains, high - low


def _layout(graph: ArchitectureGraph, direction: str, box: tuple[float, float]) -> _Layout:
    """Places every component; components are stacked top to bottom in both directions."""
    box_main, box_cross = (box[0], box[1]) if direction == "LR" else (box[1], box[0])
    pitch = box_main + _MAIN_GAP[direction]
    parts = []  # per component: centres and edges in (main, cross), main and cross extents
    for ids in _components(graph):
        rank, cross, chains, cross_extent = _layout_component(graph, ids, direction, box)

        def main(slot: _Slot, rank: dict = rank) -> float:
            return rank[slot] * pitch + box_main / 2

        centres = {node_id: (main(node_id), cross[node_id]) for node_id in ids}
        # Spread the ends of the edges leaving and entering a box along its side.
        ports: tuple[dict[int, float], dict[int, float]] = ({}, {})
        for side, (end, neighbour) in enumerate(((0, 1), (-1, -2))):
            by_node: dict[_Slot, list[int]] = {}
            for index, chain in enumerate(chains):
                by_node.setdefault(chain[end], []).append(index)
            for indices in by_node.values():
                indices.sort(key=lambda i, n=neighbour: cross[chains[i][n]])
                k = len(indices)
                step = min(box_cross * 0.7 / max(k - 1, 1), 10.0 if direction == "LR" else 16.0)
                for position, index in enumerate(indices):
                    ports[side][index] = (position - (k - 1) / 2) * step
        edges = []
        for index, chain in enumerate(chains):
            source, target = chain[0], chain[-1]
            points = [(main(source) + box_main / 2, cross[source] + ports[0][index])]
            straight = []
            for dummy in chain[1:-1]:
                points.append((main(dummy) - box_main / 2, cross[dummy]))
                straight.append(False)
                points.append((main(dummy) + box_main / 2, cross[dummy]))
                straight.append(True)
            points.append((main(target) - box_main / 2, cross[target] + ports[1][index]))
            straight.append(False)
            edges.append(_Edge(str(source), str(target), points, straight))
        main_extent = (max(rank.values()) + 1) * pitch - _MAIN_GAP[direction]
        parts.append((centres, edges, main_extent, cross_extent))

    # (main, cross) -> (x, y): LR maps main to x, TB main to y.
    sizes = [(m, c) if direction == "LR" else (c, m) for _, _, m, c in parts]
    width = max((w for w, _ in sizes), default=0.0)
    all_centres: dict[str, tuple[float, float]] = {}
    all_edges: list[_Edge] = []
    top = 0.0
    for (centres, edges, _, _), (part_width, part_height) in zip(parts, sizes):
        left = 0.0 if direction == "LR" else (width - part_width) / 2

        def place(
            point: tuple[float, float], left: float = left, top: float = top
        ) -> tuple[float, float]:
            main, cross = point
            x, y = (main, cross) if direction == "LR" else (cross, main)
            return (x + left, y + top)

        all_centres.update({i: place(c) for i, c in centres.items()})
        for edge in edges:
            edge.points = [place(p) for p in edge.points]
            all_edges.append(edge)
        top += part_height + _COMPONENT_GAP
    height = max(top - _COMPONENT_GAP, 0.0)
    return _Layout(direction, box, width, height, all_centres, all_edges)


# --------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold."""
    return "".join(
        c
        for c in str(text)
        if c in "\t\n\r"
        or ("\x20" <= c <= "\ud7ff")
        or ("\ue000" <= c <= "\ufffd")
        or c >= "\U00010000"
    )


def _text(text: str) -> str:
    return escape(_clean(text))


def _attr(text: str) -> str:
    return quoteattr(_clean(text))


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "\u2026"


def _width(text: str, size: float) -> float:
    return len(text) * size * _CHAR_EM


def _box_size(graph: ArchitectureGraph) -> tuple[float, float]:
    widest = max(
        (
            max(_width(node.label, _LABEL_SIZE), _width(node.detail, _DETAIL_SIZE))
            for node in graph.nodes
        ),
        default=0.0,
    )
    low, high = _BOX_WIDTH
    width = min(max(widest + 2 * _TEXT_PAD, low), high)
    height = _BOX_HEIGHT[1] if any(node.detail for node in graph.nodes) else _BOX_HEIGHT[0]
    return math.ceil(width), height


def _edge_path(edge: _Edge, direction: str) -> str:
    (x, y), *rest = edge.points
    commands = [f"M{x:.1f},{y:.1f}"]
    for (x0, y0), (x1, y1), straight in zip(edge.points, rest, edge.straight):
        if straight:
            commands.append(f"L{x1:.1f},{y1:.1f}")
        elif direction == "LR":
            middle = (x0 + x1) / 2
            commands.append(f"C{middle:.1f},{y0:.1f} {middle:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        else:
            middle = (y0 + y1) / 2
            commands.append(f"C{x0:.1f},{middle:.1f} {x1:.1f},{middle:.1f} {x1:.1f},{y1:.1f}")
    return " ".join(commands)


def _scale(layout: _Layout, max_width: float | None, max_height: float | None) -> float:
    width, height = layout.width + 2 * _MARGIN, layout.height + 2 * _MARGIN
    scale = 1.0
    if max_width is not None:
        scale = min(scale, max_width / width)
    if max_height is not None:
        scale = min(scale, max_height / height)
    return scale


def render_svg(
    graph: ArchitectureGraph,
    *,
    direction: str = "auto",
    max_width: float | None = 1600,
    max_height: float | None = None,
) -> str:
    """Draws ``graph`` as a standalone SVG document.

    Nodes are placed in layers by their longest path from the inputs, ordered within a
    layer to reduce edge crossings; edges that span layers are routed between the boxes
    of the layers they cross. Every node is a rounded box coloured by its kind (see
    :data:`KIND_COLOURS`), with its label, its detail and, as a tooltip, both in full.
    A title and a legend of the kinds present sit above the drawing. Unconnected parts
    of the graph (e.g. a cell design beside the network using it) are drawn one after
    the other.

    Args:
        graph: The graph.
        direction: ``"LR"`` (left to right), ``"TB"`` (top to bottom) or ``"auto"``: the
            one that needs less scaling down to fit ``max_width`` and ``max_height``,
            otherwise the one closer to a 16:10 picture.
        max_width: The largest width the SVG declares (in CSS pixels; the drawing is
            scaled down through its ``viewBox`` to fit), or ``None``.
        max_height: The same for the height.

    Returns:
        The SVG document (UTF-8 text without an XML declaration).

    Raises:
        ValueError: An unknown ``direction``.

    Example:
        >>> from nas_optuna.diagram import GraphBuilder, render_svg
        >>> builder = GraphBuilder()
        >>> builder.add("x", "features <1/8>", "feature")
        'x'
        >>> builder.add("y", "logits", "output", inputs=["x"])
        'y'
        >>> "features &lt;1/8&gt;" in render_svg(builder.build(), direction="TB")
        True
    """
    if direction not in ("auto", "LR", "TB"):
        raise ValueError(f"direction must be 'auto', 'LR' or 'TB', got {direction!r}")
    box = _box_size(graph)
    if direction == "auto":
        candidates = [_layout(graph, d, box) for d in ("LR", "TB")]

        def badness(layout: _Layout) -> tuple[float, float]:
            aspect = (layout.width + 1) / (layout.height + 1)
            return (-round(_scale(layout, max_width, max_height), 3), abs(math.log(aspect / 1.6)))

        layout = min(candidates, key=badness)
    else:
        layout = _layout(graph, direction, box)
    return _svg(graph, layout, max_width, max_height)


def _svg(
    graph: ArchitectureGraph, layout: _Layout, max_width: float | None, max_height: float | None
) -> str:
    content_width = max(layout.width, _MIN_CONTENT_WIDTH)
    # Header: the title, wrapped, then the legend, wrapped.
    title_chars = max(int(content_width / (_TITLE_SIZE * _CHAR_EM)), 20)
    title_lines = textwrap.wrap(_clean(graph.title), title_chars) if graph.title.strip() else []
    kinds = [kind for kind in KIND_COLOURS if any(n.kind == kind for n in graph.nodes)]
    for node in graph.nodes:
        if node.kind not in kinds:
            kinds.append(node.kind)
    y = _MARGIN
    header = []
    for line in title_lines:
        y += _TITLE_SIZE * 1.3
        header.append(
            f'<text x="{_MARGIN:.1f}" y="{y:.1f}" font-size="{_TITLE_SIZE}" '
            f'font-weight="bold" fill="#1a1a1a">{_text(line)}</text>'
        )
    if title_lines:
        y += 8
    x, row_height = _MARGIN, _LEGEND_SIZE * 1.6
    legend_top = y
    for kind in kinds:
        item = 12 + 5 + _width(kind, _LEGEND_SIZE) + 16
        if x > _MARGIN and x + item > _MARGIN + content_width:
            x, y = _MARGIN, y + row_height
        fill, stroke = KIND_COLOURS.get(kind, _OTHER_COLOURS)
        header.append(
            f'<rect class="legend" x="{x:.1f}" y="{y + 2:.1f}" width="12" height="12" '
            f'rx="3" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 17:.1f}" y="{y + 12:.1f}" font-size="{_LEGEND_SIZE}" '
            f'fill="#333333">{_text(kind)}</text>'
        )
        x += item
    if kinds:
        y += row_height
    top = y + (12 if y > legend_top or title_lines else 0)

    left = _MARGIN + (content_width - layout.width) / 2
    width = math.ceil(content_width + 2 * _MARGIN)
    height = math.ceil(top + layout.height + _MARGIN)
    scale = 1.0
    if max_width is not None:
        scale = min(scale, max_width / width)
    if max_height is not None:
        scale = min(scale, max_height / height)
    shown_width, shown_height = max(round(width * scale), 1), max(round(height * scale), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{shown_width}" '
        f'height="{shown_height}" viewBox="0 0 {width} {height}" '
        f'font-family="{_FONT}" role="img" aria-label={_attr(graph.title)}>',
        f"<title>{_text(graph.title)}</title>",
        '<defs><marker id="nas-optuna-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555555"/></marker></defs>',
        f'<rect class="background" x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        *header,
        f'<g transform="translate({left:.1f},{top:.1f})">',
        '<g class="edges" fill="none" stroke="#666666" stroke-width="1.2">',
    ]
    for edge in layout.edges:
        parts.append(
            f'<path d="{_edge_path(edge, layout.direction)}" '
            f"data-source={_attr(edge.source)} data-target={_attr(edge.target)} "
            'marker-end="url(#nas-optuna-arrow)"/>'
        )
    parts.append("</g>")
    box_width, box_height = layout.box
    label_chars = max(int((box_width - 2 * _TEXT_PAD) / (_LABEL_SIZE * _CHAR_EM)), 2)
    detail_chars = max(int((box_width - 2 * _TEXT_PAD) / (_DETAIL_SIZE * _CHAR_EM)), 2)
    for node in graph.nodes:
        cx, cy = layout.centres[node.id]
        fill, stroke = KIND_COLOURS.get(node.kind, _OTHER_COLOURS)
        tooltip = f"{node.label}: {node.detail}" if node.detail else node.label
        label_y = cy - 2 if node.detail else cy + _LABEL_SIZE * 0.35
        parts.append(
            f'<g class="node" data-id={_attr(node.id)} data-kind={_attr(node.kind)}>'
            f"<title>{_text(tooltip)}</title>"
            f'<rect class="node" x="{cx - box_width / 2:.1f}" y="{cy - box_height / 2:.1f}" '
            f'width="{box_width:.1f}" height="{box_height:.1f}" rx="6" ry="6" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>'
            f'<text x="{cx:.1f}" y="{label_y:.1f}" text-anchor="middle" '
            f'font-size="{_LABEL_SIZE}" fill="#1a1a1a">{_text(_fit(node.label, label_chars))}'
            "</text>"
        )
        if node.detail:
            parts.append(
                f'<text x="{cx:.1f}" y="{cy + 12:.1f}" text-anchor="middle" '
                f'font-size="{_DETAIL_SIZE}" fill="#555555">'
                f"{_text(_fit(node.detail, detail_chars))}</text>"
            )
        parts.append("</g>")
    parts += ["</g>", "</svg>", ""]
    return "\n".join(parts)
