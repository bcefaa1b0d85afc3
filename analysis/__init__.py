"""Analyses of stored studies, read from an Optuna storage alone.

Analysis never imports training code or torch: everything it needs is in the storage
(params, user attrs, system attrs). :func:`trials_frame` turns studies into one tidy
table, a row per trial; each question of the papers is a function returning an
:class:`Analysis` (a summary ``table``, a plotly ``figure``, scalar ``stats`` and
``notes`` on which trials count); :func:`build_report` puts every analysis that applies
into one self-contained HTML page (``nas-optuna report``).

Questions and the paper figures they answer:

* :func:`reward_vs_size`: does an architecture's size tell its reward? (template paper,
  supplementary Figs. 13-14)
* :func:`reward_over_time`: do rewards improve as the search goes on? (template Fig. 5,
  CVPR Fig. 2)
* :func:`compare_rewards`: does the controller beat random search? (template Fig. 8)
* :func:`stride_vs_reward`, :func:`stride_over_time`: which output stride attains higher
  rewards, and how often is each chosen? (template Figs. 7 and 6)
* :func:`template_stats`, :func:`operation_stats`: which templates / operations lead to
  high rewards? (template supplementary Figs. 15-16; operations in any space)
* :func:`stage_correlation`, :func:`retrain_correlation`: does stage 1 rank architectures
  as stage 2 does, and the search as a longer training does? (template Fig. 9)
* :func:`proxy_correlation`, :func:`retrain_fidelity`: do zero-cost proxies rank
  architectures as the search reward does, and what predicts a longer retraining at
  what compute? (the fidelity figure of ``benchmarks/fidelity.py``, for a user's study)
* :func:`seed_noise`: how much does one architecture's reward move between training
  seeds? (the floor every ranking figure is read against)
* :func:`pareto_front`, :func:`hypervolume_history`: multi-objective studies.

Example:
    >>> from analysis import compare_rewards, trials_frame
    >>> frame = trials_frame("sqlite:///nas-optuna.db", ["ppo", "random"])
    >>> result = compare_rewards(frame, "ppo", "random")
    >>> result.stats["p_value"], result.table
    >>> result.figure.show()
"""

from analysis.correlation import (
    RankCorrelation,
    rank_correlation,
    retrain_correlation,
    retrain_pairs,
    retrain_studies,
    stage_correlation,
)
from analysis.genotype import COMPONENTS, genotype_long, template_label
from analysis.noise import SeedNoise, seed_noise
from analysis.pareto import default_reference_point, hypervolume_history, pareto_front
from analysis.progress import compare_rewards, reward_over_time, stage_rewards
from analysis.proxies import proxy_correlation, retrain_fidelity
from analysis.report import build_report, write_report
from analysis.result import Analysis, InsufficientData
from analysis.size import reward_vs_size, size_buckets
from analysis.stride import stride_over_time, stride_vs_reward
from analysis.tables import TRIAL_COLUMNS, completed_trials, trials_frame
from analysis.templates import operation_stats, template_stats

__all__ = [
    "COMPONENTS",
    "TRIAL_COLUMNS",
    "Analysis",
    "InsufficientData",
    "RankCorrelation",
    "SeedNoise",
    "build_report",
    "compare_rewards",
    "completed_trials",
    "default_reference_point",
    "genotype_long",
    "hypervolume_history",
    "operation_stats",
    "pareto_front",
    "proxy_correlation",
    "rank_correlation",
    "seed_noise",
    "retrain_correlation",
    "retrain_fidelity",
    "retrain_pairs",
    "retrain_studies",
    "reward_over_time",
    "reward_vs_size",
    "size_buckets",
    "stage_correlation",
    "stage_rewards",
    "stride_over_time",
    "stride_vs_reward",
    "template_label",
    "template_stats",
    "trials_frame",
    "write_report",
]
