"""Auxiliary heads and knowledge distillation in search-time training (CVPR 2019)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas_optuna.config import TrainConfig, parse_config
from nas_optuna.data import build_dataset
from nas_optuna.exceptions import ConfigError
from nas_optuna.networks import AuxiliaryOutputs
from nas_optuna.study import run_search
from nas_optuna.training import initialise_stem, load_teacher, prepare_search_data
from nas_optuna.training.trainer import _loss
from search_spaces import get_space
from search_spaces.auxcell import ARCH0_GENOTYPE
from tests.conftest import tiny_config_dict

CPU = torch.device("cpu")


def test_auxiliary_heads_add_weighted_cross_entropies() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[0, 0, 0] = 255
    logits, aux_a, aux_b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)
    config = TrainConfig(auxiliary_weight=0.15)
    down = lambda size: F.interpolate(labels[:, None].float(), size=size)[:, 0].long()  # noqa: E731
    expected = F.cross_entropy(logits, labels, ignore_index=255) + 0.15 * (
        F.cross_entropy(aux_a, down((4, 4)), ignore_index=255)
        + F.cross_entropy(aux_b, down((2, 2)), ignore_index=255)
    )
    got = _loss(AuxiliaryOutputs(logits, [aux_a, aux_b]), labels, config, None)
    assert torch.allclose(got, expected)
    assert torch.allclose(_loss(logits, labels, config, None),
                          F.cross_entropy(logits, labels, ignore_index=255))


def test_distillation_adds_weighted_mse_to_the_teacher_at_the_students_size() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    logits, teacher = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 16, 16)
    resized = F.interpolate(teacher, size=(8, 8), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits, labels) + 0.3 * F.mse_loss(logits, resized)
    got = _loss(logits, labels, TrainConfig(distill_weight=0.3), teacher.half())
    assert torch.allclose(got, expected, atol=1e-3)


@pytest.fixture
def teacher_checkpoint(tmp_path: Path) -> tuple[Path, list]:
    """A (random) auxcell network saved as a teacher checkpoint for 4 classes."""
    space = get_space("auxcell", profile="search")
    net = space.build(space.from_genotype(ARCH0_GENOTYPE), 4)
    path = tmp_path / "teacher.pt"
    torch.save(net.state_dict(), path)
    return path, ARCH0_GENOTYPE


def test_teacher_logits_are_cached_for_every_stage1_sample(tmp_path, teacher_checkpoint) -> None:
    path, genotype = teacher_checkpoint
    space = get_space("auxcell", profile="search")
    teacher, teacher_id = load_teacher(space, space.from_genotype(genotype), 4, path)
    source = build_dataset("synthetic", num_images=20, image_size=(32, 48), num_classes=4)
    data = prepare_search_data(
        source, build_stem=space.build_stem, stem_id=space.stem_id,
        initialise_stem=lambda stem, ds: initialise_stem(
            stem, ds, mode="random", num_classes=4, warmup_epochs=0, batch_size=8, device=CPU),
        stem_weights="random", warmup_epochs=0, batch_size=8, cache_dir=tmp_path / "cache",
        flip_views=True, teacher=teacher, teacher_id=teacher_id,
    )
    logits = data.train_teacher_logits
    assert logits is not None and logits.dtype == torch.float16
    # One map per stage-1 sample (mirrored views included), at a quarter of the image size.
    assert logits.shape == (len(data.train_labels), 4, 8, 12)


def test_search_with_a_teacher_distils_in_stage1_only(
    tmp_path, teacher_checkpoint, monkeypatch
) -> None:
    from nas_optuna.training import trainer

    seen: list[tuple[int, bool]] = []  # (stage, teacher logits given)
    real_step = trainer._step

    def recording_step(model, inputs, labels, optimisers, config, watch, teacher_logits=None):
        seen.append((watch.stage, teacher_logits is not None))
        if teacher_logits is not None:  # the teacher's maps match the batch
            assert teacher_logits.shape[0] == labels.shape[0]
        return real_step(model, inputs, labels, optimisers, config, watch, teacher_logits)

    monkeypatch.setattr(trainer, "_step", recording_step)
    path, genotype = teacher_checkpoint
    raw = tiny_config_dict(tmp_path, study={"n_trials": 2})
    raw["teacher"] = {"space": "auxcell", "profile": "search", "genotype": genotype,
                      "checkpoint": str(path)}
    study = run_search(parse_config(raw))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # Every stage-1 step distils, no stage-2 step does (the paper's schedule).
    assert {given for stage, given in seen if stage == 1} == {True}
    assert {given for stage, given in seen if stage == 2} == {False}
    cached = torch.load(next((tmp_path / "cache").glob("stem-features-*.pt")),
                        weights_only=True)
    assert cached["train_teacher_logits"] is not None


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        ({"space": "auxcell", "genotype": ARCH0_GENOTYPE, "checkpoint": "missing.pt"},
         "not found"),
        ({"space": "template", "genotype": [[[0, 0, 0]] * 3, [[0, 1, 0, 0, 0]] * 7],
          "checkpoint": "TEACHER"}, "does not fit"),
        ({"space": "auxcell", "checkpoint": "TEACHER"}, "exactly one of params or genotype"),
    ],
)
def test_bad_teachers_fail_before_the_storage_is_touched(
    tmp_path, teacher_checkpoint, teacher: dict, message: str
) -> None:
    path, _ = teacher_checkpoint
    raw = tiny_config_dict(tmp_path)
    raw["teacher"] = {k: str(path) if v == "TEACHER" else v for k, v in teacher.items()}
    with pytest.raises(ConfigError, match=message):
        run_search(parse_config(raw))
    assert not (tmp_path / "study.db").exists()


def test_teacher_checkpoints_are_loaded_as_data_only(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": object()}, path)
    space = get_space("auxcell")
    with pytest.raises(ConfigError, match="cannot read teacher checkpoint"):
        load_teacher(space, space.from_genotype(ARCH0_GENOTYPE), 4, path)


def test_a_plain_smp_model_checkpoint_can_teach(tmp_path) -> None:
    # A model trained with segmentation-models-pytorch directly saves the bare smp model's
    # state_dict; the loader finds the submodule of our network it belongs to.
    space = get_space("smp", encoder_weights="none")
    arch = space.from_genotype(["FPN", "mobilenet_v2", 64])
    source = space.build(arch, 4)
    path = tmp_path / "smp_fpn.pt"
    torch.save(source.decoder.model.state_dict(), path)
    teacher, _ = load_teacher(space, arch, 4, path)
    image = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert torch.equal(teacher(image), source.eval()(image))
