"""Stored studies for the analysis tests, made of realistic trials (no training).

One SQLite storage holds:

* ``controller`` (sampler ``ppo``, template space): 20 completed trials 0-19 with rewards
  0.40 + 0.01 i, two pruned (20, 21), one rejected by a budget (22), one failed (23);
* ``random``: 20 completed trials with rewards 0.30 + 0.005 i (all below the controller's);
* ``pareto``: maximise reward, minimise latency_ms, with a known front, a dominated pair,
  an infeasible trial and a pruned one;
* ``controller-retrain`` (``retrain_of = controller``) and ``random-retrain``: retrain
  studies by the linking convention of :mod:`analysis.correlation`;
* ``empty``: a study without trials.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from analysis import trials_frame

# The template space's choices (search_spaces/template.py); test_genotype checks that the
# fixture's params rebuild an architecture of the real space.
OPERATIONS = ("sep_conv_3x3", "sep_conv_5x5", "global_average_pool", "max_pool_3x3",
              "sep_conv_5x5_dil6", "skip_connect")
AGGREGATIONS = ("psum", "cat")
NUM_BLOCKS = 7

TOP_TEMPLATE = ("skip_connect", "sep_conv_5x5", "cat")     # template 0 of trials 10-19
EARLY_TEMPLATE = ("sep_conv_3x3", "max_pool_3x3", "psum")  # template 0 of trials 0-9
SHARED_TEMPLATE = ("global_average_pool", "sep_conv_3x3", "psum")  # template 1, always
UNUSED_TEMPLATE = ("max_pool_3x3", "sep_conv_5x5_dil6", "cat")     # template 2, no block


def template_params(templates: list[tuple[str, str, str]], stride2: int,
                    repeats: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params and distributions of a template-space trial (real names and choices).

    Blocks alternate between templates 0 and 1; the first ``stride2`` of the three
    strided blocks have stride 2.
    """
    params: dict[str, Any] = {}
    distributions: dict[str, Any] = {}
    for t, (op1, op2, agg) in enumerate(templates):
        for name, value, choices in ((f"template_{t}_op1", op1, OPERATIONS),
                                     (f"template_{t}_op2", op2, OPERATIONS),
                                     (f"template_{t}_agg", agg, AGGREGATIONS)):
            params[name], distributions[name] = value, CategoricalDistribution(choices)
    for b in range(NUM_BLOCKS):
        if b < NUM_BLOCKS // 2:
            params[f"block_{b}_stride"] = 2 if b < stride2 else 1
            distributions[f"block_{b}_stride"] = CategoricalDistribution((1, 2))
        locations = tuple(range(2 + b))
        for name, value in ((f"block_{b}_loc1", b), (f"block_{b}_loc2", b + 1)):
            params[name], distributions[name] = value, CategoricalDistribution(locations)
        params[f"block_{b}_template"] = b % 2
        distributions[f"block_{b}_template"] = CategoricalDistribution(tuple(range(3)))
        params[f"block_{b}_repeats"] = repeats
        distributions[f"block_{b}_repeats"] = IntDistribution(1, 4)
    return params, distributions


def search_trial(i: int, reward: float | None, *, stride2: int,
                 template0: tuple[str, str, str], state: TrialState = TrialState.COMPLETE,
                 values: list[float] | None = None, constraints: dict[str, float] | None = None,
                 report: bool = True, **attrs: Any) -> optuna.trial.FrozenTrial:
    """A stored search trial with the user attrs nas-optuna's objective writes.

    A trained trial (``reward`` given) stores stage rewards and metrics, and intermediate
    values at steps 1 (stage 1: ``reward - 0.05``) and 2 unless not ``report`` (as in
    multi-objective studies); ``attrs`` set to None are removed.
    """
    params, distributions = template_params([template0, SHARED_TEMPLATE, UNUSED_TEMPLATE],
                                            stride2)
    user_attrs: dict[str, Any] = {
        "params_total": 2_300_000 + 100_000 + 10_000 * i,
        "params_generated": 100_000 + 10_000 * i,
        "macs": 1e8 + 1e6 * i,
        "peak_memory_mb": 20.0 + i,
        "output_stride": 8 * 2**stride2,
        "genotype": f"T0={list(template0)} trial {i}",
        "stem_weights": "warmup",
    }
    intermediate: dict[int, float] = {}
    if reward is not None:
        user_attrs.update(reward_stage1=reward - 0.05, miou=reward - 0.1, macc=reward,
                          fwiou=reward + 0.1)
        intermediate[1] = reward - 0.05
        if state == TrialState.COMPLETE:
            user_attrs["reward_stage2"] = reward
            intermediate[2] = reward
    user_attrs.update(attrs)
    user_attrs = {key: value for key, value in user_attrs.items() if value is not None}
    if values is None and state == TrialState.COMPLETE:
        values = [reward if reward is not None else 0.0]
    return create_trial(state=state, values=values, params=params,
                        distributions=distributions, user_attrs=user_attrs,
                        intermediate_values=intermediate if report else None,
                        constraints=constraints)


def _create(storage: optuna.storages.BaseStorage, name: str, metrics: list[str],
            directions: list[str] | None = None) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name,
                                directions=directions or ["maximize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metrics)
    return study


def _controller(storage: optuna.storages.BaseStorage) -> None:
    study = _create(storage, "controller", ["reward"])
    study.set_user_attr("space", {"name": "template", "profile": "search"})
    study.set_user_attr("dataset", {"name": "synthetic", "num_classes": 6})
    study.set_user_attr("sampler", "ppo")
    study.set_user_attr("pruner", "median")
    study.set_user_attr("train", {"stage1_epochs": 5, "stage2_epochs": 5})
    for i in range(20):
        stride2 = 0 if i >= 10 else i % 3
        template0 = TOP_TEMPLATE if i >= 10 else EARLY_TEMPLATE
        study.add_trial(search_trial(i, 0.40 + 0.01 * i, stride2=stride2, template0=template0))
    for i in (20, 21):  # stage-1 reward 0.30 each
        study.add_trial(search_trial(i, 0.35, stride2=2, template0=EARLY_TEMPLATE,
                                     state=TrialState.PRUNED))
    study.add_trial(search_trial(22, None, stride2=1, template0=EARLY_TEMPLATE,
                                 constraints={"params_generated": 400_000.0},
                                 rejected="params_generated 900,000 > budget 500,000"))
    study.add_trial(search_trial(23, None, stride2=0, template0=EARLY_TEMPLATE,
                                 state=TrialState.FAIL, output_stride=None,
                                 fail_reason="NaN loss in stage 1"))


def _random(storage: optuna.storages.BaseStorage) -> None:
    study = _create(storage, "random", ["reward"])
    study.set_user_attr("space", {"name": "template", "profile": "search"})
    study.set_user_attr("sampler", "random")
    for i in range(20):
        study.add_trial(search_trial(i, 0.30 + 0.005 * i, stride2=i % 4 % 3,
                                     template0=EARLY_TEMPLATE))


#: (reward, latency_ms, feasible) of the Pareto study's completed trials.
PARETO_POINTS = [(0.5, 10.0, True), (0.6, 20.0, True), (0.4, 5.0, True), (0.45, 12.0, True),
                 (0.55, 25.0, True), (0.9, 1.0, False)]
PARETO_FRONT = {0, 1, 2}


def _pareto(storage: optuna.storages.BaseStorage) -> None:
    study = _create(storage, "pareto", ["reward", "latency_ms"], ["maximize", "minimize"])
    study.set_user_attr("space", {"name": "template", "profile": "search"})
    study.set_user_attr("sampler", "nsga2")
    for i, (reward, latency, feasible) in enumerate(PARETO_POINTS):
        trial = search_trial(i, reward, stride2=i % 3, template0=TOP_TEMPLATE,
                             values=[reward, latency], latency_ms=latency, report=False,
                             constraints={"latency_ms": -1.0 if feasible else 1.0})
        study.add_trial(trial)
    study.add_trial(search_trial(len(PARETO_POINTS), 0.2, stride2=0, template0=TOP_TEMPLATE,
                                 state=TrialState.PRUNED, latency_ms=3.0, report=False))


#: (source trial, selection) of the controller's retrain study; trial 19 retrained twice.
RETRAINED = [(19, "top"), (19, "top"), (17, "top"), (15, "top"), (13, "top"),
             (2, "random"), (5, "random"), (8, "random"), (23, "random")]


def retrained_reward(search_reward: float) -> float:
    """The retrained reward of the fixture: monotone in the search reward."""
    return 0.6 + 0.5 * (search_reward - 0.4)


def _retrain(storage: optuna.storages.BaseStorage) -> None:
    study = _create(storage, "controller-retrain", ["reward"])
    study.set_user_attr("retrain_of", "controller")
    for k, (source, selection) in enumerate(RETRAINED):
        reward = retrained_reward(0.40 + 0.01 * source) + (0.002 if k == 1 else 0.0)
        study.add_trial(create_trial(value=reward, user_attrs={
            "source_study": "controller", "source_trial": source, "selection": selection}))
    other = optuna.create_study(storage=storage, study_name="random-retrain",
                                direction="maximize")
    other.set_user_attr("retrain_of", "random")
    other.add_trial(create_trial(value=0.5, user_attrs={
        "source_study": "random", "source_trial": 0, "selection": "random"}))


@pytest.fixture(scope="session")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The storage URL of the fixture's studies (read-only for the tests)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path: Path = tmp_path_factory.mktemp("analysis") / "studies.db"
    url = f"sqlite:///{path}"
    rdb = optuna.storages.RDBStorage(url)  # one engine for every study (faster than URLs)
    _controller(rdb)
    _random(rdb)
    _pareto(rdb)
    _retrain(rdb)
    optuna.create_study(storage=rdb, study_name="empty")
    return url


@pytest.fixture(scope="session")
def frame(storage: str) -> pd.DataFrame:
    """The trials frame of ``controller`` and ``random``."""
    return trials_frame(storage, ["controller", "random"])
