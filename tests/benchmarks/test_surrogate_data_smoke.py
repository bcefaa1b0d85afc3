"""benchmarks/surrogate_data.py: the data-collection study and its exported table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from nas_optuna.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_data_study_is_the_calibrated_default_unbiased_and_unpruned(
        import_benchmark) -> None:
    module = import_benchmark("surrogate_data")
    config = module.data_config("sqlite:///x.db", n_trials=300)
    quickstart = load_config(ROOT / "studies" / "quickstart.toml")
    assert (config.sampler.name, config.pruner.name) == ("random", "none")
    assert config.train == quickstart.train and config.data == quickstart.data
    assert config.space == quickstart.space and config.proxies == quickstart.proxies
    assert config.study.n_trials == 300 and not config.artifacts.enabled


def test_export_writes_one_row_per_complete_trial(import_benchmark, tmp_path: Path) -> None:
    module = import_benchmark("surrogate_data")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name=module.STUDY_NAME, storage=storage,
                                direction="maximize")
    for value, state in ((0.6, "COMPLETE"), (None, "FAIL"), (0.4, "COMPLETE")):
        trial = study.ask()
        trial.suggest_categorical("op", ["a", "b"])
        trial.set_user_attr("params_generated", 1000)
        study.tell(trial, value, state=optuna.trial.TrialState[state])
    assert module.export(storage, tmp_path / "t.csv") == 2
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [float(r["value"]) for r in rows] == [0.6, 0.4]
    assert json.loads(rows[0]["params"]).keys() == {"op"}
    assert rows[0]["params_generated"] == "1000" and rows[0]["proxy_snip"] == ""


def test_the_committed_table_holds_300_trained_architectures() -> None:
    rows = list(csv.DictReader((ROOT / "benchmarks" / "data" / "surrogate_template.csv").open()))
    assert len(rows) >= 300
    assert len({r["genotype"] for r in rows}) == len(rows)  # distinct architectures
    assert all(0.0 < float(r["value"]) < 1.0 and r["proxy_snip"] for r in rows)


def test_surrogate_cv_scores_both_fits_from_a_table(import_benchmark, tmp_path: Path) -> None:
    module = import_benchmark("surrogate_cv")
    lines = (ROOT / "benchmarks" / "data" / "surrogate_template.csv").read_text().splitlines()
    table = tmp_path / "t.csv"
    table.write_text("\n".join(lines[:31]) + "\n")  # 30 trained architectures
    out = tmp_path / "cv.json"
    assert module.main(["--table", str(table), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 30 and result["seed_noise_std"] == pytest.approx(0.0126, abs=1e-4)
    params, derived = result["fits"]["params"], result["fits"]["params+derived"]
    assert derived["features"] == params["features"] + len(derived["derived"])
    assert "output_stride" in derived["derived"] and params["derived"] == []
    for fit in (params, derived):
        assert fit["chosen"] == max(fit["models"], key=lambda m: fit["models"][m]["cv_spearman"])
