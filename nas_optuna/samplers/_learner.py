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
        normalize_advantages: bool,
    ) -> None:
        self.controller = controller
        self.clip_range = clip_range
        self.baseline_decay = baseline_decay
        self.max_grad_norm = max_grad_norm
        self.entropy_weight = entropy_weight
        self.normalize_advantages = normalize_advantages
        self.baseline: float | None = None
        self.buffer: collections.deque[_Trajectory] = collections.deque(maxlen=buffer_size)
        self.optimizer = torch.optim.Adam(
            [*controller.lstm.parameters(), controller.start], lr=learning_rate
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
        self._step(advantages)
        self.n_updates += 1

    def _register_new_kinds(self) -> None:
        # Heads are created lazily; Adam learns of them here. Adam keeps no state for a
        # parameter before its first gradient, so when it is added does not matter.
        for kind in range(self._kinds_in_optimizer, len(self.controller.kinds)):
            self.optimizer.add_param_group({"params": self.controller.kind_parameters(kind)})
        self._kinds_in_optimizer = len(self.controller.kinds)

    def _step(self, advantages: torch.Tensor) -> None:
        buffer = list(self.buffer)
        pad = torch.nn.utils.rnn.pad_sequence
        kinds = pad([t.kinds for t in buffer])  # [T, B]
        actions = pad([t.actions for t in buffer])
        old_log_probs = pad([t.old_log_probs for t in buffer])
        lengths = torch.tensor([len(t.kinds) for t in buffer])
        mask = torch.arange(kinds.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)  # [T, B]

        log_probs, entropy = self.controller.log_probs(kinds, actions)
        # One ratio per decision, every decision sharing its trajectory's advantage: a
        # trajectory-level ratio (the product over ~40 decisions) leaves the clip range
        # after tiny per-decision changes and then stops teaching anything.
        ratio = torch.exp((log_probs - old_log_probs).masked_fill(~mask, 0.0))
        advantage = advantages.unsqueeze(0)
        clipped = torch.clamp(ratio, 1.0 - self.clip_range, 1.0 + self.clip_range)
        surrogate = torch.minimum(ratio * advantage, clipped * advantage)
        objective = surrogate + self.entropy_weight * entropy
        loss = -objective.masked_fill(~mask, 0.0).sum() / mask.sum()

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.max_grad_norm)
        self.optimizer.step()
