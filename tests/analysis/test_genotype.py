"""genotype_long: real parameter names of every space map onto shared components."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from analysis import COMPONENTS, genotype_long, template_label
from search_spaces import SPACES, get_space
from tests.analysis.conftest import (
    EARLY_TEMPLATE,
    SHARED_TEMPLATE,
    TOP_TEMPLATE,
    UNUSED_TEMPLATE,
    template_params,
)


def test_fixture_params_are_the_template_space_params() -> None:
    space = get_space("template")
    params, _ = template_params([TOP_TEMPLATE, SHARED_TEMPLATE, UNUSED_TEMPLATE], stride2=2)
    assert space.to_params(space.from_params(params)) == params


def test_template_label_ignores_the_order_of_operations() -> None:
    assert template_label("skip_connect", "sep_conv_5x5", "cat") == \
        template_label("sep_conv_5x5", "skip_connect", "cat") == \
        "sep_conv_5x5 + skip_connect (cat)"


def test_template_space_rows(frame: pd.DataFrame) -> None:
    long = genotype_long(frame[(frame["study"] == "controller") & (frame["number"] == 12)])
    assert set(long["component"]) <= set(COMPONENTS)
    counts = long["component"].value_counts().to_dict()
    assert counts == {"template": 3, "op": 6, "aggregation": 3, "input": 14, "stride": 3,
                      "repeats": 7, "block_template": 7}
    templates = long[long["component"] == "template"].set_index("position")
    assert templates.loc["template_0", "value"] == template_label(*TOP_TEMPLATE)
    assert templates["used"].to_dict() == {"template_0": True, "template_1": True,
                                           "template_2": False}
    ops = long[long["component"] == "op"]
    assert not ops[ops["position"] == "template_2"]["used"].any()
    assert ops[ops["position"] == "template_0"]["used"].all()
    stride = long[(long["component"] == "stride")]
    assert list(stride["position"]) == ["block_0", "block_1", "block_2"]
    assert list(stride["param"]) == ["block_0_stride", "block_1_stride", "block_2_stride"]


def test_early_template_value(frame: pd.DataFrame) -> None:
    long = genotype_long(frame[(frame["study"] == "controller") & (frame["number"] == 0)])
    value = long[(long["component"] == "template") & (long["position"] == "template_0")]
    assert value["value"].item() == template_label(*EARLY_TEMPLATE)


#: Params of other spaces that are no operation, input or stride: plain choices.
_CHOICES = {"rsp", "architecture", "encoder"}


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_maps_onto_components(name: str) -> None:
    space = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.suggest(trial)
    frame = pd.DataFrame([{"study": "s", "number": 0,
                           **{f"param_{k}": v for k, v in trial.params.items()}}])
    long = genotype_long(frame)
    assert len(long) >= len(trial.params)
    choices = set(long.loc[long["component"] == "choice", "param"])
    assert all(c in _CHOICES or c.endswith("_width") for c in choices), choices
    if name != "smp":
        assert (long["component"] == "op").any()
