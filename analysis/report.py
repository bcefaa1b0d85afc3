"""One self-contained HTML report of a study: every analysis that applies to it.

The page embeds plotly.js once (no network is needed to view it), then each figure, its
summary table, its statistics and a note on which trials it counts. Analyses that do not
apply are listed at the end with the reason: the Pareto front of a single-objective
study, the comparison without ``compare`` studies, the retrain correlation without a
retrain study linked to the study (user attr ``retrain_of``), the template statistics
outside the template space, any analysis without enough trials.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import pandas as pd

from analysis import _html
from analysis._storage import StorageLike, open_storage
from analysis.correlation import retrain_correlation, retrain_studies, stage_correlation
from analysis.pareto import hypervolume_history, pareto_front
from analysis.progress import compare_rewards, reward_over_time
from analysis.proxies import proxy_correlation, retrain_fidelity
from analysis.result import Analysis, InsufficientData
from analysis.size import reward_vs_size
from analysis.stride import stride_over_time, stride_vs_reward
from analysis.tables import completed_trials, trials_frame
from analysis.templates import operation_stats, template_stats

__all__ = ["build_report", "write_report"]

#: Columns of the report's table of best trials.
BEST_COLUMNS = ("number", "state", "reward", "miou", "macc", "fwiou", "params_generated",
                "macs", "latency_ms", "output_stride", "genotype")
#: Study user attrs shown folded, as text, rather than in the attrs table.
_LONG_ATTRS = ("config", "config_source", "train")


def build_report(storage: StorageLike, study_name: str, compare: Sequence[str] = (), *,
                 windows: int = 4, top: int = 5, n_bootstrap: int = 2000,
                 seed: int = 0) -> str:
    """The HTML report of ``study_name`` as one self-contained page.

    Sections: the study's attrs and trial counts, the best trials, reward over search
    time (``study_name`` and the ``compare`` studies together), the comparison with each
    ``compare`` study, reward vs size, output stride vs reward and over time, rewards per
    template and per operation, stage-1 vs stage-2 rank correlation, search vs retrained
    reward for each retrain study linked to the study, and the Pareto front and
    hypervolume history of a multi-objective study.

    Args:
        storage: Optuna storage URL (or an opened storage).
        study_name: The study the report is about.
        compare: Studies to compare it with (e.g. random search beside a controller).
        windows: Windows of trial numbers in the over-time analyses.
        top: Best templates / operations highlighted.
        n_bootstrap: Bootstrap resamples of the rank-correlation intervals.
        seed: Seed of the bootstrap.

    Returns:
        The HTML text.

    Raises:
        KeyError: A study does not exist.
        InsufficientData: ``study_name`` has no trial with a reward.

    Example:
        >>> html = build_report("sqlite:///nas-optuna.db", "ppo", compare=["random"])
        >>> write_report(html, "report.html")
    """
    shown_storage = _redact(storage) if isinstance(storage, str) else type(storage).__name__
    storage = open_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=storage)
    others = [name for name in dict.fromkeys(compare) if name != study_name]
    frame_all = trials_frame(storage, [study_name, *others])
    frame = frame_all[frame_all["study"] == study_name]
    if frame["reward"].notna().sum() == 0:
        raise InsufficientData(f"study {study_name!r} has no finished trial with a reward")

    sections: list[tuple[str, str]] = []  # (title, html)
    skipped: list[tuple[str, str]] = []   # (title, reason)

    def add(name: str, make: Callable[[], Analysis]) -> None:
        try:
            result = make()
        except InsufficientData as error:
            skipped.append((name, str(error)))
            return
        sections.append((result.title, _section(result, len(sections))))

    add("Reward over search time",
        lambda: reward_over_time(frame_all, windows=windows))
    for other in others:
        add(f"reward: {study_name} vs {other}",
            lambda other=other: compare_rewards(frame_all, study_name, other))
    if not others:
        skipped.append(("Comparison with another sampler", "no compare study given"))
    add("Reward vs size", lambda: reward_vs_size(frame))
    add("Reward per output stride", lambda: stride_vs_reward(frame))
    add("Output stride over search time",
        lambda: stride_over_time(frame_all, windows=windows))
    add("Reward per template", lambda: template_stats(frame, top=top))
    add("Reward per operation", lambda: operation_stats(frame, top=top))
    add("Stage-1 vs stage-2 reward",
        lambda: stage_correlation(frame, n_bootstrap=n_bootstrap, seed=seed))
    linked = retrain_studies(storage, study_name)
    for retrain in linked:
        add(f"Search vs retrained reward ({retrain})",
            lambda retrain=retrain: retrain_correlation(storage, retrain,
                                                        n_bootstrap=n_bootstrap, seed=seed))
    for retrain in linked:
        add(f"Rank fidelity against compute ({retrain})",
            lambda retrain=retrain: retrain_fidelity(storage, retrain,
                                                     n_bootstrap=n_bootstrap, seed=seed))
    add("Zero-cost proxies vs search reward",
        lambda: proxy_correlation(frame, n_bootstrap=n_bootstrap, seed=seed))
    if not linked:
        skipped.append(("Search vs retrained reward",
                        f"no retrain study has user attr retrain_of = {study_name!r}"))
    add("Pareto front", lambda: pareto_front(study))
    add("Hypervolume history", lambda: hypervolume_history(study))

    body = [
        f"<h1>Study {_html.escape(study_name)}</h1>",
        f"<p class=\"meta\">storage {_html.escape(shown_storage)}; generated "
        f"{datetime.datetime.now().isoformat(timespec='seconds')} by nas-optuna report"
        + (f"; compared with {_html.escape(', '.join(others))}" if others else "") + "</p>",
        _contents(sections, bool(skipped)),
        _study_section(study, frame),
        _best_section(frame),
        *(html for _, html in sections),
    ]
    if skipped:
        items = "".join(f"<li><b>{_html.escape(name)}</b>: {_html.escape(reason)}</li>"
                        for name, reason in skipped)
        body.append(f"<h2 id=\"not-shown\">Not shown</h2><ul>{items}</ul>")
    return _html.page(f"nas-optuna report: {study_name}", "\n".join(body))


def write_report(html: str, path: str | os.PathLike[str]) -> Path:
    """Writes ``html`` to ``path`` atomically: a temporary file beside it, then a rename.

    A reader never sees a half-written report, and a failed write leaves an existing
    file untouched.

    Raises:
        OSError: The folder does not exist or cannot be written, or ``path`` is a folder.

    Example:
        >>> write_report(build_report(storage, "quickstart"), "report.html")
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    from nas_optuna._files import atomic_path  # lazily: analysis imports no nas_optuna

    with atomic_path(target) as temporary:
        Path(temporary).write_text(html, encoding="utf-8")
    return target


def _section(result: Analysis, index: int) -> str:
    anchor = f"s{index}-{_html.slug(result.title)}"
    parts = [f"<h2 id=\"{anchor}\">{_html.escape(result.title)}</h2>"]
    if result.notes:
        parts.append(f"<p class=\"notes\">{_html.escape(result.notes)}</p>")
    parts.append(_html.figure(result.figure, div_id=f"figure-{anchor}"))
    if result.stats:
        parts.append(_html.mapping(result.stats))
    parts.append(_html.table(result.table))
    return "\n".join(parts)


def _contents(sections: list[tuple[str, str]], skipped: bool) -> str:
    items = ["<li><a href=\"#study\">Study</a></li>", "<li><a href=\"#best\">Best trials</a></li>"]
    items += [f"<li><a href=\"#s{i}-{_html.slug(title)}\">{_html.escape(title)}</a></li>"
              for i, (title, _) in enumerate(sections)]
    if skipped:
        items.append("<li><a href=\"#not-shown\">Not shown</a></li>")
    return f"<nav><ul>{''.join(items)}</ul></nav>"


def _study_section(study: optuna.Study, frame: pd.DataFrame) -> str:
    attrs = {key: value for key, value in study.user_attrs.items() if key not in _LONG_ATTRS}
    overview = {
        "directions": [d.name.lower() for d in study.directions],
        "metrics": study.metric_names or [],
        **attrs,
    }
    counts = frame["state"].value_counts().to_dict()
    rejected = int(frame["rejected"].notna().sum())
    trials = {"trials": len(frame), **{f"{state}": int(n) for state, n in counts.items()},
              "rejected by budget": rejected}
    parts = ["<h2 id=\"study\">Study</h2>", _html.mapping(overview), _html.mapping(trials)]
    for key in _LONG_ATTRS:
        if key in study.user_attrs:
            value = study.user_attrs[key]
            text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
            parts.append(f"<details><summary>{_html.escape(key)}</summary>"
                         f"<pre>{_html.escape(text)}</pre></details>")
    return "\n".join(parts)


def _best_section(frame: pd.DataFrame, count: int = 10) -> str:
    best = completed_trials(frame).sort_values("reward", ascending=False).head(count)
    if best.empty:
        best = frame[frame["reward"].notna()].sort_values("reward", ascending=False).head(count)
    note = ("Completed trials (not pruned or rejected) by reward." if
            not completed_trials(frame).empty else "No completed trial: trials by reward.")
    return "\n".join([
        "<h2 id=\"best\">Best trials</h2>", f"<p class=\"notes\">{note}</p>",
        _html.table(best[list(BEST_COLUMNS)]),
    ])


def _redact(storage: str) -> str:
    """The storage URL without a password."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", storage)
