"""The template search space of Nekrasov, Shen and Reid (WACV 2020).

Three *templates* ``[op1, op2, agg]`` are suggested first; then seven *blocks*, each
choosing two inputs from a growing pool (``loc1``, ``loc2``), a template, how many times
it is applied (1-4, with non-shared weights) and, in the first half of the blocks, a
stride of 1 or 2. The pool starts with MobileNet-v2's 1/4 (24 channels) and 1/8
(32 channels) outputs; each block's output joins it. Unused block outputs are resized
to the largest among them, concatenated and classified by the head.

Structure (``../shared/spec/reference-semantics.md``, which the released models fix):

* A block with stride ``s`` maps input ``j`` with ``op_j: C_j -> C_j * s`` (channels double
  on downsampling); the aggregation outputs the larger of the two widths. Blocks in the
  first half aggregate at the smaller resolution, later blocks at the larger.
* Repeats: after an application, the second input becomes the first input and the
  template's output the second; later applications keep their inputs' widths but apply
  the stride again.
* Head: ReLU -> conv1x1-BN-ReLU to the head width -> conv3x3 to the classes (with bias).

Profiles (choices where the paper and spec describe two regimes):

* ``search`` — the search-time models: separable convs applied once, head (pre-classifier)
  width 48, and otherwise the structure of the released models: the pool holds the stem
  outputs as they are (24 and 32 channels), channels double on stride 2, an aggregation
  adapts only an input narrower than its output. This reading of Sect. 4.1 reproduces the
  authors' search-time sizes exactly (11 classes, ``tests/search_spaces/test_template.py``:
  101,147 / 179,691 / 45,971 generated parameters for three search genotypes). The
  sentence "all layers in the sampling pool are transformed to have 48 channels with the
  help of 1x1 convolution" read literally (conv1x1-BN-ReLU to 48 on both stem outputs,
  which this profile did before) gives 316,859 / 385,211 / 92,987: two to three times
  the networks the paper searched. The 48 channels are the head's.
* ``final`` — the released models: separable convs repeated twice, head width 64. With 19
  classes, released arch0 / arch1 have 223,571 / 211,659 generated parameters.

Parameter names (stable; analysis and stored studies rely on them)::

    template_{t}_op1, template_{t}_op2   categorical over OPERATIONS      t = 0..2
    template_{t}_agg                     categorical over AGGREGATIONS
    block_{b}_loc1, block_{b}_loc2       categorical 0..b+1 (pool index)  b = 0..6
    block_{b}_template                   categorical 0..2
    block_{b}_repeats                    int 1..4
    block_{b}_stride                     categorical 1 | 2, only for b < 3

Example:
    >>> from search_spaces import get_space
    >>> space = get_space("template", profile="final")
    >>> arch = space.from_genotype(ARCH1_GENOTYPE)
    >>> space.to_genotype(arch) == ARCH1_GENOTYPE
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
from nas_optuna.ops import (
    OPS_IGNORING_STRIDE,
    OPS_WITH_REPEATS,
    WACV2020_OPS,
    build_aggregation,
    build_op,
    conv_bn_relu,
    resize,
)
from nas_optuna.stems import mobilenet_v2_stem
from search_spaces._base import SearchSpace, genotype_index

__all__ = [
    "AGGREGATIONS",
    "ARCH0_GENOTYPE",
    "ARCH1_GENOTYPE",
    "Block",
    "OPERATIONS",
    "Template",
    "TemplateArchitecture",
    "TemplateSpace",
]

#: Operation choices, in the order of the authors' genotype indices.
OPERATIONS = WACV2020_OPS
#: Aggregation choices, in the order of the authors' genotype indices.
AGGREGATIONS = ("psum", "cat")

#: The released architectures (authors' list format).
ARCH0_GENOTYPE = [
    [[3, 0, 1], [4, 1, 1], [3, 1, 1]],
    [
        [0, 1, 0, 0, 1],
        [2, 1, 2, 1, 0],
        [3, 1, 1, 1, 0],
        [1, 1, 2, 0, 0],
        [3, 0, 2, 0, 0],
        [5, 3, 2, 1, 0],
        [0, 5, 0, 1, 0],
    ],
]
ARCH1_GENOTYPE = [
    [[1, 1, 0], [1, 3, 0], [3, 4, 0]],
    [
        [1, 1, 0, 0, 0],
        [0, 1, 1, 1, 1],
        [3, 1, 2, 3, 0],
        [3, 0, 2, 2, 0],
        [0, 1, 2, 0, 0],
        [2, 1, 1, 3, 0],
        [4, 0, 2, 2, 0],
    ],
]

_STEM_REDUCTIONS = (4, 8)
_STEM_CHANNELS = (24, 32)
#: How the diagram names the aggregations.
_AGGREGATION_LABELS = {"psum": "sum", "cat": "concat"}


@dataclasses.dataclass(frozen=True)
class Template:
    """Two operations and the aggregation joining their outputs."""

    op1: str
    op2: str
    agg: str


@dataclasses.dataclass(frozen=True)
class Block:
    """One block: two pool inputs, a template, how often it is applied, and its stride."""

    loc1: int
    loc2: int
    template: int
    repeats: int
    stride: int


@dataclasses.dataclass(frozen=True)
class TemplateArchitecture:
    """A frozen template-space architecture."""

    templates: tuple[Template, ...]
    blocks: tuple[Block, ...]

    def unused_blocks(self) -> list[int]:
        """Indices of blocks whose output no later block takes as input (they feed the head)."""
        used = {loc for block in self.blocks for loc in (block.loc1, block.loc2)}
        offset = len(_STEM_REDUCTIONS)
        return [b for b in range(len(self.blocks)) if b + offset not in used]

    def downsampling(self) -> int:
        """Downsampling the generated part adds to the stem: product of strides over repeats."""
        factor = 1
        for block in self.blocks:
            factor *= block.stride**block.repeats
        return factor

    def reductions(self) -> list[int]:
        """Nominal reduction (input size / feature size) of every pool entry: the stem's
        outputs, then each block's output. Strides compound over repeats; a block in the
        first half aggregates at the smaller resolution (``max`` reduction), a later one
        at the larger (``min``); pooling-free ops that ignore the stride keep it."""
        reductions = list(_STEM_REDUCTIONS)
        first_half = len(self.blocks) // 2
        for index, block in enumerate(self.blocks):
            template = self.templates[block.template]
            s1 = 1 if template.op1 in OPS_IGNORING_STRIDE else block.stride
            s2 = 1 if template.op2 in OPS_IGNORING_STRIDE else block.stride
            pick = min if index >= first_half else max
            r1, r2 = reductions[block.loc1], reductions[block.loc2]
            for _ in range(block.repeats):
                r1, r2 = r2, pick(r1 * s1, r2 * s2)
            reductions.append(r2)
        return reductions

    def output_stride(self) -> int:
        """Nominal output stride: the finest of the outputs that feed the head."""
        reductions = self.reductions()
        offset = len(_STEM_REDUCTIONS)
        return min(reductions[b + offset] for b in self.unused_blocks())


class _Application(nn.Module):
    """One application of a template: two ops and the aggregation."""

    def __init__(self, op1: nn.Module, op2: nn.Module, agg: nn.Module) -> None:
        super().__init__()
        self.op1, self.op2, self.agg = op1, op2, agg

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.agg(self.op1(x1), self.op2(x2))


class _Block(nn.Module):
    def __init__(self, loc1: int, loc2: int, applications: Sequence[_Application]) -> None:
        super().__init__()
        self.loc1, self.loc2 = loc1, loc2
        self.applications = nn.ModuleList(applications)

    def forward(self, pool: list[torch.Tensor]) -> torch.Tensor:
        x1, x2 = pool[self.loc1], pool[self.loc2]
        for application in self.applications:
            # The second input and the output feed the next application (paper Fig. 4).
            x1, x2 = x2, application(x1, x2)
        return x2



class TemplateDecoder(nn.Module):
    """The generated part of a template-space network."""

    def __init__(
        self,
        arch: TemplateArchitecture,
        stem_channels: Sequence[int],
        *,
        num_classes: int,
        op_repeats: int,
        head_width: int,
    ) -> None:
        super().__init__()
        channels = list(stem_channels)  # the pool holds the stem outputs as they are
        first_half = len(arch.blocks) // 2
        blocks = []
        for index, block in enumerate(arch.blocks):
            template = arch.templates[block.template]
            c1, c2 = channels[block.loc1], channels[block.loc2]
            applications = []
            for repeat in range(block.repeats):
                growth = block.stride if repeat == 0 else 1
                o1, o2 = c1 * growth, c2 * growth
                width = max(o1, o2)
                applications.append(
                    _Application(
                        build_op(template.op1, c1, o1, block.stride, repeats=op_repeats),
                        build_op(template.op2, c2, o2, block.stride, repeats=op_repeats),
                        build_aggregation(template.agg, o1, o2, width, larger=index >= first_half),
                    )
                )
                c1, c2 = c2, width
            blocks.append(_Block(block.loc1, block.loc2, applications))
            channels.append(c2)
        self.blocks = nn.ModuleList(blocks)
        offset = len(stem_channels)
        self.head_inputs = [b + offset for b in arch.unused_blocks()]
        #: Nominal output stride (ignoring the rounding of odd sizes; strides can compound
        #: to more than the input size, so it is computed, not measured).
        self.output_stride = arch.output_stride()
        head_channels = sum(channels[i] for i in self.head_inputs)
        self.head = nn.Sequential(
            nn.ReLU(),
            conv_bn_relu(head_channels, head_width),
            nn.Conv2d(head_width, num_classes, 3, padding=1, bias=True),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pool = list(features)
        for block in self.blocks:
            pool.append(block(pool))
        outputs = [pool[i] for i in self.head_inputs]
        size = max((o.shape[-2:] for o in outputs), key=lambda s: s[0] * s[1])
        outputs = [resize(o, tuple(size)) for o in outputs]
        return self.head(torch.cat(outputs, dim=1))


class TemplateSpace(SearchSpace[TemplateArchitecture]):
    """The WACV 2020 template space (registered as ``template``).

    Args:
        profile: ``"search"`` or ``"final"`` (see the module docstring).
        num_templates: Number of templates (paper: 3).
        num_blocks: Number of blocks (paper: 7); strides are searched in the first half.
        max_repeats: Largest number of applications of a template in a block (paper: 4).
    """

    name: ClassVar[str] = "template"
    summary: ClassVar[str] = (
        "Nekrasov et al., WACV 2020: 3 templates [op, op, aggregation] applied by 7 blocks "
        "over MobileNet-v2's 1/4 and 1/8 outputs"
    )
    stem_id: ClassVar[str] = "mobilenet_v2@4,8"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "search": {"op_repeats": 1, "head_width": 48},
        "final": {"op_repeats": 2, "head_width": 64},
    }

    def __init__(
        self,
        profile: str = "search",
        *,
        num_templates: int = 3,
        num_blocks: int = 7,
        max_repeats: int = 4,
    ) -> None:
        super().__init__(profile)
        if num_templates < 1 or num_blocks < 1 or max_repeats < 1:
            raise ConfigError(
                "template space: num_templates, num_blocks and max_repeats must be >= 1"
            )
        self.num_templates = num_templates
        self.num_blocks = num_blocks
        self.max_repeats = max_repeats

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "num_templates": self.num_templates,
            "num_blocks": self.num_blocks,
            "max_repeats": self.max_repeats,
        }

    # --- define-by-run ---------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> TemplateArchitecture:
        templates = tuple(
            Template(
                op1=trial.suggest_categorical(f"template_{t}_op1", OPERATIONS),
                op2=trial.suggest_categorical(f"template_{t}_op2", OPERATIONS),
                agg=trial.suggest_categorical(f"template_{t}_agg", AGGREGATIONS),
            )
            for t in range(self.num_templates)
        )
        blocks = []
        pool_size = len(_STEM_REDUCTIONS)
        for b in range(self.num_blocks):
            locations = tuple(range(pool_size + b))
            stride = (
                trial.suggest_categorical(f"block_{b}_stride", (1, 2))
                if b < self.num_blocks // 2
                else 1
            )
            blocks.append(
                Block(
                    loc1=trial.suggest_categorical(f"block_{b}_loc1", locations),
                    loc2=trial.suggest_categorical(f"block_{b}_loc2", locations),
                    template=trial.suggest_categorical(
                        f"block_{b}_template", tuple(range(self.num_templates))
                    ),
                    repeats=trial.suggest_int(f"block_{b}_repeats", 1, self.max_repeats),
                    stride=stride,
                )
            )
        return TemplateArchitecture(templates, tuple(blocks))

    def to_params(self, arch: TemplateArchitecture) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for t, template in enumerate(arch.templates):
            params[f"template_{t}_op1"] = template.op1
            params[f"template_{t}_op2"] = template.op2
            params[f"template_{t}_agg"] = template.agg
        for b, block in enumerate(arch.blocks):
            if b < len(arch.blocks) // 2:
                params[f"block_{b}_stride"] = block.stride
            params[f"block_{b}_loc1"] = block.loc1
            params[f"block_{b}_loc2"] = block.loc2
            params[f"block_{b}_template"] = block.template
            params[f"block_{b}_repeats"] = block.repeats
        return params

    def size(self) -> int:
        """Distinct architectures, with templates counted as the paper counts them.

        A template's two operations are unordered (the paper's "42 unique templates": 21
        multisets of 6 ops times 2 aggregations). A block's two locations stay ordered:
        with repeats, the second input and the output carry forward, so the order matters.
        Relabelling the templates (permuting their indices) is not collapsed.
        """
        ops = len(OPERATIONS)
        templates = ops * (ops + 1) // 2 * len(AGGREGATIONS)
        size = templates**self.num_templates
        pool = len(_STEM_REDUCTIONS)
        for b in range(self.num_blocks):
            strides = 2 if b < self.num_blocks // 2 else 1
            size *= (pool + b) ** 2 * self.num_templates * self.max_repeats * strides
        return size

    # --- authors' genotypes ----------------------------------------------------------
    def from_genotype(self, genotype: Any) -> TemplateArchitecture:
        """Converts ``[templates, blocks]`` in the authors' index format.

        Raises:
            ConfigError: The list does not have the expected shape or an index is out of range.
        """
        try:
            raw_templates, raw_blocks = genotype
            templates = tuple(
                Template(
                    OPERATIONS[genotype_index(op1)],
                    OPERATIONS[genotype_index(op2)],
                    AGGREGATIONS[genotype_index(agg)],
                )
                for op1, op2, agg in raw_templates
            )
            blocks = tuple(
                Block(int(l1), int(l2), int(t), int(rep) + 1, 2 ** int(s))
                for l1, l2, t, rep, s in raw_blocks
            )
        except (TypeError, ValueError, IndexError) as error:
            raise ConfigError(
                f"not a template-space genotype ([templates, blocks]): {error}"
            ) from None
        if not templates or not blocks:
            raise ConfigError("template genotype needs at least one template and one block")
        arch = TemplateArchitecture(templates, blocks)
        # Validate ranges by replaying the define-by-run suggestions.
        space = TemplateSpace(
            self.profile,
            num_templates=len(templates),
            num_blocks=len(blocks),
            max_repeats=self.max_repeats,
        )
        params = space.to_params(arch)
        if any(b.stride != 1 for b in blocks[len(blocks) // 2 :]):
            raise ConfigError(
                "template genotype: only the first half of the blocks may have stride 2"
            )
        return space.from_params(params)

    def to_genotype(self, arch: TemplateArchitecture) -> list:
        templates = [
            [OPERATIONS.index(t.op1), OPERATIONS.index(t.op2), AGGREGATIONS.index(t.agg)]
            for t in arch.templates
        ]
        blocks = [
            [b.loc1, b.loc2, b.template, b.repeats - 1, b.stride.bit_length() - 1]
            for b in arch.blocks
        ]
        return [templates, blocks]

    def features(self, arch: TemplateArchitecture) -> dict[str, float]:
        """Derived descriptors (see :meth:`SearchSpace.features`): the output stride, the
        number of template applications, stride-2 blocks, head inputs and blocks reading a
        stem output, and how often each operation, aggregation and template is applied
        (counted over repeats)."""
        features = {
            "output_stride": float(arch.output_stride()),
            "applications": float(sum(b.repeats for b in arch.blocks)),
            "stride2_blocks": float(sum(b.stride == 2 for b in arch.blocks)),
            "head_inputs": float(len(arch.unused_blocks())),
            "stem_inputs": float(sum(loc < len(_STEM_REDUCTIONS) for b in arch.blocks
                                     for loc in (b.loc1, b.loc2))),
        }
        features |= {f"applied_{op}": 0.0 for op in OPERATIONS}
        features |= {f"applied_{agg}": 0.0 for agg in AGGREGATIONS}
        features |= {f"applied_template_{t}": 0.0 for t in range(len(arch.templates))}
        for block in arch.blocks:
            template = arch.templates[block.template]
            for name in (template.op1, template.op2, template.agg,
                         f"template_{block.template}"):
                features[f"applied_{name}"] += block.repeats
        return features

    def describe(self, arch: TemplateArchitecture) -> str:
        templates = " ".join(
            f"T{t}=[{x.op1},{x.op2},{x.agg}]" for t, x in enumerate(arch.templates)
        )
        blocks = " ".join(
            f"B{b}=({x.loc1},{x.loc2})T{x.template}x{x.repeats}s{x.stride}"
            for b, x in enumerate(arch.blocks)
        )
        return f"{templates} | {blocks}"

    # --- networks --------------------------------------------------------------------
    def build_stem(self) -> nn.Module:
        return mobilenet_v2_stem(_STEM_REDUCTIONS)

    def build_decoder(self, arch: TemplateArchitecture, num_classes: int) -> TemplateDecoder:
        return TemplateDecoder(
            arch, stem_channels=(24, 32), num_classes=num_classes, **self.settings
        )

    # --- pictures --------------------------------------------------------------------
    def graph(self, arch: TemplateArchitecture) -> ArchitectureGraph:
        """The stem's features, every template application and the head.

        Each block is drawn as built: its applications unrolled (``op1``, ``op2`` and the
        aggregation of the block's template, the second input and the output feeding the
        next application), reading the pool entries the block chose; op details name the
        template (``T1 op2``) and the stride. Block outputs carry their resolution and
        width; unused ones feed the head. Stem features no block reads are left out.

        Example:
            >>> from search_spaces import get_space
            >>> space = get_space("template", profile="final")
            >>> graph = space.graph(space.from_genotype(ARCH0_GENOTYPE))
        """
        settings = self.settings
        builder = GraphBuilder()
        builder.add("image", "image", "input")
        builder.add("stem", "MobileNet-v2", "stem", detail="stem", inputs=["image"])
        pool, reductions, channels = [], list(_STEM_REDUCTIONS), []
        for loc, (reduction, width) in enumerate(zip(_STEM_REDUCTIONS, _STEM_CHANNELS)):
            pool.append(
                builder.add(
                    f"pool{loc}", f"1/{reduction}", "feature", detail=f"{width} ch",
                    inputs=["stem"]
                )
            )
            channels.append(width)
        first_half = len(arch.blocks) // 2
        for b, block in enumerate(arch.blocks):
            template = arch.templates[block.template]
            x1, x2 = pool[block.loc1], pool[block.loc2]
            r1, r2 = reductions[block.loc1], reductions[block.loc2]
            c1, c2 = channels[block.loc1], channels[block.loc2]
            for repeat in range(block.repeats):
                # The decoder's bookkeeping (TemplateDecoder.__init__), applied to names.
                growth = block.stride if repeat == 0 else 1
                strides = [
                    1 if op in OPS_IGNORING_STRIDE else block.stride
                    for op in (template.op1, template.op2)
                ]
                pick = min if b >= first_half else max
                c1, c2 = c2, max(c1 * growth, c2 * growth)
                r1, r2 = r2, pick(r1 * strides[0], r2 * strides[1])
                prefix = f"b{b}.{repeat}"
                ops = []
                for k, (op, source, stride) in enumerate(
                    zip((template.op1, template.op2), (x1, x2), strides), start=1
                ):
                    detail = f"T{block.template} op{k}"
                    if stride > 1:
                        detail += f", s{stride}"
                    if op in OPS_WITH_REPEATS and settings["op_repeats"] > 1:
                        detail += f", x{settings['op_repeats']}"
                    ops.append(
                        builder.add(
                            f"{prefix}.op{k}", op_label(op), "op", detail=detail, inputs=[source]
                        )
                    )
                if repeat == block.repeats - 1:
                    detail = f"B{b} out, 1/{r2}, {c2} ch"
                else:
                    detail = f"B{b} rep {repeat + 1} of {block.repeats}, 1/{r2}"
                aggregation = builder.add(
                    f"{prefix}.agg",
                    _AGGREGATION_LABELS.get(template.agg, template.agg),
                    "aggregation",
                    detail=detail,
                    inputs=ops,
                )
                x1, x2 = x2, aggregation
            pool.append(x2)
            reductions.append(r2)
            channels.append(c2)
        offset = len(_STEM_REDUCTIONS)
        head_inputs = [b + offset for b in arch.unused_blocks()]
        output_stride = min(reductions[i] for i in head_inputs)
        builder.add_head([pool[i] for i in head_inputs], output_stride, settings["head_width"])
        title = (
            f"template ({self.profile}): {len(arch.blocks)} blocks over MobileNet-v2, "
            f"output stride {output_stride}"
        )
        return builder.build(title, drop_dead_ends=True)
