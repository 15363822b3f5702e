"""Lightning callbacks: thin adapters over the plain-Python FLOP meter."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from nevisbench.flops import FlopMeter, StepFlops, counting_mode

__all__ = ["FlopMeterCallback"]


def _inputs(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class FlopMeterCallback(L.Callback):
    """Counts the first step of each (mode, sample shape) under FlopCounterMode, then charges every
    step from the meter's cache. The whole step is counted (training_step, loss, backward), so a
    learner's extra work inside its step is counted too."""

    def __init__(self, meter: FlopMeter) -> None:
        self.meter = meter
        self._mode: FlopCounterMode | None = None
        self._key: tuple | None = None
        self._forward = 0

    def _key_of(self, kind: str, batch: Any) -> tuple:
        x = _inputs(batch)
        return (kind, tuple(x.shape[1:]), x.dtype)

    def _start(self, kind: str, batch: Any) -> None:
        self._key = self._key_of(kind, batch)
        if self.meter.cached(self._key) is None:
            self._mode = counting_mode()
            self._mode.__enter__()
            self._forward = 0

    def _finish(self, batch: Any) -> StepFlops:
        batch_size = int(_inputs(batch).shape[0])
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            total = self._mode.get_total_flops()
            forward = self._forward or total
            self._mode = None
            return self.meter.store(self._key, StepFlops(forward, total - forward), batch_size)
        return self.meter.cached(self._key)

    # -- training -----------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start("train", batch)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._mode is not None:
            self._forward = self._mode.get_total_flops()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        per_sample = self._finish(batch)
        self.meter.charge_train(per_sample, int(_inputs(batch).shape[0]))

    # -- evaluation ---------------------------------------------------------------------------
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start("eval", batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.meter.charge_eval(self._finish(batch), int(_inputs(batch).shape[0]))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start("eval", batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.meter.charge_eval(self._finish(batch), int(_inputs(batch).shape[0]))

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
