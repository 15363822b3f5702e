"""Learner plugins that break the API in different ways (loaded by test_plugins.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nevisbench import Learner, LearnerConfig


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
