"""The time audit of one task (`nevisbench.compute.audit` says what it is and why): the CPU clock
around the task, the calibration the harness runs itself before and after it (the learner's code
not involved), and the task's `audit` record.

The harness's own overhead per step and per fit is measured with a trivial module (one parameter,
no matmul) trained through the same Trainer, loader and meter callback as the task: a 1-step fit
and a (1+k)-step fit give the per-fit and per-step seconds."""

from __future__ import annotations

import copy
import gc
import random
from dataclasses import dataclass, field
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nevisbench.compute import guard
from nevisbench.compute.audit import CpuClock, Rates, Reference, TaskAudit, audit_task
from nevisbench.compute.counter import seen
from nevisbench.compute.flops import FlopMeter, FlopTally
from nevisbench.compute.hardware import world_size
from nevisbench.registry import is_builtin
from nevisbench.run.task.lightning import make_trainer
from nevisbench.run.task.metering import FlopMeterCallback
from nevisbench.tasks.loader import BatchLoader

__all__ = ["AUDIT_CHOICES", "TaskAuditor", "audit_skipped", "reference_backbone", "audit_record", "refusal"]

AUDIT_CHOICES = ("auto", "always", "off")  # meter.time_audit


def reference_backbone(backbone: nn.Module | None, cfg: DictConfig, learner: str) -> nn.Module | None:
    """A copy of the harness's starting backbone for the audit's reference steps (taken before the
    learner's prepare() sees it); for a learner that brings its own, a ResNet-18 of the harness's."""
    if audit_skipped(cfg, torch.device("cpu"), learner) is not None:
        return None
    if backbone is not None:
        return copy.deepcopy(backbone).cpu()
    import torchvision

    model = torchvision.models.resnet18()
    model.fc = nn.Identity()  # type: ignore[assignment]
    return model


class _Trivial(L.LightningModule):
    """A module with no matmul: what a step costs the harness when the learner does nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.w * batch[0].float().mean()
        self.log("train/loss", loss, prog_bar=True)  # what a TaskModule's step logs
        return loss

    def configure_optimizers(self) -> Any:  # an optimizer and a per-step LR schedule, as a TaskModule's
        optimizer = torch.optim.SGD(self.parameters(), lr=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _fit_seconds(cfg: DictConfig, loader: BatchLoader, precision: str, device: torch.device, steps: int,
                 clock: CpuClock, root_dir: str, rates: Rates) -> float:
    """CPU seconds of a fit of `steps` steps of the trivial module, less what its seen ops explain
    (the loader's and the loop's ops are seen in a task too: they must not be explained twice)."""
    quiet = cast(DictConfig, OmegaConf.merge(cfg, {"train": {"max_steps": steps}, "trainer": {"progress_bar": False, "compile": False}}))
    meter = FlopMeter(audit_every=1)  # a private meter: the task's is not touched
    before, start = seen(), clock.now()
    trainer = make_trainer(quiet, precision=precision, device=device, steps_per_epoch=len(loader), budgeted=False,
                           callbacks=[FlopMeterCallback(meter)], logger=False, root_dir=root_dir)
    trainer.fit(_Trivial(), train_dataloaders=loader)
    spent = clock.now() - start
    return spent - rates.explain(*(a - b for a, b in zip(seen(), before, strict=True)))


def _overhead(cfg: DictConfig, loader: BatchLoader, precision: str, device: torch.device, clock: CpuClock,
              root_dir: str, rates: Rates, k: int = 4) -> tuple[float, float]:
    """(seconds per step, seconds per fit) of the harness's own work beyond the ops it runs."""
    one = _fit_seconds(cfg, loader, precision, device, 1, clock, root_dir, rates)
    many = _fit_seconds(cfg, loader, precision, device, 1 + k, clock, root_dir, rates)
    step = max(many - one, 0.0) / k
    return step, max(one - step, 0.0)


def audit_skipped(cfg: DictConfig, device: torch.device, learner: str) -> str | None:
    """Why this run's tasks are not audited (None: they are). `meter.time_audit=auto` audits the
    plugins (the code the meter cannot review), `always` every learner, `off` none."""
    policy = cfg.meter.get("time_audit", "auto")
    if policy == "off":
        return "meter.time_audit=off"
    if policy == "auto" and is_builtin(learner):
        return "a learner nevisbench ships (meter.time_audit=auto audits plugins; always audits every learner)"
    if device.type != "cpu":
        return f"on {device.type} the audit needs the device's busy time, not measured yet (CPU runs are audited)"
    if world_size(cfg.trainer) > 1:
        return "under DDP the ranks' CPU time is not gathered yet"
    return None


@dataclass
class TaskAuditor:
    """Measures one task: `begin` after its data is loaded, `end` after its end_task."""

    cfg: DictConfig
    meter: FlopMeter
    reference: nn.Module | None  # the harness's starting backbone (never the learner's module)
    precision: str
    device: torch.device
    root_dir: str
    clock: CpuClock = field(default_factory=CpuClock)
    _rates: Rates | None = None
    _start: float = 0.0
    _seen: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _counts: tuple[int, int] = (0, 0)
    _calibration: float = 0.0
    _children: int = 0
    _loader: BatchLoader | None = None
    _last: Rates | None = None  # the rates measured at the end of the task before (the next task starts from them)
    _work: dict[tuple, Reference] = field(default_factory=dict)

    def _calibrate(self, loader: BatchLoader, overhead: Rates | None = None) -> Rates:
        """Rates under the conditions of now (the harness's overhead measured again unless given); the
        task's random streams and meter are left as they were."""
        began = self.clock.now()
        tally, states = self.meter.task.copy(), (random.getstate(), np.random.get_state())
        with torch.random.fork_rng(devices=[]):
            image_shape = tuple(int(d) for d in next(iter(loader))[0].shape[1:])  # what the module is fed
            assert self.reference is not None
            key = (image_shape, int(loader.batch_size), int(self.cfg.data.eval_batch_size))
            if key not in self._work:  # built (and warmed) once per run and shape: a calibration only times it
                self._work[key] = Reference(self.reference, image_shape, key[1], key[2])
            rates = self._work[key].rates(self.clock)
            step, fit = (overhead.step, overhead.fit) if overhead is not None else \
                _overhead(self.cfg, loader, self.precision, self.device, self.clock, self.root_dir, rates)
        random.setstate(states[0])
        np.random.set_state(states[1])
        self.meter.task = tally
        self._calibration += self.clock.now() - began
        return Rates(flop=rates.flop, eval_flop=rates.eval_flop, byte=rates.byte, op=rates.op, step=step, fit=fit)

    def begin(self, loader: BatchLoader) -> None:
        """`loader`: a train loader of the task's own (the task's trials make theirs), for the calibration.
        The first task calibrates in full; a later one starts from the rates the task before it ended
        with (the same auditor serves the whole run), so each task costs one calibration."""
        self._loader, self._calibration = loader, 0.0
        self._rates = self._last if self._last is not None else self._calibrate(loader)
        gc.collect()  # the harness's garbage from before the task (an earlier run's, in a long process) is not the task's
        self._children = len(self.clock.children_seen)
        self._seen = seen()
        self._counts = (self.meter.fits, self.meter.eval_batches)
        self._start = self.clock.now()

    def end(self, tally: FlopTally, steps: int) -> TaskAudit:
        spent = self.clock.now() - self._start
        flops_seen, moved, ops = (now - then for now, then in zip(seen(), self._seen, strict=True))
        fits, batches = self.meter.fits - self._counts[0], self.meter.eval_batches - self._counts[1]
        children = len(self.clock.children_seen) - self._children
        assert self._rates is not None and self._loader is not None
        after = self._calibrate(self._loader, overhead=self._rates)  # the rates at the task's end: load may have changed
        rates, self._last = self._rates.combined(after), after
        charged = tally.measure("executed", "total")
        scale = max(1.0, charged / flops_seen) if flops_seen > 0 else 1.0  # steps charged from the cache
        eval_flops = tally.executed_eval
        meter_cfg = self.cfg.meter
        return audit_task(cpu_seconds=spent, flops=charged - eval_flops, eval_flops=eval_flops, moved=moved * scale,
                          ops=ops * scale, steps=steps, batches=batches, fits=fits, rates=rates,
                          threshold=float(meter_cfg.get("unexplained_max", 1.5)),
                          min_seconds=float(meter_cfg.get("unexplained_min_seconds", 1.0)), children=children,
                          calibration_seconds=self._calibration)


def audit_record(auditor: TaskAuditor | None, skipped: str | None, tally: FlopTally, steps: int) -> dict[str, Any]:
    """A task's `audit` record: the time audit (or why it was skipped) and the meter's flags."""
    flags = guard.take_flags()
    record: dict[str, Any] = {"skipped": skipped} if auditor is None else auditor.end(tally, steps).as_dict()
    if flags:
        record |= {"flagged": True, "flags": flags, "reason": "; ".join(filter(None, [record.get("reason"), *flags]))}
    return record


def refusal(learner: str, task: str, meter: FlopMeter) -> str | None:
    """Why the task's line is refused: the learner tampered with the meter (docs/flop-meter.md)."""
    guard.check_kernels("the task's commit")
    problems = guard.take_violations() + guard.tampered(meter) + meter.unsealed()
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
    return f"Learner '{learner}' on {task}: {problems[0]}{more}; the task's compute cannot be charged, so it is refused"
