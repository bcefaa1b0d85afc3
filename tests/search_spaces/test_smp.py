"""The smp baseline space: names, rebuilding from params, genotypes, any input size, weights."""

from __future__ import annotations

import itertools
import json

import optuna
import pytest
import torch

import search_spaces.smp as smp_space
from nas_optuna.cost import count_parameters
from nas_optuna.exceptions import ConfigError
from nas_optuna.measure import measure_network
from nas_optuna.stems import ImageStem
from search_spaces.smp import ARCHITECTURES, ENCODERS, SmpArchitecture, SmpSpace, width_param

SEARCH_ARCHITECTURES = ("Unet", "FPN", "DeepLabV3Plus", "PSPNet", "UPerNet")
SEARCH_ENCODERS = ("mobilenet_v2", "efficientnet-b0", "resnet18")
SEARCH_WIDTH_NAMES = {
    "unet_decoder_width",
    "fpn_decoder_width",
    "deeplabv3plus_decoder_width",
    "pspnet_decoder_width",
    "upernet_decoder_width",
}


def _space(profile: str = "search", **options) -> SmpSpace:
    return SmpSpace(profile, encoder_weights="none", **options)


def _all_archs(space: SmpSpace) -> list[SmpArchitecture]:
    return [
        SmpArchitecture(a, e, w)
        for a in space.architectures
        for e in space.encoders
        for w in space.widths[a]
    ]


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may look for weights on the network; tests that need weights patch this.
    def unavailable(encoder: str) -> None:
        return None

    monkeypatch.setattr(smp_space, "_imagenet_weights_path", unavailable)


# --- parameters -------------------------------------------------------------------------
def test_documented_parameter_names_and_conditional_width() -> None:
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    width_names: set[str] = set()
    for _ in range(60):
        trial = study.ask()
        arch = space.suggest(trial)
        # Exactly three parameters: the width belongs to the chosen architecture only.
        assert set(trial.params) == {"architecture", "encoder", width_param(arch.architecture)}
        dists = trial.distributions
        assert dists["architecture"].choices == SEARCH_ARCHITECTURES
        assert dists["encoder"].choices == SEARCH_ENCODERS
        width_names.add(width_param(arch.architecture))
        study.tell(trial, 0.0)
    assert width_names == SEARCH_WIDTH_NAMES
    dists = {name: d for t in study.trials for name, d in t.distributions.items()}
    assert dists["unet_decoder_width"].choices == (32, 64, 128)
    assert dists["fpn_decoder_width"].choices == (32, 64, 128)
    assert dists["pspnet_decoder_width"].choices == (64, 128, 256)


def test_final_profile_contains_the_search_choices_and_smp_defaults() -> None:
    search, final = _space("search"), _space("final")
    assert final.architectures == ARCHITECTURES and final.encoders == ENCODERS
    assert width_param("UnetPlusPlus") == "unetplusplus_decoder_width"
    for arch in _all_archs(search):
        assert final.from_params(search.to_params(arch)) == arch
    defaults = {"PSPNet": 512}
    for a in final.architectures:
        assert max(final.widths[a]) == defaults.get(a, 256)


def test_from_params_rejects_missing_or_foreign_values() -> None:
    space = _space()
    with pytest.raises(ConfigError):
        space.from_params({"architecture": "FPN", "encoder": "resnet18"})  # no width
    with pytest.raises(ConfigError):
        space.from_params({"architecture": "FPN", "encoder": "resnet18", "fpn_decoder_width": 256})
    with pytest.raises(ConfigError):
        space.from_params({"architecture": "Unet", "encoder": "resnet34", "unet_decoder_width": 64})


# --- genotypes and size -----------------------------------------------------------------
@pytest.mark.parametrize("profile", ["search", "final"])
def test_genotype_round_trip_for_every_architecture(profile: str) -> None:
    space = _space(profile)
    for arch in _all_archs(space):
        genotype = space.to_genotype(arch)
        assert json.loads(json.dumps(genotype)) == genotype
        assert space.from_genotype(genotype) == arch
        assert space.to_genotype(space.from_genotype(genotype)) == genotype
        assert space.from_params(space.to_params(arch)) == arch
    assert space.to_genotype(space.from_genotype(["FPN", "mobilenet_v2", 128])) == [
        "FPN",
        "mobilenet_v2",
        128,
    ]


@pytest.mark.parametrize(
    "genotype",
    [
        ["FPN", "mobilenet_v2"],
        ["FPN", "mobilenet_v2", 128, 0],
        ["Linknet", "mobilenet_v2", 128],
        ["UnetPlusPlus", "mobilenet_v2", 64],  # final profile only
        ["FPN", "resnet50", 128],
        ["FPN", "mobileone_s0", 128],  # final profile only
        ["FPN", "mobilenet_v2", 256],  # final profile only
        ["PSPNet", "mobilenet_v2", 32],
        ["FPN", "mobilenet_v2", True],
        ["FPN", "mobilenet_v2", "128"],
        {"architecture": "FPN"},
        "FPN",
    ],
)
def test_bad_genotypes_raise_config_error(genotype: object) -> None:
    with pytest.raises(ConfigError):
        _space().from_genotype(genotype)


def test_size_equals_an_independent_count() -> None:
    candidate_widths = [2**k for k in range(3, 11)]
    for profile, expected in (("search", 45), ("final", 120)):
        space = _space(profile)
        valid = set()
        for genotype in itertools.product(ARCHITECTURES + ("Linknet",), ENCODERS, candidate_widths):
            try:
                valid.add(space.from_genotype(list(genotype)))
            except ConfigError:
                pass
        assert space.size() == len(valid) == expected
    restricted = _space(architectures=["FPN", "Unet"], encoders=["resnet18"])
    assert restricted.architectures == ("Unet", "FPN")  # canonical order
    assert restricted.size() == 3 + 3


# --- options and errors -----------------------------------------------------------------
def test_unknown_names_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'Segnet'.*choose from: Unet"):
        SmpSpace(architectures=["Unet", "Segnet"])
    with pytest.raises(ConfigError, match="unknown encoder 'resnet50'.*mobilenet_v2"):
        SmpSpace(encoders=["resnet50"])
    with pytest.raises(ConfigError, match="unknown encoder_weights 'yes'"):
        SmpSpace(encoder_weights="yes")
    with pytest.raises(ConfigError, match="unknown profile 'tiny'"):
        SmpSpace("tiny")
    with pytest.raises(ConfigError, match="at least one encoder"):
        SmpSpace(encoders=[])
    with pytest.raises(ConfigError) as info:
        SmpSpace(encoders=["resnet50"])
    assert "\n" not in str(info.value)


def test_options_are_json_and_rebuild_the_space() -> None:
    space = SmpSpace("final", encoder_weights="none", encoders=["resnet34", "mobilenet_v2"])
    options = json.loads(json.dumps(space.options()))
    assert options == {
        "name": "smp",
        "profile": "final",
        "encoder_weights": "none",
        "architectures": list(ARCHITECTURES),
        "encoders": ["mobilenet_v2", "resnet34"],
    }
    del options["name"]
    again = SmpSpace(**options)
    assert again.options() == space.options() and again.size() == space.size()
    # A name outside the profile may be asked for explicitly; it gets the final widths.
    extended = SmpSpace(architectures=["UnetPlusPlus"], encoder_weights="none")
    assert extended.widths == {"UnetPlusPlus": (32, 64, 128, 256)}


# --- networks ---------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", SEARCH_ARCHITECTURES)
def test_every_search_pair_trains_at_odd_sizes_with_full_size_logits(architecture: str) -> None:
    torch.manual_seed(0)
    space = _space()
    widths = space.widths[architecture]
    for index, encoder in enumerate(SEARCH_ENCODERS):
        arch = SmpArchitecture(architecture, encoder, widths[index % len(widths)])
        net = space.build(arch, num_classes=5)
        assert isinstance(net.stem, ImageStem)
        assert net.decoder.output_stride == 1
        assert net.decoder.encoder_weights_loaded == "random"
        net.train()
        out = net(torch.randn(2, 3, 45, 61))
        assert out.shape == (2, 5, 45, 61)
        out.mean().backward()
        assert all(p.grad is not None for p in net.decoder.model.segmentation_head.parameters())
    # The smallest side the space promises, in training mode with two images (BN on the
    # 1 x 1 pooled maps of DeepLabV3Plus / UPerNet needs two values per channel).
    assert net(torch.randn(2, 3, 32, 33)).shape == (2, 5, 32, 33)


@pytest.mark.parametrize(
    "genotype",
    [
        ["UnetPlusPlus", "mobilenet_v2", 32],
        ["Unet", "mobileone_s0", 32],
        ["PSPNet", "resnet34", 64],
    ],
)
def test_final_only_choices_build(genotype: list) -> None:
    space = _space("final")
    net = space.build_model(space.from_genotype(genotype), num_classes=3).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 37, 50)).shape == (1, 3, 37, 50)


def test_padding_keeps_divisible_inputs_and_handles_tiny_ones() -> None:
    space = _space()
    decoder = space.build_decoder(SmpArchitecture("FPN", "mobilenet_v2", 64), 4).eval()
    assert decoder.pad_multiple == 32
    pspnet = space.build_decoder(SmpArchitecture("PSPNet", "mobilenet_v2", 64), 4)
    deeplab = space.build_decoder(SmpArchitecture("DeepLabV3Plus", "mobilenet_v2", 64), 4)
    assert (pspnet.pad_multiple, deeplab.pad_multiple) == (8, 16)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(decoder([x]), decoder.model(x))
        # 45 -> 64 pads 19 rows: reflect; the first 45 x 61 logits see the same image.
        padded = torch.nn.functional.pad(x[..., :45, :61], (0, 3, 0, 19), mode="reflect")
        assert torch.allclose(decoder([x[..., :45, :61]]), decoder.model(padded)[..., :45, :61])
        # Shorter than the padding: replicate instead of reflect.
        assert decoder([torch.randn(1, 3, 10, 12)]).shape == (1, 4, 10, 12)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_width_sets_the_decoder_size(architecture: str) -> None:
    import segmentation_models_pytorch as smp

    space = _space("final")
    counts = []
    for width in space.widths[architecture]:
        decoder = space.build_decoder(SmpArchitecture(architecture, "mobilenet_v2", width), 7)
        counts.append(count_parameters(decoder))
        # The smallest promised side at batch 1 in eval mode, as measure_network runs it
        # (FPN's group norm once failed here on the 1 x 1 map).
        with torch.no_grad():
            assert decoder.eval()([torch.zeros(1, 3, 32, 32)]).shape == (1, 7, 32, 32)
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    # The largest final width is smp's default model.
    default = getattr(smp, architecture)(
        encoder_name="mobilenet_v2", encoder_weights=None, classes=7
    )
    assert counts[-1] == count_parameters(default)


def test_build_model_is_a_teacher_whose_generated_part_is_everything() -> None:
    space = _space("final")
    teacher = space.build_model(space.from_genotype(["DeepLabV3Plus", "resnet18", 64]), 19)
    costs = measure_network(teacher, (64, 64))
    assert costs["output_stride"] == 1
    assert costs["params_generated"] == costs["params_total"] > 11_000_000
    assert space.describe(space.from_genotype(["FPN", "resnet18", 64])) == (
        "FPN(resnet18, width 64)"
    )


# --- encoder weights --------------------------------------------------------------------
def test_imagenet_weights_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = SmpArchitecture("Unet", "mobilenet_v2", 32)
    with pytest.raises(ConfigError, match="no ImageNet weights for encoder 'mobilenet_v2'"):
        SmpSpace(encoder_weights="imagenet").build_decoder(arch, 3)
    assert SmpSpace(encoder_weights="auto").build_decoder(arch, 3).encoder_weights_loaded == (
        "random"
    )

    def forbidden(encoder: str) -> None:
        raise AssertionError("encoder_weights='none' must not look for weights")

    monkeypatch.setattr(smp_space, "_imagenet_weights_path", forbidden)
    assert SmpSpace(encoder_weights="none").build_decoder(arch, 3).encoder_weights_loaded == (
        "random"
    )


@pytest.mark.parametrize("mode", ["auto", "imagenet"])
def test_imagenet_weights_load_into_the_encoder(
    mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import get_encoder

    torch.manual_seed(123)
    reference = get_encoder("mobilenet_v2", weights=None).state_dict()
    # smp's hub files hold the classifier too; the encoder drops it.
    reference_file = {**reference, "classifier.1.weight": torch.zeros(1000, 1280)}
    save_file({k: v.contiguous() for k, v in reference_file.items()}, tmp_path / "w.safetensors")
    monkeypatch.setattr(
        smp_space, "_imagenet_weights_path", lambda encoder: str(tmp_path / "w.safetensors")
    )
    decoder = SmpSpace(encoder_weights=mode).build_decoder(
        SmpArchitecture("FPN", "mobilenet_v2", 64), 3
    )
    assert decoder.encoder_weights_loaded == "imagenet"
    state = decoder.model.encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in reference.items())


def test_weights_lookup_is_local_first_and_offline_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.undo()  # the real lookup, with the hub and the DNS check patched
    calls = []

    def fake_download(repo_id: str, *, filename: str, revision: str, local_files_only: bool):
        calls.append((repo_id, filename, local_files_only))
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(smp_space, "_hub_reachable", lambda: False)
    lookup = smp_space._imagenet_weights_path
    lookup.cache_clear()
    try:
        assert lookup("resnet18") is None
        assert calls == [("smp-hub/resnet18.imagenet", "model.safetensors", True)]
        assert lookup("resnet18") is None and len(calls) == 1  # remembered
        monkeypatch.setattr(smp_space, "_hub_reachable", lambda: True)
        assert lookup("efficientnet-b0") is None
        assert [c[2] for c in calls[1:]] == [True, False]
    finally:
        lookup.cache_clear()
