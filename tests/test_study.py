"""The study runner end to end: plain Optuna studies, resumption, failures, bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas_optuna.config import parse_config
from nas_optuna.exceptions import ConfigError, NasOptunaError, UnknownNameError
from nas_optuna.study import (
    PRUNERS,
    SAMPLERS,
    build_pruner,
    build_sampler,
    build_stage1_rule,
    run_search,
)
from search_spaces import get_space
from tests.conftest import fake_trainer, tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]
DESIGN_USER_ATTRS = {
    "params_total", "params_generated", "macs", "latency_ms", "latency_protocol",
    "reward_stage1", "reward_stage2", "miou", "macc", "fwiou", "output_stride", "genotype",
    "stem_weights",
}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    tmp_path = tmp_path_factory.mktemp("study")
    config = parse_config(tiny_config_dict(tmp_path))
    return tmp_path, run_search(config)


@pytest.mark.slow
def test_search_stores_the_design_user_attrs_on_every_trial(finished_study) -> None:
    _, study = finished_study
    trials = study.get_trials()
    assert len(trials) == 3
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert DESIGN_USER_ATTRS <= set(trial.user_attrs)
        assert 0.0 <= trial.value <= 1.0
        assert trial.value == trial.user_attrs["reward_stage2"]
        assert sorted(trial.intermediate_values) == [1, 2]
        assert trial.user_attrs["params_total"] > trial.user_attrs["params_generated"] > 0
        assert trial.user_attrs["latency_protocol"]["batch"] == 1
        assert trial.user_attrs["stem_weights"] == "warmup"
    assert study.user_attrs["stem_weights"] == "warmup"
    assert study.user_attrs["space"]["name"] == "template"
    assert study.metric_names == ["reward"]


@pytest.mark.slow
def test_trials_rebuild_from_stored_params_alone(finished_study) -> None:
    tmp_path, study = finished_study
    reloaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    space = get_space("template", profile=reloaded.user_attrs["space"]["profile"])
    for trial in reloaded.trials:
        arch = space.from_params(trial.params)
        assert space.describe(arch) == trial.user_attrs["genotype"]
        network = space.build(arch, reloaded.user_attrs["num_classes"])
        assert sum(p.numel() for p in network.decoder.parameters()) == \
            trial.user_attrs["params_generated"]


@pytest.mark.slow
def test_optuna_cli_reads_the_study(finished_study) -> None:
    tmp_path, study = finished_study
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna_cli = [sys.executable, "-c", "import optuna.cli, sys; sys.exit(optuna.cli.main())"]
    studies = subprocess.run([*optuna_cli, "studies", "--storage", storage, "-f", "json"],
                             capture_output=True, text=True, check=True)
    assert json.loads(studies.stdout)[0]["name"] == "tiny"
    trials = subprocess.run([*optuna_cli, "trials", "--storage", storage, "--study-name", "tiny",
                             "-f", "json"], capture_output=True, text=True, check=True)
    assert len(json.loads(trials.stdout)) == 3
    best = subprocess.run([*optuna_cli, "best-trial", "--storage", storage, "--study-name",
                           "tiny", "-f", "json"], capture_output=True, text=True, check=True)
    assert json.loads(best.stdout)["number"] == study.best_trial.number


def test_a_study_made_by_optuna_create_study_is_searched_and_named(
        tmp_path: Path, monkeypatch) -> None:
    """The README's workflow: `optuna create-study`, then `nas-optuna search` fills it."""
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.4, 0.5]))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna_cli = [sys.executable, "-c", "import optuna.cli, sys; sys.exit(optuna.cli.main())"]
    subprocess.run([*optuna_cli, "create-study", "--storage", storage, "--study-name", "tiny",
                    "--direction", "maximize"], capture_output=True, text=True, check=True)
    assert optuna.load_study(study_name="tiny", storage=storage).metric_names is None
    study = run_search(parse_config(tiny_config_dict(tmp_path, study={"n_trials": 2})))
    assert study.metric_names == ["reward"]  # optuna-dashboard labels the objective
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_rerunning_resumes_and_runs_only_missing_trials(finished_study) -> None:
    tmp_path, _ = finished_study
    config = parse_config(tiny_config_dict(tmp_path, study={"n_trials": 4}))
    study = run_search(config)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    again = run_search(config)
    assert len(again.trials) == 4


@pytest.mark.slow
def test_a_failing_trial_does_not_kill_the_study(tmp_path: Path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module

    calls = {"n": 0}
    real_train = objective_module.train_architecture

    def train_or_fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            from nas_optuna.exceptions import TrialFailed
            raise TrialFailed("nan_loss", "non-finite loss nan in stage 1")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train_architecture", train_or_fail)
    study = run_search(parse_config(tiny_config_dict(tmp_path, study={"n_trials": 2})))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert study.trials[0].user_attrs["fail_reason"].startswith("nan_loss")
    # Costs were stored before training, so even a failed trial says what it was.
    assert "params_generated" in study.trials[0].user_attrs


def test_median_pruner_acts_at_the_stage_boundary(tmp_path: Path, monkeypatch) -> None:
    # The trainer is replaced by one reporting fixed stage rewards, so the pruning glue is
    # tested exactly; real training reports through the same callback (tests above).
    from nas_optuna import objective as objective_module

    monkeypatch.setattr(objective_module, "train_architecture",
                        fake_trainer([0.50, 0.30, 0.60, 0.55, 0.20, 0.70]))
    raw = tiny_config_dict(tmp_path, study={"n_trials": 6},
                           pruner={"name": "median", "n_startup_trials": 1})
    study = run_search(parse_config(raw))
    states = [t.state.name for t in study.trials]
    # Median of the completed trials' stage-1 rewards: 0.30 < 0.50 -> pruned; 0.60 kept;
    # 0.55 = median(0.50, 0.60) kept; 0.20 pruned; 0.70 kept.
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert list(trial.intermediate_values) == [1]
            assert "reward_stage2" not in trial.user_attrs
            assert trial.user_attrs["reward_stage1"] == trial.intermediate_values[1]
        else:
            assert sorted(trial.intermediate_values) == [1, 2]
            assert trial.value == pytest.approx(trial.intermediate_values[1] + 0.01)


@pytest.mark.slow
def test_seeded_searches_are_reproducible(tmp_path: Path) -> None:
    results = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        study = run_search(parse_config(tiny_config_dict(folder, study={"n_trials": 2},
                                                         sampler={"name": "tpe"})))
        results.append([(t.params, t.value) for t in study.trials])
    assert results[0] == results[1]


@pytest.mark.slow
def test_multi_objective_study_returns_reward_and_cost(tmp_path: Path) -> None:
    raw = tiny_config_dict(tmp_path, study={"n_trials": 2, "directions": ["maximize", "minimize"],
                                            "metrics": ["reward", "params_generated"]})
    study = run_search(parse_config(raw))
    for trial in study.trials:
        assert trial.values[1] == trial.user_attrs["params_generated"]
    assert study.metric_names == ["reward", "params_generated"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_bad_input_leaves_an_existing_study_untouched(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    study.set_metric_names(["reward"])
    study.enqueue_trial({"x": 1})
    before = [(t.number, t.state) for t in study.trials]
    cases = [
        ({"sampler": {"name": "annealing"}}, "unknown sampler 'annealing'"),
        ({"pruner": {"name": "hyperband-ish"}}, "unknown pruner"),
        ({"space": {"name": "darts"}}, "unknown search space 'darts'"),
        ({"sampler": {"name": "tpe", "n_startup": 3}}, "has no option 'n_startup'"),
        ({"study": {"directions": ["minimize"]}}, "exists with directions"),
        ({"data": {"name": "folder", "root": str(tmp_path / "nope"), "num_classes": 3}},
         "not found"),
    ]
    for sections, message in cases:
        data = sections.pop("data", None)
        raw = tiny_config_dict(tmp_path, **sections)
        if data is not None:
            raw["data"] = data
        with pytest.raises(NasOptunaError) as info:
            run_search(parse_config(raw))
        assert message in str(info.value)
        reloaded = optuna.load_study(study_name="tiny", storage=storage)
        assert [(t.number, t.state) for t in reloaded.trials] == before


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_registered_sampler_builds(name: str) -> None:
    sampler = build_sampler(name, {}, seed=1)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", PRUNERS.names())
def test_every_registered_pruner_builds(name: str) -> None:
    assert isinstance(build_pruner(name, {}), optuna.pruners.BasePruner)


def test_unknown_sampler_and_pruner_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_sampler("cmaes-ish", {}, seed=0)
    assert str(info.value).startswith("unknown sampler 'cmaes-ish'; choose one of: ")
    assert all(name in str(info.value) for name in SAMPLERS.names())
    with pytest.raises(ConfigError, match="n_warmup"):
        build_pruner("median", {"n_warmup": 1})


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_builds_its_sampler_and_pruner_and_runs_a_trial(
        path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped config's sampler, pruner, space, costs and objective work together.

    Its data and training are swapped for a tiny synthetic set and a stand-in trainer
    (real training of the quickstart budget is tests/benchmarks/test_fidelity_smoke.py's).
    """
    from nas_optuna import objective as objective_module
    from nas_optuna.config import DataConfig, load_config
    from nas_optuna.training import TrainResult

    def train(network, data, config, *, reporter, **kwargs):  # noqa: ANN001
        metrics = {"miou": 0.5, "macc": 0.5, "fwiou": 0.5, "reward": 0.5}
        result = TrainResult(stage_metrics={1: metrics})
        if config.stage1_epochs and not reporter(1, metrics):
            result.stopped_after = 1
        elif config.stage2_epochs:
            result.stage_metrics[2] = metrics
            reporter(2, metrics)
        return result

    monkeypatch.setattr(objective_module, "train_architecture", train)
    config = load_config(path)
    sampler = build_sampler(config.sampler.name, dict(config.sampler.options), 0)
    if len(config.study.directions) == 1:
        pruner = build_pruner(config.pruner.name, dict(config.pruner.options), 0,
                              stage1_step=config.train.stage1_validations)
    else:
        pruner = build_stage1_rule(config.pruner.name, dict(config.pruner.options), 0)
    assert pruner is not None
    config = config.replace(
        study=dataclasses.replace(config.study, storage=f"sqlite:///{tmp_path / 's.db'}",
                                  n_trials=1),
        data=DataConfig(name="synthetic", options={"num_images": 24, "image_size": [32, 48],
                                                   "num_classes": 4}),
        train=dataclasses.replace(config.train, batch_size=8, warmup_epochs=1, device="cpu",
                                  stem_weights="warmup", cache_dir=str(tmp_path / "cache")),
        cost=dataclasses.replace(config.cost, latency_repeats=2, latency_warmup=1,
                                 input_size=None),
        artifacts=dataclasses.replace(config.artifacts, enabled=False),
        teacher=None,
    )
    study = run_search(config)
    assert study.sampler.__class__ is sampler.__class__
    if len(config.study.directions) == 1:
        assert study.pruner.__class__ is pruner.__class__
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert len(trial.values) == len(config.study.metrics)
