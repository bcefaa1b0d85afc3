"""PPOSampler: an LSTM controller trained with PPO, as in Nekrasov et al. (CVPR 2019, WACV 2020).

How the pieces fit:

* Sampling is define-by-run: every ``suggest_*`` of a controller-modelled parameter is one
  LSTM step, in the order the objective asks. The LSTM state of a running trial lives in
  ``self._rollouts`` (keyed by trial id) until ``after_trial``.
* A trial's decisions and their behaviour log-probabilities are stored in its system attrs
  (``ppo:actions``, ``ppo:log_probs``) as soon as it has made no new decision for
  ``_FLUSH_DELAY`` seconds (a background timer: define-by-run sampling has no "last
  decision" event), and at the latest in ``after_trial``. So a worker killed while the
  trial trains leaves them behind, and the retry Optuna's
  ``RetryHeartbeatStaleTrialCallback`` queues (same params, same system attrs) carries
  them: the retried trial is learned from like any other. A retry that needs further
  decisions first replays the inherited ones through the LSTM.
* Learning happens only by *catching up* on the storage: before a trial's first modelled
  decision, every finished trial not learned yet is learned, one PPO update each, in trial
  number order. The initial weights come from a seed kept in the study's system attrs
  (``ppo:init_seed``). So the policy is a function of the storage alone, and a resumed
  study or a second worker process rebuilds it and keeps learning from every trial. A FAIL
  trial that was retried (its number is in another trial's ``retry_history``) is not
  learned from: its retry is.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from nas_optuna.samplers._controller import _Controller, _Rollout
from nas_optuna.samplers._learner import _Learner, _Trajectory
from nas_optuna.samplers._reward import _RewardFunction

__all__ = ["PPOSampler"]

_ACTIONS_KEY = "ppo:actions"
_LOG_PROBS_KEY = "ppo:log_probs"
_INIT_SEED_KEY = "ppo:init_seed"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: Seconds without a new decision after which a running trial's decisions are stored.
_FLUSH_DELAY = 0.25


class PPOSampler(BaseSampler):
    """Sampler driven by an LSTM controller trained with PPO (Nekrasov et al.).

    A 2-layer LSTM emits one decision per ``suggest_*`` call, in the order the objective
    suggests them; each parameter name has its own softmax head, created when the name is
    first seen (a name that comes back with another number of choices gets another head).
    Categorical parameters and integer parameters with at most
    ``max_int_choices`` values (linear scale, ``step`` respected) are modelled; floats,
    log-scale and wider integer ranges are delegated to ``fallback_sampler``. After each
    finished trial the controller takes one PPO step (clipped objective, EMA baseline) over
    trials of the buffer of the last ``buffer_size`` ones.

    The policy is rebuilt from the storage: every trial stores its decisions and their
    log-probabilities in its system attrs (``ppo:actions``: ``[name, action, n_choices]``
    per decision, ``ppo:log_probs``), the initial weights' seed is stored in the study's
    system attrs, and the sampler learns from every finished trial it has not learned from
    yet — whichever process ran it — in trial-number order. A study resumed by a new
    process, or worker processes sharing a storage, therefore keep learning. With trials
    finishing in number order (one worker, ``n_jobs=1``), replay reproduces the exact
    update sequence; with several workers the same trials are learned, possibly in another
    order in each process.

    Only decisions the controller made are learned from: parameters fixed by
    ``enqueue_trial`` or sampled by the fallback are not part of the sequence, and trials
    added with ``add_trial`` or run by another sampler (no stored log-probabilities) are
    skipped.

    Rewards (maximised): a complete trial's value, negated if minimised; a pruned trial's
    last intermediate value; failed trials (and pruned ones without intermediate values)
    are skipped unless ``fail_penalty`` is given. Multi-objective values are scalarised by
    ``weights`` or MnasNet-style by ``mnasnet_target``/``mnasnet_w``.

    Example:
        >>> import optuna
        >>> from nas_optuna.samplers import PPOSampler
        >>> def objective(trial):
        ...     ops = [trial.suggest_categorical(f"op{i}", ["conv", "pool", "skip"])
        ...            for i in range(4)]
        ...     return ops.count("conv") + 0.1 * trial.suggest_float("x", 0, 1)
        >>> study = optuna.create_study(direction="maximize", sampler=PPOSampler(seed=0))
        >>> study.optimize(objective, n_trials=20)

    Args:
        seed: Seed of sampling (controller and fallback) and, on a new study, of the
            controller's initial weights. Give each worker process its own seed (or
            ``None``): workers with one seed and one policy sample the same architectures.
        fallback_sampler: Sampler of the parameters the controller does not model;
            defaults to ``RandomSampler(seed=seed)``. Its ``before_trial``/``after_trial``
            hooks are forwarded.
        max_int_choices: Largest number of values of an integer parameter that gets a head.
        learning_rate: Adam's learning rate. The papers use ``1e-4`` over 2000+
            architectures; the default ``3e-3`` learns within a few hundred trials (see
            docs/benchmarks.md, "PPOSampler").
        clip_range: PPO clip range of the probability ratio (papers: 0.1).
        baseline_decay: Decay of the exponential-moving-average reward baseline (papers:
            0.95).
        max_grad_norm: Gradient-norm clipping (papers: 2.0).
        entropy_weight: Weight of the mean per-decision entropy bonus (papers: none, 0).
        buffer_size: Number of most recent trials each update is computed over (papers: 100).
        batch_size: Trials per update: the newest one and a random sample of the rest of
            the buffer, drawn reproducibly. The default 16 learned as fast as the whole
            buffer in the benchmark at a third of the cost (about 20 ms per trial instead of
            45 on one CPU core). ``None``: the whole buffer, as in the papers.
        normalize_advantages: Divide each update's advantages by their standard deviation
            over the buffer. Off by default, as in the papers: Adam's steps hardly depend on
            the scale of the gradient, hence of the rewards, anyway.
        fail_penalty: Reward of failed trials (and pruned trials without intermediate
            values), on the maximised scale, e.g. ``0.0`` as the papers score failed runs.
            ``None`` skips them.
        weights: Multi-objective scalarisation: ``sum(w_i * s_i * v_i)`` with ``s_i`` = +1
            for maximised and -1 for minimised objectives. Default: equal weights ``1/n``.
        mnasnet_target: If given, scalarise two objectives (quality, cost) MnasNet-style
            instead: ``s_0 * v_0 * (v_1 / mnasnet_target) ** mnasnet_w``.
        mnasnet_w: MnasNet exponent, e.g. ``-0.07`` (soft constraint).
        hidden_size: LSTM width (papers: 100).
        num_layers: LSTM layers (papers: 2).
        init_range: Initial parameters are uniform in ``[-init_range, init_range]`` (papers:
            0.1).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        fallback_sampler: BaseSampler | None = None,
        max_int_choices: int = 64,
        learning_rate: float = 3e-3,
        clip_range: float = 0.1,
        baseline_decay: float = 0.95,
        max_grad_norm: float = 2.0,
        entropy_weight: float = 0.0,
        buffer_size: int = 100,
        batch_size: int | None = 16,
        normalize_advantages: bool = False,
        fail_penalty: float | None = None,
        weights: Sequence[float] | None = None,
        mnasnet_target: float | None = None,
        mnasnet_w: float = -0.07,
        hidden_size: int = 100,
        num_layers: int = 2,
        init_range: float = 0.1,
    ) -> None:
        if fallback_sampler is not None and not isinstance(fallback_sampler, BaseSampler):
            raise TypeError(
                f"PPOSampler: fallback_sampler must be an Optuna sampler, got {fallback_sampler!r}"
            )
        if weights is not None:
            weights = [float(w) for w in weights]
        if weights is not None and mnasnet_target is not None:
            raise ValueError("PPOSampler: give either weights or mnasnet_target, not both")
        if mnasnet_target is not None and not mnasnet_target > 0:
            raise ValueError(f"PPOSampler: mnasnet_target must be > 0, got {mnasnet_target}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"PPOSampler: batch_size must be >= 1 or None, got {batch_size}")
        for name, value in (("max_int_choices", max_int_choices), ("buffer_size", buffer_size),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"PPOSampler: {name} must be >= 1, got {value}")
        if not learning_rate > 0 or not clip_range > 0 or not max_grad_norm > 0:
            raise ValueError("PPOSampler: learning_rate, clip_range and max_grad_norm must be > 0")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"PPOSampler: baseline_decay must be in [0, 1), got {baseline_decay}")
        self._seed = seed
        self._fallback = fallback_sampler if fallback_sampler is not None else RandomSampler(seed)
        self._max_int_choices = max_int_choices
        self._learner_options = dict(
            learning_rate=learning_rate, clip_range=clip_range, baseline_decay=baseline_decay,
            max_grad_norm=max_grad_norm, entropy_weight=entropy_weight,
            buffer_size=buffer_size, batch_size=batch_size,
            normalize_advantages=normalize_advantages,
        )
        self._reward_options = dict(weights=weights,
                                    mnasnet_target=mnasnet_target, mnasnet_w=mnasnet_w,
                                    fail_penalty=fail_penalty)
        self._controller_options = dict(hidden_size=hidden_size, num_layers=num_layers,
                                        init_range=init_range)
        self._rng = torch.Generator().manual_seed(_fresh_seed() if seed is None else seed)
        self._lock = threading.RLock()
        self._rollouts: dict[int, _Rollout] = {}
        self._decisions: dict[int, list[tuple[str, int, int, float]]] = {}
        self._study_key: tuple[int, int] | None = None
        self._controller: _Controller | None = None
        self._learner: _Learner | None = None
        self._reward: _RewardFunction | None = None
        self._seen: set[int] = set()
        self._timers: dict[int, threading.Timer] = {}
        self._last_decision: dict[int, float] = {}
        self._flushed: dict[int, int] = {}

    @property
    def controller(self) -> torch.nn.Module | None:
        """The policy network (``None`` until the sampler first meets a study)."""
        return self._controller

    @property
    def n_learned(self) -> int:
        """Number of PPO updates taken, i.e. trials learned from."""
        return 0 if self._learner is None else self._learner.n_updates

    # --- BaseSampler ------------------------------------------------------------------
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        # Define-by-run: the controller emits decisions one suggest call at a time.
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        values = _modelled_values(param_distribution, self._max_int_choices)
        if values is None:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        with self._lock, _one_thread():
            self._bind(study)
            assert self._controller is not None
            rollout = self._rollouts.get(trial._trial_id)
            if rollout is None:
                # A trial's first decision: learn from everything finished so far first.
                self._catch_up(study)
                rollout = self._rollouts[trial._trial_id] = _Rollout()
                self._decisions[trial._trial_id] = self._replay_inherited(trial, rollout)
            kind = self._controller.kind_id(param_name, len(values))
            logits = self._controller.step(rollout, kind).tolist()
            uniform = float(torch.rand((), generator=self._rng))
            action, log_prob = _sample(logits, uniform)
            rollout.previous = (kind, action)
            self._decisions[trial._trial_id].append((param_name, action, len(values), log_prob))
            self._schedule_flush(study, trial._trial_id)
        return values[action]

    def _schedule_flush(self, study: Study, trial_id: int) -> None:
        """Stores the decisions once the trial has made none for ``_FLUSH_DELAY`` seconds."""
        self._last_decision[trial_id] = time.monotonic()
        if trial_id not in self._timers:
            self._start_timer(study, trial_id, _FLUSH_DELAY)

    def _start_timer(self, study: Study, trial_id: int, delay: float) -> None:
        timer = threading.Timer(delay, self._flush, args=(study, trial_id))
        timer.daemon = True
        self._timers[trial_id] = timer
        timer.start()

    def _flush(self, study: Study, trial_id: int) -> None:
        with self._lock:
            if self._timers.pop(trial_id, None) is None or trial_id not in self._decisions:
                return  # the trial ended (after_trial stored them) or was never ours
            idle = time.monotonic() - self._last_decision[trial_id]
            if idle < _FLUSH_DELAY:  # still deciding: look again later
                self._start_timer(study, trial_id, _FLUSH_DELAY - idle)
                return
            decisions = self._decisions[trial_id]
            if self._flushed.get(trial_id) == len(decisions):
                return
            try:
                _store_decisions(study, trial_id, decisions)
            except Exception:  # noqa: BLE001 - finished elsewhere meanwhile: nothing to keep
                return
            self._flushed[trial_id] = len(decisions)

    def _replay_inherited(
        self, trial: FrozenTrial, rollout: _Rollout
    ) -> list[tuple[str, int, int, float]]:
        """Decisions a retried trial inherited, replayed into ``rollout`` (teacher-forced).

        A retry of a trial killed while it was still suggesting has the first decisions
        (stored) but not the rest; the LSTM must see those first ones before it goes on.
        """
        actions = trial.system_attrs.get(_ACTIONS_KEY)
        log_probs = trial.system_attrs.get(_LOG_PROBS_KEY)
        if not actions or log_probs is None or len(log_probs) != len(actions):
            return []
        assert self._controller is not None
        inherited = []
        for (name, action, n_choices), log_prob in zip(actions, log_probs):
            kind = self._controller.kind_id(name, n_choices)
            self._controller.step(rollout, kind)
            rollout.previous = (kind, action)
            inherited.append((name, action, n_choices, log_prob))
        return inherited

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            self._rollouts.pop(trial._trial_id, None)
            decisions = self._decisions.pop(trial._trial_id, None)
            timer = self._timers.pop(trial._trial_id, None)
            if timer is not None:
                timer.cancel()
            self._last_decision.pop(trial._trial_id, None)
            flushed = self._flushed.pop(trial._trial_id, None)
            if decisions and flushed != len(decisions):
                # Written while the trial still runs: Optuna stores the final state after this.
                _store_decisions(study, trial._trial_id, decisions)
        self._fallback.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        with self._lock:
            self._rng.manual_seed(_fresh_seed())
        self._fallback.reseed_rng()

    # --- learning from the storage ----------------------------------------------------
    def catch_up(self, study: Study) -> int:
        """Learns from every finished trial of ``study`` not learned yet.

        Called automatically before each trial's first modelled decision; call it to bring
        the policy up to date for inspection (e.g. after ``study.optimize`` returns).

        Returns:
            The number of trials learned from by this call.
        """
        with self._lock, _one_thread():
            self._bind(study)
            return self._catch_up(study)

    def _bind(self, study: Study) -> None:
        key = (id(study._storage), study._study_id)
        if key == self._study_key:
            return
        # A new study (or the same one through another storage object): start from the
        # stored initial weights and replay its finished trials.
        init_seed = _init_seed(study, self._seed)
        self._controller = _Controller(seed=init_seed, **self._controller_options)
        self._learner = _Learner(self._controller, seed=init_seed, **self._learner_options)
        self._reward = _RewardFunction(study.directions, **self._reward_options)
        self._seen = set()
        self._study_key = key

    def _catch_up(self, study: Study) -> int:
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        # Retried FAIL trials (crash, stale heartbeat, interruption) are learned through
        # their retry, which carries the same decisions.
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
        new = sorted((t for t in trials if t.state in _FINISHED and t.number not in self._seen),
                     key=lambda t: t.number)
        learned = 0
        for trial in new:
            self._seen.add(trial.number)
            # Finished: its after_trial has run, unless it was finished elsewhere (told by
            # another process, failed as stale); either way its rollout is over.
            self._rollouts.pop(trial._trial_id, None)
            self._decisions.pop(trial._trial_id, None)
            timer = self._timers.pop(trial._trial_id, None)
            if timer is not None:
                timer.cancel()
            self._last_decision.pop(trial._trial_id, None)
            self._flushed.pop(trial._trial_id, None)
            if trial.state == TrialState.FAIL and trial.number in retried:
                continue
            trajectory = self._trajectory(trial)
            if trajectory is not None:
                assert self._learner is not None
                self._learner.learn(trajectory)
                learned += 1
        return learned

    def _trajectory(self, trial: FrozenTrial) -> _Trajectory | None:
        actions = trial.system_attrs.get(_ACTIONS_KEY)
        log_probs = trial.system_attrs.get(_LOG_PROBS_KEY)
        if not actions or log_probs is None or len(log_probs) != len(actions):
            return None  # not sampled by a PPOSampler (enqueued, added, other sampler)
        assert self._reward is not None and self._controller is not None
        reward = self._reward(trial)
        if reward is None:
            return None
        kinds = [self._controller.kind_id(name, n) for name, _, n in actions]
        return _Trajectory(
            kinds=torch.tensor(kinds, dtype=torch.long),
            actions=torch.tensor([a for _, a, _ in actions], dtype=torch.long),
            old_log_probs=torch.tensor(log_probs, dtype=torch.float32),
            reward=float(reward),
        )

    # --- pickling (a lock cannot be pickled) ------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_timers"] = {}
        state["_rng"] = self._rng.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        rng_state = state.pop("_rng")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._rng = torch.Generator()
        self._rng.set_state(rng_state)


def _store_decisions(study: Study, trial_id: int,
                     decisions: Sequence[tuple[str, int, int, float]]) -> None:
    """Writes a running trial's decisions so far (``ppo:actions``, ``ppo:log_probs``)."""
    storage = study._storage
    storage.set_trial_system_attr(trial_id, _ACTIONS_KEY,
                                  [[name, a, n] for name, a, n, _ in decisions])
    storage.set_trial_system_attr(trial_id, _LOG_PROBS_KEY, [lp for *_, lp in decisions])


def _sample(logits: list[float], uniform: float) -> tuple[int, float]:
    """Draws from ``softmax(logits)`` by inverting its CDF at ``uniform`` in [0, 1).

    Plain Python: for one draw from a few dozen choices, tensor ops cost more in dispatch
    than in arithmetic.

    Returns:
        The action and its log-probability.
    """
    top = max(logits)
    weights = [math.exp(value - top) for value in logits]
    total = sum(weights)
    threshold = uniform * total
    cumulative = 0.0
    action = 0
    for index, weight in enumerate(weights):
        if weight > 0.0:
            action = index  # rounding can leave threshold at the total: keep the last real
        cumulative += weight
        if threshold < cumulative:
            break
    return action, math.log(weights[action] / total)


def _modelled_values(distribution: BaseDistribution, max_int_choices: int) -> list[Any] | None:
    """The values the controller chooses among, or ``None`` if the fallback samples it."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        n = (distribution.high - distribution.low) // distribution.step + 1
        if n <= max_int_choices:
            return [distribution.low + i * distribution.step for i in range(n)]
    return None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Runs the controller's tiny tensor ops on one thread, restoring the setting after.

    Two reasons: at these sizes thread synchronisation costs more than it saves (and on a
    busy machine far more), and matmul results can depend on the thread count, while a
    policy rebuilt by another process must replay the updates exactly.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _init_seed(study: Study, seed: int | None) -> int:
    """The seed of the controller's initial weights, shared by all samplers of a study."""
    storage, study_id = study._storage, study._study_id
    stored = storage.get_study_system_attrs(study_id).get(_INIT_SEED_KEY)
    if stored is None:
        storage.set_study_system_attr(study_id, _INIT_SEED_KEY,
                                      _fresh_seed() if seed is None else int(seed))
        # Read back: with workers starting together, the last write wins for everyone
        # who binds afterwards.
        stored = storage.get_study_system_attrs(study_id)[_INIT_SEED_KEY]
    return int(stored)


def _fresh_seed() -> int:
    return random.SystemRandom().randrange(2**31)

