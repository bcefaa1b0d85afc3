"""Architecture diagrams: the graph model, the SVG renderer and every space's graph."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

import optuna
import pytest

from nas_optuna import ops
from nas_optuna.diagram import (
    KIND_COLOURS,
    ArchitectureGraph,
    GraphBuilder,
    Node,
    op_label,
    render_svg,
)
from search_spaces import SPACES, SearchSpace, get_space
from search_spaces import auxcell as auxcell_module
from search_spaces import template as template_module
from search_spaces.cas import NONE, CASArchitecture, CASCell, CASNode, CASSpace

SVG = "{http://www.w3.org/2000/svg}"
SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    for key in ("width", "height", "viewBox"):
        assert root.get(key), key
    return root


def _node_groups(root: ET.Element) -> dict[str, ET.Element]:
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    by_id = {g.get("data-id"): g for g in groups}
    assert len(by_id) == len(groups)
    return by_id


def _boxes(root: ET.Element) -> dict[str, tuple[float, float]]:
    """Node id -> centre of its box."""
    centres = {}
    for node_id, group in _node_groups(root).items():
        (rect,) = group.findall(f"{SVG}rect")
        x, y = float(rect.get("x")), float(rect.get("y"))
        centres[node_id] = (x + float(rect.get("width")) / 2, y + float(rect.get("height")) / 2)
    return centres


def _check_svg(graph: ArchitectureGraph, svg: str) -> ET.Element:
    """One box per node holding its label, every edge drawn, title present."""
    root = _parse(svg)
    groups = _node_groups(root)
    assert set(groups) == {node.id for node in graph.nodes}
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "node"]) == len(graph.nodes)
    for node in graph.nodes:
        group = groups[node.id]
        assert group.get("data-kind") == node.kind
        assert len(group.findall(f"{SVG}rect")) == 1
        texts = [t.text for t in group.findall(f"{SVG}text")]
        assert texts[0] == node.label  # short enough to be drawn whole
        if node.detail:
            assert texts[1] == node.detail
    paths = [p for p in root.iter(f"{SVG}path") if p.get("data-source") is not None]
    assert sorted((p.get("data-source"), p.get("data-target")) for p in paths) == sorted(
        graph.edges
    )
    assert root.find(f"{SVG}title").text == (graph.title or None)
    return root


def _check_flow(graph: ArchitectureGraph) -> None:
    """A DAG from inputs to outputs: every node reachable from an input, reaching an output."""
    ids = {node.id for node in graph.nodes}
    assert all(a in ids and b in ids for a, b in graph.edges)
    assert len(graph.topological_order()) == len(graph.nodes)
    kinds = {node.id: node.kind for node in graph.nodes}
    for node_id in ids:
        if not graph.predecessors(node_id):
            assert kinds[node_id] == "input", node_id
        if not graph.successors(node_id):
            assert kinds[node_id] == "output", node_id

    def reach(starts: set[str], step) -> set[str]:  # noqa: ANN001
        seen, stack = set(starts), list(starts)
        while stack:
            for n in step(stack.pop()):
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return seen

    inputs = {i for i in ids if kinds[i] == "input"}
    outputs = {i for i in ids if kinds[i] == "output"}
    assert reach(inputs, graph.successors) == ids
    assert reach(outputs, graph.predecessors) == ids
    # The network itself: the image reaches the logits.
    assert "logits" in reach({"image"}, graph.successors)
    assert kinds["image"] == "input" and kinds["logits"] == "output"


def _chain(n: int) -> ArchitectureGraph:
    builder = GraphBuilder()
    builder.add("n0", "image", "input")
    for i in range(1, n - 1):
        builder.add(f"n{i}", f"op {i}", "op", inputs=[f"n{i - 1}"])
    builder.add(f"n{n - 1}", "logits", "output", inputs=[f"n{n - 2}"])
    return builder.build("chain")


def _random_archs(space: SearchSpace, seed: int, n: int = 1) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


# --------------------------------------------------------------------------------------
# The graph model
# --------------------------------------------------------------------------------------


def test_graph_rejects_what_is_not_a_dag() -> None:
    a, b = Node("a", "a", "input"), Node("b", "b", "output")
    with pytest.raises(ValueError, match="duplicate node"):
        ArchitectureGraph((a, a), ())
    with pytest.raises(ValueError, match="unknown node"):
        ArchitectureGraph((a, b), (("a", "c"),))
    with pytest.raises(ValueError, match="duplicate edge"):
        ArchitectureGraph((a, b), (("a", "b"), ("a", "b")))
    with pytest.raises(ValueError, match="self-loop"):
        ArchitectureGraph((a, b), (("a", "a"),))
    with pytest.raises(ValueError, match="cycle"):
        ArchitectureGraph((a, b), (("a", "b"), ("b", "a")))
    graph = ArchitectureGraph([a, b], [("a", "b")], "ok")
    assert graph.nodes == (a, b) and graph.edges == (("a", "b"),)
    assert graph.node("b") is b and graph.predecessors("b") == ["a"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.title = "changed"  # type: ignore[misc]


def test_builder_connects_once_and_drops_dead_ends_on_request() -> None:
    builder = GraphBuilder()
    builder.add("x", "image", "input")
    builder.add("unused", "1/32", "feature", inputs=["x"])
    builder.add("y", "logits", "output", inputs=["x"])
    builder.connect("x", "y")
    with pytest.raises(ValueError, match="duplicate"):
        builder.add("y", "again", "op")
    assert "unused" in builder and "missing" not in builder
    assert builder.build().edges == (("x", "unused"), ("x", "y"))
    pruned = builder.build(drop_dead_ends=True)
    assert [n.id for n in pruned.nodes] == ["x", "y"] and pruned.edges == (("x", "y"),)


def test_topological_order_keeps_the_node_order_among_ties() -> None:
    builder = GraphBuilder()
    for name in ("b", "a", "c"):
        builder.add(name, name, "input")
    builder.add("z", "z", "output", inputs=["c", "a", "b"])
    assert builder.build().topological_order() == ["b", "a", "c", "z"]


@pytest.mark.parametrize(
    "family",
    [ops.WACV2020_OPS, ops.CVPR2019_OPS, ops.CAS_BACKBONE_OPS, ops.CAS_MS_OPS, ops.RSP_OPS],
)
def test_op_labels_are_short_and_tell_a_family_apart(family: tuple[str, ...]) -> None:
    labels = [op_label(name) for name in family]
    assert len(set(labels)) == len(labels)
    assert all(0 < len(label) <= 20 for label in labels)


def test_op_labels_read_like_the_papers() -> None:
    assert op_label("sep_conv_3x3") == "sep3x3"
    assert op_label("sep_conv_5x5_dil6") == "sep5x5 d6"
    assert op_label("cas_dil_conv_3x3") == "conv3x3 d2"
    assert op_label("cas_sep_conv_3x3_rep4") == "sep3x3 x4"
    assert op_label("cas_ms_residual_spp_16x16") == "residual SPP 16x16"
    assert op_label("rsp_identity") == "identity"


# --------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------


def test_svg_escapes_labels_details_ids_and_title() -> None:
    builder = GraphBuilder()
    builder.add('in"<1>', "a<b & c>", "input", detail="'quoted' & <raw>")
    builder.add("out&", "x > 0 \x01", "output", inputs=['in"<1>'])
    graph = builder.build('Q&A <title> "here"')
    svg = render_svg(graph)
    assert "a&lt;b &amp; c&gt;" in svg and "a<b" not in svg
    assert "\x01" not in svg
    root = _parse(svg)
    groups = _node_groups(root)
    assert set(groups) == {'in"<1>', "out&"}
    texts = [t.text for t in groups['in"<1>'].findall(f"{SVG}text")]
    assert texts == ["a<b & c>", "'quoted' & <raw>"]
    assert groups["out&"].find(f"{SVG}text").text == "x > 0 "
    assert root.find(f"{SVG}title").text == 'Q&A <title> "here"'
    assert root.get("aria-label") == 'Q&A <title> "here"'


@pytest.mark.parametrize("direction", ["LR", "TB", "auto"])
def test_svg_has_one_box_per_node_and_a_legend_of_the_kinds(direction: str) -> None:
    builder = GraphBuilder()
    builder.add("x", "image", "input")
    builder.add("a", "sep3x3", "op", detail="T0 op1", inputs=["x"])
    builder.add("b", "sum", "aggregation", inputs=["a", "x"])
    builder.add("odd", "custom", "mystery", inputs=["b"])
    builder.add("y", "logits", "output", inputs=["odd"])
    graph = builder.build("kinds")
    root = _check_svg(graph, render_svg(graph, direction=direction))
    legend = [t.text for t in root.iter(f"{SVG}text") if t.text in {*KIND_COLOURS, "mystery"}]
    assert legend[:5] == ["input", "op", "aggregation", "output", "mystery"]
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "legend"]) == 5
    fills = {n: g.find(f"{SVG}rect").get("fill") for n, g in _node_groups(root).items()}
    assert fills["a"] == KIND_COLOURS["op"][0] and fills["y"] == KIND_COLOURS["output"][0]
    assert fills["odd"] == "#ffffff"


def test_layers_follow_the_longest_path_in_the_chosen_direction() -> None:
    builder = GraphBuilder()
    builder.add("x", "image", "input")
    builder.add("a", "a", "op", inputs=["x"])
    builder.add("b", "b", "op", inputs=["a"])
    builder.add("skip", "skip", "feature", inputs=["x"])
    builder.add("y", "logits", "output", inputs=["b", "skip", "x"])
    graph = builder.build()
    for direction, axis in (("LR", 0), ("TB", 1)):
        centres = _boxes(_parse(render_svg(graph, direction=direction)))
        main = {n: c[axis] for n, c in centres.items()}
        assert main["x"] < main["a"] < main["b"] < main["y"]
        # "skip" has one edge in and one out: it sits next to its consumer.
        assert main["skip"] == main["b"]


def test_barycentre_ordering_removes_avoidable_crossings() -> None:
    # Drawn in node order, x (child of b) would sit above y (child of a): one crossing.
    builder = GraphBuilder()
    builder.add("a", "a", "input")
    builder.add("b", "b", "input")
    builder.add("x", "x", "op", inputs=["b"])
    builder.add("y", "y", "op", inputs=["a"])
    builder.add("out", "out", "output", inputs=["x", "y"])
    centres = _boxes(_parse(render_svg(builder.build(), direction="LR")))
    assert (centres["a"][1] < centres["b"][1]) == (centres["y"][1] < centres["x"][1])


def test_edges_spanning_layers_do_not_cross_boxes() -> None:
    builder = GraphBuilder()
    builder.add("x", "image", "input")
    previous = "x"
    for i in range(4):
        previous = builder.add(f"op{i}", f"op {i}", "op", inputs=[previous])
    builder.add("y", "logits", "output", inputs=[previous, "x"])
    graph = builder.build()
    root = _parse(render_svg(graph, direction="LR"))
    rects = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "node"]
    (long_edge,) = [
        p
        for p in root.iter(f"{SVG}path")
        if p.get("data-source") == "x" and p.get("data-target") == "y"
    ]
    numbers = [float(v) for v in re.findall(r"-?\d+\.?\d*", long_edge.get("d"))]
    points = list(zip(numbers[::2], numbers[1::2]))
    # Straight runs through the layers between: at a height no op box covers.
    for x, y in points[1:-1]:
        for rect in rects:
            rx, ry = float(rect.get("x")), float(rect.get("y"))
            inside_x = rx < x < rx + float(rect.get("width"))
            assert not (inside_x and ry < y < ry + float(rect.get("height")))


def test_large_graphs_are_scaled_down_through_the_viewbox() -> None:
    graph = _chain(80)
    svg = render_svg(graph, direction="LR", max_width=1000)
    root = _check_svg(graph, svg)
    view_width = float(root.get("viewBox").split()[2])
    assert float(root.get("width")) <= 1000 < view_width
    # Auto picks the direction that needs no scaling: top to bottom for a long chain.
    auto = _parse(render_svg(graph, max_width=1000))
    assert float(auto.get("width")) == float(auto.get("viewBox").split()[2]) <= 1000
    bounded = _parse(render_svg(graph, direction="TB", max_height=500))
    assert float(bounded.get("height")) <= 500


def test_unknown_direction_is_an_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        render_svg(_chain(3), direction="RL")


def test_separate_parts_are_stacked_without_overlap() -> None:
    builder = GraphBuilder()
    for part in ("net", "cell"):
        builder.add(f"{part}.in", "in", "input")
        builder.add(f"{part}.op", "op", "op", inputs=[f"{part}.in"])
        builder.add(f"{part}.out", "out", "output", inputs=[f"{part}.op"])
    for direction in ("LR", "TB"):
        root = _parse(render_svg(builder.build(), direction=direction))
        centres = _boxes(root)
        lowest_net = max(y for n, (_, y) in centres.items() if n.startswith("net"))
        highest_cell = min(y for n, (_, y) in centres.items() if n.startswith("cell"))
        assert lowest_net < highest_cell


# --------------------------------------------------------------------------------------
# Every registered space
# --------------------------------------------------------------------------------------


def test_every_space_must_draw_its_architectures() -> None:
    assert "graph" in SearchSpace.__abstractmethods__


@pytest.mark.parametrize("profile", ["search", "final"])
@pytest.mark.parametrize("name", SPACES.names())
def test_space_graphs_flow_from_inputs_to_outputs_and_render(name: str, profile: str) -> None:
    space = get_space(name, profile=profile)
    for seed in SEEDS:
        for arch in _random_archs(space, seed):
            graph = space.graph(arch)
            assert isinstance(graph, ArchitectureGraph) and graph.title.startswith(name)
            assert graph == space.graph(arch)  # built from the arch alone
            _check_flow(graph)
            _check_svg(graph, render_svg(graph))
            for direction, axis in (("LR", 0), ("TB", 1)):
                centres = _boxes(_parse(render_svg(graph, direction=direction)))
                for source, target in graph.edges:  # every edge runs forward
                    assert centres[source][axis] < centres[target][axis]


# --------------------------------------------------------------------------------------
# Space-specific content
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["search", "final"])
def test_template_graph_draws_every_application_of_the_chosen_templates(profile: str) -> None:
    space = get_space("template", profile=profile)
    archs = [
        space.from_genotype(template_module.ARCH0_GENOTYPE),
        space.from_genotype(template_module.ARCH1_GENOTYPE),
        *_random_archs(space, seed=4, n=3),
    ]
    for arch in archs:
        graph = space.graph(arch)
        ops_by_role: dict[str, set[str]] = {}
        for node in graph.nodes:
            if node.kind == "op":
                ops_by_role.setdefault(node.detail.split(",")[0], set()).add(node.label)
        for t in {block.template for block in arch.blocks}:
            template = arch.templates[t]
            assert ops_by_role[f"T{t} op1"] == {op_label(template.op1)}
            assert ops_by_role[f"T{t} op2"] == {op_label(template.op2)}
        for b, block in enumerate(arch.blocks):
            template = arch.templates[block.template]
            applications = [
                n for n in graph.nodes if n.kind == "aggregation" and n.detail.startswith(f"B{b} ")
            ]
            assert len(applications) == block.repeats
            assert {n.label for n in applications} == {
                {"psum": "sum", "cat": "concat"}[template.agg]
            }
            for i in range(block.repeats):
                for k, op in enumerate((template.op1, template.op2), start=1):
                    node = graph.node(f"b{b}.{i}.op{k}")
                    assert node.label == op_label(op)
                    strided = block.stride == 2 and op not in ops.OPS_IGNORING_STRIDE
                    assert (", s2" in node.detail) == strided
        # The logits' resolution is the decoder's output stride.
        decoder = space.build_decoder(arch, num_classes=3)
        assert graph.node("logits").detail == f"1/{decoder.output_stride}"
        ids = {n.id for n in graph.nodes}
        head_inputs = graph.predecessors("concat" if "concat" in ids else "head")
        assert len(head_inputs) == len(arch.unused_blocks())


def test_template_graph_leaves_out_stem_features_no_block_reads() -> None:
    space = get_space("template")
    arch = space.from_genotype(template_module.ARCH0_GENOTYPE)
    read = {loc for block in arch.blocks for loc in (block.loc1, block.loc2)}
    labels = {node.label for node in space.graph(arch).nodes if node.kind == "feature"}
    assert labels == {f"1/{(4, 8)[loc]}" for loc in read if loc < 2}


@pytest.mark.parametrize(
    ("auxiliary", "inside"), [("cell", "cell copy, conv3x3"), ("classifier", "conv3x3")]
)
def test_auxcell_released_arch0_draws_its_auxiliary_heads(auxiliary: str, inside: str) -> None:
    space = get_space("auxcell", profile="final", auxiliary=auxiliary)
    arch = space.from_genotype(auxcell_module.ARCH0_GENOTYPE)
    graph = space.graph(arch)
    heads = [n for n in graph.nodes if n.kind == "head" and n.label.startswith("aux head")]
    assert len(heads) == len(arch.connections) == 3
    assert {n.detail for n in heads} == {inside}
    for b, head in enumerate(heads):
        (block_output,) = graph.predecessors(head.id)
        assert graph.node(block_output).detail.startswith(f"B{b} out")
        (logits,) = graph.successors(head.id)
        assert graph.node(logits).kind == "output"
    _check_svg(graph, render_svg(graph))


def test_auxcell_without_auxiliary_heads_draws_none() -> None:
    space = get_space("auxcell", profile="final", auxiliary="none")
    graph = space.graph(space.from_genotype(auxcell_module.ARCH0_GENOTYPE))
    assert not [n for n in graph.nodes if "aux" in n.label]
    assert [n.id for n in graph.nodes if n.kind == "output"] == ["logits", "cell.out"]


def test_auxcell_graph_draws_the_cell_design_and_the_chosen_connections() -> None:
    space = get_space("auxcell")
    arch = space.from_genotype(auxcell_module.ARCH0_GENOTYPE)
    graph = space.graph(arch)
    cell_ops = {n.detail: n.label for n in graph.nodes if n.id.startswith("cell.")}
    assert cell_ops["op0"] == op_label(arch.cell.op0)
    for index, layer in enumerate(arch.cell.layers):
        assert cell_ops[f"layer {index + 1} op1"] == op_label(layer.op1)
        assert cell_ops[f"layer {index + 1} op2"] == op_label(layer.op2)
    # arch0 reads the 1/32 level in every block and never the 1/8 one.
    levels = {n.label for n in graph.nodes if n.kind == "feature"}
    assert levels == {"1/4", "1/16", "1/32"}
    cells = [n for n in graph.nodes if n.kind == "cell"]
    assert len(cells) == 2 * len(arch.connections)


def _cas_arch(space: CASSpace, normal: CASCell) -> CASArchitecture:
    (arch,) = _random_archs(space, seed=0)
    return dataclasses.replace(arch, normal=normal)


def test_cas_graph_omits_pruned_none_edges() -> None:
    space = CASSpace()
    normal = CASCell(
        (
            CASNode((0, 1), (NONE, "cas_conv_3x3")),  # node 2: one edge, from input 1
            CASNode((0, 2), ("cas_identity", "cas_sep_conv_3x3_rep2")),
            CASNode((1, 3), (NONE, NONE)),  # node 4: zeros
        )
    )
    graph = space.graph(_cas_arch(space, normal))
    _check_flow(graph)
    ids = {n.id for n in graph.nodes}
    design_ops = sorted(i for i in ids if i.startswith("normal.e"))
    assert design_ops == ["normal.e0-3", "normal.e1-2", "normal.e2-3"]
    assert graph.predecessors("normal.n2") == ["normal.e1-2"]
    assert graph.node("normal.n2").detail.startswith("one edge")
    assert graph.node("normal.n4").detail.startswith("zeros")
    assert graph.predecessors("normal.n4") == ["normal.in1"]
    assert not [n for n in graph.nodes if n.label == op_label(NONE)]
    _check_svg(graph, render_svg(graph))


def test_cas_graph_draws_only_the_cell_inputs_a_design_reads() -> None:
    space = CASSpace()
    # Every edge of the normal design leaves input 1 or a node: cell k-2 is not read.
    normal = CASCell(
        (
            CASNode((0, 1), (NONE, "cas_conv_3x3")),
            CASNode((1, 2), ("cas_identity", "cas_conv_3x3")),
            CASNode((2, 3), ("cas_identity", "cas_conv_3x3")),
        )
    )
    graph = space.graph(_cas_arch(space, normal))
    _check_flow(graph)
    assert "normal.in0" not in {n.id for n in graph.nodes}
    assert graph.predecessors("cell1") == ["cell0"]
    assert graph.predecessors("cell4") == ["cell3"]


def test_cas_graph_has_every_backbone_cell_in_the_paper_layout() -> None:
    space = CASSpace(include_none=False)
    (arch,) = _random_archs(space, seed=5)
    graph = space.graph(arch)
    cells = [graph.node(f"cell{k}").label.split()[0] for k in range(8)]
    assert cells == ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    built = sum(len(node.edges()) for node in arch.ms.nodes)
    assert len([n for n in graph.nodes if n.id.startswith("ms.e")]) == built == 12


@pytest.mark.parametrize("rsp", [False, True])
def test_rspnet_graph_draws_the_used_layers_and_their_paths(rsp: bool) -> None:
    space = get_space("rspnet")
    genotype = [
        ["rsp_conv_3x3", "rsp_identity", "rsp_dw_conv_3x3"],
        [[0], [0, 1], [], [0, 2], [], [2, 4], [4, 6]],
        rsp,
    ]
    arch = space.from_genotype(genotype)
    graph = space.graph(arch)
    _check_flow(graph)
    layers = [n.id for n in graph.nodes if n.kind == "cell"]
    assert (
        layers
        == [f"layer{k}" for k in arch.used_layers()]
        == ["layer1", "layer2", "layer4", "layer6", "layer7"]
    )
    names = {0: "stem", **{k: f"layer{k}" for k in arch.used_layers()}}
    for k in arch.used_layers():
        assert graph.predecessors(f"layer{k}.pam") == [names[n] for n in arch.inputs[k - 1]]
    assert graph.node("layer4").detail.startswith("1/32, 128 ch")
    assert ("cell.split" in {n.id for n in graph.nodes}) == rsp
    assert [graph.node(i).label for i in ("cell.in_n1", "cell.in_n2", "cell.n1_n2")] == [
        "conv3x3",
        "identity",
        "dw3x3",
    ]


def test_smp_graph_is_the_pipeline_with_the_decoder_width() -> None:
    space = get_space("smp", encoder_weights="none")
    graph = space.graph(space.from_genotype(["FPN", "resnet18", 64]))
    assert [n.label for n in graph.nodes] == [
        "image",
        "pad",
        "resnet18",
        "1/4",
        "1/8",
        "1/16",
        "1/32",
        "FPN",
        "segmentation head",
        "logits",
    ]
    assert graph.node("decoder").detail == "width 64"
    graph = space.graph(space.from_genotype(["PSPNet", "mobilenet_v2", 128]))
    assert graph.predecessors("decoder") == ["features8"]
    assert graph.node("pad").detail.endswith("8")
