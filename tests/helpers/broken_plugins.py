"""Learner plugins that break the API in different ways (loaded by test_plugins.py)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import nn

from nevisbench import Learner, LearnerConfig, TaskModule


class NotALearner:
    pass


@dataclass
class _Config(LearnerConfig):
    name: str = "broken"


class ReturnsAModule(Learner):
    Config = _Config

    def begin_task(self, task, backbone):
        return nn.Linear(2, 2)  # not a LightningModule


class FailsOnSecondTask(Learner):
    Config = _Config

    def begin_task(self, task, backbone):
        if task.index == 1:
            raise RuntimeError("out of ideas")
        return super().begin_task(task, backbone)


class FailsInPrepare(Learner):
    Config = _Config

    def prepare(self, backbone):
        raise ValueError("cannot prune this")


class FailsInEndTask(Learner):
    Config = _Config

    def end_task(self, task, module):
        raise RuntimeError("lost my notes")


class UnsaveableState(Learner):
    Config = _Config

    def state_dict(self):
        return {"callback": print}  # a function cannot be reloaded safely


class FailsToLoadState(Learner):
    Config = _Config

    def state_dict(self):
        return {"seen": 1}

    def load_state_dict(self, state):
        raise KeyError("seen_tasks")

    def begin_task(self, task, backbone):
        if task.index == 1:
            raise RuntimeError("stop after the first task")
        return super().begin_task(task, backbone)


def _learner_with(module_class: type[TaskModule]) -> type[Learner]:
    """A learner whose task module is the default one, behaving as `module_class`."""

    class _Learner(Learner):
        Config = _Config

        def begin_task(self, task, backbone):
            module = self.task_module(backbone, task)
            module.__class__ = module_class
            return module

    return _Learner


class _NoLossModule(TaskModule):
    def training_step(self, batch, batch_idx):
        return {"logits": self(batch[0])}  # no "loss"


ReturnsNoLoss = _learner_with(_NoLossModule)


class _WrongLogits(TaskModule):
    def forward(self, x):
        logits = super().forward(x)
        return logits if self.training else logits[:, :1]  # scored with one logit whatever the classes


WrongLogitShape = _learner_with(_WrongLogits)


class _NoBackbone(L.LightningModule):
    def __init__(self, net, head):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x):
        return self.head(self.net(x))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class NoBackboneAttribute(Learner):
    Config = _Config

    def begin_task(self, task, backbone):
        return _NoBackbone(backbone, nn.Linear(self.feature_dim, task.num_classes))


class _NoneStep(TaskModule):
    def training_step(self, batch, batch_idx):
        self(batch[0])  # computes, then returns no loss: Lightning skips the optimizer step
        return None


ReturnsNone = _learner_with(_NoneStep)


class FailsAtOneRate(Learner):
    """Breaks in begin_task for the trial with train.lr=0.1 only (a plugin error inside a search)."""

    Config = _Config

    def begin_task(self, task, backbone):
        if self.context.train.lr == 0.1:
            raise RuntimeError("no rate that high")
        return super().begin_task(task, backbone)


class _NanLoss(TaskModule):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        loss = out["loss"] if isinstance(out, dict) else out
        return loss * float("nan")


class NanAtOneRate(Learner):
    """The trial with train.lr=0.1 gets a NaN loss (a failed trial, recorded, not an error)."""

    Config = _Config

    def begin_task(self, task, backbone):
        module = self.task_module(backbone, task)
        if self.context.train.lr == 0.1:
            module.__class__ = _NanLoss
        return module
