"""The time audit: what the meter does not count still costs time.

An in-process meter counts the torch ops it sees; work done outside torch (numpy, another process,
a thread or a signal handler the meter does not reach) is not counted, but it still costs CPU time
(or device time). Per task, the harness compares the CPU seconds the task really took (the process,
every thread, its children live or reaped) with what the work it counted explains:

    explained = executed FLOPs x s/FLOP + bytes moved by uncharged ops x s/byte
                + harness overhead (s per step or evaluation batch, s per fit)

The rates come from reference work the harness runs and times itself under the run's current
conditions, with the learner's code not involved (`reference_rates`: a training step of the task's
starting backbone at the task's image shape, and per-parameter elementwise work; the harness's own
per-step and per-fit overhead is measured by the caller with a trivial module through the same
Trainer). A calibration taken from the learner's own steps would absorb exactly the hidden work.

`ratio` = (CPU seconds - overhead) / explained compute seconds: about 1 for a learner whose work
the meter sees, about k for one that does k times what it is charged. A task is flagged when the
ratio passes `meter.unexplained_max` and the unexplained seconds pass `meter.unexplained_min_seconds`
(docs/flop-meter.md gives the measured false-positive and detection rates behind the defaults).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nevisbench.compute.counter import StepCounter, seen

__all__ = ["CpuClock", "Rates", "Reference", "TaskAudit", "reference_rates", "audit_task"]


class CpuClock:
    """CPU seconds of this process (every thread) and of its children, live or reaped.

    `psutil` reads the live children (a forked worker still running); `os.times` the reaped ones. A
    child moves from the first sum to the second when it is reaped, so differences stay right."""

    def __init__(self) -> None:
        import psutil  # imported here: only a run that audits needs it

        self._psutil = psutil
        self._process = psutil.Process()
        self.children_seen: set[tuple[int, float]] = set()

    def _live_children(self) -> float:
        total = 0.0
        for child in self._process.children(recursive=True):
            try:
                times = child.cpu_times()
                self.children_seen.add((child.pid, child.create_time()))
            except self._psutil.Error:
                continue
            total += times.user + times.system
        return total

    def now(self) -> float:
        t = os.times()  # children: in clock ticks; this process: the finer process clock
        return time.process_time() + t.children_user + t.children_system + self._live_children()


@dataclass(frozen=True)
class Rates:
    """CPU seconds per unit of work, measured by the harness under this run's conditions."""

    flop: float  # per executed training FLOP (matmul, convolution, attention; forward and backward)
    eval_flop: float  # per executed evaluation FLOP (forward under no_grad, evaluation batches)
    byte: float  # per byte moved by an op without a FLOP rule (elementwise, norms, the optimizer)
    op: float  # per dispatched op (the framework's and the meter's per-op cost)
    step: float = 0.0  # the harness's own work per training step or evaluation batch, beyond its ops
    fit: float = 0.0  # the harness's own work per Lightning fit (Trainer, setup, teardown), beyond its ops

    def explain(self, flops: float, moved: float, ops: float, eval_flops: float = 0.0) -> float:
        return flops * self.flop + eval_flops * self.eval_flop + moved * self.byte + ops * self.op

    def combined(self, other: Rates) -> Rates:
        """The mean of two calibrations (the task's start and end), rate by rate."""
        return Rates(*((a + b) / 2 for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))


def _timed(clock: CpuClock, work: Callable[[], object], repeats: int, root: nn.Module | None = None
           ) -> tuple[float, float, float, float]:
    """(CPU seconds, FLOPs, bytes, ops) of `repeats` calls of `work`, counted by a counter of the harness's own."""
    before = seen()
    with StepCounter(root, audited=True):
        start = clock.now()
        for _ in range(repeats):
            work()
        spent = clock.now() - start
    after = seen()
    return spent, after[0] - before[0], after[1] - before[1], after[2] - before[2]


class Reference:
    """The audit's reference work on a copy of `backbone` (the harness's starting backbone, never the
    learner's module), built once per run and shape and timed at each calibration, each part counted
    by a counter of the harness's own:
    - per op: many elementwise ops on a one-element tensor;
    - per byte: elementwise ops on tensors of the backbone's first activation and its parameters;
    - per FLOP: `steps` SGD steps of the backbone with a linear head at the task's image shape, and
      an evaluation pass, less what their ops and bytes explain (never below 30% of the time)."""

    def __init__(self, backbone: nn.Module, image_shape: tuple[int, ...], batch_size: int, eval_batch_size: int = 64) -> None:
        self.model = copy.deepcopy(backbone).float().train()
        self.params = list(self.model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.batch = max(2, min(batch_size, 16))
        self.x = torch.rand(self.batch, *image_shape)
        with torch.no_grad():
            width = int(self.model.eval()(self.x[:1]).reshape(1, -1).shape[1])
        self.model.train()
        self.head = nn.Linear(width, 10)
        self.optimizer = torch.optim.SGD([*self.params, *self.head.parameters()], lr=1e-4, momentum=0.9,
                                         foreach=True)  # as the harness's own optimizer steps (TaskModule)
        self.y = torch.arange(self.batch) % 10
        self.probe = torch.rand(max(2, min(eval_batch_size, 64)), *image_shape)
        self.activation = torch.rand(self.batch, 64, max(1, image_shape[-2] // 2), max(1, image_shape[-1] // 2))
        self.state = [torch.zeros_like(p) for p in self.params]
        self.tiny = torch.zeros(1)
        with torch.enable_grad():
            self._step()  # allocations, first-touch, lazy initialisation: not timed
        with torch.no_grad():
            self.model.eval()(self.probe)
        self.model.train()

    def _step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.head(self.model(self.x).reshape(self.batch, -1)), self.y).backward()
        self.optimizer.step()

    def _elementwise(self) -> None:
        for _ in range(4):
            self.activation.mul_(0.5).add_(0.25).clamp_(min=0.0)
        for p, s in zip(self.params, self.state, strict=True):
            s.mul_(0.9).add_(p.detach(), alpha=0.1)

    def rates(self, clock: CpuClock, steps: int = 2) -> Rates:
        spent, _, _, ops = _timed(clock, lambda: self.tiny.add_(1.0), 4000)
        op = spent / max(ops, 1.0)
        spent, _, moved, ops = _timed(clock, self._elementwise, 3)
        byte = max(spent - ops * op, 0.3 * spent) / max(moved, 1.0)
        with torch.enable_grad():
            spent, flops, moved, ops = _timed(clock, self._step, steps, self.model)
        flop = max(spent - moved * byte - ops * op, 0.3 * spent) / max(flops, 1.0)
        self.model.eval()
        with torch.no_grad():
            spent, flops, moved, ops = _timed(clock, lambda: self.model(self.probe), 2, self.model)
        self.model.train()
        return Rates(flop=flop, eval_flop=max(spent - moved * byte - ops * op, 0.3 * spent) / max(flops, 1.0),
                     byte=byte, op=op)


def reference_rates(backbone: nn.Module, image_shape: tuple[int, ...], batch_size: int, clock: CpuClock,
                    steps: int = 2, eval_batch_size: int = 64) -> Rates:
    """The rates of a fresh `Reference` (built, warmed, timed once)."""
    return Reference(backbone, image_shape, batch_size, eval_batch_size).rates(clock, steps)


@dataclass
class TaskAudit:
    """One task's time audit, as the `audit` object of its results line."""

    cpu_seconds: float  # measured: the task's CPU seconds, calibration excluded
    overhead_seconds: float  # the harness's own share, from its per-step and per-fit rates
    explained_seconds: float  # what the counted FLOPs and bytes explain
    ratio: float  # (cpu - overhead) / explained: ~1 honest, ~k for k times the charged work
    unexplained_seconds: float
    flagged: bool
    threshold: float
    min_seconds: float
    children: int  # processes the run process started during the task (forked or spawned)
    rates: dict[str, float]
    calibration_seconds: float
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def audit_task(*, cpu_seconds: float, flops: float, eval_flops: float, moved: float, ops: float, steps: int,
               batches: int, fits: int, rates: Rates, threshold: float, min_seconds: float, children: int,
               calibration_seconds: float) -> TaskAudit:
    """The audit of a task that spent `cpu_seconds` on `flops` executed training (and search) FLOPs
    and `eval_flops` evaluation FLOPs (charged, cached steps included), `moved` bytes of uncharged
    ops, `ops` dispatched ops, `steps` training steps, `batches` evaluation batches and `fits` fits."""
    overhead = rates.step * (steps + batches) + rates.fit * fits
    explained = rates.explain(flops, moved, ops, eval_flops)
    compute = max(cpu_seconds - overhead, 0.0)
    ratio = compute / explained if explained > 0 else (float("inf") if compute > min_seconds else 1.0)
    unexplained = compute - explained
    flagged = ratio > threshold and unexplained > min_seconds
    reason = None
    if flagged:
        reason = (f"the task used {cpu_seconds:.1f} CPU-s, {ratio:.2f}x what its counted work explains "
                  f"({explained:.1f} s + {overhead:.1f} s harness overhead): compute the meter did not see")
    return TaskAudit(
        cpu_seconds=cpu_seconds, overhead_seconds=overhead, explained_seconds=explained,
        ratio=ratio if ratio != float("inf") else 1e9, unexplained_seconds=unexplained, flagged=flagged,
        threshold=threshold, min_seconds=min_seconds, children=children,
        rates={"gflop_per_cpu_second": 1e-9 / rates.flop if rates.flop else 0.0,
               "eval_gflop_per_cpu_second": 1e-9 / rates.eval_flop if rates.eval_flop else 0.0,
               "gbyte_per_cpu_second": 1e-9 / rates.byte if rates.byte else 0.0,
               "op_us": rates.op * 1e6, "step_ms": rates.step * 1e3, "fit_ms": rates.fit * 1e3},
        calibration_seconds=calibration_seconds, reason=reason,
    )
