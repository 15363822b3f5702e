"""Per-task hyperparameter search (the Nevis protocol), owned by the runner: a learner never sees it.

`search=none` trains each task once. Otherwise each task runs `search.trials` trials: each samples
values of the `search.space` keys (any `train.*` or `learner.*` key) with a seeded Optuna sampler
(`grid`, `random` or `tpe`, seeded with the task's seed, `nevisbench.api.types.task_seed`, or with the
task index alone: `search_seed`), starts
from the same state, trains on `train`, is scored on `dev` (its selected model: best-dev under
protocol=nevis), and the trial with the lowest dev error wins. The winner is not trained again on
more data: its selected model is scored as it is (it is retrained, with the same seed and values,
only when its saved weights no longer fit its model after a resume). The winner's training is
charged to `train`, every other trial's training to `search`, every dev evaluation to `eval` (see
`merge_tallies`).

The space's grammar and the search group's checks live in `nevisbench.config.search_space`.

Each finished trial is recorded in the run's state folder (`<run>/state/search_<task index>/`, names
in `nevisbench.layout`, written atomically), so a search interrupted mid-task keeps its finished
trials and reruns only the unfinished one; every record and the winner's weights are checked when
read back (`nevisbench.run.store.search_records`).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import optuna
import torch
from omegaconf import OmegaConf

from nevisbench import layout
from nevisbench.api.types import task_seed
from nevisbench.compute.flops import FlopTally
from nevisbench.config.search_space import Dist, parse_space
from nevisbench.errors import DataError
from nevisbench.run.store.results import atomic_write_bytes
from nevisbench.run.store.search_records import check_record, check_weights, weights_digest

__all__ = ["TaskSearch", "merge_tallies", "search_seed", "REDUCTION_FACTOR"]

REDUCTION_FACTOR = 3  # Optuna's default for Hyperband; SuccessiveHalving's default is 4, set to 3 here too:
# a third of the trials at a rung go on, for both pruners


def search_seed(cfg: Any, index: int) -> int:
    """The seed of task `index`'s sampler: the task's seed (seed + index), or with
    `search.seed_with_run_seed=false` the task index alone, as dm_nevis seeds its draws, so task i
    draws the same trials under every run seed and `seed` varies the training alone."""
    return task_seed(int(cfg.seed), index) if cfg.search.get("seed_with_run_seed", True) else index


def merge_tallies(winner: FlopTally, losers: list[FlopTally]) -> FlopTally:
    """The task's tally: the winner's training as `train`, the others' training as `search`, every
    trial's evaluation (dev milestones) as `eval`."""
    out = winner.copy()
    for t in losers:
        out.search += t.train + t.search
        out.executed_search += t.executed_train + t.executed_search
        out.seconds_search += t.seconds_train + t.seconds_search
        out.eval += t.eval
        out.executed_eval += t.executed_eval
        out.seconds_eval += t.seconds_eval
        out.seconds_compile += t.seconds_compile
    return out


class TaskSearch:
    """The trials of one task: their sampled values (Optuna ask/tell) and their records on disk
    (read by every process; written only by a `writer`: not by a DDP rank other than 0)."""

    def __init__(self, cfg: Any, index: int, state_dir: Path, *, writer: bool = True) -> None:
        self.writer = writer
        self.index = index
        self.state_dir = Path(state_dir)
        self.enabled = cfg.search.name != "none"
        self.trials = int(cfg.search.trials) if self.enabled else 1
        self.space = parse_space(OmegaConf.to_container(cfg.search.space, resolve=True)) if self.enabled else {}
        self.folder = layout.search_dir(self.state_dir, index)
        self.pruning = False
        self._study = None
        self._asked: list[Any] = []  # asked, not yet told, oldest first
        self._reported: dict[int, int] = {}  # milestones reported, by Optuna trial number
        self._rungs = 0  # milestones that can stop a trial (all but the last)
        if self.enabled:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            seed = search_seed(cfg, index)
            sampler = {
                "grid": lambda: optuna.samplers.GridSampler({k: list(d.args) for k, d in self.space.items()}, seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            }[cfg.search.sampler]()
            self.pruning = cfg.search.pruner != "none"
            pruner, name = None, None
            if self.pruning:  # rung j is milestone j: its step is REDUCTION_FACTOR**j (see `report`)
                last = REDUCTION_FACTOR ** (int(cfg.budget.milestones) - 1)
                pruner = {
                    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
                        min_resource=1, reduction_factor=REDUCTION_FACTOR),
                    "hyperband": lambda: optuna.pruners.HyperbandPruner(
                        min_resource=1, max_resource=last, reduction_factor=REDUCTION_FACTOR),
                }[cfg.search.pruner]()
                self._rungs = int(cfg.budget.milestones) - 1
                name = f"task_{index}"  # Hyperband's brackets hash the study's name: a fixed one keeps them fixed
            self._study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner, study_name=name)

    def ask(self) -> dict[str, Any]:
        """The next trial's values (none when search=none)."""
        if not self.enabled:
            return {}
        if self._study is None:
            raise RuntimeError("an enabled search without its study")
        trial = self._study.ask({k: _distribution(d) for k, d in self.space.items()})
        self._asked.append(trial)
        return dict(trial.params)

    def report(self, anytime: list[dict[str, Any]]) -> bool:
        """Report the milestones of the trial in progress (the oldest not yet told) that are not yet
        reported, milestone j as step REDUCTION_FACTOR**j (the milestones are log-spaced in FLOPs,
        so this is the trial's compute on Optuna's integer rung grid: rung j is milestone j);
        return whether the pruner stops the trial there. The last milestone is no rung: a trial
        that reaches it has finished its training, and is not pruned."""
        if not self.pruning or not anytime or not self._asked:
            return False  # (no trial in progress: e.g. the winner retrained for scoring after a resume)
        trial = self._asked[0]
        reported = self._reported.get(trial.number, 0)
        rungs = min(len(anytime), self._rungs)
        prune = False
        for j in range(reported, rungs):
            trial.report(float(anytime[j]["dev_error"]), REDUCTION_FACTOR ** j)
            # the pruner is asked once per evaluation (milestones due at the same step share one), as
            # during training: asking records the trial at its rungs, which later trials compete with,
            # so a trial read back on resume is replayed the same way
            if j + 1 == rungs or anytime[j + 1]["step"] != anytime[j]["step"]:
                prune = trial.should_prune()
        self._reported[trial.number] = max(reported, rungs)
        return prune

    def tell(self, dev_error: float | None, *, pruned: bool = False) -> None:
        """The result of the oldest trial asked and not yet told (trials are told in order)."""
        if not self.enabled:
            return
        if self._study is None:
            raise RuntimeError("an enabled search without its study")
        trial = self._asked.pop(0)
        try:
            if pruned:
                self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif dev_error is None:
                self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(trial, dev_error)
        except RuntimeError as exc:  # GridSampler stops the study after its last cell: meaningless in ask/tell
            if "Study.stop" not in str(exc):  # (the trial is recorded before that; Optuna stores it in a finally)
                raise

    # -- records of finished trials (resume) -------------------------------------------------------
    def record_path(self, k: int) -> Path:
        return layout.trial_record(self.state_dir, self.index, k)

    def weights_path(self, k: int) -> Path:
        return layout.trial_weights(self.state_dir, self.index, k)

    @property
    def kit_path(self) -> Path:
        """The task's starting state, written for search workers (`search.parallel`)."""
        return layout.trial_kit(self.state_dir, self.index)

    def checkpoint(self, k: int) -> Path:
        """Trial k's mid-trial checkpoint: with search=none, the task's own."""
        if not self.enabled:
            return layout.task_checkpoint(self.state_dir, self.index)
        return layout.trial_checkpoint(self.state_dir, self.index, k)

    def _fix(self, k: int) -> str:
        return (f"delete {self.record_path(k).name} (and {self.weights_path(k).name}) in {self.folder} to train "
                f"that trial again, or delete {self.folder} to restart the task's search")

    def load(self, k: int) -> dict[str, Any] | None:
        """Trial k's record when it finished before a resume (None when it did not), every field
        checked (`nevisbench.run.store.search_records`): a damaged one is a one-line DataError naming it."""
        path = self.record_path(k)
        if not self.enabled or not path.exists():
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"Cannot resume: the search record {path} is damaged or not a trial record "
                            f"({type(exc).__name__}); {self._fix(k)}") from None
        return check_record(record, path, k, self._fix(k))

    def save(self, k: int, record: dict[str, Any], weights: dict[str, Any] | None) -> None:
        """Keep a finished trial: its weights (only while it is the best so far), then its record,
        which holds the weights file's SHA-256 (checked when the weights are read back)."""
        if not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        digest = None
        if weights is not None:
            buffer = io.BytesIO()
            torch.save(weights, buffer)
            data = buffer.getvalue()
            digest = weights_digest(data)
            atomic_write_bytes(self.weights_path(k), lambda handle: handle.write(data))
        record = {**record, "weights_sha256": digest}
        atomic_write_bytes(self.record_path(k), lambda handle: torch.save(record, handle))

    def load_weights(self, k: int) -> dict[str, Any]:
        """The weights trial k saved, checked against the digest in its record (missing, truncated,
        edited or foreign weights: a one-line DataError naming the file)."""
        path, record = self.weights_path(k), self.load(k)
        fix = self._fix(k)
        if record is None or record["weights_sha256"] is None:
            raise DataError(f"Cannot resume: trial {k} won the search, but its record {self.record_path(k)} keeps "
                            f"no weights; {fix}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"Cannot resume: the winning trial's weights {path} cannot be read ({exc.strerror}); {fix}") from None
        if weights_digest(data) != record["weights_sha256"]:
            raise DataError(f"Cannot resume: the trial weights {path} are not the ones trial {k} saved (truncated, "
                            f"edited or from another trial); {fix}")
        try:
            weights = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"Cannot resume: the trial weights {path} are damaged ({type(exc).__name__}); {fix}") from None
        return check_weights(weights, path, fix)

    def drop_weights(self, keep: int, *, earlier_only: bool = False) -> None:
        """Delete the saved weights of every trial but `keep`, or (`earlier_only`) of the trials before
        it only: a later trial that finished before a resume and is still to be read back may win."""
        if not self.writer:
            return
        paths = [self.weights_path(j) for j in range(keep)] if earlier_only else \
            layout.trial_weights_files(self.state_dir, self.index)
        for path in paths:
            if path != self.weights_path(keep):
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        """The task is committed: its trial records, weights and mid-trial checkpoints go."""
        if not self.writer:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        for path in layout.trial_checkpoints(self.state_dir, self.index):
            path.unlink(missing_ok=True)


def _distribution(dist: Dist) -> Any:
    """A space value as the Optuna distribution the sampler draws from."""
    if dist.kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(dist.args))
    return optuna.distributions.FloatDistribution(float(dist.args[0]), float(dist.args[1]), log=dist.kind == "loguniform")
