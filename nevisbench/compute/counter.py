"""Counting: `StepCounter` counts every op with a FLOP rule (`flop_rules`) run while it is entered,
forward and backward, executed and algorithmic (masked weights discounted, see `masks`).

Work the meter's own windows do not see is counted too:
- **other threads**: once `arm_threads()` has run, every `threading.Thread` started afterwards
  (subclasses and thread pools included) runs under its own counter, whose ops go to the training
  window open at that moment, or else to the pending work below;
- **plugin hooks outside training and evaluation** (`prepare`, `begin_task`, `end_task`,
  `state_dict`, ...): `counting_outside()` counts them into the pending work, which the meter
  charges to training at its next `start_task`/`end_task` (`take_pending`).

Counters nest: a counter that charges the meter (`charging=True`, the harness's own) hides its ops
from every counter outside it, so no op is charged twice; a counter a learner makes for its own
use (charging=False) hides nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nevisbench.compute import guard, native
from nevisbench.compute.flop_rules import CountingMode, bytes_moved, formulas, zero_flops
from nevisbench.compute.masks import check_mask, density, has_masks, masked_params, modules_of

__all__ = ["StepFlops", "ZERO", "StepCounter", "arm_threads", "counting_outside", "take_pending", "seen", "set_engine",
           "engine"]

aten = torch.ops.aten
_FORMULAS = {**formulas(), aten._to_copy: zero_flops}  # _to_copy: autocast copies of masked weights
_LOCK = threading.RLock()
_LOCAL = threading.local()  # .charging: this thread's stack of entered charging counters
_ENGINE = ["python"]  # what counters made from now on count with: "python" (CountingMode) or "native"


def set_engine(name: str) -> None:
    """Count with `name` ("python": the Python dispatch mode; "native": `native.NativeCountingMode`)
    in every counter made from now on (the run's choice: `native.choose_engine`)."""
    if name not in ("python", "native"):
        raise ValueError(f"Unknown FLOP meter engine {name!r}. Valid: python, native.")
    _ENGINE[0] = name
    guard.counting_at("Fake" if name == "native" else "Python")


def engine() -> str:
    return _ENGINE[0]


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step (or per sample): executed and algorithmic, forward and backward.
    `train_like`: executed forward FLOPs of ops that built an autograd graph (grad enabled, an
    input requiring grad); in an evaluation window they, and every backward op, are training work."""

    forward: float
    backward: float = 0.0
    algorithmic_forward: float | None = None
    algorithmic_backward: float | None = None
    train_like: float = 0.0

    @property
    def algo_forward(self) -> float:
        return self.forward if self.algorithmic_forward is None else self.algorithmic_forward

    @property
    def algo_backward(self) -> float:
        return self.backward if self.algorithmic_backward is None else self.algorithmic_backward

    def scaled(self, factor: float) -> StepFlops:
        return StepFlops(self.forward * factor, self.backward * factor, self.algo_forward * factor,
                         self.algo_backward * factor, self.train_like * factor)

    def minus(self, other: StepFlops) -> StepFlops:
        return StepFlops(self.forward - other.forward, self.backward - other.backward,
                         self.algo_forward - other.algo_forward, self.algo_backward - other.algo_backward,
                         self.train_like - other.train_like)

    def measure(self, measure: str) -> float:
        """Forward + backward in `measure` (algorithmic | executed)."""
        if measure == "executed":
            return self.forward + self.backward
        return self.algo_forward + self.algo_backward


ZERO = StepFlops(0.0, 0.0, 0.0, 0.0)


def _key(t: torch.Tensor) -> tuple:
    return (t.device, t.data_ptr(), t.numel())


def _stack() -> list:
    try:  # every op asks (its counter's depth): the common case first
        return _LOCAL.charging
    except AttributeError:
        _LOCAL.charging = []
        return _LOCAL.charging


class StepCounter:
    """Counts every matmul, convolution and attention kernel run while it is entered:
    `with StepCounter(root) as c: ...`, then `c.totals()` (whole window) or `c.result(batch_size)`
    (per sample). Ops run by the autograd engine are backward, all others forward. `pause()`
    stops counting (e.g. for an evaluation run inside a training window).

    `charging`: the harness charges this counter's totals to the meter; its ops are then hidden
    from every counter entered before it. `threads`: other threads' ops are added to this counter
    while it is entered (the training window). `sink`: report each op to sink(flops, backward)
    instead of keeping it (a thread's counter).

    Masks: see `nevisbench.compute.masks`. Tensors matched as masked weights (and the inputs of
    masked linears) are held until the counter exits, so their memory cannot be reused by another
    tensor that would then be mistaken for them.
    """

    def __init__(self, root: nn.Module | None, *, charging: bool = False, threads: bool = False, sink=None,
                 audited: bool | None = None) -> None:
        self.root = root
        self.charging, self.threads, self.sink = charging, threads, sink
        # `audited`: the harness's own counters (charging, or reporting to a sink, or its evaluation's)
        # add what they see to `seen()`, which the time audit explains
        self.audited = (charging or sink is not None) if audited is None else audited
        moved = self._moved if self.audited else None
        self.mode: CountingMode | native.NativeCountingMode = (
            native.NativeCountingMode(_FORMULAS, self._report, moved, self._moves, self._fast, self._absorb)
            if _ENGINE[0] == "native"
            else CountingMode(_FORMULAS, self._report, moved))
        self._paused = 0
        self._executed = [0.0, 0.0]  # forward, backward
        self._saved = [0.0, 0.0]  # FLOPs the masks discount
        self._train_like = 0.0
        self._masked: list[tuple[str, nn.Module, str, torch.Tensor]] = []
        self._versions: list[tuple[torch.Tensor, int]] = []
        self._weights: dict[tuple, tuple[float, torch.Tensor]] = {}  # operand memory -> (density, tensor)
        self._inputs: dict[tuple, tuple[float, int, torch.Tensor]] = {}  # masked linear inputs -> (density, weight numel, tensor)
        self._stance: AbstractContextManager | None = None
        self._previous_target: StepCounter | None = None
        self._depth = 0

    def __enter__(self) -> StepCounter:
        native.flush()  # the native engine's sums so far belong to the counters counting until now
        if self.root is not None:
            modules = modules_of(self.root)  # one walk for both (a ResNet's `parameters()` alone took ~0.2 ms)
            self._masked = list(masked_params(self.root)) if has_masks(modules) else []
            self._versions = [(p, p._version) for m in modules for p in m._parameters.values() if p is not None]
            # compiled graphs bypass the dispatcher the counter listens to: count the step eagerly
            self._stance = torch.compiler.set_stance("force_eager")
            self._stance.__enter__()
        if self.threads:
            global _TARGET
            with _LOCK:
                self._previous_target, _TARGET = _TARGET, self
        if self.charging:
            _stack().append(self)
        self._depth = len(_stack())  # charging counters entered later hide their ops from this one
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        native.flush()
        self.mode.__exit__(*exc)
        if self.charging and self in _stack():
            _stack().remove(self)
        if self.threads:
            global _TARGET
            with _LOCK:
                _TARGET = self._previous_target
        if self._stance is not None:
            self._stance.__exit__(*exc)
        self._weights.clear()
        self._inputs.clear()
        native.refresh()  # an outer counter of this thread may count bytes again

    @contextmanager
    def pause(self) -> Iterator[None]:
        if not guard.check_pause_caller():  # a learner pausing the count: recorded, and counting goes on
            yield
            return
        native.flush()
        self._paused += 1
        native.refresh()
        try:
            yield
        finally:
            native.flush()
            self._paused -= 1
            native.refresh()

    def mark_forward(self) -> None:
        """Kept for callers of the old API: forward and backward are now told apart per op."""

    def weights_written(self) -> bool:
        """Whether any parameter of `root` was modified in place since the counter was entered."""
        return any(p._version != version for p, version in self._versions)

    def totals(self) -> StepFlops:
        native.flush()
        with _LOCK:
            fwd, bwd = self._executed
            return StepFlops(fwd, bwd, fwd - self._saved[0], bwd - self._saved[1], self._train_like)

    def result(self, batch_size: int) -> StepFlops:
        """Per sample. A window that wrote its model's weights did training work: all of its
        forward FLOPs count as `train_like`."""
        totals = self.totals()
        if self.weights_written():
            totals = StepFlops(totals.forward, totals.backward, totals.algo_forward, totals.algo_backward, totals.forward)
        return totals.scaled(1.0 / batch_size)

    def add(self, flops: float, backward: bool) -> None:
        """Work counted elsewhere (another thread), charged dense."""
        with _LOCK:
            self._executed[backward] += flops

    # -- op reports ---------------------------------------------------------------------------------
    def _report(self, op, formula, args, kwargs, out) -> None:
        if self._paused:
            return
        if len(_stack()) > self._depth:
            return  # a charging counter entered inside this one counts (and charges) this op
        flops = formula(*args, out_val=out, **kwargs)
        if self.audited:
            _SEEN[0] += flops
            _SEEN[2] += 1
        if not flops and not self._masked:
            return
        backward = torch._C._current_autograd_node() is not None
        if self.sink is not None:
            self.sink(flops, backward)
            return
        with _LOCK:
            self._executed[backward] += flops
            if not backward and torch.is_grad_enabled() and _needs_grad(args):
                self._train_like += flops
            if self._masked:
                kept = self._masked_density(op, args, out, backward)
                if kept is not None:
                    self._saved[backward] += flops * (1.0 - kept)

    def _fast(self) -> bool:
        """Whether the native engine may sum this counter's ops in C++: it needs no op's operands (masks)
        and reports to no sink op by op."""
        return not self._masked and self.sink is None

    def _absorb(self, forward: float, backward: float, train_like: float, ops: int) -> None:
        """Ops the native engine counted in C++ while this counter counted (see `_report`)."""
        if self.audited:
            _SEEN[0] += forward + backward
            _SEEN[2] += ops
        with _LOCK:
            self._executed[0] += forward
            self._executed[1] += backward
            self._train_like += train_like

    def _moves(self) -> bool:
        """Whether the ops without a FLOP rule run now are this counter's to audit (the native engine
        asks at each change; the Python mode asks per op)."""
        return not self._paused and len(_stack()) <= self._depth

    def _moved(self, out: object, args: tuple) -> None:
        if self._moves():
            _SEEN[1] += bytes_moved(out, args)
            _SEEN[2] += 1

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
                check_mask(name, module, param_name, mask)
                kept = density(mask)
                self._weights[_key(t)] = (kept, t)
                return kept
        return None

    def _masked_density(self, op, args, out_val, backward: bool) -> float | None:
        if op is aten._to_copy:  # an autocast copy of a masked weight is that weight
            kept = self._weight_density(args[0])
            if kept is not None and isinstance(out_val, torch.Tensor):
                self._weights[_key(out_val)] = (kept, out_val)
            return None
        if op in (aten.convolution, aten._convolution):
            return self._weight_density(args[1])
        if op is aten.convolution_backward:
            return self._weight_density(args[2])  # grad-input and grad-weight both
        if op in (aten.mm, aten.addmm):
            a, b = args[-2], args[-1]
            for weight, other in ((b, a), (a, b)):
                kept = self._weight_density(weight)
                if kept is not None:  # forward, or a grad-input that reads the weight
                    if not backward:
                        self._inputs[_key(other)] = (kept, weight.numel(), other)
                    return kept
            if backward and isinstance(out_val, torch.Tensor):  # a masked linear's grad-weight
                for operand in (a, b):
                    known = self._inputs.get(_key(operand))
                    if known is not None and known[1] == out_val.numel():
                        del self._inputs[_key(operand)]
                        return known[0]
        return None


def _needs_grad(args: tuple) -> bool:
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


# -- work outside the meter's windows ------------------------------------------------------------------
_TARGET: StepCounter | None = None  # the training window other threads' ops go to
_PENDING = [0.0, 0.0]  # forward, backward FLOPs counted outside any window, not yet charged
_SEEN = [0.0, 0.0, 0.0]  # executed FLOPs, bytes moved by ops without a FLOP rule, ops: seen by the harness's counters


def seen() -> tuple[float, float, float]:
    """(FLOPs, bytes, ops) the harness's counters saw so far in this process (the time audit explains
    a task's time by the differences over the task; bytes are those of ops without a FLOP rule:
    elementwise work the meter sees but does not charge)."""
    nbytes, ops = native.moved()  # the native engine sums these in C++
    return _SEEN[0], _SEEN[1] + nbytes, _SEEN[2] + ops


def _to_target_or_pending(flops: float, backward: bool) -> None:
    with _LOCK:
        if _TARGET is not None:
            _TARGET.add(flops, backward)
        else:
            _PENDING[backward] += flops


def take_pending() -> StepFlops:
    """The work counted outside the meter's windows since the last call (and forget it)."""
    with _LOCK:
        fwd, bwd = _PENDING
        _PENDING[0] = _PENDING[1] = 0.0
    return StepFlops(fwd, bwd)


@contextmanager
def counting_outside() -> Iterator[None]:
    """Count the ops inside (e.g. a plugin hook the runner calls between tasks) as pending work,
    except those a charging counter entered inside counts itself. Inside a charging counter (a
    training window) this counts nothing: the window does."""
    if _stack():
        yield
        return
    with StepCounter(None, sink=_to_target_or_pending):
        yield


_ORIGINAL_BOOTSTRAP = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]  # private, not in typeshed


def _metered_bootstrap(self: threading.Thread) -> None:
    with StepCounter(None, sink=_to_target_or_pending):
        _ORIGINAL_BOOTSTRAP(self)


def _metered(function):
    def run(*args, **kwargs):
        with StepCounter(None, sink=_to_target_or_pending):
            return function(*args, **kwargs)

    return run


def arm_threads() -> None:
    """From now on, every thread this process starts with `threading` or through the module attribute
    `_thread.start_new_thread` is counted, and popping the counting mode is recorded (idempotent).
    Threads already running are not: the harness arms before it loads or builds a plugin."""
    threading.Thread._bootstrap_inner = _metered_bootstrap  # type: ignore[attr-defined]  # private, not in typeshed
    guard.arm_raw_threads(_metered)
    guard.arm_mode_guard(CountingMode)
    guard.arm_kernel_guard(_FORMULAS)


guard.protect(StepCounter)
guard.protect(CountingMode)
