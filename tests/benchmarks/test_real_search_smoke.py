"""Smoke test of ``benchmarks/real_search.py``: tiny searches, export, retraining, report."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import optuna
import pytest

from tests.conftest import tiny_config_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real(import_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return import_benchmark("real_search")


def _toml(raw: dict) -> str:
    return "\n".join(f"[{section}]\n" + "\n".join(f"{k} = {json.dumps(v)}"
                                                  for k, v in values.items())
                     for section, values in raw.items()) + "\n"


def test_tiny_searches_export_retrain_and_report(real, tmp_path) -> None:
    raw = tiny_config_dict(tmp_path, study={"n_trials": 2})
    raw["pruner"] = {"name": "none"}
    config = tmp_path / "tiny.toml"
    config.write_text(_toml(raw))
    storage = f"sqlite:///{tmp_path / 'real.db'}"
    assert real.main(["run", "--trials", "2", "--rounds", "2", "--samplers", "random", "tpe",
                      "--storage", storage, "--config", str(config), "--threads", "1",
                      "--quiet"]) == 0
    trials_csv = tmp_path / "trials.csv"
    assert real.main(["export", "--storage", storage, "--trials-csv", str(trials_csv)]) == 0
    rows = list(csv.DictReader(trials_csv.open()))
    assert sorted((r["study"], r["number"]) for r in rows) == [
        ("real_random_s0", "0"), ("real_random_s0", "1"), ("real_tpe_s0", "0"),
        ("real_tpe_s0", "1")]
    results = tmp_path / "retrain.jsonl"
    common = ["--trials-csv", str(trials_csv), "--results", str(results), "--epochs", "1",
              "--seeds", "0", "--config", str(config)]
    assert real.main(["retrain", *common, "--threads", "1"]) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    # TPE's first trials are the random study's (same seed): each architecture once.
    assert len(records) == len({json.dumps(r["params"], sort_keys=True) for r in records})
    assert all(r["epochs"] == 1 and 0.0 <= r["score"] <= 1.0 for r in records)
    assert real.main(["retrain", *common]) == 0  # resumed: nothing new
    assert len(results.read_text().splitlines()) == len(records)
    out = tmp_path / "r.json"
    assert real.main(["report", *common, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert set(summary["studies"]) == {"real_random_s0", "real_tpe_s0"}
    assert all(m["long"] is not None for g in summary["groups"].values() for m in g)
    # A later export from a storage without these studies (their database gone) keeps them.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="real_random_s1", storage=other)
    trial = study.ask()
    trial.suggest_int("n", 0, 1)
    study.tell(trial, 0.5)
    assert real.main(["export", "--storage", other, "--trials-csv", str(trials_csv)]) == 0
    again = list(csv.DictReader(trials_csv.open()))
    assert again[:len(rows)] == rows and again[-1]["study"] == "real_random_s1"


def test_mann_whitney_and_effect_size(real) -> None:
    clear = real.mann_whitney([0.9, 0.8, 0.85], [0.1, 0.2, 0.3])
    assert clear["effect_size"] == 1.0 and clear["p_value"] < 0.06
    none = real.mann_whitney([0.1, 0.2, 0.3], [0.9, 0.8, 0.85])
    assert none["effect_size"] == -1.0 and none["p_value"] > 0.9


def test_selections_are_each_studys_top_and_the_random_studys_first(real) -> None:
    def row(study, number, value, state="COMPLETE"):
        return {"study": study, "number": number, "value": value, "state": state,
                "params": {"n": number}}

    rows = [row("real_random_s0", i, v) for i, v in enumerate([0.5, 0.9, 0.7, 0.8])]
    rows += [row("real_tpe_s0", 0, 0.95), row("real_tpe_s0", 1, None, "PRUNED"),
             row("real_tpe_s0", 2, 0.6)]
    chosen = real.selections(rows, top_k=2)
    picked = {(c["group"], c["number"]) for c in chosen}
    assert picked == {("real_random_s0:top", 1), ("real_random_s0:top", 3),
                      ("real_random_s0:random", 0), ("real_random_s0:random", 1),
                      ("real_tpe_s0:top", 0), ("real_tpe_s0:top", 2)}
    assert {c["number"] for c in real.selections(rows, top_k=2, max_trials=2)
            if c["group"] == "real_random_s0:top"} == {0, 1}


def test_the_committed_retraining_covers_every_selection_at_two_seeds(real) -> None:
    rows = real._trials(None, ROOT / "benchmarks" / "data" / "real_search_trials.csv")
    records = real._read(ROOT / "benchmarks" / "data" / "real_search_retrain.jsonl")
    summary = real.summarise(real.selections(rows), records, rows)
    assert {name: s["trials"] for name, s in summary["studies"].items()} == {
        "real_ppo_s0": 80, "real_random_s0": 80, "real_tpe_s0": 80}
    assert all(m["seeds"] == 2 for g in summary["groups"].values() for m in g)
