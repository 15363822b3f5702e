"""Lightning callbacks of a task: the FLOP meter (`run/task/metering.py`) and the task plan
(`run/task/plan.py`), re-exported here, and the loss and checkpoint guards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nevisbench.errors import TaskFailed
from nevisbench.run.store._faults import crash_point
from nevisbench.run.store.results import sigint_deferred
from nevisbench.run.task.metering import FlopMeterCallback
from nevisbench.run.task.plan import PlanCallback, TaskPlan, milestone_fractions

__all__ = ["FlopMeterCallback", "TaskPlan", "PlanCallback", "FiniteLossCallback", "CheckpointCallback",
           "PruneCallback", "milestone_fractions"]


class FiniteLossCallback(L.Callback):
    """Stops the task at the first NaN/inf loss, naming the task, the step and the learning rate."""

    def __init__(self, task_key: str) -> None:
        self.task_key = task_key
        self._lr = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs  # {} or None: the step was skipped
        local = loss is None or bool(torch.isfinite(loss.detach()).all())
        finite = local
        if trainer.world_size > 1:  # DDP: every rank stops together when any rank's loss is bad
            finite = trainer.strategy.reduce_boolean_decision(local, all=True)
        if not finite:
            value = f"{float(loss):g}" if not local and loss is not None else "not finite (on another DDP process)"
            lr = self._lr  # the rate this step used (the schedule has already moved on)
            raise TaskFailed(f"task '{self.task_key}': the loss is {value} at step {trainer.global_step} "
                             f"(learning rate {lr:.4g}); lower train.lr or check the data")


class CheckpointCallback(L.Callback):
    """Every `every_n_steps` steps, writes a Lightning checkpoint (model, optimizer, schedule, loop
    and loader position, FLOP meter and plan) atomically, for resuming mid-task."""

    def __init__(self, path: Path, every_n_steps: int, loader: Any) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.loader = loader

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self._maybe_save(trainer, step, batch_idx)
        crash_point(f"step:{self.path.stem.rpartition('_')[2]}:{step}")

    def _maybe_save(self, trainer, step: int, batch_idx: int) -> None:
        if not self.every_n_steps or step % self.every_n_steps or step >= trainer.max_steps > 0 or trainer.should_stop:
            return  # (should_stop: the pruner stopped the trial here; a checkpoint would resume it past its end)
        self.loader.mark_position(batch_idx + 1)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with sigint_deferred():
            trainer.save_checkpoint(tmp)  # under DDP: written by rank 0, every rank waits for it
            if trainer.is_global_zero:
                os.replace(tmp, self.path)


class PruneCallback(L.Callback):
    """`search.pruner`: after each milestone's dev evaluation (it must come after PlanCallback),
    reports the trial's milestones to the search's Optuna pruner and stops training when it says
    so; the compute spent until then stays on the trial's tally."""

    def __init__(self, search: Any, plan: TaskPlan) -> None:
        self.search, self.plan = search, plan
        self.pruned = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.pruned and self.search.report(self.plan.records):
            self.pruned = True
            trainer.should_stop = True
