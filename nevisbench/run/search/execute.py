"""The trials of one task, and its winner: `train_trials` trains them in turn in this process (the
one trial of search=none too), `train_trials_in_parallel` on a pool of search workers
(`search.parallel=N`, nevisbench.run.search.parallel), each worker running `trial_job`. Trials finished
before a resume are read back, not rerun. The winner: the lowest dev error (ties: the earlier
trial; no trial finished: the first)."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console

from nevisbench.api.learner import detach_derived
from nevisbench.api.types import TaskInfo
from nevisbench.compute import guard
from nevisbench.compute.flops import FlopMeter, meter_engine
from nevisbench.errors import DataError, PluginError
from nevisbench.run.search.parallel import run_trials, search_slots, stopping
from nevisbench.run.search.study import TaskSearch
from nevisbench.run.store.results import ResultsStore, atomic_write_bytes
from nevisbench.run.task.lightning import quiet_lightning
from nevisbench.run.task.train import TaskTrainer, task_info
from nevisbench.run.task.trial import Trial
from nevisbench.tasks.catalog import TaskSpec
from nevisbench.tasks.loader import TaskData

__all__ = ["train_trials", "train_trials_in_parallel", "trial_job"]


def train_trials(trainer: TaskTrainer, search: TaskSearch, task: TaskInfo, data: TaskData,
                 seed: int) -> tuple[list[Trial], Trial]:
    """Train (or, on resume, read back) every trial of the task in turn; return them and the winner.
    With search=none this is the task's one training."""
    trials: list[Trial] = []
    best: Trial | None = None
    for k in range(search.trials):
        overrides = search.ask()
        trial = Trial.restored(search.load(k), overrides, search, k)
        if trial is None:
            if search.enabled:
                L.seed_everything(seed, verbose=False)  # every trial starts from the same state
            trial = trainer.train_trial(search, task, k, data, seed, overrides)
            if search.enabled:
                search.save(k, trial.record(with_learner=trial.beats(best)), trial.weights() if trial.beats(best) else None)
        # the pruner reads every trial's milestones before the next trial (idempotent: a trial
        # that ran here has reported them; one read back or resumed mid-trial may not have)
        search.report(trial.anytime)
        search.tell(trial.dev_error if trial.failure is None else None, pruned=trial.pruned)
        trials.append(trial)
        if trial.beats(best):
            if best is not None:
                best.release()
            best = trial
            if search.enabled and not trial.resumed:
                # it just saved its weights (a read-back best keeps the ones it saved); the weights of
                # later trials read back after it (a rerun trial's record was deleted) are kept
                search.drop_weights(k, earlier_only=True)
        elif search.enabled:
            trial.release()  # only the best so far stays in memory
    if search.enabled and best is not None:
        search.drop_weights(best.k)
    _say_resumed(trainer.console, task, trials)
    refusals(trials)
    return trials, best or trials[0]


def train_trials_in_parallel(trainer: TaskTrainer, search: TaskSearch, spec: TaskSpec, task: TaskInfo,
                             seed: int) -> tuple[list[Trial], Trial]:
    """`search.parallel=N`: the same trials as `train_trials`, N at once in worker processes, each
    saved as a finished trial; then read back as a resume does. The draws are made up front (grid
    and random samplers draw the same values as in turn)."""
    overrides = [search.ask() for _ in range(search.trials)]
    todo = [(k, overrides[k]) for k in range(search.trials) if search.load(k) is None]
    if todo:
        _write_trial_kit(trainer, search.kit_path, spec, task.index, seed)
        slots = search_slots(min(int(trainer.cfg.search.parallel), len(todo)), trainer.device.type == "cuda")
        run_trials(trial_job, search.kit_path, trainer.store.run_dir, todo, slots, f"task {task.key}")
        search.kit_path.unlink(missing_ok=True)
    ran = {k for k, _ in todo}
    trials: list[Trial] = []
    best: Trial | None = None
    for k in range(search.trials):
        trial = Trial.restored(search.load(k), overrides[k], search, k)
        if trial is None:
            raise DataError(f"the search worker of task {task.key} left no record of trial {k}")
        trial.resumed = k not in ran
        search.tell(trial.dev_error if trial.failure is None else None, pruned=trial.pruned)
        trials.append(trial)
        if trial.beats(best):
            best = trial
    search.drop_weights(best.k if best is not None else -1)
    _say_resumed(trainer.console, task, trials)
    refusals(trials)
    return trials, best or trials[0]


REFUSED = "the task is refused: in a search worker, the learner "  # a trial's failure: it tampered with the worker's meter


def refusals(trials: list[Trial]) -> None:
    """Record, as this process's violations, what the learner did to a search worker's meter (the
    task is then refused at its commit, as if the trial had run here)."""
    for trial in trials:
        if trial.failure is not None and trial.failure.startswith(REFUSED):
            guard.violation(f"trial {trial.k}: {trial.failure[len(REFUSED):]}")


def _say_resumed(console: Console, task: TaskInfo, trials: list[Trial]) -> None:
    resumed = sum(t.resumed for t in trials)
    if resumed:
        console.print(f"Search on {task.key}: {resumed} of {len(trials)} trials finished before the resume; "
                      "they are not rerun.")


def _write_trial_kit(trainer: TaskTrainer, path: Path, spec: TaskSpec, index: int, seed: int) -> None:
    """What a search worker needs to run a trial exactly as this process would (see `trial_job`):
    the task's `TaskStart` and which task it is."""
    start = trainer.start
    for backbone in (start.scenario.initial, start.scenario.carried, start.start_backbone):
        if backbone is not None:
            detach_derived(backbone)
    cfg = start.cfg.copy()
    cfg.trainer.progress_bar = False  # N bars would interleave; a bar changes nothing counted
    cfg.trainer.devices = 1  # a worker sees only its own slot's device (trainer.devices=[3] -> its cuda:0)
    kit = {"start": dataclasses.replace(start, cfg=cfg), "spec": spec, "index": index, "seed": seed}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_bytes(path, lambda handle: torch.save(kit, handle))
    except (TypeError, AttributeError, RuntimeError, pickle.PicklingError) as exc:
        raise PluginError(f"Learner '{trainer.name}' cannot be sent to a search worker ({str(exc).splitlines()[0]}); "
                          "run with search.parallel=1") from None


_DATA: dict[tuple[str, int], TaskData] = {}  # a search worker's task data, loaded once per task


def trial_job(job: dict[str, Any]) -> int:
    """A search worker's job (`search.parallel`, see nevisbench.run.search.parallel): run one trial from
    the task's kit exactly as `train_trials` would (its own FLOP meter, no logger), save it as a
    finished trial, return its number."""
    if stopping():
        raise KeyboardInterrupt  # queued before a Ctrl-C: not started
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
    quiet_lightning()
    kit = torch.load(job["kit"], map_location="cpu", weights_only=False)
    start = kit["start"]
    _engine, audit_every = meter_engine(start.cfg.get("meter"), type(start.learner))  # the run's, in this worker too
    meter = FlopMeter(audit_every=audit_every).watch()
    trainer = TaskTrainer(start, store=ResultsStore(Path(job["run_dir"])), console=Console(), meter=meter)
    spec, index, k, seed = kit["spec"], kit["index"], job["k"], kit["seed"]
    if (spec.key, seed) not in _DATA:
        _DATA.clear()
        L.seed_everything(seed, verbose=False)
        _DATA[(spec.key, seed)] = trainer.load(spec, seed)
    search = TaskSearch(trainer.cfg, index, trainer.store.state_dir)
    L.seed_everything(seed, verbose=False)  # every trial starts from the same state, wherever it runs
    guard.take_violations()  # an earlier trial's in this worker were that trial's
    trial = trainer.train_trial(search, task_info(spec, index), k, _DATA[(spec.key, seed)], seed, job["overrides"])
    guard.check_kernels(f"trial {k}'s end")
    problems = guard.take_violations() + guard.tampered(meter) + meter.unsealed()
    if problems:  # the run's process refuses the task for it (`refusals`): a worker's meter is as guarded
        trial.failure = REFUSED + "; ".join(problems)
    search.save(k, trial.record(with_learner=trial.failure is None), trial.weights() if trial.failure is None else None)
    return k
