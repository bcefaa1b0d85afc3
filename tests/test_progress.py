"""The search's progress: a bar with done/target, best value and ETA on a terminal."""

from __future__ import annotations

import optuna

from nas_optuna.cli import _progress
from nas_optuna.cli._progress import SearchProgress
from nas_optuna.config import parse_config
from tests.conftest import tiny_config_dict
from tests.test_cli import _write_toml


def _run(progress: SearchProgress, values: list[float], target: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    progress.start(0, target)
    study.optimize(lambda t: values[t.number], n_trials=len(values), callbacks=[progress])
    progress.close()
    return study


def _line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    return f"trial {trial.number} value {trial.values[0]}"


def test_on_a_terminal_a_bar_counts_trials_and_shows_the_best(capsys) -> None:
    _run(SearchProgress(_line, bar=True), [0.2, 0.9, 0.5], target=4)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["trial 0 value 0.2", "trial 1 value 0.9", "trial 2 value 0.5"]
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/4" in final and "best 0.9000" in final and "<" in final  # tqdm's ETA


def test_elsewhere_only_the_lines_and_quiet_prints_nothing(capsys) -> None:
    _run(SearchProgress(_line, bar=False), [0.2, 0.9], target=2)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["trial 0 value 0.2", "trial 1 value 0.9"] and err == ""
    _run(SearchProgress(_line, quiet=True, bar=True), [0.2], target=1)
    assert capsys.readouterr() == ("", "")


def test_the_search_command_draws_the_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    from nas_optuna.cli import main

    monkeypatch.setattr(_progress, "_is_terminal", lambda stream: True)
    raw = tiny_config_dict(tmp_path, study={"n_trials": 2}, train={"stage2_epochs": 0})
    parse_config(raw)  # a valid config
    path = _write_toml(tmp_path / "tiny.toml", raw)
    assert main(["search", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "trial   0" in out and "trial   1" in out
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "search" in final and "2/2" in final and "best" in final
    assert main(["search", str(path), "--n-trials", "3", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "trial   2" not in out and "2/3" not in err and "3/3" not in err


def test_a_pareto_study_shows_its_front_size(capsys) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    progress = SearchProgress(_line, bar=True)
    progress.start(0, 3)
    study.optimize(lambda t: (t.number, t.number), n_trials=3, callbacks=[progress])
    progress.close()
    assert "3 on the Pareto front" in capsys.readouterr().err
