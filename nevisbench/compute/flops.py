"""FLOP arithmetic: counting a training step with torch's dispatch-level counter, op-exact
sparsity-aware (algorithmic) accounting from weight masks, and the meter that accumulates steps
per task and per stream. Plain Python; `nevisbench.run.metering` adapts it to Lightning.

Two FLOP measures are kept:
- `executed`: what the hardware ran (every matmul/conv, 2 FLOPs per multiply-add).
- `algorithmic`: executed, with each op that computes with a masked weight charged the mask's
  kept fraction. A layer declares its sparsity by carrying a `<param>_mask` buffer (the
  `torch.nn.utils.prune` convention). The discount applies to an op only when the op's weight
  operand IS the tensor the layer holds as `<param>` (same memory, whole tensor: the effective
  weight prune's hook computes as `<param>_orig * <param>_mask`, or an autocast copy of it), and
  that tensor is zero wherever the mask is. A mask on a module whose weight no op uses discounts
  nothing. Conv forward, grad-input and grad-weight are matched by the weight operand; a masked
  linear's grad-weight (which does not read the weight) by the input activation its forward used.

Counting has a per-op Python cost (~5% of a CPU step, more on GPU), so the meter does not count
every step: a step's cost is cached under the model's structure signature (see
`structure_signature`) and recounted when the signature changes; `FlopMeter` holds the policy
(docs/flop-meter.md states it and what the meter cannot see).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.weak import WeakIdKeyDictionary
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from nevisbench.errors import PluginError

__all__ = [
    "StepFlops", "FlopTally", "FlopMeter", "StepCounter", "counting_mode", "conv_backward_flop",
    "mask_densities", "structure_signature", "KINDS",
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


def _raw(fn):
    fn._get_raw = True  # FlopCounterMode passes real tensors (not shapes) to such formulas
    return fn


def _conv_flops(x, w, _bias, _stride, _padding, _dilation, transposed, *rest, out_val=None, **kwargs) -> int:
    return conv_flop_count(list(x.shape), list(w.shape), list(out_val.shape), bool(transposed))


def _conv_backward_flops(grad_out, x, w, *args, out_val=None, **kwargs) -> int:
    return conv_backward_flop(grad_out.shape, x.shape, w.shape, *args)


def _mm_flops(a, b, *, out_val=None, **kwargs) -> int:
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _addmm_flops(_bias, a, b, *, out_val=None, **kwargs) -> int:
    return _mm_flops(a, b)


def counting_mode(counter: StepCounter | None = None) -> FlopCounterMode:
    """A silent FlopCounterMode with nevisbench's corrections (grouped conv backward). With
    `counter`, every counted op is also reported to it (phase, FLOPs, operands)."""
    fixed = {
        aten.convolution: _conv_flops, aten._convolution: _conv_flops,
        aten.convolution_backward: _conv_backward_flops, aten.mm: _mm_flops, aten.addmm: _addmm_flops,
    }
    formulas = {}
    for op, formula in {**flop_counter.flop_registry, **fixed}.items():
        raw = formula if (op in fixed or getattr(formula, "_get_raw", False)) else flop_counter.shape_wrapper(formula)
        formulas[op] = _raw(raw) if counter is None else counter._reporting(op, raw)
    if counter is not None:
        formulas[aten._to_copy] = counter._reporting(aten._to_copy, lambda *a, **k: 0)  # autocast copies of weights
    return FlopCounterMode(display=False, custom_mapping=formulas)


def _masked_params(root: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    for name, module in root.named_modules():
        for buffer_name, mask in module._buffers.items():
            if mask is not None and buffer_name.endswith("_mask"):
                yield name, module, buffer_name.removesuffix("_mask"), mask


def _check_mask(name: str, module: nn.Module, param_name: str, mask: torch.Tensor) -> torch.Tensor:
    weight = getattr(module, param_name, None)
    if not isinstance(weight, torch.Tensor) or weight.shape != mask.shape:
        raise PluginError(f"Module '{name}' has a mask '{param_name}_mask' that matches no parameter '{param_name}'")
    if bool((weight.detach()[mask == 0] != 0).any()):
        raise PluginError(f"Module '{name}' declares '{param_name}_mask' but its {param_name} is non-zero "
                          "where the mask is zero: the mask must really be applied")
    return weight


def mask_densities(root: nn.Module) -> dict[str, float]:
    """Kept fraction of every masked `weight`, by its module's name in `root` ('' for root itself).

    Raises PluginError when a mask claims zeros the layer's weight does not have.
    """
    densities: dict[str, float] = {}
    for name, module, param_name, mask in _masked_params(root):
        _check_mask(name, module, param_name, mask)
        if param_name == "weight":  # FLOPs scale with the kept weights; biases are negligible
            densities[name] = _density(mask)
    return densities


# mask -> (version, density): a mask's density is recounted only when the mask is modified in
# place (its version counter moves) or replaced (a new tensor)
_DENSITY_CACHE: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _density(mask: torch.Tensor) -> float:
    cached = _DENSITY_CACHE.get(mask)
    if cached is not None and cached[0] == mask._version:
        return cached[1]
    density = float(mask.count_nonzero()) / max(1, mask.numel())
    _DENSITY_CACHE[mask] = (mask._version, density)
    return density


def structure_signature(root: nn.Module, x: torch.Tensor, kind: str = "train") -> tuple:
    """What a step's FLOPs depend on, cheap to compute every step (no dispatch, no device sync
    unless a mask changed): the batch's shape and dtype, every parameter's shape, dtype and
    requires_grad, every mask's density, every module's train/eval flag and hook count."""
    flags, params, masks = [], [], []
    hooks = 0
    for module in root.modules():
        flags.append(module.training)
        for p in module._parameters.values():
            if p is not None:
                params.append((p.shape, p.dtype, p.requires_grad))
        for buffer_name, buffer in module._buffers.items():
            if buffer is not None and buffer_name.endswith("_mask"):
                masks.append(_density(buffer))
        hooks += len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
    return (kind, tuple(x.shape), x.dtype, tuple(flags), tuple(params), tuple(masks), hooks)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step (or per sample): executed and algorithmic, forward and backward."""

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

    def minus(self, other: StepFlops) -> StepFlops:
        return StepFlops(self.forward - other.forward, self.backward - other.backward,
                         self.algo_forward - other.algo_forward, self.algo_backward - other.algo_backward)

    def measure(self, measure: str) -> float:
        """Forward + backward in `measure` (algorithmic | executed)."""
        if measure == "executed":
            return self.forward + self.backward
        return self.algo_forward + self.algo_backward


ZERO = StepFlops(0.0, 0.0, 0.0, 0.0)


def _key(t: torch.Tensor) -> tuple:
    return (t.device, t.data_ptr(), t.numel())


class StepCounter:
    """Counts every matmul and convolution run while it is entered:
    `with StepCounter(root) as c: ...`, then `c.totals()` (whole window) or `c.result(batch_size)`
    (per sample). Ops run by the autograd engine are backward, all others forward. `pause()`
    stops counting (e.g. for an evaluation run inside a training window).

    Masks: see the module docstring. Tensors matched as masked weights (and the inputs of masked
    linears) are held until the counter exits, so their memory cannot be reused by another tensor
    that would then be mistaken for them.
    """

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.mode = counting_mode(self)
        self._paused = 0
        self._executed = [0.0, 0.0]  # forward, backward
        self._saved = [0.0, 0.0]  # FLOPs the masks discount
        self._masked: list[tuple[str, nn.Module, str, torch.Tensor]] = []
        self._weights: dict[tuple, tuple[float, torch.Tensor]] = {}  # operand memory -> (density, tensor)
        self._inputs: dict[tuple, tuple[float, int, torch.Tensor]] = {}  # masked linear inputs -> (density, weight numel, tensor)

    def __enter__(self) -> StepCounter:
        self._masked = list(_masked_params(self.root))
        # compiled graphs bypass the dispatcher the counter listens to: count the step eagerly
        self._stance = torch.compiler.set_stance("force_eager")
        self._stance.__enter__()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)
        self._stance.__exit__(*exc)
        self._weights.clear()
        self._inputs.clear()

    @contextmanager
    def pause(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def mark_forward(self) -> None:
        """Kept for callers of the old API: forward and backward are now told apart per op."""

    def totals(self) -> StepFlops:
        fwd, bwd = self._executed
        return StepFlops(fwd, bwd, fwd - self._saved[0], bwd - self._saved[1])

    def result(self, batch_size: int) -> StepFlops:
        return self.totals().scaled(1.0 / batch_size)

    # -- op reports ---------------------------------------------------------------------------------
    def _reporting(self, op, formula):
        @_raw
        def report(*args, out_val=None, **kwargs) -> int:
            if self._paused:
                return 0
            flops = formula(*args, out_val=out_val, **kwargs)
            backward = torch._C._current_autograd_node() is not None
            self._executed[backward] += flops
            if self._masked:
                density = self._masked_density(op, args, out_val, backward)
                if density is not None:
                    self._saved[backward] += flops * (1.0 - density)
            return flops
        return report

    def _weight_density(self, t: object) -> float | None:
        """The density of the masked weight `t` is (whole, same memory), else None."""
        if not isinstance(t, torch.Tensor):
            return None
        known = self._weights.get(_key(t))
        if known is not None:
            return known[0]
        for name, module, param_name, mask in self._masked:
            weight = getattr(module, param_name, None)
            if isinstance(weight, torch.Tensor) and _key(weight) == _key(t):
                _check_mask(name, module, param_name, mask)
                density = _density(mask)
                self._weights[_key(t)] = (density, t)
                return density
        return None

    def _masked_density(self, op, args, out_val, backward: bool) -> float | None:
        if op is aten._to_copy:  # an autocast copy of a masked weight is that weight
            density = self._weight_density(args[0])
            if density is not None and isinstance(out_val, torch.Tensor):
                self._weights[_key(out_val)] = (density, out_val)
            return None
        if op in (aten.convolution, aten._convolution):
            return self._weight_density(args[1])
        if op is aten.convolution_backward:
            return self._weight_density(args[2])  # grad-input and grad-weight both
        if op in (aten.mm, aten.addmm):
            a, b = args[-2], args[-1]
            for weight, other in ((b, a), (a, b)):
                density = self._weight_density(weight)
                if density is not None:  # forward, or a grad-input that reads the weight
                    if not backward:
                        self._inputs[_key(other)] = (density, weight.numel(), other)
                    return density
            if backward and isinstance(out_val, torch.Tensor):  # a masked linear's grad-weight
                for operand in (a, b):
                    known = self._inputs.get(_key(operand))
                    if known is not None and known[1] == out_val.numel():
                        del self._inputs[_key(operand)]
                        return known[0]
        return None


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
    seconds_compile: float = 0.0  # torch.compile's compilations (trainer.compile=true), outside the kinds' seconds

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
            "seconds": {k: self.measure("seconds", k) for k in (*KINDS, "total")} | {"compile": self.seconds_compile},
        }

    def add(self, other: FlopTally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> FlopTally:
        out = FlopTally()
        out.add(self)
        return out


@dataclass
class _SignatureCost:
    cost: StepFlops  # the whole step, as last counted
    stable: bool = False  # two consecutive counted steps of this signature agreed
    uncounted: int = 0  # steps charged from the cache since the last count


@dataclass
class FlopMeter:
    """Per-task and cumulative compute, and the policy deciding which training steps are counted.

    Policy (per task; `start_task` forgets everything): a step whose structure signature is new is
    counted; counting continues, step after step, until two consecutive counted steps of the
    signature cost the same (a cheap first step, or work done only every other step, is never
    cached); then steps are charged the cached cost, except every `audit_every`-th step, which is
    counted again: if it disagrees, the signature is counted every step until two agree again.
    `audit_every=1` counts every step (exact for any learner, at the counting overhead).
    """

    task: FlopTally = field(default_factory=FlopTally)
    stream: FlopTally = field(default_factory=FlopTally)
    audit_every: int = 32
    _per_sample: dict[Hashable, StepFlops] = field(default_factory=dict)
    _train: dict[Hashable, _SignatureCost] = field(default_factory=dict)
    _eval: dict[Hashable, _SignatureCost] = field(default_factory=dict)  # per-sample costs of eval batches
    active: StepCounter | None = None  # the counter of the training window in progress, if any
    counted_steps: int = 0  # training steps counted in this task (the rest came from the cache)
    cost_changes: int = 0  # times the cost charged per training step changed in this task
    last_train_cost: StepFlops | None = None  # the latest counted whole training step

    def start_task(self) -> None:
        """A new task may bring a new model structure: forget cached counts."""
        self._per_sample.clear()
        self._train.clear()
        self._eval.clear()
        self.task = FlopTally()
        self.counted_steps = self.cost_changes = 0
        self.last_train_cost = None

    def end_task(self) -> FlopTally:
        self.stream.add(self.task)
        return self.task

    # -- evaluation (and search): the training policy, per sample, by the batch's structure signature
    def cached_eval(self, signature: Hashable) -> StepFlops | None:
        """The per-sample cost to charge an evaluation batch of `signature` without counting it, or
        None when this batch must be counted: a new signature, one whose counts have not agreed twice
        in a row yet, or an audit (every `audit_every`-th batch)."""
        entry = self._eval.get(signature)
        if entry is None or not entry.stable or entry.uncounted + 1 >= self.audit_every:
            return None
        entry.uncounted += 1
        return entry.cost

    def counted_eval(self, signature: Hashable, per_sample: StepFlops) -> StepFlops:
        """Record the counted per-sample cost of an evaluation batch of `signature`."""
        entry = self._eval.get(signature)
        if entry is None or entry.cost != per_sample:
            self._eval[signature] = _SignatureCost(per_sample)
        else:
            entry.stable, entry.uncounted = True, 0
        return per_sample

    def cached(self, key: Hashable) -> StepFlops | None:
        return self._per_sample.get(key)

    def store(self, key: Hashable, per_sample: StepFlops) -> StepFlops:
        self._per_sample[key] = per_sample
        return per_sample

    # -- training: the counting policy --------------------------------------------------------------
    def should_count(self, signature: Hashable) -> bool:
        entry = self._train.get(signature)
        if entry is None or not entry.stable:
            return True
        return entry.uncounted + 1 >= self.audit_every

    def counted(self, signature: Hashable, cost: StepFlops) -> None:
        """Record the counted cost of a whole training step (already charged by the caller)."""
        entry = self._train.get(signature)
        if entry is None and self._train:
            # the model changed mid-task: evaluation counts cached by shape may be stale too
            self._per_sample = {k: v for k, v in self._per_sample.items() if not (isinstance(k, tuple) and k[:1] == ("eval",))}
        if entry is None or entry.cost != cost:
            self.cost_changes += entry is not None or bool(self._train)
            self._train[signature] = _SignatureCost(cost)
        else:
            entry.stable, entry.uncounted = True, 0
        self.counted_steps += 1
        self.last_train_cost = cost

    def cached_step(self, signature: Hashable) -> StepFlops:
        """The cost to charge an uncounted step of `signature` (its last counted cost)."""
        entry = self._train[signature]
        entry.uncounted += 1
        return entry.cost

    def step_cost(self, measure: str) -> float | None:
        """Training FLOPs (in `measure`) of the latest fully counted step; None before the first."""
        return None if self.last_train_cost is None else self.last_train_cost.measure(measure)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside is not charged to the training window in progress (e.g. the harness's own
        milestone evaluation, which is charged to evaluation)."""
        if self.active is None:
            yield
        else:
            with self.active.pause():
                yield

    # -- charging ---------------------------------------------------------------------------------------
    def charge_train_step(self, step: StepFlops) -> None:
        """Charge `step` (whole-step FLOPs, not per sample) to training."""
        self.charge_train(step, 1)

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
