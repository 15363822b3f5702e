"""FLOP arithmetic: counting one step with torch's dispatch-level counter, and the meter that
accumulates counted steps per task and per stream.

Counting is done once per (mode, per-sample input shape) and cached; later steps with the same key
are charged from the cache (FLOPs of convolutions and matmuls are linear in the batch size), so the
~5% dispatch overhead of counting is paid on one step, not every step.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

__all__ = ["StepFlops", "FlopTally", "FlopMeter", "counting_mode", "conv_backward_flop"]

aten = torch.ops.aten


def conv_backward_flop(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
    _output_padding, _groups, output_mask, out_shape=None, **kwargs,
) -> int:
    """FLOPs of `aten.convolution_backward`: grad-input and grad-weight each cost one forward.

    torch's own rule computes grad-weight as a dense conv over all input channels and so
    over-counts grouped convolutions by a factor of `groups` (2.5x for the whole backward at
    groups=4). A conv's forward count already uses the per-group input width (w_shape[1]), so each
    backward term is exactly one forward count.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def counting_mode() -> FlopCounterMode:
    """A FlopCounterMode with nevisbench's corrections, silent."""
    return FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: conv_backward_flop})


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step for ONE sample."""

    forward: float
    backward: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def __mul__(self, n: float) -> StepFlops:
        return StepFlops(self.forward * n, self.backward * n)


@dataclass
class FlopTally:
    """Accumulated FLOPs by kind."""

    train_forward: float = 0.0
    train_backward: float = 0.0
    eval: float = 0.0

    @property
    def train(self) -> float:
        return self.train_forward + self.train_backward

    @property
    def total(self) -> float:
        return self.train + self.eval

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "eval": self.eval, "total": self.total, **asdict(self)}

    def add(self, other: FlopTally) -> None:
        self.train_forward += other.train_forward
        self.train_backward += other.train_backward
        self.eval += other.eval


@dataclass
class FlopMeter:
    """Per-task and cumulative FLOPs. Plain Python; `FlopMeterCallback` adapts it to Lightning."""

    task: FlopTally = field(default_factory=FlopTally)
    stream: FlopTally = field(default_factory=FlopTally)
    _per_sample: dict[Hashable, StepFlops] = field(default_factory=dict)

    def start_task(self) -> None:
        """A new task may bring a new model structure: forget cached counts."""
        self._per_sample.clear()
        self.task = FlopTally()

    def end_task(self) -> FlopTally:
        self.stream.add(self.task)
        return self.task

    def cached(self, key: Hashable) -> StepFlops | None:
        return self._per_sample.get(key)

    def store(self, key: Hashable, counted: StepFlops, batch_size: int) -> StepFlops:
        per_sample = counted * (1.0 / batch_size)
        self._per_sample[key] = per_sample
        return per_sample

    def charge_train(self, per_sample: StepFlops, batch_size: int) -> None:
        self.task.train_forward += per_sample.forward * batch_size
        self.task.train_backward += per_sample.backward * batch_size

    def charge_eval(self, per_sample: StepFlops, batch_size: int) -> None:
        self.task.eval += per_sample.total * batch_size

    @property
    def cumulative(self) -> FlopTally:
        """Stream total including the task in progress."""
        total = FlopTally()
        total.add(self.stream)
        total.add(self.task)
        return total
