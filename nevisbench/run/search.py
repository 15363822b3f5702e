"""Per-task hyperparameter search (the Nevis protocol), owned by the runner: a learner never sees it.

`search=none` trains each task once. Otherwise each task runs `search.trials` trials: each samples
values of the `search.space` keys (any `train.*` or `learner.*` key) with a seeded Optuna sampler
(`grid`, `random` or `tpe`, seeded with seed + task index), starts from the same state, trains on
`train`, is scored on `dev` (its selected model: best-dev under protocol=nevis), and the trial
with the lowest dev error wins (no retraining). The winner's training is charged to `train`, every
other trial's training to `search`, every dev evaluation to `eval` (see `merge_tallies`).

A space value is one of `loguniform(a,b)`, `uniform(a,b)`, `choice(a,b,...)`, parsed here by a
strict little parser: a malformed space is a one-line ConfigError at compose time.

Each finished trial is recorded in `<run>/state/search_<task index>/` (written atomically), so a
search interrupted mid-task keeps its finished trials and reruns only the unfinished one.
This module imports only the standard library at its top (config checks use the parser).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nevisbench.errors import ConfigError

__all__ = ["Dist", "parse_space", "flat_space", "check_search", "TaskSearch", "merge_tallies", "trial_config"]

REDUCTION_FACTOR = 3  # Optuna's default for Hyperband; SuccessiveHalving's default is 4, set to 3 here too:
# a third of the trials at a rung go on, for both pruners


def merge_tallies(winner: Any, losers: list[Any]) -> Any:
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
    return out


class TaskSearch:
    """The trials of one task: their sampled values (Optuna ask/tell) and their records on disk
    (read by every process; written only by a `writer`: not by a DDP rank other than 0)."""

    def __init__(self, cfg: Any, index: int, state_dir: Path, *, writer: bool = True) -> None:
        from omegaconf import OmegaConf

        self.writer = writer
        self.enabled = cfg.search.name != "none"
        self.trials = int(cfg.search.trials) if self.enabled else 1
        self.space = parse_space(OmegaConf.to_container(cfg.search.space, resolve=True)) if self.enabled else {}
        self.folder = Path(state_dir) / f"search_{index}"
        self.pruning = False
        self._study = None
        self._asked: list[Any] = []  # asked, not yet told, oldest first
        self._reported: dict[int, int] = {}  # milestones reported, by Optuna trial number
        self._rungs = 0  # milestones that can stop a trial (all but the last)
        if self.enabled:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            seed = int(cfg.seed) + index
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
        trial = self._study.ask({k: d.optuna() for k, d in self.space.items()})
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
        import optuna

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
        return self.folder / f"trial_{k}.pt"

    def weights_path(self, k: int) -> Path:
        return self.folder / f"trial_{k}_weights.pt"

    def checkpoint(self, index: int, k: int, default: Path) -> Path:
        """The mid-trial checkpoint: the task's own with search=none."""
        return default if not self.enabled else self.folder.parent / f"task_{index}_trial_{k}.ckpt"

    def load(self, k: int) -> dict[str, Any] | None:
        import torch

        path = self.record_path(k)
        if not self.enabled or not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            from nevisbench.errors import DataError

            raise DataError(f"Cannot resume: the search record {path} is damaged ({type(exc).__name__}); "
                            "delete it to rerun that trial") from None

    def save(self, k: int, record: dict[str, Any], weights: dict[str, Any] | None) -> None:
        """Keep a finished trial: its weights (only while it is the best so far), then its record."""
        import torch

        from nevisbench.run.results import atomic_write_bytes

        if not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if weights is not None:
            atomic_write_bytes(self.weights_path(k), lambda handle: torch.save(weights, handle))
        atomic_write_bytes(self.record_path(k), lambda handle: torch.save(record, handle))

    def load_weights(self, k: int) -> dict[str, Any] | None:
        import torch

        path = self.weights_path(k)
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None

    def drop_weights(self, keep: int) -> None:
        if not self.writer:
            return
        for path in self.folder.glob("trial_*_weights.pt"):
            if path != self.weights_path(keep):
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        import shutil

        if not self.writer:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        for path in self.folder.parent.glob(f"task_{self.folder.name.removeprefix('search_')}_trial_*.ckpt"):
            path.unlink(missing_ok=True)
