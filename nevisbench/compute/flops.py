"""FLOP arithmetic: counting one step with torch's dispatch-level counter, sparsity-aware
(algorithmic) accounting from weight masks, and the meter that accumulates steps per task and per
stream.

Counting is done once per (mode, per-sample input shape) and cached; later steps with the same key
are charged from the cache (FLOPs of convolutions and matmuls are linear in the batch size), so the
~5% dispatch overhead of counting is paid on one step, not every step.

Two FLOP measures are kept:
- `executed`: what the hardware ran (every matmul/conv, 2 FLOPs per multiply-add).
- `algorithmic`: executed, with each masked layer charged its kept fraction. A layer declares its
  sparsity by carrying a `<param>_mask` buffer (the `torch.nn.utils.prune` convention); a layer with
  kernel density d costs d x its dense FLOPs in forward, grad-input and grad-weight alike. The mask
  is checked against the weight the layer really uses, so a mask cannot lower the count without
  zeroing the weights.
"""

from __future__ import annotations

import contextvars
from collections.abc import Hashable
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from nevisbench.errors import PluginError

__all__ = [
    "StepFlops", "FlopTally", "FlopMeter", "StepCounter", "counting_mode", "conv_backward_flop",
    "mask_densities", "KINDS",
]

aten = torch.ops.aten
KINDS = ("train", "eval", "search")


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


# The StepCounter in progress, if any: the raw formulas below report masked layers' FLOPs to it.
_ACTIVE: contextvars.ContextVar[StepCounter | None] = contextvars.ContextVar("nevisbench_step_counter", default=None)


def _raw(fn):
    fn._get_raw = True  # FlopCounterMode passes real tensors (not shapes) to such formulas
    return fn


@_raw
def _conv_forward_raw(x, w, _bias, _stride, _padding, _dilation, transposed, *rest, out_val=None, **kwargs) -> int:
    flops = conv_flop_count(list(x.shape), list(w.shape), list(out_val.shape), bool(transposed))
    counter = _ACTIVE.get()
    if counter is not None:
        counter._forward_op(w, flops)
    return flops


@_raw
def _conv_backward_raw(grad_out, x, w, *args, out_val=None, **kwargs) -> int:
    flops = conv_backward_flop(grad_out.shape, x.shape, w.shape, *args)
    counter = _ACTIVE.get()
    if counter is not None:
        counter._backward_op(w, flops)
    return flops


def _mm_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


@_raw
def _mm_raw(a, b, *, out_val=None, **kwargs) -> int:
    flops = _mm_flops(a, b)
    counter = _ACTIVE.get()
    if counter is not None:
        counter._matmul_op((a, b), flops)
    return flops


@_raw
def _addmm_raw(_bias, a, b, *, out_val=None, **kwargs) -> int:
    flops = _mm_flops(a, b)
    counter = _ACTIVE.get()
    if counter is not None:
        counter._matmul_op((a, b), flops)
    return flops


def counting_mode() -> FlopCounterMode:
    """A FlopCounterMode with nevisbench's corrections, silent."""
    return FlopCounterMode(display=False, custom_mapping={
        aten.convolution: _conv_forward_raw,
        aten._convolution: _conv_forward_raw,
        aten.convolution_backward: _conv_backward_raw,
        aten.mm: _mm_raw,
        aten.addmm: _addmm_raw,
    })


def mask_densities(root: nn.Module) -> dict[str, float]:
    """Kept fraction of every masked module, by its name in `root` ('' for root itself).

    Raises PluginError when a mask claims zeros the layer's weight does not have.
    """
    densities: dict[str, float] = {}
    for name, module in root.named_modules():
        kept, total = 0.0, 0
        for buffer_name, mask in module.named_buffers(recurse=False):
            if not buffer_name.endswith("_mask"):
                continue
            param_name = buffer_name.removesuffix("_mask")
            weight = getattr(module, param_name, None)
            if not isinstance(weight, torch.Tensor) or weight.shape != mask.shape:
                raise PluginError(f"Module '{name}' has a mask '{buffer_name}' that matches no parameter '{param_name}'")
            if bool((weight.detach()[mask == 0] != 0).any()):
                raise PluginError(f"Module '{name}' declares '{buffer_name}' but its {param_name} is non-zero "
                                  "where the mask is zero: the mask must really be applied")
            if param_name == "weight":  # FLOPs scale with the kept weights; biases are negligible
                kept, total = float(mask.count_nonzero()), mask.numel()
        if total:
            densities[name] = kept / total
    return densities


def _counter_names(root: nn.Module, name: str) -> list[str]:
    """The names FlopCounterMode may give module `name`: it prefixes the class name of whichever
    ancestor the step called first (root.forward, or e.g. root.backbone directly)."""
    parts = name.split(".") if name else []
    names, ancestor = [], root
    for i in range(len(parts) + 1):
        rest = ".".join(parts[i:])
        names.append(type(ancestor).__name__ + (f".{rest}" if rest else ""))
        if i < len(parts):
            ancestor = getattr(ancestor, parts[i])
    return names


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step, per sample: executed and algorithmic, forward and backward."""

    forward: float
    backward: float = 0.0
    algorithmic_forward: float | None = None
    algorithmic_backward: float | None = None

    @property
    def algo_forward(self) -> float:
        return self.forward if self.algorithmic_forward is None else self.algorithmic_forward

    @property
    def algo_backward(self) -> float:
        return self.backward if self.algorithmic_backward is None else self.algorithmic_backward

    def scaled(self, factor: float) -> StepFlops:
        return StepFlops(self.forward * factor, self.backward * factor, self.algo_forward * factor, self.algo_backward * factor)


class StepCounter:
    """Counts one step of `root`: `with StepCounter(root) as c: fwd...; c.mark_forward(); bwd...`,
    then `c.result(batch_size)` gives per-sample StepFlops.

    Masked layers are recognised in the forward pass by the module running the op (the counter's
    module tracking is reliable in forward), and their weight tensor is remembered; backward ops
    are matched to them by that weight's storage, because module tracking in backward wrongly
    charges a residual block's shortcut with its main branch's gradients.
    """

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.mode = counting_mode()
        self._forward_total: int | None = None
        self._density_by_label: dict[str, float] = {}
        self._density_by_storage: dict[int, float] = {}
        self._saved_forward = 0.0
        self._saved_backward = 0.0

    def __enter__(self) -> StepCounter:
        for name, density in mask_densities(self.root).items():
            for label in _counter_names(self.root, name):
                self._density_by_label[label] = density
        # compiled graphs bypass the dispatcher the counter listens to: count the step eagerly
        self._stance = torch.compiler.set_stance("force_eager")
        self._stance.__enter__()
        self._token = _ACTIVE.set(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)
        _ACTIVE.reset(self._token)
        self._stance.__exit__(*exc)

    def _active_density(self) -> float | None:
        labels = [p for p in self.mode.mod_tracker.parents if p in self._density_by_label]
        return self._density_by_label[max(labels, key=len)] if labels else None

    def _forward_op(self, weight: torch.Tensor, flops: int) -> None:
        density = self._active_density()
        if density is not None:
            self._density_by_storage[weight.untyped_storage().data_ptr()] = density
            self._saved_forward += flops * (1 - density)

    def _backward_op(self, weight: torch.Tensor, flops: int) -> None:
        density = self._density_by_storage.get(weight.untyped_storage().data_ptr())
        if density is not None:
            self._saved_backward += flops * (1 - density)

    def _matmul_op(self, operands: tuple[torch.Tensor, torch.Tensor], flops: int) -> None:
        if self._forward_total is None:
            density = self._active_density()
            if density is not None:
                self._density_by_storage[operands[1].untyped_storage().data_ptr()] = density
                self._saved_forward += flops * (1 - density)
        else:  # grad-input of a masked linear uses its weight; grad-weight does not (not discounted)
            for operand in operands:
                density = self._density_by_storage.get(operand.untyped_storage().data_ptr())
                if density is not None:
                    self._saved_backward += flops * (1 - density)
                    break

    def mark_forward(self) -> None:
        self._forward_total = self.mode.get_total_flops()

    def result(self, batch_size: int) -> StepFlops:
        total = self.mode.get_total_flops()
        forward = total if self._forward_total is None else self._forward_total
        step = StepFlops(forward, total - forward, forward - self._saved_forward, total - forward - self._saved_backward)
        return step.scaled(1.0 / batch_size)


@dataclass
class FlopTally:
    """Accumulated compute by kind: algorithmic FLOPs (the default measure), executed FLOPs, seconds."""

    train_forward: float = 0.0
    train_backward: float = 0.0
    eval: float = 0.0
    search: float = 0.0
    executed_train_forward: float = 0.0
    executed_train_backward: float = 0.0
    executed_eval: float = 0.0
    executed_search: float = 0.0
    seconds_train: float = 0.0
    seconds_eval: float = 0.0
    seconds_search: float = 0.0

    @property
    def train(self) -> float:
        return self.train_forward + self.train_backward

    @property
    def executed_train(self) -> float:
        return self.executed_train_forward + self.executed_train_backward

    @property
    def total(self) -> float:
        return self.train + self.eval + self.search

    def measure(self, measure: str, kind: str = "total") -> float:
        """`measure` in algorithmic | executed | seconds; `kind` in train | eval | search | total."""
        prefix = {"algorithmic": "", "executed": "executed_", "seconds": "seconds_"}[measure]
        if kind == "total":
            return sum(self.measure(measure, k) for k in KINDS)
        if kind == "train" and measure != "seconds":
            return getattr(self, f"{prefix}train_forward") + getattr(self, f"{prefix}train_backward")
        return getattr(self, f"{prefix}{kind}")

    def as_dict(self) -> dict[str, float]:
        """The `flops` object of a results line (algorithmic), with executed FLOPs and seconds."""
        return {
            "train": self.train, "eval": self.eval, "search": self.search, "total": self.total,
            "train_forward": self.train_forward, "train_backward": self.train_backward,
            "executed": {k: self.measure("executed", k) for k in (*KINDS, "total")}
            | {"train_forward": self.executed_train_forward, "train_backward": self.executed_train_backward},
            "seconds": {k: self.measure("seconds", k) for k in (*KINDS, "total")},
        }

    def add(self, other: FlopTally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> FlopTally:
        out = FlopTally()
        out.add(self)
        return out


@dataclass
class FlopMeter:
    """Per-task and cumulative compute. Plain Python; Lightning callbacks adapt it."""

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

    def store(self, key: Hashable, per_sample: StepFlops) -> StepFlops:
        self._per_sample[key] = per_sample
        return per_sample

    def charge_train(self, per_sample: StepFlops, batch_size: int) -> None:
        t = self.task
        t.train_forward += per_sample.algo_forward * batch_size
        t.train_backward += per_sample.algo_backward * batch_size
        t.executed_train_forward += per_sample.forward * batch_size
        t.executed_train_backward += per_sample.backward * batch_size

    def charge_eval(self, per_sample: StepFlops, batch_size: int, *, kind: str = "eval") -> None:
        setattr(self.task, kind, getattr(self.task, kind) + (per_sample.algo_forward + per_sample.algo_backward) * batch_size)
        executed = f"executed_{kind}"
        setattr(self.task, executed, getattr(self.task, executed) + per_sample.forward * batch_size + per_sample.backward * batch_size)

    def charge_seconds(self, kind: str, seconds: float) -> None:
        setattr(self.task, f"seconds_{kind}", getattr(self.task, f"seconds_{kind}") + seconds)

    @property
    def cumulative(self) -> FlopTally:
        """Stream total including the task in progress."""
        total = self.stream.copy()
        total.add(self.task)
        return total
