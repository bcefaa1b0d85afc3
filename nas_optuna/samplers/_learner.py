"""PPO updates of the controller: EMA baseline, clipped surrogate, a buffer of trajectories.

The update is a pure function of the sequence of learned trajectories (and the seed of
the initial weights), which is what lets a sampler rebuild the policy from the storage.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import torch

from nas_optuna.samplers._controller import _Controller

# Advantages are divided by their buffer's standard deviation only above this spread, so
# that a buffer of (nearly) equal rewards does not blow rounding noise up into updates.
_MIN_STD = 1e-8
import os
_TRAJ = bool(os.environ.get('PPO_TRAJ'))


@dataclass(frozen=True)
class _Trajectory:
    """One finished trial as the learner sees it."""

    kinds: torch.Tensor  # [L] long: decision-kind ids
    actions: torch.Tensor  # [L] long
    old_log_probs: torch.Tensor  # [L] float: behaviour log-probs stored with the trial
    reward: float


class _Learner:
    """Owns the optimizer, the reward baseline and the buffer; one update per trajectory."""

    def __init__(
        self,
        controller: _Controller,
        *,
        learning_rate: float,
        clip_range: float,
        baseline_decay: float,
        max_grad_norm: float,
        entropy_weight: float,
        buffer_size: int,
        batch_size: int | None,
        normalize_advantages: bool,
        seed: int,
    ) -> None:
        self.controller = controller
        self.clip_range = clip_range
        self.baseline_decay = baseline_decay
        self.max_grad_norm = max_grad_norm
        self.entropy_weight = entropy_weight
        self.normalize_advantages = normalize_advantages
        self.batch_size = batch_size
        self.seed = seed
        self.baseline: float | None = None
        self.buffer: collections.deque[_Trajectory] = collections.deque(maxlen=buffer_size)
        # foreach: one kernel per op over all ~40 heads instead of a Python loop over them.
        self.optimizer = torch.optim.Adam(
            [*controller.lstm.parameters(), controller.start], lr=learning_rate, foreach=True
        )
        self._kinds_in_optimizer = 0
        self.n_updates = 0

    def learn(self, trajectory: _Trajectory) -> None:
        """Adds ``trajectory`` to the buffer and takes one PPO step over the buffer."""
        self._register_new_kinds()
        if self.baseline is None:
            self.baseline = trajectory.reward
        self.buffer.append(trajectory)
        # Advantages against the baseline *before* this reward enters it; old trajectories
        # are re-scored against the current baseline, so as the policy improves, yesterday's
        # average architectures become negative examples.
        rewards = torch.tensor([t.reward for t in self.buffer])
        advantages = rewards - self.baseline
        self.baseline = (
            self.baseline_decay * self.baseline + (1.0 - self.baseline_decay) * trajectory.reward
        )
        if self.normalize_advantages and len(self.buffer) > 1:
            std = advantages.std(unbiased=False)
            if std > _MIN_STD:
                advantages = advantages / std
        self._step(*self._minibatch(advantages))
        self.n_updates += 1

    def _minibatch(self, advantages: torch.Tensor) -> tuple[list[_Trajectory], torch.Tensor]:
        buffer = list(self.buffer)
        if self.batch_size is None or len(buffer) <= self.batch_size:
            return buffer, advantages
        # The newest trajectory and a uniform sample of the others: an unbiased estimate of
        # the whole-buffer objective's gradient, at a fraction of the cost. The generator is
        # seeded by the update's index, so a replay draws the same minibatches.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.n_updates)
        others = torch.randperm(len(buffer) - 1, generator=generator)[: self.batch_size - 1]
        chosen = [*sorted(others.tolist()), len(buffer) - 1]
        return [buffer[i] for i in chosen], advantages[chosen]

    def _register_new_kinds(self) -> None:
        # Heads are created lazily; Adam learns of them here. Adam keeps no state for a
        # parameter before its first gradient, so when it is added does not matter.
        for kind in range(self._kinds_in_optimizer, len(self.controller.kinds)):
            self.optimizer.add_param_group({"params": self.controller.kind_parameters(kind)})
        self._kinds_in_optimizer = len(self.controller.kinds)

    def _step(self, buffer: list[_Trajectory], advantages: torch.Tensor) -> None:
        pad = torch.nn.utils.rnn.pad_sequence
        kinds = pad([t.kinds for t in buffer])  # [T, B]
        actions = pad([t.actions for t in buffer])
        old_log_probs = pad([t.old_log_probs for t in buffer])
        lengths = torch.tensor([len(t.kinds) for t in buffer])
        mask = torch.arange(kinds.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)  # [T, B]

        log_probs, entropy = self.controller.log_probs(
            kinds, actions, with_entropy=self.entropy_weight != 0
        )
        # One ratio per decision, every decision sharing its trajectory's advantage: a
        # trajectory-level ratio (the product over ~40 decisions) leaves the clip range
        # after tiny per-decision changes and then stops teaching anything.
        ratio = torch.exp((log_probs - old_log_probs).masked_fill(~mask, 0.0))
        if _TRAJ:
            ratio = torch.exp((log_probs - old_log_probs).masked_fill(~mask, 0.0).sum(0, keepdim=True)).expand_as(ratio)
        advantage = advantages.unsqueeze(0)
        clipped = torch.clamp(ratio, 1.0 - self.clip_range, 1.0 + self.clip_range)
        surrogate = torch.minimum(ratio * advantage, clipped * advantage)
        objective = surrogate if entropy is None else surrogate + self.entropy_weight * entropy
        loss = -objective.masked_fill(~mask, 0.0).sum() / mask.sum()

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.max_grad_norm)
        self.optimizer.step()
