"""nas-optuna: neural architecture search of compact segmentation networks on Optuna.

The public API::

    from nas_optuna import load_config, run_search
    study = run_search(load_config("studies/quickstart.toml"))

Search spaces live in the sibling package :mod:`search_spaces`; analyses in
:mod:`analysis`.
"""

from nas_optuna.config import StudyConfig, load_config, parse_config
from nas_optuna.exceptions import (
    ConfigError,
    DatasetError,
    NasOptunaError,
    TrialFailed,
    UnknownNameError,
)
from nas_optuna.study import PRUNERS, SAMPLERS, create_study, run_search

__version__ = "0.1.0"

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
    "load_config",
    "parse_config",
    "run_search",
]
