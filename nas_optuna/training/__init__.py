"""Search-time training: stem initialisation, cached stem features, the two-stage trainer.

Training knows nothing of Optuna; see :mod:`nas_optuna.training.trainer`.
"""

from nas_optuna.training.features import SearchData, cache_key, prepare_search_data
from nas_optuna.training.stem import initialise_stem
from nas_optuna.training.teacher import load_teacher
from nas_optuna.training.trainer import (
    Reporter,
    TrainResult,
    ValidationReporter,
    resolve_device,
    train_architecture,
    validation_epochs,
)

__all__ = [
    "Reporter",
    "SearchData",
    "TrainResult",
    "ValidationReporter",
    "cache_key",
    "initialise_stem",
    "load_teacher",
    "prepare_search_data",
    "resolve_device",
    "train_architecture",
    "validation_epochs",
]
