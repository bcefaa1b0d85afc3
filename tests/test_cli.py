"""The nas-optuna command line: describe, sample, search, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from nas_optuna.cli import main
from search_spaces.template import ARCH0_GENOTYPE, ARCH1_GENOTYPE
from tests.conftest import tiny_config_dict


def _write_toml(path: Path, raw: dict) -> Path:
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("genotype", "generated"), [(ARCH0_GENOTYPE, 223_571), (ARCH1_GENOTYPE, 211_659)]
)
def test_describe_released_template_architectures(capsys, genotype, generated) -> None:
    code = main(
        [
            "describe",
            "--space",
            "template",
            "--genotype",
            json.dumps(genotype),
            "--num-classes",
            "19",
            "--profile",
            "final",
            "--input-size",
            "64",
            "128",
            "--json",
        ]
    )
    record = json.loads(capsys.readouterr().out)
    assert code == 0
    assert record["params_generated"] == generated
    assert record["params_total"] == generated + 55_488  # smp's MobileNet-v2 prefix
    assert record["output_stride"] == 4
    assert record["macs"] > 0
    assert record["genotype"] == genotype


def test_describe_readable_output(capsys) -> None:
    assert (
        main(
            [
                "describe",
                "--space",
                "template",
                "--genotype",
                json.dumps(ARCH0_GENOTYPE),
                "--profile",
                "final",
                "--input-size",
                "64",
                "64",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "223,571 generated" in out
    assert "T0=[max_pool_3x3,sep_conv_3x3,cat]" in out


def test_sample_prints_one_record_per_architecture(capsys) -> None:
    assert (
        main(
            [
                "sample",
                "--space",
                "template",
                "-n",
                "3",
                "--seed",
                "1",
                "--input-size",
                "64",
                "64",
                "--num-classes",
                "5",
                "--json",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    for record in records:
        assert "error" not in record
        assert record["output_shape"][:2] == [2, 5]
        assert record["params_generated"] > 0 and record["macs"] > 0


@pytest.mark.slow
def test_search_then_describe_a_stored_trial(tmp_path: Path, capsys) -> None:
    config = _write_toml(tmp_path / "tiny.toml", tiny_config_dict(tmp_path, study={"n_trials": 2}))
    assert main(["search", str(config), "--sampler", "tpe", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "best architecture:" in out
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 2
    assert (
        main(
            [
                "describe",
                "--space",
                "template",
                "--storage",
                storage,
                "--study-name",
                "tiny",
                "--trial",
                "1",
                "--input-size",
                "32",
                "48",
                "--json",
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["params_generated"] == study.trials[1].user_attrs["params_generated"]
    assert record["num_classes"] == 4


def _dataset_tree(root: Path, *, mismatch: bool = False, bad_label: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(
            root / "images" / f"{i:03d}.png"
        )
        shape = (30, 48) if mismatch and i == 5 else (32, 48)
        mask = rng.integers(0, 3, shape, dtype=np.uint8)
        if bad_label and i == 7:
            mask[0, 0] = 9
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.mark.parametrize(
    ("sections", "argv_extra", "message"),
    [
        ({"space": {"name": "nasnet"}}, [], "unknown search space 'nasnet'"),
        ({}, ["--sampler", "bohb"], "unknown sampler 'bohb'"),
        ({}, ["--pruner", "asha"], "unknown pruner 'asha'"),
        ({"train": {"batch_size": -1}}, [], "batch_size must be >= 1"),
        (
            {"data": {"name": "folder", "root": "/nonexistent/data", "num_classes": 3}},
            [],
            "not found",
        ),
    ],
)
def test_bad_input_one_line_error_and_nonzero_exit(
    tmp_path: Path, capsys, sections, argv_extra, message
) -> None:
    raw = tiny_config_dict(tmp_path)
    raw["data"] = sections.pop("data", raw["data"])
    for name, values in sections.items():
        raw[name].update(values)
    config = _write_toml(tmp_path / "bad.toml", raw)
    assert main(["search", str(config), *argv_extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas-optuna: error:") and message in err
    assert "\n" not in err
    assert not (tmp_path / "study.db").exists() or not optuna.get_all_study_summaries(
        f"sqlite:///{tmp_path / 'study.db'}"
    )


@pytest.mark.parametrize(("kind", "message"), [("mismatch", "size"), ("bad_label", "9")])
def test_dataset_errors_stop_before_any_trial(tmp_path: Path, capsys, kind, message) -> None:
    root = _dataset_tree(tmp_path / "data", **{kind: True})
    raw = tiny_config_dict(tmp_path)
    raw["data"] = {"name": "folder", "root": str(root), "num_classes": 3}
    config = _write_toml(tmp_path / "c.toml", raw)
    assert main(["search", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas-optuna: error:") and message in err and "\n" not in err
    assert not (tmp_path / "study.db").exists() or not optuna.get_all_study_summaries(
        f"sqlite:///{tmp_path / 'study.db'}"
    )


def test_malformed_config_and_bad_arguments(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    assert main(["search", str(bad)]) == 2
    assert "malformed TOML" in capsys.readouterr().err
    assert main(["describe", "--space", "template", "--genotype", "[[1,2"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["describe", "--space", "template", "--genotype", "[[], [[7, 0, 0, 0, 0]]]"]) == 2
    assert "nas-optuna: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["search"])
    assert info.value.code == 2


@pytest.mark.slow
def test_ppo_search_runs_from_the_cli_and_resumes(tmp_path: Path, capsys) -> None:
    raw = tiny_config_dict(tmp_path, study={"n_trials": 2}, sampler={"name": "ppo"})
    config = _write_toml(tmp_path / "ppo.toml", raw)
    assert main(["search", str(config)]) == 0
    assert main(["search", str(config), "--n-trials", "3"]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    # Every trial carries the behaviour log-probabilities the resumed sampler learns from.
    assert all("ppo:log_probs" in t.system_attrs for t in study.trials)
    assert "ppo:init_seed" in study._storage.get_study_system_attrs(study._study_id)


def test_spaces_lists_every_registered_space(capsys) -> None:
    from search_spaces import SPACES, get_space

    assert main(["spaces", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in records] == SPACES.names()
    for record in records:
        assert record["size"] == get_space(record["name"]).size()
        assert {"search", "final"} <= set(record["profiles"]) and record["summary"]


@pytest.mark.parametrize(
    ("genotype", "generated"),
    [
        ("ARCH0_GENOTYPE", 817_109),
        ("ARCH1_GENOTYPE", 997_333),
        ("ARCH2_GENOTYPE", 1_040_341),
    ],
)
def test_describe_released_auxcell_architectures(capsys, genotype: str, generated: int) -> None:
    from search_spaces import auxcell

    code = main(["describe", "--space", "auxcell", "--profile", "final", "--num-classes", "21",
                 "--genotype", json.dumps(getattr(auxcell, genotype)), "--input-size", "64", "64",
                 "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["params_generated"] == generated


@pytest.mark.parametrize("space", ["template", "auxcell", "cas", "rspnet", "smp"])
def test_every_space_is_searchable_with_tpe_random_and_ppo(
    tmp_path: Path, capsys, space: str
) -> None:
    # Smaller than the other tiny searches (one stage, 24 images): this test is about every
    # (space, sampler) pair completing trials, 15 searches in all.
    raw = tiny_config_dict(tmp_path, space={"name": space, "profile": "search"},
                           data={"num_images": 24}, train={"stage2_epochs": 0})
    config = _write_toml(tmp_path / f"{space}.toml", raw)
    for sampler in ("tpe", "random", "ppo"):
        code = main(["search", str(config), "--sampler", sampler, "--n-trials", "2",
                     "--study-name", f"{space}-{sampler}", "--quiet"])
        assert code == 0, capsys.readouterr().err
        study = optuna.load_study(study_name=f"{space}-{sampler}",
                                  storage=raw["study"]["storage"])
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        assert study.user_attrs["space"]["name"] == space


def test_a_ctrl_c_inside_a_finaliser_reaches_the_main_thread_silently(capsys) -> None:
    """SIGINT during a weakref callback (seen in SQLAlchemy's registries) must neither
    print "Exception ignored in ..." nor be lost: it is raised again in the main thread."""
    import signal
    import time

    from nas_optuna.cli import interrupt_safe_unraisablehook

    passed_on: list[object] = []
    hook = interrupt_safe_unraisablehook(passed_on.append)

    class Unraisable:
        exc_type = KeyboardInterrupt
        exc_value = KeyboardInterrupt()
        exc_traceback = None
        err_msg = None
        object = None

    # Python's own SIGINT handler, as in a fresh process: another test in this worker may
    # have left the search's graceful-stop handler installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            hook(Unraisable())
            for _ in range(500):  # the interrupt arrives at the next bytecode boundary
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous)
    other = type("Other", (), {"exc_value": ValueError("x")})()
    hook(other)
    assert passed_on == [other]  # anything else goes to the previous hook
    assert capsys.readouterr().err == ""
