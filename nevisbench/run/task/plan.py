"""The task plan: how many steps a task trains (its FLOP budget decides, when set), the learning
rate schedule over those steps, and the anytime dev evaluations at milestones of the planned
compute.

With `budget.flops_per_task=B` the step count is decided during step 0, at
`on_before_optimizer_step` (after the step's forward and backward have been counted, before the
optimizer and the LR scheduler step): steps = floor(B / cost of step 0). The LR schedule reads
the plan (`nevisbench.api.schedule.planned_steps` reads the plan handed to the module), so warmup
and cosine span exactly the planned steps from step 0.
Whenever the counted cost of a whole step differs from the cost the plan assumed (work in hooks
after the optimizer step, a cheap first step, masks or frozen parts that change mid-task), the
remaining steps are re-planned from the remaining budget: steps = done + floor((B - spent) / new
cost); the schedule of the steps already taken is not rewritten, later steps follow the new total.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch

from nevisbench.compute.flops import FlopMeter
from nevisbench.run.task import compiling
from nevisbench.run.task.metering import global_flops

__all__ = ["TaskPlan", "PlanCallback", "milestone_fractions", "nevis_batch_size", "nevis_epoch_steps", "optimization_record"]


def nevis_batch_size(examples: int) -> int:
    """dm_nevis's per-task training batch size (`protocol.batch_size=nevis_rule`): 0.25% of the task's
    training examples, rounded down to a power of two, within [16, 512]."""
    if examples < 1:
        return 16
    return min(512, max(16, 2 ** math.floor(math.log2(0.0025 * examples))))


def nevis_epoch_steps(examples: int, batch_size: int) -> int:
    """Steps per epoch as dm_nevis counts them for its warmup: N // batch + 1."""
    return examples // batch_size + 1


def optimization_record(cfg: Any, examples: int, steps: int) -> dict[str, Any]:
    """How a task of `examples` training examples trained (the results line's `optimization`): its
    batch size, steps per epoch, warmup steps (as the schedule applied them to `steps` planned
    steps), the cosine's end rate, Nesterov and which parameters took weight decay."""
    train, batch = cfg.train, int(cfg.data.batch_size)
    per_epoch = nevis_epoch_steps(examples, batch)
    epochs = float(train.get("warmup_epochs") or 0)
    warmup = int(epochs * per_epoch) if epochs > 0 else int(train.warmup_steps)
    return {"batch_size": batch, "batch_rule": cfg.protocol.batch_size,
            "epoch_steps": per_epoch, "warmup_steps": min(warmup, max(0, steps - 1)), "schedule": train.schedule,
            "final_lr": float(train.get("final_lr") or 0.0), "optimizer": train.optimizer,
            "nesterov": bool(train.get("nesterov", False)),
            "weight_decay_on": "all" if train.get("decay_norm_and_bias", True) else "conv_and_linear_weights"}


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
    steps: int | None = None  # decided during step 0 (before the first optimizer step)
    planned_flops: float | None = None
    step_cost: float | None = None  # the per-step cost the plan assumes
    epoch_steps: int | None = None  # dm_nevis's steps per epoch (N // batch + 1), read by train.warmup_epochs
    records: list[dict[str, Any]] = field(default_factory=list)  # one per milestone: step, FLOPs, seconds, dev error, lr
    replans: list[dict[str, float]] = field(default_factory=list)


class PlanCallback(L.Callback):
    """Applies the task plan: stops training at the task's FLOP budget and runs the anytime dev
    evaluation at each milestone (paused out of the training count: it is evaluation compute).
    Must come after FlopMeterCallback so the step is charged before it is read."""

    def __init__(self, meter: FlopMeter, plan: TaskPlan, evaluate_dev: Callable[[], float], *, steps_per_epoch: int) -> None:
        self.meter = meter
        self.plan = plan
        self.evaluate_dev = evaluate_dev
        self.steps_per_epoch = steps_per_epoch

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._eval_seconds_at_start = self.meter.task.seconds_eval
        self._compile_at_start = (compiling.seconds(), self.meter.task.seconds_compile)
        if self.plan.budget is None and self.plan.steps is None:
            self.plan.steps = self.plan.max_steps
        if self.plan.steps is not None and self.plan.budget is not None:  # resumed: re-apply the plan
            self._apply(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        evaluating = self.meter.task.seconds_eval - self._eval_seconds_at_start
        compiled = compiling.seconds() - self._compile_at_start[0]  # all of it: the evaluations' too
        self.meter.charge_seconds("train", time.perf_counter() - self._start - evaluating - compiled)
        # the evaluations charged their own compilations; the rest was the training's
        self.meter.charge_seconds("compile", compiled - (self.meter.task.seconds_compile - self._compile_at_start[1]))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.plan.steps, "planned_flops": self.plan.planned_flops, "step_cost": self.plan.step_cost,
                "records": self.plan.records, "replans": self.plan.replans}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan.steps, self.plan.planned_flops = state["steps"], state["planned_flops"]
        self.plan.step_cost = state.get("step_cost")
        self.plan.records = list(state["records"])
        self.plan.replans = list(state.get("replans", []))

    def _spent(self) -> float:
        return self.meter.task.measure(self.plan.measure, "train")

    def _apply(self, trainer) -> None:
        if self.plan.steps is None:
            raise RuntimeError("the schedule applies a plan with no step count")
        trainer.fit_loop.epoch_loop.max_steps = self.plan.steps
        trainer.fit_loop.max_epochs = math.ceil(self.plan.steps / self.steps_per_epoch)

    def _decide(self, trainer, per_step: float) -> None:
        """Plan the steps from `per_step`, the cost of step 0 so far (forward and backward)."""
        plan = self.plan
        plan.step_cost = per_step
        if plan.budget is not None:
            plan.steps = max(1, math.floor(plan.budget / per_step * (1 + 1e-9)))
            self._apply(trainer)
        elif plan.steps is None:
            plan.steps = plan.max_steps
        plan.planned_flops = per_step * plan.steps

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.plan.step_cost is not None or self.meter.active is None:
            return
        per_step = global_flops(trainer, self.meter.active.totals()).measure(self.plan.measure)  # every rank's share
        if per_step <= 0:
            return  # nothing counted yet: decide at the end of the step
        self._decide(trainer, per_step)
        _reapply_step0_lr(trainer)

    def _replan(self, trainer, cost: float) -> None:
        plan = self.plan
        done, spent = int(trainer.global_step), self._spent()
        plan.step_cost = cost
        if plan.steps is None:
            raise RuntimeError("the schedule replans before step 0 planned it")
        if plan.budget is not None:
            left = max(0, math.floor((plan.budget - spent) / cost * (1 + 1e-9)))
            plan.steps = max(1, done + left)
            self._apply(trainer)
        plan.planned_flops = spent + cost * max(0, plan.steps - done)
        plan.replans.append({"step": done, "step_cost": cost, "steps": plan.steps})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        plan = self.plan
        if plan.step_cost is None:  # no optimizer step was seen: plan from the step just charged
            self._decide(trainer, max(self._spent(), 1e-30))
        if plan.step_cost is None or plan.planned_flops is None:
            raise RuntimeError("the schedule has no plan after step 0")
        latest = self.meter.step_cost(plan.measure)
        if latest is not None and latest > 0 and not math.isclose(latest, plan.step_cost, rel_tol=1e-9):
            self._replan(trainer, latest)
        spent = self._spent()
        due = [f for f in plan.fractions[len(plan.records):] if spent >= f * plan.planned_flops * (1 - 1e-9)]
        if not due:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        with self.meter.paused():
            error = self.evaluate_dev()
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None  # this step's rate
        for fraction in due:
            record: dict[str, Any] = {
                "fraction": fraction,
                "step": int(trainer.global_step),
                "train_flops": self.meter.task.train,
                "train_flops_executed": self.meter.task.executed_train,
                "train_seconds": self.meter.task.seconds_train + time.perf_counter() - self._start
                - (self.meter.task.seconds_eval - self._eval_seconds_at_start)
                - (compiling.seconds() - self._compile_at_start[0]),
                "dev_error": error,
                "lr": lr,
            }
            plan.records.append(record)


def _reapply_step0_lr(trainer) -> None:
    """The LR scheduler computed step 0's rate in `configure_optimizers`, before the plan existed:
    recompute it now that the plan is known (LambdaLR schedulers, before the first optimizer step)."""
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and scheduler.last_epoch == 0:
            rates = [base * fn(0) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=False)]
            for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=False):
                group["lr"] = rate
            scheduler._last_lr = rates
