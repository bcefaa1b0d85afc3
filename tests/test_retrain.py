"""Retraining: selection, the longer schedule, the linked study, resuming and bad input."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from nas_optuna.cli import main
from nas_optuna.config import TrainConfig, parse_config
from nas_optuna.exceptions import ConfigError, TrialFailed
from nas_optuna.retrain import (
    Selection,
    parse_selection,
    retrain_study,
    select_trials,
    study_config,
)
from nas_optuna.study import prepare_data, run_search
from nas_optuna.training import trainer
from nas_optuna.training.trainer import poly_lr_factor, train_final
from search_spaces import get_space
from tests.conftest import tiny_config_dict

CPU = torch.device("cpu")
COMPLETE = optuna.trial.TrialState.COMPLETE


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A real 4-trial tiny search; tests copy its database before changing anything."""
    folder = tmp_path_factory.mktemp("search")
    config = parse_config(tiny_config_dict(folder, study={"n_trials": 4}))
    run_search(config)
    return folder / "study.db", config


@pytest.fixture
def storage(searched: tuple[Path, Any], tmp_path: Path) -> str:
    database = tmp_path / "copy.db"
    shutil.copy(searched[0], database)
    return f"sqlite:///{database}"


def _snapshot(storage: str) -> list[Any]:
    """Everything stored: each study's attrs and its trials' states, values and attrs."""
    state = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        state.append((summary.study_name, study.user_attrs,
                      [(t.number, t.state, t.values, t.user_attrs) for t in study.trials]))
    return sorted(state, key=lambda s: s[0])


def _retrain(storage: str, *extra: str) -> int:
    return main(["retrain", "--storage", storage, "--study-name", "tiny",
                 "--select", "top:1,random:1", "--epochs", "1", *extra])


# --- the command on a real search ------------------------------------------------------

@pytest.mark.slow
def test_retrain_links_top_and_random_trials_and_resumes(storage: str, capsys) -> None:
    assert _retrain(storage) == 0
    out = capsys.readouterr().out
    assert "1 top and 1 random" in out and "2 added (0 failed)" in out

    source = optuna.load_study(study_name="tiny", storage=storage)
    linked = optuna.load_study(study_name="tiny-retrain", storage=storage)
    assert linked.directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert linked.metric_names == ["reward"]
    assert linked.user_attrs["retrain_of"] == "tiny"
    assert linked.user_attrs["epochs"] == 1
    assert linked.user_attrs["selection"] == [{"select": "top:1,random:1", "seed": 0}]
    assert linked.user_attrs["schedule"]["optimizer"] == "sgd"

    trials = linked.get_trials(states=(COMPLETE,))
    assert len(trials) == 2 == len(linked.trials)
    best = max(source.get_trials(states=(COMPLETE,)), key=lambda t: t.value)
    by_part = {t.user_attrs["selection"]: t for t in trials}
    assert set(by_part) == {"top", "random"}
    assert by_part["top"].user_attrs["source_trial"] == best.number
    assert by_part["random"].user_attrs["source_trial"] != best.number
    for trial in trials:
        attrs = trial.user_attrs
        original = source.trials[attrs["source_trial"]]
        assert isinstance(attrs["source_trial"], int)
        assert attrs["source_study"] == "tiny"
        assert trial.params == original.params
        assert trial.distributions == original.distributions
        assert attrs["search_reward"] == pytest.approx(original.value)
        assert attrs["search_metric"] == "reward"
        assert 0.0 <= trial.value <= 1.0
        assert trial.value == attrs["reward"] == attrs["reward_stage2"]
        for key in ("miou", "macc", "fwiou"):
            assert 0.0 <= attrs[key] <= 1.0
        for key in ("params_total", "params_generated", "macs", "genotype", "output_stride"):
            assert attrs[key] == original.user_attrs[key]
        assert attrs["epochs"] == 1 and attrs["train_seconds"] > 0

    before = _snapshot(storage)
    assert _retrain(storage) == 0  # the same command again: nothing new
    assert "0 added (0 failed), 2 skipped" in capsys.readouterr().out
    assert _snapshot(storage) == before


@pytest.mark.slow
def test_a_failed_architecture_is_stored_as_fail_and_retried(
    storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nas_optuna.retrain as retrain

    calls: list[int] = []

    def failing(network, data, config, **kwargs):  # noqa: ANN001
        calls.append(kwargs["seed"])
        if len(calls) == 1:
            raise TrialFailed("nan_loss", "non-finite loss")
        return train_final(network, data, config, **kwargs)

    monkeypatch.setattr(retrain, "train_final", failing)
    done = retrain_study(storage, "tiny", "top:2", epochs=1)
    assert [t.state for t in done.trials] == [optuna.trial.TrialState.FAIL, COMPLETE]
    failed = done.trials[0]
    assert failed.user_attrs["fail_reason"] == "nan_loss: non-finite loss"
    assert failed.user_attrs["source_study"] == "tiny" and failed.value is None
    assert failed.params == done.selected[0].trial.params

    monkeypatch.undo()
    again = retrain_study(storage, "tiny", "top:2", epochs=1)
    assert again.skipped == [done.selected[1].trial.number]
    assert [t.user_attrs["source_trial"] for t in again.trials] == [
        done.selected[0].trial.number]
    assert again.trials[0].state == COMPLETE
    assert len(again.study.trials) == 3  # the FAIL stays as a record


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_retrained_weights_are_saved_and_exported_from_the_linked_study(
    storage: str, tmp_path: Path, capsys
) -> None:
    done = retrain_study(storage, "tiny", "top:1", epochs=1, weights_dir=tmp_path / "w")
    trial = done.trials[0]
    path = Path(trial.user_attrs["weights"])
    assert path.parent == tmp_path / "w" and path.exists()
    assert not list((tmp_path / "w").glob("*.tmp"))
    space = get_space("template", profile="search")
    network = space.build(space.from_params(trial.params), 4)
    network.load_state_dict(torch.load(path, weights_only=True))

    # The linked study describes its space, so export reads it alone, with those weights.
    source = optuna.load_study(study_name="tiny", storage=storage)
    for key in ("space", "num_classes", "dataset"):
        assert done.study.user_attrs[key] == source.user_attrs[key]
    exported = tmp_path / "retrained.pt"
    assert main(["export", "--storage", storage, "--study-name", "tiny-retrain", "--trial",
                 "0", "--format", "torchscript", "-o", str(exported), "--input-size", "32",
                 "48"]) == 0
    assert "the trial's retrained weights" in capsys.readouterr().out
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        expected = network.eval()(images)
        assert torch.allclose(torch.jit.load(str(exported))(images), expected, atol=1e-5)


def _other_study(storage: str, name: str, **attrs: Any) -> None:
    study = optuna.create_study(study_name=name, storage=storage)
    for key, value in attrs.items():
        study.set_user_attr(key, value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "prepare", "message"),
    [
        (["--study-name", "nope"], None, "no study 'nope'"),
        (["--select", "best:3"], None, "expected top:K and/or random:K"),
        (["--select", "top:x"], None, "expected top:K and/or random:K"),
        (["--select", "top:0"], None, "top needs K >= 1"),
        (["--select", "top:1,top:2"], None, "top is given twice"),
        (["--select", ""], None, "expected top:K and/or random:K"),
        (["--epochs", "0"], None, "--epochs must be >= 1"),
        (["--device", "tpu"], None, "--device must be auto, cpu, cuda or cuda:N"),
        (["--retrain-study", "tiny"], None, "must not be the source study"),
        (["--retrain-study", "other"], {"name": "other", "retrain_of": "someone"},
         "exists and retrains 'someone', not 'tiny'"),
        (["--retrain-study", "plain"], {"name": "plain"},
         "exists and is not a retraining of 'tiny'"),
        (["--study-name", "empty"], {"name": "empty", "copy_attrs": True},
         "has no COMPLETE trained trial"),
        (["--study-name", "bare"], {"name": "bare"}, "is not a nas-optuna search"),
        (["--study-name", "tiny-r"], {"name": "tiny-r", "retrain_of": "tiny"},
         "is itself a retraining"),
    ],
)
def test_bad_input_one_line_exit_2_and_nothing_stored(
    storage: str, capsys, argv: list[str], prepare: dict[str, Any] | None, message: str
) -> None:
    if prepare is not None:
        prepare = dict(prepare)
        attrs = {}
        if prepare.pop("copy_attrs", False):
            attrs = optuna.load_study(study_name="tiny", storage=storage).user_attrs
        _other_study(storage, prepare.pop("name"), **attrs, **prepare)
    before = _snapshot(storage)
    capsys.readouterr()
    assert _retrain(storage, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas-optuna: error: ")
    assert message in err
    assert _snapshot(storage) == before


@pytest.mark.slow
def test_other_epochs_on_an_existing_linked_study_is_refused(storage: str, capsys) -> None:
    assert _retrain(storage, "--select", "top:1") == 0
    before = _snapshot(storage)
    assert _retrain(storage, "--select", "top:1", "--epochs", "2") == 2
    assert "retrained with 1 epochs, not 2" in capsys.readouterr().err
    assert _snapshot(storage) == before
    # Another selection adds to the same linked study.
    assert _retrain(storage, "--select", "top:2") == 0
    linked = optuna.load_study(study_name="tiny-retrain", storage=storage)
    assert len(linked.trials) == 2
    assert [r["select"] for r in linked.user_attrs["selection"]] == ["top:1", "top:2"]


@pytest.mark.slow
def test_stored_config_rebuilds_the_search_config(searched: tuple[Path, Any],
                                                  storage: str, tmp_path: Path) -> None:
    _, config = searched
    study = optuna.load_study(study_name="tiny", storage=storage)
    rebuilt = study_config(study, storage)
    assert rebuilt.replace(study=config.study, source=config.source) == config
    assert rebuilt.study.storage == storage
    assert study_config(study, storage, device="cpu").train.device == "cpu"
    # A study made before the config was stored falls back to its TOML file.
    toml = tmp_path / "tiny.toml"
    toml.write_text('[space]\nname = "template"\n[data]\nnum_classes = 3\n')
    old = optuna.create_study(study_name="old", storage=storage)
    old.set_user_attr("config_source", str(toml))
    assert study_config(old, storage).data.options["num_classes"] == 3
    old.set_user_attr("config_source", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="gone.toml"):
        study_config(old, storage)


# --- selection ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spec", "expected"),
    [("top:3", Selection(3, 0)), ("random:2", Selection(0, 2)),
     ("top:1,random:4", Selection(1, 4)), (" random:4 , top:1 ", Selection(1, 4))],
)
def test_parse_selection(spec: str, expected: Selection) -> None:
    assert parse_selection(spec) == expected
    assert parse_selection(expected.spec) == expected


def _study(values: list[float | None], *, metrics: list[str] | None = None,
           directions: list[str] | None = None, rejected: set[int] = frozenset()) -> optuna.Study:
    directions = directions or ["maximize"]
    study = optuna.create_study(directions=directions)
    if metrics:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)
    distribution = optuna.distributions.IntDistribution(0, 100)
    for number, value in enumerate(values):
        if value is None:
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              params={"x": number},
                                              distributions={"x": distribution})
        else:
            vals = [value] if len(directions) == 1 else [1.0 - value, value]
            trial = optuna.trial.create_trial(
                values=vals, params={"x": number}, distributions={"x": distribution},
                user_attrs={"rejected": "over budget"} if number in rejected else {})
        study.add_trial(trial)
    return study


def test_top_are_best_first_and_random_excludes_them_deterministically() -> None:
    study = _study([0.1, 0.5, None, 0.9, 0.5, 0.3, 0.7, 0.2, 0.95], rejected={8})
    picked = select_trials(study, Selection(top=3, random=2), seed=7)
    top = [s.trial.number for s in picked if s.part == "top"]
    assert top == [3, 6, 1]  # 8 was rejected, 2 failed; the tie 1/4 goes to trial 1
    drawn = [s.trial.number for s in picked if s.part == "random"]
    assert len(drawn) == 2 and not set(drawn) & {3, 6, 1, 2, 8}
    assert drawn == [s.trial.number for s in select_trials(study, Selection(3, 2), seed=7)
                     if s.part == "random"]
    assert {s.value for s in picked if s.trial.number == 3} == {0.9}
    # K larger than available: everything there is, nothing twice.
    everything = select_trials(study, Selection(top=4, random=50), seed=0)
    assert sorted(s.trial.number for s in everything) == [0, 1, 3, 4, 5, 6, 7]


def test_selection_ranks_by_the_reward_objective_and_direction() -> None:
    study = _study([0.2, 0.8, 0.5], metrics=["latency_ms", "reward"],
                   directions=["minimize", "maximize"])
    assert [s.trial.number for s in select_trials(study, Selection(top=2), 0)] == [1, 2]
    minimised = _study([0.2, 0.8, 0.5], directions=["minimize"])
    assert [s.trial.number for s in select_trials(minimised, Selection(top=1), 0)] == [0]
    with pytest.raises(ConfigError, match="no COMPLETE trained trial"):
        select_trials(_study([None]), Selection(top=1), 0)


# --- the longer schedule -----------------------------------------------------------------

def test_poly_factor_follows_the_papers_rule() -> None:
    assert poly_lr_factor(0, 10) == 1.0
    assert poly_lr_factor(5, 10) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(9, 10) == pytest.approx(0.1**0.9)
    assert poly_lr_factor(10, 10) == 0.0 == poly_lr_factor(12, 10)
    assert poly_lr_factor(3, 4, power=1.0) == pytest.approx(0.25)
    factors = [poly_lr_factor(i, 20) for i in range(20)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
    with pytest.raises(ValueError):
        poly_lr_factor(0, 0)


@pytest.mark.slow
def test_train_final_decays_sgd_per_iteration_and_trains_end_to_end(
    searched: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = searched
    space = get_space("template", profile="search")
    _, data = prepare_data(config, space, CPU)
    torch.manual_seed(0)
    stem = space.build_stem()
    stem.load_state_dict(data.stem_state)
    network = space.build(space.random_architecture(seed=1), data.num_classes, stem=stem)
    stem_before = [p.detach().clone() for p in network.stem.parameters()]

    seen: list[tuple[float, ...]] = []
    original = trainer._step

    def spy(model, inputs, labels, optimisers, config, stage, teacher_logits=None):  # noqa: ANN001
        optimisers = optimisers if isinstance(optimisers, list) else [optimisers]
        assert all(isinstance(o, torch.optim.SGD) for o in optimisers)
        assert optimisers[0].param_groups[0]["momentum"] == 0.9
        seen.append(tuple(g["lr"] for o in optimisers for g in o.param_groups))
        return original(model, inputs, labels, optimisers, config, stage, teacher_logits)

    monkeypatch.setattr(trainer, "_step", spy)
    train_config = TrainConfig(batch_size=8)
    result = train_final(network, data, train_config, epochs=2, device=CPU, lr=0.04,
                         stem_lr=0.01)
    per_epoch = len(data.train_dataset) // 8  # drop_last
    assert len(seen) == 2 * per_epoch
    for iteration, rates in enumerate(seen):
        factor = (1 - iteration / len(seen)) ** 0.9
        assert rates == pytest.approx((0.04 * factor, 0.01 * factor))
    assert set(result.stage_metrics) == {2}
    assert 0.0 <= result.final_metrics["reward"] <= 1.0
    assert not all(torch.equal(a, b) for a, b in zip(stem_before, network.stem.parameters()))
    with pytest.raises(ValueError, match="epochs"):
        train_final(network, data, train_config, epochs=0, device=CPU)
    assert math.isfinite(result.final_metrics["miou"])
