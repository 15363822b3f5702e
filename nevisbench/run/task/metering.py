"""`FlopMeterCallback`: adapts the plain-Python FLOP meter (`nevisbench.compute.flops`) to
Lightning's training loop.

A counted step's window opens at this callback's `on_train_batch_start` (it must be the first
callback) and closes at the next step's `on_train_batch_start`, so it spans the whole batch cycle:
the module's and every other callback's batch hooks, the training step, backward,
`on_before_optimizer_step`, the optimizer step, the module's `on_train_batch_end` and epoch hooks
(the module's hooks run after the callbacks'). What the window has counted by this callback's
`on_train_batch_end` is charged there (so budget and milestone decisions see the step); the rest of
the window is charged when it closes. Two more windows are always counted and charged to
training: the prologue, from this callback's `setup` to the first batch (the module's `setup`,
`configure_model`, `configure_optimizers`, `on_fit_start`, `on_train_start`...), and the epilogue,
from this callback's `on_train_end` to the end of the module's `teardown` (its `on_train_end`,
`on_fit_end`, `teardown`). Every window also receives the ops of other threads (see
`nevisbench.compute.counter`).

Under DDP every rank counts its own slice of the step and the counts are summed over the ranks
(an all-reduce at each charge, in the same order on every rank), so the meter of every process
holds the global compute and every process makes the same budget decisions.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch

from nevisbench.compute import guard
from nevisbench.compute.flops import (
    ZERO,
    FlopMeter,
    FlopTally,
    StepCounter,
    StepFlops,
    arm_threads,
    structure_signature,
)

__all__ = ["FlopMeterCallback", "global_flops"]


def _inputs(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def global_flops(trainer: L.Trainer | None, flops: StepFlops) -> StepFlops:
    """`flops` summed over every process of the run (itself on one device)."""
    if trainer is None or trainer.world_size == 1:
        return flops
    local = torch.tensor([flops.forward, flops.backward, flops.algo_forward, flops.algo_backward],
                         dtype=torch.float64, device=trainer.strategy.root_device)
    summed = trainer.strategy.reduce(local, reduce_op="sum").tolist()
    return StepFlops(*summed)


class FlopMeterCallback(L.Callback):
    """Charges every training step to `meter`, counting the steps its policy selects."""

    def __init__(self, meter: FlopMeter) -> None:
        self.meter = meter
        self._counter: StepCounter | None = None
        self._signature: tuple | None = None
        self._batch: tuple[tuple[int, ...], torch.dtype] = ((), torch.float32)
        self._charged = ZERO  # what the open window has charged so far (global)
        self._charged_local = ZERO  # this rank's share of it
        self._trainer: L.Trainer | None = None

    # -- the window ------------------------------------------------------------------------------
    def _open(self, pl_module: L.LightningModule) -> None:
        self._counter = StepCounter(pl_module, charging=True, threads=True).__enter__()
        self.meter.active = self._counter
        self._charged = self._charged_local = ZERO

    def _close(self, *, reduce: bool = True) -> StepFlops | None:
        """Close the open window, charge what it has not charged yet, return its whole (global) count.
        Without `reduce` (an exception: the other ranks may not reach a collective) this rank's
        uncharged tail stands for every rank's (the ranks train equal slices)."""
        counter, self._counter = self._counter, None
        self.meter.active = None
        if counter is None:
            return None
        counter.__exit__(None, None, None)
        if not reduce:
            world = self._trainer.world_size if self._trainer is not None else 1
            self.meter.charge_train_step(counter.totals().minus(self._charged_local).scaled(world))
            return None
        total = global_flops(self._trainer, counter.totals())
        self.meter.charge_train_step(total.minus(self._charged))
        return total

    def _finish_window(self) -> None:
        total = self._close()
        if total is not None and self._signature is not None:
            self.meter.counted(self._signature, total)
            shape, dtype = self._batch  # per sample, for `nevisbench flops` and other readers by shape
            samples = shape[0] * (self._trainer.world_size if self._trainer is not None else 1) if shape else 1
            self.meter.store(("train", shape[1:], dtype), total.scaled(1.0 / max(1, samples)))

    # -- hooks --------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage) -> None:
        arm_threads()
        self.meter.fits += 1
        guard.mark_signals()  # Lightning's own handlers are in place by now
        guard.mark_threads()
        self._trainer = trainer
        self._signature = None  # work before the first batch: counted, charged, never cached
        self._open(pl_module)

    def _check(self, where: str) -> None:
        """What the learner must not have done since the last check (docs/flop-meter.md)."""
        counter = self._counter
        if counter is not None and (counter._paused or guard.mode_missing(counter.mode)):
            guard.violation(f"switched the FLOP meter's count off during {where}")
        guard.check_signals(where)
        guard.check_threads(where)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._check(f"training step {trainer.global_step}")
        self._finish_window()
        x = _inputs(batch)
        self._batch = (tuple(x.shape), x.dtype)
        self._signature = structure_signature(pl_module, x)
        if self.meter.should_count(self._signature):
            guard.check_kernels(f"training step {trainer.global_step}")  # where counting costs anyway: not every cached step
            self._open(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counter is not None:
            local = self._counter.totals()
            head = global_flops(trainer, local)
            self.meter.charge_train_step(head.minus(self._charged))
            self._charged, self._charged_local = head, local
        else:
            self.meter.charge_train_step(self.meter.cached_step(self._signature))

    def on_train_end(self, trainer, pl_module) -> None:
        self._check("training")
        guard.check_kernels("training")
        self._finish_window()
        self._signature = None  # the epilogue: counted, charged, never cached
        self._open(pl_module)

    def teardown(self, trainer, pl_module, stage) -> None:
        """The module's `teardown` runs after every callback's: the epilogue closes after it."""
        teardown = pl_module.teardown

        def teardown_then_close(stage: str) -> None:
            try:
                teardown(stage)
            finally:
                pl_module.__dict__.pop("teardown", None)
                self._finish_window()
                self._signature = None

        pl_module.__dict__["teardown"] = teardown_then_close

    def on_exception(self, trainer, pl_module, exception) -> None:
        pl_module.__dict__.pop("teardown", None)
        self._close(reduce=False)  # the other ranks may not be here: no collective
        self._signature = None

    def state_dict(self) -> dict[str, Any]:
        # the latest counted step cost travels with a mid-task checkpoint: a re-plan after a cost
        # change (e.g. a compaction) reads it, so a resume between the change and the re-plan keeps it
        last = self.meter.last_train_cost
        return {"task": asdict(self.meter.task), "last_train_cost": None if last is None else asdict(last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.task = FlopTally(**state["task"])
        last = state.get("last_train_cost")
        self.meter.last_train_cost = None if last is None else StepFlops(**last)


guard.protect(FlopMeterCallback)
