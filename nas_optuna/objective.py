"""The Optuna objective: one trial, glue only.

It asks the search space for an architecture (define-by-run), builds the network,
stores its costs, trains it with the two-stage trainer and turns the trainer's
``reporter(stage, metrics)`` calls into ``trial.report`` / ``trial.should_prune``. Every
trial carries the user attrs listed in the design (``params_total``, ``params_generated``,
``macs``, ``latency_ms``, ``latency_protocol``, ``reward_stage1``, ``reward_stage2``,
``miou``, ``macc``, ``fwiou``, ``output_stride``, ``genotype``, ``stem_weights``,
``fail_reason``).

Failures: a :class:`~nas_optuna.exceptions.TrialFailed` (NaN loss, out of memory) or any
other exception inside a trial stores ``fail_reason`` on it and re-raises, so the trial
ends FAIL; the runner passes ``catch=(Exception,)`` to ``study.optimize`` so the study goes
on. Multi-objective studies cannot use Optuna's pruning, so there the reporter never stops
training (the multi-objective stage-1 rule arrives with cost-aware studies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch

from nas_optuna.config import StudyConfig
from nas_optuna.exceptions import TrialFailed
from nas_optuna.measure import measure_network
from nas_optuna.training import SearchData, train_architecture
from search_spaces import SearchSpace

__all__ = ["SearchObjective", "trial_record"]


class SearchObjective:
    """Callable objective for ``study.optimize``.

    Args:
        space: The search space.
        data: Search data with cached stem features.
        config: The study config (train, cost and study sections are used).
        device: Where trials train.

    Example:
        >>> objective = SearchObjective(space, data, config, torch.device("cpu"))
        >>> study.optimize(objective, n_trials=2, catch=(Exception,))
    """

    def __init__(self, space: SearchSpace, data: SearchData, config: StudyConfig,
                 device: torch.device) -> None:
        self.space = space
        self.data = data
        self.config = config
        self.device = device
        self.cost_input_size = config.cost.input_size or data.image_size
        self.seed = config.study.seed or 0

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except TrialFailed as error:
            trial.set_user_attr("fail_reason", str(error))
            raise
        except Exception as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
            raise

    def _run(self, trial: optuna.Trial) -> float | Sequence[float]:
        arch = self.space.suggest(trial)
        trial.set_user_attr("genotype", self.space.describe(arch))
        trial.set_user_attr("stem_weights", self.data.stem_weights)
        # Seeded per trial so that one trial's weights do not depend on the trials before it.
        torch.manual_seed(self.seed * 100_003 + trial.number)
        stem = self.space.build_stem()
        stem.load_state_dict(self.data.stem_state)
        network = self.space.build(arch, self.data.num_classes, stem=stem).to(self.device)
        costs = measure_network(
            network, self.cost_input_size, device=self.device,
            latency=self.config.cost.measure_latency,
            latency_warmup=self.config.cost.latency_warmup,
            latency_repeats=self.config.cost.latency_repeats,
        )
        for key, value in costs.items():
            trial.set_user_attr(key, value)

        multi_objective = len(self.config.study.directions) > 1
        last_stage = 2 if self.config.train.stage2_epochs > 0 else 1

        def reporter(stage: int, metrics: Mapping[str, float]) -> bool:
            trial.set_user_attr(f"reward_stage{stage}", metrics["reward"])
            for key in ("miou", "macc", "fwiou"):
                trial.set_user_attr(key, metrics[key])
            if multi_objective:
                return True
            trial.report(metrics["reward"], step=stage)
            # Nothing is saved by pruning after the last stage: the trial completes.
            return stage == last_stage or not trial.should_prune()

        result = train_architecture(network, self.data, self.config.train, device=self.device,
                                    reporter=reporter, seed=self.seed + trial.number,
                                    omit_classes=self.config.train.omit_classes)
        if result.stopped_after is not None:
            raise optuna.TrialPruned(f"pruned after stage {result.stopped_after}")
        values = {**costs, **result.final_metrics}
        objective = [float(values[metric]) for metric in self.config.study.metrics]
        return objective[0] if len(objective) == 1 else objective


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A flat, printable summary of a finished trial (used by the CLI's progress lines)."""
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "params_generated": attrs.get("params_generated"),
        "output_stride": attrs.get("output_stride"),
        "genotype": attrs.get("genotype"),
        "fail_reason": attrs.get("fail_reason"),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
    }

