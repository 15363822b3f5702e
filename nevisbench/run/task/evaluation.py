"""Evaluation owned by the harness: the learner's module only supplies `forward(x) -> logits`, so
no learner can change how it is scored. Every evaluated batch is charged to the FLOP meter."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from nevisbench.compute import guard
from nevisbench.compute.flops import FlopMeter, StepCounter, counting_outside, structure_signature
from nevisbench.errors import PluginError, TaskFailed
from nevisbench.run.task import compiling

__all__ = ["evaluate", "unseen_weight_writes"]


@contextlib.contextmanager
def unseen_weight_writes(module: nn.Module, where: str) -> Any:
    """Flag (`guard.flag`) a change to `module`'s parameters inside that moved no version counter
    (`.data` writes, `.detach()` views, `torch.no_grad` copies through another alias): evaluation
    must not train, and a write the counters do not see is not charged as training either."""
    params = [p for p in module.parameters()]
    before = [(p.detach().clone(), p._version) for p in params]
    yield
    for p, (copy, version) in zip(params, before, strict=True):
        if p._version == version and (p.shape != copy.shape or not torch.equal(p.detach(), copy)):
            guard.flag(f"the model's parameters changed during {where} without a counted write (e.g. through "
                       "`.data`): evaluation must not train")
            return


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _metric(num_classes: int, multi_label: bool, device: torch.device) -> Any:
    if multi_label:
        return MultilabelAveragePrecision(num_labels=num_classes, average="macro").to(device)
    return MulticlassAccuracy(num_classes=num_classes, average="micro").to(device)


def _check_logits(logits: Any, batch: int, num_classes: int) -> None:
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise PluginError(f"the module's forward(x) returned {got} for a batch of {batch}; "
                          f"expected logits of shape ({batch}, {num_classes})")


def evaluate(
    module: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    meter: FlopMeter,
    *,
    num_classes: int,
    multi_label: bool = False,
    forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    kind: str = "eval",
    split: str = "evaluation",
) -> float:
    """Top-1 error of `module` on `loader` (1 - macro mean average precision on multi-label tasks,
    as Nevis scores Pascal VOC), charged to `meter` as `kind` compute (FLOPs and seconds).

    Train/eval flags of every submodule are restored afterwards, so this may run mid-training.
    Batches are counted under the meter's policy, keyed by the batch's structure signature (a
    changed model is counted again; a forward whose cost varies between calls is counted until
    two counts agree, then audited). Outputs that are not finite fail the task (`_refuse_non_finite`).
    """
    flags = {m: m.training for m in module.modules()}
    device = next(module.parameters()).device
    metric = _metric(num_classes, multi_label, device)
    seen, broken = 0, torch.zeros((), dtype=torch.long, device=device)
    _sync(device)
    start, compiled = time.perf_counter(), compiling.seconds()
    with counting_outside():  # a module's own train()/eval() is not evaluation: charged to training
        module.eval()
    try:
        with torch.no_grad(), forward_context(), warnings.catch_warnings():
            # a class without positives in a (small) split scores AP 0, as sklearn's does; warn once, not per class
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            for x, y in loader:
                signature = structure_signature(module, x, "eval")
                per_sample = meter.cached_eval(signature)
                if per_sample is None:  # counted: new structure, not settled yet, or an audit
                    with StepCounter(module, audited=True) as counter:
                        logits = module(x)
                    per_sample = meter.counted_eval(signature, counter.result(int(x.shape[0])))
                    meter.store(("eval", tuple(x.shape[1:]), x.dtype), per_sample)  # for readers by shape
                else:
                    logits = module(x)
                meter.charge_eval(per_sample, int(x.shape[0]), kind=kind)
                _check_logits(logits, int(x.shape[0]), num_classes)
                broken += (~torch.isfinite(logits).all(dim=1)).sum()  # no host sync per batch
                seen += int(x.shape[0])
                if multi_label:
                    metric.update(torch.sigmoid(logits.float()), y.int())
                else:
                    metric.update(logits.float(), y)
            error = 1.0 - float(metric.compute())
    finally:
        with counting_outside():
            for m, training in flags.items():
                m.train(training)
    _sync(device)
    compiled = compiling.seconds() - compiled  # trainer.compile=true: compile time is reported on its own
    meter.charge_seconds(kind, time.perf_counter() - start - compiled)
    meter.charge_seconds("compile", compiled)
    _refuse_non_finite(int(broken), seen, split)
    return error


def _refuse_non_finite(broken: int, seen: int, split: str) -> None:
    """Outputs that are not finite (NaN or inf: broken weights, e.g. a NaN in a BatchNorm running
    mean) are never scored as predictions (argmax would pick class 0 and give a believable error):
    the task fails, naming `split` and the share of its examples affected."""
    if broken:
        raise TaskFailed(f"the model's outputs are not finite (NaN or inf) on {broken / seen:.1%} of the {split} "
                         f"split ({broken} of {seen} examples): its predictions are not scored")
