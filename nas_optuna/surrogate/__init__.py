"""Surrogate benchmarks: a model of the reward, fitted on trained architectures.

Real searches cost seconds to hours per trial, so samplers cannot be compared on them
thousands of times. A surrogate (as NAS-Bench-301) is fitted once on a study of trained
architectures (:func:`fit_surrogate`), saved as numbers only (:func:`save_surrogate`,
:func:`load_surrogate`) and asked instead of training (:class:`SurrogateObjective`), in
any Optuna study. ``nas-optuna surrogate fit | predict | search`` are the same from the
command line.

Example:
    >>> import optuna
    >>> from nas_optuna.surrogate import SurrogateObjective, load_surrogate
    >>> surrogate = load_surrogate("benchmarks/data/surrogate_template.npz")
    >>> surrogate.space_name, surrogate.model
    ('template', 'gradient_boosting')
    >>> study = optuna.create_study(direction="maximize")
    >>> study.optimize(SurrogateObjective(surrogate, seed=0), n_trials=2)
"""

from nas_optuna.surrogate._encoding import ParamEncoding
from nas_optuna.surrogate._file import load_surrogate, save_surrogate
from nas_optuna.surrogate._fit import CandidateScore, Surrogate, fit_surrogate, noise_ceiling
from nas_optuna.surrogate._models import MODELS
from nas_optuna.surrogate._objective import SurrogateObjective, prepare_surrogate_study

__all__ = [
    "MODELS",
    "CandidateScore",
    "ParamEncoding",
    "Surrogate",
    "SurrogateObjective",
    "fit_surrogate",
    "load_surrogate",
    "noise_ceiling",
    "prepare_surrogate_study",
    "save_surrogate",
]
