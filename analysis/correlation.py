"""Rank correlation between two evaluations of the same architectures (template paper Fig. 9).

Two pairings are read from the storage:

* stage 1 against stage 2 of one study's trials (:func:`stage_correlation`);
* search reward against retrained reward, through a *retrain study* linked to its source
  (:func:`retrain_correlation`). The link, which ``nas-optuna retrain`` writes:

  - the retrain study's user attr ``retrain_of`` names the source study;
  - each retrain trial's user attrs ``source_study`` (str), ``source_trial`` (the trial
    number in the source study) and ``selection`` (``"top"`` or ``"random"``);
  - the retrain trial's objective value (metric ``reward``) is the retrained reward.

Confidence intervals (:func:`rank_correlation`): percentile bootstrap over resampled
(x, y) pairs, with a fixed seed, for both Spearman's rho and Kendall's tau-b; for
Spearman also the Fisher z interval, ``tanh(atanh(rho) +- z * sqrt(1.06 / (n - 3)))``
(Fieller, Hartley and Pearson, 1957), which needs no resampling but assumes a
roughly bivariate-normal sample.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from analysis._stats import require
from analysis._storage import StorageLike, open_storage
from analysis.result import Analysis, InsufficientData
from analysis.tables import completed_trials, trials_frame

__all__ = [
    "RankCorrelation",
    "rank_correlation",
    "retrain_correlation",
    "retrain_pairs",
    "retrain_studies",
    "stage_correlation",
]


@dataclasses.dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho and Kendall's tau-b with confidence intervals.

    ``*_low`` / ``*_high`` are percentile-bootstrap bounds; ``spearman_fisher_*`` the
    Fisher z bounds (NaN for n <= 3).
    """

    n: int
    spearman: float
    spearman_p: float
    spearman_low: float
    spearman_high: float
    spearman_fisher_low: float
    spearman_fisher_high: float
    kendall: float
    kendall_p: float
    kendall_low: float
    kendall_high: float
    confidence: float
    n_bootstrap: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (a table row)."""
        return dataclasses.asdict(self)


def rank_correlation(x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95,
                     n_bootstrap: int = 2000, seed: int = 0) -> RankCorrelation:
    """Spearman and Kendall rank correlation of paired values, with confidence intervals.

    Pairs where either value is NaN are dropped. The bootstrap resamples the pairs
    ``n_bootstrap`` times with ``numpy.random.default_rng(seed)`` (so the interval is
    reproducible) and takes the percentile interval; resamples whose correlation is
    undefined (all values tied) are skipped. See the module docstring for Fisher's z.
    Estimates and bootstrap values are rounded to 12 decimals, so that floating-point
    noise cannot put a perfect correlation at 0.9999999999999999.

    Args:
        x: First evaluation (e.g. search rewards).
        y: Second evaluation of the same architectures, in the same order.
        confidence: Coverage of the intervals.
        n_bootstrap: Bootstrap resamples.
        seed: Seed of the resampling.

    Raises:
        ValueError: ``x`` and ``y`` differ in length, or ``confidence`` is not in (0, 1).
        InsufficientData: Fewer than 3 complete pairs.

    Example:
        >>> result = rank_correlation([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 5])
        >>> result.spearman, result.kendall
        (1.0, 1.0)
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, got {x_arr.shape} and {y_arr.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    keep = ~(np.isnan(x_arr) | np.isnan(y_arr))
    x_arr, y_arr = x_arr[keep], y_arr[keep]
    n = len(x_arr)
    if n < 3:
        raise InsufficientData(f"rank correlation: need at least 3 pairs, found {n}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_bootstrap, n))
    xs, ys = x_arr[index], y_arr[index]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # Tied (constant) samples have no rank correlation: NaN, skipped below.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = stats.spearmanr(x_arr, y_arr)
        kendall = stats.kendalltau(x_arr, y_arr)
        boot_rho = _rowwise_spearman(xs, ys)
        boot_tau = np.array([stats.kendalltau(a, b).statistic for a, b in zip(xs, ys)])
    rho = round(float(spearman.statistic), 12)
    tail = (1.0 - confidence) / 2.0
    # Rounded (as the estimates) so that a perfectly monotone sample gives exactly 1.
    boot_rho, boot_tau = np.round(boot_rho, 12), np.round(boot_tau, 12)
    rho_low, rho_high = _percentiles(boot_rho, tail)
    tau_low, tau_high = _percentiles(boot_tau, tail)
    fisher_low, fisher_high = _fisher_interval(rho, n, confidence)
    return RankCorrelation(
        n=n, spearman=rho, spearman_p=float(spearman.pvalue),
        spearman_low=rho_low, spearman_high=rho_high,
        spearman_fisher_low=fisher_low, spearman_fisher_high=fisher_high,
        kendall=round(float(kendall.statistic), 12), kendall_p=float(kendall.pvalue),
        kendall_low=tau_low, kendall_high=tau_high,
        confidence=confidence, n_bootstrap=n_bootstrap, seed=seed,
    )


def stage_correlation(frame: pd.DataFrame, *, confidence: float = 0.95,
                      n_bootstrap: int = 2000, seed: int = 0) -> Analysis:
    """Does the stage-1 reward rank architectures as the stage-2 reward does?

    Pairs ``reward_stage1`` with ``reward_stage2`` of the completed trials (not pruned,
    rejected or failed) of each study: the early-termination rule is only sound when
    these agree.

    Args:
        frame: A :func:`~analysis.tables.trials_frame`.
        confidence, n_bootstrap, seed: See :func:`rank_correlation`.

    Returns:
        Table: a row per study with at least 3 pairs and the :class:`RankCorrelation`
        fields; stats: the first row's fields.

    Raises:
        InsufficientData: No study has 3 completed trials with both stage rewards.

    Example:
        >>> stage_correlation(trials_frame(storage, ["quickstart"])).table
    """
    data = completed_trials(frame, "reward_stage2")
    data = data[data["reward_stage1"].notna()]
    rows, pairs = [], {}
    for study, group in data.groupby("study", sort=True):
        if len(group) >= 3:
            result = rank_correlation(group["reward_stage1"], group["reward_stage2"],
                                      confidence=confidence, n_bootstrap=n_bootstrap, seed=seed)
            rows.append({"study": study, **result.as_dict()})
            pairs[str(study)] = group
    if not rows:
        raise InsufficientData("stage-1 vs stage-2 reward: no study has 3 completed trials "
                               "with both stage rewards")
    table = pd.DataFrame(rows)
    title = "Stage-1 vs stage-2 reward"
    figure = _pair_figure(
        {f"{study} (rho {row['spearman']:.2f})": (g["reward_stage1"], g["reward_stage2"],
                                                   g["number"])
         for (study, g), row in zip(pairs.items(), rows)},
        "reward_stage1", "reward_stage2", title)
    return Analysis(title=title, table=table, figure=figure, stats=rows[0],
                    notes=_CI_NOTE + " Completed trials with both stage rewards.")


def retrain_studies(storage: StorageLike, source_study: str) -> list[str]:
    """The names of the retrain studies linked to ``source_study`` (user attr ``retrain_of``).

    Example:
        >>> retrain_studies("sqlite:///nas-optuna.db", "quickstart")
        ['quickstart-retrain']
    """
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return sorted(s.study_name for s in summaries
                  if s.user_attrs.get("retrain_of") == source_study)


def retrain_pairs(storage: StorageLike, retrain_study: str) -> pd.DataFrame:
    """Search reward and retrained reward of each retrained architecture.

    Reads the completed trials of ``retrain_study`` and joins them to their source trials
    by the linking convention (module docstring). Several retrain trials of one source
    trial (e.g. seeds) are averaged into one row. Source trials without a reward, or
    rejected by a budget, are dropped.

    Returns:
        A row per source trial: ``source_study``, ``source_trial``, ``selection``,
        ``retrains`` (how many retrain trials were averaged), ``search_reward``,
        ``retrained_reward``, ``source_state``, ``params_generated``, ``genotype``.

    Raises:
        KeyError: The retrain study or a source study does not exist.
        InsufficientData: The study holds no linked, completed retrain trial.

    Example:
        >>> retrain_pairs("sqlite:///nas-optuna.db", "quickstart-retrain").head()
    """
    storage = open_storage(storage)
    study = optuna.load_study(study_name=retrain_study, storage=storage)
    default_source = study.user_attrs.get("retrain_of")
    metrics = list(study.metric_names or [])
    index = metrics.index("reward") if "reward" in metrics else 0
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        source = attrs.get("source_study", default_source)
        if source is None or attrs.get("source_trial") is None or trial.values is None:
            continue
        rows.append({"source_study": str(source), "source_trial": int(attrs["source_trial"]),
                     "selection": attrs.get("selection", "unknown"),
                     "retrained_reward": float(trial.values[index])})
    if not rows:
        raise InsufficientData(f"retrain study {retrain_study!r} has no completed trial "
                               "linked to a source trial")
    retrained = (pd.DataFrame(rows)
                 .groupby(["source_study", "source_trial"], sort=True)
                 .agg(selection=("selection", "first"), retrains=("retrained_reward", "size"),
                      retrained_reward=("retrained_reward", "mean"))
                 .reset_index())
    sources = trials_frame(storage, sorted(retrained["source_study"].unique()))
    sources = sources[sources["rejected"].isna() & sources["reward"].notna()]
    sources = sources.rename(columns={"study": "source_study", "number": "source_trial",
                                      "reward": "search_reward", "state": "source_state"})
    joined = retrained.merge(
        sources[["source_study", "source_trial", "search_reward", "source_state",
                 "params_generated", "genotype"]],
        on=["source_study", "source_trial"], how="inner")
    return joined[["source_study", "source_trial", "selection", "retrains", "search_reward",
                   "retrained_reward", "source_state", "params_generated", "genotype"]]


def retrain_correlation(storage: StorageLike, retrain_study: str, *, confidence: float = 0.95,
                        n_bootstrap: int = 2000, seed: int = 0) -> Analysis:
    """Does the search reward rank architectures as a longer retraining does? (Fig. 9).

    Joins a retrain study to its source (:func:`retrain_pairs`) and computes
    :func:`rank_correlation` over all pairs and per ``selection`` (``top``: the search's
    best, ``random``: a random sample; the paper reports rho per set).

    Args:
        storage: Optuna storage URL (or an opened storage).
        retrain_study: The retrain study's name.
        confidence, n_bootstrap, seed: See :func:`rank_correlation`.

    Returns:
        Table: a row for ``all`` and per selection with at least 3 pairs, with the
        :class:`RankCorrelation` fields; stats: the ``all`` row.

    Raises:
        KeyError: A study does not exist.
        InsufficientData: Fewer than 3 linked pairs.

    Example:
        >>> retrain_correlation(storage, "quickstart-retrain").stats["spearman"]
    """
    pairs = require(retrain_pairs(storage, retrain_study), "search vs retrained reward", 3)
    groups = {"all": pairs, **{str(k): g for k, g in pairs.groupby("selection", sort=True)}}
    rows = []
    for selection, group in groups.items():
        if len(group) >= 3:
            result = rank_correlation(group["search_reward"], group["retrained_reward"],
                                      confidence=confidence, n_bootstrap=n_bootstrap, seed=seed)
            rows.append({"selection": selection, **result.as_dict()})
    table = pd.DataFrame(rows)
    title = f"Search vs retrained reward ({retrain_study})"
    figure = _pair_figure(
        {f"{selection} (n {len(g)})": (g["search_reward"], g["retrained_reward"],
                                       g["source_trial"])
         for selection, g in groups.items() if selection != "all"},
        "search reward", "retrained reward",
        f"{title}: Spearman rho {rows[0]['spearman']:.3f} "
        f"[{rows[0]['spearman_low']:.3f}, {rows[0]['spearman_high']:.3f}]")
    return Analysis(title=title, table=table, figure=figure, stats=rows[0],
                    notes=_CI_NOTE + " Pairs: completed retrain trials joined to their "
                    "source trials (user attrs source_study / source_trial); repeated "
                    "retrains of a source trial are averaged.")


_CI_NOTE = ("Intervals: percentile bootstrap over resampled pairs (seeded) for Spearman's "
            "rho and Kendall's tau-b; Fisher z interval for rho in spearman_fisher_low/high.")


def _pair_figure(groups: dict[str, tuple[pd.Series, pd.Series, pd.Series]], x_name: str,
                 y_name: str, title: str) -> go.Figure:
    """Values (left) and ranks, 1 = best (right), of two evaluations, a trace per group."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("values", "ranks (1 = best)"))
    x_all = pd.concat([g[0] for g in groups.values()])
    y_all = pd.concat([g[1] for g in groups.values()])
    x_rank = x_all.rank(ascending=False, method="average")
    y_rank = y_all.rank(ascending=False, method="average")
    start = 0
    for name, (x, y, number) in groups.items():
        stop = start + len(x)
        common = {"mode": "markers", "name": name, "legendgroup": name,
                  "text": [f"trial {n}" for n in number]}
        figure.add_trace(go.Scatter(x=x, y=y, **common), row=1, col=1)
        figure.add_trace(go.Scatter(x=x_rank.iloc[start:stop], y=y_rank.iloc[start:stop],
                                    showlegend=False, **common), row=1, col=2)
        start = stop
    figure.update_xaxes(title_text=x_name)
    figure.update_yaxes(title_text=y_name)
    figure.update_xaxes(autorange="reversed", row=1, col=2)
    figure.update_yaxes(autorange="reversed", row=1, col=2)
    figure.update_layout(title_text=title)
    return figure


def _rowwise_spearman(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    rx = stats.rankdata(xs, axis=1)
    ry = stats.rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    r = (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _percentiles(values: np.ndarray, tail: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


def _fisher_interval(rho: float, n: int, confidence: float) -> tuple[float, float]:
    if n <= 3 or np.isnan(rho):
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    half = z * np.sqrt(1.06 / (n - 3))
    with np.errstate(divide="ignore"):
        centre = np.arctanh(np.clip(rho, -1.0, 1.0))
    return float(np.tanh(centre - half)), float(np.tanh(centre + half))
