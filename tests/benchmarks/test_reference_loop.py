"""The throughput benchmark's reference loop trains on the batches nas-optuna trains on.

The benchmark reads Spearman's rho between the two sides' rewards as the effect of
nas-optuna's implementation on the ranking; that reading needs both sides to see the
same batches, in the same order, with the same augmentations, for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from nas_optuna.config import TrainConfig
from nas_optuna.data import build_dataset
from nas_optuna.training import initialise_stem, prepare_search_data, train_architecture
from nas_optuna.training import trainer as trainer_module
from search_spaces import get_space

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def reference_loop(import_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return import_benchmark("_reference_loop")


@pytest.mark.parametrize("flip_views", [False, True])
def test_reference_loop_and_trainer_see_the_same_batches(
    reference_loop: ModuleType, flip_views: bool, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 45 meta-train images in batches of 8: a partial last batch in every epoch.
    source = build_dataset("synthetic", num_images=50, image_size=(32, 48), num_classes=4)
    space = get_space("template", profile="search")
    options = dict(val_fraction=0.1, split_seed=0, crop_size=None, scale=(0.75, 1.25),
                   flip_views=flip_views)
    data = prepare_search_data(
        source, build_stem=space.build_stem, stem_id=space.stem_id,
        initialise_stem=lambda stem, ds: initialise_stem(
            stem, ds, mode="random", num_classes=4, warmup_epochs=0, batch_size=8,
            device=CPU),
        stem_weights="random", warmup_epochs=0, batch_size=8, cache_dir=tmp_path, **options)
    reference_data = reference_loop.build_reference_data(source, **options)
    config = TrainConfig(stage1_epochs=2, stage2_epochs=2, batch_size=8, flip_views=flip_views)
    arch = space.random_architecture(seed=3)

    def network() -> torch.nn.Module:
        torch.manual_seed(0)
        stem = space.build_stem()
        stem.load_state_dict(data.stem_state)
        return space.build(arch, data.num_classes, stem=stem)

    seen: dict[str, list[torch.Tensor]] = {"reference": [], "nas_optuna": []}

    def recording(original, side):  # type: ignore[no-untyped-def]
        def step(model, inputs, labels, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen[side].append(labels.detach().cpu().clone())
            return original(model, inputs, labels, *args, **kwargs)
        return step

    monkeypatch.setattr(reference_loop, "_train_step",
                        recording(reference_loop._train_step, "reference"))
    monkeypatch.setattr(trainer_module, "_step", recording(trainer_module._step, "nas_optuna"))
    reference_loop.train_reference(network(), reference_data, config, device=CPU, seed=5)
    train_architecture(network(), data, config, device=CPU, seed=5)

    steps_per_epoch = -(-len(reference_data.train_fixed) // 8)
    assert len(seen["nas_optuna"]) == len(seen["reference"]) > 2 * steps_per_epoch
    for step, (ours, theirs) in enumerate(zip(seen["reference"], seen["nas_optuna"])):
        assert torch.equal(ours, theirs.to(ours.dtype)), f"step {step} trained other labels"
