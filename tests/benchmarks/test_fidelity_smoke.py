"""Smoke test of ``benchmarks/fidelity.py``: a tiny run, resumed, then the report.

Nothing is compared with a target (a shared CI machine cannot time anything); the test
checks what a user relies on: every planned evaluation lands in the results file once,
a second run does no work, a changed architecture size is refused, and the report's
figures are the ones computed from the stored lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TINY = """
[study]
name = "tiny"
storage = "sqlite:///{folder}/study.db"
seed = 0
[space]
name = "template"
profile = "search"
[data]
name = "synthetic"
num_images = 16
image_size = [32, 48]
num_classes = 4
[train]
stage1_epochs = 1
stage2_epochs = 1
batch_size = 8
warmup_epochs = 1
stem_weights = "warmup"
flip_views = false
"""


@pytest.fixture(scope="module")
def fidelity(import_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return import_benchmark("fidelity")


@pytest.fixture(scope="module")
def ran(fidelity: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("fidelity")
    config = folder / "tiny.toml"
    config.write_text(TINY.format(folder=folder))
    results = folder / "runs.jsonl"
    argv = ["--results", str(results), "--only", "template", "--cache-dir",
            str(folder / "cache"), "--config", f"template={config}"]
    assert fidelity.main(["run", *argv, "--archs", "4", "--quick", "--threads", "1"]) == 0
    first = fidelity.read_results(results)
    assert fidelity.main(["run", *argv, "--archs", "4", "--quick", "--threads", "1"]) == 0
    outputs = {"markdown": folder / "f.md", "json": folder / "f.json",
               "figure": folder / "f.html"}
    assert fidelity.main(["report", *argv, "--quick",
                          *[f"--{k}={v}" for k, v in outputs.items()]]) == 0
    return {"folder": folder, "argv": argv, "first": first, "results": results,
            "outputs": outputs}


def test_every_planned_evaluation_is_stored_once_and_a_rerun_does_nothing(
        fidelity: ModuleType, ran: dict) -> None:
    records = fidelity.read_results(ran["results"])
    assert records == ran["first"]  # the second run found everything done
    keys = [(r["rung"], r["index"], r["seed"]) for r in records]
    assert len(keys) == len(set(keys))
    by_rung = {}
    for rung, index, seed in keys:
        by_rung.setdefault(rung, set()).add((index, seed))
    assert by_rung["search"] == {(i, s) for i in range(4) for s in (0, 1, 2)}
    assert by_rung["reference"] == {(i, s) for i in range(4) for s in (0, 1)}
    assert by_rung["reference_long"] == {(i, s) for i in range(4) for s in (0, 1)}
    for rung in ("params", "macs", "s1_1", "half_images", "half_resolution"):
        assert by_rung[rung] == {(i, 0) for i in range(4)}
    search = [r for r in records if r["rung"] == "search"]
    assert all(set(r["stages"]) == {"1", "2"} for r in search)
    assert all(0.0 <= r["score"] <= 1.0 for r in search)


def test_the_report_recomputes_its_figures_from_the_stored_lines(
        fidelity: ModuleType, ran: dict) -> None:
    from analysis import rank_correlation, seed_noise

    summary = json.loads(ran["outputs"]["json"].read_text())
    records = fidelity.read_results(ran["results"])

    def scores(rung: str, seed: int) -> list[float]:
        found = {r["index"]: r["score"] for r in records if r["rung"] == rung and r["seed"] == seed}
        return [found[i] for i in range(4)]

    # The default reference is the longer retrain schedule, two seeds averaged.
    assert summary["reference"] == "reference_long"
    reference = np.mean([scores("reference_long", 0), scores("reference_long", 1)], axis=0)
    rows = {r["name"]: r for r in summary["rungs"]}
    assert rows["s1_1"]["n_pairs"] == 4
    assert rows["s1_1"]["spearman"] == pytest.approx(
        rank_correlation(scores("s1_1", 0), reference).spearman)
    shorter = np.mean([scores("reference", 0), scores("reference", 1)], axis=0)
    assert rows["s1_1"]["spearman_vs_reference"] == pytest.approx(
        rank_correlation(scores("s1_1", 0), shorter).spearman)
    # Two search seeds averaged: the mean score, at the two evaluations' seconds.
    two = np.mean([scores("search", 0), scores("search", 1)], axis=0)
    assert rows["search_2seeds"]["spearman"] == pytest.approx(
        rank_correlation(two, reference).spearman)
    expected = seed_noise(np.array([scores("search", s) for s in (0, 1, 2)]).T)
    assert summary["noise"]["icc1"] == pytest.approx(expected.icc1)
    assert summary["noise"]["within_std"] == pytest.approx(expected.within_std)
    assert summary["noise"]["by_space"]["template"]["icc1"] == pytest.approx(expected.icc1)
    assert rows["search"]["icc1_seeds"] == pytest.approx(expected.icc1)
    assert summary["search_rung"] == "search"
    # Each target's verdict follows from the figures beside it.
    verdicts = {t["target"]: t["met"] for t in summary["targets"]}
    assert verdicts["ICC(1) >= 0.9 at the search budget (pooled)"] == (expected.icc1 >= 0.9)
    search = rows["search"]
    assert verdicts["Spearman above the parameter-count baseline's by >= 0.1 (pooled)"] == (
        search["spearman"] >= rows["params"]["spearman"] + 0.1)
    assert "Spearman" in ran["outputs"]["markdown"].read_text()
    assert "plotly" in ran["outputs"]["figure"].read_text()


def test_a_changed_architecture_size_is_refused(fidelity: ModuleType, ran: dict) -> None:
    tampered = ran["folder"] / "tampered.jsonl"
    lines = ran["results"].read_text().splitlines()
    records = [json.loads(line) for line in lines]
    keep = [r for r in records if not (r["rung"] == "s1_1" and r["index"] == 0)]
    for record in keep:
        if record["index"] == 0:
            record["params_generated"] += 1
    tampered.write_text("".join(json.dumps(r) + "\n" for r in keep))
    argv = [a if a != str(ran["results"]) else str(tampered) for a in ran["argv"]]
    with pytest.raises(SystemExit, match="generated parameters"):
        fidelity.main(["run", *argv, "--archs", "4", "--quick", "--threads", "1"])


def test_a_run_waits_while_the_pause_file_exists(fidelity: ModuleType, ran: dict) -> None:
    import threading
    import time

    results = ran["folder"] / "paused.jsonl"
    lines = ran["results"].read_text().splitlines()
    results.write_text("\n".join(lines[:-1]) + "\n")  # one evaluation left to do
    pause = ran["folder"] / "pause"
    pause.touch()
    argv = [a if a != str(ran["results"]) else str(results) for a in ran["argv"]]
    worker = threading.Thread(target=fidelity.main, args=(
        ["run", *argv, "--archs", "4", "--quick", "--threads", "1", "--pause-file", str(pause)],))
    worker.start()
    time.sleep(3.0)
    assert len(results.read_text().splitlines()) == len(lines) - 1  # still waiting
    pause.unlink()
    worker.join(120)
    assert not worker.is_alive()
    assert len(results.read_text().splitlines()) == len(lines)


def test_the_shipped_template_default_is_the_rung_the_report_names(fidelity: ModuleType) -> None:
    """studies/quickstart.toml trains what the benchmark's rung ``s1_6`` trained on the
    frozen pre-calibration budget: the doc's figures for the default are that rung's."""
    import dataclasses

    from nas_optuna.config import load_config

    root = fidelity.ROOT
    base = load_config(root / fidelity.CONFIGS["template"])
    shipped = load_config(root / "studies" / "quickstart.toml")
    rung = next(r for r in fidelity.rungs(base) if r.name == fidelity.DEFAULT_RUNGS["template"])
    trained = dataclasses.replace(base.train, **rung.train,
                                  stage1_validations=shipped.train.stage1_validations)
    assert trained == shipped.train
    assert (base.space, base.data) == (shipped.space, shipped.data)


def test_a_default_of_one_rung_per_space_is_ranked_as_one_row(fidelity: ModuleType) -> None:
    """``--search-rung template=a --search-rung auxcell=b``: the "default" row takes each
    space's architectures from its own rung, and the targets judge that row."""
    from analysis import rank_correlation

    rng = np.random.default_rng(0)
    reference = {(space, i): float(rng.uniform()) for space in ("template", "auxcell")
                 for i in range(6)}
    records = []
    for (space, index), value in reference.items():
        for seed in (0, 1):
            records.append({"space": space, "index": index, "rung": "reference_long",
                            "seed": seed, "score": value, "seconds": 10.0})
        for rung, noise in (("a", 0.05), ("b", 0.5)):
            records.append({"space": space, "index": index, "rung": rung, "seed": 0,
                            "score": value + float(rng.normal(0, noise)), "seconds": 1.0})
    summary = fidelity.summarise(records, search_rung={"template": "a", "auxcell": "b"},
                                 n_bootstrap=200)
    rows = {r["name"]: r for r in summary["rungs"]}
    assert summary["search_rung"] == "default" and rows["default"]["n_pairs"] == 12
    by_key = {(r["space"], r["index"]): r["score"] for r in records
              if (r["rung"], r["space"]) in {("a", "template"), ("b", "auxcell")}}
    keys = sorted(reference)
    assert rows["default"]["spearman"] == pytest.approx(rank_correlation(
        [by_key[k] for k in keys], [reference[k] for k in keys]).spearman)
    assert rows["default"]["spearman_template"] == pytest.approx(rows["a"]["spearman_template"])
    assert rows["default"]["spearman_auxcell"] == pytest.approx(rows["b"]["spearman_auxcell"])
    assert any(t["target"].endswith("(template)") for t in summary["targets"])
