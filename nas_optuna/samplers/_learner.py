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
        self.optimizer = _adam([*controller.lstm.parameters(), controller.start], learning_rate)
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
        # The newest trajectory and a uniform sample of the others, at a fraction of the cost
        # of the whole buffer (the newest weighs more than in a whole-buffer update). The
        # generator is seeded by the update's index, so a replay draws the same minibatches.
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.n_updates) % 2**63
        )
        others = torch.randperm(len(buffer) - 1, generator=generator)[: self.batch_size - 1]
        chosen = [*sorted(others.tolist()), len(buffer) - 1]
        return [buffer[i] for i in chosen], advantages[chosen]

    def _register_new_kinds(self) -> None:
        # Heads are created lazily; Adam learns of them here, in the one parameter group
        # (the foreach kernels then cover every head at once; a group per head would cost
        # a Python-level Adam step each). Adam keeps no state for a parameter before its
        # first gradient, so when a head joins does not matter.
        group = self.optimizer.param_groups[0]["params"]
        for kind in range(self._kinds_in_optimizer, len(self.controller.kinds)):
            group.extend(self.controller.kind_parameters(kind))
        self._kinds_in_optimizer = len(self.controller.kinds)

    def _step(self, buffer: list[_Trajectory], advantages: torch.Tensor) -> None:
        kinds, actions, old_log_probs, mask = _pad(buffer)
        if self.entropy_weight == 0:
            # Most of the buffer is clipped out at any time (about 93% in the benchmark) and
            # adds exactly zero gradient: find the rest with a cheap forward pass without
            # autograd, then backpropagate through those only. The newest trajectory always
            # goes along, so every update has a backward pass and Adam steps as it would
            # over the whole buffer.
            with torch.no_grad():
                log_probs, _ = self.controller.log_probs(kinds, actions, with_entropy=False)
                ratio = self._ratio(log_probs, old_log_probs, mask)
            active = ~(((ratio > 1.0 + self.clip_range) & (advantages > 0))
                       | ((ratio < 1.0 - self.clip_range) & (advantages < 0))
                       | (advantages == 0))
            active[-1] = True
            keep = active.nonzero().squeeze(1)
            if len(keep) < len(buffer):
                kinds, actions, old_log_probs, mask = _pad([buffer[i] for i in keep.tolist()])
        else:
            keep = torch.arange(len(buffer))

        log_probs, entropy = self.controller.log_probs(
            kinds, actions, with_entropy=self.entropy_weight != 0
        )
        ratio = self._ratio(log_probs, old_log_probs, mask)
        advantage = advantages[keep]
        clipped = torch.clamp(ratio, 1.0 - self.clip_range, 1.0 + self.clip_range)
        # Averaged over the batch, the inactive trajectories counting as zeros.
        loss = -torch.minimum(ratio * advantage, clipped * advantage).sum() / len(buffer)
        if entropy is not None:
            loss = loss - self.entropy_weight * entropy.masked_fill(~mask, 0.0).sum() / mask.sum()

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.max_grad_norm)
        self.optimizer.step()

    @staticmethod
    def _ratio(log_probs: torch.Tensor, old_log_probs: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        # The action is the whole architecture (what a reward scores): one probability
        # ratio per trajectory, the product over its decisions. Clipping it drops an old
        # trajectory from the update once the policy has moved its joint probability by
        # more than clip_range, which keeps the buffer's updates near on-policy. (Per-
        # decision ratios let stale trajectories keep pushing and learned markedly slower
        # in benchmarks/ppo_sampler.py.)
        return torch.exp((log_probs - old_log_probs).masked_fill(~mask, 0.0).sum(0))


def _adam(parameters: list[torch.nn.Parameter], learning_rate: float) -> torch.optim.Adam:
    try:
        # One fused kernel over all parameters (~170 tensors with ~40 heads): a third of
        # the time of the foreach implementation here.
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except RuntimeError:  # fused Adam on the CPU needs torch >= 2.4
        return torch.optim.Adam(parameters, lr=learning_rate, foreach=True)


def _pad(
    trajectories: list[_Trajectory],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[T, B]`` kinds, actions, old log-probs and the mask of real (unpadded) steps."""
    pad = torch.nn.utils.rnn.pad_sequence
    kinds = pad([t.kinds for t in trajectories])
    actions = pad([t.actions for t in trajectories])
    old_log_probs = pad([t.old_log_probs for t in trajectories])
    lengths = torch.tensor([len(t.kinds) for t in trajectories])
    mask = torch.arange(kinds.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)
    return kinds, actions, old_log_probs, mask
