"""MobileNet-v2 stems: sizes, outputs, ImageNet loading and the warm-up fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nas_optuna import stems
from nas_optuna.data import SegmentationDataset, build_dataset, build_transforms
from nas_optuna.exceptions import ConfigError
from nas_optuna.stems import EncoderStem, load_imagenet_weights, mobilenet_v2_stem
from nas_optuna.training import initialise_stem


def test_template_stem_outputs_and_size() -> None:
    stem = mobilenet_v2_stem((4, 8))
    features = stem(torch.zeros(2, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [(24, 16, 24), (32, 8, 12)]
    assert stem.out_channels == (24, 32)
    # smp's MobileNet-v2 up to 1/8 (the authors' layout has 56,576: one extra 1x1 conv).
    assert sum(p.numel() for p in stem.parameters()) == 55_488


def test_encoder_stem_with_four_outputs_stops_at_320_channels() -> None:
    stem = mobilenet_v2_stem((4, 8, 16, 32))
    features = stem(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [24, 32, 96, 320]
    assert [64 // f.shape[-1] for f in features] == [4, 8, 16, 32]


def _fake_hub_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    import segmentation_models_pytorch as smp

    torch.manual_seed(5)
    encoder = smp.encoders.get_encoder("mobilenet_v2", depth=5, weights=None)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path, state


def test_imagenet_weights_load_from_the_local_hub_cache(tmp_path: Path, monkeypatch) -> None:
    path, state = _fake_hub_file(tmp_path)
    asked = []

    def fake_download(repo_id, filename, revision, local_files_only):
        asked.append((repo_id, filename, local_files_only))
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    stem = EncoderStem((4, 8))
    assert load_imagenet_weights(stem)
    assert asked == [("smp-hub/mobilenet_v2.imagenet", "model.safetensors", True)]
    for name, tensor in stem.features.state_dict().items():
        assert torch.equal(tensor, state[f"features.{name}"])


def test_no_weights_offline_means_warmup(tmp_path: Path, monkeypatch) -> None:
    def unavailable(*args, **kwargs):
        raise OSError("not cached")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unavailable)
    monkeypatch.setattr(stems, "_hub_reachable", lambda host="": False)
    stem = EncoderStem((4, 8))
    assert not load_imagenet_weights(stem)

    source = build_dataset("synthetic", num_images=12, image_size=(32, 32), num_classes=3)
    dataset = SegmentationDataset(source, range(12), build_transforms(train=True,
                                                                      crop_size=(32, 32)))
    before = {k: v.clone() for k, v in stem.state_dict().items()}
    how = initialise_stem(stem, dataset, mode="auto", num_classes=3, warmup_epochs=1,
                          batch_size=4, device="cpu")
    assert how == "warmup"
    assert any(not torch.equal(before[k], v) for k, v in stem.state_dict().items())
    with pytest.raises(ConfigError, match="ImageNet weights"):
        initialise_stem(stem, dataset, mode="imagenet", num_classes=3, warmup_epochs=1,
                        batch_size=4, device="cpu")
    assert initialise_stem(stem, dataset, mode="random", num_classes=3, warmup_epochs=1,
                           batch_size=4, device="cpu") == "random"
