"""Early termination after stage 1, as an Optuna pruner and as a rule for any study.

The CVPR 2019 paper ends an architecture's training after stage 1 unless its stage-1
reward beats the running mean of the stage-1 rewards seen so far; an architecture below
the mean still continues with probability ``p``, annealed from 0.9 during the search, so
that early in a search noisy first estimates do not discard too much.

Two forms share one decision function:

* :class:`RunningMeanPruner` — an Optuna pruner (``[pruner] name = "running_mean"``) for
  single-objective studies, reading the stage-1 intermediate values Optuna stores.
* :class:`Stage1Rule` — the same decision (or MedianPruner's) taken by the objective itself
  in multi-objective studies, where Optuna forbids ``trial.report`` and pruning; there the
  earlier stage-1 rewards come from the ``reward_stage1`` user attr of finished trials.

Choices the paper leaves open (ours):

* Annealing: ``p`` falls linearly from ``initial_probability`` (0.9) to
  ``final_probability`` (0.0) over ``anneal_trials`` trials (the trial's number), then
  stays there. The paper's search ran ~1,600 architectures; the default of 1,000 reaches
  ``p = 0`` inside such a search.
* The running mean covers every earlier trial with a stage-1 reward (completed or
  terminated); the first ``n_startup_trials`` (default 1: a mean needs one value) never stop.
* "Beats" means strictly greater (for a minimised objective, strictly smaller).
* The random draw is seeded by ``(seed, trial number)``, so a search's decisions are
  reproducible and independent of how many workers ask in which order.

Example:
    >>> import optuna
    >>> from nas_optuna.pruners import RunningMeanPruner
    >>> study = optuna.create_study(direction="maximize", pruner=RunningMeanPruner(seed=0))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RunningMeanPruner", "Stage1Rule", "STAGE1_RULES", "VALIDATION_VALUES_ATTR",
           "running_mean_continues", "successive_halving_continues"]

#: Names of the stage-1 rules a multi-objective study can use (``[pruner] name``).
STAGE1_RULES = ("median", "running_mean", "successive_halving", "none")
#: Trial user attr: the value a pruner saw at each step (reward minus any cost penalty).
VALIDATION_VALUES_ATTR = "validation_values"

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def running_mean_continues(
    value: float,
    earlier: Sequence[float],
    *,
    trial_number: int,
    maximize: bool = True,
    initial_probability: float = 0.9,
    final_probability: float = 0.0,
    anneal_trials: int = 1000,
    n_startup_trials: int = 1,
    seed: int | None = None,
) -> bool:
    """The CVPR 2019 rule: does an architecture with stage-1 ``value`` go on to stage 2?

    Args:
        value: This trial's stage-1 reward.
        earlier: Stage-1 rewards of the trials before it.
        trial_number: This trial's number (drives the annealing and the random draw).
        maximize: Whether larger values are better.
        initial_probability: ``p`` at trial 0: chance that a below-mean trial continues.
        final_probability: ``p`` after ``anneal_trials``.
        anneal_trials: Trials over which ``p`` falls linearly.
        n_startup_trials: With fewer earlier values than this, always continue.
        seed: Seed of the draw (combined with ``trial_number``).

    Returns:
        True to continue training, False to stop after stage 1.

    Example:
        >>> running_mean_continues(0.6, [0.4, 0.5], trial_number=2)
        True
    """
    if len(earlier) < max(n_startup_trials, 1):
        return True
    mean = float(np.mean(earlier))
    if (value > mean) if maximize else (value < mean):
        return True
    progress = min(trial_number / anneal_trials, 1.0) if anneal_trials > 0 else 1.0
    probability = initial_probability + (final_probability - initial_probability) * progress
    rng = np.random.default_rng([seed if seed is not None else 0, trial_number])
    return bool(rng.random() < probability)


def successive_halving_continues(
    value: float,
    competitors: Sequence[float],
    *,
    step: int,
    min_resource: int = 1,
    reduction_factor: int = 4,
    min_early_stopping_rate: int = 0,
) -> bool:
    """Asynchronous successive halving (Li et al. 2020) at ``step``, maximising.

    Rungs sit at steps ``min_resource * reduction_factor ** (min_early_stopping_rate + r)``
    (r = 0, 1, ...), as in :class:`optuna.pruners.SuccessiveHalvingPruner`; elsewhere a
    trial always goes on. At a rung it goes on when its value is among the best
    ``len(all) // reduction_factor`` of the values that reached that rung (at least the
    best one), where ``all`` are the ``competitors`` (earlier trials at that rung) and
    the trial itself.

    Example:
        >>> successive_halving_continues(0.5, [0.6, 0.7, 0.8], step=1)
        False
        >>> successive_halving_continues(0.9, [0.6, 0.7, 0.8], step=1)
        True
    """
    if min_resource < 1 or reduction_factor < 2 or min_early_stopping_rate < 0:
        raise ValueError("min_resource must be >= 1, reduction_factor >= 2 and "
                         "min_early_stopping_rate >= 0")
    rung = min_resource * reduction_factor ** min_early_stopping_rate
    while rung < step:
        rung *= reduction_factor
    if rung != step:
        return True
    values = sorted([*competitors, value], reverse=True)
    kept = max(len(values) // reduction_factor, 1)
    return value >= values[kept - 1]


def _check_options(
    initial_probability: float, final_probability: float, anneal_trials: int,
    n_startup_trials: int,
) -> None:
    for name, p in (("initial_probability", initial_probability),
                    ("final_probability", final_probability)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if anneal_trials < 0 or n_startup_trials < 0:
        raise ValueError("anneal_trials and n_startup_trials must be >= 0")


class RunningMeanPruner(optuna.pruners.BasePruner):
    """Optuna pruner applying the CVPR 2019 running-mean rule at one step (stage 1).

    Args:
        initial_probability: Chance that a below-mean trial continues at the start (0.9).
        final_probability: That chance after ``anneal_trials`` trials.
        anneal_trials: Trials over which the chance falls linearly.
        n_startup_trials: Trials with fewer earlier stage-1 values never stop.
        step: The reported step the rule applies to (1: after stage 1); other steps
            never prune.
        seed: Seed of the random draws.
    """

    def __init__(
        self,
        *,
        initial_probability: float = 0.9,
        final_probability: float = 0.0,
        anneal_trials: int = 1000,
        n_startup_trials: int = 1,
        step: int = 1,
        seed: int | None = None,
    ) -> None:
        _check_options(initial_probability, final_probability, anneal_trials, n_startup_trials)
        self._options = {
            "initial_probability": initial_probability,
            "final_probability": final_probability,
            "anneal_trials": anneal_trials,
            "n_startup_trials": n_startup_trials,
        }
        self._step = step
        self._seed = seed

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step != self._step:
            return False
        earlier = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=_FINISHED)
            if t.number < trial.number and step in t.intermediate_values
        ]
        return not running_mean_continues(
            trial.intermediate_values[step],
            earlier,
            trial_number=trial.number,
            maximize=study.direction == StudyDirection.MAXIMIZE,
            seed=self._seed,
            **self._options,
        )


class Stage1Rule:
    """The stage-1 decision of a multi-objective study, taken by the objective.

    Optuna raises on ``trial.report`` in multi-objective studies, so the objective asks
    this rule instead, with the stage-1 rewards that earlier trials stored in their
    ``reward_stage1`` user attr; a stopped trial ends PRUNED, its stage-1 values kept.

    Args:
        name: ``median`` (stop when the trial's best value so far is below the median of
            completed trials' values at the step: MedianPruner's semantics, see
            :meth:`earlier`), ``running_mean`` (the CVPR 2019 rule),
            ``successive_halving`` or ``none``.
        n_startup_trials: Trials before this many earlier stage-1 rewards exist never stop
            (median default 5, like MedianPruner; running mean default 1).
        seed: Seed of the running-mean draws.
        **options: The running-mean rule's ``initial_probability``,
            ``final_probability`` and ``anneal_trials``.

    Example:
        >>> rule = Stage1Rule("median", n_startup_trials=2)
        >>> rule.continues(0.3, [0.5, 0.6], trial_number=2)
        False
    """

    def __init__(self, name: str, *, n_startup_trials: int | None = None,
                 seed: int | None = None, **options: float) -> None:
        if name not in STAGE1_RULES:
            raise ValueError(f"no stage-1 rule {name!r}; choose one of {', '.join(STAGE1_RULES)}")
        allowed = {"running_mean": {"initial_probability", "final_probability",
                                    "anneal_trials"},
                   "successive_halving": {"min_resource", "reduction_factor",
                                          "min_early_stopping_rate"}}.get(name, set())
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"stage-1 rule {name!r} has no option {unknown[0]!r}")
        self.name = name
        default_startup = {"median": 5, "successive_halving": 0}.get(name, 1)
        self.n_startup_trials = default_startup if n_startup_trials is None else n_startup_trials
        self.seed = seed
        self.options = options
        if name == "running_mean":
            merged = {"initial_probability": 0.9, "final_probability": 0.0,
                      "anneal_trials": 1000, **options}
            _check_options(merged["initial_probability"], merged["final_probability"],
                           int(merged["anneal_trials"]), self.n_startup_trials)

    def continues(self, reward: float, earlier: Sequence[float], *, trial_number: int,
                  step: int | None = None) -> bool:
        """Whether a trial with ``reward`` (to maximise) at ``step`` goes on training.

        ``earlier`` are the values earlier trials reached at the same step. ``median`` and
        ``running_mean`` decide at every step they are asked at (the objective asks at
        each validation inside stage 1 and at its end); ``successive_halving`` only at its
        rungs (``step`` is required for it).
        """
        if self.name == "none":
            return True
        if self.name == "successive_halving":
            if step is None:
                raise ValueError("successive halving needs the step")
            if len(earlier) < self.n_startup_trials:
                return True
            return successive_halving_continues(reward, earlier, step=step,
                                                **self.options)  # type: ignore[arg-type]
        if self.name == "median":
            if len(earlier) < max(self.n_startup_trials, 1):
                return True
            return reward >= float(np.median(earlier))
        return running_mean_continues(
            reward, earlier, trial_number=trial_number, seed=self.seed,
            n_startup_trials=self.n_startup_trials, **self.options,  # type: ignore[arg-type]
        )

    def earlier(self, study: optuna.Study, trial_number: int, step: int) -> list[float]:
        """The values this rule compares a trial's value at ``step`` with.

        ``median`` has :class:`optuna.pruners.MedianPruner`'s semantics: the values of
        COMPLETE trials only (a stopped trial's low stage-1 value would drag the median
        down), whichever worker finished them. The other rules take every finished trial
        before ``trial_number``: the CVPR 2019 running mean is over every stage-1 reward
        seen, stopped trials' included.
        """
        if self.name == "median":
            return self.earlier_values(study, None, step, states=(TrialState.COMPLETE,))
        return self.earlier_values(study, trial_number, step)

    @staticmethod
    def earlier_values(study: optuna.Study, trial_number: int | None, step: int,
                       states: Sequence[TrialState] = _FINISHED) -> list[float]:
        """The values trials in ``states`` before ``trial_number`` reached at ``step``.

        Read from their ``validation_values`` user attr (what the rule itself saw:
        penalised when the study has a cost penalty); trials stored before that attr
        existed give their ``reward_stage1`` at step 1. ``trial_number=None`` takes every
        such trial, whatever its number.
        """
        values = []
        for t in study.get_trials(deepcopy=False, states=tuple(states)):
            if trial_number is not None and t.number >= trial_number:
                continue
            stored = t.user_attrs.get(VALIDATION_VALUES_ATTR)
            if isinstance(stored, list):
                if len(stored) >= step:
                    values.append(float(stored[step - 1]))
            elif step == 1 and "reward_stage1" in t.user_attrs:
                values.append(float(t.user_attrs["reward_stage1"]))
        return values
