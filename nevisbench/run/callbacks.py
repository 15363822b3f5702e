"""Lightning callbacks: thin adapters over the plain-Python FLOP meter and the task plan."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from nevisbench.run._faults import crash_point
from nevisbench.errors import TaskFailed
from nevisbench.compute.flops import FlopMeter, FlopTally, StepCounter
from nevisbench.run.results import sigint_deferred

__all__ = ["FlopMeterCallback", "TaskPlan", "ScheduleCallback", "FiniteLossCallback", "CheckpointCallback", "milestone_fractions"]


def _inputs(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class FlopMeterCallback(L.Callback):
    """Counts the first training step of each (sample shape) under FlopCounterMode, then charges
    every step from the meter's cache. The whole step is counted (training_step, loss, backward), so
    a learner's extra work inside its step is counted too."""

    def __init__(self, meter: FlopMeter) -> None:
        self.meter = meter
        self._counter: StepCounter | None = None
        self._key: tuple | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x = _inputs(batch)
        self._key = ("train", tuple(x.shape[1:]), x.dtype)
        if self.meter.cached(self._key) is None:
            self._counter = StepCounter(pl_module).__enter__()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._counter is not None:
            self._counter.mark_forward()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        batch_size = int(_inputs(batch).shape[0])
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            per_sample = self.meter.store(self._key, self._counter.result(batch_size))
            self._counter = None
        else:
            per_sample = self.meter.cached(self._key)
        self.meter.charge_train(per_sample, batch_size)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None

    def state_dict(self) -> dict[str, Any]:
        return {"task": asdict(self.meter.task)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.task = FlopTally(**state["task"])


def milestone_fractions(count: int, first: float) -> list[float]:
    """`count` log-spaced fractions of a task's planned training compute, from `first` to 1."""
    if count == 0:
        return []  # anytime evaluation off
    if count == 1:
        return [1.0]
    return [float(f) for f in np.geomspace(first, 1.0, count)]


@dataclass
class TaskPlan:
    """How long a task trains and when it is evaluated, in training compute of `measure`."""

    measure: str  # algorithmic | executed
    max_steps: int  # used when there is no budget
    budget: float | None  # training FLOPs per task
    fractions: list[float]
    steps: int | None = None  # decided after the first (counted) step
    planned_flops: float | None = None
    records: list[dict[str, float]] = field(default_factory=list)


class ScheduleCallback(L.Callback):
    """Stops training at the task's FLOP budget (the step count, and so the LR schedule, follows
    from the budget) and runs the anytime dev evaluation at each milestone. Must come after
    FlopMeterCallback so the step is charged before it is read."""

    def __init__(self, meter: FlopMeter, plan: TaskPlan, evaluate_dev: Callable[[], float], *, steps_per_epoch: int) -> None:
        self.meter = meter
        self.plan = plan
        self.evaluate_dev = evaluate_dev
        self.steps_per_epoch = steps_per_epoch

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._eval_seconds_at_start = self.meter.task.seconds_eval
        if self.plan.steps is not None and self.plan.budget is not None:  # resumed: re-apply the plan
            trainer.fit_loop.epoch_loop.max_steps = self.plan.steps
            trainer.fit_loop.max_epochs = math.ceil(self.plan.steps / self.steps_per_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        evaluating = self.meter.task.seconds_eval - self._eval_seconds_at_start
        self.meter.charge_seconds("train", time.perf_counter() - self._start - evaluating)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.plan.steps, "planned_flops": self.plan.planned_flops, "records": self.plan.records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan.steps, self.plan.planned_flops = state["steps"], state["planned_flops"]
        self.plan.records = list(state["records"])

    def _spent(self) -> float:
        return self.meter.task.measure(self.plan.measure, "train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        plan = self.plan
        if plan.steps is None:
            per_step = self._spent()  # the first step, just charged
            if plan.budget is not None:
                plan.steps = max(1, math.floor(plan.budget / per_step * (1 + 1e-9)))
                trainer.fit_loop.epoch_loop.max_steps = plan.steps
                trainer.fit_loop.max_epochs = math.ceil(plan.steps / self.steps_per_epoch)
            else:
                plan.steps = plan.max_steps
            plan.planned_flops = per_step * plan.steps
        spent = self._spent()
        due = [f for f in plan.fractions[len(plan.records):] if spent >= f * plan.planned_flops * (1 - 1e-9)]
        if not due:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        error = self.evaluate_dev()
        for fraction in due:
            plan.records.append({
                "fraction": fraction,
                "step": int(trainer.global_step),
                "train_flops": self.meter.task.train,
                "train_flops_executed": self.meter.task.executed_train,
                "train_seconds": self.meter.task.seconds_train + time.perf_counter() - self._start
                - (self.meter.task.seconds_eval - self._eval_seconds_at_start),
                "dev_error": error,
            })


class FiniteLossCallback(L.Callback):
    """Stops the task at the first NaN/inf loss, naming the task, the step and the learning rate."""

    def __init__(self, task_key: str) -> None:
        self.task_key = task_key
        self._lr = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            lr = self._lr  # the rate this step used (the schedule has already moved on)
            raise TaskFailed(f"task '{self.task_key}': the loss is {float(loss):g} at step {trainer.global_step} "
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
        if not self.every_n_steps or step % self.every_n_steps or step >= trainer.max_steps > 0:
            return
        self.loader.mark_position(batch_idx + 1)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with sigint_deferred():
            trainer.save_checkpoint(tmp)
            os.replace(tmp, self.path)
