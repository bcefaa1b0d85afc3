"""Study configs: defaults, overrides and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_optuna.config import config_to_dict, load_config, parse_config
from nas_optuna.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_config_parses(path: Path) -> None:
    config = load_config(path)
    assert config.study.n_trials is None or config.study.n_trials >= 1
    assert config.source == str(path)


def test_quickstart_matches_the_issue() -> None:
    config = load_config(ROOT / "studies" / "quickstart.toml")
    assert config.space.name == "template"
    assert config.data.name == "synthetic"
    assert config.sampler.name == "tpe"
    assert config.pruner.name == "median"
    assert config.study.n_trials >= 20


def test_defaults_follow_the_papers() -> None:
    config = parse_config({})
    assert config.train.decoder_lr == 7e-3  # WACV 2020 Sect. 4.1
    assert config.train.stem_lr == 1e-3
    assert config.train.polyak_decay == (0.9, 0.99)
    assert (config.train.stage1_epochs, config.train.stage2_epochs) == (5, 5)
    assert config.data.val_fraction == 0.1
    assert config.study.storage.startswith("sqlite:///")


def test_unknown_data_keys_are_forwarded_to_the_dataset() -> None:
    config = parse_config({"data": {"name": "synthetic", "num_images": 40, "crop_size": [32, 48]}})
    assert dict(config.data.options) == {"num_images": 40}
    assert config.data.crop_size == (32, 48)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"studdy": {}}, "unknown table [studdy]"),
        ({"train": {"epochs": 3}}, "unknown key 'epochs' in [train]"),
        ({"study": {"n_trials": "many"}}, "n_trials must be an int"),
        ({"study": {"n_trials": 0}}, "n_trials must be >= 1"),
        ({"study": {"directions": ["maximize", "minimize"]}}, "same length"),
        ({"study": {"directions": ["up"], "metrics": ["reward"]}}, "direction 'up'"),
        ({"study": {"metrics": ["accuracy"]}}, "unknown metric 'accuracy'"),
        ({"train": {"batch_size": 0}}, "batch_size must be >= 1"),
        ({"train": {"device": "tpu"}}, "device must be"),
        ({"train": {"stem_weights": "coco"}}, "stem_weights"),
        ({"train": {"polyak_decay": [0.9]}}, "polyak_decay must have 2 values"),
        ({"data": {"val_fraction": 1.5}}, "val_fraction"),
        ({"space": {"name": 3}}, "name must be a string"),
        ({"study": 3}, "[study] must be a table"),
        ({"cost": {"latency_repeats": 0}}, "latency_repeats must be >= 1, got 0"),
        ({"cost": {"latency_warmup": -1}}, "latency_warmup must be >= 0, got -1"),
        ({"cost": {"input_size": [0, 96]}}, "input_size must be at least 32 pixels"),
        ({"cost": {"input_size": [16, 16]}}, "input_size must be at least 32 pixels"),
        ({"train": {"max_grad_norm": 0}}, "max_grad_norm must be > 0 (or \"off\""),
        ({"train": {"max_grad_norm": -1.0}}, "max_grad_norm must be > 0"),
        ({"train": {"max_grad_norm": "none"}}, "max_grad_norm must be a float"),
    ],
)
def test_bad_values_raise_one_line_config_errors(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_max_grad_norm_off_turns_clipping_off_and_round_trips() -> None:
    assert parse_config({"train": {"max_grad_norm": "off"}}).train.max_grad_norm is None
    assert parse_config({}).train.max_grad_norm == 10.0
    config = parse_config({"train": {"max_grad_norm": "off"}})
    assert parse_config(config_to_dict(config)).train.max_grad_norm is None
