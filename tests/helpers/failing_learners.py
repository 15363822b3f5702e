"""Learners whose task goes wrong in one way on one task (loaded by test_failed_tasks.py)."""

from __future__ import annotations

import math

import torch
from torch import nn

from nevisbench.api.learner import Learner


def _first_norm(module: nn.Module) -> nn.modules.batchnorm._BatchNorm | None:
    return next((m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)


class NanBatchNormOnFaces(Learner):
    """Task `faces` gets a NaN in the running mean of its backbone's first BatchNorm (weights that
    broke): training (batch statistics) is fine, every evaluation output is NaN."""

    def begin_task(self, task, backbone):
        module = super().begin_task(task, backbone)
        if task.key == "faces":
            norm = _first_norm(module)
            assert norm is not None
            norm.momentum = 0.0  # the NaN stays through training
            with torch.no_grad():
                norm.running_mean.fill_(math.nan)
        return module


class LossNanOnFaces(Learner):
    """Task `faces` trains at a learning rate that blows the loss up (the task fails); the others are fine."""

    def begin_task(self, task, backbone):
        module = super().begin_task(task, backbone)
        if task.key == "faces":
            with torch.no_grad():
                module.head.weight.fill_(math.inf)
        return module


class DeletesItsRunFolder(Learner):
    """At the end of its first task, deletes the run folder it runs in (NEVISBENCH_TEST_RUN_DIR): a user
    removing a running job's folder."""

    def end_task(self, task, module):
        import os
        import shutil

        if task.index == 0:
            shutil.rmtree(os.environ["NEVISBENCH_TEST_RUN_DIR"])
