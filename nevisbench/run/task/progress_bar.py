"""The task's progress bar: Lightning's rich bar, counting what the task will really do.

Lightning's bar counts the batches of the current epoch ("Epoch 0/0 10/656"), which says nothing
about a task that trains `train.max_steps` steps, or as many steps as its FLOP budget buys. This
bar counts optimizer steps against the task's planned step count (`planned_steps`: the budget's
plan once step 0 has decided it, `train.max_steps` otherwise), so a `max_steps=30` run ends at
30/30 and its ETA is the time to the end of the task. Evaluation (the milestone dev evaluations,
the final test) and compilation (`trainer.compile=true`) are shown as their own phases, so the
training ETA is not read from steps that included them.

`shown` keeps every phase's last (description, completed, total), for tests and for callers that
want the bar's state without reading the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from nevisbench.api.schedule import planned_steps
from nevisbench.run.task import compiling

__all__ = ["TaskProgressBar", "eval_phase"]


class TaskProgressBar(RichProgressBar):
    """Lightning's rich bar, redrawn 4 times a second (its default 100 redraws a second, from a
    background thread, takes measurable time from a 2-core machine's training threads)."""

    def __init__(self, refresh_rate: int = 4) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.shown: dict[str, tuple[str, int, int | None]] = {}
        self._compile_id: Any = None
        self._compile_started = 0.0

    # -- the training phase: optimizer steps of the task's plan ------------------------------------
    def _label(self) -> str:
        if self._trainer is None:  # a trainer that never fitted (a search winner rebuilt for scoring)
            return "task"
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]  # the task's key, where a callback carries it (`callbacks`: untyped in Lightning)
            key = getattr(callback, "task_key", None)
            if isinstance(key, str):
                return key
        return "task"

    def _train_total(self) -> int | None:
        return planned_steps(self.trainer)

    def _add_task(self, total_batches: int | float | None, description: str, visible: bool = True) -> Any:
        return super()._add_task(float("inf") if total_batches is None else total_batches, description, visible)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        compiling.add_listener(self._on_compile)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # one bar for the whole task, not one per epoch
            self._initialize_train_progress_bar_id()
        self.refresh()

    def _initialize_train_progress_bar_id(self) -> None:
        self.train_progress_bar_id = self._add_task(self._train_total(), f"{self._label()} train")
        self._show_train()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._show_train()
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _show_train(self) -> None:
        """The bar at the optimizer steps taken, of the steps planned (the plan may change)."""
        total, done = self._train_total(), int(self.trainer.global_step)
        description = f"{self._label()} train"
        self.shown["train"] = (description, done, total)
        if self.progress is not None and self.train_progress_bar_id is not None and self.is_enabled:
            self.progress.update(self.train_progress_bar_id, total=float("inf") if total is None else total,
                                 completed=done, description=description)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        compiling.remove_listener(self._on_compile)
        self._show_train()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        compiling.remove_listener(self._on_compile)
        super().on_exception(trainer, pl_module, exception)

    # -- phases of their own: compilation and evaluation --------------------------------------------
    def _on_compile(self, started: bool) -> None:
        """A compilation started (`started`) or ended: shown as a phase with its own clock."""
        if self.progress is None or self.is_disabled:
            return
        if started and self._compile_id is None:
            self._compile_started = time.perf_counter()
            self._compile_id = self._add_task(None, f"{self._label()} compiling")
        elif not started and self._compile_id is not None:
            seconds = time.perf_counter() - self._compile_started
            self.progress.update(self._compile_id, visible=False)
            self._compile_id = None
            self.shown["compile"] = (f"{self._label()} compiled in {seconds:.1f} s", 1, 1)
        self.refresh()

    def phase(self, trainer: L.Trainer, name: str, batches: Iterable[Any]) -> Iterator[Any]:
        """Yield `batches`, shown as the phase `name` with its own bar (started, and stopped again,
        when training is not running: the final evaluations come after the fit)."""
        started = False
        if self.is_enabled and (self.progress is None or self._progress_stopped):
            self._init_progress(trainer)
            started = True
        total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
        description = f"{self._label()} {name}"
        task = self._add_task(total, description) if self.progress is not None and self.is_enabled else None
        done = 0
        try:
            for batch in batches:
                yield batch
                done += 1
                self.shown[name] = (description, done, total)
                if task is not None:
                    self._update(task, done)
        finally:
            if task is not None and self.progress is not None:
                self.progress.update(task, visible=False)
            if started:
                self._stop_progress()


def eval_phase(trainer: L.Trainer | None, batches: Iterable[Any], name: str = "evaluating") -> Iterable[Any]:
    """`batches` shown as the phase `name` on the trainer's task bar; unchanged without one."""
    bar = getattr(trainer, "progress_bar_callback", None) if trainer is not None else None
    if trainer is not None and isinstance(bar, TaskProgressBar) and bar.is_enabled:
        return bar.phase(trainer, name, batches)
    return batches
