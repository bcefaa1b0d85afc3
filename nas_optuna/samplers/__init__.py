"""Samplers for architecture search; they know Optuna and torch, nothing of segmentation.

Example:
    >>> import optuna
    >>> from nas_optuna.samplers import PPOSampler
    >>> study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=0))
"""

from __future__ import annotations

from nas_optuna.samplers._ppo import PPOSampler

__all__ = ["PPOSampler"]
