"""Every bad input and fault of issue 7 (part 4), driven through the real ``nas-optuna`` CLI.

A user-facing error ends the command with exactly one stderr line ``nas-optuna: error: ...``
naming the problem and exit code 2, and leaves a study already in the storage exactly as
it was (trials: numbers, states, values, params, user and system attrs, intermediate
values; the study's attrs; no new study, table or file). A fault inside one trial (NaN
loss, out of memory, a failed artifact write) ends that trial FAIL with ``fail_reason``
naming the cause (or COMPLETE with ``artifact_error``), later trials still run, the command
exits 0 and no earlier trial changes. docs/faults.md is the table of them.

Every test starts from a copy of one small study with two finished trials (made once per
module with a fake trainer), so the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import pytest
import torch

from nas_optuna import objective as objective_module
from nas_optuna.cli import main
from nas_optuna.config import load_config
from nas_optuna.storage import open_storage
from nas_optuna.study import run_search
from nas_optuna.training import trainer as trainer_module
from tests.conftest import fake_trainer, tiny_config_dict
from tests.distributed.conftest import (
    postgres_url,  # noqa: F401 - the fixture, reused
    write_toml,
)
from tests.test_cli import _dataset_tree

ERROR = "nas-optuna: error: "
COMPLETE, FAIL = "COMPLETE", "FAIL"


# --- the study that must survive every fault ---------------------------------------------
def _raw(folder: Path, cache: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """The tiny test config (tests/conftest.py) with a stem-feature cache shared by the module."""
    raw = tiny_config_dict(folder, study={"n_trials": 2})
    raw["train"]["cache_dir"] = str(cache)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def snapshot(url: str) -> dict[str, Any]:
    """Everything a storage holds, study by study, for before/after comparisons."""
    storage = open_storage(url, heartbeat_interval=None)
    held = {}
    for summary in storage.get_all_studies():
        study_id = summary._study_id
        held[summary.study_name] = {
            "directions": [d.name for d in summary.directions],
            "user_attrs": storage.get_study_user_attrs(study_id),
            "system_attrs": storage.get_study_system_attrs(study_id),
            "trials": [_trial(t) for t in storage.get_all_trials(study_id)],
        }
    if hasattr(storage, "engine"):
        storage.engine.dispose()  # no idle connection keeps a test database alive
    return held


def _trial(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state.name, trial.values, trial.params, trial.user_attrs,
            trial.system_attrs, trial.intermediate_values, trial.datetime_complete)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study 'tiny' with two COMPLETE trials (fake trainer), and its stem-feature cache."""
    folder = tmp_path_factory.mktemp("faults-template")
    raw = _raw(folder, folder / "cache")
    config = write_toml(folder / "study.toml", raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(objective_module, "train_architecture", fake_trainer([0.5, 0.4]))
        study = run_search(load_config(config))
    assert [t.state.name for t in study.trials] == [COMPLETE, COMPLETE]
    return folder


@dataclass
class Existing:
    """A copy of the template study in this test's folder, and its config."""

    folder: Path
    raw: dict[str, Any]
    config: Path
    storage: str
    before: dict[str, Any]

    def write(self, name: str = "fault.toml", **sections: dict[str, Any]) -> Path:
        """The study's config with some sections changed (``data`` is replaced whole)."""
        raw = json.loads(json.dumps(self.raw))
        for section, values in sections.items():
            if section == "data" and "name" in values:
                raw["data"] = dict(values)
            else:
                raw.setdefault(section, {}).update(values)
        return write_toml(self.folder / name, raw)

    def unchanged(self) -> None:
        assert snapshot(self.storage) == self.before

    def earlier_trials_unchanged(self) -> list[optuna.trial.FrozenTrial]:
        """The trials now; the template's two are exactly as they were."""
        study = optuna.load_study(study_name="tiny", storage=self.storage)
        trials = study.get_trials(deepcopy=False)
        assert [_trial(t) for t in trials[:2]] == self.before["tiny"]["trials"]
        return trials


@pytest.fixture
def existing(template: Path, tmp_path: Path) -> Existing:
    shutil.copy(template / "study.db", tmp_path / "study.db")
    raw = _raw(tmp_path, template / "cache")
    storage = raw["study"]["storage"]
    return Existing(tmp_path, raw, write_toml(tmp_path / "study.toml", raw), storage,
                    snapshot(storage))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, which must be exactly one ``nas-optuna: error:`` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(ERROR), lines
    return lines[0]


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *messages: str) -> str:
    """Runs the CLI, expecting exit code 2 and one error line holding every message."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    assert code == 2
    line = one_error_line(capsys)
    for message in messages:
        assert message in line, line
    return line


# --- 1. unreachable or malformed storage ----------------------------------------------------
@pytest.mark.parametrize(("url", "messages"), [
    ("postgresql://postgres@127.0.0.1:1/x",
     ("cannot open storage postgresql://postgres@127.0.0.1:1/x", "Connection refused")),
    ("postgresql://postgres:secret@127.0.0.1:1/x",
     ("cannot open storage postgresql://postgres:***@127.0.0.1:1/x",)),
    ("postgresql://postgres@127.0.0.1:notaport/x", ("cannot open storage", "notaport")),
    ("nas-optuna.db", ("storage 'nas-optuna.db' is not a URL; use one of",)),
    ("nosuchdb://host/x", ("cannot open storage nosuchdb://host/x",)),
    ("sqlite:////nonexistent-dir/x.db", ("folder /nonexistent-dir does not exist",)),
    ("journal://x.log", ("must look like journal:///FILE",)),
    ("redis://127.0.0.1:1/0", ("cannot open storage redis://127.0.0.1:1/0",)),
], ids=["closed-port", "password-masked", "bad-port", "not-a-url", "unknown-scheme",
        "missing-folder", "bad-journal", "redis-closed-port"])
def test_unreachable_or_malformed_storage(existing: Existing, capsys, url: str,
                                          messages: tuple[str, ...]) -> None:
    line = fails(capsys, ["search", str(existing.config), "--storage", url], *messages)
    assert "secret" not in line
    existing.unchanged()
    assert not Path("/nonexistent-dir").exists()


# --- 2. read-only storage ---------------------------------------------------------------
@pytest.mark.parametrize("study_name", ["tiny", "fresh"])
def test_read_only_sqlite(existing: Existing, capsys, study_name: str) -> None:
    database = existing.folder / "study.db"
    read_only = f"sqlite:///file:{database}?mode=ro&uri=true"
    fails(capsys, ["search", str(existing.config), "--storage", read_only,
                   "--study-name", study_name, "--n-trials", "3"],
          f"cannot write to storage {read_only}", "attempt to write a readonly database")
    existing.unchanged()
    assert not any(Path.cwd().glob("file:*"))  # nothing made beside a mis-read path


def test_read_only_sqlite_file_that_does_not_exist(existing: Existing, capsys) -> None:
    missing = existing.folder / "new.db"
    fails(capsys, ["search", str(existing.config), "--storage",
                   f"sqlite:///file:{missing}?mode=ro&uri=true"],
          "cannot open storage", "unable to open database file")
    assert not missing.exists()
    existing.unchanged()


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[Callable[..., str]]:  # noqa: F811
    """URLs of a fresh schema of the test database (read-only on request); dropped after."""
    import psycopg2

    schema = f"faults_{uuid.uuid4().hex[:8]}"
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(plain) as connection, connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')

    def url(read_only: bool = False) -> str:
        options = f"-c search_path={schema}"
        if read_only:
            options += " -c default_transaction_read_only=on"
        return f"{postgres_url}{'&' if '?' in postgres_url else '?'}options={quote(options)}"

    url.schema = schema  # type: ignore[attr-defined]
    yield url
    with psycopg2.connect(plain) as connection, connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _schema_objects(postgres_url: str, schema: str) -> int:  # noqa: F811
    import psycopg2

    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(plain) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace WHERE n.nspname = %s", (schema,))
        relations = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pg_type t JOIN pg_namespace n "
                       "ON n.oid = t.typnamespace WHERE n.nspname = %s", (schema,))
        return relations + cursor.fetchone()[0]


def test_read_only_postgresql(existing: Existing, capsys, postgres_url: str,  # noqa: F811
                              postgres_schema: Callable[..., str]) -> None:
    schema = postgres_schema.schema  # type: ignore[attr-defined]
    # A fresh database that refuses writes: not even Optuna's tables are left behind.
    fails(capsys, ["search", str(existing.config), "--storage", postgres_schema(True)],
          "cannot open storage", "read-only transaction")
    assert _schema_objects(postgres_url, schema) == 0
    # A database holding a study: neither it nor a new study can be written.
    writable = postgres_schema()
    config = existing.write("pg.toml", study={"storage": writable}, artifacts={"enabled": False})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(objective_module, "train_architecture", fake_trainer([0.5, 0.4]))
        assert main(["search", str(config), "--quiet"]) == 0
    capsys.readouterr()
    before = snapshot(writable)
    assert [t[1] for t in before["tiny"]["trials"]] == [COMPLETE, COMPLETE]
    for name in ("tiny", "fresh"):
        fails(capsys, ["search", str(config), "--storage", postgres_schema(True),
                       "--study-name", name, "--n-trials", "3"],
              "cannot write to storage", "read-only transaction")
        assert snapshot(writable) == before


# --- 3. a study stored with other directions or metrics -----------------------------------
@pytest.mark.parametrize(("study", "message"), [
    ({"directions": ["minimize"]},
     "study 'tiny' exists with directions ['maximize'], but the config asks for ['minimize']"),
    ({"directions": ["maximize", "minimize"], "metrics": ["reward", "params_generated"]},
     "study 'tiny' exists with directions ['maximize'], but the config asks for "
     "['maximize', 'minimize']"),
    ({"metrics": ["miou"]},
     "study 'tiny' exists with metrics ['reward'], but the config asks for ['miou']"),
], ids=["direction", "objectives", "metric"])
def test_study_stored_with_other_directions_or_metrics(existing: Existing, capsys,
                                                       study: dict, message: str) -> None:
    fails(capsys, ["search", str(existing.write(study=study))], message)
    existing.unchanged()


@pytest.mark.parametrize(("sections", "keys"), [
    ({"train": {"stage1_epochs": 2}}, "train.stage1_epochs"),
    ({"data": {"num_images": 30}}, "data.num_images"),
    ({"space": {"profile": "final"}}, "space.profile"),
    ({"train": {"batch_size": 4}, "cost": {"budget": {"params_generated": 10**6}}},
     "cost.budget, train.batch_size"),
], ids=["epochs", "dataset", "profile", "two-keys"])
def test_resuming_with_a_reward_changing_config_is_refused(existing: Existing, capsys,
                                                           sections: dict, keys: str) -> None:
    if "data" in sections:
        sections["data"] = {**existing.raw["data"], **sections["data"]}
    fails(capsys, ["search", str(existing.write(**sections)), "--n-trials", "3"],
          f"study 'tiny' holds trials run with another config: {keys} differ",
          "--allow-config-change")
    existing.unchanged()


def test_harmless_changes_resume_and_the_flag_records_a_forced_change(
        existing: Existing, capsys, monkeypatch) -> None:
    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.3]))
    harmless = existing.write(sampler={"name": "tpe"}, artifacts={"masks": 0},
                              study={"n_trials": 3})
    assert main(["search", str(harmless), "--quiet"]) == 0
    study = optuna.load_study(study_name="tiny", storage=existing.storage)
    assert len(study.trials) == 3 and "config_changes" not in study.user_attrs
    changed = existing.write(train={"stage1_epochs": 2}, study={"n_trials": 4})
    assert main(["search", str(changed), "--quiet", "--allow-config-change"]) == 0
    study = optuna.load_study(study_name="tiny", storage=existing.storage)
    assert len(study.trials) == 4
    assert study.user_attrs["config_changes"] == [{"keys": ["train.stage1_epochs"],
                                                   "trials_before": 3}]
    assert study.user_attrs["config"]["train"]["stage1_epochs"] == 2


# --- 4. a config naming something that does not exist -------------------------------------
@pytest.mark.parametrize(("sections", "argv", "message"), [
    ({"space": {"name": "nasnet"}}, [], "unknown search space 'nasnet'; choose one of: "),
    ({"space": {"auxiliary": True}}, [],
     "search space 'template' has no option 'auxiliary'; accepted: profile"),
    ({"space": {"profile": "huge"}}, [], "unknown profile 'huge' for space 'template'"),
    ({"sampler": {"name": "bohb"}}, [], "unknown sampler 'bohb'; choose one of: "),
    ({}, ["--sampler", "cmaes"], "unknown sampler 'cmaes'"),
    ({"sampler": {"name": "tpe", "n_startup": 3}}, [],
     "sampler 'tpe' has no option 'n_startup'; accepted: "),
    ({"sampler": {"n_startup_trials": 3}}, [],
     "sampler 'random' has no option 'n_startup_trials'; accepted: none"),
    ({"pruner": {"name": "asha"}}, [], "unknown pruner 'asha'; choose one of: "),
    ({}, ["--pruner", "asha"], "unknown pruner 'asha'"),
    ({"pruner": {"name": "median", "warmup": 1}}, [], "pruner 'median' has no option 'warmup'"),
    ({"study": {"nam": "x"}}, [], "unknown key 'nam' in [study]"),
    ({"train": {"epochs": 3}}, [], "unknown key 'epochs' in [train]"),
    ({"data": {"shuffle": True}}, [], "dataset 'synthetic' has no option 'shuffle'"),
    ({"data": {"name": "kitti"}}, [], "unknown dataset 'kitti'"),
    ({"cost": {"budget": {"flops": 1}}}, [], "[cost] budget names unknown cost 'flops'"),
    ({"study": {"metrics": ["accuracy"]}}, [], "[study] unknown metric 'accuracy'"),
    ({"search": {"n_trials": 3}}, [], "unknown table [search]"),
    ({}, ["--n-trials", "0"], "--n-trials must be >= 1, got 0"),
    ({}, ["--n-workers", "0"], "--n-workers must be >= 1, got 0"),
    ({}, ["--timeout", "0"], "--timeout must be > 0 seconds, got 0"),
    ({}, ["--timeout", "-5"], "--timeout must be > 0 seconds, got -5"),
    ({}, ["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ({"train": {"max_grad_norm": 0}}, [], "[train] max_grad_norm must be > 0"),
    ({"cost": {"latency_repeats": 0}}, [], "[cost] latency_repeats must be >= 1"),
    ({"cost": {"input_size": [8, 8]}}, [], "[cost] input_size must be at least 32 pixels"),
], ids=["space", "space-option", "space-profile", "sampler", "sampler-flag", "sampler-option",
        "option-of-optionless-sampler", "pruner", "pruner-flag", "pruner-option", "study-key",
        "train-key", "dataset-option", "dataset", "cost-metric", "metric", "table",
        "n-trials-flag", "n-workers-flag", "timeout-zero", "timeout-negative", "device-name",
        "grad-norm-zero", "latency-repeats", "cost-input-size"])
def test_config_naming_what_does_not_exist(existing: Existing, capsys, sections: dict,
                                           argv: list[str], message: str) -> None:
    if sections.get("data", {}).get("name"):
        sections["data"] = {**existing.raw["data"], **sections["data"]}
    fails(capsys, ["search", str(existing.write(**sections)), *argv], message)
    existing.unchanged()


@pytest.mark.parametrize(("sections", "argv"), [
    ({}, ["--device", "cuda"]), ({}, ["--device", "cuda:1"]), ({"train": {"device": "cuda"}}, []),
], ids=["flag", "flag-index", "config"])
def test_cuda_asked_for_on_a_machine_without_it(existing: Existing, capsys, monkeypatch,
                                                sections: dict, argv: list[str]) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    fails(capsys, ["search", str(existing.write(**sections)), *argv],
          "but CUDA is not available here")
    existing.unchanged()


def test_a_sampler_flag_says_which_config_options_it_drops(existing: Existing, capsys) -> None:
    from nas_optuna.cli import _search

    config = existing.write(sampler={"name": "tpe", "n_startup_trials": 3})
    args = _search_args(["search", str(config), "--sampler", "random"])
    overridden = _search._apply_overrides(_search.load_config(config), args)
    assert overridden.sampler.name == "random" and not overridden.sampler.options
    err = capsys.readouterr().err
    assert "--sampler random replaces [sampler] 'tpe'; its options (n_startup_trials) are " \
           "not used" in err


def _search_args(argv: list[str]):
    from nas_optuna.cli import _common, _search

    parser = _common.Parser()
    _search.add_arguments(parser)
    return parser.parse_args(argv[1:])


def test_malformed_config_file(existing: Existing, capsys) -> None:
    bad = existing.folder / "bad.toml"
    bad.write_text("[study\nname = 'tiny'\n")
    fails(capsys, ["search", str(bad)], "malformed TOML in")
    fails(capsys, ["search", str(existing.folder / "missing.toml")], "config file not found")
    existing.unchanged()


# --- 5. a dataset with corrupt images -------------------------------------------------------
@pytest.mark.parametrize(("kind", "message"), [
    ("truncated-image", "cannot read image {folder}/images/004.png: image file is truncated"),
    ("text-as-image", "cannot read image {folder}/images/004.png: cannot identify image file"),
    ("empty-mask", "cannot read mask {folder}/masks/007.png"),
])
def test_dataset_with_corrupt_images(existing: Existing, capsys, kind: str,
                                     message: str) -> None:
    folder = _dataset_tree(existing.folder / "data")
    if kind == "truncated-image":
        path = folder / "images" / "004.png"
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "text-as-image":
        (folder / "images" / "004.png").write_text("not a PNG")
    else:
        (folder / "masks" / "007.png").write_bytes(b"")
    cache = existing.folder / "folder-cache"
    config = existing.write(data={"name": "folder", "root": str(folder), "num_classes": 3},
                            train={"cache_dir": str(cache)})
    fails(capsys, ["search", str(config)], message.format(folder=folder))
    existing.unchanged()
    assert not list(cache.glob("*.pt"))  # no stem-feature cache of a broken dataset


# --- 6. an empty or too small meta-val / meta-train split -----------------------------------
@pytest.mark.parametrize(("data", "message"), [
    ({"num_images": 1}, "cannot split 1 images into meta-train and meta-val with "
     "val_fraction=0.1: one part would be empty"),
    ({"num_images": 4, "val_fraction": 0.9}, "cannot split 4 images into meta-train and "
     "meta-val with val_fraction=0.9: one part would be empty"),
    ({"num_images": 2}, "too few images: 2 images with val_fraction=0.1 leave 1 for "
     "meta-train, which needs at least 2"),
    ({"num_images": 3, "val_fraction": 0.5}, "too few images: 3 images"),
    ({"val_fraction": 0.0}, "[data] val_fraction must be in (0, 1), got 0.0"),
    ({"num_images": 0}, "num_images"),
], ids=["one-image", "empty-meta-train", "one-train-image", "half-of-three", "zero-fraction",
        "no-images"])
def test_empty_or_too_small_split(existing: Existing, capsys, data: dict, message: str) -> None:
    fails(capsys, ["search", str(existing.write(data=data)), "--n-trials", "3"], message)
    existing.unchanged()


# --- per-trial faults: the trial fails with its reason, the study goes on ----------------
@pytest.fixture
def first_training_call(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts calls of the objective's trainer, so a patch can hit only the first trial."""
    calls = {"n": 0}
    real = objective_module.train_architecture

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train_architecture", counted)
    return calls


def resumes_past_a_failed_trial(existing: Existing, capsys, caplog, reason: str, *,
                                costs_stored: bool = True,
                                expected: bool = True) -> optuna.trial.FrozenTrial:
    """Runs trials 2 and 3 through the CLI: 2 fails with ``reason``, 3 completes.

    ``expected``: a named failure (NaN, out of memory), reported without a traceback;
    any other exception keeps Optuna's traceback, which is what finds the bug.
    """
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            code = main(["search", str(existing.config), "--n-trials", "4"])
    finally:
        optuna.logging.disable_propagation()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    trials = existing.earlier_trials_unchanged()
    assert [t.state.name for t in trials] == [COMPLETE, COMPLETE, FAIL, COMPLETE]
    failed = trials[2]
    assert failed.user_attrs["fail_reason"].startswith(reason), failed.user_attrs
    assert "\n" not in failed.user_attrs["fail_reason"]
    assert failed.user_attrs["genotype"]  # what it was is still known
    assert ("params_generated" in failed.user_attrs) == costs_stored
    assert f"reason: {reason}" in captured.out  # the progress line
    # Optuna's warning about the trial; without a traceback when the reason names it.
    warned = [r for r in caplog.records if "Trial 2 failed with parameters" in r.getMessage()]
    assert warned and all((r.exc_info is None) == expected for r in warned)
    if expected:
        assert "Traceback" not in captured.err
    return failed


def test_nan_loss_fails_the_trial_and_the_study_goes_on(
        existing: Existing, capsys, caplog, monkeypatch, first_training_call) -> None:
    real_loss = trainer_module._loss

    def loss(*args: Any, **kwargs: Any) -> torch.Tensor:
        value = real_loss(*args, **kwargs)
        return value * float("nan") if first_training_call["n"] == 1 else value

    monkeypatch.setattr(trainer_module, "_loss", loss)
    failed = resumes_past_a_failed_trial(existing, capsys, caplog, "nan_loss")
    assert failed.user_attrs["fail_reason"] == "nan_loss: non-finite loss nan in stage 1"


@pytest.mark.parametrize("where", ["training-step", "cost-measurement"])
def test_out_of_memory_fails_the_trial_and_the_study_goes_on(
        existing: Existing, capsys, caplog, monkeypatch, first_training_call,
        where: str) -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if where == "training-step":
        real_step = trainer_module._step

        def step(*args: Any, **kwargs: Any) -> None:
            if first_training_call["n"] == 1:
                raise oom
            real_step(*args, **kwargs)

        monkeypatch.setattr(trainer_module, "_step", step)
    else:
        real_measure = objective_module.measure_network
        measured = {"n": 0}

        def measure(*args: Any, **kwargs: Any) -> dict[str, Any]:
            measured["n"] += 1
            if measured["n"] == 1:
                raise oom
            return real_measure(*args, **kwargs)

        monkeypatch.setattr(objective_module, "measure_network", measure)
    failed = resumes_past_a_failed_trial(existing, capsys, caplog, "out_of_memory",
                                         costs_stored=where == "training-step")
    assert failed.user_attrs["fail_reason"] == (
        "out_of_memory: CUDA out of memory. Tried to allocate 20.00 GiB")


def test_any_other_exception_fails_the_trial_with_its_type_and_message(
        existing: Existing, capsys, caplog, monkeypatch, first_training_call) -> None:
    real_step = trainer_module._step

    def step(*args: Any, **kwargs: Any) -> None:
        if first_training_call["n"] == 1:
            raise ValueError("a bug in an operation")
        real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "_step", step)
    failed = resumes_past_a_failed_trial(existing, capsys, caplog, "ValueError",
                                         expected=False)
    assert failed.user_attrs["fail_reason"] == "ValueError: a bug in an operation"


def test_disk_full_while_writing_an_artifact_keeps_the_trial(
        existing: Existing, capsys, monkeypatch) -> None:
    """The CLI-level variant of tests/test_artifacts.py::test_a_failing_artifact_write_keeps_
    the_trial: real training, the trial COMPLETE with ``artifact_error``, nothing lost."""
    earlier_dir = Path(existing.before["tiny"]["user_attrs"]["artifact_dir"])
    earlier_files = sorted(p.name for p in earlier_dir.iterdir())
    assert earlier_files  # the earlier trials' diagrams and previews

    def disk_full(self: Any, artifact_id: str, body: Any) -> None:
        (Path(self._base_path) / artifact_id).write_bytes(b"half")  # a partial file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(optuna.artifacts.FileSystemArtifactStore, "write", disk_full)
    assert main(["search", str(existing.config), "--n-trials", "3"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    trials = existing.earlier_trials_unchanged()  # their artifact entries included
    assert [t.state.name for t in trials] == [COMPLETE] * 3
    trial = trials[2]
    assert trial.value == trial.user_attrs["reward_stage2"]
    error = trial.user_attrs["artifact_error"]
    assert "No space left on device" in error and "\n" not in error
    assert "architecture.svg" in error and "masks.png" in error
    storage = open_storage(existing.storage)
    assert optuna.artifacts.get_all_artifact_meta(trial, storage=storage) == []
    # The half-written files are gone; the earlier trials' files are all there.
    study_dir = Path(optuna.load_study(study_name="tiny", storage=storage)
                     .user_attrs["artifact_dir"])
    assert study_dir == (existing.folder / "study.db-artifacts").resolve()
    assert not study_dir.exists() or not list(study_dir.iterdir())
    assert sorted(p.name for p in earlier_dir.iterdir()) == earlier_files


# --- bad arguments of the other commands ---------------------------------------------------
@pytest.mark.parametrize(("argv", "messages"), [
    (["report", "--study-name", "missing", "-o", "{folder}/r.html"],
     ("no study 'missing' in sqlite:///",)),
    (["retrain", "--study-name", "missing", "--select", "top:1"],
     ("no study 'missing' in sqlite:///",)),
    (["export", "--study-name", "missing", "--trial", "0", "--format", "onnx",
      "-o", "{folder}/x.onnx"], ("no study 'missing' in sqlite:///",)),
    (["describe", "--space", "template", "--study-name", "missing", "--trial", "0"],
     ("no study 'missing' in sqlite:///",)),
    (["export", "--study-name", "tiny", "--trial", "7", "--format", "onnx",
      "-o", "{folder}/x.onnx"], ("study 'tiny' has no trial 7",)),
    (["export", "--study-name", "tiny", "--trial", "0", "--format", "tflite",
      "-o", "{folder}/x.onnx"], ("unknown export format 'tflite'",)),
    (["retrain", "--study-name", "tiny", "--select", "best:2"], ("--select 'best:2'",)),
    (["report", "--study-name", "tiny"],
     ("report: the following arguments are required: -o/--output",)),
    (["export", "--study-name", "tiny", "--trial", "first", "--format", "onnx", "-o", "x"],
     ("export: argument --trial: invalid int value: 'first'",)),
], ids=["report", "retrain", "export", "describe", "export-missing-trial", "export-format",
        "retrain-select", "report-usage", "export-usage"])
def test_other_commands_with_a_missing_study_or_bad_arguments(
        existing: Existing, capsys, argv: list[str], messages: tuple[str, ...]) -> None:
    argv = [a.format(folder=existing.folder) for a in argv]
    files = sorted(existing.folder.iterdir())
    fails(capsys, [argv[0], "--storage", existing.storage, *argv[1:]], *messages)
    existing.unchanged()
    assert sorted(existing.folder.iterdir()) == files  # no report, export or weights


@pytest.mark.parametrize(("argv", "messages"), [
    (["dashboard", "--storage", "sqlite:///{folder}/missing.db"],
     ("cannot open storage sqlite:///", "no database file")),
    (["dashboard", "--storage", "postgresql://postgres@127.0.0.1:1/x"],
     ("cannot open storage postgresql://postgres@127.0.0.1:1/x",)),
    (["dashboard", "--storage", "sqlite:///{folder}/study.db", "--port", "70000"],
     ("--port must be between 0 and 65535",)),
    (["report", "--storage", "postgresql://postgres@127.0.0.1:1/x", "--study-name", "tiny",
      "-o", "{folder}/r.html"], ("cannot open storage postgresql://postgres@127.0.0.1:1/x",)),
    (["frobnicate"], ("argument command: invalid choice: 'frobnicate'",)),
], ids=["dashboard-missing-file", "dashboard-unreachable", "dashboard-port",
        "report-unreachable", "unknown-command"])
def test_dashboard_and_storage_arguments(existing: Existing, capsys, argv: list[str],
                                         messages: tuple[str, ...]) -> None:
    argv = [a.format(folder=existing.folder) for a in argv]
    fails(capsys, argv, *messages)
    existing.unchanged()
    assert not (existing.folder / "missing.db").exists()


def test_dashboard_opens_a_read_only_sqlite_uri(existing: Existing) -> None:
    """``sqlite:///file:PATH?mode=ro&uri=true`` names an existing file, not a missing one."""
    from nas_optuna.cli import _dashboard

    read_only = f"sqlite:///file:{existing.folder / 'study.db'}?mode=ro&uri=true"
    storage, studies = _dashboard.open_storage(read_only)
    assert [s.study_name for s in studies] == ["tiny"]
    storage.engine.dispose()
    existing.unchanged()

