"""The contract every registered search space keeps, swept over the whole registry."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

from nas_optuna.measure import measure_network
from nas_optuna.networks import AuxiliaryOutputs
from search_spaces import SPACES, get_space

SPACE_NAMES = SPACES.names()
# Sizes divisible by 32 and not: strided layers must round up consistently everywhere.
INPUT_SIZES = ((64, 64), (45, 61))
NUM_CLASSES = 5


def test_the_five_papers_spaces_are_registered() -> None:
    assert set(SPACE_NAMES) == {"template", "auxcell", "cas", "rspnet", "smp"}


def _split(output: torch.Tensor | AuxiliaryOutputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if isinstance(output, AuxiliaryOutputs):
        return output.logits, list(output.auxiliary)
    return output, []


#: Random architectures per space whose outputs are checked at both sizes, and how many of
#: them (the first) are also trained one step (the backward pass is ~2/3 of the cost).
N_BUILT, N_TRAINED = 200, 40


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_200_random_architectures_build_at_two_sizes_and_40_train(name: str) -> None:
    space = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for index in range(N_BUILT):
        arch = space.suggest(study.ask())
        torch.manual_seed(index)
        net = space.build(arch, NUM_CLASSES)
        stride = net.decoder.output_stride
        train = index < N_TRAINED
        net.train(train)
        for height, width in INPUT_SIZES:
            with torch.set_grad_enabled(train):
                logits, auxiliary = _split(net(torch.randn(2, 3, height, width)))
            expected = (2, NUM_CLASSES, math.ceil(height / stride), math.ceil(width / stride))
            assert tuple(logits.shape) == expected, (space.describe(arch), (height, width))
            assert torch.isfinite(logits).all(), space.describe(arch)
            if not train:
                continue
            loss = sum(o.float().square().mean() for o in [logits, *auxiliary])
            net.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in net.decoder.parameters() if p.grad is not None]
            assert grads, f"no gradient reaches the generated part of {space.describe(arch)}"
            assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_stored_params_rebuild_the_architecture(name: str, tmp_path) -> None:
    space = get_space(name)
    storage = f"sqlite:///{tmp_path / 'spaces.db'}"
    study = optuna.create_study(
        storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    archs = {}
    for _ in range(8):
        trial = study.ask()
        archs[trial.number] = space.suggest(trial)
        study.tell(trial, 0.0)
    for frozen in optuna.load_study(study_name=study.study_name, storage=storage).trials:
        arch = archs[frozen.number]
        assert space.from_params(frozen.params) == arch
        assert space.to_params(arch) == frozen.params
        genotype = json.loads(json.dumps(space.to_genotype(arch)))  # JSON-able as stored
        assert space.from_genotype(genotype) == arch
        assert space.describe(arch) and "\n" not in space.describe(arch)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_both_profiles_build_inference_networks_without_training_heads(name: str) -> None:
    for profile in ("search", "final"):
        space = get_space(name, profile=profile)
        arch = space.random_architecture(seed=3)
        net = space.build(arch, NUM_CLASSES).eval()
        with torch.no_grad():
            output = net(torch.randn(1, 3, 64, 64))
        assert isinstance(output, torch.Tensor)  # eval mode: logits only, no auxiliary heads
        costs = measure_network(net, (64, 64))
        assert 0 < costs["params_generated"] <= costs["params_total"]
        assert costs["output_stride"] == net.decoder.output_stride
        assert costs["macs"] > 0


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_space_describes_itself(name: str) -> None:
    space = get_space(name)
    assert isinstance(space.size(), int) and space.size() > 1
    assert space.summary
    assert {"search", "final"} <= set(space.profiles)
    assert json.loads(json.dumps(space.options()))["name"] == name


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_derived_features_have_fixed_names_and_finite_values(name: str) -> None:
    space = get_space(name)
    features = [space.features(space.random_architecture(seed=s)) for s in range(12)]
    assert all(list(f) == list(features[0]) for f in features)
    assert all(isinstance(v, float) and math.isfinite(v) for f in features for v in f.values())
