"""Turning a finished trial into the scalar reward the controller maximises."""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# Keeps the MnasNet factor defined when a cost is 0 (or negative by mistake).
_TINY_COST = 1e-12


class _RewardFunction:
    """Scalarises trial values into a reward to maximise.

    * ``COMPLETE``: the value, negated when minimised; several objectives are scalarised
      either by a weighted sum of the signed values or MnasNet-style (see PPOSampler).
    * ``PRUNED``: the last intermediate value, signed like the objective (the papers score
      an early-terminated architecture by its stage-1 reward). Optuna has no intermediate
      values in multi-objective studies, so there a pruned trial counts as failed.
    * ``FAIL``, or no finite reward: ``fail_penalty`` if given, else ``None`` (not learned).
    """

    def __init__(
        self,
        directions: Sequence[StudyDirection],
        *,
        weights: Sequence[float] | None,
        mnasnet_target: float | None,
        mnasnet_w: float,
        fail_penalty: float | None,
    ) -> None:
        self._signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions]
        n_objectives = len(self._signs)
        if mnasnet_target is not None and n_objectives != 2:
            raise ValueError(
                "PPOSampler: mnasnet_target needs a study with two objectives "
                f"(quality, cost), this one has {n_objectives}"
            )
        if weights is None:
            weights = [1.0 / n_objectives] * n_objectives
        elif len(weights) != n_objectives:
            raise ValueError(
                f"PPOSampler: {len(weights)} weights for a study with {n_objectives} objectives"
            )
        self._weights = [float(w) for w in weights]
        self._mnasnet_target = mnasnet_target
        self._mnasnet_w = mnasnet_w
        self._fail_penalty = fail_penalty

    def __call__(self, trial: FrozenTrial) -> float | None:
        reward = self._raw_reward(trial)
        if reward is None or not math.isfinite(reward):
            return self._fail_penalty
        return reward

    def _raw_reward(self, trial: FrozenTrial) -> float | None:
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            return self._scalarise(trial.values)
        if trial.state == TrialState.PRUNED and len(self._signs) == 1:
            step = trial.last_step
            if step is not None:
                return self._signs[0] * trial.intermediate_values[step]
        return None

    def _scalarise(self, values: Sequence[float]) -> float:
        if len(values) == 1:
            return self._signs[0] * values[0]
        if self._mnasnet_target is not None:
            quality, cost = self._signs[0] * values[0], values[1]
            return quality * (max(cost, _TINY_COST) / self._mnasnet_target) ** self._mnasnet_w
        return sum(w * s * v for w, s, v in zip(self._weights, self._signs, values))
