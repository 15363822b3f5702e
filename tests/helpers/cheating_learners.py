"""Learner plugins built to fool the FLOP meter or the conformance kit (loaded by test_meter_*.py
and test_kit_*.py through a monkeypatched registry, as test_plugins.py does). Each docstring says
what it tries and what the harness must do about it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.utils.prune as prune
from torch import nn

from nevisbench import Learner, LearnerConfig
from nevisbench.api.module import TaskModule


@dataclass
class _Config(LearnerConfig):
    name: str = "cheat"


class _Disguise(nn.Module):
    """A wrapper carrying a dummy zero `weight` and an all-zero `weight_mask` that no op uses."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.weight = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.register_buffer("weight_mask", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class FakeMaskLearner(Learner):
    """Wraps the backbone in a module with a zero mask over a dummy weight, hoping every op under
    it is discounted to 0 algorithmic FLOPs. Must be charged the dense algorithmic FLOPs."""

    Config = _Config

    def prepare(self, backbone: nn.Module) -> nn.Module:
        return _Disguise(backbone)


class _ExtraForward(TaskModule):
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            self(batch[0])  # a second forward pass, outside training_step


class ExtraForwardLearner(Learner):
    """Runs an extra forward pass in `on_train_batch_end`, outside training_step and backward.
    Must be charged for it."""

    Config = _Config

    def begin_task(self, task, backbone):
        return _ExtraForward(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)


def _block_convs(backbone: nn.Module) -> list[nn.Conv2d]:
    return [m for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and name.startswith("layer")]


class _Shrinking(TaskModule):
    SHRINK_AT = 10

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.global_step == self.SHRINK_AT:  # after step index 9: steps 10, 11, ... are sparser
            for conv in _block_convs(self.backbone):
                conv.weight_mask.view(conv.weight_mask.shape[0], -1)[:, ::2] = 0  # in place: half the kept weights


class ShrinkingMaskLearner(Learner):
    """Prunes nothing (masks of ones) and then halves every block conv's mask density at step 10.
    Must be charged the dense cost before and the lower cost from then on."""

    Config = _Config

    def prepare(self, backbone: nn.Module) -> nn.Module:
        for conv in _block_convs(backbone):
            prune.custom_from_mask(conv, "weight", torch.ones_like(conv.weight))
        return backbone

    def begin_task(self, task, backbone):
        return _Shrinking(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)


class _CheapFirst(TaskModule):
    def training_step(self, batch, batch_idx):
        if self.trainer.global_step == 0:  # the step a meter that counts once would count
            x, y = batch
            logits = self.head(torch.zeros(x.shape[0], self.head.in_features, device=x.device))
            return self.loss_fn(logits, y)
        return super().training_step(batch, batch_idx)


class CheapFirstStepLearner(Learner):
    """Trains only the head on step 0, the whole network afterwards. Must be charged each step's
    real cost, not step 0's for all."""

    Config = _Config

    def begin_task(self, task, backbone):
        return _CheapFirst(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)


class _Still(TaskModule):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class FrozenWeightsLearner(Learner):
    """Runs forward and backward but never changes a weight. The kit must fail it."""

    Config = _Config

    def begin_task(self, task, backbone):
        return _Still(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)


class _NoMatmul(TaskModule):
    def training_step(self, batch, batch_idx):
        return (self.head.bias ** 2).sum()  # a loss without a single matmul or convolution


class NoFlopsLearner(Learner):
    """Trains without any matmul or convolution: 0 training FLOPs. The kit must fail it."""

    Config = _Config

    def begin_task(self, task, backbone):
        return _NoMatmul(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)


class ForgetfulLearner(Learner):
    """Keeps state across tasks (tasks seen) that its state_dict leaves out, so a resumed run
    differs from an uninterrupted one. The kit's resume check must fail it."""

    Config = _Config

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        self.seen = 0

    def begin_task(self, task, backbone):
        self.seen += 1
        module = super().begin_task(task, backbone)
        with torch.no_grad():
            module.head.weight.mul_(self.seen)
        return module


class NoisyLearner(Learner):
    """Perturbs its head with OS randomness the seed does not control. The kit must fail it."""

    Config = _Config

    def begin_task(self, task, backbone):
        module = super().begin_task(task, backbone)
        noise = torch.frombuffer(bytearray(os.urandom(4 * module.head.weight.numel())), dtype=torch.int32)
        with torch.no_grad():
            module.head.weight.add_(noise.view_as(module.head.weight).float() * 1e-12)
        return module


class _HiddenOnOtherRanks(TaskModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if not self.training and os.environ.get("LOCAL_RANK", "0") != "0":  # where no meter is written
            for _ in range(3):
                logits = super().forward(x)
        return logits


class RankHiddenEvalLearner(Learner):
    """Under DDP, does three extra forward passes per evaluated batch on the ranks other than 0,
    whose meters are never written, hoping the evaluation is charged at rank 0's count. Must be
    charged the largest count any rank made."""

    Config = _Config

    def begin_task(self, task, backbone):
        return _HiddenOnOtherRanks(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task,
                                   train=self.context.train)


# -- tricks that do one extra training pass per step where the meter might not look -------------------
# Each runs the extra work (forward + backward of the whole model) on the batch, or on a random batch of
# the TINY run's shape (16 images of 16 px) where no batch is at hand. `DONE` counts the extra passes
# every trick really ran, so a test can compare what was charged with what was done.
DONE = {"extra": 0}
_SHAPE = (16, 3, 16, 16)


def _extra_pass(module: TaskModule, x: torch.Tensor | None = None) -> None:
    x = torch.rand(_SHAPE) if x is None else x
    with torch.enable_grad():
        module.head(module.backbone(x)).sum().backward()
    module.zero_grad(set_to_none=True)
    DONE["extra"] += 1


def _passes(module: TaskModule) -> None:
    for _ in range(int(module.train_cfg.max_steps)):
        _extra_pass(module)


def _plugin(module_cls: type, config: type = _Config) -> type:
    class _Learner(Learner):
        Config = config

        def begin_task(self, task, backbone):
            return module_cls(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task, train=self.context.train)

    _Learner.__name__ = _Learner.__qualname__ = module_cls.__name__.lstrip("_") + "Learner"
    _Learner.__module__ = module_cls.__module__  # bound there under that name: picklable for a search worker
    return _Learner


class _Honest(TaskModule):
    """Plain finetuning, as a third-party plugin (the reference of every trick)."""


class _InAThread(TaskModule):
    def training_step(self, batch, batch_idx):
        import threading

        worker = threading.Thread(target=_extra_pass, args=(self, batch[0]))
        worker.start()
        worker.join()
        return super().training_step(batch, batch_idx)


class _InConfigureOptimizers(TaskModule):
    def configure_optimizers(self):
        _passes(self)
        return super().configure_optimizers()


class _OnTrainEnd(TaskModule):
    def on_train_end(self) -> None:
        _passes(self)


class _OnFitEnd(TaskModule):
    def on_fit_end(self) -> None:
        _passes(self)


class _InTeardown(TaskModule):
    def teardown(self, stage: str) -> None:
        _passes(self)


class _WhenUncounted(TaskModule):
    def training_step(self, batch, batch_idx):
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

        if not _get_current_dispatch_mode_stack():  # no dispatch mode: this step is not being counted
            _extra_pass(self, batch[0])
        return super().training_step(batch, batch_idx)


class _TrainsWhileEvaluated(TaskModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # evaluation: sneak a training pass (forward + backward) in
            _extra_pass(self, x)
        return super().forward(x)


class _WritesWeightsWhileEvaluated(TaskModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if not self.training:  # a gradient-free update of the head from the evaluated batch
            features = self.backbone(x)
            self.head.weight.add_(1e-6 * (self.head(features).t() @ features))
            DONE["extra"] += 1
        return logits


HonestPlugin = _plugin(_Honest)
ThreadLearner = _plugin(_InAThread)
ConfigureOptimizersLearner = _plugin(_InConfigureOptimizers)
OnTrainEndLearner = _plugin(_OnTrainEnd)
OnFitEndLearner = _plugin(_OnFitEnd)
TeardownLearner = _plugin(_InTeardown)
CountDetectingLearner = _plugin(_WhenUncounted)
EvalTrainingLearner = _plugin(_TrainsWhileEvaluated)
EvalWeightWriteLearner = _plugin(_WritesWeightsWhileEvaluated)


class EndTaskLearner(Learner):
    """Trains the finished task's module again in `end_task`, outside any training window."""

    Config = _Config

    def end_task(self, task, module) -> None:
        _passes(module)


class StateDictLearner(Learner):
    """Keeps the task's module and trains it in `state_dict()` (which the runner calls after end_task)."""

    Config = _Config

    def begin_task(self, task, backbone):
        self._module = super().begin_task(task, backbone)
        return self._module

    def state_dict(self):
        if getattr(self, "_module", None) is not None:
            _passes(self._module)
            self._module = None
        return {}


class _Job:
    def __init__(self) -> None:
        import queue

        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()


class _ViaPersistentWorker(TaskModule):
    worker: _Job | None = None

    def training_step(self, batch, batch_idx):
        self.worker.jobs.put((self, batch[0]))
        self.worker.done.get()
        return super().training_step(batch, batch_idx)


class PersistentThreadLearner(Learner):
    """Starts a worker thread in `prepare()`, long before training, and hands it one extra training
    pass per step (a thread pool made early would do the same)."""

    Config = _Config

    def prepare(self, backbone):
        import threading

        self._worker = _Job()

        def serve(job: _Job) -> None:
            while True:
                module, x = job.jobs.get()
                _extra_pass(module, x)
                job.done.put(True)

        threading.Thread(target=serve, args=(self._worker,), daemon=True).start()
        return backbone

    def begin_task(self, task, backbone):
        module = _ViaPersistentWorker(backbone, nn.Linear(self.feature_dim, task.num_classes), task=task,
                                      train=self.context.train)
        module.worker = self._worker
        return module

    def state_dict(self):
        return {}


class _TrainsWhenSwitched(TaskModule):
    def train(self, mode: bool = True):
        if not mode and getattr(self, "_trainer", None) is not None and not self.trainer.training:
            _passes(self)  # switched to eval for the harness's evaluation: train again, as the task's steps did
        return super().train(mode)


EvalSwitchLearner = _plugin(_TrainsWhenSwitched)
