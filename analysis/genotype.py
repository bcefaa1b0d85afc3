"""Architectures in long form: a row per searched choice, comparable across spaces.

Every space's parameter names are stable (each space module lists them); this module
maps them onto a few shared *components* so that per-operation statistics work in every
space and per-template statistics in the template space:

* ``op``: ``template_{t}_op1/op2`` (template), ``cell_op0`` and
  ``cell_layer_{l}_op1/op2`` (auxcell), ``{kind}_node{j}_op0/op1`` (cas),
  ``cell_op_{edge}`` (rspnet);
* ``aggregation``: ``template_{t}_agg`` (template);
* ``input``: ``block_{b}_loc1/loc2`` (template), ``block_{b}_input1/input2`` and
  ``cell_layer_{l}_pos1/pos2`` (auxcell), ``{kind}_node{j}_inputs`` (cas),
  ``layer_{l}_paths`` (rspnet);
* ``stride``, ``repeats``, ``block_template``: ``block_{b}_stride/repeats/template``
  (template);
* ``template``: derived, one row per template ``t`` of the template space, valued
  :func:`template_label` of its operations and aggregation;
* ``choice``: anything else (rspnet's ``rsp``, smp's ``architecture``, ``encoder`` and
  widths).

The ``position`` is the group a choice belongs to (``template_0``, ``block_3``,
``cell_layer_1``, ``normal_node2``, ``cell``); for a ``choice`` it is the param's name.

``used`` says whether the choice is part of the built network: in the template space a
template (and its ops and aggregation) counts only when some block applies it, the
template paper's definition of a *sampled* template; every other choice is used.
"""

from __future__ import annotations

import re

import pandas as pd

__all__ = ["COMPONENTS", "genotype_long", "template_label"]

#: Components of :func:`genotype_long`, in the order its rows list them.
COMPONENTS = (
    "template", "op", "aggregation", "input", "stride", "repeats", "block_template", "choice",
)

#: (pattern, component); the pattern's ``group`` names the position.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), component)
    for pattern, component in (
        (r"^(?P<group>template_\d+)_op[12]$", "op"),
        (r"^(?P<group>template_\d+)_agg$", "aggregation"),
        (r"^(?P<group>block_\d+)_stride$", "stride"),
        (r"^(?P<group>block_\d+)_(loc|input)[12]$", "input"),
        (r"^(?P<group>block_\d+)_template$", "block_template"),
        (r"^(?P<group>block_\d+)_repeats$", "repeats"),
        (r"^(?P<group>cell)_op0$", "op"),
        (r"^(?P<group>cell_layer_\d+)_op[12]$", "op"),
        (r"^(?P<group>cell_layer_\d+)_pos[12]$", "input"),
        (r"^(?P<group>\w+_node\d+)_op[01]$", "op"),
        (r"^(?P<group>\w+_node\d+)_inputs$", "input"),
        (r"^(?P<group>cell)_op_\w+$", "op"),
        (r"^(?P<group>layer_\d+)_paths$", "input"),
    )
)
_TEMPLATE_PARAM = re.compile(r"^template_(\d+)_(op1|op2|agg)$")
_LONG_COLUMNS = ("study", "number", "component", "position", "param", "value", "used")


def template_label(op1: str, op2: str, agg: str) -> str:
    """A template's name, with its two operations in sorted order.

    The order of a template's operations does not matter, so ``[a, b, agg]`` and
    ``[b, a, agg]`` are one template (the template paper counts 42 = 21 x 2 of them).

    Example:
        >>> template_label("skip_connect", "sep_conv_5x5", "cat")
        'sep_conv_5x5 + skip_connect (cat)'
    """
    first, second = sorted((str(op1), str(op2)))
    return f"{first} + {second} ({agg})"


def genotype_long(frame: pd.DataFrame) -> pd.DataFrame:
    """The architectures of a :func:`~analysis.tables.trials_frame` in long form.

    One row per trial and searched choice, with columns ``study``, ``number``,
    ``component`` (see the module docstring), ``position`` (the group the choice belongs
    to, e.g. ``template_0``, ``block_3``, ``cell_layer_1``, ``normal_node2``), ``param``
    (the Optuna parameter, empty for derived rows), ``value`` and ``used``.

    Args:
        frame: A trials frame (its ``param_*`` columns are read).

    Example:
        >>> long = genotype_long(trials_frame(storage, ["quickstart"]))
        >>> ops = long[(long.component == "op") & long.used]
        >>> ops.merge(frame, on=["study", "number"]).groupby("value")["reward"].mean()
    """
    params = [c for c in frame.columns if c.startswith("param_")]
    rows: list[dict] = []
    for record in frame[["study", "number", *params]].to_dict("records"):
        values = {c[len("param_"):]: v for c, v in record.items()
                  if c.startswith("param_") and not _missing(v)}
        used_templates = {int(v) for k, v in values.items()
                          if re.fullmatch(r"block_\d+_template", k)}
        key = {"study": record["study"], "number": record["number"]}
        rows.extend({**key, **row} for row in _template_rows(values, used_templates))
        for name, value in values.items():
            component, position = _classify(name)
            match = _TEMPLATE_PARAM.match(name)
            used = int(match.group(1)) in used_templates if match else True
            rows.append({**key, "component": component, "position": position,
                         "param": name, "value": value, "used": used})
    long = pd.DataFrame(rows, columns=_LONG_COLUMNS)
    order = {c: i for i, c in enumerate(COMPONENTS)}
    long["_order"] = long["component"].map(order)
    long = long.sort_values(["study", "number", "_order"], kind="stable")
    return long.drop(columns="_order").reset_index(drop=True)


def _template_rows(values: dict, used_templates: set[int]) -> list[dict]:
    rows = []
    t = 0
    while all(f"template_{t}_{part}" in values for part in ("op1", "op2", "agg")):
        label = template_label(values[f"template_{t}_op1"], values[f"template_{t}_op2"],
                               values[f"template_{t}_agg"])
        rows.append({"component": "template", "position": f"template_{t}", "param": "",
                     "value": label, "used": t in used_templates})
        t += 1
    return rows


def _classify(name: str) -> tuple[str, str]:
    for pattern, component in _RULES:
        match = pattern.match(name)
        if match:
            return component, match.group("group")
    return "choice", name


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)
