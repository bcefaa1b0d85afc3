"""The Optuna objective: one trial, glue only.

It asks the search space for an architecture (define-by-run), builds the network,
stores its costs, trains it with the two-stage trainer and turns the trainer's
``reporter(stage, metrics)`` calls into ``trial.report`` / ``trial.should_prune``. Every
trial carries the user attrs listed in the design (``params_total``, ``params_generated``,
``macs``, ``peak_memory_mb``, ``latency_ms``, ``latency_protocol``, ``reward_stage1``,
``reward_stage2``, ``miou``, ``macc``, ``fwiou``, ``output_stride``, ``genotype``,
``stem_weights``, ``fail_reason``).

Costs enter the search three ways (``[cost]``, see :class:`~nas_optuna.config.CostConfig`):

* **budget** — one Optuna constraint per budget on every trial (``cost - limit``), which
  TPE, NSGA-II and GP honour; an architecture over budget is *rejected before training*:
  it completes at once with quality 0 (``rejected`` user attr says why), so the sampler
  learns the region is infeasible and no compute is spent. Costs are measured cheapest
  first (sizes, MACs, peak memory, latency) and measuring stops at the first group that
  breaks a budget once the objectives' own costs are known: a parameter budget rejects
  from the parameter count alone, before anything is timed;
* **penalty** — the objective ``penalised_reward = reward - weight * cost / reference``
  (CAS); the stage-1 decision uses the penalised value too;
* **Pareto** — several objectives, e.g. ``reward`` and ``latency_ms``.

Early termination: the value a pruner sees (the reward, minus the cost penalty when there
is one) is reported at every validation: steps ``1 .. k`` inside stage 1 (``[train]
stage1_validations = k``, default 1: only at its end) and ``k + 1`` after stage 2; the
list is also stored as the user attr ``validation_values``. Single-objective studies
report them to Optuna's pruner; multi-objective studies, where Optuna forbids pruning, ask
a :class:`~nas_optuna.pruners.Stage1Rule` over the values earlier trials stored at the same
step (like with like: penalised against penalised), and a stopped trial ends PRUNED with
its stage-1 attrs kept.

Zero-cost proxies (``[proxies]``, :mod:`nas_optuna.proxies`) are computed on every trial
that passed its budgets, before training, and stored as ``proxy_<name>`` user attrs (with
``proxy_seconds``); ``[prescreen]`` rejects an architecture whose proxy falls below a
quantile of the earlier trials' values, like a budget does (COMPLETE, reward 0,
``rejected``), never in its first ``startup`` trials.

Artifacts (``[artifacts]``, :mod:`nas_optuna.artifacts`): when the runner passes an
``artifact_dir``, a trial that completes or is pruned stores its architecture diagram, a
completed trained one also its mask preview (and weights, when asked), plus a note with
the genotype and key numbers, just before it ends. An artifact that cannot be written sets
``artifact_error`` on the trial and never fails it.

Failures: a :class:`~nas_optuna.exceptions.TrialFailed` (NaN loss, out of memory) or any
other exception inside a trial stores ``fail_reason`` on it and re-raises, so the trial
ends FAIL; the runner passes ``catch=(Exception,)`` to ``study.optimize`` so the study goes
on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from nas_optuna.artifacts import upload_trial_artifacts
from nas_optuna.config import COST_METRICS, StudyConfig
from nas_optuna.exceptions import TrialFailed
from nas_optuna.measure import measure_network
from nas_optuna.proxies import PROXY_ATTR_PREFIX, search_proxies
from nas_optuna.pruners import VALIDATION_VALUES_ATTR, Stage1Rule
from nas_optuna.training import SearchData, TrainResult, train_architecture
from search_spaces import SearchSpace

__all__ = ["SearchObjective", "trial_record"]

_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class SearchObjective:
    """Callable objective for ``study.optimize``.

    Args:
        space: The search space.
        data: Search data with cached stem features.
        config: The study config (train, cost and study sections are used).
        device: Where trials train.
        stage1_rule: The stage-1 decision of a multi-objective study (Optuna forbids
            pruning there); None in single-objective studies, which use the pruner.
        artifact_dir: Folder of the artifact store (``[artifacts]`` says what goes in);
            None stores no artifacts and no note.

    Example:
        >>> objective = SearchObjective(space, data, config, torch.device("cpu"))
        >>> study.optimize(objective, n_trials=2, catch=(Exception,))
    """

    def __init__(self, space: SearchSpace, data: SearchData, config: StudyConfig,
                 device: torch.device, stage1_rule: Stage1Rule | None = None,
                 artifact_dir: str | Path | None = None) -> None:
        self.space = space
        self.stage1_rule = stage1_rule
        self.data = data
        self.config = config
        self.device = device
        self.cost_input_size = config.cost.input_size or data.image_size
        self.seed = config.study.seed or 0
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        self._measured: dict[str, dict[str, Any]] = {}

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except TrialFailed as error:
            trial.set_user_attr("fail_reason", str(error))
            raise
        except torch.OutOfMemoryError as error:  # outside training too, e.g. measuring costs
            failed = TrialFailed("out_of_memory", (str(error).splitlines() or [""])[0])
            trial.set_user_attr("fail_reason", str(failed)[:500])
            raise failed from error
        except Exception as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
            raise

    def _run(self, trial: optuna.Trial) -> float | Sequence[float]:
        arch = self.space.suggest(trial)
        genotype = self.space.describe(arch)
        trial.set_user_attr("genotype", genotype)
        trial.set_user_attr("stem_weights", self.data.stem_weights)
        # Seeded per trial so that one trial's weights do not depend on the trials before it.
        torch.manual_seed(self.seed * 100_003 + trial.number)
        stem = self.space.build_stem()
        stem.load_state_dict(self.data.stem_state)
        network = self.space.build(arch, self.data.num_classes, stem=stem).to(self.device)
        costs = self._costs(network, genotype)
        for key, value in costs.items():
            trial.set_user_attr(key, value)
        penalty = self._penalty(costs)
        if penalty is not None:
            trial.set_user_attr("cost_penalty", penalty)
        violations = self._apply_budget(trial, costs)
        if not violations:
            violations = self._prescreen(trial, self._proxies(trial, network))
        if violations:
            # Fast rejection: the sampler learns the region is infeasible, no compute spent.
            trial.set_user_attr("rejected", "; ".join(violations))
            self._store_artifacts(trial, arch, outcome="rejected before training")
            return self._objective({**costs, "reward": 0.0, "miou": 0.0}, penalty)

        last_stage = 2 if self.config.train.stage2_epochs > 0 else 1
        validations = self.config.train.stage1_validations
        step_of_stage = {1: validations, 2: validations + 1} if (
            self.config.train.stage1_epochs > 0) else {2: 1}
        decided_values: list[float] = []

        def decide(step: int, metrics: Mapping[str, float], final: bool) -> bool:
            """Reports the value at ``step``; whether training goes on."""
            decided = metrics["reward"] - (penalty or 0.0)
            decided_values.append(decided)
            trial.set_user_attr(VALIDATION_VALUES_ATTR, list(decided_values))
            if self.stage1_rule is None:
                trial.report(decided, step=step)
            if final:
                return True  # nothing is saved by stopping after the last stage
            if self.stage1_rule is not None:  # multi-objective: Optuna cannot prune
                earlier = self.stage1_rule.earlier(trial.study, trial.number, step)
                # MedianPruner compares a trial's best value so far; the others its last.
                value = max(decided_values) if self.stage1_rule.name == "median" else decided
                return self.stage1_rule.continues(value, earlier, trial_number=trial.number,
                                                  step=step)
            return not trial.should_prune()

        def validation(index: int, metrics: Mapping[str, float]) -> bool:
            return decide(index, metrics, final=False)

        def reporter(stage: int, metrics: Mapping[str, float]) -> bool:
            trial.set_user_attr(f"reward_stage{stage}", metrics["reward"])
            for key in ("miou", "macc", "fwiou"):
                trial.set_user_attr(key, metrics[key])
            return decide(step_of_stage[stage], metrics, final=stage == last_stage)

        result = train_architecture(network, self.data, self.config.train, device=self.device,
                                    reporter=reporter, seed=self.seed + trial.number,
                                    omit_classes=self.config.train.omit_classes,
                                    validation_reporter=validation)
        if result.stopped_after == 1 and "reward_stage1" not in trial.user_attrs:
            # Stopped at a validation inside stage 1: its metrics are the stage's.
            for key, value in result.stage_metrics[1].items():
                trial.set_user_attr("reward_stage1" if key == "reward" else key, value)
        if result.stopped_after is not None:
            self._store_artifacts(trial, arch, outcome=f"pruned after stage {result.stopped_after}")
            raise optuna.TrialPruned(f"stopped after stage {result.stopped_after}")
        self._store_artifacts(trial, arch, outcome="complete", network=network, result=result)
        return self._objective({**costs, **result.final_metrics}, penalty)

    def _store_artifacts(self, trial: optuna.Trial, arch: Any, *, outcome: str,
                         network: torch.nn.Module | None = None,
                         result: TrainResult | None = None) -> None:
        """Diagram, mask preview, weights and note (never raises; see artifacts.py)."""
        if self.artifact_dir is None:
            return
        trained = network is not None and result is not None
        upload_trial_artifacts(
            trial, self.artifact_dir, self.config.artifacts, space=self.space, arch=arch,
            outcome=outcome, data=self.data if trained else None, network=network,
            result=result, device=self.device,
        )

    def _costs(self, network: torch.nn.Module, genotype: str) -> dict[str, Any]:
        """The network's measured costs, measured once per architecture in this process.

        Samplers propose an architecture again (TPE late in a search, retries after a
        crash); its sizes are exact and its latency was measured under the same protocol,
        so measuring again would only spend time.
        """
        if genotype not in self._measured:
            cost = self.config.cost
            needed = {*self.config.study.metrics, cost.penalty.get("metric")} & set(COST_METRICS)

            def rejected(record: Mapping[str, Any]) -> bool:
                """Cheapest first: stop once a budget rejects and the objective has its costs."""
                return needed <= set(record) and bool(self._violations(record))

            self._measured[genotype] = measure_network(
                network, self.cost_input_size, device=self.device,
                latency=cost.measure_latency, latency_warmup=cost.latency_warmup,
                latency_repeats=cost.latency_repeats,
                until=rejected if cost.budget else None,
            )
        return dict(self._measured[genotype])

    def _proxies(self, trial: optuna.Trial, network: torch.nn.Module) -> dict[str, float]:
        """``[proxies]`` of the untrained network, stored as ``proxy_<name>`` user attrs
        (None for a non-finite score, which JSON storages cannot hold faithfully)."""
        names = self.config.proxies.names
        if not names:
            return {}
        started = time.perf_counter()
        scores = search_proxies(network, self.data, names,
                                batch_size=self.config.proxies.batch_size)
        for name, value in scores.items():
            trial.set_user_attr(PROXY_ATTR_PREFIX + name, value if math.isfinite(value) else None)
        trial.set_user_attr("proxy_seconds", round(time.perf_counter() - started, 4))
        return scores

    def _prescreen(self, trial: optuna.Trial, scores: Mapping[str, float]) -> list[str]:
        """``[prescreen]``: the rejection reason when the proxy is below the earlier
        trials' ``quantile`` (never before ``startup`` earlier values); else nothing."""
        settings = self.config.prescreen
        if not settings.proxy:
            return []
        key = PROXY_ATTR_PREFIX + settings.proxy
        earlier = [
            float(t.user_attrs[key])
            for t in trial.study.get_trials(deepcopy=False, states=_FINISHED)
            if t.number < trial.number and t.user_attrs.get(key) is not None
        ]
        if len(earlier) < settings.startup:
            return []
        threshold = float(np.quantile(earlier, settings.quantile))
        value = scores[settings.proxy]
        if math.isfinite(value) and value >= threshold:
            return []
        return [f"{settings.proxy} {value:.6g} below the {settings.quantile:g} quantile "
                f"{threshold:.6g} of {len(earlier)} earlier trials"]

    def _penalty(self, costs: Mapping[str, Any]) -> float | None:
        """CAS's scalarised cost: ``weight * cost / reference``, or None without a penalty."""
        penalty = self.config.cost.penalty
        if not penalty:
            return None
        return float(penalty["weight"]) * float(costs[penalty["metric"]]) / float(
            penalty["reference"])

    def _violations(self, costs: Mapping[str, Any]) -> list[str]:
        """The budgets the measured ``costs`` break (unmeasured ones are not judged)."""
        return [f"{metric} {float(costs[metric]):,.6g} > budget {limit:,.6g}"
                for metric, limit in self.config.cost.budget.items()
                if metric in costs and float(costs[metric]) > limit]

    def _apply_budget(self, trial: optuna.Trial, costs: Mapping[str, Any]) -> list[str]:
        """Sets one constraint per budget (feasible when <= 0); returns the violations.

        A cost left unmeasured because a cheaper budget already rejected the network gets
        the constraint 0 (on its limit): the trial is infeasible by the measured one.
        """
        for metric, limit in self.config.cost.budget.items():
            value = float(costs[metric]) - float(limit) if metric in costs else 0.0
            trial.set_constraint(metric, value)
        return self._violations(costs)

    def _objective(self, values: Mapping[str, Any], penalty: float | None) -> float | list[float]:
        values = dict(values)
        if penalty is not None:
            values["penalised_reward"] = float(values["reward"]) - penalty
        objective = [float(values[metric]) for metric in self.config.study.metrics]
        return objective[0] if len(objective) == 1 else objective


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A flat, printable summary of a finished trial (used by the CLI's progress lines)."""
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "params_generated": attrs.get("params_generated"),
        "output_stride": attrs.get("output_stride"),
        "genotype": attrs.get("genotype"),
        "fail_reason": attrs.get("fail_reason"),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
    }

