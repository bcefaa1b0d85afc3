"""Analyses of stored studies: pandas DataFrames read from an Optuna storage alone.

Analysis never imports training code: everything it needs is in the storage (params,
user attrs, system attrs). This first piece turns studies into one tidy table, a row per
trial; the papers' questions (reward vs size, controller vs random, rank correlation)
build on it.

Example:
    >>> from analysis import trials_frame
    >>> frame = trials_frame("sqlite:///nas-optuna.db", ["quickstart"])
    >>> frame.groupby("state")["reward"].describe()  # doctest: +SKIP
"""

from analysis.tables import TRIAL_COLUMNS, trials_frame

__all__ = ["TRIAL_COLUMNS", "trials_frame"]
