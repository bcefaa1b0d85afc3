"""Exceptions raised by nas-optuna.

Every error a user can cause derives from :class:`NasOptunaError`; the CLI turns it into
one line on stderr and a non-zero exit, so messages must be single-line and name the
offending value.
"""

from __future__ import annotations


class NasOptunaError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(NasOptunaError):
    """A study config (TOML) or a command-line value is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetError(NasOptunaError):
    """A dataset is missing, malformed, or inconsistent with its declared classes."""


class TrialFailed(NasOptunaError):
    """One trial cannot go on (NaN loss, out of memory, ...); the study continues.

    Args:
        reason: Short machine-readable reason, e.g. ``"nan_loss"`` or ``"out_of_memory"``.
        detail: Human-readable detail.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
