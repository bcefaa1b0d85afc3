"""Zero-cost proxies and cheap predictors against the rewards that cost compute.

Two questions:

* :func:`proxy_correlation` — within one study, does a proxy stored before training
  (``proxy_<name>``) rank the completed architectures as their search reward does? The
  free baselines are always beside them: fewer generated parameters and fewer MACs
  ("small is good"). The ICLR 2023 ZiCo study found that most published proxies do not
  beat the parameter count, so read a proxy's rho against those rows.
* :func:`retrain_fidelity` — for a retrain study, every predictor of the retrained reward
  the source trials carry, with what it cost per architecture: the proxies
  (``proxy_seconds``), stage 1 and the search reward (the trials' durations), the free
  sizes; the figure is rank fidelity against compute, as ``benchmarks/fidelity.py`` draws
  it for the embedded default.

Rejected trials (budget or pre-screen) are left out: their reward is a 0 by rule.
Intervals: :func:`~analysis.correlation.rank_correlation` (seeded percentile bootstrap).

Example:
    >>> frame = trials_frame("sqlite:///nas-optuna.db", ["quickstart"])
    >>> proxy_correlation(frame).table[["predictor", "n", "spearman"]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis._storage import StorageLike, open_storage
from analysis.correlation import rank_correlation, retrain_pairs
from analysis.result import Analysis, InsufficientData
from analysis.tables import PROXY_PREFIX, trials_frame

__all__ = ["proxy_correlation", "retrain_fidelity"]

#: Free predictors: (column, label, sign); fewer parameters / MACs = predicted better.
_SIZES = (("params_generated", "fewer generated parameters", -1.0),
          ("macs", "fewer MACs", -1.0))
_SIZE_LABELS = frozenset(label for _, label, _ in _SIZES)


def _predictors(frame: pd.DataFrame) -> dict[str, tuple[str, float]]:
    """label -> (column, sign) for the sizes and every stored proxy."""
    found = {label: (column, sign) for column, label, sign in _SIZES if column in frame}
    for column in sorted(c for c in frame.columns if c.startswith(PROXY_PREFIX)):
        if column != "proxy_seconds":
            found[column[len(PROXY_PREFIX):]] = (column, 1.0)
    return found


def _correlate(x: pd.Series, y: pd.Series, n_bootstrap: int, seed: int
               ) -> dict[str, float] | None:
    keep = x.notna() & y.notna() & np.isfinite(x.astype(float))
    if keep.sum() < 3 or x[keep].nunique() < 2:
        return None
    result = rank_correlation(x[keep], y[keep], n_bootstrap=n_bootstrap, seed=seed)
    return {"n": result.n, "spearman": result.spearman, "spearman_low": result.spearman_low,
            "spearman_high": result.spearman_high, "kendall": result.kendall}


def _bars(table: pd.DataFrame, title: str) -> go.Figure:
    figure = go.Figure(go.Bar(
        x=table["predictor"], y=table["spearman"],
        error_y={"type": "data", "symmetric": False,
                 "array": table["spearman_high"] - table["spearman"],
                 "arrayminus": table["spearman"] - table["spearman_low"]},
        hovertemplate="%{x}: rho %{y:.3f}<extra></extra>"))
    figure.update_layout(title=title, yaxis={"title": "Spearman rho (95% bootstrap CI)",
                                             "range": [-1, 1]}, template="plotly_white")
    return figure


def proxy_correlation(frame: pd.DataFrame, *, n_bootstrap: int = 2000,
                      seed: int = 0) -> Analysis:
    """Spearman and Kendall of each proxy and free size against the search reward.

    Args:
        frame: :func:`~analysis.tables.trials_frame` rows (one study).
        n_bootstrap, seed: See :func:`~analysis.correlation.rank_correlation`.

    Returns:
        Table: a row per predictor (``predictor``, ``n``, ``spearman`` with its interval,
        ``kendall``), best first; stats: the best proxy and the parameter count's rho.

    Raises:
        InsufficientData: No completed trial stored a proxy, or fewer than 3 did.
    """
    done = frame[(frame["state"] == "COMPLETE") & frame["reward"].notna()]
    if "rejected" in done:
        done = done[done["rejected"].isna()]
    predictors = _predictors(done)
    if not any(label not in _SIZE_LABELS for label in predictors):
        raise InsufficientData("no completed trial stored a zero-cost proxy ([proxies] names)")
    rows = []
    for label, (column, sign) in predictors.items():
        result = _correlate(sign * done[column].astype(float), done["reward"], n_bootstrap, seed)
        if result is not None:
            rows.append({"predictor": label, **result})
    if not any(r["predictor"] not in _SIZE_LABELS for r in rows):
        raise InsufficientData("fewer than 3 completed trials with a finite proxy")
    table = pd.DataFrame(rows).sort_values("spearman", ascending=False, ignore_index=True)
    proxies = table[~table["predictor"].isin(_SIZE_LABELS)]
    params = table.loc[table["predictor"] == _SIZES[0][1], "spearman"]
    stats = {"best_proxy": proxies.iloc[0]["predictor"],
             "best_proxy_spearman": float(proxies.iloc[0]["spearman"]),
             "params_spearman": float(params.iloc[0]) if len(params) else float("nan")}
    return Analysis(
        title="Zero-cost proxies vs search reward", table=table,
        figure=_bars(table, "Zero-cost proxies vs search reward"), stats=stats,
        notes="Completed, not rejected trials; each proxy was computed on the untrained "
              "network before training. A proxy is worth more than a size only where its "
              "interval sits above the parameter count's.")


def retrain_fidelity(storage: StorageLike, retrain_study: str, *, n_bootstrap: int = 2000,
                     seed: int = 0) -> Analysis:
    """Rank fidelity against compute of every predictor of a retrain study's reward.

    Predictors, from the source trials: the search reward (compute: the trial's duration),
    the stage-1 reward (compute unknown in a study, shown at the trial's duration), each
    stored proxy (``proxy_seconds``) and the free sizes (0 s).

    Raises:
        KeyError: A study does not exist.
        InsufficientData: Fewer than 3 linked pairs.
    """
    storage = open_storage(storage)
    pairs = retrain_pairs(storage, retrain_study)
    if len(pairs) < 3:
        raise InsufficientData(f"retrain fidelity: need at least 3 pairs, found {len(pairs)}")
    sources = trials_frame(storage, sorted(pairs["source_study"].unique())).rename(
        columns={"study": "source_study", "number": "source_trial"})
    joined = pairs[["source_study", "source_trial", "retrained_reward", "search_reward"]].merge(
        sources.drop(columns=["reward"]), on=["source_study", "source_trial"], how="inner")
    seconds = joined["duration_s"].astype(float)
    candidates: dict[str, tuple[pd.Series, float]] = {
        "search reward": (joined["search_reward"], float(seconds.mean())),
        "stage-1 reward": (joined["reward_stage1"].astype(float), float(seconds.mean())),
    }
    for label, (column, sign) in _predictors(joined).items():
        cost = 0.0 if not column.startswith(PROXY_PREFIX) else float(
            joined.get("proxy_seconds", pd.Series([np.nan])).astype(float).mean())
        candidates[label] = (sign * joined[column].astype(float), cost)
    rows = []
    for label, (values, cost) in candidates.items():
        result = _correlate(values, joined["retrained_reward"], n_bootstrap, seed)
        if result is not None:
            rows.append({"predictor": label, "seconds_per_arch": cost, **result})
    table = pd.DataFrame(rows)
    title = f"Rank fidelity against compute ({retrain_study})"
    return Analysis(title=title, table=table, figure=_fidelity_figure(table, title),
                    stats={row["predictor"]: row["spearman"] for row in rows},
                    notes="Spearman of each predictor against the retrained reward over the "
                          "retrained architectures; compute per architecture as stored "
                          "(trial durations, proxy_seconds; sizes are free).")


def _fidelity_figure(table: pd.DataFrame, title: str) -> go.Figure:
    x = np.maximum(table["seconds_per_arch"].fillna(0.0).to_numpy(), 1e-3)
    figure = go.Figure(go.Scatter(
        x=x, y=table["spearman"], mode="markers+text", text=table["predictor"],
        textposition="top center",
        error_y={"type": "data", "symmetric": False,
                 "array": table["spearman_high"] - table["spearman"],
                 "arrayminus": table["spearman"] - table["spearman_low"]},
        hovertemplate="%{text}<br>%{x:.3g} s per architecture<br>rho %{y:.3f}<extra></extra>"))
    figure.update_layout(title=title, template="plotly_white",
                         xaxis={"title": "seconds per architecture (free sizes at 1 ms)",
                                "type": "log"},
                         yaxis={"title": "Spearman vs retrained reward (95% CI)"})
    return figure
