"""Shared fixtures: tiny study configs that train in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from nas_optuna.config import StudyConfig, parse_config

# Tests run on 2 cores beside each other; one thread each keeps them from thrashing.
torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_config_dict(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config that searches the template space on 40 synthetic 32x48 images."""
    raw: dict[str, Any] = {
        "study": {"name": "tiny", "storage": f"sqlite:///{tmp_path / 'study.db'}",
                  "n_trials": 3, "seed": 0},
        "space": {"name": "template", "profile": "search"},
        "data": {"name": "synthetic", "num_images": 40, "image_size": [32, 48],
                 "num_classes": 4},
        "train": {"stage1_epochs": 1, "stage2_epochs": 1, "batch_size": 8,
                  "warmup_epochs": 1, "device": "cpu", "stem_weights": "warmup",
                  "cache_dir": str(tmp_path / "cache")},
        "sampler": {"name": "random"},
        "pruner": {"name": "none"},
        "cost": {"latency_repeats": 2, "latency_warmup": 1},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


@pytest.fixture
def tiny_config(tmp_path: Path) -> StudyConfig:
    return parse_config(tiny_config_dict(tmp_path))


def fake_trainer(stage1_rewards: list[float]) -> Any:
    """A stand-in for ``train_architecture`` reporting fixed stage-1 rewards (+0.01 later).

    Tests of the pruning and cost glue patch ``nas_optuna.objective.train_architecture``
    with it, so the decisions are tested exactly; real training reports through the same
    ``reporter`` callback.
    """
    from nas_optuna.training import TrainResult

    rewards = iter(stage1_rewards)

    def train(network, data, config, *, device, reporter, seed, **kwargs):  # noqa: ANN001
        reward = next(rewards)
        metrics = {"miou": reward, "macc": reward, "fwiou": reward, "reward": reward}
        result = TrainResult(stage_metrics={1: metrics})
        if not reporter(1, metrics):
            result.stopped_after = 1
            return result
        final = {k: v + 0.01 for k, v in metrics.items()}
        result.stage_metrics[2] = final
        reporter(2, final)
        return result

    return train
