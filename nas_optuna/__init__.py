"""nas-optuna: neural architecture search of compact segmentation networks on Optuna.

The public API::

    from nas_optuna import load_config, run_search
    study = run_search(load_config("studies/quickstart.toml"))

Search spaces live in the sibling package :mod:`search_spaces`; analyses in
:mod:`analysis`.
"""

from __future__ import annotations

import importlib
from typing import Any

from nas_optuna.config import StudyConfig, load_config, parse_config
from nas_optuna.exceptions import (
    ConfigError,
    DatasetError,
    NasOptunaError,
    TrialFailed,
    UnknownNameError,
)

__version__ = "0.1.0"

# The runner imports search_spaces, which imports nas_optuna.ops; resolving these names
# on first use keeps ``import search_spaces`` from re-entering a half-imported package.
_LAZY = {"PRUNERS": "nas_optuna.study", "SAMPLERS": "nas_optuna.study",
         "create_study": "nas_optuna.study", "run_search": "nas_optuna.study",
         "retrain_study": "nas_optuna.retrain", "export_model": "nas_optuna.export"}

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "ConfigError",
    "DatasetError",
    "NasOptunaError",
    "StudyConfig",
    "TrialFailed",
    "UnknownNameError",
    "create_study",
    "export_model",
    "load_config",
    "parse_config",
    "retrain_study",
    "run_search",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas_optuna' has no attribute {name!r}")
