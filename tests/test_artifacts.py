"""Trial artifacts: diagram, mask preview, weights and note of every finished trial.

A tiny real search stores them through ``optuna.artifacts``; a failing write never fails
the trial; bad ``[artifacts]`` values are one-line config errors.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import optuna_dashboard
import pytest
import torch
from PIL import Image

from nas_optuna.artifacts import (
    IGNORE_COLOUR,
    class_palette,
    default_artifact_dir,
    mask_preview_png,
    preview_cell_size,
    upload_trial_artifacts,
)
from nas_optuna.config import ArtifactsConfig, parse_config
from nas_optuna.diagram import render_svg
from nas_optuna.exceptions import ConfigError
from nas_optuna.study import run_search
from search_spaces import get_space
from tests.conftest import fake_trainer, tiny_config_dict

COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED
def metas(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's artifacts by file-name suffix (``architecture.svg``, ``masks.png``, ...)."""
    found = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    return {m.filename.split("-", 2)[2]: m for m in found}


def read(study: optuna.Study, meta: Any) -> bytes:
    store = optuna.artifacts.FileSystemArtifactStore(study.user_attrs["artifact_dir"])
    with store.open_reader(meta.artifact_id) as reader:
        return reader.read()


def note(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    return optuna_dashboard.get_note(optuna.trial.Trial(study, trial._trial_id))


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """Three trials of the tiny search with weights and a 3-image preview."""
    tmp_path = tmp_path_factory.mktemp("artifacts")
    config = parse_config(tiny_config_dict(tmp_path, artifacts={"masks": 3, "weights": True}))
    return tmp_path, run_search(config)


@pytest.mark.slow
def test_every_finished_trial_stores_diagram_preview_weights_and_note(searched) -> None:
    tmp_path, study = searched
    assert study.user_attrs["artifact_dir"] == str(tmp_path.resolve() / "study.db-artifacts")
    cell_h, cell_w = preview_cell_size(32, 48)
    space = get_space("template", profile="search")
    trials = study.get_trials()
    assert len(trials) == 3
    for trial in trials:
        assert trial.state == COMPLETE
        assert "artifact_error" not in trial.user_attrs
        stored = metas(study, trial)
        assert sorted(stored) == ["architecture.svg", "masks.png", "weights.pt"]
        assert stored["architecture.svg"].filename == f"trial-{trial.number}-architecture.svg"
        assert stored["architecture.svg"].mimetype == "image/svg+xml"
        assert stored["masks.png"].mimetype == "image/png"
        svg = read(study, stored["architecture.svg"])
        assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
        assert svg.decode() == render_svg(space.graph(space.from_params(trial.params)))
        preview = Image.open(io.BytesIO(read(study, stored["masks.png"])))
        assert preview.format == "PNG"
        assert preview.size == (3 * cell_w, 3 * cell_h)  # 3 columns, 3 meta-val images
        text = note(study, trial)
        assert trial.user_attrs["genotype"] in text
        assert f"{trial.user_attrs['reward_stage2']:.4f}" in text
        assert f"{trial.user_attrs['params_total']:,}" in text


@pytest.mark.slow
def test_weights_load_into_the_rebuilt_network(searched) -> None:
    _, study = searched
    trial = study.trials[0]
    state = torch.load(io.BytesIO(read(study, metas(study, trial)["weights.pt"])),
                       weights_only=True)
    space = get_space("template", profile="search")
    network = space.build(space.from_params(trial.params), study.user_attrs["num_classes"])
    network.load_state_dict(state)  # strict: every key and shape matches
    with torch.no_grad():
        assert network.eval()(torch.zeros(1, 3, 32, 48)).shape[:2] == (1, 4)


@pytest.mark.slow
def test_preview_masks_use_the_class_palette(searched) -> None:
    """The truth and prediction columns are drawn with the fixed palette."""
    _, study = searched
    preview = np.asarray(Image.open(io.BytesIO(read(study, metas(study, study.trials[0])
                                                    ["masks.png"]))).convert("RGB"))
    cell_h, cell_w = preview_cell_size(32, 48)
    palette = {tuple(c) for c in class_palette(4)} | {IGNORE_COLOUR}
    for column in (1, 2):  # truth and prediction hold palette colours only
        cells = preview[:, column * cell_w:(column + 1) * cell_w].reshape(-1, 3)
        assert {tuple(c) for c in np.unique(cells, axis=0)} <= palette


@pytest.mark.slow
def test_pruned_trials_store_the_diagram_and_note_only(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nas_optuna.objective.train_architecture", fake_trainer([0.5, 0.1]))
    config = parse_config(tiny_config_dict(
        tmp_path, study={"n_trials": 2},
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}))
    study = run_search(config)
    complete, pruned = study.get_trials()
    assert (complete.state, pruned.state) == (COMPLETE, PRUNED)
    assert sorted(metas(study, complete)) == ["architecture.svg", "masks.png"]
    assert sorted(metas(study, pruned)) == ["architecture.svg"]
    assert "pruned after stage 1" in note(study, pruned)


@pytest.mark.slow
def test_a_failing_artifact_write_keeps_the_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("nas_optuna.objective.train_architecture", fake_trainer([0.5]))

    def disk_full(self: Any, artifact_id: str, body: Any) -> None:
        (Path(self._base_path) / artifact_id).write_bytes(b"half")  # a partial file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(optuna.artifacts.FileSystemArtifactStore, "write", disk_full)
    config = parse_config(tiny_config_dict(tmp_path, study={"n_trials": 1}))
    with caplog.at_level(logging.WARNING, logger="nas_optuna.artifacts"):
        study = run_search(config)
    (trial,) = study.get_trials()
    assert trial.state == COMPLETE
    assert trial.value == pytest.approx(0.51)
    assert trial.user_attrs["reward_stage2"] == pytest.approx(0.51)
    error = trial.user_attrs["artifact_error"]
    assert "No space left on device" in error and "\n" not in error
    assert "architecture.svg" in error and "masks.png" in error
    # No metadata points at a missing file, and the partial files are gone.
    assert optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage) == []
    assert list(Path(study.user_attrs["artifact_dir"]).iterdir()) == []
    assert trial.user_attrs["genotype"] in note(study, trial)  # the note is in the storage
    assert any("No space left" in r.getMessage() for r in caplog.records)


def _upload_in_order(order: str) -> Any:
    """An ``upload_artifact`` stand-in that writes the file and records its metadata in
    ``order``: Optuna 5.0 recorded first, 5.1 writes first; the cleanup must not care."""

    def upload(*, artifact_store: Any, file_path: str, study_or_trial: Any, storage: Any,
               mimetype: str | None = None, encoding: str | None = None) -> str:
        artifact_id = str(uuid.uuid4())
        meta = json.dumps({"artifact_id": artifact_id, "filename": Path(file_path).name,
                           "mimetype": mimetype, "encoding": encoding})
        steps = [lambda: storage.set_trial_system_attr(
                     study_or_trial._trial_id, "artifacts:" + artifact_id, meta),
                 lambda: _write(artifact_store, artifact_id, file_path)]
        for step in steps if order == "metadata first" else steps[::-1]:
            step()
        return artifact_id

    return upload


def _write(store: Any, artifact_id: str, file_path: str) -> None:
    with open(file_path, "rb") as body:
        store.write(artifact_id, body)


def _upload_diagram(trial: optuna.Trial, folder: Path) -> list[str]:
    """Stores one trial's architecture diagram alone (no preview, no training)."""
    space = get_space("template")
    return upload_trial_artifacts(trial, folder, ArtifactsConfig(masks=0), space=space,
                                  arch=space.random_architecture(0), outcome="complete")


@pytest.mark.parametrize("order", ["metadata first", "file first"])
def test_a_failed_write_leaves_nothing_whatever_the_upload_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    monkeypatch.setattr(optuna.artifacts, "upload_artifact", _upload_in_order(order))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    folder = tmp_path / "artifacts"
    (folder / "earlier").parent.mkdir()
    (folder / "earlier").write_bytes(b"an earlier trial's file")

    def disk_full(self: Any, artifact_id: str, body: Any) -> None:
        (Path(self._base_path) / artifact_id).write_bytes(b"half")  # a partial file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(optuna.artifacts.FileSystemArtifactStore, "write", disk_full)
    trial = study.ask()
    assert _upload_diagram(trial, folder) == []
    assert "No space left on device" in trial.user_attrs["artifact_error"]
    frozen = study.get_trials()[0]
    assert optuna.artifacts.get_all_artifact_meta(frozen, storage=study._storage) == []
    assert sorted(p.name for p in folder.iterdir()) == ["earlier"]


@pytest.mark.parametrize("order", ["metadata first", "file first"])
def test_a_failed_metadata_write_removes_the_written_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """The file is in the store but its entry cannot be recorded (the database is failing):
    the file goes, so no orphan is left that nothing lists."""
    monkeypatch.setattr(optuna.artifacts, "upload_artifact", _upload_in_order(order))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    folder = tmp_path / "artifacts"
    trial = study.ask()
    real = type(study._storage).set_trial_system_attr

    def failing(self: Any, trial_id: int, key: str, value: Any) -> None:
        if key.startswith("artifacts:"):
            raise RuntimeError("database is locked")
        real(self, trial_id, key, value)

    monkeypatch.setattr(type(study._storage), "set_trial_system_attr", failing)
    assert _upload_diagram(trial, folder) == []
    assert "database is locked" in trial.user_attrs["artifact_error"]
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("order", ["metadata first", "file first"])
def test_a_good_upload_records_its_file_whatever_the_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    monkeypatch.setattr(optuna.artifacts, "upload_artifact", _upload_in_order(order))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    (artifact_id,) = _upload_diagram(trial, tmp_path / "artifacts")
    (meta,) = optuna.artifacts.get_all_artifact_meta(study.get_trials()[0],
                                                     storage=study._storage)
    assert meta.artifact_id == artifact_id and meta.filename.endswith("architecture.svg")
    assert (tmp_path / "artifacts" / artifact_id).read_bytes().startswith(b"<svg")


@pytest.mark.slow
def test_an_unwritable_artifact_folder_keeps_the_trial(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nas_optuna.objective.train_architecture", fake_trainer([0.5]))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifact folder should be")
    config = parse_config(tiny_config_dict(tmp_path, study={"n_trials": 1},
                                           artifacts={"dir": str(blocker / "artifacts")}))
    (trial,) = run_search(config).get_trials()
    assert trial.state == COMPLETE
    assert "Error" in trial.user_attrs["artifact_error"]


@pytest.mark.slow
def test_disabled_artifacts_store_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nas_optuna.objective.train_architecture", fake_trainer([0.5]))
    config = parse_config(tiny_config_dict(tmp_path, study={"n_trials": 1},
                                           artifacts={"enabled": False}))
    study = run_search(config)
    (trial,) = study.get_trials()
    assert "artifact_dir" not in study.user_attrs
    assert optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage) == []
    assert not (tmp_path / "study.db-artifacts").exists()


def test_mask_preview_layout_palette_and_ignored_pixels() -> None:
    images = torch.zeros(2, 3, 4, 6)
    truth = torch.tensor([[0, 1, 2, 255, 3, 3]] * 4).expand(2, 4, 6)
    prediction = torch.full((2, 4, 6), 2)
    png = mask_preview_png(images, truth, prediction, num_classes=4, mean=(0, 0, 0),
                           std=(1, 1, 1))
    preview = Image.open(io.BytesIO(png))
    cell_h, cell_w = preview_cell_size(4, 6)
    assert preview.format == "PNG" and preview.size == (3 * cell_w, 2 * cell_h)
    pixels = np.asarray(preview.convert("RGB"))
    scale = cell_w // 6
    palette = class_palette(4)
    assert (pixels[0, 0] == 0).all()  # the image column: zeros stay black
    truth_row = pixels[0, cell_w:2 * cell_w:scale]
    assert [tuple(c) for c in truth_row] == [tuple(palette[0]), tuple(palette[1]),
                                             tuple(palette[2]), IGNORE_COLOUR,
                                             tuple(palette[3]), tuple(palette[3])]
    assert (pixels[:, 2 * cell_w:] == palette[2]).all()


def test_class_palette_is_fixed_distinct_and_avoids_the_ignore_colour() -> None:
    palette = class_palette(40)
    colours = {tuple(c) for c in palette}
    assert len(colours) == 40 and IGNORE_COLOUR not in colours
    assert (class_palette(4) == palette[:4]).all()


def test_preview_cells_stay_between_128_and_512_pixels() -> None:
    assert preview_cell_size(32, 48) == (96, 144)
    assert preview_cell_size(256, 512) == (256, 512)
    assert preview_cell_size(1024, 2048) == (256, 512)


def test_default_artifact_dir_is_next_to_the_file_else_in_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_artifact_dir("sqlite:///runs/x.db") == tmp_path / "runs" / "x.db-artifacts"
    assert default_artifact_dir(f"sqlite:///{tmp_path}/y.db?timeout=5") == \
        tmp_path / "y.db-artifacts"
    assert default_artifact_dir("journal:///run.log") == tmp_path / "run.log-artifacts"
    cache = Path.home() / ".cache" / "nas-optuna" / "artifacts"
    remote = default_artifact_dir("postgresql://alice:s3cret@db.example:5432/nas")
    assert remote.parent == cache and "s3cret" not in str(remote) and "alice" not in str(remote)
    assert remote.name.startswith("postgresql_db.example_5432_nas-")
    assert default_artifact_dir("sqlite:///:memory:").parent == cache


@pytest.mark.parametrize(
    ("artifacts", "message"),
    [
        ({"masks": -1}, "[artifacts] masks must be between 0 and 64"),
        ({"masks": 100}, "[artifacts] masks must be between 0 and 64"),
        ({"masks": "4"}, "[artifacts] masks must be an int"),
        ({"weights": "yes"}, "[artifacts] weights must be a bool"),
        ({"enabled": 1}, "[artifacts] enabled must be a bool"),
        ({"dir": ""}, "[artifacts] dir must not be empty"),
        ({"dir": 3}, "[artifacts] dir must be a str"),
        ({"colour": True}, "unknown key 'colour' in [artifacts]"),
    ],
)
def test_bad_artifacts_values_raise_one_line_config_errors(artifacts: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"artifacts": artifacts}, source="s.toml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_artifacts_defaults() -> None:
    settings = parse_config({}).artifacts
    assert (settings.enabled, settings.dir, settings.diagram, settings.masks,
            settings.weights) == (True, None, True, 4, False)
