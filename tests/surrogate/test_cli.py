"""``nas-optuna surrogate fit | predict | search`` from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from nas_optuna.cli import main
from tests.surrogate.conftest import make_known_study


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trained") / "trained.db"
    make_known_study(60, storage=f"sqlite:///{path}", name="trained")
    return path


@pytest.fixture
def trained(trained_db: Path, tmp_path: Path) -> str:
    """A fresh copy of a SQLite study of 60 trained (known-reward) architectures."""
    shutil.copyfile(trained_db, tmp_path / "trained.db")
    return f"sqlite:///{tmp_path / 'trained.db'}"


def _fit(storage: str, output: Path, *extra: str) -> int:
    return main(["surrogate", "fit", "--storage", storage, "--study-name", "trained",
                 "-o", str(output), "--models", "kernel_ridge", *extra])


def test_fit_then_predict_then_search_then_report(trained, tmp_path, capsys) -> None:
    model = tmp_path / "m.npz"
    assert _fit(trained, model, "--noise-std", "0.01", "--json", "--models", "random_forest",
                "kernel_ridge") == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["trials"] == 60 and fitted["noise_std"] == 0.01
    assert [s["model"] for s in fitted["scores"]] == [fitted["model"]] + [
        m for m in ("random_forest", "kernel_ridge") if m != fitted["model"]]
    assert model.is_file()

    assert main(["surrogate", "predict", "--model", str(model), "--storage", trained,
                 "--study-name", "trained", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    stored = optuna.load_study(study_name="trained", storage=trained).trials
    assert [r["number"] for r in rows] == [t.number for t in stored]
    assert [r["value"] for r in rows] == [t.value for t in stored]
    assert all(set(r) == {"number", "value", "predicted"} for r in rows)

    search = ["surrogate", "search", "--model", str(model), "--storage", trained,
              "--study-name", "tpe_on_surrogate", "--sampler", "tpe", "--quiet"]
    assert main([*search, "--n-trials", "8"]) == 0
    assert main([*search, "--n-trials", "12"]) == 0  # resumes to 12 in all
    study = optuna.load_study(study_name="tpe_on_surrogate", storage=trained)
    assert len(study.trials) == 12 and study.user_attrs["sampler"] == "tpe"
    assert study.user_attrs["surrogate"]["source_study"] == "trained"
    capsys.readouterr()

    report = tmp_path / "report.html"
    assert main(["report", "--storage", trained, "--study-name", "tpe_on_surrogate",
                 "-o", str(report), "--bootstrap", "50"]) == 0
    assert report.stat().st_size > 1000


@pytest.mark.parametrize(("args", "message"), [
    (["surrogate", "predict", "--model", "missing.npz", "--storage", "STORAGE",
      "--study-name", "trained"], "does not exist"),
    (["surrogate", "fit", "--storage", "STORAGE", "--study-name", "trained", "-o", "OUT",
      "--models", "svm"], "unknown surrogate model 'svm'"),
    (["surrogate", "fit", "--storage", "STORAGE", "--study-name", "trained", "-o", "OUT",
      "--folds", "1"], "--folds must be >= 2"),
    (["surrogate", "fit", "--storage", "STORAGE", "--study-name", "nope", "-o", "OUT"],
     "nope"),
    (["surrogate", "search", "--model", "MODEL", "--storage", "STORAGE", "--study-name",
      "x", "--sampler", "annealing"], "unknown sampler 'annealing'"),
    (["surrogate", "search", "--model", "MODEL", "--storage", "STORAGE", "--study-name",
      "x", "--n-trials", "0"], "--n-trials must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys, args, message) -> None:
    model = tmp_path / "m.npz"
    assert _fit(trained, model) == 0
    capsys.readouterr()
    before = optuna.load_study(study_name="trained", storage=trained).trials
    args = [{"STORAGE": trained, "OUT": str(tmp_path / "o.npz"), "MODEL": str(model)}.get(a, a)
            for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert optuna.load_study(study_name="trained", storage=trained).trials == before
    assert not (tmp_path / "o.npz").exists()


def test_a_study_of_another_space_or_surrogate_is_refused(trained, tmp_path, capsys) -> None:
    model = tmp_path / "m.npz"
    assert _fit(trained, model) == 0
    other = optuna.create_study(study_name="cas_study", storage=trained)
    other.set_user_attr("space", {"name": "cas"})
    assert main(["surrogate", "predict", "--model", str(model), "--storage", trained,
                 "--study-name", "cas_study"]) == 2
    assert "searched space 'cas'" in capsys.readouterr().err
    stranger = optuna.create_study(study_name="s", storage=trained, direction="maximize")
    stranger.set_user_attr("surrogate", {"source_study": "elsewhere"})
    assert main(["surrogate", "search", "--model", str(model), "--storage", trained,
                 "--study-name", "s", "--n-trials", "2", "--quiet"]) == 2
    assert "run on another surrogate" in capsys.readouterr().err
    assert len(stranger.trials) == 0
