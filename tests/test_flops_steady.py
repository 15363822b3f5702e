"""`nevisbench flops` shows the step a learner spends from its second task on (`steady_step`), not only
its first task's: a replay learner's first step has nothing to replay (issue 31: DER++ read 220
MFLOP, no replay)."""

from __future__ import annotations

import pytest
import torch
from conftest import register_learner

from nevisbench import Learner, TaskModule
from nevisbench.config import compose
from nevisbench.run.probe import step_flops

PROBE = ["backbone.name=resnet18", "backbone.weights=none", "data.image_size=16", "trainer=cpu"]


class _Replays(TaskModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.task.index == 0:
            return loss
        x, y = self.memory.train_examples(0, [0, 1])  # one replay batch of the first task, the batch's size
        return loss + self.loss_fn(self(x), y)


class ReplayLearner(Learner):
    def begin_task(self, task, backbone):
        module = _Replays(backbone, torch.nn.Linear(self.feature_dim, task.num_classes), task=task,
                          train=self.context.train)
        module.memory = self.context.data
        return module


def _total(report, step):
    return report[step]["algorithmic"]["total"]


def test_a_replay_learners_steady_step_costs_its_replay(monkeypatch):
    register_learner(monkeypatch, "replays", "test_flops_steady:ReplayLearner")
    report = step_flops(compose([*PROBE, "learner=replays", "scenario=continual"]), num_classes=10)
    assert _total(report, "steady_step") == pytest.approx(2 * _total(report, "train_step"), rel=0.01)


def test_finetunings_steady_step_is_its_first():
    report = step_flops(compose([*PROBE, "learner=finetune"]), num_classes=10)
    assert report["steady_step"] == report["train_step"] and report["scenario"] == "transfer"
