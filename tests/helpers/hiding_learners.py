"""Learner plugins that hide compute from an in-process meter (issue 30's table, and more): each does
real work the meter's dispatch mode cannot see, or reaches into the meter to stop it counting. The
harness must count it, refuse the task in one line, or flag it by the time audit
(tests/test_meter_hidden.py). `WORK["extra"]` counts the hidden passes each really did."""

from __future__ import annotations

import gc
import os
import signal
from dataclasses import dataclass

import cheating_learners
import numpy as np
import torch
from torch import nn

from nevisbench import Learner, LearnerConfig
from nevisbench.api.module import TaskModule

WORK = {"extra": 0}


@dataclass
class _Config(LearnerConfig):
    name: str = "hider"


def _pass(module: TaskModule, x: torch.Tensor) -> None:
    """One full training pass (forward and backward) of the module on `x`, in torch."""
    with torch.enable_grad():
        module.head(module.backbone(x)).sum().backward()
    module.zero_grad(set_to_none=True)
    WORK["extra"] += 1


def _plugin(module_cls: type) -> type:
    return cheating_learners._plugin(module_cls, _Config)


def _numpy_for(seconds: float) -> None:
    """Numpy matmuls for `seconds` of this process's CPU time: compute torch never sees."""
    import time

    a = np.random.rand(128, 128).astype(np.float32)
    start = time.process_time()
    while time.process_time() - start < seconds:
        a = (a @ a) * np.float32(1e-3)
    WORK["extra"] += 1


class _NumpyBeside(TaskModule):
    """Numpy matmuls beside every torch step, for as long as the step itself took (2x the work in
    CPU time, 1x charged)."""

    _last: float | None = None

    def training_step(self, batch, batch_idx):
        import time

        now = time.process_time()
        if self._last is not None:
            _numpy_for(now - self._last)  # as long as the step before took, numpy work aside
        self._last = time.process_time()
        return super().training_step(batch, batch_idx)


class _NumpyConv(nn.Module):
    """A convolution computed in numpy (im2col + matmul) inside an autograd.Function: its work is
    outside torch. Backward returns zero gradients for the weight (frozen) and the input."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NumpyConvFunction.apply(x, self.conv)


class _NumpyConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, conv):
        c = conv
        xs = np.pad(x.detach().numpy(), ((0, 0), (0, 0), (c.padding[0],) * 2, (c.padding[1],) * 2))
        kh, kw = c.kernel_size
        windows = np.lib.stride_tricks.sliding_window_view(xs, (kh, kw), axis=(2, 3))[:, :, ::c.stride[0], ::c.stride[1]]
        n, cin, oh, ow = windows.shape[:4]
        cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cin * kh * kw)
        out = cols @ c.weight.detach().numpy().reshape(c.out_channels, -1).T
        ctx.shape = x.shape
        return torch.from_numpy(np.ascontiguousarray(out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)))

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros(ctx.shape), None


def _numpy_convs(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.groups == 1:
            setattr(module, name, _NumpyConv(child))
        else:
            _numpy_convs(child)


class NumpyConvLearner(Learner):
    """Every convolution of the backbone runs in numpy: the meter sees only the head's matmul."""

    Config = _Config

    def prepare(self, backbone):
        _numpy_convs(backbone)
        return backbone


class _DisablesModes(TaskModule):
    def training_step(self, batch, batch_idx):
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes():
            _pass(self, batch[0])
        return super().training_step(batch, batch_idx)


def _meter(module):
    return next(cb.meter for cb in module.trainer.callbacks if hasattr(cb, "meter"))


class _PausesMeter(TaskModule):
    def training_step(self, batch, batch_idx):
        with _meter(self).paused():
            _pass(self, batch[0])
        return super().training_step(batch, batch_idx)


class _HalvesCharges(TaskModule):
    def on_train_start(self) -> None:
        import types

        meter = _meter(self)
        original = meter.charge_train

        def halved(self_, per_sample, batch_size):
            original(per_sample.scaled(0.5), batch_size)

        meter.charge_train = types.MethodType(halved, meter)


class _LowersTally(TaskModule):
    """Halves the FLOPs already charged, writing the meter's tally as any attribute."""

    def on_train_end(self) -> None:
        _meter(self).task.train_forward *= 0.5


class _WritesAroundGuard(TaskModule):
    """The same, around `__setattr__` (the next charge of the harness adds to the lowered value)."""

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if batch_idx == 1:
            tally = _meter(self).task
            object.__setattr__(tally, "train_backward", tally.train_backward * 0.5)


class _StopsCounting(TaskModule):
    """Turns the meter's policy to caching, so that later steps are charged without being counted."""

    def on_train_start(self) -> None:
        _meter(self).audit_every = 10**9


class _FallsThroughConvolutions(TaskModule):
    """Registers fallthroughs at the dispatcher's Python key for the convolutions: they then skip the
    counting mode (the whole network's convolutions go uncounted); removed again when training ends."""

    KEY = "Python"

    def on_train_start(self) -> None:
        self._library = torch.library.Library("aten", "IMPL")
        for op in ("convolution", "_convolution", "convolution_backward"):
            self._library.impl(op, torch.library.fallthrough_kernel, self.KEY)

    def on_train_end(self) -> None:
        self._library._destroy()


class _FallsThroughNative(_FallsThroughConvolutions):
    """The same at the native engine's key (`Fake`): the convolutions then skip its fallback."""

    KEY = "Fake"


class _SwitchesKeyOff(TaskModule):
    """Takes the native engine's dispatcher key out of its thread's sets around an extra pass."""

    def training_step(self, batch, batch_idx):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet("Fake")):
            _pass(self, batch[0])
        return super().training_step(batch, batch_idx)


class _ForkedGradients(TaskModule):
    """A forked child computes a training pass per step (its work is another process's)."""

    def training_step(self, batch, batch_idx):
        pid = os.fork()
        if pid == 0:
            try:
                torch.set_num_threads(1)
                _pass(self, batch[0])
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        WORK["extra"] += 1
        return super().training_step(batch, batch_idx)


class _RawThread(TaskModule):
    def training_step(self, batch, batch_idx):
        import _thread

        done = _thread.allocate_lock()
        done.acquire()

        def work():
            try:
                _pass(self, batch[0])
            finally:
                done.release()

        _thread.start_new_thread(work, ())
        done.acquire()
        return super().training_step(batch, batch_idx)


class _AlarmPasses(TaskModule):
    """A SIGALRM handler does training passes whenever the timer fires."""

    def on_train_start(self) -> None:
        x, busy = torch.rand(4, 3, 16, 16), []

        def handler(*_):
            if not busy:  # not re-entered while a pass runs
                busy.append(1)
                _pass(self, x)
                busy.clear()

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)

    def on_train_end(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)


class _TrainsInRestore(TaskModule):
    """Trains during the harness's best-dev restore (its load_state_dict)."""

    def load_state_dict(self, state_dict, *args, **kwargs):
        for _ in range(int(self.train_cfg.max_steps)):
            _pass(self, torch.rand(16, 3, 16, 16))
        return super().load_state_dict(state_dict, *args, **kwargs)


class _Cycle:
    def __init__(self, module: TaskModule) -> None:
        self.module, self.me = module, self

    def __del__(self) -> None:
        for _ in range(int(self.module.train_cfg.max_steps)):
            _pass(self.module, torch.rand(16, 3, 16, 16))


class FinaliserLearner(Learner):
    """Leaves a reference cycle whose finaliser trains the task's module when the collector runs."""

    Config = _Config

    def end_task(self, task, module) -> None:
        gc.disable()  # keep the cycle alive until the harness (or anyone) collects
        _Cycle(module)

    def state_dict(self):
        gc.enable()
        return {}


class _WritesDataInEval(TaskModule):
    """No-grad training through `.data` while evaluated: no version counter moves."""

    def forward(self, x):
        logits = super().forward(x)
        if not self.training:
            self.head.weight.data.add_(1e-3)
            WORK["extra"] += 1
        return logits


class _TrainsWhenFreed(TaskModule):
    """Trains again in its own finaliser, when the harness lets the task's module go (reference count)."""

    def __del__(self) -> None:
        if not getattr(self, "_freed", False):
            self._freed = True
            for _ in range(int(self.train_cfg.max_steps)):
                _pass(self, torch.rand(16, 3, 16, 16))


NumpyBesideLearner = _plugin(_NumpyBeside)
FreedModuleLearner = _plugin(_TrainsWhenFreed)
DisablesModesLearner = _plugin(_DisablesModes)
PausesMeterLearner = _plugin(_PausesMeter)
HalvesChargesLearner = _plugin(_HalvesCharges)
LowersTallyLearner = _plugin(_LowersTally)
WritesAroundGuardLearner = _plugin(_WritesAroundGuard)
StopsCountingLearner = _plugin(_StopsCounting)
FallsThroughLearner = _plugin(_FallsThroughConvolutions)
FallsThroughNativeLearner = _plugin(_FallsThroughNative)
SwitchesKeyOffLearner = _plugin(_SwitchesKeyOff)
ForkedGradientsLearner = _plugin(_ForkedGradients)
RawThreadLearner = _plugin(_RawThread)
AlarmLearner = _plugin(_AlarmPasses)
RestoreTrainingLearner = _plugin(_TrainsInRestore)
EvalDataWriteLearner = _plugin(_WritesDataInEval)
HonestLearner = _plugin(TaskModule)


class PrepareWorkLearner(Learner):
    """Trains a copy of the backbone in `prepare()`, and in a thread it starts there (work a resumed
    run repeats: it must not be charged twice)."""

    Config = _Config

    def prepare(self, backbone):
        import copy
        import threading

        def work(model: nn.Module) -> None:
            with torch.enable_grad():
                for _ in range(3):
                    model(torch.rand(8, 3, 16, 16)).sum().backward()

        work(copy.deepcopy(backbone))
        worker = threading.Thread(target=work, args=(copy.deepcopy(backbone),))
        worker.start()
        return backbone
