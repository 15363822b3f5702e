"""The learning-rate schedule a `TaskModule` follows: plain arithmetic over the task's planned steps.

The harness decides how many steps a task trains (`nevisbench.run.task.plan.PlanCallback`, from
the task's FLOP budget) and hands the task's plan to the module it trains, as its `nevisbench_plan`
attribute (an object with `steps` and `epoch_steps`), which is all this module reads: the public
API does not import the harness, and nothing here looks through the trainer's callbacks.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["lr_factor", "planned_steps", "epoch_steps", "warmup_steps", "PLAN_ATTRIBUTE"]

PLAN_ATTRIBUTE = "nevisbench_plan"  # the harness hands a task's plan to its module under this name


def _plan(trainer: Any) -> Any:
    """The plan the harness handed to the module `trainer` trains (None without one)."""
    try:
        module = trainer.lightning_module
    except (AttributeError, RuntimeError):
        return None
    return getattr(module, PLAN_ATTRIBUTE, None)


def lr_factor(step: int, *, total: int | None, warmup: int, schedule: str = "cosine", floor: float = 0.0,
              from_zero: bool = False) -> float:
    """The LR multiplier of `step` (0-based): linear warmup over `warmup` steps, then cosine decay
    from 1 to `floor` at `total` (or constant). `total=None` (not planned yet) reads as unbounded.
    The warmup's step s is (s + 1) / (warmup + 1), or with `from_zero` s / warmup (optax's
    `warmup_cosine_decay_schedule`, as dm_nevis: step 0 has rate 0)."""
    if total is not None:
        total = max(1, int(total))
        warmup = min(int(warmup), total - 1)
    if step < warmup:
        return step / warmup if from_zero else (step + 1) / (warmup + 1)
    if schedule == "constant" or total is None:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(train: Any, trainer: Any) -> int:
    """The warmup of `train` (a `train` config section): `warmup_epochs` x the task's steps per epoch
    when set (dm_nevis's rule; `lr_factor` caps it at total - 1; it ramps from 0 as dm_nevis's does),
    else `warmup_steps`."""
    epochs = float(train.get("warmup_epochs") or 0)
    if epochs > 0:
        per_epoch = epoch_steps(trainer)
        if per_epoch is not None:
            return int(epochs * per_epoch)
    return int(train.warmup_steps)


def epoch_steps(trainer: Any) -> int | None:
    """The task's steps per epoch as dm_nevis counts them, N // batch size + 1 (from the plan the
    harness handed to the module); None without a trainer or a plan."""
    steps = getattr(_plan(trainer), "epoch_steps", None) if trainer is not None else None
    return int(steps) if steps is not None else None


def planned_steps(trainer: Any) -> int | None:
    """The steps the task's plan gives the trainer (the plan the harness handed to the module, once
    its steps are decided); `trainer.max_steps` before or without one (None when unbounded, or
    without a trainer)."""
    if trainer is None:
        return None
    steps = getattr(_plan(trainer), "steps", None)
    if steps is not None:
        return int(steps)
    return int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None
