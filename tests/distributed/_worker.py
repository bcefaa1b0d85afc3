"""One search worker for the distributed tests: the real CLI, with a fake trainer.

``python -m tests.distributed._worker CONFIG [search options]`` runs ``nas-optuna search``
with ``train_architecture`` replaced by a stand-in that sleeps ``NAS_OPTUNA_TEST_STAGE_S``
seconds per stage (default 0.2) and reports a reward derived from the network's size, so
trials last long enough to be killed or interrupted, and no longer.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

# Before torch is imported (the CLI does this itself, but the patch imports torch first).
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def fake_trainer() -> Any:
    from nas_optuna.training import TrainResult

    seconds = float(os.environ.get("NAS_OPTUNA_TEST_STAGE_S", "0.2"))

    def train(network, data, config, *, device, reporter, seed, **kwargs):  # noqa: ANN001
        size = sum(p.numel() for p in network.parameters())
        reward = (size % 997) / 997
        result = TrainResult(stage_metrics={})
        for stage in (1, 2):
            time.sleep(seconds)
            metrics = {k: reward + 0.01 * (stage - 1) for k in ("miou", "macc", "fwiou", "reward")}
            result.stage_metrics[stage] = metrics
            if not reporter(stage, metrics):
                result.stopped_after = stage
                return result
        return result

    return train


def main(argv: list[str]) -> int:
    from nas_optuna import objective

    objective.train_architecture = fake_trainer()
    from nas_optuna.cli import main as cli

    return cli(["search", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
