"""Smoke test of ``benchmarks/samplers.py``: tiny runs on a surrogate, resumed, reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from nas_optuna.surrogate import fit_surrogate, save_surrogate
from tests.surrogate.conftest import make_known_study


@pytest.fixture(scope="module")
def samplers(import_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return import_benchmark("samplers")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    surrogate = fit_surrogate(make_known_study(80), noise_std=0.005, models=["kernel_ridge"])
    return save_surrogate(surrogate, tmp_path_factory.mktemp("model") / "m.npz")


def test_runs_resume_and_the_report_is_computed_from_them(samplers, model, tmp_path) -> None:
    results = tmp_path / "runs.jsonl"
    argv = ["run", "--model", str(model), "--results", str(results), "--seeds", "3",
            "--trials", "30", "--samplers", "random", "tpe", "ppo"]
    assert samplers.main(argv) == 0
    first = results.read_text().splitlines()
    assert samplers.main(argv) == 0  # nothing left to run
    assert results.read_text().splitlines() == first
    records = [json.loads(line) for line in first]
    assert sorted((r["sampler"], r["seed"]) for r in records) == sorted(
        (s, seed) for s in ("random", "tpe", "ppo") for seed in range(3))
    assert all(len(r["values"]) == len(r["predicted"]) == 30 and len(r["top"]) <= 10
               for r in records)

    outputs = {"markdown": tmp_path / "s.md", "json": tmp_path / "s.json",
               "figure": tmp_path / "s.html"}
    assert samplers.main(["report", "--model", str(model), "--results", str(results),
                          "--real", str(tmp_path / "no-real-run.json"),
                          *[f"--{k}={v}" for k, v in outputs.items()]]) == 0
    report = json.loads(outputs["json"].read_text())
    assert set(report) >= {"machine", "surrogate", "samplers", "real"}
    assert report["real"] is None  # no real confirmation given
    assert set(report["surrogate"]) >= {"cv_spearman", "cv_r2", "noise_ceiling", "model"}
    rows = {r["name"]: r for r in report["samplers"]}
    assert set(rows) == {"random", "tpe", "ppo"}
    f_star = report["f_star"]
    for r in records:  # f* is at least every prediction any run saw
        assert f_star >= max(r["predicted"]) - 1e-12
    for name, row in rows.items():
        runs = [r for r in records if r["sampler"] == name]
        regrets = sorted(f_star - r["predicted"][r["values"].index(max(r["values"]))]
                         for r in runs)
        assert row["final_regret"] == pytest.approx(regrets[1])  # the median of 3
        assert row["last100_mean"] == pytest.approx(
            sum(sum(r["values"][-100:]) / 30 for r in runs) / 3)
        random_best = sorted(max(r["predicted"]) for r in records
                             if r["sampler"] == "random")[1]  # the median of 3 seeds
        reach = sorted(next((i + 1 for i, _ in enumerate(r["predicted"])
                             if max(r["predicted"][:i + 1]) >= random_best), 31)
                       for r in runs)
        assert row["trials_to_random_best"] == reach[1]
    assert "| ppo | 3 x 30 |" in outputs["markdown"].read_text()
    html = outputs["figure"].read_text()
    assert "<html>" in html and all(f'"name":"{name}"' in html for name in rows)


def test_f_star_improves_on_the_runs_by_single_changes(samplers, model) -> None:
    from nas_optuna.surrogate import load_surrogate

    surrogate = load_surrogate(model)
    start = [t.params for t in make_known_study(5, seed=4).trials]
    records = [{"top": [[float(v), p] for v, p in zip(surrogate.predict(start), start)]}]
    value, params = samplers.best_architecture(surrogate, records, starts=5)
    assert value == pytest.approx(float(surrogate.predict([params])[0]))
    assert value >= max(surrogate.predict(start))


def test_the_real_confirmation_is_summarised_from_its_report(samplers) -> None:
    def group(*longs):
        return [{"number": i, "search_value": 0.5, "long": v, "seeds": 2}
                for i, v in enumerate(longs)]

    real = {"epochs": 32, "groups": {"real_tpe_s0:top": group(0.7, 0.8),
                                     "real_random_s0:top": group(0.6, None),
                                     "real_random_s0:random": group(0.4, 0.5)},
            "studies": {"real_tpe_s0": {"best": 0.69, "trials": 80},
                        "real_random_s0": {"best": 0.66, "trials": 80}},
            "tests": {"searched_s0 (tpe + ppo top, pooled)": {"p_value": 0.04,
                                                             "effect_size": 1.0}}}
    brief = samplers.real_summary(real)
    assert (brief["p_value"], brief["effect_size"]) == (0.04, 1.0)
    assert brief["top5_long"] == pytest.approx({"tpe": 0.75, "random": 0.6})
    assert brief["random5_long"] == pytest.approx(0.45)
    assert brief["best_search_reward"] == {"tpe": 0.69, "random": 0.66}
    assert brief["trials"] == 80
    records = [{"sampler": "tpe", "values": [0.1, 0.5, 0.9]},
               {"sampler": "tpe", "values": [0.3, 0.2, 0.8]},
               {"sampler": "tpe", "values": [0.7, 0.1, 0.1]}]
    assert samplers.best_observed_at(records, 2) == {"tpe": 0.5}  # median of 0.5, 0.3, 0.7
