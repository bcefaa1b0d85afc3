"""The WACV 2020 template space: define-by-run, released sizes, rebuild from params."""

from __future__ import annotations

import optuna
import pytest
import torch

from nas_optuna.exceptions import ConfigError
from nas_optuna.measure import measure_network
from search_spaces import get_space
from search_spaces.template import (
    AGGREGATIONS,
    ARCH0_GENOTYPE,
    ARCH1_GENOTYPE,
    OPERATIONS,
    TemplateSpace,
)


@pytest.mark.parametrize(
    ("genotype", "generated"), [(ARCH0_GENOTYPE, 223_571), (ARCH1_GENOTYPE, 211_659)]
)
def test_released_architectures_reproduce_published_sizes(genotype: list, generated: int) -> None:
    space = get_space("template", profile="final")
    arch = space.from_genotype(genotype)
    decoder = space.build_decoder(arch, num_classes=19)
    assert sum(p.numel() for p in decoder.parameters()) == generated
    # Only the classifier depends on the class count: 64 * 9 + 1 parameters per class.
    decoder_21 = space.build_decoder(arch, num_classes=21)
    assert sum(p.numel() for p in decoder_21.parameters()) == generated + 2 * 577


def test_released_architectures_have_output_stride_4() -> None:
    # Table 3 of the paper: both released models have output resolution 1/4.
    space = get_space("template", profile="final")
    for genotype in (ARCH0_GENOTYPE, ARCH1_GENOTYPE):
        net = space.build(space.from_genotype(genotype), num_classes=19)
        costs = measure_network(net, (64, 128))
        assert costs["output_stride"] == 4
        assert net.eval()(torch.zeros(1, 3, 64, 128)).shape == (1, 19, 16, 32)


@pytest.mark.parametrize("genotype", [ARCH0_GENOTYPE, ARCH1_GENOTYPE])
def test_genotype_round_trip(genotype: list) -> None:
    space = get_space("template")
    arch = space.from_genotype(genotype)
    assert space.to_genotype(arch) == genotype
    assert space.from_params(space.to_params(arch)) == arch


def test_suggest_uses_documented_parameter_names_and_choices() -> None:
    space = get_space("template")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    arch = space.suggest(trial)
    params = trial.params
    expected = {f"template_{t}_{k}" for t in range(3) for k in ("op1", "op2", "agg")}
    expected |= {
        f"block_{b}_{k}" for b in range(7) for k in ("loc1", "loc2", "template", "repeats")
    }
    expected |= {f"block_{b}_stride" for b in range(3)}
    assert set(params) == expected
    dists = trial.distributions
    assert dists["template_0_op1"].choices == OPERATIONS
    assert dists["template_2_agg"].choices == AGGREGATIONS
    assert dists["block_4_loc2"].choices == (0, 1, 2, 3, 4, 5)
    assert (dists["block_0_repeats"].low, dists["block_0_repeats"].high) == (1, 4)
    assert all(b.stride == 1 for b in arch.blocks[3:])


def test_every_trial_rebuilds_from_stored_params_alone(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    space = get_space("template")
    study = optuna.create_study(
        storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    archs = {}
    for _ in range(5):
        trial = study.ask()
        archs[trial.number] = space.suggest(trial)
        study.tell(trial, 0.5)
    reloaded = optuna.load_study(study_name="s", storage=storage)
    for frozen in reloaded.trials:
        rebuilt = space.from_params(frozen.params)
        assert rebuilt == archs[frozen.number]
        net_a = space.build(rebuilt, 4)
        net_b = space.build(archs[frozen.number], 4)
        assert [p.shape for p in net_a.parameters()] == [p.shape for p in net_b.parameters()]


@pytest.mark.parametrize("seed", range(6))
def test_random_architectures_train_forward_and_backward(seed: int) -> None:
    space = get_space("template")
    arch = space.random_architecture(seed=seed)
    net = space.build(arch, num_classes=5)
    out = net(torch.randn(2, 3, 64, 96))
    out.mean().backward()
    stride = net.decoder.output_stride
    assert out.shape[:2] == (2, 5)
    # The nominal stride is a power of two, at least the stem's 4, and matches the output
    # whenever the input is large enough not to collapse to one pixel.
    assert stride >= 4 and stride & (stride - 1) == 0
    if stride <= 16:
        assert out.shape[-2:] == (64 // stride, 96 // stride)


#: The authors' search-time networks (separable convs once, width 48, 11 classes): genotype,
#: generated parameters and the output's (H, W) at a 256 x 256 input (issue 16).
SEARCH_TIME_NETWORKS = [
    ([[[4, 1, 1], [2, 4, 0], [2, 0, 0]], [[0, 0, 1, 2, 0], [0, 2, 1, 3, 1], [2, 0, 0, 3, 0],
      [3, 0, 1, 1, 0], [0, 1, 2, 1, 0], [2, 0, 1, 3, 0], [0, 3, 0, 1, 0]]], 101_147, (64, 64)),
    ([[[3, 3, 0], [5, 3, 1], [5, 0, 1]], [[0, 1, 1, 2, 0], [0, 1, 0, 2, 0], [3, 2, 1, 2, 1],
      [0, 3, 2, 1, 0], [3, 4, 2, 1, 0], [4, 6, 2, 3, 0], [3, 7, 0, 2, 0]]], 179_691, (64, 64)),
    ([[[5, 2, 1], [0, 5, 1], [3, 0, 0]], [[1, 0, 2, 1, 0], [2, 2, 0, 0, 0], [1, 3, 0, 1, 0],
      [4, 4, 2, 1, 0], [2, 2, 1, 1, 0], [5, 4, 0, 0, 0], [7, 4, 1, 1, 0]]], 45_971, (32, 32)),
]


@pytest.mark.parametrize(("genotype", "generated", "size"), SEARCH_TIME_NETWORKS)
def test_search_profile_reproduces_the_authors_search_time_networks(
        genotype: list, generated: int, size: tuple[int, int]) -> None:
    space = get_space("template", profile="search")
    net = space.build(space.from_genotype(genotype), num_classes=11).eval()
    assert sum(p.numel() for p in net.decoder.parameters()) == generated
    assert measure_network(net, (256, 256))["params_generated"] == generated
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 256, 256)).shape == (1, 11, *size)


def test_search_profile_keeps_the_stem_widths_and_has_a_48_channel_head() -> None:
    space = get_space("template", profile="search")
    decoder = space.build_decoder(space.from_genotype(ARCH0_GENOTYPE), num_classes=3)
    assert not hasattr(decoder, "adapt")  # no 1x1 adaptation of the pool
    assert decoder.head[1][0].out_channels == 48
    final = get_space("template", profile="final").build_decoder(
        space.from_genotype(ARCH0_GENOTYPE), num_classes=3
    )
    assert final.head[1][0].out_channels == 64


def test_unused_blocks_feed_the_head() -> None:
    arch = get_space("template").from_genotype(ARCH0_GENOTYPE)
    # pool index = block + 2; arch0's blocks use pool entries {0,1,2,3,5}, i.e. blocks 0, 1, 3.
    assert arch.unused_blocks() == [2, 4, 5, 6]


@pytest.mark.parametrize(
    "genotype",
    [
        [[[0, 0, 0]], []],  # no blocks is fine structurally but block locations below are checked
        [[[9, 0, 0], [0, 0, 0], [0, 0, 0]], ARCH0_GENOTYPE[1]],  # op index out of range
        [ARCH0_GENOTYPE[0], [[5, 0, 0, 0, 0]] + ARCH0_GENOTYPE[1][1:]],  # loc beyond the pool
        [ARCH0_GENOTYPE[0], ARCH0_GENOTYPE[1][:3] + [[1, 1, 2, 0, 1]] + ARCH0_GENOTYPE[1][4:]],
        "not a genotype",
    ],
)
def test_bad_genotypes_raise_config_error(genotype: object) -> None:
    with pytest.raises(ConfigError):
        TemplateSpace().from_genotype(genotype)


def test_unknown_profile_and_option_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'tiny'"):
        get_space("template", profile="tiny")
    with pytest.raises(ConfigError, match="has no option 'width'"):
        get_space("template", width=3)


def test_derived_features_match_the_built_network() -> None:
    import math as _math

    space = get_space("template")
    for seed in range(30):
        arch = space.random_architecture(seed=seed)
        features = space.features(arch)
        network = space.build(arch, 5)
        assert features["output_stride"] == network.decoder.output_stride
        logits = network.eval()(torch.randn(1, 3, 64, 96))
        assert logits.shape[-2:] == (_math.ceil(64 / features["output_stride"]),
                                     _math.ceil(96 / features["output_stride"]))
        applications = sum(b.repeats for b in arch.blocks)
        assert features["applications"] == applications
        ops = sum(v for k, v in features.items() if k.startswith("applied_")
                  and k.removeprefix("applied_") in OPERATIONS)
        assert ops == 2 * applications
        assert features["applied_psum"] + features["applied_cat"] == applications
        assert features["head_inputs"] == len(arch.unused_blocks())
