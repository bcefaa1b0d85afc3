"""Many workers on one study: the trial budget, waiting for stragglers, Ctrl-C, local workers.

Every ``nas-optuna search`` process is a *worker*; workers that open the same storage URL
and study name cooperate on one study. This module holds what makes that safe:

* **The budget.** ``[study] n_trials`` is the study's total. A trial *counts* when it is
  COMPLETE, PRUNED, or FAIL and not retried; a FAIL trial that was re-queued (after a
  crash or Ctrl-C) is replaced by its retry, which counts once it ends. RUNNING trials
  hold a place. Before starting a trial, a worker takes the study lock
  (:func:`nas_optuna.storage.study_lock`), counts, and starts one only if counted +
  running < ``n_trials`` (a queued WAITING trial, such as a retry, is started first), so N
  workers end the study with exactly ``n_trials`` counted trials (Optuna's
  ``MaxTrialsCallback`` checks after each trial, without a lock, and overshoots by up to
  N - 1). Queued trials beyond the budget stay queued, as with ``optimize(n_trials=...)``.
* **Stragglers.** When the budget is taken but other workers' trials still run, a worker
  with heartbeats on does not leave: it polls every few seconds (the runner passes 2), fails
  trials whose heartbeat went stale (which re-queues them) and runs those retries. It ends
  when nothing runs any more, so the surviving worker finishes a dead worker's trial.
* **Ctrl-C.** SIGINT during a trial marks it FAIL with ``fail_reason`` ``"interrupted
  (KeyboardInterrupt)"`` and re-queues it with the same parameters (up to ``max_retry``),
  so re-running the command resumes where it stopped; the KeyboardInterrupt then
  propagates (the CLI prints one line and exits 130). SIGINT while a trial is being
  created is held back until its id is known, so no trial is left RUNNING.
* **Local workers** (``--n-workers K``): K - 1 child processes of the same command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from nas_optuna._optuna import experimental_ok
from nas_optuna.exceptions import TrialFailed

__all__ = [
    "INTERRUPTED",
    "WORKER_ATTR",
    "WORKER_INDEX_ATTR",
    "Budget",
    "BudgetReached",
    "LocalWorkers",
    "WorkerStudy",
    "claim_worker_index",
    "optimize",
    "trial_budget",
]

#: ``fail_reason`` of a trial stopped by Ctrl-C (SIGINT).
INTERRUPTED = "interrupted (KeyboardInterrupt)"
#: Study system attr counting worker starts (the next worker's index).
WORKER_INDEX_ATTR = "nas_optuna:worker_starts"
#: Trial system attr naming the worker that runs the trial: host, pid, heartbeat interval.
WORKER_ATTR = "nas_optuna:worker"

Lock = Callable[[], contextlib.AbstractContextManager]
_logger = logging.getLogger(__name__)


class BudgetReached(Exception):
    """Raised by :meth:`WorkerStudy.ask` when the study needs no further trial."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """How a study's trials stand against ``n_trials`` (see the module docstring)."""

    counted: int
    running: int
    waiting: int
    retried: int

    @property
    def taken(self) -> int:
        """Places taken: counted trials plus those running or queued."""
        return self.counted + self.running + self.waiting


def trial_budget(trials: Sequence[FrozenTrial]) -> Budget:
    """Counts ``trials`` against the budget: a retried FAIL trial does not count."""
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", ())}
    counted = running = waiting = superseded = 0
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            running += 1
        elif trial.state == TrialState.WAITING:
            waiting += 1
        elif trial.state == TrialState.FAIL and trial.number in retried:
            superseded += 1
        else:
            counted += 1
    return Budget(counted, running, waiting, superseded)


class WorkerStudy(optuna.Study):
    """The same study, whose :meth:`ask` respects the budget across all workers.

    Args:
        study: The study (its storage, sampler and pruner are shared, not copied).
        n_trials: The study's total; ``None``: no limit (stop by timeout or Ctrl-C).
        lock: Returns the study lock (held while counting and creating a trial).
        poll_interval: Seconds between checks while waiting for other workers' trials.
        deadline: ``time.monotonic()`` after which a waiting worker gives up.
    """

    def __init__(self, study: optuna.Study, *, n_trials: int | None, lock: Lock,
                 poll_interval: float = 60.0, deadline: float | None = None) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage,
                         sampler=study.sampler, pruner=study.pruner)
        self.n_trials = n_trials
        self.lock = lock
        self.poll_interval = poll_interval
        self.deadline = deadline
        #: The id of the trial this worker started last (Ctrl-C marks it if still running).
        self.current_trial_id: int | None = None

    def ask(self, fixed_distributions: dict | None = None) -> optuna.Trial:
        while True:
            # Ctrl-C while waiting for the lock acts at once; once counting and creating, it
            # waits until the new trial's id is recorded (so that it is marked, not lost).
            with self.lock(), _deferred_sigint():
                budget = self.budget()
                if self.n_trials is None or budget.counted + budget.running < self.n_trials:
                    trial = super().ask(fixed_distributions)
                    self.current_trial_id = trial._trial_id
                    self._mark_started(trial._trial_id)
                    return trial
            # Other workers' trials still hold the last places: stay, in case one dies, but
            # only for trials whose death would show (a worker with heartbeats runs them).
            watched = [t for t in self._storage.get_all_trials(
                self._study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if (t.system_attrs.get(WORKER_ATTR) or {}).get("heartbeat")]
            if not watched or not is_heartbeat_enabled(self._storage) or (
                    self.deadline is not None and time.monotonic() >= self.deadline):
                raise BudgetReached
            time.sleep(self.poll_interval)
            with experimental_ok():
                optuna.storages.fail_stale_trials(self)

    def _mark_started(self, trial_id: int) -> None:
        """Records who runs the trial, and its first heartbeat before the objective starts."""
        heartbeat = self._storage.get_heartbeat_interval() if is_heartbeat_enabled(
            self._storage) else None
        self._storage.set_trial_system_attr(trial_id, WORKER_ATTR, {
            "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": heartbeat})
        if heartbeat is not None:
            self._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]

    def budget(self) -> Budget:
        """The budget as the storage holds it now."""
        return trial_budget(self._storage.get_all_trials(self._study_id, deepcopy=False))


def claim_worker_index(study: optuna.Study, lock: Lock) -> int:
    """A number no other worker start of this study got (0 for the first), via the storage.

    Seeds the worker's sampler (``seed + index``), so that workers, and runs resuming the
    study, do not draw the same random architectures.
    """
    storage, study_id = study._storage, study._study_id
    with lock():
        index = int(storage.get_study_system_attrs(study_id).get(WORKER_INDEX_ATTR, 0))
        storage.set_study_system_attr(study_id, WORKER_INDEX_ATTR, index + 1)
    return index


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], Any], *,
             n_trials: int | None, timeout: float | None, callbacks: Sequence[Callable],
             lock: Lock, retry: Callable[[optuna.Study, FrozenTrial], None] | None,
             poll_interval: float = 60.0) -> WorkerStudy:
    """Runs trials until the study's budget is used, ``timeout`` passes, or Ctrl-C.

    Raises:
        KeyboardInterrupt: After marking the interrupted trial FAIL and re-queueing it.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    worker = WorkerStudy(study, n_trials=n_trials, lock=lock, poll_interval=poll_interval,
                         deadline=deadline)
    guarded = _Interruptible(objective, retry)
    quiet = _QuietLogFilter(guarded)
    logger = logging.getLogger("optuna.study._optimize")
    logger.addFilter(quiet)
    try:
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                worker.optimize(guarded, timeout=left, catch=(Exception,),
                                callbacks=list(callbacks), gc_after_trial=False)
                break
            except BudgetReached:
                break
            except ValueError as error:
                if not (guarded.quiet and "Cannot tell a" in str(error)):
                    raise
                # This worker looked dead to another one (a pause longer than grace_period):
                # its trial was failed and re-queued meanwhile, so its result has no place.
                number = worker._storage.get_trial(worker.current_trial_id).number
                _logger.warning(f"trial {number} was failed by another worker (no heartbeat "
                                f"for grace_period): its result is dropped, its retry runs "
                                f"it again")
    except KeyboardInterrupt:
        if worker.current_trial_id is not None:
            with contextlib.suppress(Exception):  # the storage may be what hangs
                mark_interrupted(worker, worker.current_trial_id, retry, set_state=True)
        raise
    finally:
        logger.removeFilter(quiet)
    return worker


def mark_interrupted(study: optuna.Study, trial_id: int,
                     retry: Callable[[optuna.Study, FrozenTrial], None] | None, *,
                     set_state: bool) -> None:
    """Re-queues a RUNNING trial stopped by Ctrl-C and stores its ``fail_reason``.

    With ``set_state`` it also marks the trial FAIL (otherwise Optuna does, on its way out
    of ``optimize``).
    """
    storage = study._storage
    trial = storage.get_trial(trial_id)
    if trial.state != TrialState.RUNNING:
        return
    if retry is not None:
        retry(study, trial)  # before FAIL: no moment where the study looks one trial short
    storage.set_trial_user_attr(trial_id, "fail_reason", INTERRUPTED)
    if set_state:
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


class _FailedElsewhere(Exception):
    """The trial was finished by another worker while this one still ran it."""


class _Interruptible:
    """The objective, plus what Ctrl-C, or a trial failed by another worker, must leave.

    ``quiet`` is set while Optuna reports such a trial, whose warning (with traceback)
    would only repeat what the worker says in one line.
    """

    def __init__(self, objective: Callable[[optuna.Trial], Any],
                 retry: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        self.objective = objective
        self.retry = retry
        self.quiet = False

    def __call__(self, trial: optuna.Trial) -> Any:
        self.quiet = False
        try:
            value = self.objective(trial)
        except KeyboardInterrupt:
            self.quiet = True
            with contextlib.suppress(Exception):
                mark_interrupted(trial.study, trial._trial_id, self.retry, set_state=False)
            raise
        except Exception:
            if _finished(trial):
                self.quiet = True
                raise _FailedElsewhere from None
            raise
        if _finished(trial):  # Optuna could not tell it: say so, and go on
            self.quiet = True
            raise _FailedElsewhere
        return value


def _finished(trial: optuna.Trial) -> bool:
    return trial.study._storage.get_trial(trial._trial_id).state.is_finished()


class _QuietLogFilter(logging.Filter):
    """Drops Optuna's "Trial N failed ..." warnings of interrupted or taken-over trials,
    and the traceback of trials a :class:`TrialFailed` ended (``fail_reason`` names it).

    Ctrl-C is a request, not an error: the CLI answers it with one line.
    """

    def __init__(self, objective: _Interruptible) -> None:
        super().__init__()
        self.objective = objective

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            # NaN loss, out of memory: an expected failure, named by its reason; no traceback.
            record.exc_info = record.exc_text = None
        return not self.objective.quiet


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[None]:
    """Holds SIGINT back inside the block and raises KeyboardInterrupt at its end."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


# --- local worker processes (--n-workers) ------------------------------------------------
class LocalWorkers:
    """Child worker processes of one ``search`` command, their output prefixed.

    Children run in their own session, so a terminal's Ctrl-C reaches the parent only;
    the parent forwards it (:meth:`interrupt`) and each child stops like a lone worker.

    Args:
        argv: The child command line (``search`` without ``--n-workers``).
        count: Number of children.
        first: Index shown for the first child (``[worker 1]``: the parent is worker 0).
    """

    def __init__(self, argv: Sequence[str], count: int, first: int = 1) -> None:
        self.processes: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        self.interrupting = False
        for index in range(first, first + count):
            process = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, text=True, bufsize=1,
            )
            self.processes.append(process)
            for stream, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                thread = threading.Thread(target=self._relay, args=(stream, target, index),
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def _relay(self, stream: IO[str], target: IO[str], index: int) -> None:
        for line in stream:
            if self.interrupting and line.rstrip().endswith("interrupted"):
                continue  # the parent says it once
            target.write(f"[worker {index}] {line}")
            target.flush()

    def interrupt(self) -> None:
        """Sends SIGINT to every running child."""
        self.interrupting = True
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)

    def wait(self, timeout: float | None = None) -> list[int]:
        """Waits for the children (killing those still running after ``timeout``)."""
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        for thread in self._threads:
            thread.join(timeout=5)
        return codes
